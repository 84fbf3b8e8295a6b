/* The supervisor (server.workers > 1): the same binary, on its own loop,
 * starts N workers that share the listening port with SO_REUSEPORT,
 * restarts one that dies, forwards SIGTERM/SIGINT for a graceful stop of all
 * and exits with the status that says how it went. It serves nothing itself.
 * Workers find their index and the shared metrics segment through
 * CRT_WORKER_ENV and CRT_WORKER_FD (metrics_shared.h). */
#ifndef CRONIUM_SUPERVISOR_H
#define CRONIUM_SUPERVISOR_H

#include "cronium/config.h"

/* Runs until every worker has stopped. argv: the command line the workers
 * get again (they re-read the same configuration). Returns the exit status:
 * 0 after a clean stop, 2 if a worker reported a configuration or usage
 * error, 1 if workers could not start or did not stop cleanly (or a
 * worker's own non-zero status at a stop, e.g. a leak checker's). */
int crt_supervisor_run(const crt_config *cfg, char **argv);

/* In a worker: parses CRT_WORKER_ENV. Returns 0 when this process is not a
 * worker, 1 when it is (index, total filled), -1 when the variable is
 * malformed or the supervisor is already gone. */
int crt_worker_identity(unsigned *index, unsigned *total);

#endif
