/* Growable byte buffer and the JSON string writer shared by every module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/buf.h"
#include "cronium/utf8.h"

void crt_buf_init(crt_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void crt_buf_fini(crt_buf *b)
{
    free(b->data);
    crt_buf_init(b);
}

int crt_buf_reserve(crt_buf *b, size_t n)
{
    if (b->cap - b->len > n)
        return 0;
    size_t want = b->len + n + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) {
        if (cap > SIZE_MAX / 2)
            return CRT_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p)
        return CRT_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int crt_buf_append(crt_buf *b, const void *p, size_t n)
{
    if (crt_buf_reserve(b, n))
        return CRT_ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int crt_buf_putc(crt_buf *b, char c)
{
    if (crt_buf_reserve(b, 1))
        return CRT_ENOMEM;
    b->data[b->len++] = c;
    return 0;
}

int crt_buf_vprintf(crt_buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, cp);
    va_end(cp);
    if (n < 0)
        return CRT_EINVAL;
    if ((size_t)n < sizeof tmp)
        return crt_buf_append(b, tmp, (size_t)n);
    if (crt_buf_reserve(b, (size_t)n))
        return CRT_ENOMEM;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int crt_buf_printf(crt_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = crt_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int crt_buf_put_u64(crt_buf *b, uint64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return crt_buf_append(b, p, (size_t)(e - p));
}

int crt_buf_put_i64(crt_buf *b, int64_t v)
{
    if (v < 0) {
        if (crt_buf_putc(b, '-'))
            return CRT_ENOMEM;
        return crt_buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return crt_buf_put_u64(b, (uint64_t)v);
}

int crt_buf_json_str(crt_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX (6 bytes). */
    if (crt_buf_reserve(b, n * 6 + 2))
        return CRT_ENOMEM;
    char *o = b->data + b->len;
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    *o++ = '"';
    while (p < e) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = crt_utf8_seq((const char *)p, (size_t)(e - p), NULL);
            if (l == 0) { /* U+FFFD */
                *o++ = (char)0xEF; *o++ = (char)0xBF; *o++ = (char)0xBD;
                p++;
            } else {
                memcpy(o, p, l);
                o += l;
                p += l;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
        p++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return 0;
}

void crt_buf_consume(crt_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

const char *crt_buf_cstr(crt_buf *b)
{
    if (crt_buf_reserve(b, 0))
        return "";
    b->data[b->len] = '\0';
    return b->data;
}
