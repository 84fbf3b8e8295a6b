/* libFuzzer target: the JSON scanner, object slots, number addition, the
 * context builder and dotted paths must never crash, hang or leak, and what
 * they accept must be valid, stable compact JSON. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/context.h"
#include "cronium/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    crt_buf a, b;
    crt_buf_init(&a);
    crt_buf_init(&b);
    if (crt_json_compact(p, size, &a) == 0) {
        /* compacting compact JSON changes nothing */
        assert(crt_json_compact(a.data, a.len, &b) == 0);
        assert(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
        crt_buf_reset(&b);
        if (crt_json_kind_of(a.data, a.len) == CRT_JSON_NUMBER)
            (void)crt_json_number_add(a.data, a.len, "1", 1, &b);
        if (crt_json_kind_of(a.data, a.len) == CRT_JSON_STRING) {
            crt_buf_reset(&b);
            assert(crt_json_unquote(a.data, a.len, &b) == 0);
        }
    }
    static const char *const keys[3] = {"value", "data", "by"};
    crt_json_slot s[3];
    crt_buf_reset(&b);
    (void)crt_json_object(p, size, &b, keys, s, 3);
    crt_context c;
    if (crt_context_build(&c, p, size, NULL) == 0) {
        crt_buf out;
        crt_buf_init(&out);
        assert(crt_json_compact(c.json.data, c.json.len, &out) == 0);
        crt_buf_reset(&out);
        (void)crt_json_path(c.json.data, c.json.len, "metadata.input.x", 16, &out);
        crt_buf_fini(&out);
        crt_context_fini(&c);
    }
    crt_buf_fini(&a);
    crt_buf_fini(&b);
    return 0;
}
