/* The application, the composition root: it builds, in order, the metrics,
 * the backend client, the cache client, the store (which borrows the
 * clients), the audit (its sinks) and the execution API's handlers; it registers
 * the /ready checks on the clients' own state, and it orchestrates the
 * shutdown (server drains -> store refuses new work -> audit drains, within
 * its deadline -> store and audit let go of the clients -> clients freed ->
 * the rest freed). Nothing below includes this header. One per process. */
#ifndef CRONIUM_APP_H
#define CRONIUM_APP_H

#include <uv.h>
#include "cronium/audit.h"
#include "cronium/backend.h"
#include "cronium/cache.h"
#include "cronium/config.h"
#include "cronium/http.h"
#include "cronium/metrics.h"
#include "cronium/store.h"

typedef struct crt_api crt_api;

typedef enum { CRT_CHECK_UP, CRT_CHECK_DOWN, CRT_CHECK_DISABLED } crt_check_state;
typedef crt_check_state (*crt_check_fn)(void *ctx);

typedef struct crt_ready_check {
    const char *name;               /* "valkey", "backend" */
    crt_check_fn fn;
    void *ctx;
    bool critical;                  /* down: unready (503) rather than degraded */
} crt_ready_check;

#define CRT_MAX_READY_CHECKS 4

typedef struct crt_app {
    uv_loop_t *loop;
    const crt_config *cfg;
    crt_router *router;
    crt_server *server;
    crt_metrics *metrics;
    crt_backend *backend;           /* production: owned; NULL in dev mode or once released */
    crt_cache *cache;               /* production with cache.url: owned; NULL otherwise or once released */
    crt_store *store;               /* owned; the production store borrows both clients */
    crt_audit *audit;               /* owned; its backend sink borrows the backend client */
    crt_api *api;                   /* the execution API's handlers (auth, limits, endpoints) */
    crt_ready_check checks[CRT_MAX_READY_CHECKS];
    size_t nchecks;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool draining;
    char dev_env_file[512];         /* dev mode's export block; removed at shutdown */
    int exit_code;
    bool stopping;
    bool server_down;               /* the server has drained; the store and audit are stopping */
    crt_buf cors_origins;           /* parsed allowed origins, NUL-separated */
} crt_app;

int crt_app_init(crt_app *app, uv_loop_t *loop, const crt_config *cfg);
/* Listens and installs signal handlers. Returns 0 or a negative UV error. */
int crt_app_start(crt_app *app);
/* Starts a graceful stop (as on SIGTERM); app->server_down turns true once
 * the server has drained, and the loop runs dry once the rest has stopped. */
void crt_app_stop(crt_app *app);
void crt_app_fini(crt_app *app);

#endif
