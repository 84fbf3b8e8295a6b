/* Valkey connection management around hiredis' async API, with our own
 * libuv glue (instead of hiredis' adapter) so every byte read is checked
 * before hiredis sees it. States: RESOLVING -> CONNECTING (TCP, then AUTH,
 * SELECT, PING) -> READY once PING is answered; any failure -> DOWN, then a
 * reconnect after a backoff. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/cache.h"
#include "cronium/list.h"
#include "cronium/log.h"

/* Exported by libhiredis (async.c: what redisAsyncHandleRead runs after it
 * read the socket) but not declared in 0.14's headers. We read the socket
 * ourselves so the bytes can be checked first; a hiredis without it fails
 * at link time, not at run time. */
void redisProcessCallbacks(redisAsyncContext *ac);

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { C_DOWN, C_RESOLVING, C_CONNECTING, C_READY, C_CLOSED } cache_state;

/* An incremental RESP2 scanner run over every byte the server sends, before
 * hiredis parses it. hiredis 0.14 asserts (aborts) on a reply with no
 * pending callback, buffers a reply of any size, and does not check the
 * CRLF after a bulk; here each is a protocol error that drops the
 * connection. It keeps no data, only where it is in the current reply. */
#define SCAN_MAX_DEPTH 7    /* hiredis' own nesting limit */

typedef enum { S_TYPE, S_LINE, S_NUM, S_LF, S_BULK, S_BULK_CR, S_BULK_LF } scan_state;

typedef struct resp_scan {
    scan_state st;
    char type;                  /* + - : $ * of the current item */
    bool neg;
    int ndigits;
    long long num;
    long long bulk_left;        /* bytes of bulk data still to come */
    int depth;                  /* open arrays */
    long long left[SCAN_MAX_DEPTH]; /* elements still expected in each */
    size_t bytes;               /* bytes of the current top-level reply so far */
} resp_scan;

/* One connection: the hiredis context, our poll handle on its socket, and
 * the scanner's view of the stream. Freed in the poll's close callback. */
typedef struct conn {
    crt_cache *c;
    redisAsyncContext *ac;      /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
    resp_scan scan;
    size_t unanswered;          /* commands sent whose reply has not been seen */
} conn;

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
    bool gai_busy;              /* a lookup is running: never start another */
    crt_cache_resolver resolver;
    char resolved[64];          /* a lookup that finished while DOWN: the next attempt uses it */
    size_t max_reply;
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

/* ---- reply check ------------------------------------------------------------------------------------ */

/* An element (or a whole nil/empty array) is complete: pops finished arrays;
 * at the top level a reply is complete, and must answer a command. */
static const char *scan_element_done(resp_scan *s, size_t *unanswered)
{
    s->st = S_TYPE;
    while (s->depth > 0) {
        if (--s->left[s->depth - 1] > 0)
            return NULL;
        s->depth--;
    }
    s->bytes = 0;
    if (*unanswered == 0)
        return "a reply no command asked for (unsolicited)";
    (*unanswered)--;
    return NULL;
}

static const char *scan_line_done(resp_scan *s, size_t cap, size_t *unanswered)
{
    switch (s->type) {
    case '$':
        if (s->neg)
            return s->num == 1 ? scan_element_done(s, unanswered) : "a negative bulk length";
        if ((unsigned long long)s->num > cap)
            return "a bulk larger than the largest value this service stores";
        s->bulk_left = s->num;
        s->st = s->num ? S_BULK : S_BULK_CR;
        return NULL;
    case '*':
        if (s->neg)
            return s->num == 1 ? scan_element_done(s, unanswered) : "a negative array length";
        if (s->num == 0)
            return scan_element_done(s, unanswered);
        if (s->depth == SCAN_MAX_DEPTH)
            return "arrays nested too deep";
        if ((unsigned long long)s->num > cap / 3)
            return "an array larger than the largest value this service stores";
        s->left[s->depth++] = s->num;
        s->st = S_TYPE;
        return NULL;
    default:
        return scan_element_done(s, unanswered);
    }
}

/* Scans n more bytes of the stream. Returns NULL, or why it is not a reply
 * stream this client can accept. */
static const char *scan_feed(resp_scan *s, const char *p, size_t n, size_t cap, size_t *unanswered)
{
    for (size_t i = 0; i < n;) {
        if (s->st == S_BULK) {
            size_t k = n - i < (unsigned long long)s->bulk_left ? n - i : (size_t)s->bulk_left;
            s->bulk_left -= (long long)k;
            s->bytes += k;
            i += k;
            if (s->bulk_left == 0)
                s->st = S_BULK_CR;
            continue;
        }
        unsigned char ch = (unsigned char)p[i++];
        if (++s->bytes > cap)
            return "a reply larger than the largest value this service stores";
        const char *bad = NULL;
        switch (s->st) {
        case S_TYPE:
            s->type = (char)ch;
            s->neg = false;
            s->ndigits = 0;
            s->num = 0;
            if (ch == '+' || ch == '-')
                s->st = S_LINE;
            else if (ch == ':' || ch == '$' || ch == '*')
                s->st = S_NUM;
            else
                return "bytes that are not a RESP reply";
            break;
        case S_LINE:
            if (ch == '\r')
                s->st = S_LF;
            else if (ch == '\n')
                return "a line without CR";
            break;
        case S_NUM:
            if (ch == '-' && !s->neg && s->ndigits == 0) {
                s->neg = true;
            } else if (ch >= '0' && ch <= '9') {
                if (s->num > (LLONG_MAX - (ch - '0')) / 10)
                    return "a number out of range";
                s->num = s->num * 10 + (ch - '0');
                s->ndigits++;
            } else if (ch == '\r' && s->ndigits > 0) {
                s->st = S_LF;
            } else {
                return "a malformed number";
            }
            break;
        case S_LF:
            if (ch != '\n')
                return "a line without LF";
            bad = scan_line_done(s, cap, unanswered);
            break;
        case S_BULK_CR:
            if (ch != '\r')
                return "a bulk longer than its declared length";
            s->st = S_BULK_LF;
            break;
        case S_BULK_LF:
            if (ch != '\n')
                return "a bulk longer than its declared length";
            bad = scan_element_done(s, unanswered);
            break;
        case S_BULK:
            break;
        }
        if (bad)
            return bad;
    }
    return NULL;
}

/* ---- event glue (replaces hiredis' libuv adapter) ------------------------------------------------------ */

static void conn_on_poll(uv_poll_t *h, int status, int events);

static void conn_update(conn *k)
{
    if (k->events)
        uv_poll_start(&k->poll, k->events, conn_on_poll);
    else
        uv_poll_stop(&k->poll);
}

static void conn_add_read(void *p) { conn *k = p; k->events |= UV_READABLE; conn_update(k); }
static void conn_del_read(void *p) { conn *k = p; k->events &= ~UV_READABLE; conn_update(k); }
static void conn_add_write(void *p) { conn *k = p; k->events |= UV_WRITABLE; conn_update(k); }
static void conn_del_write(void *p) { conn *k = p; k->events &= ~UV_WRITABLE; conn_update(k); }

static void conn_on_closed(uv_handle_t *h)
{
    conn *k = crt_container_of((uv_poll_t *)h, conn, poll);
    crt_cache *c = k->c;
    free(k);
    c->open_handles--;
    cache_release(c);
}

/* hiredis frees the context: the poll handle goes with it. */
static void conn_cleanup(void *p)
{
    conn *k = p;
    k->ac = NULL;
    uv_close((uv_handle_t *)&k->poll, conn_on_closed);
}

static int conn_attach(crt_cache *c, redisAsyncContext *ac)
{
    conn *k = calloc(1, sizeof *k);
    if (!k)
        return CRT_ENOMEM;
    if (uv_poll_init(c->loop, &k->poll, ac->c.fd) != 0) {
        free(k);
        return CRT_EIO;
    }
    k->c = c;
    k->ac = ac;
    k->poll.data = k;
    c->open_handles++;
    ac->ev.data = k;
    ac->ev.addRead = conn_add_read;
    ac->ev.delRead = conn_del_read;
    ac->ev.addWrite = conn_add_write;
    ac->ev.delWrite = conn_del_write;
    ac->ev.cleanup = conn_cleanup;
    return 0;
}

static void conn_fail(conn *k, const char *why)
{
    crt_cache *c = k->c;
    (*c->m_errors)++;
    if (c->ac == k->ac) {
        cache_down(c, why);
    } else {
        redisAsyncContext *ac = k->ac;
        k->ac = NULL;
        redisAsyncFree(ac);
    }
}

/* What hiredis' redisAsyncHandleRead does, with the scanner in between:
 * nothing reaches hiredis' reader unless it is a stream of replies to
 * commands we sent, each within max_reply. */
static void conn_read(conn *k)
{
    crt_cache *c = k->c;
    redisAsyncContext *ac = k->ac;
    char buf[16384];
    ssize_t n = recv(ac->c.fd, buf, sizeof buf, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(k, strerror(errno));
        return;
    }
    if (n == 0) {
        conn_fail(k, "the server closed the connection");
        return;
    }
    const char *bad = scan_feed(&k->scan, buf, (size_t)n, c->max_reply, &k->unanswered);
    if (bad) {
        char why[160];
        snprintf(why, sizeof why, "protocol error: %s", bad);
        conn_fail(k, why);
        return;
    }
    if (redisReaderFeed(ac->c.reader, buf, (size_t)n) != REDIS_OK) {
        conn_fail(k, "out of memory");
        return;
    }
    redisProcessCallbacks(ac);
}

static void conn_on_poll(uv_poll_t *h, int status, int events)
{
    conn *k = h->data;
    if (!k->ac)
        return;
    if (status < 0) {
        conn_fail(k, uv_strerror(status));
        return;
    }
    /* The first event completes the connect (hiredis does it on write). */
    if ((events & UV_WRITABLE) || !(k->ac->c.flags & REDIS_CONNECTED)) {
        redisAsyncHandleWrite(k->ac);
        if (!k->ac)
            return;
    }
    if (events & UV_READABLE)
        conn_read(k);
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
    ((conn *)c->ac->ev.data)->unanswered++;
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
        c->resolver.cancel(c->resolver.ctx, &c->gai);
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* pending commands get NULL replies */
    if (c->state == C_CLOSED)
        return;             /* one of their callbacks freed the cache */
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
    }
    /* Connected: ready once PING is answered (on_ping_reply). */
}

/* The server answered the handshake: commands may go. The backoff resets
 * only here, so a server that accepts and then misbehaves is retried ever
 * more slowly, and /ready never says up for it. */
static void cache_became_ready(crt_cache *c)
{
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

static void on_ping_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache *c = ud;
    if (r->err || c->state != C_CONNECTING)
        return;     /* already down (timeout, protocol error, AUTH refused) */
    if (r->type != CRT_CACHE_STATUS) {
        cache_down(c, r->type == CRT_CACHE_ERROR ? "PING answered with an error" : "PING answered wrongly");
        return;
    }
    cache_became_ready(c);
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
    if (conn_attach(c, ac) != 0) {
        redisAsyncFree(ac);
        cache_down(c, "cannot watch the connection");
        return;
    }
    c->ac = ac;
    c->state = C_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* AUTH, SELECT and PING go first on the wire; commands are refused until
     * PING is answered, so nothing can overtake them. */
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
    const char *ping[1] = {"PING"};
    int rc = crt_cache_cmd(c, on_ping_reply, c, 1, ping, NULL);
    c->state = C_CONNECTING;
    if (rc)
        cache_down(c, "cannot send PING");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    crt_cache *c = req->data;
    c->gai_busy = false;
    c->open_handles--;
    if (c->state == C_CLOSED) {
        if (res)
            uv_freeaddrinfo(res);
        cache_release(c);   /* a free may have waited for us */
        return;
    }
    char ip[64] = "";
    if (status == 0 && res) {
        for (struct addrinfo *a = res; a && !*ip; a = a->ai_next) {
            if (a->ai_family == AF_INET)
                uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof ip);
        }
        if (!*ip && res->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    }
    if (res)
        uv_freeaddrinfo(res);
    if (c->state != C_RESOLVING) {
        /* The attempt it was for timed out; the next one uses the answer
         * rather than starting the same slow lookup again. */
        if (*ip)
            snprintf(c->resolved, sizeof c->resolved, "%s", ip);
        return;
    }
    if (!*ip) {
        cache_down(c, status == UV_ECANCELED ? "resolution cancelled"
                      : status < 0 ? uv_strerror(status) : "no address for the host");
        return;
    }
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
    if (c->resolved[0]) {
        char ip[sizeof c->resolved];
        memcpy(ip, c->resolved, sizeof ip);
        c->resolved[0] = 0;
        start_connect(c, ip);
        return;
    }
    /* hiredis would call getaddrinfo on the loop: resolve in libuv's pool
     * first. One lookup at a time: a slow one still running serves this
     * attempt too (libuv forbids reusing a request in flight). */
    c->state = C_RESOLVING;
    if (c->gai_busy)
        return;
    c->gai.data = c;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (c->resolver.start(c->resolver.ctx, c->loop, &c->gai, on_resolved, c->host, &hints) == 0) {
        c->gai_busy = true;
        c->open_handles++;
    } else {
        cache_down(c, "cannot resolve");
    }
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
    c->max_reply = o->max_reply ? o->max_reply : CRT_CACHE_MAX_REPLY_DEFAULT;
    if (o->resolver)
        c->resolver = *o->resolver;
    else
        c->resolver = (crt_cache_resolver){.start = default_resolve, .cancel = default_cancel};
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
            c->resolver.cancel(c->resolver.ctx, &c->gai);
    }
}
