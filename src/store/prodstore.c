/* Production store: the Cronium backend is the source of truth; Valkey is a
 * cache and the lock service; a bounded in-process cache holds execution
 * contexts (they never change during a run).
 *
 * Each operation is an `op` object walking a few stages:
 *   CONTEXT (ctxcache.c: in-process -> Valkey -> backend) -> the operation's
 *   own stages (vars.c, incr.c, execstate.c: cache read, backend call, cache
 *   update, lock ...) -> answer (op.c).
 * Writes go to the backend first and are acknowledged only once it accepted
 * them and the cache holds the read-back form (docs/api.md §6, §7; codec.c).
 * This file dispatches an op once its context is known, and owns the
 * store's lifecycle and its maintenance timer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/prodstore.h"
#include "cronium/log.h"
#include "prodstore_int.h"

const char *const crt_ps_kind_names[K_COUNT] = {"context", "variable", "output", "condition"};

/* ---- dispatch ---- */

void crt_ps_with_context(op *o, ctx_entry *e)
{
    if (crt_ps_gone(o)) {
        /* Nobody will read the answer: start no backend work for it. */
        crt_ps_answer(o, CRT_EUNAVAIL, NULL, 0, "the client went away", 0, 1);
        return;
    }
    o->user_id = strdup(e->ctx.user_id ? e->ctx.user_id : "");
    if (!o->user_id) {
        crt_ps_unavailable(o, "out of memory", 1);
        return;
    }
    bool needs_user = o->kind == CRT_ST_GET_VAR || o->kind == CRT_ST_PUT_VAR || o->kind == CRT_ST_DEL_VAR ||
                      o->kind == CRT_ST_INCR_VAR || o->kind == CRT_ST_APPEND_VAR;
    if (needs_user && !*o->user_id) {
        /* Every execution the backend runs has an owner: a context
         * without one is the backend's fault, not the script's. */
        crt_ps_backend_error(o, "the Cronium backend sent an execution context without a userId");
        return;
    }
    switch (o->kind) {
    case CRT_ST_GET_CONTEXT:
        crt_ps_answer(o, 0, e->ctx.json.data, e->ctx.json.len, NULL, 0, 0);
        return;
    case CRT_ST_GET_INPUT:
        if (e->ctx.input.len)
            crt_ps_answer(o, 0, e->ctx.input.data, e->ctx.input.len, NULL, 0, 0);
        else
            crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "no input", CRT_NF_VARIABLE, 0);
        return;
    case CRT_ST_GET_OUTPUT:
    case CRT_ST_GET_CONDITION:
        crt_ps_exec_get(o);
        return;
    case CRT_ST_SET_OUTPUT:
    case CRT_ST_SET_CONDITION:
        crt_ps_exec_set(o);
        return;
    case CRT_ST_GET_VAR:
        crt_ps_var_get(o);
        return;
    case CRT_ST_PUT_VAR:
        crt_ps_var_set(o);
        return;
    case CRT_ST_DEL_VAR:
        crt_ps_var_delete(o);
        return;
    case CRT_ST_INCR_VAR:
    case CRT_ST_APPEND_VAR:
        crt_ps_incr_start(o);
        return;
    case CRT_ST_TOOL_ACTION:
        crt_ps_tool(o);
        return;
    }
    crt_ps_answer(o, CRT_EINVAL, NULL, 0, "unknown operation", 0, 0);
}

static void prod_submit(crt_store *s, const crt_store_req *r, crt_store_cb cb, void *ud)
{
    prodstore *ps = crt_container_of(s, prodstore, base);
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
    o->exec_id = strdup(r->execution_id);
    crt_span key = {NULL, 0}, action = {NULL, 0}, value = {NULL, 0};
    switch (r->op) {
    case CRT_ST_GET_VAR:
    case CRT_ST_PUT_VAR:
    case CRT_ST_DEL_VAR:
        key = r->var.key;
        value = r->op == CRT_ST_PUT_VAR ? r->var.value : value;
        break;
    case CRT_ST_INCR_VAR:
        key = r->incr.key;
        value = r->incr.by;
        break;
    case CRT_ST_APPEND_VAR:
        key = r->append.key;
        value = r->append.value;
        action = r->append.separator;  /* kept in o->action */
        break;
    case CRT_ST_TOOL_ACTION:
        key = r->tool.name;
        action = r->tool.action;
        value = r->tool.params;
        break;
    case CRT_ST_SET_OUTPUT:
        value = r->output.value;
        break;
    case CRT_ST_SET_CONDITION:
        value = r->condition.value;
        break;
    default:
        break;
    }
    if (key.p)
        crt_buf_append(&o->key, key.p, key.len);
    if (action.p)
        crt_buf_append(&o->action, action.p, action.len);
    if (value.p)
        crt_buf_append(&o->value, value.p, value.len);
    crt_buf_cstr(&o->key);
    if (!o->exec_id) {
        crt_ps_unavailable(o, "out of memory", 1);
        return;
    }
    crt_ps_ctx_start(o);
}

/* ---- maintenance: queued increments, invalidation retries ---- */

static void on_maint(uv_timer_t *t)
{
    prodstore *ps = t->data;
    uint64_t now = uv_now(ps->loop);
    crt_ps_incr_sweep(ps, now);
    if (ps->distrust_pending.head && now >= ps->next_del_retry)
        crt_ps_distrust_flush(ps);
    crt_ps_maint_arm(ps);
}

void crt_ps_maint_arm(prodstore *ps)
{
    if (!ps->maint_open || uv_is_active((uv_handle_t *)&ps->maint))
        return;
    if (ps->queued.head || ps->distrust_pending.head)
        uv_timer_start(&ps->maint, on_maint, MAINT_MS, 0);
}

/* ---- lifecycle ---- */

static void on_maint_closed(uv_handle_t *h) { (void)h; }

void crt_prodstore_detach(crt_store *s)
{
    prodstore *ps = crt_container_of(s, prodstore, base);
    if (ps->maint_open) {
        ps->maint_open = false;
        uv_close((uv_handle_t *)&ps->maint, on_maint_closed);
    }
    ps->backend = NULL;
    ps->cache = NULL;
}

static void prod_shutdown(crt_store *s)
{
    crt_container_of(s, prodstore, base)->shutting_down = true;
}

static void prod_free(crt_store *s)
{
    if (!s)
        return;
    prodstore *ps = crt_container_of(s, prodstore, base);
    crt_prodstore_detach(s);
    crt_map_free(ps->ctxs, crt_ps_ctx_entry_free);
    crt_map_free(ps->incr_lines, free);
    if (ps->distrust) {
        while (ps->distrust_pending.head)
            crt_dlist_remove(&ps->distrust_pending, ps->distrust_pending.head);
        crt_map_free(ps->distrust, free);
    }
    crt_ps_recent_free(ps);
    free(ps);
}

static const crt_store_vtable prod_vt = {"production", prod_submit, prod_shutdown, prod_free};

crt_store *crt_prodstore_new(uv_loop_t *loop, const crt_prodstore_opts *opts, crt_metrics *m, crt_backend *backend,
                             crt_cache *cache)
{
    prodstore *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->base.vt = &prod_vt;
    ps->loop = loop;
    ps->backend = backend;
    ps->cache = cache;
    ps->ttl_ms = opts->cache_ttl_ms;
    ps->lock_ttl_ms = opts->lock_ttl_ms;
    ps->op_budget_ms = opts->op_budget_ms;
    ps->single_process = opts->single_process;
    int script_rc = crt_ps_scripts_init(ps);
    ps->ctxs = crt_map_new();
    ps->incr_lines = crt_map_new();
    ps->distrust = crt_map_new();
    if (script_rc || !ps->ctxs || !ps->incr_lines || !ps->distrust) {
        prod_free(&ps->base);
        return NULL;
    }
    if (cache)
        crt_cache_on_ready(cache, crt_ps_on_cache_ready, ps);
    for (int k = 0; k < K_COUNT; k++) {
        static const char *const res[3] = {"hit", "miss", "error"};
        for (int r = 0; r < 3; r++) {
            char labels[64];
            snprintf(labels, sizeof labels, "kind=\"%s\",result=\"%s\"", crt_ps_kind_names[k], res[r]);
            ps->m_cache[k][r] = crt_metrics_counter(m, "cronium_runtime_cache_requests_total",
                                                    "Cache lookups by kind and result.", labels);
        }
    }
    for (int k = 0; k < K_COUNT; k++) {
        char labels[64];
        snprintf(labels, sizeof labels, "kind=\"%s\"", crt_ps_kind_names[k]);
        ps->m_invalid[k] = crt_metrics_counter(m, "cronium_runtime_cache_invalid_total",
                                               "Cached values refused as not valid (served from the backend).",
                                               labels);
    }
    ps->m_distrusted = crt_metrics_counter(m, "cronium_runtime_cache_invalidations_total",
                                           "Cache keys bypassed until deleted, after a failed update.", "");
    ps->m_distrust_overflow = crt_metrics_counter(m, "cronium_runtime_cache_bypass_all_total",
                                                  "Times too many keys needed invalidating: cache bypassed one TTL.",
                                                  "");
    ps->m_incr_dropped = crt_metrics_counter(m, "cronium_runtime_increments_dropped_total",
                                             "Increments not performed because their client went away.", "");
    ps->m_incr_rejected = crt_metrics_counter(m, "cronium_runtime_increments_rejected_total",
                                              "Increments refused: queue full or deadline passed while waiting.", "");
    uv_timer_init(loop, &ps->maint);
    ps->maint.data = ps;
    ps->maint_open = true;
    return &ps->base;
}
