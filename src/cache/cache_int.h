/* Private to src/cache: the client's state, shared by cache.c (URL, commands,
 * new/free) and cache_conn.c (the connection state machine and the checks on
 * what hiredis' reader builds). Cross-file names are crt_cache__*. */
#ifndef CRONIUM_CACHE_INT_H
#define CRONIUM_CACHE_INT_H

#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cronium/cache.h"
#include "cronium/list.h"

#define CRT_CACHE_BACKOFF_MIN_MS 100
#define CRT_CACHE_BACKOFF_MAX_MS 5000

/* DOWN -> RESOLVING -> CONNECTING (TCP, then AUTH, SELECT, PING) -> READY
 * once PING is answered; any failure -> DOWN, then a reconnect after a
 * backoff. CLOSED: crt_cache_free was called; freed once the last handle
 * has closed. */
typedef enum { C_DOWN, C_RESOLVING, C_CONNECTING, C_READY, C_CLOSED } crt_cache_state;

struct crt_cache {
    uv_loop_t *loop;
    crt_cache_state state;
    redisAsyncContext *ac;      /* the current connection (hiredis' libuv adapter) */
    char *host;                 /* NULL for unix sockets */
    int port;
    char *path;                 /* unix socket */
    char *password;
    int db;
    uint64_t timeout_ms;
    size_t max_pending;
    size_t max_reply;           /* bytes of one reply, buffered or built */
    uv_timer_t state_timer;     /* connect timeout, reconnect backoff */
    uv_timer_t cmd_timer;       /* oldest pending command's deadline */
    uv_check_t guard;           /* after each loop iteration's I/O: bytes hiredis buffers */
    uv_getaddrinfo_t gai;
    bool gai_busy;              /* a lookup is running: never start another */
    crt_cache_resolver resolver;
    char resolved[64];          /* a lookup that finished while DOWN: the next attempt uses it */
    /* The current connection, as hiredis' reader builds replies: */
    size_t sent;                /* commands queued on it (AUTH, SELECT, PING included) */
    size_t received;            /* top-level replies the reader started */
    size_t reply_bytes;         /* of the reply being built */
    const char *proto_err;      /* why a reply was refused (the reader only says "Out of memory") */
    uint64_t backoff_ms;
    crt_dlist pending;          /* commands (cache.c), oldest first */
    size_t npending;
    int open_handles;           /* ours (timers, guard, a lookup); hiredis' adapter owns its poll */
    bool was_up;
    void (*on_ready)(void *ctx);
    void *on_ready_ctx;
    struct crt_cache_script *scripts;   /* cache_script.c: loaded on ready, freed with the cache */
    uint64_t *m_errors;
    uint64_t *m_reconnects;
};

/* cache_conn.c */
void crt_cache__connect(crt_cache *c);
void crt_cache__down(crt_cache *c, const char *why);
/* cache.c */
void crt_cache__release(crt_cache *c);
/* cache_script.c: SCRIPT LOAD of every registered script (on ready, before
 * anything else is sent); their release with the cache. */
void crt_cache__scripts_load(crt_cache *c);
void crt_cache__scripts_free(crt_cache *c);

#endif
