/* Token buckets keyed by a string (execution id, client address), bounded in
 * number. Idle buckets are reclaimed a few at a time on each call (a clock
 * hand), never in one sweep. */
#ifndef CRONIUM_RATELIMIT_H
#define CRONIUM_RATELIMIT_H

#include "cronium/common.h"

typedef struct crt_ratelimit crt_ratelimit;

typedef struct crt_rl_result {
    bool allowed;
    uint64_t limit;             /* per minute */
    uint64_t remaining;         /* whole tokens left */
    uint64_t reset_s;           /* seconds until the bucket is full */
    uint64_t retry_after_s;     /* when refused: seconds until one token */
} crt_rl_result;

/* per_min: refill rate; burst: bucket size; max_keys: bound on buckets. */
crt_ratelimit *crt_ratelimit_new(uint64_t per_min, uint64_t burst, size_t max_keys);
void crt_ratelimit_free(crt_ratelimit *rl);
/* Takes cost tokens from key's bucket at now_ms (monotonic). cost 0 peeks. */
crt_rl_result crt_ratelimit_take(crt_ratelimit *rl, const char *key, size_t klen, uint64_t now_ms, unsigned cost);
size_t crt_ratelimit_size(const crt_ratelimit *rl);

#endif
