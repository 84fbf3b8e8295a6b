/* Private to src/api/: the endpoint table's entries, the per-request call
 * object and the handlers' state, shared by api.c (routing, the request's
 * state machine, answers), api_auth.c (Bearer, token, limits) and
 * api_body.c (body parsing and validation). */
#ifndef CRONIUM_API_INT_H
#define CRONIUM_API_INT_H

#include "cronium/api.h"
#include "cronium/faillimit.h"
#include "cronium/jwt.h"
#include "cronium/ratelimit.h"

typedef enum {
    EP_INPUT, EP_OUTPUT_SET, EP_OUTPUT_GET, EP_CONTEXT, EP_COND_SET, EP_COND_GET,
    EP_VAR_GET, EP_VAR_PUT, EP_VAR_DEL, EP_VAR_INCR, EP_TOOL, EP_COUNT,
} ep_kind;

typedef struct endpoint {
    crt_api *api;
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
    crt_api *api;
    const endpoint *ep;
    call_state state;
    crt_claims *claims;
    crt_store_exec exec;        /* the token's claims, for the dev store */
    crt_buf value;              /* compact JSON from the body */
    crt_buf key2;               /* tool: action; tool name in key3 */
    crt_buf key3;
    struct api_call *next_free;
} api_call;

struct crt_api {
    bool audit_reads;               /* audit.auditReads: successful reads are audited too */
    crt_jwt *jwt;
    crt_ratelimit *rl_exec;         /* per execution */
    crt_faillimit *auth_fail;       /* per client address, failures only */
    crt_store *store;               /* borrowed from the app */
    crt_audit *audit;               /* borrowed from the app */
    endpoint eps[EP_COUNT];
    api_call *free_calls;
    size_t nfree;
    uint64_t *m_auth_fail;
    uint64_t *m_rate_limited;
};

/* api.c */
void crt_api_add_uint_header(crt_req *r, const char *name, uint64_t v);
/* Audits, recycles c and answers with the docs/api.md §3 error shape. */
void crt_api_call_error(api_call *c, int status, const char *code, const char *msg, const char *outcome);

/* api_auth.c */
/* Verifies "Authorization: Bearer <token>". Returns the claims (a new
 * reference), or NULL once r has been answered (401, or 429 for an address
 * past its failure budget). */
crt_claims *crt_api_authenticate(crt_api *api, crt_req *r);
/* Takes one token from the execution's bucket and sets the X-RateLimit-*
 * headers. Returns false once c has been answered 429. */
bool crt_api_exec_limit(api_call *c, const char *execution_id, uint64_t now_ms);

/* api_body.c */
/* Extracts the endpoint's fields from the body into c. Returns NULL or a
 * message for a 400 invalid_body. */
const char *crt_api_parse_body(api_call *c);

#endif
