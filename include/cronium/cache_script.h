/* Lua scripts on the Valkey client (cache.h): a script is registered once,
 * its SHA1 computed here, and loaded with SCRIPT LOAD each time the
 * connection becomes ready, before any other command goes out on it. Calls
 * go by EVALSHA; a server that lost the script (SCRIPT FLUSH, a restart
 * that our reconnect has not seen yet, a failover) answers NOSCRIPT, and the
 * caller sends the same call once more in full (EVAL), which loads it
 * again. */
#ifndef CRONIUM_CACHE_SCRIPT_H
#define CRONIUM_CACHE_SCRIPT_H

#include "cronium/cache.h"

typedef struct crt_cache_script crt_cache_script;

/* Registers lua (copied) on c. The script belongs to the cache and is
 * freed with it. Returns NULL when out of memory. */
crt_cache_script *crt_cache_script_add(crt_cache *c, const char *lua);
/* EVALSHA (full: EVAL with the body) with nkeys keys then the other
 * arguments in args (nargs in all, at most 8). Returns like crt_cache_cmd. */
int crt_cache_script_run(crt_cache_script *s, bool full, crt_cache_cb cb, void *ud, int nkeys, int nargs,
                         const char **args, const size_t *lens);
/* True for a NOSCRIPT error reply: run the same call again with full. */
bool crt_cache_script_noscript(const crt_cache_reply *r);
/* The script's SHA1 as 40 hex digits (tests, logs). */
const char *crt_cache_script_sha(const crt_cache_script *s);
/* Counts the connections the script was loaded on: changes with each
 * reconnect (a failure seen on an older connection is history). */
uint64_t crt_cache_script_connection(const crt_cache_script *s);

#endif
