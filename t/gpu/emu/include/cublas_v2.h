/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator's cuBLAS (t/gpu/emu/README.md): the calls the project
 * makes, column-major as cuBLAS defines them, computed plainly in f32.
 */

#ifndef LLM_EMU_CUBLAS_V2_H
#define LLM_EMU_CUBLAS_V2_H

#include "cuda_runtime_api.h"


#ifdef __cplusplus
extern "C" {
#endif


typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;

typedef enum {
    CUBLAS_OP_N = 0,
    CUBLAS_OP_T = 1,
    CUBLAS_OP_C = 2
} cublasOperation_t;

typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3
} cublasMath_t;

typedef enum {
    CUBLAS_COMPUTE_16F = 64,
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;

typedef enum {
    CUBLAS_GEMM_DEFAULT = -1,
    CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99
} cublasGemmAlgo_t;

typedef enum {
    CUDA_R_32F = 0,
    CUDA_R_16F = 2,
    CUDA_R_16BF = 14
} cudaDataType_t;

typedef struct llm_emu_blas_s  *cublasHandle_t;


cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t size);
const char *cublasGetStatusString(cublasStatus_t s);

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta,
    cublasOperation_t tb, int m, int n, int k, const void *alpha,
    const void *a, cudaDataType_t at, int lda, const void *b,
    cudaDataType_t bt, int ldb, const void *beta, void *c,
    cudaDataType_t ct, int ldc, cublasComputeType_t compute,
    cublasGemmAlgo_t algo);


#ifdef __cplusplus
}
#endif

#endif /* LLM_EMU_CUBLAS_V2_H */
