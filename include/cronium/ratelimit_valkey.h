/* A rate limit shared by every process and replica: GCRA over one Valkey
 * key per limited thing (an execution, a client address), run atomically by
 * a Lua script (cache_script.h) on Valkey's clock, one EVALSHA per take.
 * While Valkey is not configured, down, or answers an error or not in time,
 * the same limit is kept in this process's token buckets (ratelimit.h):
 * correct in one process, N times too generous in N. */
#ifndef CRONIUM_RATELIMIT_VALKEY_H
#define CRONIUM_RATELIMIT_VALKEY_H

#include "cronium/cache.h"
#include "cronium/ratelimit.h"

typedef struct crt_rlv crt_rlv;

typedef void (*crt_rlv_cb)(void *ud, const crt_rl_result *r);

/* One take waiting for Valkey, kept by the caller (no allocation here):
 * key must stay valid until cb has run. */
typedef struct crt_rlv_call {
    crt_rlv *l;
    const char *key;
    size_t klen;
    crt_rlv_cb cb;
    void *ud;
    bool full;                  /* sent again as EVAL after NOSCRIPT */
} crt_rlv_call;

typedef struct crt_rlv_opts {
    crt_cache *cache;           /* borrowed; NULL: local buckets only */
    const char *prefix;         /* Valkey key = prefix + key + suffix, e.g. "cronium:exec:{" "}:rl" */
    const char *suffix;
    uint64_t per_min;           /* refill per minute */
    uint64_t burst;             /* bucket size */
    size_t max_local_keys;      /* bound of the local buckets */
} crt_rlv_opts;

/* Returns NULL when out of memory. */
crt_rlv *crt_rlv_new(const crt_rlv_opts *o);
void crt_rlv_free(crt_rlv *l);
/* Takes one token for key at now_ms (monotonic, for the local buckets).
 * Returns true with *out filled when the answer is known at once (local
 * buckets: no Valkey, or Valkey not ready or too busy). Returns false when
 * the question went to Valkey: cb(ud, result) then runs exactly once, on
 * the loop, with Valkey's answer or, after an error or timeout, the local
 * buckets'. */
bool crt_rlv_take(crt_rlv *l, crt_rlv_call *call, const char *key, size_t klen, uint64_t now_ms,
                  crt_rl_result *out, crt_rlv_cb cb, void *ud);
/* Where the limit is kept now: "valkey" (Valkey ready and its last answer
 * a verdict) or "local". */
const char *crt_rlv_mode(const crt_rlv *l);

/* Reads the script's answer "allowed remaining reset_us retry_us" into r
 * (times rounded up to whole seconds, retry at least 1 s when refused).
 * Returns false for anything else. */
bool crt_rlv_parse(const char *s, size_t n, uint64_t per_min, crt_rl_result *r);

#endif
