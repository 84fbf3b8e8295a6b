/* The settings table, applying one value, validation, the load order and
 * printing. The readers of the YAML file and the environment are in
 * config_sources.c. */
#include <ctype.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cronium/cache.h"
#include "cronium/config.h"
#include "cronium/log.h"
#include "config_int.h"

#define OFF(f) offsetof(crt_config, f)
#define DAY_MS (24LL * 3600 * 1000)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const rate_limit_stores[] = {"valkey", "local", NULL};

static const crt_config_opt opts[] = {
    {"server", "host", "HOST", CRT_CT_STR, "0.0.0.0", 0, 0, OFF(host), NULL, "Address to listen on."},
    {"server", "port", "PORT", CRT_CT_INT, "8081", 1, 65535, OFF(port), NULL, "TCP port (SO_REUSEPORT: several processes may share it)."},
    {"server", "readTimeout", "READ_TIMEOUT", CRT_CT_DUR, "30s", 1, DAY_MS, OFF(read_timeout_ms), NULL, "Time allowed for a request head (and body) to arrive."},
    {"server", "writeTimeout", "WRITE_TIMEOUT", CRT_CT_DUR, "30s", 1, DAY_MS, OFF(write_timeout_ms), NULL, "A response write that makes no progress for this long is dropped."},
    {"server", "idleTimeout", "IDLE_TIMEOUT", CRT_CT_DUR, "120s", 1, DAY_MS, OFF(idle_timeout_ms), NULL, "Idle keep-alive connections are closed after this."},
    {"server", "shutdownTimeout", "SHUTDOWN_TIMEOUT", CRT_CT_DUR, "10s", 0, DAY_MS, OFF(shutdown_timeout_ms), NULL, "On SIGTERM, how long in-flight requests may take to finish."},
    {"server", "maxBodyBytes", "MAX_BODY_BYTES", CRT_CT_INT, "1048576", 1, 1LL << 30, OFF(max_body_bytes), NULL, "Largest request body accepted (413 above)."},
    {"server", "maxConnections", "MAX_CONNECTIONS", CRT_CT_INT, "10000", 1, 1000000, OFF(max_connections), NULL, "Open connections allowed; the newest past it gets 503."},
    {"server", "workers", "WORKERS", CRT_CT_STR, "1", 0, 0, OFF(workers), NULL, "Worker processes sharing the port (SO_REUSEPORT) under a supervisor: a number, or auto (one per CPU available)."},
    {"auth", "jwtSecret", "JWT_SECRET", CRT_CT_SECRET, NULL, 0, 0, OFF(jwt_secret), NULL, "HMAC secret of execution tokens. Required outside dev mode."},
    {"auth", "issuer", "JWT_ISSUER", CRT_CT_STR, NULL, 0, 0, OFF(jwt_issuer), NULL, "If set, a token's iss must equal it."},
    {"auth", "leeway", "JWT_LEEWAY", CRT_CT_DUR, "30s", 0, 3600000, OFF(jwt_leeway_ms), NULL, "Clock skew allowed for exp, nbf and iat."},
    {"auth", "algorithms", "JWT_ALGORITHMS", CRT_CT_STR, "HS256", 0, 0, OFF(jwt_algorithms), NULL, "Accepted algorithms, a comma list of HS256, HS384, HS512."},
    {"cache", "url", "VALKEY_URL", CRT_CT_STR, NULL, 0, 0, OFF(cache_url), NULL, "valkey://, redis:// or unix:// URL of Valkey. Unset: no cache."},
    {"cache", "password", "VALKEY_PASSWORD", CRT_CT_SECRET, NULL, 0, 0, OFF(cache_password), NULL, "Valkey password (overrides the URL's)."},
    {"cache", "db", "VALKEY_DB", CRT_CT_INT, NULL, 0, 1000000, OFF(cache_db), NULL, "Valkey database number (overrides the URL's)."},
    {"cache", "ttl", "CACHE_TTL", CRT_CT_DUR, "2h", 1000, 30 * DAY_MS, OFF(cache_ttl_ms), NULL, "Lifetime of cached context, output, condition and variables."},
    {"cache", "timeout", "VALKEY_TIMEOUT", CRT_CT_DUR, "500ms", 1, 60000, OFF(cache_timeout_ms), NULL, "Connect and per-command timeout for Valkey."},
    {"cache", "sentinels", "VALKEY_SENTINELS", CRT_CT_STR, NULL, 0, 0, OFF(cache_sentinels), NULL, "Valkey Sentinel addresses, host:port,...; the master is asked of them (instead of cache.url)."},
    {"cache", "masterName", "VALKEY_MASTER_NAME", CRT_CT_STR, NULL, 0, 0, OFF(cache_master_name), NULL, "The master's name at the sentinels (required with cache.sentinels)."},
    {"cache", "sentinelPassword", "VALKEY_SENTINEL_PASSWORD", CRT_CT_SECRET, NULL, 0, 0, OFF(cache_sentinel_password), NULL, "Password of the sentinels (their requirepass); unset: no AUTH to them."},
    {"cache", "lockTtl", "LOCK_TTL", CRT_CT_DUR, "5s", 100, 600000, OFF(lock_ttl_ms), NULL, "Lifetime of a variable lock (increment, append) between renewals."},
    {"cache", "singleProcess", "SINGLE_PROCESS", CRT_CT_STR, "auto", 0, 0, OFF(single_process), NULL, "Declares the process alone on its port: without Valkey, increments and appends need no cross-process lock. true, false, or auto (true with one worker and no Valkey configured)."},
    {"backend", "url", "BACKEND_URL", CRT_CT_STR, NULL, 0, 0, OFF(backend_url), NULL, "Base URL of the Cronium backend. Unset: dev mode."},
    {"backend", "token", "BACKEND_TOKEN", CRT_CT_SECRET, NULL, 0, 0, OFF(backend_token), NULL, "Bearer token for the backend's internal API."},
    {"backend", "timeout", "BACKEND_TIMEOUT", CRT_CT_DUR, "10s", 1, 600000, OFF(backend_timeout_ms), NULL, "Timeout of one backend attempt."},
    {"backend", "maxRetries", "BACKEND_MAX_RETRIES", CRT_CT_INT, "3", 0, 20, OFF(backend_max_retries), NULL, "Retries after a failed backend attempt."},
    {"backend", "retryDelay", "BACKEND_RETRY_DELAY", CRT_CT_DUR, "100ms", 1, 60000, OFF(backend_retry_delay_ms), NULL, "Base of the exponential backoff between retries."},
    {"backend", "maxConcurrent", "BACKEND_MAX_CONCURRENT", CRT_CT_INT, "256", 1, 100000, OFF(backend_max_concurrent), NULL, "Backend transfers in flight at once; more wait in a queue."},
    {"backend", "probeInterval", "BACKEND_PROBE_INTERVAL", CRT_CT_DUR, "10s", 0, DAY_MS, OFF(backend_probe_interval_ms), NULL, "At most one health probe of the backend per this (none while real calls succeed); 0: no probe."},
    {"security", "rateLimitPerMin", "RATE_LIMIT_PER_MIN", CRT_CT_INT, "1000", 1, 1000000000, OFF(rate_limit_per_min), NULL, "Requests per minute per execution (token bucket refill)."},
    {"security", "rateLimitBurst", "RATE_LIMIT_BURST", CRT_CT_INT, "100", 1, 1000000000, OFF(rate_limit_burst), NULL, "Token bucket size per execution."},
    {"security", "authFailuresPerMin", "AUTH_FAILURES_PER_MIN", CRT_CT_INT, "60", 1, 1000000000, OFF(auth_failures_per_min), NULL, "Authentication failures per minute per client address before 429."},
    {"security", "rateLimitStore", "RATE_LIMIT_STORE", CRT_CT_ENUM, "valkey", 0, 0, OFF(rate_limit_store), rate_limit_stores, "Where both rate limits are kept: valkey (shared by every process and replica, when cache.url is set; local buckets while Valkey is unavailable) or local (each process its own)."},
    {"security", "enableCors", "ENABLE_CORS", CRT_CT_BOOL, "false", 0, 0, OFF(enable_cors), NULL, "Answer CORS preflights and add CORS headers."},
    {"security", "allowedOrigins", "ALLOWED_ORIGINS", CRT_CT_STR, "*", 0, 0, OFF(allowed_origins), NULL, "Comma list of allowed origins, or *."},
    {"security", "auditReads", "AUDIT_READS", CRT_CT_BOOL, "true", 0, 0, OFF(audit_reads), NULL, "Audit successful reads too (writes, tool actions and every refusal are always audited)."},
    {"audit", "backend", "AUDIT_BACKEND", CRT_CT_BOOL, "true", 0, 0, OFF(audit_backend), NULL, "Ship audit events to the backend (POST /api/internal/audit). Production only."},
    {"audit", "file", "AUDIT_FILE", CRT_CT_STR, NULL, 0, 0, OFF(audit_file), NULL, "Also write audit events as JSON lines to this path (- for stdout); reopened on SIGHUP."},
    {"audit", "required", "AUDIT_REQUIRED", CRT_CT_BOOL, "false", 0, 0, OFF(audit_required), NULL, "Refuse a write (503 audit_unavailable) when an audit sink cannot take its event."},
    {"audit", "coalesceWindow", "AUDIT_COALESCE_WINDOW", CRT_CT_DUR, "1s", 0, 60000, OFF(audit_coalesce_ms), NULL, "Identical reads within this window become one event with a count (0: never)."},
    {"audit", "queueSize", "AUDIT_QUEUE_SIZE", CRT_CT_INT, "10000", 1, 1000000, OFF(audit_queue_size), NULL, "Events each audit sink may hold; more are dropped and counted."},
    {"logging", "level", "LOG_LEVEL", CRT_CT_ENUM, "info", 0, 0, OFF(log_level), log_levels, "debug, info, warn or error."},
    {"logging", "format", "LOG_FORMAT", CRT_CT_ENUM, "json", 0, 0, OFF(log_format), log_formats, "json (one object a line) or text."},
};

const crt_config_opt *crt_config_table(size_t *n)
{
    *n = CRT_ARRAY_LEN(opts);
    return opts;
}

/* ---- scalar parsers ------------------------------------------------------ */

int crt_parse_int(const char *s, int64_t *v)
{
    if (!s || !*s)
        return CRT_EINVAL;
    errno = 0;
    char *end;
    long long x = strtoll(s, &end, 10);
    if (errno || *end || isspace((unsigned char)*s))
        return CRT_EINVAL;
    *v = x;
    return 0;
}

/* "auto": the CPUs this process may run on (sched_getaffinity, so a
 * container's cpuset counts, not the host's cores). */
int crt_config_workers(const char *s, int64_t *n)
{
    if (s && strcasecmp(s, "auto") == 0) {
        cpu_set_t set;
        int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        *n = cpus < 1 ? 1 : cpus > CRT_CONFIG_WORKERS_MAX ? CRT_CONFIG_WORKERS_MAX : cpus;
        return 0;
    }
    int64_t v;
    if (crt_parse_int(s, &v) || v < 1 || v > CRT_CONFIG_WORKERS_MAX)
        return CRT_EINVAL;
    *n = v;
    return 0;
}

int crt_parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *v = true; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *v = false; return 0; }
    }
    return CRT_EINVAL;
}

int crt_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s)
        return CRT_EINVAL;
    const char *p = s;
    uint64_t total = 0;
    bool bare = true;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q))
            bare = false;
    if (bare) {
        int64_t secs;
        if (crt_parse_int(s, &secs) || secs < 0 || secs > (int64_t)(UINT64_MAX / 1000 / 2))
            return CRT_EINVAL;
        *ms = (uint64_t)secs * 1000;
        return 0;
    }
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return CRT_EINVAL;
        uint64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (uint64_t)(*p - '0');
            if (n > 1000000000000ULL)
                return CRT_EINVAL;
            p++;
        }
        uint64_t unit;
        if (p[0] == 'm' && p[1] == 's') { unit = 1; p += 2; }
        else if (*p == 'h') { unit = 3600000; p++; }
        else if (*p == 'm') { unit = 60000; p++; }
        else if (*p == 's') { unit = 1000; p++; }
        else return CRT_EINVAL;
        total += n * unit;
        if (total > 1000000000000000ULL)
            return CRT_EINVAL;
    }
    *ms = total;
    return 0;
}

/* ---- ${VAR} expansion ----------------------------------------------------- */

char *crt_config_expand(const char *s, crt_buf *err)
{
    crt_buf out;
    crt_buf_init(&out);
    for (const char *p = s; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *close = strchr(p + 2, '}');
            /* The value is not echoed in errors: it may hold a secret. */
            if (!close) {
                crt_buf_puts(err, "unterminated ${ (the value is not shown)");
                crt_buf_fini(&out);
                return NULL;
            }
            char name[256];
            size_t n = (size_t)(close - p - 2);
            if (n == 0 || n >= sizeof name) {
                crt_buf_puts(err, "empty or over-long ${} variable reference (the value is not shown)");
                crt_buf_fini(&out);
                return NULL;
            }
            memcpy(name, p + 2, n);
            name[n] = '\0';
            const char *def = NULL;
            char *dash = strstr(name, ":-");
            if (dash) {
                *dash = '\0';
                def = dash + 2;
            }
            const char *v = getenv(name);
            if (!v || (!*v && def))
                v = def ? def : "";
            crt_buf_puts(&out, v);
            p = close + 1;
        } else {
            crt_buf_putc(&out, *p++);
        }
    }
    crt_buf_cstr(&out);
    return out.data ? out.data : strdup("");
}

/* ---- applying one value ----------------------------------------------------- */

/* Sets one option from its text. Errors quote shown (the value as the user
 * wrote it; NULL: not quoted at all, e.g. a secret file's content). */
int crt_config_apply(crt_config *c, const crt_config_opt *o, const char *val, const char *shown,
                     const char *source, crt_buf *err)
{
    char *base = (char *)c + o->offset;
    if (!shown)
        shown = "(value not shown)";
    switch (o->type) {
    case CRT_CT_STR:
    case CRT_CT_SECRET: {
        char **dst = (char **)base;
        free(*dst);
        *dst = strdup(val);
        return *dst ? 0 : CRT_ENOMEM;
    }
    case CRT_CT_INT: {
        int64_t v;
        if (crt_parse_int(val, &v)) {
            crt_buf_printf(err, "%s (%s.%s): \"%s\" is not an integer", source, o->section, o->name, shown);
            return CRT_EINVAL;
        }
        if (v < o->min || v > o->max) {
            crt_buf_printf(err, "%s (%s.%s): %s is out of range [%lld, %lld]", source, o->section, o->name,
                           shown, (long long)o->min, (long long)o->max);
            return CRT_ERANGE;
        }
        *(int64_t *)base = v;
        return 0;
    }
    case CRT_CT_DUR: {
        uint64_t ms;
        if (crt_parse_duration(val, &ms)) {
            crt_buf_printf(err, "%s (%s.%s): \"%s\" is not a duration (examples: 300, 30s, 5m, 1h30m, 250ms)",
                           source, o->section, o->name, shown);
            return CRT_EINVAL;
        }
        if ((int64_t)ms < o->min || (int64_t)ms > o->max) {
            crt_buf_printf(err, "%s (%s.%s): \"%s\" is out of range [%lldms, %lldms]", source, o->section,
                           o->name, shown, (long long)o->min, (long long)o->max);
            return CRT_ERANGE;
        }
        *(uint64_t *)base = ms;
        return 0;
    }
    case CRT_CT_BOOL: {
        bool v;
        if (crt_parse_bool(val, &v)) {
            crt_buf_printf(err, "%s (%s.%s): \"%s\" is not a boolean (true or false)", source, o->section,
                           o->name, shown);
            return CRT_EINVAL;
        }
        *(bool *)base = v;
        return 0;
    }
    case CRT_CT_ENUM:
        for (int64_t i = 0; o->choices[i]; i++) {
            if (strcasecmp(val, o->choices[i]) == 0) {
                *(int64_t *)base = i;
                return 0;
            }
        }
        crt_buf_printf(err, "%s (%s.%s): \"%s\" is not one of", source, o->section, o->name, shown);
        for (int i = 0; o->choices[i]; i++)
            crt_buf_printf(err, "%s %s", i ? "," : "", o->choices[i]);
        return CRT_EINVAL;
    }
    return CRT_EINVAL;
}

int crt_config_defaults(crt_config *c, crt_buf *err)
{
    memset(c, 0, sizeof *c);
    c->cache_db = -1;
    for (size_t i = 0; i < CRT_ARRAY_LEN(opts); i++) {
        if (opts[i].def && crt_config_apply(c, &opts[i], opts[i].def, opts[i].def, "default", err))
            return CRT_EINVAL;
    }
    return 0;
}

int crt_config_validate(crt_config *c, crt_buf *err)
{
    if (crt_config_workers(c->workers, &c->nworkers) != 0) {
        crt_buf_printf(err, "server.workers (WORKERS): \"%s\" is neither auto nor a number in [1, %d]",
                       c->workers ? c->workers : "", CRT_CONFIG_WORKERS_MAX);
        return CRT_EINVAL;
    }
    /* cache.singleProcess: without Valkey there is no lock across processes;
     * "auto" is resolved where the cache client is known (app_store.c). */
    const char *sp = c->single_process ? c->single_process : "auto";
    c->single_process_mode = strcmp(sp, "true") == 0 ? 1 : strcmp(sp, "false") == 0 ? 0 : -1;
    if (c->single_process_mode < 0 && strcmp(sp, "auto") != 0) {
        crt_buf_printf(err, "cache.singleProcess (SINGLE_PROCESS): \"%s\" is not true, false or auto", sp);
        return CRT_EINVAL;
    }
    if (c->single_process_mode == 1 && c->nworkers != 1) {
        crt_buf_printf(err, "cache.singleProcess (SINGLE_PROCESS): true, but server.workers is %lld: workers "
                            "share the port", (long long)c->nworkers);
        return CRT_EINVAL;
    }
    if (!c->backend_url || !*c->backend_url)
        c->dev = true;
    if (!c->dev && (!c->jwt_secret || !*c->jwt_secret)) {
        crt_buf_puts(err, "auth.jwtSecret (JWT_SECRET): required outside dev mode");
        return CRT_EINVAL;
    }
    if (c->jwt_secret && *c->jwt_secret && strlen(c->jwt_secret) < 16 && !c->dev) {
        crt_buf_puts(err, "auth.jwtSecret (JWT_SECRET): shorter than 16 bytes");
        return CRT_EINVAL;
    }
    /* algorithms: each must be a known HMAC */
    char *list = strdup(c->jwt_algorithms ? c->jwt_algorithms : "");
    if (!list)
        return CRT_ENOMEM;
    int n = 0;
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (strcmp(t, "HS256") && strcmp(t, "HS384") && strcmp(t, "HS512")) {
            crt_buf_printf(err, "auth.algorithms (JWT_ALGORITHMS): \"%s\" is not one of HS256, HS384, HS512", t);
            free(list);
            return CRT_EINVAL;
        }
        n++;
    }
    free(list);
    if (n == 0) {
        crt_buf_puts(err, "auth.algorithms (JWT_ALGORITHMS): empty");
        return CRT_EINVAL;
    }
    if (c->backend_url && *c->backend_url && strncmp(c->backend_url, "http://", 7) &&
        strncmp(c->backend_url, "https://", 8)) {
        crt_buf_puts(err, "backend.url (BACKEND_URL): \"");
        crt_log_redact(c->backend_url, strlen(c->backend_url), err);
        crt_buf_puts(err, "\" is not an http:// or https:// URL");
        return CRT_EINVAL;
    }
    if (c->cache_url && *c->cache_url) {
        char msg[256];
        if (crt_cache_check_url(c->cache_url, msg, sizeof msg)) {
            crt_log_redact(msg, strlen(msg), err);  /* the message quotes the URL */
            return CRT_EINVAL;
        }
    }
    if (c->cache_sentinels && *c->cache_sentinels) {
        char msg[512];
        if (c->cache_url && *c->cache_url) {
            crt_buf_puts(err, "cache.url (VALKEY_URL) and cache.sentinels (VALKEY_SENTINELS) exclude each other: "
                              "with sentinels the master's address comes from them");
            return CRT_EINVAL;
        }
        if (!c->cache_master_name || !*c->cache_master_name) {
            crt_buf_puts(err, "cache.masterName (VALKEY_MASTER_NAME) is required with cache.sentinels");
            return CRT_EINVAL;
        }
        if (crt_cache_check_sentinels(c->cache_sentinels, msg, sizeof msg)) {
            crt_buf_puts(err, msg);
            return CRT_EINVAL;
        }
    } else if (c->cache_master_name && *c->cache_master_name) {
        crt_buf_puts(err, "cache.masterName (VALKEY_MASTER_NAME) is set but cache.sentinels (VALKEY_SENTINELS) is not");
        return CRT_EINVAL;
    }
    return 0;
}

static int load_file(crt_config *c, const char *path, crt_buf *err)
{
    crt_buf b;
    crt_buf_init(&b);
    if (crt_file_read(path, 0, &b) == CRT_EIO) {
        crt_buf_printf(err, "config file \"%s\": %s", path, strerror(errno));
        return CRT_EINVAL;
    }
    int rc = crt_config_load_yaml(c, b.data ? b.data : "", b.len, err);
    crt_buf_fini(&b);
    return rc;
}

static int load(crt_config *c, const char *config_file, char *const *envp, crt_buf *err);

/* Errors may quote URLs (with their passwords) from anywhere in the loaders:
 * the text is redacted once here, on its way out. */
int crt_config_load(crt_config *c, const char *config_file, char *const *envp, crt_buf *err)
{
    size_t mark = err->len;
    int rc = load(c, config_file, envp, err);
    if (rc && err->len > mark && crt_log_needs_redact(err->data + mark, err->len - mark)) {
        crt_buf tmp;
        crt_buf_init(&tmp);
        crt_log_redact(err->data + mark, err->len - mark, &tmp);
        err->len = mark;
        crt_buf_append(err, tmp.data, tmp.len);
        crt_buf_fini(&tmp);
    }
    return rc;
}

static int load(crt_config *c, const char *config_file, char *const *envp, crt_buf *err)
{
    int rc = crt_config_defaults(c, err);
    if (rc)
        return rc;
    if (!config_file)
        config_file = crt_config_env_get(envp, "CONFIG_FILE");
    if (config_file && *config_file) {
        c->config_file = strdup(config_file);
        if ((rc = load_file(c, config_file, err)))
            return rc;
    }
    if ((rc = crt_config_load_env(c, envp, err)))
        return rc;
    return crt_config_validate(c, err);
}

void crt_config_fini(crt_config *c)
{
    for (size_t i = 0; i < CRT_ARRAY_LEN(opts); i++) {
        if (opts[i].type == CRT_CT_STR || opts[i].type == CRT_CT_SECRET) {
            char **p = (char **)((char *)c + opts[i].offset);
            free(*p);
            *p = NULL;
        }
    }
    free(c->dev_context);
    free(c->config_file);
    c->dev_context = c->config_file = NULL;
}

static void print_duration(crt_buf *out, uint64_t ms)
{
    if (ms == 0) {
        crt_buf_puts(out, "0s");
        return;
    }
    uint64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, r = ms % 1000;
    if (h) crt_buf_printf(out, "%lluh", (unsigned long long)h);
    if (m) crt_buf_printf(out, "%llum", (unsigned long long)m);
    if (s) crt_buf_printf(out, "%llus", (unsigned long long)s);
    if (r) crt_buf_printf(out, "%llums", (unsigned long long)r);
}

void crt_config_print(const crt_config *c, crt_buf *out)
{
    const char *section = "";
    for (size_t i = 0; i < CRT_ARRAY_LEN(opts); i++) {
        const crt_config_opt *o = &opts[i];
        const char *base = (const char *)c + o->offset;
        if (strcmp(section, o->section) != 0) {
            section = o->section;
            crt_buf_printf(out, "%s:\n", section);
        }
        crt_buf_printf(out, "  %s: ", o->name);
        switch (o->type) {
        case CRT_CT_STR: {
            const char *s = *(char *const *)base;
            if (s && crt_log_needs_redact(s, strlen(s))) {    /* a URL's password */
                crt_buf tmp;
                crt_buf_init(&tmp);
                crt_log_redact(s, strlen(s), &tmp);
                crt_buf_json_str(out, tmp.data ? tmp.data : "", tmp.len);
                crt_buf_fini(&tmp);
            } else if (s) {
                crt_buf_json_str(out, s, strlen(s));
            } else {
                crt_buf_puts(out, "null");
            }
            break;
        }
        case CRT_CT_SECRET:
            crt_buf_puts(out, *(char *const *)base ? "\"<redacted>\"" : "null");
            break;
        case CRT_CT_INT: {
            int64_t v = *(const int64_t *)base;
            if (v < 0 && o->min >= 0)
                crt_buf_puts(out, "null");
            else
                crt_buf_put_i64(out, v);
            break;
        }
        case CRT_CT_DUR: print_duration(out, *(const uint64_t *)base); break;
        case CRT_CT_BOOL: crt_buf_puts(out, *(const bool *)base ? "true" : "false"); break;
        case CRT_CT_ENUM: crt_buf_puts(out, o->choices[*(const int64_t *)base]); break;
        }
        crt_buf_putc(out, '\n');
    }
    crt_buf_printf(out, "# mode: %s\n", c->dev ? "dev (in-memory store, nothing persisted)" : "production");
}
