/* Production store internals, shared by the files of src/store/ that make it
 * up (prodstore.c dispatches; op.c, ctxcache.c, vars.c, distrust.c, incr.c,
 * execstate.c do the work). Nothing outside src/store/ includes this. */
#ifndef CRONIUM_PRODSTORE_INT_H
#define CRONIUM_PRODSTORE_INT_H

#include <uv.h>
#include "cronium/backend.h"
#include "cronium/cache.h"
#include "cronium/cache_script.h"
#include "cronium/context.h"
#include "cronium/list.h"
#include "cronium/map.h"
#include "cronium/store.h"

#define CTX_CACHE_MAX 10000
#define LOCK_RETRY_MS 15
#define GEN_SLOTS 4096          /* write generations, by hash of user and key */
/* Cache keys this process no longer trusts (an update or delete failed).
 * Past this many, the whole cache is distrusted for one TTL instead. */
#define DISTRUST_MAX 100000
#define DISTRUST_BATCH 256      /* keys per DEL */
#define DISTRUST_RETRY_MS 1000  /* a failed DEL is tried again after this */
#define MAINT_MS 100            /* queued-increment and invalidation sweep */
#define INCR_QUEUE_MAX 64       /* increments waiting per variable; more get 429 */
#define OPS_MAX 20000           /* operations in flight, detached ones included */

typedef struct prodstore prodstore;

/* A Lua script of the lock, registered on the cache client (loaded at every
 * connect, run by EVALSHA); full: send the next call as EVAL (after a NOSCRIPT). */
typedef struct ps_script {
    crt_cache_script *script;
    bool full;
} ps_script;
enum { SCRIPT_EXTEND, SCRIPT_COMMIT, SCRIPT_RELEASE, SCRIPT_COUNT };

typedef struct ctx_entry {
    crt_context ctx;
    crt_buf output;             /* last output set through this process */
    char condition[6];          /* "" unknown */
    char *id;
    crt_dnode node;             /* in the LRU, most recent first */
} ctx_entry;

typedef enum { K_CONTEXT, K_VARIABLE, K_OUTPUT, K_CONDITION, K_COUNT } cache_kind;
extern const char *const crt_ps_kind_names[K_COUNT];

typedef struct op op;

struct op {
    prodstore *ps;
    crt_store_op kind;
    crt_store_cb cb;
    void *ud;
    char *exec_id;
    char *user_id;              /* from the context */
    crt_buf key;                /* variable key, or the tool's name */
    crt_buf action;             /* tool action */
    crt_buf value;              /* compact JSON: the value put or set, the increment, the tool's params */
    crt_buf work;               /* scratch: keys, bodies, results */
    crt_buf result;
    char lock_token[33];
    bool locked;
    uint64_t lock_deadline;
    uv_timer_t *lock_timer;     /* while waiting for a busy lock; then renewing it */
    struct renew_ticket *renew; /* a lock renewal waiting for its reply */
    bool fenced;                /* ownership checked, lock stretched over the write */
    struct incr_line *line;     /* increments and appends: the per-key line it is in */
    crt_dnode qnode;            /* in line->waiting while queued */
    crt_dnode pnode;            /* in ps->queued while queued */
    bool queued;
    uint32_t gen_seen;          /* write generation when a backend read started */
    bool (*gone)(void *ud);     /* the client has gone away (may be NULL) */
    uint64_t deadline;          /* uv_now() time the answer is due by */
};

struct prodstore {
    crt_store base;
    uv_loop_t *loop;
    crt_backend *backend;       /* borrowed; NULL once detached */
    crt_cache *cache;           /* borrowed; NULL: no Valkey, or detached */
    uint64_t ttl_ms;
    uint64_t lock_ttl_ms;
    crt_map *ctxs;              /* exec id -> ctx_entry */
    crt_dlist lru;
    crt_map *incr_lines;        /* user\0key -> incr_line */
    crt_dlist queued;           /* every waiting increment, oldest first */
    size_t nops;                /* operations not yet answered */
    uint64_t op_budget_ms;      /* default deadline of an operation */
    bool single_process;        /* declared alone on its port: no lock needed without Valkey */
    ps_script scripts[SCRIPT_COUNT];
    bool shutting_down;
    /* A read that raced a write must not put its (older) value in the
     * cache: writes bump the generation of their key's slot, and a read
     * fills the cache only if the slot did not move (and only with SET NX,
     * so a writer in another process wins too). */
    uint32_t gen[GEN_SLOTS];
    /* Keys whose cache update failed after an acknowledged write (Valkey
     * down, or connected but refusing: -OOM, -ERR, WRONGTYPE): never read
     * from the cache until a DEL of them succeeded; DELs are sent at once,
     * first thing when Valkey is back, and retried. */
    crt_map *distrust;          /* cache key -> distrusted */
    crt_dlist distrust_pending;
    uint64_t distrust_seq;
    uint64_t distrust_epoch;    /* bumped when the map is dropped (overflow) */
    uint64_t distrust_all_until; /* uv_now(): past DISTRUST_MAX, no key is trusted before this */
    uint64_t next_del_retry;
    struct crt_ps_recent *recent; /* recent.c: keys changed lately, for a failover */
    uv_timer_t maint;
    bool maint_open;
    uint64_t *m_cache[K_COUNT][3];  /* hit, miss, error */
    uint64_t *m_invalid[K_COUNT];   /* cached values refused (counted as misses too) */
    uint64_t *m_distrusted;
    uint64_t *m_distrust_overflow;
    uint64_t *m_incr_dropped;       /* queued increments whose client went away */
    uint64_t *m_incr_rejected;      /* queue full or deadline passed */
};

enum { R_HIT, R_MISS, R_ERROR };

/* ---- op.c: answers, cache and backend calls ---- */
void crt_ps_answer(op *o, int err, const char *json, size_t len, const char *msg, int nf_kind, unsigned ra);
void crt_ps_fail(op *o, int status, const char *code, const char *msg, unsigned ra);
void crt_ps_backend_error(op *o, const char *msg);
bool crt_ps_gone(op *o);
void crt_ps_unavailable(op *o, const char *msg, unsigned retry_after);
void crt_ps_count(prodstore *ps, cache_kind k, int r);
int crt_ps_cache_set_ex(prodstore *ps, const crt_buf *key, const char *v, size_t vn, bool nx, crt_cache_cb cb,
                        void *ud);
int crt_ps_cache_set(prodstore *ps, const crt_buf *key, const char *v, size_t vn, crt_cache_cb cb, void *ud);
int crt_ps_cache_get(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud);
int crt_ps_cache_del(prodstore *ps, const crt_buf *key, crt_cache_cb cb, void *ud);
uint32_t *crt_ps_gen_slot(prodstore *ps, const char *uid, const char *key, size_t klen);
void crt_ps_backend_failed(op *o, const crt_backend_resp *r, const char *what);
int crt_ps_backend_req(op *o, const char *method, const char *path, const char *body, size_t len,
                       const char *opname, unsigned flags, crt_backend_cb cb);
void crt_ps_backend_call(op *o, const char *method, const char *path, const char *body, size_t len,
                         const char *opname, crt_backend_cb cb);
void crt_ps_cache_then_answer(op *o, cache_kind k, const crt_buf *key, const char *v, size_t n);
/* Answers with o->result (reads) or nothing (writes) once a cache SET was
 * acknowledged; a write whose SET failed distrusts its key first. */
void crt_ps_on_cache_written(void *ud, const crt_cache_reply *r);

/* ---- distrust.c: cache keys bypassed until deleted ---- */
bool crt_ps_distrusted(prodstore *ps, const crt_buf *key);
void crt_ps_distrust(prodstore *ps, const crt_buf *key);
void crt_ps_distrust_flush(prodstore *ps);
void crt_ps_on_cache_ready(void *ctx);
void crt_ps_distrust_all(prodstore *ps, const char *why);

/* ---- recent.c: keys changed lately, distrusted after a Valkey failover ---- */
void crt_ps_recent_note(prodstore *ps, const char *key, size_t len);
void crt_ps_recent_distrust(prodstore *ps, uint64_t last_good);
void crt_ps_recent_free(prodstore *ps);

/* ---- ctxcache.c: the execution contexts (LRU, then Valkey, then the backend) ---- */
void crt_ps_ctx_start(op *o);
ctx_entry *crt_ps_ctx_lookup(prodstore *ps, const char *id);
void crt_ps_ctx_entry_free(void *p);

/* ---- vars.c, incr.c, execstate.c: each operation once its context is known ---- */
void crt_ps_var_get(op *o);
void crt_ps_var_set(op *o);
void crt_ps_var_delete(op *o);
int crt_ps_var_put(op *o, const char *v, size_t n, const char *opname, crt_backend_cb cb);
void crt_ps_incr_start(op *o);   /* increments and appends */
void crt_ps_incr_sweep(prodstore *ps, uint64_t now);
/* ---- rmwlock.c: the cross-process lock of read-modify-write operations ---- */
int crt_ps_scripts_init(prodstore *ps);     /* registers them on the cache client */
/* args: nkeys keys, then the script's ARGV; nargs counts both. */
int crt_ps_script_call(prodstore *ps, int which, crt_cache_cb cb, void *ud, int nkeys, int nargs,
                       const char **args, const size_t *lens);
/* Whether a reply is Valkey's NOSCRIPT (then the script is loaded again). */
bool crt_ps_script_missing(prodstore *ps, int which, const crt_cache_reply *r);
void crt_ps_exec_get(op *o);
void crt_ps_exec_set(op *o);
void crt_ps_tool(op *o);

/* ---- prodstore.c ---- */
void crt_ps_with_context(op *o, ctx_entry *e);
void crt_ps_maint_arm(prodstore *ps);

#endif
