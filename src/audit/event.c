/* The two renderings of an audit event (see audit.h): the backend's body,
 * {"executionId","action","details","metadata","timestamp"} (the real
 * backend logs only executionId, action and details, so a coalesced event's
 * count and times are in details as well as at the top), and one JSON line
 * of the file sink. */
#include <string.h>
#include <time.h>
#include "audit_int.h"

/* RFC 3339 with milliseconds, UTC. */
static void put_time(crt_buf *b, int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char out[40];
    size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    crt_buf_putc(b, '"');
    crt_buf_append(b, out, n);
    crt_buf_printf(b, ".%03dZ\"", (int)(ms % 1000));
}

static void put_str(crt_buf *b, const char *name, const char *v, size_t n)
{
    crt_buf_printf(b, "\"%s\":", name);
    crt_buf_json_str(b, v ? v : "", v ? n : 0);
}

static size_t len0(const char *s) { return s ? strlen(s) : 0; }

/* A coalesced event's ,"count":N,"firstTime":...,"lastTime":... */
static void put_count(crt_buf *b, const audit_rec *r)
{
    crt_buf_printf(b, ",\"count\":%llu,\"firstTime\":", (unsigned long long)r->count);
    put_time(b, r->first_ms);
    crt_buf_puts(b, ",\"lastTime\":");
    put_time(b, r->last_ms);
}

/* The fields after the identity: outcome ... and, coalesced, the count. */
static void put_details(crt_buf *b, const audit_rec *r, bool with_ids)
{
    const crt_audit_event *ev = r->ev;
    if (with_ids) {
        put_str(b, "executionId", ev->execution_id, len0(ev->execution_id));
        crt_buf_putc(b, ',');
        put_str(b, "action", ev->action, len0(ev->action));
        crt_buf_putc(b, ',');
    }
    put_str(b, "outcome", ev->outcome, len0(ev->outcome));
    crt_buf_printf(b, ",\"status\":%d,", ev->status);
    put_str(b, "userId", ev->user_id, len0(ev->user_id));
    if (ev->key) {
        crt_buf_putc(b, ',');
        put_str(b, "key", ev->key, ev->key_len);
    }
    crt_buf_putc(b, ',');
    put_str(b, "requestId", ev->request_id, len0(ev->request_id));
    crt_buf_putc(b, ',');
    put_str(b, "clientIp", ev->client_ip, len0(ev->client_ip));
    if (r->count > 1) {
        put_count(b, r);
        crt_buf_putc(b, ',');
        put_str(b, "lastRequestId", r->last_request_id, len0(r->last_request_id));
    }
}

void audit_render(crt_buf *b, const audit_rec *r, audit_fmt fmt)
{
    if (fmt == AUDIT_FMT_LINE) {
        crt_buf_puts(b, "{\"time\":");
        put_time(b, r->first_ms);
        crt_buf_putc(b, ',');
        put_details(b, r, true);
        crt_buf_puts(b, "}\n");
        return;
    }
    const crt_audit_event *ev = r->ev;
    crt_buf_putc(b, '{');
    put_str(b, "executionId", ev->execution_id, len0(ev->execution_id));
    crt_buf_putc(b, ',');
    put_str(b, "action", ev->action, len0(ev->action));
    crt_buf_puts(b, ",\"details\":{");
    size_t d0 = b->len;
    put_details(b, r, false);
    size_t d1 = b->len;
    crt_buf_puts(b, "},\"metadata\":{");
    /* metadata repeats details (docs/api.md §6); copied from the buffer itself,
     * so reserve first: the append must not read from a moved buffer. */
    size_t dn = d1 - d0;
    if (crt_buf_reserve(b, dn + 1) == 0)
        crt_buf_append(b, b->data + d0, dn);
    crt_buf_puts(b, "},\"timestamp\":");
    put_time(b, r->count > 1 ? r->last_ms : r->first_ms);
    if (r->count > 1)
        put_count(b, r);
    crt_buf_putc(b, '}');
}
