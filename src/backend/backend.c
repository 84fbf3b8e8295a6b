/* curl multi on libuv. Shape: CURLMOPT_SOCKETFUNCTION starts/stops a uv_poll
 * per socket (attached with curl_multi_assign), CURLMOPT_TIMERFUNCTION arms
 * one uv_timer; both only record what curl wants and never call back into
 * curl. Poll and timer callbacks drive curl_multi_socket_action and then drain
 * curl_multi_info_read. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend_int.h"
#include "cronium/log.h"

static void check_done(crt_backend *b);
static void xfer_start(xfer *x);

/* ---- metrics ------------------------------------------------------------------------------- */

static void count_request(crt_backend *b, const char *op, long status, bool failed)
{
    char labels[96];
    if (failed)
        snprintf(labels, sizeof labels, "op=\"%s\",status=\"error\"", op);
    else
        snprintf(labels, sizeof labels, "op=\"%s\",status=\"%ld\"", op, status);
    (*crt_metrics_counter(b->m, "cronium_runtime_backend_requests_total",
                          "Backend requests (after retries) by operation and final status.", labels))++;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void maybe_free_backend(crt_backend *b)
{
    if (!b->closing || b->open_handles > 0 || b->live.head)
        return;
    curl_slist_free_all(b->headers);
    crt_map_free(b->gets, NULL);
    free(b->base);
    free(b);
}

static void on_retry_closed(uv_handle_t *h)
{
    xfer *x = h->data;
    crt_backend *b = x->b;
    crt_buf_fini(&x->body);
    crt_buf_fini(&x->resp);
    free(x->path);
    free(x->url);
    free(x);
    b->open_handles--;
    maybe_free_backend(b);
}

static void xfer_finish(xfer *x, int err)
{
    crt_backend *b = x->b;
    x->state = X_DONE;
    if (x->easy) {
        curl_multi_remove_handle(b->multi, x->easy);
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    if (x->shared)
        crt_map_del(b->gets, x->path, strlen(x->path));
    if (strcmp(x->method, "GET") != 0) {
        /* A read in flight may predate this write: later GETs start afresh. */
        xfer *older = crt_map_del(b->gets, x->path, strlen(x->path));
        if (older)
            older->shared = false;
    }
    crt_dlist_remove(&b->live, &x->node);
    b->nlive--;

    crt_bk_note_health(b, x, err);
    crt_histogram_observe(b->latency, (double)(crt_now_ns() - x->started_ns) / 1e9);
    count_request(b, x->op, x->status, err != 0);

    crt_backend_resp r = {
        .err = err,
        .status = x->status,
        .body = x->resp.data ? x->resp.data : "",
        .len = x->resp.len,
        .retry_after_s = x->retry_after_s,
        .attempts = x->attempts,
    };
    if (err && !r.retry_after_s)
        r.retry_after_s = 2;
    crt_buf_cstr(&x->resp);
    for (waiter *w = x->waiters, *nw; w; w = nw) {
        nw = w->next;
        w->cb(w->ud, &r);
        free(w);
    }
    x->waiters = NULL;
    uv_timer_stop(&x->retry);
    uv_close((uv_handle_t *)&x->retry, on_retry_closed);
}

/* ---- curl callbacks ------------------------------------------------------------------------------ */

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    if (x->resp.len + len > MAX_RESPONSE) {
        x->too_big = true;
        return 0; /* aborts the transfer */
    }
    if (crt_buf_append(&x->resp, p, len))
        return 0;
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        long v = strtol(p + 12, NULL, 10);
        if (v > 0 && v < 3600)
            x->retry_after_s = (unsigned)v;
    }
    return len;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sockctx *s = h->data;
    crt_backend *b = s->b;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(b->multi, s->fd, flags, &running);
    check_done(b);
}

static void sock_close(sockctx *s);

static void on_poll_closed(uv_handle_t *h)
{
    sockctx *s = h->data;
    crt_backend *b = s->b;
    free(s);
    b->open_handles--;
    maybe_free_backend(b);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e;
    crt_backend *b = userp;
    sockctx *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(s);
            curl_multi_assign(b->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->fd = fd;
        s->b = b;
        if (uv_poll_init_socket(b->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        b->open_handles++;
        crt_dlist_push_front(&b->socks, &s->node);
        curl_multi_assign(b->multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

/* Stops watching and unlinks; memory goes in the close callback. */
static void sock_close(sockctx *s)
{
    crt_dlist_remove(&s->b->socks, &s->node);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_poll_closed);
}

static void on_timer(uv_timer_t *t)
{
    crt_backend *b = t->data;
    int running;
    curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(b);
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    crt_backend *b = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&b->timer);
    else
        uv_timer_start(&b->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- retries -------------------------------------------------------------------------------------- */

static bool retryable_status(long st) { return st == 429 || st == 502 || st == 503 || st == 504; }

static void on_retry_timer(uv_timer_t *t)
{
    xfer *x = t->data;
    xfer_start(x);
}

/* Decides, after an attempt, whether to try again; returns true if scheduled. */
static bool schedule_retry(xfer *x)
{
    crt_backend *b = x->b;
    if (b->closing || x->probe || x->attempts > b->o.max_retries)
        return false;
    uint64_t now = uv_now(b->loop);
    uint64_t base = b->o.retry_delay_ms << (x->attempts - 1 < 16 ? x->attempts - 1 : 16);
    uint64_t delay;
    if (x->retry_after_s) {
        delay = (uint64_t)x->retry_after_s * 1000;
    } else {
        unsigned r;
        crt_random_bytes(&r, sizeof r);
        delay = base / 2 + (base ? r % (base / 2 + 1) : 0);   /* jitter in [base/2, base] */
    }
    /* The next attempt needs time to run too: give up if it cannot fit. */
    if (now + delay + 50 >= x->deadline)
        return false;
    (*b->retries)++;
    x->state = X_WAITING_RETRY;
    curl_multi_remove_handle(b->multi, x->easy);
    uv_timer_start(&x->retry, on_retry_timer, delay, 0);
    return true;
}

static void check_done(crt_backend *b)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(b->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x || x->state != X_RUNNING)
            continue;
        CURLcode rc = msg->data.result;
        long st = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &st);
        x->status = st;
        x->rc = rc;
        if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
            /* A definite, wrong answer: asking again gets the same. */
            CRT_LOGF(CRT_LOG_WARN, "backend answer over the size cap refused", CRT_LS("op", x->op),
                     CRT_LS("path", x->path), CRT_LI("cap", MAX_RESPONSE));
            crt_buf_reset(&x->resp);
            xfer_finish(x, CRT_ERANGE);
            continue;
        }
        bool transient = rc != CURLE_OK || retryable_status(st);
        if (transient) {
            CRT_LOGF(CRT_LOG_WARN, "backend attempt failed", CRT_LS("op", x->op), CRT_LS("method", x->method),
                     CRT_LS("path", x->path), CRT_LI("status", st), CRT_LS("error", curl_easy_strerror(rc)),
                     CRT_LI("attempt", x->attempts));
            if (schedule_retry(x))
                continue;
            /* Out of attempts or time: a retryable status is still an answer
             * the caller can map (e.g. 503); a transport error is not. */
            xfer_finish(x, rc == CURLE_OK ? 0 : CRT_EUNAVAIL);
            continue;
        }
        xfer_finish(x, 0);
    }
}

/* ---- starting ------------------------------------------------------------------------------------------ */

static void xfer_start(xfer *x)
{
    crt_backend *b = x->b;
    uint64_t now = uv_now(b->loop);
    if (now + 10 >= x->deadline || b->closing) {
        xfer_finish(x, CRT_EUNAVAIL);
        return;
    }
    x->attempts++;
    x->state = X_RUNNING;
    x->status = 0;
    x->retry_after_s = 0;
    x->too_big = false;
    crt_buf_reset(&x->resp);
    uint64_t left = x->deadline - now;
    long tmo = (long)(b->o.attempt_timeout_ms < left ? b->o.attempt_timeout_ms : left);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, tmo);
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, tmo);
    if (curl_multi_add_handle(b->multi, x->easy) != CURLM_OK)
        xfer_finish(x, CRT_EUNAVAIL);
}

int crt_backend_request(crt_backend *b, const char *method, const char *path, const char *body, size_t len,
                        const char *op, unsigned flags, crt_backend_cb cb, void *ud)
{
    return crt_backend_request_by(b, method, path, body, len, op, flags, 0, cb, ud);
}

int crt_backend_request_by(crt_backend *b, const char *method, const char *path, const char *body, size_t len,
                           const char *op, unsigned flags, uint64_t deadline, crt_backend_cb cb, void *ud)
{
    if (b->closing)
        return CRT_EUNAVAIL;
    waiter *w = malloc(sizeof *w);
    if (!w)
        return CRT_ENOMEM;
    *w = (waiter){cb, ud, NULL};
    bool is_get = strcmp(method, "GET") == 0;
    bool share = is_get && (flags & CRT_BACKEND_SHARE);
    if (share) {
        xfer *same = crt_map_get(b->gets, path, strlen(path));
        if (same) {
            w->next = same->waiters;
            same->waiters = w;
            (*b->coalesced)++;
            return 0;
        }
    }
    xfer *x = calloc(1, sizeof *x);
    if (!x) {
        free(w);
        return CRT_ENOMEM;
    }
    x->b = b;
    x->op = op;
    x->probe = (flags & FLAG_PROBE) != 0;
    snprintf(x->method, sizeof x->method, "%s", method);
    x->path = strdup(path);
    size_t ul = strlen(b->base) + strlen(path) + 1;
    x->url = malloc(ul);
    x->easy = curl_easy_init();
    if (!x->path || !x->url || !x->easy || (len && crt_buf_append(&x->body, body, len))) {
        if (x->easy)
            curl_easy_cleanup(x->easy);
        crt_buf_fini(&x->body);
        free(x->path);
        free(x->url);
        free(x);
        free(w);
        return CRT_ENOMEM;
    }
    snprintf(x->url, ul, "%s%s", b->base, path);
    x->waiters = w;
    x->started_ns = crt_now_ns();
    x->deadline = uv_now(b->loop) + b->o.deadline_ms;
    if (deadline && deadline < x->deadline)
        x->deadline = deadline;
    uv_timer_init(b->loop, &x->retry);
    x->retry.data = x;
    b->open_handles++;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, b->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* The path goes out exactly as built (dot segments are encoded anyway),
     * and a redirect is an answer, never followed: the token must not reach
     * another route, host or port. */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 0L);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MAX_RESPONSE);
    if (is_get) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
        if (strcmp(method, "DELETE") != 0 || len) {
            /* The same buffer is sent whole on every attempt. */
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body.data ? x->body.data : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body.len);
        }
    }
    crt_dlist_push_front(&b->live, &x->node);
    b->nlive++;
    if (share) {
        void **slot = crt_map_slot(b->gets, x->path, strlen(x->path), true);
        if (slot) {
            *slot = x;
            x->shared = true;
        }
    }
    /* Start from the loop, so cb never runs inside this call. */
    uv_timer_start(&x->retry, on_retry_timer, 0, 0);
    x->state = X_WAITING_RETRY;
    return 0;
}

void crt_backend_path_seg(crt_buf *path, const char *seg, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    crt_buf_putc(path, '/');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)seg[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '~') {
            /* '.' is unreserved too, but "." and ".." are dot segments some
             * stack may collapse; %2E never is. */
            crt_buf_putc(path, (char)c);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            crt_buf_append(path, esc, 3);
        }
    }
}

size_t crt_backend_in_flight(const crt_backend *b) { return b->nlive; }

crt_backend *crt_backend_new(uv_loop_t *loop, const crt_backend_opts *o, crt_metrics *m)
{
    crt_backend *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->loop = loop;
    b->o = *o;
    b->m = m;
    size_t n = strlen(o->base_url);
    while (n && o->base_url[n - 1] == '/')
        n--;
    b->base = strndup(o->base_url, n);
    b->multi = curl_multi_init();
    b->gets = crt_map_new();
    if (!b->base || !b->multi || !b->gets) {
        curl_multi_cleanup(b->multi);
        crt_map_free(b->gets, NULL);
        free(b->base);
        free(b);
        return NULL;
    }
    char auth[1024];
    if (o->token && *o->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->token);
        b->headers = curl_slist_append(b->headers, auth);
    }
    b->headers = curl_slist_append(b->headers, "Content-Type: application/json");
    b->headers = curl_slist_append(b->headers, "Accept: application/json");
    b->headers = curl_slist_append(b->headers, "Expect:"); /* no 100-continue round trip */
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(b->multi, CURLMOPT_TIMERDATA, b);
    curl_multi_setopt(b->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, o->max_connections);
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, o->max_connections);
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    b->open_handles = 1;
    b->latency = crt_metrics_histogram(m, "cronium_runtime_backend_request_duration_seconds",
                                       "Backend request time, retries included.", "");
    b->retries = crt_metrics_counter(m, "cronium_runtime_backend_retries_total", "Backend attempts retried.", "");
    b->coalesced = crt_metrics_counter(m, "cronium_runtime_backend_coalesced_total",
                                       "GETs that joined an identical request in flight.", "");
    crt_bk_probe_start(b);
    return b;
}

static void on_timer_closed(uv_handle_t *h)
{
    crt_backend *b = h->data;
    b->open_handles--;
    maybe_free_backend(b);
}

void crt_backend_free(crt_backend *b)
{
    if (!b || b->closing)
        return;
    b->closing = true;
    while (b->live.head)
        xfer_finish(crt_container_of(b->live.head, xfer, node), CRT_EUNAVAIL);
    /* Closing the multi closes cached connections (their polls are removed
     * through on_socket); any poll left is closed here. */
    curl_multi_cleanup(b->multi);
    b->multi = NULL;
    while (b->socks.head)
        sock_close(crt_container_of(b->socks.head, sockctx, node));
    uv_timer_stop(&b->timer);
    uv_close((uv_handle_t *)&b->timer, on_timer_closed);
    crt_bk_probe_close(b, on_timer_closed);
}
