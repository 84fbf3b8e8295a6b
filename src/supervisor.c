/* The supervisor of server.workers > 1 (include/cronium/supervisor.h).
 *
 * Why this shape:
 * - Workers are this binary again (uv_spawn of /proc/self/exe, same argv,
 *   CRT_WORKER_ENV set), not fork()ed copies: forking a process that owns a
 *   loop duplicates its epoll and signal state; exec starts each worker clean,
 *   and it re-reads the same configuration.
 * - Each worker keeps one loop and binds the port itself (SO_REUSEPORT), so the
 *   kernel spreads connections; the supervisor holds no listening socket and
 *   is never in the request path.
 * - Workers run in their own session (UV_PROCESS_DETACHED): a terminal's
 *   Ctrl-C reaches only the supervisor, which forwards it once. A second
 *   signal to a stopping worker would otherwise kill it hard. Should the
 *   supervisor itself die (SIGKILL), the workers get SIGTERM
 *   (PR_SET_PDEATHSIG, set by each worker) and stop gracefully.
 * - Restart policy: a worker that dies after it was ready (listening) is
 *   restarted after a backoff (100 ms doubling to 10 s, back to 100 ms once it
 *   stayed up 30 s). No restart storms: a worker exiting with 2 (configuration
 *   or usage error: the next one would fail alike) stops everything with 2; a
 *   worker that dies before it became ready at the first start (port taken,
 *   set-up failed) stops everything with 1, and later on after 5 such
 *   failures in a row of the same slot. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <uv.h>
#include "cronium/log.h"
#include "cronium/metrics_shared.h"
#include "cronium/supervisor.h"

extern char **environ;

#define BACKOFF_FIRST_MS 100
#define BACKOFF_CAP_MS 10000
#define STABLE_MS 30000             /* up this long: the next crash starts the backoff over */
#define START_FAILURES_MAX 5
#define KILL_GRACE_MS 5000          /* past shutdownTimeout, before SIGKILL */

typedef enum { W_IDLE, W_RUNNING, W_BACKOFF } worker_state;

typedef struct sup sup;

typedef struct worker {
    sup *s;
    unsigned idx;
    worker_state state;
    uv_process_t proc;
    uv_timer_t restart;
    uint64_t started_ms;
    uint64_t backoff_ms;
    unsigned start_failures;        /* in a row, before becoming ready */
} worker;

struct sup {
    uv_loop_t *loop;
    const crt_config *cfg;
    char **argv;
    char **env;                     /* environ + CRT_WORKER_ENV, rebuilt per spawn */
    size_t nenv;
    char envbuf[64];
    worker *w;
    unsigned n;
    unsigned running;
    int shm_fd;
    crt_mshared *sh;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t kill_timer;
    bool stopping;
    bool any_ready;                 /* some worker reached ready since start */
    int exit_code;                  /* -1: none decided yet */
    int stop_status;                /* first non-zero status of a worker at the stop */
};

static void sup_stop(sup *s, int code);

static void worker_on_exit(uv_process_t *p, int64_t status, int sig);

static int worker_spawn(worker *w)
{
    sup *s = w->s;
    snprintf(s->envbuf, sizeof s->envbuf, "%s=%u/%u/%ld", CRT_WORKER_ENV, w->idx, s->n, (long)getpid());
    s->env[s->nenv] = s->envbuf;
    s->env[s->nenv + 1] = NULL;
    uv_stdio_container_t stdio[CRT_WORKER_FD + 1] = {
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
        {.flags = UV_INHERIT_FD, .data.fd = s->shm_fd},
    };
    uv_process_options_t o = {
        .exit_cb = worker_on_exit,
        .file = "/proc/self/exe",
        .args = s->argv,
        .env = s->env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = CRT_WORKER_FD + 1,
        .stdio = stdio,
    };
    w->proc.data = w;
    int rc = uv_spawn(s->loop, &w->proc, &o);
    if (rc != 0) {
        /* uv_spawn leaves a handle to close even when it fails. */
        uv_close((uv_handle_t *)&w->proc, NULL);
        CRT_LOGF(CRT_LOG_ERROR, "cannot start worker", CRT_LI("worker", w->idx), CRT_LS("error", uv_strerror(rc)));
        return rc;
    }
    w->state = W_RUNNING;
    w->started_ms = uv_now(s->loop);
    s->running++;
    crt_mshared_slot_spawned(s->sh, w->idx, w->proc.pid);
    CRT_LOGF(CRT_LOG_INFO, "worker started", CRT_LI("worker", w->idx), CRT_LI("pid", w->proc.pid));
    return 0;
}

static void worker_on_restart(uv_timer_t *t)
{
    worker *w = t->data;
    w->state = W_IDLE;
    if (w->s->stopping)
        return;
    if (worker_spawn(w) != 0)
        sup_stop(w->s, 1);
}

static void sup_maybe_done(sup *s)
{
    if (!s->stopping || s->running)
        return;
    for (unsigned i = 0; i < s->n; i++)
        uv_close((uv_handle_t *)&s->w[i].restart, NULL);
    uv_close((uv_handle_t *)&s->kill_timer, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
}

static void worker_on_exit(uv_process_t *p, int64_t status, int sig)
{
    worker *w = p->data;
    sup *s = w->s;
    uv_close((uv_handle_t *)p, NULL);
    w->state = W_IDLE;
    s->running--;
    bool was_ready = crt_mshared_slot_exited(s->sh, w->idx);
    uint64_t up_ms = uv_now(s->loop) - w->started_ms;
    if (s->stopping) {
        /* Killed by our own SIGTERM: it was still starting (no handler yet,
         * so no request either); that is a clean stop too. */
        bool clean = (status == 0 && sig == 0) || (sig == SIGTERM && !was_ready);
        if (!clean && s->stop_status == 0)
            s->stop_status = sig ? 1 : (int)status;
        CRT_LOGF(clean ? CRT_LOG_INFO : CRT_LOG_WARN, "worker stopped", CRT_LI("worker", w->idx),
                 CRT_LI("status", status), CRT_LI("signal", sig));
        sup_maybe_done(s);
        return;
    }
    CRT_LOGF(CRT_LOG_WARN, "worker exited", CRT_LI("worker", w->idx), CRT_LI("pid", p->pid),
             CRT_LI("status", status), CRT_LI("signal", sig), CRT_LI("uptime_ms", up_ms),
             CRT_LB("was_ready", was_ready));
    if (sig == 0 && status == 2) {
        CRT_LOGF(CRT_LOG_ERROR, "worker reported a configuration or usage error: stopping, no restart",
                 CRT_LI("worker", w->idx));
        sup_stop(s, 2);
        return;
    }
    if (!was_ready) {
        w->start_failures++;
        if (!s->any_ready || w->start_failures >= START_FAILURES_MAX) {
            CRT_LOGF(CRT_LOG_ERROR, "worker failed to start: stopping, no restart", CRT_LI("worker", w->idx),
                     CRT_LI("failures", w->start_failures));
            sup_stop(s, 1);
            return;
        }
    } else {
        w->start_failures = 0;
        s->any_ready = true;
    }
    if (up_ms >= STABLE_MS || !w->backoff_ms)
        w->backoff_ms = BACKOFF_FIRST_MS;
    uint64_t delay = w->backoff_ms;
    w->backoff_ms = w->backoff_ms * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : w->backoff_ms * 2;
    CRT_LOGF(CRT_LOG_INFO, "restarting worker", CRT_LI("worker", w->idx), CRT_LI("delay_ms", delay));
    w->state = W_BACKOFF;
    uv_timer_start(&w->restart, worker_on_restart, delay, 0);
}

static void on_kill_timer(uv_timer_t *t)
{
    sup *s = t->data;
    for (unsigned i = 0; i < s->n; i++) {
        if (s->w[i].state == W_RUNNING) {
            CRT_LOGF(CRT_LOG_ERROR, "worker did not stop in time: killing it", CRT_LI("worker", i));
            uv_process_kill(&s->w[i].proc, SIGKILL);
        }
    }
    if (s->exit_code < 0)
        s->exit_code = 1;
}

/* Stops every worker gracefully (SIGTERM). code: the exit status decided
 * here (-1: a requested stop; the workers' own statuses decide). */
static void sup_stop(sup *s, int code)
{
    if (code >= 0 && s->exit_code < 0)
        s->exit_code = code;
    if (s->stopping)
        return;
    s->stopping = true;
    for (unsigned i = 0; i < s->n; i++) {
        worker *w = &s->w[i];
        if (w->state == W_BACKOFF) {
            uv_timer_stop(&w->restart);
            w->state = W_IDLE;
        } else if (w->state == W_RUNNING) {
            uv_process_kill(&w->proc, SIGTERM);
        }
    }
    uv_timer_start(&s->kill_timer, on_kill_timer, s->cfg->shutdown_timeout_ms + KILL_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&s->kill_timer);
    sup_maybe_done(s);
}

static void sup_on_signal(uv_signal_t *h, int signum)
{
    sup *s = h->data;
    CRT_LOGF(CRT_LOG_INFO, "signal received: stopping every worker",
             CRT_LS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"), CRT_LI("running", s->running));
    sup_stop(s, -1);
}

/* SIGHUP (log rotation: the audit file is reopened) goes to every running
 * worker; the supervisor itself has nothing to reopen. Without a handler the
 * default action would end the supervisor and, with it, every worker. */
static void sup_on_sighup(uv_signal_t *h, int signum)
{
    sup *s = h->data;
    (void)signum;
    for (unsigned i = 0; i < s->n; i++)
        if (s->w[i].state == W_RUNNING)
            uv_process_kill(&s->w[i].proc, SIGHUP);
}

/* A worker that answers the first time marks the start as good: from then
 * on, a worker failing before ready is retried (with backoff). */
static uv_timer_t ready_poll;
static void on_ready_poll(uv_timer_t *t)
{
    sup *s = t->data;
    unsigned total;
    if (s->stopping || crt_mshared_ready(s->sh, &total) == total) {
        if (!s->stopping) {
            s->any_ready = true;
            CRT_LOGF(CRT_LOG_INFO, "every worker is ready", CRT_LI("workers", total));
        }
        uv_close((uv_handle_t *)t, NULL);
    }
}

int crt_supervisor_run(const crt_config *cfg, char **argv)
{
    sup s = {0};
    s.cfg = cfg;
    s.argv = argv;
    s.n = (unsigned)cfg->nworkers;
    s.exit_code = -1;
    s.shm_fd = crt_mshared_create(s.n);
    if (s.shm_fd < 0) {
        fprintf(stderr, "cronium-runtime: cannot create the workers' shared metrics segment: %s\n",
                strerror(-s.shm_fd));
        return 1;
    }
    s.sh = crt_mshared_map(s.shm_fd, s.n, -1);
    size_t ne = 0;
    while (environ[ne])
        ne++;
    s.env = calloc(ne + 2, sizeof *s.env);
    s.w = calloc(s.n, sizeof *s.w);
    if (!s.sh || !s.env || !s.w) {
        fprintf(stderr, "cronium-runtime: cannot set up the supervisor: out of memory\n");
        crt_mshared_free(s.sh);
        free(s.env);
        free(s.w);
        close(s.shm_fd);
        return 1;
    }
    size_t plen = strlen(CRT_WORKER_ENV);
    for (size_t i = 0; i < ne; i++)     /* an inherited marker would be stale */
        if (!(strncmp(environ[i], CRT_WORKER_ENV, plen) == 0 && environ[i][plen] == '='))
            s.env[s.nenv++] = environ[i];

    uv_loop_t loop;
    uv_loop_init(&loop);
    s.loop = &loop;
    /* The log is not batched on this loop (crt_log_attach): its flush runs
     * after the poll phase, and this loop sleeps in poll until the next
     * child or signal, which would hold a line back. Direct writes are fine
     * here: a handful of lines, no request waits on this process. */
    uv_signal_init(&loop, &s.sigterm);
    uv_signal_init(&loop, &s.sigint);
    uv_signal_init(&loop, &s.sighup);
    s.sigterm.data = s.sigint.data = s.sighup.data = &s;
    uv_signal_start(&s.sigterm, sup_on_signal, SIGTERM);
    uv_signal_start(&s.sigint, sup_on_signal, SIGINT);
    uv_signal_start(&s.sighup, sup_on_sighup, SIGHUP);
    uv_timer_init(&loop, &s.kill_timer);
    s.kill_timer.data = &s;
    CRT_LOGF(CRT_LOG_INFO, "supervisor starting workers", CRT_LI("workers", s.n), CRT_LS("setting", cfg->workers),
             CRT_LS("host", cfg->host), CRT_LI("port", cfg->port), CRT_LI("pid", getpid()));
    for (unsigned i = 0; i < s.n; i++) {
        worker *w = &s.w[i];
        w->s = &s;
        w->idx = i;
        uv_timer_init(&loop, &w->restart);
        w->restart.data = w;
    }
    for (unsigned i = 0; i < s.n && !s.stopping; i++)
        if (worker_spawn(&s.w[i]) != 0)
            sup_stop(&s, 1);
    uv_timer_init(&loop, &ready_poll);
    ready_poll.data = &s;
    uv_timer_start(&ready_poll, on_ready_poll, 50, 50);
    uv_unref((uv_handle_t *)&ready_poll);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!uv_is_closing((uv_handle_t *)&ready_poll))
        uv_close((uv_handle_t *)&ready_poll, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "cronium-runtime: supervisor loop closed with handles still open\n");
    int code = s.exit_code >= 0 ? s.exit_code : s.stop_status;
    CRT_LOGF(code ? CRT_LOG_WARN : CRT_LOG_INFO, "supervisor stopped", CRT_LI("status", code));
    crt_mshared_free(s.sh);
    close(s.shm_fd);
    free(s.env);
    free(s.w);
    return code;
}

int crt_worker_identity(unsigned *index, unsigned *total)
{
    const char *v = getenv(CRT_WORKER_ENV);
    if (!v)
        return 0;
    unsigned i, n;
    long ppid;
    char tail;
    if (sscanf(v, "%u/%u/%ld%c", &i, &n, &ppid, &tail) != 3 || n < 1 || n > CRT_WORKERS_MAX || i >= n)
        return -1;
    /* The supervisor gone (SIGKILL): stop gracefully rather than linger. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)ppid)
        return -1;      /* it died before the line above */
    *index = i;
    *total = n;
    return 1;
}
