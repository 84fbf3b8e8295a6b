/* JSON-lines / text logger with per-iteration batching (see log.h).
 *
 * The sink (stderr) may stop reading: a pipe whose reader is stuck, a
 * terminal on hold. A blocking write(2) there would stop the whole loop, so
 * every write is non-blocking; what the sink does not take stays in a bounded
 * buffer and is retried on a timer; lines past the bound are dropped, counted
 * (crt_log_dropped, exported as a metric) and reported once the sink drains. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cronium/buf.h"
#include "cronium/log.h"

/* Unwritten log text kept while the sink is stuck; a line that does not fit
 * is dropped rather than growing memory without bound. */
#define LOG_MAX_PENDING (1u << 20)
#define LOG_RETRY_MS 20             /* retry period while a sink we cannot poll is stuck */
#define LOG_LINE_WAIT_MS 100        /* outside the loop: wait per line at most */
#define LOG_FLUSH_WAIT_MS 1000      /* at exit: wait for the sink at most */

typedef enum {
    SINK_UNSET,
    SINK_WRITE,     /* write(2) on fd: a regular file, /dev/null, or an fd of our own with O_NONBLOCK */
    SINK_SEND,      /* send(2) with MSG_DONTWAIT: a socket (journald), its flags left alone */
} sink_kind;

static struct {
    crt_log_level level;
    crt_log_format format;
    crt_buf pending;            /* log text not yet taken by the sink, from off */
    size_t off;
    crt_buf scratch;            /* redacted copies of field values */
    uv_check_t check;
    uv_timer_t retry;           /* a stuck sink we cannot poll: try again later */
    uv_poll_t writable;         /* a stuck sink of our own (O_NONBLOCK fd): wait for room */
    bool pollable;              /* writable was initialised on fd */
    bool attached;
    bool blocked;               /* the sink said EAGAIN; the retry timer runs */
    sink_kind sink;
    int fd;
    uint64_t dropped;           /* lines lost, in total (the metric) */
    uint64_t unreported;        /* lines lost since the last report line */
} L = {.level = CRT_LOG_INFO, .format = CRT_LOG_JSON, .fd = STDERR_FILENO};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void crt_log_setup(crt_log_level level, crt_log_format format)
{
    L.level = level;
    L.format = format;
}

bool crt_log_enabled(crt_log_level level) { return level >= L.level; }
uint64_t crt_log_dropped(void) { return L.dropped; }

/* ---- the sink ------------------------------------------------------------------------------- */

/* Picks how to write to stderr without ever blocking, and without changing
 * the file status flags of a description we share: fd 2 is usually inherited
 * from a parent (a shell's terminal, a supervisor's pipe), and O_NONBLOCK set
 * on it would be seen by every other holder (a shell then gets EAGAIN on its
 * own terminal after we exit).
 *  - regular file, /dev/null: writes never wait for a reader; written as is.
 *  - socket: send(MSG_DONTWAIT) is non-blocking per call, no flag changes.
 *  - pipe/FIFO, terminal: reopened through /proc/self/fd/2, which gives a
 *    new open file description of the same pipe or terminal that is ours
 *    alone, with O_NONBLOCK on it.
 *  - a pipe that cannot be reopened (no /proc): O_NONBLOCK on fd 2 itself,
 *    the lesser evil than freezing the loop (the write end of a log pipe is
 *    rarely shared with a writer that relies on blocking); a terminal that
 *    cannot be reopened is written as is (it only blocks while on hold). */
static void sink_open(void)
{
    struct stat st;
    L.fd = STDERR_FILENO;
    L.sink = SINK_WRITE;
    if (fstat(STDERR_FILENO, &st) != 0)
        return;
    if (S_ISSOCK(st.st_mode)) {
        L.sink = SINK_SEND;
        return;
    }
    bool tty = isatty(STDERR_FILENO);
    if (!S_ISFIFO(st.st_mode) && !tty)
        return;
    int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        struct stat st2;
        if (fstat(fd, &st2) == 0 && st2.st_dev == st.st_dev && st2.st_ino == st.st_ino) {
            L.fd = fd;
            return;
        }
        close(fd);
    }
    if (S_ISFIFO(st.st_mode)) {
        int fl = fcntl(STDERR_FILENO, F_GETFL);
        if (fl >= 0 && !(fl & O_NONBLOCK))
            fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
    }
}

static ssize_t sink_write(const char *p, size_t n)
{
    if (L.sink == SINK_UNSET)
        sink_open();
    if (L.sink == SINK_SEND) {
        ssize_t r = send(L.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0 || errno != ENOTSOCK)
            return r;
        L.sink = SINK_WRITE;
    }
    return write(L.fd, p, n);
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t k = 0;
    for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))) != NULL; q++)
        k++;
    return k;
}

/* Writes what the sink takes. wait_ms > 0 (only outside the loop) waits for
 * a stuck sink up to that long. Returns true when nothing is left pending. */
static bool drain(int wait_ms)
{
    uint64_t deadline = crt_now_ms() + (uint64_t)wait_ms;
    while (L.off < L.pending.len) {
        ssize_t n = sink_write(L.pending.data + L.off, L.pending.len - L.off);
        if (n > 0) {
            L.off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uint64_t now = crt_now_ms();
            if (wait_ms > 0 && now < deadline) {
                struct pollfd pfd = {.fd = L.fd, .events = POLLOUT};
                poll(&pfd, 1, (int)(deadline - now));
                continue;
            }
            break;
        }
        /* The sink is gone (EPIPE, EBADF, ...): what is pending is lost. */
        uint64_t lost = count_lines(L.pending.data + L.off, L.pending.len - L.off);
        L.dropped += lost;
        L.off = L.pending.len;
    }
    if (L.off == L.pending.len) {
        crt_buf_reset(&L.pending);
        L.off = 0;
        return true;
    }
    if (L.off > L.pending.len / 2) {    /* amortised: move the rest down only past half */
        crt_buf_consume(&L.pending, L.off);
        L.off = 0;
    }
    return false;
}

static void emit(crt_log_level level, const char *msg, const crt_log_field *f, size_t n);

/* Drains; once the sink has taken everything, says how many lines it missed. */
static bool drain_and_report(int wait_ms)
{
    if (!drain(wait_ms))
        return false;
    if (!L.unreported)
        return true;
    char msg[96];
    snprintf(msg, sizeof msg, "%llu log lines dropped: the log sink did not keep up",
             (unsigned long long)L.unreported);
    const crt_log_field f[] = {CRT_LI("dropped", L.unreported), CRT_LI("dropped_total", L.dropped)};
    L.unreported = 0;
    emit(CRT_LOG_WARN, msg, f, CRT_ARRAY_LEN(f));
    return drain(wait_ms);
}

void crt_log_flush(void) { drain_and_report(LOG_FLUSH_WAIT_MS); }

static void log_on_retry(uv_timer_t *h);

static void log_on_writable(uv_poll_t *h, int status, int events);

static void try_write(void)
{
    if (L.blocked || !L.pending.len)
        return;
    if (!drain_and_report(0)) {
        L.blocked = true;
        if (!L.pollable || uv_poll_start(&L.writable, UV_WRITABLE, log_on_writable) != 0)
            uv_timer_start(&L.retry, log_on_retry, LOG_RETRY_MS, 0);
    }
}

static void log_on_retry(uv_timer_t *h)
{
    (void)h;
    L.blocked = false;
    try_write();
}

static void log_on_writable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    uv_poll_stop(h);
    L.blocked = false;
    try_write();
}

static void log_on_check(uv_check_t *h)
{
    (void)h;
    try_write();
}

int crt_log_attach(uv_loop_t *loop)
{
    int rc = uv_check_init(loop, &L.check);
    if (rc)
        return CRT_EIO;
    rc = uv_timer_init(loop, &L.retry);
    if (rc == 0)
        rc = uv_check_start(&L.check, log_on_check);
    if (rc) {
        uv_close((uv_handle_t *)&L.check, NULL);
        return CRT_EIO;
    }
    /* Only a descriptor that is ours, or already non-blocking, may be polled:
     * uv_poll_init makes its fd non-blocking (see sink_open). */
    if (L.sink == SINK_UNSET)
        sink_open();
    int fl = L.sink == SINK_WRITE ? fcntl(L.fd, F_GETFL) : -1;
    L.pollable = fl >= 0 && (fl & O_NONBLOCK) && uv_poll_init(loop, &L.writable, L.fd) == 0;
    /* logging alone must not keep the loop alive */
    uv_unref((uv_handle_t *)&L.check);
    uv_unref((uv_handle_t *)&L.retry);
    if (L.pollable)
        uv_unref((uv_handle_t *)&L.writable);
    L.attached = true;
    L.blocked = false;
    return 0;
}

void crt_log_detach(void)
{
    if (!L.attached)
        return;
    uv_check_stop(&L.check);
    uv_timer_stop(&L.retry);
    uv_close((uv_handle_t *)&L.check, NULL);
    uv_close((uv_handle_t *)&L.retry, NULL);
    if (L.pollable) {
        uv_poll_stop(&L.writable);
        uv_close((uv_handle_t *)&L.writable, NULL);
        L.pollable = false;
    }
    L.attached = false;
    L.blocked = false;
    crt_log_flush();
    if (!L.pending.len) {
        crt_buf_fini(&L.pending);
        L.off = 0;
    }
    crt_buf_fini(&L.scratch);
}

/* ---- redaction ------------------------------------------------------------------------------ */

static bool url_end(char c)
{
    return c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '>' ||
           (unsigned char)c <= ' ';
}

/* The next "password=" (any case) in p[0..n): found from its '=', so the
 * scan is one memchr per '=' rather than a comparison at every byte. */
static const char *find_password(const char *p, size_t n)
{
    for (const char *e = p + 8; e < p + n && (e = memchr(e, '=', (size_t)(p + n - e))) != NULL; e++)
        if (strncasecmp(e - 8, "password", 8) == 0)
            return e - 8;
    return NULL;
}

bool crt_log_needs_redact(const char *s, size_t n)
{
    return memmem(s, n, "://", 3) || find_password(s, n);
}

void crt_log_redact(const char *s, size_t n, crt_buf *out)
{
    size_t i = 0;
    while (i < n) {
        const char *sep = memmem(s + i, n - i, "://", 3);
        const char *pw = find_password(s + i, n - i);
        if (!sep && !pw) {
            crt_buf_append(out, s + i, n - i);
            return;
        }
        if (pw && (!sep || pw < sep)) {
            /* ?password=... in a query (unix:// Valkey URLs) */
            size_t start = (size_t)(pw - s) + 9, end = start;
            while (end < n && s[end] != '&' && s[end] != '#' && s[end] != '"' && (unsigned char)s[end] > ' ')
                end++;
            crt_buf_append(out, s + i, start - i);
            if (end > start)
                crt_buf_puts(out, "***");
            i = end;
            continue;
        }
        /* scheme://[user[:password]@]host...: the password goes; a user
         * without a password may itself be the credential (token@host). */
        size_t a = (size_t)(sep - s) + 3, end = a, at = (size_t)-1;
        while (end < n && !url_end(s[end])) {
            if (s[end] == '@')
                at = end;
            end++;
        }
        crt_buf_append(out, s + i, a - i);
        if (at != (size_t)-1) {
            const char *colon = memchr(s + a, ':', at - a);
            if (colon)
                crt_buf_append(out, s + a, (size_t)(colon - (s + a)) + 1);
            crt_buf_puts(out, "***");
            i = at;
        } else {
            i = a;
        }
    }
}

/* ---- lines ---------------------------------------------------------------------------------- */

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

/* Appends a string field, credentials in URLs redacted. */
static void put_str(crt_buf *b, const char *s, size_t len, bool json)
{
    if (crt_log_needs_redact(s, len)) {
        crt_buf_reset(&L.scratch);
        crt_log_redact(s, len, &L.scratch);
        s = L.scratch.data ? L.scratch.data : "";
        len = L.scratch.len;
    }
    if (json)
        crt_buf_json_str(b, s, len);
    else
        put_text_value(b, s, len);
}

static void emit(crt_log_level level, const char *msg, const crt_log_field *f, size_t n)
{
    crt_buf *b = &L.pending;
    size_t start = b->len;
    char ts[40];
    size_t tsn = crt_rfc3339(ts, sizeof ts, -1, true);
    bool json = L.format == CRT_LOG_JSON;
    if (json) {
        crt_buf_puts(b, "{\"time\":\"");
        crt_buf_append(b, ts, tsn);
        crt_buf_puts(b, "\",\"level\":\"");
        crt_buf_puts(b, level_names[level]);
        crt_buf_puts(b, "\",\"msg\":");
        put_str(b, msg, strlen(msg), true);
    } else {
        crt_buf_printf(b, "%s %-5s ", ts, level_names[level]);
        crt_log_redact(msg, strlen(msg), b);
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
            put_str(b, s, x->n == (size_t)-1 ? strlen(s) : x->n, json);
            break;
        }
        case CRT_LF_INT: crt_buf_put_i64(b, x->i); break;
        case CRT_LF_DBL: crt_buf_printf(b, "%.6g", x->d); break;
        case CRT_LF_BOOL: crt_buf_puts(b, x->i ? "true" : "false"); break;
        }
    }
    crt_buf_puts(b, json ? "}\n" : "\n");
    if (b->len - L.off > LOG_MAX_PENDING) {
        b->len = start;     /* does not fit while the sink is stuck: drop the whole line */
        L.dropped++;
        L.unreported++;
    }
}

void crt_log_fields(crt_log_level level, const char *msg, const crt_log_field *f, size_t n)
{
    if (!crt_log_enabled(level))
        return;
    emit(level, msg, f, n);
    if (!L.attached)
        drain_and_report(LOG_LINE_WAIT_MS);
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
