/* The dev store: executions and per-user variables in memory, answered at
 * once. Nothing is persisted. Values read back as they do in production
 * (crt_store_read_back: a string that spells a JSON value reads back as that
 * value), so a script tested here behaves the same there. A token for an execution never seen creates a
 * fresh empty execution owned by the token's user, so tests can use many. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/context.h"
#include "cronium/json.h"
#include "cronium/log.h"
#include "cronium/map.h"
#include "cronium/store.h"
#include "cronium/store_codec.h"

#define DEV_MAX_EXECUTIONS 100000
#define DEV_MAX_VARIABLES 1000000

static const char sample_context[] =
    "{\"executionId\":\"dev-execution\",\"jobId\":\"dev-job\",\"eventId\":\"dev-event\",\"userId\":\"dev-user\","
    "\"metadata\":{\"input\":{\"message\":\"hello from cronium-runtime dev mode\",\"count\":3,\"tags\":[\"a\",\"b\"]}},"
    "\"event\":{\"id\":\"dev-event\",\"name\":\"Dev sample event\",\"type\":\"manual\"},"
    "\"user\":{\"id\":\"dev-user\",\"name\":\"Dev User\"}}";

typedef struct dev_exec {
    crt_context ctx;
    crt_buf output;             /* len 0: never set */
    char condition[6];          /* "null", "true", "false" */
} dev_exec;

typedef struct devstore {
    crt_store base;
    crt_map *execs;             /* execution id -> dev_exec */
    crt_map *vars;              /* user "\0" key -> crt_buf (JSON) */
    char *seed_id;
    char *seed_user;
    crt_buf scratch;
} devstore;

static void exec_free(void *p)
{
    dev_exec *e = p;
    if (!e)
        return;
    crt_context_fini(&e->ctx);
    crt_buf_fini(&e->output);
    free(e);
}

static void var_free(void *p)
{
    crt_buf *b = p;
    if (b)
        crt_buf_fini(b);
    free(b);
}

static dev_exec *exec_new(const char *json, size_t len, const crt_context_defaults *d)
{
    dev_exec *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (crt_context_build(&e->ctx, json, len, d)) {
        free(e);
        return NULL;
    }
    strcpy(e->condition, "null");
    return e;
}

/* The execution id's entry; one never seen is created from the token's
 * claims (the only store that reads them). */
static dev_exec *exec_get(devstore *ds, const char *id, const crt_store_exec *claims)
{
    static const crt_store_exec none;
    const crt_store_exec *x = claims ? claims : &none;
    size_t n = strlen(id);
    void **slot = crt_map_slot(ds->execs, id, n, false);
    if (slot)
        return *slot;
    if (crt_map_size(ds->execs) >= DEV_MAX_EXECUTIONS)
        return NULL;
    crt_context_defaults d = {id, x->job_id && *x->job_id ? x->job_id : NULL, x->event_id,
                              x->user_id && *x->user_id ? x->user_id : "dev-user"};
    dev_exec *e = exec_new("{}", 2, &d);
    if (!e)
        return NULL;
    slot = crt_map_slot(ds->execs, id, n, true);
    if (!slot) {
        exec_free(e);
        return NULL;
    }
    *slot = e;
    CRT_LOGF(CRT_LOG_DEBUG, "dev store: new execution", CRT_LS("execution_id", id),
             CRT_LS("user_id", e->ctx.user_id));
    return e;
}

static void var_key(devstore *ds, const dev_exec *e, crt_span key)
{
    crt_buf_reset(&ds->scratch);
    crt_buf_puts(&ds->scratch, e->ctx.user_id);
    crt_buf_putc(&ds->scratch, '\0');
    crt_buf_append(&ds->scratch, key.p, key.len);
}

static void answer(crt_store_cb cb, void *ud, int err, const char *json, size_t len, const char *msg)
{
    crt_store_result res = {.err = err, .json = json, .len = len, .message = msg};
    cb(ud, &res);
}

static int set_buf(crt_buf *b, const char *v, size_t n)
{
    crt_buf_reset(b);
    return crt_buf_append(b, v, n);
}

/* Stores the compact JSON v under ds->scratch (the variable's key) in the
 * form production reads it back in. */
static int var_store(devstore *ds, const char *v, size_t n)
{
    void **slot = crt_map_slot(ds->vars, ds->scratch.data, ds->scratch.len, true);
    if (slot && !*slot)
        *slot = calloc(1, sizeof(crt_buf));
    if (!slot || !*slot) {
        if (slot)
            crt_map_del(ds->vars, ds->scratch.data, ds->scratch.len);
        return CRT_ENOMEM;
    }
    crt_buf *b = *slot;
    crt_buf_reset(b);
    crt_store_read_back(v, n, b);
    return 0;
}

static void dev_submit(crt_store *s, const crt_store_req *r, crt_store_cb cb, void *ud)
{
    devstore *ds = crt_container_of(s, devstore, base);
    dev_exec *e = exec_get(ds, r->execution_id, r->claims);
    if (!e) {
        answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "dev store is full");
        return;
    }
    switch (r->op) {
    case CRT_ST_GET_CONTEXT:
        answer(cb, ud, 0, e->ctx.json.data, e->ctx.json.len, NULL);
        return;
    case CRT_ST_GET_INPUT:
        if (e->ctx.input.len)
            answer(cb, ud, 0, e->ctx.input.data, e->ctx.input.len, NULL);
        else
            answer(cb, ud, CRT_ENOTFOUND, NULL, 0, "execution has no input");
        return;
    case CRT_ST_GET_OUTPUT:
        if (e->output.len)
            answer(cb, ud, 0, e->output.data, e->output.len, NULL);
        else
            answer(cb, ud, CRT_ENOTFOUND, NULL, 0, "no output set");
        return;
    case CRT_ST_SET_OUTPUT:
        answer(cb, ud, set_buf(&e->output, r->output.value.p, r->output.value.len) ? CRT_EUNAVAIL : 0, NULL, 0, "out of memory");
        return;
    case CRT_ST_GET_CONDITION:
        answer(cb, ud, 0, e->condition, strlen(e->condition), NULL);
        return;
    case CRT_ST_SET_CONDITION:
        snprintf(e->condition, sizeof e->condition, "%.*s", (int)r->condition.value.len, r->condition.value.p);
        answer(cb, ud, 0, NULL, 0, NULL);
        return;
    case CRT_ST_GET_VAR: {
        var_key(ds, e, r->var.key);
        crt_buf *v = crt_map_get(ds->vars, ds->scratch.data, ds->scratch.len);
        if (v)
            answer(cb, ud, 0, v->data, v->len, NULL);
        else
            answer(cb, ud, CRT_ENOTFOUND, NULL, 0, "variable not found");
        return;
    }
    case CRT_ST_PUT_VAR: {
        var_key(ds, e, r->var.key);
        if (!crt_map_get(ds->vars, ds->scratch.data, ds->scratch.len) &&
            crt_map_size(ds->vars) >= DEV_MAX_VARIABLES) {
            answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "dev store is full");
            return;
        }
        int rc = var_store(ds, r->var.value.p, r->var.value.len);
        answer(cb, ud, rc ? CRT_EUNAVAIL : 0, NULL, 0, rc ? "out of memory" : NULL);
        return;
    }
    case CRT_ST_DEL_VAR: {
        var_key(ds, e, r->var.key);
        crt_buf *v = crt_map_del(ds->vars, ds->scratch.data, ds->scratch.len);
        var_free(v);
        answer(cb, ud, v ? 0 : CRT_ENOTFOUND, NULL, 0, v ? NULL : "variable not found");
        return;
    }
    case CRT_ST_INCR_VAR: {
        var_key(ds, e, r->incr.key);
        void **slot = crt_map_slot(ds->vars, ds->scratch.data, ds->scratch.len, true);
        if (!slot) {
            answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "out of memory");
            return;
        }
        crt_buf *v = *slot;
        crt_buf sum;
        crt_buf_init(&sum);
        const char *cur = v ? v->data : "0";
        size_t curlen = v ? v->len : 1;
        if (crt_json_number_add(cur, curlen, r->incr.by.p, r->incr.by.len, &sum)) {
            crt_buf_fini(&sum);
            if (!v)
                crt_map_del(ds->vars, ds->scratch.data, ds->scratch.len);
            answer(cb, ud, CRT_ECONFLICT, NULL, 0, "the variable's value is not a number");
            return;
        }
        if (!v)
            *slot = v = calloc(1, sizeof(crt_buf));
        if (!v) {
            crt_buf_fini(&sum);
            crt_map_del(ds->vars, ds->scratch.data, ds->scratch.len);
            answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "out of memory");
            return;
        }
        crt_buf_fini(v);
        *v = sum;
        answer(cb, ud, 0, v->data, v->len, NULL);
        return;
    }
    case CRT_ST_APPEND_VAR: {
        var_key(ds, e, r->append.key);
        crt_buf *v = crt_map_get(ds->vars, ds->scratch.data, ds->scratch.len);
        if (!v && crt_map_size(ds->vars) >= DEV_MAX_VARIABLES) {
            answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "dev store is full");
            return;
        }
        crt_buf next;
        crt_buf_init(&next);
        int rc = crt_store_append(v ? v->data : NULL, v ? v->len : 0, r->append.separator.p, r->append.separator.len,
                                  r->append.value.p, r->append.value.len, &next);
        if (rc == 0)
            rc = var_store(ds, next.data, next.len) ? CRT_EUNAVAIL : 0;
        if (rc == CRT_ECONFLICT)
            answer(cb, ud, rc, NULL, 0, "the variable's value is not a string");
        else if (rc)
            answer(cb, ud, CRT_EUNAVAIL, NULL, 0, "out of memory");
        else
            answer(cb, ud, 0, next.data, next.len, NULL);  /* the string made, even if it reads back as more */
        crt_buf_fini(&next);
        return;
    }
    case CRT_ST_TOOL_ACTION: {
        crt_buf res;
        crt_buf_init(&res);
        crt_buf_puts(&res, "{\"success\":true,\"data\":{\"tool\":");
        crt_buf_json_str(&res, r->tool.name.p, r->tool.name.len);
        crt_buf_puts(&res, ",\"action\":");
        crt_buf_json_str(&res, r->tool.action.p, r->tool.action.len);
        crt_buf_puts(&res, ",\"params\":");
        crt_buf_append(&res, r->tool.params.p, r->tool.params.len);
        crt_buf_puts(&res, "},\"metadata\":{\"dev\":true}}");
        CRT_LOGF(CRT_LOG_INFO, "dev mode: tool action not sent anywhere, echoed",
                 CRT_LS("execution_id", r->execution_id), CRT_LSN("tool", r->tool.name.p, r->tool.name.len),
                 CRT_LSN("action", r->tool.action.p, r->tool.action.len));
        answer(cb, ud, 0, res.data, res.len, NULL);
        crt_buf_fini(&res);
        return;
    }
    }
    answer(cb, ud, CRT_EINVAL, NULL, 0, "unknown operation");
}

static void dev_shutdown(crt_store *s) { (void)s; }

static void dev_free(crt_store *s)
{
    if (!s)
        return;
    devstore *ds = crt_container_of(s, devstore, base);
    crt_map_free(ds->execs, exec_free);
    crt_map_free(ds->vars, var_free);
    crt_buf_fini(&ds->scratch);
    free(ds->seed_id);
    free(ds->seed_user);
    free(ds);
}

static const crt_store_vtable dev_vt = {"dev", dev_submit, dev_shutdown, dev_free};

crt_store *crt_devstore_new(const char *context_json, size_t len, char *err, size_t errcap)
{
    devstore *ds = calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    ds->base.vt = &dev_vt;
    ds->execs = crt_map_new();
    ds->vars = crt_map_new();
    if (!ds->execs || !ds->vars) {
        dev_free(&ds->base);
        return NULL;
    }
    if (!context_json) {
        context_json = sample_context;
        len = sizeof sample_context - 1;
    }
    crt_context_defaults d = {"dev-execution", NULL, NULL, "dev-user"};
    dev_exec *e = exec_new(context_json, len, &d);
    if (!e) {
        snprintf(err, errcap, "dev context is not a JSON object");
        dev_free(&ds->base);
        return NULL;
    }
    /* The seeded id is the context's executionId (a string) or the default. */
    crt_buf id;
    crt_buf_init(&id);
    crt_json_path(e->ctx.json.data, e->ctx.json.len, "executionId", 11, &id);
    crt_buf plain;
    crt_buf_init(&plain);
    if (crt_json_kind_of(id.data, id.len) == CRT_JSON_STRING)
        crt_json_unquote(id.data, id.len, &plain);
    else
        crt_buf_puts(&plain, "dev-execution");
    crt_buf_fini(&id);
    ds->seed_id = strdup(crt_buf_cstr(&plain));
    ds->seed_user = strdup(e->ctx.user_id);
    void **slot = crt_map_slot(ds->execs, plain.data, plain.len, true);
    crt_buf_fini(&plain);
    if (!slot || !ds->seed_id || !ds->seed_user) {
        exec_free(e);
        dev_free(&ds->base);
        return NULL;
    }
    *slot = e;
    return &ds->base;
}

const char *crt_devstore_seed_id(crt_store *s) { return crt_container_of(s, devstore, base)->seed_id; }
const char *crt_devstore_seed_user(crt_store *s) { return crt_container_of(s, devstore, base)->seed_user; }
