/* Loop-driven tests of the audit module (src/audit/): coalescing and the
 * count rule, the queue bound and loss counting, the JSON-lines sink's
 * writes and its reopen on SIGHUP, audit.required refusing when a sink
 * cannot take an event, and the drain at shutdown (the file gets
 * everything, the backend sink's leftovers are counted). Each test ends with
 * every handle closed and uv_loop_close() == 0. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "cronium/audit.h"
#include "cronium/backend.h"
#include "cronium/metrics.h"

typedef struct fixture {
    uv_loop_t loop;
    crt_metrics *m;
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    f->m = crt_metrics_new();
    snprintf(f->dir, sizeof f->dir, "/tmp/crt-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/audit.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    crt_metrics_free(f->m);
    char p[160];
    snprintf(p, sizeof p, "%s/audit.jsonl", f->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/audit.jsonl.1", f->dir);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

static uint64_t counter(fixture *f, const char *sink, const char *result)
{
    char lb[96];
    snprintf(lb, sizeof lb, "sink=\"%s\",result=\"%s\"", sink, result);
    return *crt_metrics_counter(f->m, "cronium_runtime_audit_events_total", "", lb);
}

typedef bool (*pred_fn)(fixture *f, void *arg);

/* Runs the loop (fs requests complete on the threadpool) until pred or ms. */
static bool run_until(fixture *f, pred_fn pred, void *arg, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (pred(f, arg))
            return true;
        usleep(1000);
    }
    return pred(f, arg);
}

static bool written_at_least(fixture *f, void *arg) { return counter(f, "file", "written") >= *(uint64_t *)arg; }

static bool flag_set(fixture *f, void *arg)
{
    (void)f;
    return *(bool *)arg;
}

static void set_flag(void *ctx) { *(bool *)ctx = true; }

typedef struct lines {
    int n;
    uint64_t count_sum;
    uint64_t max_count;
    char text[65536];
} lines;

static void read_lines(const char *path, lines *l)
{
    memset(l, 0, sizeof *l);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    size_t n = fread(l->text, 1, sizeof l->text - 1, fp);
    fclose(fp);
    l->text[n] = '\0';
    for (char *p = l->text; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);            /* every event ends its line */
        *nl = '\0';
        assert_true(p[0] == '{' && nl[-1] == '}');
        char *c = strstr(p, "\"count\":");
        uint64_t k = c ? strtoull(c + 8, NULL, 10) : 1;
        l->count_sum += k;
        if (k > l->max_count)
            l->max_count = k;
        l->n++;
        *nl = '\n';
        p = nl + 1;
    }
}

static crt_audit_event ev_of(const char *action, const char *key, bool read, const char *rid)
{
    return (crt_audit_event){.execution_id = "exec-1", .user_id = "user-1", .action = action, .key = key,
                             .key_len = key ? strlen(key) : 0, .outcome = "ok", .status = 200,
                             .request_id = rid, .client_ip = "127.0.0.1", .read = read};
}

static void drain_and_free(fixture *f, crt_audit *a)
{
    bool done = false;
    crt_audit_drain(a, 2000, set_flag, &done);
    assert_true(run_until(f, flag_set, &done, 3000));
    crt_audit_free(a);
}

/* 100 identical reads in one window make one event with count 100; other
 * reads and the writes are events of their own; the counts sum to the
 * number of requests. */
static void test_coalescing_count_rule(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_audit_opts o = {.file = f->path, .coalesce_ms = 50};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    for (int i = 0; i < 100; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        crt_audit_event ev = ev_of("get_variable", "hot", true, rid);
        crt_audit_emit(a, &ev, false);
    }
    crt_audit_event other = ev_of("get_variable", "cold", true, "c1");
    crt_audit_emit(a, &other, false);
    crt_audit_event denied = ev_of("get_variable", "hot", true, "d1");
    denied.status = 403;
    denied.outcome = "denied";
    crt_audit_emit(a, &denied, false);
    for (int i = 0; i < 5; i++) {
        crt_audit_event w = ev_of("set_variable", "hot", false, "w");
        crt_audit_emit(a, &w, false);
    }
    uint64_t want = 107;
    assert_true(run_until(f, written_at_least, &want, 2000));   /* the window passes by itself */
    lines l;
    read_lines(f->path, &l);
    assert_int_equal(l.n, 8);                   /* hot, cold, denied, 5 writes */
    assert_int_equal(l.count_sum, 107);
    assert_int_equal(l.max_count, 100);
    assert_non_null(strstr(l.text, "\"firstTime\":"));
    assert_non_null(strstr(l.text, "\"lastRequestId\":\"r99\""));
    assert_non_null(strstr(l.text, "\"requestId\":\"r0\""));
    assert_int_equal(counter(f, "file", "dropped"), 0);
    assert_false(crt_audit_lossy(a));
    drain_and_free(f, a);
}

/* A queue of 4: the first event is being written, 4 wait, 5 are lost —
 * counted, and the audit is lossy. */
static void test_queue_bound_and_loss(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_audit_opts o = {.file = f->path, .queue_max = 4};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    for (int i = 0; i < 10; i++) {
        crt_audit_event w = ev_of("set_variable", "k", false, "w");
        crt_audit_emit(a, &w, false);
    }
    assert_int_equal(counter(f, "file", "dropped"), 5);
    assert_int_equal(crt_audit_lost(a), 5);
    assert_true(crt_audit_lossy(a));
    uint64_t want = 5;
    assert_true(run_until(f, written_at_least, &want, 2000));
    drain_and_free(f, a);
    lines l;
    read_lines(f->path, &l);
    assert_int_equal(l.n, 5);
    assert_int_equal(counter(f, "file", "written"), 5);
}

/* SIGHUP after the file was moved: later events go to a new file at the path. */
static void test_file_reopen_on_sighup(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_audit_opts o = {.file = f->path};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    crt_audit_event w = ev_of("set_variable", "before", false, "w1");
    crt_audit_emit(a, &w, false);
    uint64_t want = 1;
    assert_true(run_until(f, written_at_least, &want, 2000));
    char moved[160];
    snprintf(moved, sizeof moved, "%s.1", f->path);
    assert_int_equal(rename(f->path, moved), 0);
    assert_int_equal(uv_kill(getpid(), SIGHUP), 0);
    /* The reopen creates the path again. */
    for (int i = 0; i < 2000 && access(f->path, F_OK) != 0; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(access(f->path, F_OK), 0);
    w = ev_of("set_variable", "after", false, "w2");
    crt_audit_emit(a, &w, false);
    drain_and_free(f, a);
    lines l;
    read_lines(moved, &l);
    assert_int_equal(l.n, 1);
    assert_non_null(strstr(l.text, "\"before\""));
    read_lines(f->path, &l);
    assert_int_equal(l.n, 1);
    assert_non_null(strstr(l.text, "\"after\""));
}

/* audit.required: a reservation holds a place; a full queue or a failing
 * sink refuses; others' events never take a held place. */
static void test_required_refusal(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_audit_opts o = {.file = f->path, .queue_max = 2, .required = true};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    assert_true(crt_audit_required(a));
    crt_audit_event w = ev_of("set_variable", "k", false, "w");
    crt_audit_emit(a, &w, false);               /* being written: the queue is free */
    assert_true(crt_audit_reserve(a));
    assert_true(crt_audit_reserve(a));
    assert_false(crt_audit_reserve(a));         /* both places held */
    crt_audit_event r = ev_of("get_variable", "k", true, "r");
    crt_audit_emit(a, &r, false);               /* a read: not refused, but lost (no place) */
    assert_int_equal(counter(f, "file", "dropped"), 1);
    crt_audit_emit(a, &w, true);
    crt_audit_unreserve(a);
    assert_true(crt_audit_reserve(a));          /* the given-back place */
    crt_audit_emit(a, &w, true);
    drain_and_free(f, a);
    lines l;
    read_lines(f->path, &l);
    assert_int_equal(l.n, 3);

    /* A sink whose writes fail (ENOSPC) cannot take events. */
    o = (crt_audit_opts){.file = "/dev/full", .required = true};
    a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    assert_true(crt_audit_reserve(a));
    crt_audit_emit(a, &w, true);
    uint64_t zero = 0;
    (void)zero;
    for (int i = 0; i < 2000 && counter(f, "file", "failed") == 0; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(counter(f, "file", "failed"), 1);
    assert_false(crt_audit_reserve(a));
    assert_true(crt_audit_lossy(a));
    drain_and_free(f, a);

    /* Not required: always true, nothing held. */
    o = (crt_audit_opts){.file = f->path, .queue_max = 1};
    a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    for (int i = 0; i < 5; i++)
        assert_true(crt_audit_reserve(a));
    drain_and_free(f, a);
}

/* The drain: coalesced reads still in their window go out at once; the
 * backend sink (a backend that refuses connections, retried slowly) keeps
 * one event in flight, the rest is dropped at the deadline and counted; the
 * file has every request. */
static void test_shutdown_flush(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_backend_opts bo = {.base_url = "http://127.0.0.1:1", .attempt_timeout_ms = 500, .max_retries = 5,
                           .retry_delay_ms = 5000, .deadline_ms = 30000, .max_connections = 4};
    crt_backend *b = crt_backend_new(&f->loop, &bo, f->m);
    assert_non_null(b);
    crt_audit_opts o = {.backend = b, .file = f->path, .coalesce_ms = 60000, .in_flight = 1};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    for (int i = 0; i < 30; i++) {
        crt_audit_event r = ev_of("get_variable", "hot", true, "r");
        crt_audit_emit(a, &r, false);
    }
    for (int i = 0; i < 4; i++) {
        crt_audit_event w = ev_of("set_variable", "k", false, "w");
        crt_audit_emit(a, &w, false);
    }
    bool done = false;
    crt_audit_drain(a, 200, set_flag, &done);
    assert_true(run_until(f, flag_set, &done, 3000));
    lines l;
    read_lines(f->path, &l);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.count_sum, 34);
    assert_int_equal(counter(f, "file", "written"), 34);
    /* One write in flight (retrying); 3 writes and the 30 reads dropped. */
    assert_int_equal(counter(f, "backend", "dropped"), 33);
    crt_audit_detach_backend(a);
    crt_backend_free(b);                        /* the POST in flight fails now */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(counter(f, "backend", "failed"), 1);
    assert_int_equal(counter(f, "backend", "sent"), 0);
    crt_audit_free(a);
}

/* Freed without a drain (a start that failed): everything closes. */
static void test_free_without_drain(void **state)
{
    fixture *f = *state;
    char err[256];
    crt_audit_opts o = {.file = f->path, .coalesce_ms = 1000, .log = true};
    crt_audit *a = crt_audit_new(&f->loop, &o, f->m, err, sizeof err);
    assert_non_null(a);
    crt_audit_event r = ev_of("get_variable", "hot", true, "r");
    crt_audit_emit(a, &r, false);
    crt_audit_free(a);
    o = (crt_audit_opts){.file = "/nonexistent-dir/audit.jsonl"};
    assert_null(crt_audit_new(&f->loop, &o, f->m, err, sizeof err));
    assert_non_null(strstr(err, "audit.file"));
    o = (crt_audit_opts){.required = true};     /* required, and nothing could take an event */
    assert_null(crt_audit_new(&f->loop, &o, f->m, err, sizeof err));
    assert_non_null(strstr(err, "audit.required"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coalescing_count_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound_and_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_reopen_on_sighup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_without_drain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
