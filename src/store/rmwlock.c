/* The Lua scripts of the read-modify-write lock (incr.c), each loaded with
 * SCRIPT LOAD at every connect and then run by EVALSHA (EVAL until its sha
 * is known, or after a NOSCRIPT, which loads it again). Each checks that the
 * lock still holds the operation's token before it touches anything, so a
 * process whose lock expired can no longer extend it, write the cache under
 * it, or delete another process's lock. */
#include <stdio.h>
#include <string.h>
#include "prodstore_int.h"

/* KEYS[1] lock; ARGV[1] token, ARGV[2] ms: 1 if still held (and now for ms more), else 0. */
static const char extend_src[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
/* KEYS[1] lock, KEYS[2] cached value; ARGV[1] token, ARGV[2] value, ARGV[3] ttl ms.
 * Held: cache the value and release, 1. Lost: whoever holds it now may have
 * written since, so the cached value is dropped instead, 0. */
static const char commit_src[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) "
    "redis.call('DEL', KEYS[1]) return 1 end redis.call('DEL', KEYS[2]) return 0";
/* KEYS[1] lock; ARGV[1] token: deletes the lock only if it is still ours. */
static const char release_src[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

void crt_ps_scripts_init(prodstore *ps)
{
    static const char *const srcs[SCRIPT_COUNT] = {extend_src, commit_src, release_src};
    for (int i = 0; i < SCRIPT_COUNT; i++)
        ps->scripts[i] = (ps_script){.src = srcs[i]};
}

static void on_loaded(void *ud, const crt_cache_reply *r)
{
    ps_script *s = ud;
    if (!r->err && r->type == CRT_CACHE_STR && r->len == 40) {
        memcpy(s->sha, r->str, 40);
        s->sha[40] = '\0';
        s->loaded = true;
    }
}

static void script_load(prodstore *ps, ps_script *s)
{
    s->loaded = false;
    const char *argv[3] = {"SCRIPT", "LOAD", s->src};
    size_t lens[3] = {6, 4, strlen(s->src)};
    if (ps->cache)
        crt_cache_cmd(ps->cache, on_loaded, s, 3, argv, lens);
}

void crt_ps_scripts_load(prodstore *ps)
{
    for (int i = 0; i < SCRIPT_COUNT; i++)
        script_load(ps, &ps->scripts[i]);
}

int crt_ps_script_call(prodstore *ps, int which, crt_cache_cb cb, void *ud, int nkeys, int nargs, const char **args,
                       const size_t *lens)
{
    enum { MAX_ARGS = 8 };
    if (!ps->cache || nargs > MAX_ARGS)
        return CRT_EUNAVAIL;
    ps_script *s = &ps->scripts[which];
    const char *argv[MAX_ARGS + 3];
    size_t argl[MAX_ARGS + 3];
    char nk[8];
    snprintf(nk, sizeof nk, "%d", nkeys);
    if (s->loaded) {
        argv[0] = "EVALSHA", argl[0] = 7;
        argv[1] = s->sha, argl[1] = 40;
    } else {
        argv[0] = "EVAL", argl[0] = 4;
        argv[1] = s->src, argl[1] = strlen(s->src);
    }
    argv[2] = nk, argl[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        argl[3 + i] = lens[i];
    }
    return crt_cache_cmd(ps->cache, cb, ud, 3 + nargs, argv, argl);
}

bool crt_ps_script_missing(prodstore *ps, int which, const crt_cache_reply *r)
{
    if (r->err || r->type != CRT_CACHE_ERROR || r->len < 8 || memcmp(r->str, "NOSCRIPT", 8) != 0)
        return false;
    script_load(ps, &ps->scripts[which]);
    return true;
}
