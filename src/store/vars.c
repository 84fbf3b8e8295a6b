/* Variables: get (cache, then the backend; a read that raced a write does
 * not fill the cache), put and delete (the backend first, then the cache;
 * a failed cache update distrusts the key), with write generations. */
#include <string.h>
#include <strings.h>
#include "cronium/json.h"
#include "cronium/log.h"
#include "cronium/store_codec.h"
#include "prodstore_int.h"

static void var_path(op *o, crt_buf *path) { crt_store_path_var(path, o->user_id, o->key.data, o->key.len); }

static void on_var_backend_get(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (!r->err && r->status == 404) {
        crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "variable not found", CRT_NF_VARIABLE, 0);
        return;
    }
    if (r->err || r->status != 200) {
        crt_ps_backend_failed(o, r, "the variable read");
        return;
    }
    if (crt_store_var_reply(r->body, r->len, &o->result)) {
        crt_ps_backend_error(o, "the Cronium backend sent an invalid variable");
        return;
    }
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    if (*crt_ps_gen_slot(o->ps, o->user_id, o->key.data, o->key.len) != o->gen_seen ||
        crt_ps_distrusted(o->ps, &o->work)) {
        /* A write to this key completed meanwhile, or the cache entry is
         * not trusted (SET NX would keep it anyway): answer, do not cache. */
        crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
        return;
    }
    if (crt_ps_cache_set_ex(o->ps, &o->work, o->result.data, o->result.len, true, crt_ps_on_cache_written, o))
        crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
}

static void var_from_backend(op *o)
{
    o->gen_seen = *crt_ps_gen_slot(o->ps, o->user_id, o->key.data, o->key.len);
    crt_buf path;
    crt_buf_init(&path);
    var_path(o, &path);
    crt_ps_backend_call(o, "GET", crt_buf_cstr(&path), NULL, 0, "get_variable", on_var_backend_get);
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
            crt_ps_count(ps, K_VARIABLE, R_HIT);
            crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
            return;
        }
        crt_buf_reset(&o->result);
        (*ps->m_invalid[K_VARIABLE])++;
        CRT_LOGF(CRT_LOG_WARN, "cached variable is not valid JSON: ignored");
        crt_ps_distrust(ps, &o->work);
        crt_ps_count(ps, K_VARIABLE, R_MISS);
    } else if (r->err == 0 && r->type == CRT_CACHE_ERROR) {
        crt_ps_distrust(ps, &o->work);          /* e.g. WRONGTYPE: not ours */
        crt_ps_count(ps, K_VARIABLE, R_ERROR);
    } else {
        crt_ps_count(ps, K_VARIABLE, r->err ? R_ERROR : R_MISS);
    }
    var_from_backend(o);
}

static void on_var_put(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (r->err || r->status / 100 != 2) {
        crt_ps_backend_failed(o, r, "the variable write");
        return;
    }
    (*crt_ps_gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    crt_buf_reset(&o->result);
    crt_store_read_back(o->value.data, o->value.len, &o->result);
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    crt_ps_cache_then_answer(o, K_VARIABLE, &o->work, o->result.data, o->result.len);
}

/* PUT {"value": v} for o's variable. Returns 0, or an error (cb not called). */
int crt_ps_var_put(op *o, const char *v, size_t n, const char *opname, crt_backend_cb cb)
{
    crt_buf path, body;
    crt_buf_init(&path);
    crt_buf_init(&body);
    var_path(o, &path);
    crt_store_put_body(v, n, &body);
    int rc = crt_ps_backend_req(o, "PUT", crt_buf_cstr(&path), body.data, body.len, opname, 0, cb);
    crt_buf_fini(&path);
    crt_buf_fini(&body);
    return rc;
}

static void on_var_cache_deleted(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r->err || r->type != CRT_CACHE_INT)
        crt_ps_distrust(o->ps, &o->work);
    crt_ps_answer(o, 0, NULL, 0, NULL, 0, 0);
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
            crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "variable not found", CRT_NF_VARIABLE, 0);
        else
            crt_ps_answer(o, CRT_ENOTSUP, NULL, 0, "the Cronium backend does not support deleting variables", 0, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        crt_ps_backend_failed(o, r, "the variable delete");
        return;
    }
    (*crt_ps_gen_slot(o->ps, o->user_id, o->key.data, o->key.len))++;
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    if (crt_ps_cache_del(o->ps, &o->work, on_var_cache_deleted, o)) {
        crt_ps_distrust(o->ps, &o->work);
        crt_ps_answer(o, 0, NULL, 0, NULL, 0, 0);
    }
}

void crt_ps_var_get(op *o)
{
    prodstore *ps = o->ps;
    crt_store_key_var(&o->work, o->user_id, o->key.data, o->key.len);
    if (crt_ps_distrusted(ps, &o->work)) {
        crt_ps_count(ps, K_VARIABLE, R_MISS);
        var_from_backend(o);
    } else if (crt_ps_cache_get(ps, &o->work, on_var_cache, o)) {
        crt_ps_count(ps, K_VARIABLE, R_ERROR);
        var_from_backend(o);
    }
}

void crt_ps_var_set(op *o)
{
    if (crt_ps_var_put(o, o->value.data, o->value.len, "set_variable", on_var_put))
        crt_ps_unavailable(o, "the Cronium backend client is not available", 2);
}

void crt_ps_var_delete(op *o)
{
    crt_buf path;
    crt_buf_init(&path);
    var_path(o, &path);
    crt_ps_backend_call(o, "DELETE", crt_buf_cstr(&path), NULL, 0, "delete_variable", on_var_delete);
    crt_buf_fini(&path);
}
