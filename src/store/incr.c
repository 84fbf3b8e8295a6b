/* Atomic increments: a read-modify-write against the backend. Increments of
 * one variable run one at a time in this process (a line per key: one runs,
 * at most INCR_QUEUE_MAX wait, each until its deadline) and under a Valkey
 * lock across processes (without Valkey: the in-process line only). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/json.h"
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
        crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
        const char *argv[5] = {"EVAL", script, "1", k.data, o->lock_token};
        size_t lens[5] = {4, sizeof script - 1, 1, k.len, strlen(o->lock_token)};
        crt_cache_cmd(ps->cache, NULL, NULL, 5, argv, lens);
        crt_buf_fini(&k);
        o->locked = false;
    }
    incr_line *l = o->line;
    o->line = NULL;
    if (backend_fail == &bad_body)
        crt_ps_backend_error(o, msg);
    else if (backend_fail)
        crt_ps_backend_failed(o, backend_fail, msg);
    else if (err)
        crt_ps_answer(o, err, NULL, 0, msg, 0, ra);
    else
        crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
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
 * answer is thrown away, and it must not crt_ps_count later: a script that gave up
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
        crt_ps_unavailable(o, "timed out waiting for earlier increments of this variable", 1);
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
        crt_ps_distrust(o->ps, &o->work);
    incr_done(o, 0, NULL, 0);
}

static void on_incr_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (r->err || r->status / 100 != 2) {
        incr_backend_failed(o, r, "the incremented value");
        return;
    }
    (*crt_ps_gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    if (crt_ps_cache_set(o->ps, &o->work, o->result.data, o->result.len, on_incr_cached, o)) {
        crt_ps_distrust(o->ps, &o->work);
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
    } else if (crt_store_var_reply(r->body, r->len, &o->result)) {
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
    if (crt_ps_gone(o)) {
        (*o->ps->m_incr_dropped)++;
        incr_done(o, CRT_EUNAVAIL, "the client went away", 1);
        return;
    }
    /* PUT the number (o->value still holds the increment). */
    if (crt_ps_var_put(o, o->result.data, o->result.len, "increment_variable", on_incr_put))
        incr_done(o, CRT_EUNAVAIL, "the Cronium backend client is not available", 2);
}

static void incr_next(op *o)
{
    if (crt_ps_gone(o)) {
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
    crt_store_path_var(&path, o->user_id, o->key.data, o->key.len);
    if (crt_ps_backend_req(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_variable", 0, on_incr_read))
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
        crt_random_hex(o->lock_token, (sizeof o->lock_token - 1) / 2);
        o->lock_deadline = uv_now(ps->loop) + ps->lock_ttl_ms + 1000;
        if (o->lock_deadline > o->deadline)
            o->lock_deadline = o->deadline;
    }
    crt_buf k;
    crt_buf_init(&k);
    crt_store_key_lock(&k, o->user_id, o->key.data, o->key.len);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->lock_ttl_ms);
    const char *argv[6] = {"SET", k.data, o->lock_token, "NX", "PX", ttl};
    size_t lens[6] = {3, k.len, strlen(o->lock_token), 2, 2, strlen(ttl)};
    int rc = ps->cache ? crt_cache_cmd(ps->cache, on_lock_reply, o, 6, argv, lens) : CRT_EUNAVAIL;
    crt_buf_fini(&k);
    if (rc)
        incr_next(o); /* no Valkey: in-process serialisation only */
}

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
        incr_lock(o);
        return;
    }
    if (l->nwaiting >= INCR_QUEUE_MAX) {
        (*ps->m_incr_rejected)++;
        o->line = NULL;
        crt_ps_fail(o, 429, "rate_limited", "too many increments of this variable are waiting", 1);
        return;
    }
    crt_dlist_push_back(&l->waiting, &o->qnode);
    l->nwaiting++;
    crt_dlist_push_back(&ps->queued, &o->pnode);
    o->queued = true;
    crt_ps_maint_arm(ps);
}

/* Answers the queued increments whose client went away or whose deadline
 * passed (the maintenance timer). */
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
