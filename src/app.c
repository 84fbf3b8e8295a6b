/* The composition root (app.h): operational endpoints (/health, /ready,
 * /metrics), CORS, the access log, metrics per request, signals, and the
 * order in which everything is built and stopped. The store side (clients,
 * store, audit, ready checks) is in app_store.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/app.h"
#include "cronium/log.h"
#include "cronium/api.h"
#include "app_int.h"

static void on_health(crt_req *req, void *ctx)
{
    (void)ctx;
    /* No allocation here once the connection's buffers exist. */
    char ts[40];
    size_t n = crt_rfc3339(ts, sizeof ts, -1, true);
    crt_buf *b = &req->resp_body;
    crt_buf_reset(b);
    crt_buf_puts(b, "{\"status\":\"healthy\",\"time\":\"");
    crt_buf_append(b, ts, n);
    crt_buf_puts(b, "\"}");
    crt_req_respond(req, 200, "application/json", b->data, b->len);
}

static void on_ready(crt_req *req, void *ctx)
{
    crt_app *app = ctx;
    static const char *const names[] = {"up", "down", "disabled"};
    static const char *const want[] = {"valkey", "backend"};
    crt_check_state st[2] = {CRT_CHECK_DISABLED, CRT_CHECK_DISABLED};
    bool unready = app->stopping, degraded = false;
    for (size_t w = 0; w < 2; w++) {
        for (size_t i = 0; i < app->nchecks; i++) {
            if (strcmp(app->checks[i].name, want[w]) != 0)
                continue;
            st[w] = app->checks[i].fn(app->checks[i].ctx);
            if (st[w] == CRT_CHECK_DOWN && app->checks[i].critical)
                unready = true;
            else if (st[w] == CRT_CHECK_DOWN)
                degraded = true;
        }
    }
    /* server.workers > 1: unready unless every worker is up (metrics_shared.h). */
    unsigned wready = 0, wtotal = 0;
    bool workers = crt_metrics_workers_ready(app->metrics, &wready, &wtotal);
    if (workers && wready < wtotal)
        unready = true;
    /* An audit sink that lost events lately (or cannot take one now) is no
     * reason to take the pod out of rotation, but it shows. */
    bool lossy = crt_audit_lossy(app->audit);
    degraded |= lossy;
    /* Why the backend is down: unreachable, its token refused, 5xx (backend.h). */
    const char *why = st[1] == CRT_CHECK_DOWN && app->backend ? crt_backend_down_reason(app->backend) : NULL;
    crt_buf *b = &req->resp_body;
    crt_buf_reset(b);
    crt_buf_printf(b, "{\"status\":\"%s\",\"checks\":{\"valkey\":\"%s\",\"backend\":\"%s\",\"audit\":\"%s\"}",
                   unready ? "unready" : degraded ? "degraded" : "ready", names[st[0]], names[st[1]],
                   lossy ? "lossy" : "ok");
    if (why) {
        crt_buf_puts(b, ",\"reasons\":{\"backend\":");
        crt_buf_json_str(b, why, strlen(why));
        crt_buf_putc(b, '}');
    }
    if (workers)
        crt_buf_printf(b, ",\"workers\":{\"ready\":%u,\"total\":%u}", wready, wtotal);
    /* Where the rate limits are kept now: shared in Valkey, or this process's buckets. */
    if (app->api)
        crt_buf_printf(b, ",\"ratelimit\":\"%s\"", crt_api_ratelimit_mode(app->api));
    crt_buf_putc(b, '}');
    crt_req_respond(req, unready ? 503 : 200, "application/json", b->data, b->len);
}

static void on_metrics(crt_req *req, void *ctx)
{
    crt_app *app = ctx;
    crt_buf *b = &req->resp_body;
    crt_buf_reset(b);
    crt_metrics_render(app->metrics, b);
    crt_req_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b->data, b->len);
}

static double gauge_open_conns(void *ctx)
{
    crt_app *app = ctx;
    return (double)crt_server_open_connections(app->server);
}

static double gauge_rejected(void *ctx)
{
    crt_app *app = ctx;
    return (double)crt_server_rejected_connections(app->server);
}

static double gauge_accept_errors(void *ctx)
{
    crt_app *app = ctx;
    return (double)crt_server_accept_errors(app->server);
}

static double gauge_log_dropped(void *ctx)
{
    (void)ctx;
    return (double)crt_log_dropped();
}

/* ---- CORS ------------------------------------------------------------------------------ */

static bool origin_allowed(crt_app *app, crt_span origin, bool *wildcard)
{
    *wildcard = false;
    for (size_t off = 0; off < app->cors_origins.len;) {
        const char *o = app->cors_origins.data + off;
        size_t n = strlen(o);
        if (n == 1 && o[0] == '*') {
            *wildcard = true;
            return true;
        }
        if (crt_span_eq(origin, o, n))
            return true;
        off += n + 1;
    }
    return false;
}

static bool app_pre(crt_req *req, void *ctx)
{
    crt_app *app = ctx;
    if (!app->cfg->enable_cors)
        return false;
    crt_span origin = crt_req_header(req, "Origin");
    if (!origin.len)
        return false;
    bool wildcard;
    if (!origin_allowed(app, origin, &wildcard))
        return false;
    if (wildcard)
        crt_req_add_header(req, "Access-Control-Allow-Origin", "*", 1);
    else {
        crt_req_add_header(req, "Access-Control-Allow-Origin", origin.p, origin.len);
        crt_req_add_header(req, "Vary", "Origin", 6);
    }
    crt_req_add_header(req, "Access-Control-Expose-Headers",
                       "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After",
                       strlen("X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"));
    if (req->method == HTTP_OPTIONS && crt_req_header(req, "Access-Control-Request-Method").len) {
        static const char methods[] = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
        static const char headers[] = "Authorization, Content-Type, Accept, X-Request-Id";
        crt_req_add_header(req, "Access-Control-Allow-Methods", methods, sizeof methods - 1);
        crt_req_add_header(req, "Access-Control-Allow-Headers", headers, sizeof headers - 1);
        crt_req_add_header(req, "Access-Control-Max-Age", "600", 3);
        crt_req_respond(req, 204, NULL, NULL, 0);
        return true;
    }
    return false;
}

/* ---- access log and metrics ----------------------------------------------------------- */

/* The metrics label: the methods the API serves, else "OTHER", so a client
 * cannot create new series with exotic methods. */
static const char *method_label(const crt_req *req)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"};
    if (!req->method_name.len)
        return "-";
    for (size_t i = 0; i < CRT_ARRAY_LEN(known); i++)
        if (crt_span_eq(req->method_name, known[i], strlen(known[i])))
            return known[i];
    return "OTHER";
}

static void app_done(const crt_req *req, uint64_t dur_ns, void *ctx)
{
    crt_app *app = ctx;
    const char *method = req->method_name.len ? req->method_name.p : "-";
    crt_metrics_request(app->metrics, req->route_name, method_label(req), req->status, dur_ns);
    if (crt_log_enabled(CRT_LOG_INFO)) {
        CRT_LOGF(CRT_LOG_INFO, "request", CRT_LS("method", method), CRT_LS("route", req->route_name),
                 CRT_LSN("path", req->path.p, req->path.len), CRT_LI("status", req->status),
                 CRT_LI("bytes", req->resp_body_len), CRT_LD("duration_ms", (double)dur_ns / 1e6),
                 CRT_LSN("request_id", req->request_id, req->request_id_len), CRT_LS("client", req->client_ip));
    }
}

/* ---- signals ------------------------------------------------------------------------------ */

static crt_app *the_app; /* for the server's shutdown callback */

static void app_on_server_down(crt_server *s)
{
    (void)s;
    CRT_LOGF(CRT_LOG_INFO, "server stopped");
    if (!the_app)
        return;
    the_app->server_down = true;
    /* Only now: requests in flight still needed the store and backend. */
    crt_app_store_stop(the_app);
}

void crt_app_stop(crt_app *app)
{
    if (app->stopping)
        return;
    app->stopping = true;
    CRT_LOGF(CRT_LOG_INFO, "shutting down: finishing in-flight requests",
             CRT_LI("deadline_ms", app->cfg->shutdown_timeout_ms));
    /* A start that failed early has no signal handles yet (app is zeroed
     * by crt_app_init, so type is UV_UNKNOWN_HANDLE). */
    if (app->sigterm.type == UV_SIGNAL) {
        uv_signal_stop(&app->sigterm);
        uv_signal_stop(&app->sigint);
        uv_close((uv_handle_t *)&app->sigterm, NULL);
        uv_close((uv_handle_t *)&app->sigint, NULL);
    }
    the_app = app;
    if (app->server)
        crt_server_shutdown(app->server, app->cfg->shutdown_timeout_ms, app_on_server_down);
}

static void app_on_signal(uv_signal_t *h, int signum)
{
    crt_app *app = h->data;
    CRT_LOGF(CRT_LOG_INFO, "signal received", CRT_LS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"));
    crt_app_stop(app);
}

int crt_app_init(crt_app *app, uv_loop_t *loop, const crt_config *cfg)
{
    memset(app, 0, sizeof *app);
    app->loop = loop;
    app->cfg = cfg;
    app->router = crt_router_new();
    app->metrics = crt_metrics_new();
    if (!app->router || !app->metrics)
        return CRT_ENOMEM;
    /* Allowed origins as NUL-separated strings. */
    crt_buf_init(&app->cors_origins);
    const char *p = cfg->allowed_origins ? cfg->allowed_origins : "";
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (n) {
            crt_buf_append(&app->cors_origins, p, n);
            crt_buf_putc(&app->cors_origins, '\0');
        }
        p += n;
    }
    crt_server_opts so = {
        .host = cfg->host,
        .port = (int)cfg->port,
        .read_timeout_ms = cfg->read_timeout_ms,
        .write_timeout_ms = cfg->write_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .max_body_bytes = (size_t)cfg->max_body_bytes,
        .max_connections = (size_t)cfg->max_connections,
    };
    app->server = crt_server_new(loop, &so, app->router);
    if (!app->server)
        return CRT_ENOMEM;
    crt_server_set_hooks(app->server, app_pre, app_done, app);
    crt_router_add(app->router, "GET", "/health", on_health, app);
    crt_router_add(app->router, "GET", "/ready", on_ready, app);
    crt_router_add(app->router, "GET", "/metrics", on_metrics, app);
    crt_metrics_gauge(app->metrics, "cronium_runtime_open_connections", "Open client connections.", "",
                      gauge_open_conns, app);
    crt_metrics_counter_fn(app->metrics, "cronium_runtime_rejected_connections_total",
                      "Connections answered 503 because maxConnections was reached.", "", gauge_rejected, app);
    crt_metrics_counter_fn(app->metrics, "cronium_runtime_accept_errors_total",
                      "Connections the listener could not accept (EMFILE, ENFILE, ENOBUFS...).", "",
                      gauge_accept_errors, app);
    crt_metrics_counter_fn(app->metrics, "cronium_runtime_log_lines_dropped_total",
                      "Log lines dropped because stderr could not keep up.", "", gauge_log_dropped, app);
    char err[256] = "";
    if (crt_app_store_new(app, err, sizeof err)) {
        CRT_LOGF(CRT_LOG_ERROR, "cannot set up the execution API", CRT_LS("error", err));
        crt_app_store_free(app);    /* the clients' handles close as the loop runs */
        return CRT_EINVAL;
    }
    crt_api_opts ao = {
        .jwt_secret = cfg->jwt_secret,
        .jwt_algorithms = cfg->jwt_algorithms,
        .jwt_leeway_ms = cfg->jwt_leeway_ms,
        .jwt_issuer = cfg->jwt_issuer,
        .rate_limit_per_min = (uint64_t)cfg->rate_limit_per_min,
        .rate_limit_burst = (uint64_t)cfg->rate_limit_burst,
        .auth_failures_per_min = (uint64_t)cfg->auth_failures_per_min,
        .cache = cfg->rate_limit_store == 0 ? app->cache : NULL,  /* security.rateLimitStore valkey */
        .audit_reads = cfg->audit_reads,
        .router = app->router,
        .metrics = app->metrics,
        .store = app->store,
        .audit = app->audit,
    };
    app->api = crt_api_new(&ao);
    if (!app->api)
        return CRT_EINVAL;
    return 0;
}

int crt_app_start(crt_app *app)
{
    int rc = crt_server_listen(app->server);
    if (rc < 0)
        return rc;
    uv_signal_init(app->loop, &app->sigterm);
    uv_signal_init(app->loop, &app->sigint);
    app->sigterm.data = app->sigint.data = app;
    uv_signal_start(&app->sigterm, app_on_signal, SIGTERM);
    uv_signal_start(&app->sigint, app_on_signal, SIGINT);
    crt_app_store_announce(app);
    return 0;
}

void crt_app_fini(crt_app *app)
{
    crt_api_free(app->api);
    crt_app_store_free(app);
    crt_server_close(app->server, NULL, NULL);   /* the loop has run dry: frees now */
    crt_router_free(app->router);
    crt_metrics_free(app->metrics);
    crt_buf_fini(&app->cors_origins);
}
