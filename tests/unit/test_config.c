/* Unit tests for src/common/config.c: scalar parsers, defaults (docs/api.md §8),
 * YAML loading, environment precedence, _FILE secrets, validation, printing
 * and the settings table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cronium/config.h"
#include "cronium/log.h"

/* ---- helpers ------------------------------------------------------------- */

static bool contains(const crt_buf *b, const char *needle)
{
    if (!b->data)
        return false;
    return memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

#define assert_contains(buf, needle)                                                         \
    do {                                                                                     \
        if (!contains((buf), (needle)))                                                      \
            fail_msg("expected \"%s\" in \"%.*s\"", (needle), (int)(buf)->len,               \
                     (buf)->data ? (buf)->data : "");                                        \
    } while (0)

#define assert_not_contains(buf, needle)                                                     \
    do {                                                                                     \
        if (contains((buf), (needle)))                                                       \
            fail_msg("did not expect \"%s\" in \"%.*s\"", (needle), (int)(buf)->len,         \
                     (buf)->data);                                                           \
    } while (0)

/* Loads YAML text on top of the defaults; returns the loader's code. */
static int load_yaml(crt_config *c, const char *text, crt_buf *err)
{
    int rc = crt_config_defaults(c, err);
    assert_int_equal(rc, 0);
    return crt_config_load_yaml(c, text, strlen(text), err);
}

static int load_env(crt_config *c, char *const *envp, crt_buf *err)
{
    int rc = crt_config_defaults(c, err);
    assert_int_equal(rc, 0);
    return crt_config_load_env(c, envp, err);
}

/* Writes text into a fresh temporary file; path receives its name. */
static void write_temp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/crt-ut-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* ---- crt_parse_duration ----------------------------------------------------- */

static void test_duration_valid(void **state)
{
    (void)state;
    static const struct { const char *in; uint64_t ms; } cases[] = {
        {"300", 300000},     {"300s", 300000}, {"5m", 300000},       {"1h30m", 5400000},
        {"250ms", 250},      {"1h2m3s", 3723000}, {"0", 0},          {"2h", 7200000},
        {"1m500ms", 60500},  {"10s", 10000},  {"100ms", 100},        {"1h", 3600000},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++) {
        uint64_t ms = 12345;
        int rc = crt_parse_duration(cases[i].in, &ms);
        if (rc != 0)
            fail_msg("\"%s\": rc %d", cases[i].in, rc);
        if (ms != cases[i].ms)
            fail_msg("\"%s\": got %llu ms, want %llu", cases[i].in, (unsigned long long)ms,
                     (unsigned long long)cases[i].ms);
    }
}

static void test_duration_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "5x", "-1", "1.5s", "m", "5 m", " 5s", "5s ", "1m30", "ms",
                                      "s5", "5mm", "+5", "h", "1h-5m", "0x10"};
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        uint64_t ms = 777;
        int rc = crt_parse_duration(bad[i], &ms);
        if (rc != CRT_EINVAL)
            fail_msg("\"%s\" accepted (rc %d, %llu ms)", bad[i], rc, (unsigned long long)ms);
        assert_int_equal(ms, 777); /* untouched on error */
    }
    uint64_t ms = 1;
    assert_int_equal(crt_parse_duration(NULL, &ms), CRT_EINVAL);
}

/* ---- crt_parse_int / crt_parse_bool ---------------------------------------- */

static void test_parse_int(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(crt_parse_int("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(crt_parse_int("-7", &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(crt_parse_int("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(crt_parse_int("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);

    static const char *const bad[] = {"", "4x", " 4", "4 ", "abc", "1.0", "99999999999999999999", "--1"};
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        v = 99;
        if (crt_parse_int(bad[i], &v) != CRT_EINVAL)
            fail_msg("\"%s\" accepted as %lld", bad[i], (long long)v);
    }
    assert_int_equal(crt_parse_int(NULL, &v), CRT_EINVAL);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "on", "ON"};
    static const char *const no[] = {"false", "FALSE", "0", "no", "off", "Off"};
    static const char *const bad[] = {"", "maybe", "2", "truee", " true", "y", "n"};
    for (size_t i = 0; i < CRT_ARRAY_LEN(yes); i++) {
        bool v = false;
        assert_int_equal(crt_parse_bool(yes[i], &v), 0);
        assert_true(v);
    }
    for (size_t i = 0; i < CRT_ARRAY_LEN(no); i++) {
        bool v = true;
        assert_int_equal(crt_parse_bool(no[i], &v), 0);
        assert_false(v);
    }
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        bool v = true;
        if (crt_parse_bool(bad[i], &v) != CRT_EINVAL)
            fail_msg("\"%s\" accepted as a boolean", bad[i]);
    }
}

/* ---- defaults ---------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    assert_int_equal(crt_config_defaults(&c, &err), 0);
    assert_int_equal(err.len, 0);

    assert_string_equal(c.host, "0.0.0.0");
    assert_int_equal(c.port, 8081);
    assert_int_equal(c.read_timeout_ms, 30000);
    assert_int_equal(c.write_timeout_ms, 30000);
    assert_int_equal(c.idle_timeout_ms, 120000);
    assert_int_equal(c.max_body_bytes, 1048576);
    assert_int_equal(c.max_connections, 10000);
    assert_null(c.jwt_secret);
    assert_null(c.jwt_issuer);
    assert_int_equal(c.jwt_leeway_ms, 30000);
    assert_string_equal(c.jwt_algorithms, "HS256");
    assert_null(c.cache_url);
    assert_null(c.cache_password);
    assert_true(c.cache_db == -1);
    assert_int_equal(c.cache_ttl_ms, 2 * 3600 * 1000);
    assert_null(c.backend_url);
    assert_null(c.backend_token);
    assert_int_equal(c.backend_timeout_ms, 10000);
    assert_int_equal(c.backend_max_retries, 3);
    assert_int_equal(c.backend_retry_delay_ms, 100);
    assert_int_equal(c.rate_limit_per_min, 1000);
    assert_int_equal(c.rate_limit_burst, 100);
    assert_false(c.enable_cors);
    assert_string_equal(c.allowed_origins, "*");
    assert_int_equal(c.log_level, CRT_LOG_INFO);
    assert_int_equal(c.log_format, CRT_LOG_JSON);
    assert_false(c.dev);

    crt_config_fini(&c);
    crt_buf_fini(&err);
}

/* ---- YAML ---------------------------------------------------------------------- */

static void test_yaml_sections(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    const char *y =
        "# comment\n"
        "server:\n"
        "  host: 127.0.0.1\n"
        "  port: 9090\n"
        "  readTimeout: 45s\n"
        "  idleTimeout: 3m\n"
        "  maxBodyBytes: 2048\n"
        "auth:\n"
        "  issuer: cronium-orchestrator\n"
        "  leeway: 5s\n"
        "backend:\n"
        "  url: http://127.0.0.1:3000\n"
        "  maxRetries: 5\n"
        "  retryDelay: 250ms\n"
        "security:\n"
        "  enableCors: true\n"
        "  rateLimitPerMin: 60\n"
        "logging:\n"
        "  level: debug\n"
        "  format: text\n";
    assert_int_equal(load_yaml(&c, y, &err), 0);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 9090);
    assert_int_equal(c.read_timeout_ms, 45000);
    assert_int_equal(c.idle_timeout_ms, 180000);
    assert_int_equal(c.max_body_bytes, 2048);
    assert_string_equal(c.jwt_issuer, "cronium-orchestrator");
    assert_int_equal(c.jwt_leeway_ms, 5000);
    assert_string_equal(c.backend_url, "http://127.0.0.1:3000");
    assert_int_equal(c.backend_max_retries, 5);
    assert_int_equal(c.backend_retry_delay_ms, 250);
    assert_true(c.enable_cors);
    assert_int_equal(c.rate_limit_per_min, 60);
    assert_int_equal(c.rate_limit_burst, 100); /* untouched default */
    assert_int_equal(c.log_level, CRT_LOG_DEBUG);
    assert_int_equal(c.log_format, CRT_LOG_TEXT);
    crt_config_fini(&c);
    crt_buf_fini(&err);
}

static void test_yaml_list_joined(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    const char *block = "security:\n"
                        "  allowedOrigins:\n"
                        "    - https://a.example\n"
                        "    - https://b.example\n"
                        "  enableCors: yes\n";
    assert_int_equal(load_yaml(&c, block, &err), 0);
    assert_string_equal(c.allowed_origins, "https://a.example,https://b.example");
    assert_true(c.enable_cors);
    crt_config_fini(&c);

    const char *flow = "auth:\n  algorithms: [HS256, HS512]\n";
    assert_int_equal(load_yaml(&c, flow, &err), 0);
    assert_string_equal(c.jwt_algorithms, "HS256,HS512");
    crt_config_fini(&c);
    crt_buf_fini(&err);
}

static void test_yaml_expansion(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    setenv("CRT_UT_PORT", "9191", 1);
    setenv("CRT_UT_HOST", "10.1.2.3", 1);
    setenv("CRT_UT_EMPTY", "", 1);
    unsetenv("CRT_UT_UNSET");
    const char *y = "server:\n"
                    "  port: ${CRT_UT_PORT}\n"
                    "  host: ${CRT_UT_HOST}\n"
                    "  maxConnections: ${CRT_UT_UNSET:-77}\n"
                    "  maxBodyBytes: ${CRT_UT_EMPTY:-4096}\n"
                    "backend:\n"
                    "  url: http://${CRT_UT_HOST}:${CRT_UT_PORT}/api\n"
                    "auth:\n"
                    "  issuer: ${CRT_UT_PORT:-unused}-x\n";
    assert_int_equal(load_yaml(&c, y, &err), 0);
    assert_int_equal(c.port, 9191);
    assert_string_equal(c.host, "10.1.2.3");
    assert_int_equal(c.max_connections, 77);
    assert_int_equal(c.max_body_bytes, 4096);
    assert_string_equal(c.backend_url, "http://10.1.2.3:9191/api");
    assert_string_equal(c.jwt_issuer, "9191-x");
    crt_config_fini(&c);

    /* Direct use of the expander. */
    char *s = crt_config_expand("a${CRT_UT_UNSET}b${CRT_UT_PORT}c", &err);
    assert_non_null(s);
    assert_string_equal(s, "ab9191c");
    free(s);
    s = crt_config_expand("${CRT_UT_UNSET:-d:e}", &err);
    assert_non_null(s);
    assert_string_equal(s, "d:e");
    free(s);
    s = crt_config_expand("plain $HOME text", &err);
    assert_non_null(s);
    assert_string_equal(s, "plain $HOME text");
    free(s);
    crt_buf_reset(&err);
    s = crt_config_expand("broken ${CRT_UT_PORT", &err);
    assert_null(s);
    assert_true(err.len > 0);

    unsetenv("CRT_UT_PORT");
    unsetenv("CRT_UT_HOST");
    unsetenv("CRT_UT_EMPTY");
    crt_buf_fini(&err);
}

static void test_yaml_unknown_key(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    assert_int_equal(load_yaml(&c, "server:\n  prot: 9090\n", &err), CRT_EINVAL);
    assert_contains(&err, "server.prot");
    crt_config_fini(&c);

    crt_buf_reset(&err);
    assert_int_equal(load_yaml(&c, "servre:\n  port: 9090\n", &err), CRT_EINVAL);
    assert_contains(&err, "servre.port");
    crt_config_fini(&c);

    /* A key of another section is not accepted in the wrong one. */
    crt_buf_reset(&err);
    assert_int_equal(load_yaml(&c, "auth:\n  port: 9090\n", &err), CRT_EINVAL);
    assert_contains(&err, "auth.port");
    assert_int_equal(c.port, 8081);
    crt_config_fini(&c);
    crt_buf_fini(&err);
}

static void test_yaml_bad_value(void **state)
{
    (void)state;
    static const struct { const char *yaml, *setting, *value; } cases[] = {
        {"server:\n  port: eighty\n", "server.port", "eighty"},
        {"server:\n  port: 70000\n", "server.port", "70000"},
        {"server:\n  port: 0\n", "server.port", "0"},
        {"server:\n  readTimeout: 5x\n", "server.readTimeout", "5x"},
        {"security:\n  enableCors: perhaps\n", "security.enableCors", "perhaps"},
        {"logging:\n  level: loud\n", "logging.level", "loud"},
        {"backend:\n  maxRetries: -1\n", "backend.maxRetries", "-1"},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++) {
        crt_config c;
        crt_buf err;
        crt_buf_init(&err);
        int rc = load_yaml(&c, cases[i].yaml, &err);
        if (rc == 0)
            fail_msg("accepted: %s", cases[i].yaml);
        assert_contains(&err, cases[i].setting);
        assert_contains(&err, cases[i].value);
        crt_config_fini(&c);
        crt_buf_fini(&err);
    }
}

static void test_yaml_syntax_error(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "server:\n  port: [1, 2\n",
        "server:\n  port: 1\n bad indent: 2\n",
        "server: {port: 1\n",
        "just a scalar\n",
        "server:\n  port:\n    nested: 1\n",
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad); i++) {
        crt_config c;
        crt_buf err;
        crt_buf_init(&err);
        int rc = load_yaml(&c, bad[i], &err);
        if (rc == 0)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err.len > 0);
        crt_config_fini(&c);
        crt_buf_fini(&err);
    }
}

/* ---- environment ------------------------------------------------------------------ */

static void test_env_precedence(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);

    char *e1[] = {"PORT=1001", NULL};
    assert_int_equal(load_env(&c, e1, &err), 0);
    assert_int_equal(c.port, 1001);
    crt_config_fini(&c);

    char *e2[] = {"RUNTIME_PORT=1002", "PORT=1001", NULL};
    assert_int_equal(load_env(&c, e2, &err), 0);
    assert_int_equal(c.port, 1002);
    crt_config_fini(&c);

    char *e3[] = {"RUNTIME_SERVER_PORT=1003", "PORT=1001", "RUNTIME_PORT=1002", NULL};
    assert_int_equal(load_env(&c, e3, &err), 0);
    assert_int_equal(c.port, 1003);
    crt_config_fini(&c);

    char *e4[] = {"PORT=1001", "RUNTIME_PORT=1002", "RUNTIME_SERVER_PORT=1003", NULL};
    assert_int_equal(load_env(&c, e4, &err), 0);
    assert_int_equal(c.port, 1003);
    crt_config_fini(&c);

    /* camelCase names become SNAKE_CASE; short names differ from the section form. */
    char *e5[] = {"RUNTIME_SERVER_MAX_BODY_BYTES=2048", "RUNTIME_SECURITY_RATE_LIMIT_PER_MIN=5",
                  "RUNTIME_CACHE_URL=redis://127.0.0.1:6379", "RUNTIME_BACKEND_MAX_RETRIES=0",
                  "RUNTIME_AUTH_JWT_SECRET=from-section-name", "RUNTIME_LOGGING_LEVEL=warn", NULL};
    assert_int_equal(load_env(&c, e5, &err), 0);
    assert_int_equal(c.max_body_bytes, 2048);
    assert_int_equal(c.rate_limit_per_min, 5);
    assert_string_equal(c.cache_url, "redis://127.0.0.1:6379");
    assert_int_equal(c.backend_max_retries, 0);
    assert_string_equal(c.jwt_secret, "from-section-name");
    assert_int_equal(c.log_level, CRT_LOG_WARN);
    crt_config_fini(&c);

    /* A name that merely starts like a setting is not that setting. */
    char *e6[] = {"PORTX=5", "PORT_=6", "XPORT=7", NULL};
    assert_int_equal(load_env(&c, e6, &err), 0);
    assert_int_equal(c.port, 8081);
    crt_config_fini(&c);
    crt_buf_fini(&err);
}

static void test_env_beats_yaml(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    const char *y = "server:\n  port: 2000\n  host: 127.0.0.2\nlogging:\n  level: error\n";
    assert_int_equal(load_yaml(&c, y, &err), 0);
    char *env[] = {"PORT=3000", "LOG_LEVEL=debug", NULL};
    assert_int_equal(crt_config_load_env(&c, env, &err), 0);
    assert_int_equal(c.port, 3000);
    assert_string_equal(c.host, "127.0.0.2"); /* YAML value kept where env is silent */
    assert_int_equal(c.log_level, CRT_LOG_DEBUG);
    crt_config_fini(&c);

    /* The same through crt_config_load with a file named by CONFIG_FILE. */
    char path[64];
    write_temp(path, sizeof path, y);
    char cf[128];
    snprintf(cf, sizeof cf, "CONFIG_FILE=%s", path);
    char *env2[] = {cf, "RUNTIME_SERVER_PORT=3001", NULL};
    crt_buf_reset(&err);
    int rc = crt_config_load(&c, NULL, env2, &err);
    if (rc)
        fail_msg("load: %.*s", (int)err.len, err.data);
    assert_int_equal(c.port, 3001);
    assert_string_equal(c.host, "127.0.0.2");
    assert_int_equal(c.log_level, CRT_LOG_ERROR);
    assert_true(c.dev); /* no backend url */
    crt_config_fini(&c);
    unlink(path);
    crt_buf_fini(&err);
}

static void test_env_bad_value(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    char *e1[] = {"PORT=abc", NULL};
    assert_int_not_equal(load_env(&c, e1, &err), 0);
    assert_contains(&err, "PORT");
    assert_contains(&err, "abc");
    crt_config_fini(&c);

    crt_buf_reset(&err);
    char *e2[] = {"RUNTIME_SERVER_IDLE_TIMEOUT=1.5s", NULL};
    assert_int_not_equal(load_env(&c, e2, &err), 0);
    assert_contains(&err, "RUNTIME_SERVER_IDLE_TIMEOUT");
    assert_contains(&err, "1.5s");
    crt_config_fini(&c);

    crt_buf_reset(&err);
    char *e3[] = {"ENABLE_CORS=sometimes", NULL};
    assert_int_not_equal(load_env(&c, e3, &err), 0);
    assert_contains(&err, "ENABLE_CORS");
    assert_contains(&err, "sometimes");
    crt_config_fini(&c);
    crt_buf_fini(&err);
}

/* Every setting of the table answers to its three environment names. */
static void test_env_every_setting(void **state)
{
    (void)state;
    size_t n;
    const crt_config_opt *t = crt_config_table(&n);
    for (size_t i = 0; i < n; i++) {
        const crt_config_opt *o = &t[i];
        char value[64];
        switch (o->type) {
        case CRT_CT_STR: snprintf(value, sizeof value, "value-%zu", i); break;
        case CRT_CT_SECRET: snprintf(value, sizeof value, "secret-value-%zu", i); break;
        case CRT_CT_INT: snprintf(value, sizeof value, "%lld", (long long)(o->max - 1)); break;
        case CRT_CT_DUR: snprintf(value, sizeof value, "%lldms", (long long)(o->max - 1)); break;
        case CRT_CT_BOOL: snprintf(value, sizeof value, "true"); break;
        case CRT_CT_ENUM: {
            size_t k = 0;
            while (o->choices[k + 1])
                k++;
            snprintf(value, sizeof value, "%s", o->choices[k]);
            break;
        }
        }
        char sec[64], nm[64];
        size_t j = 0;
        for (const char *p = o->section; *p; p++)
            sec[j++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        sec[j] = '\0';
        j = 0;
        for (const char *p = o->name; *p; p++) {
            if (*p >= 'A' && *p <= 'Z' && p != o->name)
                nm[j++] = '_';
            nm[j++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        }
        nm[j] = '\0';
        char names[3][160];
        snprintf(names[0], sizeof names[0], "%s", o->env);
        snprintf(names[1], sizeof names[1], "RUNTIME_%s", o->env);
        snprintf(names[2], sizeof names[2], "RUNTIME_%s_%s", sec, nm);
        for (int k = 0; k < 3; k++) {
            char kv[1024];
            snprintf(kv, sizeof kv, "%s=%s", names[k], value);
            char *env[] = {kv, NULL};
            crt_config c;
            crt_buf err;
            crt_buf_init(&err);
            int rc = load_env(&c, env, &err);
            if (rc)
                fail_msg("%s: rc %d: %.*s", kv, rc, (int)err.len, err.data);
            const char *base = (const char *)&c + o->offset;
            bool ok = false;
            switch (o->type) {
            case CRT_CT_STR:
            case CRT_CT_SECRET: {
                const char *s = *(char *const *)base;
                ok = s && strcmp(s, value) == 0;
                break;
            }
            case CRT_CT_INT: ok = *(const int64_t *)base == o->max - 1; break;
            case CRT_CT_DUR: ok = *(const uint64_t *)base == (uint64_t)(o->max - 1); break;
            case CRT_CT_BOOL: ok = *(const bool *)base; break;
            case CRT_CT_ENUM: ok = strcmp(o->choices[*(const int64_t *)base], value) == 0; break;
            }
            if (!ok)
                fail_msg("%s did not set %s.%s", kv, o->section, o->name);
            crt_config_fini(&c);
            crt_buf_fini(&err);
        }
    }
}

/* ---- _FILE secrets ------------------------------------------------------------------- */

static void test_secret_files(void **state)
{
    (void)state;
    char p1[64], p2[64], p3[64];
    write_temp(p1, sizeof p1, "file-secret-0123456789abcdef\n");
    write_temp(p2, sizeof p2, "backend-token-xyz\r\n");
    write_temp(p3, sizeof p3, "valkey-pass");
    char e1[128], e2[128], e3[128];
    snprintf(e1, sizeof e1, "JWT_SECRET_FILE=%s", p1);
    snprintf(e2, sizeof e2, "BACKEND_TOKEN_FILE=%s", p2);
    snprintf(e3, sizeof e3, "VALKEY_PASSWORD_FILE=%s", p3);

    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    char *env[] = {e1, e2, e3, NULL};
    assert_int_equal(load_env(&c, env, &err), 0);
    assert_string_equal(c.jwt_secret, "file-secret-0123456789abcdef"); /* trailing newline dropped */
    assert_string_equal(c.backend_token, "backend-token-xyz");
    assert_string_equal(c.cache_password, "valkey-pass");
    crt_config_fini(&c);

    /* A more specific name wins, whether it is the plain or the _FILE form. */
    char e4[128];
    snprintf(e4, sizeof e4, "RUNTIME_JWT_SECRET_FILE=%s", p1);
    char *env2[] = {"JWT_SECRET=plain-short-name-secret", e4, NULL};
    assert_int_equal(load_env(&c, env2, &err), 0);
    assert_string_equal(c.jwt_secret, "file-secret-0123456789abcdef");
    crt_config_fini(&c);

    char *env3[] = {e1, "RUNTIME_AUTH_JWT_SECRET=section-name-secret", NULL};
    assert_int_equal(load_env(&c, env3, &err), 0);
    assert_string_equal(c.jwt_secret, "section-name-secret");
    crt_config_fini(&c);

    /* YAML form: <name>File. */
    char y[256];
    snprintf(y, sizeof y, "auth:\n  jwtSecretFile: %s\nbackend:\n  tokenFile: %s\n", p1, p2);
    assert_int_equal(load_yaml(&c, y, &err), 0);
    assert_string_equal(c.jwt_secret, "file-secret-0123456789abcdef");
    assert_string_equal(c.backend_token, "backend-token-xyz");
    crt_config_fini(&c);

    /* A missing file is an error that names the setting. */
    crt_buf_reset(&err);
    char *env4[] = {"JWT_SECRET_FILE=/nonexistent/crt-ut/secret", NULL};
    assert_int_not_equal(load_env(&c, env4, &err), 0);
    assert_contains(&err, "JWT_SECRET_FILE");
    assert_contains(&err, "/nonexistent/crt-ut/secret");
    crt_config_fini(&c);

    /* A non-secret has no _FILE form. */
    char e5[128];
    snprintf(e5, sizeof e5, "HOST_FILE=%s", p3);
    char *env5[] = {e5, NULL};
    assert_int_equal(load_env(&c, env5, &err), 0);
    assert_string_equal(c.host, "0.0.0.0");
    crt_config_fini(&c);

    unlink(p1);
    unlink(p2);
    unlink(p3);
    crt_buf_fini(&err);
}

/* ---- validation ---------------------------------------------------------------------- */

static int validate_env(crt_config *c, char *const *envp, crt_buf *err)
{
    int rc = load_env(c, envp, err);
    assert_int_equal(rc, 0);
    return crt_config_validate(c, err);
}

static void test_validate(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);

    /* No backend: dev mode, no secret needed. */
    char *dev[] = {NULL};
    assert_int_equal(validate_env(&c, dev, &err), 0);
    assert_true(c.dev);
    crt_config_fini(&c);

    /* Production without JWT_SECRET. */
    crt_buf_reset(&err);
    char *prod_nosecret[] = {"BACKEND_URL=http://127.0.0.1:3000", NULL};
    assert_int_equal(validate_env(&c, prod_nosecret, &err), CRT_EINVAL);
    assert_false(c.dev);
    assert_contains(&err, "JWT_SECRET");
    crt_config_fini(&c);

    /* Production with everything. */
    crt_buf_reset(&err);
    char *prod[] = {"BACKEND_URL=https://app.example", "JWT_SECRET=0123456789abcdef0123456789abcdef",
                    "JWT_ALGORITHMS=HS256, HS512", "VALKEY_URL=valkey://127.0.0.1:6379/2", NULL};
    int rc = validate_env(&c, prod, &err);
    if (rc)
        fail_msg("rejected: %.*s", (int)err.len, err.data);
    assert_false(c.dev);
    crt_config_fini(&c);

    /* Unknown algorithm. */
    crt_buf_reset(&err);
    char *badalg[] = {"JWT_ALGORITHMS=HS256,RS256", NULL};
    assert_int_equal(validate_env(&c, badalg, &err), CRT_EINVAL);
    assert_contains(&err, "JWT_ALGORITHMS");
    assert_contains(&err, "RS256");
    crt_config_fini(&c);

    crt_buf_reset(&err);
    char *noalg[] = {"JWT_ALGORITHMS=", NULL};
    assert_int_equal(validate_env(&c, noalg, &err), CRT_EINVAL);
    assert_contains(&err, "JWT_ALGORITHMS");
    crt_config_fini(&c);

    /* Backend URL scheme. */
    crt_buf_reset(&err);
    char *badurl[] = {"BACKEND_URL=ftp://127.0.0.1/x", "JWT_SECRET=0123456789abcdef0123456789abcdef", NULL};
    assert_int_equal(validate_env(&c, badurl, &err), CRT_EINVAL);
    assert_contains(&err, "BACKEND_URL");
    assert_contains(&err, "ftp://127.0.0.1/x");
    crt_config_fini(&c);

    /* Cache URL scheme. */
    crt_buf_reset(&err);
    char *badcache[] = {"VALKEY_URL=http://127.0.0.1:6379", NULL};
    assert_int_equal(validate_env(&c, badcache, &err), CRT_EINVAL);
    assert_contains(&err, "VALKEY_URL");
    crt_config_fini(&c);

    crt_buf_fini(&err);
}

/* ---- print ------------------------------------------------------------------------------ */

static void test_print_redacts(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err, out;
    crt_buf_init(&err);
    crt_buf_init(&out);
    char *env[] = {"JWT_SECRET=Sup3r-Secret-Value-4242", "BACKEND_TOKEN=Backend-Tok-9876",
                   "VALKEY_PASSWORD=Valkey-Pw-5555", "BACKEND_URL=http://127.0.0.1:3000", "PORT=9999",
                   "READ_TIMEOUT=1h30m", NULL};
    assert_int_equal(validate_env(&c, env, &err), 0);
    crt_config_print(&c, &out);
    assert_not_contains(&out, "Sup3r-Secret-Value-4242");
    assert_not_contains(&out, "Backend-Tok-9876");
    assert_not_contains(&out, "Valkey-Pw-5555");
    assert_contains(&out, "<redacted>");
    assert_contains(&out, "jwtSecret:");
    assert_contains(&out, "port: 9999\n");
    assert_contains(&out, "url: \"http://127.0.0.1:3000\"\n");
    assert_contains(&out, "readTimeout: 1h30m\n");
    assert_contains(&out, "server:\n");
    crt_config_fini(&c);
    crt_buf_fini(&err);
    crt_buf_fini(&out);
}

/* URL passwords go wherever a URL is printed (issue 9 #19). */
static void test_redact_urls(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        {"redis://:pw@host:6379/0", "redis://:***@host:6379/0"},
        {"redis://user:pw@host", "redis://user:***@host"},
        {"http://user:p%40ss:w@h/api?x=1", "http://user:***@h/api?x=1"},
        {"https://tok@example.com/", "https://***@example.com/"},
        {"http://127.0.0.1:3000/api", "http://127.0.0.1:3000/api"},
        {"unix:///run/v.sock?db=1&password=pw&x=y", "unix:///run/v.sock?db=1&password=***&x=y"},
        {"valkey://h?PASSWORD=pw", "valkey://h?PASSWORD=***"},
        {"a redis://:x@h and http://u:y@g/ in text", "a redis://:***@h and http://u:***@g/ in text"},
        {"\"redis://:pw@h:99999\" is not a valid URL", "\"redis://:***@h:99999\" is not a valid URL"},
        {"redis://:pw@", "redis://:***@"},
        {"no url here", "no url here"},
        {"password=pw", "password=***"},
        {"=password=pw&a=b", "=password=***&a=b"},
        {"a=b&password=", "a=b&password="},
        {"://@", "://***@"},
        {"", ""},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(cases); i++) {
        crt_buf out;
        crt_buf_init(&out);
        crt_log_redact(cases[i].in, strlen(cases[i].in), &out);
        const char *got = crt_buf_cstr(&out);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("redact(\"%s\") = \"%s\", want \"%s\"", cases[i].in, got, cases[i].want);
        crt_buf_fini(&out);
    }
    assert_true(crt_log_needs_redact("x://y", 5));
    assert_false(crt_log_needs_redact("plain", 5));
}

static void test_print_redacts_url_passwords(void **state)
{
    (void)state;
    crt_config c;
    crt_buf err, out;
    crt_buf_init(&err);
    crt_buf_init(&out);
    char *env[] = {"JWT_SECRET=Sup3r-Secret-Value-4242", "VALKEY_URL=redis://:Valkey-Url-Pw-1@10.0.0.1:6379/2",
                   "BACKEND_URL=http://svc:Backend-Url-Pw-2@10.0.0.2:3000/api", NULL};
    assert_int_equal(validate_env(&c, env, &err), 0);
    crt_config_print(&c, &out);
    assert_not_contains(&out, "Valkey-Url-Pw-1");
    assert_not_contains(&out, "Backend-Url-Pw-2");
    assert_contains(&out, "url: \"redis://:***@10.0.0.1:6379/2\"\n");
    assert_contains(&out, "url: \"http://svc:***@10.0.0.2:3000/api\"\n");
    crt_config_fini(&c);
    crt_buf_fini(&err);
    crt_buf_fini(&out);
}

/* Errors never quote a secret: not a URL's password, not the value an
 * expansion produced, not the raw text of a broken ${...}. */
static void test_errors_hide_secrets(void **state)
{
    (void)state;
    static const char *const bad_env[][3] = {
        {"VALKEY_URL=redis://:Hidden-Pw-7@host:99999", "BACKEND_URL=http://127.0.0.1:1", NULL},
        {"VALKEY_URL=redis://:Hidden-Pw-7@", "BACKEND_URL=http://127.0.0.1:1", NULL},
        {"BACKEND_URL=ftp://u:Hidden-Pw-7@host/", NULL, NULL},
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(bad_env); i++) {
        char *env[5] = {"JWT_SECRET=0123456789abcdef0123", (char *)bad_env[i][0], (char *)bad_env[i][1], NULL};
        crt_config c;
        crt_buf err;
        crt_buf_init(&err);
        assert_int_not_equal(crt_config_load(&c, NULL, env, &err), 0);
        assert_true(err.len > 0);
        assert_not_contains(&err, "Hidden-Pw-7");
        assert_contains(&err, "***");
        crt_config_fini(&c);
        crt_buf_fini(&err);
    }

    setenv("CRT_UT_SECRET", "Hidden-Value-8", 1);
    static const char *const yaml[] = {
        "server:\n  port: ${CRT_UT_SECRET}\n",
        "server:\n  readTimeout: ${CRT_UT_SECRET}\n",
        "security:\n  enableCors: ${CRT_UT_SECRET}\n",
        "logging:\n  level: ${CRT_UT_SECRET}\n",
        "backend:\n  token: \"Hidden-Value-8${CRT_UT_SECRET\"\n",
        "backend:\n  token: \"Hidden-Value-8${}\"\n",
    };
    for (size_t i = 0; i < CRT_ARRAY_LEN(yaml); i++) {
        crt_config c;
        crt_buf err;
        crt_buf_init(&err);
        assert_int_not_equal(load_yaml(&c, yaml[i], &err), 0);
        assert_true(err.len > 0);
        assert_not_contains(&err, "Hidden-Value-8");
        assert_contains(&err, "config file ");     /* still says where */
        crt_config_fini(&c);
        crt_buf_fini(&err);
    }
    unsetenv("CRT_UT_SECRET");
}

/* ---- the table ----------------------------------------------------------------------------- */

static void test_table_complete(void **state)
{
    (void)state;
    /* docs/api.md §8, every row. */
    static const struct { const char *section, *name, *env; } want[] = {
        {"server", "host", "HOST"},
        {"server", "port", "PORT"},
        {"server", "readTimeout", "READ_TIMEOUT"},
        {"server", "writeTimeout", "WRITE_TIMEOUT"},
        {"server", "idleTimeout", "IDLE_TIMEOUT"},
        {"server", "maxBodyBytes", "MAX_BODY_BYTES"},
        {"server", "maxConnections", "MAX_CONNECTIONS"},
        {"auth", "jwtSecret", "JWT_SECRET"},
        {"auth", "issuer", "JWT_ISSUER"},
        {"auth", "leeway", "JWT_LEEWAY"},
        {"cache", "url", "VALKEY_URL"},
        {"cache", "password", "VALKEY_PASSWORD"},
        {"cache", "db", "VALKEY_DB"},
        {"cache", "ttl", "CACHE_TTL"},
        {"backend", "url", "BACKEND_URL"},
        {"backend", "token", "BACKEND_TOKEN"},
        {"backend", "timeout", "BACKEND_TIMEOUT"},
        {"backend", "maxRetries", "BACKEND_MAX_RETRIES"},
        {"backend", "retryDelay", "BACKEND_RETRY_DELAY"},
        {"security", "rateLimitPerMin", "RATE_LIMIT_PER_MIN"},
        {"security", "rateLimitBurst", "RATE_LIMIT_BURST"},
        {"security", "enableCors", "ENABLE_CORS"},
        {"security", "allowedOrigins", "ALLOWED_ORIGINS"},
        {"logging", "level", "LOG_LEVEL"},
        {"logging", "format", "LOG_FORMAT"},
    };
    size_t n = 0;
    const crt_config_opt *t = crt_config_table(&n);
    assert_non_null(t);
    assert_true(n >= CRT_ARRAY_LEN(want));
    for (size_t w = 0; w < CRT_ARRAY_LEN(want); w++) {
        int seen = 0;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(t[i].section, want[w].section) && !strcmp(t[i].name, want[w].name)) {
                seen++;
                assert_string_equal(t[i].env, want[w].env);
            }
        if (seen != 1)
            fail_msg("%s.%s listed %d times", want[w].section, want[w].name, seen);
    }
    /* Nothing twice, by YAML name or by env name; every entry documented. */
    for (size_t i = 0; i < n; i++) {
        assert_non_null(t[i].help);
        assert_true(strlen(t[i].help) > 0);
        for (size_t j = i + 1; j < n; j++) {
            if (!strcmp(t[i].section, t[j].section) && !strcmp(t[i].name, t[j].name))
                fail_msg("%s.%s twice", t[i].section, t[i].name);
            if (!strcmp(t[i].env, t[j].env))
                fail_msg("env %s twice", t[i].env);
        }
    }
    /* Sections are contiguous (the printer relies on it). */
    for (size_t i = 1; i < n; i++)
        if (strcmp(t[i].section, t[i - 1].section) != 0)
            for (size_t j = 0; j + 1 < i; j++)
                if (!strcmp(t[j].section, t[i].section))
                    fail_msg("section %s is split", t[i].section);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_valid),
        cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_yaml_sections),
        cmocka_unit_test(test_yaml_list_joined),
        cmocka_unit_test(test_yaml_expansion),
        cmocka_unit_test(test_yaml_unknown_key),
        cmocka_unit_test(test_yaml_bad_value),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_env_precedence),
        cmocka_unit_test(test_env_beats_yaml),
        cmocka_unit_test(test_env_bad_value),
        cmocka_unit_test(test_env_every_setting),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_print_redacts),
        cmocka_unit_test(test_redact_urls),
        cmocka_unit_test(test_print_redacts_url_passwords),
        cmocka_unit_test(test_errors_hide_secrets),
        cmocka_unit_test(test_table_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
