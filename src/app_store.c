/* The store side of the composition root (app_int.h): the clients, the store
 * that borrows them, the audit, the /ready checks on the clients' own state,
 * dev mode's seed and export block, and the shutdown order. The store
 * refuses new work, the audit queue drains (or its deadline passes), the
 * store and the audit let go of the clients, the clients are freed (their
 * pending callbacks find no client to start more work on), and last the
 * store and the audit themselves. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cronium/log.h"
#include "cronium/prodstore.h"
#include "cronium/jwt.h"
#include "app_int.h"

#define AUDIT_FLUSH_MS 3000     /* audit drain allowed at shutdown */

int crt_app_add_ready_check(crt_app *app, const char *name, crt_check_fn fn, void *ctx, bool critical)
{
    if (app->nchecks == CRT_MAX_READY_CHECKS)
        return CRT_ELIMIT;
    app->checks[app->nchecks++] = (crt_ready_check){name, fn, ctx, critical};
    return 0;
}

static crt_check_state check_valkey(void *ctx)
{
    crt_app *app = ctx;
    if (!app->cache)
        return CRT_CHECK_DISABLED;
    return crt_cache_ready(app->cache) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

static crt_check_state check_backend(void *ctx)
{
    crt_app *app = ctx;
    return app->backend && crt_backend_up(app->backend) ? CRT_CHECK_UP : CRT_CHECK_DOWN;
}

/* ---- audit ----------------------------------------------------------------------------- */

/* The audit with the sinks the settings ask for: the backend (audit.backend,
 * production only), the JSON-lines file (audit.file), and in dev mode the
 * log when no file is configured. */
static int audit_new(crt_app *app, char *err, size_t errcap)
{
    const crt_config *cfg = app->cfg;
    crt_audit_opts ao = {
        .backend = !cfg->dev && cfg->audit_backend ? app->backend : NULL,
        .file = cfg->audit_file,
        .log = cfg->dev && !(cfg->audit_file && *cfg->audit_file),
        .required = cfg->audit_required,
        .coalesce_ms = cfg->audit_coalesce_ms,
        .queue_max = (size_t)cfg->audit_queue_size,
    };
    app->audit = crt_audit_new(app->loop, &ao, app->metrics, err, errcap);
    if (!app->audit)
        return CRT_EINVAL;
    CRT_LOGF(CRT_LOG_INFO, "audit", CRT_LB("backend", ao.backend != NULL),
             CRT_LS("file", ao.file && *ao.file ? ao.file : "(none)"), CRT_LB("log", ao.log),
             CRT_LB("required", ao.required), CRT_LI("coalesce_ms", ao.coalesce_ms));
    return 0;
}

/* ---- production ------------------------------------------------------------------------ */

static int production_new(crt_app *app, char *err, size_t errcap)
{
    const crt_config *cfg = app->cfg;
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
        .probe_interval_ms = cfg->backend_probe_interval_ms,
    };
    app->backend = crt_backend_new(app->loop, &bo, app->metrics);
    if (!app->backend) {
        snprintf(err, errcap, "out of memory");
        return CRT_EINVAL;
    }
    if ((cfg->cache_url && *cfg->cache_url) || (cfg->cache_sentinels && *cfg->cache_sentinels)) {
        crt_cache_opts co = {
            .url = cfg->cache_url,
            .password = cfg->cache_password,
            .db = cfg->cache_db,
            .timeout_ms = cfg->cache_timeout_ms,
            .max_pending = 10000,
            .sentinels = cfg->cache_sentinels,
            .master_name = cfg->cache_master_name,
            .sentinel_password = cfg->cache_sentinel_password,
        };
        app->cache = crt_cache_new(app->loop, &co, app->metrics, err, errcap);
        if (!app->cache)
            return CRT_EINVAL;
    }
    /* The store registers the cache's on-ready hook (one slot, its own):
     * the app's /ready check reads crt_cache_ready instead. */
    crt_prodstore_opts so = {.cache_ttl_ms = cfg->cache_ttl_ms, .lock_ttl_ms = cfg->lock_ttl_ms,
                             .op_budget_ms = deadline};
    /* cache.singleProcess auto: alone when one worker runs without Valkey
     * (the sidecar, the embedded runtime without a cache); with Valkey
     * configured, others may share the variables, so its outage refuses
     * increments and appends rather than risk losing one. */
    so.single_process = cfg->single_process_mode == 1 ||
                        (cfg->single_process_mode < 0 && !app->cache && cfg->nworkers == 1);
    app->store = crt_prodstore_new(app->loop, &so, app->metrics, app->backend, app->cache);
    if (!app->store) {
        snprintf(err, errcap, "out of memory");
        return CRT_EINVAL;
    }
    crt_app_add_ready_check(app, "valkey", check_valkey, app, false);
    crt_app_add_ready_check(app, "backend", check_backend, app, true);
    if (audit_new(app, err, errcap))
        return CRT_EINVAL;
    CRT_LOGF(CRT_LOG_INFO, "production store", CRT_LS("backend", cfg->backend_url),
             CRT_LS("valkey", !app->cache ? "disabled (no cache.url)"
                                 : cfg->cache_sentinels && *cfg->cache_sentinels ? "through sentinels" : "configured"));
    return 0;
}

/* Frees the clients once the audit queue has drained (or its deadline passed). */
static void release(crt_app *app)
{
    if (!app->backend && !app->cache)
        return;                 /* dev mode, or released already */
    if (app->store)
        crt_prodstore_detach(app->store);
    if (app->audit)
        crt_audit_detach_backend(app->audit);
    if (app->backend) {
        crt_backend *b = app->backend;
        app->backend = NULL;
        crt_backend_free(b);
    }
    if (app->cache) {
        crt_cache *c = app->cache;
        app->cache = NULL;
        crt_cache_free(c);
    }
}

static void on_audit_drained(void *ctx) { release(ctx); }

/* ---- dev mode --------------------------------------------------------------------------- */

static crt_store *dev_store_new(const crt_config *cfg, char *err, size_t errcap)
{
    if (!cfg->dev_context)
        return crt_devstore_new(NULL, 0, err, errcap);
    crt_buf b;
    crt_buf_init(&b);
    if (crt_file_read(cfg->dev_context, 0, &b) == CRT_EIO) {
        snprintf(err, errcap, "--dev-context %s: cannot open", cfg->dev_context);
        return NULL;
    }
    crt_store *s = crt_devstore_new(b.data ? b.data : "", b.len, err, errcap);
    if (!s && !*err)
        snprintf(err, errcap, "--dev-context %s: not a JSON object", cfg->dev_context);
    crt_buf_fini(&b);
    return s;
}

void crt_app_store_announce(crt_app *app)
{
    const crt_config *cfg = app->cfg;
    if (!cfg->dev)
        return;
    const char *id = crt_devstore_seed_id(app->store);
    crt_buf tok;
    crt_buf_init(&tok);
    crt_token_mint(cfg->jwt_secret, id, crt_devstore_seed_user(app->store), NULL, NULL, cfg->jwt_issuer,
                   24 * 3600, &tok);
    const char *host = cfg->host;
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !*host)
        host = "127.0.0.1";
    crt_buf block;
    crt_buf_init(&block);
    crt_buf_printf(&block, "export CRONIUM_RUNTIME_API=http://%s:%lld\nexport CRONIUM_EXECUTION_ID=%s\n"
                           "export CRONIUM_EXECUTION_TOKEN=%s\n",
                   strchr(host, ':') ? "[::1]" : host, (long long)cfg->port, id, crt_buf_cstr(&tok));
    fwrite(block.data, 1, block.len, stdout);
    fflush(stdout);
    const char *tmpdir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/cronium-runtime-dev-%lld.env", tmpdir && *tmpdir ? tmpdir : "/tmp",
             (long long)cfg->port);
    /* The file holds a token: readable by its owner only, removed at exit. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f) {
        snprintf(app->dev_env_file, sizeof app->dev_env_file, "%s", path);
        fwrite(block.data, 1, block.len, f);
        fclose(f);
    }
    CRT_LOGF(CRT_LOG_WARN, "DEV MODE: in-memory store, NOTHING IS PERSISTED; tool actions are only echoed",
             CRT_LS("execution_id", id), CRT_LS("env_file", f ? path : "(could not write)"));
    crt_buf_fini(&block);
    crt_buf_fini(&tok);
}

/* ---- both ------------------------------------------------------------------------------- */

int crt_app_store_new(crt_app *app, char *err, size_t errcap)
{
    if (!app->cfg->dev)
        return production_new(app, err, errcap);
    app->store = dev_store_new(app->cfg, err, errcap);
    if (app->store && audit_new(app, err, errcap))
        return CRT_EINVAL;
    if (!app->store || !app->audit) {
        if (!*err)
            snprintf(err, errcap, "out of memory");
        return CRT_EINVAL;
    }
    return 0;
}

void crt_app_store_stop(crt_app *app)
{
    if (app->dev_env_file[0]) {
        unlink(app->dev_env_file);
        app->dev_env_file[0] = '\0';
    }
    if (app->store)
        app->store->vt->shutdown(app->store);
    if (!app->audit || app->draining)
        return;
    app->draining = true;
    /* The file sink writes all it holds; the backend sink ships until the
     * deadline (what it could not is in the file, when there is one). */
    crt_audit_drain(app->audit, AUDIT_FLUSH_MS, on_audit_drained, app);
}

void crt_app_store_free(crt_app *app)
{
    release(app);               /* the clients first, then the store and the audit */
    if (app->store)
        app->store->vt->free(app->store);
    crt_audit_free(app->audit);
    app->store = NULL;
    app->audit = NULL;
}
