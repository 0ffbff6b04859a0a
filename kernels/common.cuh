/*
 * Copyright (C) ngx_llm developers
 *
 * What every kernel file needs: the CHECK macros and the record of the
 * first failure, and (for nvcc only) the warp and block reductions,
 * written once.  The C part is shared with the engine's CUDA code
 * (llm_backend_cuda.c, llm_nccl.c), compiled by the host compiler.
 *
 * A CHECK records the expression, file and line of the first failure
 * since the record was last taken and makes the caller return
 * LLM_CUDA_FAILED; nothing here aborts.  With LLM_CUDA_SYNC_DEBUG=1 in
 * the environment, every launch is followed by a synchronization, so a
 * fault is reported by the launch that caused it.
 */

#ifndef LLM_CUDA_COMMON_CUH
#define LLM_CUDA_COMMON_CUH

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>


#define LLM_CUDA_FAILED  (-1)

#ifdef __cplusplus
extern "C" {
#endif

/* records a failure unless one is recorded already; lib names the
 * library ("cuda", "cublas", "nccl", "kernel") */
void llm_cuda_record(const char *lib, int code, const char *what,
    const char *expr, const char *file, int line);

/* the recorded failure as one line, and clears it; 0 when there was
 * none */
int llm_cuda_take_error(char *buf, size_t size);

/* 1 when $LLM_CUDA_SYNC_DEBUG is 1 (read once) */
int llm_cuda_sync_debug(void);

#ifdef __cplusplus
}
#endif


#define LLM_CUDA_CHECK(expr)                                              \
    do {                                                                  \
        cudaError_t  e_ = (expr);                                         \
        if (e_ != cudaSuccess) {                                          \
            llm_cuda_record("cuda", (int) e_, cudaGetErrorString(e_),     \
                            #expr, __FILE__, __LINE__);                   \
            return LLM_CUDA_FAILED;                                       \
        }                                                                 \
    } while (0)

/* cuBLAS's status strings need cublas_api.h: included by the caller */
#define LLM_CUBLAS_CHECK(expr)                                            \
    do {                                                                  \
        cublasStatus_t  s_ = (expr);                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                \
            llm_cuda_record("cublas", (int) s_, cublasGetStatusString(s_),\
                            #expr, __FILE__, __LINE__);                   \
            return LLM_CUDA_FAILED;                                       \
        }                                                                 \
    } while (0)

#define LLM_NCCL_CHECK(expr)                                              \
    do {                                                                  \
        ncclResult_t  r_ = (expr);                                        \
        if (r_ != ncclSuccess) {                                          \
            llm_cuda_record("nccl", (int) r_, ncclGetErrorString(r_),     \
                            #expr, __FILE__, __LINE__);                   \
            return LLM_CUDA_FAILED;                                       \
        }                                                                 \
    } while (0)

/* after every <<<>>>: the launch's own error, then (debug) its fault */
#define LLM_CUDA_LAUNCHED(stream)                                         \
    do {                                                                  \
        LLM_CUDA_CHECK(cudaGetLastError());                               \
        if (llm_cuda_sync_debug()) {                                      \
            LLM_CUDA_CHECK(cudaStreamSynchronize(stream));                \
        }                                                                 \
    } while (0)


#ifdef __CUDACC__

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define LLM_WARP  32


/* a KV cache's elements (llm_cuda_kv_t): f32, or f16 */
static __device__ __forceinline__ float
llm_kv_get(const float *p)
{
    return *p;
}

static __device__ __forceinline__ float
llm_kv_get(const __half *p)
{
    return __half2float(*p);
}

static __device__ __forceinline__ void
llm_kv_put(float *p, float v)
{
    *p = v;
}

static __device__ __forceinline__ void
llm_kv_put(__half *p, float v)
{
    *p = __float2half_rn(v);
}


/* sum over the 32 lanes of a warp; every lane gets it */
static __device__ __forceinline__ float
llm_warp_sum(float v)
{
    for (int o = LLM_WARP / 2; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }

    return v;
}


static __device__ __forceinline__ float
llm_warp_max(float v)
{
    for (int o = LLM_WARP / 2; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }

    return v;
}


/*
 * Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets it.  scratch: 32 floats of shared memory, free again on
 * return.
 */
static __device__ __forceinline__ float
llm_block_sum(float v, float *scratch)
{
    int  lane = threadIdx.x % LLM_WARP;
    int  warp = threadIdx.x / LLM_WARP;
    int  n_warps = (blockDim.x + LLM_WARP - 1) / LLM_WARP;

    v = llm_warp_sum(v);

    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();

    v = lane < n_warps ? scratch[lane] : 0.0f;
    return llm_warp_sum(v);
}


static __device__ __forceinline__ float
llm_block_max(float v, float *scratch)
{
    int  lane = threadIdx.x % LLM_WARP;
    int  warp = threadIdx.x / LLM_WARP;
    int  n_warps = (blockDim.x + LLM_WARP - 1) / LLM_WARP;

    v = llm_warp_max(v);

    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();

    v = lane < n_warps ? scratch[lane] : -INFINITY;
    return llm_warp_max(v);
}


/* blocks of threads for n items, capped for a grid's x */
static inline unsigned int
llm_grid(int64_t n, int threads)
{
    int64_t  b = (n + threads - 1) / threads;

    return (unsigned int) (b < 1 ? 1 : (b > 0x7fffffff ? 0x7fffffff : b));
}

#endif /* __CUDACC__ */

#endif /* LLM_CUDA_COMMON_CUH */
