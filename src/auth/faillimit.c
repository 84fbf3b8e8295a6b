/* The per-address limiter of failed authentications (faillimit.h), on the
 * shared limiter of ratelimit_valkey.h (GCRA in Valkey, the generic token
 * buckets of ratelimit.h as its fallback). */
#include <stdlib.h>
#include "cronium/faillimit.h"

struct crt_faillimit {
    crt_rlv *rl;
};

crt_faillimit *crt_faillimit_new(uint64_t per_min, size_t max_addrs, crt_cache *cache)
{
    crt_faillimit *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    crt_rlv_opts o = {.cache = cache, .prefix = "cronium:authfail:{", .suffix = "}", .per_min = per_min,
                      .burst = per_min, .max_local_keys = max_addrs};
    f->rl = crt_rlv_new(&o);
    if (!f->rl) {
        crt_faillimit_free(f);
        return NULL;
    }
    return f;
}

void crt_faillimit_free(crt_faillimit *f)
{
    if (!f)
        return;
    crt_rlv_free(f->rl);
    free(f);
}

bool crt_faillimit_fail_shared(crt_faillimit *f, crt_rlv_call *call, const char *addr, size_t n, uint64_t now_ms,
                               crt_rl_result *r, crt_rlv_cb cb, void *ud)
{
    if (!crt_rlv_take(f->rl, call, addr, n, now_ms, r, cb, ud))
        return false;
    if (!r->allowed && !r->retry_after_s)
        r->retry_after_s = 1;
    return true;
}

const char *crt_faillimit_mode(const crt_faillimit *f) { return crt_rlv_mode(f->rl); }
