/* Answering a request: the head (formatted by response.c) and the body go
 * out with one uv_try_write; only what the socket cannot take now is copied
 * into the connection's out buffer and handed to uv_write. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "http_int.h"

void crt_req_add_header(crt_req *req, const char *name, const char *value, size_t vlen)
{
    crt_buf *b = &req->resp_headers;
    crt_buf_puts(b, name);
    crt_buf_append(b, ": ", 2);
    crt_buf_append(b, value, vlen);
    crt_buf_append(b, "\r\n", 2);
}

bool crt_req_detached(const crt_req *req) { return req->conn->state >= CONN_DETACHED; }

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

static void conn_on_write(uv_write_t *w, int status)
{
    crt_conn *c = crt_container_of(w, crt_conn, wreq);
    if (status < 0 || c->state != CONN_WRITE) {
        c->req.keep_alive = false;
        crt_conn_finish_request(c);
        return;
    }
    crt_buf_reset(&c->out);
    crt_conn_finish_request(c);
}

void crt_req_respond(crt_req *req, int status, const char *content_type, const char *body, size_t len)
{
    crt_conn *c = req->conn;
    crt_server *s = c->srv;
    if (status == 204)
        len = 0;                        /* a 204 has no body */
    req->status = status;
    req->resp_body_len = len;
    if (c->state == CONN_DETACHED) {    /* client gone: nothing to write */
        req->state = CRT_REQ_WRITE;
        crt_conn_finish_request(c);
        return;
    }
    crt_conn_set_state(c, CONN_WRITE);
    /* After a half-close the requests already received are still answered;
     * the last one says the connection ends. */
    if (s->shutting_down || c->after != CONN_AFTER_NEXT || (c->eof && c->in.len == 0))
        req->keep_alive = false;
    if (!req->request_id_len)
        crt_conn_request_id(c);

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
        .http10 = c->head.parser.http_minor == 0,
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
        crt_conn_finish_request(c);
        return;
    }
    if ((size_t)n == total) {
        crt_buf_reset(o);
        crt_conn_finish_request(c);
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
        crt_conn_finish_request(c);
        return;
    }
    crt_conn_arm_timer(c);
}

void crt_req_error(crt_req *req, int status, const char *code, const char *message)
{
    crt_buf *b = &req->resp_body;
    crt_buf_reset(b);
    crt_http_error_body(b, status, code, message);
    crt_req_respond(req, status, "application/json", b->data, b->len);
}

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

void crt_conn_send_continue(crt_conn *c)
{
    uv_buf_t b = uv_buf_init((char *)continue_100, sizeof continue_100 - 1);
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* tiny; a client that can't take it times out */
}
