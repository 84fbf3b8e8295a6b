/* UTF-8 decoding, the one copy every module uses (the JSON validator, the
 * JSON string writer, the key rule). */
#ifndef CRONIUM_UTF8_H
#define CRONIUM_UTF8_H

#include "cronium/common.h"

/* Length (1–4) of the well-formed UTF-8 sequence at s (at most n > 0 bytes),
 * with its code point in *cp (may be NULL); 0 if it is not one (a stray
 * continuation byte, a truncated or overlong sequence, a surrogate, or past
 * U+10FFFF). */
size_t crt_utf8_seq(const char *s, size_t n, uint32_t *cp);

#endif
