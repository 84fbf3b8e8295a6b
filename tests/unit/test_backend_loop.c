/* Loop-driven tests of the backend client (src/backend/backend.c) against an
 * in-process HTTP responder on a uv_tcp listener (127.0.0.1:0): retries with
 * backoff, cancellation in flight, redirects never followed, answers over
 * the size cap refused. Each test ends with every handle closed and
 * uv_loop_close() == 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "cronium/backend.h"
#include "cronium/common.h"

/* ---- the responder ------------------------------------------------------------------------- */

typedef enum { R_REPLY, R_HOLD, R_HUGE } reply_kind;

typedef struct responder {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    const char *replies[8];         /* answered in order; the last repeats */
    int nreplies;
    reply_kind kind;
    int requests;                   /* request heads received */
    int accepted;
    int open_conns;
    uint64_t first_ms, last_ms;     /* when the first and the last request arrived */
} responder;

typedef struct rconn {
    uv_tcp_t tcp;
    responder *r;
    char head[8192];
    size_t len;
    bool answered;
} rconn;

typedef struct wreq {
    uv_write_t w;
    char *data;
    bool close_after;
} wreq;

static void on_rconn_closed(uv_handle_t *h)
{
    rconn *c = h->data;
    c->r->open_conns--;
    free(c);
}

static void rconn_close(rconn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_rconn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    wreq *q = (wreq *)w;
    rconn *c = w->data;
    (void)status;
    if (q->close_after)
        rconn_close(c);
    free(q->data);
    free(q);
}

static void send_bytes(rconn *c, const char *p, size_t n, bool close_after)
{
    wreq *q = calloc(1, sizeof *q);
    q->data = malloc(n ? n : 1);
    memcpy(q->data, p, n);
    q->close_after = close_after;
    q->w.data = c;
    uv_buf_t b = uv_buf_init(q->data, (unsigned)n);
    if (uv_write(&q->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(q->data);
        free(q);
        rconn_close(c);
    }
}

static void answer(rconn *c)
{
    responder *r = c->r;
    int i = r->requests - 1;
    if (i >= r->nreplies)
        i = r->nreplies - 1;
    if (r->kind == R_HOLD)
        return;                     /* never answers */
    if (r->kind == R_HUGE) {
        /* 9 MiB, close-delimited (no Content-Length for curl to refuse early). */
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        send_bytes(c, head, sizeof head - 1, false);
        size_t chunk = 1u << 20;
        char *buf = malloc(chunk);
        memset(buf, 'x', chunk);
        for (int k = 0; k < 9; k++)
            send_bytes(c, buf, chunk, k == 8);
        free(buf);
        return;
    }
    send_bytes(c, r->replies[i], strlen(r->replies[i]), true);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    rconn *c = h->data;
    (void)sz;
    size_t room = sizeof c->head - c->len - 1;
    *buf = uv_buf_init(c->head + c->len, (unsigned)(room ? room : 1));
}

static void on_rread(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    rconn *c = s->data;
    (void)buf;
    if (n < 0) {
        rconn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->head[c->len] = '\0';
    if (!c->answered && strstr(c->head, "\r\n\r\n")) {
        c->answered = true;
        responder *r = c->r;
        uint64_t now = uv_now(r->loop);
        if (!r->requests)
            r->first_ms = now;
        r->last_ms = now;
        r->requests++;
        answer(c);
    }
}

static void on_conn(uv_stream_t *l, int status)
{
    responder *r = l->data;
    if (status < 0)
        return;
    rconn *c = calloc(1, sizeof *c);
    c->r = r;
    uv_tcp_init(r->loop, &c->tcp);
    c->tcp.data = c;
    r->open_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) == 0) {
        r->accepted++;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_rread);
    } else {
        rconn_close(c);
    }
}

static void responder_start(responder *r, uv_loop_t *loop)
{
    r->loop = loop;
    assert_int_equal(uv_tcp_init(loop, &r->listener), 0);
    r->listener.data = r;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&r->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r->listener, 16, on_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&ss, &len);
    r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        if (h->type == UV_TCP && h->data) {
            /* responder connections carry an rconn; the listener its responder */
            responder *maybe = h->data;
            if ((uv_handle_t *)&maybe->listener == h) {
                uv_close(h, NULL);
                return;
            }
            rconn_close(h->data);
            return;
        }
        uv_close(h, NULL);
    }
}

/* ---- the client side ------------------------------------------------------------------------ */

typedef struct result {
    int calls;
    int err;
    long status;
    int attempts;
    size_t len;
    char body[256];
} result;

static void on_resp(void *ud, const crt_backend_resp *r)
{
    result *res = ud;
    res->calls++;
    res->err = r->err;
    res->status = r->status;
    res->attempts = r->attempts;
    res->len = r->len;
    snprintf(res->body, sizeof res->body, "%.*s", (int)(r->len < 255 ? r->len : 255), r->body);
}

typedef struct fixture {
    uv_loop_t loop;
    crt_metrics *m;
    crt_backend *b;
    responder r;
    responder other;                /* a redirect target: must see nothing */
    char url[64];
} fixture;

static void fixture_init(fixture *f, uint64_t attempt_timeout_ms, uint64_t deadline_ms)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->m = crt_metrics_new();
    responder_start(&f->r, &f->loop);
    responder_start(&f->other, &f->loop);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->r.port);
    crt_backend_opts o = {
        .base_url = f->url,
        .token = "secret-token",
        .attempt_timeout_ms = attempt_timeout_ms,
        .max_retries = 3,
        .retry_delay_ms = 40,
        .deadline_ms = deadline_ms,
        .max_connections = 4,
    };
    f->b = crt_backend_new(&f->loop, &o, f->m);
    assert_non_null(f->b);
}

static void run_until(fixture *f, const result *res, uint64_t max_ms)
{
    uint64_t end = uv_now(&f->loop) + max_ms;
    while (res->calls == 0 && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void fixture_fini(fixture *f)
{
    crt_backend_free(f->b);
    uv_walk(&f->loop, close_walk, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->r.open_conns, 0);
    assert_int_equal(f->other.open_conns, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    crt_metrics_free(f->m);
}

/* ---- tests ------------------------------------------------------------------------------------ */

static const char R503[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
static const char R200[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}";

static void test_retries_503_with_backoff_then_success(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 1000, 5000);
    f.r.replies[0] = R503;
    f.r.replies[1] = R503;
    f.r.replies[2] = R200;
    f.r.nreplies = 3;
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "GET", "/api/x", NULL, 0, "t", 0, on_resp, &res), 0);
    assert_int_equal(res.calls, 0);          /* never inside the call */
    run_until(&f, &res, 5000);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.attempts, 3);
    assert_string_equal(res.body, "{\"ok\":true}");
    assert_int_equal(f.r.requests, 3);
    /* two waits of at least base/2 (20 ms) and 2*base/2 (40 ms) */
    assert_true(f.r.last_ms - f.r.first_ms >= 55);
    fixture_fini(&f);
}

static void test_cancel_in_flight(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 10000, 20000);
    f.r.kind = R_HOLD;
    f.r.nreplies = 1;
    f.r.replies[0] = R200;
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "PUT", "/api/x", "{}", 2, "t", 0, on_resp, &res), 0);
    uint64_t end = uv_now(&f.loop) + 3000;
    while (f.r.requests == 0 && uv_now(&f.loop) < end)
        uv_run(&f.loop, UV_RUN_ONCE);
    assert_int_equal(f.r.requests, 1);       /* the transfer is in flight */
    assert_int_equal(crt_backend_in_flight(f.b), 1);
    crt_backend_free(f.b);                   /* completes it at once */
    crt_backend *closing = f.b;
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, CRT_EUNAVAIL);
    /* a closing client takes nothing new */
    result late = {0};
    assert_int_equal(crt_backend_request(closing, "GET", "/api/y", NULL, 0, "t", 0, on_resp, &late), CRT_EUNAVAIL);
    f.b = NULL;                              /* freed once its handles have closed */
    fixture_fini(&f);
    assert_int_equal(res.calls, 1);
    assert_int_equal(late.calls, 0);
}

static void test_redirect_not_followed(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 1000, 5000);
    static char redirect[256];
    snprintf(redirect, sizeof redirect,
             "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/api/internal/steal\r\nContent-Length: 0\r\n"
             "Connection: close\r\n\r\n",
             f.other.port);
    f.r.replies[0] = redirect;
    f.r.nreplies = 1;
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "GET", "/api/x", NULL, 0, "t", 0, on_resp, &res), 0);
    run_until(&f, &res, 5000);
    /* let a (wrongly) followed redirect reach the other listener */
    uint64_t end = uv_now(&f.loop) + 200;
    while (uv_now(&f.loop) < end)
        uv_run(&f.loop, UV_RUN_NOWAIT);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.status, 302);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(f.other.accepted, 0);
    assert_int_equal(f.r.requests, 1);
    fixture_fini(&f);
}

static void test_dot_segments_sent_encoded(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 1000, 5000);
    f.r.replies[0] = R200;
    f.r.nreplies = 1;
    crt_buf path;
    crt_buf_init(&path);
    crt_buf_puts(&path, "/api/internal/variables");
    crt_backend_path_seg(&path, "u", 1);
    crt_backend_path_seg(&path, "..", 2);
    assert_string_equal(crt_buf_cstr(&path), "/api/internal/variables/u/%2E%2E");
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "GET", path.data, NULL, 0, "t", 0, on_resp, &res), 0);
    run_until(&f, &res, 5000);
    assert_int_equal(res.status, 200);
    assert_non_null(strstr(f.r.replies[0], "200"));
    crt_buf_fini(&path);
    fixture_fini(&f);
}

static void test_body_over_cap_refused(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 5000, 10000);
    f.r.kind = R_HUGE;
    f.r.nreplies = 1;
    f.r.replies[0] = R200;
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "GET", "/api/x", NULL, 0, "t", 0, on_resp, &res), 0);
    run_until(&f, &res, 10000);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, CRT_ERANGE);
    assert_int_equal(res.attempts, 1);       /* not asked again */
    assert_int_equal(res.len, 0);
    assert_int_equal(f.r.requests, 1);
    fixture_fini(&f);
}

static void test_declared_length_over_cap_refused(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 5000, 10000);
    f.r.replies[0] = "HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\nConnection: close\r\n\r\n{\"value\":\"";
    f.r.nreplies = 1;
    result res = {0};
    assert_int_equal(crt_backend_request(f.b, "GET", "/api/x", NULL, 0, "t", 0, on_resp, &res), 0);
    run_until(&f, &res, 10000);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.err, CRT_ERANGE);
    assert_int_equal(res.attempts, 1);
    fixture_fini(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);   /* the responder writes to clients that gave up */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retries_503_with_backoff_then_success),
        cmocka_unit_test(test_cancel_in_flight),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_dot_segments_sent_encoded),
        cmocka_unit_test(test_body_over_cap_refused),
        cmocka_unit_test(test_declared_length_over_cap_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
