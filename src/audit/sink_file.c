/* The JSON-lines sink (audit.file): one object per line per event, written
 * with libuv's fs requests, which run on the loop's threadpool, so the loop
 * never waits on the disk (or on a full stdout pipe). Lines collect in
 * `pending` while one batch is being written; a batch is whatever collected
 * meanwhile, so a busy service writes few, large batches. At most queue_max
 * events wait; more are dropped and counted. SIGHUP reopens the path (log
 * rotation: mv the file, send SIGHUP, the next batch goes to a new file).
 * A failed write loses its batch (counted "failed"); the sink is then
 * broken until a write succeeds: it keeps queueing (bounded), tries again
 * at the first event after FAIL_BACKOFF_MS, and meanwhile audit.required
 * refuses writes (a refusal is itself an event, so it drives the retry). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "audit_int.h"
#include "cronium/log.h"

#define FAIL_BACKOFF_MS 1000
#define OPEN_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC)
#define OPEN_MODE 0640

typedef enum { OP_NONE, OP_WRITE, OP_CLOSE_FOR_REOPEN, OP_OPEN, OP_CLOSE_FINAL } file_op;

typedef struct file_sink {
    audit_sink base;
    uv_loop_t *loop;
    char *path;
    bool is_stdout;
    uv_file fd;                     /* -1: not open */
    crt_buf pending, writing;
    size_t pending_n;               /* events in pending */
    uint64_t pending_count, writing_count;  /* requests they stand for */
    size_t written;                 /* bytes of `writing` already written */
    size_t cap;
    uv_fs_t req;
    file_op op;
    uv_signal_t hup;
    bool hup_open;
    bool reopen_wanted, draining, closing;
    uint64_t failed_at;             /* crt_now_ms() of the last failure */
    bool broken;                    /* the last write or open failed */
} file_sink;

static void kick(file_sink *s);

static void maybe_free(file_sink *s)
{
    if (!s->closing || s->op != OP_NONE || s->hup_open)
        return;
    if (s->fd >= 0 && !s->is_stdout) {
        uv_fs_t r;
        uv_fs_close(NULL, &r, s->fd, NULL);     /* at exit, nothing waits on this */
        uv_fs_req_cleanup(&r);
    }
    crt_audit *owner = s->base.owner;
    crt_buf_fini(&s->pending);
    crt_buf_fini(&s->writing);
    free(s->path);
    free(s);
    audit_sink_closed(owner);
}

/* Backing off after a failure: nothing is tried. */
static bool failing(const file_sink *s)
{
    return s->broken && crt_now_ms() - s->failed_at < FAIL_BACKOFF_MS;
}

static void fail(file_sink *s, const char *what, int err)
{
    s->failed_at = crt_now_ms();
    s->broken = true;
    CRT_LOGF(CRT_LOG_ERROR, "audit file", CRT_LS("op", what), CRT_LS("path", s->path), CRT_LS("error", uv_strerror(err)));
}

static void on_fs(uv_fs_t *r);

static void start_write(file_sink *s)
{
    uv_buf_t b = uv_buf_init(s->writing.data + s->written, (unsigned)(s->writing.len - s->written));
    s->op = OP_WRITE;
    int rc = uv_fs_write(s->loop, &s->req, s->fd, &b, 1, -1, on_fs);
    if (rc < 0) {
        s->op = OP_NONE;
        uv_fs_req_cleanup(&s->req);
        fail(s, "write", rc);
        audit_sink_count(&s->base, AR_FAILED, s->writing_count);
        crt_buf_reset(&s->writing);
        s->writing_count = 0;
    }
}

static void start_open(file_sink *s)
{
    s->op = OP_OPEN;
    int rc = uv_fs_open(s->loop, &s->req, s->path, OPEN_FLAGS, OPEN_MODE, on_fs);
    if (rc < 0) {
        s->op = OP_NONE;
        uv_fs_req_cleanup(&s->req);
        fail(s, "reopen", rc);
    }
}

static void finish_drain(file_sink *s)
{
    if (s->fd >= 0 && !s->is_stdout) {
        s->op = OP_CLOSE_FINAL;
        if (uv_fs_close(s->loop, &s->req, s->fd, on_fs) == 0)
            return;
        s->op = OP_NONE;
        uv_fs_req_cleanup(&s->req);
    }
    s->fd = s->is_stdout ? s->fd : -1;
    audit_sink_drained(&s->base);
}

static void on_fs(uv_fs_t *r)
{
    file_sink *s = crt_container_of(r, file_sink, req);
    file_op op = s->op;
    ssize_t res = r->result;
    uv_fs_req_cleanup(r);
    s->op = OP_NONE;
    switch (op) {
    case OP_WRITE:
        if (res < 0) {
            fail(s, "write", (int)res);
            audit_sink_count(&s->base, AR_FAILED, s->writing_count);
        } else if (s->written + (size_t)res < s->writing.len) {
            s->written += (size_t)res;      /* a short write: the rest of the batch */
            if (!s->closing) {
                start_write(s);
                return;
            }
            audit_sink_count(&s->base, AR_FAILED, s->writing_count);
        } else {
            s->broken = false;
            audit_sink_count(&s->base, AR_DONE, s->writing_count);
        }
        crt_buf_reset(&s->writing);
        s->writing_count = 0;
        s->written = 0;
        break;
    case OP_CLOSE_FOR_REOPEN:
        s->fd = -1;
        if (!s->closing) {
            start_open(s);
            if (s->op == OP_OPEN)
                return;
        }
        break;
    case OP_OPEN:
        if (res < 0)
            fail(s, "reopen", (int)res);
        else {
            s->fd = (uv_file)res;
            CRT_LOGF(CRT_LOG_INFO, "audit file reopened", CRT_LS("path", s->path));
        }
        break;
    case OP_CLOSE_FINAL:
        s->fd = -1;
        if (!s->closing)
            audit_sink_drained(&s->base);
        break;
    case OP_NONE:
        break;
    }
    if (s->closing) {
        maybe_free(s);
        return;
    }
    kick(s);
}

/* Starts the next operation if none is running: a reopen asked for by
 * SIGHUP, an open after a failed one, or the next batch. */
static void kick(file_sink *s)
{
    if (s->op != OP_NONE || s->closing)
        return;
    if (s->reopen_wanted && !s->is_stdout) {
        s->reopen_wanted = false;
        if (s->fd >= 0) {
            s->op = OP_CLOSE_FOR_REOPEN;
            if (uv_fs_close(s->loop, &s->req, s->fd, on_fs) == 0)
                return;
            s->op = OP_NONE;
            uv_fs_req_cleanup(&s->req);
            s->fd = -1;
        }
    }
    if (s->fd < 0 && !s->is_stdout && (s->pending.len || s->reopen_wanted) && !failing(s)) {
        start_open(s);
        if (s->op != OP_NONE)
            return;
    }
    if (s->fd >= 0 && s->pending.len && !failing(s)) {
        crt_buf t = s->writing;         /* swap: pending becomes the batch */
        s->writing = s->pending;
        s->pending = t;
        crt_buf_reset(&s->pending);
        s->writing_count = s->pending_count;
        s->pending_count = 0;
        s->pending_n = 0;
        s->written = 0;
        start_write(s);
        if (s->op != OP_NONE)
            return;
    }
    if (s->draining && !s->pending.len && s->op == OP_NONE && !s->base.drained && s->op != OP_CLOSE_FINAL)
        finish_drain(s);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    file_sink *s = h->data;
    s->reopen_wanted = true;
    kick(s);
}

static void on_hup_closed(uv_handle_t *h)
{
    file_sink *s = h->data;
    s->hup_open = false;
    maybe_free(s);
}

static bool f_put(audit_sink *base, const audit_rec *r)
{
    file_sink *s = crt_container_of(base, file_sink, base);
    if (s->closing || s->base.drained || s->pending_n >= s->cap)
        return false;
    audit_render(&s->pending, r, AUDIT_FMT_LINE);
    s->pending_n++;
    s->pending_count += r->count;
    kick(s);
    return true;
}

static size_t f_room(const audit_sink *base)
{
    const file_sink *s = crt_container_of(base, file_sink, base);
    if (s->closing || s->base.drained)
        return 0;
    return s->cap - s->pending_n;
}

static bool f_ok(const audit_sink *base) { return !crt_container_of(base, file_sink, base)->broken; }

static void stop_hup(file_sink *s)
{
    if (s->hup_open && !uv_is_closing((uv_handle_t *)&s->hup)) {
        uv_signal_stop(&s->hup);
        uv_close((uv_handle_t *)&s->hup, on_hup_closed);
    }
}

static void f_drain(audit_sink *base)
{
    file_sink *s = crt_container_of(base, file_sink, base);
    s->draining = true;
    s->failed_at = 0;                   /* one more try with what is left, at once */
    stop_hup(s);
    kick(s);
}

static void f_abandon(audit_sink *base)
{
    file_sink *s = crt_container_of(base, file_sink, base);
    if (s->pending_count) {
        CRT_LOGF(CRT_LOG_WARN, "audit events not written at shutdown", CRT_LS("path", s->path),
                 CRT_LI("requests", s->pending_count));
        audit_sink_count(&s->base, AR_DROPPED, s->pending_count);
    }
    crt_buf_reset(&s->pending);
    s->pending_n = 0;
    s->pending_count = 0;
    audit_sink_drained(&s->base);
}

static void f_close(audit_sink *base)
{
    file_sink *s = crt_container_of(base, file_sink, base);
    if (s->pending_count)
        audit_sink_count(&s->base, AR_DROPPED, s->pending_count);
    s->pending_count = 0;
    s->closing = true;
    stop_hup(s);
    maybe_free(s);
}

static const audit_sink_vt file_vt = {f_put, f_room, f_ok, f_drain, f_abandon, f_close};

audit_sink *audit_file_sink_new(crt_audit *owner, uv_loop_t *loop, const char *path, size_t queue_max,
                                crt_metrics *m, char *err, size_t errcap)
{
    file_sink *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cap = queue_max;
    s->is_stdout = strcmp(path, "-") == 0;
    crt_buf_init(&s->pending);
    crt_buf_init(&s->writing);
    if (s->is_stdout) {
        s->fd = STDOUT_FILENO;
    } else {
        /* At start-up, so a path that cannot be opened is a configuration error. */
        uv_fs_t r;
        int fd = uv_fs_open(NULL, &r, path, OPEN_FLAGS, OPEN_MODE, NULL);
        uv_fs_req_cleanup(&r);
        if (fd < 0) {
            snprintf(err, errcap, "audit.file: cannot open %s: %s", path, uv_strerror(fd));
            free(s->path);
            free(s);
            return NULL;
        }
        s->fd = fd;
        uv_signal_init(loop, &s->hup);
        s->hup.data = s;
        s->hup_open = true;
        uv_signal_start(&s->hup, on_hup, SIGHUP);
    }
    audit_sink_init(&s->base, &file_vt, owner, "file", "written", m);
    s->base.failures_lossy = true;
    return &s->base;
}
