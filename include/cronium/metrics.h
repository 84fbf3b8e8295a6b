/* Prometheus metrics (text format 0.0.4). Modules register counters, gauges
 * and histograms once at start-up and then bump plain integers on the hot
 * path; /metrics renders the registry. Names and label sets are fixed at
 * registration, so nothing grows at run time except the request counters,
 * whose (route, method, status) space is small and bounded. */
#ifndef CRONIUM_METRICS_H
#define CRONIUM_METRICS_H

#include "cronium/buf.h"
#include "cronium/common.h"

typedef struct crt_metrics crt_metrics;

#define CRT_HIST_BUCKETS 12

typedef struct crt_histogram {
    uint64_t buckets[CRT_HIST_BUCKETS];     /* cumulative at render time */
    uint64_t count;
    double sum;                             /* seconds */
} crt_histogram;

typedef double (*crt_gauge_fn)(void *ctx);

crt_metrics *crt_metrics_new(void);
void crt_metrics_free(crt_metrics *m);

/* A counter with fixed labels ("op=\"get\"" or "" for none). The pointer
 * stays valid for the registry's life. Registering the same name and labels
 * twice returns the same counter. */
uint64_t *crt_metrics_counter(crt_metrics *m, const char *name, const char *help, const char *labels);
/* A gauge read when rendering. */
int crt_metrics_gauge(crt_metrics *m, const char *name, const char *help, const char *labels, crt_gauge_fn fn,
                      void *ctx);
/* A counter whose value is read when rendering (kept elsewhere). */
int crt_metrics_counter_fn(crt_metrics *m, const char *name, const char *help, const char *labels, crt_gauge_fn fn,
                           void *ctx);
crt_histogram *crt_metrics_histogram(crt_metrics *m, const char *name, const char *help, const char *labels);
void crt_histogram_observe(crt_histogram *h, double seconds);

/* HTTP requests by route, method and status, and the latency histogram. */
void crt_metrics_request(crt_metrics *m, const char *route, const char *method, int status, uint64_t dur_ns);

/* Appends the whole exposition, process metrics included. With workers
 * (crt_metrics_set_shared), the sum over every worker instead. */
void crt_metrics_render(crt_metrics *m, crt_buf *out);
/* This process's own exposition, whatever the mode. */
void crt_metrics_render_local(crt_metrics *m, crt_buf *out);

/* server.workers > 1: the segment shared with the other workers (NULL:
 * one process, the default, and nothing changes). */
struct crt_mshared;
void crt_metrics_set_shared(crt_metrics *m, struct crt_mshared *sh);
/* For /ready: false with one process; else true, with the workers alive
 * and ready and the number configured. */
bool crt_metrics_workers_ready(const crt_metrics *m, unsigned *ready, unsigned *total);

#endif
