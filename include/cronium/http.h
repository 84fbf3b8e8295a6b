/* HTTP/1.1 server on one libuv loop, llhttp parser per connection.
 *
 * A connection handles one request at a time; pipelined requests wait, parsed
 * no further, in the connection's input buffer and are answered in order.
 * Each request is a state machine:
 *   HEAD (reading the head) -> BODY -> HANDLE (handler runs, may wait on I/O)
 *   -> WRITE -> DONE (keep-alive: next request, or close).
 * A handler ends every request exactly once with crt_req_respond() (or one of
 * the helpers built on it), possibly from a later callback. If the client goes
 * away meanwhile, the request stays valid until it is answered; the answer is
 * then discarded. */
#ifndef CRONIUM_HTTP_H
#define CRONIUM_HTTP_H

#include <uv.h>
#include <llhttp.h>
#include "cronium/buf.h"
#include "cronium/common.h"

#define CRT_HTTP_MAX_HEAD 8192      /* request head limit (431 above) */
#define CRT_HTTP_MAX_HEADERS 64
#define CRT_HTTP_MAX_PARAMS 4

typedef struct crt_server crt_server;
typedef struct crt_conn crt_conn;
typedef struct crt_req crt_req;
typedef struct crt_router crt_router;

typedef enum {
    CRT_REQ_HEAD,       /* waiting for / reading the request head */
    CRT_REQ_BODY,       /* reading the body */
    CRT_REQ_HANDLE,     /* the handler owns the request */
    CRT_REQ_WRITE,      /* response being written */
} crt_req_state;

typedef struct crt_header {
    crt_span name;
    crt_span value;
} crt_header;

typedef void (*crt_handler_fn)(crt_req *req, void *ctx);

struct crt_req {
    crt_conn *conn;
    crt_req_state state;
    llhttp_method_t method;
    crt_span method_name;
    crt_span path;                  /* raw, still percent-encoded */
    crt_span query;                 /* after '?', raw; len 0 if none */
    size_t nheaders;                /* their offsets live in the connection */
    crt_buf body;                   /* decoded body (chunked or not) */
    bool keep_alive;
    bool expect_continue;
    /* routing */
    int route_id;                   /* index into the router, -1 if none */
    const char *route_name;         /* pattern, for logs and metrics */
    crt_span params[CRT_HTTP_MAX_PARAMS];   /* percent-decoded once */
    size_t nparams;
    /* per request */
    char request_id[65];
    size_t request_id_len;
    uint64_t start_ns;
    int status;                     /* set by crt_req_respond */
    size_t resp_body_len;
    crt_buf resp_headers;           /* extra headers, "Name: value\r\n"... */
    crt_buf resp_body;              /* scratch for handlers building a body */
    crt_buf scratch;                /* head bytes and decoded params live here */
    const char *client_ip;          /* NUL-terminated text address */
    void *user;                     /* the handler's per-request state */
};

/* Returns the value of a request header (case-insensitive name) or a zero span. */
crt_span crt_req_header(const crt_req *req, const char *name);
/* Finds ?name=value in the query and percent-decodes it into out. */
bool crt_req_query(crt_req *req, const char *name, crt_buf *out);
/* Adds a response header; call before crt_req_respond. */
void crt_req_add_header(crt_req *req, const char *name, const char *value, size_t vlen);
/* Ends the request: writes status, headers and body (omitted for HEAD).
 * body may point into req->resp_body. After this call req must not be used. */
void crt_req_respond(crt_req *req, int status, const char *content_type, const char *body, size_t len);
/* The docs/api.md §3 error envelope. */
void crt_req_error(crt_req *req, int status, const char *code, const char *message);
/* True once the client has gone away (the answer will be discarded). */
bool crt_req_detached(const crt_req *req);

/* Reason phrase for a status code ("Not Found"). */
const char *crt_http_reason(int status);

/* What a response head says; formatting is a pure function (unit tested). */
typedef struct crt_resp_head {
    int status;
    const char *date;               /* IMF-fixdate */
    const char *content_type;       /* NULL: none */
    size_t content_length;
    const char *request_id;
    size_t request_id_len;
    bool keep_alive;
    bool http10;                    /* the client spoke HTTP/1.0 */
    const char *extra;              /* more header lines, each ending in CRLF */
    size_t extra_len;
} crt_resp_head;

/* Appends the status line, headers and the blank line to o. */
void crt_http_format_head(crt_buf *o, const crt_resp_head *h);
/* Appends the docs/api.md §3 error envelope to b. */
void crt_http_error_body(crt_buf *b, int status, const char *code, const char *message);

/* ---- router ------------------------------------------------------------------ */

/* Patterns are paths with {name} segments capturing one segment each. */
crt_router *crt_router_new(void);
void crt_router_free(crt_router *r);
int crt_router_add(crt_router *r, const char *method, const char *pattern, crt_handler_fn fn, void *ctx);

typedef enum { CRT_ROUTE_FOUND, CRT_ROUTE_NOT_FOUND, CRT_ROUTE_BAD_METHOD } crt_route_result;

/* Matches method and path. FOUND: fills *fn, *ctx, route id and name, and the
 * decoded params (into req->scratch). BAD_METHOD: allow receives "GET, HEAD". */
crt_route_result crt_router_match(const crt_router *r, crt_req *req, crt_handler_fn *fn, void **ctx,
                                  char *allow, size_t allow_cap);
/* Number of patterns and the name of one, for metrics. */
size_t crt_router_count(const crt_router *r);
const char *crt_router_name(const crt_router *r, size_t id);
/* Decodes %XX once; invalid escapes are kept literally. Appends to out. */
void crt_percent_decode(const char *s, size_t n, crt_buf *out, bool plus_is_space);

/* ---- server ------------------------------------------------------------------- */

typedef struct crt_server_opts {
    const char *host;
    int port;
    uint64_t read_timeout_ms;
    uint64_t write_timeout_ms;
    uint64_t idle_timeout_ms;
    size_t max_body_bytes;
    size_t max_connections;
} crt_server_opts;

/* Called for every request after routing, before its handler: may answer the
 * request itself (returns true) — used for CORS preflights. */
typedef bool (*crt_server_pre_fn)(crt_req *req, void *ctx);
/* Called once per finished request (access log, metrics). */
typedef void (*crt_server_done_fn)(const crt_req *req, uint64_t duration_ns, void *ctx);

crt_server *crt_server_new(uv_loop_t *loop, const crt_server_opts *opts, crt_router *router);
void crt_server_set_hooks(crt_server *s, crt_server_pre_fn pre, crt_server_done_fn done, void *ctx);
/* Resolves host (an address or a name, looked up once with getaddrinfo:
 * call before the loop runs), binds (SO_REUSEPORT) and listens. Returns 0 or
 * a negative UV error; on error nothing is left open but what
 * crt_server_shutdown closes. */
int crt_server_listen(crt_server *s);
/* Stops accepting, closes idle connections, lets busy ones finish their
 * request; when the last is gone (or after deadline_ms), calls cb. */
void crt_server_shutdown(crt_server *s, uint64_t deadline_ms, void (*cb)(crt_server *s));
/* Frees the server once its handles are closed and its connections freed,
 * then calls cb(arg) (cb may be NULL). Call it after crt_server_shutdown —
 * from its callback too, where connections and the deadline timer may still
 * be closing — or when listen was never called or failed; a server still
 * listening is shut down with no grace. May free and call cb before it
 * returns. */
void crt_server_close(crt_server *s, void (*cb)(void *arg), void *arg);
/* Frees at once: only when nothing is left open (the loop has run every
 * close callback after shutdown's cb). Kept for callers that run the loop
 * dry first; crt_server_close is the general form. */
void crt_server_free(crt_server *s);
size_t crt_server_open_connections(const crt_server *s);
/* The port the listener is bound to (useful with port 0); 0 before listen. */
int crt_server_port(const crt_server *s);
/* Accepts that failed (EMFILE, ENFILE, ENOBUFS...), since start. */
uint64_t crt_server_accept_errors(const crt_server *s);
uint64_t crt_server_rejected_connections(const crt_server *s);

#endif
