/* Unit tests for crt_key_valid (src/api/keys.c), the docs/api.md §3 key
 * rule: 1–255 bytes of UTF-8 without control characters, and not "." or "..". */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/keys.h"

typedef struct key_case {
    const char *name;
    const char *k;
    size_t n;
} key_case;

#define K(name, lit) {(name), (lit), sizeof(lit) - 1}

static void check_all(const key_case *cases, size_t n, bool want)
{
    char msg[2048] = "";
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (crt_key_valid(cases[i].k, cases[i].n) != want && used < sizeof msg)
            used += (size_t)snprintf(msg + used, sizeof msg - used, " [%s]", cases[i].name);
    }
    if (used)
        fail_msg("%s:%s", want ? "rejected but valid" : "accepted but invalid", msg);
}

static void test_valid_keys(void **state)
{
    (void)state;
    static const key_case ok[] = {
        K("one byte", "a"),
        K("word", "counter"),
        K("punctuation", "my-key_1.v2:x@y"),
        K("slash", "a/b"),
        K("space inside", "with space"),
        K("percent", "100%"),
        K("quote and backslash", "\"q\"\\"),
        K("2-byte UTF-8", "caf\xC3\xA9"),
        K("NBSP U+00A0 (first after C1)", "\xC2\xA0"),
        K("3-byte UTF-8", "\xE2\x82\xAC"),
        K("U+FFFD", "\xEF\xBF\xBD"),
        K("4-byte emoji", "\xF0\x9F\x98\x80"),
        K("emoji in text", "key-\xF0\x9F\x94\x91-1"),
        K("U+10FFFF", "\xF4\x8F\xBF\xBF"),
        K("U+D7FF (below surrogates)", "\xED\x9F\xBF"),
        K("U+E000 (above surrogates)", "\xEE\x80\x80"),
        K("tilde (0x7E)", "~"),
    };
    check_all(ok, CRT_ARRAY_LEN(ok), true);
}

static void test_invalid_keys(void **state)
{
    (void)state;
    static const key_case bad[] = {
        {"empty", "", 0},
        K("NUL", "a\0b"),
        K("SOH", "\x01"),
        K("tab", "a\tb"),
        K("newline", "a\n"),
        K("CR", "\r"),
        K("unit separator 0x1F", "\x1f"),
        K("escape", "\x1b[0m"),
        K("DEL", "a\x7f"),
        K("U+0080 (C1)", "\xC2\x80"),
        K("U+0085 NEL (C1)", "a\xC2\x85" "b"),
        K("U+009F (C1)", "\xC2\x9F"),
        K("lone continuation", "\x80"),
        K("0xFF", "\xff"),
        K("0xFE", "\xfe"),
        K("truncated 2-byte", "\xC3"),
        K("truncated 3-byte", "\xE2\x82"),
        K("truncated 4-byte", "\xF0\x9F\x98"),
        K("bad continuation", "\xC3(" ),
        K("overlong '/' 2-byte", "\xC0\xAF"),
        K("overlong NUL 2-byte", "\xC0\x80"),
        K("overlong 0xC1", "\xC1\xBF"),
        K("overlong 3-byte", "\xE0\x80\xAF"),
        K("overlong 3-byte U+07FF", "\xE0\x9F\xBF"),
        K("overlong 4-byte", "\xF0\x80\x80\xAF"),
        K("overlong 4-byte U+FFFF", "\xF0\x8F\xBF\xBF"),
        K("surrogate U+D800", "\xED\xA0\x80"),
        K("surrogate U+DFFF", "\xED\xBF\xBF"),
        K("surrogate pair as CESU-8", "\xED\xA0\xBD\xED\xB8\x80"),
        K("above U+10FFFF", "\xF4\x90\x80\x80"),
        K("0xF5 lead", "\xF5\x80\x80\x80"),
        K("5-byte form", "\xF8\x88\x80\x80\x80"),
        K("valid then invalid", "ok\xE2\x82\xAC\xff"),
    };
    check_all(bad, CRT_ARRAY_LEN(bad), false);
}

static void test_length_bounds(void **state)
{
    (void)state;
    char k[300];
    memset(k, 'k', sizeof k);
    assert_true(crt_key_valid(k, 1));
    assert_true(crt_key_valid(k, 255));
    assert_false(crt_key_valid(k, 256));
    assert_false(crt_key_valid(k, 300));
    assert_false(crt_key_valid(k, 0));

    /* The bound is in bytes, not characters: 85 three-byte characters are 255 bytes. */
    char e[300];
    for (int i = 0; i < 86; i++)
        memcpy(e + i * 3, "\xE2\x82\xAC", 3);
    assert_true(crt_key_valid(e, 255));
    assert_false(crt_key_valid(e, 258));

    /* A 4-byte character ending exactly at byte 255, and one crossing it. */
    memset(k, 'k', sizeof k);
    memcpy(k + 251, "\xF0\x9F\x98\x80", 4);
    assert_true(crt_key_valid(k, 255));
    memset(k, 'k', sizeof k);
    memcpy(k + 252, "\xF0\x9F\x98\x80", 4);
    assert_false(crt_key_valid(k, 256));
    /* Cut inside a character by the length given. */
    assert_false(crt_key_valid(k, 254));

    /* Only n bytes are looked at. */
    assert_true(crt_key_valid("ab\n", 2));
    assert_true(crt_key_valid("a\xff", 1));
}

/* "." and ".." are path dot segments: a URL library removes them, so such a key
 * would reach another backend route (issue 9 #4). Other dotted keys are fine. */
static void test_dot_segment_keys(void **state)
{
    (void)state;
    static const key_case bad[] = {K("dot", "."), K("dot dot", "..")};
    check_all(bad, CRT_ARRAY_LEN(bad), false);
    static const key_case ok[] = {
        K("three dots", "..."), K("leading dot", ".hidden"), K("trailing dot", "a."),
        K("dot dot prefix", "..a"), K("dot dot suffix", "a.."), K("dot slash", "./"),
        K("slash dot dot", "a/.."),
    };
    check_all(ok, CRT_ARRAY_LEN(ok), true);
    assert_false(crt_key_valid("..x", 2));   /* only n bytes are looked at */
    assert_true(crt_key_valid("..x", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_keys),
        cmocka_unit_test(test_invalid_keys),
        cmocka_unit_test(test_length_bounds),
        cmocka_unit_test(test_dot_segment_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
