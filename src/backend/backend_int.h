/* Private to src/backend/: the client's state, shared by backend.c (curl
 * multi on the loop, transfers, retries) and health.c (the /ready verdict
 * and its probe). */
#ifndef CRONIUM_BACKEND_INT_H
#define CRONIUM_BACKEND_INT_H

#include <curl/curl.h>
#include "cronium/backend.h"
#include "cronium/list.h"
#include "cronium/map.h"

/* Bigger answers are refused (CRT_ERANGE) rather than buffered: no backend
 * reply the service understands comes near this. */
#define MAX_RESPONSE (8u << 20)
#define DOWN_AFTER_FAILURES 3
/* Internal request flag: the health probe (one attempt, its own verdict). */
#define FLAG_PROBE (1u << 30)

typedef struct waiter {
    crt_backend_cb cb;
    void *ud;
    struct waiter *next;
} waiter;

typedef enum { X_RUNNING, X_WAITING_RETRY, X_DONE } xfer_state;

typedef struct xfer {
    crt_backend *b;
    CURL *easy;
    xfer_state state;
    char method[8];
    char *path;
    char *url;
    crt_buf body;
    crt_buf resp;
    long status;
    unsigned retry_after_s;
    int attempts;
    uint64_t deadline;              /* uv_now() based */
    uint64_t started_ns;
    const char *op;
    bool shared;                    /* registered for GET sharing */
    bool too_big;                   /* the answer went over MAX_RESPONSE */
    bool probe;                     /* the health probe: never retried */
    CURLcode rc;                    /* the last attempt's transport result */
    waiter *waiters;
    uv_timer_t retry;               /* embedded; closed before free */
    crt_dnode node;                 /* in the backend's live list */
} xfer;

typedef struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    crt_backend *b;
    crt_dnode node;                 /* in the backend's open polls */
} sockctx;

struct crt_backend {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    crt_backend_opts o;
    char *base;
    struct curl_slist *headers;
    crt_map *gets;                  /* path -> in-flight GET xfer */
    crt_dlist live;
    size_t nlive;
    crt_dlist socks;
    int consecutive_failures;       /* transport failures in a row */
    char fail_reason[192];          /* the last transport failure */
    /* Health probe (crt_backend_up): its verdict, and the rate limit. */
    uv_timer_t probe_timer;
    bool probe_timer_open;
    bool probe_in_flight;
    bool probed;                    /* at least one probe started */
    bool probe_bad;                 /* the last probe got 401/403/5xx, nothing usable since */
    char probe_reason[192];
    uint64_t last_probe_ms;         /* uv_now() when the last probe started */
    uint64_t last_usable_ms;        /* uv_now() of the last usefully answered call; 0: none */
    bool closing;
    int open_handles;               /* timer + polls + retry timers + probe timer */
    crt_metrics *m;
    crt_histogram *latency;
    uint64_t *retries;
    uint64_t *coalesced;
};

/* health.c */
void crt_bk_note_health(crt_backend *b, xfer *x, int err);   /* after each finished call */
void crt_bk_probe_start(crt_backend *b);                      /* with probe_interval_ms */
void crt_bk_probe_close(crt_backend *b, uv_close_cb cb);      /* cb counts open_handles */

#endif
