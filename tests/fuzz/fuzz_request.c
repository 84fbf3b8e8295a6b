/* libFuzzer target over the real request path: the fuzzer's bytes go into a
 * real TCP connection to the real application (server, router, operational
 * endpoints, execution API, dev store), built in-process as main.c builds it.
 *
 * Per input:
 *   1. "@TOKEN@" in the input becomes a valid token for the dev execution
 *      ("dev-execution"), "@OTHER@" a valid token for another execution and
 *      "@EXPIRED@" an expired one, all minted at start-up with the project's
 *      own signing code (crt_token_mint) and a fixed secret.
 *   2. A fresh application listens on 127.0.0.1 (ephemeral port); a client on
 *      the same loop connects, writes the bytes, half-closes and reads until
 *      the server closes. A loop timer bounds this (LOOP_BUDGET_MS of loop
 *      time); no sleeping.
 *   3. What came back is parsed and the target aborts (libFuzzer reports it)
 *      on: a 500, a malformed status line or header, a Content-Length that
 *      disagrees with the bytes that followed, bytes after "Connection:
 *      close", a JSON body that is not JSON, an error without the docs/api.md §3
 *      envelope, a reset, or a connection the server never closes.
 *   4. The application is stopped and freed and the loop must be empty, so
 *      no state (dev store, rate limits, metrics series) carries over from
 *      one input to the next: every finding reproduces from its input alone
 *      and memory stays bounded (-detect_leaks=1 stays meaningful).
 *
 * Environment: FUZZ_REQUEST_VERBOSE=1 prints each exchange; FUZZ_REQUEST_LOG=1
 * turns the service's debug log on; FUZZ_REQUEST_SKIP=tag,tag ignores the
 * named checks of the answers (tags in brackets in each report), for a long
 * run while a defect it keeps finding is still open. */
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <llhttp.h>
#include <uv.h>
#include <curl/curl.h>
#include "cronium/app.h"
#include "cronium/map.h"
#include "cronium/log.h"
#include "cronium/jwt.h"

/* Built twice (tests/fuzz/meson.build): fuzz_request runs the dev store;
 * fuzz_request_prod (-DFUZZ_REQUEST_PROD=1) the production store, with the
 * backend played in-process by a fake built on the project's own HTTP server
 * (no Valkey: the cache is optional). */
#ifndef FUZZ_REQUEST_PROD
#define FUZZ_REQUEST_PROD 0
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SECRET "fuzz-request-secret-0123456789abcdef"
#define FUZZ_EXEC "dev-execution"         /* the dev store's seeded execution */
#define LOOP_BUDGET_MS 4000               /* loop time for one exchange */
#define MAX_REQS 512                      /* requests tracked per input */
#define MAX_RESPONSE (8u << 20)           /* more than this back is a failure */

/* ---- set-up shared by every input ----------------------------------------------------- */

typedef struct placeholder {
    const char *name;
    crt_buf value;
} placeholder;

static crt_config g_cfg;
static uv_loop_t g_loop;
static placeholder g_ph[] = {{"@TOKEN@", {0}}, {"@OTHER@", {0}}, {"@EXPIRED@", {0}}};
static bool g_verbose;

/* The failure context, printed before abort() so a report says what was sent. */
static const char *g_in;
static size_t g_in_len;
static const char *g_out;
static size_t g_out_len;

static void dump(const char *label, const char *p, size_t n)
{
    fprintf(stderr, "---- %s (%zu bytes) ----\n", label, n);
    size_t shown = n > 4096 ? 4096 : n;
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\n' || (ch >= 0x20 && ch < 0x7f))
            fputc(ch, stderr);
        else if (ch == '\r')
            fputs("\\r", stderr);
        else
            fprintf(stderr, "\\x%02x", ch);
    }
    if (shown < n)
        fputs("\n[...]", stderr);
    fputs("\n", stderr);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("==fuzz_request== ERROR: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    if (g_in)
        dump("sent", g_in, g_in_len);
    if (g_out)
        dump("received", g_out, g_out_len);
    abort();
}

/* A failed check of the answers, tagged: aborts unless FUZZ_REQUEST_SKIP
 * names the tag, in which case it returns true and the rest of this answer
 * goes unchecked. */
static bool bad(const char *tag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool bad(const char *tag, const char *fmt, ...)
{
    const char *skip = getenv("FUZZ_REQUEST_SKIP");
    size_t tl = strlen(tag);
    for (const char *p = skip; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n == tl && memcmp(p, tag, n) == 0)
            return true;
        p += n + (p[n] == ',');
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail("[%s] %s", tag, msg);
}

static void set_str(char **field, const char *v)
{
    free(*field);
    *field = v ? strdup(v) : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    g_verbose = getenv("FUZZ_REQUEST_VERBOSE") && *getenv("FUZZ_REQUEST_VERBOSE") == '1';
    crt_buf err;
    crt_buf_init(&err);
    if (crt_config_defaults(&g_cfg, &err) != 0)
        fail("config defaults: %s", crt_buf_cstr(&err));
    /* Dev mode as `cronium-runtime --dev` runs it, with a fixed secret so the
     * placeholders can carry valid tokens, CORS on (more code reached),
     * limits high enough that the fuzzer is not throttled into 429s only, and
     * short timeouts so a slow path costs little. */
    set_str(&g_cfg.host, "127.0.0.1");
    g_cfg.port = 0;
    g_cfg.dev = true;
    set_str(&g_cfg.jwt_secret, FUZZ_SECRET);
    g_cfg.read_timeout_ms = 1000;
    g_cfg.write_timeout_ms = 1000;
    g_cfg.idle_timeout_ms = 1000;
    g_cfg.shutdown_timeout_ms = 500;
    g_cfg.max_body_bytes = 64 * 1024;
    g_cfg.max_connections = 16;
    g_cfg.rate_limit_per_min = 1000000;
    g_cfg.rate_limit_burst = 1000000;
    g_cfg.auth_failures_per_min = 1000000;
    g_cfg.enable_cors = true;
    set_str(&g_cfg.allowed_origins, "https://ok.example, http://localhost:3000");
    if (FUZZ_REQUEST_PROD) {
        /* The URL is the fake's, set per input; validation needs one now. */
        g_cfg.dev = false;
        set_str(&g_cfg.backend_url, "http://127.0.0.1:1");
        set_str(&g_cfg.backend_token, "fuzz-backend-token");
        g_cfg.backend_timeout_ms = 300;
        g_cfg.backend_max_retries = 1;
        g_cfg.backend_retry_delay_ms = 10;
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            fail("curl_global_init");
    }
    if (crt_config_validate(&g_cfg, &err) != 0)
        fail("config: %s", crt_buf_cstr(&err));
    crt_buf_fini(&err);
    crt_log_setup(getenv("FUZZ_REQUEST_LOG") ? CRT_LOG_DEBUG : CRT_LOG_ERROR, CRT_LOG_TEXT);

    for (size_t i = 0; i < CRT_ARRAY_LEN(g_ph); i++)
        crt_buf_init(&g_ph[i].value);
    if (crt_token_mint(FUZZ_SECRET, FUZZ_EXEC, "dev-user", "dev-job", "dev-event", g_cfg.jwt_issuer, 24 * 3600,
                       &g_ph[0].value) ||
        crt_token_mint(FUZZ_SECRET, "other-execution", "dev-user", NULL, NULL, g_cfg.jwt_issuer, 24 * 3600,
                       &g_ph[1].value) ||
        crt_token_mint(FUZZ_SECRET, FUZZ_EXEC, "dev-user", NULL, NULL, g_cfg.jwt_issuer, -3600, &g_ph[2].value))
        fail("cannot mint the tokens");
    if (uv_loop_init(&g_loop) != 0)
        fail("uv_loop_init");
    return 0;
}

/* ---- the backend, faked in-process (production variant) ------------------------------ */

/* Answers docs/api.md §6 like the real backend: contexts of two executions,
 * variables per user in a map, output/condition/tool/audit acknowledged.
 * Built and freed with each input, like the application. */
typedef struct fake_backend {
    crt_router *router;
    crt_server *server;
    crt_map *vars;              /* "userId\0key" -> crt_buf * (the stored text as JSON) */
    bool down;
} fake_backend;

static void fake_free_var(void *v)
{
    crt_buf_fini(v);
    free(v);
}

static void fake_json(crt_req *r, int status, const char *body)
{
    crt_buf *b = &r->resp_body;
    crt_buf_reset(b);
    crt_buf_puts(b, body);
    crt_req_respond(r, status, "application/json", b->data, b->len);
}

static void fake_context(crt_req *r, void *ctx)
{
    (void)ctx;
    crt_span id = r->params[0];
    bool known = crt_span_eq(id, FUZZ_EXEC, strlen(FUZZ_EXEC)) || crt_span_eq(id, "other-execution", 15);
    if (!known) {
        fake_json(r, 404, "{\"error\":\"Execution not found\"}");
        return;
    }
    crt_buf *b = &r->resp_body;
    crt_buf_reset(b);
    crt_buf_puts(b, "{\"executionId\":");
    crt_buf_json_str(b, id.p, id.len);
    crt_buf_puts(b, ",\"jobId\":\"dev-job\",\"eventId\":\"dev-event\",\"userId\":\"dev-user\","
                    "\"metadata\":{\"input\":{\"message\":\"hi\",\"count\":3,\"tags\":[\"a\",\"b\"]}},"
                    "\"event\":{\"id\":\"dev-event\",\"name\":\"Fuzz\",\"type\":\"manual\"},"
                    "\"user\":{\"id\":\"dev-user\",\"name\":\"Fuzz User\"}}");
    crt_req_respond(r, 200, "application/json", b->data, b->len);
}

static void fake_var_key(crt_req *r, crt_buf *k)
{
    crt_buf_append(k, r->params[0].p, r->params[0].len);
    crt_buf_putc(k, '\0');
    crt_buf_append(k, r->params[1].p, r->params[1].len);
}

static void fake_var_get(crt_req *r, void *ctx)
{
    fake_backend *fb = ctx;
    crt_buf k;
    crt_buf_init(&k);
    fake_var_key(r, &k);
    crt_buf *v = crt_map_get(fb->vars, k.data, k.len);
    crt_buf_fini(&k);
    if (!v) {
        fake_json(r, 404, "{\"error\":\"Variable not found\"}");
        return;
    }
    crt_buf *b = &r->resp_body;
    crt_buf_reset(b);
    crt_buf_puts(b, "{\"key\":");
    crt_buf_json_str(b, r->params[1].p, r->params[1].len);
    crt_buf_puts(b, ",\"value\":");
    crt_buf_append(b, v->data, v->len);
    crt_buf_puts(b, ",\"updatedAt\":\"2026-01-01T00:00:00.000Z\"}");
    crt_req_respond(r, 200, "application/json", b->data, b->len);
}

static void fake_var_put(crt_req *r, void *ctx)
{
    fake_backend *fb = ctx;
    json_t *doc = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *val = doc ? json_object_get(doc, "value") : NULL;
    char *text = val ? json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        fake_json(r, 400, "{\"error\":\"value required\"}");
        return;
    }
    crt_buf k;
    crt_buf_init(&k);
    fake_var_key(r, &k);
    void **slot = crt_map_slot(fb->vars, k.data, k.len, true);
    crt_buf_fini(&k);
    if (!slot) {
        free(text);
        fake_json(r, 503, "{\"error\":\"full\"}");
        return;
    }
    if (!*slot) {
        crt_buf *nb = malloc(sizeof *nb);
        if (!nb)
            abort();
        crt_buf_init(nb);
        *slot = nb;
    }
    crt_buf_reset(*slot);
    crt_buf_puts(*slot, text);
    free(text);
    fake_json(r, 200, "{\"success\":true}");
}

static void fake_var_del(crt_req *r, void *ctx)
{
    fake_backend *fb = ctx;
    crt_buf k;
    crt_buf_init(&k);
    fake_var_key(r, &k);
    crt_buf *v = crt_map_del(fb->vars, k.data, k.len);
    crt_buf_fini(&k);
    if (v)
        fake_free_var(v);
    fake_json(r, v ? 200 : 404, v ? "{\"success\":true}" : "{\"error\":\"Variable not found\"}");
}

static void fake_ok(crt_req *r, void *ctx)
{
    (void)ctx;
    fake_json(r, 200, "{\"success\":true}");
}

static void fake_tool(crt_req *r, void *ctx)
{
    (void)ctx;
    fake_json(r, 200, "{\"success\":true,\"data\":{\"sent\":true},\"metadata\":{\"fake\":1}}");
}

static void fake_start(fake_backend *fb)
{
    memset(fb, 0, sizeof *fb);
    fb->router = crt_router_new();
    fb->vars = crt_map_new();
    crt_server_opts so = {.host = "127.0.0.1", .port = 0, .read_timeout_ms = 2000, .write_timeout_ms = 2000,
                          .idle_timeout_ms = 2000, .max_body_bytes = 4u << 20, .max_connections = 64};
    fb->server = fb->router ? crt_server_new(&g_loop, &so, fb->router) : NULL;
    if (!fb->server || !fb->vars)
        fail("fake backend: out of memory");
    crt_router_add(fb->router, "GET", "/api/internal/executions/{id}/context", fake_context, fb);
    crt_router_add(fb->router, "GET", "/api/internal/variables/{user}/{key}", fake_var_get, fb);
    crt_router_add(fb->router, "PUT", "/api/internal/variables/{user}/{key}", fake_var_put, fb);
    crt_router_add(fb->router, "DELETE", "/api/internal/variables/{user}/{key}", fake_var_del, fb);
    crt_router_add(fb->router, "POST", "/api/internal/executions/{id}/output", fake_ok, fb);
    crt_router_add(fb->router, "POST", "/api/internal/executions/{id}/condition", fake_ok, fb);
    crt_router_add(fb->router, "POST", "/api/internal/tools/execute", fake_tool, fb);
    crt_router_add(fb->router, "POST", "/api/internal/audit", fake_ok, fb);
    int rc = crt_server_listen(fb->server);
    if (rc < 0)
        fail("fake backend: listen: %s", uv_strerror(rc));
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", crt_server_port(fb->server));
    set_str(&g_cfg.backend_url, url);
}

static fake_backend *g_fake_stopping;

static void fake_on_down(crt_server *s)
{
    (void)s;
    g_fake_stopping->down = true;
}

static void fake_stop(fake_backend *fb)
{
    g_fake_stopping = fb;
    crt_server_shutdown(fb->server, 500, fake_on_down);
    for (int i = 0; i < 100000 && !fb->down; i++)
        uv_run(&g_loop, UV_RUN_ONCE);
    if (!fb->down)
        fail("the fake backend did not shut down");
}

static void fake_free(fake_backend *fb)
{
    crt_server_free(fb->server);
    crt_router_free(fb->router);
    crt_map_free(fb->vars, fake_free_var);
}

/* Copies in to out, replacing each placeholder by its token. */
static void substitute(const uint8_t *in, size_t n, crt_buf *out)
{
    size_t i = 0;
    while (i < n) {
        bool hit = false;
        if (in[i] == '@') {
            for (size_t k = 0; k < CRT_ARRAY_LEN(g_ph); k++) {
                size_t pl = strlen(g_ph[k].name);
                if (n - i >= pl && memcmp(in + i, g_ph[k].name, pl) == 0) {
                    crt_buf_append(out, g_ph[k].value.data, g_ph[k].value.len);
                    i += pl;
                    hit = true;
                    break;
                }
            }
        }
        if (!hit)
            crt_buf_putc(out, (char)in[i++]);
    }
}

/* ---- what was sent: the methods of the requests, in order ---------------------------- */

typedef struct req_info {
    bool method_known;          /* the method was parsed (the request may still be bad) */
    llhttp_method_t method;
} req_info;

typedef struct req_scan {
    req_info reqs[MAX_REQS];
    size_t n;
} req_scan;

static int scan_on_begin(llhttp_t *p)
{
    req_scan *s = p->data;
    if (s->n < MAX_REQS)
        s->reqs[s->n] = (req_info){0};
    s->n++;
    return 0;
}

static int scan_on_method_complete(llhttp_t *p)
{
    req_scan *s = p->data;
    if (s->n && s->n <= MAX_REQS) {
        s->reqs[s->n - 1].method_known = true;
        s->reqs[s->n - 1].method = (llhttp_method_t)llhttp_get_method(p);
    }
    return 0;
}

/* Parses the input as the server's parser does (same llhttp, default
 * settings) to learn which answers belong to HEAD requests. Upgrade requests
 * are read on as HTTP, as the server must treat them. */
static void scan_requests(const char *p, size_t n, req_scan *s)
{
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = scan_on_begin;
    st.on_method_complete = scan_on_method_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_REQUEST, &st);
    parser.data = s;
    s->n = 0;
    const char *at = p;
    size_t left = n;
    while (left) {
        llhttp_errno_t e = llhttp_execute(&parser, at, left);
        if (e != HPE_PAUSED_UPGRADE)
            break;
        size_t used = (size_t)(llhttp_get_error_pos(&parser) - at);
        at += used;
        left -= used;
        llhttp_resume_after_upgrade(&parser);
        if (!used)
            break;
    }
}

/* ---- what came back --------------------------------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool name_is(const char *p, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(p, want, n) == 0;
}

/* The docs/api.md §3 error envelope: an object with success false and string
 * error, message and code. Returns false when a skipped check failed. */
static bool check_error_envelope(int status, const char *body, size_t len)
{
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &je);
    if (!v)
        return !bad("json", "%d: body is not JSON: %s", status, je.text);
    bool ok = json_is_object(v) && json_is_false(json_object_get(v, "success")) &&
              json_is_string(json_object_get(v, "error")) && json_is_string(json_object_get(v, "message")) &&
              json_is_string(json_object_get(v, "code"));
    json_decref(v);
    return ok || !bad("envelope", "%d: error body is not the docs/api.md section 3 envelope", status);
}

static bool check_json(int status, const char *body, size_t len)
{
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &je);
    if (!v)
        return !bad("json", "%d: application/json body is not JSON: %s", status, je.text);
    json_decref(v);
    return true;
}

/* Walks the responses: status line, headers, body by Content-Length. */
static void check_responses(const char *p, size_t n, const req_scan *s)
{
    size_t pos = 0, idx = 0;
    bool closed = false;
    while (pos < n) {
        if (closed &&
            bad("after-close", "bytes after a response that said Connection: close"))
            return;
        const char *line = p + pos;
        const char *eol = memmem(line, n - pos, "\r\n", 2);
        if (!eol &&
            bad("status-line", "status line not terminated by CRLF at offset %zu", pos))
            return;
        size_t ll = (size_t)(eol - line);
        /* "HTTP/1.1 NNN Reason" */
        if ((ll < 13 || memcmp(line, "HTTP/1.1 ", 9) != 0 || line[12] != ' ') &&
            bad("status-line", "malformed status line at offset %zu", pos))
            return;
        int status = 0;
        for (int i = 9; i < 12; i++) {
            if ((line[i] < '0' || line[i] > '9') &&
                bad("status-line", "malformed status code at offset %zu", pos))
                return;
            status = status * 10 + (line[i] - '0');
        }
        if ((status < 100 || status > 599) &&
            bad("status-line", "status %d out of range", status))
            return;
        for (size_t i = 13; i < ll; i++)
            if ((unsigned char)line[i] < 0x20 && line[i] != '\t' &&
                bad("status-line", "control character in the reason phrase"))
                return;
        pos += ll + 2;

        bool have_cl = false, conn_close = false, have_rid = false, json = false;
        size_t cl = 0;
        for (;;) {
            const char *h = p + pos;
            const char *he = memmem(h, n - pos, "\r\n", 2);
            if (!he &&
                bad("header", "response head not terminated (status %d)", status))
                return;
            size_t hl = (size_t)(he - h);
            pos += hl + 2;
            if (hl == 0)
                break;
            const char *colon = memchr(h, ':', hl);
            if ((!colon || colon == h) &&
                bad("header", "malformed header line in a %d response", status))
                return;
            for (const char *q = h; q < colon; q++)
                if (!is_tchar((unsigned char)*q) &&
                    bad("header", "bad character in a header name of a %d response", status))
                    return;
            const char *v = colon + 1;
            size_t vl = hl - (size_t)(v - h);
            while (vl && (*v == ' ' || *v == '\t'))
                v++, vl--;
            for (size_t i = 0; i < vl; i++)
                if ((((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f) &&
                    bad("header", "control character in a header value of a %d response", status))
                    return;
            size_t nl = (size_t)(colon - h);
            if (name_is(h, nl, "Content-Length")) {
                if (have_cl &&
                    bad("header", "two Content-Length headers in a %d response", status))
                    return;
                if ((!vl || vl > 12) &&
                    bad("header", "bad Content-Length in a %d response", status))
                    return;
                for (size_t i = 0; i < vl; i++) {
                    if ((v[i] < '0' || v[i] > '9') &&
                        bad("header", "bad Content-Length in a %d response", status))
                        return;
                    cl = cl * 10 + (size_t)(v[i] - '0');
                }
                have_cl = true;
            } else if (name_is(h, nl, "Transfer-Encoding")) {
                if (bad("header", "Transfer-Encoding in a response (the server only sends Content-Length)"))
                    return;
            } else if (name_is(h, nl, "Connection")) {
                conn_close = vl == 5 && strncasecmp(v, "close", 5) == 0;
            } else if (name_is(h, nl, "X-Request-Id")) {
                have_rid = vl > 0;
            } else if (name_is(h, nl, "Content-Type")) {
                json = vl >= 16 && strncasecmp(v, "application/json", 16) == 0;
            }
        }

        if (status == 100) {
            if (have_cl &&
                bad("interim", "100 Continue with a Content-Length"))
                return;
            continue;                   /* interim: the final answer follows */
        }
        if (status < 200 &&
            bad("interim", "unexpected interim status %d", status))
            return;
        if (status == 500 &&
            bad("500", "500 answer (a bug by docs/api.md section 3)"))
            return;
        if (!have_rid &&
            bad("request-id", "%d response without X-Request-Id", status))
            return;
        if (status == 204 && have_cl &&
            bad("204-length", "204 response with a Content-Length (RFC 9110 section 8.6)"))
            return;
        if (!have_cl && status != 204 && status != 304 &&
            bad("length", "%d response without Content-Length", status))
            return;

        const req_info *ri = idx < s->n && idx < MAX_REQS ? &s->reqs[idx] : NULL;
        bool head = ri && ri->method_known && ri->method == HTTP_HEAD;
        size_t left = n - pos;
        size_t body = cl;
        if (status == 204 || status == 304) {
            body = 0;
        } else if (head && conn_close) {
            /* The last answer to a HEAD, closing: a HEAD the server refused
             * (its parser is stricter than a default llhttp, e.g. obs-fold)
             * may be answered with or without the error body. */
            if (left != cl && left != 0 &&
                bad("length", "%d closing answer to a HEAD: Content-Length %zu, %zu bytes followed", status, cl,
                    left))
                return;
            body = left == cl ? cl : 0;
        } else if (head) {
            body = 0;                   /* a HEAD answer has no body */
        }
        if (left < body &&
            bad("length", "%d response: Content-Length %zu but only %zu bytes followed", status, cl, left))
            return;
        if (body && status >= 400 && !check_error_envelope(status, p + pos, body))
            return;
        if (body && status < 400 && json && !check_json(status, p + pos, body))
            return;
        pos += body;
        idx++;
        closed = conn_close;
    }
}

/* ---- one exchange on the loop ------------------------------------------------------------ */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uv_timer_t timer;
    const char *data;
    size_t len;
    crt_buf got;
    int handles;                /* open handles until their close callbacks */
    bool done;                  /* the server closed (or an error ended it) */
    bool timed_out;
    int error;                  /* a UV error that ended the exchange */
    const char *error_where;
} client;

static void client_on_close(uv_handle_t *h)
{
    client *c = h->data;
    c->handles--;
}

static void client_end(client *c, int error, const char *where)
{
    if (c->done)
        return;
    c->done = true;
    if (error && !c->error) {
        c->error = error;
        c->error_where = where;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rbuf[64 * 1024];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void client_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    client *c = crt_container_of((uv_tcp_t *)st, client, tcp);
    if (nread > 0) {
        crt_buf_append(&c->got, buf->base, (size_t)nread);
        if (c->got.len > MAX_RESPONSE)
            client_end(c, UV_E2BIG, "read");
    } else if (nread == UV_EOF) {
        client_end(c, 0, NULL);
    } else if (nread < 0) {
        client_end(c, (int)nread, "read");
    }
}

static void client_on_shutdown(uv_shutdown_t *r, int status)
{
    client *c = r->data;
    /* ENOTCONN: the server was quicker and already closed. */
    if (status < 0 && status != UV_ENOTCONN && status != UV_ECANCELED)
        client_end(c, status, "shutdown");
}

static void client_on_write(uv_write_t *w, int status)
{
    client *c = w->data;
    /* The server may answer and close before reading everything (a 413, a
     * 431): EPIPE/ECONNRESET on our write is then expected; whether the
     * answer arrived is judged from what was read. */
    if (status < 0 && status != UV_EPIPE && status != UV_ECONNRESET && status != UV_ECANCELED)
        client_end(c, status, "write");
}

static void client_on_connect(uv_connect_t *r, int status)
{
    client *c = r->data;
    if (status < 0) {
        client_end(c, status, "connect");
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_on_read);
    if (c->len) {
        uv_buf_t b = uv_buf_init((char *)c->data, (unsigned)c->len);
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_on_write) < 0)
            client_end(c, UV_EIO, "write");
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, client_on_shutdown) < 0)
        client_end(c, UV_EIO, "shutdown");
}

static void client_on_timer(uv_timer_t *t)
{
    client *c = t->data;
    c->timed_out = true;
    client_end(c, 0, NULL);
}

static void count_open(uv_handle_t *h, void *arg)
{
    size_t *n = arg;
    if (!uv_is_closing(h))
        (*n)++;
    if (g_verbose)
        fprintf(stderr, "fuzz_request: handle left: %s\n", uv_handle_type_name(h->type));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crt_buf in;
    crt_buf_init(&in);
    substitute(data, size, &in);
    g_in = in.data;
    g_in_len = in.len;
    g_out = NULL;
    g_out_len = 0;

    static req_scan scan;
    scan_requests(in.data ? in.data : "", in.len, &scan);

    fake_backend fb;
    if (FUZZ_REQUEST_PROD)
        fake_start(&fb);
    crt_app app;
    if (crt_app_init(&app, &g_loop, &g_cfg) != 0)
        fail("crt_app_init failed");
    int rc = crt_server_listen(app.server);
    if (rc < 0)
        fail("listen: %s", uv_strerror(rc));
    struct sockaddr_in sa;
    int port = crt_server_port(app.server);
    if (port <= 0 || uv_ip4_addr("127.0.0.1", port, &sa) != 0)
        fail("no listening port");

    client c;
    memset(&c, 0, sizeof c);
    c.data = in.data;
    c.len = in.len;
    crt_buf_init(&c.got);
    uv_tcp_init(&g_loop, &c.tcp);
    c.tcp.data = &c;
    uv_timer_init(&g_loop, &c.timer);
    c.timer.data = &c;
    c.handles = 2;
    c.creq.data = &c;
    uv_timer_start(&c.timer, client_on_timer, LOOP_BUDGET_MS, 0);
    if (uv_tcp_connect(&c.creq, &c.tcp, (struct sockaddr *)&sa, client_on_connect) < 0)
        fail("connect failed");
    while (!c.done)
        uv_run(&g_loop, UV_RUN_ONCE);
    uv_timer_stop(&c.timer);
    uv_close((uv_handle_t *)&c.timer, client_on_close);
    uv_close((uv_handle_t *)&c.tcp, client_on_close);

    g_out = c.got.data;
    g_out_len = c.got.len;
    if (g_verbose) {
        dump("sent", in.data ? in.data : "", in.len);
        dump("received", c.got.data ? c.got.data : "", c.got.len);
    }
    if (c.timed_out)
        (void)bad("never-closed", "the server did not close the connection within %d ms of loop time",
                  LOOP_BUDGET_MS);
    else if (c.error == UV_ECONNRESET)
        (void)bad("reset", "connection reset by the server (%s): an answer may have been lost", c.error_where);
    else if (c.error)
        fail("client %s: %s", c.error_where, uv_strerror(c.error));
    check_responses(c.got.data ? c.got.data : "", c.got.len, &scan);

    /* Stop as on SIGTERM (the app's own shutdown order) and let every handle close. */
    crt_app_stop(&app);
    /* Bounded: the server's shutdown deadline ends it at the latest. */
    for (int i = 0; i < 100000 && (!app.server_down || c.handles); i++)
        uv_run(&g_loop, UV_RUN_ONCE);
    if (!app.server_down)
        fail("the server did not finish shutting down");
    if (FUZZ_REQUEST_PROD)
        fake_stop(&fb);
    for (int i = 0; i < 1000 && uv_loop_alive(&g_loop); i++)
        uv_run(&g_loop, UV_RUN_NOWAIT);
    size_t open = 0;
    uv_walk(&g_loop, count_open, &open);
    if (open || uv_loop_alive(&g_loop))
        fail("%zu handles still open after the application stopped", open);
    crt_app_fini(&app);
    if (FUZZ_REQUEST_PROD)
        fake_free(&fb);
    crt_buf_fini(&c.got);
    crt_buf_fini(&in);
    g_in = g_out = NULL;
    return 0;
}
