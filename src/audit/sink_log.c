/* The log sink (dev mode): each event as an "audit" log line. The log has
 * its own non-blocking writer and counts what it drops, so this sink never
 * refuses an event. */
#include <stdlib.h>
#include "audit_int.h"
#include "cronium/log.h"

static bool l_put(audit_sink *s, const audit_rec *r)
{
    const crt_audit_event *ev = r->ev;
    CRT_LOGF(CRT_LOG_INFO, "audit", CRT_LS("execution_id", ev->execution_id), CRT_LS("user_id", ev->user_id),
             CRT_LS("action", ev->action), CRT_LSN("key", ev->key ? ev->key : "", ev->key ? ev->key_len : 0),
             CRT_LS("outcome", ev->outcome), CRT_LI("status", ev->status), CRT_LS("request_id", ev->request_id),
             CRT_LI("count", r->count));
    audit_sink_count(s, AR_DONE, r->count);
    return true;
}

static size_t l_room(const audit_sink *s)
{
    (void)s;
    return (size_t)-1;
}

static bool l_ok(const audit_sink *s)
{
    (void)s;
    return true;
}

static void l_drain(audit_sink *s) { audit_sink_drained(s); }
static void l_abandon(audit_sink *s) { audit_sink_drained(s); }

static void l_close(audit_sink *s)
{
    crt_audit *owner = s->owner;
    free(s);
    audit_sink_closed(owner);
}

static const audit_sink_vt log_vt = {l_put, l_room, l_ok, l_drain, l_abandon, l_close};

audit_sink *audit_log_sink_new(crt_audit *owner, crt_metrics *m)
{
    audit_sink *s = calloc(1, sizeof *s);
    if (s)
        audit_sink_init(s, &log_vt, owner, "log", "written", m);
    return s;
}
