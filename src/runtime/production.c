/* The production wiring (see production.h). Shutdown order: the store
 * refuses new work, the audit queue drains (or its deadline passes), the
 * store and the audit let go of the clients, the clients are freed (their
 * pending callbacks find no client to start more work on), and last the
 * store and the audit themselves. */
#include <stdio.h>
#include <stdlib.h>
#include "cronium/backend.h"
#include "cronium/cache.h"
#include "cronium/log.h"
#include "cronium/prodstore.h"
#include "production.h"

#define AUDIT_FLUSH_MS 3000     /* audit drain allowed at shutdown */

struct crt_production {
    uv_loop_t *loop;
    crt_backend *backend;       /* owned; NULL once released */
    crt_cache *cache;           /* owned; NULL: no cache.url, or released */
    crt_store *store;           /* borrows both clients */
    crt_audit *audit;           /* borrows the backend client */
    bool draining;
    uv_timer_t flush_timer;
    bool flush_timer_open;
};

static crt_check_state check_valkey(void *ctx)
{
    crt_production *p = ctx;
    if (!p->cache)
        return CRT_CHECK_DISABLED;
    return crt_cache_ready(p->cache) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

static crt_check_state check_backend(void *ctx)
{
    crt_production *p = ctx;
    return p->backend && crt_backend_up(p->backend) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

static void on_flush_timer_closed(uv_handle_t *h) { (void)h; }

/* Frees the clients once the audit queue has drained (or its deadline passed). */
static void release(crt_production *p)
{
    if (p->flush_timer_open) {
        p->flush_timer_open = false;
        uv_close((uv_handle_t *)&p->flush_timer, on_flush_timer_closed);
    }
    if (p->store)
        crt_prodstore_detach(p->store);
    if (p->audit)
        crt_audit_backend_detach(p->audit);
    if (p->backend) {
        crt_backend *b = p->backend;
        p->backend = NULL;
        crt_backend_free(b);
    }
    if (p->cache) {
        crt_cache *c = p->cache;
        p->cache = NULL;
        crt_cache_free(c);
    }
}

static void on_audit_drained(void *ctx) { release(ctx); }

static void on_flush_deadline(uv_timer_t *t) { release(t->data); }

void crt_production_drain(crt_production *p)
{
    if (p->draining)
        return;
    p->draining = true;
    uv_timer_init(p->loop, &p->flush_timer);
    p->flush_timer.data = p;
    p->flush_timer_open = true;
    uv_timer_start(&p->flush_timer, on_flush_deadline, AUDIT_FLUSH_MS, 0);
    crt_audit_backend_drain(p->audit, on_audit_drained, p);
}

void crt_production_free(crt_production *p)
{
    if (!p)
        return;
    release(p);
    if (p->store)
        p->store->vt->free(p->store);
    if (p->audit)
        p->audit->vt->free(p->audit);
    free(p);
}

crt_store *crt_production_store(crt_production *p) { return p->store; }
crt_audit *crt_production_audit(crt_production *p) { return p->audit; }

crt_production *crt_production_new(crt_app *app, char *err, size_t errcap)
{
    const crt_config *cfg = app->cfg;
    crt_production *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = app->loop;
    /* The whole retry budget stays below the server's write timeout. */
    uint64_t deadline = cfg->write_timeout_ms > 2000 ? cfg->write_timeout_ms - 1000 : cfg->write_timeout_ms / 2;
    crt_backend_opts bo = {
        .base_url = cfg->backend_url,
        .token = cfg->backend_token,
        .attempt_timeout_ms = cfg->backend_timeout_ms,
        .max_retries = (int)cfg->backend_max_retries,
        .retry_delay_ms = cfg->backend_retry_delay_ms,
        .deadline_ms = deadline,
        .max_connections = (long)cfg->backend_max_concurrent,
    };
    p->backend = crt_backend_new(app->loop, &bo, app->metrics);
    if (!p->backend) {
        snprintf(err, errcap, "out of memory");
        crt_production_free(p);
        return NULL;
    }
    if (cfg->cache_url && *cfg->cache_url) {
        crt_cache_opts co = {
            .url = cfg->cache_url,
            .password = cfg->cache_password,
            .db = cfg->cache_db,
            .timeout_ms = cfg->cache_timeout_ms,
            .max_pending = 10000,
        };
        p->cache = crt_cache_new(app->loop, &co, app->metrics, err, errcap);
        if (!p->cache) {
            crt_production_free(p);
            return NULL;
        }
    }
    crt_prodstore_opts so = {.cache_ttl_ms = cfg->cache_ttl_ms, .lock_ttl_ms = cfg->lock_ttl_ms,
                             .op_budget_ms = deadline};
    p->store = crt_prodstore_new(app->loop, &so, app->metrics, p->backend, p->cache);
    if (!p->store) {
        snprintf(err, errcap, "out of memory");
        crt_production_free(p);
        return NULL;
    }
    crt_app_add_ready_check(app, "valkey", check_valkey, p, false);
    crt_app_add_ready_check(app, "backend", check_backend, p, true);
    p->audit = crt_audit_backend_new(p->backend, app->metrics);
    if (!p->audit) {
        crt_production_free(p);
        return NULL;
    }
    CRT_LOGF(CRT_LOG_INFO, "production store", CRT_LS("backend", cfg->backend_url),
             CRT_LS("valkey", p->cache ? "configured" : "disabled (no cache.url)"));
    return p;
}
