/* Unit tests for src/auth/b64url.c, src/auth/jwt.c and src/auth/token.c:
 * strict base64url, signing, strict verification, claims, the cache. Tokens
 * for the negative cases are built here by hand (OpenSSL HMAC directly), so
 * each one is wrong in exactly one way. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cronium/jwt.h"

#define NOW 1700000000LL
#define SECRET "unit-test-secret-0123456789abcdef"
#define HS256_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---- helpers ------------------------------------------------------------------ */

static char *b64(const char *s, size_t n)
{
    crt_buf b;
    crt_buf_init(&b);
    assert_int_equal(crt_b64url_encode(s, n, &b), 0);
    crt_buf_cstr(&b);
    return b.data ? b.data : strdup("");
}

/* h64.p64.HMAC(md, secret, "h64.p64"), all parts given as base64url text. */
static char *token_raw(const char *h64, const char *p64, const EVP_MD *md, const char *secret)
{
    crt_buf t;
    crt_buf_init(&t);
    crt_buf_printf(&t, "%s.%s", h64, p64);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    assert_non_null(HMAC(md, secret, (int)strlen(secret), (const unsigned char *)t.data, t.len, mac, &maclen));
    crt_buf_putc(&t, '.');
    assert_int_equal(crt_b64url_encode(mac, maclen, &t), 0);
    crt_buf_cstr(&t);
    return t.data;
}

static char *token_md(const char *hdr, const char *payload, const EVP_MD *md, const char *secret)
{
    char *h = b64(hdr, strlen(hdr)), *p = b64(payload, strlen(payload));
    char *t = token_raw(h, p, md, secret);
    free(h);
    free(p);
    return t;
}

static char *token(const char *payload) { return token_md(HS256_HDR, payload, EVP_sha256(), SECRET); }

static crt_jwt *verifier(unsigned algs, const char *issuer, size_t cache_slots)
{
    crt_jwt_opts o = {SECRET, strlen(SECRET), algs, 30, issuer, cache_slots};
    crt_jwt *v = crt_jwt_new(&o);
    assert_non_null(v);
    return v;
}

static crt_jwt_status verify(crt_jwt *v, const char *tok, int64_t now, crt_claims **out)
{
    const char *why = NULL;
    crt_claims *c = NULL;
    crt_jwt_status st = crt_jwt_verify(v, tok, strlen(tok), now, &c, &why);
    if (st != CRT_JWT_OK) {
        assert_null(c);
        assert_non_null(why); /* a failure always says why */
        assert_true(strlen(why) > 0);
    } else {
        assert_non_null(c);
    }
    if (out)
        *out = c;
    else if (c)
        crt_claims_release(c);
    return st;
}

/* ---- base64url ----------------------------------------------------------------- */

static void test_b64_vectors(void **state)
{
    (void)state;
    static const struct { const char *raw; size_t n; const char *enc; } v[] = {
        {"", 0, ""},
        {"f", 1, "Zg"},
        {"fo", 2, "Zm8"},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg"},
        {"fooba", 5, "Zm9vYmE"},
        {"foobar", 6, "Zm9vYmFy"},
        {"\xfb\xff", 2, "-_8"},
        {"\xfb\xff\xbf", 3, "-_-_"},
        {"\x00\x00\x00", 3, "AAAA"},
        {"\xff\xff\xff\xff", 4, "_____w"},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(v); i++) {
        crt_buf e, d;
        crt_buf_init(&e);
        crt_buf_init(&d);
        assert_int_equal(crt_b64url_encode(v[i].raw, v[i].n, &e), 0);
        if (e.len != strlen(v[i].enc) || memcmp(e.data, v[i].enc, e.len) != 0)
            fail_msg("encode #%zu: got %.*s want %s", i, (int)e.len, e.data, v[i].enc);
        assert_int_equal(crt_b64url_decode(v[i].enc, strlen(v[i].enc), &d), 0);
        assert_int_equal(d.len, v[i].n);
        if (v[i].n)
            assert_memory_equal(d.data, v[i].raw, v[i].n);
        crt_buf_fini(&e);
        crt_buf_fini(&d);
    }
}

static void test_b64_roundtrip(void **state)
{
    (void)state;
    unsigned char raw[200];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof raw; i++) {
        x = x * 1103515245u + 12345u;
        raw[i] = (unsigned char)(x >> 16);
    }
    for (size_t n = 0; n <= sizeof raw; n++) {
        crt_buf e, d;
        crt_buf_init(&e);
        crt_buf_init(&d);
        crt_buf_puts(&d, "pre");
        assert_int_equal(crt_b64url_encode(raw, n, &e), 0);
        assert_int_equal(e.len, (n * 4 + 2) / 3); /* no padding */
        for (size_t k = 0; k < e.len; k++) {
            char c = e.data[k];
            assert_true((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_');
        }
        assert_int_equal(crt_b64url_decode(e.data, e.len, &d), 0);
        assert_int_equal(d.len, n + 3);
        assert_memory_equal(d.data, "pre", 3);
        if (n)
            assert_memory_equal(d.data + 3, raw, n);
        crt_buf_fini(&e);
        crt_buf_fini(&d);
    }
}

static void test_b64_strict(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg==",     /* padding */
        "Zm8=",     /* padding */
        "Zg=",      /* padding */
        "+_8",      /* standard alphabet */
        "-/8",      /* standard alphabet */
        "Z",        /* length % 4 == 1 */
        "Zm9vY",    /* length % 4 == 1 */
        "Zh",       /* non-zero trailing bits */
        "Zm9",      /* non-zero trailing bits */
        "Zm9vYh",   /* non-zero trailing bits */
        "Zm 9v",    /* space */
        "Zm9v\n",   /* newline */
        "Zm9v.",    /* dot */
        "Zm\x80v",  /* high byte */
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        crt_buf d;
        crt_buf_init(&d);
        if (crt_b64url_decode(bad[i], strlen(bad[i]), &d) != CRT_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        crt_buf_fini(&d);
    }
    crt_buf d;
    crt_buf_init(&d);
    assert_int_equal(crt_b64url_decode("Zm9v\0", 5, &d), CRT_EINVAL);
    crt_buf_fini(&d);
}

/* ---- signing ---------------------------------------------------------------------- */

static void test_sign_known_vector(void **state)
{
    (void)state;
    /* The well-known jwt.io HS256 example. */
    const char *payload = "{\"sub\":\"1234567890\",\"name\":\"John Doe\",\"iat\":1516239022}";
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, ">");
    assert_int_equal(crt_jwt_sign(CRT_JWT_HS256, "your-256-bit-secret", 19, payload, strlen(payload), &out), 0);
    const char *want = ">eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                       "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
                       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    crt_buf_fini(&out);

    crt_buf b;
    crt_buf_init(&b);
    assert_int_equal(crt_jwt_sign(3, "k", 1, "{}", 2, &b), CRT_EINVAL);
    crt_buf_fini(&b);
}

static void test_sign_then_verify(void **state)
{
    (void)state;
    static const struct { unsigned alg; const EVP_MD *(*md)(void); } algs[] = {
        {CRT_JWT_HS256, EVP_sha256}, {CRT_JWT_HS384, EVP_sha384}, {CRT_JWT_HS512, EVP_sha512}};
    const char *payload = "{\"executionId\":\"exec-42\",\"jobId\":\"job-7\",\"userId\":\"user-3\",\"eventId\":\"ev-9\","
                          "\"iss\":\"cronium\",\"sub\":\"job:job-7\",\"scope\":\"execution\","
                          "\"iat\":1699999990,\"nbf\":1699999990,\"exp\":1700007200}";
    crt_jwt *v = verifier(CRT_JWT_HS256 | CRT_JWT_HS384 | CRT_JWT_HS512, NULL, 0);
    for (size_t i = 0; i < CRT_ARRAY_LEN(algs); i++) {
        crt_buf t;
        crt_buf_init(&t);
        assert_int_equal(crt_jwt_sign(algs[i].alg, SECRET, strlen(SECRET), payload, strlen(payload), &t), 0);
        /* Same bytes as a token built independently. */
        const char *hdr = i == 0 ? HS256_HDR : i == 1 ? "{\"alg\":\"HS384\",\"typ\":\"JWT\"}"
                                                      : "{\"alg\":\"HS512\",\"typ\":\"JWT\"}";
        char *mine = token_md(hdr, payload, algs[i].md(), SECRET);
        assert_int_equal(t.len, strlen(mine));
        assert_memory_equal(t.data, mine, t.len);
        free(mine);

        crt_claims *c = NULL;
        const char *why = NULL;
        crt_jwt_status st = crt_jwt_verify(v, t.data, t.len, NOW, &c, &why);
        if (st != CRT_JWT_OK)
            fail_msg("alg #%zu: %d (%s)", i, (int)st, why);
        assert_string_equal(c->execution_id, "exec-42");
        assert_string_equal(c->job_id, "job-7");
        assert_string_equal(c->user_id, "user-3");
        assert_string_equal(c->event_id, "ev-9");
        assert_string_equal(c->issuer, "cronium");
        assert_string_equal(c->subject, "job:job-7");
        assert_string_equal(c->scope, "execution");
        assert_int_equal(c->exp, 1700007200);
        assert_int_equal(c->nbf, 1699999990);
        assert_int_equal(c->iat, 1699999990);
        assert_int_equal(c->refs, 1);
        crt_claims_release(c);
        crt_buf_fini(&t);
    }
    crt_jwt_free(v);
}

static void test_parse_algs(void **state)
{
    (void)state;
    assert_int_equal(crt_jwt_parse_algs("HS256"), CRT_JWT_HS256);
    assert_int_equal(crt_jwt_parse_algs("HS256,HS512"), CRT_JWT_HS256 | CRT_JWT_HS512);
    assert_int_equal(crt_jwt_parse_algs("HS384, HS256"), CRT_JWT_HS256 | CRT_JWT_HS384);
    assert_int_equal(crt_jwt_parse_algs("RS256"), 0);
    assert_int_equal(crt_jwt_parse_algs("HS256,none"), 0);
    assert_int_equal(crt_jwt_parse_algs("hs256"), 0);
    assert_int_equal(crt_jwt_parse_algs(""), 0);
}

/* ---- verification: rejections ------------------------------------------------------------ */

#define GOOD_PAYLOAD "{\"executionId\":\"exec-1\",\"exp\":1700003600}"

/* A payload whose base64url form contains '-' or '_' (to swap in '+' '/'). */
static char *payload_with_url_chars(void)
{
    for (int pad = 0; pad < 3; pad++) {
        char p[128];
        snprintf(p, sizeof p, "{\"executionId\":\"exec-1\",\"exp\":1700003600,\"x\":\"%.*s~~~~~~>>>\"}", pad, "aa");
        char *e = b64(p, strlen(p));
        if (strchr(e, '_') || strchr(e, '-'))
            return e;
        free(e);
    }
    fail_msg("no payload with URL-only characters");
    return NULL;
}

static void test_verify_rejects(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 0);
    const EVP_MD *sha256 = EVP_sha256();
    char *good = token(GOOD_PAYLOAD);
    assert_int_equal(verify(v, good, NOW, NULL), CRT_JWT_OK); /* the baseline is fine */

    char *h = b64(HS256_HDR, strlen(HS256_HDR));
    char *p = b64(GOOD_PAYLOAD, strlen(GOOD_PAYLOAD));

    struct { const char *name; char *tok; } cases[64];
    size_t n = 0;
#define ADD(nm, t) do { cases[n].name = (nm); cases[n].tok = (t); n++; } while (0)
    char buf[1024];

    /* structure */
    ADD("two parts", strdup("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9"));
    snprintf(buf, sizeof buf, "%s.extra", good);
    ADD("four parts", strdup(buf));
    ADD("empty token", strdup(""));
    ADD("only dots", strdup(".."));
    ADD("three dots", strdup("..."));
    ADD("empty header", token_raw("", p, sha256, SECRET));
    ADD("empty payload", token_raw(h, "", sha256, SECRET));
    snprintf(buf, sizeof buf, "%s.%s.", h, p);
    ADD("empty signature", strdup(buf));
    snprintf(buf, sizeof buf, "%s ", good);
    ADD("trailing space", strdup(buf));
    snprintf(buf, sizeof buf, "Bearer %s", good);
    ADD("scheme inside token", strdup(buf));

    /* base64url */
    snprintf(buf, sizeof buf, "%s=", p);
    ADD("payload with padding", token_raw(h, buf, sha256, SECRET));
    snprintf(buf, sizeof buf, "%s=", h);
    ADD("header with padding", token_raw(buf, p, sha256, SECRET));
    {
        char *u = payload_with_url_chars();
        for (char *c = u; *c; c++)
            *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
        ADD("payload in standard base64", token_raw(h, u, sha256, SECRET));
        free(u);
    }
    snprintf(buf, sizeof buf, "%s", p);
    while (strlen(buf) % 4 != 1)
        strcat(buf, "A");
    ADD("payload length % 4 == 1", token_raw(h, buf, sha256, SECRET));
    {
        /* Signature whose unused trailing bits are set: decodes to the right
         * MAC, but is not the canonical encoding. */
        char *t = strdup(good);
        size_t tl = strlen(t);
        char last = t[tl - 1];
        static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int idx = (int)(strchr(alpha, last) - alpha);
        assert_int_equal(idx & 3, 0); /* 32-byte MAC: 2 unused bits, zero */
        t[tl - 1] = alpha[idx | 1];
        ADD("signature with non-zero trailing bits", t);
    }

    /* header */
    ADD("header not JSON", token_md("not json", GOOD_PAYLOAD, sha256, SECRET));
    ADD("header JSON array", token_md("[\"HS256\"]", GOOD_PAYLOAD, sha256, SECRET));
    ADD("header without alg", token_md("{\"typ\":\"JWT\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("header alg not a string", token_md("{\"alg\":256}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("alg none, HMAC signed", token_md("{\"alg\":\"none\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, sha256, SECRET));
    {
        const char *none_hdr = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
        char *hn = b64(none_hdr, strlen(none_hdr));
        snprintf(buf, sizeof buf, "%s.%s.", hn, p);
        ADD("alg none, no signature", strdup(buf));
        free(hn);
    }
    ADD("alg None", token_md("{\"alg\":\"None\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("alg hs256 (lower case)", token_md("{\"alg\":\"hs256\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("alg RS256", token_md("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("alg ES256", token_md("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("alg PS256", token_md("{\"alg\":\"PS256\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("HS512 when only HS256 allowed",
        token_md("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, EVP_sha512(), SECRET));
    ADD("HS384 when only HS256 allowed",
        token_md("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, EVP_sha384(), SECRET));
    ADD("HS256 header, HS512 MAC", token_md(HS256_HDR, GOOD_PAYLOAD, EVP_sha512(), SECRET));
    ADD("duplicate alg in header", token_md("{\"alg\":\"HS256\",\"alg\":\"none\"}", GOOD_PAYLOAD, sha256, SECRET));
    ADD("crit header", token_md("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GOOD_PAYLOAD, sha256, SECRET));

    /* signature */
    ADD("wrong secret", token_md(HS256_HDR, GOOD_PAYLOAD, sha256, "another-secret-0123456789abcdef"));
    ADD("secret prefix", token_md(HS256_HDR, GOOD_PAYLOAD, sha256, "unit-test-secret"));
    {
        /* A valid signature moved onto another payload. */
        char *other = token("{\"executionId\":\"exec-2\",\"exp\":1700003600}");
        const char *sig = strrchr(good, '.') + 1;
        char *op = strdup(other);
        *strrchr(op, '.') = '\0';
        snprintf(buf, sizeof buf, "%s.%s", op, sig);
        ADD("signature of another payload", strdup(buf));
        free(other);
        free(op);
    }
    {
        char *t = strdup(good);
        char *s = strrchr(t, '.') + 1;
        s[0] = s[0] == 'A' ? 'B' : 'A';
        ADD("flipped signature", t);
    }
    {
        char *t = strdup(good);
        t[strlen(t) - 2] = '\0'; /* 41 chars: not a whole MAC */
        ADD("truncated signature", t);
    }

    /* payload */
    ADD("payload not JSON", token("{\"executionId\":\"exec-1\",\"exp\":1700003600"));
    ADD("payload JSON array", token("[\"exec-1\"]"));
    ADD("payload JSON string", token("\"exec-1\""));
    ADD("payload trailing garbage", token(GOOD_PAYLOAD "x"));
    ADD("missing exp", token("{\"executionId\":\"exec-1\"}"));
    ADD("exp a string", token("{\"executionId\":\"exec-1\",\"exp\":\"1700003600\"}"));
    ADD("exp null", token("{\"executionId\":\"exec-1\",\"exp\":null}"));
    ADD("exp true", token("{\"executionId\":\"exec-1\",\"exp\":true}"));
    ADD("nbf a string", token("{\"executionId\":\"exec-1\",\"exp\":1700003600,\"nbf\":\"0\"}"));
    ADD("iat an object", token("{\"executionId\":\"exec-1\",\"exp\":1700003600,\"iat\":{}}"));
    ADD("missing executionId", token("{\"exp\":1700003600,\"jobId\":\"j\"}"));
    ADD("empty executionId", token("{\"executionId\":\"\",\"exp\":1700003600}"));
    ADD("executionId a number", token("{\"executionId\":12,\"exp\":1700003600}"));
    ADD("executionId an array", token("{\"executionId\":[\"a\"],\"exp\":1700003600}"));
    ADD("nbf beyond leeway", token("{\"executionId\":\"exec-1\",\"exp\":1700003600,\"nbf\":1700000031}"));
    ADD("iat beyond leeway", token("{\"executionId\":\"exec-1\",\"exp\":1700003600,\"iat\":1700000031}"));
    ADD("duplicate executionId",
        token("{\"executionId\":\"exec-1\",\"executionId\":\"exec-2\",\"exp\":1700003600}"));
    ADD("duplicate exp", token("{\"executionId\":\"exec-1\",\"exp\":1,\"exp\":1700003600}"));
    assert_true(n <= CRT_ARRAY_LEN(cases));
#undef ADD

    for (size_t i = 0; i < n; i++) {
        crt_jwt_status st = verify(v, cases[i].tok, NOW, NULL);
        if (st != CRT_JWT_INVALID)
            fail_msg("case \"%s\": status %d, want CRT_JWT_INVALID (token %s)", cases[i].name, (int)st,
                     cases[i].tok);
    }
    for (size_t i = 0; i < n; i++)
        free(cases[i].tok);
    free(h);
    free(p);
    free(good);
    crt_jwt_free(v);
}

static void test_verify_issuer(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, "cronium-orchestrator", 0);
    char *ok = token("{\"executionId\":\"e\",\"exp\":1700003600,\"iss\":\"cronium-orchestrator\"}");
    char *wrong = token("{\"executionId\":\"e\",\"exp\":1700003600,\"iss\":\"someone-else\"}");
    char *prefix = token("{\"executionId\":\"e\",\"exp\":1700003600,\"iss\":\"cronium\"}");
    char *none = token("{\"executionId\":\"e\",\"exp\":1700003600}");
    assert_int_equal(verify(v, ok, NOW, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, wrong, NOW, NULL), CRT_JWT_INVALID);
    assert_int_equal(verify(v, prefix, NOW, NULL), CRT_JWT_INVALID);
    assert_int_equal(verify(v, none, NOW, NULL), CRT_JWT_INVALID);
    crt_jwt_free(v);

    /* No issuer configured: any issuer, or none. */
    v = verifier(CRT_JWT_HS256, NULL, 0);
    assert_int_equal(verify(v, wrong, NOW, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, none, NOW, NULL), CRT_JWT_OK);
    crt_jwt_free(v);
    free(ok);
    free(wrong);
    free(prefix);
    free(none);
}

static void test_verify_expiry_and_leeway(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 0);
    char t[256];
    char *tok;

    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld}", NOW - 31);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_EXPIRED);
    free(tok);

    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld}", NOW - 3600);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_EXPIRED);
    free(tok);

    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld}", NOW - 29);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_OK); /* within the 30 s leeway */
    free(tok);

    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld,\"nbf\":%lld,\"iat\":%lld}", NOW + 60, NOW + 29,
             NOW + 29);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_OK); /* nbf/iat slightly ahead: leeway */
    free(tok);

    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld.5}", NOW + 100);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_OK); /* NumericDate may have a fraction */
    free(tok);
    crt_jwt_free(v);

    /* Leeway 0. */
    crt_jwt_opts o = {SECRET, strlen(SECRET), CRT_JWT_HS256, 0, NULL, 0};
    v = crt_jwt_new(&o);
    assert_non_null(v);
    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld}", NOW - 1);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_EXPIRED);
    free(tok);
    snprintf(t, sizeof t, "{\"executionId\":\"e\",\"exp\":%lld,\"nbf\":%lld}", NOW + 100, NOW + 1);
    tok = token(t);
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_INVALID);
    free(tok);
    crt_jwt_free(v);
}

/* exp far in the future (the largest NumericDate jansson reads) must not wrap
 * around when the leeway is added. */
static void test_verify_exp_max(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 8);
    char *tok = token("{\"executionId\":\"e\",\"exp\":9223372036854775807}");
    crt_claims *c = NULL;
    const char *why = "";
    crt_jwt_status st = crt_jwt_verify(v, tok, strlen(tok), NOW, &c, &why);
    int64_t exp = c ? c->exp : 0;
    crt_claims_release(c);
    free(tok);
    crt_jwt_free(v);
    if (st != CRT_JWT_OK)
        fail_msg("exp=INT64_MAX: status %d (%s), want CRT_JWT_OK", (int)st, why);
    assert_true(exp == INT64_MAX);
}

/* NumericDates at the ends of int64 (and a huge leeway or clock) are compared
 * without overflow: UBSan aborts the run if any check wraps around. */
static void test_verify_time_extremes(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 0);
    static const struct { const char *payload; crt_jwt_status want; } cases[] = {
        {"{\"executionId\":\"e\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775808}", CRT_JWT_OK},
        {"{\"executionId\":\"e\",\"exp\":9223372036854775807,\"iat\":-9223372036854775808}", CRT_JWT_OK},
        {"{\"executionId\":\"e\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775807,"
         "\"iat\":-9223372036854775807}", CRT_JWT_OK},
        {"{\"executionId\":\"e\",\"exp\":-9223372036854775808}", CRT_JWT_EXPIRED},
        {"{\"executionId\":\"e\",\"exp\":9223372036854775807,\"nbf\":9223372036854775807}", CRT_JWT_INVALID},
        {"{\"executionId\":\"e\",\"exp\":9223372036854775807,\"iat\":9223372036854775807}", CRT_JWT_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tok = token(cases[i].payload);
        crt_jwt_status st = verify(v, tok, NOW, NULL);
        if (st != cases[i].want)
            fail_msg("payload %s: status %d, want %d", cases[i].payload, (int)st, (int)cases[i].want);
        free(tok);
    }
    /* The clock itself at the ends of the range. */
    char *tok = token("{\"executionId\":\"e\",\"exp\":-9223372036854775808,\"nbf\":-9223372036854775808,"
                      "\"iat\":-9223372036854775808}");
    assert_int_equal(verify(v, tok, INT64_MIN, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, tok, INT64_MAX, NULL), CRT_JWT_EXPIRED);
    free(tok);
    tok = token("{\"executionId\":\"e\",\"exp\":9223372036854775807,\"nbf\":9223372036854775807}");
    assert_int_equal(verify(v, tok, INT64_MIN, NULL), CRT_JWT_INVALID);
    assert_int_equal(verify(v, tok, INT64_MAX, NULL), CRT_JWT_OK);
    free(tok);
    crt_jwt_free(v);

    /* A huge leeway: the checks saturate instead of wrapping around. */
    crt_jwt_opts o = {SECRET, strlen(SECRET), CRT_JWT_HS256, INT64_MAX, NULL, 0};
    v = crt_jwt_new(&o);
    assert_non_null(v);
    tok = token("{\"executionId\":\"e\",\"exp\":0,\"nbf\":9223372036854775807,\"iat\":9223372036854775807}");
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, tok, INT64_MAX, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, tok, INT64_MIN, NULL), CRT_JWT_INVALID);    /* nbf - leeway = 0, still ahead */
    free(tok);
    tok = token("{\"executionId\":\"e\",\"exp\":-9223372036854775808}");
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_EXPIRED);          /* exp + leeway = -1 */
    assert_int_equal(verify(v, tok, INT64_MIN, NULL), CRT_JWT_OK);
    free(tok);
    crt_jwt_free(v);

    /* A negative leeway is treated as 0. */
    o.leeway_s = INT64_MIN;
    v = crt_jwt_new(&o);
    assert_non_null(v);
    tok = token("{\"executionId\":\"e\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775808}");
    assert_int_equal(verify(v, tok, NOW, NULL), CRT_JWT_OK);
    free(tok);
    crt_jwt_free(v);
}

/* ---- claims ------------------------------------------------------------------------------- */

static crt_claims *claims_of(crt_jwt *v, const char *payload)
{
    char *t = token(payload);
    crt_claims *c = NULL;
    crt_jwt_status st = verify(v, t, NOW, &c);
    if (st != CRT_JWT_OK)
        fail_msg("payload %s: status %d", payload, (int)st);
    free(t);
    return c;
}

static void test_claims_fields(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 0);
    crt_claims *c;

    c = claims_of(v, "{\"executionId\":\"e1\",\"exp\":1700003600,\"jobId\":\"job-camel\"}");
    assert_string_equal(c->job_id, "job-camel");
    crt_claims_release(c);

    c = claims_of(v, "{\"executionId\":\"e1\",\"exp\":1700003600,\"job_id\":\"job-snake\"}");
    assert_string_equal(c->job_id, "job-snake");
    crt_claims_release(c);

    c = claims_of(v, "{\"executionId\":\"e1\",\"exp\":1700003600,\"eventId\":42}");
    assert_string_equal(c->event_id, "42");
    crt_claims_release(c);

    c = claims_of(v, "{\"executionId\":\"e1\",\"exp\":1700003600,\"eventId\":\"ev-1\"}");
    assert_string_equal(c->event_id, "ev-1");
    crt_claims_release(c);

    /* Absent strings are "", never NULL; null counts as absent. */
    c = claims_of(v, "{\"executionId\":\"e1\",\"exp\":1700003600,\"userId\":null}");
    assert_string_equal(c->execution_id, "e1");
    assert_string_equal(c->job_id, "");
    assert_string_equal(c->user_id, "");
    assert_string_equal(c->event_id, "");
    assert_string_equal(c->issuer, "");
    assert_string_equal(c->subject, "");
    assert_string_equal(c->scope, "");
    assert_int_equal(c->nbf, 0);
    assert_int_equal(c->iat, 0);
    crt_claims_release(c);

    /* Escapes and UTF-8 are decoded; extra claims ignored. */
    c = claims_of(v, "{\"executionId\":\"exec\\u002f\\u00e9\",\"exp\":1700003600,\"userId\":\"\xC3\xBC\","
                     "\"extra\":{\"nested\":[1,2,3]}}");
    assert_string_equal(c->execution_id, "exec/\xC3\xA9");
    assert_string_equal(c->user_id, "\xC3\xBC");
    crt_claims_release(c);
    crt_jwt_free(v);
}

static void test_token_mint(void **state)
{
    (void)state;
    crt_buf t;
    crt_buf_init(&t);
    assert_int_equal(crt_token_mint(SECRET, "exec-m", "user-m", "job-m", "event-m", NULL, 7200, &t), 0);
    crt_jwt *v = verifier(CRT_JWT_HS256, "cronium-runtime", 0);
    crt_claims *c = NULL;
    const char *why = NULL;
    crt_jwt_status st = crt_jwt_verify(v, t.data, t.len, crt_wall_s(), &c, &why);
    if (st != CRT_JWT_OK)
        fail_msg("minted token refused: %s", why);
    assert_string_equal(c->execution_id, "exec-m");
    assert_string_equal(c->user_id, "user-m");
    assert_string_equal(c->job_id, "job-m");
    assert_string_equal(c->event_id, "event-m");
    assert_string_equal(c->issuer, "cronium-runtime");
    assert_int_equal(c->exp - c->iat, 7200);
    crt_claims_release(c);
    /* Two hours later (plus leeway) it has expired. */
    assert_int_equal(verify(v, crt_buf_cstr(&t), crt_wall_s() + 7200 + 31, NULL), CRT_JWT_EXPIRED);
    crt_jwt_free(v);
    crt_buf_fini(&t);
}

/* ---- the cache ------------------------------------------------------------------------------- */

static void test_cache_hit(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 64);
    char *t = token("{\"executionId\":\"cached\",\"exp\":1700003600,\"userId\":\"u\"}");
    crt_claims *a = NULL, *b = NULL;
    assert_int_equal(crt_jwt_cache_hits(v), 0);
    assert_int_equal(verify(v, t, NOW, &a), CRT_JWT_OK);
    assert_int_equal(crt_jwt_cache_hits(v), 0);
    assert_int_equal(a->refs, 2); /* caller + cache */
    assert_int_equal(verify(v, t, NOW + 1, &b), CRT_JWT_OK);
    assert_ptr_equal(a, b);
    assert_int_equal(crt_jwt_cache_hits(v), 1);
    assert_int_equal(a->refs, 3);
    assert_string_equal(b->execution_id, "cached");
    crt_claims_release(b);
    assert_int_equal(a->refs, 2);

    /* Another token is another entry. */
    char *t2 = token("{\"executionId\":\"other\",\"exp\":1700003600}");
    crt_claims *c = NULL;
    assert_int_equal(verify(v, t2, NOW, &c), CRT_JWT_OK);
    assert_ptr_not_equal(c, a);
    assert_string_equal(c->execution_id, "other");
    assert_int_equal(crt_jwt_cache_hits(v), 1);
    crt_claims_release(c);

    /* A token that differs in one byte is not served from the cache. */
    char *t3 = strdup(t);
    char *s = strrchr(t3, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(v, t3, NOW, NULL), CRT_JWT_INVALID);
    assert_int_equal(crt_jwt_cache_hits(v), 1);

    /* Invalid tokens are never cached. */
    assert_int_equal(verify(v, t3, NOW, NULL), CRT_JWT_INVALID);
    assert_int_equal(crt_jwt_cache_hits(v), 1);

    crt_claims_release(a);
    crt_jwt_free(v);
    free(t);
    free(t2);
    free(t3);
}

static void test_cache_expired_refused(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 64);
    char p[128];
    snprintf(p, sizeof p, "{\"executionId\":\"soon\",\"exp\":%lld}", NOW + 100);
    char *t = token(p);
    assert_int_equal(verify(v, t, NOW, NULL), CRT_JWT_OK);
    assert_int_equal(verify(v, t, NOW + 100 + 30, NULL), CRT_JWT_OK); /* leeway */
    uint64_t hits = crt_jwt_cache_hits(v);
    assert_int_equal(hits, 1);
    crt_claims *c = (crt_claims *)0x1;
    const char *why = NULL;
    assert_int_equal(crt_jwt_verify(v, t, strlen(t), NOW + 100 + 31, &c, &why), CRT_JWT_EXPIRED);
    assert_null(c);
    assert_non_null(why);
    /* Still refused next time, and the clock going on does not bring it back. */
    assert_int_equal(verify(v, t, NOW + 100000, NULL), CRT_JWT_EXPIRED);
    crt_jwt_free(v);
    free(t);
}

static void test_cache_eviction_refcounts(void **state)
{
    (void)state;
    /* 4 slots, 40 tokens: entries are evicted while callers still hold
     * claims; every claim stays readable until its last release (ASan). */
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 4);
    enum { N = 40 };
    crt_claims *held[N];
    char *toks[N];
    for (int i = 0; i < N; i++) {
        char p[128];
        snprintf(p, sizeof p, "{\"executionId\":\"exec-%d\",\"exp\":1700003600}", i);
        toks[i] = token(p);
        assert_int_equal(verify(v, toks[i], NOW, &held[i]), CRT_JWT_OK);
    }
    int cached = 0;
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "exec-%d", i);
        assert_string_equal(held[i]->execution_id, want);
        assert_true(held[i]->refs == 1 || held[i]->refs == 2);
        cached += held[i]->refs == 2;
    }
    assert_true(cached >= 1 && cached <= 4);
    /* Re-verify everything: still correct whether or not it was cached. */
    for (int i = 0; i < N; i++) {
        crt_claims *c = NULL;
        assert_int_equal(verify(v, toks[i], NOW, &c), CRT_JWT_OK);
        assert_string_equal(c->execution_id, held[i]->execution_id);
        crt_claims_release(c);
    }
    for (int i = 0; i < N; i++) {
        crt_claims_release(held[i]);
        free(toks[i]);
    }
    crt_jwt_free(v);
}

static void test_no_cache(void **state)
{
    (void)state;
    crt_jwt *v = verifier(CRT_JWT_HS256, NULL, 0);
    char *t = token(GOOD_PAYLOAD);
    crt_claims *a = NULL, *b = NULL;
    assert_int_equal(verify(v, t, NOW, &a), CRT_JWT_OK);
    assert_int_equal(verify(v, t, NOW, &b), CRT_JWT_OK);
    assert_ptr_not_equal(a, b);
    assert_int_equal(a->refs, 1);
    assert_int_equal(crt_jwt_cache_hits(v), 0);
    crt_claims_release(a);
    crt_claims_release(b);
    crt_jwt_free(v);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_roundtrip),
        cmocka_unit_test(test_b64_strict),
        cmocka_unit_test(test_sign_known_vector),
        cmocka_unit_test(test_sign_then_verify),
        cmocka_unit_test(test_parse_algs),
        cmocka_unit_test(test_verify_rejects),
        cmocka_unit_test(test_verify_issuer),
        cmocka_unit_test(test_verify_expiry_and_leeway),
        cmocka_unit_test(test_verify_exp_max),
        cmocka_unit_test(test_verify_time_extremes),
        cmocka_unit_test(test_claims_fields),
        cmocka_unit_test(test_token_mint),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_cache_expired_refused),
        cmocka_unit_test(test_cache_eviction_refcounts),
        cmocka_unit_test(test_no_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
