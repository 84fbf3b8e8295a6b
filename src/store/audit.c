/* Audit events shipped to the Cronium backend (POST /api/internal/audit):
 * a bounded ring of ready-to-send bodies, at most AUDIT_IN_FLIGHT requests
 * at once, nothing ever waited on by a request. Events that do not fit, or
 * are still queued when the backend client goes away, are dropped and
 * counted. Each event carries both `details` and `metadata` (docs/api.md §6). */
#include <stdlib.h>
#include <string.h>
#include "cronium/backend.h"
#include "cronium/log.h"
#include "cronium/store.h"

#define AUDIT_QUEUE_MAX 10000
#define AUDIT_IN_FLIGHT 4

typedef struct audit_ship {
    crt_audit base;
    crt_backend *backend;           /* borrowed; NULL once detached */
    crt_buf *q;                     /* ring of pending bodies */
    size_t head, len;
    int in_flight;
    bool draining;
    void (*drained)(void *ctx);
    void *drained_ctx;
    uint64_t *m_sent, *m_failed, *m_dropped;
} audit_ship;

static void pump(audit_ship *a);

static void check_drained(audit_ship *a)
{
    if (a->draining && a->drained && !a->len && !a->in_flight) {
        void (*cb)(void *) = a->drained;
        a->drained = NULL;
        cb(a->drained_ctx);
    }
}

static void on_sent(void *ud, const crt_backend_resp *r)
{
    audit_ship *a = ud;
    a->in_flight--;
    if (!r->err && r->status / 100 == 2)
        (*a->m_sent)++;
    else
        (*a->m_failed)++;
    pump(a);
}

static void pop(audit_ship *a)
{
    crt_buf_fini(&a->q[a->head]);
    a->head = (a->head + 1) % AUDIT_QUEUE_MAX;
    a->len--;
}

static void pump(audit_ship *a)
{
    while (a->len && a->in_flight < AUDIT_IN_FLIGHT && a->backend) {
        crt_buf *b = &a->q[a->head];
        int rc = crt_backend_request(a->backend, "POST", "/api/internal/audit", b->data, b->len, "audit", 0,
                                     on_sent, a);
        pop(a);
        if (rc)
            (*a->m_failed)++;
        else
            a->in_flight++;
    }
    check_drained(a);
}

static void put_field(crt_buf *d, const char *name, const char *v, size_t n)
{
    crt_buf_printf(d, ",\"%s\":", name);
    crt_buf_json_str(d, v ? v : "", v ? n : 0);
}

static void emit(crt_audit *base, const crt_audit_event *ev)
{
    audit_ship *a = crt_container_of(base, audit_ship, base);
    if (a->draining || !a->backend || a->len == AUDIT_QUEUE_MAX) {
        (*a->m_dropped)++;
        return;
    }
    char ts[40];
    crt_rfc3339(ts, sizeof ts, -1, true);
    crt_buf d;
    crt_buf_init(&d);
    crt_buf_puts(&d, "{\"outcome\":");
    crt_buf_json_str(&d, ev->outcome, strlen(ev->outcome));
    crt_buf_printf(&d, ",\"status\":%d", ev->status);
    put_field(&d, "userId", ev->user_id, ev->user_id ? strlen(ev->user_id) : 0);
    if (ev->key)
        put_field(&d, "key", ev->key, ev->key_len);
    put_field(&d, "requestId", ev->request_id, ev->request_id ? strlen(ev->request_id) : 0);
    put_field(&d, "clientIp", ev->client_ip, ev->client_ip ? strlen(ev->client_ip) : 0);
    crt_buf_putc(&d, '}');

    crt_buf *b = &a->q[(a->head + a->len) % AUDIT_QUEUE_MAX];
    crt_buf_init(b);
    crt_buf_puts(b, "{\"executionId\":");
    crt_buf_json_str(b, ev->execution_id, strlen(ev->execution_id));
    crt_buf_puts(b, ",\"action\":");
    crt_buf_json_str(b, ev->action, strlen(ev->action));
    crt_buf_puts(b, ",\"details\":");
    crt_buf_append(b, d.data, d.len);
    crt_buf_puts(b, ",\"metadata\":");
    crt_buf_append(b, d.data, d.len);
    crt_buf_printf(b, ",\"timestamp\":\"%s\"}", ts);
    crt_buf_fini(&d);
    a->len++;
    pump(a);
}

void crt_audit_backend_drain(crt_audit *base, void (*cb)(void *ctx), void *ctx)
{
    audit_ship *a = crt_container_of(base, audit_ship, base);
    a->draining = true;
    a->drained = cb;
    a->drained_ctx = ctx;
    pump(a);
}

void crt_audit_backend_detach(crt_audit *base)
{
    audit_ship *a = crt_container_of(base, audit_ship, base);
    if (a->len)
        CRT_LOGF(CRT_LOG_WARN, "audit events dropped at shutdown", CRT_LI("queued", a->len),
                 CRT_LI("in_flight", a->in_flight));
    *a->m_dropped += a->len;
    while (a->len)
        pop(a);
    a->backend = NULL;
    a->drained = NULL;
}

static void ship_shutdown(crt_audit *base) { (void)base; }

static void ship_free(crt_audit *base)
{
    if (!base)
        return;
    audit_ship *a = crt_container_of(base, audit_ship, base);
    while (a->len)
        pop(a);
    free(a->q);
    free(a);
}

static const crt_audit_vtable ship_vt = {emit, ship_shutdown, ship_free};

crt_audit *crt_audit_backend_new(crt_backend *b, crt_metrics *m)
{
    audit_ship *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->q = calloc(AUDIT_QUEUE_MAX, sizeof *a->q);
    if (!a->q) {
        free(a);
        return NULL;
    }
    a->base.vt = &ship_vt;
    a->backend = b;
    const char *help = "Audit events by outcome.";
    a->m_sent = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, "result=\"sent\"");
    a->m_failed = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, "result=\"failed\"");
    a->m_dropped = crt_metrics_counter(m, "cronium_runtime_audit_events_total", help, "result=\"dropped\"");
    return &a->base;
}
