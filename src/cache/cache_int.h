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
 * has closed. With sentinels: DOWN -> DISCOVER (the sentinel side looks for
 * the master) -> RESOLVING..., and INFO replication (role:master) instead of
 * PING. */
typedef enum { C_DOWN, C_DISCOVER, C_RESOLVING, C_CONNECTING, C_READY, C_CLOSED } crt_cache_state;

/* The sentinel side (cache_sentinel.c): IDLE -> RESOLVING (the sentinel's
 * name) -> ASKING (get-master-addr-by-name, SUBSCRIBE +switch-master sent)
 * -> WATCHING (answered; subscribed) ; a failure tries the next sentinel,
 * after all of them WAIT (a backoff) unless the master side gives up. */
typedef enum { S_IDLE, S_RESOLVING, S_ASKING, S_WATCHING, S_WAIT } crt_cache_sstate;

typedef struct crt_cache_sentinel {
    char *host;
    int port;
} crt_cache_sentinel;

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
    /* Sentinel mode (nsentinels > 0; cache_sentinel.c): */
    crt_cache_sentinel *sentinels;
    size_t nsentinels;
    size_t sidx;                /* the sentinel asked (or watched) now */
    size_t stried;              /* sentinels tried in this round */
    char *master_name;
    char *sentinel_password;
    redisAsyncContext *sac;     /* the sentinel connection (asks, then subscribed) */
    crt_cache_sstate sstate;
    uv_timer_t s_timer;         /* per-sentinel timeout, backoff between rounds */
    bool gai_sentinel;          /* the running lookup is a sentinel's name */
    bool addr_fresh;            /* host/port just came from a sentinel: connect without asking again */
    char replid[48];            /* master_replid of the last master that was ready */
    uint64_t last_good;         /* uv_now when the ready master last worked (then lost) */
    uint64_t changed;           /* for the on-ready hook: crt_cache_master_changed */
    uint64_t *m_switches;
};

/* cache_conn.c */
void crt_cache__connect(crt_cache *c);
void crt_cache__connect_addr(crt_cache *c);
void crt_cache__down(crt_cache *c, const char *why);
void crt_cache__reconnect_now(crt_cache *c, const char *why);
int crt_cache__resolve(crt_cache *c, const char *host, bool for_sentinel);
void crt_cache__guard_cb(uv_check_t *h);
/* cache_sentinel.c */
int crt_cache__sentinels_parse(crt_cache *c, const char *list, char *err, size_t errcap);
void crt_cache__sentinel_ask(crt_cache *c);
void crt_cache__sentinel_resolved(crt_cache *c, int status, const char *ip);
void crt_cache__sentinel_close(crt_cache *c);
void crt_cache__sentinel_guard(crt_cache *c);
void crt_cache__sentinel_free(crt_cache *c);
/* cache.c */
void crt_cache__release(crt_cache *c);
/* cache_script.c: SCRIPT LOAD of every registered script (on ready, before
 * anything else is sent); their release with the cache. */
void crt_cache__scripts_load(crt_cache *c);
void crt_cache__scripts_free(crt_cache *c);

#endif
