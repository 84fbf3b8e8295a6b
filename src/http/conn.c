/* One connection: its state machine (http_int.h), its timer, reading and
 * parsing, dispatch to the router, refusals, lingering close and teardown. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "http_int.h"
#include "cronium/log.h"

/* Pipelined input buffered while a request is being handled; reading pauses
 * above it so a client cannot make us buffer without bound. */
#define CONN_MAX_PENDING_INPUT (64 * 1024)
/* Buffers above this are released when a request ends, so idle keep-alive
 * connections stay small. */
#define CONN_KEEP_BUF (16 * 1024)
/* Lingering close: after an error answer sent before the whole request was
 * read, shut our side down and discard what the client still sends (bounded
 * in bytes and time). Closing at once would make the kernel reset the
 * connection and the client could lose the answer. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (64u << 20)
/* A fresh connection gets this long at shutdown to send its request. */
#define SHUTDOWN_FIRST_REQUEST_GRACE_MS 500

static char read_buf[64 * 1024];    /* one loop, one reader at a time */

static void conn_drive(crt_conn *c);
static void conn_update_reading(crt_conn *c);
static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* ---- the state machine ------------------------------------------------------------------ */

#define S(x) (1u << (x))
/* The states each state may be entered from (see the diagram in http_int.h). */
static const unsigned conn_from[] = {
    [CONN_NEW] = 0,
    [CONN_IDLE] = S(CONN_WRITE),
    [CONN_HEAD] = S(CONN_NEW) | S(CONN_IDLE),
    [CONN_BODY] = S(CONN_HEAD),
    [CONN_HANDLE] = S(CONN_NEW) | S(CONN_IDLE) | S(CONN_HEAD) | S(CONN_BODY),
    [CONN_WRITE] = S(CONN_HANDLE),
    [CONN_LINGER] = S(CONN_IDLE),
    [CONN_DETACHED] = S(CONN_HANDLE) | S(CONN_WRITE),
    [CONN_CLOSING] = S(CONN_NEW) | S(CONN_IDLE) | S(CONN_HEAD) | S(CONN_BODY) | S(CONN_LINGER) |
                     S(CONN_DETACHED),
};

/* The public request state follows the connection's. */
static const crt_req_state req_state_of[] = {
    [CONN_NEW] = CRT_REQ_HEAD,   [CONN_IDLE] = CRT_REQ_HEAD,     [CONN_HEAD] = CRT_REQ_HEAD,
    [CONN_BODY] = CRT_REQ_BODY,  [CONN_HANDLE] = CRT_REQ_HANDLE, [CONN_WRITE] = CRT_REQ_WRITE,
    [CONN_LINGER] = CRT_REQ_HEAD, [CONN_DETACHED] = CRT_REQ_HANDLE, [CONN_CLOSING] = CRT_REQ_HEAD,
};

void crt_conn_set_state(crt_conn *c, conn_state to)
{
    assert(conn_from[to] & S(c->state));
    /* A detached request keeps saying what it was doing. */
    if (to != CONN_DETACHED)
        c->req.state = req_state_of[to];
    c->state = to;
}

void crt_conn_set_after(crt_conn *c, conn_after after)
{
    if (after > c->after)
        c->after = after;
}

static bool conn_reading_request(const crt_conn *c) { return c->state <= CONN_BODY; }
static bool conn_holds_request(const crt_conn *c) { return c->state == CONN_HANDLE || c->state == CONN_WRITE; }

/* ---- timers ----------------------------------------------------------------------------- */

static void conn_on_timer(uv_timer_t *t)
{
    crt_conn *c = crt_container_of(t, crt_conn, timer);
    if (c->state == CONN_WRITE) {
        CRT_LOGF(CRT_LOG_INFO, "write timeout: connection dropped", CRT_LS("client", c->ip));
        c->req.keep_alive = false;
    } else if (c->state == CONN_HEAD || c->state == CONN_BODY) {
        CRT_LOGF(CRT_LOG_INFO, "read timeout: request not received in time, closing", CRT_LS("client", c->ip));
    }
    crt_conn_close(c);
}

static void conn_on_linger_timeout(uv_timer_t *t) { crt_conn_close(crt_container_of(t, crt_conn, timer)); }

void crt_conn_arm_timer(crt_conn *c)
{
    const crt_server_opts *o = &c->srv->opts;
    uint64_t ms;
    switch (c->state) {
    case CONN_NEW:
    case CONN_IDLE:
        ms = c->in.len ? o->read_timeout_ms : o->idle_timeout_ms;
        break;
    case CONN_HEAD:
    case CONN_BODY: {
        uint64_t elapsed = uv_now(c->srv->loop) - c->msg_start_ms;
        ms = elapsed >= o->read_timeout_ms ? 1 : o->read_timeout_ms - elapsed;
        break;
    }
    case CONN_WRITE:
        ms = o->write_timeout_ms;
        break;
    default:
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, conn_on_timer, ms, 0);
}

/* ---- request lifecycle -------------------------------------------------------------------- */

static void buf_trim(crt_buf *b)
{
    if (b->cap > CONN_KEEP_BUF)
        crt_buf_fini(b);
    else
        crt_buf_reset(b);
}

static void req_reset(crt_conn *c)
{
    crt_req *r = &c->req;
    /* The method is known only after the next head: a parse error must not
     * inherit the previous request's HEAD (and lose its body). */
    r->method = HTTP_GET;
    r->method_name = (crt_span){NULL, 0};
    r->path = r->query = (crt_span){NULL, 0};
    r->nheaders = 0;
    r->keep_alive = true;
    r->expect_continue = false;
    r->route_id = -1;
    r->route_name = "unmatched";
    r->nparams = 0;
    r->request_id_len = 0;
    r->status = 0;
    r->resp_body_len = 0;
    r->user = NULL;
    buf_trim(&r->body);
    buf_trim(&r->resp_headers);
    buf_trim(&r->resp_body);
    buf_trim(&r->scratch);
    buf_trim(&c->out);
    crt_http_head_reset(c);
}

void crt_conn_request_id(crt_conn *c)
{
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    crt_span in = crt_req_header(r, "X-Request-Id");
    bool ok = in.len > 0 && in.len < sizeof r->request_id;
    for (size_t i = 0; ok && i < in.len; i++)
        ok = in.p[i] > ' ' && in.p[i] < 0x7f && in.p[i] != '"' && in.p[i] != '\\';
    if (ok) {
        memcpy(r->request_id, in.p, in.len);
        r->request_id_len = in.len;
    } else {
        r->request_id_len = (size_t)snprintf(r->request_id, sizeof r->request_id, "%s%016llx",
                                             s->rid_prefix, (unsigned long long)++s->rid_counter);
    }
    r->request_id[r->request_id_len] = '\0';
}

static void conn_free(crt_conn *c)
{
    crt_server *s = c->srv;
    crt_buf_fini(&c->in);
    crt_buf_fini(&c->out);
    crt_buf_fini(&c->req.body);
    crt_buf_fini(&c->req.resp_headers);
    crt_buf_fini(&c->req.resp_body);
    crt_buf_fini(&c->req.scratch);
    free(c);
    crt_server_conn_freed(s);
}

static void conn_maybe_free(crt_conn *c)
{
    if (c->state == CONN_CLOSING && c->open_handles == 0)
        conn_free(c);
}

static void conn_on_shutdown(uv_shutdown_t *r, int status)
{
    crt_conn *c = crt_container_of(r, crt_conn, sreq);
    if (status < 0)
        crt_conn_close(c);
}

static void conn_linger(crt_conn *c)
{
    crt_conn_set_state(c, CONN_LINGER);
    crt_buf_fini(&c->in);
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_on_shutdown) < 0) {
        crt_conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, conn_on_linger_timeout, LINGER_MS, 0);
    conn_update_reading(c);
}

/* The answer is out (or discarded): report it, then serve the next request,
 * linger, or close. */
void crt_conn_finish_request(crt_conn *c)
{
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    if (s->done)
        s->done(r, crt_now_ns() - r->start_ns, s->hook_ctx);
    bool keep = r->keep_alive && c->state == CONN_WRITE && c->after == CONN_AFTER_NEXT && !s->shutting_down &&
                !(c->eof && c->in.len == 0);
    req_reset(c);
    if (c->state == CONN_DETACHED) {
        crt_conn_set_state(c, CONN_CLOSING);
        conn_maybe_free(c);
        return;
    }
    crt_conn_set_state(c, CONN_IDLE);     /* the request is over */
    if (!keep) {
        if (c->after == CONN_AFTER_LINGER && !c->eof)
            conn_linger(c);
        else
            crt_conn_close(c);
        return;
    }
    crt_conn_arm_timer(c);
    conn_drive(c);
}

static void conn_dispatch(crt_conn *c)
{
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    crt_conn_set_state(c, CONN_HANDLE);
    uv_timer_stop(&c->timer);
    crt_conn_request_id(c);
    crt_handler_fn fn = NULL;
    void *ctx = NULL;
    char allow[128];
    crt_route_result rr = crt_router_match(s->router, r, &fn, &ctx, allow, sizeof allow);
    if (s->pre && s->pre(r, s->hook_ctx))
        return;
    if (rr == CRT_ROUTE_NOT_FOUND) {
        crt_req_error(r, 404, "not_found", "no such endpoint");
    } else if (rr == CRT_ROUTE_BAD_METHOD) {
        crt_req_add_header(r, "Allow", allow, strlen(allow));
        crt_req_error(r, 405, "method_not_allowed", "method not allowed on this endpoint");
    } else {
        fn(r, ctx);
    }
}

/* A request that cannot be served: answer it, then linger and close. */
static void conn_reject(crt_conn *c, int status)
{
    crt_req *r = &c->req;
    crt_conn_set_after(c, CONN_AFTER_LINGER);
    r->keep_alive = false;
    crt_conn_set_state(c, CONN_HANDLE);
    if (!r->start_ns)
        r->start_ns = crt_now_ns();
    uv_timer_stop(&c->timer);
    switch (status) {
    case 413: crt_req_error(r, 413, "payload_too_large", "request body is larger than the limit"); break;
    case 431: crt_req_error(r, 431, "headers_too_large", "request head is larger than 8 KiB"); break;
    case 408: crt_req_error(r, 408, "invalid_body", "request not received in time"); break;
    default: crt_req_error(r, 400, "invalid_body", "malformed HTTP request"); break;
    }
}

/* ---- reading and parsing ---------------------------------------------------------------- */

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void conn_update_reading(crt_conn *c)
{
    bool want = c->state < CONN_DETACHED && !c->eof &&
                (c->state == CONN_LINGER || c->in.len < CONN_MAX_PENDING_INPUT);
    if (want && !c->reading)
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
    else if (!want && c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = want;
}

/* Parses buffered input while the connection can take a new request. Loops
 * instead of recursing when handlers answer synchronously (pipelining). */
static void conn_drive(crt_conn *c)
{
    if (c->in_drive) {
        c->drive_again = true;
        return;
    }
    c->in_drive = true;
    do {
        c->drive_again = false;
        if (!conn_reading_request(c) || c->in.len == 0)
            break;
        size_t used;
        llhttp_errno_t err = crt_http_parse(c, &used);
        if (err == HPE_OK) {
            crt_buf_reset(&c->in);
            if (c->state == CONN_HEAD && c->head.bytes > CRT_HTTP_MAX_HEAD)
                conn_reject(c, 431);
        } else if (err == HPE_PAUSED) {
            crt_buf_consume(&c->in, used);
            llhttp_resume(&c->head.parser);
            conn_dispatch(c);
        } else if (err == HPE_PAUSED_UPGRADE) {
            /* Only CONNECT gets here (upgrade offers are cleared in
             * on_headers_complete) and it closes after its answer; start
             * the parser afresh rather than reading another protocol. */
            crt_buf_consume(&c->in, used);
            llhttp_reset(&c->head.parser);
            c->drive_again = true;
        } else {
            crt_buf_reset(&c->in);
            conn_reject(c, c->head.reject ? c->head.reject : 400);
        }
    } while (c->drive_again);
    c->in_drive = false;
    /* Half-closed and nothing complete left to answer: done. */
    if (c->eof && conn_reading_request(c)) {
        crt_conn_close(c);
        return;
    }
    conn_update_reading(c);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    crt_conn *c = st->data;             /* tcp.data, set in crt_conn_new */
    if (nread == 0)
        return;
    if (c->state == CONN_LINGER) {
        c->lingered += nread > 0 ? (size_t)nread : 0;
        if (nread < 0 || c->lingered > LINGER_MAX_BYTES)
            crt_conn_close(c);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && (conn_holds_request(c) || c->in.len)) {
            /* Half-close: answer every request already received (the one
             * in progress and those pipelined behind it), then close. */
            c->eof = true;
            conn_update_reading(c);
            return;
        }
        crt_conn_close(c);
        return;
    }
    if (crt_buf_append(&c->in, buf->base, (size_t)nread)) {
        crt_conn_close(c);
        return;
    }
    conn_drive(c);
}

/* ---- open and close ----------------------------------------------------------------------- */

static void conn_on_close(uv_handle_t *h)
{
    crt_conn *c = h->data;
    c->open_handles--;
    conn_maybe_free(c);
}

void crt_conn_close(crt_conn *c)
{
    if (c->state >= CONN_DETACHED)
        return;
    crt_conn_set_state(c, conn_holds_request(c) ? CONN_DETACHED : CONN_CLOSING);
    crt_server_conn_remove(c->srv, c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

/* A new connection object with its handles initialised (not yet connected). */
crt_conn *crt_conn_new(crt_server *s)
{
    crt_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = s;
    if (uv_tcp_init(s->loop, &c->tcp) < 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->open_handles = 1;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open_handles++;
    c->state = CONN_NEW;
    c->after = CONN_AFTER_NEXT;
    crt_server_conn_add(s, c);
    crt_http_head_init(c);
    c->req.conn = c;
    c->req.state = CRT_REQ_HEAD;
    req_reset(c);
    c->req.client_ip = c->ip;
    return c;
}

/* The connection is connected: learn the peer, then serve it (or refuse it
 * when over maxConnections or stopping, unless it was drained from the
 * backlog at shutdown, which is served once and closed). */
void crt_conn_start(crt_conn *c, bool drained)
{
    crt_server *s = c->srv;
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->ip, sizeof c->ip);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->ip, sizeof c->ip);
    }
    if (s->nconns > s->opts.max_connections || (s->shutting_down && !drained)) {
        s->rejected++;
        crt_conn_set_state(c, CONN_HANDLE);
        c->req.start_ns = crt_now_ns();
        crt_conn_set_after(c, CONN_AFTER_CLOSE);
        c->req.keep_alive = false;
        crt_req_add_header(&c->req, "Retry-After", "1", 1);
        crt_req_error(&c->req, 503, "backend_unavailable", "too many open connections");
        return;
    }
    if (drained)
        crt_conn_set_after(c, CONN_AFTER_CLOSE);
    crt_conn_arm_timer(c);
    conn_update_reading(c);
}

static bool conn_input_pending(crt_conn *c)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return false;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Idle connections close now; busy ones after their answer. A connection
 * whose request bytes wait unread in the socket, or one that has not sent
 * its first request yet, is served once (closing it now would reset a
 * request the client already sent). */
void crt_conn_server_stopping(crt_conn *c)
{
    /* LINGER counts as idle: its answer is out and its input is discarded. */
    bool idle = (c->state == CONN_NEW || c->state == CONN_IDLE || c->state == CONN_LINGER) && c->in.len == 0;
    if (idle && c->state == CONN_NEW && !conn_input_pending(c)) {
        crt_conn_set_after(c, CONN_AFTER_CLOSE);
        uv_timer_start(&c->timer, conn_on_timer, SHUTDOWN_FIRST_REQUEST_GRACE_MS, 0);
    } else if (idle && !conn_input_pending(c)) {
        crt_conn_close(c);
    } else {
        crt_conn_set_after(c, CONN_AFTER_CLOSE);
    }
}
