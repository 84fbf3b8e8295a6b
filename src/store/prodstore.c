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
#define DIRTY_MAX 4096          /* cache keys whose update failed */

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
    op *next_in_line;           /* increments queued on the same key */
    uint32_t gen_seen;          /* write generation when a backend read started */
};

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
    crt_map *incr_lines;        /* user\0key -> last queued op */
    crt_audit *audit;           /* ships to the backend; owned by the runtime */
    bool shutting_down;
    uv_timer_t flush_timer;
    bool flush_timer_open;
    /* A read that raced a write must not put its (older) value in the
     * cache: writes bump the generation of their key's slot, and a read
     * fills the cache only if the slot did not move (and only with SET NX,
     * so a writer in another process wins too). */
    uint32_t gen[GEN_SLOTS];
    /* Keys whose cache update failed after an acknowledged write: deleted
     * first thing when Valkey is back, so no stale value survives. */
    char *dirty[DIRTY_MAX];
    size_t ndirty;
    size_t dirty_sent;          /* in the DEL in flight */
    uint64_t *m_cache[K_COUNT][3];  /* hit, miss, error */
};

enum { R_HIT, R_MISS, R_ERROR };

/* ---- small helpers --------------------------------------------------------------------------- */

static void op_answer(op *o, int err, const char *json, size_t len, const char *msg, int nf_kind, unsigned ra)
{
    crt_store_result r = {.err = err, .json = json, .len = len, .message = msg, .not_found_kind = nf_kind,
                          .retry_after_s = ra};
    o->cb(o->ud, &r);
    crt_buf_fini(&o->key);
    crt_buf_fini(&o->key2);
    crt_buf_fini(&o->value);
    crt_buf_fini(&o->work);
    crt_buf_fini(&o->result);
    free(o->exec_id);
    free(o->user_id);
    free(o);
}

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

static void dirty_add(prodstore *ps, const crt_buf *key)
{
    if (!ps->cache)
        return;
    for (size_t i = 0; i < ps->ndirty; i++)
        if (strlen(ps->dirty[i]) == key->len && memcmp(ps->dirty[i], key->data, key->len) == 0)
            return;
    if (ps->ndirty == DIRTY_MAX) {
        CRT_LOGF(CRT_LOG_WARN, "too many cache keys to invalidate; the oldest may stay stale until their TTL");
        free(ps->dirty[ps->dirty_sent]);
        memmove(&ps->dirty[ps->dirty_sent], &ps->dirty[ps->dirty_sent + 1],
                (ps->ndirty - ps->dirty_sent - 1) * sizeof ps->dirty[0]);
        ps->ndirty--;
    }
    char *k = strndup(key->data, key->len);
    if (k)
        ps->dirty[ps->ndirty++] = k;
}

static void on_dirty_deleted(void *ud, const crt_cache_reply *r)
{
    prodstore *ps = ud;
    size_t n = ps->dirty_sent;
    ps->dirty_sent = 0;
    if (r->err || r->type == CRT_CACHE_ERROR)
        return; /* kept: tried again at the next reconnect */
    for (size_t i = 0; i < n; i++)
        free(ps->dirty[i]);
    memmove(ps->dirty, ps->dirty + n, (ps->ndirty - n) * sizeof ps->dirty[0]);
    ps->ndirty -= n;
}

static void on_cache_ready(void *ctx)
{
    prodstore *ps = ctx;
    if (!ps->ndirty || ps->dirty_sent)
        return;
    const char **argv = malloc((ps->ndirty + 1) * sizeof *argv);
    if (!argv)
        return;
    argv[0] = "DEL";
    for (size_t i = 0; i < ps->ndirty; i++)
        argv[i + 1] = ps->dirty[i];
    if (crt_cache_cmd(ps->cache, on_dirty_deleted, ps, (int)ps->ndirty + 1, argv, NULL) == 0) {
        ps->dirty_sent = ps->ndirty;
        CRT_LOGF(CRT_LOG_INFO, "valkey back: invalidating keys written while it was away", CRT_LI("keys", ps->ndirty));
    }
    free(argv);
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

/* Maps a final backend answer that is not a success. */
static void op_backend_failed(op *o, const crt_backend_resp *r, const char *what)
{
    if (r->err) {
        op_unavailable(o, "the Cronium backend did not answer in time", r->retry_after_s);
        return;
    }
    if (r->status == 401 || r->status == 403) {
        CRT_LOGF(CRT_LOG_ERROR, "backend refused the runtime's credentials (check BACKEND_TOKEN)",
                 CRT_LS("operation", what), CRT_LI("status", r->status));
        op_unavailable(o, "the Cronium backend refused the request", 5);
        return;
    }
    if (r->status == 429 || r->status >= 500) {
        op_unavailable(o, "the Cronium backend is unavailable", r->retry_after_s);
        return;
    }
    /* Another 4xx: the request itself was refused; pass the reason on. */
    crt_buf msg;
    crt_buf_init(&msg);
    crt_buf errv;
    crt_buf_init(&errv);
    static const char *const keys[2] = {"error", "message"};
    crt_json_slot s[2];
    crt_buf tmp;
    crt_buf_init(&tmp);
    if (crt_json_object(r->body, r->len, &tmp, keys, s, 2) == 0) {
        crt_json_slot m = s[1].len ? s[1] : s[0];
        if (m.len && crt_json_kind_of(tmp.data + m.off, m.len) == CRT_JSON_STRING)
            crt_json_unquote(tmp.data + m.off, m.len, &errv);
    }
    crt_buf_printf(&msg, "the Cronium backend refused %s (HTTP %ld)%s%.*s", what, r->status,
                   errv.len ? ": " : "", (int)errv.len, errv.data ? errv.data : "");
    op_answer(o, CRT_EINVAL, NULL, 0, crt_buf_cstr(&msg), 0, 0);
    crt_buf_fini(&msg);
    crt_buf_fini(&errv);
    crt_buf_fini(&tmp);
}

/* Starts a backend request for o; fails (cb not called) once the client is
 * gone at shutdown, when late cache callbacks may still try. */
static int backend_req(op *o, const char *method, const char *path, const char *body, size_t len,
                       const char *opname, unsigned flags, crt_backend_cb cb)
{
    if (!o->ps->backend)
        return CRT_EUNAVAIL;
    return crt_backend_request(o->ps->backend, method, path, body, len, opname, flags, cb, o);
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
        op_unavailable(o, "the Cronium backend sent an invalid execution context", 5);
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

static void on_ctx_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        ctx_entry *e = ctx_insert(ps, o->exec_id, r->str, r->len);
        if (e) {
            count(ps, K_CONTEXT, R_HIT);
            op_with_context(o, e);
            return;
        }
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
    if (is_write && (r->err || r->type == CRT_CACHE_ERROR))
        dirty_add(o->ps, &o->work);
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
        op_unavailable(o, "the Cronium backend sent an invalid variable", 5);
        return;
    }
    if (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len) != o->gen_seen) {
        /* A write to this key completed meanwhile: answer, but do not cache. */
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
        return;
    }
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
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

static void on_var_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        count(o->ps, K_VARIABLE, R_HIT);
        op_answer(o, 0, r->str, r->len, NULL, 0, 0);
        return;
    }
    count(o->ps, K_VARIABLE, r->err ? R_ERROR : R_MISS);
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
    if (r->err || r->type == CRT_CACHE_ERROR)
        dirty_add(o->ps, &o->work);
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
        dirty_add(o->ps, &o->work);
        op_answer(o, 0, NULL, 0, NULL, 0, 0);
    }
}

/* ---- atomic increment ------------------------------------------------------------------------------- */

static void incr_next(op *o);
static void incr_lock(op *o);

static void line_key(op *o, crt_buf *b)
{
    crt_buf_reset(b);
    crt_buf_puts(b, o->user_id);
    crt_buf_putc(b, '\0');
    crt_buf_append(b, o->key.data, o->key.len);
}

/* Ends an increment: releases the lock, answers, and starts the next one
 * queued in this process on the same key. */
static void incr_done(op *o, int err, const char *msg, unsigned ra)
{
    prodstore *ps = o->ps;
    if (o->locked) {
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
    op *next = o->next_in_line;
    crt_buf lk;
    crt_buf_init(&lk);
    line_key(o, &lk);
    void **slot = crt_map_slot(ps->incr_lines, lk.data, lk.len, false);
    if (slot && *slot == o)
        crt_map_del(ps->incr_lines, lk.data, lk.len);
    crt_buf_fini(&lk);
    if (err)
        op_answer(o, err, NULL, 0, msg, 0, ra);
    else
        op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
    if (next)
        incr_lock(next);
}

static void on_incr_cached(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err || r->type == CRT_CACHE_ERROR)
        dirty_add(o->ps, &o->work);
    incr_done(o, 0, NULL, 0);
}

static void on_incr_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (r->err || r->status / 100 != 2) {
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend did not accept the new value", r->retry_after_s ? r->retry_after_s : 2);
        return;
    }
    (*gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    key_user(&o->work, o->user_id, "var", o->key.data, o->key.len);
    if (cache_set(o->ps, &o->work, o->result.data, o->result.len, on_incr_cached, o)) {
        dirty_add(o->ps, &o->work);
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
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend is unavailable", r->retry_after_s ? r->retry_after_s : 2);
        return;
    } else if (parse_var_reply(o, r)) {
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend sent an invalid variable", 5);
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
    /* PUT the number (o->value still holds the increment). */
    if (var_put(o, o->result.data, o->result.len, "increment_variable", on_incr_put))
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
}

static void incr_next(op *o)
{
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
    if (r->err) {
        /* Valkey went away: the in-process line still serialises us. */
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
    }
    crt_buf k;
    crt_buf_init(&k);
    key_user(&k, o->user_id, "lock", o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->lock_ttl_ms);
    const char *argv[6] = {"SET", k.data, o->lock_token, "NX", "PX", ttl};
    size_t lens[6] = {3, k.len, strlen(o->lock_token), 2, 2, strlen(ttl)};
    int rc = crt_cache_cmd(ps->cache, on_lock_reply, o, 6, argv, lens);
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
    crt_buf_fini(&lk);
    if (!slot) {
        op_unavailable(o, "out of memory", 1);
        return;
    }
    op *last = *slot;
    *slot = o;
    if (last)
        last->next_in_line = o;     /* runs when last is done */
    else
        incr_lock(o);
}

/* ---- output and condition ---------------------------------------------------------------------------- */

static void on_exec_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    cache_kind k = o->kind == CRT_ST_GET_OUTPUT ? K_OUTPUT : K_CONDITION;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        count(o->ps, k, R_HIT);
        op_answer(o, 0, r->str, r->len, NULL, 0, 0);
        return;
    }
    count(o->ps, k, r->err ? R_ERROR : R_MISS);
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
        op_unavailable(o, "the Cronium backend sent an invalid tool result", 5);
        return;
    }
    op_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
}

/* ---- dispatch ------------------------------------------------------------------------------------------------ */

static void op_with_context(op *o, ctx_entry *e)
{
    prodstore *ps = o->ps;
    o->user_id = strdup(e->ctx.user_id ? e->ctx.user_id : "");
    if (!o->user_id) {
        op_unavailable(o, "out of memory", 1);
        return;
    }
    bool needs_user = o->kind == CRT_ST_GET_VAR || o->kind == CRT_ST_PUT_VAR || o->kind == CRT_ST_DEL_VAR ||
                      o->kind == CRT_ST_INCR_VAR;
    if (needs_user && !*o->user_id) {
        op_answer(o, CRT_EINVAL, NULL, 0, "the execution has no user, so it cannot have variables", 0, 0);
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
        if (cache_get(ps, &o->work, on_exec_cache, o)) {
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
        if (cache_get(ps, &o->work, on_var_cache, o)) {
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
    if (ps->shutting_down) {
        free(o);
        cb(ud, &fail);
        return;
    }
    o->ps = ps;
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
    crt_map_free(ps->incr_lines, NULL);
    for (size_t i = 0; i < ps->ndirty; i++)
        free(ps->dirty[i]);
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
    if (!ps->ctxs || !ps->incr_lines || !ps->backend) {
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
