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
#include "cronium/ratelimit_valkey.h"

typedef enum {
    EP_INPUT, EP_OUTPUT_SET, EP_OUTPUT_GET, EP_CONTEXT, EP_COND_SET, EP_COND_GET,
    EP_VAR_GET, EP_VAR_PUT, EP_VAR_DEL, EP_VAR_INCR, EP_VAR_APPEND, EP_TOOL, EP_COUNT,
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
    crt_buf key2;               /* tool: action; tool name in key3; append: the separator */
    crt_buf key3;
    bool audit_held;            /* audit.required: a place is held for this write's event */
    /* The execution limit in Valkey (api_auth.c): while its verdict is on
     * its way a read is already with the store (both go out in the same
     * tick, one round trip), a write waits in sr, and an answer chosen
     * meanwhile (403, 400) or the store's result is held until it comes. */
    crt_rlv_call rl;
    bool rl_pending;            /* the verdict has not arrived */
    bool store_pending;         /* submitted; the store's callback has not run */
    bool discard;               /* answered 429 while the store worked: its result is dropped */
    bool sr_waiting;            /* a write in sr waits for the verdict */
    bool held;                  /* held_res (copied into held_buf) came before the verdict */
    crt_store_req sr;
    crt_store_cb store_cb;
    crt_store_result held_res;
    crt_buf held_buf;
    int defer_status;           /* an error answer waiting for the verdict */
    const char *defer_code, *defer_msg, *defer_outcome;
    struct api_call *next_free;
} api_call;

struct crt_api {
    bool audit_reads;               /* audit.auditReads: successful reads are audited too */
    crt_jwt *jwt;
    crt_rlv *rl_exec;               /* per execution: Valkey (shared) or local buckets */
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
 * headers. Returns false once c has been answered 429; true when allowed or
 * when the verdict is on its way from Valkey (c->rl_pending: answers chosen
 * meanwhile wait for it, see crt_api_submit). */
bool crt_api_exec_limit(api_call *c, const char *execution_id, uint64_t now_ms);
/* Submits sr to the store with cb (c as ud): at once, except a write while
 * the verdict is pending (sent once allowed). */
void crt_api_submit(api_call *c, const crt_store_req *sr, crt_store_cb cb);
/* The store answered while the verdict is pending: keeps a copy of res. */
void crt_api_hold(api_call *c, const crt_store_result *res);

/* api_body.c */
/* Extracts the endpoint's fields from the body into c. Returns NULL or a
 * message for a 400 invalid_body. */
const char *crt_api_parse_body(api_call *c);

#endif
