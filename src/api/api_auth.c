/* Authentication and limits of the execution API (docs/api.md §2, §5): the
 * Bearer header, the token's verification (jwt.h, with its cache), the
 * per-address limiter of failed attempts (faillimit.h) and the
 * per-execution rate limit with its X-RateLimit-* headers. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cronium/log.h"
#include "api_int.h"

/* A request that failed authentication: 401, counted against its address;
 * an address past its failure budget gets 429 instead. Only failures reach
 * the limiter, so a token that verifies is never refused by it (many jobs
 * share one address behind an SSH tunnel). With Valkey the count is shared
 * by every process (faillimit.h) and the answer waits for its verdict. */
typedef struct auth_wait {
    crt_rlv_call rl;
    crt_api *api;
    crt_req *r;
    const char *code, *msg;     /* static strings */
} auth_wait;

static void answer_auth(crt_api *api, crt_req *r, const char *code, const char *msg, const crt_rl_result *v)
{
    if (!v->allowed) {
        (*api->m_rate_limited)++;
        crt_api_add_uint_header(r, "Retry-After", v->retry_after_s ? v->retry_after_s : 1);
        crt_req_error(r, 429, "rate_limited", "too many failed authentication attempts from this address");
        return;
    }
    (*api->m_auth_fail)++;
    CRT_LOGF(CRT_LOG_INFO, "authentication failed", CRT_LS("code", code), CRT_LS("reason", msg),
             CRT_LS("client", r->client_ip), CRT_LS("request_id", r->request_id));
    crt_req_error(r, 401, code, msg);
}

static void on_fail_verdict(void *ud, const crt_rl_result *v)
{
    auth_wait *w = ud;
    answer_auth(w->api, w->r, w->code, w->msg, v);
    free(w);
}

static void reject_auth(crt_api *api, crt_req *r, const char *code, const char *msg)
{
    const char *ip = r->client_ip;
    auth_wait *w = malloc(sizeof *w);   /* failures only: not the hot path */
    if (!w) {
        crt_req_error(r, 500, "internal", "out of memory");
        return;
    }
    *w = (auth_wait){.api = api, .r = r, .code = code, .msg = msg};
    crt_rl_result v;
    if (!crt_faillimit_fail_shared(api->auth_fail, &w->rl, ip, strlen(ip), crt_now_ms(), &v, on_fail_verdict, w))
        return;     /* r stays valid until answered */
    free(w);
    answer_auth(api, r, code, msg, &v);
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

crt_claims *crt_api_authenticate(crt_api *api, crt_req *r)
{
    crt_span auth = crt_req_header(r, "Authorization");
    if (!auth.p) {
        reject_auth(api, r, "missing_token", "Authorization header is missing");
        return NULL;
    }
    crt_span tok;
    if (!bearer_token(auth, &tok)) {
        reject_auth(api, r, "invalid_auth_header", "Authorization header must be \"Bearer <token>\"");
        return NULL;
    }
    crt_claims *claims = NULL;
    const char *why = "invalid token";
    crt_jwt_status st = crt_jwt_verify(api->jwt, tok.p, tok.len, crt_wall_s(), &claims, &why);
    if (st != CRT_JWT_OK) {
        reject_auth(api, r, st == CRT_JWT_EXPIRED ? "token_expired" : "invalid_token", why);
        return NULL;
    }
    return claims;
}

/* The X-RateLimit-* headers from the verdict; a refusal answers 429.
 * Returns false once c has been answered. */
static bool apply_verdict(api_call *c, const crt_rl_result *rl)
{
    crt_api *api = c->api;
    crt_req *r = c->req;
    crt_api_add_uint_header(r, "X-RateLimit-Limit", rl->limit);
    crt_api_add_uint_header(r, "X-RateLimit-Remaining", rl->remaining);
    crt_api_add_uint_header(r, "X-RateLimit-Reset", rl->reset_s);
    if (!rl->allowed) {
        (*api->m_rate_limited)++;
        crt_api_add_uint_header(r, "Retry-After", rl->retry_after_s ? rl->retry_after_s : 1);
        crt_api_call_error(c, 429, "rate_limited", "rate limit exceeded for this execution", "rate_limited");
        return false;
    }
    return true;
}

/* Valkey's verdict (or the local buckets' after an error or timeout). */
static void on_exec_verdict(void *ud, const crt_rl_result *rl)
{
    api_call *c = ud;
    c->rl_pending = false;
    if (!apply_verdict(c, rl))
        return;     /* a read still with the store is dropped when it answers */
    if (c->defer_status) {
        crt_api_call_error(c, c->defer_status, c->defer_code, c->defer_msg, c->defer_outcome);
        return;
    }
    if (c->sr_waiting) {
        c->sr_waiting = false;
        c->store_pending = true;
        crt_store_submit(c->api->store, &c->sr, c->store_cb, c);
        return;
    }
    if (c->held) {
        c->held = false;
        crt_store_result res = c->held_res;
        c->store_cb(c, &res);
    }
    /* else the read's answer is still on its way */
}

bool crt_api_exec_limit(api_call *c, const char *execution_id, uint64_t now_ms)
{
    crt_rl_result rl;
    if (!crt_rlv_take(c->api->rl_exec, &c->rl, execution_id, strlen(execution_id), now_ms, &rl, on_exec_verdict,
                      c)) {
        c->rl_pending = true;
        return true;
    }
    return apply_verdict(c, &rl);
}

void crt_api_submit(api_call *c, const crt_store_req *sr, crt_store_cb cb)
{
    c->store_cb = cb;
    if (c->rl_pending && !c->ep->is_read) {
        /* A write does nothing before it is allowed. */
        c->sr = *sr;
        c->sr_waiting = true;
        return;
    }
    /* A read goes now: its first Valkey command follows the EVALSHA in the
     * same write, and the answers come back in that order. */
    c->store_pending = true;
    crt_store_submit(c->api->store, sr, cb, c);
}

void crt_api_hold(api_call *c, const crt_store_result *res)
{
    crt_buf *b = &c->held_buf;
    crt_buf_reset(b);
    size_t jlen = res->json ? res->len : 0, mlen = res->message ? strlen(res->message) : 0;
    c->held = true;
    if (crt_buf_append(b, res->json ? res->json : "", jlen) || crt_buf_putc(b, '\0') ||
        crt_buf_append(b, res->message ? res->message : "", mlen) || crt_buf_putc(b, '\0')) {
        c->held_res = (crt_store_result){.err = CRT_ENOMEM};  /* answered 500 */
        return;
    }
    c->held_res = *res;
    c->held_res.json = res->json ? b->data : NULL;
    c->held_res.message = res->message ? b->data + jlen + 1 : NULL;
}

const char *crt_api_ratelimit_mode(const crt_api *api) { return crt_rlv_mode(api->rl_exec); }
