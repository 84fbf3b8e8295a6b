/* The backend's health as /ready shows it (crt_backend_up): transport
 * failures in a row, and a cheap periodic probe that tells a backend that
 * answers but cannot be used (wrong BACKEND_TOKEN, 5xx to everything). */
#include <stdio.h>
#include "backend_int.h"

static void maybe_probe(crt_backend *b, bool early);

/* What a finished call says about the backend. A transport failure counts
 * towards DOWN_AFTER_FAILURES. A 2xx or 404 (the routes answer 404 only
 * after the token was checked) shows it usable. A 401/403 or 5xx is the
 * probe's verdict when the probe got it; from a real call it may concern
 * that call only (the real backend answers 500 to a key over 255
 * characters), so it asks for an early probe instead. */
void crt_bk_note_health(crt_backend *b, xfer *x, int err)
{
    if (b->closing)
        return;
    if (err == CRT_EUNAVAIL) {
        b->consecutive_failures++;
        snprintf(b->fail_reason, sizeof b->fail_reason, "backend unreachable: %s",
                 x->rc != CURLE_OK ? curl_easy_strerror(x->rc) : "no answer within the deadline");
        return;
    }
    b->consecutive_failures = 0;
    if (err)
        return;                     /* an answer over the size cap: says nothing */
    long st = x->status;
    if (st / 100 == 2 || st == 404) {
        b->last_usable_ms = uv_now(b->loop);
        b->probe_bad = false;
        return;
    }
    bool refused = st == 401 || st == 403;
    if (!refused && st < 500) {
        if (x->probe)
            b->probe_bad = false;   /* answered, and not with a refusal */
        return;
    }
    if (!x->probe) {
        maybe_probe(b, true);
        return;
    }
    b->probe_bad = true;
    if (refused)
        snprintf(b->probe_reason, sizeof b->probe_reason, "HTTP %ld from the backend: BACKEND_TOKEN refused", st);
    else
        snprintf(b->probe_reason, sizeof b->probe_reason, "HTTP %ld from the backend", st);
}

static void on_probe_done(void *ud, const crt_backend_resp *r)
{
    (void)r;                        /* note_health has read it */
    crt_backend *b = ud;
    b->probe_in_flight = false;
}

/* Starts a probe if the rate allows: none while one runs, at most one per
 * interval, and (unless a real call just failed) none while real calls were
 * usefully answered within the interval. */
static void maybe_probe(crt_backend *b, bool early)
{
    uint64_t iv = b->o.probe_interval_ms;
    if (!iv || b->closing || b->probe_in_flight)
        return;
    uint64_t now = uv_now(b->loop);
    if (b->probed && now - b->last_probe_ms < iv)
        return;
    if (!early && b->last_usable_ms && now - b->last_usable_ms < iv)
        return;
    uint64_t tmo = b->o.attempt_timeout_ms < iv ? b->o.attempt_timeout_ms : iv;
    if (tmo < 100)
        tmo = 100;
    b->probed = true;
    b->last_probe_ms = now;
    b->probe_in_flight = true;
    if (crt_backend_request_by(b, "GET", CRT_BACKEND_PROBE_PATH, NULL, 0, "probe", FLAG_PROBE, now + tmo + 20,
                               on_probe_done, b))
        b->probe_in_flight = false;
}

static void on_probe_tick(uv_timer_t *t) { maybe_probe(t->data, false); }

void crt_bk_probe_start(crt_backend *b)
{
    if (!b->o.probe_interval_ms)
        return;
    /* The first probe right away: a wrong BACKEND_TOKEN shows before any traffic. */
    uv_timer_init(b->loop, &b->probe_timer);
    b->probe_timer.data = b;
    uv_timer_start(&b->probe_timer, on_probe_tick, 0, b->o.probe_interval_ms);
    uv_unref((uv_handle_t *)&b->probe_timer);
    b->probe_timer_open = true;
    b->open_handles++;
}

void crt_bk_probe_close(crt_backend *b, uv_close_cb cb)
{
    if (!b->probe_timer_open)
        return;
    b->probe_timer_open = false;
    uv_timer_stop(&b->probe_timer);
    uv_close((uv_handle_t *)&b->probe_timer, cb);
}

const char *crt_backend_down_reason(const crt_backend *b)
{
    if (b->consecutive_failures >= DOWN_AFTER_FAILURES)
        return b->fail_reason;
    if (b->probe_bad)
        return b->probe_reason;
    return NULL;
}

bool crt_backend_up(const crt_backend *b) { return crt_backend_down_reason(b) == NULL; }
