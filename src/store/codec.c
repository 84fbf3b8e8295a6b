/* The production store's value codec (docs/api.md §6) and its key and route
 * schema: pure functions, unit-tested in tests/unit/test_store_codec.c. */
#include <string.h>
#include "cronium/backend.h"
#include "cronium/json.h"
#include "cronium/store_codec.h"

/* ---- §6 value encoding ---- */

/* What the backend's text column gives back for a value, appended to out. */
void crt_store_read_back(const char *v, size_t n, crt_buf *out)
{
    if (crt_json_kind_of(v, n) != CRT_JSON_STRING) {
        crt_buf_append(out, v, n);
        return;
    }
    crt_buf text;
    crt_buf_init(&text);
    crt_json_unquote(v, n, &text);
    size_t mark = out->len;
    if (text.len && crt_json_compact(text.data, text.len, out) == 0 &&
        crt_json_kind_of(out->data + mark, out->len - mark) != CRT_JSON_STRING) {
        /* the text spells a non-string JSON value: that is what reads back */
    } else {
        out->len = mark;
        crt_buf_append(out, v, n);
    }
    crt_buf_fini(&text);
}

/* The new value of an append: the string cur (NULL: a missing variable,
 * "") followed by the strings sep (only if cur is not empty) and val, as a
 * JSON string. */
int crt_store_append(const char *cur, size_t curlen, const char *sep, size_t seplen, const char *val, size_t vallen,
                     crt_buf *out)
{
    if (cur && crt_json_kind_of(cur, curlen) != CRT_JSON_STRING)
        return CRT_ECONFLICT;
    crt_buf text;
    crt_buf_init(&text);
    /* The separator goes between the text and value: none onto nothing. */
    int rc = (cur ? crt_json_unquote(cur, curlen, &text) : 0) || (text.len && crt_json_unquote(sep, seplen, &text)) ||
             crt_json_unquote(val, vallen, &text) ? CRT_EINVAL : 0;
    if (!rc)
        rc = crt_buf_json_str(out, text.data ? text.data : "", text.len) ? CRT_ENOMEM : 0;
    crt_buf_fini(&text);
    return rc;
}

/* {"value": <encoded>}: strings as themselves, anything else as its JSON text. */
void crt_store_put_body(const char *v, size_t n, crt_buf *out)
{
    crt_buf_puts(out, "{\"value\":");
    if (crt_json_kind_of(v, n) == CRT_JSON_STRING)
        crt_buf_append(out, v, n);
    else
        crt_buf_json_str(out, v, n);
    crt_buf_putc(out, '}');
}

int crt_store_var_reply(const char *body, size_t len, crt_buf *out)
{
    static const char *const keys[1] = {"value"};
    crt_json_slot s;
    crt_buf doc;
    crt_buf_init(&doc);
    int rc = crt_json_object(body, len, &doc, keys, &s, 1);
    if (rc == 0 && s.len)
        crt_store_read_back(doc.data + s.off, s.len, out);
    else
        rc = CRT_EINVAL;
    crt_buf_fini(&doc);
    return rc;
}

/* What the cache holds is not trusted: a context must be a JSON object, and
 * one naming another execution is not this one's. */
bool crt_store_context_ok(const char *json, size_t len, const char *exec_id)
{
    static const char *const keys[1] = {"executionId"};
    crt_json_slot s;
    crt_buf doc, id;
    crt_buf_init(&doc);
    crt_buf_init(&id);
    bool ok = crt_json_object(json, len, &doc, keys, &s, 1) == 0;
    if (ok && s.len && crt_json_kind_of(doc.data + s.off, s.len) != CRT_JSON_NULL) {
        ok = crt_json_kind_of(doc.data + s.off, s.len) == CRT_JSON_STRING &&
             crt_json_unquote(doc.data + s.off, s.len, &id) == 0 && id.len == strlen(exec_id) &&
             memcmp(id.data, exec_id, id.len) == 0;
    }
    crt_buf_fini(&doc);
    crt_buf_fini(&id);
    return ok;
}

/* ---- Valkey keys ---- */

void crt_store_key_exec(crt_buf *b, const char *id, const char *what)
{
    crt_buf_reset(b);
    crt_buf_puts(b, "cronium:exec:{");
    crt_buf_puts(b, id);
    crt_buf_puts(b, "}:");
    crt_buf_puts(b, what);
}

static void key_user(crt_buf *b, const char *uid, const char *what, const char *k, size_t kn)
{
    crt_buf_reset(b);
    crt_buf_puts(b, "cronium:user:{");
    crt_buf_puts(b, uid);
    crt_buf_puts(b, "}:");
    crt_buf_puts(b, what);
    crt_buf_putc(b, ':');
    crt_buf_append(b, k, kn);
}

void crt_store_key_var(crt_buf *b, const char *uid, const char *k, size_t kn) { key_user(b, uid, "var", k, kn); }
void crt_store_key_lock(crt_buf *b, const char *uid, const char *k, size_t kn) { key_user(b, uid, "lock", k, kn); }

/* ---- backend routes ---- */

void crt_store_path_var(crt_buf *path, const char *uid, const char *k, size_t kn)
{
    crt_buf_puts(path, "/api/internal/variables");
    crt_backend_path_seg(path, uid, strlen(uid));
    crt_backend_path_seg(path, k, kn);
}

void crt_store_path_exec(crt_buf *path, const char *id, const char *what)
{
    crt_buf_puts(path, "/api/internal/executions");
    crt_backend_path_seg(path, id, strlen(id));
    crt_buf_putc(path, '/');
    crt_buf_puts(path, what);
}
