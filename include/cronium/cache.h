/* Valkey (Redis protocol) client: one hiredis async connection (on hiredis'
 * libuv adapter) shared, so pipelined, by every request. Adds what hiredis
 * 0.14 lacks: a connect timeout, a per-command timeout (a timer over the
 * oldest pending command), asynchronous name resolution (one lookup at a
 * time), reconnection with backoff, and bounds on what hiredis' parser
 * accepts: a reply nobody asked for, a reply larger than max_reply (buffered
 * or built) or bytes that are not RESP are a protocol error, which drops the
 * connection (pending commands complete with CRT_EUNAVAIL) and reconnects.
 * The connection is ready only once the server answered PING. While it is
 * not ready, commands fail at once so callers go straight to the backend.
 * Handlers never see hiredis types.
 *
 * With sentinels (cache_sentinel.c) the address is not fixed: the client asks
 * each sentinel in turn (SENTINEL get-master-addr-by-name, one cache timeout
 * each) for the master, keeps that sentinel connection subscribed to
 * +switch-master, checks after connecting that the server is a master (INFO
 * replication), asks again after every disconnect, and notices when the
 * master's replication history changed (another server was promoted): see
 * crt_cache_master_changed. */
#ifndef CRONIUM_CACHE_H
#define CRONIUM_CACHE_H

#include <uv.h>
#include "cronium/metrics.h"

typedef struct crt_cache crt_cache;

typedef enum { CRT_CACHE_NIL, CRT_CACHE_STR, CRT_CACHE_INT, CRT_CACHE_STATUS, CRT_CACHE_ERROR } crt_cache_type;

/* A reply. err != 0: no answer (down, timeout, protocol error; type is
 * NIL). err == 0: the server answered; CRT_CACHE_ERROR is an error reply
 * (-ERR, -OOM, -WRONGTYPE...: str holds its text), never to be read as "nil"
 * or "busy"; a reply of a type no command of ours expects (an array) is also
 * CRT_CACHE_ERROR. */
typedef struct crt_cache_reply {
    int err;                        /* 0, or CRT_EUNAVAIL (down, timeout, protocol error) */
    crt_cache_type type;
    const char *str;                /* borrowed for the callback */
    size_t len;
    long long integer;
} crt_cache_reply;

typedef void (*crt_cache_cb)(void *ud, const crt_cache_reply *r);

/* Name resolution, replaceable (tests). start begins one lookup of host
 * and returns 0 (then cb runs exactly once, on the loop, with a result the
 * cache frees with uv_freeaddrinfo) or a negative error (cb never runs).
 * cancel is best effort: a cancelled lookup still calls cb (UV_ECANCELED).
 * The cache never starts a lookup while one is running. */
typedef struct crt_cache_resolver {
    int (*start)(void *ctx, uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb, const char *host,
                 const struct addrinfo *hints);
    void (*cancel)(void *ctx, uv_getaddrinfo_t *req);
    void *ctx;
} crt_cache_resolver;

/* The largest reply accepted by default: the backend client's response cap
 * (the largest value this service ever stores) plus room for the framing. */
#define CRT_CACHE_MAX_REPLY_DEFAULT ((size_t)(8u << 20) + 65536)

typedef struct crt_cache_opts {
    const char *url;                /* redis://, valkey://, unix:// */
    const char *password;           /* overrides the URL's; NULL: URL's */
    int64_t db;                     /* -1: URL's (or 0) */
    uint64_t timeout_ms;            /* connect and per command */
    size_t max_pending;
    size_t max_reply;               /* bytes of one reply; 0: CRT_CACHE_MAX_REPLY_DEFAULT */
    const crt_cache_resolver *resolver; /* NULL: uv_getaddrinfo (copied) */
    /* Sentinel mode (url unused): "host:port,host:port" and the master's
     * name; password and db above apply to the master. */
    const char *sentinels;
    const char *master_name;
    const char *sentinel_password;  /* AUTH to the sentinels; NULL/"": none */
} crt_cache_opts;

/* Validates a sentinel list (host:port,...; names or IPs, [v6]:port).
 * Writes a message to err. */
int crt_cache_check_sentinels(const char *list, char *err, size_t errcap);

/* Parses and validates a URL (no connection). Writes a message to err. */
int crt_cache_check_url(const char *url, char *err, size_t errcap);
crt_cache *crt_cache_new(uv_loop_t *loop, const crt_cache_opts *o, crt_metrics *m, char *err, size_t errcap);
/* Sends a command. Returns CRT_EUNAVAIL at once (cb not called) when not
 * connected or too busy; otherwise cb (may be NULL) runs exactly once. */
int crt_cache_cmd(crt_cache *c, crt_cache_cb cb, void *ud, int argc, const char **argv, const size_t *lens);
bool crt_cache_ready(const crt_cache *c);
/* fn runs each time the connection becomes ready, before any other command
 * can be sent on it (so what fn sends is ordered first). */
void crt_cache_on_ready(crt_cache *c, void (*fn)(void *ctx), void *ctx);
/* Inside the on-ready hook: nonzero when this master's replication history
 * differs from the previous ready one's (a replica was promoted), so writes
 * the old master acknowledged may be missing here. The value is the loop
 * time (uv_now) at which the old master was last seen working; writes from
 * somewhat before it may be lost. 0 otherwise (and always without
 * sentinels). */
uint64_t crt_cache_master_changed(const crt_cache *c);
/* Disconnects; pending commands complete with CRT_EUNAVAIL; freed once the
 * last handle is closed. */
void crt_cache_free(crt_cache *c);

#endif
