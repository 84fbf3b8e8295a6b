/* The HTTP/1.1 server: listener, connections, the per-request state machine,
 * timeouts and graceful shutdown. See http.h for the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/http.h"
#include "cronium/list.h"
#include "cronium/log.h"

/* Pipelined input buffered while a request is being handled; reading pauses
 * above it so a client cannot make us buffer without bound. */
#define CONN_MAX_PENDING_INPUT (64 * 1024)
/* Buffers above this are released when a request ends, so idle keep-alive
 * connections stay small. */
#define CONN_KEEP_BUF (16 * 1024)

typedef enum {
    CONN_OPEN,          /* serving requests */
    CONN_CLOSING,       /* uv_close started; memory freed when all is done */
} conn_state;

typedef struct hdr_off {
    uint32_t no, nl, vo, vl;        /* offsets into req.scratch */
} hdr_off;

struct crt_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    llhttp_t parser;
    crt_server *srv;
    crt_dnode node;                 /* in the server's list of connections */
    conn_state state;
    int open_handles;               /* tcp + timer until their close callbacks */
    bool reading;
    bool in_drive;                  /* conn_drive is on the stack */
    bool drive_again;
    bool msg_started;               /* bytes of the current request seen */
    bool close_after;               /* close once the current answer is out */
    bool eof;                       /* the client closed its side */
    bool linger;                    /* unread input may follow: drain before closing */
    bool lingering;                 /* our side is shut down; discarding input */
    size_t lingered;
    int reject;                     /* status to answer a parse failure with */
    crt_buf in;                     /* received, not yet parsed */
    crt_buf out;                    /* response head, or unwritten rest */
    size_t head_bytes;
    uint32_t url_off, url_len;
    hdr_off hoff[CRT_HTTP_MAX_HEADERS];
    int hdr_phase;                  /* 0: none, 1: in a name, 2: in a value */
    uint64_t msg_start_ms;
    crt_req req;
    char ip[48];
};

struct crt_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t shutdown_timer;
    crt_server_opts opts;
    char *host;
    crt_router *router;
    llhttp_settings_t settings;
    crt_dlist conns;
    size_t nconns;
    uint64_t rejected;
    bool listener_open;
    bool shutting_down;
    size_t nalive;                  /* connections not yet freed */
    int open_handles;
    void (*shutdown_cb)(crt_server *);
    crt_server_pre_fn pre;
    crt_server_done_fn done;
    void *hook_ctx;
    /* Date header cache */
    int64_t date_sec;
    char date[40];
    /* request ids: random per-process prefix + counter */
    char rid_prefix[17];
    uint64_t rid_counter;
};

static char read_buf[64 * 1024];    /* one loop, one reader at a time */

static void conn_close(crt_conn *c);
static void conn_drive(crt_conn *c);
static void conn_update_reading(crt_conn *c);
static void conn_finish_request(crt_conn *c);
static void conn_arm_timer(crt_conn *c);
static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void server_maybe_done(crt_server *s);

/* ---- small helpers --------------------------------------------------------------- */

static crt_span hdr_name(const crt_req *r, const hdr_off *h) { return (crt_span){r->scratch.data + h->no, h->nl}; }
static crt_span hdr_value(const crt_req *r, const hdr_off *h) { return (crt_span){r->scratch.data + h->vo, h->vl}; }

crt_span crt_req_header(const crt_req *req, const char *name)
{
    const crt_conn *c = req->conn;
    for (size_t i = 0; i < req->nheaders; i++)
        if (crt_span_ieq(hdr_name(req, &c->hoff[i]), name))
            return hdr_value(req, &c->hoff[i]);
    return (crt_span){NULL, 0};
}

bool crt_req_query(crt_req *req, const char *name, crt_buf *out)
{
    size_t nl = strlen(name);
    const char *p = req->query.p, *e = p + req->query.len;
    while (p && p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *end = amp ? amp : e;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            if (eq)
                crt_percent_decode(eq + 1, (size_t)(end - eq - 1), out, true);
            return true;
        }
        p = amp ? amp + 1 : e;
    }
    return false;
}

bool crt_req_detached(const crt_req *req) { return req->conn->state != CONN_OPEN; }

void crt_req_add_header(crt_req *req, const char *name, const char *value, size_t vlen)
{
    crt_buf *b = &req->resp_headers;
    crt_buf_puts(b, name);
    crt_buf_append(b, ": ", 2);
    crt_buf_append(b, value, vlen);
    crt_buf_append(b, "\r\n", 2);
}

static const char *server_date(crt_server *s)
{
    int64_t now = crt_wall_s();
    if (now != s->date_sec) {
        struct tm tm;
        time_t t = (time_t)now;
        gmtime_r(&t, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = now;
    }
    return s->date;
}

static void req_make_id(crt_req *r, crt_server *s)
{
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

/* ---- writing ------------------------------------------------------------------------ */

static void conn_on_write(uv_write_t *w, int status)
{
    crt_conn *c = crt_container_of(w, crt_conn, wreq);
    if (status < 0 || c->state != CONN_OPEN) {
        c->req.keep_alive = false;
        conn_finish_request(c);
        return;
    }
    crt_buf_reset(&c->out);
    conn_finish_request(c);
}

void crt_req_respond(crt_req *req, int status, const char *content_type, const char *body, size_t len)
{
    crt_conn *c = req->conn;
    crt_server *s = c->srv;
    req->status = status;
    req->resp_body_len = len;
    req->state = CRT_REQ_WRITE;
    if (c->state != CONN_OPEN) {        /* client gone: nothing to write */
        conn_finish_request(c);
        return;
    }
    if (s->shutting_down || c->close_after || c->eof)
        req->keep_alive = false;
    if (!req->request_id_len)
        req_make_id(req, s);

    crt_buf *o = &c->out;
    crt_buf_reset(o);
    crt_resp_head h = {
        .status = status,
        .date = server_date(s),
        .content_type = content_type,
        .content_length = len,
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .keep_alive = req->keep_alive,
        .http10 = c->parser.http_minor == 0,
        .extra = req->resp_headers.data,
        .extra_len = req->resp_headers.len,
    };
    crt_http_format_head(o, &h);
    if (req->method == HTTP_HEAD)
        len = 0;

    uv_buf_t iov[2] = {uv_buf_init(o->data, (unsigned)o->len), uv_buf_init((char *)body, (unsigned)len)};
    size_t total = o->len + len;
    int n = uv_try_write((uv_stream_t *)&c->tcp, iov, len ? 2 : 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        req->keep_alive = false;
        conn_finish_request(c);
        return;
    }
    if ((size_t)n == total) {
        crt_buf_reset(o);
        conn_finish_request(c);
        return;
    }
    /* Slow path: keep the unwritten rest in out and hand it to uv_write. */
    size_t head = o->len;
    if ((size_t)n < head) {
        crt_buf_consume(o, (size_t)n);
        crt_buf_append(o, body, len);
    } else {
        size_t done = (size_t)n - head;
        crt_buf_reset(o);
        crt_buf_append(o, body + done, len - done);
    }
    uv_buf_t rest = uv_buf_init(o->data, (unsigned)o->len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &rest, 1, conn_on_write) < 0) {
        req->keep_alive = false;
        conn_finish_request(c);
        return;
    }
    conn_arm_timer(c);
}

void crt_req_error(crt_req *req, int status, const char *code, const char *message)
{
    crt_buf *b = &req->resp_body;
    crt_buf_reset(b);
    crt_http_error_body(b, status, code, message);
    crt_req_respond(req, status, "application/json", b->data, b->len);
}

/* ---- request lifecycle ------------------------------------------------------------------ */

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
    r->state = CRT_REQ_HEAD;
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
    c->msg_started = false;
    c->head_bytes = 0;
    c->url_off = c->url_len = 0;
    c->hdr_phase = 0;
    c->reject = 0;
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
    s->nalive--;
    server_maybe_done(s);
}

static void conn_maybe_free(crt_conn *c)
{
    if (c->state == CONN_CLOSING && c->open_handles == 0 &&
        c->req.state != CRT_REQ_HANDLE && c->req.state != CRT_REQ_WRITE)
        conn_free(c);
}

/* Lingering close: after an error answer sent before the whole request was
 * read, shut our side down and discard what the client still sends (bounded
 * in bytes and time). Closing at once would make the kernel reset the
 * connection and the client could lose the answer. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (64u << 20)

static void conn_on_shutdown(uv_shutdown_t *r, int status)
{
    crt_conn *c = crt_container_of(r, crt_conn, sreq);
    if (status < 0)
        conn_close(c);
}

static void conn_on_linger_timeout(uv_timer_t *t)
{
    conn_close(crt_container_of(t, crt_conn, timer));
}

static void conn_linger(crt_conn *c)
{
    c->lingering = true;
    crt_buf_fini(&c->in);
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, conn_on_linger_timeout, LINGER_MS, 0);
    conn_update_reading(c);
}

static void conn_finish_request(crt_conn *c)
{
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    if (s->done)
        s->done(r, crt_now_ns() - r->start_ns, s->hook_ctx);
    bool keep = r->keep_alive && c->state == CONN_OPEN && !c->close_after && !s->shutting_down && !c->eof;
    req_reset(c);
    if (c->state != CONN_OPEN) {
        conn_maybe_free(c);
        return;
    }
    if (!keep) {
        if (c->linger && !c->eof)
            conn_linger(c);
        else
            conn_close(c);
        return;
    }
    conn_arm_timer(c);
    conn_drive(c);
}

static void conn_dispatch(crt_conn *c)
{
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    r->state = CRT_REQ_HANDLE;
    uv_timer_stop(&c->timer);
    req_make_id(r, s);
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

/* ---- llhttp callbacks --------------------------------------------------------------------- */

static crt_conn *pconn(llhttp_t *p) { return (crt_conn *)p->data; }

static int head_append(crt_conn *c, const char *at, size_t len, uint32_t *off, uint32_t *n, bool fresh)
{
    c->head_bytes += len;
    if (c->head_bytes > CRT_HTTP_MAX_HEAD) {
        c->reject = 431;
        return -1;
    }
    if (fresh) {
        *off = (uint32_t)c->req.scratch.len;
        *n = 0;
    }
    if (crt_buf_append(&c->req.scratch, at, len))
        return -1;
    *n += (uint32_t)len;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    c->msg_started = true;
    c->req.start_ns = crt_now_ns();
    c->msg_start_ms = uv_now(c->srv->loop);
    conn_arm_timer(c);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    return head_append(c, at, len, &c->url_off, &c->url_len, c->url_len == 0);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    crt_req *r = &c->req;
    bool fresh = c->hdr_phase != 1;
    if (fresh) {
        if (r->nheaders == CRT_HTTP_MAX_HEADERS) {
            c->reject = 431;
            return -1;
        }
        hdr_off *h = &c->hoff[r->nheaders++];
        h->vo = h->vl = 0;
        c->head_bytes += 4;         /* ": " and CRLF */
    }
    c->hdr_phase = 1;
    hdr_off *h = &c->hoff[r->nheaders - 1];
    return head_append(c, at, len, &h->no, &h->nl, fresh);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    bool fresh = c->hdr_phase != 2;
    c->hdr_phase = 2;
    hdr_off *h = &c->hoff[c->req.nheaders - 1];
    return head_append(c, at, len, &h->vo, &h->vl, fresh);
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int on_headers_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    r->method = (llhttp_method_t)p->method;
    const char *mn = llhttp_method_name(r->method);
    r->method_name = (crt_span){mn, strlen(mn)};
    /* Captured params are decoded into scratch after the head; room for them
     * now means path and query below never move. */
    if (crt_buf_reserve(&r->scratch, c->url_len + 1))
        return -1;
    const char *url = r->scratch.data + c->url_off;
    const char *q = memchr(url, '?', c->url_len);
    r->path = (crt_span){url, q ? (size_t)(q - url) : c->url_len};
    r->query = q ? (crt_span){q + 1, c->url_len - (size_t)(q - url) - 1} : (crt_span){NULL, 0};
    r->keep_alive = llhttp_should_keep_alive(p);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->opts.max_body_bytes) {
        c->reject = 413;
        return -1;
    }
    crt_span ex = crt_req_header(r, "Expect");
    if (ex.len && crt_span_ieq(ex, "100-continue") && p->http_minor >= 1) {
        r->expect_continue = true;
        uv_buf_t b = uv_buf_init((char *)continue_100, sizeof continue_100 - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* tiny; a client that can't take it times out */
    }
    r->state = CRT_REQ_BODY;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    if (c->req.body.len + len > c->srv->opts.max_body_bytes) {
        c->reject = 413;
        return -1;
    }
    return crt_buf_append(&c->req.body, at, len) ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;   /* one request at a time: the rest waits in c->in */
}

/* ---- reading and parsing ----------------------------------------------------------------- */

static void conn_reject(crt_conn *c, int status)
{
    crt_req *r = &c->req;
    c->close_after = true;
    c->linger = true;
    r->keep_alive = false;
    r->state = CRT_REQ_HANDLE;
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

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void conn_update_reading(crt_conn *c)
{
    bool want = c->state == CONN_OPEN && !c->eof && (c->lingering || c->in.len < CONN_MAX_PENDING_INPUT);
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
        if (c->state != CONN_OPEN || c->in.len == 0 ||
            (c->req.state != CRT_REQ_HEAD && c->req.state != CRT_REQ_BODY))
            break;
        const char *data = c->in.data;
        llhttp_errno_t err = llhttp_execute(&c->parser, data, c->in.len);
        if (err == HPE_OK) {
            crt_buf_reset(&c->in);
            if (c->msg_started && c->req.state == CRT_REQ_HEAD && c->head_bytes > CRT_HTTP_MAX_HEAD)
                conn_reject(c, 431);
        } else if (err == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            crt_buf_consume(&c->in, used);
            llhttp_resume(&c->parser);
            conn_dispatch(c);
        } else {
            crt_buf_reset(&c->in);
            conn_reject(c, c->reject ? c->reject : 400);
        }
    } while (c->drive_again);
    c->in_drive = false;
    conn_update_reading(c);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    crt_conn *c = crt_container_of((uv_tcp_t *)st, crt_conn, tcp);
    if (nread == 0)
        return;
    if (c->lingering) {
        c->lingered += nread > 0 ? (size_t)nread : 0;
        if (nread < 0 || c->lingered > LINGER_MAX_BYTES)
            conn_close(c);
        return;
    }
    if (nread < 0) {
        bool busy = c->req.state == CRT_REQ_HANDLE || c->req.state == CRT_REQ_WRITE;
        if (nread == UV_EOF && busy) {
            c->eof = true;          /* half-close: answer, then close */
            conn_update_reading(c);
            return;
        }
        conn_close(c);
        return;
    }
    if (crt_buf_append(&c->in, buf->base, (size_t)nread)) {
        conn_close(c);
        return;
    }
    conn_drive(c);
}

/* ---- timers ----------------------------------------------------------------------------------- */

static void conn_on_timer(uv_timer_t *t)
{
    crt_conn *c = crt_container_of(t, crt_conn, timer);
    if (c->req.state == CRT_REQ_WRITE) {
        CRT_LOGF(CRT_LOG_INFO, "write timeout: connection dropped", CRT_LS("client", c->ip));
        c->req.keep_alive = false;
        conn_close(c);
        return;
    }
    if (c->msg_started || c->req.state == CRT_REQ_BODY) {
        CRT_LOGF(CRT_LOG_INFO, "read timeout: request not received in time, closing", CRT_LS("client", c->ip));
    }
    conn_close(c);
}

static void conn_arm_timer(crt_conn *c)
{
    const crt_server_opts *o = &c->srv->opts;
    uint64_t ms;
    switch (c->req.state) {
    case CRT_REQ_HEAD:
    case CRT_REQ_BODY:
        if (c->msg_started) {
            uint64_t elapsed = uv_now(c->srv->loop) - c->msg_start_ms;
            ms = elapsed >= o->read_timeout_ms ? 1 : o->read_timeout_ms - elapsed;
        } else {
            ms = c->in.len ? o->read_timeout_ms : o->idle_timeout_ms;
        }
        break;
    case CRT_REQ_WRITE:
        ms = o->write_timeout_ms;
        break;
    default:
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, conn_on_timer, ms, 0);
}

/* ---- connection open/close --------------------------------------------------------------------- */

static void conn_on_close(uv_handle_t *h)
{
    crt_conn *c = h->data;
    c->open_handles--;
    conn_maybe_free(c);
}

static void conn_close(crt_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    crt_server *s = c->srv;
    c->state = CONN_CLOSING;
    crt_dlist_remove(&s->conns, &c->node);
    s->nconns--;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

static void server_on_connection(uv_stream_t *ls, int status)
{
    crt_server *s = crt_container_of((uv_tcp_t *)ls, crt_server, listener);
    if (status < 0)
        return;
    crt_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = s;
    if (uv_tcp_init(s->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    s->nalive++;
    c->tcp.data = c;
    c->open_handles = 1;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->open_handles++;
    c->state = CONN_OPEN;
    crt_dlist_push_front(&s->conns, &c->node);
    s->nconns++;
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->req.conn = c;
    req_reset(c);
    c->req.client_ip = c->ip;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->ip, sizeof c->ip);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->ip, sizeof c->ip);
    }
    if (s->nconns > s->opts.max_connections || s->shutting_down) {
        s->rejected++;
        c->req.state = CRT_REQ_HANDLE;
        c->req.start_ns = crt_now_ns();
        c->close_after = true;
        c->req.keep_alive = false;
        crt_req_add_header(&c->req, "Retry-After", "1", 1);
        crt_req_error(&c->req, 503, "backend_unavailable", "too many open connections");
        return;
    }
    conn_arm_timer(c);
    conn_update_reading(c);
}

/* ---- server ------------------------------------------------------------------------------------- */

crt_server *crt_server_new(uv_loop_t *loop, const crt_server_opts *opts, crt_router *router)
{
    crt_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->opts = *opts;
    s->host = strdup(opts->host ? opts->host : "0.0.0.0");
    s->opts.host = s->host;
    s->router = router;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    unsigned char rnd[8];
    crt_random_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(s->rid_prefix + 2 * i, 3, "%02x", rnd[i]);
    return s;
}

void crt_server_set_hooks(crt_server *s, crt_server_pre_fn pre, crt_server_done_fn done, void *ctx)
{
    s->pre = pre;
    s->done = done;
    s->hook_ctx = ctx;
}

int crt_server_listen(crt_server *s)
{
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(s->host, (int)s->opts.port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        rc = uv_ip6_addr(s->host, (int)s->opts.port, (struct sockaddr_in6 *)&addr);
    if (rc < 0)
        return rc;
    if ((rc = uv_tcp_init_ex(s->loop, &s->listener, addr.ss_family)) < 0)
        return rc;
    s->open_handles++;
    s->listener_open = true;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->listener, &fd) == 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0)
        return rc;
    return uv_listen((uv_stream_t *)&s->listener, 1024, server_on_connection);
}

size_t crt_server_open_connections(const crt_server *s) { return s->nconns; }
uint64_t crt_server_rejected_connections(const crt_server *s) { return s->rejected; }

static void server_on_handle_close(uv_handle_t *h)
{
    crt_server *s = h->data;
    s->open_handles--;
    server_maybe_done(s);
}

static void server_done(crt_server *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->shutdown_timer))
        uv_close((uv_handle_t *)&s->shutdown_timer, server_on_handle_close);
    if (s->shutdown_cb) {
        void (*cb)(crt_server *) = s->shutdown_cb;
        s->shutdown_cb = NULL;
        cb(s);
    }
}

static void server_maybe_done(crt_server *s)
{
    if (s->shutting_down && s->shutdown_cb && s->nalive == 0 && !s->listener_open)
        server_done(s);
}

static void server_on_deadline(uv_timer_t *t)
{
    crt_server *s = t->data;
    CRT_LOGF(CRT_LOG_WARN, "shutdown deadline reached, closing busy connections", CRT_LI("connections", s->nconns));
    while (s->conns.head)
        conn_close(crt_container_of(s->conns.head, crt_conn, node));
    /* Requests still waiting on I/O finish (discarded) once their
     * dependencies are stopped by the callback. */
    server_done(s);
}

void crt_server_shutdown(crt_server *s, uint64_t deadline_ms, void (*cb)(crt_server *s))
{
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    s->shutdown_cb = cb;
    uv_timer_init(s->loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    s->open_handles++;
    uv_timer_start(&s->shutdown_timer, server_on_deadline, deadline_ms, 0);
    if (s->listener_open) {
        s->listener.data = s;
        uv_close((uv_handle_t *)&s->listener, server_on_handle_close);
        s->listener_open = false;
    }
    /* Idle connections close now; busy ones after their answer. */
    for (crt_dnode *n = s->conns.head, *next; n; n = next) {
        next = n->next;
        crt_conn *c = crt_container_of(n, crt_conn, node);
        if (c->req.state == CRT_REQ_HEAD && !c->msg_started && c->in.len == 0)
            conn_close(c);
        else
            c->close_after = true;
    }
    server_maybe_done(s);
}

void crt_server_free(crt_server *s)
{
    if (!s)
        return;
    free(s->host);
    free(s);
}
