/* Execution state: the output and the condition (the backend first, then
 * the cache; reads fall back to what this process saw set), and tool
 * actions (passed to the backend as they are).
 *
 * The backend cannot give an output or a condition back, so a read is
 * answered from Valkey (cache.ttl) or this process's memory only. Next to
 * each value a small marker key ("<key>:known", MARKER_TTL) says it was
 * set: a read that finds the marker but not the value answers 404
 * value_unknown (expired, evicted) instead of "never set". Without the
 * marker (never set, Valkey flushed or down) the answer is "never set". */
#include <stdio.h>
#include <string.h>
#include "cronium/json.h"
#include "cronium/log.h"
#include "cronium/store_codec.h"
#include "prodstore_int.h"

/* The marker outlives the value it vouches for: 7 days, or twice cache.ttl. */
#define MARKER_MIN_TTL_MS (7ull * 24 * 3600 * 1000)

static uint64_t marker_ttl(const prodstore *ps)
{
    return 2 * ps->ttl_ms > MARKER_MIN_TTL_MS ? 2 * ps->ttl_ms : MARKER_MIN_TTL_MS;
}

static void marker_key(crt_buf *b, const char *exec_id, bool out)
{
    crt_store_key_exec(b, exec_id, out ? "output:known" : "condition:known");
}

/* The answer when nothing holds the value: never set. */
static void answer_unset(op *o)
{
    if (o->kind == CRT_ST_GET_OUTPUT)
        crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "no output set", CRT_NF_VARIABLE, 0);
    else
        crt_ps_answer(o, 0, "null", 4, NULL, 0, 0);
}

static void on_marker(void *ud, const crt_cache_reply *r)
{
    op *o = ud;
    if (r && r->err == 0 && r->type == CRT_CACHE_STR)
        crt_ps_fail(o, 404, "value_unknown",
                    o->kind == CRT_ST_GET_OUTPUT
                        ? "the output was set, but the cache that keeps it (Valkey, for cache.ttl) has lost it; "
                          "the backend cannot give it back"
                        : "the condition was set, but the cache that keeps it (Valkey, for cache.ttl) has lost "
                          "it; the backend cannot give it back",
                    0);
    else
        answer_unset(o);
}

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
            crt_ps_count(o->ps, k, R_HIT);
            crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
            return;
        }
        (*o->ps->m_invalid[k])++;
        CRT_LOGF(CRT_LOG_WARN, "cached value is not valid: ignored", CRT_LS("kind", crt_ps_kind_names[k]));
        crt_ps_distrust(o->ps, &o->work);
        crt_ps_count(o->ps, k, R_MISS);
    } else if (r && r->err == 0 && r->type == CRT_CACHE_ERROR) {
        crt_ps_distrust(o->ps, &o->work);
        crt_ps_count(o->ps, k, R_ERROR);
    } else if (r) {
        crt_ps_count(o->ps, k, r->err ? R_ERROR : R_MISS);
    } else {
        crt_ps_count(o->ps, k, R_MISS);             /* distrusted: not asked */
    }
    /* Fall back to what this process saw set. */
    ctx_entry *e = crt_ps_ctx_lookup(o->ps, o->exec_id);
    if (k == K_OUTPUT && e && e->output.len) {
        crt_ps_answer(o, 0, e->output.data, e->output.len, NULL, 0, 0);
        return;
    }
    if (k == K_CONDITION && e && e->condition[0]) {
        crt_ps_answer(o, 0, e->condition, strlen(e->condition), NULL, 0, 0);
        return;
    }
    /* Valkey answered (a miss, or a value refused): was it ever set? */
    if (r && r->err == 0 && r->type != CRT_CACHE_ERROR && o->ps->cache) {
        marker_key(&o->work, o->exec_id, k == K_OUTPUT);
        if (crt_ps_cache_get(o->ps, &o->work, on_marker, o) == 0)
            return;
    }
    answer_unset(o);
}

static void on_exec_post(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    bool out = o->kind == CRT_ST_SET_OUTPUT;
    if (!r->err && r->status == 404) {
        crt_ps_answer(o, CRT_ENOTFOUND, NULL, 0, "execution not found", CRT_NF_EXECUTION, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        crt_ps_backend_failed(o, r, out ? "the output" : "the condition");
        return;
    }
    ctx_entry *e = crt_ps_ctx_lookup(o->ps, o->exec_id);
    if (e) {
        if (out) {
            crt_buf_reset(&e->output);
            crt_buf_append(&e->output, o->value.data, o->value.len);
        } else {
            snprintf(e->condition, sizeof e->condition, "%.*s", (int)o->value.len, o->value.data);
        }
    }
    if (o->ps->cache) {
        /* Sent first, so it is there whenever the value is (same connection). */
        marker_key(&o->work, o->exec_id, out);
        char px[24];
        int pn = snprintf(px, sizeof px, "%llu", (unsigned long long)marker_ttl(o->ps));
        const char *argv[] = {"SET", o->work.data, "1", "PX", px};
        const size_t lens[] = {3, o->work.len, 1, 2, (size_t)pn};
        (void)crt_cache_cmd(o->ps->cache, NULL, NULL, 5, argv, lens); /* lost: reads say "never set" */
    }
    crt_store_key_exec(&o->work, o->exec_id, out ? "output" : "condition");
    crt_ps_cache_then_answer(o, out ? K_OUTPUT : K_CONDITION, &o->work, o->value.data, o->value.len);
}

void crt_ps_exec_get(op *o)
{
    crt_store_key_exec(&o->work, o->exec_id, o->kind == CRT_ST_GET_OUTPUT ? "output" : "condition");
    if (crt_ps_distrusted(o->ps, &o->work)) {
        on_exec_cache(o, NULL);
    } else if (crt_ps_cache_get(o->ps, &o->work, on_exec_cache, o)) {
        crt_cache_reply none = {.err = CRT_EUNAVAIL};
        on_exec_cache(o, &none);
    }
}

void crt_ps_exec_set(op *o)
{
    bool out = o->kind == CRT_ST_SET_OUTPUT;
    char ts[40];
    crt_buf path, body;
    crt_buf_init(&path);
    crt_buf_init(&body);
    crt_store_path_exec(&path, o->exec_id, out ? "output" : "condition");
    crt_rfc3339(ts, sizeof ts, -1, true);
    crt_buf_printf(&body, "{\"%s\":", out ? "output" : "condition");
    crt_buf_append(&body, o->value.data, o->value.len);
    crt_buf_printf(&body, ",\"timestamp\":\"%s\"}", ts);
    crt_ps_backend_call(o, "POST", crt_buf_cstr(&path), body.data, body.len, out ? "set_output" : "set_condition",
                        on_exec_post);
    crt_buf_fini(&path);
    crt_buf_fini(&body);
}

/* ---- tool actions ---- */

static void on_tool(void *ud, const crt_backend_resp *r)
{
    op *o = ud;
    if (!r->err && (r->status == 404 || r->status == 405)) {
        crt_ps_answer(o, CRT_ENOTSUP, NULL, 0, "the Cronium backend does not offer tool actions", 0, 0);
        return;
    }
    if (r->err || r->status / 100 != 2) {
        crt_ps_backend_failed(o, r, "the tool action");
        return;
    }
    crt_buf_reset(&o->result);
    if (crt_json_compact(r->body, r->len, &o->result) ||
        crt_json_kind_of(o->result.data, o->result.len) != CRT_JSON_OBJECT) {
        crt_ps_backend_error(o, "the Cronium backend sent an invalid tool result");
        return;
    }
    crt_ps_answer(o, 0, o->result.data, o->result.len, NULL, 0, 0);
}

void crt_ps_tool(op *o)
{
    crt_buf body;
    crt_buf_init(&body);
    crt_buf_puts(&body, "{\"executionId\":");
    crt_buf_json_str(&body, o->exec_id, strlen(o->exec_id));
    crt_buf_puts(&body, ",\"userId\":");
    crt_buf_json_str(&body, o->user_id, strlen(o->user_id));
    crt_buf_puts(&body, ",\"tool\":");
    crt_buf_json_str(&body, o->key.data, o->key.len);
    crt_buf_puts(&body, ",\"action\":");
    crt_buf_json_str(&body, o->action.data, o->action.len);
    crt_buf_puts(&body, ",\"params\":");
    crt_buf_append(&body, o->value.data, o->value.len);
    crt_buf_putc(&body, '}');
    crt_ps_backend_call(o, "POST", "/api/internal/tools/execute", body.data, body.len, "tool_action", on_tool);
    crt_buf_fini(&body);
}
