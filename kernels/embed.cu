/*
 * Copyright (C) ngx_llm developers
 *
 * Token embedding gather.
 */

#include "common.cuh"
#include "dequant.cuh"
#include "llm_kernels.h"


/*
 * out (T, d) f32 = row tokens[t] of w (n_vocab rows of d values of any
 * supported type, row_bytes apart), decoded.  One block of 128 threads
 * per token; a thread decodes 32-value chunks (quantized) or single
 * values (f32, f16, bf16).
 */
static __global__ void
llm_embed_kernel(float *out, const uint8_t *w, uint32_t type,
    size_t row_bytes, int d, const int32_t *tokens)
{
    int             t = blockIdx.x;
    float           v[32], *o;
    const uint8_t  *row;

    row = w + (int64_t) tokens[t] * (int64_t) row_bytes;
    o = out + (int64_t) t * d;

    if (llm_type_plain(type)) {
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            o[i] = llm_deq_plain(type, row, i);
        }

        return;
    }

    for (int c = threadIdx.x; c < d / 32; c += blockDim.x) {
        llm_deq_chunk(type, row, c, v);

#pragma unroll
        for (int i = 0; i < 32; i++) {
            o[(int64_t) c * 32 + i] = v[i];
        }
    }
}


extern "C" int
llm_cuda_embed(float *out, const void *w, uint32_t type, size_t row_bytes,
    int d, const llm_cuda_step_t *st, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (st->n_tok <= 0) {
        return 0;
    }

    llm_embed_kernel<<<st->n_tok, 128, 0, s>>>(out, (const uint8_t *) w,
                                                type, row_bytes, d,
                                                st->tokens);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}
