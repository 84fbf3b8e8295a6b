/* Production store: Valkey cache in front of the Cronium backend. */
#include <stdio.h>
#include "cronium/app.h"
#include "cronium/store.h"

crt_store *crt_prodstore_new(struct crt_app *app, crt_audit **audit, char *err, size_t errcap);

crt_store *crt_prodstore_new(struct crt_app *app, crt_audit **audit, char *err, size_t errcap)
{
    (void)app;
    *audit = NULL;
    snprintf(err, errcap, "production mode (backend.url set) is not available in this build yet; use --dev");
    return NULL;
}
