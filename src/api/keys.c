/* The variable key rule (keys.h). */
#include "cronium/keys.h"
#include "cronium/utf8.h"

bool crt_key_valid(const char *k, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    /* "." and ".." are dot segments: URL libraries remove them, so the key
     * would name another backend route (and the params are decoded once, so
     * %2E arrives here as "."). */
    if (k[0] == '.' && (n == 1 || (n == 2 && k[1] == '.')))
        return false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = crt_utf8_seq(k + i, n - i, &cp);
        /* C0 controls, DEL and the C1 controls (U+0080–U+009F). */
        if (!len || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return false;
        i += len;
    }
    return true;
}
