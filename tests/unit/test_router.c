/* Unit tests for src/http/router.c: method + pattern matching, captures
 * percent-decoded once, 404 vs 405 with Allow, HEAD on GET routes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/http.h"

static void h_health(crt_req *req, void *ctx) { (void)req; (void)ctx; }
static void h_api(crt_req *req, void *ctx) { (void)req; (void)ctx; }

/* Route contexts: the address tells which route matched. */
static int ctx_health, ctx_ready, ctx_input, ctx_out_set, ctx_out_get, ctx_var_get, ctx_var_put, ctx_var_del,
    ctx_var_incr, ctx_tool;

typedef struct fixture {
    crt_router *r;
    crt_req req;
    char allow[128];
    crt_handler_fn fn;
    void *ctx;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->r = crt_router_new();
    if (!f->r)
        return -1;
    int rc = 0;
    rc |= crt_router_add(f->r, "GET", "/health", h_health, &ctx_health);
    rc |= crt_router_add(f->r, "GET", "/ready", h_health, &ctx_ready);
    rc |= crt_router_add(f->r, "GET", "/executions/{id}/input", h_api, &ctx_input);
    rc |= crt_router_add(f->r, "POST", "/executions/{id}/output", h_api, &ctx_out_set);
    rc |= crt_router_add(f->r, "GET", "/executions/{id}/output", h_api, &ctx_out_get);
    rc |= crt_router_add(f->r, "GET", "/executions/{id}/variables/{key}", h_api, &ctx_var_get);
    rc |= crt_router_add(f->r, "PUT", "/executions/{id}/variables/{key}", h_api, &ctx_var_put);
    rc |= crt_router_add(f->r, "DELETE", "/executions/{id}/variables/{key}", h_api, &ctx_var_del);
    rc |= crt_router_add(f->r, "POST", "/executions/{id}/variables/{key}/increment", h_api, &ctx_var_incr);
    rc |= crt_router_add(f->r, "POST", "/tool-actions/execute", h_api, &ctx_tool);
    if (rc)
        return -1;
    crt_buf_init(&f->req.scratch);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    crt_buf_fini(&f->req.scratch);
    crt_router_free(f->r);
    free(f);
    return 0;
}

/* Prepares the request (path is the raw target before '?'; query after it)
 * and matches it. */
static crt_route_result match(fixture *f, const char *method, const char *target)
{
    crt_buf_reset(&f->req.scratch);
    f->req.method_name = (crt_span){method, strlen(method)};
    const char *q = strchr(target, '?');
    f->req.path = (crt_span){target, q ? (size_t)(q - target) : strlen(target)};
    f->req.query = q ? (crt_span){q + 1, strlen(q + 1)} : (crt_span){NULL, 0};
    f->req.nparams = 0;
    f->req.route_id = 12345;
    f->fn = NULL;
    f->ctx = NULL;
    memset(f->allow, 'x', sizeof f->allow);
    f->allow[sizeof f->allow - 1] = '\0';
    return crt_router_match(f->r, &f->req, &f->fn, &f->ctx, f->allow, sizeof f->allow);
}

static void assert_param(const fixture *f, size_t i, const char *want, size_t wlen)
{
    assert_true(i < f->req.nparams);
    crt_span p = f->req.params[i];
    if (p.len != wlen || memcmp(p.p, want, wlen) != 0)
        fail_msg("param %zu: got \"%.*s\" (%zu bytes), want \"%.*s\" (%zu bytes)", i, (int)p.len, p.p, p.len,
                 (int)wlen, want, wlen);
}
#define ASSERT_PARAM(f, i, lit) assert_param((f), (i), (lit), sizeof(lit) - 1)

/* Compares an Allow list with the wanted set, order aside; no duplicates. */
static void assert_allow(const char *allow, const char *const *want, size_t nwant)
{
    char copy[128];
    snprintf(copy, sizeof copy, "%s", allow);
    size_t seen = 0;
    bool hit[8] = {false};
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        bool found = false;
        for (size_t i = 0; i < nwant; i++)
            if (!strcmp(t, want[i])) {
                if (hit[i])
                    fail_msg("Allow \"%s\": %s twice", allow, t);
                hit[i] = found = true;
            }
        if (!found)
            fail_msg("Allow \"%s\": unexpected %s", allow, t);
        seen++;
    }
    if (seen != nwant)
        fail_msg("Allow \"%s\": %zu methods, want %zu", allow, seen, nwant);
    /* "A, B" form: comma and one space between names. */
    for (const char *p = allow; *p; p++)
        if (*p == ',')
            assert_true(p[1] == ' ' && p[2] != ' ' && p[2] != '\0');
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_literal(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "GET", "/health"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->fn, h_health);
    assert_ptr_equal(f->ctx, &ctx_health);
    assert_int_equal(f->req.route_id, 0);
    assert_string_equal(f->req.route_name, "/health");
    assert_int_equal(f->req.nparams, 0);

    assert_int_equal(match(f, "GET", "/ready"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_ready);
    assert_int_equal(f->req.route_id, 1);

    assert_int_equal(match(f, "POST", "/tool-actions/execute"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_tool);
    assert_string_equal(f->req.route_name, "/tool-actions/execute");
    assert_int_equal(crt_router_count(f->r), 10);
    assert_string_equal(crt_router_name(f->r, 9), "/tool-actions/execute");
}

static void test_not_found(void **state)
{
    fixture *f = *state;
    static const char *const paths[] = {
        "/", "", "/healthz", "/health/", "/Health", "/health/x", "/executions", "/executions/abc",
        "/executions/abc/unknown", "/executions/abc/variables", "/tool-actions", "/a/b/c/d/e/f/g/h/i/j",
        "/executions/abc/variables/k/increment/more",
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(paths); i++) {
        crt_route_result r = match(f, "GET", paths[i]);
        if (r != CRT_ROUTE_NOT_FOUND)
            fail_msg("\"%s\": result %d", paths[i], (int)r);
        assert_int_equal(f->req.route_id, -1);
        assert_null(f->fn);
    }
}

static void test_params(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "GET", "/executions/exec-123/input"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_input);
    assert_string_equal(f->req.route_name, "/executions/{id}/input");
    assert_int_equal(f->req.nparams, 1);
    ASSERT_PARAM(f, 0, "exec-123");

    assert_int_equal(match(f, "PUT", "/executions/e1/variables/my_key"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_put);
    assert_int_equal(f->req.nparams, 2);
    ASSERT_PARAM(f, 0, "e1");
    ASSERT_PARAM(f, 1, "my_key");

    assert_int_equal(match(f, "POST", "/executions/e2/variables/counter/increment"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_incr);
    assert_int_equal(f->req.nparams, 2);
    ASSERT_PARAM(f, 0, "e2");
    ASSERT_PARAM(f, 1, "counter");

    /* Same path, method picks the route. */
    assert_int_equal(match(f, "POST", "/executions/e3/output"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_out_set);
    assert_int_equal(match(f, "GET", "/executions/e3/output"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_out_get);
    assert_int_equal(match(f, "DELETE", "/executions/e3/variables/k"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_del);
}

static void test_percent_decoding(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "GET", "/executions/e/variables/a%2Fb"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "a/b");

    /* Decoded once only. */
    assert_int_equal(match(f, "GET", "/executions/e/variables/a%252Fb"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "a%2Fb");

    assert_int_equal(match(f, "GET", "/executions/e/variables/hello%20world"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "hello world");

    /* '+' is not a space in a path. */
    assert_int_equal(match(f, "GET", "/executions/e/variables/a+b"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "a+b");

    /* UTF-8 escapes, upper and lower case hex. */
    assert_int_equal(match(f, "GET", "/executions/e/variables/caf%C3%a9%E2%82%AC"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "caf\xC3\xA9\xE2\x82\xAC");

    /* Invalid escapes stay as they are. */
    assert_int_equal(match(f, "GET", "/executions/e/variables/%zz%4"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "%zz%4");
    assert_int_equal(match(f, "GET", "/executions/e/variables/%"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "%");
    assert_int_equal(match(f, "GET", "/executions/e/variables/100%"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "100%");
    assert_int_equal(match(f, "GET", "/executions/e/variables/%g1x%41"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "%g1xA");

    /* %00 decodes to a NUL byte inside the span (the key rule rejects it later). */
    assert_int_equal(match(f, "GET", "/executions/e/variables/a%00b"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 1, "a\0b");

    /* The id is decoded too. */
    assert_int_equal(match(f, "GET", "/executions/ex%2Fec/input"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 0, "ex/ec");
}

/* Params live in scratch, after what it held before; growing scratch must
 * not leave dangling pointers. */
static void test_params_in_scratch(void **state)
{
    fixture *f = *state;
    char longkey[400];
    memset(longkey, 'k', sizeof longkey);
    char target[512];
    snprintf(target, sizeof target, "/executions/%s/variables/%.*s", "idid", (int)sizeof longkey, longkey);
    crt_buf_fini(&f->req.scratch);
    crt_buf_init(&f->req.scratch);
    f->req.method_name = CRT_SPAN_LIT("GET");
    f->req.path = (crt_span){target, strlen(target)};
    crt_buf_puts(&f->req.scratch, "HEAD-BYTES"); /* small capacity: decoding must grow it */
    assert_int_equal(crt_router_match(f->r, &f->req, &f->fn, &f->ctx, f->allow, sizeof f->allow),
                     CRT_ROUTE_FOUND);
    assert_int_equal(f->req.nparams, 2);
    assert_memory_equal(f->req.scratch.data, "HEAD-BYTES", 10);
    ASSERT_PARAM(f, 0, "idid");
    assert_int_equal(f->req.params[1].len, sizeof longkey);
    assert_memory_equal(f->req.params[1].p, longkey, sizeof longkey);
    assert_true(f->req.params[0].p >= f->req.scratch.data &&
                f->req.params[1].p + f->req.params[1].len <= f->req.scratch.data + f->req.scratch.len);
}

static void test_head_matches_get(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "HEAD", "/health"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_health);
    assert_int_equal(match(f, "HEAD", "/executions/e/variables/k"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_get);
    ASSERT_PARAM(f, 1, "k");
    assert_int_equal(match(f, "HEAD", "/executions/e/output"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_out_get);

    /* HEAD where only POST exists: 405. */
    assert_int_equal(match(f, "HEAD", "/tool-actions/execute"), CRT_ROUTE_BAD_METHOD);
    static const char *const post[] = {"POST"};
    assert_allow(f->allow, post, 1);
}

static void test_method_not_allowed(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "POST", "/health"), CRT_ROUTE_BAD_METHOD);
    assert_string_equal(f->allow, "GET, HEAD");
    assert_null(f->fn);

    assert_int_equal(match(f, "GET", "/tool-actions/execute"), CRT_ROUTE_BAD_METHOD);
    assert_string_equal(f->allow, "POST");

    assert_int_equal(match(f, "PATCH", "/executions/e/variables/k"), CRT_ROUTE_BAD_METHOD);
    static const char *const var[] = {"GET", "HEAD", "PUT", "DELETE"};
    assert_allow(f->allow, var, 4);

    assert_int_equal(match(f, "DELETE", "/executions/e/output"), CRT_ROUTE_BAD_METHOD);
    static const char *const out[] = {"GET", "HEAD", "POST"};
    assert_allow(f->allow, out, 3);

    assert_int_equal(match(f, "PUT", "/executions/e/input"), CRT_ROUTE_BAD_METHOD);
    assert_string_equal(f->allow, "GET, HEAD");

    assert_int_equal(match(f, "GET", "/executions/e/variables/k/increment"), CRT_ROUTE_BAD_METHOD);
    assert_string_equal(f->allow, "POST");

    /* Methods are case-sensitive tokens. */
    assert_int_equal(match(f, "get", "/health"), CRT_ROUTE_BAD_METHOD);
    assert_string_equal(f->allow, "GET, HEAD");
}

/* An empty capture matches its route with an empty param, so the handler
 * can answer 400 invalid_key rather than 404 (lead's decision, commit
 * 5630b4e "empty keys reach the handler"). */
static void test_empty_capture(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "GET", "/executions/e/variables/"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_get);
    assert_int_equal(f->req.nparams, 2);
    ASSERT_PARAM(f, 0, "e");
    ASSERT_PARAM(f, 1, "");

    assert_int_equal(match(f, "PUT", "/executions/e/variables/"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_put);
    ASSERT_PARAM(f, 1, "");

    assert_int_equal(match(f, "POST", "/executions/e/variables//increment"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_var_incr);
    ASSERT_PARAM(f, 0, "e");
    ASSERT_PARAM(f, 1, "");

    assert_int_equal(match(f, "GET", "/executions//input"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_input);
    assert_int_equal(f->req.nparams, 1);
    ASSERT_PARAM(f, 0, "");

    /* An empty capture still needs the method: 405 with Allow. */
    assert_int_equal(match(f, "PATCH", "/executions/e/variables/"), CRT_ROUTE_BAD_METHOD);
    static const char *const var[] = {"GET", "HEAD", "PUT", "DELETE"};
    assert_allow(f->allow, var, 4);

    /* An empty literal segment is not a capture. */
    assert_int_equal(match(f, "GET", "/executions/e//k"), CRT_ROUTE_NOT_FOUND);
    assert_int_equal(match(f, "GET", "//health"), CRT_ROUTE_NOT_FOUND);

    /* An encoded space is a one-byte param. */
    assert_int_equal(match(f, "GET", "/executions/%20/input"), CRT_ROUTE_FOUND);
    ASSERT_PARAM(f, 0, " ");
}

static void test_query_not_part_of_path(void **state)
{
    fixture *f = *state;
    assert_int_equal(match(f, "GET", "/executions/e9/input?field=a.b&x=1"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_input);
    ASSERT_PARAM(f, 0, "e9");
    assert_int_equal(f->req.query.len, strlen("field=a.b&x=1"));
    assert_memory_equal(f->req.query.p, "field=a.b&x=1", f->req.query.len);

    assert_int_equal(match(f, "GET", "/health?"), CRT_ROUTE_FOUND);
    assert_ptr_equal(f->ctx, &ctx_health);
}

/* The decoder used for paths and query values. */
static void test_percent_decode_fn(void **state)
{
    (void)state;
    static const struct { const char *in; bool plus; const char *out; size_t outlen; } cases[] = {
        {"a+b%2Bc", true, "a b+c", 5},
        {"a+b%2Bc", false, "a+b+c", 5},
        {"%41%42%43", false, "ABC", 3},
        {"%e2%9c%93", false, "\xE2\x9C\x93", 3},
        {"%2", false, "%2", 2},
        {"%%41", false, "%A", 2},
        {"%252F", false, "%2F", 3},
        {"", false, "", 0},
        {"%FF", false, "\xFF", 1},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++) {
        crt_buf out;
        crt_buf_init(&out);
        crt_buf_puts(&out, ">");
        crt_percent_decode(cases[i].in, strlen(cases[i].in), &out, cases[i].plus);
        if (out.len != cases[i].outlen + 1 || memcmp(out.data + 1, cases[i].out, cases[i].outlen) != 0)
            fail_msg("\"%s\": got \"%.*s\"", cases[i].in, (int)out.len - 1, out.data + 1);
        assert_int_equal(out.data[0], '>');
        crt_buf_fini(&out);
    }

    /* Only n bytes are read: an escape cut by the length stays literal. */
    static const struct { const char *in; size_t n; const char *out; size_t outlen; } cut[] = {
        {"%41", 2, "%4", 2},
        {"%41", 1, "%", 1},
        {"a%2F", 3, "a%2", 3},
        {"%2F%41", 5, "/%4", 3},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cut); i++) {
        crt_buf out;
        crt_buf_init(&out);
        crt_percent_decode(cut[i].in, cut[i].n, &out, false);
        if (out.len != cut[i].outlen || memcmp(out.data, cut[i].out, cut[i].outlen) != 0)
            fail_msg("\"%.*s\": got \"%.*s\"", (int)cut[i].n, cut[i].in, (int)out.len, out.data);
        crt_buf_fini(&out);
    }
}

/* Several routes for one path: each method once in Allow; the first route
 * that fits wins. */
static void test_allow_no_duplicates(void **state)
{
    (void)state;
    crt_router *r = crt_router_new();
    assert_non_null(r);
    assert_int_equal(crt_router_add(r, "GET", "/a/b", h_api, NULL), 0);
    assert_int_equal(crt_router_add(r, "GET", "/a/{x}", h_api, NULL), 0);
    assert_int_equal(crt_router_add(r, "PUT", "/a/{x}", h_api, NULL), 0);
    assert_int_equal(crt_router_add(r, "PUT", "/{y}/b", h_api, NULL), 0);
    static crt_req req; /* large: not on the stack */
    memset(&req, 0, sizeof req);
    crt_buf_init(&req.scratch);
    req.method_name = CRT_SPAN_LIT("POST");
    req.path = CRT_SPAN_LIT("/a/b");
    crt_handler_fn fn = NULL;
    void *ctx = NULL;
    char allow[64];
    assert_int_equal(crt_router_match(r, &req, &fn, &ctx, allow, sizeof allow), CRT_ROUTE_BAD_METHOD);
    static const char *const want[] = {"GET", "HEAD", "PUT"};
    assert_allow(allow, want, 3);

    req.method_name = CRT_SPAN_LIT("GET");
    assert_int_equal(crt_router_match(r, &req, &fn, &ctx, allow, sizeof allow), CRT_ROUTE_FOUND);
    assert_int_equal(req.route_id, 0);
    assert_int_equal(req.nparams, 0);

    req.method_name = CRT_SPAN_LIT("PUT");
    assert_int_equal(crt_router_match(r, &req, &fn, &ctx, allow, sizeof allow), CRT_ROUTE_FOUND);
    assert_int_equal(req.route_id, 2);
    assert_int_equal(req.nparams, 1);
    assert_int_equal(req.params[0].len, 1);
    assert_memory_equal(req.params[0].p, "b", 1);
    crt_buf_fini(&req.scratch);
    crt_router_free(r);
}

static void test_router_limits(void **state)
{
    (void)state;
    crt_router *r = crt_router_new();
    assert_non_null(r);
    /* Too many segments, over-long method: refused at registration. */
    assert_int_not_equal(crt_router_add(r, "GET", "/a/b/c/d/e/f/g/h/i", h_api, NULL), 0);
    assert_int_not_equal(crt_router_add(r, "VERYLONGMETHOD", "/a", h_api, NULL), 0);
    assert_int_equal(crt_router_count(r), 0);
    assert_int_equal(crt_router_add(r, "GET", "/a/{x}/{y}/{z}", h_api, NULL), 0);
    assert_int_equal(crt_router_count(r), 1);
    crt_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_percent_decoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_params_in_scratch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_matches_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_capture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_not_part_of_path, setup, teardown),
        cmocka_unit_test(test_percent_decode_fn),
        cmocka_unit_test(test_allow_no_duplicates),
        cmocka_unit_test(test_router_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
