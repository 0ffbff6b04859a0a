/*
 * Copyright (C) ngx_llm developers
 *
 * Drawing tokens on the device, so that full rows of logits need not
 * cross to the host: argmax, and temperature with top-k, min-p and
 * top-p under a per-request seeded generator, as llm_backend.h defines
 * the draw.  The thresholds are found by radix selection over the
 * logits' bits (32 passes over the row, each a block reduction), which
 * gives the same kept set as a sort without one.
 */

#include "common.cuh"
#include "llm_kernels.h"


#define LLM_SAMPLE_THREADS  1024


/* the larger of two (value, index), the first index on ties */
static __device__ __forceinline__ void
llm_arg_pick(float *v, int *i, float v2, int i2)
{
    if (v2 > *v || (v2 == *v && i2 < *i) || (*v != *v && v2 == v2)) {
        *v = v2;
        *i = i2;
    }
}


/* the first index of the largest of x[0..n), for the whole block */
static __device__ int
llm_block_argmax(const float *x, int n)
{
    __shared__ float  sv[32];
    __shared__ int    si[32];

    int    lane, warp, bi, i2;
    float  bv, v2;

    bv = -INFINITY;
    bi = n;

    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        llm_arg_pick(&bv, &bi, x[i], i);
    }

    for (int o = 16; o > 0; o >>= 1) {
        v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        llm_arg_pick(&bv, &bi, v2, i2);
    }

    lane = threadIdx.x % 32;
    warp = threadIdx.x / 32;

    __syncthreads();
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();

    bv = lane < (int) (blockDim.x / 32) ? sv[lane] : -INFINITY;
    bi = lane < (int) (blockDim.x / 32) ? si[lane] : n;

    for (int o = 16; o > 0; o >>= 1) {
        v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        llm_arg_pick(&bv, &bi, v2, i2);
    }

    return bi < n ? bi : 0;
}


/* out (n_rows) = argmax of each row of logits (n_rows, n_vocab) f32;
 * a block of 1024 threads per row */
static __global__ void
llm_argmax_kernel(int32_t *out, const float *logits, int n_vocab)
{
    int  i;

    i = llm_block_argmax(logits + (int64_t) blockIdx.x * n_vocab, n_vocab);

    if (threadIdx.x == 0) {
        out[blockIdx.x] = i;
    }
}


static __device__ __forceinline__ uint32_t
llm_key(float x)
{
    return llm_sample_key(__float_as_uint(x));
}


/*
 * out (n_rows) = one token per row of logits (n_rows, n_vocab) f32 under
 * params[row]; a block of 1024 threads per row.  The passes: the max;
 * the k-th largest key (top-k) bit by bit, counting keys above each
 * candidate; min-p as a weight test; the top-p key bit by bit, summing
 * kept weight above each candidate; then the kept weight summed over
 * contiguous runs of indices, one per thread, scanned across the block,
 * and the thread whose run holds u times the total walks it.
 */
static __global__ void
llm_sample_kernel(int32_t *out, const float *logits, int n_vocab,
    const llm_sample_params_t *params)
{
    __shared__ float     scratch[32];
    __shared__ float     run[LLM_SAMPLE_THREADS];
    __shared__ int32_t   pick;

    int                  n, chunk, lo, hi, last;
    float                mx, t, w, s, target, z, acc, min_p;
    uint32_t             kk, kp, cand, kmax;
    const float         *x;
    llm_sample_params_t  p;

    p = params[blockIdx.x];
    n = n_vocab;
    x = logits + (int64_t) blockIdx.x * n_vocab;

    if (!(p.temperature > 0.0f)) {
        lo = llm_block_argmax(x, n);
        if (threadIdx.x == 0) {
            out[blockIdx.x] = lo;
        }
        return;
    }

    t = p.temperature;
    min_p = p.min_p;

    mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        mx = fmaxf(mx, x[i]);
    }
    mx = llm_block_max(mx, scratch);
    kmax = llm_key(mx);

    /* top-k: the largest key with at least k keys at or above it */
    kk = 0;
    if (p.top_k > 0 && p.top_k < n) {
        for (int b = 31; b >= 0; b--) {
            cand = kk | (1u << b);
            s = 0.0f;

            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                s += llm_key(x[i]) >= cand ? 1.0f : 0.0f;
            }

            if (llm_block_sum(s, scratch) >= (float) p.top_k) {
                kk = cand;
            }
        }
    }

#define LLM_KEPT(v)                                                       \
    (llm_key(v) >= kk                                                     \
     && (min_p <= 0.0f || expf(((v) - mx) / t) >= min_p))

    /* top-p: the largest key above which the kept weight is top_p of
     * all that is kept, never above the largest logit */
    kp = 0;
    if (p.top_p < 1.0f) {
        s = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            s += LLM_KEPT(x[i]) ? expf((x[i] - mx) / t) : 0.0f;
        }
        target = p.top_p * llm_block_sum(s, scratch);

        for (int b = 31; b >= 0; b--) {
            cand = kp | (1u << b);
            s = 0.0f;

            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                s += LLM_KEPT(x[i]) && llm_key(x[i]) >= cand
                     ? expf((x[i] - mx) / t) : 0.0f;
            }

            if (llm_block_sum(s, scratch) >= target) {
                kp = cand;
            }
        }

        kp = kp < kmax ? kp : kmax;
    }

    kk = kk > kp ? kk : kp;

    /* the draw, in index order: each thread's run of indices */
    chunk = (n + blockDim.x - 1) / blockDim.x;
    lo = threadIdx.x * chunk;
    hi = min(n, lo + chunk);

    s = 0.0f;
    last = -1;
    for (int i = lo; i < hi; i++) {
        if (LLM_KEPT(x[i])) {
            s += expf((x[i] - mx) / t);
            last = i;
        }
    }

    /* inclusive scan of the runs' sums, one step per power of two */
    run[threadIdx.x] = s;
    __syncthreads();

    for (int o = 1; o < (int) blockDim.x; o <<= 1) {
        w = threadIdx.x >= (unsigned) o ? run[threadIdx.x - o] : 0.0f;
        __syncthreads();
        run[threadIdx.x] += w;
        __syncthreads();
    }

    z = run[blockDim.x - 1];
    target = llm_sample_uniform(p.seed, p.counter) * z;

    if (threadIdx.x == 0) {
        pick = -1;
    }
    __syncthreads();

    /* the run where the running sum passes target: the runs' bounds
     * are the scan's own sums, so exactly one run holds it */
    acc = threadIdx.x > 0 ? run[threadIdx.x - 1] : 0.0f;

    if (acc <= target && target < run[threadIdx.x]) {
        for (int i = lo; i < hi; i++) {
            if (LLM_KEPT(x[i])) {
                acc += expf((x[i] - mx) / t);
                if (acc > target) {
                    last = i;
                    break;
                }
            }
        }

        /* rounding may leave target past the walk: its last kept */
        pick = last;
    }
    __syncthreads();

    if (pick < 0) {
        /* nothing kept (min_p above 1): the largest */
        lo = llm_block_argmax(x, n);
        if (threadIdx.x == 0) {
            pick = lo;
        }
        __syncthreads();
    }

    if (threadIdx.x == 0) {
        out[blockIdx.x] = pick;
    }

#undef LLM_KEPT
}


extern "C" int
llm_cuda_argmax(int32_t *out, const float *logits, int n_rows, int n_vocab,
    llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (n_rows <= 0) {
        return 0;
    }

    llm_argmax_kernel<<<n_rows, LLM_SAMPLE_THREADS, 0, s>>>(out, logits,
                                                            n_vocab);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_sample(int32_t *out, const float *logits, int n_rows, int n_vocab,
    const llm_sample_params_t *params, llm_stream_t stream)
{
    cudaStream_t  s = (cudaStream_t) stream;

    if (n_rows <= 0) {
        return 0;
    }

    llm_sample_kernel<<<n_rows, LLM_SAMPLE_THREADS, 0, s>>>(out, logits,
                                                            n_vocab,
                                                            params);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}
