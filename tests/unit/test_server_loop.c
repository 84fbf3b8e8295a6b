/* Loop-driven tests of the HTTP server: a real crt_server on 127.0.0.1:0 on a
 * private loop, real uv_tcp clients. Every test ends with all handles closed
 * and uv_loop_close() == 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>
#include "cronium/http.h"

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    char req[512];
    size_t req_len;
    char buf[8192];
    size_t len;
    bool reset_after_write;         /* RST once the handler runs (client gone) */
    bool closed;
    int status;                     /* of the response, 0 if none */
    size_t body_len;
    bool conn_close;                /* response said Connection: close */
} client;

typedef struct fixture {
    uv_loop_t loop;
    crt_router *router;
    crt_server *srv;
    uv_timer_t later;               /* for handlers that answer later */
    uv_timer_t guard;               /* fails a test that hangs */
    crt_req *pending;
    bool pending_was_detached;
    int done_count;
    int last_status;
    bool server_down;
    bool server_freed;              /* crt_server_close's callback ran */
    bool timed_out;
    client cl;
} fixture;

static fixture *F;

/* ---- server side ------------------------------------------------------------ */

static void client_on_close(uv_handle_t *h);

static void on_done(const crt_req *req, uint64_t dur, void *ctx)
{
    (void)dur;
    fixture *f = ctx;
    f->done_count++;
    f->last_status = req->status;
}

static void on_server_down(crt_server *s)
{
    (void)s;
    F->server_down = true;
}

static void h_sync(crt_req *req, void *ctx)
{
    (void)ctx;
    crt_req_respond(req, 200, "text/plain", "sync", 4);
}

static void on_later(uv_timer_t *t)
{
    fixture *f = t->data;
    crt_req *req = f->pending;
    f->pending = NULL;
    f->pending_was_detached = crt_req_detached(req);
    crt_req_respond(req, 200, "text/plain", "later", 5);
    uv_close((uv_handle_t *)&f->later, NULL);
    if (f->pending_was_detached)        /* nobody will read: stop here */
        crt_server_shutdown(f->srv, 1000, on_server_down);
}

static void h_later_ms(crt_req *req, uint64_t ms)
{
    F->pending = req;
    uv_timer_init(&F->loop, &F->later);
    F->later.data = F;
    uv_timer_start(&F->later, on_later, ms, 0);
}

static void h_timer(crt_req *req, void *ctx) { (void)ctx; h_later_ms(req, 20); }
/* The client resets its connection once the handler has started (a reset
 * before the server read the request could discard the request itself). */
static void h_slow(crt_req *req, void *ctx)
{
    (void)ctx;
    h_later_ms(req, 150);
    if (F->cl.reset_after_write && !uv_is_closing((uv_handle_t *)&F->cl.tcp))
        uv_tcp_close_reset(&F->cl.tcp, client_on_close);
}

static void h_shutdown(crt_req *req, void *ctx)
{
    (void)ctx;
    crt_server_shutdown(F->srv, 1000, on_server_down);
    crt_req_respond(req, 200, "text/plain", "bye", 3);
}

/* Shutdown with a 1 ms deadline while the request waits: the shutdown
 * callback closes the server, which may free only once the detached request
 * has been answered and its connection freed. */
static void on_server_freed(void *arg)
{
    fixture *f = arg;
    f->server_freed = true;
    f->srv = NULL;
}

static void on_down_close(crt_server *s)
{
    F->server_down = true;
    crt_server_close(s, on_server_freed, F);
    assert_false(F->server_freed);      /* the deadline timer is still closing */
}

static void on_late_answer(uv_timer_t *t)
{
    fixture *f = t->data;
    crt_req *req = f->pending;
    f->pending = NULL;
    f->pending_was_detached = crt_req_detached(req);
    assert_false(f->server_freed);      /* the request holds its connection */
    crt_req_respond(req, 200, "text/plain", "late", 4);
    uv_close((uv_handle_t *)&f->later, NULL);
}

static void h_deadline(crt_req *req, void *ctx)
{
    (void)ctx;
    F->pending = req;
    uv_timer_init(&F->loop, &F->later);
    F->later.data = F;
    uv_timer_start(&F->later, on_late_answer, 100, 0);
    crt_server_shutdown(F->srv, 1, on_down_close);
}

/* ---- client side --------------------------------------------------------------- */

static void client_on_close(uv_handle_t *h)
{
    client *c = h->data;
    c->closed = true;
}

static void client_close(client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, client_on_close);
}

/* A full response in buf: parse status, Content-Length, Connection. */
static bool client_parse(client *c)
{
    c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return false;
    size_t head = (size_t)(end - c->buf) + 4;
    const char *cl = strstr(c->buf, "Content-Length: ");
    size_t n = cl && cl < end ? (size_t)strtoul(cl + 16, NULL, 10) : 0;
    if (c->len < head + n)
        return false;
    c->status = atoi(c->buf + 9);
    c->body_len = n;
    const char *conn = strstr(c->buf, "Connection: close");
    c->conn_close = conn && conn < end;
    return true;
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    client *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void client_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    client *c = st->data;
    if (n < 0) {
        client_close(c);
        return;
    }
    c->len += (size_t)n;
    if (client_parse(c)) {
        client_close(c);
        if (!F->server_down && !c->conn_close)
            crt_server_shutdown(F->srv, 1000, on_server_down);
    }
}

static void client_on_write(uv_write_t *w, int status)
{
    client *c = w->data;
    assert_int_equal(status, 0);
    if (c->reset_after_write)
        return;                     /* h_slow resets it */
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_on_read);
}

static void client_on_connect(uv_connect_t *r, int status)
{
    client *c = r->data;
    assert_int_equal(status, 0);
    uv_buf_t b = uv_buf_init(c->req, (unsigned)c->req_len);
    c->wreq.data = c;
    assert_int_equal(uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_on_write), 0);
}

static void client_start(fixture *f, const char *path, bool reset)
{
    client *c = &f->cl;
    memset(c, 0, sizeof *c);
    c->req_len = (size_t)snprintf(c->req, sizeof c->req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    c->reset_after_write = reset;
    uv_tcp_init(&f->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", crt_server_port(f->srv), &a);
    assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&a, client_on_connect), 0);
}

/* ---- fixture ------------------------------------------------------------------------ */

/* A hung test: stop everything so the loop can end, and let run() fail. */
static void on_guard(uv_timer_t *t)
{
    fixture *f = t->data;
    f->timed_out = true;
    client_close(&f->cl);
    if (f->srv)
        crt_server_shutdown(f->srv, 1, on_server_down);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    F = f;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->router = crt_router_new();
    crt_router_add(f->router, "GET", "/sync", h_sync, f);
    crt_router_add(f->router, "GET", "/timer", h_timer, f);
    crt_router_add(f->router, "GET", "/slow", h_slow, f);
    crt_router_add(f->router, "GET", "/shutdown", h_shutdown, f);
    crt_router_add(f->router, "GET", "/deadline", h_deadline, f);
    crt_server_opts o = {.host = "127.0.0.1", .port = 0, .read_timeout_ms = 5000, .write_timeout_ms = 5000,
                         .idle_timeout_ms = 5000, .max_body_bytes = 1 << 20, .max_connections = 100};
    f->srv = crt_server_new(&f->loop, &o, f->router);
    assert_non_null(f->srv);
    crt_server_set_hooks(f->srv, NULL, on_done, f);
    assert_int_equal(crt_server_listen(f->srv), 0);
    assert_true(crt_server_port(f->srv) > 0);
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    uv_timer_start(&f->guard, on_guard, 5000, 0);
    uv_unref((uv_handle_t *)&f->guard);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (f->srv) {
        assert_int_equal(crt_server_open_connections(f->srv), 0);
        crt_server_free(f->srv);
    }
    crt_router_free(f->router);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    F = NULL;
    return 0;
}

static void run(fixture *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(f->timed_out);
    assert_true(f->server_down);
    assert_true(f->cl.closed);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_sync_answer(void **state)
{
    fixture *f = *state;
    client_start(f, "/sync", false);
    run(f);
    assert_int_equal(f->cl.status, 200);
    assert_int_equal(f->cl.body_len, 4);
    assert_int_equal(f->done_count, 1);
}

static void test_answer_from_timer(void **state)
{
    fixture *f = *state;
    client_start(f, "/timer", false);
    run(f);
    assert_int_equal(f->cl.status, 200);
    assert_int_equal(f->cl.body_len, 5);
    assert_false(f->pending_was_detached);
    assert_int_equal(f->done_count, 1);
}

static void test_client_gone_while_pending(void **state)
{
    fixture *f = *state;
    client_start(f, "/slow", true);
    run(f);
    assert_int_equal(f->cl.status, 0);          /* it never read */
    assert_true(f->pending_was_detached);       /* the server saw it go */
    assert_int_equal(f->done_count, 1);         /* the late answer still ended the request */
    assert_int_equal(f->last_status, 200);
}

static void test_shutdown_from_handler(void **state)
{
    fixture *f = *state;
    client_start(f, "/shutdown", false);
    run(f);
    assert_int_equal(f->cl.status, 200);
    assert_true(f->cl.conn_close);
    assert_int_equal(f->done_count, 1);
}

static void test_shutdown_without_connections(void **state)
{
    fixture *f = *state;
    crt_server_shutdown(f->srv, 1000, on_server_down);
    f->cl.closed = true;
    run(f);
    assert_int_equal(f->done_count, 0);
}

static void test_close_from_shutdown_callback(void **state)
{
    fixture *f = *state;
    client_start(f, "/deadline", false);
    run(f);
    assert_true(f->pending_was_detached);
    assert_true(f->server_freed);
    assert_int_equal(f->done_count, 1);
    assert_int_equal(f->last_status, 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_from_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_while_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_from_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_without_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_shutdown_callback, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
