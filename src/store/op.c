/* Production store operations: how an op is answered, and its calls to
 * Valkey and the Cronium backend (shared by every operation's file). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/log.h"
#include "prodstore_int.h"

static void op_finish(op *o, const crt_store_result *r)
{
    o->ps->nops--;
    o->cb(o->ud, r);
    crt_buf_fini(&o->key);
    crt_buf_fini(&o->action);
    crt_buf_fini(&o->value);
    crt_buf_fini(&o->work);
    crt_buf_fini(&o->result);
    free(o->exec_id);
    free(o->user_id);
    free(o);
}

void crt_ps_answer(op *o, int err, const char *json, size_t len, const char *msg, int nf_kind, unsigned ra)
{
    crt_store_result r = {.err = err, .json = json, .len = len, .message = msg, .not_found_kind = nf_kind,
                          .retry_after_s = ra};
    op_finish(o, &r);
}

/* An answer err cannot express: an explicit HTTP status and §3 code. */
void crt_ps_fail(op *o, int status, const char *code, const char *msg, unsigned ra)
{
    crt_store_result r = {.err = CRT_EIO, .message = msg, .retry_after_s = ra, .status = status, .code = code};
    op_finish(o, &r);
}

/* The backend answered something definite and wrong: 502, never the
 * backend's own text (it is not for the script, and may carry internals). */
void crt_ps_backend_error(op *o, const char *msg) { crt_ps_fail(o, 502, "backend_error", msg, 0); }

bool crt_ps_gone(op *o) { return o->gone && o->gone(o->ud); }

void crt_ps_unavailable(op *o, const char *msg, unsigned retry_after)
{
    crt_ps_answer(o, CRT_EUNAVAIL, NULL, 0, msg, 0, retry_after ? retry_after : 2);
}

void crt_ps_count(prodstore *ps, cache_kind k, int r) { (*ps->m_cache[k][r])++; }

/* SET key value PX ttl [NX] (cb may be NULL). */
int crt_ps_cache_set_ex(prodstore *ps, const crt_buf *key, const char *v, size_t vn, bool nx, crt_cache_cb cb, void *ud)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)ps->ttl_ms);
    const char *argv[6] = {"SET", key->data, v, "PX", ttl, "NX"};
    size_t lens[6] = {3, key->len, vn, 2, strlen(ttl), 2};
    if (!nx)
        crt_ps_recent_note(ps, key->data, key->len);    /* a failover may lose it (recent.c) */
    return crt_cache_cmd(ps->cache, cb, ud, nx ? 6 : 5, argv, lens);
}

int crt_ps_cache_set(prodstore *ps, const crt_buf *key, const char *v, size_t vn, crt_cache_cb cb, void *ud)
{
    return crt_ps_cache_set_ex(ps, key, v, vn, false, cb, ud);
}

uint32_t *crt_ps_gen_slot(prodstore *ps, const char *uid, const char *key, size_t klen)
{
    uint64_t h = crt_hash(uid, strlen(uid)) ^ (crt_hash(key, klen) * 31);
    return &ps->gen[h % GEN_SLOTS];
}

int crt_ps_cache_get(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud)
{
    const char *argv[2] = {"GET", key->data};
    size_t lens[2] = {3, key->len};
    return crt_cache_cmd(ps->cache, cb, ud, 2, argv, lens);
}

int crt_ps_cache_del(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud)
{
    const char *argv[2] = {"DEL", key->data};
    size_t lens[2] = {3, key->len};
    crt_ps_recent_note(ps, key->data, key->len);
    return crt_cache_cmd(ps->cache, cb, ud, 2, argv, lens);
}

/* Maps a final backend answer that is not a success. Could not reach it
 * (transport errors, timeouts, 429/502/503/504 after the retries), or it
 * refused the runtime's credentials (401/403): 503 backend_unavailable,
 * worth retrying. Anything else it answered (a 3xx, a
 * 4xx the operation does not expect, a 500, an answer over the size cap) is
 * definite and wrong: 502 backend_error. The backend's text is logged, never
 * passed on. */
void crt_ps_backend_failed(op *o, const crt_backend_resp *r, const char *what)
{
    if (r->err == CRT_ERANGE) {
        crt_ps_backend_error(o, "the Cronium backend sent an answer that is too large");
        return;
    }
    if (r->err) {
        crt_ps_unavailable(o, "the Cronium backend did not answer in time", r->retry_after_s);
        return;
    }
    if (r->status == 429 || r->status == 502 || r->status == 503 || r->status == 504) {
        crt_ps_unavailable(o, "the Cronium backend is unavailable", r->retry_after_s);
        return;
    }
    if (r->status == 401 || r->status == 403) {
        /* The runtime's own credentials: an operator fixes them, the
         * request itself was fine, so it is worth retrying later. */
        CRT_LOGF(CRT_LOG_ERROR, "backend refused the runtime's credentials (check BACKEND_TOKEN)",
                 CRT_LS("operation", what), CRT_LI("status", r->status));
        crt_ps_unavailable(o, "the Cronium backend refused the request", 5);
        return;
    }
    CRT_LOGF(CRT_LOG_WARN, "backend answered with an unexpected status", CRT_LS("operation", what),
                 CRT_LI("status", r->status), CRT_LI("body_bytes", (long long)r->len));
    char msg[160];
    snprintf(msg, sizeof msg, "the Cronium backend answered %s with an unexpected HTTP %ld", what, r->status);
    crt_ps_backend_error(o, msg);
}

/* Starts a backend request for o; fails (cb not called) once the client is
 * gone at shutdown, when late cache callbacks may still try. */
int crt_ps_backend_req(op *o, const char *method, const char *path, const char *body, size_t len,
                       const char *opname, unsigned flags, crt_backend_cb cb)
{
    if (!o->ps->backend)
        return CRT_EUNAVAIL;
    /* Increments are bounded by their request's deadline (they may have
     * waited in line); other operations by the client's own budget. */
    uint64_t by = o->kind == CRT_ST_INCR_VAR || o->kind == CRT_ST_APPEND_VAR ? o->deadline : 0;
    return crt_backend_request_by(o->ps->backend, method, path, body, len, opname, flags, by, cb, o);
}

void crt_ps_backend_call(op *o, const char *method, const char *path, const char *body, size_t len, const char *opname,
                         crt_backend_cb cb)
{
    unsigned flags = strcmp(method, "GET") == 0 ? CRT_BACKEND_SHARE : 0;
    if (crt_ps_backend_req(o, method, path, body, len, opname, flags, cb))
        crt_ps_unavailable(o, "the Cronium backend client is not available", 2);
}

/* Answers with o->result once the cache SET (if any) has been acknowledged. */
void crt_ps_on_cache_written(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    bool is_write = o->kind != CRT_ST_GET_VAR && o->kind != CRT_ST_GET_OUTPUT;
    /* Not stored (down, -OOM, -ERR ...): the old value may still be there.
     * Marked before the answer, so no later read of this process sees it. */
    if (is_write && (r->err || r->type != CRT_CACHE_STATUS))
        crt_ps_distrust(o->ps, &o->work);
    if (o->kind == CRT_ST_GET_VAR || o->kind == CRT_ST_INCR_VAR || o->kind == CRT_ST_GET_OUTPUT)
        crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
    else
        crt_ps_answer(o, 0, NULL, 0, NULL, 0, 0);
}

void crt_ps_cache_then_answer(op *o, cache_kind k, const crt_buf *key, const char *v, size_t n)
{
    if (crt_ps_cache_set(o->ps, key, v, n, crt_ps_on_cache_written, o)) {
        crt_ps_count(o->ps, k, R_ERROR);
        crt_cache_reply none = {.err = CRT_EUNAVAIL};
        crt_ps_on_cache_written(o, &none);
    }
}
