/* base64url (RFC 4648 §5) without padding, for the JWT code of src/auth/.
 * decode is strict: only the URL alphabet, no padding, no stray bits.
 * Return 0 or CRT_EINVAL. */
#ifndef CRONIUM_B64URL_H
#define CRONIUM_B64URL_H

#include "cronium/buf.h"

int crt_b64url_encode(const void *in, size_t n, crt_buf *out);
int crt_b64url_decode(const char *in, size_t n, crt_buf *out);

#endif
