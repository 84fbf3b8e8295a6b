/* HS256/384/512 JSON Web Tokens: strict verification with a bounded cache of
 * already-verified tokens, and signing (for the `token` command). */
#ifndef CRONIUM_JWT_H
#define CRONIUM_JWT_H

#include "cronium/b64url.h"
#include "cronium/buf.h"
#include "cronium/common.h"

enum { CRT_JWT_HS256 = 1, CRT_JWT_HS384 = 2, CRT_JWT_HS512 = 4 };

typedef enum {
    CRT_JWT_OK = 0,
    CRT_JWT_INVALID,        /* malformed, bad signature, wrong alg, missing claims, nbf/iat in future, issuer */
    CRT_JWT_EXPIRED,        /* exp + leeway passed */
} crt_jwt_status;

/* Verified claims. Reference counted: the cache holds one reference, each
 * request using them another (crt_claims_release). Strings are never NULL
 * ("" when absent) and live as long as the claims. */
typedef struct crt_claims {
    int refs;
    int64_t exp, nbf, iat;
    const char *execution_id;
    const char *job_id;
    const char *user_id;
    const char *event_id;
    const char *issuer;
    const char *subject;
    const char *scope;
    char strings[];
} crt_claims;

void crt_claims_retain(crt_claims *c);
void crt_claims_release(crt_claims *c);

typedef struct crt_jwt crt_jwt;

typedef struct crt_jwt_opts {
    const char *secret;
    size_t secret_len;
    unsigned algs;              /* CRT_JWT_HS* mask */
    int64_t leeway_s;
    const char *issuer;         /* NULL: any */
    size_t cache_slots;         /* 0: no cache */
} crt_jwt_opts;

crt_jwt *crt_jwt_new(const crt_jwt_opts *o);
void crt_jwt_free(crt_jwt *v);
/* Parses "HS256,HS512" into a mask; 0 if any name is unknown. */
unsigned crt_jwt_parse_algs(const char *list);

/* Verifies token at wall-clock time now (seconds). On CRT_JWT_OK *out gets a
 * new reference. On failure *why says what was wrong, for a person. */
crt_jwt_status crt_jwt_verify(crt_jwt *v, const char *tok, size_t len, int64_t now, crt_claims **out,
                              const char **why);
uint64_t crt_jwt_cache_hits(const crt_jwt *v);

/* Signs a JSON payload (compact JSON text) with HS256/384/512 into out. */
int crt_jwt_sign(unsigned alg, const char *secret, size_t secret_len, const char *payload, size_t plen,
                 crt_buf *out);

/* Mints an HS256 token with the claims the orchestrator uses (token.c; the
 * `token` command and dev mode). */
int crt_token_mint(const char *secret, const char *execution_id, const char *user_id, const char *job_id,
                   const char *event_id, const char *issuer, int64_t ttl_s, crt_buf *out);

#endif
