/* The per-address limiter of failed authentications (faillimit.h), on the
 * generic token buckets of ratelimit.h. */
#include <stdlib.h>
#include "cronium/faillimit.h"
#include "cronium/ratelimit.h"

struct crt_faillimit {
    crt_ratelimit *rl;
};

crt_faillimit *crt_faillimit_new(uint64_t per_min, size_t max_addrs)
{
    crt_faillimit *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->rl = crt_ratelimit_new(per_min, per_min, max_addrs);
    if (!f->rl) {
        free(f);
        return NULL;
    }
    return f;
}

void crt_faillimit_free(crt_faillimit *f)
{
    if (!f)
        return;
    crt_ratelimit_free(f->rl);
    free(f);
}

bool crt_faillimit_fail(crt_faillimit *f, const char *addr, size_t n, uint64_t now_ms, uint64_t *retry_after_s)
{
    crt_rl_result r = crt_ratelimit_take(f->rl, addr, n, now_ms, 1);
    *retry_after_s = r.retry_after_s ? r.retry_after_s : 1;
    return r.allowed;
}
