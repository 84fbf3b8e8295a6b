/* Invalidation: cache keys this process no longer trusts (an update or a
 * delete failed after an acknowledged write) are bypassed by reads until a
 * DEL of them succeeded. */
#include <stdlib.h>
#include <string.h>
#include "cronium/log.h"
#include "prodstore_int.h"

/* A cache key that may hold a value older than what this process
 * acknowledged: reads skip the cache for it until a DEL has succeeded. */
typedef struct distrusted {
    crt_dnode node;             /* in ps->distrust_pending unless a DEL is in flight */
    uint64_t seq;               /* bumped each time the key is distrusted again */
    bool in_flight;
    size_t klen;
    char key[];
} distrusted;

typedef struct del_batch {
    struct prodstore *ps;
    uint64_t epoch;             /* ps->distrust_epoch when sent */
    size_t n;
    uint64_t seq[DISTRUST_BATCH];
    char *keys[DISTRUST_BATCH];
    size_t lens[DISTRUST_BATCH];
} del_batch;

static void distrusted_drop(prodstore *ps, distrusted *d)
{
    if (!d->in_flight)
        crt_dlist_remove(&ps->distrust_pending, &d->node);
    crt_map_del(ps->distrust, d->key, d->klen);
    free(d);
}

static void distrust_clear_all(prodstore *ps)
{
    while (ps->distrust_pending.head)
        distrusted_drop(ps, crt_container_of(ps->distrust_pending.head, distrusted, node));
    /* In-flight entries are not on the list: drop the whole map. */
    crt_map_free(ps->distrust, free);
    ps->distrust = crt_map_new();
    ps->distrust_epoch++;
}

/* True when a read must not take key from the cache (nor fill it). */
bool crt_ps_distrusted(prodstore *ps, const crt_buf *key)
{
    if (ps->distrust_all_until && uv_now(ps->loop) < ps->distrust_all_until)
        return true;
    return ps->distrust && crt_map_get(ps->distrust, key->data, key->len) != NULL;
}

static void on_del_batch(void *ud, const crt_cache_reply *r)
{
    del_batch *b = ud;
    prodstore *ps = b->ps;
    bool ok = r->err == 0 && r->type == CRT_CACHE_INT;
    for (size_t i = 0; i < b->n; i++) {
        distrusted *d = b->epoch == ps->distrust_epoch && ps->distrust
                            ? crt_map_get(ps->distrust, b->keys[i], b->lens[i]) : NULL;
        if (d && d->in_flight) {
            d->in_flight = false;
            if (ok)
                crt_ps_recent_note(ps, b->keys[i], b->lens[i]);  /* a failover may lose the DEL */
            if (ok && d->seq == b->seq[i]) {
                crt_map_del(ps->distrust, d->key, d->klen);
                free(d);
            } else {
                crt_dlist_push_back(&ps->distrust_pending, &d->node);
            }
        }
        free(b->keys[i]);
    }
    free(b);
    if (!ok) {
        ps->next_del_retry = uv_now(ps->loop) + DISTRUST_RETRY_MS;
        CRT_LOGF(CRT_LOG_WARN, "valkey refused to delete cache keys; they stay bypassed",
                 CRT_LS("reply", r->err ? "unavailable" : r->type == CRT_CACHE_ERROR ? (r->str ? r->str : "error")
                                                                                   : "unexpected"));
    }
    crt_ps_maint_arm(ps);
}

/* Sends DELs for distrusted keys not already being deleted. */
void crt_ps_distrust_flush(prodstore *ps)
{
    while (ps->cache && ps->distrust_pending.head && crt_cache_ready(ps->cache)) {
        del_batch *b = calloc(1, sizeof *b);
        if (!b)
            return;
        b->ps = ps;
        b->epoch = ps->distrust_epoch;
        const char *argv[DISTRUST_BATCH + 1];
        size_t lens[DISTRUST_BATCH + 1];
        argv[0] = "DEL";
        lens[0] = 3;
        for (crt_dnode *n = ps->distrust_pending.head; n && b->n < DISTRUST_BATCH; n = n->next) {
            distrusted *d = crt_container_of(n, distrusted, node);
            b->keys[b->n] = malloc(d->klen + 1);
            if (!b->keys[b->n])
                break;
            memcpy(b->keys[b->n], d->key, d->klen + 1);
            b->lens[b->n] = d->klen;
            b->seq[b->n] = d->seq;
            argv[b->n + 1] = b->keys[b->n];
            lens[b->n + 1] = d->klen;
            b->n++;
        }
        if (!b->n || crt_cache_cmd(ps->cache, on_del_batch, b, (int)b->n + 1, argv, lens) != 0) {
            for (size_t i = 0; i < b->n; i++)
                free(b->keys[i]);
            free(b);
            ps->next_del_retry = uv_now(ps->loop) + DISTRUST_RETRY_MS;
            crt_ps_maint_arm(ps);
            return;
        }
        for (size_t i = 0; i < b->n; i++) {
            distrusted *d = crt_map_get(ps->distrust, b->keys[i], b->lens[i]);
            crt_dlist_remove(&ps->distrust_pending, &d->node);
            d->in_flight = true;
        }
    }
}

/* key's cache entry may be older than an acknowledged write: bypass it
 * until deleted. Never loses a key silently: past DISTRUST_MAX the whole
 * cache is bypassed for one TTL (by then every older entry has expired). */
void crt_ps_distrust(prodstore *ps, const crt_buf *key)
{
    if (!ps->cache)
        return;
    (*ps->m_distrusted)++;
    uint64_t now = uv_now(ps->loop);
    if (ps->distrust_all_until && now < ps->distrust_all_until) {
        ps->distrust_all_until = now + ps->ttl_ms;
        return;
    }
    distrusted *d = crt_map_get(ps->distrust, key->data, key->len);
    if (!d) {
        void **slot = NULL;
        if (crt_map_size(ps->distrust) < DISTRUST_MAX) {
            d = malloc(sizeof *d + key->len + 1);
            slot = d ? crt_map_slot(ps->distrust, key->data, key->len, true) : NULL;
        }
        if (!slot) {
            free(d);
            CRT_LOGF(CRT_LOG_WARN, "too many cache keys to invalidate: the cache is bypassed for one TTL",
                     CRT_LI("keys", (long long)crt_map_size(ps->distrust)));
            (*ps->m_distrust_overflow)++;
            distrust_clear_all(ps);
            ps->distrust_all_until = now + ps->ttl_ms;
            return;
        }
        d->in_flight = false;
        d->klen = key->len;
        memcpy(d->key, key->data, key->len);
        d->key[key->len] = '\0';
        *slot = d;
        crt_dlist_push_back(&ps->distrust_pending, &d->node);
    }
    d->seq = ++ps->distrust_seq;
    if (!d->in_flight && now >= ps->next_del_retry)
        crt_ps_distrust_flush(ps);
    crt_ps_maint_arm(ps);
}

/* No key is trusted for one TTL (by then every older entry has expired). */
void crt_ps_distrust_all(prodstore *ps, const char *why)
{
    CRT_LOGF(CRT_LOG_WARN, "the cache is bypassed for one TTL", CRT_LS("reason", why));
    (*ps->m_distrust_overflow)++;
    distrust_clear_all(ps);
    ps->distrust_all_until = uv_now(ps->loop) + ps->ttl_ms;
}

void crt_ps_on_cache_ready(void *ctx)
{
    prodstore *ps = ctx;
    /* Another master (a failover): what the old one acknowledged last may
     * be missing there, so its older values must not be served. */
    uint64_t last_good = crt_cache_master_changed(ps->cache);
    if (last_good)
        crt_ps_recent_distrust(ps, last_good);
    if (!ps->distrust_pending.head)
        return;
    CRT_LOGF(CRT_LOG_INFO, "valkey back: invalidating keys written while it was away",
             CRT_LI("keys", (long long)crt_map_size(ps->distrust)));
    ps->next_del_retry = 0;
    crt_ps_distrust_flush(ps);
}
