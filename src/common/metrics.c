/* Metrics registry and Prometheus text rendering. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "cronium/metrics.h"
#include "cronium/metrics_shared.h"

#define MAX_SERIES 256
#define MAX_REQ_SERIES 512

static const double bucket_le[CRT_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
};

typedef enum { S_COUNTER, S_GAUGE, S_HIST, S_COUNTER_FN } series_kind;

typedef struct series {
    series_kind kind;
    const char *name;           /* static strings, owned by the caller */
    const char *help;
    char *labels;
    uint64_t value;
    crt_histogram hist;
    crt_gauge_fn fn;
    void *ctx;
} series;

typedef struct req_series {
    const char *route;          /* router-owned pattern */
    const char *method;         /* llhttp's static method name */
    int status;
    uint64_t count;
} req_series;

struct crt_metrics {
    series s[MAX_SERIES];
    size_t n;
    req_series req[MAX_REQ_SERIES];
    size_t nreq;
    uint64_t req_overflow;
    crt_histogram latency;
    double start_time;
    crt_mshared *shared;        /* workers > 1 only */
};

crt_metrics *crt_metrics_new(void)
{
    crt_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    m->start_time = (double)tv.tv_sec + tv.tv_usec / 1e6;
    return m;
}

void crt_metrics_free(crt_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->s[i].labels);
    free(m);
}

static series *find_or_add(crt_metrics *m, series_kind k, const char *name, const char *help, const char *labels)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->s[i].kind == k && strcmp(m->s[i].name, name) == 0 && strcmp(m->s[i].labels, labels) == 0)
            return &m->s[i];
    if (m->n == MAX_SERIES)
        return NULL;
    series *s = &m->s[m->n];
    memset(s, 0, sizeof *s);
    s->labels = strdup(labels);
    if (!s->labels)
        return NULL;
    s->kind = k;
    s->name = name;
    s->help = help;
    m->n++;
    return s;
}

uint64_t *crt_metrics_counter(crt_metrics *m, const char *name, const char *help, const char *labels)
{
    static uint64_t sink; /* registry full: counts go nowhere rather than crash */
    series *s = find_or_add(m, S_COUNTER, name, help, labels);
    return s ? &s->value : &sink;
}

int crt_metrics_gauge(crt_metrics *m, const char *name, const char *help, const char *labels, crt_gauge_fn fn,
                      void *ctx)
{
    series *s = find_or_add(m, S_GAUGE, name, help, labels);
    if (!s)
        return CRT_ELIMIT;
    s->fn = fn;
    s->ctx = ctx;
    return 0;
}

int crt_metrics_counter_fn(crt_metrics *m, const char *name, const char *help, const char *labels, crt_gauge_fn fn,
                           void *ctx)
{
    series *s = find_or_add(m, S_COUNTER_FN, name, help, labels);
    if (!s)
        return CRT_ELIMIT;
    s->fn = fn;
    s->ctx = ctx;
    return 0;
}

crt_histogram *crt_metrics_histogram(crt_metrics *m, const char *name, const char *help, const char *labels)
{
    static crt_histogram sink;
    series *s = find_or_add(m, S_HIST, name, help, labels);
    return s ? &s->hist : &sink;
}

void crt_histogram_observe(crt_histogram *h, double seconds)
{
    for (int i = 0; i < CRT_HIST_BUCKETS; i++) {
        if (seconds <= bucket_le[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
}

void crt_metrics_request(crt_metrics *m, const char *route, const char *method, int status, uint64_t dur_ns)
{
    crt_histogram_observe(&m->latency, (double)dur_ns / 1e9);
    /* Route and method strings are static, so pointer equality identifies them. */
    for (size_t i = 0; i < m->nreq; i++) {
        req_series *r = &m->req[i];
        if (r->route == route && r->method == method && r->status == status) {
            r->count++;
            return;
        }
    }
    if (m->nreq == MAX_REQ_SERIES) {
        m->req_overflow++;
        return;
    }
    m->req[m->nreq++] = (req_series){route, method, status, 1};
}

static void render_hist(crt_buf *out, const char *name, const char *labels, const crt_histogram *h)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";
    for (int i = 0; i < CRT_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        crt_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bucket_le[i],
                       (unsigned long long)cum);
    }
    crt_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)h->count);
    if (*labels) {
        crt_buf_printf(out, "%s_sum{%s} %.9f\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
                       (unsigned long long)h->count);
    } else {
        crt_buf_printf(out, "%s_sum %.9f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
    }
}

static void put_sample(crt_buf *out, const char *name, const char *labels, double v)
{
    if (*labels)
        crt_buf_printf(out, "%s{%s} %.17g\n", name, labels, v);
    else
        crt_buf_printf(out, "%s %.17g\n", name, v);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

void crt_metrics_set_shared(crt_metrics *m, crt_mshared *sh) { m->shared = sh; }

bool crt_metrics_workers_ready(const crt_metrics *m, unsigned *ready, unsigned *total)
{
    if (!m->shared)
        return false;
    *ready = crt_mshared_ready(m->shared, total);
    return true;
}

void crt_metrics_render(crt_metrics *m, crt_buf *out)
{
    if (m->shared)
        crt_mshared_render(m->shared, out);
    else
        crt_metrics_render_local(m, out);
}

void crt_metrics_render_local(crt_metrics *m, crt_buf *out)
{
    crt_buf_puts(out, "# HELP cronium_runtime_http_requests_total HTTP requests by route, method and status.\n"
                      "# TYPE cronium_runtime_http_requests_total counter\n");
    for (size_t i = 0; i < m->nreq; i++) {
        const req_series *r = &m->req[i];
        crt_buf_printf(out, "cronium_runtime_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n",
                       r->route, r->method, r->status, (unsigned long long)r->count);
    }
    crt_buf_puts(out, "# HELP cronium_runtime_http_request_duration_seconds Time from first byte to answer written.\n"
                      "# TYPE cronium_runtime_http_request_duration_seconds histogram\n");
    render_hist(out, "cronium_runtime_http_request_duration_seconds", "", &m->latency);

    /* Registered series, grouped by name (HELP/TYPE once per name). */
    for (size_t i = 0; i < m->n; i++) {
        const series *s = &m->s[i];
        bool first = true;
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->s[j].name, s->name) == 0)
                first = false;
        if (!first)
            continue;
        static const char *const type[] = {"counter", "gauge", "histogram", "counter"};
        crt_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help, s->name, type[s->kind]);
        for (size_t j = i; j < m->n; j++) {
            const series *t = &m->s[j];
            if (strcmp(t->name, s->name) != 0)
                continue;
            if (t->kind == S_COUNTER)
                put_sample(out, t->name, t->labels, (double)t->value);
            else if (t->kind == S_GAUGE || t->kind == S_COUNTER_FN)
                put_sample(out, t->name, t->labels, t->fn(t->ctx));
            else
                render_hist(out, t->name, t->labels, &t->hist);
        }
    }

    size_t rss = 0;
    uv_resident_set_memory(&rss);
    uv_rusage_t ru;
    double cpu = 0;
    if (uv_getrusage(&ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    crt_buf_printf(out,
                   "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                   "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %zu\n"
                   "# HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n"
                   "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n"
                   "# HELP process_open_fds Number of open file descriptors.\n"
                   "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
                   "# HELP process_start_time_seconds Start time of the process since the epoch in seconds.\n"
                   "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n"
                   "# HELP cronium_runtime_build_info Build information.\n"
                   "# TYPE cronium_runtime_build_info gauge\n"
                   "cronium_runtime_build_info{version=\"%s\",libuv=\"%s\"} 1\n",
                   rss, cpu, count_fds(), m->start_time, CRT_VERSION, uv_version_string());
}
