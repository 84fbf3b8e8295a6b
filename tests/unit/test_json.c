/* Unit tests for src/common/json.c: strict validation + compaction that keeps
 * numbers and strings byte-exact, object slots, unquoting, number addition. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/json.h"

/* ---- crt_json_compact -------------------------------------------------------- */

static void compact_ok(const char *in, size_t n, const char *want)
{
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, "#"); /* appends after what is there */
    int rc = crt_json_compact(in, n, &out);
    if (rc != 0)
        fail_msg("rejected (rc %d): %.*s", rc, (int)n, in);
    size_t wl = strlen(want);
    if (out.len != wl + 1 || memcmp(out.data + 1, want, wl) != 0)
        fail_msg("input %.*s\n got  %.*s\n want %s", (int)n, in, (int)out.len - 1, out.data + 1, want);
    crt_buf_fini(&out);
}
#define COMPACT_OK(in, want) compact_ok((in), sizeof(in) - 1, (want))

static void compact_bad(const char *in, size_t n)
{
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, "keep");
    int rc = crt_json_compact(in, n, &out);
    if (rc != CRT_EINVAL)
        fail_msg("accepted (rc %d): %.*s -> %.*s", rc, (int)n, in, (int)out.len, out.data);
    /* Nothing of a rejected value is left behind. */
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 4);
    crt_buf_fini(&out);
}
#define COMPACT_BAD(in) compact_bad((in), sizeof(in) - 1)

static void test_compact_whitespace(void **state)
{
    (void)state;
    COMPACT_OK(" { \"a\" : [ 1 , 2 , { } , [ ] ] ,\n\t\"b\" :\r\n null } ", "{\"a\":[1,2,{},[]],\"b\":null}");
    COMPACT_OK("true", "true");
    COMPACT_OK(" false ", "false");
    COMPACT_OK("null", "null");
    COMPACT_OK("\"  spaces  inside  \"", "\"  spaces  inside  \"");
    COMPACT_OK("[ \"a , b\" , \"{ }\" ]", "[\"a , b\",\"{ }\"]");
    COMPACT_OK("{\"k\":{\"k\":{\"k\":[true,false,null]}}}", "{\"k\":{\"k\":{\"k\":[true,false,null]}}}");
}

static void test_compact_numbers_exact(void **state)
{
    (void)state;
    COMPACT_OK("2.50", "2.50");
    COMPACT_OK("1e400", "1e400");
    COMPACT_OK("12345678901234567890123", "12345678901234567890123");
    COMPACT_OK("-0", "-0");
    COMPACT_OK("0", "0");
    COMPACT_OK("-0.0e-0", "-0.0e-0");
    COMPACT_OK("1E+2", "1E+2");
    COMPACT_OK("[ 1.000 , -12.5e10 ]", "[1.000,-12.5e10]");
    COMPACT_OK("0.1", "0.1");
    COMPACT_OK("{\"n\": 100000000000000000000000000000.0000000001}", "{\"n\":100000000000000000000000000000.0000000001}");
}

static void test_compact_strings_exact(void **state)
{
    (void)state;
    /* Escapes are kept as written, not normalized. */
    COMPACT_OK("\"\\u00e9\\/\\n\\\"\\\\\"", "\"\\u00e9\\/\\n\\\"\\\\\"");
    COMPACT_OK("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"", "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"");
    COMPACT_OK("\"\\ud83d\\ude00\"", "\"\\ud83d\\ude00\"");
    COMPACT_OK("\"\\u0000\"", "\"\\u0000\"");
    COMPACT_OK("\"\x7f\"", "\"\x7f\"");
}

static void test_compact_rejects(void **state)
{
    (void)state;
    COMPACT_BAD("");
    COMPACT_BAD("   ");
    COMPACT_BAD("{} x");
    COMPACT_BAD("1 2");
    COMPACT_BAD("[1,]");
    COMPACT_BAD("[,1]");
    COMPACT_BAD("{\"a\":1,}");
    COMPACT_BAD("{\"a\" 1}");
    COMPACT_BAD("{a:1}");
    COMPACT_BAD("{\"a\":}");
    COMPACT_BAD("[1");
    COMPACT_BAD("\"open");
    COMPACT_BAD("tru");
    COMPACT_BAD("True");
    COMPACT_BAD("nul");
    COMPACT_BAD("undefined");
    COMPACT_BAD("'x'");
    /* numbers */
    COMPACT_BAD("01");
    COMPACT_BAD("-01");
    COMPACT_BAD("00");
    COMPACT_BAD("+1");
    COMPACT_BAD("1.");
    COMPACT_BAD(".5");
    COMPACT_BAD("1e");
    COMPACT_BAD("1e+");
    COMPACT_BAD("-");
    COMPACT_BAD("0x10");
    COMPACT_BAD("NaN");
    COMPACT_BAD("Infinity");
    COMPACT_BAD("-Infinity");
    /* strings: escapes */
    COMPACT_BAD("\"\\x41\"");
    COMPACT_BAD("\"\\a\"");
    COMPACT_BAD("\"\\u12\"");
    COMPACT_BAD("\"\\u12G4\"");
    COMPACT_BAD("\"\\\"");
    COMPACT_BAD("\"abc\\");
    /* lone surrogates */
    COMPACT_BAD("\"\\ud83d\"");
    COMPACT_BAD("\"\\ud83dx\"");
    COMPACT_BAD("\"\\ud83d\\u0041\"");
    COMPACT_BAD("\"\\ude00\"");
    COMPACT_BAD("\"\\ude00\\ud83d\"");
    /* invalid UTF-8 */
    COMPACT_BAD("\"\xff\"");
    COMPACT_BAD("\"\x80\"");
    COMPACT_BAD("\"\xC3\"");
    COMPACT_BAD("\"\xC0\xAF\"");
    COMPACT_BAD("\"\xE0\x80\xAF\"");
    COMPACT_BAD("\"\xED\xA0\x80\"");
    COMPACT_BAD("\"\xF4\x90\x80\x80\"");
    COMPACT_BAD("\"\xF8\x88\x80\x80\x80\"");
    /* control characters in strings */
    COMPACT_BAD("\"a\nb\"");
    COMPACT_BAD("\"a\tb\"");
    COMPACT_BAD("\"\x01\"");
    COMPACT_BAD("\"\x1f\"");
    COMPACT_BAD("\"a\0b\"");
    /* other whitespace is not JSON whitespace */
    COMPACT_BAD("\f1");
    COMPACT_BAD("\v1");
    COMPACT_BAD("\xC2\xA0" "1");
}

static char *nested(int depth, const char *inner)
{
    size_t il = strlen(inner);
    char *s = malloc((size_t)depth * 2 + il + 1);
    assert_non_null(s);
    memset(s, '[', (size_t)depth);
    memcpy(s + depth, inner, il);
    memset(s + depth + il, ']', (size_t)depth);
    s[depth * 2 + il] = '\0';
    return s;
}

static void test_compact_depth(void **state)
{
    (void)state;
    char *ok = nested(CRT_JSON_MAX_DEPTH, "");
    compact_ok(ok, strlen(ok), ok);
    free(ok);

    char *deep = nested(CRT_JSON_MAX_DEPTH + 1, "");
    compact_bad(deep, strlen(deep));
    free(deep);

    /* Far beyond the limit: refused, no stack exhaustion. */
    char *huge = nested(100000, "1");
    compact_bad(huge, strlen(huge));
    free(huge);

    /* Objects count too: 64 levels pass, 66 do not. */
    crt_buf s;
    crt_buf_init(&s);
    for (int i = 0; i < CRT_JSON_MAX_DEPTH - 1; i++)
        crt_buf_puts(&s, "{\"a\":");
    crt_buf_puts(&s, "{}");
    for (int i = 0; i < CRT_JSON_MAX_DEPTH - 1; i++)
        crt_buf_putc(&s, '}');
    const char *txt = crt_buf_cstr(&s);
    compact_ok(txt, s.len, txt);
    crt_buf_fini(&s);

    crt_buf_init(&s);
    for (int i = 0; i < CRT_JSON_MAX_DEPTH + 1; i++)
        crt_buf_puts(&s, "{\"a\":");
    crt_buf_puts(&s, "{}");
    for (int i = 0; i < CRT_JSON_MAX_DEPTH + 1; i++)
        crt_buf_putc(&s, '}');
    compact_bad(s.data, s.len);
    crt_buf_fini(&s);
}

/* ---- crt_json_object ---------------------------------------------------------------- */

static void test_object_slots(void **state)
{
    (void)state;
    static const char *const keys[] = {"value", "by", "missing", "e\xC3\xA9"};
    crt_json_slot found[4];
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, "XYZ");
    const char *in = "{ \"by\" : 2.50 , \"value\" : { \"x\" : [1, 2] }, \"other\": true, \"e\\u00e9\": \"s\" }";
    assert_int_equal(crt_json_object(in, strlen(in), &out, keys, found, 4), 0);
    const char *compact = "{\"by\":2.50,\"value\":{\"x\":[1,2]},\"other\":true,\"e\\u00e9\":\"s\"}";
    assert_int_equal(out.len, 3 + strlen(compact));
    assert_memory_equal(out.data + 3, compact, strlen(compact));

    /* value */
    assert_int_equal(found[0].len, strlen("{\"x\":[1,2]}"));
    assert_memory_equal(out.data + found[0].off, "{\"x\":[1,2]}", found[0].len);
    /* by */
    assert_int_equal(found[1].len, 4);
    assert_memory_equal(out.data + found[1].off, "2.50", 4);
    /* missing */
    assert_int_equal(found[2].len, 0);
    /* escaped key matches its decoded name */
    assert_int_equal(found[3].len, 3);
    assert_memory_equal(out.data + found[3].off, "\"s\"", 3);
    crt_buf_fini(&out);
}

static void test_object_nested_keys_not_top_level(void **state)
{
    (void)state;
    static const char *const keys[] = {"a"};
    crt_json_slot found[1];
    crt_buf out;
    crt_buf_init(&out);
    const char *in = "{\"b\":{\"a\":1},\"c\":[{\"a\":2}]}";
    assert_int_equal(crt_json_object(in, strlen(in), &out, keys, found, 1), 0);
    assert_int_equal(found[0].len, 0);
    crt_buf_fini(&out);
}

static void test_object_duplicates_and_errors(void **state)
{
    (void)state;
    static const char *const keys[] = {"value"};
    crt_json_slot found[1];
    crt_buf out;
    crt_buf_init(&out);

    static const char *const bad[] = {
        "{\"value\":1,\"value\":2}",
        "{\"value\":1,\"valu\\u0065\":2}", /* same name, spelled with an escape */
        "[1,2]",
        "\"value\"",
        "null",
        "",
        "{\"value\":1} x",
        "{\"value\":01}",
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        crt_buf_reset(&out);
        crt_buf_puts(&out, "pre");
        int rc = crt_json_object(bad[i], strlen(bad[i]), &out, keys, found, 1);
        if (rc != CRT_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(out.len, 3);
    }

    /* Duplicates of keys nobody asked for are not this function's business. */
    crt_buf_reset(&out);
    const char *dup_other = "{\"x\":1,\"x\":2,\"value\":3}";
    assert_int_equal(crt_json_object(dup_other, strlen(dup_other), &out, keys, found, 1), 0);
    assert_int_equal(found[0].len, 1);
    assert_memory_equal(out.data + found[0].off, "3", 1);

    /* Empty object: nothing found. */
    crt_buf_reset(&out);
    assert_int_equal(crt_json_object(" {} ", 4, &out, keys, found, 1), 0);
    assert_int_equal(found[0].len, 0);
    assert_int_equal(out.len, 2);
    crt_buf_fini(&out);
}

static void test_kind_of(void **state)
{
    (void)state;
    assert_int_equal(crt_json_kind_of("null", 4), CRT_JSON_NULL);
    assert_int_equal(crt_json_kind_of("true", 4), CRT_JSON_TRUE);
    assert_int_equal(crt_json_kind_of("false", 5), CRT_JSON_FALSE);
    assert_int_equal(crt_json_kind_of("-1", 2), CRT_JSON_NUMBER);
    assert_int_equal(crt_json_kind_of("7", 1), CRT_JSON_NUMBER);
    assert_int_equal(crt_json_kind_of("\"s\"", 3), CRT_JSON_STRING);
    assert_int_equal(crt_json_kind_of("[]", 2), CRT_JSON_ARRAY);
    assert_int_equal(crt_json_kind_of("{}", 2), CRT_JSON_OBJECT);
    assert_int_equal(crt_json_kind_of("", 0), CRT_JSON_INVALID);
}

/* ---- crt_json_unquote ------------------------------------------------------------------ */

static void unquote_ok(const char *in, size_t n, const char *want, size_t wlen)
{
    crt_buf out;
    crt_buf_init(&out);
    int rc = crt_json_unquote(in, n, &out);
    if (rc != 0)
        fail_msg("rejected: %.*s", (int)n, in);
    if (out.len != wlen || (wlen && memcmp(out.data, want, wlen) != 0))
        fail_msg("%.*s -> \"%.*s\" (%zu bytes)", (int)n, in, (int)out.len, out.data ? out.data : "", out.len);
    crt_buf_fini(&out);
}
#define UNQUOTE_OK(in, want) unquote_ok((in), sizeof(in) - 1, (want), sizeof(want) - 1)

static void test_unquote(void **state)
{
    (void)state;
    UNQUOTE_OK("\"\"", "");
    UNQUOTE_OK("\"plain\"", "plain");
    UNQUOTE_OK("\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d");
    UNQUOTE_OK("\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t");
    UNQUOTE_OK("\"\\u0041\\u00e9\\u20AC\"", "A\xC3\xA9\xE2\x82\xAC");
    UNQUOTE_OK("\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80");
    UNQUOTE_OK("\"\\u0000\"", "\0");
    UNQUOTE_OK("\"caf\xC3\xA9\"", "caf\xC3\xA9");

    crt_buf out;
    crt_buf_init(&out);
    assert_int_equal(crt_json_unquote("x", 1, &out), CRT_EINVAL);
    assert_int_equal(crt_json_unquote("\"", 1, &out), CRT_EINVAL);
    assert_int_equal(crt_json_unquote("abc", 3, &out), CRT_EINVAL);
    assert_int_equal(crt_json_unquote("\"abc", 4, &out), CRT_EINVAL);
    assert_int_equal(crt_json_unquote("", 0, &out), CRT_EINVAL);
    crt_buf_fini(&out);
}

/* ---- crt_json_number_add -------------------------------------------------------------- */

static void add_ok(const char *a, const char *b, const char *want)
{
    crt_buf out;
    crt_buf_init(&out);
    int rc = crt_json_number_add(a, strlen(a), b, strlen(b), &out);
    if (rc != 0)
        fail_msg("%s + %s: rc %d", a, b, rc);
    if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
        fail_msg("%s + %s = %.*s, want %s", a, b, (int)out.len, out.data, want);
    /* The result is itself a JSON number. */
    crt_buf chk;
    crt_buf_init(&chk);
    assert_int_equal(crt_json_compact(out.data, out.len, &chk), 0);
    assert_int_equal(crt_json_kind_of(chk.data, chk.len), CRT_JSON_NUMBER);
    crt_buf_fini(&chk);
    crt_buf_fini(&out);
}

static void add_bad(const char *a, size_t an, const char *b, size_t bn)
{
    crt_buf out;
    crt_buf_init(&out);
    int rc = crt_json_number_add(a, an, b, bn, &out);
    if (rc != CRT_EINVAL)
        fail_msg("\"%.*s\" + \"%.*s\" accepted: %.*s", (int)an, a, (int)bn, b, (int)out.len, out.data);
    crt_buf_fini(&out);
}
#define ADD_BAD(a, b) add_bad((a), sizeof(a) - 1, (b), sizeof(b) - 1)

static void test_add_integers(void **state)
{
    (void)state;
    add_ok("1", "1", "2");
    add_ok("41", "1", "42");
    add_ok("-5", "3", "-2");
    add_ok("0", "0", "0");
    add_ok("-0", "0", "0");
    add_ok("10", "-10", "0");
    add_ok("9007199254740993", "0", "9007199254740993");   /* above 2^53: still exact */
    add_ok("9223372036854775806", "1", "9223372036854775807");
    add_ok("-9223372036854775807", "-1", "-9223372036854775808");
    add_ok("123456789012345678", "876543210987654321", "999999999999999999");
}

static void test_add_overflow_to_double(void **state)
{
    (void)state;
    add_ok("9223372036854775807", "1", "9.223372036854776e+18");
    add_ok("-9223372036854775808", "-1", "-9.223372036854776e+18");
    add_ok("12345678901234567890123", "1", "1.2345678901234568e+22");
    add_ok("1e3", "1", "1001");
}

static void test_add_doubles(void **state)
{
    (void)state;
    add_ok("0.1", "0.2", "0.30000000000000004");
    add_ok("1.5", "1", "2.5");
    add_ok("2.50", "0.5", "3");
    add_ok("-0.5", "0.25", "-0.25");
    add_ok("1e-7", "0", "1e-07");
    add_ok("1.7976931348623157e308", "0", "1.7976931348623157e+308");
}

static void test_add_long_valid_number(void **state)
{
    (void)state;
    /* A valid JSON number of 80 digits: stored byte-exact, so it can be
     * incremented like any other (in doubles). */
    char big[81];
    big[0] = '1';
    memset(big + 1, '0', 79);
    big[80] = '\0';
    add_ok(big, "1", "1e+79");
}

static void test_add_rejects(void **state)
{
    (void)state;
    ADD_BAD("\"1\"", "1");
    ADD_BAD("1", "true");
    ADD_BAD("null", "1");
    ADD_BAD("[1]", "1");
    ADD_BAD("{}", "1");
    ADD_BAD("", "1");
    ADD_BAD("1", "");
    ADD_BAD("1e308", "1e308");      /* not finite */
    ADD_BAD("-1e308", "-1e308");
    ADD_BAD("1e400", "1");
}

static void test_add_rejects_malformed_number_text(void **state)
{
    (void)state;
    /* Text that starts like a number but is not one is "not a number".
     * All cases run; the failure lists every one that was accepted. */
    static const struct { const char *a, *b; } cases[] = {
        {"1abc", "1"}, {"0x10", "1"}, {"-", "1"}, {"1", "2 "}, {"1.5.5", "1"}, {"--1", "1"}, {"1e", "1"},
    };
    char msg[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++) {
        crt_buf out;
        crt_buf_init(&out);
        int rc = crt_json_number_add(cases[i].a, strlen(cases[i].a), cases[i].b, strlen(cases[i].b), &out);
        if (rc != CRT_EINVAL && used < sizeof msg)
            used += (size_t)snprintf(msg + used, sizeof msg - used, " [\"%s\" + \"%s\" = %.*s]", cases[i].a,
                                     cases[i].b, (int)out.len, out.data ? out.data : "");
        crt_buf_fini(&out);
    }
    if (used)
        fail_msg("accepted:%s", msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact_whitespace),
        cmocka_unit_test(test_compact_numbers_exact),
        cmocka_unit_test(test_compact_strings_exact),
        cmocka_unit_test(test_compact_rejects),
        cmocka_unit_test(test_compact_depth),
        cmocka_unit_test(test_object_slots),
        cmocka_unit_test(test_object_nested_keys_not_top_level),
        cmocka_unit_test(test_object_duplicates_and_errors),
        cmocka_unit_test(test_kind_of),
        cmocka_unit_test(test_unquote),
        cmocka_unit_test(test_add_integers),
        cmocka_unit_test(test_add_overflow_to_double),
        cmocka_unit_test(test_add_doubles),
        cmocka_unit_test(test_add_long_valid_number),
        cmocka_unit_test(test_add_rejects),
        cmocka_unit_test(test_add_rejects_malformed_number_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
