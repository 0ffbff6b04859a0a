/*
 * Copyright (C) ngx_llm developers
 *
 * Rotary position embedding: the angles of a step's positions, then the
 * rotation of q and k in place, alone or with the store of k and v into
 * the paged KV cache (one launch where a decode layer had three).
 */

#include "common.cuh"
#include "llm_kernels.h"


/*
 * cs (T, n_rot) f32: for token t, cos then sin of theta_i, i < n_rot/2,
 * theta_i = pos[t] * theta_scale^i (the power stepped by multiplication,
 * as the CPU steps it, so the angles are the same floats) / freqs[i]
 * (Llama 3.1 factors, or none) * scale.  One block per token, a thread
 * per pair.
 */
static __global__ void
llm_rope_cache_kernel(float *cs, const int32_t *pos, int n_rot,
    float theta_scale, float scale, const float *freqs)
{
    int     half = n_rot / 2;
    float   p, t;
    float  *c = cs + (int64_t) blockIdx.x * n_rot;

    p = (float) pos[blockIdx.x];

    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        t = p;

        for (int k = 0; k < i; k++) {
            t *= theta_scale;
        }

        if (freqs != NULL) {
            t /= freqs[i];
        }

        t *= scale;

        c[i] = cosf(t);
        c[half + i] = sinf(t);
    }
}


/* a pair (x0, x1) rotated by the angle of cos c, sin s: both rope
 * kernels round it through these, so that they give the same bits */
static __device__ __forceinline__ float
llm_rope_a(float x0, float x1, float c, float s)
{
    return x0 * c - x1 * s;
}


static __device__ __forceinline__ float
llm_rope_b(float x0, float x1, float c, float s)
{
    return x0 * s + x1 * c;
}


/*
 * x (T, n_heads * head_dim) f32, rotated in place: pairs (2i, 2i + 1),
 * or for neox (i, i + n_rot/2), of the first n_rot dims of each head by
 * token t's angles in cs.  One block per token, threads over (head,
 * pair).
 */
static __global__ void
llm_rope_kernel(float *x, int n_heads, int head_dim, int n_rot, int neox,
    const float *cs)
{
    int           half, h, i, a, b;
    float         x0, x1, c, s, *p;
    const float  *ct;

    half = n_rot / 2;
    ct = cs + (int64_t) blockIdx.x * n_rot;

    for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        h = k / half;
        i = k % half;
        a = neox ? i : 2 * i;
        b = neox ? i + half : 2 * i + 1;

        p = x + ((int64_t) blockIdx.x * n_heads + h) * head_dim;
        c = ct[i];
        s = ct[half + i];

        x0 = p[a];
        x1 = p[b];
        p[a] = llm_rope_a(x0, x1, c, s);
        p[b] = llm_rope_b(x0, x1, c, s);
    }
}


/*
 * llm_rope_kernel on q (T, n_heads * head_dim) and k (T, n_heads_kv *
 * head_dim), in place, then kv_store.cu's store of k and v into layer's
 * slot of each token's position: block bt[seg[t]][pos / block_size],
 * slot pos % block_size, of (n_layer, 2, block_size, kv_dim) blocks of
 * KV (f32 or f16), kv_dim = n_heads_kv * head_dim.  A pair of k is stored from the
 * registers it was rotated in, the rest of k and all of v copied.  One
 * block of 128 threads per token: threads over the pairs of q's heads
 * then k's, then over kv_dim; 64-bit offsets.
 */
template <typename KV>
static __global__ void
llm_rope_store_kernel(float *q, float *k, const float *v, int n_heads,
    int n_heads_kv, int head_dim, int n_rot, int neox, const float *cs,
    KV *kv, int block_size, int64_t layer_elems, int64_t block_elems,
    int layer, const int32_t *pos, const int32_t *seg, const int32_t *bt,
    int bt_stride)
{
    int           t, half, kv_dim, h, i, a, b, pt;
    int64_t       blk;
    float         x0, x1, y0, y1, c, s, *p;
    KV           *kc, *vc;
    const float  *ct, *vt;

    t = blockIdx.x;
    half = n_rot / 2;
    kv_dim = n_heads_kv * head_dim;
    ct = cs + (int64_t) t * n_rot;

    pt = pos[t];
    blk = bt[(int64_t) seg[t] * bt_stride + pt / block_size];

    kc = kv + blk * block_elems + (int64_t) layer * layer_elems
         + (int64_t) (pt % block_size) * kv_dim;
    vc = kc + (int64_t) block_size * kv_dim;

    for (int j = threadIdx.x; j < (n_heads + n_heads_kv) * half;
         j += blockDim.x)
    {
        h = j / half;
        i = j % half;
        a = neox ? i : 2 * i;
        b = neox ? i + half : 2 * i + 1;

        p = (h < n_heads) ? q + ((int64_t) t * n_heads + h) * head_dim
                          : k + (int64_t) t * kv_dim
                            + (h - n_heads) * head_dim;

        c = ct[i];
        s = ct[half + i];

        x0 = p[a];
        x1 = p[b];
        y0 = llm_rope_a(x0, x1, c, s);
        y1 = llm_rope_b(x0, x1, c, s);
        p[a] = y0;
        p[b] = y1;

        if (h >= n_heads) {
            h -= n_heads;
            llm_kv_put(kc + h * head_dim + a, y0);
            llm_kv_put(kc + h * head_dim + b, y1);
        }
    }

    p = k + (int64_t) t * kv_dim;
    vt = v + (int64_t) t * kv_dim;

    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        if (j % head_dim >= n_rot) {
            llm_kv_put(kc + j, p[j]);
        }

        llm_kv_put(vc + j, vt[j]);
    }
}


extern "C" int
llm_cuda_rope_cache(float *cs, const llm_cuda_step_t *st, int n_rot,
    float theta_scale, float scale, const float *freqs, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (st->n_tok <= 0 || n_rot < 2) {
        return 0;
    }

    llm_rope_cache_kernel<<<st->n_tok, 64, 0, s>>>(cs, st->pos, n_rot,
                                                    theta_scale, scale,
                                                    freqs);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_rope(float *x, const llm_cuda_step_t *st, int n_heads,
    int head_dim, int n_rot, int neox, const float *cs, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (st->n_tok <= 0 || n_rot < 2) {
        return 0;
    }

    llm_rope_kernel<<<st->n_tok, 128, 0, s>>>(x, n_heads, head_dim, n_rot,
                                               neox, cs);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_rope_store(float *q, float *k, const float *v, int n_heads,
    int n_heads_kv, int head_dim, int n_rot, int neox, const float *cs,
    const llm_cuda_kv_t *kv, int layer, const llm_cuda_step_t *st,
    llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (st->n_tok <= 0) {
        return 0;
    }

    if (n_heads_kv * head_dim != kv->kv_dim || n_rot > head_dim
        || n_rot < 0 || n_rot % 2 != 0)
    {
        llm_cuda_record("cuda", 0, "rope_store: heads do not fit the cache",
                        "llm_cuda_rope_store", __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    if (kv->f16) {
        llm_rope_store_kernel<__half><<<st->n_tok, 128, 0, s>>>(
            q, k, v, n_heads, n_heads_kv, head_dim, n_rot, neox, cs,
            (__half *) kv->data, kv->block_size, kv->layer_elems,
            kv->block_elems, layer, st->pos, st->seg, st->bt, st->bt_stride);

    } else {
        llm_rope_store_kernel<float><<<st->n_tok, 128, 0, s>>>(
            q, k, v, n_heads, n_heads_kv, head_dim, n_rot, neox, cs,
            (float *) kv->data, kv->block_size, kv->layer_elems,
            kv->block_elems, layer, st->pos, st->seg, st->bt, st->bt_stride);
    }

    LLM_CUDA_LAUNCHED(s);

    return 0;
}
