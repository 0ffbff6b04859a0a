/*
 * Copyright (C) ngx_llm developers
 *
 * Quantized weights decoded to f16, a slice of rows at a time, for the
 * cuBLAS GEMMs of prefill batches.
 */

#include "common.cuh"
#include "dequant.cuh"
#include "llm_kernels.h"


/*
 * out (n_rows, cols) f16 = rows row0.. of W (cols whole chunks of 32),
 * decoded.  Grid-stride over the n_rows * cols / 32 chunks, one per
 * thread, blocks of 256.
 */
static __global__ void
llm_dequant_f16_kernel(__half *out, const uint8_t *w, uint32_t type,
    int64_t row0, int n_rows, int cols, size_t row_bytes)
{
    int      per_row;
    float    v[32];
    int64_t  n, r, c;
    __half  *o;

    per_row = cols / 32;
    n = (int64_t) n_rows * per_row;

    for (int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += (int64_t) gridDim.x * blockDim.x)
    {
        r = i / per_row;
        c = i % per_row;

        llm_deq_chunk(type, w + (row0 + r) * (int64_t) row_bytes, c, v);

        o = out + r * cols + c * 32;

#pragma unroll
        for (int k = 0; k < 32; k++) {
            o[k] = __float2half_rn(v[k]);
        }
    }
}


extern "C" int
llm_cuda_dequant_f16(void *out, const void *w, uint32_t type, int64_t row0,
    int n_rows, int cols, size_t row_bytes, llm_stream_t stream)
{
    int64_t       n;
    cudaStream_t  s = (cudaStream_t) stream;

    if (cols % 32 != 0 || llm_type_plain(type)
        || !llm_cuda_type_supported(type))
    {
        llm_cuda_record("kernel", 0, "bad arguments",
                        "llm_cuda_dequant_f16", __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    n = (int64_t) n_rows * (cols / 32);
    if (n <= 0) {
        return 0;
    }

    llm_dequant_f16_kernel<<<llm_grid(n < (1 << 22) ? n : (1 << 22), 256),
                             256, 0, s>>>((__half *) out,
                                          (const uint8_t *) w, type, row0,
                                          n_rows, cols, row_bytes);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}
