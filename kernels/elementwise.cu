/*
 * Copyright (C) ngx_llm developers
 *
 * Elementwise kernels: residual add, bias rows, and the rounding of
 * activations to f16 or bf16 for cuBLAS.
 */

#include "common.cuh"
#include "llm_kernels.h"


#define LLM_EW_THREADS  256
#define LLM_EW_BLOCKS   (1 << 16)       /* grid-stride beyond this */


#define LLM_EW_LOOP(i, n)                                                 \
    for (int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;     \
         i < (n); i += (int64_t) gridDim.x * blockDim.x)


static unsigned int
llm_ew_grid(int64_t n)
{
    unsigned int  g = llm_grid(n, LLM_EW_THREADS);

    return g < LLM_EW_BLOCKS ? g : LLM_EW_BLOCKS;
}


/* x (n) += y (n) f32; grid-stride, 256 threads a block */
static __global__ void
llm_add_kernel(float *x, const float *y, int64_t n)
{
    LLM_EW_LOOP(i, n) {
        x[i] += y[i];
    }
}


/* x (n_rows, dim) += b (dim) f32, each row */
static __global__ void
llm_add_rows_kernel(float *x, const float *b, int64_t n, int dim)
{
    LLM_EW_LOOP(i, n) {
        x[i] += b[i % dim];
    }
}


/* out (n) f16 or bf16 = x (n) f32, rounded to nearest even */
static __global__ void
llm_convert_f16_kernel(__half *out, const float *x, int64_t n)
{
    LLM_EW_LOOP(i, n) {
        out[i] = __float2half_rn(x[i]);
    }
}


static __global__ void
llm_convert_bf16_kernel(__nv_bfloat16 *out, const float *x, int64_t n)
{
    LLM_EW_LOOP(i, n) {
        out[i] = __float2bfloat16_rn(x[i]);
    }
}


extern "C" int
llm_cuda_add(float *x, const float *y, int64_t n, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0) {
        return 0;
    }

    llm_add_kernel<<<llm_ew_grid(n), LLM_EW_THREADS, 0, s>>>(x, y, n);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_add_rows(float *x, const float *b, int64_t n_rows, int dim,
    llm_stream_t stream)
{
    int64_t       n = n_rows * dim;
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0) {
        return 0;
    }

    llm_add_rows_kernel<<<llm_ew_grid(n), LLM_EW_THREADS, 0, s>>>(x, b, n,
                                                                   dim);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_convert(void *out, uint32_t type, const float *x, int64_t n,
    llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0) {
        return 0;
    }

    if (type == LLM_KT_F16) {
        llm_convert_f16_kernel<<<llm_ew_grid(n), LLM_EW_THREADS, 0, s>>>(
            (__half *) out, x, n);

    } else if (type == LLM_KT_BF16) {
        llm_convert_bf16_kernel<<<llm_ew_grid(n), LLM_EW_THREADS, 0, s>>>(
            (__nv_bfloat16 *) out, x, n);

    } else {
        llm_cuda_record("kernel", 0, "bad type", "llm_cuda_convert",
                        __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    LLM_CUDA_LAUNCHED(s);

    return 0;
}
