/* The per-address limiter of failed authentications (auth.failuresPerMinute):
 * a bucket per client address that only failures draw from, so a token
 * that verifies is never refused by it (many jobs share one address behind
 * an SSH tunnel), while guessing from one address is slowed down. With
 * Valkey (security.rateLimitStore valkey) the bucket is shared by every
 * process and replica (key cronium:authfail:{<addr>}, ratelimit_valkey.h);
 * without it, or while it is unavailable, each process keeps its own. */
#ifndef CRONIUM_FAILLIMIT_H
#define CRONIUM_FAILLIMIT_H

#include "cronium/common.h"
#include "cronium/ratelimit_valkey.h"

typedef struct crt_faillimit crt_faillimit;

/* per_min failures per address and minute (also the burst); max_addrs bounds
 * the addresses tracked locally; cache (borrowed, may be NULL) shares the
 * count through Valkey. Returns NULL when out of memory. */
crt_faillimit *crt_faillimit_new(uint64_t per_min, size_t max_addrs, crt_cache *cache);
void crt_faillimit_free(crt_faillimit *f);
/* Counts one failure where the limit is kept (Valkey, else local). Returns
 * true with *r filled when known at once; false: cb(ud, result) runs once
 * later (call and addr must stay valid until then). A refusal's
 * retry_after_s is at least 1. */
bool crt_faillimit_fail_shared(crt_faillimit *f, crt_rlv_call *call, const char *addr, size_t n, uint64_t now_ms,
                               crt_rl_result *r, crt_rlv_cb cb, void *ud);
/* "valkey" or "local" (ratelimit_valkey.h). */
const char *crt_faillimit_mode(const crt_faillimit *f);

#endif
