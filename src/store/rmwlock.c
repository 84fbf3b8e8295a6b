/* The Lua scripts of the read-modify-write lock (incr.c), registered on the
 * cache client (cache_script.h: SCRIPT LOAD at every connect, EVALSHA, one
 * EVAL after a NOSCRIPT). Each checks that the
 * lock still holds the operation's token before it touches anything, so a
 * process whose lock expired can no longer extend it, write the cache under
 * it, or delete another process's lock. */
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

int crt_ps_scripts_init(prodstore *ps)
{
    static const char *const srcs[SCRIPT_COUNT] = {extend_src, commit_src, release_src};
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        ps->scripts[i] = (ps_script){0};
        if (ps->cache && !(ps->scripts[i].script = crt_cache_script_add(ps->cache, srcs[i])))
            return CRT_ENOMEM;
    }
    return 0;
}

int crt_ps_script_call(prodstore *ps, int which, crt_cache_cb cb, void *ud, int nkeys, int nargs, const char **args,
                       const size_t *lens)
{
    ps_script *s = &ps->scripts[which];
    if (!ps->cache || !s->script)
        return CRT_EUNAVAIL;
    /* One EVAL after a NOSCRIPT loads the script again for every later call. */
    bool full = s->full;
    s->full = false;
    return crt_cache_script_run(s->script, full, cb, ud, nkeys, nargs, args, lens);
}

bool crt_ps_script_missing(prodstore *ps, int which, const crt_cache_reply *r)
{
    if (!crt_cache_script_noscript(r))
        return false;
    ps->scripts[which].full = true;
    return true;
}
