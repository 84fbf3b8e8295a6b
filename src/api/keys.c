/* The variable key rule (keys.h). */
#include "cronium/keys.h"

bool crt_key_valid(const char *k, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    /* "." and ".." are dot segments: URL libraries remove them, so the key
     * would name another backend route (and the params are decoded once, so
     * %2E arrives here as "."). */
    if (k[0] == '.' && (n == 1 || (n == 2 && k[1] == '.')))
        return false;
    const unsigned char *s = (const unsigned char *)k;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (i + len > n)
            return false;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x80 && cp <= 0x9F))
            return false;
        i += len;
    }
    return true;
}
