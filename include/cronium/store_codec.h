/* The production store's pure parts: how values are encoded for the Cronium
 * backend and read back from it (docs/api.md §6), and the names of its Valkey keys
 * and backend routes. No I/O; used by src/store/ and its unit tests. */
#ifndef CRONIUM_STORE_CODEC_H
#define CRONIUM_STORE_CODEC_H

#include "cronium/buf.h"

/* ---- §6 values ---- */

/* Appends what the backend's text column gives back for the compact JSON
 * value v: a string whose text spells a non-string JSON value reads back as
 * that value ("\"42\"" -> 42); anything else as itself. */
void crt_store_read_back(const char *v, size_t n, crt_buf *out);
/* Appends to out the JSON string of an append: the string cur (NULL when
 * the variable is missing: ""), then the JSON string sep (only when that
 * text is not empty: the separator goes between) and val. Returns
 * 0, CRT_ECONFLICT (cur is not a JSON string), CRT_EINVAL or CRT_ENOMEM. */
int crt_store_append(const char *cur, size_t curlen, const char *sep, size_t seplen, const char *val, size_t vallen,
                     crt_buf *out);
/* Appends the PUT body {"value": <encoded>}: a string as itself, anything
 * else as its JSON text (42 -> "42"). */
void crt_store_put_body(const char *v, size_t n, crt_buf *out);
/* Appends the read-back form of "value" in a backend variable reply body.
 * Returns 0, or CRT_EINVAL (not an object, or no "value"). */
int crt_store_var_reply(const char *body, size_t len, crt_buf *out);
/* Whether a cached context may be used for exec_id: a JSON object whose
 * executionId, if present and not null, is the string exec_id. */
bool crt_store_context_ok(const char *json, size_t len, const char *exec_id);

/* ---- Valkey keys (reset b, then write the key) ----
 * The {id} / {uid} hash tag keeps one execution's or one user's keys in one
 * cluster slot. */

/* cronium:exec:{id}:<what>, what: "context", "output", "condition". */
void crt_store_key_exec(crt_buf *b, const char *id, const char *what);
/* cronium:user:{uid}:var:<key> */
void crt_store_key_var(crt_buf *b, const char *uid, const char *k, size_t kn);
/* cronium:user:{uid}:lock:<key>: the increment lock of a variable. */
void crt_store_key_lock(crt_buf *b, const char *uid, const char *k, size_t kn);

/* ---- backend routes (appended to path, each segment percent-encoded) ---- */

/* /api/internal/variables/<uid>/<key> */
void crt_store_path_var(crt_buf *path, const char *uid, const char *k, size_t kn);
/* /api/internal/executions/<id>/<what>, what: "context", "output", "condition". */
void crt_store_path_exec(crt_buf *path, const char *id, const char *what);

#endif
