/* The HTTP/1.1 server: listener, connections, the per-request state machine,
 * timeouts and graceful shutdown. See http.h for the model. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
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
    bool head_done;                 /* head complete: header callbacks now are trailers */
    bool used;                      /* at least one request finished on it */
    size_t lingered;
    int reject;                     /* status to answer a parse failure with */
    const char *exec_base;          /* start of the bytes llhttp is parsing */
    char prev_last;                 /* last byte of the previous parse call */
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
    /* The listening socket is ours (accept4 on readiness) so that a failed
     * accept is seen, counted and backed off from: libuv's own accept loop
     * drops connections silently on EMFILE and can spin on other errors. */
    int listen_fd;
    uv_poll_t listen_poll;
    bool polling;                   /* listen_poll started */
    uv_timer_t shutdown_timer;
    crt_server_opts opts;
    char *host;
    crt_router *router;
    llhttp_settings_t settings;
    crt_dlist conns;
    size_t nconns;
    uint64_t rejected;
    uint64_t accept_errors;         /* failed accepts (EMFILE, ENOBUFS...) */
    uint64_t accept_errors_logged;
    uint64_t accept_log_ms;         /* last warning, for rate limiting */
    uv_timer_t accept_timer;        /* resumes accepting after a failure */
    bool accept_timer_init;
    int bound_port;
    struct sockaddr_storage addr;   /* resolved once at listen */
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
static void server_accept_resume(crt_server *s);

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
    if (status == 204)
        len = 0;                        /* a 204 has no body */
    req->status = status;
    req->resp_body_len = len;
    req->state = CRT_REQ_WRITE;
    if (c->state != CONN_OPEN) {        /* client gone: nothing to write */
        conn_finish_request(c);
        return;
    }
    /* After a half-close the requests already received are still answered;
     * the last one says the connection ends. */
    if (s->shutting_down || c->close_after || (c->eof && c->in.len == 0))
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
    c->msg_started = false;
    c->head_bytes = 0;
    c->url_off = c->url_len = 0;
    c->hdr_phase = 0;
    c->reject = 0;
    c->head_done = false;
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
    /* A descriptor is free again: accepting may have paused on EMFILE. */
    server_accept_resume(s);
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
    bool keep = r->keep_alive && c->state == CONN_OPEN && !c->close_after && !s->shutting_down &&
                !(c->eof && c->in.len == 0);
    req_reset(c);
    c->used = true;
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

/* Trailers (header lines after a chunked body) are never request headers:
 * an Authorization trailer must not authenticate. They are not stored (the
 * head is frozen, nothing may move under path/query), only counted against
 * the head limit. */
static int trailer_bytes(crt_conn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > CRT_HTTP_MAX_HEAD) {
        c->reject = 431;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    crt_req *r = &c->req;
    if (c->head_done) {
        size_t extra = c->hdr_phase != 1 ? 4 : 0;   /* ": " and CRLF */
        c->hdr_phase = 1;
        return trailer_bytes(c, len + extra);
    }
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
    /* llhttp joins an obs-fold (CRLF SP) silently: a value piece that starts
     * right after a line break is one. RFC 9112 §5.2: refuse it. */
    char before = at > c->exec_base ? at[-1] : c->prev_last;
    if (before == '\n') {
        c->reject = 400;
        return -1;
    }
    if (c->head_done) {
        c->hdr_phase = 2;
        return trailer_bytes(c, len);
    }
    bool fresh = c->hdr_phase != 2;
    c->hdr_phase = 2;
    hdr_off *h = &c->hoff[c->req.nheaders - 1];
    return head_append(c, at, len, &h->vo, &h->vl, fresh);
}

static bool is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* RFC 9112 §5.1: no whitespace between a field name and the colon. */
static int on_header_field_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    if (c->head_done || !c->req.nheaders)
        return 0;
    crt_span n = hdr_name(&c->req, &c->hoff[c->req.nheaders - 1]);
    for (size_t i = 0; i < n.len; i++)
        if (is_ows(n.p[i])) {
            c->reject = 400;
            return -1;
        }
    return 0;
}

/* Trailing whitespace is not part of a value; a raw line break in one is
 * refused. */
static int on_header_value_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    if (c->head_done || !c->req.nheaders)
        return 0;
    hdr_off *h = &c->hoff[c->req.nheaders - 1];
    crt_span v = hdr_value(&c->req, h);
    if (v.len && (memchr(v.p, '\r', v.len) || memchr(v.p, '\n', v.len))) {
        c->reject = 400;
        return -1;
    }
    while (h->vl && is_ows(v.p[h->vl - 1]))
        h->vl--;
    return 0;
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int on_headers_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    crt_req *r = &c->req;
    crt_server *s = c->srv;
    c->head_done = true;
    r->method = (llhttp_method_t)p->method;
    const char *mn = llhttp_method_name(r->method);
    r->method_name = (crt_span){mn, strlen(mn)};
    /* Upgrade offers (h2c, websocket) are ignored: the answer is HTTP/1.1
     * and the connection stays HTTP/1.1. Clearing the flag here (llhttp
     * reads it after this callback) keeps the parser from pausing in
     * HPE_PAUSED_UPGRADE. CONNECT ends the connection after its answer. */
    if (r->method == HTTP_CONNECT)
        c->close_after = true;
    else
        p->upgrade = 0;
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
        c->exec_base = data;
        llhttp_errno_t err = llhttp_execute(&c->parser, data, c->in.len);
        c->prev_last = data[c->in.len - 1];
        if (err == HPE_OK) {
            crt_buf_reset(&c->in);
            if (c->msg_started && c->req.state == CRT_REQ_HEAD && c->head_bytes > CRT_HTTP_MAX_HEAD)
                conn_reject(c, 431);
        } else if (err == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            crt_buf_consume(&c->in, used);
            llhttp_resume(&c->parser);
            conn_dispatch(c);
        } else if (err == HPE_PAUSED_UPGRADE) {
            /* Only CONNECT gets here (upgrade offers are cleared in
             * on_headers_complete) and it closes after its answer; start
             * the parser afresh rather than reading another protocol. */
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            crt_buf_consume(&c->in, used);
            llhttp_reset(&c->parser);
            c->drive_again = true;
        } else {
            crt_buf_reset(&c->in);
            conn_reject(c, c->reject ? c->reject : 400);
        }
    } while (c->drive_again);
    c->in_drive = false;
    /* Half-closed and nothing complete left to answer: done. */
    if (c->state == CONN_OPEN && c->eof && !c->lingering &&
        (c->req.state == CRT_REQ_HEAD || c->req.state == CRT_REQ_BODY)) {
        conn_close(c);
        return;
    }
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
        if (nread == UV_EOF && (busy || c->in.len)) {
            /* Half-close: answer every request already received (the one
             * in progress and those pipelined behind it), then close. */
            c->eof = true;
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

/* A new connection object with its handles initialised (not yet connected). */
static crt_conn *conn_new(crt_server *s)
{
    crt_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = s;
    if (uv_tcp_init(s->loop, &c->tcp) < 0) {
        free(c);
        return NULL;
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
    return c;
}

/* The connection is connected: learn the peer, then serve it (or refuse it
 * when over maxConnections or stopping, unless it was drained from the
 * backlog at shutdown, which is served once and closed). */
static void conn_start(crt_conn *c, bool drained)
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
        c->req.state = CRT_REQ_HANDLE;
        c->req.start_ns = crt_now_ns();
        c->close_after = true;
        c->req.keep_alive = false;
        crt_req_add_header(&c->req, "Retry-After", "1", 1);
        crt_req_error(&c->req, 503, "backend_unavailable", "too many open connections");
        return;
    }
    if (drained)
        c->close_after = true;
    conn_arm_timer(c);
    conn_update_reading(c);
}

#define ACCEPT_LOG_EVERY_MS 10000
#define ACCEPT_BATCH 64             /* per readiness callback: stay fair to the rest */
#define ACCEPT_BACKOFF_MS 100

static void server_on_listen_poll(uv_poll_t *h, int status, int events);

static void server_accept_resume(crt_server *s)
{
    if (s->listen_fd < 0 || s->shutting_down || s->polling)
        return;
    if (uv_poll_start(&s->listen_poll, UV_READABLE, server_on_listen_poll) == 0)
        s->polling = true;
}

static void server_on_accept_timer(uv_timer_t *t) { server_accept_resume(t->data); }

/* An accept failed (EMFILE, ENFILE, ENOBUFS, ENOMEM...): counted, logged at
 * most every ACCEPT_LOG_EVERY_MS, and accepting pauses for
 * ACCEPT_BACKOFF_MS (or until a connection closes) so the loop cannot spin
 * on a backlog it cannot take; waiting clients stay in the backlog. */
static void server_accept_failed(crt_server *s, int err)
{
    s->accept_errors++;
    uint64_t now = uv_now(s->loop);
    if (!s->accept_log_ms || now - s->accept_log_ms >= ACCEPT_LOG_EVERY_MS) {
        CRT_LOGF(CRT_LOG_WARN, "cannot accept connections", CRT_LS("error", uv_strerror(err)),
                 CRT_LI("failures", s->accept_errors - s->accept_errors_logged),
                 CRT_LI("open_connections", s->nconns));
        s->accept_log_ms = now ? now : 1;
        s->accept_errors_logged = s->accept_errors;
    }
    if (s->polling) {
        uv_poll_stop(&s->listen_poll);
        s->polling = false;
    }
    if (s->accept_timer_init && !s->shutting_down)
        uv_timer_start(&s->accept_timer, server_on_accept_timer, ACCEPT_BACKOFF_MS, 0);
}

/* Accepts up to max pending connections. drained: at shutdown, see
 * conn_start. Returns false once accept stopped on an error or EAGAIN. */
static bool server_accept_some(crt_server *s, size_t max, bool drained)
{
    for (size_t n = 0; n < max; n++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                server_accept_failed(s, -errno);
            return false;
        }
        crt_conn *c = conn_new(s);
        if (!c) {
            close(fd);
            server_accept_failed(s, UV_ENOMEM);
            return false;
        }
        int rc = uv_tcp_open(&c->tcp, fd);
        if (rc < 0) {
            close(fd);
            conn_close(c);
            server_accept_failed(s, rc);
            return false;
        }
        conn_start(c, drained);
    }
    return true;
}

static void server_on_listen_poll(uv_poll_t *h, int status, int events)
{
    crt_server *s = h->data;
    (void)events;
    if (status < 0) {
        server_accept_failed(s, status);
        return;
    }
    server_accept_some(s, ACCEPT_BATCH, false);
}

/* Shutdown: connections the kernel has already completed wait in the accept
 * backlog; closing the listener would reset them. Accept them all first. */
static void server_drain_backlog(crt_server *s)
{
    if (s->listen_fd >= 0)
        server_accept_some(s, 4096, true);
}

static void server_on_listen_poll_closed(uv_handle_t *h)
{
    crt_server *s = h->data;
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    s->open_handles--;
    server_maybe_done(s);
}

static void server_close_listener(crt_server *s)
{
    if (!s->listener_open)
        return;
    s->listener_open = false;
    s->polling = false;
    uv_close((uv_handle_t *)&s->listen_poll, server_on_listen_poll_closed);
}

/* ---- server ------------------------------------------------------------------------------------- */

crt_server *crt_server_new(uv_loop_t *loop, const crt_server_opts *opts, crt_router *router)
{
    crt_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->listen_fd = -1;
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
    s->settings.on_header_field_complete = on_header_field_complete;
    s->settings.on_header_value_complete = on_header_value_complete;
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

/* Resolves the configured host once, before the loop runs (a host name such
 * as "localhost" is allowed; getaddrinfo blocks, which is fine at start-up
 * only). Prefers an IPv4 address when the name has both. */
static int server_resolve(crt_server *s)
{
    memset(&s->addr, 0, sizeof s->addr);
    if (uv_ip4_addr(s->host, s->opts.port, (struct sockaddr_in *)&s->addr) == 0 ||
        uv_ip6_addr(s->host, s->opts.port, (struct sockaddr_in6 *)&s->addr) == 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(s->host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        if (res)
            freeaddrinfo(res);
        return rc == EAI_AGAIN ? UV_EAI_AGAIN : rc == EAI_MEMORY ? UV_ENOMEM : UV_EAI_NONAME;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    rc = UV_EAI_FAMILY;
    if (pick->ai_family == AF_INET || pick->ai_family == AF_INET6) {
        memcpy(&s->addr, pick->ai_addr, pick->ai_addrlen);
        if (pick->ai_family == AF_INET)
            ((struct sockaddr_in *)&s->addr)->sin_port = htons((uint16_t)s->opts.port);
        else
            ((struct sockaddr_in6 *)&s->addr)->sin6_port = htons((uint16_t)s->opts.port);
        rc = 0;
    }
    freeaddrinfo(res);
    return rc;
}

/* Opens the listening socket on s->addr (SO_REUSEPORT: processes may share
 * the port). Errors come back as negative UV codes. */
static int server_bind_listen(crt_server *s)
{
    int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    socklen_t alen = s->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&s->addr, alen) != 0 || listen(fd, 1024) != 0)
        rc = -errno;
    if (rc == 0)
        rc = uv_poll_init_socket(s->loop, &s->listen_poll, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    s->listen_fd = fd;
    s->listen_poll.data = s;
    s->open_handles++;
    s->listener_open = true;
    uv_timer_init(s->loop, &s->accept_timer);
    s->accept_timer.data = s;
    s->accept_timer_init = true;
    s->open_handles++;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        s->bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                       : ((struct sockaddr_in *)&ss)->sin_port);
    server_accept_resume(s);
    return 0;
}

int crt_server_listen(crt_server *s)
{
    int rc = server_resolve(s);
    if (rc < 0)
        return rc;
    return server_bind_listen(s);
}

int crt_server_port(const crt_server *s) { return s->bound_port; }
uint64_t crt_server_accept_errors(const crt_server *s) { return s->accept_errors; }

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

/* A fresh connection gets this long at shutdown to send its request. */
#define SHUTDOWN_FIRST_REQUEST_GRACE_MS 500

static bool conn_input_pending(crt_conn *c)
{
    uv_os_fd_t fd;
    char b;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return false;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
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
    if (s->accept_timer_init) {
        s->accept_timer_init = false;
        uv_close((uv_handle_t *)&s->accept_timer, server_on_handle_close);
    }
    /* Idle connections close now; busy ones after their answer. A
     * connection whose request bytes wait unread in the socket, or one that
     * has not sent its first request yet, is served once (closing it now
     * would reset a request the client already sent). */
    for (crt_dnode *n = s->conns.head, *next; n; n = next) {
        next = n->next;
        crt_conn *c = crt_container_of(n, crt_conn, node);
        bool idle = c->req.state == CRT_REQ_HEAD && !c->msg_started && c->in.len == 0;
        if (idle && !c->used && !conn_input_pending(c)) {
            c->close_after = true;
            uv_timer_start(&c->timer, conn_on_timer, SHUTDOWN_FIRST_REQUEST_GRACE_MS, 0);
        } else if (idle && !conn_input_pending(c)) {
            conn_close(c);
        } else {
            c->close_after = true;
        }
    }
    /* Then take what waits in the backlog (served once, see above). */
    server_drain_backlog(s);
    server_close_listener(s);
    server_maybe_done(s);
}

void crt_server_free(crt_server *s)
{
    if (!s)
        return;
    free(s->host);
    free(s);
}
