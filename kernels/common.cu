/*
 * Copyright (C) ngx_llm developers
 *
 * The record of the first failure of a CUDA, cuBLAS, NCCL call or
 * kernel launch (common.cuh), per host thread: the engine drives its
 * GPUs from the scheduler thread, so one record is that thread's.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "llm_kernels.h"


typedef struct {
    int          set;
    char         line[256];
} llm_cuda_fail_t;


static __thread llm_cuda_fail_t  llm_cuda_fail;


extern "C" void
llm_cuda_record(const char *lib, int code, const char *what,
    const char *expr, const char *file, int line)
{
    const char  *base;

    if (llm_cuda_fail.set) {
        return;
    }

    base = strrchr(file, '/');
    base = base != NULL ? base + 1 : file;

    snprintf(llm_cuda_fail.line, sizeof(llm_cuda_fail.line),
             "%s error %d (%s) in %s at %s:%d", lib, code,
             what != NULL ? what : "?", expr, base, line);
    llm_cuda_fail.set = 1;
}


extern "C" int
llm_cuda_take_error(char *buf, size_t size)
{
    if (!llm_cuda_fail.set) {
        return 0;
    }

    if (size > 0) {
        snprintf(buf, size, "%s", llm_cuda_fail.line);
    }

    llm_cuda_fail.set = 0;
    return 1;
}


extern "C" int
llm_cuda_sync_debug(void)
{
    static int   v = -1;
    const char  *e;

    if (v < 0) {
        e = getenv("LLM_CUDA_SYNC_DEBUG");
        v = e != NULL && strcmp(e, "1") == 0;
    }

    return v;
}


extern "C" int
llm_cuda_type_supported(uint32_t type)
{
    switch (type) {
    case LLM_KT_F32:
    case LLM_KT_F16:
    case LLM_KT_BF16:
    case LLM_KT_Q8_0:
    case LLM_KT_Q4_0:
    case LLM_KT_Q4_K:
    case LLM_KT_Q5_K:
    case LLM_KT_Q6_K:
        return 1;

    default:
        return 0;
    }
}
