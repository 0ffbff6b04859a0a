/*
 * Copyright (C) ngx_llm developers
 *
 * Whether bytes are whole, well-formed UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), written apart from the
 * engine's own checks so that tests can judge them.  Header-only.
 */

#ifndef LLM_UTF8_CHECK_H
#define LLM_UTF8_CHECK_H

#include <stddef.h>


static inline int
utf8_whole(const char *s, size_t n)
{
    size_t                need;
    const unsigned char  *p = (const unsigned char *) s;

    for (size_t i = 0; i < n; i += need) {
        if (p[i] < 0x80) {
            need = 1;

        } else if (p[i] >= 0xc2 && p[i] <= 0xdf) {
            need = 2;

        } else if (p[i] >= 0xe0 && p[i] <= 0xef) {
            need = 3;

        } else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
            need = 4;

        } else {
            return 0;
        }

        if (need > n - i) {
            return 0;
        }

        for (size_t j = 1; j < need; j++) {
            if ((p[i + j] & 0xc0) != 0x80) {
                return 0;
            }
        }

        if ((p[i] == 0xe0 && p[i + 1] < 0xa0)
            || (p[i] == 0xed && p[i + 1] > 0x9f)
            || (p[i] == 0xf0 && p[i + 1] < 0x90)
            || (p[i] == 0xf4 && p[i + 1] > 0x8f))
        {
            return 0;
        }
    }

    return 1;
}


#endif /* LLM_UTF8_CHECK_H */
