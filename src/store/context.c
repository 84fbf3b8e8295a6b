/* Execution context: backend reply -> §5 object, by splicing the members'
 * JSON text (no re-printing, so numbers in metadata stay exactly as sent).
 * Used by both stores (src/store/devstore.c, src/store/ctxcache.c). */
#include <stdlib.h>
#include <string.h>
#include "cronium/context.h"
#include "cronium/json.h"

enum { K_EXEC, K_JOB, K_EVENT_ID, K_USER_ID, K_META, K_EVENT, K_USER, K_START, K_STARTED, K_N };
static const char *const ctx_keys[K_N] = {"executionId", "jobId", "eventId", "userId", "metadata",
                                          "event", "user", "startTime", "startedAt"};

static void put_member(crt_buf *o, const char *name, const char *v, size_t n, const char *dflt, bool first)
{
    if (!first)
        crt_buf_putc(o, ',');
    crt_buf_putc(o, '"');
    crt_buf_puts(o, name);
    crt_buf_puts(o, "\":");
    if (n && !(n == 4 && memcmp(v, "null", 4) == 0 && dflt))
        crt_buf_append(o, v, n);
    else if (dflt)
        crt_buf_json_str(o, dflt, strlen(dflt));
    else
        crt_buf_puts(o, "null");
}

/* The text of a string or number member, for ids. */
static char *id_text(const char *v, size_t n)
{
    crt_buf b;
    crt_buf_init(&b);
    crt_json_kind k = crt_json_kind_of(v, n);
    if (k == CRT_JSON_STRING)
        crt_json_unquote(v, n, &b);
    else if (k == CRT_JSON_NUMBER)
        crt_buf_append(&b, v, n);
    crt_buf_cstr(&b);
    return b.data ? b.data : strdup("");
}

int crt_context_build(crt_context *c, const char *json, size_t len, const crt_context_defaults *d)
{
    static const crt_context_defaults none;
    if (!d)
        d = &none;
    memset(c, 0, sizeof *c);
    crt_buf doc;
    crt_buf_init(&doc);
    crt_json_slot s[K_N];
    if (crt_json_object(json, len, &doc, ctx_keys, s, K_N)) {
        crt_buf_fini(&doc);
        return CRT_EINVAL;
    }
#define SLOT(i) (doc.data + s[i].off), s[i].len
    /* event.name / event.type */
    crt_buf ev;
    crt_buf_init(&ev);
    static const char *const ev_keys[2] = {"name", "type"};
    crt_json_slot es[2] = {{0, 0}, {0, 0}};
    if (s[K_EVENT].len && crt_json_kind_of(SLOT(K_EVENT)) == CRT_JSON_OBJECT)
        crt_json_object(SLOT(K_EVENT), &ev, ev_keys, es, 2);

    crt_buf *o = &c->json;
    crt_buf_putc(o, '{');
    put_member(o, "executionId", SLOT(K_EXEC), d->execution_id, true);
    put_member(o, "jobId", SLOT(K_JOB), d->job_id, false);
    put_member(o, "eventId", SLOT(K_EVENT_ID), d->event_id && *d->event_id ? d->event_id : NULL, false);
    put_member(o, "eventName", ev.data ? ev.data + es[0].off : NULL, es[0].len, NULL, false);
    put_member(o, "eventType", ev.data ? ev.data + es[1].off : NULL, es[1].len, NULL, false);
    put_member(o, "userId", SLOT(K_USER_ID), d->user_id, false);
    char now[40];
    crt_rfc3339(now, sizeof now, -1, true);
    if (s[K_START].len)
        put_member(o, "startTime", SLOT(K_START), now, false);
    else
        put_member(o, "startTime", SLOT(K_STARTED), now, false);
    bool meta_obj = s[K_META].len && crt_json_kind_of(SLOT(K_META)) == CRT_JSON_OBJECT;
    put_member(o, "metadata", meta_obj ? doc.data + s[K_META].off : "{}", meta_obj ? s[K_META].len : 2, NULL, false);
    put_member(o, "event", SLOT(K_EVENT), NULL, false);
    put_member(o, "user", SLOT(K_USER), NULL, false);
    crt_buf_putc(o, '}');

    if (meta_obj) {
        static const char *const in_key[1] = {"input"};
        crt_json_slot is;
        crt_buf meta;
        crt_buf_init(&meta);
        if (crt_json_object(SLOT(K_META), &meta, in_key, &is, 1) == 0 && is.len)
            crt_buf_append(&c->input, meta.data + is.off, is.len);
        crt_buf_fini(&meta);
    }
    if (s[K_USER_ID].len && crt_json_kind_of(SLOT(K_USER_ID)) != CRT_JSON_NULL)
        c->user_id = id_text(SLOT(K_USER_ID));
    else
        c->user_id = strdup(d->user_id ? d->user_id : "");
#undef SLOT
    crt_buf_fini(&ev);
    crt_buf_fini(&doc);
    return c->user_id ? 0 : CRT_ENOMEM;
}

void crt_context_fini(crt_context *c)
{
    crt_buf_fini(&c->json);
    crt_buf_fini(&c->input);
    free(c->user_id);
    c->user_id = NULL;
}
