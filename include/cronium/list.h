/* Intrusive doubly linked list: a node is embedded in its owner and found
 * back with crt_container_of. Nothing is allocated; removal is O(1). */
#ifndef CRONIUM_LIST_H
#define CRONIUM_LIST_H

#include <stddef.h>

typedef struct crt_dnode {
    struct crt_dnode *prev, *next;
} crt_dnode;

typedef struct crt_dlist {
    crt_dnode *head, *tail;
} crt_dlist;

static inline void crt_dlist_push_front(crt_dlist *l, crt_dnode *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    else
        l->tail = n;
    l->head = n;
}

static inline void crt_dlist_push_back(crt_dlist *l, crt_dnode *n)
{
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

static inline void crt_dlist_remove(crt_dlist *l, crt_dnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

#endif
