/*
 * Copyright (C) ngx_llm developers
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "llm_common.h"


int
llm_err_set(llm_err_t *e, int code, const char *fmt, ...)
{
    va_list  ap;

    if (e == NULL) {
        return LLM_ERR;
    }

    e->err = code;
    va_start(ap, fmt);
    vsnprintf(e->errstr, sizeof(e->errstr), fmt, ap);
    va_end(ap);

    /* one line, whatever it quotes: keys, names and text from files
     * and requests may hold any byte */
    for (char *p = e->errstr; *p != '\0'; p++) {
        if ((unsigned char) *p < 0x20 || *p == 0x7f) {
            *p = '?';
        }
    }

    return LLM_ERR;
}


uint64_t
llm_hash_data(uint64_t seed, const void *p, size_t n)
{
    uint64_t              h, w;
    const unsigned char  *b = p;

    h = seed ^ 0x243f6a8885a308d3ULL ^ ((uint64_t) n * 0x9e3779b97f4a7c15ULL);

    for ( /* void */ ; n >= 8; b += 8, n -= 8) {
        memcpy(&w, b, 8);
        h = (h ^ w) * 0x9fb21c651e98df25ULL;
        h ^= h >> 29;
    }

    w = 0;
    memcpy(&w, b, n);
    h = (h ^ w ^ ((uint64_t) n << 56)) * 0x9fb21c651e98df25ULL;
    h ^= h >> 32;

    return h;
}


uint64_t
llm_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
