/* The shared rate limit (ratelimit_valkey.h): GCRA in a Lua script on
 * Valkey, the local token buckets as the fallback. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/cache_script.h"
#include "cronium/log.h"
#include "cronium/ratelimit_valkey.h"

/* GCRA (generic cell rate algorithm) on one key holding the theoretical
 * arrival time (TAT, microseconds of Valkey's clock): a request is allowed
 * when TAT + interval - burst * interval <= now, and then moves TAT on by
 * one interval. Valkey's TIME is the one clock every process shares. The
 * key lives only until the bucket would be full again (TAT - now), so an
 * idle execution leaves nothing behind. Numbers go back as one string:
 * "allowed remaining reset_us retry_us" (%.0f: exact integers; Lua's own
 * number to string conversion keeps only 14 digits). */
static const char gcra_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local tau = interval * burst\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if not tat or tat < now then tat = now end\n"
    "local new = tat + interval\n"
    "if new - tau > now then\n"
    "  return string.format('0 0 %.0f %.0f', tat - now, new - tau - now)\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', string.format('%.0f', math.ceil((new - now) / 1000) + 1))\n"
    "return string.format('1 %.0f %.0f 0', math.floor((now + tau - new) / interval), new - now)\n";

#define MAX_VKEY 512

struct crt_rlv {
    crt_cache *cache;
    crt_cache_script *script;
    crt_ratelimit *local;
    uint64_t per_min;
    char prefix[48];
    char suffix[16];
    char interval[40];          /* microseconds per token, as the script's ARGV[1] */
    char burst[24];
    bool last_failed;           /* Valkey's last answer was no verdict: /ready says local... */
    uint64_t failed_conn;       /* ...while still on the connection that gave it */
};

crt_rlv *crt_rlv_new(const crt_rlv_opts *o)
{
    crt_rlv *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->per_min = o->per_min ? o->per_min : 1;
    uint64_t burst = o->burst ? o->burst : 1;
    l->local = crt_ratelimit_new(l->per_min, burst, o->max_local_keys);
    if (!l->local) {
        free(l);
        return NULL;
    }
    snprintf(l->prefix, sizeof l->prefix, "%s", o->prefix ? o->prefix : "");
    snprintf(l->suffix, sizeof l->suffix, "%s", o->suffix ? o->suffix : "");
    snprintf(l->interval, sizeof l->interval, "%.3f", 60e6 / (double)l->per_min);
    snprintf(l->burst, sizeof l->burst, "%llu", (unsigned long long)burst);
    if (o->cache) {
        l->cache = o->cache;
        l->script = crt_cache_script_add(o->cache, gcra_lua);
        if (!l->script) {
            crt_rlv_free(l);
            return NULL;
        }
    }
    return l;
}

void crt_rlv_free(crt_rlv *l)
{
    if (!l)
        return;
    /* The script belongs to the cache (freed with it). */
    crt_ratelimit_free(l->local);
    free(l);
}

static uint64_t us_to_s(uint64_t us) { return (us + 999999) / 1000000; }

bool crt_rlv_parse(const char *s, size_t n, uint64_t per_min, crt_rl_result *r)
{
    char tmp[128];
    if (!s || n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    unsigned long long v[4];
    const char *p = tmp;
    for (int i = 0; i < 4; i++) {
        char *end;
        if (*p < '0' || *p > '9')
            return false;
        errno = 0;
        v[i] = strtoull(p, &end, 10);
        if (errno || end == p || (*end != (i < 3 ? ' ' : '\0')))
            return false;
        p = end + (i < 3);
    }
    if (v[0] > 1)
        return false;
    *r = (crt_rl_result){
        .allowed = v[0] == 1,
        .limit = per_min,
        .remaining = v[1],
        .reset_s = us_to_s(v[2]),
        .retry_after_s = v[0] ? 0 : us_to_s(v[3]) ? us_to_s(v[3]) : 1,
    };
    return true;
}

static int send_take(crt_rlv_call *call);

static void answer_local(crt_rlv_call *call)
{
    crt_rlv *l = call->l;
    crt_rl_result r = crt_ratelimit_take(l->local, call->key, call->klen, crt_now_ms(), 1);
    call->cb(call->ud, &r);
}

static void on_take_reply(void *ud, const crt_cache_reply *rep)
{
    crt_rlv_call *call = ud;
    crt_rlv *l = call->l;
    if (!call->full && crt_cache_script_noscript(rep)) {
        /* The server lost the script: once more in full, which reloads it. */
        call->full = true;
        if (send_take(call) == 0)
            return;
    }
    crt_rl_result r;
    if (rep->err == 0 && rep->type == CRT_CACHE_STR && crt_rlv_parse(rep->str, rep->len, l->per_min, &r)) {
        l->last_failed = false;
        call->cb(call->ud, &r);
        return;
    }
    if (!l->last_failed)
        CRT_LOGF(CRT_LOG_WARN, "valkey rate limit without a verdict: local buckets meanwhile",
                 CRT_LS("error", rep->err ? "unavailable or timed out" : "unexpected answer"),
                 CRT_LSN("reply", rep->str ? rep->str : "", rep->str ? rep->len : 0));
    l->last_failed = true;
    l->failed_conn = crt_cache_script_connection(l->script);
    answer_local(call);
}

static int send_take(crt_rlv_call *call)
{
    crt_rlv *l = call->l;
    char key[MAX_VKEY];
    int n = snprintf(key, sizeof key, "%s%.*s%s", l->prefix, (int)call->klen, call->key, l->suffix);
    if (n < 0 || (size_t)n >= sizeof key)
        return CRT_EINVAL;
    const char *args[3] = {key, l->interval, l->burst};
    size_t lens[3] = {(size_t)n, strlen(l->interval), strlen(l->burst)};
    return crt_cache_script_run(l->script, call->full, on_take_reply, call, 1, 3, args, lens);
}

bool crt_rlv_take(crt_rlv *l, crt_rlv_call *call, const char *key, size_t klen, uint64_t now_ms,
                  crt_rl_result *out, crt_rlv_cb cb, void *ud)
{
    if (l->script && crt_cache_ready(l->cache) && klen < MAX_VKEY / 2) {
        *call = (crt_rlv_call){.l = l, .key = key, .klen = klen, .cb = cb, .ud = ud};
        if (send_take(call) == 0)
            return false;
    }
    *out = crt_ratelimit_take(l->local, key, klen, now_ms, 1);
    return true;
}

const char *crt_rlv_mode(const crt_rlv *l)
{
    if (!l->script || !crt_cache_ready(l->cache))
        return "local";
    return l->last_failed && l->failed_conn == crt_cache_script_connection(l->script) ? "local" : "valkey";
}
