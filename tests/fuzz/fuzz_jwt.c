/* libFuzzer target: token verification must never crash, leak or accept a
 * token it did not sign. Inputs are tried as a whole token and as a payload
 * signed with the right secret (to reach the claims parser). */
#include <assert.h>
#include <string.h>
#include "cronium/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char secret[] = "fuzz-secret-0123456789abcdef";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static crt_jwt *v;
    if (!v) {
        crt_jwt_opts o = {secret, sizeof secret - 1, CRT_JWT_HS256, 30, NULL, 64};
        v = crt_jwt_new(&o);
    }
    crt_claims *c = NULL;
    const char *why = NULL;
    crt_jwt_status st = crt_jwt_verify(v, (const char *)data, size, 1700000000, &c, &why);
    assert((st == CRT_JWT_OK) == (c != NULL));
    crt_claims_release(c);

    crt_buf tok;
    crt_buf_init(&tok);
    if (crt_jwt_sign(CRT_JWT_HS256, secret, sizeof secret - 1, (const char *)data, size, &tok) == 0) {
        c = NULL;
        st = crt_jwt_verify(v, tok.data, tok.len, 1700000000, &c, &why);
        if (st == CRT_JWT_OK)
            assert(c && c->execution_id && *c->execution_id);
        crt_claims_release(c);
        /* the same payload under another secret is never accepted */
        crt_buf other;
        crt_buf_init(&other);
        crt_jwt_sign(CRT_JWT_HS256, "other", 5, (const char *)data, size, &other);
        c = NULL;
        assert(crt_jwt_verify(v, other.data, other.len, 1700000000, &c, &why) != CRT_JWT_OK);
        crt_buf_fini(&other);
    }
    crt_buf_fini(&tok);
    return 0;
}
