/* The variable key rule of docs/api.md §3, in one place: 1–255 bytes of
 * UTF-8 without control characters (C0, DEL, C1), and not "." or "..". */
#ifndef CRONIUM_KEYS_H
#define CRONIUM_KEYS_H

#include "cronium/common.h"

bool crt_key_valid(const char *k, size_t n);

#endif
