/* Unit tests for src/cache/ratelimit_valkey.c: reading the GCRA script's
 * answer (microseconds rounded up to the whole seconds of the headers, a
 * refusal's Retry-After at least 1 s, anything malformed refused) and the
 * local path when no Valkey is configured. The script itself runs against a
 * real redis-server in tests/production/test_valkey_ratelimit.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/ratelimit_valkey.h"

static bool parse(const char *s, crt_rl_result *r) { return crt_rlv_parse(s, strlen(s), 60, r); }

static void test_parse_allowed(void **state)
{
    (void)state;
    crt_rl_result r;
    /* burst 5, one token a second: the first take leaves 4, full again in 1 s */
    assert_true(parse("1 4 1000000 0", &r));
    assert_true(r.allowed);
    assert_int_equal(r.limit, 60);
    assert_int_equal(r.remaining, 4);
    assert_int_equal(r.reset_s, 1);
    assert_int_equal(r.retry_after_s, 0);
    /* partial seconds round up: 4.000001 s -> 5 */
    assert_true(parse("1 0 4000001 0", &r));
    assert_int_equal(r.reset_s, 5);
    assert_true(parse("1 7 0 0", &r));
    assert_int_equal(r.reset_s, 0);
}

static void test_parse_refused(void **state)
{
    (void)state;
    crt_rl_result r;
    assert_true(parse("0 0 5000000 999999", &r));
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_s, 5);
    assert_int_equal(r.retry_after_s, 1);
    /* a retry of 0 (a token arrives this very microsecond) still says 1 s */
    assert_true(parse("0 0 1 0", &r));
    assert_int_equal(r.retry_after_s, 1);
    assert_true(parse("0 0 60000000 2000001", &r));
    assert_int_equal(r.retry_after_s, 3);
}

static void test_parse_garbage(void **state)
{
    (void)state;
    crt_rl_result r;
    static const char *const bad[] = {"", "1", "1 2 3", "1 2 3 4 5", "2 0 0 0", "-1 0 0 0", "1 a 0 0",
                                      "1  2 3 4", "1 2 3 4 ", " 1 2 3 4", "1 2 3 99999999999999999999999",
                                      "1e3 0 0 0", "NOSCRIPT No matching script"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &r))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(crt_rlv_parse(NULL, 0, 60, &r));
}

static void test_local_without_valkey(void **state)
{
    (void)state;
    crt_rlv_opts o = {.cache = NULL, .prefix = "cronium:exec:{", .suffix = "}:rl", .per_min = 60, .burst = 2,
                      .max_local_keys = 10};
    crt_rlv *l = crt_rlv_new(&o);
    assert_non_null(l);
    assert_string_equal(crt_rlv_mode(l), "local");
    crt_rlv_call call;
    crt_rl_result r;
    assert_true(crt_rlv_take(l, &call, "e1", 2, 1000, &r, NULL, NULL));
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 1);
    assert_true(crt_rlv_take(l, &call, "e1", 2, 1000, &r, NULL, NULL));
    assert_true(crt_rlv_take(l, &call, "e1", 2, 1000, &r, NULL, NULL));
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1);
    crt_rlv_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_allowed),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_parse_garbage),
        cmocka_unit_test(test_local_without_valkey),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
