/* Token minting for the `token` command and dev mode. */
#include <string.h>
#include "cronium/jwt.h"

static void put_str(crt_buf *b, const char *name, const char *v)
{
    if (!v || !*v)
        return;
    crt_buf_printf(b, ",\"%s\":", name);
    crt_buf_json_str(b, v, strlen(v));
}

int crt_token_mint(const char *secret, const char *execution_id, const char *user_id, const char *job_id,
                   const char *event_id, const char *issuer, int64_t ttl_s, crt_buf *out)
{
    int64_t now = crt_wall_s();
    crt_buf p;
    crt_buf_init(&p);
    crt_buf_puts(&p, "{\"executionId\":");
    crt_buf_json_str(&p, execution_id, strlen(execution_id));
    put_str(&p, "jobId", job_id);
    put_str(&p, "userId", user_id);
    put_str(&p, "eventId", event_id);
    put_str(&p, "iss", issuer ? issuer : "cronium-runtime");
    put_str(&p, "sub", execution_id);
    crt_buf_printf(&p, ",\"scope\":\"execution\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}", (long long)now,
                   (long long)now, (long long)(now + ttl_s));
    int rc = crt_jwt_sign(CRT_JWT_HS256, secret, strlen(secret), p.data, p.len, out);
    crt_buf_fini(&p);
    return rc;
}
