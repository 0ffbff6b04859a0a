/*
 * Copyright (C) ngx_llm developers
 *
 * The kernels of llm_matmul() in plain C: what runs where the CPU has
 * none of the vector extensions below, and the definition of the
 * arithmetic the vector kernels must reproduce (integer dot products of
 * 8-bit inputs with the stored quants, scaled per block in f32).  The
 * block layouts are described at the top of llm_quant.c.
 */

#include <math.h>
#include <string.h>

#include "llm_cpu.h"


static void llm_gemm_f32(const llm_gemm_t *g);
static void llm_gemm_f16(const llm_gemm_t *g);
static void llm_gemm_bf16(const llm_gemm_t *g);
static void llm_gemm_q8_0(const llm_gemm_t *g);
static void llm_gemm_q4_0(const llm_gemm_t *g);
static void llm_gemm_q4_k(const llm_gemm_t *g);
static void llm_gemm_q5_k(const llm_gemm_t *g);
static void llm_gemm_q6_k(const llm_gemm_t *g);
static void llm_quant_q8(const float *x, llm_q8_block_t *y, int64_t n);
static void llm_quant_q8k(const float *x, llm_q8k_block_t *y, int64_t n);


const llm_cpu_kernels_t  llm_cpu_scalar = {
    "scalar",
    llm_gemm_f32,
    llm_gemm_f16,
    llm_gemm_bf16,
    llm_gemm_q8_0,
    llm_gemm_q4_0,
    llm_gemm_q4_k,
    llm_gemm_q5_k,
    llm_gemm_q6_k,
    llm_quant_q8,
    llm_quant_q8k,
    0
};


void
llm_cpu_scales_k4(const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0f) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}


/*
 * Each kernel walks tiles of one weight row by up to LLM_NT tokens: a
 * weight block is read and unpacked once per tile and used for every
 * token in it.  A token alone is the tile of one token, through the
 * same code: each output is the same sequence of operations whatever
 * the tile, so a token's result does not depend on its batch.
 */

#define LLM_NT  8

#define LLM_SCALAR_TILES(g, TILE)                                           \
    for (int64_t t_ = 0; t_ < (g)->n_tok; t_ += LLM_NT) {                   \
        int  nt_ = (g)->n_tok - t_ < LLM_NT ? (int) ((g)->n_tok - t_)       \
                                            : LLM_NT;                       \
                                                                            \
        for (int64_t r_ = 0; r_ < (g)->n_rows; r_++) {                      \
            TILE(g, r_, t_, nt_);                                           \
        }                                                                   \
    }


static void
llm_tile_init(const llm_gemm_t *g, int64_t t, int nt, const uint8_t **x,
    float *sum)
{
    for (int j = 0; j < nt; j++) {
        x[j] = g->a + (size_t) (t + j) * g->a_stride;
        sum[j] = 0.0f;
    }
}


static void
llm_tile_store(const llm_gemm_t *g, int64_t r, int64_t t, int nt,
    const float *sum)
{
    for (int j = 0; j < nt; j++) {
        g->out[(t + j) * g->ld + r] = sum[j];
    }
}


/* ---- f32, f16, bf16: float products, one column at a time ---- */

#define LLM_FLOAT_TILE(NAME, WEIGHT)                                        \
static void                                                                 \
NAME(const llm_gemm_t *g, int64_t r, int64_t t, int nt)                     \
{                                                                           \
    float           sum[LLM_NT], v;                                         \
    const uint8_t  *w, *x[LLM_NT];                                          \
                                                                            \
    w = g->w + (size_t) r * g->row_bytes;                                   \
    llm_tile_init(g, t, nt, x, sum);                                        \
                                                                            \
    for (int64_t i = 0; i < g->n_cols; i++) {                               \
        v = WEIGHT(w, i);                                                   \
                                                                            \
        for (int j = 0; j < nt; j++) {                                      \
            sum[j] += v * ((const float *) x[j])[i];                        \
        }                                                                   \
    }                                                                       \
                                                                            \
    llm_tile_store(g, r, t, nt, sum);                                       \
}


static float
llm_weight_f32(const uint8_t *w, int64_t i)
{
    float  v;

    memcpy(&v, w + 4 * i, 4);

    return v;
}


static float
llm_weight_f16(const uint8_t *w, int64_t i)
{
    return llm_cpu_half(w + 2 * i);
}


static float
llm_weight_bf16(const uint8_t *w, int64_t i)
{
    float     v;
    uint32_t  bits;

    bits = (uint32_t) (w[2 * i] | w[2 * i + 1] << 8) << 16;
    memcpy(&v, &bits, 4);

    return v;
}


LLM_FLOAT_TILE(llm_tile_f32, llm_weight_f32)
LLM_FLOAT_TILE(llm_tile_f16, llm_weight_f16)
LLM_FLOAT_TILE(llm_tile_bf16, llm_weight_bf16)


/* ---- Q8_0 and Q4_0 against llm_q8_block_t ---- */

/* per block: the integer dot product, scaled by dw * dx */
static void
llm_tile_q8_0(const llm_gemm_t *g, int64_t r, int64_t t, int nt)
{
    float                  sum[LLM_NT], dw;
    int32_t                isum;
    const int8_t          *q;
    const uint8_t         *w, *x[LLM_NT];
    const llm_q8_block_t  *xb;

    w = g->w + (size_t) r * g->row_bytes;
    llm_tile_init(g, t, nt, x, sum);

    for (int64_t b = 0; b < g->n_cols / LLM_QK; b++, w += 34) {
        dw = llm_cpu_half(w);
        q = (const int8_t *) (w + 2);

        for (int j = 0; j < nt; j++) {
            xb = (const llm_q8_block_t *) x[j] + b;
            isum = 0;

            for (int l = 0; l < LLM_QK; l++) {
                isum += q[l] * xb->q[l];
            }

            sum[j] += dw * xb->d * (float) isum;
        }
    }

    llm_tile_store(g, r, t, nt, sum);
}


/* the nibbles as they are, then 8 times the sum of x off */
static void
llm_tile_q4_0(const llm_gemm_t *g, int64_t r, int64_t t, int nt)
{
    float                  sum[LLM_NT], dw;
    int32_t                isum;
    uint8_t                u[LLM_QK];
    const uint8_t         *w, *x[LLM_NT];
    const llm_q8_block_t  *xb;

    w = g->w + (size_t) r * g->row_bytes;
    llm_tile_init(g, t, nt, x, sum);

    for (int64_t b = 0; b < g->n_cols / LLM_QK; b++, w += 18) {
        dw = llm_cpu_half(w);

        for (int l = 0; l < LLM_QK / 2; l++) {
            u[l] = w[2 + l] & 0x0f;
            u[l + 16] = w[2 + l] >> 4;
        }

        for (int j = 0; j < nt; j++) {
            xb = (const llm_q8_block_t *) x[j] + b;
            isum = 0;

            for (int l = 0; l < LLM_QK; l++) {
                isum += u[l] * xb->q[l];
            }

            isum -= 8 * xb->sum;
            sum[j] += dw * xb->d * (float) isum;
        }
    }

    llm_tile_store(g, r, t, nt, sum);
}


/* ---- k-quants against llm_q8k_block_t, a 256-block unpacked once ---- */

/*
 * Q4_K and Q5_K: 8 sub-blocks of 32 with a 6-bit scale and min each;
 * element 64j + l is the low nibble of qs[32j + l], 64j + 32 + l the
 * high one, and Q5_K's fifth bit of sub-block s is bit s of qh[l]
 * (qh NULL for Q4_K).
 */
static void
llm_unpack_k45(const uint8_t *qh, const uint8_t *qs, uint8_t *u)
{
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < 32; l++) {
            u[64 * j + l] = qs[32 * j + l] & 0x0f;
            u[64 * j + 32 + l] = qs[32 * j + l] >> 4;

            if (qh != NULL) {
                u[64 * j + l] |= ((qh[l] >> (2 * j)) & 1) << 4;
                u[64 * j + 32 + l] |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
            }
        }
    }
}


static void
llm_tile_k45(const llm_gemm_t *g, int64_t r, int64_t t, int nt, int q5)
{
    float                   sum[LLM_NT], d, dmin;
    int32_t                 isum, msum, s;
    uint8_t                 u[LLM_QK_K], sc[8], m[8];
    size_t                  bytes;
    const uint8_t          *w, *x[LLM_NT];
    const llm_q8k_block_t  *xb;

    bytes = q5 ? 176 : 144;
    w = g->w + (size_t) r * g->row_bytes;
    llm_tile_init(g, t, nt, x, sum);

    for (int64_t b = 0; b < g->n_cols / LLM_QK_K; b++, w += bytes) {
        d = llm_cpu_half(w);
        dmin = llm_cpu_half(w + 2);
        llm_cpu_scales_k4(w + 4, sc, m);
        llm_unpack_k45(q5 ? w + 16 : NULL, w + (q5 ? 48 : 16), u);

        for (int j = 0; j < nt; j++) {
            xb = (const llm_q8k_block_t *) x[j] + b;
            isum = 0;
            msum = 0;

            for (int k = 0; k < 8; k++) {
                s = 0;
                for (int l = 0; l < 32; l++) {
                    s += u[32 * k + l] * xb->q[32 * k + l];
                }

                isum += sc[k] * s;
                msum += m[k] * (xb->bsums[2 * k] + xb->bsums[2 * k + 1]);
            }

            sum[j] += xb->d * (d * (float) isum - dmin * (float) msum);
        }
    }

    llm_tile_store(g, r, t, nt, sum);
}


static void
llm_tile_q4_k(const llm_gemm_t *g, int64_t r, int64_t t, int nt)
{
    llm_tile_k45(g, r, t, nt, 0);
}


static void
llm_tile_q5_k(const llm_gemm_t *g, int64_t r, int64_t t, int nt)
{
    llm_tile_k45(g, r, t, nt, 1);
}


/*
 * Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; values q in
 * 0..63 stand for q - 32, which comes off as 32 times the input's sums
 * of 16 (bsums).  Each half of 128 elements: 64 bytes of ql (low
 * nibbles of elements l and l + 32, high ones of l + 64 and l + 96)
 * and 32 of qh (their top 2 bits, in that order).
 */
static void
llm_unpack_q6_k(const uint8_t *ql, const uint8_t *qh, uint8_t *u)
{
    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 32; l++) {
            u[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            u[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            u[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            u[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) << 4);
        }

        u += 128;
        ql += 64;
        qh += 32;
    }
}


static void
llm_tile_q6_k(const llm_gemm_t *g, int64_t r, int64_t t, int nt)
{
    float                   sum[LLM_NT], d;
    int32_t                 isum, s;
    uint8_t                 u[LLM_QK_K];
    const int8_t           *sc;
    const uint8_t          *w, *x[LLM_NT];
    const llm_q8k_block_t  *xb;

    w = g->w + (size_t) r * g->row_bytes;
    llm_tile_init(g, t, nt, x, sum);

    for (int64_t b = 0; b < g->n_cols / LLM_QK_K; b++, w += 210) {
        d = llm_cpu_half(w + 208);
        sc = (const int8_t *) (w + 192);
        llm_unpack_q6_k(w, w + 128, u);

        for (int j = 0; j < nt; j++) {
            xb = (const llm_q8k_block_t *) x[j] + b;
            isum = 0;

            for (int k = 0; k < 16; k++) {
                s = 0;
                for (int l = 0; l < 16; l++) {
                    s += u[16 * k + l] * xb->q[16 * k + l];
                }

                isum += sc[k] * (s - 32 * xb->bsums[k]);
            }

            sum[j] += d * xb->d * (float) isum;
        }
    }

    llm_tile_store(g, r, t, nt, sum);
}


static void
llm_gemm_f32(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_f32)
}


static void
llm_gemm_f16(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_f16)
}


static void
llm_gemm_bf16(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_bf16)
}


static void
llm_gemm_q8_0(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_q8_0)
}


static void
llm_gemm_q4_0(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_q4_0)
}


static void
llm_gemm_q4_k(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_q4_k)
}


static void
llm_gemm_q5_k(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_q5_k)
}


static void
llm_gemm_q6_k(const llm_gemm_t *g)
{
    LLM_SCALAR_TILES(g, llm_tile_q6_k)
}


/* d = amax / 127 and q = round(x / d), ties to even (nearbyintf in the
 * default rounding mode, as the vector rounding instructions do) */
static void
llm_quant_q8(const float *x, llm_q8_block_t *y, int64_t n)
{
    float    amax, d, id;
    int32_t  sum;

    for (int64_t b = 0; b < n / LLM_QK; b++, x += LLM_QK) {
        amax = 0.0f;
        for (int j = 0; j < LLM_QK; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }

        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        sum = 0;

        for (int j = 0; j < LLM_QK; j++) {
            y[b].q[j] = (int8_t) nearbyintf(x[j] * id);
            sum += y[b].q[j];
        }

        y[b].d = d;
        y[b].sum = sum;
    }
}


static void
llm_quant_q8k(const float *x, llm_q8k_block_t *y, int64_t n)
{
    float  amax, d, id;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, x += LLM_QK_K) {
        amax = 0.0f;
        for (int j = 0; j < LLM_QK_K; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }

        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;

        for (int j = 0; j < LLM_QK_K; j++) {
            y[b].q[j] = (int8_t) nearbyintf(x[j] * id);
        }

        for (int i = 0; i < 16; i++) {
            int  s = 0;

            for (int j = 0; j < 16; j++) {
                s += y[b].q[16 * i + j];
            }
            y[b].bsums[i] = (int16_t) s;
        }

        y[b].d = d;
    }
}
