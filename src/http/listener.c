/* The listener and the connection registry: resolving and binding, our own
 * accept loop on a uv_poll (failures counted and backed off from), the list
 * of open connections, and graceful shutdown (backlog drained first). */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "http_int.h"
#include "cronium/log.h"

static void server_maybe_done(crt_server *s);
static void server_accept_resume(crt_server *s);

/* ---- the registry ------------------------------------------------------------------------------ */

void crt_server_conn_add(crt_server *s, crt_conn *c)
{
    s->nalive++;
    crt_dlist_push_front(&s->conns, &c->node);
    s->nconns++;
}

void crt_server_conn_remove(crt_server *s, crt_conn *c)
{
    crt_dlist_remove(&s->conns, &c->node);
    s->nconns--;
}

void crt_server_conn_freed(crt_server *s)
{
    s->nalive--;
    /* A descriptor is free again: accepting may have paused on EMFILE. */
    server_accept_resume(s);
    server_maybe_done(s);
}

/* ---- accepting --------------------------------------------------------------------------------- */

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
 * crt_conn_start. Returns false once accept stopped on an error or EAGAIN. */
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
        crt_conn *c = crt_conn_new(s);
        if (!c) {
            close(fd);
            server_accept_failed(s, UV_ENOMEM);
            return false;
        }
        int rc = uv_tcp_open(&c->tcp, fd);
        if (rc < 0) {
            close(fd);
            crt_conn_close(c);
            server_accept_failed(s, rc);
            return false;
        }
        crt_conn_start(c, drained);
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

/* ---- the server ------------------------------------------------------------------------------------- */

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
    crt_random_hex(s->rid_prefix, (sizeof s->rid_prefix - 1) / 2);
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

static void server_release(crt_server *s)
{
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    crt_server_free(s);
    if (cb)
        cb(arg);
}

/* Every path that closes a handle or frees a connection ends here; nothing
 * touches s after this returns. */
static void server_maybe_done(crt_server *s)
{
    if (s->shutting_down && s->shutdown_cb && s->nalive == 0 && !s->listener_open)
        server_done(s);
    else if (s->closing && s->nalive == 0 && s->open_handles == 0)
        server_release(s);
}

static void server_on_deadline(uv_timer_t *t)
{
    crt_server *s = t->data;
    CRT_LOGF(CRT_LOG_WARN, "shutdown deadline reached, closing busy connections", CRT_LI("connections", s->nconns));
    while (s->conns.head)
        crt_conn_close(crt_container_of(s->conns.head, crt_conn, node));
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
    if (s->accept_timer_init) {
        s->accept_timer_init = false;
        uv_close((uv_handle_t *)&s->accept_timer, server_on_handle_close);
    }
    /* Idle connections close now, busy ones after their answer (see
     * crt_conn_server_stopping). */
    for (crt_dnode *n = s->conns.head, *next; n; n = next) {
        next = n->next;
        crt_conn_server_stopping(crt_container_of(n, crt_conn, node));
    }
    /* Then take what waits in the backlog (served once, see crt_conn_start). */
    server_drain_backlog(s);
    server_close_listener(s);
    server_maybe_done(s);
}

void crt_server_close(crt_server *s, void (*cb)(void *arg), void *arg)
{
    if (!s || s->closing)
        return;
    s->close_cb = cb;
    s->close_arg = arg;
    if (!s->shutting_down && (s->open_handles || s->nalive))
        crt_server_shutdown(s, 0, NULL);
    s->closing = true;
    server_maybe_done(s);
}

void crt_server_free(crt_server *s)
{
    if (!s)
        return;
    free(s->host);
    free(s);
}
