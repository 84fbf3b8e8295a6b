/* Clock, randomness, reading a file and error strings. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/random.h>
#include <errno.h>
#include "cronium/buf.h"
#include "cronium/common.h"

const char *crt_strerror(int err)
{
    switch (err) {
    case CRT_OK: return "ok";
    case CRT_ENOMEM: return "out of memory";
    case CRT_EINVAL: return "invalid argument";
    case CRT_ERANGE: return "out of range";
    case CRT_EIO: return "i/o error";
    case CRT_ENOTFOUND: return "not found";
    case CRT_ETIMEDOUT: return "timed out";
    case CRT_EUNAVAIL: return "unavailable";
    case CRT_ECONFLICT: return "conflict";
    case CRT_ENOTSUP: return "not supported";
    case CRT_ELIMIT: return "limit reached";
    default: return "unknown error";
    }
}

bool crt_span_ieq(crt_span a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && strncasecmp(a.p, s, n) == 0;
}

uint64_t crt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t crt_now_ms(void) { return crt_now_ns() / 1000000u; }

int64_t crt_wall_s(void) { return (int64_t)time(NULL); }

size_t crt_rfc3339(char *out, size_t cap, int64_t t, bool millis)
{
    struct timespec ts;
    if (t < 0) {
        clock_gettime(CLOCK_REALTIME, &ts);
    } else {
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = 0;
    }
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    if (millis && n + 5 < cap) {
        int ms = (int)(ts.tv_nsec / 1000000);
        out[n++] = '.';
        out[n++] = (char)('0' + ms / 100);
        out[n++] = (char)('0' + ms / 10 % 10);
        out[n++] = (char)('0' + ms % 10);
    }
    if (n + 2 <= cap) {
        out[n++] = 'Z';
        out[n] = '\0';
    }
    return n;
}

int crt_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return CRT_EIO;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int crt_random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[32];
    int rc = 0;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof rnd ? n - done : sizeof rnd;
        if (crt_random_bytes(rnd, k)) {
            rc = CRT_EIO;
            memset(rnd, 0, k);
        }
        for (size_t i = 0; i < k; i++) {
            out[2 * (done + i)] = hex[rnd[i] >> 4];
            out[2 * (done + i) + 1] = hex[rnd[i] & 15];
        }
        done += k;
    }
    out[2 * n] = '\0';
    return rc;
}

int crt_file_read(const char *path, size_t max, crt_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return CRT_EIO;
    char tmp[8192];
    size_t n, got = 0;
    int rc = 0;
    while ((!max || got < max) && (n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (max && n > max - got)
            n = max - got;
        if (crt_buf_append(out, tmp, n)) {
            rc = CRT_ENOMEM;
            break;
        }
        got += n;
    }
    fclose(f);
    return rc;
}
