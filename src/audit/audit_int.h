/* Private to src/audit/: the sink interface the fan-out drives, the
 * coalesced record the sinks render, and the shared counters. */
#ifndef CRONIUM_AUDIT_INT_H
#define CRONIUM_AUDIT_INT_H

#include "cronium/audit.h"
#include "cronium/buf.h"
#include "cronium/metrics.h"

#define AUDIT_QUEUE_DEFAULT 10000
#define AUDIT_IN_FLIGHT_DEFAULT 8
#define LOSS_LOG_INTERVAL_MS 10000
#define LOSSY_WINDOW_MS 60000

/* What a sink is given: an event and how many requests it stands for. */
typedef struct audit_rec {
    const crt_audit_event *ev;
    uint64_t count;                 /* 1: a single request (no "count" field) */
    int64_t first_ms, last_ms;      /* wall clock, ms since the epoch */
    const char *last_request_id;    /* count > 1 */
} audit_rec;

typedef enum { AUDIT_FMT_BACKEND, AUDIT_FMT_LINE } audit_fmt;

/* Appends the event's JSON: the backend's body, or one line (with '\n'). */
void audit_render(crt_buf *b, const audit_rec *r, audit_fmt fmt);

typedef enum { AR_DONE, AR_DROPPED, AR_FAILED } audit_result;

typedef struct audit_sink audit_sink;
typedef struct audit_sink_vt {
    /* Takes the record (renders it now) or returns false when full. */
    bool (*put)(audit_sink *s, const audit_rec *r);
    /* Events it can take now, reservations not subtracted. */
    size_t (*room)(const audit_sink *s);
    /* Working (a file sink whose last write failed is not): reservations
     * are refused while false. */
    bool (*ok)(const audit_sink *s);
    /* Stop taking events, write what is held; audit_sink_drained when done. */
    void (*drain)(audit_sink *s);
    /* The deadline passed or the client goes: drop (count) what is held. */
    void (*abandon)(audit_sink *s);
    /* Close handles and free; audit_sink_closed when the memory is gone. */
    void (*close)(audit_sink *s);
} audit_sink_vt;

struct audit_sink {
    const audit_sink_vt *vt;
    const char *name;               /* the metric's sink label */
    crt_audit *owner;
    size_t reserved;                /* places held by crt_audit_reserve */
    bool drained;
    bool failures_lossy;            /* a failed delivery shows on /ready (the backend's own check shows those) */
    uint64_t *m_done, *m_dropped, *m_failed;
    uint64_t lost, lost_logged;     /* requests lost, and how many the log has told */
    uint64_t last_loss_ms, last_log_ms;
};

/* Counts n requests with a result; losses are logged at most every
 * LOSS_LOG_INTERVAL_MS. */
void audit_sink_count(audit_sink *s, audit_result res, uint64_t n);
void audit_sink_drained(audit_sink *s);
/* A sink's memory is gone. */
void audit_sink_closed(crt_audit *owner);
/* Fills the common part (name, counters). done_label: "sent", "written". */
void audit_sink_init(audit_sink *s, const audit_sink_vt *vt, crt_audit *owner, const char *name,
                     const char *done_label, crt_metrics *m);

audit_sink *audit_backend_sink_new(crt_audit *owner, struct crt_backend *b, size_t queue_max, int in_flight,
                                   crt_metrics *m);
void audit_backend_sink_detach(audit_sink *s);
audit_sink *audit_file_sink_new(crt_audit *owner, uv_loop_t *loop, const char *path, size_t queue_max,
                                crt_metrics *m, char *err, size_t errcap);
audit_sink *audit_log_sink_new(crt_audit *owner, crt_metrics *m);

#endif
