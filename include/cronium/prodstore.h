/* The production store (src/store/prodstore.c and its siblings): the Cronium
 * backend is the source of truth, Valkey a cache and the lock service. It
 * borrows both clients; whoever creates it owns them, and the audit shipper,
 * and the /ready checks built on the clients' own state. */
#ifndef CRONIUM_PRODSTORE_H
#define CRONIUM_PRODSTORE_H

#include <uv.h>
#include "cronium/backend.h"
#include "cronium/cache.h"
#include "cronium/metrics.h"
#include "cronium/store.h"

typedef struct crt_prodstore_opts {
    uint64_t cache_ttl_ms;          /* cached values (cache.ttl) */
    uint64_t lock_ttl_ms;           /* increment locks (cache.lockTtl) */
    uint64_t op_budget_ms;          /* an operation's deadline when the request gives none */
    /* The process is alone on its port (cache.singleProcess, one worker):
     * without Valkey, increments and appends are serialised in the process
     * only. Otherwise they are refused (503 cache_unavailable) while Valkey
     * is down or not configured, since no cross-process lock exists. */
    bool single_process;
} crt_prodstore_opts;

/* backend is required; cache may be NULL (no Valkey: no caching, increments
 * serialised in this process only). Both are BORROWED: they must outlive the
 * store's use of them, i.e. until crt_prodstore_detach. Its metrics are
 * registered in m. Returns NULL when out of memory. Shutdown order for the
 * owner: vt->shutdown (refuses new work) -> drain the audit -> detach ->
 * free the clients -> vt->free. */
crt_store *crt_prodstore_new(uv_loop_t *loop, const crt_prodstore_opts *o, crt_metrics *m, crt_backend *backend,
                             crt_cache *cache);
/* The clients are about to be freed: the store forgets them (callbacks their
 * free runs find no client to start more work on) and stops its timer. */
void crt_prodstore_detach(crt_store *s);

#endif
