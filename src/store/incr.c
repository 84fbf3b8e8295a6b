/* Read-modify-write operations on one variable: increments and appends.
 * Each reads the backend (the source of truth), computes the new value and
 * PUTs it. Those of one user's key run one at a time in this process (a line
 * per key, shared by increments and appends: one runs, at most
 * INCR_QUEUE_MAX wait, each until its deadline) and, across processes,
 * under a lock in Valkey:
 *   - taken with SET NX PX lockTtl, and renewed every lockTtl/3 while the
 *     read runs (a process that dies frees the key within one lockTtl);
 *   - fenced before the write: one script checks that the lock still holds
 *     this op's token and stretches it over the PUT's whole deadline; a lock
 *     lost by then means another process may have read and written since, so
 *     nothing is PUT and the op starts over from taking the lock (within its
 *     deadline; past it, 503);
 *   - committed by a script that caches the new value only if the lock is
 *     still ours (else drops the cached value) and releases it.
 * Without Valkey (down, refusing, or not configured) there is no lock across
 * processes: the op is refused (503 cache_unavailable) unless the process
 * is declared alone on its port (single_process), where the line is enough. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/json.h"
#include "cronium/log.h"
#include "cronium/store_codec.h"
#include "prodstore_int.h"

typedef struct incr_line {
    op *running;
    crt_dlist waiting;          /* oldest first */
    size_t nwaiting;
    bool advancing;             /* line_advance is on the stack */
    size_t klen;
    char key[];                 /* user\0key: its key in ps->incr_lines */
} incr_line;

/* A renewal waiting for Valkey's reply; its op may be gone by then. */
typedef struct renew_ticket {
    prodstore *ps;
    op *o;
} renew_ticket;

static void rmw_lock(op *o);
static void line_advance(prodstore *ps, incr_line *l);

static bool is_append(const op *o) { return o->kind == CRT_ST_APPEND_VAR; }
static const char *op_name(const op *o) { return is_append(o) ? "append_variable" : "increment_variable"; }

static void line_key(op *o, crt_buf *b)
{
    crt_buf_reset(b);
    crt_buf_puts(b, o->user_id);
    crt_buf_putc(b, '\0');
    crt_buf_append(b, o->key.data, o->key.len);
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

static void timer_drop(op *o)
{
    if (o->lock_timer) {
        uv_close((uv_handle_t *)o->lock_timer, on_timer_closed);
        o->lock_timer = NULL;
    }
}

static void on_released(void *ud, const crt_cache_reply *r) { crt_ps_script_missing(ud, SCRIPT_RELEASE, r); }

/* Stops renewing and gives the lock back (if still ours). */
static void lock_drop(op *o, bool release)
{
    prodstore *ps = o->ps;
    timer_drop(o);
    if (o->renew) {
        o->renew->o = NULL;
        o->renew = NULL;
    }
    if (o->locked && release && ps->cache) {
        crt_buf k;
        crt_buf_init(&k);
        crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
        const char *args[2] = {k.data, o->lock_token};
        size_t lens[2] = {k.len, strlen(o->lock_token)};
        crt_ps_script_call(ps, SCRIPT_RELEASE, on_released, ps, 1, 2, args, lens);
        crt_buf_fini(&k);
    }
    o->locked = false;
    o->fenced = false;
}

/* Ends the op: answer(o) answers it; then the next one in line starts. */
static incr_line *rmw_detach(op *o)
{
    lock_drop(o, true);
    incr_line *l = o->line;
    o->line = NULL;
    return l;
}

static void rmw_next_in_line(prodstore *ps, incr_line *l)
{
    if (l) {
        l->running = NULL;
        line_advance(ps, l);
    }
}

static void rmw_done(op *o, int err, const char *msg, unsigned ra)
{
    prodstore *ps = o->ps;
    incr_line *l = rmw_detach(o);
    if (err)
        crt_ps_answer(o, err, NULL, 0, msg, 0, ra);
    else
        crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
    rmw_next_in_line(ps, l);
}

static void rmw_fail(op *o, int status, const char *code, const char *msg, unsigned ra)
{
    prodstore *ps = o->ps;
    incr_line *l = rmw_detach(o);
    crt_ps_fail(o, status, code, msg, ra);
    rmw_next_in_line(ps, l);
}

/* r NULL: the backend's answer was not what it should be (a 502). */
static void rmw_backend_failed(op *o, const crt_backend_resp *r, const char *what)
{
    prodstore *ps = o->ps;
    incr_line *l = rmw_detach(o);
    if (r)
        crt_ps_backend_failed(o, r, what);
    else
        crt_ps_backend_error(o, what);
    rmw_next_in_line(ps, l);
}

static void no_cross_process_lock(op *o);

static void queued_unlink(prodstore *ps, op *o)
{
    crt_dlist_remove(&o->line->waiting, &o->qnode);
    o->line->nwaiting--;
    crt_dlist_remove(&ps->queued, &o->pnode);
    o->queued = false;
}

/* Answers a queued op that will not run: its client went away (the answer
 * is thrown away, and it must not crt_ps_count later: a script that gave up
 * may retry) or its deadline passed. */
static bool queued_expire(prodstore *ps, op *o, uint64_t now)
{
    if (crt_ps_gone(o)) {
        (*ps->m_incr_dropped)++;
        o->line = NULL;
        crt_ps_answer(o, CRT_EUNAVAIL, NULL, 0, "the client went away", 0, 1);
        return true;
    }
    if (now >= o->deadline) {
        (*ps->m_incr_rejected)++;
        o->line = NULL;
        crt_ps_unavailable(o, "timed out waiting for earlier updates of this variable", 1);
        return true;
    }
    return false;
}

/* Starts the oldest waiting op that is still wanted; frees the line once
 * nothing runs or waits. */
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
        rmw_lock(n);        /* may finish n at once: the loop goes on */
    }
    l->advancing = false;
    if (!l->running && !l->waiting.head) {
        crt_map_del(ps->incr_lines, l->key, l->klen);
        free(l);
    }
}

/* ---- write: PUT, then the cache under the lock ---- */

static void on_committed(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (crt_ps_script_missing(o->ps, SCRIPT_COMMIT, r) || r->err || r->type != CRT_CACHE_INT) {
        /* The cache may still hold the old value; the lock expires by itself. */
        crt_ps_distrust(o->ps, &o->work);
    }
    o->locked = false;          /* released by the script (or lost) */
    rmw_done(o, 0, NULL, 0);
}

static void on_cached(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err || r->type != CRT_CACHE_STATUS)
        crt_ps_distrust(o->ps, &o->work);
    rmw_done(o, 0, NULL, 0);
}

static void on_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err || r->status / 100 != 2) {
        rmw_backend_failed(o, r, is_append(o) ? "the appended value" : "the incremented value");
        return;
    }
    (*crt_ps_gen_slot(ps, o->user_id, o->key.data, o->key.len))++;
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    /* The cache holds what the backend reads back (an append that spells a
     * number reads back as the number); the answer is the value made. */
    crt_buf cached;
    crt_buf_init(&cached);
    crt_store_read_back(o->result.data, o->result.len, &cached);
    int rc;
    if (o->locked) {
        crt_buf lk;
        crt_buf_init(&lk);
        crt_store_key_lock(&lk, o->user_id, o->key.data, o->key.len);
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->ttl_ms);
        const char *args[5] = {lk.data, o->work.data, o->lock_token, cached.data ? cached.data : "", ttl};
        size_t lens[5] = {lk.len, o->work.len, strlen(o->lock_token), cached.len, strlen(ttl)};
        rc = crt_ps_script_call(ps, SCRIPT_COMMIT, on_committed, o, 2, 5, args, lens);
        crt_buf_fini(&lk);
    } else {
        rc = ps->cache ? crt_ps_cache_set(ps, &o->work, cached.data ? cached.data : "", cached.len, on_cached, o)
                       : CRT_EUNAVAIL;
    }
    crt_buf_fini(&cached);
    if (rc) {
        if (ps->cache)
            crt_ps_distrust(ps, &o->work);
        rmw_done(o, 0, NULL, 0);
    }
}

static void rmw_put(op *o)
{
    if (crt_ps_var_put(o, o->result.data, o->result.len, op_name(o), on_put))
        rmw_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
}

/* The fence: is the lock still ours? Then it now lasts past the PUT's
 * deadline, and the PUT goes out. */
static void on_fenced(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (!r->err && r->type == CRT_CACHE_INT && r->integer == 1) {
        o->fenced = true;
        rmw_put(o);
        return;
    }
    bool missing = crt_ps_script_missing(o->ps, SCRIPT_EXTEND, r);
    if (!missing && (r->err || r->type != CRT_CACHE_INT)) {
        /* Cannot tell whether the lock holds: do not write. */
        lock_drop(o, false);
        no_cross_process_lock(o);
        return;
    }
    /* Lost (expired, or taken by another process): what was read may be
     * stale. Start over from the lock, within the deadline. */
    CRT_LOGF(CRT_LOG_INFO, "variable lock lost before the write; starting over", CRT_LS("operation", op_name(o)));
    lock_drop(o, false);
    crt_buf_reset(&o->result);
    rmw_lock(o);
}

static void rmw_write(op *o)
{
    prodstore *ps = o->ps;
    if (!o->locked) {
        rmw_put(o);     /* single process: the line is the lock */
        return;
    }
    timer_drop(o);      /* no more renewals: the fence sets the lock's life */
    uint64_t now = uv_now(ps->loop);
    uint64_t ms = (o->deadline > now ? o->deadline - now : 0) + ps->lock_ttl_ms;
    crt_buf k;
    crt_buf_init(&k);
    crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ms);
    const char *args[3] = {k.data, o->lock_token, ttl};
    size_t lens[3] = {k.len, strlen(o->lock_token), strlen(ttl)};
    int rc = crt_ps_script_call(ps, SCRIPT_EXTEND, on_fenced, o, 1, 3, args, lens);
    crt_buf_fini(&k);
    if (rc) {
        lock_drop(o, false);
        no_cross_process_lock(o);
    }
}

/* ---- read and modify ---- */

static void on_read(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    crt_buf cur;
    crt_buf_init(&cur);
    bool missing = !r->err && r->status == 404;
    if (!missing && (r->err || r->status != 200)) {
        crt_buf_fini(&cur);
        rmw_backend_failed(o, r, "the variable read");
        return;
    }
    if (!missing && crt_store_var_reply(r->body, r->len, &cur)) {
        crt_buf_fini(&cur);
        rmw_backend_failed(o, NULL, "the Cronium backend sent an invalid variable");
        return;
    }
    crt_buf_reset(&o->result);
    int rc;
    if (is_append(o)) {
        const char *sep = o->action.len ? o->action.data : "\"\"";
        size_t seplen = o->action.len ? o->action.len : 2;
        rc = crt_store_append(missing ? NULL : cur.data, cur.len, sep, seplen, o->value.data, o->value.len,
                              &o->result);
    } else {
        rc = crt_json_number_add(missing ? "0" : cur.data, missing ? 1 : cur.len, o->value.data, o->value.len,
                                 &o->result) ? CRT_ECONFLICT : 0;
    }
    crt_buf_fini(&cur);
    if (rc) {
        rmw_done(o, rc == CRT_ECONFLICT ? CRT_ECONFLICT : CRT_EUNAVAIL,
                 rc != CRT_ECONFLICT ? "out of memory"
                 : is_append(o)      ? "the variable's value is not a string"
                                     : "the variable's value is not a number", 1);
        return;
    }
    if (crt_ps_gone(o)) {
        (*o->ps->m_incr_dropped)++;
        rmw_done(o, CRT_EUNAVAIL, "the client went away", 1);
        return;
    }
    rmw_write(o);
}

static void rmw_read(op *o)
{
    if (crt_ps_gone(o)) {
        /* Nothing done yet: a client that gave up must not be counted. */
        (*o->ps->m_incr_dropped)++;
        rmw_done(o, CRT_EUNAVAIL, "the client went away", 1);
        return;
    }
    if (uv_now(o->ps->loop) + 10 >= o->deadline) {
        (*o->ps->m_incr_rejected)++;
        rmw_done(o, CRT_EUNAVAIL, "timed out waiting for earlier updates of this variable", 1);
        return;
    }
    /* Read the source of truth, never the cache: the value may have moved. */
    crt_buf path;
    crt_buf_init(&path);
    crt_store_path_var(&path, o->user_id, o->key.data, o->key.len);
    if (crt_ps_backend_req(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_variable", 0, on_read))
        rmw_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
    crt_buf_fini(&path);
}

/* ---- the lock ---- */

static void no_cross_process_lock(op *o)
{
    if (o->ps->single_process) {
        if (o->result.len)
            rmw_put(o);     /* read and computed already: the line suffices */
        else
            rmw_read(o);
        return;
    }
    rmw_fail(o, 503, "cache_unavailable",
             "Valkey is unavailable and other processes may update this variable: the update is refused "
             "rather than risk losing one (see cache.singleProcess)", 2);
}

static void on_renewed(void *ud, const crt_cache_reply *r)
{
    renew_ticket *t = ud;
    crt_ps_script_missing(t->ps, SCRIPT_EXTEND, r);
    if (t->o)
        t->o->renew = NULL;     /* lost or not, the fence decides */
    free(t);
}

static void on_renew_timer(uv_timer_t *h)
{
    op *o = h->data;
    prodstore *ps = o->ps;
    if (!o->locked || o->fenced || o->renew || !ps->cache)
        return;
    renew_ticket *t = malloc(sizeof *t);
    if (!t)
        return;
    *t = (renew_ticket){ps, o};
    crt_buf k;
    crt_buf_init(&k);
    crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->lock_ttl_ms);
    const char *args[3] = {k.data, o->lock_token, ttl};
    size_t lens[3] = {k.len, strlen(o->lock_token), strlen(ttl)};
    if (crt_ps_script_call(ps, SCRIPT_EXTEND, on_renewed, t, 1, 3, args, lens))
        free(t);
    else
        o->renew = t;
    crt_buf_fini(&k);
}

static void on_lock_retry(uv_timer_t *t)
{
    op *o = t->data;
    timer_drop(o);
    rmw_lock(o);
}

/* A timer on o (o->lock_timer): once after ms, or every ms. */
static bool timer_start(op *o, uv_timer_cb cb, uint64_t ms, bool repeat)
{
    o->lock_timer = malloc(sizeof *o->lock_timer);
    if (!o->lock_timer)
        return false;
    uv_timer_init(o->ps->loop, o->lock_timer);
    o->lock_timer->data = o;
    uv_timer_start(o->lock_timer, cb, ms, repeat ? ms : 0);
    return true;
}

static void on_lock_reply(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err || (r->type != CRT_CACHE_STATUS && r->type != CRT_CACHE_NIL)) {
        /* Valkey went away, or answered an error (-OOM, -ERR, -NOPERM ...):
         * not "busy", but no lock service either. */
        no_cross_process_lock(o);
        return;
    }
    if (r->type == CRT_CACHE_STATUS) {
        o->locked = true;
        uint64_t every = ps->lock_ttl_ms / 3 ? ps->lock_ttl_ms / 3 : 1;
        if (!timer_start(o, on_renew_timer, every, true)) {
            rmw_done(o, CRT_EUNAVAIL, "out of memory", 1);
            return;
        }
        rmw_read(o);
        return;
    }
    /* Held by another process, which renews it while it works: wait
     * while the deadline leaves room. */
    if (uv_now(ps->loop) + LOCK_RETRY_MS + 10 >= o->deadline) {
        (*ps->m_incr_rejected)++;
        rmw_done(o, CRT_EUNAVAIL, "the variable stayed locked by another process", 1);
        return;
    }
    if (!timer_start(o, on_lock_retry, LOCK_RETRY_MS, false))
        rmw_done(o, CRT_EUNAVAIL, "out of memory", 1);
}

static void rmw_lock(op *o)
{
    prodstore *ps = o->ps;
    if (!ps->cache || !crt_cache_ready(ps->cache)) {
        no_cross_process_lock(o);
        return;
    }
    if (!o->lock_token[0])
        crt_random_hex(o->lock_token, (sizeof o->lock_token - 1) / 2);
    crt_buf k;
    crt_buf_init(&k);
    crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->lock_ttl_ms);
    const char *argv[6] = {"SET", k.data, o->lock_token, "NX", "PX", ttl};
    size_t lens[6] = {3, k.len, strlen(o->lock_token), 2, 2, strlen(ttl)};
    int rc = crt_cache_cmd(ps->cache, on_lock_reply, o, 6, argv, lens);
    crt_buf_fini(&k);
    if (rc)
        no_cross_process_lock(o);
}

/* ---- entry and maintenance ---- */

void crt_ps_incr_start(op *o)
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
        crt_ps_unavailable(o, "out of memory", 1);
        return;
    }
    o->line = l;
    if (!l->running) {
        l->running = o;
        rmw_lock(o);
        return;
    }
    if (l->nwaiting >= INCR_QUEUE_MAX) {
        (*ps->m_incr_rejected)++;
        o->line = NULL;
        crt_ps_fail(o, 429, "rate_limited", "too many updates of this variable are waiting", 1);
        return;
    }
    crt_dlist_push_back(&l->waiting, &o->qnode);
    l->nwaiting++;
    crt_dlist_push_back(&ps->queued, &o->pnode);
    o->queued = true;
    crt_ps_maint_arm(ps);
}

/* Answers the queued ops whose client went away or whose deadline passed
 * (the maintenance timer). */
void crt_ps_incr_sweep(prodstore *ps, uint64_t now)
{
    /* Unlink first, answer after: an answer may submit new work. */
    crt_dlist done = {NULL, NULL};
    for (crt_dnode *n = ps->queued.head, *nn; n; n = nn) {
        nn = n->next;
        op *o = crt_container_of(n, op, pnode);
        if (!crt_ps_gone(o) && now < o->deadline)
            continue;
        queued_unlink(ps, o);
        crt_dlist_push_back(&done, &o->pnode);
    }
    while (done.head) {
        op *o = crt_container_of(done.head, op, pnode);
        crt_dlist_remove(&done, &o->pnode);
        queued_expire(ps, o, UINT64_MAX);
    }
}
