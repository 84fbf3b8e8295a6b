/* Loop-driven tests of src/cache/ (cache.c, cache_conn.c): the Valkey client against an
 * in-process fake RESP server (a uv_tcp listener on 127.0.0.1:0 in the same
 * private loop) and a fake resolver. Each case counts its callbacks and ends
 * with every handle closed and uv_loop_close() == 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <netdb.h>

#include "cronium/cache.h"
#include "cronium/common.h"
#include "cronium/log.h"
#include "cronium/metrics.h"

/* ---- the fake server ---------------------------------------------------------------------------- */

typedef enum { M_OK, M_ERROR, M_UNSOLICITED, M_HUGE, M_BIG, M_WRONG_LENGTH, M_SILENT } srv_mode;

typedef struct server server;

typedef struct srv_client {
    uv_tcp_t tcp;
    server *s;
    char buf[8192];
    size_t len;
    bool closing;
} srv_client;

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    srv_mode mode;
    int conns, eofs, cmds;
    srv_client *clients[16];
    int nclients;
};

static void srv_send(srv_client *k, const char *p, size_t n)
{
    while (n) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        int w = uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
        if (w < 0)
            return;     /* the client went away */
        p += w;
        n -= (size_t)w;
    }
}

static void srv_client_closed(uv_handle_t *h)
{
    srv_client *k = h->data;
    server *s = k->s;
    for (int i = 0; i < s->nclients; i++)
        if (s->clients[i] == k)
            s->clients[i] = s->clients[--s->nclients];
    free(k);
}

static void srv_client_close(srv_client *k)
{
    if (!k->closing) {
        k->closing = true;
        uv_close((uv_handle_t *)&k->tcp, srv_client_closed);
    }
}

/* One command (an array of bulk strings) from the front of k->buf: its name
 * in name (upper case as hiredis sends it), bytes consumed, or 0. */
static size_t srv_parse(srv_client *k, char *name, size_t namecap)
{
    char *p = k->buf, *end = k->buf + k->len;
    if (p == end || *p != '*')
        return 0;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return 0;
    long n = strtol(p + 1, NULL, 10);
    p = nl + 1;
    for (long i = 0; i < n; i++) {
        nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (!nl)
            return 0;
        long len = strtol(p + 1, NULL, 10);
        char *data = nl + 1;
        if (end - data < len + 2)
            return 0;
        if (i == 0)
            snprintf(name, namecap, "%.*s", (int)len, data);
        p = data + len + 2;
    }
    return (size_t)(p - k->buf);
}

static void srv_answer(srv_client *k, const char *name)
{
    server *s = k->s;
    if (!strcmp(name, "PING")) {
        srv_send(k, "+PONG\r\n", 7);
        return;
    }
    s->cmds++;              /* data commands */
    switch (s->mode) {
    case M_OK:
        if (!strcmp(name, "GET"))
            srv_send(k, "$3\r\n\"v\"\r\n", 9);
        else
            srv_send(k, "+OK\r\n", 5);
        break;
    case M_ERROR: {
        static const char *const errs[] = {"-OOM command not allowed\r\n", "-ERR fake\r\n",
                                           "-WRONGTYPE wrong kind\r\n"};
        const char *e = errs[(s->cmds - 1) % 3];   /* SET: OOM, GET: ERR, DEL: WRONGTYPE */
        srv_send(k, e, strlen(e));
        break;
    }
    case M_UNSOLICITED:
        srv_send(k, "+OK\r\n+OK\r\n", 10);     /* answers twice, once */
        s->mode = M_OK;         /* the reconnection finds a good server */
        break;
    case M_SILENT:
        break;
    case M_BIG: {
        /* A whole 2000-byte bulk in one write: built at once, over a 1024 cap. */
        static char big[2048];
        int n = snprintf(big, sizeof big, "$2000\r\n");
        memset(big + n, 'x', 2000);
        memcpy(big + n + 2000, "\r\n", 2);
        srv_send(k, big, (size_t)n + 2002);
        break;
    }
    case M_WRONG_LENGTH:
        srv_send(k, "$3\r\n\"abcdefgh\"\r\n", 16);    /* more data than declared */
        break;
    case M_HUGE: {
        char head[32];
        int n = snprintf(head, sizeof head, "$%d\r\n", 100 << 20);
        srv_send(k, head, (size_t)n);
        char chunk[4096];
        memset(chunk, 'x', sizeof chunk);
        srv_send(k, chunk, sizeof chunk);
        break;
    }
    }
}

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    srv_client *k = h->data;
    *b = uv_buf_init(k->buf + k->len, (unsigned)(sizeof k->buf - k->len));
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    srv_client *k = st->data;
    if (n < 0) {
        k->s->eofs++;
        srv_client_close(k);
        return;
    }
    k->len += (size_t)n;
    char name[32];
    size_t used;
    while (!k->closing && (used = srv_parse(k, name, sizeof name)) > 0) {
        memmove(k->buf, k->buf + used, k->len - used);
        k->len -= used;
        srv_answer(k, name);
    }
    if (k->len == sizeof k->buf)
        srv_client_close(k);
}

static void srv_on_conn(uv_stream_t *l, int status)
{
    server *s = l->data;
    assert_int_equal(status, 0);
    srv_client *k = calloc(1, sizeof *k);
    assert_non_null(k);
    k->s = s;
    uv_tcp_init(s->loop, &k->tcp);
    k->tcp.data = k;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&k->tcp), 0);
    assert_true(s->nclients < 16);
    s->clients[s->nclients++] = k;
    s->conns++;
    uv_read_start((uv_stream_t *)&k->tcp, srv_alloc, srv_read);
}

static void srv_start(server *s, uv_loop_t *loop, srv_mode mode)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->mode = mode;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, srv_on_conn), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = ntohs(got.sin_port);
}

static void srv_stop(server *s)
{
    uv_close((uv_handle_t *)&s->listener, NULL);
    for (int i = 0; i < s->nclients; i++)
        srv_client_close(s->clients[i]);
}

/* ---- a test's loop and cache ---------------------------------------------------------------------- */

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t guard;       /* fails the case if it runs too long */
    bool timed_out;
    server srv;
    crt_metrics *m;
    crt_cache *c;
    int ready_calls;
    int replies;
    int unavail;
    int errors;
    char last_error[64];
    void (*on_ready)(struct fx *f);
} fx;

static void on_guard(uv_timer_t *t)
{
    fx *f = t->data;
    f->timed_out = true;
    uv_stop(&f->loop);
}

static void fx_on_ready(void *ctx)
{
    fx *f = ctx;
    f->ready_calls++;
    if (f->on_ready)
        f->on_ready(f);
}

static void fx_init(fx *f, srv_mode mode)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    uv_timer_start(&f->guard, on_guard, 5000, 0);
    srv_start(&f->srv, &f->loop, mode);
    f->m = crt_metrics_new();
    assert_non_null(f->m);
}

static crt_cache *fx_cache(fx *f, const char *host, size_t max_reply, const crt_cache_resolver *res,
                           uint64_t timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "redis://%s:%d", host, f->srv.port);
    crt_cache_opts o = {.url = url, .db = -1, .timeout_ms = timeout_ms, .max_pending = 100,
                        .max_reply = max_reply, .resolver = res};
    char err[256];
    f->c = crt_cache_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(f->c);
    crt_cache_on_ready(f->c, fx_on_ready, f);
    return f->c;
}

/* Frees what is left, runs the loop until every handle closed, checks the
 * loop closes. */
static void fx_fini(fx *f)
{
    if (f->c)
        crt_cache_free(f->c);
    f->c = NULL;
    srv_stop(&f->srv);
    uv_close((uv_handle_t *)&f->guard, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    crt_metrics_free(f->m);
}

static void fx_run(fx *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(f->timed_out);
}

static void count_reply(fx *f, const crt_cache_reply *r)
{
    f->replies++;
    if (r->err) {
        assert_int_equal(r->err, CRT_EUNAVAIL);
        f->unavail++;
    } else if (r->type == CRT_CACHE_ERROR) {
        f->errors++;
        snprintf(f->last_error, sizeof f->last_error, "%.*s", (int)r->len, r->str);
    }
}

static int send_cmd(fx *f, crt_cache_cb cb, const char *a0, const char *a1, const char *a2)
{
    const char *argv[3] = {a0, a1, a2};
    return crt_cache_cmd(f->c, cb, f, a2 ? 3 : 2, argv, NULL);
}

/* ---- error replies reach the callback as errors -------------------------------------------------- */

static void err_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
    if (f->replies == 3)
        uv_stop(&f->loop);
}

static void err_ready(fx *f)
{
    assert_int_equal(send_cmd(f, err_on_reply, "SET", "k", "v"), 0);
    assert_int_equal(send_cmd(f, err_on_reply, "GET", "k", NULL), 0);
    assert_int_equal(send_cmd(f, err_on_reply, "DEL", "k", NULL), 0);
}

static void test_error_replies_are_errors(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_ERROR);
    f.on_ready = err_ready;
    fx_cache(&f, "127.0.0.1", 0, NULL, 1000);
    fx_run(&f);
    assert_int_equal(f.ready_calls, 1);
    assert_int_equal(f.replies, 3);
    assert_int_equal(f.errors, 3);      /* not nil, not unavailable */
    assert_int_equal(f.unavail, 0);
    assert_string_equal(f.last_error, "WRONGTYPE wrong kind");
    assert_true(crt_cache_ready(f.c));  /* an error reply is no reason to drop the connection */
    assert_int_equal(f.srv.conns, 1);
    fx_fini(&f);
}

/* ---- an unsolicited reply drops the connection, no abort ------------------------------------------- */

static void unsol_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
}

static void unsol_ready(fx *f)
{
    if (f->ready_calls == 1) {
        /* Answered twice: the second answer has no command. */
        assert_int_equal(send_cmd(f, unsol_on_reply, "SET", "k", "v"), 0);
    } else {
        uv_stop(&f->loop);
    }
}

static void test_unsolicited_reply_drops_connection(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_UNSOLICITED);
    f.on_ready = unsol_ready;
    fx_cache(&f, "127.0.0.1", 0, NULL, 1000);
    fx_run(&f);
    assert_int_equal(f.replies, 1);
    assert_int_equal(f.unavail, 0);     /* the first answer was the SET's own */
    assert_int_equal(f.errors, 0);
    assert_int_equal(f.ready_calls, 2); /* the second dropped the connection: reconnected */
    assert_int_equal(f.srv.conns, 2);
    assert_int_equal(f.srv.eofs, 1);    /* the client hung up on the bad server */
    assert_true(crt_cache_ready(f.c));
    fx_fini(&f);
}

/* ---- a reply over the cap drops the connection ------------------------------------------------------ */

static void huge_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
    assert_false(crt_cache_ready(f->c));
    uv_stop(&f->loop);
}

static void huge_ready(fx *f)
{
    assert_int_equal(send_cmd(f, huge_on_reply, "GET", "k", NULL), 0);
}

static void test_reply_over_cap_drops_connection(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_HUGE);
    f.on_ready = huge_ready;
    fx_cache(&f, "127.0.0.1", 1024, NULL, 2000);
    fx_run(&f);
    assert_int_equal(f.replies, 1);
    assert_int_equal(f.unavail, 1);     /* never served, no wait for the rest */
    fx_fini(&f);
}

/* A complete reply over the cap, read at once (built, not buffered). */
static void test_built_reply_over_cap_drops_connection(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_BIG);
    f.on_ready = huge_ready;
    fx_cache(&f, "127.0.0.1", 1024, NULL, 2000);
    fx_run(&f);
    assert_int_equal(f.replies, 1);
    assert_int_equal(f.unavail, 1);
    fx_fini(&f);
}

/* ---- a bulk longer than its length is not served truncated ------------------------------------------- */

static void wrong_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
    assert_false(r->err == 0 && r->type == CRT_CACHE_STR);     /* never the first 3 bytes */
    f->srv.mode = M_OK;     /* the reconnection finds a good server */
}

static void wrong_ready(fx *f)
{
    if (f->ready_calls == 1)
        assert_int_equal(send_cmd(f, wrong_on_reply, "GET", "k", NULL), 0);
    else
        uv_stop(&f->loop);
}

static void test_wrong_length_drops_connection(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_WRONG_LENGTH);
    f.on_ready = wrong_ready;
    fx_cache(&f, "127.0.0.1", 0, NULL, 1000);
    fx_run(&f);
    assert_int_equal(f.replies, 1);
    assert_int_equal(f.unavail, 1);
    assert_int_equal(f.ready_calls, 2);     /* dropped and reconnected */
    assert_int_equal(f.srv.eofs, 1);
    fx_fini(&f);
}

/* ---- slow resolution through the injectable resolver ------------------------------------------------- */

typedef struct fake_dns {
    int starts, cancels;
    uv_getaddrinfo_t *req;
    uv_getaddrinfo_cb cb;
    char host[64];
} fake_dns;

static int dns_start(void *ctx, uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb, const char *host,
                     const struct addrinfo *hints)
{
    (void)loop;
    (void)hints;
    fake_dns *d = ctx;
    assert_null(d->req);        /* never a second lookup while one runs */
    d->starts++;
    d->req = req;
    d->cb = cb;
    snprintf(d->host, sizeof d->host, "%s", host);
    return 0;
}

static void dns_cancel(void *ctx, uv_getaddrinfo_t *req)
{
    fake_dns *d = ctx;
    assert_ptr_equal(req, d->req);
    d->cancels++;               /* like uv_cancel on a running lookup: no effect */
}

static void dns_answer(fake_dns *d, int status)
{
    struct addrinfo *res = NULL;
    if (status == 0) {
        struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
        assert_int_equal(getaddrinfo("127.0.0.1", NULL, &hints, &res), 0);
    }
    uv_getaddrinfo_t *req = d->req;
    d->req = NULL;
    d->cb(req, status, res);
}

typedef struct slow_fx {
    fx f;
    fake_dns dns;
    uv_timer_t t;
    int phase;
} slow_fx;

static void slow_tick(uv_timer_t *t)
{
    slow_fx *s = t->data;
    /* 350 ms with a 50 ms connect timeout: several attempts timed out. */
    assert_int_equal(s->dns.starts, 1);
    assert_false(crt_cache_ready(s->f.c));
    assert_int_equal(s->f.srv.conns, 0);
    dns_answer(&s->dns, 0);
}

static void slow_ready(fx *f)
{
    uv_stop(&f->loop);
}

static void test_slow_resolution_one_lookup(void **state)
{
    (void)state;
    slow_fx s;
    memset(&s, 0, sizeof s);
    fx_init(&s.f, M_OK);
    s.f.on_ready = slow_ready;
    crt_cache_resolver r = {.start = dns_start, .cancel = dns_cancel, .ctx = &s.dns};
    fx_cache(&s.f, "valkey.slow.test", 0, &r, 50);
    assert_int_equal(s.dns.starts, 1);
    assert_string_equal(s.dns.host, "valkey.slow.test");
    uv_timer_init(&s.f.loop, &s.t);
    s.t.data = &s;
    uv_timer_start(&s.t, slow_tick, 350, 0);
    fx_run(&s.f);
    assert_int_equal(s.dns.starts, 1);  /* the one slow answer was used */
    assert_true(s.dns.cancels >= 1);    /* each timeout tried to stop it */
    assert_int_equal(s.f.ready_calls, 1);
    assert_true(crt_cache_ready(s.f.c));
    uv_close((uv_handle_t *)&s.t, NULL);
    fx_fini(&s.f);
}

static void freeing_tick(uv_timer_t *t)
{
    slow_fx *s = t->data;
    if (s->phase++ == 0) {
        /* Freed while the lookup still runs: it must wait for the answer. */
        crt_cache_free(s->f.c);
        s->f.c = NULL;
        uv_timer_start(t, freeing_tick, 100, 0);
    } else {
        dns_answer(&s->dns, UV_ECANCELED);
        uv_close((uv_handle_t *)t, NULL);
        uv_stop(&s->f.loop);
    }
}

static void test_free_during_slow_resolution(void **state)
{
    (void)state;
    slow_fx s;
    memset(&s, 0, sizeof s);
    fx_init(&s.f, M_OK);
    crt_cache_resolver r = {.start = dns_start, .cancel = dns_cancel, .ctx = &s.dns};
    fx_cache(&s.f, "valkey.slow.test", 0, &r, 50);
    uv_timer_init(&s.f.loop, &s.t);
    s.t.data = &s;
    uv_timer_start(&s.t, freeing_tick, 120, 0);
    fx_run(&s.f);
    assert_int_equal(s.dns.starts, 1);
    assert_null(s.dns.req);
    fx_fini(&s.f);
}

/* ---- crt_cache_free from inside a callback ------------------------------------------------------------- */

static void free_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
    if (f->replies == 1) {
        assert_int_equal(r->err, 0);
        crt_cache_free(f->c);   /* the other two complete as unavailable, now or later */
        f->c = NULL;
    }
    if (f->replies == 3)
        uv_stop(&f->loop);
}

static void free_ready(fx *f)
{
    assert_int_equal(send_cmd(f, free_on_reply, "GET", "a", NULL), 0);
    assert_int_equal(send_cmd(f, free_on_reply, "GET", "b", NULL), 0);
    assert_int_equal(send_cmd(f, free_on_reply, "GET", "c", NULL), 0);
}

static void test_free_from_callback(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_OK);
    f.on_ready = free_ready;
    fx_cache(&f, "127.0.0.1", 0, NULL, 1000);
    fx_run(&f);
    assert_int_equal(f.replies, 3);     /* each callback exactly once */
    assert_null(f.c);
    fx_fini(&f);
}

/* A timeout whose callback frees the cache, with more expired commands behind it. */
static void timeout_on_reply(void *ud, const crt_cache_reply *r)
{
    fx *f = ud;
    count_reply(f, r);
    if (f->replies == 1 && f->c) {
        crt_cache_free(f->c);
        f->c = NULL;
    }
    if (f->replies == 3)
        uv_stop(&f->loop);
}

static void timeout_ready(fx *f)
{
    f->srv.mode = M_SILENT;     /* never an answer: each command times out */
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_cmd(f, timeout_on_reply, "GET", "k", NULL), 0);
}

static void test_free_from_timeout_callback(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, M_OK);
    f.on_ready = timeout_ready;
    fx_cache(&f, "127.0.0.1", 0, NULL, 100);
    fx_run(&f);
    assert_int_equal(f.replies, 3);
    assert_int_equal(f.unavail, 3);
    fx_fini(&f);
}

int main(void)
{
    crt_log_setup(CRT_LOG_ERROR, CRT_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_replies_are_errors),
        cmocka_unit_test(test_unsolicited_reply_drops_connection),
        cmocka_unit_test(test_reply_over_cap_drops_connection),
        cmocka_unit_test(test_built_reply_over_cap_drops_connection),
        cmocka_unit_test(test_wrong_length_drops_connection),
        cmocka_unit_test(test_slow_resolution_one_lookup),
        cmocka_unit_test(test_free_during_slow_resolution),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_free_from_timeout_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
