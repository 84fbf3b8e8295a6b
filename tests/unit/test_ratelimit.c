/* Unit tests for src/common/ratelimit.c: token buckets with an explicit
 * clock, Retry-After / Reset / remaining, independent keys, the bound on the
 * number of buckets and the incremental reclaim of idle full buckets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/ratelimit.h"

static crt_rl_result take(crt_ratelimit *rl, const char *key, uint64_t now_ms, unsigned cost)
{
    return crt_ratelimit_take(rl, key, strlen(key), now_ms, cost);
}

#define ASSERT_RL(r, allowed_, remaining_, reset_, retry_)                                              \
    do {                                                                                               \
        crt_rl_result r_ = (r);                                                                        \
        if (r_.allowed != (allowed_) || r_.remaining != (remaining_) || r_.reset_s != (reset_) ||      \
            (!r_.allowed && r_.retry_after_s != (retry_)))                                             \
            fail_msg("got allowed=%d remaining=%llu reset=%llu retry=%llu; want %d %llu %llu %llu",    \
                     r_.allowed, (unsigned long long)r_.remaining, (unsigned long long)r_.reset_s,     \
                     (unsigned long long)r_.retry_after_s, (int)(allowed_),                            \
                     (unsigned long long)(remaining_), (unsigned long long)(reset_),                   \
                     (unsigned long long)(retry_));                                                    \
    } while (0)

static void test_burst_then_refused(void **state)
{
    (void)state;
    /* 60 per minute: one token a second; bucket of 5. */
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 100);
    assert_non_null(rl);
    const uint64_t t0 = 1000000;
    for (unsigned i = 1; i <= 5; i++) {
        crt_rl_result r = take(rl, "exec-a", t0, 1);
        assert_int_equal(r.limit, 60);
        ASSERT_RL(r, true, 5 - i, i, 0); /* i tokens missing: full again in i seconds */
    }
    crt_rl_result r = take(rl, "exec-a", t0, 1);
    assert_int_equal(r.limit, 60);
    ASSERT_RL(r, false, 0, 5, 1);
    /* A refusal takes nothing. */
    ASSERT_RL(take(rl, "exec-a", t0, 1), false, 0, 5, 1);
    assert_int_equal(crt_ratelimit_size(rl), 1);
    crt_ratelimit_free(rl);
}

static void test_refill_by_time(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 100);
    const uint64_t t0 = 50000;
    for (int i = 0; i < 5; i++)
        assert_true(take(rl, "k", t0, 1).allowed);
    ASSERT_RL(take(rl, "k", t0 + 999, 1), false, 0, 5, 1);  /* 0.999 tokens: not yet */
    ASSERT_RL(take(rl, "k", t0 + 1000, 1), true, 0, 5, 0);  /* one token back, used at once */
    ASSERT_RL(take(rl, "k", t0 + 3500, 1), true, 1, 4, 0);  /* 2.5 back, 1.5 left */
    /* Refill stops at the bucket size. */
    ASSERT_RL(take(rl, "k", t0 + 3600 * 1000, 1), true, 4, 1, 0);
    /* The clock going backwards neither adds nor removes tokens. */
    ASSERT_RL(take(rl, "k", t0, 1), true, 3, 2, 0);
    crt_ratelimit_free(rl);
}

static void test_retry_after(void **state)
{
    (void)state;
    /* 30 per minute: a token every 2 s. */
    crt_ratelimit *rl = crt_ratelimit_new(30, 2, 100);
    const uint64_t t0 = 7000;
    ASSERT_RL(take(rl, "k", t0, 1), true, 1, 2, 0);
    ASSERT_RL(take(rl, "k", t0, 1), true, 0, 4, 0);
    ASSERT_RL(take(rl, "k", t0, 1), false, 0, 4, 2);
    ASSERT_RL(take(rl, "k", t0 + 500, 1), false, 0, 4, 2);     /* 1.5 s to go: rounded up */
    ASSERT_RL(take(rl, "k", t0 + 1000, 1), false, 0, 3, 1);    /* half a token: 1 s to go */
    ASSERT_RL(take(rl, "k", t0 + 1900, 1), false, 0, 3, 1);    /* 0.1 s to go: rounded up */
    ASSERT_RL(take(rl, "k", t0 + 2000, 1), true, 0, 4, 0);
    crt_ratelimit_free(rl);

    /* Slow rate: 1 per minute, Retry-After in whole seconds. */
    rl = crt_ratelimit_new(1, 1, 100);
    ASSERT_RL(take(rl, "k", 0, 1), true, 0, 60, 0);
    ASSERT_RL(take(rl, "k", 15000, 1), false, 0, 45, 45);
    crt_ratelimit_free(rl);
}

static void test_cost(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 100);
    /* cost 0 peeks: allowed, nothing taken. */
    ASSERT_RL(take(rl, "k", 0, 0), true, 5, 0, 0);
    ASSERT_RL(take(rl, "k", 0, 3), true, 2, 3, 0);
    ASSERT_RL(take(rl, "k", 0, 0), true, 2, 3, 0);
    /* More than there is: refused whole, time for the missing token. */
    ASSERT_RL(take(rl, "k", 0, 3), false, 2, 3, 1);
    ASSERT_RL(take(rl, "k", 0, 2), true, 0, 5, 0);
    crt_ratelimit_free(rl);
}

static void test_independent_keys(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 3, 100);
    for (int i = 0; i < 3; i++)
        assert_true(take(rl, "exec-a", 0, 1).allowed);
    assert_false(take(rl, "exec-a", 0, 1).allowed);
    ASSERT_RL(take(rl, "exec-b", 0, 1), true, 2, 1, 0);
    ASSERT_RL(take(rl, "exec-a1", 0, 1), true, 2, 1, 0);   /* longer key with the same prefix */
    ASSERT_RL(take(rl, "exec-", 0, 1), true, 2, 1, 0);     /* shorter one */
    /* Keys are byte strings with a length: an embedded NUL makes another key. */
    ASSERT_RL(crt_ratelimit_take(rl, "exec-a\0x", 8, 0, 1), true, 2, 1, 0);
    assert_false(take(rl, "exec-a", 0, 1).allowed);
    assert_int_equal(crt_ratelimit_size(rl), 5);
    crt_ratelimit_free(rl);
}

static void test_bounded_keys(void **state)
{
    (void)state;
    enum { MAX = 16 };
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, MAX);
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof key, "client-%d", i);
        /* Each key is new: a fresh, full bucket even when the table is full. */
        ASSERT_RL(take(rl, key, 0, 1), true, 4, 1, 0);
        size_t n = crt_ratelimit_size(rl);
        if (n > MAX)
            fail_msg("after %d keys: %zu buckets, bound %d", i + 1, n, MAX);
    }
    assert_true(crt_ratelimit_size(rl) >= 1);
    /* A key still in the table keeps its state. */
    char last[32];
    snprintf(last, sizeof last, "client-%d", 999);
    ASSERT_RL(take(rl, last, 0, 1), true, 3, 2, 0);
    crt_ratelimit_free(rl);
}

static void test_idle_reclaimed_incrementally(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 1000);
    enum { N = 50 };
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "idle-%d", i);
        assert_true(take(rl, key, 0, 1).allowed);
    }
    assert_int_equal(crt_ratelimit_size(rl), N);

    /* An hour later all of them are full again. One call frees a few, not all. */
    const uint64_t later = 3600 * 1000;
    assert_true(take(rl, "active", later, 1).allowed);
    size_t n1 = crt_ratelimit_size(rl);
    if (n1 < N - 2 + 1 || n1 > N + 1)
        fail_msg("one call went from %d to %zu buckets: not incremental", N, n1);

    size_t prev = n1;
    for (int i = 0; i < 400; i++) {
        take(rl, "active", later, 0);
        size_t n = crt_ratelimit_size(rl);
        assert_true(n <= prev);
        assert_true(prev - n <= 2);
        prev = n;
    }
    /* Only the active key is left. */
    assert_int_equal(crt_ratelimit_size(rl), 1);
    ASSERT_RL(take(rl, "active", later, 1), true, 3, 2, 0);
    crt_ratelimit_free(rl);
}

static void test_peek_creates_no_bucket(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 1000);
    crt_rl_result r = take(rl, "never-failed", 0, 0);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 5);
    assert_int_equal(crt_ratelimit_size(rl), 0);
    crt_ratelimit_free(rl);
}

static void test_busy_buckets_not_reclaimed(void **state)
{
    (void)state;
    crt_ratelimit *rl = crt_ratelimit_new(60, 5, 1000);
    enum { N = 10 };
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "busy-%d", i);
        for (int k = 0; k < 5; k++)
            assert_true(take(rl, key, 0, 1).allowed);
    }
    /* Two seconds later they hold 2 tokens: not full, so not reclaimable
     * however many calls (each moves the clock hand) come meanwhile. */
    for (int i = 0; i < 200; i++)
        take(rl, "other", 2000, 1);
    assert_int_equal(crt_ratelimit_size(rl), N + 1);
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "busy-%d", i);
        ASSERT_RL(take(rl, key, 2000, 1), true, 1, 4, 0);
    }
    crt_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refused),
        cmocka_unit_test(test_refill_by_time),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_independent_keys),
        cmocka_unit_test(test_bounded_keys),
        cmocka_unit_test(test_idle_reclaimed_incrementally),
        cmocka_unit_test(test_busy_buckets_not_reclaimed),
        cmocka_unit_test(test_peek_creates_no_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
