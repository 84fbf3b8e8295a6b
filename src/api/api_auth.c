/* Authentication and limits of the execution API (docs/api.md §2, §5): the
 * Bearer header, the token's verification (jwt.h, with its cache), the
 * per-address limiter of failed attempts (faillimit.h) and the
 * per-execution rate limit with its X-RateLimit-* headers. */
#include <string.h>
#include <strings.h>
#include "cronium/log.h"
#include "api_int.h"

/* A request that failed authentication: 401, counted against its address;
 * an address past its failure budget gets 429 instead. Only failures reach
 * the limiter, so a token that verifies is never refused by it (many jobs
 * share one address behind an SSH tunnel). */
static void reject_auth(crt_api *api, crt_req *r, const char *code, const char *msg)
{
    const char *ip = r->client_ip;
    uint64_t retry_after_s;
    if (!crt_faillimit_fail(api->auth_fail, ip, strlen(ip), crt_now_ms(), &retry_after_s)) {
        (*api->m_rate_limited)++;
        crt_api_add_uint_header(r, "Retry-After", retry_after_s);
        crt_req_error(r, 429, "rate_limited", "too many failed authentication attempts from this address");
        return;
    }
    (*api->m_auth_fail)++;
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

bool crt_api_exec_limit(api_call *c, const char *execution_id, uint64_t now_ms)
{
    crt_api *api = c->api;
    crt_req *r = c->req;
    crt_rl_result rl = crt_ratelimit_take(api->rl_exec, execution_id, strlen(execution_id), now_ms, 1);
    crt_api_add_uint_header(r, "X-RateLimit-Limit", rl.limit);
    crt_api_add_uint_header(r, "X-RateLimit-Remaining", rl.remaining);
    crt_api_add_uint_header(r, "X-RateLimit-Reset", rl.reset_s);
    if (!rl.allowed) {
        (*api->m_rate_limited)++;
        crt_api_add_uint_header(r, "Retry-After", rl.retry_after_s);
        crt_api_call_error(c, 429, "rate_limited", "rate limit exceeded for this execution", "rate_limited");
        return false;
    }
    return true;
}
