/*
 * Copyright (C) ngx_llm developers
 *
 * RMSNorm, alone and fused with the residual add before it.
 */

#include "common.cuh"
#include "llm_kernels.h"


#define LLM_NORM_THREADS  256


/*
 * out (n_rows, dim) f32 = x / sqrt(mean(x^2) + eps) * w (dim) f32, row
 * by row; with y, x (n_rows, dim) += y first and the sum stored back.
 * One block of 256 threads per row (grid-stride over rows beyond the
 * grid), the sum of squares in f32 over a block reduction.  out may be
 * x: each thread reads its own elements before writing them.
 */
static __global__ void
llm_rmsnorm_kernel(float *out, float *x, const float *y, const float *w,
    int64_t n_rows, int dim, float eps)
{
    __shared__ float  scratch[32];

    float    ss, scale, v;
    float   *xr, *o;

    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        xr = x + r * dim;
        o = out + r * dim;
        ss = 0.0f;

        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            v = xr[i];

            if (y != NULL) {
                v += y[r * dim + i];
                xr[i] = v;
            }

            ss += v * v;
        }

        ss = llm_block_sum(ss, scratch);
        scale = 1.0f / sqrtf(ss / (float) dim + eps);

        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            o[i] = xr[i] * scale * w[i];
        }
    }
}


static int
llm_rmsnorm_launch(float *out, float *x, const float *y, const float *w,
    int64_t n_rows, int dim, float eps, cudaStream_t s)
{
    unsigned int  grid;

    if (n_rows <= 0) {
        return 0;
    }

    grid = n_rows < 65535 ? (unsigned int) n_rows : 65535;

    llm_rmsnorm_kernel<<<grid, LLM_NORM_THREADS, 0, s>>>(out, x, y, w,
                                                         n_rows, dim, eps);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_rmsnorm(float *out, const float *x, const float *w, int64_t n_rows,
    int dim, float eps, llm_stream_t stream)
{
    /* x is only read when there is no y */
    return llm_rmsnorm_launch(out, (float *) x, NULL, w, n_rows, dim, eps,
                              (cudaStream_t) stream);
}


extern "C" int
llm_cuda_add_rmsnorm(float *out, float *x, const float *y, const float *w,
    int64_t n_rows, int dim, float eps, llm_stream_t stream)
{
    return llm_rmsnorm_launch(out, x, y, w, n_rows, dim, eps,
                              (cudaStream_t) stream);
}
