/* The application: owns the loop's long-lived parts (server, router, metrics,
 * store, auth) and wires them together. One per process. */
#ifndef CRONIUM_APP_H
#define CRONIUM_APP_H

#include <uv.h>
#include "cronium/config.h"
#include "cronium/http.h"
#include "cronium/metrics.h"

typedef struct crt_runtime crt_runtime;

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
    crt_runtime *runtime;           /* the execution API (auth, store, limits) */
    crt_ready_check checks[CRT_MAX_READY_CHECKS];
    size_t nchecks;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    int exit_code;
    bool stopping;
    crt_buf cors_origins;           /* parsed allowed origins, NUL-separated */
} crt_app;

int crt_app_init(crt_app *app, uv_loop_t *loop, const crt_config *cfg);
/* Listens and installs signal handlers. Returns 0 or a negative UV error. */
int crt_app_start(crt_app *app);
/* Starts a graceful stop (as on SIGTERM). */
void crt_app_stop(crt_app *app);
void crt_app_fini(crt_app *app);
int crt_app_add_ready_check(crt_app *app, const char *name, crt_check_fn fn, void *ctx, bool critical);

#endif
