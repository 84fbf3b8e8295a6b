/* Unit tests for src/store/context.c: the docs/api.md §5 context built from the
 * backend's reply (spliced, byte-exact), and crt_json_path. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "cronium/context.h"
#include "cronium/json.h"

static const char *const FIELDS[] = {"executionId", "jobId",     "eventId",  "eventName", "eventType",
                                     "userId",      "startTime", "metadata", "event",     "user"};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

/* The context object must be valid compact JSON with exactly the §5 fields. */
static void check_shape(const crt_context *c)
{
    crt_buf chk;
    crt_buf_init(&chk);
    if (crt_json_compact(c->json.data, c->json.len, &chk) != 0)
        fail_msg("context is not valid JSON: %.*s", (int)c->json.len, c->json.data);
    if (chk.len != c->json.len || memcmp(chk.data, c->json.data, chk.len) != 0)
        fail_msg("context is not compact: %.*s", (int)c->json.len, c->json.data);
    crt_buf_fini(&chk);
    json_error_t e;
    json_t *o = json_loadb(c->json.data, c->json.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &e);
    assert_non_null(o);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), NFIELDS);
    for (size_t i = 0; i < NFIELDS; i++)
        if (!json_object_get(o, FIELDS[i]))
            fail_msg("field %s missing in %.*s", FIELDS[i], (int)c->json.len, c->json.data);
    json_decref(o);
}

/* The compact text of one top-level member of the context. */
static void assert_field(const crt_context *c, const char *name, const char *want)
{
    const char *keys[1] = {name};
    crt_json_slot s;
    crt_buf tmp;
    crt_buf_init(&tmp);
    assert_int_equal(crt_json_object(c->json.data, c->json.len, &tmp, keys, &s, 1), 0);
    if (!s.len)
        fail_msg("%s absent", name);
    if (s.len != strlen(want) || memcmp(tmp.data + s.off, want, s.len) != 0)
        fail_msg("%s: got %.*s, want %s", name, (int)s.len, tmp.data + s.off, want);
    crt_buf_fini(&tmp);
}

static void assert_input(const crt_context *c, const char *want)
{
    if (!want) {
        if (c->input.len)
            fail_msg("input: got %.*s, want none", (int)c->input.len, c->input.data);
        return;
    }
    if (c->input.len != strlen(want) || memcmp(c->input.data, want, c->input.len) != 0)
        fail_msg("input: got %.*s, want %s", (int)c->input.len, c->input.data ? c->input.data : "", want);
}

static int build(crt_context *c, const char *json, const crt_context_defaults *d)
{
    return crt_context_build(c, json, strlen(json), d);
}

static void test_full_reply(void **state)
{
    (void)state;
    const char *reply =
        "{ \"executionId\": \"exec-1\", \"jobId\": \"job-1\", \"eventId\": \"ev-1\", \"userId\": \"user-1\",\n"
        "  \"startTime\": \"2024-01-01T00:00:00Z\",\n"
        "  \"metadata\": { \"input\": { \"a\": 2.50, \"big\": 12345678901234567890123, \"s\": \"x\\u00e9\" },\n"
        "                \"other\": [1, 2] },\n"
        "  \"event\": { \"name\": \"Nightly report\", \"type\": \"SCRIPT\", \"id\": 5 },\n"
        "  \"user\": { \"id\": \"user-1\", \"email\": \"u@example.com\" },\n"
        "  \"extra\": true }";
    crt_context c;
    assert_int_equal(build(&c, reply, NULL), 0);
    check_shape(&c);
    assert_field(&c, "executionId", "\"exec-1\"");
    assert_field(&c, "jobId", "\"job-1\"");
    assert_field(&c, "eventId", "\"ev-1\"");
    assert_field(&c, "eventName", "\"Nightly report\"");
    assert_field(&c, "eventType", "\"SCRIPT\"");
    assert_field(&c, "userId", "\"user-1\"");
    assert_field(&c, "startTime", "\"2024-01-01T00:00:00Z\"");
    assert_field(&c, "metadata",
                 "{\"input\":{\"a\":2.50,\"big\":12345678901234567890123,\"s\":\"x\\u00e9\"},\"other\":[1,2]}");
    assert_field(&c, "event", "{\"name\":\"Nightly report\",\"type\":\"SCRIPT\",\"id\":5}");
    assert_field(&c, "user", "{\"id\":\"user-1\",\"email\":\"u@example.com\"}");
    assert_input(&c, "{\"a\":2.50,\"big\":12345678901234567890123,\"s\":\"x\\u00e9\"}");
    assert_string_equal(c.user_id, "user-1");
    crt_context_fini(&c);
}

static void test_user_id_forms(void **state)
{
    (void)state;
    crt_context c;
    assert_int_equal(build(&c, "{\"executionId\":\"e\",\"userId\":42,\"metadata\":{}}", NULL), 0);
    check_shape(&c);
    assert_field(&c, "userId", "42");
    assert_string_equal(c.user_id, "42");
    crt_context_fini(&c);

    assert_int_equal(build(&c, "{\"executionId\":\"e\",\"userId\":\"\\u00fc-\\\"q\\\"\",\"metadata\":{}}", NULL), 0);
    assert_field(&c, "userId", "\"\\u00fc-\\\"q\\\"\"");
    assert_string_equal(c.user_id, "\xC3\xBC-\"q\"");
    crt_context_fini(&c);

    /* The reply wins over the default. */
    crt_context_defaults d = {"d-exec", "d-job", "d-ev", "d-user"};
    assert_int_equal(build(&c, "{\"executionId\":\"e\",\"userId\":\"backend-user\"}", &d), 0);
    assert_field(&c, "userId", "\"backend-user\"");
    assert_string_equal(c.user_id, "backend-user");
    crt_context_fini(&c);
}

static void test_defaults_when_absent(void **state)
{
    (void)state;
    crt_context_defaults d = {"d-exec", "d-job", "d-ev", "d-user"};
    crt_context c;
    assert_int_equal(build(&c, "{}", &d), 0);
    check_shape(&c);
    assert_field(&c, "executionId", "\"d-exec\"");
    assert_field(&c, "jobId", "\"d-job\"");
    assert_field(&c, "eventId", "\"d-ev\"");
    assert_field(&c, "userId", "\"d-user\"");
    assert_field(&c, "eventName", "null");
    assert_field(&c, "eventType", "null");
    assert_field(&c, "metadata", "{}");
    assert_field(&c, "event", "null");
    assert_field(&c, "user", "null");
    assert_input(&c, NULL);
    assert_string_equal(c.user_id, "d-user");

    /* startTime: now, RFC 3339 UTC with milliseconds. */
    const char *keys[1] = {"startTime"};
    crt_json_slot s;
    crt_buf tmp;
    crt_buf_init(&tmp);
    assert_int_equal(crt_json_object(c.json.data, c.json.len, &tmp, keys, &s, 1), 0);
    const char *t = tmp.data + s.off;
    if (s.len != 26 || t[0] != '"' || t[5] != '-' || t[8] != '-' || t[11] != 'T' || t[14] != ':' ||
        t[17] != ':' || t[20] != '.' || t[24] != 'Z' || t[25] != '"')
        fail_msg("startTime %.*s", (int)s.len, t);
    assert_true(t[1] == '2'); /* 2xxx */
    crt_buf_fini(&tmp);
    crt_context_fini(&c);

    /* null in the reply counts as absent for the ids that have a default. */
    assert_int_equal(build(&c, "{\"executionId\":null,\"jobId\":null,\"userId\":null}", &d), 0);
    assert_field(&c, "executionId", "\"d-exec\"");
    assert_field(&c, "jobId", "\"d-job\"");
    assert_field(&c, "userId", "\"d-user\"");
    assert_string_equal(c.user_id, "d-user");
    crt_context_fini(&c);

    /* No defaults at all: nulls, and an empty owner. */
    assert_int_equal(build(&c, "{}", NULL), 0);
    check_shape(&c);
    assert_field(&c, "executionId", "null");
    assert_field(&c, "userId", "null");
    assert_string_equal(c.user_id, "");
    crt_context_fini(&c);

    /* startedAt is accepted for startTime. */
    assert_int_equal(build(&c, "{\"startedAt\":\"2024-05-05T05:05:05Z\"}", NULL), 0);
    assert_field(&c, "startTime", "\"2024-05-05T05:05:05Z\"");
    crt_context_fini(&c);
}

static void test_event_fields(void **state)
{
    (void)state;
    crt_context c;
    assert_int_equal(build(&c, "{\"event\":{\"name\":\"Only name\"}}", NULL), 0);
    check_shape(&c);
    assert_field(&c, "eventName", "\"Only name\"");
    assert_field(&c, "eventType", "null");
    assert_field(&c, "event", "{\"name\":\"Only name\"}");
    crt_context_fini(&c);

    assert_int_equal(build(&c, "{\"event\":null,\"user\":null}", NULL), 0);
    assert_field(&c, "eventName", "null");
    assert_field(&c, "eventType", "null");
    assert_field(&c, "event", "null");
    assert_field(&c, "user", "null");
    crt_context_fini(&c);

    /* A nested "name" is not the event's name. */
    assert_int_equal(build(&c, "{\"event\":{\"meta\":{\"name\":\"inner\"},\"type\":\"HTTP\"}}", NULL), 0);
    assert_field(&c, "eventName", "null");
    assert_field(&c, "eventType", "\"HTTP\"");
    crt_context_fini(&c);
}

static void test_metadata_and_input(void **state)
{
    (void)state;
    crt_context c;
    /* No input. */
    assert_int_equal(build(&c, "{\"metadata\":{\"x\":1}}", NULL), 0);
    assert_field(&c, "metadata", "{\"x\":1}");
    assert_input(&c, NULL);
    crt_context_fini(&c);

    /* Falsy inputs are values. */
    static const char *const vals[] = {"null", "false", "0", "\"\"", "[]", "{}", "-0.0e5"};
    for (size_t i = 0; i < CRT_ARRAY_LEN(vals); i++) {
        char reply[128];
        snprintf(reply, sizeof reply, "{\"metadata\":{\"input\": %s }}", vals[i]);
        assert_int_equal(build(&c, reply, NULL), 0);
        assert_input(&c, vals[i]);
        crt_context_fini(&c);
    }

    /* metadata that is not an object: {} and no input. */
    static const char *const notobj[] = {"null", "[{\"input\":1}]", "\"input\"", "5"};
    for (size_t i = 0; i < CRT_ARRAY_LEN(notobj); i++) {
        char reply[128];
        snprintf(reply, sizeof reply, "{\"metadata\":%s}", notobj[i]);
        assert_int_equal(build(&c, reply, NULL), 0);
        check_shape(&c);
        assert_field(&c, "metadata", "{}");
        assert_input(&c, NULL);
        crt_context_fini(&c);
    }
}

static void test_not_an_object(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "[]", "null", "\"ctx\"", "42", "{", "{\"executionId\":\"a\"} x", "{\"executionId\":01}",
        "{\"executionId\":\"a\",\"executionId\":\"b\"}", "not json",
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        crt_context c;
        int rc = build(&c, bad[i], NULL);
        if (rc != CRT_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        crt_context_fini(&c); /* safe after a failure */
    }
}

/* ---- crt_json_path -------------------------------------------------------------------- */

static void path_ok(const char *doc, const char *path, const char *want)
{
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, "|");
    int rc = crt_json_path(doc, strlen(doc), path, strlen(path), &out);
    if (rc != 0)
        fail_msg("path %s: rc %d", path, rc);
    if (out.len != strlen(want) + 1 || memcmp(out.data + 1, want, out.len - 1) != 0)
        fail_msg("path %s: got %.*s, want %s", path, (int)out.len - 1, out.data + 1, want);
    crt_buf_fini(&out);
}

static void path_err(const char *doc, const char *path, int want_rc)
{
    crt_buf out;
    crt_buf_init(&out);
    crt_buf_puts(&out, "|");
    int rc = crt_json_path(doc, strlen(doc), path, strlen(path), &out);
    if (rc != want_rc)
        fail_msg("path \"%s\": rc %d, want %d", path, rc, want_rc);
    assert_int_equal(out.len, 1);
    crt_buf_fini(&out);
}

static void test_json_path(void **state)
{
    (void)state;
    const char *doc = "{\"executionId\":\"exec-1\",\"eventName\":null,\"metadata\":{\"input\":{\"a\":2.50,"
                      "\"deep\":{\"x\":[1,{\"y\":2}]}},\"other\":[1,2]},\"event\":{\"name\":\"Nightly\","
                      "\"n\\u0061me2\":true},\"flag\":false}";
    path_ok(doc, "executionId", "\"exec-1\"");
    path_ok(doc, "eventName", "null");
    path_ok(doc, "flag", "false");
    path_ok(doc, "event.name", "\"Nightly\"");
    path_ok(doc, "event.name2", "true");
    path_ok(doc, "metadata.input.a", "2.50");
    path_ok(doc, "metadata.input.deep", "{\"x\":[1,{\"y\":2}]}");
    path_ok(doc, "metadata.other", "[1,2]");
    path_ok(doc, "metadata", "{\"input\":{\"a\":2.50,\"deep\":{\"x\":[1,{\"y\":2}]}},\"other\":[1,2]}");

    path_err(doc, "nope", CRT_ENOTFOUND);
    path_err(doc, "event.nope", CRT_ENOTFOUND);
    path_err(doc, "executionId.x", CRT_ENOTFOUND);   /* through a string */
    path_ok(doc, "metadata.other.0", "1");            /* a decimal segment indexes an array */
    path_ok(doc, "metadata.other.1", "2");
    path_ok(doc, "metadata.input.deep.x.1.y", "2");
    path_ok(doc, "metadata.input.deep.x.1", "{\"y\":2}");
    path_err(doc, "metadata.other.2", CRT_ENOTFOUND);  /* past the end */
    path_err(doc, "metadata.other.x", CRT_ENOTFOUND);  /* not an index */
    path_err(doc, "metadata.other.-1", CRT_ENOTFOUND);
    path_err(doc, "metadata.other.+1", CRT_ENOTFOUND);
    path_err(doc, "eventName.x", CRT_ENOTFOUND);      /* through null */
    path_err(doc, "Event.name", CRT_ENOTFOUND);       /* case matters */
    path_err(doc, "", CRT_EINVAL);
    path_err(doc, ".event", CRT_EINVAL);
    path_err(doc, "event.", CRT_EINVAL);
    path_err(doc, "event..name", CRT_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_reply),
        cmocka_unit_test(test_user_id_forms),
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_event_fields),
        cmocka_unit_test(test_metadata_and_input),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_json_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
