/* The audit fan-out (see audit.h): coalescing of identical reads in a small
 * direct-mapped table (fixed slots, so the hot read path never allocates),
 * reservations for audit.required, loss accounting, and the drain at
 * shutdown. The sinks are in sink_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "audit_int.h"
#include "cronium/log.h"
#include "cronium/map.h"

#define NSLOTS 256
#define MAX_SINKS 3

/* One pending coalesced read. Fields are copied (an event's are borrowed);
 * an event with a longer field is not coalesced. */
typedef struct slot {
    bool busy;
    uint64_t hash;
    uint64_t opened;                /* uv_now() of the first request */
    uint64_t count;
    int64_t first_ms, last_ms;
    int status;
    size_t key_len;
    bool has_key;
    char exec[96], user[96], action[40], outcome[40], ip[64], req[96], last_req[96];
    char key[256];
} slot;

struct crt_audit {
    uv_loop_t *loop;
    audit_sink *sinks[MAX_SINKS];
    int nsinks;
    audit_sink *backend;            /* one of sinks, or NULL */
    bool required;
    uint64_t coalesce_ms;
    slot *slots;
    size_t nbusy;
    uv_timer_t tick;                /* flushes slots whose window has passed */
    uv_timer_t deadline;            /* drain */
    bool tick_open, deadline_open;
    bool draining, drain_done, freeing;
    int open;                       /* handles and sinks not yet closed */
    void (*drained_cb)(void *ctx);
    void *drained_ctx;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- counters shared by the sinks ---------------------------------------------------------- */

void audit_sink_init(audit_sink *s, const audit_sink_vt *vt, crt_audit *owner, const char *name,
                     const char *done_label, crt_metrics *m)
{
    s->vt = vt;
    s->name = name;
    s->owner = owner;
    const char *help = "Audited requests by sink and result (a coalesced event counts every request it stands for).";
    char lb[96];
    snprintf(lb, sizeof lb, "sink=\"%s\",result=\"%s\"", name, done_label);
    s->m_done = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, lb);
    snprintf(lb, sizeof lb, "sink=\"%s\",result=\"dropped\"", name);
    s->m_dropped = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, lb);
    snprintf(lb, sizeof lb, "sink=\"%s\",result=\"failed\"", name);
    s->m_failed = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, lb);
}

void audit_sink_count(audit_sink *s, audit_result res, uint64_t n)
{
    if (res == AR_DONE) {
        *s->m_done += n;
        return;
    }
    *(res == AR_DROPPED ? s->m_dropped : s->m_failed) += n;
    s->lost += n;
    uint64_t now = crt_now_ms();
    if (res == AR_DROPPED || s->failures_lossy)
        s->last_loss_ms = now;
    /* A sink that falls behind loses thousands a second: one line per interval. */
    if (!s->last_log_ms || now - s->last_log_ms >= LOSS_LOG_INTERVAL_MS) {
        CRT_LOGF(CRT_LOG_WARN, "audit events lost", CRT_LS("sink", s->name),
                 CRT_LS("reason", res == AR_DROPPED ? "queue full or closing" : "write failed"),
                 CRT_LI("lost_since_last_report", s->lost - s->lost_logged), CRT_LI("lost_total", s->lost));
        s->last_log_ms = now;
        s->lost_logged = s->lost;
    }
}

/* ---- fan-out -------------------------------------------------------------------------------- */

static void fan_out(crt_audit *a, const audit_rec *r)
{
    for (int i = 0; i < a->nsinks; i++) {
        audit_sink *s = a->sinks[i];
        /* Places held for reserved writes are not given to anyone else. */
        if (s->vt->room(s) <= s->reserved || !s->vt->put(s, r))
            audit_sink_count(s, AR_DROPPED, r->count);
    }
}

static void flush_slot(crt_audit *a, slot *sl)
{
    crt_audit_event ev = {
        .execution_id = sl->exec, .user_id = sl->user, .action = sl->action,
        .key = sl->has_key ? sl->key : NULL, .key_len = sl->key_len, .outcome = sl->outcome,
        .status = sl->status, .request_id = sl->req, .client_ip = sl->ip, .read = true,
    };
    audit_rec r = {.ev = &ev, .count = sl->count, .first_ms = sl->first_ms, .last_ms = sl->last_ms,
                   .last_request_id = sl->last_req};
    sl->busy = false;
    a->nbusy--;
    fan_out(a, &r);
}

static void flush_all(crt_audit *a)
{
    for (size_t i = 0; i < NSLOTS && a->nbusy; i++)
        if (a->slots[i].busy)
            flush_slot(a, &a->slots[i]);
}

static void on_tick(uv_timer_t *t)
{
    crt_audit *a = t->data;
    uint64_t now = uv_now(a->loop);
    for (size_t i = 0; i < NSLOTS && a->nbusy; i++) {
        slot *sl = &a->slots[i];
        if (sl->busy && now - sl->opened >= a->coalesce_ms)
            flush_slot(a, sl);
    }
    if (!a->nbusy)
        uv_timer_stop(t);
}

/* One field of the coalescing key; the terminator keeps ("ab","c") apart
 * from ("a","bc"). */
static uint64_t hash_str(uint64_t h, const char *s, size_t n)
{
    return crt_hash_fold(crt_hash_fold(h, s, n), "\xff", 1);
}

static bool fits(const char *s, size_t cap, size_t *n)
{
    *n = s ? strlen(s) : 0;
    return *n < cap;
}

static bool same(const char *field, const char *s, size_t n) { return memcmp(field, s, n) == 0 && !field[n]; }

/* Counts ev into its slot; false when it cannot be coalesced. */
static bool coalesce(crt_audit *a, const crt_audit_event *ev)
{
    size_t ne, nu, na, no, ni, nr;
    if (!fits(ev->execution_id, sizeof a->slots->exec, &ne) || !fits(ev->user_id, sizeof a->slots->user, &nu) ||
        !fits(ev->action, sizeof a->slots->action, &na) || !fits(ev->outcome, sizeof a->slots->outcome, &no) ||
        !fits(ev->client_ip, sizeof a->slots->ip, &ni) || !fits(ev->request_id, sizeof a->slots->req, &nr) ||
        (ev->key && ev->key_len >= sizeof a->slots->key))
        return false;
    uint64_t h = CRT_HASH_SEED;
    h = hash_str(h, ev->execution_id ? ev->execution_id : "", ne);
    h = hash_str(h, ev->user_id ? ev->user_id : "", nu);
    h = hash_str(h, ev->action ? ev->action : "", na);
    h = hash_str(h, ev->outcome ? ev->outcome : "", no);
    h = hash_str(h, ev->client_ip ? ev->client_ip : "", ni);
    h = ev->key ? hash_str(h, ev->key, ev->key_len) : h * 31;
    h ^= (uint64_t)(unsigned)ev->status;
    slot *sl = &a->slots[h % NSLOTS];
    int64_t now = wall_ms();
    if (sl->busy && sl->hash == h && sl->status == ev->status && sl->has_key == (ev->key != NULL) &&
        (!ev->key || (sl->key_len == ev->key_len && memcmp(sl->key, ev->key, ev->key_len) == 0)) &&
        same(sl->exec, ev->execution_id ? ev->execution_id : "", ne) &&
        same(sl->user, ev->user_id ? ev->user_id : "", nu) && same(sl->action, ev->action ? ev->action : "", na) &&
        same(sl->outcome, ev->outcome ? ev->outcome : "", no) &&
        same(sl->ip, ev->client_ip ? ev->client_ip : "", ni)) {
        sl->count++;
        sl->last_ms = now;
        memcpy(sl->last_req, ev->request_id ? ev->request_id : "", nr + 1);
        return true;
    }
    if (sl->busy)
        flush_slot(a, sl);              /* another event had the slot: it goes out early */
    sl->busy = true;
    a->nbusy++;
    sl->hash = h;
    sl->opened = uv_now(a->loop);
    sl->count = 1;
    sl->first_ms = sl->last_ms = now;
    sl->status = ev->status;
    sl->has_key = ev->key != NULL;
    sl->key_len = ev->key ? ev->key_len : 0;
    if (ev->key)
        memcpy(sl->key, ev->key, ev->key_len);
    sl->key[sl->key_len] = '\0';
    memcpy(sl->exec, ev->execution_id ? ev->execution_id : "", ne + 1);
    memcpy(sl->user, ev->user_id ? ev->user_id : "", nu + 1);
    memcpy(sl->action, ev->action ? ev->action : "", na + 1);
    memcpy(sl->outcome, ev->outcome ? ev->outcome : "", no + 1);
    memcpy(sl->ip, ev->client_ip ? ev->client_ip : "", ni + 1);
    memcpy(sl->req, ev->request_id ? ev->request_id : "", nr + 1);
    memcpy(sl->last_req, sl->req, nr + 1);
    if (!a->tick_open) {
        uv_timer_init(a->loop, &a->tick);
        a->tick.data = a;
        a->tick_open = true;
        a->open++;
    }
    if (!uv_is_active((uv_handle_t *)&a->tick)) {
        uint64_t every = a->coalesce_ms / 4 ? a->coalesce_ms / 4 : 1;
        uv_timer_start(&a->tick, on_tick, every, every);
    }
    return true;
}

void crt_audit_emit(crt_audit *a, const crt_audit_event *ev, bool reserved)
{
    if (!a)
        return;
    if (reserved)
        for (int i = 0; i < a->nsinks; i++)
            if (a->sinks[i]->reserved)
                a->sinks[i]->reserved--;
    /* Only successful reads: a refusal is worth its own event, at once. */
    if (ev->read && ev->status < 300 && a->coalesce_ms && !a->draining && coalesce(a, ev))
        return;
    int64_t now = wall_ms();
    audit_rec r = {.ev = ev, .count = 1, .first_ms = now, .last_ms = now};
    fan_out(a, &r);
}

/* ---- required mode and state ------------------------------------------------------------------ */

bool crt_audit_reserve(crt_audit *a)
{
    if (!a || !a->required)
        return true;
    if (a->draining)
        return false;
    for (int i = 0; i < a->nsinks; i++) {
        const audit_sink *s = a->sinks[i];
        if (!s->vt->ok(s) || s->vt->room(s) <= s->reserved)
            return false;
    }
    for (int i = 0; i < a->nsinks; i++)
        a->sinks[i]->reserved++;
    return true;
}

void crt_audit_unreserve(crt_audit *a)
{
    if (!a || !a->required)
        return;
    for (int i = 0; i < a->nsinks; i++)
        if (a->sinks[i]->reserved)
            a->sinks[i]->reserved--;
}

bool crt_audit_required(const crt_audit *a) { return a && a->required; }

bool crt_audit_lossy(const crt_audit *a)
{
    if (!a)
        return false;
    uint64_t now = crt_now_ms();
    for (int i = 0; i < a->nsinks; i++) {
        const audit_sink *s = a->sinks[i];
        if ((s->last_loss_ms && now - s->last_loss_ms < LOSSY_WINDOW_MS) || !s->vt->ok(s) ||
            s->vt->room(s) <= s->reserved)
            return true;
    }
    return false;
}

uint64_t crt_audit_lost(const crt_audit *a)
{
    uint64_t n = 0;
    for (int i = 0; a && i < a->nsinks; i++)
        n += a->sinks[i]->lost;
    return n;
}

/* ---- drain and free ------------------------------------------------------------------------------- */

static void maybe_free(crt_audit *a)
{
    if (a->freeing && a->open == 0) {
        free(a->slots);
        free(a);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    crt_audit *a = h->data;
    a->open--;
    maybe_free(a);
}

static void close_timers(crt_audit *a)
{
    if (a->tick_open) {
        a->tick_open = false;
        uv_close((uv_handle_t *)&a->tick, on_handle_closed);
    }
    if (a->deadline_open) {
        a->deadline_open = false;
        uv_close((uv_handle_t *)&a->deadline, on_handle_closed);
    }
}

static void check_drained(crt_audit *a)
{
    if (!a->draining || a->drain_done)
        return;
    for (int i = 0; i < a->nsinks; i++)
        if (!a->sinks[i]->drained)
            return;
    a->drain_done = true;
    close_timers(a);
    void (*cb)(void *) = a->drained_cb;
    a->drained_cb = NULL;
    if (cb)
        cb(a->drained_ctx);
}

void audit_sink_drained(audit_sink *s)
{
    if (s->drained)
        return;
    s->drained = true;
    check_drained(s->owner);
}

void audit_sink_closed(crt_audit *a)
{
    a->open--;
    maybe_free(a);
}

static void on_deadline(uv_timer_t *t)
{
    crt_audit *a = t->data;
    for (int i = 0; i < a->nsinks; i++)
        if (!a->sinks[i]->drained)
            a->sinks[i]->vt->abandon(a->sinks[i]);
    check_drained(a);
}

void crt_audit_drain(crt_audit *a, uint64_t deadline_ms, void (*cb)(void *ctx), void *ctx)
{
    if (a->draining) {
        a->drained_cb = cb;
        a->drained_ctx = ctx;
        check_drained(a);
        return;
    }
    a->draining = true;
    a->drained_cb = cb;
    a->drained_ctx = ctx;
    flush_all(a);
    if (a->tick_open)
        uv_timer_stop(&a->tick);
    uv_timer_init(a->loop, &a->deadline);
    a->deadline.data = a;
    a->deadline_open = true;
    a->open++;
    uv_timer_start(&a->deadline, on_deadline, deadline_ms, 0);
    for (int i = 0; i < a->nsinks; i++)
        a->sinks[i]->vt->drain(a->sinks[i]);
    check_drained(a);
}

void crt_audit_detach_backend(crt_audit *a)
{
    if (a && a->backend)
        audit_backend_sink_detach(a->backend);
}

void crt_audit_free(crt_audit *a)
{
    if (!a || a->freeing)
        return;
    a->freeing = true;
    a->drained_cb = NULL;
    if (a->nbusy && !a->draining)
        flush_all(a);                   /* freed without a drain: the file still gets what it can */
    close_timers(a);
    for (int i = 0; i < a->nsinks; i++)
        a->sinks[i]->vt->close(a->sinks[i]);
    a->nsinks = 0;
    a->open--;                          /* the object's own reference */
    maybe_free(a);
}

crt_audit *crt_audit_new(uv_loop_t *loop, const crt_audit_opts *o, crt_metrics *m, char *err, size_t errcap)
{
    crt_audit *a = calloc(1, sizeof *a);
    if (!a || !(a->slots = calloc(NSLOTS, sizeof *a->slots))) {
        free(a);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->required = o->required;
    a->coalesce_ms = o->coalesce_ms;
    a->open = 1;
    size_t qmax = o->queue_max ? o->queue_max : AUDIT_QUEUE_DEFAULT;
    int in_flight = o->in_flight > 0 ? o->in_flight : AUDIT_IN_FLIGHT_DEFAULT;
    audit_sink *s;
    if (o->backend) {
        if (!(s = audit_backend_sink_new(a, o->backend, qmax, in_flight, m)))
            goto oom;
        a->sinks[a->nsinks++] = a->backend = s;
        a->open++;
    }
    if (o->file && *o->file) {
        if (!(s = audit_file_sink_new(a, loop, o->file, qmax, m, err, errcap))) {
            crt_audit_free(a);
            return NULL;
        }
        a->sinks[a->nsinks++] = s;
        a->open++;
    }
    if (o->log) {
        if (!(s = audit_log_sink_new(a, m)))
            goto oom;
        a->sinks[a->nsinks++] = s;
        a->open++;
    }
    if (a->required && !a->nsinks) {
        snprintf(err, errcap, "audit.required is on but no audit sink is configured (audit.backend, audit.file)");
        crt_audit_free(a);
        return NULL;
    }
    return a;
oom:
    snprintf(err, errcap, "out of memory");
    crt_audit_free(a);
    return NULL;
}
