/* Recursive-descent JSON validator that writes the compact form as it goes. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/json.h"
#include "cronium/utf8.h"

typedef struct scan {
    const char *p, *e;
    crt_buf *out;
    int depth;
} scan;

static void skip_ws(scan *s)
{
    while (s->p < s->e && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int emit(scan *s, const char *from, size_t n) { return crt_buf_append(s->out, from, n) ? CRT_ENOMEM : 0; }

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

static int scan_string(scan *s)
{
    const char *start = s->p++;
    while (s->p < s->e) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return emit(s, start, (size_t)(s->p - start));
        }
        if (c < 0x20)
            return CRT_EINVAL;
        if (c == '\\') {
            if (s->e - s->p < 2)
                return CRT_EINVAL;
            char x = s->p[1];
            if (x == 'u') {
                unsigned v;
                if (s->e - s->p < 6 || hex4(s->p + 2, &v))
                    return CRT_EINVAL;
                s->p += 6;
                if (v >= 0xD800 && v <= 0xDBFF) { /* must be followed by a low surrogate */
                    unsigned lo;
                    if (s->e - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' || hex4(s->p + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return CRT_EINVAL;
                    s->p += 6;
                } else if (v >= 0xDC00 && v <= 0xDFFF) {
                    return CRT_EINVAL;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", x) || x == '\0')
                return CRT_EINVAL;
            s->p += 2;
            continue;
        }
        if (c >= 0x80) {
            size_t l = crt_utf8_seq(s->p, (size_t)(s->e - s->p), NULL);
            if (!l)
                return CRT_EINVAL;
            s->p += l;
            continue;
        }
        s->p++;
    }
    return CRT_EINVAL;
}

static int digits(scan *s)
{
    const char *d = s->p;
    while (s->p < s->e && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > d ? 0 : CRT_EINVAL;
}

static int scan_number(scan *s)
{
    const char *start = s->p;
    if (*s->p == '-')
        s->p++;
    if (s->p < s->e && *s->p == '0')
        s->p++;
    else if (digits(s))
        return CRT_EINVAL;
    if (s->p < s->e && *s->p == '.') {
        s->p++;
        if (digits(s))
            return CRT_EINVAL;
    }
    if (s->p < s->e && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->e && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (digits(s))
            return CRT_EINVAL;
    }
    return emit(s, start, (size_t)(s->p - start));
}

static int scan_lit(scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->e - s->p) < n || memcmp(s->p, lit, n) != 0)
        return CRT_EINVAL;
    s->p += n;
    return emit(s, lit, n);
}

static int scan_value(scan *s);

/* Compares a raw (escaped) key with a wanted name. */
static bool key_is(const char *raw, size_t n, const char *want)
{
    if (!memchr(raw, '\\', n))
        return n == strlen(want) && memcmp(raw, want, n) == 0;
    crt_buf tmp;
    crt_buf_init(&tmp);
    bool eq = false;
    if (crt_json_unquote(raw - 1, n + 2, &tmp) == 0)
        eq = tmp.len == strlen(want) && memcmp(tmp.data, want, tmp.len) == 0;
    crt_buf_fini(&tmp);
    return eq;
}

static int scan_object(scan *s, const char *const *keys, crt_json_slot *found, size_t nkeys)
{
    s->p++;
    if (emit(s, "{", 1))
        return CRT_ENOMEM;
    skip_ws(s);
    if (s->p < s->e && *s->p == '}') {
        s->p++;
        return emit(s, "}", 1);
    }
    for (;;) {
        skip_ws(s);
        if (s->p >= s->e || *s->p != '"')
            return CRT_EINVAL;
        const char *kstart = s->p + 1;
        int rc = scan_string(s);
        if (rc)
            return rc;
        size_t klen = (size_t)(s->p - kstart - 1);
        skip_ws(s);
        if (s->p >= s->e || *s->p != ':')
            return CRT_EINVAL;
        s->p++;
        emit(s, ":", 1);
        skip_ws(s);
        size_t voff = s->out->len;
        if ((rc = scan_value(s)))
            return rc;
        for (size_t i = 0; i < nkeys; i++) {
            if (key_is(kstart, klen, keys[i])) {
                if (found[i].len)
                    return CRT_EINVAL; /* duplicate */
                found[i] = (crt_json_slot){voff, s->out->len - voff};
            }
        }
        skip_ws(s);
        if (s->p < s->e && *s->p == ',') {
            s->p++;
            emit(s, ",", 1);
            continue;
        }
        if (s->p < s->e && *s->p == '}') {
            s->p++;
            return emit(s, "}", 1);
        }
        return CRT_EINVAL;
    }
}

static int scan_array(scan *s)
{
    s->p++;
    emit(s, "[", 1);
    skip_ws(s);
    if (s->p < s->e && *s->p == ']') {
        s->p++;
        return emit(s, "]", 1);
    }
    for (;;) {
        skip_ws(s);
        int rc = scan_value(s);
        if (rc)
            return rc;
        skip_ws(s);
        if (s->p < s->e && *s->p == ',') {
            s->p++;
            emit(s, ",", 1);
            continue;
        }
        if (s->p < s->e && *s->p == ']') {
            s->p++;
            return emit(s, "]", 1);
        }
        return CRT_EINVAL;
    }
}

static int scan_value(scan *s)
{
    if (s->p >= s->e)
        return CRT_EINVAL;
    if (++s->depth > CRT_JSON_MAX_DEPTH)
        return CRT_EINVAL;
    int rc;
    switch (*s->p) {
    case '{': rc = scan_object(s, NULL, NULL, 0); break;
    case '[': rc = scan_array(s); break;
    case '"': rc = scan_string(s); break;
    case 't': rc = scan_lit(s, "true"); break;
    case 'f': rc = scan_lit(s, "false"); break;
    case 'n': rc = scan_lit(s, "null"); break;
    default:
        rc = (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) ? scan_number(s) : CRT_EINVAL;
    }
    s->depth--;
    return rc;
}

static int finish(scan *s, int rc, size_t mark)
{
    if (rc == 0) {
        skip_ws(s);
        if (s->p != s->e)
            rc = CRT_EINVAL;  /* trailing garbage */
    }
    if (rc)
        s->out->len = mark;
    return rc;
}

int crt_json_compact(const char *p, size_t n, crt_buf *out)
{
    scan s = {p, p + n, out, 0};
    size_t mark = out->len;
    skip_ws(&s);
    return finish(&s, scan_value(&s), mark);
}

int crt_json_object(const char *p, size_t n, crt_buf *out, const char *const *keys, crt_json_slot *found,
                    size_t nkeys)
{
    scan s = {p, p + n, out, 1};
    size_t mark = out->len;
    for (size_t i = 0; i < nkeys; i++)
        found[i] = (crt_json_slot){0, 0};
    skip_ws(&s);
    if (s.p >= s.e || *s.p != '{')
        return CRT_EINVAL;
    return finish(&s, scan_object(&s, keys, found, nkeys), mark);
}

int crt_json_array_item(const char *p, size_t n, size_t idx, crt_buf *out)
{
    crt_buf tmp;
    crt_buf_init(&tmp);
    scan s = {p, p + n, &tmp, 1};
    int rc = CRT_ENOTFOUND;
    skip_ws(&s);
    if (s.p >= s.e || *s.p != '[') {
        crt_buf_fini(&tmp);
        return CRT_EINVAL;
    }
    s.p++;
    skip_ws(&s);
    for (size_t i = 0; s.p < s.e && *s.p != ']'; i++) {
        crt_buf_reset(&tmp);
        if (scan_value(&s)) {
            rc = CRT_EINVAL;
            break;
        }
        if (i == idx) {
            rc = crt_buf_append(out, tmp.data, tmp.len) ? CRT_ENOMEM : 0;
            break;
        }
        skip_ws(&s);
        if (s.p < s.e && *s.p == ',') {
            s.p++;
            skip_ws(&s);
        }
    }
    crt_buf_fini(&tmp);
    return rc;
}

crt_json_kind crt_json_kind_of(const char *p, size_t n)
{
    if (!n)
        return CRT_JSON_INVALID;
    switch (p[0]) {
    case 'n': return CRT_JSON_NULL;
    case 'f': return CRT_JSON_FALSE;
    case 't': return CRT_JSON_TRUE;
    case '"': return CRT_JSON_STRING;
    case '[': return CRT_JSON_ARRAY;
    case '{': return CRT_JSON_OBJECT;
    default: return (p[0] == '-' || (p[0] >= '0' && p[0] <= '9')) ? CRT_JSON_NUMBER : CRT_JSON_INVALID;
    }
}

static void put_utf8(crt_buf *out, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xC0 | cp >> 6); b[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12); b[1] = (char)(0x80 | (cp >> 6 & 0x3F)); b[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        b[0] = (char)(0xF0 | cp >> 18); b[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3F)); b[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    crt_buf_append(out, b, n);
}

int crt_json_unquote(const char *p, size_t n, crt_buf *out)
{
    if (n < 2 || p[0] != '"' || p[n - 1] != '"')
        return CRT_EINVAL;
    const char *e = p + n - 1;
    for (p++; p < e; p++) {
        if (*p != '\\') {
            crt_buf_putc(out, *p);
            continue;
        }
        if (e - p < 2)
            return CRT_EINVAL;
        p++;
        switch (*p) {
        case 'b': crt_buf_putc(out, '\b'); break;
        case 'f': crt_buf_putc(out, '\f'); break;
        case 'n': crt_buf_putc(out, '\n'); break;
        case 'r': crt_buf_putc(out, '\r'); break;
        case 't': crt_buf_putc(out, '\t'); break;
        case 'u': {
            unsigned v, lo;
            if (e - p < 5 || hex4(p + 1, &v))
                return CRT_EINVAL;
            p += 4;
            if (v >= 0xD800 && v <= 0xDBFF && e - p >= 7 && p[1] == '\\' && p[2] == 'u' && hex4(p + 3, &lo) == 0 &&
                lo >= 0xDC00 && lo <= 0xDFFF) {
                v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            put_utf8(out, v);
            break;
        }
        default: crt_buf_putc(out, *p); break;
        }
    }
    return 0;
}

static bool is_int_text(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '.' || p[i] == 'e' || p[i] == 'E')
            return false;
    return n > 0;
}

/* True if p[0..n) is exactly one JSON number and nothing else. */
static bool is_number_text(const char *p, size_t n)
{
    crt_buf tmp;
    crt_buf_init(&tmp);
    bool ok = crt_json_compact(p, n, &tmp) == 0 && tmp.len == n && crt_json_kind_of(p, n) == CRT_JSON_NUMBER;
    crt_buf_fini(&tmp);
    return ok;
}

int crt_json_number_add(const char *a, size_t an, const char *b, size_t bn, crt_buf *out)
{
    if (!is_number_text(a, an) || !is_number_text(b, bn))
        return CRT_EINVAL;
    char *ta = strndup(a, an), *tb = strndup(b, bn);
    if (!ta || !tb) {
        free(ta);
        free(tb);
        return CRT_ENOMEM;
    }
    if (is_int_text(a, an) && is_int_text(b, bn)) {
        errno = 0;
        char *e1, *e2;
        long long x = strtoll(ta, &e1, 10), y = strtoll(tb, &e2, 10), sum;
        if (!errno && !*e1 && !*e2 && !__builtin_add_overflow(x, y, &sum)) {
            free(ta);
            free(tb);
            return crt_buf_put_i64(out, sum);
        }
    }
    double d = strtod(ta, NULL) + strtod(tb, NULL);
    free(ta);
    free(tb);
    if (!isfinite(d))
        return CRT_EINVAL;
    char txt[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(txt, sizeof txt, "%.*g", prec, d);
        if (strtod(txt, NULL) == d)
            break;
    }
    /* Always a valid JSON number (no "inf"/"nan" here; %g never prints "1." ). */
    return crt_buf_puts(out, txt);
}

/* ---- paths ---- */

int crt_json_path(const char *json, size_t len, const char *path, size_t plen, crt_buf *out)
{
    crt_buf cur, next;
    crt_buf_init(&cur);
    crt_buf_init(&next);
    crt_buf_append(&cur, json, len);
    int rc = 0;
    size_t i = 0;
    while (i <= plen) {
        size_t j = i;
        while (j < plen && path[j] != '.')
            j++;
        if (j == i) {
            rc = CRT_EINVAL;
            break;
        }
        char seg[256];
        if (j - i >= sizeof seg) {
            rc = CRT_ENOTFOUND;
            break;
        }
        memcpy(seg, path + i, j - i);
        seg[j - i] = '\0';
        crt_json_kind kind = crt_json_kind_of(cur.data, cur.len);
        if (kind == CRT_JSON_ARRAY) {
            /* a decimal segment indexes an array: tags.0 */
            char *end;
            unsigned long long idx = strtoull(seg, &end, 10);
            crt_buf_reset(&next);
            if (!isdigit((unsigned char)seg[0]) || *end ||
                crt_json_array_item(cur.data, cur.len, (size_t)idx, &next)) {
                rc = CRT_ENOTFOUND;
                break;
            }
            crt_buf_reset(&cur);
            crt_buf_append(&cur, next.data, next.len);
            i = j + 1;
            continue;
        }
        if (kind != CRT_JSON_OBJECT) {
            rc = CRT_ENOTFOUND;
            break;
        }
        const char *keys[1] = {seg};
        crt_json_slot sl;
        crt_buf_reset(&next);
        if (crt_json_object(cur.data, cur.len, &next, keys, &sl, 1) || !sl.len) {
            rc = CRT_ENOTFOUND;
            break;
        }
        crt_buf_reset(&cur);
        crt_buf_append(&cur, next.data + sl.off, sl.len);
        i = j + 1;
    }
    if (rc == 0)
        crt_buf_append(out, cur.data, cur.len);
    crt_buf_fini(&cur);
    crt_buf_fini(&next);
    return rc;
}
