/* Token-bucket rate limiter: a chained hash over a pool of entries, with a
 * clock hand that frees a few idle (full) buckets per call. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/map.h"
#include "cronium/ratelimit.h"

#define RECLAIM_PER_CALL 2

typedef struct rl_entry {
    char *key;                  /* NULL: free */
    size_t klen;
    uint64_t hash;
    double tokens;
    uint64_t last_ms;
    int32_t next;               /* chain; -1 ends */
} rl_entry;

struct crt_ratelimit {
    double rate_per_ms;
    double burst;
    uint64_t per_min;
    size_t max_keys;
    int32_t *buckets;           /* heads, -1 empty */
    size_t nbuckets;
    rl_entry *pool;
    size_t cap, used;           /* pool slots allocated / in use */
    int32_t free_head;          /* free slots chained through next */
    size_t hand;
};

crt_ratelimit *crt_ratelimit_new(uint64_t per_min, uint64_t burst, size_t max_keys)
{
    crt_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->per_min = per_min;
    rl->rate_per_ms = (double)per_min / 60000.0;
    rl->burst = (double)burst;
    rl->max_keys = max_keys;
    rl->nbuckets = 1;
    while (rl->nbuckets < max_keys / 2 + 1)
        rl->nbuckets <<= 1;
    rl->buckets = malloc(rl->nbuckets * sizeof *rl->buckets);
    if (!rl->buckets) {
        free(rl);
        return NULL;
    }
    memset(rl->buckets, 0xff, rl->nbuckets * sizeof *rl->buckets);
    rl->free_head = -1;
    return rl;
}

void crt_ratelimit_free(crt_ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < rl->cap; i++)
        free(rl->pool[i].key);
    free(rl->pool);
    free(rl->buckets);
    free(rl);
}

size_t crt_ratelimit_size(const crt_ratelimit *rl) { return rl->used; }

static void refill(crt_ratelimit *rl, rl_entry *e, uint64_t now)
{
    if (now > e->last_ms) {
        e->tokens = fmin(rl->burst, e->tokens + (double)(now - e->last_ms) * rl->rate_per_ms);
        e->last_ms = now;
    }
}

static void unlink_entry(crt_ratelimit *rl, int32_t idx)
{
    rl_entry *e = &rl->pool[idx];
    int32_t *pp = &rl->buckets[e->hash & (rl->nbuckets - 1)];
    while (*pp != idx)
        pp = &rl->pool[*pp].next;
    *pp = e->next;
    free(e->key);
    e->key = NULL;
    e->next = rl->free_head;
    rl->free_head = idx;
    rl->used--;
}

/* Frees up to RECLAIM_PER_CALL buckets that have refilled completely: they
 * carry no state a fresh bucket would not. With force, frees the entry under
 * the hand whatever its state (the table is full). */
static void reclaim(crt_ratelimit *rl, uint64_t now, bool force)
{
    if (!rl->cap)
        return;
    for (int step = 0, freed = 0; step < 8 && freed < RECLAIM_PER_CALL; step++) {
        size_t i = rl->hand++ % rl->cap;
        rl_entry *e = &rl->pool[i];
        if (!e->key)
            continue;
        refill(rl, e, now);
        if (e->tokens >= rl->burst || force) {
            unlink_entry(rl, (int32_t)i);
            freed++;
            force = false;
        }
    }
}

static int32_t alloc_entry(crt_ratelimit *rl)
{
    if (rl->free_head >= 0) {
        int32_t i = rl->free_head;
        rl->free_head = rl->pool[i].next;
        return i;
    }
    if (rl->cap == rl->max_keys)
        return -1;
    size_t ncap = rl->cap ? rl->cap * 2 : 64;
    if (ncap > rl->max_keys)
        ncap = rl->max_keys;
    rl_entry *p = realloc(rl->pool, ncap * sizeof *p);
    if (!p)
        return -1;
    memset(p + rl->cap, 0, (ncap - rl->cap) * sizeof *p);
    rl->pool = p;
    for (size_t i = ncap; i-- > rl->cap + 1;) {
        p[i].next = rl->free_head;
        rl->free_head = (int32_t)i;
    }
    int32_t got = (int32_t)rl->cap;
    rl->cap = ncap;
    return got;
}

crt_rl_result crt_ratelimit_take(crt_ratelimit *rl, const char *key, size_t klen, uint64_t now, unsigned cost)
{
    crt_rl_result r = {.allowed = true, .limit = rl->per_min};
    reclaim(rl, now, false);
    uint64_t h = crt_hash(key, klen);
    int32_t *head = &rl->buckets[h & (rl->nbuckets - 1)];
    rl_entry *e = NULL;
    for (int32_t i = *head; i >= 0; i = rl->pool[i].next) {
        rl_entry *x = &rl->pool[i];
        if (x->hash == h && x->klen == klen && memcmp(x->key, key, klen) == 0) {
            e = x;
            break;
        }
    }
    if (!e && cost == 0) {
        /* A peek at a key with no bucket: it would be full; create nothing. */
        r.remaining = (uint64_t)rl->burst;
        return r;
    }
    if (!e) {
        int32_t i = alloc_entry(rl);
        if (i < 0) {
            reclaim(rl, now, true);
            i = alloc_entry(rl);
        }
        char *k = i >= 0 ? malloc(klen + 1) : NULL;
        if (!k) {
            /* No room or memory: fail open rather than refuse service. */
            if (i >= 0) {
                rl->pool[i].next = rl->free_head;
                rl->free_head = i;
            }
            r.remaining = (uint64_t)rl->burst;
            return r;
        }
        memcpy(k, key, klen);
        k[klen] = '\0';
        e = &rl->pool[i];
        *e = (rl_entry){k, klen, h, rl->burst, now, *head};
        head = &rl->buckets[h & (rl->nbuckets - 1)];
        *head = i;
        rl->used++;
    }
    refill(rl, e, now);
    if (e->tokens + 1e-9 >= (double)cost) {
        e->tokens -= cost;
    } else {
        r.allowed = false;
        double need = (double)cost - e->tokens;
        r.retry_after_s = (uint64_t)ceil(need / rl->rate_per_ms / 1000.0);
        if (r.retry_after_s == 0)
            r.retry_after_s = 1;
    }
    r.remaining = e->tokens > 0 ? (uint64_t)floor(e->tokens + 1e-9) : 0;
    r.reset_s = (uint64_t)ceil((rl->burst - e->tokens) / rl->rate_per_ms / 1000.0);
    return r;
}
