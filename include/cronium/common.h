/* Small shared definitions: container_of, error codes, span type, clock.
 * Every module of cronium-runtime includes this header. */
#ifndef CRONIUM_COMMON_H
#define CRONIUM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define crt_container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define CRT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Errors: 0 or a negative code, as libuv does. Foreign codes (UV_E*, CURLcode,
 * hiredis err) are translated at each module's edge. */
enum {
    CRT_OK = 0,
    CRT_ENOMEM = -1,
    CRT_EINVAL = -2,
    CRT_ERANGE = -3,
    CRT_EIO = -4,
    CRT_ENOTFOUND = -5,
    CRT_ETIMEDOUT = -6,
    CRT_EUNAVAIL = -7,
    CRT_ECONFLICT = -8,
    CRT_ENOTSUP = -9,
    CRT_ELIMIT = -10,
};

const char *crt_strerror(int err);

/* A borrowed view of bytes; never owns memory. */
typedef struct crt_span {
    const char *p;
    size_t len;
} crt_span;

#define CRT_SPAN_LIT(s) ((crt_span){(s), sizeof(s) - 1})

static inline bool crt_span_eq(crt_span a, const char *lit, size_t n)
{
    return a.len == n && (n == 0 || __builtin_memcmp(a.p, lit, n) == 0);
}

bool crt_span_ieq(crt_span a, const char *s);

/* Monotonic and wall clock helpers. */
uint64_t crt_now_ms(void);          /* monotonic, milliseconds */
uint64_t crt_now_ns(void);          /* monotonic, nanoseconds */
int64_t crt_wall_s(void);           /* seconds since the epoch */
/* Formats now (or t, seconds) as RFC 3339 UTC into out (>= 32 bytes); returns length. */
size_t crt_rfc3339(char *out, size_t cap, int64_t t, bool millis);

/* Fills out with n random bytes from the OS (getrandom); returns 0 or CRT_EIO. */
int crt_random_bytes(void *out, size_t n);
/* Writes 2 * n random lowercase hex digits and a NUL to out (2 * n + 1
 * bytes): request-id prefixes, lock owner tokens, dev secrets. Returns 0 or
 * CRT_EIO. */
int crt_random_hex(char *out, size_t n);

struct crt_buf;
/* Appends the content of the file at path to out, at most max bytes (0: no
 * limit; the rest is not read). Returns 0, CRT_EIO with errno set (cannot
 * open) or CRT_ENOMEM; a read error ends the content where it happened, as
 * the loaders have always had it. Blocking: for start-up, never on the loop. */
int crt_file_read(const char *path, size_t max, struct crt_buf *out);

#endif
