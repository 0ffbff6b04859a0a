/*
 * Copyright (C) ngx_llm developers
 *
 * The step's keys and values into the paged KV cache.
 */

#include "common.cuh"
#include "llm_kernels.h"


/*
 * k, v (T, kv_dim) f32 into layer's slot of each token's position:
 * block bt[seg[t]][pos / block_size], slot pos % block_size; a block is
 * (n_layer, 2, block_size, kv_dim) KV (f32 or f16), keys then values.
 * One block of 128 threads per token, 64-bit offsets (a pool can pass
 * 2^31 elements).
 */
template <typename KV>
static __global__ void
llm_kv_store_kernel(KV *kv, int block_size, int kv_dim,
    int64_t layer_elems, int64_t block_elems, int layer, const float *k,
    const float *v, const int32_t *pos, const int32_t *seg,
    const int32_t *bt, int bt_stride)
{
    int           t, p;
    int64_t       blk;
    KV           *kc, *vc;
    const float  *kt, *vt;

    t = blockIdx.x;
    p = pos[t];
    blk = bt[(int64_t) seg[t] * bt_stride + p / block_size];

    kc = kv + blk * block_elems + (int64_t) layer * layer_elems
         + (int64_t) (p % block_size) * kv_dim;
    vc = kc + (int64_t) block_size * kv_dim;
    kt = k + (int64_t) t * kv_dim;
    vt = v + (int64_t) t * kv_dim;

    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        llm_kv_put(kc + i, kt[i]);
        llm_kv_put(vc + i, vt[i]);
    }
}


extern "C" int
llm_cuda_kv_store(const llm_cuda_kv_t *kv, int layer, const float *k,
    const float *v, const llm_cuda_step_t *st, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (st->n_tok <= 0) {
        return 0;
    }

    if (kv->f16) {
        llm_kv_store_kernel<__half><<<st->n_tok, 128, 0, s>>>(
            (__half *) kv->data, kv->block_size, kv->kv_dim, kv->layer_elems,
            kv->block_elems, layer, k, v, st->pos, st->seg, st->bt,
            st->bt_stride);

    } else {
        llm_kv_store_kernel<float><<<st->n_tok, 128, 0, s>>>(
            (float *) kv->data, kv->block_size, kv->kv_dim, kv->layer_elems,
            kv->block_elems, layer, k, v, st->pos, st->seg, st->bt,
            st->bt_stride);
    }

    LLM_CUDA_LAUNCHED(s);

    return 0;
}
