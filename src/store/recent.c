/* The cache keys this process changed lately (SET of a written value, DEL),
 * for a Valkey failover: replication is asynchronous, so a promoted replica
 * may lack the last writes the old master acknowledged and still hold the
 * value before them. The backend has the new value; the cached old one
 * must not be served. When the cache says the master changed, every key
 * changed within RECENT_WINDOW_MS before the old master was last seen
 * working is distrusted (bypassed until a DEL of it on the new master
 * succeeded, distrust.c). A ring too small for the window falls back to
 * distrusting the whole cache for one TTL. */
#include <stdlib.h>
#include <string.h>
#include "cronium/log.h"
#include "prodstore_int.h"

/* Replication lag the window covers: Valkey's min-replicas-max-lag default
 * (a master configured with min-replicas-to-write stops acknowledging
 * writes once its replicas lag more than that). */
#define RECENT_WINDOW_MS 10000
#define RECENT_MAX 8192

typedef struct recent_key {
    uint64_t at;
    size_t len, cap;
    char *key;                  /* reused: grows, never shrinks */
} recent_key;

struct crt_ps_recent {
    size_t head;                /* next slot written */
    size_t count;
    recent_key ring[RECENT_MAX];
};

void crt_ps_recent_note(prodstore *ps, const char *key, size_t len)
{
    if (!ps->recent) {
        ps->recent = calloc(1, sizeof *ps->recent);
        if (!ps->recent)
            return;
    }
    struct crt_ps_recent *r = ps->recent;
    recent_key *e = &r->ring[r->head];
    if (e->cap < len + 1) {
        char *k = realloc(e->key, len + 1);
        if (!k) {
            e->len = 0;     /* an unknown key in the window: overflow */
            e->at = uv_now(ps->loop);
            goto next;
        }
        e->key = k;
        e->cap = len + 1;
    }
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->len = len;
    e->at = uv_now(ps->loop);
next:
    r->head = (r->head + 1) % RECENT_MAX;
    if (r->count < RECENT_MAX)
        r->count++;
}

/* The master changed; the old one last worked at last_good. */
void crt_ps_recent_distrust(prodstore *ps, uint64_t last_good)
{
    struct crt_ps_recent *r = ps->recent;
    if (!r)
        return;
    uint64_t since = last_good > RECENT_WINDOW_MS ? last_good - RECENT_WINDOW_MS : 0;
    size_t n = 0, i = r->head;
    bool overflow = false;
    for (size_t k = 0; k < r->count; k++) {
        i = (i + RECENT_MAX - 1) % RECENT_MAX;
        recent_key *e = &r->ring[i];
        if (e->at < since)
            break;
        if (!e->len) {
            overflow = true;
            break;
        }
        crt_buf key = {.data = e->key, .len = e->len};
        crt_ps_distrust(ps, &key);
        n++;
        if (k + 1 == RECENT_MAX)
            overflow = true;    /* the window holds more than the ring */
    }
    CRT_LOGF(CRT_LOG_WARN, "valkey master changed: invalidating keys the old master may have lost",
             CRT_LI("keys", (long long)n), CRT_LI("window_ms", RECENT_WINDOW_MS));
    if (overflow)
        crt_ps_distrust_all(ps, "more keys written in the failover window than remembered");
}

void crt_ps_recent_free(prodstore *ps)
{
    if (!ps->recent)
        return;
    for (size_t i = 0; i < RECENT_MAX; i++)
        free(ps->recent->ring[i].key);
    free(ps->recent);
    ps->recent = NULL;
}
