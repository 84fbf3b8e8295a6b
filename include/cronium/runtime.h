/* The execution API (API.md §2–§5): authentication, rate limits, the
 * endpoints under /executions/{id} and /tool-actions, and the store and audit
 * behind them. Owned by the app. */
#ifndef CRONIUM_RUNTIME_H
#define CRONIUM_RUNTIME_H

#include "cronium/buf.h"
#include "cronium/config.h"

struct crt_app;
typedef struct crt_runtime crt_runtime;

crt_runtime *crt_runtime_new(struct crt_app *app);
/* After the server listens: dev mode prints the export block. */
int crt_runtime_start(crt_runtime *rt);
/* Stop background work (audit flush, store connections). */
void crt_runtime_shutdown(crt_runtime *rt);
void crt_runtime_free(crt_runtime *rt);

/* Mints an HS256 token with the claims the orchestrator uses. */
int crt_token_mint(const char *secret, const char *execution_id, const char *user_id, const char *job_id,
                   const char *event_id, const char *issuer, int64_t ttl_s, crt_buf *out);

/* Key rule of API.md §3: 1–255 bytes of UTF-8 without control characters. */
bool crt_key_valid(const char *k, size_t n);

#endif
