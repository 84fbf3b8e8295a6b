/* Production store: the Cronium backend is the source of truth; Valkey is a
 * cache and the lock service; a bounded in-process cache holds execution
 * contexts (they never change during a run).
 *
 * Each operation is an `op` object walking a few stages:
 *   CONTEXT (in-process -> Valkey -> backend) -> the operation's own stages
 *   (cache read, backend call, cache update, lock ...) -> answer.
 * Writes go to the backend first and are acknowledged only once it accepted
 * them and the cache holds the read-back form (API.md §6, §7). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/app.h"
#include "cronium/backend.h"
#include "cronium/cache.h"
#include "cronium/context.h"
#include "cronium/json.h"
#include "cronium/list.h"
#include "cronium/log.h"
#include "cronium/map.h"
#include "cronium/store.h"

#define CTX_CACHE_MAX 10000
#define AUDIT_FLUSH_MS 3000     /* audit drain allowed at shutdown */
#define LOCK_RETRY_MS 15
#define GEN_SLOTS 4096          /* write generations, by hash of user and key */
/* Cache keys this process no longer trusts (an update or delete failed).
 * Past this many, the whole cache is distrusted for one TTL instead. */
#define DISTRUST_MAX 100000
#define DISTRUST_BATCH 256      /* keys per DEL */
#define DISTRUST_RETRY_MS 1000  /* a failed DEL is tried again after this */
#define MAINT_MS 100            /* queued-increment and invalidation sweep */
#define INCR_QUEUE_MAX 64       /* increments waiting per variable; more get 429 */
#define OPS_MAX 20000           /* operations in flight, detached ones included */

typedef struct prodstore prodstore;

typedef struct ctx_entry {
    crt_context ctx;
    crt_buf output;             /* last output set through this process */
    char condition[6];          /* "" unknown */
    char *id;
    crt_dnode node;             /* in the LRU, most recent first */
} ctx_entry;

typedef enum { K_CONTEXT, K_VARIABLE, K_OUTPUT, K_CONDITION, K_COUNT } cache_kind;
static const char *const kind_names[K_COUNT] = {"context", "variable", "output", "condition"};

typedef struct op op;
typedef void (*op_step)(op *o);

struct op {
    prodstore *ps;
    crt_store_op kind;
    crt_store_cb cb;
    void *ud;
    char *exec_id;
    char *user_id;              /* from the context */
    crt_buf key;                /* variable key or tool */
    crt_buf key2;               /* action */
    crt_buf value;              /* request value (compact JSON) */
    crt_buf work;               /* scratch: keys, bodies, results */
    crt_buf result;
    char lock_token[33];
    bool locked;
    uint64_t lock_deadline;
    uv_timer_t *lock_timer;     /* while waiting for a busy lock */
    struct incr_line *line;     /* increments: the per-key line it is in */
    crt_dnode qnode;            /* in line->waiting while queued */
    crt_dnode pnode;            /* in ps->queued while queued */
    bool queued;
    uint32_t gen_seen;          /* write generation when a backend read started */
    bool (*gone)(void *ud);     /* the client has gone away (may be NULL) */
    uint64_t deadline;          /* uv_now() time the answer is due by */
};

/* Increments of one variable run one at a time in this process (and under
 * a Valkey lock across processes): one runs, at most INCR_QUEUE_MAX wait. */
typedef struct incr_line {
    op *running;
    crt_dlist waiting;          /* oldest first */
    size_t nwaiting;
    bool advancing;             /* line_advance is on the stack */
    size_t klen;
    char key[];                 /* user\0key: its key in ps->incr_lines */
} incr_line;

/* A cache key that may hold a value older than what this process
 * acknowledged: reads skip the cache for it until a DEL has succeeded. */
typedef struct distrusted {
    crt_dnode node;             /* in ps->distrust_pending unless a DEL is in flight */
    uint64_t seq;               /* bumped each time the key is distrusted again */
    bool in_flight;
    size_t klen;
    char key[];
} distrusted;

typedef struct del_batch {
    struct prodstore *ps;
    uint64_t epoch;             /* ps->distrust_epoch when sent */
    size_t n;
    uint64_t seq[DISTRUST_BATCH];
    char *keys[DISTRUST_BATCH];
    size_t lens[DISTRUST_BATCH];
} del_batch;

struct prodstore {
    crt_store base;
    crt_app *app;
    uv_loop_t *loop;
    crt_backend *backend;
    crt_cache *cache;
    uint64_t ttl_ms;
    uint64_t lock_ttl_ms;
    crt_map *ctxs;              /* exec id -> ctx_entry */
    crt_dlist lru;
    crt_map *incr_lines;        /* user\0key -> incr_line */
    crt_dlist queued;           /* every waiting increment, oldest first */
    size_t nops;                /* operations not yet answered */
    uint64_t op_budget_ms;      /* default deadline of an operation */
    crt_audit *audit;           /* ships to the backend; owned by the runtime */
    bool shutting_down;
    uv_timer_t flush_timer;
    bool flush_timer_open;
    /* A read that raced a write must not put its (older) value in the
     * cache: writes bump the generation of their key's slot, and a read
     * fills the cache only if the slot did not move (and only with SET NX,
     * so a writer in another process wins too). */
    uint32_t gen[GEN_SLOTS];
    /* Keys whose cache update failed after an acknowledged write (Valkey
     * down, or connected but refusing: -OOM, -ERR, WRONGTYPE): never read
     * from the cache until a DEL of them succeeded; DELs are sent at once,
     * first thing when Valkey is back, and retried. */
    crt_map *distrust;          /* cache key -> distrusted */
    crt_dlist distrust_pending;
    uint64_t distrust_seq;
    uint64_t distrust_epoch;    /* bumped when the map is dropped (overflow) */
    uint64_t distrust_all_until; /* uv_now(): past DISTRUST_MAX, no key is trusted before this */
    uint64_t next_del_retry;
    uv_timer_t maint;
    bool maint_open;
    uint64_t *m_cache[K_COUNT][3];  /* hit, miss, error */
    uint64_t *m_invalid[K_COUNT];   /* cached values refused (counted as misses too) */
    uint64_t *m_distrusted;
    uint64_t *m_distrust_overflow;
    uint64_t *m_incr_dropped;       /* queued increments whose client went away */
    uint64_t *m_incr_rejected;      /* queue full or deadline passed */
};

enum { R_HIT, R_MISS, R_ERROR };

/* ---- small helpers --------------------------------------------------------------------------- */

static void op_finish(op *o, const crt_store_result *r)
{
    o->ps->nops--;
    o->cb(o->ud, r);
    crt_buf_fini(&o->key);
    crt_buf_fini(&o->key2);
    crt_buf_fini(&o->value);
    crt_buf_fini(&o->work);
    crt_buf_fini(&o->result);
    free(o->exec_id);
    free(o->user_id);
    free(o);
}

static void op_answer(op *o, int err, const char *json, size_t len, const char *msg, int nf_kind, unsigned ra)
{
    crt_store_result r = {.err = err, .json = json, .len = len, .message = msg, .not_found_kind = nf_kind,
                          .retry_after_s = ra};
    op_finish(o, &r);
}

/* An answer err cannot express: an explicit HTTP status and §3 code. */
static void op_fail(op *o, int status, const char *code, const char *msg, unsigned ra)
{
    crt_store_result r = {.err = CRT_EIO, .message = msg, .retry_after_s = ra, .status = status, .code = code};
    op_finish(o, &r);
}

/* The backend answered something definite and wrong: 502, never the
 * backend's own text (it is not for the script, and may carry internals). */
static void op_backend_error(op *o, const char *msg) { op_fail(o, 502, "backend_error", msg, 0); }

static bool op_gone(op *o) { return o->gone && o->gone(o->ud); }

static void op_unavailable(op *o, const char *msg, unsigned retry_after)
{
    op_answer(o, CRT_EUNAVAIL, NULL, 0, msg, 0, retry_after ? retry_after : 2);
}

static void count(prodstore *ps, cache_kind k, int r) { (*ps->m_cache[k][r])++; }

static void key_exec(crt_buf *b, const char *id, const char *suffix)
{
    crt_buf_reset(b);
    crt_buf_puts(b, "cronium:exec:{");
    crt_buf_puts(b, id);
    crt_buf_puts(b, "}:");
    crt_buf_puts(b, suffix);
}

static void key_user(crt_buf *b, const char *uid, const char *what, const char *k, size_t kn)
{
    crt_buf_reset(b);
    crt_buf_puts(b, "cronium:user:{");
    crt_buf_puts(b, uid);
    crt_buf_puts(b, "}:");
    crt_buf_puts(b, what);
    crt_buf_putc(b, ':');
    crt_buf_append(b, k, kn);
}

/* SET key value PX ttl [NX] (cb may be NULL). */
static int cache_set_ex(prodstore *ps, const crt_buf *key, const char *v, size_t vn, bool nx, crt_cache_cb cb, void *ud)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->ttl_ms);
    const char *argv[6] = {"SET", key->data, v, "PX", ttl, "NX"};
    size_t lens[6] = {3, key->len, vn, 2, strlen(ttl), 2};
    return crt_cache_cmd(ps->cache, cb, ud, nx ? 6 : 5, argv, lens);
}

static int cache_set(prodstore *ps, const crt_buf *key, const char *v, size_t vn, crt_cache_cb cb, void *ud)
{
    return cache_set_ex(ps, key, v, vn, false, cb, ud);
}

static uint32_t *gen_slot(prodstore *ps, const char *uid, const char *key, size_t klen)
{
    uint64_t h = crt_hash(uid, strlen(uid)) ^ (crt_hash(key, klen) * 31);
    return &ps->gen[h % GEN_SLOTS];
}

static void maint_arm(prodstore *ps);

static void distrusted_drop(prodstore *ps, distrusted *d)
{
    if (!d->in_flight)
        crt_dlist_remove(&ps->distrust_pending, &d->node);
    crt_map_del(ps->distrust, d->key, d->klen);
    free(d);
}

static void distrust_clear_all(prodstore *ps)
{
    while (ps->distrust_pending.head)
        distrusted_drop(ps, crt_container_of(ps->distrust_pending.head, distrusted, node));
    /* In-flight entries are not on the list: drop the whole map. */
    crt_map_free(ps->distrust, free);
    ps->distrust = crt_map_new();
    ps->distrust_epoch++;
}

/* True when a read must not take key from the cache (nor fill it). */
static bool key_distrusted(prodstore *ps, const crt_buf *key)
{
    if (ps->distrust_all_until && uv_now(ps->loop) < ps->distrust_all_until)
        return true;
    return ps->distrust && crt_map_get(ps->distrust, key->data, key->len) != NULL;
}

static void on_del_batch(void *ud, const crt_cache_reply *r)
{
    del_batch *b = ud;
    prodstore *ps = b->ps;
    bool ok = r->err == 0 && r->type == CRT_CACHE_INT;
    for (size_t i = 0; i < b->n; i++) {
        distrusted *d = b->epoch == ps->distrust_epoch && ps->distrust
                            ? crt_map_get(ps->distrust, b->keys[i], b->lens[i]) : NULL;
        if (d && d->in_flight) {
            d->in_flight = false;
            if (ok && d->seq == b->seq[i]) {
                crt_map_del(ps->distrust, d->key, d->klen);
                free(d);
            } else {
                crt_dlist_push_back(&ps->distrust_pending, &d->node);
            }
        }
        free(b->keys[i]);
    }
    free(b);
    if (!ok) {
        ps->next_del_retry = uv_now(ps->loop) + DISTRUST_RETRY_MS;
        CRT_LOGF(CRT_LOG_WARN, "valkey refused to delete cache keys; they stay bypassed",
                 CRT_LS("reply", r->err ? "unavailable" : r->type == CRT_CACHE_ERROR ? (r->str ? r->str : "error")
                                                                                   : "unexpected"));
    }
    maint_arm(ps);
}

/* Sends DELs for distrusted keys not already being deleted. */
static void distrust_flush(prodstore *ps)
{
    while (ps->cache && ps->distrust_pending.head && crt_cache_ready(ps->cache)) {
        del_batch *b = calloc(1, sizeof *b);
        if (!b)
            return;
        b->ps = ps;
        b->epoch = ps->distrust_epoch;
        const char *argv[DISTRUST_BATCH + 1];
        size_t lens[DISTRUST_BATCH + 1];
        argv[0] = "DEL";
        lens[0] = 3;
        for (crt_dnode *n = ps->distrust_pending.head; n && b->n < DISTRUST_BATCH; n = n->next) {
            distrusted *d = crt_container_of(n, distrusted, node);
            b->keys[b->n] = malloc(d->klen + 1);
            if (!b->keys[b->n])
                break;
            memcpy(b->keys[b->n], d->key, d->klen + 1);
            b->lens[b->n] = d->klen;
            b->seq[b->n] = d->seq;
            argv[b->n + 1] = b->keys[b->n];
            lens[b->n + 1] = d->klen;
            b->n++;
        }
        if (!b->n || crt_cache_cmd(ps->cache, on_del_batch, b, (int)b->n + 1, argv, lens) != 0) {
            for (size_t i = 0; i < b->n; i++)
                free(b->keys[i]);
            free(b);
            ps->next_del_retry = uv_now(ps->loop) + DISTRUST_RETRY_MS;
            maint_arm(ps);
            return;
        }
        for (size_t i = 0; i < b->n; i++) {
            distrusted *d = crt_map_get(ps->distrust, b->keys[i], b->lens[i]);
            crt_dlist_remove(&ps->distrust_pending, &d->node);
            d->in_flight = true;
        }
    }
}

/* key's cache entry may be older than an acknowledged write: bypass it
 * until deleted. Never loses a key silently: past DISTRUST_MAX the whole
 * cache is bypassed for one TTL (by then every older entry has expired). */
static void distrust_key(prodstore *ps, const crt_buf *key)
{
    if (!ps->cache)
        return;
    (*ps->m_distrusted)++;
    uint64_t now = uv_now(ps->loop);
    if (ps->distrust_all_until && now < ps->distrust_all_until) {
        ps->distrust_all_until = now + ps->ttl_ms;
        return;
    }
    distrusted *d = crt_map_get(ps->distrust, key->data, key->len);
    if (!d) {
        void **slot = NULL;
        if (crt_map_size(ps->distrust) < DISTRUST_MAX) {
            d = malloc(sizeof *d + key->len + 1);
            slot = d ? crt_map_slot(ps->distrust, key->data, key->len, true) : NULL;
        }
        if (!slot) {
            free(d);
            CRT_LOGF(CRT_LOG_WARN, "too many cache keys to invalidate: the cache is bypassed for one TTL",
                     CRT_LI("keys", (long long)crt_map_size(ps->distrust)));
            (*ps->m_distrust_overflow)++;
            distrust_clear_all(ps);
            ps->distrust_all_until = now + ps->ttl_ms;
            return;
        }
        d->in_flight = false;
        d->klen = key->len;
        memcpy(d->key, key->data, key->len);
        d->key[key->len] = '\0';
        *slot = d;
        crt_dlist_push_back(&ps->distrust_pending, &d->node);
    }
    d->seq = ++ps->distrust_seq;
    if (!d->in_flight && now >= ps->next_del_retry)
        distrust_flush(ps);
    maint_arm(ps);
}

static void on_cache_ready(void *ctx)
{
    prodstore *ps = ctx;
    if (!ps->distrust_pending.head)
        return;
    CRT_LOGF(CRT_LOG_INFO, "valkey back: invalidating keys written while it was away",
             CRT_LI("keys", (long long)crt_map_size(ps->distrust)));
    ps->next_del_retry = 0;
    distrust_flush(ps);
}

static int cache_get(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud)
{
    const char *argv[2] = {"GET", key->data};
    size_t lens[2] = {3, key->len};
    return crt_cache_cmd(ps->cache, cb, ud, 2, argv, lens);
}

static int cache_del(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud)
{
    const char *argv[2] = {"DEL", key->data};
    size_t lens[2] = {3, key->len};
    return crt_cache_cmd(ps->cache, cb, ud, 2, argv, lens);
}

/* Maps a final backend answer that is not a success. Could not reach it
 * (transport errors, timeouts, 429/502/503/504 after the retries), or it
 * refused the runtime's credentials (401/403): 503 backend_unavailable,
 * worth retrying. Anything else it answered (a 3xx, a
 * 4xx the operation does not expect, a 500, an answer over the size cap) is
 * definite and wrong: 502 backend_error. The backend's text is logged, never
 * passed on. */
static void op_backend_failed(op *o, const crt_backend_resp *r, const char *what)
{
    if (r->err == CRT_ERANGE) {
        op_backend_error(o, "the Cronium backend sent an answer that is too large");
        return;
    }
    if (r->err) {
        op_unavailable(o, "the Cronium backend did not answer in time", r->retry_after_s);
        return;
    }
    if (r->status == 429 || r->status == 502 || r->status == 503 || r->status == 504) {
        op_unavailable(o, "the Cronium backend is unavailable", r->retry_after_s);
        return;
    }
    if (r->status == 401 || r->status == 403) {
        /* The runtime's own credentials: an operator fixes them, the
         * request itself was fine, so it is worth retrying later. */
        CRT_LOGF(CRT_LOG_ERROR, "backend refused the runtime's credentials (check BACKEND_TOKEN)",
                 CRT_LS("operation", what), CRT_LI("status", r->status));
        op_unavailable(o, "the Cronium backend refused the request", 5);
        return;
    }
    CRT_LOGF(CRT_LOG_WARN, "backend answered with an unexpected status", CRT_LS("operation", what),
                 CRT_LI("status", r->status), CRT_LI("body_bytes", (long long)r->len));
    char msg[160];
    snprintf(msg, sizeof msg, "the Cronium backend answered %s with an unexpected HTTP %ld", what, r->status);
    op_backend_error(o, msg);
}

/* Starts a backend request for o; fails (cb not called) once the client is
 * gone at shutdown, when late cache callbacks may still try. */
static int backend_req(op *o, const char *method, const char *path, const char *body, size_t len,
                       const char *opname, unsigned flags, crt_backend_cb cb)
{
    if (!o->ps->backend)
        return CRT_EUNAVAIL;
    /* Increments are bounded by their request's deadline (they may have
     * waited in line); other operations by the client's own budget. */
    uint64_t by = o->kind == CRT_ST_INCR_VAR ? o->deadline : 0;
    return crt_backend_request_by(o->ps->backend, method, path, body, len, opname, flags, by, cb, o);
}

static void backend_call(op *o, const char *method, const char *path, const char *body, size_t len, const char *opname,
                         crt_backend_cb cb)
{
    unsigned flags = strcmp(method, "GET") == 0 ? CRT_BACKEND_SHARE : 0;
    if (backend_req(o, method, path, body, len, opname, flags, cb))
        op_unavailable(o, "the Cronium backend client is not available", 2);
}

static void rfc3339_now(char *out, size_t cap) { crt_rfc3339(out, cap, -1, true); }

/* ---- §6 value encoding ---------------------------------------------------------------------------- */

/* What the backend's text column gives back for a value, appended to out. */
static void read_back(const char *v, size_t n, crt_buf *out)
{
    if (crt_json_kind_of(v, n) != CRT_JSON_STRING) {
        crt_buf_append(out, v, n);
        return;
    }
    crt_buf text;
    crt_buf_init(&text);
    crt_json_unquote(v, n, &text);
    size_t mark = out->len;
    if (text.len && crt_json_compact(text.data, text.len, out) == 0 &&
        crt_json_kind_of(out->data + mark, out->len - mark) != CRT_JSON_STRING) {
        /* the text spells a non-string JSON value: that is what reads back */
    } else {
        out->len = mark;
        crt_buf_append(out, v, n);
    }
    crt_buf_fini(&text);
}

/* {"value": <encoded>}: strings as themselves, anything else as its JSON text. */
static void encode_put_body(const char *v, size_t n, crt_buf *out)
{
    crt_buf_puts(out, "{\"value\":");
    if (crt_json_kind_of(v, n) == CRT_JSON_STRING)
        crt_buf_append(out, v, n);
    else
        crt_buf_json_str(out, v, n);
    crt_buf_putc(out, '}');
}

/* ---- context --------------------------------------------------------------------------------------- */

static void lru_unlink(prodstore *ps, ctx_entry *e) { crt_dlist_remove(&ps->lru, &e->node); }
static void lru_front(prodstore *ps, ctx_entry *e) { crt_dlist_push_front(&ps->lru, &e->node); }

static void ctx_entry_free(void *p)
{
    ctx_entry *e = p;
    if (!e)
        return;
    crt_context_fini(&e->ctx);
    crt_buf_fini(&e->output);
    free(e->id);
    free(e);
}

static ctx_entry *ctx_lookup(prodstore *ps, const char *id)
{
    ctx_entry *e = crt_map_get(ps->ctxs, id, strlen(id));
    if (e && &e->node != ps->lru.head) {
        lru_unlink(ps, e);
        lru_front(ps, e);
    }
    return e;
}

static ctx_entry *ctx_insert(prodstore *ps, const char *id, const char *json, size_t len)
{
    ctx_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    crt_context_defaults d = {id, NULL, NULL, NULL};
    if (crt_context_build(&e->ctx, json, len, &d) || !(e->id = strdup(id))) {
        ctx_entry_free(e);
        return NULL;
    }
    ctx_entry *old = crt_map_del(ps->ctxs, id, strlen(id));
    if (old) {
        lru_unlink(ps, old);
        ctx_entry_free(old);
    }
    while (crt_map_size(ps->ctxs) >= CTX_CACHE_MAX && ps->lru.tail) {
        ctx_entry *victim = crt_container_of(ps->lru.tail, ctx_entry, node);
        lru_unlink(ps, victim);
        crt_map_del(ps->ctxs, victim->id, strlen(victim->id));
        ctx_entry_free(victim);
    }
    void **slot = crt_map_slot(ps->ctxs, id, strlen(id), true);
    if (!slot) {
        ctx_entry_free(e);
        return NULL;
    }
    *slot = e;
    lru_front(ps, e);
    return e;
}

static void op_with_context(op *o, ctx_entry *e);

static void on_ctx_backend(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err || r->status != 200) {
        if (!r->err && r->status == 404) {
            op_answer(o, CRT_ENOTFOUND, NULL, 0, "execution not found", CRT_NF_EXECUTION, 0);
            return;
        }
        op_backend_failed(o, r, "the execution context request");
        return;
    }
    /* Requests that shared this fetch find the entry the first one built. */
    ctx_entry *e = ctx_lookup(ps, o->exec_id);
    if (e) {
        op_with_context(o, e);
        return;
    }
    e = ctx_insert(ps, o->exec_id, r->body, r->len);
    if (!e) {
        CRT_LOGF(CRT_LOG_ERROR, "backend sent an execution context that is not a JSON object",
                 CRT_LS("execution_id", o->exec_id));
        op_backend_error(o, "the Cronium backend sent an invalid execution context");
        return;
    }
    key_exec(&o->work, o->exec_id, "context");
    cache_set(ps, &o->work, r->body, r->len, NULL, NULL);
    op_with_context(o, e);
}

static void ctx_from_backend(op *o)
{
    crt_buf path;
    crt_buf_init(&path);
    crt_buf_puts(&path, "/api/internal/executions");
    crt_backend_path_seg(&path, o->exec_id, strlen(o->exec_id));
    crt_buf_puts(&path, "/context");
    backend_call(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_context", on_ctx_backend);
    crt_buf_fini(&path);
}

/* What the cache holds is not trusted: a context must be a JSON object, and
 * one naming another execution is not this one's. */
static bool cached_ctx_ok(const char *json, size_t len, const char *exec_id)
{
    static const char *const keys[1] = {"executionId"};
    crt_json_slot s;
    crt_buf doc, id;
    crt_buf_init(&doc);
    crt_buf_init(&id);
    bool ok = crt_json_object(json, len, &doc, keys, &s, 1) == 0;
    if (ok && s.len && crt_json_kind_of(doc.data + s.off, s.len) != CRT_JSON_NULL) {
        ok = crt_json_kind_of(doc.data + s.off, s.len) == CRT_JSON_STRING &&
             crt_json_unquote(doc.data + s.off, s.len, &id) == 0 && id.len == strlen(exec_id) &&
             memcmp(id.data, exec_id, id.len) == 0;
    }
    crt_buf_fini(&doc);
    crt_buf_fini(&id);
    return ok;
}

static void on_ctx_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        ctx_entry *e = cached_ctx_ok(r->str, r->len, o->exec_id) ? ctx_insert(ps, o->exec_id, r->str, r->len) : NULL;
        if (e) {
            count(ps, K_CONTEXT, R_HIT);
            op_with_context(o, e);
            return;
        }
        /* Not a context: a miss; the backend's answer overwrites it. */
        (*ps->m_invalid[K_CONTEXT])++;
        CRT_LOGF(CRT_LOG_WARN, "cached execution context is not valid: ignored", CRT_LS("execution_id", o->exec_id));
        count(ps, K_CONTEXT, R_MISS);
        ctx_from_backend(o);
        return;
    }
    count(ps, K_CONTEXT, r->err ? R_ERROR : R_MISS);
    ctx_from_backend(o);
}

static void op_start(op *o)
{
    prodstore *ps = o->ps;
    ctx_entry *e = ctx_lookup(ps, o->exec_id);
    if (e) {
        op_with_context(o, e);
        return;
    }
    key_exec(&o->work, o->exec_id, "context");
    if (cache_get(ps, &o->work, on_ctx_cache, o)) {
        count(ps, K_CONTEXT, R_ERROR);
        ctx_from_backend(o);
    }
}

/* ---- variables ------------------------------------------------------------------------------------- */

static void var_path(op *o, crt_buf *path)
{
    crt_buf_puts(path, "/api/internal/variables");
    crt_backend_path_seg(path, o->user_id, strlen(o->user_id));
    crt_backend_path_seg(path, o->key.data, o->key.len);
}

/* Answers with o->result once the cache SET (if any) has been acknowledged. */
static void on_cache_written(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    bool is_write = o->kind != CRT_ST_GET_VAR && o->kind != CRT_ST_GET_OUTPUT;
    /* Not stored (down, -OOM, -ERR ...): the old value may still be there.
     * Marked before the answer, so no later read of this process sees it. */
    if (is_write && (r->err || r->type != CRT_CACHE_STATUS))
        distrust_key(o->ps, &o->work);
    if (o->kind == CRT_ST_GET_VAR || o->kind == CRT_ST_INCR_VAR || o->kind == CRT_ST_GET_OUTPUT)
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
    else
        op_answer(o, 0, NULL, 0, NULL, 0, 0);
}

static void cache_then_answer(op *o, cache_kind k, const crt_buf *key, const char *v, size_t n)
{
    if (cache_set(o->ps, key, v, n, on_cache_written, o)) {
        count(o->ps, k, R_ERROR);
        crt_cache_reply none = {.err = CRT_EUNAVAIL};
        on_cache_written(o, &none);
    }
}

/* Extracts the value of a backend variable reply into o->result (read-back form). */
static int parse_var_reply(op *o, const crt_backend_resp *r)
{
    static const char *const keys[1] = {"value"};
    crt_json_slot s;
    crt_buf doc;
    crt_buf_init(&doc);
    int rc = crt_json_object(r->body, r->len, &doc, keys, &s, 1);
    if (rc == 0 && s.len)
        read_back(doc.data + s.off, s.len, &o->result);
    else
        rc = CRT_EINVAL;
    crt_buf_fini(&doc);
    return rc;
}

static void on_var_backend_get(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (!r->err && r->status == 404) {
        op_answer(o, CRT_ENOTFOUND, NULL, 0, "variable not found", CRT_NF_VARIABLE, 0);
        return;
    }
    if (r->err || r->status != 200) {
        op_backend_failed(o, r, "the variable read");
        return;
    }
    if (parse_var_reply(o, r)) {
        op_backend_error(o, "the Cronium backend sent an invalid variable");
        return;
    }
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
    if (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len) != o->gen_seen || key_distrusted(o->ps, &o->work)) {
        /* A write to this key completed meanwhile, or the cache entry is
         * not trusted (SET NX would keep it anyway): answer, do not cache. */
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
        return;
    }
    if (cache_set_ex(o->ps, &o->work, o->result.data, o->result.len, true, on_cache_written, o))
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
}

static void var_from_backend(op *o)
{
    o->gen_seen = *gen_slot(o->ps, o->user_id, o->key.data, o->key.len);
    crt_buf path;
    crt_buf_init(&path);
    var_path(o, &path);
    backend_call(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_variable", on_var_backend_get);
    crt_buf_fini(&path);
}

/* A cached value is spliced into the answer only as JSON this process
 * re-serialised; anything else (not JSON, a wrong-typed key) is a miss, and
 * the key is deleted so the backend's value can take its place. */
static void on_var_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        crt_buf_reset(&o->result);
        if (crt_json_compact(r->str, r->len, &o->result) == 0) {
            count(ps, K_VARIABLE, R_HIT);
            op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
            return;
        }
        crt_buf_reset(&o->result);
        (*ps->m_invalid[K_VARIABLE])++;
        CRT_LOGF(CRT_LOG_WARN, "cached variable is not valid JSON: ignored");
        distrust_key(ps, &o->work);
        count(ps, K_VARIABLE, R_MISS);
    } else if (r->err == 0 && r->type == CRT_CACHE_ERROR) {
        distrust_key(ps, &o->work);          /* e.g. WRONGTYPE: not ours */
        count(ps, K_VARIABLE, R_ERROR);
    } else {
        count(ps, K_VARIABLE, r->err ? R_ERROR : R_MISS);
    }
    var_from_backend(o);
}

static void on_var_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (r->err || r->status / 100 != 2) {
        op_backend_failed(o, r, "the variable write");
        return;
    }
    (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    crt_buf_reset(&o->result);
    read_back(o->value.data, o->value.len, &o->result);
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
    cache_then_answer(o, K_VARIABLE, &o->work, o->result.data, o->result.len);
}

/* PUT {"value": v} for o's variable. Returns 0, or an error (cb not called). */
static int var_put(op *o, const char *v, size_t n, const char *opname, crt_backend_cb cb)
{
    crt_buf path, body;
    crt_buf_init(&path);
    crt_buf_init(&body);
    var_path(o, &path);
    encode_put_body(v, n, &body);
    int rc = backend_req(o, "PUT", crt_buf_cstr(&path), body.data, body.len, opname, 0, cb);
    crt_buf_fini(&path);
    crt_buf_fini(&body);
    return rc;
}

static void on_var_cache_deleted(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err || r->type != CRT_CACHE_INT)
        distrust_key(o->ps, &o->work);
    op_answer(o, 0, NULL, 0, NULL, 0, 0);
}

static void on_var_delete(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (!r->err && (r->status == 404 || r->status == 405)) {
        /* A JSON "not found" is a missing variable; anything else means the
         * backend has no delete route. */
        bool missing = false;
        if (r->status == 404 && r->len && r->body[0] == '{') {
            for (size_t i = 0; i + 9 <= r->len && !missing; i++)
                missing = strncasecmp(r->body + i, "not found", 9) == 0;
        }
        if (missing)
            op_answer(o, CRT_ENOTFOUND, NULL, 0, "variable not found", CRT_NF_VARIABLE, 0);
        else
            op_answer(o, CRT_ENOTSUP, NULL, 0, "the Cronium backend does not support deleting variables", 0, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        op_backend_failed(o, r, "the variable delete");
        return;
    }
    (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
    if (cache_del(o->ps, &o->work, on_var_cache_deleted, o)) {
        distrust_key(o->ps, &o->work);
        op_answer(o, 0, NULL, 0, NULL, 0, 0);
    }
}

/* ---- atomic increment ------------------------------------------------------------------------------- */

static void incr_next(op *o);
static void incr_lock(op *o);
static void line_advance(prodstore *ps, incr_line *l);

static void line_key(op *o, crt_buf *b)
{
    crt_buf_reset(b);
    crt_buf_puts(b, o->user_id);
    crt_buf_putc(b, '\0');
    crt_buf_append(b, o->key.data, o->key.len);
}

/* Ends an increment: releases the lock, answers, and starts the next one
 * queued in this process on the same key. */
/* Stands for "the backend's answer was not what it should be" (a 502). */
static const crt_backend_resp bad_body = {.status = 200};

static void incr_end(op *o, int err, const char *msg, unsigned ra, const crt_backend_resp *backend_fail)
{
    prodstore *ps = o->ps;
    if (o->locked && ps->cache) {
        static const char script[] =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        crt_buf k;
        crt_buf_init(&k);
        key_user(&k, o->user_id, "lock", o->key.data, o->key.len);
        const char *argv[5] = {"EVAL", script, "1", k.data, o->lock_token};
        size_t lens[5] = {4, sizeof script - 1, 1, k.len, strlen(o->lock_token)};
        crt_cache_cmd(ps->cache, NULL, NULL, 5, argv, lens);
        crt_buf_fini(&k);
        o->locked = false;
    }
    incr_line *l = o->line;
    o->line = NULL;
    if (backend_fail == &bad_body)
        op_backend_error(o, msg);
    else if (backend_fail)
        op_backend_failed(o, backend_fail, msg);
    else if (err)
        op_answer(o, err, NULL, 0, msg, 0, ra);
    else
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
    if (l) {
        l->running = NULL;
        line_advance(ps, l);
    }
}

static void incr_done(op *o, int err, const char *msg, unsigned ra) { incr_end(o, err, msg, ra, NULL); }

/* Ends an increment with the mapping of a failed backend answer (what names it). */
static void incr_backend_failed(op *o, const crt_backend_resp *r, const char *what)
{
    incr_end(o, 0, what, 0, r);
}

static void queued_unlink(prodstore *ps, op *o)
{
    crt_dlist_remove(&o->line->waiting, &o->qnode);
    o->line->nwaiting--;
    crt_dlist_remove(&ps->queued, &o->pnode);
    o->queued = false;
}

/* Answers a queued increment that will not run: its client went away (the
 * answer is thrown away, and it must not count later: a script that gave up
 * may retry) or its deadline passed. */
static bool queued_expire(prodstore *ps, op *o, uint64_t now)
{
    if (op_gone(o)) {
        (*ps->m_incr_dropped)++;
        o->line = NULL;
        op_answer(o, CRT_EUNAVAIL, NULL, 0, "the client went away", 0, 1);
        return true;
    }
    if (now >= o->deadline) {
        (*ps->m_incr_rejected)++;
        o->line = NULL;
        op_unavailable(o, "timed out waiting for earlier increments of this variable", 1);
        return true;
    }
    return false;
}

/* Starts the oldest waiting increment that is still wanted; frees the line
 * once nothing runs or waits. */
static void line_advance(prodstore *ps, incr_line *l)
{
    if (l->advancing)
        return;     /* the loop below picks up */
    l->advancing = true;
    uint64_t now = uv_now(ps->loop);
    while (!l->running && l->waiting.head) {
        op *n = crt_container_of(l->waiting.head, op, qnode);
        queued_unlink(ps, n);
        if (queued_expire(ps, n, now))
            continue;
        l->running = n;
        incr_lock(n);       /* may finish n at once: the loop goes on */
    }
    l->advancing = false;
    if (!l->running && !l->waiting.head) {
        crt_map_del(ps->incr_lines, l->key, l->klen);
        free(l);
    }
}

static void on_incr_cached(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err || r->type != CRT_CACHE_STATUS)
        distrust_key(o->ps, &o->work);
    incr_done(o, 0, NULL, 0);
}

static void on_incr_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (r->err || r->status / 100 != 2) {
        incr_backend_failed(o, r, "the incremented value");
        return;
    }
    (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
    if (cache_set(o->ps, &o->work, o->result.data, o->result.len, on_incr_cached, o)) {
        distrust_key(o->ps, &o->work);
        incr_done(o, 0, NULL, 0);
    }
}

static void on_incr_read(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    crt_buf_reset(&o->result);
    if (!r->err && r->status == 404) {
        crt_buf_putc(&o->result, '0');
    } else if (r->err || r->status != 200) {
        incr_backend_failed(o, r, "the variable read");
        return;
    } else if (parse_var_reply(o, r)) {
        incr_backend_failed(o, &bad_body, "the Cronium backend sent an invalid variable");
        return;
    }
    crt_buf sum;
    crt_buf_init(&sum);
    if (crt_json_number_add(o->result.data, o->result.len, o->value.data, o->value.len, &sum)) {
        crt_buf_fini(&sum);
        incr_done(o, CRT_ECONFLICT, "the variable's value is not a number", 0);
        return;
    }
    crt_buf_reset(&o->result);
    crt_buf_append(&o->result, sum.data, sum.len);
    crt_buf_fini(&sum);
    if (op_gone(o)) {
        (*o->ps->m_incr_dropped)++;
        incr_done(o, CRT_EUNAVAIL, "the client went away", 1);
        return;
    }
    /* PUT the number (o->value still holds the increment). */
    if (var_put(o, o->result.data, o->result.len, "increment_variable", on_incr_put))
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
}

static void incr_next(op *o)
{
    if (op_gone(o)) {
        /* Nothing done yet: a client that gave up must not be counted. */
        (*o->ps->m_incr_dropped)++;
        incr_done(o, CRT_EUNAVAIL, "the client went away", 1);
        return;
    }
    if (uv_now(o->ps->loop) + 10 >= o->deadline) {
        (*o->ps->m_incr_rejected)++;
        incr_done(o, CRT_EUNAVAIL, "timed out waiting for earlier increments of this variable", 1);
        return;
    }
    /* Read the source of truth, never the cache: the value may have moved. */
    crt_buf path;
    crt_buf_init(&path);
    var_path(o, &path);
    if (backend_req(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_variable", 0, on_incr_read))
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
    crt_buf_fini(&path);
}

static void on_lock_timer_closed(uv_handle_t *h) { free(h); }

static void on_lock_retry(uv_timer_t *t)
{
    op *o = t->data;
    o->lock_timer = NULL;
    uv_close((uv_handle_t *)t, on_lock_timer_closed);
    incr_lock(o);
}

static void on_lock_reply(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err || (r->type != CRT_CACHE_STATUS && r->type != CRT_CACHE_NIL)) {
        /* Valkey went away, or answered an error (-OOM, -ERR, -NOPERM ...):
         * that is not "busy". The lock service is unavailable, so do what
         * we do when Valkey is down: go on under the in-process line only.
         * Script authors expect an increment to work whenever the backend
         * does; Valkey is a cache and a cross-process guard, not the
         * source of truth. */
        incr_next(o);
        return;
    }
    if (r->type == CRT_CACHE_STATUS) {
        o->locked = true;
        incr_next(o);
        return;
    }
    if (uv_now(ps->loop) >= o->lock_deadline) {
        incr_done(o, CRT_EUNAVAIL, "the variable stayed locked by another process", 1);
        return;
    }
    o->lock_timer = malloc(sizeof *o->lock_timer);
    if (!o->lock_timer) {
        incr_done(o, CRT_EUNAVAIL, "out of memory", 1);
        return;
    }
    uv_timer_init(ps->loop, o->lock_timer);
    o->lock_timer->data = o;
    uv_timer_start(o->lock_timer, on_lock_retry, LOCK_RETRY_MS, 0);
}

static void incr_lock(op *o)
{
    prodstore *ps = o->ps;
    if (!o->lock_token[0]) {
        unsigned char rnd[16];
        crt_random_bytes(rnd, sizeof rnd);
        for (int i = 0; i < 16; i++)
            snprintf(o->lock_token + 2 * i, 3, "%02x", rnd[i]);
        o->lock_deadline = uv_now(ps->loop) + ps->lock_ttl_ms + 1000;
        if (o->lock_deadline > o->deadline)
            o->lock_deadline = o->deadline;
    }
    crt_buf k;
    crt_buf_init(&k);
    key_user(&k, o->user_id, "lock", o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->lock_ttl_ms);
    const char *argv[6] = {"SET", k.data, o->lock_token, "NX", "PX", ttl};
    size_t lens[6] = {3, k.len, strlen(o->lock_token), 2, 2, strlen(ttl)};
    int rc = ps->cache ? crt_cache_cmd(ps->cache, on_lock_reply, o, 6, argv, lens) : CRT_EUNAVAIL;
    crt_buf_fini(&k);
    if (rc)
        incr_next(o); /* no Valkey: in-process serialisation only */
}

static void incr_enqueue(op *o)
{
    prodstore *ps = o->ps;
    crt_buf lk;
    crt_buf_init(&lk);
    line_key(o, &lk);
    void **slot = crt_map_slot(ps->incr_lines, lk.data, lk.len, true);
    incr_line *l = slot ? *slot : NULL;
    if (slot && !l) {
        l = calloc(1, sizeof *l + lk.len + 1);
        if (l) {
            l->klen = lk.len;
            memcpy(l->key, lk.data, lk.len);
            *slot = l;
        } else {
            crt_map_del(ps->incr_lines, lk.data, lk.len);
        }
    }
    crt_buf_fini(&lk);
    if (!l) {
        op_unavailable(o, "out of memory", 1);
        return;
    }
    o->line = l;
    if (!l->running) {
        l->running = o;
        incr_lock(o);
        return;
    }
    if (l->nwaiting >= INCR_QUEUE_MAX) {
        (*ps->m_incr_rejected)++;
        o->line = NULL;
        op_fail(o, 429, "rate_limited", "too many increments of this variable are waiting", 1);
        return;
    }
    crt_dlist_push_back(&l->waiting, &o->qnode);
    l->nwaiting++;
    crt_dlist_push_back(&ps->queued, &o->pnode);
    o->queued = true;
    maint_arm(ps);
}

/* ---- maintenance: queued increments, invalidation retries ------------------------------------------ */

static void on_maint(uv_timer_t *t)
{
    prodstore *ps = t->data;
    uint64_t now = uv_now(ps->loop);
    /* Unlink first, answer after: an answer may submit new work. */
    crt_dlist done = {NULL, NULL};
    for (crt_dnode *n = ps->queued.head, *nn; n; n = nn) {
        nn = n->next;
        op *o = crt_container_of(n, op, pnode);
        if (!op_gone(o) && now < o->deadline)
            continue;
        queued_unlink(ps, o);
        crt_dlist_push_back(&done, &o->pnode);
    }
    while (done.head) {
        op *o = crt_container_of(done.head, op, pnode);
        crt_dlist_remove(&done, &o->pnode);
        queued_expire(ps, o, UINT64_MAX);
    }
    if (ps->distrust_pending.head && now >= ps->next_del_retry)
        distrust_flush(ps);
    maint_arm(ps);
}

static void maint_arm(prodstore *ps)
{
    if (!ps->maint_open || uv_is_active((uv_handle_t *)&ps->maint))
        return;
    if (ps->queued.head || ps->distrust_pending.head)
        uv_timer_start(&ps->maint, on_maint, MAINT_MS, 0);
}

/* ---- output and condition ---------------------------------------------------------------------------- */

static void on_exec_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    cache_kind k = o->kind == CRT_ST_GET_OUTPUT ? K_OUTPUT : K_CONDITION;
    if (r && r->err == 0 && r->type == CRT_CACHE_STR) {
        crt_buf_reset(&o->result);
        bool ok = crt_json_compact(r->str, r->len, &o->result) == 0;
        if (ok && k == K_CONDITION) {
            crt_json_kind jk = crt_json_kind_of(o->result.data, o->result.len);
            ok = jk == CRT_JSON_TRUE || jk == CRT_JSON_FALSE || jk == CRT_JSON_NULL;
        }
        if (ok) {
            count(o->ps, k, R_HIT);
            op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
            return;
        }
        (*o->ps->m_invalid[k])++;
        CRT_LOGF(CRT_LOG_WARN, "cached value is not valid: ignored", CRT_LS("kind", kind_names[k]));
        distrust_key(o->ps, &o->work);
        count(o->ps, k, R_MISS);
    } else if (r && r->err == 0 && r->type == CRT_CACHE_ERROR) {
        distrust_key(o->ps, &o->work);
        count(o->ps, k, R_ERROR);
    } else if (r) {
        count(o->ps, k, r->err ? R_ERROR : R_MISS);
    } else {
        count(o->ps, k, R_MISS);             /* distrusted: not asked */
    }
    /* Fall back to what this process saw set. */
    ctx_entry *e = ctx_lookup(o->ps, o->exec_id);
    if (k == K_OUTPUT) {
        if (e && e->output.len)
            op_answer(o, 0, e->output.data, e->output.len, NULL, 0, 0);
        else
            op_answer(o, CRT_ENOTFOUND, NULL, 0, "no output set", CRT_NF_VARIABLE, 0);
    } else {
        const char *c = e && e->condition[0] ? e->condition : "null";
        op_answer(o, 0, c, strlen(c), NULL, 0, 0);
    }
}

static void on_exec_post(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    bool out = o->kind == CRT_ST_SET_OUTPUT;
    if (!r->err && r->status == 404) {
        op_answer(o, CRT_ENOTFOUND, NULL, 0, "execution not found", CRT_NF_EXECUTION, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        op_backend_failed(o, r, out ? "the output" : "the condition");
        return;
    }
    ctx_entry *e = ctx_lookup(o->ps, o->exec_id);
    if (e) {
        if (out) {
            crt_buf_reset(&e->output);
            crt_buf_append(&e->output, o->value.data, o->value.len);
        } else {
            snprintf(e->condition, sizeof e->condition, "%.*s", (int)o->value.len, o->value.data);
        }
    }
    key_exec(&o->work, o->exec_id, out ? "output" : "condition");
    cache_then_answer(o, out ? K_OUTPUT : K_CONDITION, &o->work, o->value.data, o->value.len);
}

/* ---- tool actions ----------------------------------------------------------------------------------------- */

static void on_tool(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (!r->err && (r->status == 404 || r->status == 405)) {
        op_answer(o, CRT_ENOTSUP, NULL, 0, "the Cronium backend does not offer tool actions", 0, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        op_backend_failed(o, r, "the tool action");
        return;
    }
    crt_buf_reset(&o->result);
    if (crt_json_compact(r->body, r->len, &o->result) ||
        crt_json_kind_of(o->result.data, o->result.len) != CRT_JSON_OBJECT) {
        op_backend_error(o, "the Cronium backend sent an invalid tool result");
        return;
    }
    op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
}

/* ---- dispatch ------------------------------------------------------------------------------------------------ */

static void op_with_context(op *o, ctx_entry *e)
{
    prodstore *ps = o->ps;
    if (op_gone(o)) {
        /* Nobody will read the answer: start no backend work for it. */
        op_answer(o, CRT_EUNAVAIL, NULL, 0, "the client went away", 0, 1);
        return;
    }
    o->user_id = strdup(e->ctx.user_id ? e->ctx.user_id : "");
    if (!o->user_id) {
        op_unavailable(o, "out of memory", 1);
        return;
    }
    bool needs_user = o->kind == CRT_ST_GET_VAR || o->kind == CRT_ST_PUT_VAR || o->kind == CRT_ST_DEL_VAR ||
                      o->kind == CRT_ST_INCR_VAR;
    if (needs_user && !*o->user_id) {
        /* Every execution the backend runs has an owner: a context
         * without one is the backend's fault, not the script's. */
        op_backend_error(o, "the Cronium backend sent an execution context without a userId");
        return;
    }
    char ts[40];
    switch (o->kind) {
    case CRT_ST_GET_CONTEXT:
        op_answer(o, 0, e->ctx.json.data, e->ctx.json.len, NULL, 0, 0);
        return;
    case CRT_ST_GET_INPUT:
        if (e->ctx.input.len)
            op_answer(o, 0, e->ctx.input.data, e->ctx.input.len, NULL, 0, 0);
        else
            op_answer(o, CRT_ENOTFOUND, NULL, 0, "no input", CRT_NF_VARIABLE, 0);
        return;
    case CRT_ST_GET_OUTPUT:
    case CRT_ST_GET_CONDITION:
        key_exec(&o->work, o->exec_id, o->kind == CRT_ST_GET_OUTPUT ? "output" : "condition");
        if (key_distrusted(ps, &o->work)) {
            on_exec_cache(o, NULL);
        } else if (cache_get(ps, &o->work, on_exec_cache, o)) {
            crt_cache_reply none = {.err = CRT_EUNAVAIL};
            on_exec_cache(o, &none);
        }
        return;
    case CRT_ST_SET_OUTPUT:
    case CRT_ST_SET_CONDITION: {
        bool out = o->kind == CRT_ST_SET_OUTPUT;
        crt_buf path, body;
        crt_buf_init(&path);
        crt_buf_init(&body);
        crt_buf_puts(&path, "/api/internal/executions");
        crt_backend_path_seg(&path, o->exec_id, strlen(o->exec_id));
        crt_buf_puts(&path, out ? "/output" : "/condition");
        rfc3339_now(ts, sizeof ts);
        crt_buf_printf(&body, "{\"%s\":", out ? "output" : "condition");
        crt_buf_append(&body, o->value.data, o->value.len);
        crt_buf_printf(&body, ",\"timestamp\":\"%s\"}", ts);
        backend_call(o, "POST", crt_buf_cstr(&path), body.data, body.len, out ? "set_output" : "set_condition",
                     on_exec_post);
        crt_buf_fini(&path);
        crt_buf_fini(&body);
        return;
    }
    case CRT_ST_GET_VAR:
        key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
        if (key_distrusted(ps, &o->work)) {
            count(ps, K_VARIABLE, R_MISS);
            var_from_backend(o);
        } else if (cache_get(ps, &o->work, on_var_cache, o)) {
            count(ps, K_VARIABLE, R_ERROR);
            var_from_backend(o);
        }
        return;
    case CRT_ST_PUT_VAR:
        if (var_put(o, o->value.data, o->value.len, "set_variable", on_var_put))
            op_unavailable(o, "the Cronium backend client is not available", 2);
        return;
    case CRT_ST_DEL_VAR: {
        crt_buf path;
        crt_buf_init(&path);
        var_path(o, &path);
        backend_call(o, "DELETE", crt_buf_cstr(&path), NULL, 0, "delete_variable", on_var_delete);
        crt_buf_fini(&path);
        return;
    }
    case CRT_ST_INCR_VAR:
        incr_enqueue(o);
        return;
    case CRT_ST_TOOL_ACTION: {
        crt_buf body;
        crt_buf_init(&body);
        crt_buf_puts(&body, "{\"executionId\":");
        crt_buf_json_str(&body, o->exec_id, strlen(o->exec_id));
        crt_buf_puts(&body, ",\"userId\":");
        crt_buf_json_str(&body, o->user_id, strlen(o->user_id));
        crt_buf_puts(&body, ",\"tool\":");
        crt_buf_json_str(&body, o->key.data, o->key.len);
        crt_buf_puts(&body, ",\"action\":");
        crt_buf_json_str(&body, o->key2.data, o->key2.len);
        crt_buf_puts(&body, ",\"params\":");
        crt_buf_append(&body, o->value.data, o->value.len);
        crt_buf_putc(&body, '}');
        backend_call(o, "POST", "/api/internal/tools/execute", body.data, body.len, "tool_action", on_tool);
        crt_buf_fini(&body);
        return;
    }
    }
    op_answer(o, CRT_EINVAL, NULL, 0, "unknown operation", 0, 0);
}

static void prod_submit(crt_store *s, const crt_store_req *r, crt_store_cb cb, void *ud)
{
    prodstore *ps = (prodstore *)s;
    op *o = calloc(1, sizeof *o);
    crt_store_result fail = {.err = CRT_EUNAVAIL, .message = "service is shutting down", .retry_after_s = 1};
    if (!o) {
        fail.message = "out of memory";
        cb(ud, &fail);
        return;
    }
    if (ps->shutting_down || ps->nops >= OPS_MAX) {
        /* Also bounds the work of clients that have gone away. */
        if (!ps->shutting_down)
            fail.message = "too many requests in progress";
        free(o);
        cb(ud, &fail);
        return;
    }
    ps->nops++;
    o->ps = ps;
    o->gone = r->gone;
    o->deadline = r->deadline_ms ? r->deadline_ms : uv_now(ps->loop) + ps->op_budget_ms;
    o->kind = r->op;
    o->cb = cb;
    o->ud = ud;
    o->exec_id = strdup(r->exec->execution_id);
    if (r->key)
        crt_buf_append(&o->key, r->key, r->key_len);
    if (r->key2)
        crt_buf_append(&o->key2, r->key2, r->key2_len);
    if (r->value)
        crt_buf_append(&o->value, r->value, r->value_len);
    crt_buf_cstr(&o->key);
    if (!o->exec_id) {
        op_unavailable(o, "out of memory", 1);
        return;
    }
    op_start(o);
}

/* ---- lifecycle --------------------------------------------------------------------------------------------------- */

static crt_check_state check_valkey(void *ctx)
{
    prodstore *ps = ctx;
    if (!ps->cache)
        return CRT_CHECK_DISABLED;
    return crt_cache_ready(ps->cache) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

static crt_check_state check_backend(void *ctx)
{
    prodstore *ps = ctx;
    return ps->backend && crt_backend_up(ps->backend) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

static void on_flush_timer_closed(uv_handle_t *h) { (void)h; }

/* Frees the clients once the audit queue has drained (or its deadline passed). */
static void prod_release(prodstore *ps)
{
    if (ps->flush_timer_open) {
        ps->flush_timer_open = false;
        uv_close((uv_handle_t *)&ps->flush_timer, on_flush_timer_closed);
    }
    if (ps->maint_open) {
        ps->maint_open = false;
        uv_close((uv_handle_t *)&ps->maint, on_flush_timer_closed);
    }
    if (ps->audit)
        crt_audit_backend_detach(ps->audit);
    if (ps->backend) {
        crt_backend *b = ps->backend;
        ps->backend = NULL;
        crt_backend_free(b);
    }
    if (ps->cache) {
        crt_cache *c = ps->cache;
        ps->cache = NULL;
        crt_cache_free(c);
    }
}

static void on_audit_drained(void *ctx) { prod_release(ctx); }

static void on_flush_deadline(uv_timer_t *t) { prod_release(t->data); }

static void prod_shutdown(crt_store *s)
{
    prodstore *ps = (prodstore *)s;
    if (ps->shutting_down)
        return;
    ps->shutting_down = true;
    uv_timer_init(ps->loop, &ps->flush_timer);
    ps->flush_timer.data = ps;
    ps->flush_timer_open = true;
    uv_timer_start(&ps->flush_timer, on_flush_deadline, AUDIT_FLUSH_MS, 0);
    crt_audit_backend_drain(ps->audit, on_audit_drained, ps);
}

static void prod_free(crt_store *s)
{
    prodstore *ps = (prodstore *)s;
    if (!ps)
        return;
    prod_release(ps);
    crt_map_free(ps->ctxs, ctx_entry_free);
    crt_map_free(ps->incr_lines, free);
    if (ps->distrust) {
        while (ps->distrust_pending.head)
            crt_dlist_remove(&ps->distrust_pending, ps->distrust_pending.head);
        crt_map_free(ps->distrust, free);
    }
    free(ps);
}

static const crt_store_vtable prod_vt = {"production", prod_submit, prod_shutdown, prod_free};

crt_store *crt_prodstore_new(struct crt_app *app, crt_audit **audit, char *err, size_t errcap);

crt_store *crt_prodstore_new(struct crt_app *app, crt_audit **audit, char *err, size_t errcap)
{
    const crt_config *cfg = app->cfg;
    *audit = NULL;
    prodstore *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->base.vt = &prod_vt;
    ps->app = app;
    ps->loop = app->loop;
    ps->ttl_ms = cfg->cache_ttl_ms;
    ps->lock_ttl_ms = cfg->lock_ttl_ms;
    ps->ctxs = crt_map_new();
    ps->incr_lines = crt_map_new();
    ps->distrust = crt_map_new();
    /* The whole retry budget stays below the server's write timeout. */
    uint64_t deadline = cfg->write_timeout_ms > 2000 ? cfg->write_timeout_ms - 1000 : cfg->write_timeout_ms / 2;
    crt_backend_opts bo = {
        .base_url = cfg->backend_url,
        .token = cfg->backend_token,
        .attempt_timeout_ms = cfg->backend_timeout_ms,
        .max_retries = (int)cfg->backend_max_retries,
        .retry_delay_ms = cfg->backend_retry_delay_ms,
        .deadline_ms = deadline,
        .max_connections = (long)cfg->backend_max_concurrent,
    };
    ps->backend = crt_backend_new(app->loop, &bo, app->metrics);
    ps->op_budget_ms = deadline;
    if (!ps->ctxs || !ps->incr_lines || !ps->distrust || !ps->backend) {
        snprintf(err, errcap, "out of memory");
        prod_free(&ps->base);
        return NULL;
    }
    if (cfg->cache_url && *cfg->cache_url) {
        crt_cache_opts co = {
            .url = cfg->cache_url,
            .password = cfg->cache_password,
            .db = cfg->cache_db,
            .timeout_ms = cfg->cache_timeout_ms,
            .max_pending = 10000,
        };
        ps->cache = crt_cache_new(app->loop, &co, app->metrics, err, errcap);
        if (!ps->cache) {
            prod_free(&ps->base);
            return NULL;
        }
        crt_cache_on_ready(ps->cache, on_cache_ready, ps);
    }
    for (int k = 0; k < K_COUNT; k++) {
        static const char *const res[3] = {"hit", "miss", "error"};
        for (int r = 0; r < 3; r++) {
            char labels[64];
            snprintf(labels, sizeof labels, "kind=\"%s\",result=\"%s\"", kind_names[k], res[r]);
            ps->m_cache[k][r] = crt_metrics_counter(app->metrics, "cronium_runtime_cache_requests_total",
                                                    "Cache lookups by kind and result.", labels);
        }
    }
    for (int k = 0; k < K_COUNT; k++) {
        char labels[64];
        snprintf(labels, sizeof labels, "kind=\"%s\"", kind_names[k]);
        ps->m_invalid[k] = crt_metrics_counter(app->metrics, "cronium_runtime_cache_invalid_total",
                                               "Cached values refused as not valid (served from the backend).",
                                               labels);
    }
    ps->m_distrusted = crt_metrics_counter(app->metrics, "cronium_runtime_cache_invalidations_total",
                                           "Cache keys bypassed until deleted, after a failed update.", "");
    ps->m_distrust_overflow = crt_metrics_counter(app->metrics, "cronium_runtime_cache_bypass_all_total",
                                                  "Times too many keys needed invalidating: cache bypassed one TTL.",
                                                  "");
    ps->m_incr_dropped = crt_metrics_counter(app->metrics, "cronium_runtime_increments_dropped_total",
                                             "Increments not performed because their client went away.", "");
    ps->m_incr_rejected = crt_metrics_counter(app->metrics, "cronium_runtime_increments_rejected_total",
                                              "Increments refused: queue full or deadline passed while waiting.", "");
    uv_timer_init(app->loop, &ps->maint);
    ps->maint.data = ps;
    ps->maint_open = true;
    crt_app_add_ready_check(app, "valkey", check_valkey, ps, false);
    crt_app_add_ready_check(app, "backend", check_backend, ps, true);
    ps->audit = crt_audit_backend_new(ps->backend, app->metrics);
    if (!ps->audit) {
        prod_free(&ps->base);
        return NULL;
    }
    *audit = ps->audit;
    CRT_LOGF(CRT_LOG_INFO, "production store", CRT_LS("backend", cfg->backend_url),
             CRT_LS("valkey", ps->cache ? "configured" : "disabled (no cache.url)"));
    return &ps->base;
}
