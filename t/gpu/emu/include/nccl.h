/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator's NCCL (t/gpu/emu/README.md): communicators of one
 * process, all-reduce summed in rank order.
 */

#ifndef LLM_EMU_NCCL_H
#define LLM_EMU_NCCL_H

#include "cuda_runtime_api.h"


#ifdef __cplusplus
extern "C" {
#endif


typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7
} ncclResult_t;

typedef enum {
    ncclInt32 = 2,
    ncclFloat32 = 7
} ncclDataType_t;

typedef enum {
    ncclSum = 0
} ncclRedOp_t;

typedef struct {
    char  internal[128];
} ncclUniqueId;

typedef struct llm_emu_comm_s  *ncclComm_t;


ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id,
    int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *r);
const char *ncclGetErrorString(ncclResult_t r);
ncclResult_t ncclGroupStart(void);
ncclResult_t ncclGroupEnd(void);
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count,
    ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
    cudaStream_t stream);


#ifdef __cplusplus
}
#endif

#endif /* LLM_EMU_NCCL_H */
