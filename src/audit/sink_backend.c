/* The backend sink: POST /api/internal/audit through the shared backend
 * client (libcurl multi: its connection cache keeps the connections alive
 * between calls), a bounded ring of ready-to-send bodies, at most in_flight
 * POSTs at once. A body is rendered when the event arrives, so the ring
 * holds no borrowed pointers. */
#include <stdlib.h>
#include "audit_int.h"
#include "cronium/backend.h"
#include "cronium/log.h"

typedef struct ship_item {
    crt_buf body;
    uint64_t count;                 /* requests the event stands for */
} ship_item;

typedef struct flight {
    struct backend_sink *s;
    uint64_t count;
    bool used;
} flight;

typedef struct backend_sink {
    audit_sink base;
    crt_backend *backend;           /* borrowed; NULL once detached */
    ship_item *q;
    size_t cap, head, len;
    int in_flight, max_in_flight;
    bool draining, closing;
    uint64_t flight_count;          /* requests in the POSTs in flight */
    flight *flights;                /* max_in_flight slots: no allocation per POST */
} backend_sink;


static void pump(backend_sink *s);

static void maybe_done(backend_sink *s)
{
    if (s->closing && !s->in_flight) {
        crt_audit *owner = s->base.owner;
        free(s->flights);
        free(s->q);
        free(s);
        audit_sink_closed(owner);
        return;
    }
    if (s->draining && !s->len && !s->in_flight)
        audit_sink_drained(&s->base);
}

static void on_sent(void *ud, const crt_backend_resp *r)
{
    flight *f = ud;
    backend_sink *s = f->s;
    s->in_flight--;
    s->flight_count -= f->count;
    audit_sink_count(&s->base, !r->err && r->status / 100 == 2 ? AR_DONE : AR_FAILED, f->count);
    f->used = false;
    if (!s->closing)
        pump(s);
    else
        maybe_done(s);
}

static void pop(backend_sink *s)
{
    crt_buf_fini(&s->q[s->head].body);
    s->head = (s->head + 1) % s->cap;
    s->len--;
}

static void pump(backend_sink *s)
{
    while (s->len && s->in_flight < s->max_in_flight && s->backend) {
        ship_item *it = &s->q[s->head];
        flight *f = s->flights;
        while (f->used)
            f++;                        /* in_flight < max: one is free */
        *f = (flight){s, it->count, true};
        int rc = crt_backend_request(s->backend, "POST", "/api/internal/audit", it->body.data, it->body.len,
                                     "audit", 0, on_sent, f);
        uint64_t n = it->count;
        pop(s);
        if (rc) {
            f->used = false;
            audit_sink_count(&s->base, AR_FAILED, n);
        } else {
            s->in_flight++;
            s->flight_count += n;
        }
    }
    maybe_done(s);
}

static bool b_put(audit_sink *base, const audit_rec *r)
{
    backend_sink *s = crt_container_of(base, backend_sink, base);
    if (s->draining || !s->backend || s->len == s->cap)
        return false;
    ship_item *it = &s->q[(s->head + s->len) % s->cap];
    crt_buf_init(&it->body);
    audit_render(&it->body, r, AUDIT_FMT_BACKEND);
    it->count = r->count;
    s->len++;
    pump(s);
    return true;
}

static size_t b_room(const audit_sink *base)
{
    const backend_sink *s = crt_container_of(base, backend_sink, base);
    return s->draining || !s->backend ? 0 : s->cap - s->len;
}

static void b_drain(audit_sink *base)
{
    backend_sink *s = crt_container_of(base, backend_sink, base);
    s->draining = true;
    pump(s);
}

static void drop_queued(backend_sink *s, const char *why)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        n += s->q[(s->head + i) % s->cap].count;
    if (n || s->in_flight)
        CRT_LOGF(CRT_LOG_WARN, "audit events not shipped to the backend", CRT_LS("why", why),
                 CRT_LI("queued_requests", n), CRT_LI("in_flight_requests", s->flight_count));
    while (s->len)
        pop(s);
    if (n)
        audit_sink_count(&s->base, AR_DROPPED, n);
}

static void b_abandon(audit_sink *base)
{
    backend_sink *s = crt_container_of(base, backend_sink, base);
    s->draining = true;
    drop_queued(s, "shutdown deadline");
    /* What is in flight completes (or fails) when the client goes. */
    audit_sink_drained(&s->base);
}

void audit_backend_sink_detach(audit_sink *base)
{
    backend_sink *s = crt_container_of(base, backend_sink, base);
    drop_queued(s, "backend client closing");
    s->backend = NULL;
}

static void b_close(audit_sink *base)
{
    backend_sink *s = crt_container_of(base, backend_sink, base);
    while (s->len)
        pop(s);
    s->closing = true;
    maybe_done(s);
}

static bool b_ok(const audit_sink *base)
{
    (void)base;
    return true;                    /* a backend that is down shows as such on /ready */
}

static const audit_sink_vt backend_vt = {b_put, b_room, b_ok, b_drain, b_abandon, b_close};

audit_sink *audit_backend_sink_new(crt_audit *owner, crt_backend *b, size_t queue_max, int in_flight,
                                   crt_metrics *m)
{
    backend_sink *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->q = calloc(queue_max, sizeof *s->q);
    s->flights = calloc((size_t)in_flight, sizeof *s->flights);
    if (!s->q || !s->flights) {
        free(s->q);
        free(s->flights);
        free(s);
        return NULL;
    }
    s->cap = queue_max;
    s->max_in_flight = in_flight;
    s->backend = b;
    audit_sink_init(&s->base, &backend_vt, owner, "backend", "sent", m);
    return &s->base;
}
