/* JSON-lines / text logger with per-iteration batching (see log.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "cronium/buf.h"
#include "cronium/log.h"

/* Past this much unwritten log text (stderr is stuck), new lines are dropped
 * and counted rather than growing memory without bound. */
#define LOG_MAX_PENDING (4u << 20)

static struct {
    crt_log_level level;
    crt_log_format format;
    crt_buf pending;
    uv_check_t check;
    bool attached;
    uint64_t dropped;
} L = {.level = CRT_LOG_INFO, .format = CRT_LOG_JSON};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void crt_log_setup(crt_log_level level, crt_log_format format)
{
    L.level = level;
    L.format = format;
}

bool crt_log_enabled(crt_log_level level) { return level >= L.level; }
uint64_t crt_log_dropped(void) { return L.dropped; }

void crt_log_flush(void)
{
    size_t off = 0;
    while (off < L.pending.len) {
        ssize_t n = write(STDERR_FILENO, L.pending.data + off, L.pending.len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; /* nowhere to log to: give up on this batch */
        }
        off += (size_t)n;
    }
    crt_buf_reset(&L.pending);
}

static void log_on_check(uv_check_t *h)
{
    (void)h;
    if (L.pending.len)
        crt_log_flush();
}

int crt_log_attach(uv_loop_t *loop)
{
    int rc = uv_check_init(loop, &L.check);
    if (rc == 0)
        rc = uv_check_start(&L.check, log_on_check);
    if (rc)
        return CRT_EIO;
    uv_unref((uv_handle_t *)&L.check); /* logging alone must not keep the loop alive */
    L.attached = true;
    return 0;
}

void crt_log_detach(void)
{
    if (!L.attached)
        return;
    uv_check_stop(&L.check);
    uv_close((uv_handle_t *)&L.check, NULL);
    L.attached = false;
    crt_log_flush();
    crt_buf_fini(&L.pending);
}

static void put_text_value(crt_buf *b, const char *s, size_t n)
{
    bool plain = n > 0;
    for (size_t i = 0; i < n && plain; i++)
        plain = (unsigned char)s[i] > ' ' && s[i] != '"' && s[i] != '=';
    if (plain)
        crt_buf_append(b, s, n);
    else
        crt_buf_json_str(b, s, n);
}

void crt_log_fields(crt_log_level level, const char *msg, const crt_log_field *f, size_t n)
{
    if (!crt_log_enabled(level))
        return;
    if (L.pending.len > LOG_MAX_PENDING) {
        L.dropped++;
        return;
    }
    crt_buf *b = &L.pending;
    char ts[40];
    size_t tsn = crt_rfc3339(ts, sizeof ts, -1, true);
    bool json = L.format == CRT_LOG_JSON;
    if (json) {
        crt_buf_puts(b, "{\"time\":\"");
        crt_buf_append(b, ts, tsn);
        crt_buf_puts(b, "\",\"level\":\"");
        crt_buf_puts(b, level_names[level]);
        crt_buf_puts(b, "\",\"msg\":");
        crt_buf_json_str(b, msg, strlen(msg));
    } else {
        crt_buf_printf(b, "%s %-5s %s", ts, level_names[level], msg);
    }
    for (size_t i = 0; i < n; i++) {
        const crt_log_field *x = &f[i];
        if (json) {
            crt_buf_putc(b, ',');
            crt_buf_json_str(b, x->key, strlen(x->key));
            crt_buf_putc(b, ':');
        } else {
            crt_buf_printf(b, " %s=", x->key);
        }
        switch (x->type) {
        case CRT_LF_STR: {
            const char *s = x->s ? x->s : "";
            size_t len = x->n == (size_t)-1 ? strlen(s) : x->n;
            if (json)
                crt_buf_json_str(b, s, len);
            else
                put_text_value(b, s, len);
            break;
        }
        case CRT_LF_INT: crt_buf_put_i64(b, x->i); break;
        case CRT_LF_DBL: crt_buf_printf(b, "%.6g", x->d); break;
        case CRT_LF_BOOL: crt_buf_puts(b, x->i ? "true" : "false"); break;
        }
    }
    crt_buf_puts(b, json ? "}\n" : "\n");
    if (!L.attached)
        crt_log_flush();
}

void crt_log(crt_log_level level, const char *fmt, ...)
{
    if (!crt_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    crt_log_fields(level, msg, NULL, 0);
}
