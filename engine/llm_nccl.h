/*
 * Copyright (C) ngx_llm developers
 *
 * Tensor parallelism over NCCL: one communicator per GPU of a group,
 * created together at start-up; the all-reduce of the shards' partial
 * sums on each GPU's compute stream, grouped so one thread drives all
 * the GPUs.  A communicator that fails is aborted and the engine exits
 * non-zero: a supervisor restarts it while nginx answers 503.  These
 * are the CUDA backend's group and allreduce hooks (llm_backend.h).
 */

#ifndef LLM_NCCL_H
#define LLM_NCCL_H

#include "llm_backend.h"


int llm_nccl_group(llm_backend_t **group, int n, llm_err_t *err);
int llm_nccl_allreduce(llm_backend_t **group, int n, float **bufs,
    int64_t count, llm_err_t *err);

/* exits if the communicator has failed on the device */
void llm_nccl_check(void *comm);
void llm_nccl_free(void *comm);


/* llm_backend_cuda.c, for the above: a backend's stream, its group's
 * communicator, and making its device the thread's */
void *llm_backend_cuda_stream(llm_backend_t *be);
void llm_backend_cuda_set_comm(llm_backend_t *be, void *comm);
void *llm_backend_cuda_comm(llm_backend_t *be);
int llm_backend_cuda_select(llm_backend_t *be);


#endif /* LLM_NCCL_H */
