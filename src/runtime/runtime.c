/* The execution API. Each request is a small state machine:
 *   AUTH (token, limits, execution id) -> BODY (validate) -> STORE (waits for
 *   the store callback) -> answered.
 * The call object hangs off the request (req->user) and is recycled through a
 * free list, so the hot path does not allocate once warm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cronium/json.h"
#include "cronium/jwt.h"
#include "cronium/log.h"
#include "cronium/ratelimit.h"
#include "cronium/runtime.h"
#include "cronium/store.h"

#define TOKEN_CACHE_SLOTS 4096
#define MAX_RATE_KEYS 100000
#define MAX_FREE_CALLS 256

typedef enum {
    EP_INPUT, EP_OUTPUT_SET, EP_OUTPUT_GET, EP_CONTEXT, EP_COND_SET, EP_COND_GET,
    EP_VAR_GET, EP_VAR_PUT, EP_VAR_DEL, EP_VAR_INCR, EP_TOOL, EP_COUNT,
} ep_kind;

typedef struct endpoint {
    crt_runtime *rt;
    ep_kind kind;
    const char *method;
    const char *pattern;
    const char *action;         /* audit action name */
    crt_store_op op;
    bool is_read;               /* GET/HEAD: audited only with auditReads */
} endpoint;

typedef enum { CALL_AUTH, CALL_STORE, CALL_DONE } call_state;

typedef struct api_call {
    crt_req *req;
    crt_runtime *rt;
    const endpoint *ep;
    call_state state;
    crt_claims *claims;
    crt_store_exec exec;        /* the token's claims, for the dev store */
    crt_buf value;              /* compact JSON from the body */
    crt_buf key2;               /* tool: action; tool name in key3 */
    crt_buf key3;
    struct api_call *next_free;
} api_call;

struct crt_runtime {
    bool audit_reads;               /* audit.auditReads: successful reads are audited too */
    crt_jwt *jwt;
    crt_ratelimit *rl_exec;
    crt_ratelimit *rl_auth;
    crt_store *store;               /* borrowed from the app */
    crt_audit *audit;               /* borrowed from the app */
    endpoint eps[EP_COUNT];
    api_call *free_calls;
    size_t nfree;
    uint64_t *m_auth_fail;
    uint64_t *m_rate_limited;
};

/* ---- keys -------------------------------------------------------------------------------------- */

bool crt_key_valid(const char *k, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    /* "." and ".." are dot segments: URL libraries remove them, so the key
     * would name another backend route (and the params are decoded once, so
     * %2E arrives here as "."). */
    if (k[0] == '.' && (n == 1 || (n == 2 && k[1] == '.')))
        return false;
    const unsigned char *s = (const unsigned char *)k;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (i + len > n)
            return false;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp <= 0x9F))
            return false;
        i += len;
    }
    return true;
}

/* ---- call objects ------------------------------------------------------------------------------- */

static api_call *call_new(crt_runtime *rt, crt_req *req, const endpoint *ep)
{
    api_call *c = rt->free_calls;
    if (c) {
        rt->free_calls = c->next_free;
        rt->nfree--;
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
    }
    c->req = req;
    c->rt = rt;
    c->ep = ep;
    c->state = CALL_AUTH;
    c->claims = NULL;
    req->user = c;
    return c;
}

static void call_free(api_call *c)
{
    crt_runtime *rt = c->rt;
    crt_claims_release(c->claims);
    c->claims = NULL;
    c->req = NULL;
    c->state = CALL_DONE;
    if (rt->nfree < MAX_FREE_CALLS && c->value.cap <= 16384) {
        crt_buf_reset(&c->value);
        crt_buf_reset(&c->key2);
        crt_buf_reset(&c->key3);
        c->next_free = rt->free_calls;
        rt->free_calls = c;
        rt->nfree++;
        return;
    }
    crt_buf_fini(&c->value);
    crt_buf_fini(&c->key2);
    crt_buf_fini(&c->key3);
    free(c);
}

/* ---- answers ------------------------------------------------------------------------------------- */

static void audit(api_call *c, const char *outcome, int status)
{
    crt_runtime *rt = c->rt;
    crt_req *r = c->req;
    if (!rt->audit || !c->claims)
        return;
    if (status < 300 && c->ep->is_read && !rt->audit_reads)
        return;
    crt_audit_event ev = {
        .execution_id = c->claims->execution_id,
        .user_id = c->claims->user_id,
        .action = c->ep->action,
        .outcome = outcome,
        .status = status,
        .request_id = r->request_id,
        .client_ip = r->client_ip,
    };
    if (c->ep->kind == EP_TOOL) {
        ev.key = c->key3.data;
        ev.key_len = c->key3.len;
    } else if (r->nparams > 1) {
        ev.key = r->params[1].p;
        ev.key_len = r->params[1].len;
    }
    rt->audit->vt->emit(rt->audit, &ev);
}

static void call_error(api_call *c, int status, const char *code, const char *msg, const char *outcome)
{
    crt_req *r = c->req;
    audit(c, outcome, status);
    call_free(c);
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

static void add_uint_header(crt_req *r, const char *name, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    crt_req_add_header(r, name, tmp, (size_t)n);
}

/* The store drops work whose client has gone (nobody reads the answer). */
static bool call_gone(void *ud) { return crt_req_detached(((api_call *)ud)->req); }

/* ---- store completion ------------------------------------------------------------------------------ */

static void on_store_done(void *ud, const crt_store_result *res)
{
    api_call *c = ud;
    crt_req *r = c->req;
    const endpoint *ep = c->ep;
    if (res->err && res->status && res->code) {
        /* The store chose the answer (502 backend_error, 429 queue full). */
        if (res->status == 429 || res->status == 503)
            add_uint_header(r, "Retry-After", res->retry_after_s ? res->retry_after_s : 1);
        call_error(c, res->status, res->code, res->message ? res->message : "backend error",
                   res->status == 429 ? "rate_limited" : "error");
        return;
    }
    if (res->err) {
        switch (res->err) {
        case CRT_ENOTFOUND:
            if (res->not_found_kind == CRT_NF_EXECUTION) {
                call_error(c, 404, "execution_not_found", res->message ? res->message : "execution not found",
                           "not_found");
            } else if (ep->kind == EP_INPUT || ep->kind == EP_OUTPUT_GET) {
                call_ok(c, NULL, 0, false);     /* nothing: data left out */
            } else {
                call_error(c, 404, "variable_not_found", "variable not found", "not_found");
            }
            return;
        case CRT_ECONFLICT:
            call_error(c, 409, "conflict", res->message ? res->message : "conflict", "conflict");
            return;
        case CRT_ENOTSUP:
            call_error(c, 501, "not_supported", res->message ? res->message : "not supported by the backend",
                       "not_supported");
            return;
        case CRT_EINVAL:
            call_error(c, 400, "invalid_body", res->message ? res->message : "invalid request", "invalid");
            return;
        case CRT_EUNAVAIL:
        case CRT_ETIMEDOUT:
            add_uint_header(r, "Retry-After", res->retry_after_s ? res->retry_after_s : 1);
            call_error(c, 503, "backend_unavailable", res->message ? res->message : "backend unavailable",
                       "unavailable");
            return;
        default:
            CRT_LOGF(CRT_LOG_ERROR, "store error", CRT_LS("request_id", r->request_id),
                     CRT_LS("error", crt_strerror(res->err)));
            call_error(c, 500, "internal", "internal error", "error");
            return;
        }
    }
    switch (ep->kind) {
    case EP_VAR_GET:
    case EP_VAR_INCR:
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
                call_error(c, 400, "invalid_body", "field must be a dotted path such as event.name", "invalid");
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

/* ---- body validation -------------------------------------------------------------------------------- */

static bool body_blank(const crt_buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] != ' ' && b->data[i] != '\t' && b->data[i] != '\r' && b->data[i] != '\n')
            return false;
    return true;
}

/* Extracts the endpoint's fields from the body into c. Returns NULL or a
 * message for a 400 invalid_body. */
static const char *parse_body(api_call *c)
{
    crt_req *r = c->req;
    const crt_buf *body = &r->body;
    crt_buf doc;
    crt_buf_init(&doc);
    const char *err = NULL;
    switch (c->ep->kind) {
    case EP_OUTPUT_SET:
    case EP_VAR_PUT: {
        const char *name = c->ep->kind == EP_OUTPUT_SET ? "data" : "value";
        const char *keys[1] = {name};
        crt_json_slot s;
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, &s, 1))
            err = c->ep->kind == EP_OUTPUT_SET ? "body must be a JSON object {\"data\": <any>}"
                                               : "body must be a JSON object {\"value\": <any>}";
        else if (!s.len)
            err = c->ep->kind == EP_OUTPUT_SET ? "body has no \"data\" field" : "body has no \"value\" field";
        else
            crt_buf_append(&c->value, doc.data + s.off, s.len);
        break;
    }
    case EP_COND_SET: {
        const char *keys[1] = {"condition"};
        crt_json_slot s;
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, &s, 1) || !s.len)
            err = "body must be a JSON object {\"condition\": true|false}";
        else {
            crt_json_kind k = crt_json_kind_of(doc.data + s.off, s.len);
            if (k != CRT_JSON_TRUE && k != CRT_JSON_FALSE)
                err = "\"condition\" must be true or false";
            else
                crt_buf_append(&c->value, doc.data + s.off, s.len);
        }
        break;
    }
    case EP_VAR_INCR: {
        if (body_blank(body)) {
            crt_buf_putc(&c->value, '1');
            break;
        }
        const char *keys[1] = {"by"};
        crt_json_slot s;
        if (crt_json_object(body->data, body->len, &doc, keys, &s, 1))
            err = "body must be a JSON object {\"by\": <number>}";
        else if (!s.len)
            crt_buf_putc(&c->value, '1');
        else if (crt_json_kind_of(doc.data + s.off, s.len) != CRT_JSON_NUMBER)
            err = "\"by\" must be a number";
        else
            crt_buf_append(&c->value, doc.data + s.off, s.len);
        break;
    }
    case EP_TOOL: {
        const char *keys[4] = {"tool", "action", "params", "config"};
        crt_json_slot s[4];
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, s, 4)) {
            err = "body must be a JSON object {\"tool\", \"action\", \"params\"}";
            break;
        }
        if (!s[0].len || crt_json_kind_of(doc.data + s[0].off, s[0].len) != CRT_JSON_STRING ||
            !s[1].len || crt_json_kind_of(doc.data + s[1].off, s[1].len) != CRT_JSON_STRING) {
            err = "\"tool\" and \"action\" must be strings";
            break;
        }
        crt_json_unquote(doc.data + s[0].off, s[0].len, &c->key3);
        crt_json_unquote(doc.data + s[1].off, s[1].len, &c->key2);
        if (!c->key3.len || !c->key2.len || c->key3.len > 255 || c->key2.len > 255) {
            err = "\"tool\" and \"action\" must be 1 to 255 bytes";
            break;
        }
        crt_json_slot p = s[2].len ? s[2] : s[3];
        crt_json_kind k = p.len ? crt_json_kind_of(doc.data + p.off, p.len) : CRT_JSON_NULL;
        if (k == CRT_JSON_NULL)
            crt_buf_puts(&c->value, "{}");
        else if (k != CRT_JSON_OBJECT)
            err = "\"params\" must be an object";
        else
            crt_buf_append(&c->value, doc.data + p.off, p.len);
        break;
    }
    default:
        break;
    }
    crt_buf_fini(&doc);
    return err;
}

/* ---- the common path --------------------------------------------------------------------------------- */

/* A request that failed authentication: 401, counted against its address;
 * an address past its failure budget gets 429 instead. Only failures reach
 * the limiter, so a token that verifies is never refused by it (many jobs
 * share one address behind an SSH tunnel). */
static void reject_auth(crt_runtime *rt, crt_req *r, const char *code, const char *msg)
{
    const char *ip = r->client_ip;
    crt_rl_result rl = crt_ratelimit_take(rt->rl_auth, ip, strlen(ip), crt_now_ms(), 1);
    if (!rl.allowed) {
        (*rt->m_rate_limited)++;
        add_uint_header(r, "Retry-After", rl.retry_after_s ? rl.retry_after_s : 1);
        crt_req_error(r, 429, "rate_limited", "too many failed authentication attempts from this address");
        return;
    }
    (*rt->m_auth_fail)++;
    CRT_LOGF(CRT_LOG_INFO, "authentication failed", CRT_LS("code", code), CRT_LS("reason", msg),
             CRT_LS("client", ip), CRT_LS("request_id", r->request_id));
    crt_req_error(r, 401, code, msg);
}

/* "Bearer <token>": the scheme is case-insensitive (RFC 9110 §11.1), one or
 * more spaces before the token, trailing whitespace ignored; the token itself
 * has no whitespace. */
static bool bearer_token(crt_span auth, crt_span *tok)
{
    const char *p = auth.p;
    size_t n = auth.len;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n < 7 || strncasecmp(p, "Bearer", 6) != 0 || p[6] != ' ')
        return false;
    size_t i = 6;
    while (i < n && p[i] == ' ')
        i++;
    if (i == n || memchr(p + i, ' ', n - i) || memchr(p + i, '\t', n - i))
        return false;
    *tok = (crt_span){p + i, n - i};
    return true;
}

static void on_api(crt_req *r, void *ctx)
{
    const endpoint *ep = ctx;
    crt_runtime *rt = ep->rt;
    uint64_t now_ms = crt_now_ms();

    crt_span auth = crt_req_header(r, "Authorization");
    if (!auth.p) {
        reject_auth(rt, r, "missing_token", "Authorization header is missing");
        return;
    }
    crt_span tok;
    if (!bearer_token(auth, &tok)) {
        reject_auth(rt, r, "invalid_auth_header", "Authorization header must be \"Bearer <token>\"");
        return;
    }
    crt_claims *claims = NULL;
    const char *why = "invalid token";
    crt_jwt_status st = crt_jwt_verify(rt->jwt, tok.p, tok.len, crt_wall_s(), &claims, &why);
    if (st != CRT_JWT_OK) {
        reject_auth(rt, r, st == CRT_JWT_EXPIRED ? "token_expired" : "invalid_token", why);
        return;
    }

    api_call *c = call_new(rt, r, ep);
    if (!c) {
        crt_claims_release(claims);
        crt_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->claims = claims;

    const char *eid = claims->execution_id;
    crt_rl_result rl = crt_ratelimit_take(rt->rl_exec, eid, strlen(eid), now_ms, 1);
    add_uint_header(r, "X-RateLimit-Limit", rl.limit);
    add_uint_header(r, "X-RateLimit-Remaining", rl.remaining);
    add_uint_header(r, "X-RateLimit-Reset", rl.reset_s);
    if (!rl.allowed) {
        (*rt->m_rate_limited)++;
        add_uint_header(r, "Retry-After", rl.retry_after_s);
        call_error(c, 429, "rate_limited", "rate limit exceeded for this execution", "rate_limited");
        return;
    }
    if (ep->kind != EP_TOOL) {
        crt_span id = r->params[0];
        if (!crt_span_eq(id, eid, strlen(eid))) {
            call_error(c, 403, "execution_mismatch", "the token is not valid for this execution", "denied");
            return;
        }
    }
    if (ep->kind == EP_VAR_GET || ep->kind == EP_VAR_PUT || ep->kind == EP_VAR_DEL || ep->kind == EP_VAR_INCR) {
        if (!crt_key_valid(r->params[1].p, r->params[1].len)) {
            call_error(c, 400, "invalid_key",
                       "variable key must be 1 to 255 bytes of UTF-8 without control characters, "
                       "and not \".\" or \"..\"", "invalid");
            return;
        }
    }
    const char *berr = parse_body(c);
    if (berr) {
        call_error(c, 400, "invalid_body", berr, "invalid");
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
    sr.gone = call_gone;
    c->state = CALL_STORE;
    crt_store_submit(rt->store, &sr, on_store_done, c);
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
    {EP_TOOL, "POST", "/tool-actions/execute", "execute_tool_action", CRT_ST_TOOL_ACTION},
};

crt_runtime *crt_runtime_new(const crt_runtime_opts *o)
{
    crt_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->audit_reads = o->audit_reads;
    rt->store = o->store;
    rt->audit = o->audit;
    crt_jwt_opts jo = {
        .secret = o->jwt_secret ? o->jwt_secret : "",
        .secret_len = o->jwt_secret ? strlen(o->jwt_secret) : 0,
        .algs = crt_jwt_parse_algs(o->jwt_algorithms),
        .leeway_s = (int64_t)(o->jwt_leeway_ms / 1000),
        .issuer = o->jwt_issuer,
        .cache_slots = TOKEN_CACHE_SLOTS,
    };
    rt->jwt = crt_jwt_new(&jo);
    rt->rl_exec = crt_ratelimit_new(o->rate_limit_per_min, o->rate_limit_burst, MAX_RATE_KEYS);
    rt->rl_auth = crt_ratelimit_new(o->auth_failures_per_min, o->auth_failures_per_min, MAX_RATE_KEYS);
    if (!rt->jwt || !rt->rl_exec || !rt->rl_auth) {
        CRT_LOGF(CRT_LOG_ERROR, "cannot set up the execution API", CRT_LS("error", "out of memory"));
        crt_runtime_free(rt);
        return NULL;
    }
    for (size_t i = 0; i < CRT_ARRAY_LEN(ep_table); i++) {
        endpoint *ep = &rt->eps[ep_table[i].kind];
        *ep = (endpoint){rt, ep_table[i].kind, ep_table[i].method, ep_table[i].pattern, ep_table[i].action,
                         ep_table[i].op, strcmp(ep_table[i].method, "GET") == 0};
        crt_router_add(o->router, ep->method, ep->pattern, on_api, ep);
    }
    rt->m_auth_fail = crt_metrics_counter(o->metrics, "cronium_runtime_auth_failures_total",
                                          "Requests refused with 401.", "");
    rt->m_rate_limited = crt_metrics_counter(o->metrics, "cronium_runtime_rate_limited_total",
                                             "Requests refused with 429.", "");
    return rt;
}

void crt_runtime_free(crt_runtime *rt)
{
    if (!rt)
        return;
    crt_jwt_free(rt->jwt);
    crt_ratelimit_free(rt->rl_exec);
    crt_ratelimit_free(rt->rl_auth);
    while (rt->free_calls) {
        api_call *c = rt->free_calls;
        rt->free_calls = c->next_free;
        crt_buf_fini(&c->value);
        crt_buf_fini(&c->key2);
        crt_buf_fini(&c->key3);
        free(c);
    }
    free(rt);
}
