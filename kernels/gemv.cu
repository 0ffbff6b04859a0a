/*
 * Copyright (C) ngx_llm developers
 *
 * Matrix-vector products with quantized weights, decoded on the fly:
 * decoding reads each weight byte once, which is what bounds a decode
 * step.  Batches of more tokens go to cuBLAS on weights decoded to f16
 * (dequant.cu, llm_backend_cuda.c).
 */

#include "common.cuh"
#include "dequant.cuh"
#include "llm_kernels.h"


#define LLM_GEMV_ROWS  4              /* rows per block: a warp each */


/*
 * out (n, rows) f32 = x (n, cols) f32 times W^T, W (rows, cols) of a
 * quantized type, rows row_bytes apart, cols whole chunks of 32.  Grid:
 * ceil(rows / 4) blocks of 4 warps, a warp per row; lane l decodes
 * chunks l, l + 32, ... and multiplies each with the n tokens' inputs;
 * the warp then sums its lanes.
 */
static __global__ void
llm_gemv_kernel(float *out, const float *x, int n, const uint8_t *w,
    uint32_t type, int rows, int cols, size_t row_bytes)
{
    int             lane, n_chunks;
    float           v[32], acc[LLM_CUDA_GEMV_MAX], s;
    int64_t         r;
    const float    *xp;
    const uint8_t  *row;

    lane = threadIdx.x % 32;
    r = (int64_t) blockIdx.x * LLM_GEMV_ROWS + threadIdx.x / 32;

    if (r >= rows) {
        return;
    }

    row = w + r * (int64_t) row_bytes;
    n_chunks = cols / 32;

#pragma unroll
    for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
        acc[t] = 0.0f;
    }

    for (int c = lane; c < n_chunks; c += 32) {
        llm_deq_chunk(type, row, c, v);

#pragma unroll
        for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
            if (t < n) {
                xp = x + (int64_t) t * cols + (int64_t) c * 32;
                s = 0.0f;

#pragma unroll
                for (int i = 0; i < 32; i++) {
                    s += v[i] * xp[i];
                }

                acc[t] += s;
            }
        }
    }

#pragma unroll
    for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
        if (t < n) {
            s = llm_warp_sum(acc[t]);

            if (lane == 0) {
                out[(int64_t) t * rows + r] = s;
            }
        }
    }
}


extern "C" int
llm_cuda_gemv(float *out, const float *x, int n, const void *w,
    uint32_t type, int rows, int cols, size_t row_bytes,
    llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0 || rows <= 0) {
        return 0;
    }

    if (n > LLM_CUDA_GEMV_MAX || cols % 32 != 0 || llm_type_plain(type)
        || !llm_cuda_type_supported(type))
    {
        llm_cuda_record("kernel", 0, "bad arguments", "llm_cuda_gemv",
                        __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    llm_gemv_kernel<<<llm_grid(rows, LLM_GEMV_ROWS), 32 * LLM_GEMV_ROWS, 0,
                      s>>>(out, x, n, (const uint8_t *) w, type, rows, cols,
                           row_bytes);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}
