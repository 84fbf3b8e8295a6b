/* libFuzzer target: YAML configuration and scalar parsers must reject bad
 * input with a message, never crash or leak. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include "cronium/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crt_config c;
    crt_buf err;
    crt_buf_init(&err);
    if (crt_config_defaults(&c, &err) == 0) {
        if (crt_config_load_yaml(&c, (const char *)data, size, &err) != 0)
            assert(err.len > 0);
        crt_config_fini(&c);
    }
    crt_buf_fini(&err);
    char *s = strndup((const char *)data, size);
    if (s) {
        uint64_t ms;
        int64_t i;
        bool b;
        (void)crt_parse_duration(s, &ms);
        (void)crt_parse_int(s, &i);
        (void)crt_parse_bool(s, &b);
        crt_buf e2;
        crt_buf_init(&e2);
        free(crt_config_expand(s, &e2));
        crt_buf_fini(&e2);
        free(s);
    }
    return 0;
}
