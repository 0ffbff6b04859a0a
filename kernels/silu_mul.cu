/*
 * Copyright (C) ngx_llm developers
 *
 * The SwiGLU gate of the feed-forward block.
 */

#include "common.cuh"
#include "llm_kernels.h"


/* g (n) f32 = silu(g) * u (n) f32 = g / (1 + e^-g) * u; grid-stride,
 * 256 threads a block */
static __global__ void
llm_silu_mul_kernel(float *g, const float *u, int64_t n)
{
    float  x;

    for (int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += (int64_t) gridDim.x * blockDim.x)
    {
        x = g[i];
        g[i] = x / (1.0f + expf(-x)) * u[i];
    }
}


extern "C" int
llm_cuda_silu_mul(float *g, const float *u, int64_t n, llm_stream_t stream)
{
    unsigned int  grid;
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0) {
        return 0;
    }

    grid = llm_grid(n, 256);
    grid = grid < (1 << 16) ? grid : (1 << 16);

    llm_silu_mul_kernel<<<grid, 256, 0, s>>>(g, u, n);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}
