/*
 * Copyright (C) ngx_llm developers
 *
 * Matrix-vector products for a decode step's few tokens, the weights
 * decoded on the fly: decoding reads each weight byte once, which is
 * what bounds a decode step.  Batches of more tokens go to cuBLAS on
 * weights decoded to f16 (dequant.cu, llm_backend_cuda.c).
 *
 * One launch computes a set of products of the same input (Q, K and V;
 * gate and up), and may finish gate and up as SwiGLU, start from the
 * RMSNorm of its input, or add a lone product to the residual: a decode
 * step of a small model is bound by its launches as much as by its
 * bytes.
 * Quantized weights are decoded a 32-value chunk per lane; F32, F16 and
 * BF16 ones are read 16 bytes a lane, coalesced, and take the f32
 * activations as they are (no conversion kernel, no cuBLAS launch).
 * A row's sum is the same whatever set it is computed in.
 */

#include <string.h>

#include "common.cuh"
#include "dequant.cuh"
#include "llm_kernels.h"


#define LLM_GEMV_ROWS        4        /* quantized: rows (warps) a block */
#define LLM_GEMV_PLAIN_ROWS  8        /* plain: more, sharing x in L1 */


/*
 * acc[t] += this lane's part of row . x[t] for the n tokens, W of a
 * quantized type: lane l decodes chunks l, l + 32, ... and multiplies
 * each with the tokens' inputs.  NORM: x[t] is the norm's input, each
 * element taken times scale[t] times nw, as the rmsnorm kernel writes
 * it.
 */
template <bool NORM>
static __device__ __forceinline__ void
llm_gemv_acc_q(float *acc, const float *x, const float *scale,
    const float *nw, int n, const uint8_t *row, uint32_t type, int cols,
    int lane)
{
    float         v[32], s;
    const float  *xp;

    for (int c = lane; c < cols / 32; c += 32) {
        llm_deq_chunk(type, row, c, v);

#pragma unroll
        for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
            if (t < n) {
                xp = x + (int64_t) t * cols + (int64_t) c * 32;
                s = 0.0f;

#pragma unroll
                for (int i = 0; i < 32; i++) {
                    s += v[i] * (NORM ? xp[i] * scale[t] * nw[c * 32 + i]
                                      : xp[i]);
                }

                acc[t] += s;
            }
        }
    }
}


/*
 * The same for F32, F16 or BF16 W, rows 16-byte aligned: lane l reads
 * the 16 bytes at 16 l + 512 k of the row, each x element rounded as the
 * CPU rounds activations for these weights (f16 or bf16; f32 not at
 * all), x through the read-only cache; NORM as llm_gemv_acc_q.
 */
template <bool NORM>
static __device__ __forceinline__ void
llm_gemv_acc_plain(float *acc, const float *x, const float *scale,
    const float *nw, int n, const uint8_t *row, uint32_t type, int cols,
    int lane)
{
    int    per;
    float  wv[8], s, xv;

    per = type == LLM_KT_F32 ? 4 : 8;           /* elements per 16 bytes */

    /* unrolled: several rows' loads in flight a warp, or a warp waits
     * out each load's latency */
#pragma unroll 4
    for (int c = lane * per; c < cols; c += 32 * per) {
        uint4  q = *(const uint4 *) (row + (int64_t) c * (per == 4 ? 4 : 2));

        if (type == LLM_KT_F32) {
            wv[0] = __uint_as_float(q.x);
            wv[1] = __uint_as_float(q.y);
            wv[2] = __uint_as_float(q.z);
            wv[3] = __uint_as_float(q.w);

        } else {
            unsigned int  u[4] = { q.x, q.y, q.z, q.w };

#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (type == LLM_KT_F16) {
                    wv[2 * i] = __half2float(__ushort_as_half(
                                    (unsigned short) (u[i] & 0xffff)));
                    wv[2 * i + 1] = __half2float(__ushort_as_half(
                                        (unsigned short) (u[i] >> 16)));
                } else {
                    wv[2 * i] = __uint_as_float(u[i] << 16);
                    wv[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
                }
            }
        }

#pragma unroll
        for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
            if (t < n) {
                const float  *xp = x + (int64_t) t * cols + c;

                s = 0.0f;
                for (int i = 0; i < per; i++) {
                    xv = __ldg(xp + i);

                    if (NORM) {
                        xv = xv * scale[t] * __ldg(nw + c + i);
                    }

                    if (type == LLM_KT_F16) {
                        xv = __half2float(__float2half_rn(xv));
                    } else if (type == LLM_KT_BF16) {
                        xv = __bfloat162float(__float2bfloat16_rn(xv));
                    }

                    s += wv[i] * xv;
                }

                acc[t] += s;
            }
        }
    }
}


/*
 * out[m] (n, rows[m]) = x (n, cols) W[m]^T for the set's matrices, a
 * warp per row, the rows of each matrix after the previous one's.  With
 * swiglu, matrices 0 and 1 are gate and up of the same rows: a warp
 * computes both of its row and writes up to out[1] and silu(gate) * up
 * to out[0], as llm_cuda_silu_mul would.
 */
template <bool PLAIN, bool NORM>
static __global__ void
llm_gemv_set_kernel(llm_cuda_gemv_set_t set, const float *x, int n,
    uint32_t type, int cols)
{
    __shared__ float  scratch[32];

    int             lane, m, nm, rows_m;
    float           acc[LLM_CUDA_GEMV_MAX], acc2[LLM_CUDA_GEMV_MAX], s, u;
    float           scale[LLM_CUDA_GEMV_MAX], ss, v;
    float          *out_m;
    int64_t         r;
    const uint8_t  *w0, *w1;

    /* the norm first, by every thread of the block: each token's scale
     * as llm_rmsnorm_kernel sums it (the same order where the block is
     * as wide as its), and its output written once */
    if (NORM) {
        x = set.norm_x;

#pragma unroll
        for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
            scale[t] = 0.0f;

            if (t < n) {
                ss = 0.0f;
                for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                    v = x[(int64_t) t * cols + i];
                    ss += v * v;
                }

                ss = llm_block_sum(ss, scratch);
                scale[t] = 1.0f / sqrtf(ss / (float) cols + set.norm_eps);
            }
        }

        if (blockIdx.x == 0) {
#pragma unroll
            for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
                if (t < n) {
                    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                        set.norm_out[(int64_t) t * cols + i] =
                            x[(int64_t) t * cols + i] * scale[t]
                            * set.norm_w[i];
                    }
                }
            }
        }
    }

    lane = threadIdx.x % 32;
    r = (int64_t) blockIdx.x * (PLAIN ? LLM_GEMV_PLAIN_ROWS : LLM_GEMV_ROWS)
        + threadIdx.x / 32;

    /* this warp's matrix and row; the set's arrays read at constant
     * indices only, so that they stay out of local memory */
    nm = set.swiglu ? 1 : set.n_mats;
    m = -1;
    w0 = NULL;
    out_m = NULL;
    rows_m = 0;

#pragma unroll
    for (int i = 0; i < LLM_CUDA_GEMV_SET; i++) {
        if (m < 0 && i < nm) {
            if (r < set.rows[i]) {
                m = i;
                w0 = (const uint8_t *) set.w[i]
                     + r * (int64_t) set.row_bytes[i];
                out_m = set.out[i];
                rows_m = set.rows[i];
            } else {
                r -= set.rows[i];
            }
        }
    }

    if (m < 0) {
        return;
    }

    w1 = (const uint8_t *) set.w[1] + r * (int64_t) set.row_bytes[1];

#pragma unroll
    for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
        acc[t] = 0.0f;
        acc2[t] = 0.0f;
    }

    if (PLAIN) {
        llm_gemv_acc_plain<NORM>(acc, x, scale, set.norm_w, n, w0, type,
                                 cols, lane);
    } else {
        llm_gemv_acc_q<NORM>(acc, x, scale, set.norm_w, n, w0, type, cols,
                             lane);
    }

    if (set.swiglu) {
        if (PLAIN) {
            llm_gemv_acc_plain<NORM>(acc2, x, scale, set.norm_w, n, w1,
                                     type, cols, lane);
        } else {
            llm_gemv_acc_q<NORM>(acc2, x, scale, set.norm_w, n, w1, type,
                                 cols, lane);
        }
    }

#pragma unroll
    for (int t = 0; t < LLM_CUDA_GEMV_MAX; t++) {
        if (t < n) {
            s = llm_warp_sum(acc[t]);

            if (set.swiglu) {
                u = llm_warp_sum(acc2[t]);

                if (lane == 0) {
                    set.out[1][(int64_t) t * rows_m + r] = u;
                    out_m[(int64_t) t * rows_m + r] =
                        s / (1.0f + expf(-s)) * u;
                }

            } else if (lane == 0) {
                out_m[(int64_t) t * rows_m + r] = s;

                if (set.resid != NULL) {
                    set.resid[(int64_t) t * rows_m + r] += s;
                }
            }
        }
    }
}


extern "C" int
llm_cuda_gemv_ok(uint32_t type, int cols, size_t row_bytes, const void *w)
{
    if (!llm_type_plain(type)) {
        return cols % 32 == 0 && llm_cuda_type_supported(type);
    }

    return row_bytes % 16 == 0 && (uintptr_t) w % 16 == 0
           && cols % (type == LLM_KT_F32 ? 4 : 8) == 0;
}


template <bool NORM>
static void
llm_gemv_set_launch(const llm_cuda_gemv_set_t *set, const float *x, int n,
    uint32_t type, int cols, int plain, int64_t rows, cudaStream_t s)
{
    if (plain) {
        llm_gemv_set_kernel<true, NORM>
            <<<llm_grid(rows, LLM_GEMV_PLAIN_ROWS), 32 * LLM_GEMV_PLAIN_ROWS,
               0, s>>>(*set, x, n, type, cols);
    } else {
        llm_gemv_set_kernel<false, NORM>
            <<<llm_grid(rows, LLM_GEMV_ROWS), 32 * LLM_GEMV_ROWS, 0, s>>>(
            *set, x, n, type, cols);
    }
}


extern "C" int
llm_cuda_gemv_set(const llm_cuda_gemv_set_t *set, const float *x, int n,
    uint32_t type, int cols, llm_stream_t stream)
{
    int           plain, ok;
    int64_t       rows;
    cudaStream_t  s = (cudaStream_t) stream;

    if (n <= 0) {
        return 0;
    }

    plain = llm_type_plain(type);
    ok = n <= LLM_CUDA_GEMV_MAX && set->n_mats >= 1
         && set->n_mats <= LLM_CUDA_GEMV_SET
         && (!set->swiglu || (set->n_mats == 2
                              && set->rows[0] == set->rows[1]))
         && (set->resid == NULL || (set->n_mats == 1 && !set->swiglu))
         && (set->norm_x == NULL
             || (set->norm_w != NULL && set->norm_out != NULL));

    rows = 0;
    for (int m = 0; ok && m < set->n_mats; m++) {
        ok = set->rows[m] > 0
             && llm_cuda_gemv_ok(type, cols, set->row_bytes[m], set->w[m]);
        rows += m == 0 || !set->swiglu ? set->rows[m] : 0;
    }

    if (!ok) {
        llm_cuda_record("kernel", 0, "bad arguments", "llm_cuda_gemv_set",
                        __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    if (set->norm_x != NULL) {
        llm_gemv_set_launch<true>(set, x, n, type, cols, plain, rows, s);
    } else {
        llm_gemv_set_launch<false>(set, x, n, type, cols, plain, rows, s);
    }

    LLM_CUDA_LAUNCHED(s);

    return 0;
}


extern "C" int
llm_cuda_gemv(float *out, const float *x, int n, const void *w,
    uint32_t type, int rows, int cols, size_t row_bytes,
    llm_stream_t stream)
{
    llm_cuda_gemv_set_t  set;

    if (n <= 0 || rows <= 0) {
        return 0;
    }

    memset(&set, 0, sizeof(set));
    set.w[0] = w;
    set.out[0] = out;
    set.rows[0] = rows;
    set.row_bytes[0] = row_bytes;
    set.n_mats = 1;

    return llm_cuda_gemv_set(&set, x, n, type, cols, stream);
}
