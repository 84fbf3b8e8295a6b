/* base64url (RFC 4648 §5) without padding, decoded strictly. */
#include "cronium/b64url.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int crt_b64url_encode(const void *in, size_t n, crt_buf *out)
{
    const unsigned char *p = in;
    if (crt_buf_reserve(out, (n + 2) / 3 * 4))
        return CRT_ENOMEM;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63];
        *o++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63];
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

static int val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

int crt_b64url_decode(const char *in, size_t n, crt_buf *out)
{
    if (n % 4 == 1)
        return CRT_EINVAL;
    if (crt_buf_reserve(out, n / 4 * 3 + 3))
        return CRT_ENOMEM;
    unsigned char *o = (unsigned char *)out->data + out->len;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = val((unsigned char)in[i]);
        if (v < 0)
            return CRT_EINVAL;
        acc = (acc << 6 | (unsigned)v) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1)))
        return CRT_EINVAL; /* non-canonical: leftover bits must be zero */
    out->len = (size_t)((char *)o - out->data);
    return 0;
}
