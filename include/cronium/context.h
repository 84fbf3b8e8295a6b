/* The execution context (docs/api.md §5), built once from the backend's reply and
 * kept as ready-to-splice JSON text. Shared by the dev and production stores
 * (src/store/context.c). */
#ifndef CRONIUM_CONTEXT_H
#define CRONIUM_CONTEXT_H

#include "cronium/buf.h"

typedef struct crt_context {
    crt_buf json;               /* the §5 object, compact */
    crt_buf input;              /* metadata.input, compact; len 0: none */
    char *user_id;              /* owner of the execution's variables ("" if none) */
} crt_context;

/* Defaults used where the backend reply lacks a field (dev mode fills them
 * from the token). Any may be NULL. */
typedef struct crt_context_defaults {
    const char *execution_id;
    const char *job_id;
    const char *event_id;
    const char *user_id;
} crt_context_defaults;

/* Builds c from a backend context reply. Returns 0 or CRT_EINVAL (not a JSON
 * object). c must be zeroed or finished before. */
int crt_context_build(crt_context *c, const char *json, size_t len, const crt_context_defaults *d);
void crt_context_fini(crt_context *c);

#endif
