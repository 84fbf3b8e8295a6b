/* Sentinel mode: where the master is. One connection to one sentinel at a
 * time, on hiredis' libuv adapter like the master's: it sends AUTH (when a
 * sentinel password is set), SENTINEL get-master-addr-by-name and SUBSCRIBE
 * +switch-master together, so the answer and every later switch arrive on
 * it. A sentinel that does not answer within the cache timeout (or does not
 * know the master) is skipped for the next one; after a whole round without
 * an answer the master side goes down (requests bypass the cache) and asks
 * again after its backoff. Sentinel host names go through the cache's
 * resolver, one lookup at a time like the master's.
 *
 * The master side asks again (a new round, starting with the sentinel that
 * answered last) on every reconnect, so a disconnect re-resolves; while the
 * master is ready, losing the sentinel connection only opens another one,
 * and an answer naming another address moves the master connection. */
#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"
#include "cronium/common.h"
#include "cronium/log.h"

/* Sentinel replies are a few addresses; anything this large is not one. */
#define SENTINEL_MAX_REPLY 65536
/* Between rounds while the master is ready (nothing is waiting on them). */
#define SENTINEL_RETRY_MS 1000

static void s_attempt(crt_cache *c);

/* ---- the list ---------------------------------------------------------------------------------------- */

/* One "host:port" (or "[v6]:port") of len bytes into host/port. */
static int parse_one(const char *p, size_t len, char *host, size_t hostcap, int *port)
{
    const char *end = p + len;
    const char *hp = p, *he;
    if (len && *p == '[') {
        he = memchr(p, ']', len);
        if (!he || he + 1 >= end || he[1] != ':')
            return CRT_EINVAL;
        hp = p + 1;
    } else {
        he = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == ':')
                he = q;     /* the last colon: a bare v6 address is refused below */
        if (!he || memchr(p, ':', (size_t)(he - p)))
            return CRT_EINVAL;
    }
    size_t hl = (size_t)(he - hp);
    if (hl == 0 || hl >= hostcap)
        return CRT_EINVAL;
    for (const char *q = hp; q < he; q++)
        if (*q == ' ' || *q == '/' || *q == '@')
            return CRT_EINVAL;
    const char *ps = *he == ']' ? he + 2 : he + 1;
    long v = 0;
    if (ps >= end || end - ps > 5)
        return CRT_EINVAL;
    for (const char *q = ps; q < end; q++) {
        if (*q < '0' || *q > '9')
            return CRT_EINVAL;
        v = v * 10 + (*q - '0');
    }
    if (v < 1 || v > 65535)
        return CRT_EINVAL;
    memcpy(host, hp, hl);
    host[hl] = '\0';
    *port = (int)v;
    return 0;
}

/* Parses list; with c, fills c->sentinels. */
static int parse_list(crt_cache *c, const char *list, char *err, size_t errcap)
{
    size_t n = 0;
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ",");
        while (len && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        char host[256];
        int port;
        if (parse_one(p, len, host, sizeof host, &port)) {
            snprintf(err, errcap, "cache.sentinels (VALKEY_SENTINELS): \"%.*s\" is not host:port", (int)len, p);
            return CRT_EINVAL;
        }
        if (n >= 64) {
            snprintf(err, errcap, "cache.sentinels (VALKEY_SENTINELS): more than 64 sentinels");
            return CRT_EINVAL;
        }
        if (c) {
            crt_cache_sentinel *grown = realloc(c->sentinels, (n + 1) * sizeof *grown);
            if (!grown)
                goto oom;
            c->sentinels = grown;
            c->sentinels[n].host = strdup(host);
            c->sentinels[n].port = port;
            c->nsentinels = n + 1;
            if (!c->sentinels[n].host)
                goto oom;
        }
        n++;
        p += strcspn(p, ",");
        if (!*p)
            break;
    }
    return 0;
oom:
    snprintf(err, errcap, "out of memory");
    return CRT_ENOMEM;
}

int crt_cache_check_sentinels(const char *list, char *err, size_t errcap)
{
    return parse_list(NULL, list, err, errcap);
}

int crt_cache__sentinels_parse(crt_cache *c, const char *list, char *err, size_t errcap)
{
    int rc = parse_list(c, list, err, errcap);
    if (rc)
        crt_cache__sentinel_free(c);
    return rc;
}

void crt_cache__sentinel_free(crt_cache *c)
{
    for (size_t i = 0; i < c->nsentinels; i++)
        free(c->sentinels[i].host);
    free(c->sentinels);
    c->sentinels = NULL;
    c->nsentinels = 0;
    free(c->master_name);
    free(c->sentinel_password);
    c->master_name = c->sentinel_password = NULL;
}

/* ---- one sentinel -------------------------------------------------------------------------------------- */

static const crt_cache_sentinel *cur(const crt_cache *c) { return &c->sentinels[c->sidx]; }

/* Drops the sentinel connection; its callbacks then see c->sac != ac. */
static void s_drop(crt_cache *c)
{
    redisAsyncContext *sac = c->sac;
    c->sac = NULL;
    if (sac)
        redisAsyncFree(sac);
    if (!c->ac && c->state != C_CLOSED)
        uv_check_stop(&c->guard);
}

void crt_cache__sentinel_close(crt_cache *c)
{
    s_drop(c);
    c->sstate = S_IDLE;
}

static void on_s_timer(uv_timer_t *t);

static void s_round(crt_cache *c)
{
    c->stried = 0;
    s_attempt(c);
}

/* No sentinel of the round answered. */
static void s_round_failed(crt_cache *c, const char *why)
{
    c->sstate = S_IDLE;
    if (c->state == C_DISCOVER) {
        /* The master side goes down and asks again after its backoff. */
        crt_cache__down(c, why);
        return;
    }
    CRT_LOGF(CRT_LOG_WARN, "no sentinel answered: master switches are not followed until one does",
             CRT_LS("reason", why));
    c->sstate = S_WAIT;
    uv_timer_start(&c->s_timer, on_s_timer, SENTINEL_RETRY_MS, 0);
}

/* This sentinel failed: the next one, or the round is over. */
static void s_next(crt_cache *c, const char *why)
{
    CRT_LOGF(CRT_LOG_INFO, "valkey sentinel did not answer", CRT_LS("address", cur(c)->host),
             CRT_LI("port", cur(c)->port), CRT_LS("reason", why));
    s_drop(c);
    uv_timer_stop(&c->s_timer);
    if (c->gai_busy && c->gai_sentinel)
        c->resolver.cancel(c->resolver.ctx, &c->gai);
    c->sidx = (c->sidx + 1) % c->nsentinels;
    if (++c->stried >= c->nsentinels) {
        s_round_failed(c, "no sentinel knows the master");
        return;
    }
    s_attempt(c);
}

static void on_s_timer(uv_timer_t *t)
{
    crt_cache *c = t->data;
    if (c->state == C_CLOSED)
        return;
    if (c->sstate == S_WAIT)
        s_round(c);
    else if (c->sstate == S_RESOLVING || c->sstate == S_ASKING)
        s_next(c, "timed out");
}

/* The master is at ip:port (an answer, or a +switch-master). */
static void master_at(crt_cache *c, const char *ip, int port, const char *source)
{
    bool same = c->host && !strcmp(c->host, ip) && c->port == port;
    if (same && c->state != C_DISCOVER)
        return;     /* connected there, or trying it */
    if (!same) {
        char *h = strdup(ip);
        if (!h) {
            crt_cache__down(c, "out of memory");
            return;
        }
        if (c->host)
            CRT_LOGF(CRT_LOG_WARN, "valkey master moved", CRT_LS("source", source), CRT_LS("from", c->host),
                     CRT_LI("from_port", c->port), CRT_LS("to", ip), CRT_LI("to_port", port));
        free(c->host);
        c->host = h;
        c->port = port;
        c->resolved[0] = '\0';  /* a late lookup was for the old name */
    }
    if (c->state == C_DISCOVER) {
        c->addr_fresh = false;
        crt_cache__connect_addr(c);
        return;
    }
    c->addr_fresh = true;   /* the reconnect goes straight there */
    crt_cache__reconnect_now(c, "the master moved");
}

static bool is_str(const redisReply *r) { return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS); }

static int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= 1 && v <= 65535 ? (int)v : 0;
}

static void on_s_auth(redisAsyncContext *ac, void *r, void *priv)
{
    crt_cache *c = priv;
    redisReply *rep = r;
    if (c->sac != ac || !rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        CRT_LOGF(CRT_LOG_ERROR, "valkey sentinel refused AUTH (check cache.sentinelPassword)",
                 CRT_LS("error", rep->str));
        s_next(c, "AUTH refused");
    }
}

static void on_s_addr(redisAsyncContext *ac, void *r, void *priv)
{
    crt_cache *c = priv;
    redisReply *rep = r;
    if (c->sac != ac || !rep || c->sstate != S_ASKING)
        return;     /* NULL: the connection is going; its disconnect callback decides */
    int port = 0;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && is_str(rep->element[0]) &&
        is_str(rep->element[1]))
        port = parse_port(rep->element[1]->str);
    if (!port || !*rep->element[0]->str || strlen(rep->element[0]->str) >= 256) {
        s_next(c, rep->type == REDIS_REPLY_NIL ? "does not know the master name"
                  : rep->type == REDIS_REPLY_ERROR ? "answered with an error" : "answered wrongly");
        return;
    }
    uv_timer_stop(&c->s_timer);
    c->sstate = S_WATCHING;
    master_at(c, rep->element[0]->str, port, "sentinel");
}

/* Subscription replies: ["subscribe", channel, n], then
 * ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]. */
static void on_s_message(redisAsyncContext *ac, void *r, void *priv)
{
    crt_cache *c = priv;
    redisReply *rep = r;
    if (c->sac != ac || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 || !is_str(rep->element[0]))
        return;
    if (strcmp(rep->element[0]->str, "message") || !is_str(rep->element[2]))
        return;
    char name[256], oip[256], nip[256];
    int oport, nport;
    const char *payload = rep->element[2]->str;
    if (strlen(payload) >= 1024 ||
        sscanf(payload, "%255s %255s %d %255s %d", name, oip, &oport, nip, &nport) != 5 ||
        nport < 1 || nport > 65535)
        return;
    if (strcmp(name, c->master_name))
        return;     /* another master watched by the same sentinels */
    CRT_LOGF(CRT_LOG_INFO, "valkey sentinel announced a new master", CRT_LS("to", nip), CRT_LI("to_port", nport));
    master_at(c, nip, nport, "+switch-master");
}

static void on_s_connect(const redisAsyncContext *ac, int status)
{
    crt_cache *c = ac->data;
    if (c->sac != ac || status == REDIS_OK)
        return;
    c->sac = NULL;  /* hiredis frees it after this callback */
    s_next(c, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_s_disconnect(const redisAsyncContext *ac, int status)
{
    crt_cache *c = ac->data;
    if (c->sac != ac)
        return;     /* ours (s_drop) */
    c->sac = NULL;
    (void)status;
    if (c->sstate != S_WATCHING) {
        s_next(c, ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    /* A switch may come while nobody listens: listen again at once, on the
     * next sentinel (its answer also says where the master is now). */
    CRT_LOGF(CRT_LOG_INFO, "valkey sentinel connection lost: asking the next one", CRT_LS("address", cur(c)->host),
             CRT_LI("port", cur(c)->port));
    c->sidx = (c->sidx + 1) % c->nsentinels;
    s_round(c);
}

static void s_open(crt_cache *c, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, cur(c)->port);
    if (!ac || ac->err) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s", ac && ac->errstr[0] ? ac->errstr : "cannot create connection");
        if (ac)
            redisAsyncFree(ac);
        s_next(c, msg);
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        if (!ac->ev.data)
            memset(&ac->ev, 0, sizeof ac->ev);
        redisAsyncFree(ac);
        s_next(c, "cannot watch the connection");
        return;
    }
    c->sac = ac;
    c->sstate = S_ASKING;
    redisAsyncSetConnectCallback(ac, on_s_connect);
    redisAsyncSetDisconnectCallback(ac, on_s_disconnect);
    uv_check_start(&c->guard, crt_cache__guard_cb);
    /* All three go at once: replies to the first two come before any
     * message (hiredis runs regular callbacks first). */
    int rc = REDIS_OK;
    if (c->sentinel_password) {
        const char *argv[2] = {"AUTH", c->sentinel_password};
        rc = redisAsyncCommandArgv(ac, on_s_auth, c, 2, argv, NULL);
    }
    const char *ask[3] = {"SENTINEL", "get-master-addr-by-name", c->master_name};
    const char *sub[2] = {"SUBSCRIBE", "+switch-master"};
    if (rc != REDIS_OK || redisAsyncCommandArgv(ac, on_s_addr, c, 3, ask, NULL) != REDIS_OK ||
        redisAsyncCommandArgv(ac, on_s_message, c, 2, sub, NULL) != REDIS_OK)
        s_next(c, "cannot send the request");
}

static void s_attempt(crt_cache *c)
{
    s_drop(c);
    const crt_cache_sentinel *s = cur(c);
    c->sstate = S_RESOLVING;
    uv_timer_start(&c->s_timer, on_s_timer, c->timeout_ms, 0);
    unsigned char tmp[16];
    if (inet_pton(AF_INET, s->host, tmp) == 1 || inet_pton(AF_INET6, s->host, tmp) == 1) {
        s_open(c, s->host);
        return;
    }
    /* The timer bounds the lookup too; a busy resolver (the master's name
     * being looked up) counts as this sentinel failing. */
    int rc = crt_cache__resolve(c, s->host, true);
    if (rc)
        s_next(c, rc == CRT_EUNAVAIL ? "a lookup is already running" : "cannot resolve");
}

void crt_cache__sentinel_resolved(crt_cache *c, int status, const char *ip)
{
    if (c->sstate != S_RESOLVING)
        return;     /* timed out meanwhile: the next sentinel is being tried */
    if (!*ip) {
        s_next(c, status == UV_ECANCELED ? "resolution cancelled"
                  : status < 0 ? uv_strerror(status) : "no address for the host");
        return;
    }
    s_open(c, ip);
}

/* The master side wants the address: a new round, from the sentinel that
 * answered last. */
void crt_cache__sentinel_ask(crt_cache *c)
{
    c->state = C_DISCOVER;
    uv_timer_stop(&c->state_timer);
    s_round(c);
}

/* From the check handle: a sentinel reply being buffered over the bound. */
void crt_cache__sentinel_guard(crt_cache *c)
{
    const redisReader *r = c->sac->c.reader;
    if (r->len - r->pos > SENTINEL_MAX_REPLY) {
        c->sstate = S_ASKING;   /* counts as this sentinel failing */
        s_next(c, "protocol error: a reply larger than a sentinel sends");
    }
}
