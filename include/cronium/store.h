/* The store interface: everything the execution API reads or writes goes
 * through these asynchronous operations. Handlers never know which store is
 * behind it (dev: in memory; production: Valkey + the Cronium backend).
 *
 * Every operation completes exactly once by calling cb, possibly before the
 * call returns (the dev store answers at once). Strings passed in are copied
 * if the store needs them after returning. JSON in results is borrowed for the
 * duration of the callback only. */
#ifndef CRONIUM_STORE_H
#define CRONIUM_STORE_H

#include "cronium/common.h"

typedef struct crt_store crt_store;

/* The verified token's claims about its execution. Only the dev store reads
 * them: it creates an execution it has not seen, owned by user_id. The
 * production store ignores them (the backend's context names the owner and
 * the ids). Any may be NULL or "". */
typedef struct crt_store_exec {
    const char *user_id;
    const char *job_id;
    const char *event_id;
} crt_store_exec;

typedef struct crt_store_result {
    int err;                        /* 0, CRT_ENOTFOUND, CRT_ECONFLICT, CRT_ENOTSUP, CRT_EUNAVAIL, CRT_EINVAL */
    const char *json;               /* the value, compact JSON (may be NULL when err != 0) */
    size_t len;
    const char *message;            /* for errors, for a person */
    int not_found_kind;             /* CRT_NF_* when err == CRT_ENOTFOUND */
    unsigned retry_after_s;         /* for CRT_EUNAVAIL (and status 429/503) */
    /* When set (with err != 0): the HTTP status and §3 code to answer with,
     * overriding the mapping of err. Used for what err cannot say:
     * 502 "backend_error" (the backend answered something definite and
     * wrong), 429 "rate_limited" (a queue is full). */
    int status;
    const char *code;
} crt_store_result;

enum { CRT_NF_VARIABLE = 0, CRT_NF_EXECUTION = 1 };

typedef void (*crt_store_cb)(void *ud, const crt_store_result *res);

typedef enum {
    CRT_ST_GET_CONTEXT,     /* json: the §5 context object */
    CRT_ST_GET_INPUT,       /* json: metadata.input; ENOTFOUND (variable kind) if none */
    CRT_ST_GET_OUTPUT,      /* json: the output; ENOTFOUND if never set */
    CRT_ST_SET_OUTPUT,      /* output.value */
    CRT_ST_GET_CONDITION,   /* json: true, false or null */
    CRT_ST_SET_CONDITION,   /* condition.value */
    CRT_ST_GET_VAR,         /* var.key; json: the value */
    CRT_ST_PUT_VAR,         /* var.key, var.value */
    CRT_ST_DEL_VAR,         /* var.key */
    CRT_ST_INCR_VAR,        /* incr.key, incr.by; json: the new number */
    CRT_ST_APPEND_VAR,      /* append.key, .value, .separator; json: the new string */
    CRT_ST_TOOL_ACTION,     /* tool.name, tool.action, tool.params; json: the result object */
} crt_store_op;

/* One operation. The member of the union named for the op holds its
 * arguments (none for the GET_CONTEXT/INPUT/OUTPUT/CONDITION reads); JSON is
 * compact and valid, keys are decoded (docs/api.md §3 rule already checked). */
typedef struct crt_store_req {
    crt_store_op op;
    const char *execution_id;       /* the token's, checked against the path */
    const crt_store_exec *claims;   /* the dev store only (see crt_store_exec); may be NULL */
    union {
        struct {
            crt_span key;
            crt_span value;         /* PUT_VAR: JSON */
        } var;
        struct {
            crt_span key;
            crt_span by;            /* a JSON number */
        } incr;
        struct {
            crt_span key;
            crt_span value;         /* a JSON string: the text appended */
            crt_span separator;     /* a JSON string put before it ("\"\"" for none) */
        } append;
        struct {
            crt_span name;          /* the tool */
            crt_span action;
            crt_span params;        /* a JSON object */
        } tool;
        struct {
            crt_span value;         /* JSON */
        } output;
        struct {
            crt_span value;         /* "true" or "false" */
        } condition;
    };
    const char *request_id;
    /* Asked with the callback's ud before work that has not started yet
     * (a queued increment, a backend write): true when the client has gone
     * away, so nobody will read the answer and the work is dropped (and
     * answered with CRT_EUNAVAIL). NULL: the client never goes away. */
    bool (*gone)(void *ud);
    uint64_t deadline_ms;           /* uv_now() time the answer is due by; 0: the store's own budget */
} crt_store_req;

typedef struct crt_store_vtable {
    const char *name;
    void (*submit)(crt_store *s, const crt_store_req *r, crt_store_cb cb, void *ud);
    void (*shutdown)(crt_store *s);         /* stop background work (flush) */
    void (*free)(crt_store *s);
} crt_store_vtable;

struct crt_store {
    const crt_store_vtable *vt;
};

static inline void crt_store_submit(crt_store *s, const crt_store_req *r, crt_store_cb cb, void *ud)
{
    s->vt->submit(s, r, cb, ud);
}

/* ---- the dev store --------------------------------------------------------------------------- */

/* In-memory store. context_json: the seeded execution in the backend's
 * context shape (NULL: a sample). Tool actions answer an echo. */
crt_store *crt_devstore_new(const char *context_json, size_t len, char *err, size_t errcap);
/* The id and user of the seeded execution. */
const char *crt_devstore_seed_id(crt_store *s);
const char *crt_devstore_seed_user(crt_store *s);

#endif
