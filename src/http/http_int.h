/* Private to src/http: the connection and server objects and the functions
 * the four parts of the server call across files.
 *
 *   listener.c  listening socket, accept loop, connection registry, shutdown
 *   conn.c      the connection state machine, its timers, reading, dispatch
 *   parser.c    the llhttp adapter that owns the request head
 *   write.c     answering: head formatting (response.c) and the write path */
#ifndef CRONIUM_HTTP_INT_H
#define CRONIUM_HTTP_INT_H

#include <sys/socket.h>
#include "cronium/http.h"
#include "cronium/list.h"

/* One connection's life. Every change goes through crt_conn_set_state(),
 * which also keeps the public req.state in step.
 *
 *   NEW -> HEAD -> BODY -> HANDLE -> WRITE -> IDLE -> HEAD ...
 *   NEW/IDLE/HEAD/BODY -> HANDLE      a refused request (parse error, limits)
 *   IDLE -> LINGER -> CLOSING         refused before it was fully read
 *   HANDLE/WRITE -> DETACHED          closed while the request is still held
 *   other states -> CLOSING           closed; DETACHED -> CLOSING once answered */
typedef enum {
    CONN_NEW,           /* accepted; the first request has not begun */
    CONN_IDLE,          /* keep-alive; the next request has not begun */
    CONN_HEAD,          /* reading a head (read timeout runs from its first byte) */
    CONN_BODY,          /* head complete, reading the body; header lines now are trailers */
    CONN_HANDLE,        /* the handler owns the request */
    CONN_WRITE,         /* the answer is being written (uv_write pending) */
    CONN_LINGER,        /* answered, our side shut down: discarding what still comes */
    CONN_DETACHED,      /* closing, but a handler or a write still holds the request */
    CONN_CLOSING,       /* closing; freed when the last handle's close callback runs */
} conn_state;

/* What happens once the current answer is out. Not a phase: it is decided at
 * any point (CONNECT, a refusal, shutdown) and only ever grows stronger. */
typedef enum {
    CONN_AFTER_NEXT,    /* keep-alive if the request allows it */
    CONN_AFTER_CLOSE,   /* this is the last answer */
    CONN_AFTER_LINGER,  /* the last answer, and unread input may follow: drain it */
} conn_after;

typedef struct hdr_off {
    uint32_t no, nl, vo, vl;        /* offsets into req.scratch */
} hdr_off;

/* The request head as llhttp delivers it: every piece is appended to
 * req.scratch and kept as offsets, so nothing moves when scratch grows. */
typedef struct crt_http_head {
    llhttp_t parser;
    const char *exec_base;          /* start of the bytes llhttp is parsing */
    char prev_last;                 /* last byte of the previous parse call */
    size_t bytes;                   /* head (and trailer) bytes, against the limit */
    uint32_t url_off, url_len;
    hdr_off hoff[CRT_HTTP_MAX_HEADERS];
    int phase;                      /* 0: none, 1: in a name, 2: in a value */
    int reject;                     /* status to answer a parse failure with */
} crt_http_head;

struct crt_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;               /* read, idle, write or linger deadline */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    crt_server *srv;
    crt_dnode node;                 /* in the server's list of connections */
    conn_state state;               /* change only with crt_conn_set_state */
    conn_after after;
    int open_handles;               /* tcp + timer until their close callbacks */
    /* Orthogonal to the state: */
    bool eof;                       /* the client closed its side; requests already
                                     * received are still answered, in any state */
    bool reading;                   /* mirrors uv_read_start/stop, derived in
                                     * conn_update_reading from state and input */
    bool in_drive;                  /* conn_drive is on the stack (re-entrancy guard) */
    bool drive_again;
    size_t lingered;                /* bytes discarded in LINGER */
    crt_buf in;                     /* received, not yet parsed */
    crt_buf out;                    /* response head, or unwritten rest */
    uint64_t msg_start_ms;
    crt_http_head head;
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
    crt_dlist conns;                /* open connections (not closing) */
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
    bool closing;                   /* crt_server_close: free when quiescent */
    void (*close_cb)(void *);
    void *close_arg;
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

/* ---- listener.c: the registry ---- */
void crt_server_conn_add(crt_server *s, crt_conn *c);
void crt_server_conn_remove(crt_server *s, crt_conn *c);
/* A connection's memory is gone: a descriptor is free, shutdown may end. */
void crt_server_conn_freed(crt_server *s);

/* ---- conn.c ---- */
crt_conn *crt_conn_new(crt_server *s);
void crt_conn_start(crt_conn *c, bool drained);
void crt_conn_close(crt_conn *c);
void crt_conn_set_state(crt_conn *c, conn_state to);
void crt_conn_set_after(crt_conn *c, conn_after after);
void crt_conn_arm_timer(crt_conn *c);
void crt_conn_finish_request(crt_conn *c);
void crt_conn_request_id(crt_conn *c);
/* Shutdown began: close the connection now or after its answer. */
void crt_conn_server_stopping(crt_conn *c);

/* ---- parser.c ---- */
void crt_http_head_init(crt_conn *c);
void crt_http_head_reset(crt_conn *c);
/* Parses c->in: HPE_OK (all consumed), HPE_PAUSED (a request is complete
 * after *used bytes), HPE_PAUSED_UPGRADE, or an error (c->head.reject, if
 * set, is the status to answer with). */
llhttp_errno_t crt_http_parse(crt_conn *c, size_t *used);

/* ---- write.c ---- */
/* Answers "Expect: 100-continue" (best effort, one try). */
void crt_conn_send_continue(crt_conn *c);

#endif
