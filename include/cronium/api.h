/* The execution API's handlers (src/api/, docs/api.md §2–§5): authentication,
 * rate limits and the endpoints under /executions/{id} and /tool-actions, in
 * front of a store and an audit it borrows. Built by the app, which passes in
 * what it needs. */
#ifndef CRONIUM_API_H
#define CRONIUM_API_H

#include "cronium/cache.h"
#include "cronium/audit.h"
#include "cronium/http.h"
#include "cronium/metrics.h"
#include "cronium/store.h"

typedef struct crt_api crt_api;

typedef struct crt_api_opts {
    const char *jwt_secret;         /* auth.jwtSecret */
    const char *jwt_algorithms;     /* auth.jwtAlgorithms, e.g. "HS256" */
    uint64_t jwt_leeway_ms;
    const char *jwt_issuer;         /* NULL: any */
    uint64_t rate_limit_per_min;    /* per execution */
    uint64_t rate_limit_burst;
    uint64_t auth_failures_per_min; /* per client address */
    crt_cache *cache;               /* borrowed; non-NULL: both limits are kept in Valkey (shared) */
    bool audit_reads;               /* successful reads are audited too */
    crt_router *router;             /* the endpoints are added here */
    crt_metrics *metrics;
    crt_store *store;               /* borrowed: outlives the handlers' use (server drained) */
    crt_audit *audit;               /* borrowed, likewise */
} crt_api_opts;

/* Registers the endpoints on o->router. Returns NULL when out of memory. */
crt_api *crt_api_new(const crt_api_opts *o);
void crt_api_free(crt_api *rt);
/* Where the rate limits are kept now: "valkey" or "local" (for /ready). */
const char *crt_api_ratelimit_mode(const crt_api *api);

#endif
