/* The llhttp adapter: owns the request head. Pieces of the URL and the
 * header lines are appended to req.scratch and kept as offsets; the head
 * limit, the header count, obs-fold and whitespace rules are checked here;
 * trailers are counted, never stored. */
#include <string.h>
#include "http_int.h"

static crt_conn *pconn(llhttp_t *p) { return crt_container_of(p, crt_conn, head.parser); }

static crt_span hdr_name(const crt_req *r, const hdr_off *h) { return (crt_span){r->scratch.data + h->no, h->nl}; }
static crt_span hdr_value(const crt_req *r, const hdr_off *h) { return (crt_span){r->scratch.data + h->vo, h->vl}; }

crt_span crt_req_header(const crt_req *req, const char *name)
{
    const crt_http_head *hd = &req->conn->head;
    for (size_t i = 0; i < req->nheaders; i++)
        if (crt_span_ieq(hdr_name(req, &hd->hoff[i]), name))
            return hdr_value(req, &hd->hoff[i]);
    return (crt_span){NULL, 0};
}

bool crt_req_query(crt_req *req, const char *name, crt_buf *out)
{
    size_t nl = strlen(name);
    const char *p = req->query.p, *e = p ? p + req->query.len : NULL;   /* no query: p is NULL */
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

/* Counts len head bytes; false (431) over the limit. */
static bool head_count(crt_conn *c, size_t len)
{
    c->head.bytes += len;
    if (c->head.bytes > CRT_HTTP_MAX_HEAD) {
        c->head.reject = 431;
        return false;
    }
    return true;
}

static int head_append(crt_conn *c, const char *at, size_t len, uint32_t *off, uint32_t *n, bool fresh)
{
    if (!head_count(c, len))
        return -1;
    if (fresh) {
        *off = (uint32_t)c->req.scratch.len;
        *n = 0;
    }
    if (crt_buf_append(&c->req.scratch, at, len))
        return -1;
    *n += (uint32_t)len;
    return 0;
}

/* Header callbacks after the head are trailers (header lines after a chunked
 * body). They are never request headers: an Authorization trailer must not
 * authenticate. They are not stored (the head is frozen, nothing may move
 * under path/query), only counted against the head limit. */
static bool in_trailers(const crt_conn *c) { return c->state == CONN_BODY; }

static int on_message_begin(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    c->req.start_ns = crt_now_ns();
    c->msg_start_ms = uv_now(c->srv->loop);
    crt_conn_set_state(c, CONN_HEAD);
    crt_conn_arm_timer(c);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    return head_append(c, at, len, &c->head.url_off, &c->head.url_len, c->head.url_len == 0);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    crt_http_head *hd = &c->head;
    crt_req *r = &c->req;
    if (in_trailers(c)) {
        size_t extra = hd->phase != 1 ? 4 : 0;   /* ": " and CRLF */
        hd->phase = 1;
        return head_count(c, len + extra) ? 0 : -1;
    }
    bool fresh = hd->phase != 1;
    if (fresh) {
        if (r->nheaders == CRT_HTTP_MAX_HEADERS) {
            hd->reject = 431;
            return -1;
        }
        hdr_off *h = &hd->hoff[r->nheaders++];
        h->vo = h->vl = 0;
        hd->bytes += 4;             /* ": " and CRLF */
    }
    hd->phase = 1;
    hdr_off *h = &hd->hoff[r->nheaders - 1];
    return head_append(c, at, len, &h->no, &h->nl, fresh);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    crt_http_head *hd = &c->head;
    /* llhttp joins an obs-fold (CRLF SP) silently: a value piece that starts
     * right after a line break is one. RFC 9112 §5.2: refuse it. */
    char before = at > hd->exec_base ? at[-1] : hd->prev_last;
    if (before == '\n') {
        hd->reject = 400;
        return -1;
    }
    if (in_trailers(c)) {
        hd->phase = 2;
        return head_count(c, len) ? 0 : -1;
    }
    bool fresh = hd->phase != 2;
    hd->phase = 2;
    hdr_off *h = &hd->hoff[c->req.nheaders - 1];
    return head_append(c, at, len, &h->vo, &h->vl, fresh);
}

static bool is_ows(char ch) { return ch == ' ' || ch == '\t'; }

/* RFC 9112 §5.1: no whitespace between a field name and the colon. */
static int on_header_field_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    if (in_trailers(c) || !c->req.nheaders)
        return 0;
    crt_span n = hdr_name(&c->req, &c->head.hoff[c->req.nheaders - 1]);
    for (size_t i = 0; i < n.len; i++)
        if (is_ows(n.p[i])) {
            c->head.reject = 400;
            return -1;
        }
    return 0;
}

/* Trailing whitespace is not part of a value; a raw line break in one is
 * refused. */
static int on_header_value_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    if (in_trailers(c) || !c->req.nheaders)
        return 0;
    hdr_off *h = &c->head.hoff[c->req.nheaders - 1];
    crt_span v = hdr_value(&c->req, h);
    if (v.len && (memchr(v.p, '\r', v.len) || memchr(v.p, '\n', v.len))) {
        c->head.reject = 400;
        return -1;
    }
    while (h->vl && is_ows(v.p[h->vl - 1]))
        h->vl--;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    crt_conn *c = pconn(p);
    crt_req *r = &c->req;
    crt_http_head *hd = &c->head;
    r->method = (llhttp_method_t)p->method;
    const char *mn = llhttp_method_name(r->method);
    r->method_name = (crt_span){mn, strlen(mn)};
    /* Upgrade offers (h2c, websocket) are ignored: the answer is HTTP/1.1
     * and the connection stays HTTP/1.1. Clearing the flag here (llhttp
     * reads it after this callback) keeps the parser from pausing in
     * HPE_PAUSED_UPGRADE. CONNECT ends the connection after its answer. */
    if (r->method == HTTP_CONNECT)
        crt_conn_set_after(c, CONN_AFTER_CLOSE);
    else
        p->upgrade = 0;
    /* Captured params are decoded into scratch after the head; room for them
     * now means path and query below never move. */
    if (crt_buf_reserve(&r->scratch, hd->url_len + 1))
        return -1;
    const char *url = r->scratch.data + hd->url_off;
    const char *q = memchr(url, '?', hd->url_len);
    r->path = (crt_span){url, q ? (size_t)(q - url) : hd->url_len};
    r->query = q ? (crt_span){q + 1, hd->url_len - (size_t)(q - url) - 1} : (crt_span){NULL, 0};
    r->keep_alive = llhttp_should_keep_alive(p);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->opts.max_body_bytes) {
        hd->reject = 413;
        return -1;
    }
    crt_span ex = crt_req_header(r, "Expect");
    if (ex.len && crt_span_ieq(ex, "100-continue") && p->http_minor >= 1) {
        r->expect_continue = true;
        crt_conn_send_continue(c);
    }
    crt_conn_set_state(c, CONN_BODY);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    crt_conn *c = pconn(p);
    if (c->req.body.len + len > c->srv->opts.max_body_bytes) {
        c->head.reject = 413;
        return -1;
    }
    return crt_buf_append(&c->req.body, at, len) ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;   /* one request at a time: the rest waits in c->in */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void crt_http_head_init(crt_conn *c) { llhttp_init(&c->head.parser, HTTP_REQUEST, &settings); }

void crt_http_head_reset(crt_conn *c)
{
    crt_http_head *hd = &c->head;
    hd->bytes = 0;
    hd->url_off = hd->url_len = 0;
    hd->phase = 0;
    hd->reject = 0;
}

llhttp_errno_t crt_http_parse(crt_conn *c, size_t *used)
{
    crt_http_head *hd = &c->head;
    const char *data = c->in.data;
    hd->exec_base = data;
    llhttp_errno_t err = llhttp_execute(&hd->parser, data, c->in.len);
    hd->prev_last = data[c->in.len - 1];
    *used = err == HPE_OK ? c->in.len : (size_t)(llhttp_get_error_pos(&hd->parser) - data);
    return err;
}
