/* Chained string hash map. */
#include <stdlib.h>
#include <string.h>
#include "cronium/map.h"

typedef struct node {
    struct node *next;
    uint64_t hash;
    void *val;
    size_t klen;
    char key[];
} node;

struct crt_map {
    node **tab;
    size_t mask;
    size_t n;
};

uint64_t crt_hash_fold(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

uint64_t crt_hash(const void *p, size_t n)
{
    uint64_t h = crt_hash_fold(CRT_HASH_SEED, p, n);
    return h ^ (h >> 32);
}

crt_map *crt_map_new(void)
{
    crt_map *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->tab = calloc(16, sizeof *m->tab);
    if (!m->tab) {
        free(m);
        return NULL;
    }
    m->mask = 15;
    return m;
}

void crt_map_free(crt_map *m, void (*free_val)(void *))
{
    if (!m)
        return;
    for (size_t i = 0; i <= m->mask; i++) {
        for (node *x = m->tab[i], *nx; x; x = nx) {
            nx = x->next;
            if (free_val)
                free_val(x->val);
            free(x);
        }
    }
    free(m->tab);
    free(m);
}

static node **find(const crt_map *m, const char *k, size_t n, uint64_t h)
{
    node **pp = &m->tab[h & m->mask];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == n && memcmp((*pp)->key, k, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

void *crt_map_get(const crt_map *m, const char *k, size_t n)
{
    node *x = *find(m, k, n, crt_hash(k, n));
    return x ? x->val : NULL;
}

static void grow(crt_map *m)
{
    size_t ncap = (m->mask + 1) * 2;
    node **nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return; /* stay at this size; chains just get longer */
    for (size_t i = 0; i <= m->mask; i++) {
        for (node *x = m->tab[i], *nx; x; x = nx) {
            nx = x->next;
            node **b = &nt[x->hash & (ncap - 1)];
            x->next = *b;
            *b = x;
        }
    }
    free(m->tab);
    m->tab = nt;
    m->mask = ncap - 1;
}

void **crt_map_slot(crt_map *m, const char *k, size_t n, bool create)
{
    uint64_t h = crt_hash(k, n);
    node **pp = find(m, k, n, h);
    if (*pp)
        return &(*pp)->val;
    if (!create)
        return NULL;
    node *x = malloc(sizeof *x + n + 1);
    if (!x)
        return NULL;
    x->next = NULL;
    x->hash = h;
    x->val = NULL;
    x->klen = n;
    memcpy(x->key, k, n);
    x->key[n] = '\0';
    *pp = x;
    if (++m->n > m->mask + 1) {
        grow(m);
        return &(*find(m, k, n, h))->val;
    }
    return &x->val;
}

void *crt_map_del(crt_map *m, const char *k, size_t n)
{
    node **pp = find(m, k, n, crt_hash(k, n));
    node *x = *pp;
    if (!x)
        return NULL;
    *pp = x->next;
    void *v = x->val;
    free(x);
    m->n--;
    return v;
}

size_t crt_map_size(const crt_map *m) { return m->n; }
