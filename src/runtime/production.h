/* The production wiring of the execution API: the backend and Valkey
 * clients, the store that borrows them, the audit shipper, the /ready checks
 * on the clients' own state, and their shutdown order. Private to
 * src/runtime/ (phase B of issue 10 moves it into app.c, the composition
 * root). */
#ifndef CRONIUM_RUNTIME_PRODUCTION_H
#define CRONIUM_RUNTIME_PRODUCTION_H

#include "cronium/app.h"
#include "cronium/store.h"

typedef struct crt_production crt_production;

/* Builds everything from app->cfg and registers the "valkey" and "backend"
 * ready checks. Returns NULL with err set. */
crt_production *crt_production_new(crt_app *app, char *err, size_t errcap);
crt_store *crt_production_store(crt_production *p);
crt_audit *crt_production_audit(crt_production *p);
/* After the store's vt->shutdown: drains the audit queue (at most
 * AUDIT_FLUSH_MS), then releases the clients. */
void crt_production_drain(crt_production *p);
/* Releases the clients if not done yet, then frees the store and the audit. */
void crt_production_free(crt_production *p);

#endif
