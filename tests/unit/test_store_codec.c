/* Unit tests for the production store's pure parts (src/store/codec.c):
 * the §6 value codec (PUT body, read-back form, variable replies), the
 * cached-context check, and the Valkey key and backend route schema.
 * (tests/unit/test_keys.c covers the API's key rule, crt_key_valid.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/store_codec.h"

#define LIT(s) (s), sizeof(s) - 1

static void expect_buf(const crt_buf *b, const char *want)
{
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->data, want, b->len);
}

static void check_put_body(const char *v, size_t n, const char *want)
{
    crt_buf b;
    crt_buf_init(&b);
    crt_store_put_body(v, n, &b);
    expect_buf(&b, want);
    crt_buf_fini(&b);
}

static void test_put_body(void **state)
{
    (void)state;
    check_put_body(LIT("\"hello\""), "{\"value\":\"hello\"}");
    check_put_body(LIT("42"), "{\"value\":\"42\"}");
    check_put_body(LIT("1.50"), "{\"value\":\"1.50\"}");
    check_put_body(LIT("true"), "{\"value\":\"true\"}");
    check_put_body(LIT("null"), "{\"value\":\"null\"}");
    check_put_body(LIT("{\"a\":[1,\"x\"]}"), "{\"value\":\"{\\\"a\\\":[1,\\\"x\\\"]}\"}");
    check_put_body(LIT("\"\\u00e9\\n\""), "{\"value\":\"\\u00e9\\n\"}");
}

static void check_read_back(const char *v, size_t n, const char *want)
{
    crt_buf b;
    crt_buf_init(&b);
    crt_buf_puts(&b, "prefix:");      /* appends, keeps what is there */
    crt_store_read_back(v, n, &b);
    size_t plen = strlen("prefix:");
    assert_true(b.len >= plen);
    assert_memory_equal(b.data, "prefix:", plen);
    assert_int_equal(b.len - plen, strlen(want));
    assert_memory_equal(b.data + plen, want, b.len - plen);
    crt_buf_fini(&b);
}

static void test_read_back(void **state)
{
    (void)state;
    /* Non-strings read back as themselves. */
    check_read_back(LIT("42"), "42");
    check_read_back(LIT("{\"a\":1}"), "{\"a\":1}");
    check_read_back(LIT("null"), "null");
    /* A string whose text spells a non-string JSON value reads back as it. */
    check_read_back(LIT("\"42\""), "42");
    check_read_back(LIT("\"1.50\""), "1.50");
    check_read_back(LIT("\"true\""), "true");
    check_read_back(LIT("\"null\""), "null");
    check_read_back(LIT("\"{\\\"a\\\": [1, 2]}\""), "{\"a\":[1,2]}");
    check_read_back(LIT("\" 7 \""), "7");
    /* Anything else stays the string. */
    check_read_back(LIT("\"hello\""), "\"hello\"");
    check_read_back(LIT("\"\""), "\"\"");
    check_read_back(LIT("\"\\\"quoted\\\"\""), "\"\\\"quoted\\\"\"");
    check_read_back(LIT("\"{not json\""), "\"{not json\"");
    check_read_back(LIT("\"12abc\""), "\"12abc\"");
}

/* PUT then read back: what a script writes is what it reads (§6). */
static void test_round_trip(void **state)
{
    (void)state;
    static const char *const values[] = {"42", "-0.5e3", "true", "false", "null", "[1,{\"b\":\"c\"}]",
                                         "{\"k\":\"v\"}", "\"text\"", "\"\""};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        crt_buf body, back;
        crt_buf_init(&body);
        crt_buf_init(&back);
        crt_store_put_body(values[i], strlen(values[i]), &body);
        assert_int_equal(crt_store_var_reply(body.data, body.len, &back), 0);
        expect_buf(&back, values[i]);
        crt_buf_fini(&body);
        crt_buf_fini(&back);
    }
}

static void test_var_reply(void **state)
{
    (void)state;
    crt_buf b;
    crt_buf_init(&b);
    assert_int_equal(crt_store_var_reply(LIT("{\"key\":\"k\",\"value\":\"12\",\"updatedAt\":null}"), &b), 0);
    expect_buf(&b, "12");
    crt_buf_reset(&b);
    assert_int_equal(crt_store_var_reply(LIT(" { \"value\" : { \"x\" : 1 } } "), &b), 0);
    expect_buf(&b, "{\"x\":1}");
    crt_buf_reset(&b);
    assert_int_equal(crt_store_var_reply(LIT("{\"key\":\"k\"}"), &b), CRT_EINVAL);
    assert_int_equal(crt_store_var_reply(LIT("[1]"), &b), CRT_EINVAL);
    assert_int_equal(crt_store_var_reply(LIT("{\"value\":"), &b), CRT_EINVAL);
    assert_int_equal(crt_store_var_reply(LIT(""), &b), CRT_EINVAL);
    assert_int_equal(crt_store_var_reply(LIT("{\"value\":1,\"value\":2}"), &b), CRT_EINVAL);
    assert_int_equal(b.len, 0);
    crt_buf_fini(&b);
}

static void test_context_ok(void **state)
{
    (void)state;
    assert_true(crt_store_context_ok(LIT("{\"executionId\":\"e1\",\"userId\":\"u\"}"), "e1"));
    assert_true(crt_store_context_ok(LIT("{\"userId\":\"u\"}"), "e1"));
    assert_true(crt_store_context_ok(LIT("{\"executionId\":null}"), "e1"));
    assert_false(crt_store_context_ok(LIT("{\"executionId\":\"e2\"}"), "e1"));
    assert_false(crt_store_context_ok(LIT("{\"executionId\":\"e1x\"}"), "e1"));
    assert_false(crt_store_context_ok(LIT("{\"executionId\":1}"), "1"));
    assert_false(crt_store_context_ok(LIT("[]"), "e1"));
    assert_false(crt_store_context_ok(LIT("not json"), "e1"));
    assert_false(crt_store_context_ok(LIT("{\"executionId\":\"e1\""), "e1"));
}

static void test_valkey_keys(void **state)
{
    (void)state;
    crt_buf b;
    crt_buf_init(&b);
    crt_buf_puts(&b, "old contents");   /* each key replaces what was there */
    crt_store_key_exec(&b, "e-1", "context");
    expect_buf(&b, "cronium:exec:{e-1}:context");
    crt_store_key_exec(&b, "e-1", "output");
    expect_buf(&b, "cronium:exec:{e-1}:output");
    crt_store_key_exec(&b, "e-1", "condition");
    expect_buf(&b, "cronium:exec:{e-1}:condition");
    crt_store_key_var(&b, "u7", LIT("my key"));
    expect_buf(&b, "cronium:user:{u7}:var:my key");
    crt_store_key_lock(&b, "u7", LIT("my key"));
    expect_buf(&b, "cronium:user:{u7}:lock:my key");
    /* The key length is what counts (keys are not NUL-terminated). */
    crt_store_key_var(&b, "u7", "abcdef", 3);
    expect_buf(&b, "cronium:user:{u7}:var:abc");
    crt_buf_fini(&b);
}

static void test_backend_routes(void **state)
{
    (void)state;
    crt_buf b;
    crt_buf_init(&b);
    crt_store_path_var(&b, "u7", LIT("a/b c"));
    expect_buf(&b, "/api/internal/variables/u7/a%2Fb%20c");
    crt_buf_reset(&b);
    crt_store_path_exec(&b, "e-1", "context");
    expect_buf(&b, "/api/internal/executions/e-1/context");
    crt_buf_reset(&b);
    crt_store_path_exec(&b, "e/1", "output");
    expect_buf(&b, "/api/internal/executions/e%2F1/output");
    crt_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_body),    cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_round_trip),  cmocka_unit_test(test_var_reply),
        cmocka_unit_test(test_context_ok),  cmocka_unit_test(test_valkey_keys),
        cmocka_unit_test(test_backend_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
