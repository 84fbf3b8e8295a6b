/* Unit tests for src/http/response.c (response head, error envelope, reason
 * phrases) and the JSON string writer of src/common/buf.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cronium/http.h"
#include "cronium/json.h"

#define DATE "Sun, 06 Nov 1994 08:49:37 GMT"

static void assert_buf_eq(const crt_buf *b, const char *want, size_t wlen)
{
    if (b->len != wlen || memcmp(b->data, want, wlen) != 0)
        fail_msg("got (%zu bytes):\n%.*s\nwant (%zu bytes):\n%.*s", b->len, (int)b->len, b->data, wlen, (int)wlen,
                 want);
}
#define ASSERT_BUF(b, lit) assert_buf_eq((b), (lit), sizeof(lit) - 1)

static crt_resp_head base_head(void)
{
    crt_resp_head h;
    memset(&h, 0, sizeof h);
    h.status = 200;
    h.date = DATE;
    h.content_type = "application/json";
    h.content_length = 17;
    h.request_id = "req-1";
    h.request_id_len = 5;
    h.keep_alive = true;
    return h;
}

static void test_head_basic(void **state)
{
    (void)state;
    crt_buf o;
    crt_buf_init(&o);
    crt_resp_head h = base_head();
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 200 OK\r\n"
                   "Date: " DATE "\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: 17\r\n"
                   "X-Request-Id: req-1\r\n"
                   "\r\n");
    crt_buf_fini(&o);
}

static void test_head_connection(void **state)
{
    (void)state;
    crt_buf o;
    crt_buf_init(&o);
    crt_resp_head h = base_head();

    h.keep_alive = false;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 200 OK\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 17\r\nX-Request-Id: req-1\r\nConnection: close\r\n\r\n");

    /* HTTP/1.0 client that asked for keep-alive: say so explicitly. */
    crt_buf_reset(&o);
    h.keep_alive = true;
    h.http10 = true;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 200 OK\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 17\r\nX-Request-Id: req-1\r\nConnection: keep-alive\r\n\r\n");

    /* HTTP/1.0 without keep-alive: close. */
    crt_buf_reset(&o);
    h.keep_alive = false;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 200 OK\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 17\r\nX-Request-Id: req-1\r\nConnection: close\r\n\r\n");
    crt_buf_fini(&o);
}

static void test_head_extra_and_statuses(void **state)
{
    (void)state;
    crt_buf o;
    crt_buf_init(&o);
    crt_resp_head h = base_head();
    static const char extra[] = "Allow: GET, HEAD\r\nRetry-After: 3\r\n";
    h.status = 405;
    h.content_length = 0;
    h.extra = extra;
    h.extra_len = sizeof extra - 1;
    h.request_id = "0123456789abcdef0123456789abcdef"; /* only request_id_len bytes are used */
    h.request_id_len = 8;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 405 Method Not Allowed\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 0\r\nX-Request-Id: 01234567\r\nAllow: GET, HEAD\r\nRetry-After: 3\r\n\r\n");

    /* No content type, no request id. */
    crt_buf_reset(&o);
    h = base_head();
    h.status = 503;
    h.content_type = NULL;
    h.request_id_len = 0;
    h.content_length = 1234567;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "HTTP/1.1 503 Service Unavailable\r\nDate: " DATE "\r\nContent-Length: 1234567\r\n\r\n");

    /* Appends: what the buffer held stays in front. */
    crt_buf_reset(&o);
    crt_buf_puts(&o, "prev|");
    h = base_head();
    h.status = 429;
    h.content_length = 2;
    crt_http_format_head(&o, &h);
    ASSERT_BUF(&o, "prev|HTTP/1.1 429 Too Many Requests\r\nDate: " DATE "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 2\r\nX-Request-Id: req-1\r\n\r\n");
    crt_buf_fini(&o);
}

static void test_reason(void **state)
{
    (void)state;
    static const struct { int status; const char *reason; } cases[] = {
        {200, "OK"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {413, "Payload Too Large"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++)
        assert_string_equal(crt_http_reason(cases[i].status), cases[i].reason);
}

static void test_error_body(void **state)
{
    (void)state;
    crt_buf b;
    crt_buf_init(&b);
    crt_http_error_body(&b, 404, "variable_not_found", "Variable \"x\" not found");
    ASSERT_BUF(&b, "{\"success\":false,\"error\":\"Not Found\",\"message\":\"Variable \\\"x\\\" not found\","
                   "\"code\":\"variable_not_found\"}");

    crt_buf_reset(&b);
    crt_http_error_body(&b, 429, "rate_limited", "slow down");
    ASSERT_BUF(&b, "{\"success\":false,\"error\":\"Too Many Requests\",\"message\":\"slow down\","
                   "\"code\":\"rate_limited\"}");

    /* A message with control characters and bad UTF-8 still gives valid JSON. */
    crt_buf_reset(&b);
    crt_http_error_body(&b, 400, "invalid_key", "key \"a\nb\x01\xff\" is invalid");
    ASSERT_BUF(&b, "{\"success\":false,\"error\":\"Bad Request\",\"message\":\"key \\\"a\\nb\\u0001\xEF\xBF\xBD\\\" "
                   "is invalid\",\"code\":\"invalid_key\"}");
    crt_buf out;
    crt_buf_init(&out);
    assert_int_equal(crt_json_compact(b.data, b.len, &out), 0);
    assert_int_equal(out.len, b.len);
    crt_buf_fini(&out);
    crt_buf_fini(&b);
}

/* ---- crt_buf_json_str ------------------------------------------------------------- */

static void json_str_case(const char *in, size_t n, const char *want, size_t wlen)
{
    crt_buf b;
    crt_buf_init(&b);
    assert_int_equal(crt_buf_json_str(&b, in, n), 0);
    if (b.len != wlen || memcmp(b.data, want, wlen) != 0)
        fail_msg("input \"%.*s\": got %.*s, want %.*s", (int)n, in, (int)b.len, b.data, (int)wlen, want);
    /* The output is always one valid JSON string. */
    crt_buf c;
    crt_buf_init(&c);
    assert_int_equal(crt_json_compact(b.data, b.len, &c), 0);
    crt_buf_fini(&c);
    crt_buf_fini(&b);
}
#define JSTR(in, want) json_str_case((in), sizeof(in) - 1, (want), sizeof(want) - 1)

static void test_json_str_escapes(void **state)
{
    (void)state;
    JSTR("", "\"\"");
    JSTR("plain text", "\"plain text\"");
    JSTR("say \"hi\"", "\"say \\\"hi\\\"\"");
    JSTR("back\\slash", "\"back\\\\slash\"");
    JSTR("a/b", "\"a/b\"");
    JSTR("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    JSTR("\x01\x1f\x0b", "\"\\u0001\\u001f\\u000b\"");
    JSTR("nul\0byte", "\"nul\\u0000byte\"");
    JSTR("del\x7f", "\"del\x7f\"");
}

static void test_json_str_utf8(void **state)
{
    (void)state;
    /* Valid UTF-8 (2, 3 and 4 bytes) is kept as is. */
    JSTR("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
    JSTR("\xEF\xBF\xBF\xF4\x8F\xBF\xBF", "\"\xEF\xBF\xBF\xF4\x8F\xBF\xBF\"");
    /* Invalid bytes become U+FFFD, one per bad byte. */
    JSTR("\xff", "\"\xEF\xBF\xBD\"");
    JSTR("a\x80z", "\"a\xEF\xBF\xBDz\"");
    JSTR("\xC3", "\"\xEF\xBF\xBD\"");                               /* truncated */
    JSTR("\xC3(", "\"\xEF\xBF\xBD(\"");                             /* bad continuation */
    JSTR("\xC0\xAF", "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                /* overlong */
    JSTR("\xED\xA0\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\""); /* surrogate */
    JSTR("\xF4\x90\x80\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\""); /* > U+10FFFF */
    JSTR("\xE2\x82", "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                /* truncated 3-byte */
}

static void test_json_str_appends(void **state)
{
    (void)state;
    crt_buf b;
    crt_buf_init(&b);
    crt_buf_puts(&b, "[");
    crt_buf_json_str(&b, "x", 1);
    crt_buf_putc(&b, ',');
    /* A long string forces growth in the middle of the buffer. */
    char big[3000];
    memset(big, '"', sizeof big);
    crt_buf_json_str(&b, big, sizeof big);
    crt_buf_putc(&b, ']');
    assert_int_equal(b.len, 1 + 3 + 1 + 2 + 2 * sizeof big + 1);
    assert_memory_equal(b.data, "[\"x\",\"\\\"\\\"", 10);
    assert_memory_equal(b.data + b.len - 4, "\\\"\"]", 4);
    crt_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_basic),
        cmocka_unit_test(test_head_connection),
        cmocka_unit_test(test_head_extra_and_statuses),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_json_str_escapes),
        cmocka_unit_test(test_json_str_utf8),
        cmocka_unit_test(test_json_str_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
