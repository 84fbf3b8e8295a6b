/* Strict JSON validation and compaction that keeps every number's text and
 * every string's bytes exactly as sent, so a stored value round-trips
 * byte-for-byte (jansson re-prints reals with 17 digits and rejects integers
 * beyond 64 bits). Structural work on small documents (claims, contexts) uses
 * jansson; this is for values that are stored and spliced into responses. */
#ifndef CRONIUM_JSON_H
#define CRONIUM_JSON_H

#include "cronium/buf.h"

#define CRT_JSON_MAX_DEPTH 64

/* Validates exactly one JSON value in p[0..n) (whitespace around it allowed)
 * and appends its compact form to out. Returns 0 or CRT_EINVAL. */
int crt_json_compact(const char *p, size_t n, crt_buf *out);

/* Validates an object and appends its compact form to out; for each name in
 * keys[] present at the top level, found[i] receives the offset and length of
 * its compact value within out (len 0: absent). A duplicated wanted key is an
 * error. Returns 0, or CRT_EINVAL (invalid JSON, or not an object). */
typedef struct crt_json_slot {
    size_t off;
    size_t len;
} crt_json_slot;
int crt_json_object(const char *p, size_t n, crt_buf *out, const char *const *keys, crt_json_slot *found,
                    size_t nkeys);

typedef enum {
    CRT_JSON_NULL, CRT_JSON_FALSE, CRT_JSON_TRUE, CRT_JSON_NUMBER, CRT_JSON_STRING, CRT_JSON_ARRAY,
    CRT_JSON_OBJECT, CRT_JSON_INVALID,
} crt_json_kind;

/* The kind of a compact, valid JSON value (looks at its first byte). */
crt_json_kind crt_json_kind_of(const char *p, size_t n);

/* Appends element idx of a JSON array to out (compact). Returns 0,
 * CRT_ENOTFOUND (past the end) or CRT_EINVAL (not a valid array). */
int crt_json_array_item(const char *p, size_t n, size_t idx, crt_buf *out);

/* Decodes a compact JSON string literal (quotes included) into out (UTF-8). */
int crt_json_unquote(const char *p, size_t n, crt_buf *out);



/* Adds two JSON numbers (compact text): exact in 64-bit integers when both
 * are integers and the sum fits, otherwise in doubles, printed in the
 * shortest form that reads back the same. Appends to out. Returns 0 or
 * CRT_EINVAL (not numbers, or the sum is not finite). */
int crt_json_number_add(const char *a, size_t an, const char *b, size_t bn, crt_buf *out);

/* Walks "a.b.c" through objects (a decimal segment indexes an array: "tags.0")
 * of a compact JSON value; appends the compact value found to out. Returns
 * 0, CRT_ENOTFOUND, or CRT_EINVAL (an empty segment). */
int crt_json_path(const char *json, size_t len, const char *path, size_t plen, crt_buf *out);

#endif
