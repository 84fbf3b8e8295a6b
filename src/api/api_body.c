/* Request bodies of the execution API (docs/api.md §4): each endpoint's
 * fields, validated and copied into the call object as compact JSON. */
#include <string.h>
#include "cronium/json.h"
#include "api_int.h"

/* ---- body validation -------------------------------------------------------------------------------- */

static bool body_blank(const crt_buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] != ' ' && b->data[i] != '\t' && b->data[i] != '\r' && b->data[i] != '\n')
            return false;
    return true;
}

/* A string value holding U+0000: the backend keeps variables in a Postgres
 * text column, which cannot store NUL, and answers 500. Refused here, in both
 * modes, so a script sees the same 400 in dev mode as in production. Compact
 * JSON carries a NUL only as the escape \u0000, so the decode runs only then. */
static bool string_has_nul(const char *v, size_t n)
{
    if (crt_json_kind_of(v, n) != CRT_JSON_STRING || !memmem(v, n, "\\u0000", 6))
        return false;
    crt_buf text;
    crt_buf_init(&text);
    bool nul = crt_json_unquote(v, n, &text) == 0 && memchr(text.data, '\0', text.len) != NULL;
    crt_buf_fini(&text);
    return nul;
}

const char *crt_api_parse_body(api_call *c)
{
    crt_req *r = c->req;
    const crt_buf *body = &r->body;
    crt_buf doc;
    crt_buf_init(&doc);
    const char *err = NULL;
    switch (c->ep->kind) {
    case EP_OUTPUT_SET:
    case EP_VAR_PUT: {
        const char *name = c->ep->kind == EP_OUTPUT_SET ? "data" : "value";
        const char *keys[1] = {name};
        crt_json_slot s;
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, &s, 1))
            err = c->ep->kind == EP_OUTPUT_SET ? "body must be a JSON object {\"data\": <any>}"
                                               : "body must be a JSON object {\"value\": <any>}";
        else if (!s.len)
            err = c->ep->kind == EP_OUTPUT_SET ? "body has no \"data\" field" : "body has no \"value\" field";
        else if (c->ep->kind == EP_VAR_PUT && string_has_nul(doc.data + s.off, s.len))
            err = "a string value cannot hold a NUL character (U+0000): the backend cannot store it";
        else
            crt_buf_append(&c->value, doc.data + s.off, s.len);
        break;
    }
    case EP_COND_SET: {
        const char *keys[1] = {"condition"};
        crt_json_slot s;
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, &s, 1) || !s.len)
            err = "body must be a JSON object {\"condition\": true|false}";
        else {
            crt_json_kind k = crt_json_kind_of(doc.data + s.off, s.len);
            if (k != CRT_JSON_TRUE && k != CRT_JSON_FALSE)
                err = "\"condition\" must be true or false";
            else
                crt_buf_append(&c->value, doc.data + s.off, s.len);
        }
        break;
    }
    case EP_VAR_INCR: {
        if (body_blank(body)) {
            crt_buf_putc(&c->value, '1');
            break;
        }
        const char *keys[1] = {"by"};
        crt_json_slot s;
        if (crt_json_object(body->data, body->len, &doc, keys, &s, 1))
            err = "body must be a JSON object {\"by\": <number>}";
        else if (!s.len)
            crt_buf_putc(&c->value, '1');
        else if (crt_json_kind_of(doc.data + s.off, s.len) != CRT_JSON_NUMBER)
            err = "\"by\" must be a number";
        else
            crt_buf_append(&c->value, doc.data + s.off, s.len);
        break;
    }
    case EP_VAR_APPEND: {
        const char *keys[2] = {"value", "separator"};
        crt_json_slot s[2];
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, s, 2))
            err = "body must be a JSON object {\"value\": <string>, \"separator\": <string>}";
        else if (!s[0].len || crt_json_kind_of(doc.data + s[0].off, s[0].len) != CRT_JSON_STRING)
            err = "\"value\" must be a string";
        else if (s[1].len && crt_json_kind_of(doc.data + s[1].off, s[1].len) != CRT_JSON_STRING)
            err = "\"separator\" must be a string";
        else if (string_has_nul(doc.data + s[0].off, s[0].len) ||
                 (s[1].len && string_has_nul(doc.data + s[1].off, s[1].len)))
            err = "the text to append cannot hold a NUL character (U+0000): the backend cannot store it";
        else {
            crt_buf_append(&c->value, doc.data + s[0].off, s[0].len);
            if (s[1].len)
                crt_buf_append(&c->key2, doc.data + s[1].off, s[1].len);
            else
                crt_buf_puts(&c->key2, "\"\"");
        }
        break;
    }
    case EP_TOOL: {
        const char *keys[4] = {"tool", "action", "params", "config"};
        crt_json_slot s[4];
        if (crt_json_object(body->data ? body->data : "", body->len, &doc, keys, s, 4)) {
            err = "body must be a JSON object {\"tool\", \"action\", \"params\"}";
            break;
        }
        if (!s[0].len || crt_json_kind_of(doc.data + s[0].off, s[0].len) != CRT_JSON_STRING ||
            !s[1].len || crt_json_kind_of(doc.data + s[1].off, s[1].len) != CRT_JSON_STRING) {
            err = "\"tool\" and \"action\" must be strings";
            break;
        }
        crt_json_unquote(doc.data + s[0].off, s[0].len, &c->key3);
        crt_json_unquote(doc.data + s[1].off, s[1].len, &c->key2);
        if (!c->key3.len || !c->key2.len || c->key3.len > 255 || c->key2.len > 255) {
            err = "\"tool\" and \"action\" must be 1 to 255 bytes";
            break;
        }
        crt_json_slot p = s[2].len ? s[2] : s[3];
        crt_json_kind k = p.len ? crt_json_kind_of(doc.data + p.off, p.len) : CRT_JSON_NULL;
        if (k == CRT_JSON_NULL)
            crt_buf_puts(&c->value, "{}");
        else if (k != CRT_JSON_OBJECT)
            err = "\"params\" must be an object";
        else
            crt_buf_append(&c->value, doc.data + p.off, p.len);
        break;
    }
    default:
        break;
    }
    crt_buf_fini(&doc);
    return err;
}
