/*
 * Copyright (C) ngx_llm developers
 *
 * Attention over the paged KV cache.  Position p of a token's sequence
 * is slot p % block_size of block bt[seg][p / block_size]; a block is
 * (n_layer, 2, block_size, kv_dim) of f32, or f16, keys then values; KV
 * head g
 * is channels g * hd .. g * hd + hd - 1 of a slot.  Query head h reads
 * KV head h / (n_head / n_head_kv).  Scores are q . k / sqrt(hd) over
 * positions 0..pos (causal), softmax taken with a running maximum
 * ("online"), every sum in f32.  Head sizes up to 256; lane l of a warp
 * holds dims l, l + 32, ... of a head.
 */

#include <mma.h>

#include "common.cuh"
#include "llm_kernels.h"


#define LLM_ATT_MAX_D    8              /* dims per lane: hd <= 256 */
#define LLM_ATT_WARPS    4
#define LLM_ATT_UNROLL   4              /* decode: positions a warp takes
                                         * at once */
#define LLM_ATT_TK       32             /* prefill: positions per K/V
                                         * tile, a lane each */


template <typename KV>
static __device__ __forceinline__ const KV *
llm_att_slot(const KV *kv, int64_t block_elems, int64_t layer_elems,
    int block_size, int kv_dim, int layer, const int32_t *bt, int p, int g,
    int hd)
{
    int64_t  blk = bt[p / block_size];

    return kv + blk * block_elems + (int64_t) layer * layer_elems
           + (int64_t) (p % block_size) * kv_dim + (int64_t) g * hd;
}


/*
 * The splits of token t, head h merged: out (T, n_head * hd) f32 =
 * sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M), M the largest m_s;
 * the block's threads over the dims.  Other blocks wrote the partials:
 * read past L1 (__ldcg), which may hold none of them but must not hold
 * stale ones.
 */
static __device__ __forceinline__ void
llm_att_combine(float *out, const float *partial, int t, int h, int n_head,
    int hd, int n_split)
{
    float         mm, ll, f, acc;
    const float  *ps;

    ps = partial + ((int64_t) t * n_head + h) * n_split * (hd + 2);

    mm = -INFINITY;
    for (int s = 0; s < n_split; s++) {
        mm = fmaxf(mm, __ldcg(ps + (int64_t) s * (hd + 2)));
    }

    ll = 0.0f;
    for (int s = 0; s < n_split; s++) {
        f = __ldcg(ps + (int64_t) s * (hd + 2));
        ll += f == -INFINITY ? 0.0f
                             : __ldcg(ps + (int64_t) s * (hd + 2) + 1)
                               * expf(f - mm);
    }

    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        acc = 0.0f;

        for (int s = 0; s < n_split; s++) {
            f = __ldcg(ps + (int64_t) s * (hd + 2));
            if (f != -INFINITY) {
                acc += __ldcg(ps + (int64_t) s * (hd + 2) + 2 + d)
                       * expf(f - mm);
            }
        }

        out[((int64_t) t * n_head + h) * hd + d] = acc / ll;
    }
}


/*
 * Decode, split over the sequence (flash-decoding): grid (n_head, T,
 * n_split), 4 warps a block.  Block (h, t, s) covers positions
 * [s * CHUNK, (s + 1) * CHUNK) of token t's 0..pos[t]; its warps take
 * UNROLL consecutive positions at a time (their loads and sums
 * independent, so that a warp waits on memory once per UNROLL
 * positions, not once per position), every fourth such run, each warp
 * keeping a running max m, sum l and weighted values acc, merged at the
 * end into partial (T, n_head, n_split, hd + 2) f32: m, l, acc[hd].  A split past the sequence's end
 * writes m = -inf, l = 0.  The block that finds itself the last of its
 * (token, head) to finish, counting in arrived (T, n_head), merges the
 * splits into att: one launch, where a separate merge took two.
 */
template <typename KV>
static __global__ void
llm_att_decode_kernel(float *att, float *partial, unsigned int *arrived,
    const float *q, const KV *kv, int64_t block_elems,
    int64_t layer_elems, int block_size, int kv_dim, int layer, int n_head,
    int n_head_kv, int hd, const int32_t *pos, const int32_t *seg,
    const int32_t *bt, int bt_stride, int n_split)
{
    __shared__ int    last;
    __shared__ float  wm[LLM_ATT_WARPS];
    __shared__ float  wl[LLM_ATT_WARPS];
    __shared__ float  wacc[LLM_ATT_WARPS][LLM_ATT_MAX_D * 32];

    int             h, t, s, g, lane, warp, n_pos, p0, p1, d;
    float           qv[LLM_ATT_MAX_D], acc[LLM_ATT_MAX_D];
    float           m, l, corr, scale, f, mm, ll;
    float          *out;
    const float    *qp;
    const KV       *vp;
    const int32_t  *tbl;

    h = blockIdx.x;
    t = blockIdx.y;
    s = blockIdx.z;
    lane = threadIdx.x % 32;
    warp = threadIdx.x / 32;
    g = h / (n_head / n_head_kv);

    n_pos = pos[t] + 1;
    p0 = s * LLM_CUDA_ATT_CHUNK;
    p1 = min(n_pos, p0 + LLM_CUDA_ATT_CHUNK);
    tbl = bt + (int64_t) seg[t] * bt_stride;
    scale = rsqrtf((float) hd);
    qp = q + ((int64_t) t * n_head + h) * hd;

#pragma unroll
    for (int k = 0; k < LLM_ATT_MAX_D; k++) {
        d = lane + 32 * k;
        qv[k] = d < hd ? qp[d] * scale : 0.0f;
        acc[k] = 0.0f;
    }

    m = -INFINITY;
    l = 0.0f;

    for (int p = p0 + warp * LLM_ATT_UNROLL; p < p1;
         p += LLM_ATT_WARPS * LLM_ATT_UNROLL)
    {
        const KV  *kps[LLM_ATT_UNROLL];
        float      dots[LLM_ATT_UNROLL], es[LLM_ATT_UNROLL], mx;
        int        nv;

        /* runs past p1 read position p1 - 1 again, weighted 0 */
        nv = min(LLM_ATT_UNROLL, p1 - p);

#pragma unroll
        for (int u = 0; u < LLM_ATT_UNROLL; u++) {
            kps[u] = llm_att_slot(kv, block_elems, layer_elems, block_size,
                                  kv_dim, layer, tbl, min(p + u, p1 - 1), g,
                                  hd);
            dots[u] = 0.0f;

#pragma unroll
            for (int k = 0; k < LLM_ATT_MAX_D; k++) {
                d = lane + 32 * k;
                if (d < hd) {
                    dots[u] += qv[k] * llm_kv_get(kps[u] + d);
                }
            }
        }

        mx = -INFINITY;

#pragma unroll
        for (int u = 0; u < LLM_ATT_UNROLL; u++) {
            dots[u] = llm_warp_sum(dots[u]);
            mx = u < nv ? fmaxf(mx, dots[u]) : mx;
        }

        if (mx > m) {
            corr = expf(m - mx);        /* 0 while m is -inf */
            l *= corr;

#pragma unroll
            for (int k = 0; k < LLM_ATT_MAX_D; k++) {
                acc[k] *= corr;
            }

            m = mx;
        }

#pragma unroll
        for (int u = 0; u < LLM_ATT_UNROLL; u++) {
            es[u] = u < nv ? expf(dots[u] - m) : 0.0f;
            l += es[u];
        }

#pragma unroll
        for (int k = 0; k < LLM_ATT_MAX_D; k++) {
            d = lane + 32 * k;
            if (d < hd) {
#pragma unroll
                for (int u = 0; u < LLM_ATT_UNROLL; u++) {
                    vp = kps[u] + (int64_t) block_size * kv_dim;
                    acc[k] += es[u] * llm_kv_get(vp + d);
                }
            }
        }
    }

    /* the warps' states merged: each scaled to the largest maximum */

    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }

#pragma unroll
    for (int k = 0; k < LLM_ATT_MAX_D; k++) {
        wacc[warp][lane + 32 * k] = acc[k];
    }

    __syncthreads();

    mm = -INFINITY;
    for (int w = 0; w < LLM_ATT_WARPS; w++) {
        mm = fmaxf(mm, wm[w]);
    }

    ll = 0.0f;
    for (int w = 0; w < LLM_ATT_WARPS; w++) {
        ll += wm[w] == -INFINITY ? 0.0f : wl[w] * expf(wm[w] - mm);
    }

    out = partial + (((int64_t) t * n_head + h) * n_split + s) * (hd + 2);

    if (threadIdx.x == 0) {
        out[0] = mm;
        out[1] = ll;
    }

    for (d = threadIdx.x; d < hd; d += blockDim.x) {
        f = 0.0f;

        for (int w = 0; w < LLM_ATT_WARPS; w++) {
            if (wm[w] != -INFINITY) {
                f += wacc[w][d] * expf(wm[w] - mm);
            }
        }

        out[2 + d] = f;
    }

    /* the last of the (token, head)'s splits to finish merges them all,
     * and sets its count back to 0 for the next launch (graphs replay
     * the same counts) */

    __threadfence();
    __syncthreads();

    if (threadIdx.x == 0) {
        last = atomicAdd(&arrived[(int64_t) t * n_head + h], 1u)
               == (unsigned int) n_split - 1;
    }

    __syncthreads();

    if (!last) {
        return;
    }

    llm_att_combine(att, partial, t, h, n_head, hd, n_split);

    if (threadIdx.x == 0) {
        arrived[(int64_t) t * n_head + h] = 0;
    }
}


/*
 * Prefill, tiled: grid (n_tiles, n_head), 4 warps a block.  A tile is up
 * to LLM_CUDA_QTILE consecutive tokens of one sequence (positions
 * P0..P0 + n - 1); the block walks positions 0..P0 + n - 1 in tiles of
 * LLM_ATT_TK, each K/V tile loaded into shared memory once for all its
 * query rows.  Warp w owns rows w, w + 4, ...; for each row, lane j
 * scores position j of the K/V tile (masked past the row's position),
 * the warp takes their max and sum, and every lane adds the weighted
 * values of its dims.  Shared: Q (QTILE, hd), K (TK, hd + 1: rows read
 * down a column by the lanes, padded off one bank), V (TK, hd).
 */
template <typename KV>
static __global__ void
llm_att_prefill_kernel(float *out, const float *q, const KV *kv,
    int64_t block_elems, int64_t layer_elems, int block_size, int kv_dim,
    int layer, int n_head, int n_head_kv, int hd, const int32_t *pos,
    const int32_t *seg, const int32_t *bt, int bt_stride,
    const int32_t *tiles)
{
    extern __shared__ float  sm[];

    int             t0, nt, h, g, lane, warp, p_first, p_last, n_k, r, pr,
                    j, d;
    float           m[LLM_CUDA_QTILE / LLM_ATT_WARPS];
    float           l[LLM_CUDA_QTILE / LLM_ATT_WARPS];
    float           acc[LLM_CUDA_QTILE / LLM_ATT_WARPS][LLM_ATT_MAX_D];
    float           sc, mx, mnew, corr, pe, scale, *qs, *ks, *vs;
    const KV       *kp;
    const int32_t  *tbl;

    t0 = tiles[2 * blockIdx.x];
    nt = tiles[2 * blockIdx.x + 1];
    h = blockIdx.y;
    g = h / (n_head / n_head_kv);
    lane = threadIdx.x % 32;
    warp = threadIdx.x / 32;

    p_first = pos[t0];
    p_last = pos[t0 + nt - 1];
    tbl = bt + (int64_t) seg[t0] * bt_stride;
    scale = rsqrtf((float) hd);

    qs = sm;
    ks = qs + LLM_CUDA_QTILE * hd;
    vs = ks + LLM_ATT_TK * (hd + 1);

    for (int i = threadIdx.x; i < nt * hd; i += blockDim.x) {
        r = i / hd;
        d = i % hd;
        qs[i] = q[((int64_t) (t0 + r) * n_head + h) * hd + d] * scale;
    }

#pragma unroll
    for (int ri = 0; ri < LLM_CUDA_QTILE / LLM_ATT_WARPS; ri++) {
        m[ri] = -INFINITY;
        l[ri] = 0.0f;

#pragma unroll
        for (int k = 0; k < LLM_ATT_MAX_D; k++) {
            acc[ri][k] = 0.0f;
        }
    }

    for (int kv0 = 0; kv0 <= p_last; kv0 += LLM_ATT_TK) {
        n_k = min(LLM_ATT_TK, p_last + 1 - kv0);

        __syncthreads();

        for (int i = threadIdx.x; i < n_k * hd; i += blockDim.x) {
            j = i / hd;
            d = i % hd;
            kp = llm_att_slot(kv, block_elems, layer_elems, block_size,
                              kv_dim, layer, tbl, kv0 + j, g, hd);
            ks[j * (hd + 1) + d] = llm_kv_get(kp + d);
            vs[j * hd + d] = llm_kv_get(kp + (int64_t) block_size * kv_dim
                                        + d);
        }

        __syncthreads();

#pragma unroll
        for (int ri = 0; ri < LLM_CUDA_QTILE / LLM_ATT_WARPS; ri++) {
            r = warp + LLM_ATT_WARPS * ri;

            if (r >= nt) {
                continue;               /* the whole warp alike */
            }

            pr = p_first + r;

            sc = -INFINITY;
            if (lane < n_k && kv0 + lane <= pr) {
                sc = 0.0f;
                for (d = 0; d < hd; d++) {
                    sc += qs[r * hd + d] * ks[lane * (hd + 1) + d];
                }
            }

            mx = llm_warp_max(sc);
            if (mx == -INFINITY) {
                continue;               /* past the row's position */
            }

            mnew = fmaxf(m[ri], mx);
            corr = m[ri] == -INFINITY ? 0.0f : expf(m[ri] - mnew);
            pe = sc == -INFINITY ? 0.0f : expf(sc - mnew);
            l[ri] = l[ri] * corr + llm_warp_sum(pe);
            m[ri] = mnew;

#pragma unroll
            for (int k = 0; k < LLM_ATT_MAX_D; k++) {
                acc[ri][k] *= corr;
            }

            for (int jj = 0; jj < n_k; jj++) {
                float  pj = __shfl_sync(0xffffffffu, pe, jj);

#pragma unroll
                for (int k = 0; k < LLM_ATT_MAX_D; k++) {
                    d = lane + 32 * k;
                    if (d < hd) {
                        acc[ri][k] += pj * vs[jj * hd + d];
                    }
                }
            }
        }
    }

#pragma unroll
    for (int ri = 0; ri < LLM_CUDA_QTILE / LLM_ATT_WARPS; ri++) {
        r = warp + LLM_ATT_WARPS * ri;

        if (r < nt) {
#pragma unroll
            for (int k = 0; k < LLM_ATT_MAX_D; k++) {
                d = lane + 32 * k;
                if (d < hd) {
                    out[((int64_t) (t0 + r) * n_head + h) * hd + d] =
                        acc[ri][k] / l[ri];
                }
            }
        }
    }
}


static int
llm_att_check(int n_head, int n_head_kv, int hd)
{
    if (hd <= 0 || hd > 32 * LLM_ATT_MAX_D || n_head_kv <= 0
        || n_head % n_head_kv != 0)
    {
        llm_cuda_record("kernel", 0, "unsupported head shape",
                        "llm_att_check", __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    return 0;
}


/* the decode kernel of the cache's element type */
template <typename KV>
static void
llm_att_decode_run(float *out, const float *q, const KV *data,
    const llm_cuda_kv_t *kv, int layer, int n_head, int n_head_kv, int hd,
    const llm_cuda_step_t *st, int n_split, float *partial,
    unsigned int *arrived, cudaStream_t s)
{
    llm_att_decode_kernel<KV><<<dim3(n_head, st->n_tok, n_split),
                                32 * LLM_ATT_WARPS, 0, s>>>(
        out, partial, arrived, q, data, kv->block_elems, kv->layer_elems,
        kv->block_size, kv->kv_dim, layer, n_head, n_head_kv, hd, st->pos,
        st->seg, st->bt, st->bt_stride, n_split);
}


extern "C" int
llm_cuda_attention_decode(float *out, const float *q,
    const llm_cuda_kv_t *kv, int layer, int n_head, int hd,
    const llm_cuda_step_t *st, int n_split, float *partial,
    unsigned int *arrived, llm_stream_t stream)
{
    int           n_head_kv;
    cudaStream_t  s = (cudaStream_t) stream;

    n_head_kv = kv->kv_dim / (hd > 0 ? hd : 1);

    if (st->n_tok <= 0) {
        return 0;
    }

    if (llm_att_check(n_head, n_head_kv, hd) != 0 || n_split <= 0
        || n_split > 65535 || st->n_tok > 65535)
    {
        return LLM_CUDA_FAILED;
    }

    if (kv->f16) {
        llm_att_decode_run(out, q, (const __half *) kv->data, kv, layer,
                           n_head, n_head_kv, hd, st, n_split, partial,
                           arrived, s);
    } else {
        llm_att_decode_run(out, q, (const float *) kv->data, kv, layer,
                           n_head, n_head_kv, hd, st, n_split, partial,
                           arrived, s);
    }

    LLM_CUDA_LAUNCHED(s);

    return 0;
}


/*
 * Prefill on the tensor cores, for heads of a multiple of 16 dims: grid
 * (n_tiles_tc, n_head), 4 warps a block, each warp 16 of the tile's up
 * to LLM_CUDA_QTILE_TC query rows.  Q (scaled), K and V are rounded to
 * f16 in shared memory, K/V LLM_ATT_TC_KT positions at a time; a warp
 * takes its scores S = Q K^T (16 x KT, f32) with 16x16x16 products,
 * then, two lanes a row, the running max and sum and P = e^(S - m)
 * rounded to f16 (the sum is of the rounded P), rescales its rows of O
 * and adds P V to them with more products.  O (f32) lives in shared
 * memory: a fragment's elements are in no documented order, so rows
 * are scaled there.  Rows are padded (8 halves, 4 floats) off the
 * banks and kept multiples of 16 bytes, as wmma wants.
 */

#define LLM_ATT_TC_KT    64             /* positions per K/V tile */
#define LLM_ATT_TC_LS    (LLM_ATT_TC_KT + 4)
#define LLM_ATT_TC_LP    (LLM_ATT_TC_KT + 8)


static size_t
llm_att_tc_smem(int hd)
{
    size_t  lq = (size_t) hd + 8, lo = (size_t) hd + 4;

    return (LLM_CUDA_QTILE_TC + 2 * LLM_ATT_TC_KT) * lq * sizeof(__half)
           + LLM_CUDA_QTILE_TC * LLM_ATT_TC_LS * sizeof(float)
           + LLM_CUDA_QTILE_TC * LLM_ATT_TC_LP * sizeof(__half)
           + LLM_CUDA_QTILE_TC * lo * sizeof(float)
           + 2 * LLM_CUDA_QTILE_TC * sizeof(float);
}


/* 4 elements of K or V into 4 halves of shared memory (both 8-byte
 * aligned), or zeros */
static __device__ __forceinline__ void
llm_att_tc_put4(__half *s, const float *p)
{
    float4  v = *(const float4 *) p;

    s[0] = __float2half_rn(v.x);
    s[1] = __float2half_rn(v.y);
    s[2] = __float2half_rn(v.z);
    s[3] = __float2half_rn(v.w);
}

static __device__ __forceinline__ void
llm_att_tc_put4(__half *s, const __half *p)
{
    *(uint2 *) s = *(const uint2 *) p;
}

static __device__ __forceinline__ void
llm_att_tc_zero4(__half *s)
{
    for (int i = 0; i < 4; i++) {
        s[i] = __float2half_rn(0.0f);
    }
}


template <typename KV>
static __global__ void __launch_bounds__(32 * LLM_ATT_WARPS, 2)
llm_att_prefill_tc_kernel(float *out, const float *q, const KV *kv,
    int64_t block_elems, int64_t layer_elems, int block_size, int kv_dim,
    int layer, int n_head, int n_head_kv, int hd, const int32_t *pos,
    const int32_t *seg, const int32_t *bt, int bt_stride,
    const int32_t *tiles)
{
    extern __shared__ __align__(128) float  smt[];

    using namespace nvcuda;

    int             t0, nt, h, g, lane, warp, p_first, p_last, n_k, lq, lo,
                    r, j, d, w0, pr, c0;
    float           scale, mx, m_old, m_new, corr, sum, pe, sv;
    __half          ph;
    __half         *qs, *ks, *vs, *ps;
    float          *ss, *os, *ms, *ls;
    const KV       *kp;
    const int32_t  *tbl;

    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major>  fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major>  fk;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major>  fv;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float>                 fc;

    t0 = tiles[2 * blockIdx.x];
    nt = tiles[2 * blockIdx.x + 1];
    h = blockIdx.y;
    g = h / (n_head / n_head_kv);
    lane = threadIdx.x % 32;
    warp = threadIdx.x / 32;
    w0 = warp * 16;

    p_first = pos[t0];
    p_last = pos[t0 + nt - 1];
    tbl = bt + (int64_t) seg[t0] * bt_stride;
    scale = rsqrtf((float) hd);

    lq = hd + 8;
    lo = hd + 4;
    qs = (__half *) smt;
    ks = qs + LLM_CUDA_QTILE_TC * lq;
    vs = ks + LLM_ATT_TC_KT * lq;
    ss = (float *) (vs + LLM_ATT_TC_KT * lq);
    ps = (__half *) (ss + LLM_CUDA_QTILE_TC * LLM_ATT_TC_LS);
    os = (float *) (ps + LLM_CUDA_QTILE_TC * LLM_ATT_TC_LP);
    ms = os + LLM_CUDA_QTILE_TC * lo;
    ls = ms + LLM_CUDA_QTILE_TC;

    /* rows past the tile's tokens are zeros, never garbage: their
     * products are computed (and ignored) */
    for (int i = threadIdx.x; i < LLM_CUDA_QTILE_TC * hd; i += blockDim.x) {
        r = i / hd;
        d = i % hd;
        qs[r * lq + d] = __float2half_rn(
            r < nt ? q[((int64_t) (t0 + r) * n_head + h) * hd + d] * scale
                   : 0.0f);
        os[r * lo + d] = 0.0f;
    }

    for (int i = threadIdx.x; i < LLM_CUDA_QTILE_TC; i += blockDim.x) {
        ms[i] = -INFINITY;
        ls[i] = 0.0f;
    }

    for (int kv0 = 0; kv0 <= p_last; kv0 += LLM_ATT_TC_KT) {
        n_k = min(LLM_ATT_TC_KT, p_last + 1 - kv0);

        __syncthreads();

        /* 4 elements a thread; positions past n_k zeros (P is 0 there,
         * and 0 times garbage may be NaN) */
        for (int i = threadIdx.x; i < LLM_ATT_TC_KT * (hd / 4);
             i += blockDim.x)
        {
            j = i / (hd / 4);
            d = (i % (hd / 4)) * 4;

            if (j < n_k) {
                kp = llm_att_slot(kv, block_elems, layer_elems, block_size,
                                  kv_dim, layer, tbl, kv0 + j, g, hd);
                llm_att_tc_put4(ks + j * lq + d, kp + d);
                llm_att_tc_put4(vs + j * lq + d,
                                kp + (int64_t) block_size * kv_dim + d);

            } else {
                llm_att_tc_zero4(ks + j * lq + d);
                llm_att_tc_zero4(vs + j * lq + d);
            }
        }

        __syncthreads();

        /* the warp's rows before this tile, or none: nothing to add (the
         * whole warp alike) */
        if (w0 >= nt || p_first + min(w0 + 15, nt - 1) < kv0) {
            continue;
        }

        /* S = Q K^T, 16 positions at a time */
        for (int n = 0; n * 16 < n_k; n++) {
            wmma::fill_fragment(fc, 0.0f);

            for (int kk = 0; kk < hd; kk += 16) {
                wmma::load_matrix_sync(fa, qs + w0 * lq + kk, lq);
                wmma::load_matrix_sync(fk, ks + n * 16 * lq + kk, lq);
                wmma::mma_sync(fc, fa, fk, fc);
            }

            wmma::store_matrix_sync(ss + w0 * LLM_ATT_TC_LS + n * 16, fc,
                                    LLM_ATT_TC_LS, wmma::mem_row_major);
        }

        __syncwarp();

        /* two lanes a row, 32 positions each: what a lane reads of m
         * it reads before the first shuffle, what it writes after the
         * second */
        r = w0 + lane / 2;
        c0 = (lane % 2) * (LLM_ATT_TC_KT / 2);
        pr = p_first + r;
        m_old = ms[r];

        mx = -INFINITY;
        for (int c = c0; c < c0 + LLM_ATT_TC_KT / 2; c++) {
            if (r < nt && c < n_k && kv0 + c <= pr) {
                mx = fmaxf(mx, ss[r * LLM_ATT_TC_LS + c]);
            }
        }

        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        m_new = fmaxf(m_old, mx);
        corr = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);

        sum = 0.0f;
        for (int c = c0; c < c0 + LLM_ATT_TC_KT / 2; c++) {
            pe = 0.0f;
            if (r < nt && c < n_k && kv0 + c <= pr) {
                sv = ss[r * LLM_ATT_TC_LS + c];
                pe = expf(sv - m_new);
            }

            ph = __float2half_rn(pe);
            ps[r * LLM_ATT_TC_LP + c] = ph;
            sum += __half2float(ph);
        }

        sum += __shfl_xor_sync(0xffffffffu, sum, 1);

        if (mx != -INFINITY) {
            /* the pair's halves of O's row */
            for (d = (lane % 2) * (hd / 2); d < (lane % 2 + 1) * (hd / 2);
                 d++)
            {
                os[r * lo + d] *= corr;
            }

            if (lane % 2 == 0) {
                ms[r] = m_new;
                ls[r] = ls[r] * corr + sum;
            }
        }

        __syncwarp();

        /* O += P V */
        for (int n = 0; n < hd; n += 16) {
            wmma::load_matrix_sync(fc, os + w0 * lo + n, lo,
                                   wmma::mem_row_major);

            for (int kk = 0; kk < n_k; kk += 16) {
                wmma::load_matrix_sync(fa, ps + w0 * LLM_ATT_TC_LP + kk,
                                       LLM_ATT_TC_LP);
                wmma::load_matrix_sync(fv, vs + kk * lq + n, lq);
                wmma::mma_sync(fc, fa, fv, fc);
            }

            wmma::store_matrix_sync(os + w0 * lo + n, fc, lo,
                                    wmma::mem_row_major);
        }

        __syncwarp();
    }

    __syncthreads();

    for (int i = threadIdx.x; i < nt * hd; i += blockDim.x) {
        r = i / hd;
        d = i % hd;
        out[((int64_t) (t0 + r) * n_head + h) * hd + d] =
            os[r * lo + d] / ls[r];
    }
}


/*
 * Prefill with the cache's element type: on the tensor cores where f16
 * is allowed and the device has the shared memory (an attribute of the
 * host's, set every time; a refusal is not sticky), else on the CUDA
 * cores.
 */
template <typename KV>
static int
llm_att_prefill_run(float *out, const float *q, const KV *data,
    const llm_cuda_kv_t *kv, int layer, int n_head, int n_head_kv, int hd,
    const llm_cuda_step_t *st, int f16, cudaStream_t s)
{
    size_t  smem;

    if (f16 && hd % 16 == 0 && st->n_tiles_tc > 0) {
        smem = llm_att_tc_smem(hd);

        if (cudaFuncSetAttribute(llm_att_prefill_tc_kernel<KV>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int) smem)
            == cudaSuccess)
        {
            llm_att_prefill_tc_kernel<KV><<<dim3(st->n_tiles_tc, n_head),
                                            32 * LLM_ATT_WARPS, smem, s>>>(
                out, q, data, kv->block_elems, kv->layer_elems,
                kv->block_size, kv->kv_dim, layer, n_head, n_head_kv, hd,
                st->pos, st->seg, st->bt, st->bt_stride, st->tiles_tc);
            LLM_CUDA_LAUNCHED(s);

            return 0;
        }

        (void) cudaGetLastError();
    }

    smem = (size_t) (LLM_CUDA_QTILE * hd + LLM_ATT_TK * (hd + 1)
                     + LLM_ATT_TK * hd) * sizeof(float);

    if (smem > 48 * 1024) {
        LLM_CUDA_CHECK(cudaFuncSetAttribute(
            llm_att_prefill_kernel<KV>,
            cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem));
    }

    llm_att_prefill_kernel<KV><<<dim3(st->n_tiles, n_head),
                                 32 * LLM_ATT_WARPS, smem, s>>>(
        out, q, data, kv->block_elems, kv->layer_elems, kv->block_size,
        kv->kv_dim, layer, n_head, n_head_kv, hd, st->pos, st->seg, st->bt,
        st->bt_stride, st->tiles);
    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_attention_prefill(float *out, const float *q,
    const llm_cuda_kv_t *kv, int layer, int n_head, int hd,
    const llm_cuda_step_t *st, int f16, llm_stream_t stream)
{
    int           n_head_kv;
    cudaStream_t  s = (cudaStream_t) stream;

    n_head_kv = kv->kv_dim / (hd > 0 ? hd : 1);

    if (st->n_tiles <= 0) {
        return 0;
    }

    if (llm_att_check(n_head, n_head_kv, hd) != 0 || n_head > 65535) {
        return LLM_CUDA_FAILED;
    }

    if (kv->f16) {
        return llm_att_prefill_run(out, q, (const __half *) kv->data, kv,
                                   layer, n_head, n_head_kv, hd, st, f16, s);
    }

    return llm_att_prefill_run(out, q, (const float *) kv->data, kv, layer,
                               n_head, n_head_kv, hd, st, f16, s);
}
