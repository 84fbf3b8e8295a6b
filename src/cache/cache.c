/* The Valkey client's public side: URL checks, commands and their
 * deadlines, new/free. The connection itself (hiredis' libuv adapter, the
 * handshake, reconnects, and the checks on what hiredis' reader builds) is
 * in cache_conn.c. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"
#include "cronium/common.h"
#include "cronium/log.h"

typedef struct cmd {
    crt_cache *c;
    crt_cache_cb cb;
    void *ud;
    uint64_t deadline;
    bool abandoned;             /* answered by a timeout; the late reply is dropped */
    crt_dnode node;             /* in the pending list */
} cmd;

static void on_cmd_timeout(uv_timer_t *t);

/* ---- URL --------------------------------------------------------------------------------------- */

typedef struct url_parts {
    char host[256];
    int port;
    char path[256];
    char password[256];
    int db;
    bool is_unix;
} url_parts;

static int parse_url(const char *url, url_parts *u, char *err, size_t errcap)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    u->db = -1;
    const char *p;
    if (!strncmp(url, "rediss://", 9) || !strncmp(url, "valkeys://", 10)) {
        snprintf(err, errcap, "cache.url (VALKEY_URL): TLS (%.*s) is not built into this binary; use redis://, "
                              "valkey:// or unix://", (int)strcspn(url, ":"), url);
        return CRT_EINVAL;
    }
    if (!strncmp(url, "unix://", 7)) {
        u->is_unix = true;
        p = url + 7;
        size_t n = strcspn(p, "?");
        if (n == 0 || n >= sizeof u->path) {
            snprintf(err, errcap, "cache.url (VALKEY_URL): \"%s\" has no socket path", url);
            return CRT_EINVAL;
        }
        memcpy(u->path, p, n);
        const char *q = p + n;
        while (*q == '?' || *q == '&') {
            q++;
            if (!strncmp(q, "db=", 3))
                u->db = atoi(q + 3);
            else if (!strncmp(q, "password=", 9))
                snprintf(u->password, sizeof u->password, "%.*s", (int)strcspn(q + 9, "&"), q + 9);
            q += strcspn(q, "&");
        }
        return 0;
    }
    if (!strncmp(url, "redis://", 8))
        p = url + 8;
    else if (!strncmp(url, "valkey://", 9))
        p = url + 9;
    else {
        snprintf(err, errcap, "cache.url (VALKEY_URL): \"%s\" is not a valkey://, redis:// or unix:// URL", url);
        return CRT_EINVAL;
    }
    const char *at = strrchr(p, '@');
    const char *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        snprintf(u->password, sizeof u->password, "%.*s", (int)(at - pw), pw);
        p = at + 1;
    }
    size_t hl;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            goto bad;
        hl = (size_t)(close - p - 1);
        if (hl >= sizeof u->host)
            goto bad;
        memcpy(u->host, p + 1, hl);
        p = close + 1;
    } else {
        hl = strcspn(p, ":/");
        if (hl == 0 || hl >= sizeof u->host)
            goto bad;
        memcpy(u->host, p, hl);
        p += hl;
    }
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (port < 1 || port > 65535 || end == p + 1)
            goto bad;
        u->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (db < 0 || *end)
            goto bad;
        u->db = (int)db;
    }
    return 0;
bad:
    snprintf(err, errcap, "cache.url (VALKEY_URL): \"%s\" is not a valid URL", url);
    return CRT_EINVAL;
}

int crt_cache_check_url(const char *url, char *err, size_t errcap)
{
    url_parts u;
    return parse_url(url, &u, err, errcap);
}

/* ---- commands ----------------------------------------------------------------------------------- */

#define CMD_OF(n) crt_container_of((n), cmd, node)

static void unlink_cmd(crt_cache *c, cmd *x)
{
    crt_dlist_remove(&c->pending, &x->node);
    c->npending--;
}

static void arm_cmd_timer(crt_cache *c)
{
    crt_dnode *n = c->pending.head;
    while (n && CMD_OF(n)->abandoned)
        n = n->next;
    cmd *x = n ? CMD_OF(n) : NULL;
    if (!x) {
        uv_timer_stop(&c->cmd_timer);
        return;
    }
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->cmd_timer, on_cmd_timeout, x->deadline > now ? x->deadline - now : 0, 0);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    cmd *x = privdata;
    crt_cache *c = x->c;
    redisReply *rep = r;
    unlink_cmd(c, x);
    /* A demoted master answers writes with -READONLY: it is a replica now,
     * ask the sentinels again (after this reply, on the next loop turn). */
    bool readonly = rep && rep->type == REDIS_REPLY_ERROR && c->nsentinels && c->ac == ac &&
                    c->state == C_READY && !strncmp(rep->str, "READONLY", 8);
    /* No reply on the current connection: hiredis is dropping it (EOF, a
     * reply refused, cache_conn.c), its on_disconnect follows these
     * callbacks. Not ready from now on, for them too. */
    if (!rep && c->ac == ac && c->state == C_READY)
        c->state = C_DOWN;
    if (!x->abandoned && x->cb) {
        crt_cache_reply out = {.err = rep ? 0 : CRT_EUNAVAIL, .type = CRT_CACHE_NIL};
        if (rep) {
            switch (rep->type) {
            case REDIS_REPLY_STRING: out.type = CRT_CACHE_STR; out.str = rep->str; out.len = rep->len; break;
            case REDIS_REPLY_STATUS: out.type = CRT_CACHE_STATUS; out.str = rep->str; out.len = rep->len; break;
            case REDIS_REPLY_INTEGER: out.type = CRT_CACHE_INT; out.integer = rep->integer; break;
            case REDIS_REPLY_ERROR:
                out.type = CRT_CACHE_ERROR; out.str = rep->str; out.len = rep->len;
                (*c->m_errors)++;
                break;
            case REDIS_REPLY_NIL: out.type = CRT_CACHE_NIL; break;
            default:
                /* No command of ours answers with an array: not a value. */
                out.type = CRT_CACHE_ERROR; out.str = "unexpected reply type"; out.len = strlen(out.str);
                (*c->m_errors)++;
                break;
            }
        } else {
            (*c->m_errors)++;
        }
        x->cb(x->ud, &out);
    }
    free(x);
    if (readonly && c->state == C_READY && c->ac == ac)
        crt_cache__reconnect_now(c, "the master became a replica (READONLY)");
    if (c->state != C_CLOSED)
        arm_cmd_timer(c);
}

static void on_cmd_timeout(uv_timer_t *t)
{
    crt_cache *c = t->data;
    uint64_t now = uv_now(c->loop);
    bool expired = false;
    for (crt_dnode *n = c->pending.head; n; n = n->next) {
        cmd *x = CMD_OF(n);
        if (!x->abandoned && x->deadline <= now) {
            /* Answer now; the reply, if it ever comes, is dropped. */
            x->abandoned = true;
            expired = true;
            (*c->m_errors)++;
            if (x->cb) {
                crt_cache_reply out = {.err = CRT_EUNAVAIL};
                x->cb(x->ud, &out);
                if (c->state == C_CLOSED)
                    return; /* freed from the callback: the rest completed then */
            }
        }
    }
    if (expired && c->state == C_READY) {
        /* A stuck server: drop the connection, requests bypass the cache. */
        crt_cache__down(c, "command timed out");
        return;
    }
    arm_cmd_timer(c);
}

int crt_cache_cmd(crt_cache *c, crt_cache_cb cb, void *ud, int argc, const char **argv, const size_t *lens)
{
    if (!c || c->state != C_READY || c->npending >= c->max_pending)
        return CRT_EUNAVAIL;
    cmd *x = calloc(1, sizeof *x);
    if (!x)
        return CRT_EUNAVAIL;
    x->c = c;
    x->cb = cb;
    x->ud = ud;
    x->deadline = uv_now(c->loop) + c->timeout_ms;
    if (redisAsyncCommandArgv(c->ac, on_reply, x, argc, argv, lens) != REDIS_OK) {
        free(x);
        return CRT_EUNAVAIL;
    }
    c->sent++;      /* one more reply the reader may start (cache_conn.c) */
    crt_dlist_push_back(&c->pending, &x->node);
    c->npending++;
    if (c->npending == 1 || !uv_is_active((uv_handle_t *)&c->cmd_timer))
        arm_cmd_timer(c);
    return 0;
}

bool crt_cache_ready(const crt_cache *c) { return c && c->state == C_READY; }

uint64_t crt_cache_master_changed(const crt_cache *c) { return c ? c->changed : 0; }

void crt_cache_on_ready(crt_cache *c, void (*fn)(void *ctx), void *ctx)
{
    c->on_ready = fn;
    c->on_ready_ctx = ctx;
}

static int default_resolve(void *ctx, uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
                           const char *host, const struct addrinfo *hints)
{
    (void)ctx;
    return uv_getaddrinfo(loop, req, cb, host, NULL, hints);
}

static void default_cancel(void *ctx, uv_getaddrinfo_t *req)
{
    (void)ctx;
    uv_cancel((uv_req_t *)req); /* fails (harmlessly) once the lookup runs */
}

static double gauge_up(void *ctx) { return crt_cache_ready(ctx) ? 1 : 0; }

crt_cache *crt_cache_new(uv_loop_t *loop, const crt_cache_opts *o, crt_metrics *m, char *err, size_t errcap)
{
    url_parts u;
    bool sentinel = o->sentinels && *o->sentinels;
    if (sentinel) {
        /* The master's address comes from the sentinels. */
        memset(&u, 0, sizeof u);
        u.db = -1;
        if (!o->master_name || !*o->master_name) {
            snprintf(err, errcap, "cache.masterName (VALKEY_MASTER_NAME) is required with cache.sentinels");
            return NULL;
        }
    } else if (parse_url(o->url, &u, err, errcap)) {
        return NULL;
    }
    crt_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    if (sentinel) {
        if (crt_cache__sentinels_parse(c, o->sentinels, err, errcap)) {
            free(c);
            return NULL;
        }
        c->master_name = strdup(o->master_name);
        if (o->sentinel_password && *o->sentinel_password)
            c->sentinel_password = strdup(o->sentinel_password);
    } else if (u.is_unix)
        c->path = strdup(u.path);
    else
        c->host = strdup(u.host);
    if (!sentinel)
        c->port = u.port;
    const char *pw = o->password && *o->password ? o->password : u.password;
    c->password = *pw ? strdup(pw) : NULL;
    c->db = o->db >= 0 ? (int)o->db : (u.db >= 0 ? u.db : 0);
    c->timeout_ms = o->timeout_ms;
    c->max_pending = o->max_pending;
    c->max_reply = o->max_reply ? o->max_reply : CRT_CACHE_MAX_REPLY_DEFAULT;
    if (o->resolver)
        c->resolver = *o->resolver;
    else
        c->resolver = (crt_cache_resolver){.start = default_resolve, .cancel = default_cancel};
    c->backoff_ms = CRT_CACHE_BACKOFF_MIN_MS;
    uv_timer_init(loop, &c->state_timer);
    uv_timer_init(loop, &c->cmd_timer);
    uv_check_init(loop, &c->guard);     /* started while connected (cache_conn.c) */
    uv_timer_init(loop, &c->s_timer);
    c->state_timer.data = c->cmd_timer.data = c->guard.data = c->s_timer.data = c;
    c->open_handles = 4;
    crt_metrics_gauge(m, "cronium_runtime_valkey_up", "1 when the Valkey connection is ready.", "", gauge_up, c);
    c->m_errors = crt_metrics_counter(m, "cronium_runtime_valkey_errors_total",
                                      "Valkey commands that failed or timed out.", "");
    c->m_reconnects = crt_metrics_counter(m, "cronium_runtime_valkey_connects_total",
                                          "Successful Valkey (re)connections.", "");
    c->m_switches = crt_metrics_counter(m, "cronium_runtime_valkey_master_changes_total",
                                        "Valkey masters found with another replication history (a failover).", "");
    c->state = C_DOWN;
    crt_cache__connect(c);
    return c;
}

void crt_cache__release(crt_cache *c)
{
    if (c->state != C_CLOSED || c->open_handles > 0)
        return;
    crt_cache__scripts_free(c);
    crt_cache__sentinel_free(c);
    free(c->host);
    free(c->path);
    free(c->password);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    crt_cache *c = h->data;
    c->open_handles--;
    crt_cache__release(c);
}

void crt_cache_free(crt_cache *c)
{
    if (!c)
        return;
    if (c->state != C_CLOSED) {
        c->state = C_CLOSED;
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        if (ac)
            redisAsyncFree(ac);
        uv_close((uv_handle_t *)&c->state_timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->cmd_timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->guard, on_handle_closed);
        uv_close((uv_handle_t *)&c->s_timer, on_handle_closed);
        crt_cache__sentinel_close(c);
        if (c->gai_busy)
            c->resolver.cancel(c->resolver.ctx, &c->gai);
    }
}
