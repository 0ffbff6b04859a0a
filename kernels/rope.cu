/*
 * Copyright (C) ngx_llm developers
 *
 * Rotary position embedding: the angles of a step's positions, then the
 * rotation of q and k in place.
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
        p[a] = x0 * c - x1 * s;
        p[b] = x0 * s + x1 * c;
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
