/*
 * Copyright (C) ngx_llm developers
 *
 * What every engine file needs: status codes, the error record that
 * functions fill instead of exiting, overflow-checked size arithmetic.
 */

#ifndef LLM_COMMON_H
#define LLM_COMMON_H

#include <stddef.h>
#include <stdint.h>


#define LLM_OK    0
#define LLM_ERR  (-1)

#define LLM_ERRSTR_MAX  256


/* Filled by a failing function, as redisContext's err/errstr are. */
typedef struct {
    int   err;                       /* 0 or an LLM_E* code */
    char  errstr[LLM_ERRSTR_MAX];    /* one line, no trailing newline */
} llm_err_t;

enum {
    LLM_EIO = 1,       /* a file could not be opened, read or mapped */
    LLM_EFORMAT,       /* malformed input: GGUF, request, template ... */
    LLM_EUNSUPPORTED,  /* well-formed but not supported (arch, type) */
    LLM_ENOMEM,
    LLM_EINVAL         /* bad argument from the caller */
};


/* sets err and returns LLM_ERR; the format is printf's */
int llm_err_set(llm_err_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/* a * b without overflow: returns 0 and sets *out, or -1 on overflow */
static inline int
llm_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) {
        return -1;
    }
    *out = a * b;
    return 0;
}


static inline int
llm_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) {
        return -1;
    }
    *out = a + b;
    return 0;
}


/* a 64-bit hash of n bytes, chained through seed; not cryptographic */
uint64_t llm_hash_data(uint64_t seed, const void *p, size_t n);


/* monotonic clock in microseconds */
uint64_t llm_now_us(void);


#endif /* LLM_COMMON_H */
