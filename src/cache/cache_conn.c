/* The Valkey connection: hiredis' async API on its libuv adapter, with name
 * resolution in libuv's pool (one lookup at a time), a connect timeout, the
 * AUTH/SELECT/PING handshake (ready only once PING is answered) and
 * reconnection with backoff.
 *
 * hiredis 0.14 parses the replies; two things it does not bound are bounded
 * here, without a second parser:
 * - a reply no command asked for makes redisProcessCallbacks assert: our
 *   reply-object functions (installed on the reader, delegating every object
 *   to hiredis' own) count the top-level replies the reader starts and refuse
 *   one beyond the commands sent, so the reader fails and hiredis drops the
 *   connection (pending commands get NULL replies);
 * - the reader buffers a bulk of any size before building it: a check handle
 *   looks at what it holds after each loop iteration's I/O, and the object
 *   functions refuse anything built over max_reply.
 * Either is a protocol error: down, requests bypass the cache, reconnect. */
#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "cache_int.h"
#include "cronium/common.h"
#include "cronium/log.h"

/* ---- what hiredis' reader builds -------------------------------------------------------------------- */

static const char ERR_UNSOLICITED[] = "a reply no command asked for (unsolicited)";
static const char ERR_TOO_LARGE[] = "a reply larger than the largest value this service stores";

/* The reader's own table (hiredis' redisReply objects): every object is
 * built and freed by it. freeObject gets no context, hence a file static;
 * every reader of the library starts with the same table. */
static redisReplyObjectFunctions *hiredis_fn;

/* Every object passes here before hiredis builds it; NULL refuses it (the
 * reader then fails, and hiredis disconnects with an error). */
static crt_cache *admit(const redisReadTask *t, size_t bytes)
{
    crt_cache *c = t->privdata;
    if (!t->parent) {
        if (c->received >= c->sent) {
            c->proto_err = ERR_UNSOLICITED;
            return NULL;
        }
        c->received++;
        c->reply_bytes = 0;
    }
    c->reply_bytes += bytes + sizeof(redisReply);
    if (c->reply_bytes > c->max_reply) {
        c->proto_err = ERR_TOO_LARGE;
        return NULL;
    }
    return c;
}

static void *checked_string(const redisReadTask *t, char *str, size_t len)
{
    /* hiredis 0.14 skips the two bytes after a bulk without looking at them
     * (they are in its buffer: it waited for them), so "$3\r\nabcdef\r\n"
     * would be served as "abc". Lines end in CRLF by construction. */
    if (str[len] != '\r' || str[len + 1] != '\n') {
        ((crt_cache *)t->privdata)->proto_err = "a bulk longer than its declared length";
        return NULL;
    }
    return admit(t, len) ? hiredis_fn->createString(t, str, len) : NULL;
}

static void *checked_array(const redisReadTask *t, int elements)
{
    size_t n = elements > 0 ? (size_t)elements : 0;
    return admit(t, n * sizeof(void *)) ? hiredis_fn->createArray(t, elements) : NULL;
}

static void *checked_integer(const redisReadTask *t, long long v)
{
    return admit(t, 0) ? hiredis_fn->createInteger(t, v) : NULL;
}

static void *checked_nil(const redisReadTask *t)
{
    return admit(t, 0) ? hiredis_fn->createNil(t) : NULL;
}

static void checked_free(void *obj) { hiredis_fn->freeObject(obj); }

static redisReplyObjectFunctions checked_fn = {
    .createString = checked_string,
    .createArray = checked_array,
    .createInteger = checked_integer,
    .createNil = checked_nil,
    .freeObject = checked_free,
};

static void install_checks(crt_cache *c, redisAsyncContext *ac)
{
    redisReader *r = ac->c.reader;
    if (!hiredis_fn)
        hiredis_fn = r->fn;
    r->fn = &checked_fn;
    r->privdata = c;    /* each task's privdata */
    c->sent = c->received = c->reply_bytes = 0;
    c->proto_err = NULL;
}

/* After the loop's I/O: a partial reply the reader holds over max_reply
 * (a huge bulk arriving) is dropped here, at most one read (16 KiB) past
 * the cap, long before it is complete. */
void crt_cache__guard_cb(uv_check_t *h)
{
    crt_cache *c = h->data;
    if (c->sac)
        crt_cache__sentinel_guard(c);
    if (!c->ac)
        return;
    const redisReader *r = c->ac->c.reader;
    if (r->len - r->pos > c->max_reply) {
        (*c->m_errors)++;
        crt_cache__down(c, "protocol error: a reply larger than the largest value this service stores");
    }
}

/* ---- connection ------------------------------------------------------------------------------------- */

static void on_state_timer(uv_timer_t *t)
{
    crt_cache *c = t->data;
    if (c->state == C_DOWN) {
        crt_cache__connect(c);
    } else if (c->state == C_CONNECTING || c->state == C_RESOLVING) {
        crt_cache__down(c, "connect timed out");
    }
}

static void schedule_reconnect(crt_cache *c)
{
    uv_timer_start(&c->state_timer, on_state_timer, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > CRT_CACHE_BACKOFF_MAX_MS ? CRT_CACHE_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

void crt_cache__down(crt_cache *c, const char *why)
{
    if (c->state == C_CLOSED)
        return;
    bool was_ready = c->state == C_READY;
    c->state = C_DOWN;
    if (was_ready)
        c->last_good = uv_now(c->loop);
    if (c->gai_busy && !c->gai_sentinel)
        c->resolver.cancel(c->resolver.ctx, &c->gai);
    if (!c->sac)
        uv_check_stop(&c->guard);
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

/* Drops the connection (if any) and connects again on the next loop turn:
 * the master moved, so waiting for a backoff would only add bypassed
 * requests. */
void crt_cache__reconnect_now(crt_cache *c, const char *why)
{
    if (c->state != C_DOWN)
        crt_cache__down(c, why);
    if (c->state == C_DOWN)
        uv_timer_start(&c->state_timer, on_state_timer, 0, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    crt_cache *c = ac->data;
    if (c->ac != ac)
        return;
    if (status != REDIS_OK) {
        c->ac = NULL;   /* hiredis frees it after this callback */
        crt_cache__down(c, ac->errstr[0] ? ac->errstr : "connect failed");
    }
    /* Connected: ready once PING is answered (on_ping_reply). */
}

/* The server answered the handshake: commands may go. The backoff resets
 * only here, so a server that accepts and then misbehaves is retried ever
 * more slowly, and /ready never says up for it. */
static void cache_became_ready(crt_cache *c)
{
    c->state = C_READY;
    c->backoff_ms = CRT_CACHE_BACKOFF_MIN_MS;
    uv_timer_stop(&c->state_timer);
    if (!c->was_up || c->changed)
        CRT_LOGF(CRT_LOG_INFO, c->changed ? "valkey connected to a new master" : "valkey connected",
                 CRT_LS("address", c->host ? c->host : c->path), CRT_LI("port", c->port));
    c->was_up = true;
    (*c->m_reconnects)++;
    crt_cache__scripts_load(c);     /* first on the connection: EVALSHA behind it finds them */
    if (c->on_ready)
        c->on_ready(c->on_ready_ctx);
    c->changed = 0;
}

/* Sentinel mode's handshake end: the server must be a master, and a
 * master_replid other than the last one means another history (a promoted
 * replica): the store then distrusts what the old master may have lost. */
static void on_info_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache *c = ud;
    if (r->err || c->state != C_CONNECTING)
        return;
    if (r->type != CRT_CACHE_STR) {
        crt_cache__down(c, r->type == CRT_CACHE_ERROR ? "INFO answered with an error" : "INFO answered wrongly");
        return;
    }
    char role[16] = "", replid[sizeof c->replid] = "";
    for (size_t i = 0; i < r->len;) {
        const char *line = r->str + i;
        const char *nl = memchr(line, '\n', r->len - i);
        size_t n = nl ? (size_t)(nl - line) : r->len - i;
        i += n + 1;
        if (n && line[n - 1] == '\r')
            n--;
        if (n > 5 && !memcmp(line, "role:", 5))
            snprintf(role, sizeof role, "%.*s", (int)(n - 5), line + 5);
        else if (n > 14 && !memcmp(line, "master_replid:", 14))
            snprintf(replid, sizeof replid, "%.*s", (int)(n - 14), line + 14);
    }
    if (strcmp(role, "master")) {
        /* A stale answer (the sentinels have not switched yet) or a demoted
         * master: ask again after the backoff. */
        CRT_LOGF(CRT_LOG_WARN, "valkey server is not the master: asking the sentinels again",
                 CRT_LS("address", c->host), CRT_LI("port", c->port), CRT_LS("role", *role ? role : "unknown"));
        crt_cache__down(c, "not the master");
        return;
    }
    if (c->replid[0] && strcmp(c->replid, replid)) {
        c->changed = c->last_good ? c->last_good : uv_now(c->loop);
        (*c->m_switches)++;
    }
    snprintf(c->replid, sizeof c->replid, "%s", replid);
    cache_became_ready(c);
}

/* hiredis dropped the connection: EOF, a socket error, a reply its reader
 * could not parse or one our object functions refused (proto_err). */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    crt_cache *c = ac->data;
    if (c->ac != ac)
        return;     /* we freed it ourselves (crt_cache__down) */
    c->ac = NULL;   /* hiredis frees it after this callback */
    char why[192];
    if (c->proto_err)
        snprintf(why, sizeof why, "protocol error: %s", c->proto_err);
    else if (ac->err == REDIS_ERR_PROTOCOL)
        snprintf(why, sizeof why, "protocol error: %s", ac->errstr);
    else
        snprintf(why, sizeof why, "%s", ac->errstr[0] ? ac->errstr : "connection closed");
    if (status != REDIS_OK)
        (*c->m_errors)++;
    crt_cache__down(c, why);
}

static void on_auth_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache *c = ud;
    if (r->err == 0 && r->type == CRT_CACHE_ERROR) {
        CRT_LOGF(CRT_LOG_ERROR, "valkey refused AUTH or SELECT", CRT_LSN("error", r->str, r->len));
        crt_cache__down(c, "AUTH/SELECT refused");
    }
}

static void on_ping_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache *c = ud;
    if (r->err || c->state != C_CONNECTING)
        return;     /* already down (timeout, protocol error, AUTH refused) */
    if (r->type != CRT_CACHE_STATUS) {
        crt_cache__down(c, r->type == CRT_CACHE_ERROR ? "PING answered with an error" : "PING answered wrongly");
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
        crt_cache__down(c, msg);
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        if (!ac->ev.data)   /* the adapter set its hooks but has no handle to clean up */
            memset(&ac->ev, 0, sizeof ac->ev);
        redisAsyncFree(ac);
        crt_cache__down(c, "cannot watch the connection");
        return;
    }
    install_checks(c, ac);
    c->ac = ac;
    c->state = C_CONNECTING;
    uv_check_start(&c->guard, crt_cache__guard_cb);
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
    int rc;
    if (c->nsentinels) {
        const char *info[2] = {"INFO", "replication"};
        rc = crt_cache_cmd(c, on_info_reply, c, 2, info, NULL);
    } else {
        const char *ping[1] = {"PING"};
        rc = crt_cache_cmd(c, on_ping_reply, c, 1, ping, NULL);
    }
    c->state = C_CONNECTING;
    if (rc)
        crt_cache__down(c, "cannot send PING");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    crt_cache *c = req->data;
    bool for_sentinel = c->gai_sentinel;
    c->gai_busy = false;
    c->gai_sentinel = false;
    c->open_handles--;
    if (c->state == C_CLOSED) {
        if (res)
            uv_freeaddrinfo(res);
        crt_cache__release(c);   /* a free may have waited for us */
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
    if (for_sentinel) {
        crt_cache__sentinel_resolved(c, status, ip);
        return;
    }
    if (c->state != C_RESOLVING) {
        /* The attempt it was for timed out; the next one uses the answer
         * rather than starting the same slow lookup again. */
        if (*ip)
            snprintf(c->resolved, sizeof c->resolved, "%s", ip);
        return;
    }
    if (!*ip) {
        crt_cache__down(c, status == UV_ECANCELED ? "resolution cancelled"
                      : status < 0 ? uv_strerror(status) : "no address for the host");
        return;
    }
    start_connect(c, ip);
}

/* One lookup in libuv's pool (through the resolver); 0 when started. */
int crt_cache__resolve(crt_cache *c, const char *host, bool for_sentinel)
{
    if (c->gai_busy)
        return CRT_EUNAVAIL;
    c->gai.data = c;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (c->resolver.start(c->resolver.ctx, c->loop, &c->gai, on_resolved, host, &hints) != 0)
        return CRT_EIO;
    c->gai_busy = true;
    c->gai_sentinel = for_sentinel;
    c->open_handles++;
    return 0;
}

/* A (re)connection: with sentinels, ask them first, unless they just gave
 * the address. */
void crt_cache__connect(crt_cache *c)
{
    if (c->nsentinels && !c->addr_fresh) {
        crt_cache__sentinel_ask(c);
        return;
    }
    c->addr_fresh = false;
    crt_cache__connect_addr(c);
}

void crt_cache__connect_addr(crt_cache *c)
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
    if (crt_cache__resolve(c, c->host, false))
        crt_cache__down(c, "cannot resolve");
}

