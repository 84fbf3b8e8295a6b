/* Client of the Cronium backend's internal API: libcurl multi driven by the
 * libuv loop (one uv_poll per socket, one uv_timer for the multi).
 *
 * A request is retried on connect errors, timeouts, 429 and 502/503/504 with
 * exponential backoff and jitter (Retry-After honoured), the body re-sent
 * whole each time, all within a total deadline. Other statuses are final.
 * Concurrent GETs of the same path share one transfer. Redirects are never
 * followed (a 3xx is handed back as the answer) and the path is sent as is. */
#ifndef CRONIUM_BACKEND_H
#define CRONIUM_BACKEND_H

#include <uv.h>
#include "cronium/buf.h"
#include "cronium/metrics.h"

typedef struct crt_backend crt_backend;

typedef struct crt_backend_opts {
    const char *base_url;           /* no trailing slash needed */
    const char *token;              /* Bearer token, may be NULL */
    uint64_t attempt_timeout_ms;
    int max_retries;
    uint64_t retry_delay_ms;        /* backoff base */
    uint64_t deadline_ms;           /* total, all attempts and waits */
    long max_connections;           /* concurrent transfers; curl queues the rest */
    uint64_t probe_interval_ms;     /* health probe period; 0: no probe */
} crt_backend_opts;

typedef struct crt_backend_resp {
    int err;                        /* 0: got an HTTP answer; CRT_EUNAVAIL: gave up;
                                     * CRT_ERANGE: the answer was over the size cap (not retried) */
    long status;                    /* HTTP status when err == 0 */
    const char *body;               /* borrowed for the callback */
    size_t len;
    unsigned retry_after_s;         /* hint for our own 503 */
    int attempts;
} crt_backend_resp;

typedef void (*crt_backend_cb)(void *ud, const crt_backend_resp *r);

crt_backend *crt_backend_new(uv_loop_t *loop, const crt_backend_opts *o, crt_metrics *m);
/* Starts a request. path is already percent-encoded (crt_backend_path_seg).
 * body is copied. op names the operation in metrics ("get_variable"). GETs of
 * the same path while one is in flight join it. cb runs exactly once, never
 * before this call returns. With CRT_BACKEND_SHARE a GET joins one for the
 * same path in flight; a write to a path that completes stops later GETs from
 * joining reads that started before it. Returns 0, CRT_ENOMEM, or CRT_EUNAVAIL when the
 * client is closing (cb is then never called). */
enum { CRT_BACKEND_SHARE = 1 };    /* a GET may join an identical one in flight */

int crt_backend_request(crt_backend *b, const char *method, const char *path, const char *body, size_t len,
                        const char *op, unsigned flags, crt_backend_cb cb, void *ud);
/* The same, giving up by deadline (uv_now() time) when that comes before
 * the client's own deadline; 0: the client's. A GET that joins another in
 * flight keeps that one's deadline. */
int crt_backend_request_by(crt_backend *b, const char *method, const char *path, const char *body, size_t len,
                           const char *op, unsigned flags, uint64_t deadline, crt_backend_cb cb, void *ud);
/* Appends "/" and seg percent-encoded: everything but ALPHA, DIGIT, '-', '_'
 * and '~' (so '.' too: a key ".." can never become a dot segment). */
void crt_backend_path_seg(crt_buf *path, const char *seg, size_t n);
/* Whether the backend is usable. Down after DOWN_AFTER_FAILURES transport
 * failures in a row (real calls or probes), or while the last probe got a
 * 401/403 (BACKEND_TOKEN refused) or a 5xx and no call since was answered
 * usefully (2xx, 404). The probe is a GET of PROBE_PATH (a context of an id
 * no execution has: 404 when the token is right), one attempt, at most one
 * per probe_interval_ms, and only while no real call was usefully answered
 * within the interval; a real call answered 401/403/5xx asks for one early
 * (still within the rate). One probe runs at start. */
bool crt_backend_up(const crt_backend *b);
/* Why it is down (for /ready), or NULL while up. */
const char *crt_backend_down_reason(const crt_backend *b);
#define CRT_BACKEND_PROBE_PATH "/api/internal/executions/cronium-runtime-probe/context"
size_t crt_backend_in_flight(const crt_backend *b);
/* Stops everything: in-flight requests complete with CRT_EUNAVAIL; handles
 * close; the object is freed when the last close callback has run. */
void crt_backend_free(crt_backend *b);

#endif
