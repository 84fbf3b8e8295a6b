/* Growable byte buffer. Owned by whoever embeds it; crt_buf_fini releases it.
 * Kept across keep-alive requests (crt_buf_reset keeps the capacity) so the hot
 * path does not allocate once a connection has warmed up. */
#ifndef CRONIUM_BUF_H
#define CRONIUM_BUF_H

#include <stdarg.h>
#include "cronium/common.h"

typedef struct crt_buf {
    char *data;
    size_t len;
    size_t cap;
} crt_buf;

void crt_buf_init(crt_buf *b);
void crt_buf_fini(crt_buf *b);
static inline void crt_buf_reset(crt_buf *b) { b->len = 0; }
/* Makes room for n more bytes; returns 0 or CRT_ENOMEM. */
int crt_buf_reserve(crt_buf *b, size_t n);
int crt_buf_append(crt_buf *b, const void *p, size_t n);
static inline int crt_buf_puts(crt_buf *b, const char *s) { return crt_buf_append(b, s, __builtin_strlen(s)); }
int crt_buf_putc(crt_buf *b, char c);
int crt_buf_printf(crt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int crt_buf_vprintf(crt_buf *b, const char *fmt, va_list ap);
int crt_buf_put_u64(crt_buf *b, uint64_t v);
int crt_buf_put_i64(crt_buf *b, int64_t v);
/* Appends s as a JSON string literal, quotes included. Invalid UTF-8 bytes are
 * replaced by U+FFFD so the output is always valid JSON. */
int crt_buf_json_str(crt_buf *b, const char *s, size_t n);
/* Removes the first n bytes, moving the rest down. */
void crt_buf_consume(crt_buf *b, size_t n);
/* Returns a NUL-terminated view (the NUL is not counted in len). */
const char *crt_buf_cstr(crt_buf *b);

#endif
