/* The audit trail: one event per authenticated operation (denials too),
 * fanned out to every configured sink — the backend (POST
 * /api/internal/audit), a JSON-lines file (or stdout) and, in dev mode, the
 * log. Nothing here ever delays a request:
 *
 *  - Each sink has a bounded queue. An event a sink cannot queue is lost for
 *    that sink only, counted (cronium_runtime_audit_events_total{sink,result}),
 *    logged (at most once per LOSS_LOG_INTERVAL) and shown by crt_audit_lossy.
 *  - Identical successful reads (same execution, user, action, key, outcome,
 *    status and client) within coalesce_ms become one event carrying
 *    "count": N, "firstTime" and "lastTime"; every sink gets the same
 *    coalesced events, so over any sink the sum of count (1 when absent)
 *    equals the number of audited requests. Counters count requests too.
 *  - With `required`, the API asks crt_audit_reserve before it performs a
 *    write: it is true only when every sink can take one more event, and then
 *    a place is held on each until crt_audit_emit (or crt_audit_unreserve).
 *  - At shutdown crt_audit_drain flushes: pending coalesced events go out at
 *    once, the file sink writes everything it holds, the backend sink ships
 *    for as long as the deadline allows. Since every sink gets every event,
 *    what the backend could not ship is already in the file; it is counted
 *    as dropped for the backend sink and logged.
 */
#ifndef CRONIUM_AUDIT_H
#define CRONIUM_AUDIT_H

#include <uv.h>
#include "cronium/common.h"

struct crt_backend;
struct crt_metrics;

/* One event; every field is borrowed for the call only. */
typedef struct crt_audit_event {
    const char *execution_id;
    const char *user_id;            /* from the token; may be "" */
    const char *action;             /* "get_variable", "set_output", ... */
    const char *key;                /* variable key or tool, may be NULL */
    size_t key_len;
    const char *outcome;            /* "ok", "denied", "not_found", "error", ... */
    int status;
    const char *request_id;
    const char *client_ip;
    bool read;                      /* a read: if successful, coalesced with identical ones */
} crt_audit_event;

typedef struct crt_audit_opts {
    struct crt_backend *backend;    /* borrowed; NULL: no backend sink */
    const char *file;               /* JSON-lines path, "-" for stdout; NULL/"": none */
    bool log;                       /* a sink that writes events to the log (dev mode) */
    bool required;                  /* writes need a place on every sink */
    uint64_t coalesce_ms;           /* 0: never coalesce */
    size_t queue_max;               /* events each sink may hold; 0: the default */
    int in_flight;                  /* backend sink: POSTs at once; 0: the default */
} crt_audit_opts;

typedef struct crt_audit crt_audit;

/* Opens the file (startup, so a bad path is a configuration error) and, with
 * a file sink, watches SIGHUP to reopen it. NULL with err set. */
crt_audit *crt_audit_new(uv_loop_t *loop, const crt_audit_opts *o, struct crt_metrics *m, char *err,
                         size_t errcap);
/* Queues ev on every sink (or counts it into a coalesced event). A call that
 * held a reservation passes reserved = true. */
void crt_audit_emit(crt_audit *a, const crt_audit_event *ev, bool reserved);
/* audit.required: true when each sink can take one more event, which is then
 * held for this caller. Always true when not required (nothing is held). */
bool crt_audit_reserve(crt_audit *a);
/* Gives back a reservation that will not be used. */
void crt_audit_unreserve(crt_audit *a);
bool crt_audit_required(const crt_audit *a);
/* A sink dropped an event in the last LOSSY_WINDOW (or the file sink failed
 * to write one; the backend's failures show as backend "down"), or a sink
 * cannot take an event now. */
bool crt_audit_lossy(const crt_audit *a);
/* Lost so far (all sinks, in requests). */
uint64_t crt_audit_lost(const crt_audit *a);
/* Stops taking events, flushes, and calls cb once every sink has written or
 * given up (at most deadline_ms), with the SIGHUP watch and timers closed.
 * cb may run before this returns. */
void crt_audit_drain(crt_audit *a, uint64_t deadline_ms, void (*cb)(void *ctx), void *ctx);
/* The backend client is going away: the backend sink drops (counts) what it
 * still holds and never calls the client again. */
void crt_audit_detach_backend(crt_audit *a);
/* Closes what is still open; the memory goes when the last handle or file
 * request completes (at once after crt_audit_drain's cb). */
void crt_audit_free(crt_audit *a);

#endif
