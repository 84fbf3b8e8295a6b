/* Private to src/app*.c: the store side of the composition root
 * (app_store.c), called by app.c. */
#ifndef CRONIUM_APP_INT_H
#define CRONIUM_APP_INT_H

#include "cronium/app.h"

/* Builds the store and the audit: dev mode the in-memory store (seeded from
 * --dev-context) and the audit log; production the backend client, the
 * cache client (when cache.url is set), the production store borrowing both
 * and the backend audit shipper, and registers the "valkey" and "backend"
 * ready checks on the clients' own state. Returns 0, or CRT_EINVAL with err
 * set (what was built is released by crt_app_store_free). */
int crt_app_store_new(crt_app *app, char *err, size_t errcap);
/* Dev mode, once listening: prints the export block and writes it to the
 * env file (removed by crt_app_store_stop). */
void crt_app_store_announce(crt_app *app);
/* After the server has drained: the store refuses new work, the audit drains
 * (at most AUDIT_FLUSH_MS), then the store and the audit let go of the
 * clients and the clients are freed (their handles close on the loop). */
void crt_app_store_stop(crt_app *app);
/* The loop has run dry: releases the clients if not done yet, then frees the
 * store and the audit. */
void crt_app_store_free(crt_app *app);
int crt_app_add_ready_check(crt_app *app, const char *name, crt_check_fn fn, void *ctx, bool critical);

#endif
