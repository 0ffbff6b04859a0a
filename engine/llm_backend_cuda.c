/*
 * Copyright (C) ngx_llm developers
 *
 * The CUDA backend.  Built without CUDA (plain make), it only says so.
 */

#include "llm_backend.h"


llm_backend_t *
llm_backend_cuda_new(int device, llm_err_t *err)
{
    llm_err_set(err, LLM_EUNSUPPORTED,
                "no CUDA device %d: the engine was built without CUDA "
                "(make CUDA=1)", device);
    return NULL;
}


int
llm_backend_cuda_devices(void)
{
    return 0;
}
