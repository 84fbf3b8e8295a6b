/* The per-address limiter of failed authentications (auth.failuresPerMinute):
 * a token bucket per client address that only failures draw from, so a token
 * that verifies is never refused by it (many jobs share one address behind
 * an SSH tunnel), while guessing from one address is slowed down. */
#ifndef CRONIUM_FAILLIMIT_H
#define CRONIUM_FAILLIMIT_H

#include "cronium/common.h"

typedef struct crt_faillimit crt_faillimit;

/* per_min failures per address and minute (also the burst); max_addrs bounds
 * the addresses tracked. Returns NULL when out of memory. */
crt_faillimit *crt_faillimit_new(uint64_t per_min, size_t max_addrs);
void crt_faillimit_free(crt_faillimit *f);
/* Counts one failure from addr at now_ms (monotonic). Returns true while the
 * address is within its budget; false: answer 429, retrying after
 * *retry_after_s (>= 1) seconds. */
bool crt_faillimit_fail(crt_faillimit *f, const char *addr, size_t n, uint64_t now_ms, uint64_t *retry_after_s);

#endif
