/*
 * Copyright (C) ngx_llm developers
 *
 * NCCL communicators and all-reduce for the CUDA backend's tensor-
 * parallel groups (llm_nccl.h).  Built without CUDA, nothing is here.
 */

#ifdef LLM_CUDA

#include <stdlib.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "common.cuh"
#include "llm_log.h"
#include "llm_nccl.h"


static void llm_nccl_fatal(llm_backend_t **group, int n, const char *what)
    __attribute__((noreturn));
static int llm_nccl_init(llm_backend_t **group, int n, ncclComm_t *comms);
static int llm_nccl_sum(llm_backend_t **group, int n, float **bufs,
    int64_t count);


/*
 * One communicator per GPU of the group, rank i on group[i]'s device,
 * initialized together (one thread drives every rank, so the ranks'
 * inits are grouped).
 */
int
llm_nccl_group(llm_backend_t **group, int n, llm_err_t *err)
{
    char         buf[LLM_ERRSTR_MAX - 32];
    ncclComm_t  *comms;

    comms = calloc((size_t) n, sizeof(ncclComm_t));
    if (comms == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    if (llm_nccl_init(group, n, comms) != 0) {
        if (!llm_cuda_take_error(buf, sizeof(buf))) {
            buf[0] = '\0';
        }

        for (int i = 0; i < n; i++) {
            if (comms[i] != NULL) {
                (void) ncclCommAbort(comms[i]);
            }
        }

        free(comms);
        return llm_err_set(err, LLM_EIO, "NCCL over %d GPUs: %s", n, buf);
    }

    for (int i = 0; i < n; i++) {
        llm_backend_cuda_set_comm(group[i], comms[i]);
    }

    free(comms);

    llm_log(LLM_LOG_INFO, "nccl: a group of %d GPUs from device %d", n,
            group[0]->device);

    return LLM_OK;
}


static int
llm_nccl_init(llm_backend_t **group, int n, ncclComm_t *comms)
{
    ncclUniqueId  id;

    LLM_NCCL_CHECK(ncclGetUniqueId(&id));
    LLM_NCCL_CHECK(ncclGroupStart());

    for (int i = 0; i < n; i++) {
        if (llm_backend_cuda_select(group[i]) != LLM_OK) {
            (void) ncclGroupEnd();
            return LLM_CUDA_FAILED;
        }

        LLM_NCCL_CHECK(ncclCommInitRank(&comms[i], n, id, i));
    }

    LLM_NCCL_CHECK(ncclGroupEnd());

    return 0;
}


/* every shard's bufs[i] (count) becomes the sum, on the compute streams;
 * a failure is fatal */
int
llm_nccl_allreduce(llm_backend_t **group, int n, float **bufs,
    int64_t count, llm_err_t *err)
{
    char  buf[LLM_ERRSTR_MAX];

    (void) err;

    if (llm_nccl_sum(group, n, bufs, count) != 0) {
        if (!llm_cuda_take_error(buf, sizeof(buf))) {
            buf[0] = '\0';
        }

        llm_nccl_fatal(group, n, buf);
    }

    return LLM_OK;
}


static int
llm_nccl_sum(llm_backend_t **group, int n, float **bufs, int64_t count)
{
    LLM_NCCL_CHECK(ncclGroupStart());

    for (int i = 0; i < n; i++) {
        if (llm_backend_cuda_select(group[i]) != LLM_OK) {
            (void) ncclGroupEnd();
            return LLM_CUDA_FAILED;
        }

        LLM_NCCL_CHECK(ncclAllReduce(bufs[i], bufs[i], (size_t) count,
                                     ncclFloat32, ncclSum,
                                     llm_backend_cuda_comm(group[i]),
                                     llm_backend_cuda_stream(group[i])));
    }

    LLM_NCCL_CHECK(ncclGroupEnd());

    return 0;
}


void
llm_nccl_check(void *comm)
{
    ncclResult_t  r;

    if (ncclCommGetAsyncError(comm, &r) == ncclSuccess
        && (r == ncclSuccess || r == ncclInProgress))
    {
        return;
    }

    llm_log(LLM_LOG_ERR, "nccl: the communicator failed: %s; exiting for "
            "a restart", ncclGetErrorString(r));
    (void) ncclCommAbort(comm);
    exit(EXIT_FAILURE);
}


/* the group's comms aborted, the engine gone: nothing can finish a step
 * whose shards disagree */
static void
llm_nccl_fatal(llm_backend_t **group, int n, const char *what)
{
    void  *comm;

    llm_log(LLM_LOG_ERR, "nccl: all-reduce over %d GPUs failed: %s; "
            "exiting for a restart", n, what);

    for (int i = 0; i < n; i++) {
        comm = llm_backend_cuda_comm(group[i]);

        if (comm != NULL) {
            (void) ncclCommAbort(comm);
            llm_backend_cuda_set_comm(group[i], NULL);
        }
    }

    exit(EXIT_FAILURE);
}


void
llm_nccl_free(void *comm)
{
    (void) ncclCommDestroy(comm);
}


#else /* !LLM_CUDA */

/* ISO C wants something in a translation unit */
typedef int  llm_nccl_none_t;

#endif /* LLM_CUDA */
