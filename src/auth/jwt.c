/* JWT verification (HMAC with a constant-time compare, strict base64url and
 * claims) with a set-associative cache keyed by the whole token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "cronium/jwt.h"
#include "cronium/map.h"

#define CLAIM_MAX 512           /* longest accepted string claim */
#define CACHE_WAYS 4

typedef struct cache_entry {
    uint64_t hash;
    char *token;
    size_t len;
    crt_claims *claims;
    uint64_t stamp;             /* for replacement within a set */
} cache_entry;

struct crt_jwt {
    char *secret;
    size_t secret_len;
    unsigned algs;
    int64_t leeway;
    char *issuer;
    cache_entry *cache;
    size_t nsets;
    uint64_t clock;
    uint64_t hits;
};

void crt_claims_retain(crt_claims *c) { c->refs++; }

void crt_claims_release(crt_claims *c)
{
    if (c && --c->refs == 0)
        free(c);
}

unsigned crt_jwt_parse_algs(const char *list)
{
    unsigned m = 0;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", list ? list : "");
    for (char *save = NULL, *t = strtok_r(tmp, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (!strcmp(t, "HS256")) m |= CRT_JWT_HS256;
        else if (!strcmp(t, "HS384")) m |= CRT_JWT_HS384;
        else if (!strcmp(t, "HS512")) m |= CRT_JWT_HS512;
        else return 0;
    }
    return m;
}

crt_jwt *crt_jwt_new(const crt_jwt_opts *o)
{
    crt_jwt *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->secret = malloc(o->secret_len + 1);
    if (!v->secret) {
        free(v);
        return NULL;
    }
    memcpy(v->secret, o->secret, o->secret_len);
    v->secret_len = o->secret_len;
    v->algs = o->algs;
    v->leeway = o->leeway_s > 0 ? o->leeway_s : 0; /* the time checks below rely on leeway >= 0 */
    v->issuer = o->issuer && *o->issuer ? strdup(o->issuer) : NULL;
    if (o->cache_slots) {
        v->nsets = (o->cache_slots + CACHE_WAYS - 1) / CACHE_WAYS;
        v->cache = calloc(v->nsets * CACHE_WAYS, sizeof *v->cache);
        if (!v->cache)
            v->nsets = 0;
    }
    return v;
}

void crt_jwt_free(crt_jwt *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nsets * CACHE_WAYS; i++) {
        free(v->cache[i].token);
        crt_claims_release(v->cache[i].claims);
    }
    free(v->cache);
    OPENSSL_cleanse(v->secret, v->secret_len);
    free(v->secret);
    free(v->issuer);
    free(v);
}

uint64_t crt_jwt_cache_hits(const crt_jwt *v) { return v->hits; }

static const EVP_MD *alg_md(unsigned alg)
{
    switch (alg) {
    case CRT_JWT_HS256: return EVP_sha256();
    case CRT_JWT_HS384: return EVP_sha384();
    case CRT_JWT_HS512: return EVP_sha512();
    default: return NULL;
    }
}

/* The time checks take claims from the token (any int64) and a leeway >= 0:
 * the leeway is added to or subtracted from the claim only when the result
 * stays in range; past the range the answer is already known. */
static bool time_passed(int64_t t, int64_t now, int64_t leeway)      /* t + leeway < now */
{
    return t <= INT64_MAX - leeway && t + leeway < now;
}

static bool time_ahead(int64_t t, int64_t now, int64_t leeway)       /* t - leeway > now */
{
    return t >= INT64_MIN + leeway && t - leeway > now;
}

static bool claims_live(const crt_jwt *v, const crt_claims *c, int64_t now)
{
    return !time_passed(c->exp, now, v->leeway);
}

static crt_claims *cache_get(crt_jwt *v, uint64_t h, const char *tok, size_t len)
{
    if (!v->nsets)
        return NULL;
    cache_entry *set = &v->cache[(h % v->nsets) * CACHE_WAYS];
    for (int i = 0; i < CACHE_WAYS; i++) {
        cache_entry *e = &set[i];
        if (e->claims && e->hash == h && e->len == len && CRYPTO_memcmp(e->token, tok, len) == 0) {
            e->stamp = ++v->clock;
            return e->claims;
        }
    }
    return NULL;
}

static void cache_drop(cache_entry *e)
{
    free(e->token);
    crt_claims_release(e->claims);
    memset(e, 0, sizeof *e);
}

static void cache_put(crt_jwt *v, uint64_t h, const char *tok, size_t len, crt_claims *c, int64_t now)
{
    if (!v->nsets)
        return;
    cache_entry *set = &v->cache[(h % v->nsets) * CACHE_WAYS];
    cache_entry *victim = &set[0];
    for (int i = 0; i < CACHE_WAYS; i++) {
        cache_entry *e = &set[i];
        if (!e->claims || !claims_live(v, e->claims, now)) {
            victim = e;
            break;
        }
        if (e->stamp < victim->stamp)
            victim = e;
    }
    char *copy = malloc(len);
    if (!copy)
        return;
    cache_drop(victim);
    memcpy(copy, tok, len);
    victim->hash = h;
    victim->token = copy;
    victim->len = len;
    victim->claims = c;
    victim->stamp = ++v->clock;
    crt_claims_retain(c);
}

/* Reads a NumericDate claim. Absent: returns 1. Not a number: -1. */
static int num_claim(json_t *obj, const char *name, int64_t *out)
{
    json_t *x = json_object_get(obj, name);
    if (!x)
        return 1;
    if (json_is_integer(x)) {
        *out = (int64_t)json_integer_value(x);
        return 0;
    }
    if (json_is_real(x)) {
        double d = json_real_value(x);
        if (d > 9e15 || d < -9e15)
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    return -1;
}

/* Reads a string claim ("" when absent); numbers are accepted for eventId. */
static int str_claim(json_t *obj, const char *name, char *dst, size_t *used, const char **out, bool allow_num)
{
    json_t *x = json_object_get(obj, name);
    char tmp[32];
    const char *s = "";
    size_t n = 0;
    if (json_is_string(x)) {
        s = json_string_value(x);
        n = json_string_length(x);
        if (n > CLAIM_MAX || memchr(s, '\0', n))
            return -1;
    } else if (allow_num && json_is_integer(x)) {
        n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(x));
        s = tmp;
    } else if (x && !json_is_null(x)) {
        return -1;
    }
    memcpy(dst + *used, s, n);
    dst[*used + n] = '\0';
    *out = dst + *used;
    *used += n + 1;
    return 0;
}

static crt_jwt_status parse_claims(crt_jwt *v, const char *json, size_t len, int64_t now, crt_claims **out,
                                   const char **why)
{
    json_error_t jerr;
    json_t *obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        *why = "token payload is not a JSON object";
        return CRT_JWT_INVALID;
    }
    crt_jwt_status st = CRT_JWT_INVALID;
    crt_claims *c = calloc(1, sizeof *c + 7 * (CLAIM_MAX + 1));
    if (!c) {
        *why = "out of memory";
        goto out;
    }
    c->refs = 1;
    int r = num_claim(obj, "exp", &c->exp);
    if (r) {
        *why = r > 0 ? "token has no exp claim" : "token exp is not a number";
        goto out;
    }
    c->nbf = c->iat = 0;
    if (num_claim(obj, "nbf", &c->nbf) < 0 || num_claim(obj, "iat", &c->iat) < 0) {
        *why = "token nbf or iat is not a number";
        goto out;
    }
    size_t used = 0;
    if (str_claim(obj, "executionId", c->strings, &used, &c->execution_id, false) ||
        str_claim(obj, "userId", c->strings, &used, &c->user_id, false) ||
        str_claim(obj, "eventId", c->strings, &used, &c->event_id, true) ||
        str_claim(obj, "iss", c->strings, &used, &c->issuer, false) ||
        str_claim(obj, "sub", c->strings, &used, &c->subject, false) ||
        str_claim(obj, "scope", c->strings, &used, &c->scope, false)) {
        *why = "token has a claim of the wrong type or too long";
        goto out;
    }
    const char *jn = json_object_get(obj, "jobId") ? "jobId" : "job_id";
    if (str_claim(obj, jn, c->strings, &used, &c->job_id, true)) {
        *why = "token jobId is not a string";
        goto out;
    }
    if (!*c->execution_id) {
        *why = "token has no executionId claim";
        goto out;
    }
    {   /* shrink to the strings actually used, then rebase the pointers */
        const char **ptrs[] = {&c->execution_id, &c->user_id, &c->event_id, &c->issuer,
                               &c->subject, &c->scope, &c->job_id};
        size_t offs[7];
        for (int i = 0; i < 7; i++)
            offs[i] = (size_t)(*ptrs[i] - c->strings);
        crt_claims *small = realloc(c, sizeof *c + used);
        if (small) {
            c = small;
            const char **nptrs[] = {&c->execution_id, &c->user_id, &c->event_id, &c->issuer,
                                    &c->subject, &c->scope, &c->job_id};
            for (int i = 0; i < 7; i++)
                *nptrs[i] = c->strings + offs[i];
        }
    }
    if (time_passed(c->exp, now, v->leeway)) {
        *why = "token has expired";
        st = CRT_JWT_EXPIRED;
        goto out;
    }
    if (json_object_get(obj, "nbf") && time_ahead(c->nbf, now, v->leeway)) {
        *why = "token is not valid yet (nbf)";
        goto out;
    }
    if (json_object_get(obj, "iat") && time_ahead(c->iat, now, v->leeway)) {
        *why = "token was issued in the future (iat)";
        goto out;
    }
    if (v->issuer && strcmp(c->issuer, v->issuer) != 0) {
        *why = "token issuer is not accepted";
        goto out;
    }
    st = CRT_JWT_OK;
    *out = c;
    c = NULL;
out:
    free(c);
    json_decref(obj);
    return st;
}

static unsigned header_alg(const char *json, size_t len, const char **why)
{
    json_error_t jerr;
    json_t *h = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    unsigned alg = 0;
    if (!h || !json_is_object(h)) {
        *why = "token header is not a JSON object";
    } else if (json_object_get(h, "crit")) {
        *why = "token header has unsupported critical extensions";
    } else {
        const char *a = json_string_value(json_object_get(h, "alg"));
        if (!a)
            *why = "token header has no alg";
        else if (!strcmp(a, "HS256")) alg = CRT_JWT_HS256;
        else if (!strcmp(a, "HS384")) alg = CRT_JWT_HS384;
        else if (!strcmp(a, "HS512")) alg = CRT_JWT_HS512;
        else
            *why = "token algorithm is not accepted";
    }
    json_decref(h);
    return alg;
}

crt_jwt_status crt_jwt_verify(crt_jwt *v, const char *tok, size_t len, int64_t now, crt_claims **out,
                              const char **why)
{
    *out = NULL;
    uint64_t h = crt_hash(tok, len);    /* only picks a set: equality is checked in full */
    crt_claims *hit = cache_get(v, h, tok, len);
    if (hit) {
        if (!claims_live(v, hit, now)) {
            *why = "token has expired";
            return CRT_JWT_EXPIRED;
        }
        v->hits++;
        crt_claims_retain(hit);
        *out = hit;
        return CRT_JWT_OK;
    }

    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok))) {
        *why = "token does not have three parts";
        return CRT_JWT_INVALID;
    }
    crt_jwt_status st = CRT_JWT_INVALID;
    crt_buf hdr, pay, sig;
    crt_buf_init(&hdr);
    crt_buf_init(&pay);
    crt_buf_init(&sig);
    if (crt_b64url_decode(tok, (size_t)(d1 - tok), &hdr) ||
        crt_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pay) ||
        crt_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), &sig)) {
        *why = "token is not valid base64url";
        goto out;
    }
    unsigned alg = header_alg(hdr.data ? hdr.data : "", hdr.len, why);
    if (!alg)
        goto out;
    if (!(alg & v->algs)) {
        *why = "token algorithm is not accepted";
        goto out;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(alg_md(alg), v->secret, (int)v->secret_len, (const unsigned char *)tok, (size_t)(d2 - tok), mac,
              &maclen) ||
        sig.len != maclen || CRYPTO_memcmp(mac, sig.data, maclen) != 0) {
        *why = "token signature is invalid";
        goto out;
    }
    crt_claims *c = NULL;
    st = parse_claims(v, pay.data ? pay.data : "", pay.len, now, &c, why);
    if (st == CRT_JWT_OK) {
        cache_put(v, h, tok, len, c, now);
        *out = c;
    }
out:
    crt_buf_fini(&hdr);
    crt_buf_fini(&pay);
    crt_buf_fini(&sig);
    return st;
}

int crt_jwt_sign(unsigned alg, const char *secret, size_t secret_len, const char *payload, size_t plen,
                 crt_buf *out)
{
    const EVP_MD *md = alg_md(alg);
    if (!md)
        return CRT_EINVAL;
    const char *hdr = alg == CRT_JWT_HS256   ? "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
                      : alg == CRT_JWT_HS384 ? "{\"alg\":\"HS384\",\"typ\":\"JWT\"}"
                                             : "{\"alg\":\"HS512\",\"typ\":\"JWT\"}";
    size_t start = out->len;
    crt_b64url_encode(hdr, strlen(hdr), out);
    crt_buf_putc(out, '.');
    crt_b64url_encode(payload, plen, out);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(md, secret, (int)secret_len, (const unsigned char *)out->data + start, out->len - start, mac, &maclen))
        return CRT_EIO;
    crt_buf_putc(out, '.');
    return crt_b64url_encode(mac, maclen, out);
}
