/* Logging: JSON lines (default) or text, written to stderr.
 * Lines are batched in memory and written once per loop iteration (and at
 * exit), so a request never waits on the log. Writes never block: a sink that
 * stops reading keeps at most 1 MiB pending; lines past it are dropped,
 * counted (crt_log_dropped) and reported in a line once the sink drains.
 * Passwords in URLs (scheme://user:pass@host, ?password=) are redacted. The logger is the one global of
 * the process: logging is process-wide by nature. */
#ifndef CRONIUM_LOG_H
#define CRONIUM_LOG_H

#include <uv.h>
#include "cronium/buf.h"
#include "cronium/common.h"

typedef enum { CRT_LOG_DEBUG, CRT_LOG_INFO, CRT_LOG_WARN, CRT_LOG_ERROR } crt_log_level;
typedef enum { CRT_LOG_JSON, CRT_LOG_TEXT } crt_log_format;

enum { CRT_LF_STR, CRT_LF_INT, CRT_LF_DBL, CRT_LF_BOOL };

/* One structured field of a log line. Strings are borrowed for the call. */
typedef struct crt_log_field {
    const char *key;
    int type;
    const char *s;
    size_t n;
    int64_t i;
    double d;
} crt_log_field;

#define CRT_LS(k, v) ((crt_log_field){.key = (k), .type = CRT_LF_STR, .s = (v), .n = (size_t)-1})
#define CRT_LSN(k, v, len) ((crt_log_field){.key = (k), .type = CRT_LF_STR, .s = (v), .n = (len)})
#define CRT_LI(k, v) ((crt_log_field){.key = (k), .type = CRT_LF_INT, .i = (int64_t)(v)})
#define CRT_LD(k, v) ((crt_log_field){.key = (k), .type = CRT_LF_DBL, .d = (v)})
#define CRT_LB(k, v) ((crt_log_field){.key = (k), .type = CRT_LF_BOOL, .i = (v) ? 1 : 0})

void crt_log_setup(crt_log_level level, crt_log_format format);
/* Starts batching on loop (a check handle flushes after each iteration). */
int crt_log_attach(uv_loop_t *loop);
/* Flushes and stops batching; writes become direct again. */
void crt_log_detach(void);
/* Writes what is pending, waiting for a stuck sink at most about a second. */
void crt_log_flush(void);
bool crt_log_enabled(crt_log_level level);
/* Lines dropped because the sink did not keep up (or was gone), in total. */
uint64_t crt_log_dropped(void);

/* True if s may hold a credential crt_log_redact would hide. */
bool crt_log_needs_redact(const char *s, size_t n);
/* Appends s to out with the password of every scheme://user:password@ (or
 * the whole user part when it has no password) and every password=value
 * replaced by ***. For anything printed that may carry a URL. */
void crt_log_redact(const char *s, size_t n, crt_buf *out);

void crt_log_fields(crt_log_level level, const char *msg, const crt_log_field *f, size_t n);
void crt_log(crt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CRT_LOGF(level, msg, ...) \
    do { \
        if (crt_log_enabled(level)) { \
            const crt_log_field crt_lf_[] = {__VA_ARGS__}; \
            crt_log_fields((level), (msg), crt_lf_, CRT_ARRAY_LEN(crt_lf_)); \
        } \
    } while (0)

#endif
