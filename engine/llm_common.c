/*
 * Copyright (C) ngx_llm developers
 */

#include <stdarg.h>
#include <stdio.h>
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

    return LLM_ERR;
}


uint64_t
llm_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
