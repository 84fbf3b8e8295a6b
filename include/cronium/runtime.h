/* The execution API (API.md §2–§5): authentication, rate limits and the
 * endpoints under /executions/{id} and /tool-actions, in front of a store
 * and an audit it borrows. Built by the app, which passes in what it needs. */
#ifndef CRONIUM_RUNTIME_H
#define CRONIUM_RUNTIME_H

#include "cronium/buf.h"
#include "cronium/http.h"
#include "cronium/metrics.h"
#include "cronium/store.h"

typedef struct crt_runtime crt_runtime;

typedef struct crt_runtime_opts {
    const char *jwt_secret;         /* auth.jwtSecret */
    const char *jwt_algorithms;     /* auth.jwtAlgorithms, e.g. "HS256" */
    uint64_t jwt_leeway_ms;
    const char *jwt_issuer;         /* NULL: any */
    uint64_t rate_limit_per_min;    /* per execution */
    uint64_t rate_limit_burst;
    uint64_t auth_failures_per_min; /* per client address */
    bool audit_reads;               /* successful reads are audited too */
    crt_router *router;             /* the endpoints are added here */
    crt_metrics *metrics;
    crt_store *store;               /* borrowed: outlives the handlers' use (server drained) */
    crt_audit *audit;               /* borrowed, likewise */
} crt_runtime_opts;

/* Registers the endpoints on o->router. Returns NULL when out of memory. */
crt_runtime *crt_runtime_new(const crt_runtime_opts *o);
void crt_runtime_free(crt_runtime *rt);

/* Mints an HS256 token with the claims the orchestrator uses. */
int crt_token_mint(const char *secret, const char *execution_id, const char *user_id, const char *job_id,
                   const char *event_id, const char *issuer, int64_t ttl_s, crt_buf *out);

/* Key rule of API.md §3: 1–255 bytes of UTF-8 without control characters. */
bool crt_key_valid(const char *k, size_t n);

#endif
