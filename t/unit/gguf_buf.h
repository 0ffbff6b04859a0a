/*
 * Copyright (C) ngx_llm developers
 *
 * A growing byte buffer and the little-endian pieces of a GGUF file
 * (numbers, length-prefixed strings), for the tests and fuzz targets
 * that write GGUF files of their own.  Header-only.
 */

#ifndef LLM_GGUF_BUF_H
#define LLM_GGUF_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    unsigned char  *p;
    size_t          n;
    size_t          cap;
} buf_t;


static inline void
put(buf_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            abort();
        }
    }

    memcpy(b->p + b->n, p, n);
    b->n += n;
}


static inline void
put_u32(buf_t *b, uint32_t v)
{
    put(b, &v, 4);
}


static inline void
put_u64(buf_t *b, uint64_t v)
{
    put(b, &v, 8);
}


static inline void
put_str(buf_t *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}


#endif /* LLM_GGUF_BUF_H */
