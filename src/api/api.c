/* The execution API (docs/api.md §2–§5): the endpoint table and its routes,
 * the per-request call object and its state machine:
 *   AUTH (token, limits, execution id; api_auth.c) -> BODY (validate;
 *   api_body.c) -> STORE (waits for the store callback) -> answered.
 * The call object hangs off the request (req->user) and is recycled through a
 * free list, so the hot path does not allocate once warm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/json.h"
#include "cronium/keys.h"
#include "cronium/log.h"
#include "api_int.h"

#define TOKEN_CACHE_SLOTS 4096
#define MAX_RATE_KEYS 100000
#define MAX_FREE_CALLS 256

/* ---- call objects ------------------------------------------------------------------------------- */

static api_call *call_new(crt_api *api, crt_req *req, const endpoint *ep)
{
    api_call *c = api->free_calls;
    if (c) {
        api->free_calls = c->next_free;
        api->nfree--;
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
    }
    c->req = req;
    c->api = api;
    c->ep = ep;
    c->state = CALL_AUTH;
    c->claims = NULL;
    c->audit_held = false;
    c->rl_pending = c->store_pending = c->discard = c->sr_waiting = c->held = false;
    c->defer_status = 0;
    req->user = c;
    return c;
}

static void call_free(api_call *c)
{
    crt_api *api = c->api;
    if (c->audit_held)
        crt_audit_unreserve(api->audit);   /* answered without its event (the client left) */
    c->audit_held = false;
    crt_claims_release(c->claims);
    c->claims = NULL;
    c->req = NULL;
    c->state = CALL_DONE;
    if (api->nfree < MAX_FREE_CALLS && c->value.cap <= 16384) {
        crt_buf_reset(&c->value);
        crt_buf_reset(&c->key2);
        crt_buf_reset(&c->key3);
        crt_buf_reset(&c->held_buf);
        c->next_free = api->free_calls;
        api->free_calls = c;
        api->nfree++;
        return;
    }
    crt_buf_fini(&c->value);
    crt_buf_fini(&c->key2);
    crt_buf_fini(&c->key3);
    crt_buf_fini(&c->held_buf);
    free(c);
}

/* ---- answers ------------------------------------------------------------------------------------- */

static void audit(api_call *c, const char *outcome, int status)
{
    crt_api *api = c->api;
    crt_req *r = c->req;
    if (!api->audit || !c->claims)
        return;
    if (status < 300 && c->ep->is_read && !api->audit_reads)
        return;
    crt_audit_event ev = {
        .execution_id = c->claims->execution_id,
        .user_id = c->claims->user_id,
        .action = c->ep->action,
        .outcome = outcome,
        .status = status,
        .request_id = r->request_id,
        .client_ip = r->client_ip,
        .read = c->ep->is_read,
    };
    if (c->ep->kind == EP_TOOL) {
        ev.key = c->key3.data;
        ev.key_len = c->key3.len;
    } else if (r->nparams > 1) {
        ev.key = r->params[1].p;
        ev.key_len = r->params[1].len;
    }
    crt_audit_emit(api->audit, &ev, c->audit_held);
    c->audit_held = false;
}

void crt_api_call_error(api_call *c, int status, const char *code, const char *msg, const char *outcome)
{
    if (c->rl_pending) {
        /* The rate limit's 429 comes first (docs/api.md §3): decided when its verdict arrives. */
        c->defer_status = status;
        c->defer_code = code;
        c->defer_msg = msg;
        c->defer_outcome = outcome;
        return;
    }
    crt_req *r = c->req;
    if (status == 503 && strcmp(code, "audit_unavailable") == 0)
        crt_api_add_uint_header(r, "Retry-After", 1);  /* here: after a deferral, never next to a 429's */
    audit(c, outcome, status);
    if (c->store_pending) {
        c->discard = true;  /* refused while the store works: freed when it answers */
        c->req = NULL;
    } else {
        call_free(c);
    }
    crt_req_error(r, status, code, msg);
}

static void call_ok(api_call *c, const char *data, size_t len, bool wrap_kv)
{
    crt_req *r = c->req;
    crt_buf *b = &r->resp_body;
    crt_buf_reset(b);
    crt_buf_puts(b, "{\"success\":true");
    if (data) {
        crt_buf_puts(b, ",\"data\":");
        if (wrap_kv) {
            crt_buf_puts(b, "{\"key\":");
            crt_buf_json_str(b, r->params[1].p, r->params[1].len);
            crt_buf_puts(b, ",\"value\":");
            crt_buf_append(b, data, len);
            crt_buf_putc(b, '}');
        } else {
            crt_buf_append(b, data, len);
        }
    }
    crt_buf_putc(b, '}');
    audit(c, "ok", 200);
    call_free(c);
    crt_req_respond(r, 200, "application/json", b->data, b->len);
}

void crt_api_add_uint_header(crt_req *r, const char *name, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    crt_req_add_header(r, name, tmp, (size_t)n);
}

/* The store drops work whose client has gone (nobody reads the answer). */
static bool call_gone(void *ud)
{
    api_call *c = ud;
    return c->discard || crt_req_detached(c->req);
}

/* ---- store completion ------------------------------------------------------------------------------ */

static void on_store_done(void *ud, const crt_store_result *res)
{
    api_call *c = ud;
    c->store_pending = false;
    if (c->discard) {
        call_free(c);       /* answered 429 meanwhile: the result is dropped */
        return;
    }
    if (c->rl_pending) {
        crt_api_hold(c, res);   /* answered once the verdict is in */
        return;
    }
    crt_req *r = c->req;
    const endpoint *ep = c->ep;
    if (res->err && res->status && res->code) {
        /* The store chose the answer (502 backend_error, 429 queue full). */
        if (res->status == 429 || res->status == 503)
            crt_api_add_uint_header(r, "Retry-After", res->retry_after_s ? res->retry_after_s : 1);
        crt_api_call_error(c, res->status, res->code, res->message ? res->message : "backend error",
                           res->status == 429 ? "rate_limited" : "error");
        return;
    }
    if (res->err) {
        switch (res->err) {
        case CRT_ENOTFOUND:
            if (res->not_found_kind == CRT_NF_EXECUTION) {
                crt_api_call_error(c, 404, "execution_not_found",
                                   res->message ? res->message : "execution not found", "not_found");
            } else if (ep->kind == EP_INPUT || ep->kind == EP_OUTPUT_GET) {
                call_ok(c, NULL, 0, false);     /* nothing: data left out */
            } else {
                crt_api_call_error(c, 404, "variable_not_found", "variable not found", "not_found");
            }
            return;
        case CRT_ECONFLICT:
            crt_api_call_error(c, 409, "conflict", res->message ? res->message : "conflict", "conflict");
            return;
        case CRT_ENOTSUP:
            crt_api_call_error(c, 501, "not_supported",
                               res->message ? res->message : "not supported by the backend", "not_supported");
            return;
        case CRT_EINVAL:
            crt_api_call_error(c, 400, "invalid_body", res->message ? res->message : "invalid request", "invalid");
            return;
        case CRT_EUNAVAIL:
        case CRT_ETIMEDOUT:
            crt_api_add_uint_header(r, "Retry-After", res->retry_after_s ? res->retry_after_s : 1);
            crt_api_call_error(c, 503, "backend_unavailable", res->message ? res->message : "backend unavailable",
                               "unavailable");
            return;
        default:
            CRT_LOGF(CRT_LOG_ERROR, "store error", CRT_LS("request_id", r->request_id),
                     CRT_LS("error", crt_strerror(res->err)));
            crt_api_call_error(c, 500, "internal", "internal error", "error");
            return;
        }
    }
    switch (ep->kind) {
    case EP_VAR_GET:
    case EP_VAR_INCR:
    case EP_VAR_APPEND:
        call_ok(c, res->json, res->len, true);
        return;
    case EP_COND_GET: {
        crt_buf tmp;
        crt_buf_init(&tmp);
        crt_buf_puts(&tmp, "{\"condition\":");
        crt_buf_append(&tmp, res->json, res->len);
        crt_buf_putc(&tmp, '}');
        call_ok(c, tmp.data, tmp.len, false);
        crt_buf_fini(&tmp);
        return;
    }
    case EP_CONTEXT: {
        crt_buf field;
        crt_buf_init(&field);
        if (crt_req_query(r, "field", &field)) {
            crt_buf out;
            crt_buf_init(&out);
            int rc = field.len ? crt_json_path(res->json, res->len, field.data, field.len, &out) : CRT_EINVAL;
            if (rc == CRT_EINVAL)
                crt_api_call_error(c, 400, "invalid_body", "field must be a dotted path such as event.name",
                                   "invalid");
            else
                call_ok(c, rc == 0 ? out.data : NULL, out.len, false);
            crt_buf_fini(&out);
        } else {
            call_ok(c, res->json, res->len, false);
        }
        crt_buf_fini(&field);
        return;
    }
    case EP_OUTPUT_SET:
    case EP_COND_SET:
    case EP_VAR_PUT:
    case EP_VAR_DEL:
        call_ok(c, NULL, 0, false);
        return;
    default:
        call_ok(c, res->json, res->len, false);
        return;
    }
}

static void on_api(crt_req *r, void *ctx)
{
    const endpoint *ep = ctx;
    crt_api *api = ep->api;
    uint64_t now_ms = crt_now_ms();

    crt_claims *claims = crt_api_authenticate(api, r);
    if (!claims)
        return;

    api_call *c = call_new(api, r, ep);
    if (!c) {
        crt_claims_release(claims);
        crt_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->claims = claims;

    const char *eid = claims->execution_id;
    if (!crt_api_exec_limit(c, eid, now_ms))
        return;
    if (ep->kind != EP_TOOL) {
        crt_span id = r->params[0];
        if (!crt_span_eq(id, eid, strlen(eid))) {
            crt_api_call_error(c, 403, "execution_mismatch", "the token is not valid for this execution", "denied");
            return;
        }
    }
    if (ep->kind == EP_VAR_GET || ep->kind == EP_VAR_PUT || ep->kind == EP_VAR_DEL || ep->kind == EP_VAR_INCR ||
        ep->kind == EP_VAR_APPEND) {
        if (!crt_key_valid(r->params[1].p, r->params[1].len)) {
            crt_api_call_error(c, 400, "invalid_key",
                               "variable key must be 1 to 255 bytes of UTF-8 without control characters, "
                               "and not \".\" or \"..\"", "invalid");
            return;
        }
    }
    const char *berr = crt_api_parse_body(c);
    if (berr) {
        crt_api_call_error(c, 400, "invalid_body", berr, "invalid");
        return;
    }

    c->exec = (crt_store_exec){claims->user_id, claims->job_id, claims->event_id};
    crt_store_req sr = {
        .op = ep->op,
        .execution_id = eid,
        .claims = &c->exec,
        .request_id = r->request_id,
    };
    crt_span value = {c->value.data, c->value.len};
    switch (ep->kind) {
    case EP_VAR_GET:
    case EP_VAR_DEL:
        sr.var.key = r->params[1];
        break;
    case EP_VAR_PUT:
        sr.var.key = r->params[1];
        sr.var.value = value;
        break;
    case EP_VAR_INCR:
        sr.incr.key = r->params[1];
        sr.incr.by = value;
        break;
    case EP_VAR_APPEND:
        sr.append.key = r->params[1];
        sr.append.value = value;
        sr.append.separator = (crt_span){c->key2.data, c->key2.len};
        break;
    case EP_TOOL:
        sr.tool.name = (crt_span){c->key3.data, c->key3.len};
        sr.tool.action = (crt_span){c->key2.data, c->key2.len};
        sr.tool.params = value;
        break;
    case EP_OUTPUT_SET:
        sr.output.value = value;
        break;
    case EP_COND_SET:
        sr.condition.value = value;
        break;
    default:
        break;
    }
    /* audit.required: a write is performed only when its event has a place
     * on every sink (reads are never refused). Taken before the rate
     * limit's verdict: a 429 then uses the place for its own event. */
    if (!ep->is_read) {
        if (!crt_audit_reserve(api->audit)) {
            crt_api_call_error(c, 503, "audit_unavailable",
                               "the audit trail cannot take this write's event (audit.required); nothing was done",
                               "refused");
            return;
        }
        c->audit_held = crt_audit_required(api->audit);
    }
    sr.gone = call_gone;
    c->state = CALL_STORE;
    crt_api_submit(c, &sr, on_store_done);
}

/* ---- set-up ------------------------------------------------------------------------------------------ */

static const struct {
    ep_kind kind;
    const char *method, *pattern, *action;
    crt_store_op op;
} ep_table[] = {
    {EP_INPUT, "GET", "/executions/{id}/input", "get_input", CRT_ST_GET_INPUT},
    {EP_OUTPUT_SET, "POST", "/executions/{id}/output", "set_output", CRT_ST_SET_OUTPUT},
    {EP_OUTPUT_GET, "GET", "/executions/{id}/output", "get_output", CRT_ST_GET_OUTPUT},
    {EP_CONTEXT, "GET", "/executions/{id}/context", "get_context", CRT_ST_GET_CONTEXT},
    {EP_COND_SET, "POST", "/executions/{id}/condition", "set_condition", CRT_ST_SET_CONDITION},
    {EP_COND_GET, "GET", "/executions/{id}/condition", "get_condition", CRT_ST_GET_CONDITION},
    {EP_VAR_GET, "GET", "/executions/{id}/variables/{key}", "get_variable", CRT_ST_GET_VAR},
    {EP_VAR_PUT, "PUT", "/executions/{id}/variables/{key}", "set_variable", CRT_ST_PUT_VAR},
    {EP_VAR_DEL, "DELETE", "/executions/{id}/variables/{key}", "delete_variable", CRT_ST_DEL_VAR},
    {EP_VAR_INCR, "POST", "/executions/{id}/variables/{key}/increment", "increment_variable", CRT_ST_INCR_VAR},
    {EP_VAR_APPEND, "POST", "/executions/{id}/variables/{key}/append", "append_variable", CRT_ST_APPEND_VAR},
    {EP_TOOL, "POST", "/tool-actions/execute", "execute_tool_action", CRT_ST_TOOL_ACTION},
};

crt_api *crt_api_new(const crt_api_opts *o)
{
    crt_api *api = calloc(1, sizeof *api);
    if (!api)
        return NULL;
    api->audit_reads = o->audit_reads;
    api->store = o->store;
    api->audit = o->audit;
    crt_jwt_opts jo = {
        .secret = o->jwt_secret ? o->jwt_secret : "",
        .secret_len = o->jwt_secret ? strlen(o->jwt_secret) : 0,
        .algs = crt_jwt_parse_algs(o->jwt_algorithms),
        .leeway_s = (int64_t)(o->jwt_leeway_ms / 1000),
        .issuer = o->jwt_issuer,
        .cache_slots = TOKEN_CACHE_SLOTS,
    };
    api->jwt = crt_jwt_new(&jo);
    crt_rlv_opts ro = {.cache = o->cache, .prefix = "cronium:exec:{", .suffix = "}:rl",
                       .per_min = o->rate_limit_per_min, .burst = o->rate_limit_burst, .max_local_keys = MAX_RATE_KEYS};
    api->rl_exec = crt_rlv_new(&ro);
    api->auth_fail = crt_faillimit_new(o->auth_failures_per_min, MAX_RATE_KEYS, o->cache);
    if (!api->jwt || !api->rl_exec || !api->auth_fail) {
        CRT_LOGF(CRT_LOG_ERROR, "cannot set up the execution API", CRT_LS("error", "out of memory"));
        crt_api_free(api);
        return NULL;
    }
    for (size_t i = 0; i < CRT_ARRAY_LEN(ep_table); i++) {
        endpoint *ep = &api->eps[ep_table[i].kind];
        *ep = (endpoint){api, ep_table[i].kind, ep_table[i].method, ep_table[i].pattern, ep_table[i].action,
                         ep_table[i].op, strcmp(ep_table[i].method, "GET") == 0};
        crt_router_add(o->router, ep->method, ep->pattern, on_api, ep);
    }
    api->m_auth_fail = crt_metrics_counter(o->metrics, "cronium_runtime_auth_failures_total",
                                           "Requests refused with 401.", "");
    api->m_rate_limited = crt_metrics_counter(o->metrics, "cronium_runtime_rate_limited_total",
                                              "Requests refused with 429.", "");
    return api;
}

void crt_api_free(crt_api *api)
{
    if (!api)
        return;
    crt_jwt_free(api->jwt);
    crt_rlv_free(api->rl_exec);
    crt_faillimit_free(api->auth_fail);
    while (api->free_calls) {
        api_call *c = api->free_calls;
        api->free_calls = c->next_free;
        crt_buf_fini(&c->value);
        crt_buf_fini(&c->key2);
        crt_buf_fini(&c->key3);
        crt_buf_fini(&c->held_buf);
        free(c);
    }
    free(api);
}
