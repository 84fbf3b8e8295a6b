/* Configuration: one declarative table of settings (YAML name, env names,
 * type, default, bounds, target field). Loaded once at start-up from the YAML
 * file, then the environment (which wins), then validated; the result is an
 * immutable struct passed by pointer. docs/configuration.md is checked
 * against the same table. */
#ifndef CRONIUM_CONFIG_H
#define CRONIUM_CONFIG_H

#include <stdio.h>
#include "cronium/common.h"
#include "cronium/buf.h"

typedef struct crt_config {
    /* server */
    char *host;
    int64_t port;
    uint64_t read_timeout_ms;
    uint64_t write_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t shutdown_timeout_ms;
    int64_t max_body_bytes;
    int64_t max_connections;
    char *workers;                  /* "auto" or a number, as written */
    int64_t nworkers;               /* derived: how many worker processes */
    /* auth */
    char *jwt_secret;
    char *jwt_issuer;
    uint64_t jwt_leeway_ms;
    char *jwt_algorithms;           /* comma list of HS256, HS384, HS512 */
    /* cache */
    char *cache_url;
    char *cache_password;
    int64_t cache_db;               /* -1: from the URL (or 0) */
    uint64_t cache_ttl_ms;
    uint64_t cache_timeout_ms;
    char *cache_sentinels;          /* host:port,... (Sentinel mode instead of cache_url) */
    char *cache_master_name;
    char *cache_sentinel_password;
    uint64_t lock_ttl_ms;
    char *single_process;           /* "true", "false" or "auto", as written */
    int64_t single_process_mode;    /* derived: 1 true, 0 false, -1 auto */
    /* backend */
    char *backend_url;
    char *backend_token;
    uint64_t backend_timeout_ms;
    int64_t backend_max_retries;
    uint64_t backend_retry_delay_ms;
    int64_t backend_max_concurrent;
    uint64_t backend_probe_interval_ms;
    /* security */
    int64_t rate_limit_per_min;
    int64_t rate_limit_burst;
    int64_t auth_failures_per_min;
    int64_t rate_limit_store;       /* 0 valkey, 1 local (security.rateLimitStore) */
    bool enable_cors;
    char *allowed_origins;
    bool audit_reads;
    /* audit */
    bool audit_backend;
    char *audit_file;               /* JSON-lines path, "-" for stdout, NULL: none */
    bool audit_required;
    uint64_t audit_coalesce_ms;
    int64_t audit_queue_size;
    /* logging */
    int64_t log_level;              /* crt_log_level */
    int64_t log_format;             /* crt_log_format */
    /* command line only */
    bool dev;
    char *dev_context;
    char *config_file;
} crt_config;

typedef enum {
    CRT_CT_STR, CRT_CT_SECRET, CRT_CT_INT, CRT_CT_DUR, CRT_CT_BOOL, CRT_CT_ENUM,
} crt_config_type;

typedef struct crt_config_opt {
    const char *section;            /* YAML section */
    const char *name;               /* YAML key within the section */
    const char *env;                /* short environment name */
    crt_config_type type;
    const char *def;                /* default, as text; NULL: unset */
    int64_t min, max;               /* bounds for ints and durations (ms) */
    size_t offset;                  /* field in crt_config */
    const char *const *choices;     /* CRT_CT_ENUM: NULL-terminated names */
    const char *help;
} crt_config_opt;

/* The table itself, for docs and tests; n receives its length. */
const crt_config_opt *crt_config_table(size_t *n);

/* Sets every default. Returns 0, or an error with a message in err. */
int crt_config_defaults(crt_config *c, crt_buf *err);
/* Applies a YAML document (text). Errors name the setting and the value. */
int crt_config_load_yaml(crt_config *c, const char *text, size_t len, crt_buf *err);
/* Applies environment overrides (envp: NULL-terminated "NAME=value" list). */
int crt_config_load_env(crt_config *c, char *const *envp, crt_buf *err);
/* Cross-setting checks and derived values (dev mode when no backend.url). */
int crt_config_validate(crt_config *c, crt_buf *err);
/* Convenience: defaults, file (config_file, or CONFIG_FILE from envp), env, validate. */
int crt_config_load(crt_config *c, const char *config_file, char *const *envp, crt_buf *err);
void crt_config_fini(crt_config *c);
/* Writes the effective configuration as YAML, secrets redacted. */
void crt_config_print(const crt_config *c, crt_buf *out);

/* "300" (seconds), "300s", "5m", "1h30m", "250ms". Returns 0 or CRT_EINVAL. */
int crt_parse_duration(const char *s, uint64_t *ms);
int crt_parse_int(const char *s, int64_t *v);
int crt_parse_bool(const char *s, bool *v);
/* server.workers: "auto" (CPUs available to the process) or 1..CRT_CONFIG_WORKERS_MAX. */
#define CRT_CONFIG_WORKERS_MAX 256
int crt_config_workers(const char *s, int64_t *n);
/* Expands ${VAR} and ${VAR:-default} using getenv. Caller frees. */
char *crt_config_expand(const char *s, crt_buf *err);

#endif
