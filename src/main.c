/* cronium-runtime: command line, configuration, the loop. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <curl/curl.h>
#include "cronium/app.h"
#include "cronium/log.h"
#include "cronium/metrics_shared.h"
#include "cronium/jwt.h"
#include "cronium/supervisor.h"

extern char **environ;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cronium-runtime [options]\n"
            "       cronium-runtime token --execution-id ID [--user-id U] [--job-id J] [--event-id E]\n"
            "                             [--ttl 2h] [--issuer I] [--config PATH]\n"
            "       cronium-runtime healthcheck [--config PATH]\n"
            "\n"
            "The HTTP service job scripts call for their input, output, variables,\n"
            "condition and tool actions. Settings come from a YAML file and the\n"
            "environment (docs/configuration.md).\n"
            "\n"
            "options:\n"
            "  --config PATH        YAML configuration file (or CONFIG_FILE)\n"
            "  --dev                in-memory store, no backend (also when BACKEND_URL is unset)\n"
            "  --dev-context FILE   dev mode: seed this execution context (backend JSON shape)\n"
            "  --print-config       print the effective configuration (secrets redacted) and exit\n"
            "  --list-settings      print every setting: YAML name, env name, default, meaning\n"
            "  --version            print the version and exit\n"
            "  --help               this text\n");
}

/* Loads the configuration or exits 2 with a message naming the setting. */
static void load_config(crt_config *cfg, const char *path, bool dev, const char *dev_context)
{
    crt_buf err;
    crt_buf_init(&err);
    int rc = crt_config_load(cfg, path, environ, &err);
    if (rc == 0 && dev)
        cfg->dev = true;
    if (rc) {
        fprintf(stderr, "cronium-runtime: configuration error: %s\n", crt_buf_cstr(&err));
        exit(2);
    }
    crt_buf_fini(&err);
    if (dev_context)
        cfg->dev_context = strdup(dev_context);
}

static int cmd_token(int argc, char **argv)
{
    static const struct option lo[] = {
        {"execution-id", required_argument, NULL, 'x'}, {"user-id", required_argument, NULL, 'u'},
        {"job-id", required_argument, NULL, 'j'},       {"event-id", required_argument, NULL, 'e'},
        {"ttl", required_argument, NULL, 't'},          {"issuer", required_argument, NULL, 'i'},
        {"config", required_argument, NULL, 'c'},       {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *exec = NULL, *user = NULL, *job = NULL, *event = NULL, *ttl = "2h", *issuer = NULL, *conf = NULL;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 'x': exec = optarg; break;
        case 'u': user = optarg; break;
        case 'j': job = optarg; break;
        case 'e': event = optarg; break;
        case 't': ttl = optarg; break;
        case 'i': issuer = optarg; break;
        case 'c': conf = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!exec || !*exec) {
        fprintf(stderr, "cronium-runtime token: --execution-id is required\n");
        return 2;
    }
    uint64_t ttl_ms;
    if (crt_parse_duration(ttl, &ttl_ms) || ttl_ms < 1000) {
        fprintf(stderr, "cronium-runtime token: --ttl \"%s\" is not a duration (examples: 300, 30m, 2h)\n", ttl);
        return 2;
    }
    crt_config cfg;
    load_config(&cfg, conf, false, NULL);
    if (!cfg.jwt_secret || !*cfg.jwt_secret) {
        fprintf(stderr, "cronium-runtime token: auth.jwtSecret (JWT_SECRET) is not set\n");
        crt_config_fini(&cfg);
        return 2;
    }
    crt_buf tok;
    crt_buf_init(&tok);
    int rc = crt_token_mint(cfg.jwt_secret, exec, user, job, event, issuer ? issuer : cfg.jwt_issuer,
                            (int64_t)(ttl_ms / 1000), &tok);
    if (rc == 0)
        printf("%s\n", crt_buf_cstr(&tok));
    crt_buf_fini(&tok);
    crt_config_fini(&cfg);
    return rc ? 1 : 0;
}

/* GET /health on the configured port, blocking with a short timeout: this is
 * a separate short-lived process (Docker HEALTHCHECK), not the service loop. */
static int cmd_healthcheck(int argc, char **argv)
{
    const char *conf = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--config"))
            conf = argv[i + 1];
    crt_config cfg;
    load_config(&cfg, conf, false, NULL);
    const char *host = cfg.host;
    bool v6 = strchr(host, ':') != NULL;
    if (!strcmp(host, "0.0.0.0"))
        host = "127.0.0.1";
    else if (!strcmp(host, "::"))
        host = "::1";
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t slen;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)cfg.port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        slen = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)cfg.port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            inet_pton(AF_INET, "127.0.0.1", &a->sin_addr);
        slen = sizeof *a;
    }
    crt_config_fini(&cfg);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return 1;
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static const char rq[] = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char buf[512];
    ssize_t n = -1;
    if (connect(fd, (struct sockaddr *)&ss, slen) == 0 && write(fd, rq, sizeof rq - 1) == (ssize_t)(sizeof rq - 1))
        n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0) {
        puts("healthy");
        return 0;
    }
    fprintf(stderr, "unhealthy: no 200 from /health\n");
    return 1;
}

/* One line per setting, tab-separated: yaml, env, default, meaning. */
static void list_settings(void)
{
    size_t n;
    const crt_config_opt *t = crt_config_table(&n);
    for (size_t i = 0; i < n; i++)
        printf("%s.%s\t%s\t%s\t%s\n", t[i].section, t[i].name, t[i].env, t[i].def ? t[i].def : "",
               t[i].help);
}

/* Descriptors the process needs besides client connections: stdio, the
 * listener, the loop's own, Valkey, backend transfers, slack. */
#define FD_RESERVE 64

static void raise_fd_limit(uint64_t max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Past the limit accept fails with EMFILE: say so now, not under load. */
    if (rl.rlim_cur != RLIM_INFINITY && max_connections + FD_RESERVE > (uint64_t)rl.rlim_cur)
        CRT_LOGF(CRT_LOG_WARN, "server.maxConnections exceeds the open-file limit: connections past it fail",
                 CRT_LI("max_connections", max_connections), CRT_LI("rlimit_nofile", rl.rlim_cur),
                 CRT_LI("usable_connections",
                        rl.rlim_cur > FD_RESERVE ? (long long)(rl.rlim_cur - FD_RESERVE) : 0));
}

/* A listen error as a message a person can act on. */
static void report_listen_error(const crt_config *cfg, int rc)
{
    const char *hint = "";
    if (rc == UV_EADDRINUSE)
        hint = " (another process holds this port without SO_REUSEPORT; choose another PORT or stop it)";
    else if (rc == UV_EADDRNOTAVAIL)
        hint = " (HOST is not an address of this machine)";
    else if (rc == UV_EACCES)
        hint = " (ports below 1024 need privileges)";
    else if (rc == UV_EAI_NONAME || rc == UV_EAI_AGAIN || rc == UV_EAI_FAMILY)
        hint = " (HOST is neither an IP address nor a host name that resolves)";
    fprintf(stderr, "cronium-runtime: cannot listen on %s port %lld: %s%s\n", cfg->host, (long long)cfg->port,
            uv_strerror(rc), hint);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "token"))
        return cmd_token(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "healthcheck"))
        return cmd_healthcheck(argc - 1, argv + 1);

    static const struct option lo[] = {
        {"config", required_argument, NULL, 'c'}, {"dev", no_argument, NULL, 'd'},
        {"dev-context", required_argument, NULL, 'C'}, {"print-config", no_argument, NULL, 'p'},
        {"version", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'},
        {"list-settings", no_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    const char *conf = NULL, *dev_context = NULL;
    bool dev = false, print = false;
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (o) {
        case 'c': conf = optarg; break;
        case 'd': dev = true; break;
        case 'C': dev_context = optarg; dev = true; break;
        case 'p': print = true; break;
        case 'v': printf("cronium-runtime %s (libuv %s, %s)\n", CRT_VERSION, uv_version_string(),
                         curl_version()); return 0;
        case 'h': usage(stdout); return 0;
        case 'L': list_settings(); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cronium-runtime: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    crt_config cfg;
    load_config(&cfg, conf, dev, dev_context);
    if (print) {
        crt_buf out;
        crt_buf_init(&out);
        crt_config_print(&cfg, &out);
        fwrite(out.data, 1, out.len, stdout);
        crt_buf_fini(&out);
        crt_config_fini(&cfg);
        return 0;
    }
    crt_log_setup((crt_log_level)cfg.log_level, (crt_log_format)cfg.log_format);
    if (cfg.dev && (!cfg.jwt_secret || !*cfg.jwt_secret)) {
        char hex[49];
        crt_random_hex(hex, 24);
        free(cfg.jwt_secret);
        cfg.jwt_secret = strdup(hex);
        CRT_LOGF(CRT_LOG_WARN, "dev mode: no JWT_SECRET given, generated a random one for this run");
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit((uint64_t)cfg.max_connections);
    if (cfg.dev_context && access(cfg.dev_context, R_OK) != 0) {
        fprintf(stderr, "cronium-runtime: --dev-context %s: %s\n", cfg.dev_context, strerror(errno));
        crt_config_fini(&cfg);
        return 2;
    }
    /* server.workers: dev mode keeps its store in this process's memory, so
     * several workers would each answer from different data. An explicit
     * number is refused; auto means "what fits", which in dev mode is 1. */
    if (cfg.dev && cfg.nworkers > 1) {
        if (strcmp(cfg.workers, "auto") != 0) {
            fprintf(stderr, "cronium-runtime: configuration error: server.workers (WORKERS): dev mode keeps "
                            "its data in one process's memory, %lld workers would each see different data; "
                            "use 1 (the default) or run in production mode\n", (long long)cfg.nworkers);
            crt_config_fini(&cfg);
            return 2;
        }
        cfg.nworkers = 1;
        CRT_LOGF(CRT_LOG_INFO, "dev mode: server.workers auto means 1 worker (the store is in memory)");
    }
    unsigned worker_idx = 0, worker_total = 0;
    int is_worker = crt_worker_identity(&worker_idx, &worker_total);
    if (is_worker < 0) {
        fprintf(stderr, "cronium-runtime: %s is malformed or its supervisor is gone\n", CRT_WORKER_ENV);
        crt_config_fini(&cfg);
        return 2;
    }
    if (!is_worker && cfg.nworkers > 1) {
        /* This process becomes the supervisor and serves nothing itself. */
        int sup_rc = crt_supervisor_run(&cfg, argv);
        crt_config_fini(&cfg);
        return sup_rc;
    }
    crt_mshared *shared = NULL;
    if (is_worker) {
        shared = crt_mshared_map(CRT_WORKER_FD, worker_total, (int)worker_idx);
        if (!shared) {
            fprintf(stderr, "cronium-runtime: worker %u: descriptor %d is not the supervisor's segment\n",
                    worker_idx, CRT_WORKER_FD);
            crt_config_fini(&cfg);
            return 2;
        }
    }
    /* Dev mode never talks HTTP outwards: skipping curl's global set-up
     * (TLS libraries and their configuration) keeps it small and quick. */
    bool curl_ready = false;
    if (!cfg.dev) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "cronium-runtime: curl initialisation failed\n");
            return 1;
        }
        curl_ready = true;
    }

    uv_loop_t *loop = uv_default_loop();
    crt_log_attach(loop);
    crt_app app;
    int rc = crt_app_init(&app, loop, &cfg);
    if (rc != 0) {
        fprintf(stderr, "cronium-runtime: cannot start (%s): see the error logged above\n",
                rc == CRT_ENOMEM ? "out of memory" : "set-up failed");
    } else {
        rc = crt_app_start(&app);
        if (rc < 0) {
            CRT_LOGF(CRT_LOG_ERROR, "cannot listen", CRT_LS("host", cfg.host), CRT_LI("port", cfg.port),
                     CRT_LS("error", uv_strerror(rc)));
            report_listen_error(&cfg, rc);
        }
    }
    if (rc == 0) {
        CRT_LOGF(CRT_LOG_INFO, "cronium-runtime listening", CRT_LS("host", cfg.host), CRT_LI("port", cfg.port),
                 CRT_LS("mode", cfg.dev ? "dev" : "production"), CRT_LS("version", CRT_VERSION),
                 CRT_LI("pid", getpid()), CRT_LI("worker", is_worker ? (long long)worker_idx : -1));
        if (shared && (rc = crt_mshared_start(shared, loop, app.metrics, &app.stopping)) != 0) {
            CRT_LOGF(CRT_LOG_ERROR, "worker cannot publish its metrics", CRT_LS("error", uv_strerror(rc)));
            crt_app_stop(&app);
        }
        uv_run(loop, UV_RUN_DEFAULT);
        crt_mshared_stop(shared);
        CRT_LOGF(CRT_LOG_INFO, "stopped");
    } else if (!app.stopping) {
        /* Close what was opened, then let the loop release it. */
        crt_app_stop(&app);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    crt_log_detach();
    uv_run(loop, UV_RUN_DEFAULT);       /* let the last close callbacks run */
    crt_app_fini(&app);
    crt_mshared_free(shared);
    if (uv_loop_close(loop) != 0)
        fprintf(stderr, "cronium-runtime: loop closed with handles still open\n");
    if (curl_ready)
        curl_global_cleanup();
    crt_config_fini(&cfg);
    return rc == 0 ? 0 : 1;
}
