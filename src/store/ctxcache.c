/* The context cache: execution contexts never change during a run, so each
 * is fetched once (in-process LRU, then Valkey, then the backend) and kept.
 * Requests that miss at the same time share one backend fetch (the backend
 * client's CRT_BACKEND_SHARE), and find the entry the first one built. */
#include <stdlib.h>
#include <string.h>
#include "cronium/log.h"
#include "cronium/store_codec.h"
#include "prodstore_int.h"

static void lru_unlink(prodstore *ps, ctx_entry *e) { crt_dlist_remove(&ps->lru, &e->node); }
static void lru_front(prodstore *ps, ctx_entry *e) { crt_dlist_push_front(&ps->lru, &e->node); }

void crt_ps_ctx_entry_free(void *p)
{
    ctx_entry *e = p;
    if (!e)
        return;
    crt_context_fini(&e->ctx);
    crt_buf_fini(&e->output);
    free(e->id);
    free(e);
}

ctx_entry *crt_ps_ctx_lookup(prodstore *ps, const char *id)
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
        crt_ps_ctx_entry_free(e);
        return NULL;
    }
    ctx_entry *old = crt_map_del(ps->ctxs, id, strlen(id));
    if (old) {
        lru_unlink(ps, old);
        crt_ps_ctx_entry_free(old);
    }
    while (crt_map_size(ps->ctxs) >= CTX_CACHE_MAX && ps->lru.tail) {
        ctx_entry *victim = crt_container_of(ps->lru.tail, ctx_entry, node);
        lru_unlink(ps, victim);
        crt_map_del(ps->ctxs, victim->id, strlen(victim->id));
        crt_ps_ctx_entry_free(victim);
    }
    void **slot = crt_map_slot(ps->ctxs, id, strlen(id), true);
    if (!slot) {
        crt_ps_ctx_entry_free(e);
        return NULL;
    }
    *slot = e;
    lru_front(ps, e);
    return e;
}

static void on_ctx_backend(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err || r->status != 200) {
        if (!r->err && r->status == 404) {
            crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "execution not found", CRT_NF_EXECUTION, 0);
            return;
        }
        crt_ps_backend_failed(o, r, "the execution context request");
        return;
    }
    /* Requests that shared this fetch find the entry the first one built. */
    ctx_entry *e = crt_ps_ctx_lookup(ps, o->exec_id);
    if (e) {
        crt_ps_with_context(o, e);
        return;
    }
    e = ctx_insert(ps, o->exec_id, r->body, r->len);
    if (!e) {
        CRT_LOGF(CRT_LOG_ERROR, "backend sent an execution context that is not a JSON object",
                 CRT_LS("execution_id", o->exec_id));
        crt_ps_backend_error(o, "the Cronium backend sent an invalid execution context");
        return;
    }
    crt_store_key_exec(&o->work, o->exec_id, "context");
    crt_ps_cache_set(ps, &o->work, r->body, r->len, NULL, NULL);
    crt_ps_with_context(o, e);
}

static void ctx_from_backend(op *o)
{
    crt_buf path;
    crt_buf_init(&path);
    crt_store_path_exec(&path, o->exec_id, "context");
    crt_ps_backend_call(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_context", on_ctx_backend);
    crt_buf_fini(&path);
}

static void on_ctx_cache(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    prodstore *ps = o->ps;
    if (r->err == 0 && r->type == CRT_CACHE_STR) {
        ctx_entry *e =
            crt_store_context_ok(r->str, r->len, o->exec_id) ? ctx_insert(ps, o->exec_id, r->str, r->len) : NULL;
        if (e) {
            crt_ps_count(ps, K_CONTEXT, R_HIT);
            crt_ps_with_context(o, e);
            return;
        }
        /* Not a context: a miss; the backend's answer overwrites it. */
        (*ps->m_invalid[K_CONTEXT])++;
        CRT_LOGF(CRT_LOG_WARN, "cached execution context is not valid: ignored", CRT_LS("execution_id", o->exec_id));
        crt_ps_count(ps, K_CONTEXT, R_MISS);
        ctx_from_backend(o);
        return;
    }
    crt_ps_count(ps, K_CONTEXT, r->err ? R_ERROR : R_MISS);
    ctx_from_backend(o);
}

void crt_ps_ctx_start(op *o)
{
    prodstore *ps = o->ps;
    ctx_entry *e = crt_ps_ctx_lookup(ps, o->exec_id);
    if (e) {
        crt_ps_with_context(o, e);
        return;
    }
    crt_store_key_exec(&o->work, o->exec_id, "context");
    if (crt_ps_cache_get(ps, &o->work, on_ctx_cache, o)) {
        crt_ps_count(ps, K_CONTEXT, R_ERROR);
        ctx_from_backend(o);
    }
}
