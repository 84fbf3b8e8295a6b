/* Lua scripts on the Valkey client (cache_script.h). The SHA1 is computed
 * locally (libcrypto), so EVALSHA can go out before SCRIPT LOAD has been
 * answered: the load is queued first on a fresh connection and Valkey runs
 * commands in order. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache_int.h"
#include "cronium/cache_script.h"
#include "cronium/log.h"

#define MAX_ARGS 8

struct crt_cache_script {
    crt_cache *c;
    char *lua;
    size_t lua_len;
    char sha[41];
    uint64_t loads;             /* connections it was loaded on */
    struct crt_cache_script *next;
};

crt_cache_script *crt_cache_script_add(crt_cache *c, const char *lua)
{
    crt_cache_script *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lua_len = strlen(lua);
    s->lua = malloc(s->lua_len + 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!s->lua || !EVP_Digest(lua, s->lua_len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
        free(s->lua);
        free(s);
        return NULL;
    }
    memcpy(s->lua, lua, s->lua_len + 1);
    for (unsigned i = 0; i < 20; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
    s->c = c;
    s->next = c->scripts;
    c->scripts = s;
    /* Already connected: load it now (later connections load it on ready). */
    if (crt_cache_ready(c)) {
        const char *argv[3] = {"SCRIPT", "LOAD", s->lua};
        size_t lens[3] = {6, 4, s->lua_len};
        crt_cache_cmd(c, NULL, NULL, 3, argv, lens);
    }
    return s;
}

static void on_load_reply(void *ud, const crt_cache_reply *r)
{
    crt_cache_script *s = ud;
    (void)s;
    if (r->err == 0 && r->type == CRT_CACHE_ERROR)
        CRT_LOGF(CRT_LOG_WARN, "valkey refused SCRIPT LOAD: callers fall back", CRT_LSN("error", r->str, r->len));
}

void crt_cache__scripts_load(crt_cache *c)
{
    for (crt_cache_script *s = c->scripts; s; s = s->next) {
        s->loads++;
        const char *argv[3] = {"SCRIPT", "LOAD", s->lua};
        size_t lens[3] = {6, 4, s->lua_len};
        /* The callback only logs; s lives as long as the cache, whose free
         * completes pending commands first. */
        crt_cache_cmd(c, on_load_reply, s, 3, argv, lens);
    }
}

void crt_cache__scripts_free(crt_cache *c)
{
    while (c->scripts) {
        crt_cache_script *s = c->scripts;
        c->scripts = s->next;
        free(s->lua);
        free(s);
    }
}

int crt_cache_script_run(crt_cache_script *s, bool full, crt_cache_cb cb, void *ud, int nkeys, int nargs,
                         const char **args, const size_t *lens)
{
    if (nargs < nkeys || nargs > MAX_ARGS || nkeys < 0)
        return CRT_EINVAL;
    const char *argv[MAX_ARGS + 3];
    size_t alen[MAX_ARGS + 3];
    char nk[12];
    int n = snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = full ? "EVAL" : "EVALSHA";
    alen[0] = full ? 4 : 7;
    argv[1] = full ? s->lua : s->sha;
    alen[1] = full ? s->lua_len : 40;
    argv[2] = nk;
    alen[2] = (size_t)n;
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        alen[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    return crt_cache_cmd(s->c, cb, ud, nargs + 3, argv, alen);
}

bool crt_cache_script_noscript(const crt_cache_reply *r)
{
    return r->err == 0 && r->type == CRT_CACHE_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

const char *crt_cache_script_sha(const crt_cache_script *s) { return s->sha; }

uint64_t crt_cache_script_connection(const crt_cache_script *s) { return s->loads; }
