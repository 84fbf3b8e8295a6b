/* Metrics and readiness shared by the workers of one supervisor
 * (server.workers > 1). A memfd segment, created by the supervisor and
 * inherited by every worker as descriptor 3, holds one slot per worker. Each
 * worker publishes its own exposition text into its slot (every second and
 * right before it answers a scrape) under a sequence lock; whichever worker
 * answers /metrics parses every slot and renders the sum by series key
 * (name + labels), so series that appear at run time (requests by route and
 * status, backend requests by op) merge wherever they are. Readiness is a
 * state word and a heartbeat per slot. Only processes, no threads: the
 * atomics order one writer against readers in other processes. With one
 * worker (the default) nothing here is created: no segment, no timer. */
#ifndef CRONIUM_METRICS_SHARED_H
#define CRONIUM_METRICS_SHARED_H

#include <uv.h>
#include "cronium/buf.h"
#include "cronium/common.h"
#include "cronium/metrics.h"

#define CRT_WORKERS_MAX 256
#define CRT_WORKER_FD 3             /* where a worker finds the segment */
#define CRT_WORKER_ENV "CRONIUM_WORKER"    /* "index/total/supervisor-pid" */

typedef struct crt_mshared crt_mshared;

/* Supervisor: a zeroed segment for n workers. Returns its descriptor
 * (close-on-exec; handed to workers explicitly) or a negative errno. */
int crt_mshared_create(unsigned n);
/* Maps the segment; self is the worker's index, or -1 in the supervisor.
 * NULL when fd is not a segment of n slots. */
crt_mshared *crt_mshared_map(int fd, unsigned n, int self);
void crt_mshared_free(crt_mshared *sh);

/* Supervisor side. */
void crt_mshared_slot_spawned(crt_mshared *sh, unsigned i, int pid);
/* The worker exited: its slot no longer counts as alive (its last counters
 * stay, for the next worker of the slot to carry on from). Returns whether
 * it had become ready (listening) before it died. */
bool crt_mshared_slot_exited(crt_mshared *sh, unsigned i);

/* Worker side: marks the slot ready, carries on the counters a previous
 * worker of this slot left, starts the 1 s publish timer (unreferenced) and
 * hooks the registry so crt_metrics_render shows the sum. stopping: the
 * app's flag, read at each publish. */
int crt_mshared_start(crt_mshared *sh, uv_loop_t *loop, crt_metrics *m, const bool *stopping);
/* State "stopping", closes the timer (the loop frees it). */
void crt_mshared_stop(crt_mshared *sh);
void crt_mshared_publish(crt_mshared *sh);
/* Workers alive and ready (fresh heartbeat, listening, not stopping). */
unsigned crt_mshared_ready(crt_mshared *sh, unsigned *total);
/* Publishes this worker's slot, then renders the sum over all slots plus
 * cronium_runtime_workers and cronium_runtime_worker_up{worker="i"}. */
void crt_mshared_render(crt_mshared *sh, crt_buf *out);

/* The merge itself (pure, unit-tested): texts[i] is worker i's exposition.
 * Counters, histograms and gauges are summed by series key; families listed
 * as per-worker (cronium_runtime_valkey_up, process_start_time_seconds) get a
 * worker="i" label instead, cronium_runtime_build_info keeps its maximum.
 * carry_only: keep only counter and histogram families (what a restarted
 * worker adds to its own so the sums do not go backwards). */
void crt_metrics_merge(const crt_span *texts, size_t n, bool carry_only, crt_buf *out);

#endif
