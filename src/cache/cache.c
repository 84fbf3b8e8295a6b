/* Valkey connection management around hiredis' async API and its libuv
 * adapter. States: RESOLVING -> CONNECTING -> READY; any failure -> DOWN,
 * then a reconnect after a backoff. */
#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/cache.h"
#include "cronium/list.h"
#include "cronium/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { C_DOWN, C_RESOLVING, C_CONNECTING, C_READY, C_CLOSED } cache_state;

typedef struct cmd {
    crt_cache *c;
    crt_cache_cb cb;
    void *ud;
    uint64_t deadline;
    bool abandoned;             /* answered by a timeout; the late reply is dropped */
    crt_dnode node;             /* in the pending list */
} cmd;

struct crt_cache {
    uv_loop_t *loop;
    cache_state state;
    redisAsyncContext *ac;
    char *host;                 /* NULL for unix sockets */
    int port;
    char *path;                 /* unix socket */
    char *password;
    int db;
    uint64_t timeout_ms;
    size_t max_pending;
    uv_timer_t state_timer;     /* connect timeout, reconnect backoff */
    uv_timer_t cmd_timer;       /* oldest pending command's deadline */
    uv_getaddrinfo_t gai;
    bool gai_busy;
    uint64_t backoff_ms;
    crt_dlist pending;          /* oldest first */
    size_t npending;
    int open_handles;
    bool was_up;
    void (*on_ready)(void *ctx);
    void *on_ready_ctx;
    uint64_t *m_errors;
    uint64_t *m_reconnects;
};

static void cache_connect(crt_cache *c);
static void cache_down(crt_cache *c, const char *why);
static void on_cmd_timeout(uv_timer_t *t);
static void cache_release(crt_cache *c);

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
    (void)ac;
    cmd *x = privdata;
    crt_cache *c = x->c;
    redisReply *rep = r;
    unlink_cmd(c, x);
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
            default: out.type = CRT_CACHE_NIL; break;
            }
        } else {
            (*c->m_errors)++;
        }
        x->cb(x->ud, &out);
    }
    free(x);
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
            }
        }
    }
    if (expired && c->state == C_READY) {
        /* A stuck server: drop the connection, requests bypass the cache. */
        cache_down(c, "command timed out");
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
    crt_dlist_push_back(&c->pending, &x->node);
    c->npending++;
    if (c->npending == 1 || !uv_is_active((uv_handle_t *)&c->cmd_timer))
        arm_cmd_timer(c);
    return 0;
}

bool crt_cache_ready(const crt_cache *c) { return c && c->state == C_READY; }

/* ---- connection ------------------------------------------------------------------------------------- */

static void on_state_timer(uv_timer_t *t)
{
    crt_cache *c = t->data;
    if (c->state == C_DOWN) {
        cache_connect(c);
    } else if (c->state == C_CONNECTING || c->state == C_RESOLVING) {
        cache_down(c, "connect timed out");
    }
}

static void schedule_reconnect(crt_cache *c)
{
    uv_timer_start(&c->state_timer, on_state_timer, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void cache_down(crt_cache *c, const char *why)
{
    if (c->state == C_CLOSED)
        return;
    bool was_ready = c->state == C_READY;
    c->state = C_DOWN;
    if (c->gai_busy)
        uv_cancel((uv_req_t *)&c->gai);
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* pending commands get NULL replies */
    if (was_ready || c->was_up) {
        CRT_LOGF(CRT_LOG_WARN, "valkey down: requests bypass the cache", CRT_LS("reason", why));
        c->was_up = false;
    } else {
        CRT_LOGF(CRT_LOG_INFO, "valkey still unavailable", CRT_LS("reason", why));
    }
    uv_timer_stop(&c->cmd_timer);
    schedule_reconnect(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    crt_cache *c = ac->data;
    if (c->ac != ac)
        return;
    if (status != REDIS_OK) {
        c->ac = NULL;   /* hiredis frees it after this callback */
        cache_down(c, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    c->state = C_READY;
    c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_stop(&c->state_timer);
    if (!c->was_up)
        CRT_LOGF(CRT_LOG_INFO, "valkey connected", CRT_LS("address", c->host ? c->host : c->path),
                 CRT_LI("port", c->port));
    c->was_up = true;
    (*c->m_reconnects)++;
    if (c->on_ready)
        c->on_ready(c->on_ready_ctx);
}

void crt_cache_on_ready(crt_cache *c, void (*fn)(void *ctx), void *ctx)
{
    c->on_ready = fn;
    c->on_ready_ctx = ctx;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    crt_cache *c = ac->data;
    if (c->ac != ac)
        return;     /* we freed it ourselves (cache_down) */
    c->ac = NULL;   /* hiredis frees it after this callback */
    cache_down(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_auth_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache *c = ud;
    if (r->err == 0 && r->type == CRT_CACHE_ERROR) {
        CRT_LOGF(CRT_LOG_ERROR, "valkey refused AUTH or SELECT", CRT_LSN("error", r->str, r->len));
        cache_down(c, "AUTH/SELECT refused");
    }
}

static void start_connect(crt_cache *c, const char *ip)
{
    redisAsyncContext *ac = ip ? redisAsyncConnect(ip, c->port) : redisAsyncConnectUnix(c->path);
    if (!ac || ac->err) {
        const char *why = ac && ac->errstr[0] ? ac->errstr : "cannot create connection";
        char msg[128];
        snprintf(msg, sizeof msg, "%s", why);
        if (ac)
            redisAsyncFree(ac);
        cache_down(c, msg);
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        cache_down(c, "libuv attach failed");
        return;
    }
    c->ac = ac;
    c->state = C_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* AUTH and SELECT go first on the wire; commands are refused until the
     * connect callback, so nothing can overtake them. */
    c->state = C_READY; /* lets crt_cache_cmd queue them */
    if (c->password && *c->password) {
        const char *argv[2] = {"AUTH", c->password};
        crt_cache_cmd(c, on_auth_reply, c, 2, argv, NULL);
    }
    if (c->db > 0) {
        char dbs[16];
        snprintf(dbs, sizeof dbs, "%d", c->db);
        const char *argv[2] = {"SELECT", dbs};
        crt_cache_cmd(c, on_auth_reply, c, 2, argv, NULL);
    }
    c->state = C_CONNECTING;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    crt_cache *c = req->data;
    c->gai_busy = false;
    c->open_handles--;
    if (c->state == C_CLOSED) {
        uv_freeaddrinfo(res);
        cache_release(c);   /* a free may have waited for us */
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        if (c->state == C_RESOLVING)
            cache_down(c, status == UV_ECANCELED ? "resolution cancelled" : uv_strerror(status));
        return;
    }
    char ip[64] = "";
    for (struct addrinfo *a = res; a && !*ip; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof ip);
    }
    if (!*ip && res->ai_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    if (c->state == C_RESOLVING)
        start_connect(c, ip);
}

static void cache_connect(crt_cache *c)
{
    uv_timer_start(&c->state_timer, on_state_timer, c->timeout_ms, 0);
    if (!c->host) {
        start_connect(c, NULL);
        return;
    }
    unsigned char tmp[16];
    if (inet_pton(AF_INET, c->host, tmp) == 1 || inet_pton(AF_INET6, c->host, tmp) == 1) {
        start_connect(c, c->host);
        return;
    }
    /* hiredis would call getaddrinfo on the loop: resolve in libuv's pool first. */
    c->state = C_RESOLVING;
    c->gai.data = c;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(c->loop, &c->gai, on_resolved, c->host, NULL, &hints) == 0) {
        c->gai_busy = true;
        c->open_handles++;
    } else {
        cache_down(c, "cannot resolve");
    }
}

static double gauge_up(void *ctx) { return crt_cache_ready(ctx) ? 1 : 0; }

crt_cache *crt_cache_new(uv_loop_t *loop, const crt_cache_opts *o, crt_metrics *m, char *err, size_t errcap)
{
    url_parts u;
    if (parse_url(o->url, &u, err, errcap))
        return NULL;
    crt_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    if (u.is_unix)
        c->path = strdup(u.path);
    else
        c->host = strdup(u.host);
    c->port = u.port;
    const char *pw = o->password && *o->password ? o->password : u.password;
    c->password = *pw ? strdup(pw) : NULL;
    c->db = o->db >= 0 ? (int)o->db : (u.db >= 0 ? u.db : 0);
    c->timeout_ms = o->timeout_ms;
    c->max_pending = o->max_pending;
    c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &c->state_timer);
    uv_timer_init(loop, &c->cmd_timer);
    c->state_timer.data = c->cmd_timer.data = c;
    c->open_handles = 2;
    crt_metrics_gauge(m, "cronium_runtime_valkey_up", "1 when the Valkey connection is ready.", "", gauge_up, c);
    c->m_errors = crt_metrics_counter(m, "cronium_runtime_valkey_errors_total",
                                      "Valkey commands that failed or timed out.", "");
    c->m_reconnects = crt_metrics_counter(m, "cronium_runtime_valkey_connects_total",
                                          "Successful Valkey (re)connections.", "");
    c->state = C_DOWN;
    cache_connect(c);
    return c;
}

static void cache_release(crt_cache *c)
{
    if (c->state != C_CLOSED || c->open_handles > 0)
        return;
    free(c->host);
    free(c->path);
    free(c->password);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    crt_cache *c = h->data;
    c->open_handles--;
    cache_release(c);
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
        uv_close((uv_handle_t *)&c->state_timer, on_timer_closed);
        uv_close((uv_handle_t *)&c->cmd_timer, on_timer_closed);
        if (c->gai_busy)
            uv_cancel((uv_req_t *)&c->gai);
    }
}
