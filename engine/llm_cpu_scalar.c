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
static void llm_sgemm(const llm_sgemm_t *s);


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
    llm_sgemm,
    llm_dequant_row,
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


/* the loops every kernel here shares: out[t][r] = dot(row r, token t) */
#define LLM_GEMM_LOOP(g, dot)                                               \
    for (int64_t t = 0; t < (g)->n_tok; t++) {                              \
        const uint8_t  *a_ = (g)->a + (size_t) t * (g)->a_stride;           \
        float          *o_ = (g)->out + t * (g)->ld;                        \
                                                                            \
        for (int64_t r = 0; r < (g)->n_rows; r++) {                         \
            o_[r] = dot((g)->w + (size_t) r * (g)->row_bytes, a_,           \
                        (g)->n_cols);                                       \
        }                                                                   \
    }


static float
llm_dot_f32(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float         sum;
    const float  *x;

    x = (const float *) a;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        float  v;

        memcpy(&v, w + 4 * i, 4);
        sum += v * x[i];
    }

    return sum;
}


static float
llm_dot_f16(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float         sum;
    const float  *x;

    x = (const float *) a;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        sum += llm_cpu_half(w + 2 * i) * x[i];
    }

    return sum;
}


static float
llm_dot_bf16(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float         sum, v;
    uint32_t      bits;
    const float  *x;

    x = (const float *) a;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        bits = (uint32_t) (w[2 * i] | w[2 * i + 1] << 8) << 16;
        memcpy(&v, &bits, 4);
        sum += v * x[i];
    }

    return sum;
}


static float
llm_dot_q8_0(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float                  sum;
    int32_t                isum;
    const llm_q8_block_t  *x;

    x = (const llm_q8_block_t *) a;
    sum = 0.0f;

    for (int64_t b = 0; b < n / LLM_QK; b++, w += 34) {
        isum = 0;
        for (int j = 0; j < LLM_QK; j++) {
            isum += (int8_t) w[2 + j] * x[b].q[j];
        }

        sum += llm_cpu_half(w) * x[b].d * (float) isum;
    }

    return sum;
}


static float
llm_dot_q4_0(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float                  sum;
    int32_t                isum;
    const llm_q8_block_t  *x;

    x = (const llm_q8_block_t *) a;
    sum = 0.0f;

    for (int64_t b = 0; b < n / LLM_QK; b++, w += 18) {
        isum = 0;
        for (int j = 0; j < LLM_QK / 2; j++) {
            isum += (w[2 + j] & 0x0f) * x[b].q[j];
            isum += (w[2 + j] >> 4) * x[b].q[j + 16];
        }

        isum -= 8 * x[b].sum;
        sum += llm_cpu_half(w) * x[b].d * (float) isum;
    }

    return sum;
}


/* Q4_K and Q5_K: 8 sub-blocks of 32 with a scale and a min each;
 * hmask selects Q5_K's fifth bits (NULL for Q4_K) */
static float
llm_dot_k45(const uint8_t *w, const uint8_t *qh, const uint8_t *qs,
    const llm_q8k_block_t *x)
{
    int32_t        isum, msum, s;
    uint8_t        sc[8], m[8];
    const int8_t  *q8;

    llm_cpu_scales_k4(w + 4, sc, m);

    isum = 0;
    msum = 0;
    q8 = x->q;

    for (int j = 0; j < 4; j++) {
        int32_t  lo = 0, hi = 0;

        for (int l = 0; l < 32; l++) {
            int  v0 = qs[l] & 0x0f, v1 = qs[l] >> 4;

            if (qh != NULL) {
                v0 += ((qh[l] >> (2 * j)) & 1) << 4;
                v1 += ((qh[l] >> (2 * j + 1)) & 1) << 4;
            }

            lo += v0 * q8[l];
            hi += v1 * q8[l + 32];
        }

        isum += sc[2 * j] * lo + sc[2 * j + 1] * hi;
        qs += 32;
        q8 += 64;
    }

    for (int j = 0; j < 8; j++) {
        s = x->bsums[2 * j] + x->bsums[2 * j + 1];
        msum += m[j] * s;
    }

    return x->d * (llm_cpu_half(w) * (float) isum
                   - llm_cpu_half(w + 2) * (float) msum);
}


static float
llm_dot_q4_k(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float                   sum;
    const llm_q8k_block_t  *x;

    x = (const llm_q8k_block_t *) a;
    sum = 0.0f;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, w += 144) {
        sum += llm_dot_k45(w, NULL, w + 16, &x[b]);
    }

    return sum;
}


static float
llm_dot_q5_k(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float                   sum;
    const llm_q8k_block_t  *x;

    x = (const llm_q8k_block_t *) a;
    sum = 0.0f;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, w += 176) {
        sum += llm_dot_k45(w, w + 16, w + 48, &x[b]);
    }

    return sum;
}


/* 16 sub-blocks of 16 with signed scales; values are q - 32 */
static float
llm_dot_q6_k(const uint8_t *w, const uint8_t *a, int64_t n)
{
    float                   sum;
    int32_t                 isum, sub[8];
    const int8_t           *sc, *q8;
    const uint8_t          *ql, *qh;
    const llm_q8k_block_t  *x;

    x = (const llm_q8k_block_t *) a;
    sum = 0.0f;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, w += 210) {
        ql = w;
        qh = w + 128;
        sc = (const int8_t *) (w + 192);
        q8 = x[b].q;
        isum = 0;

        for (int half = 0; half < 2; half++) {
            memset(sub, 0, sizeof(sub));

            for (int l = 0; l < 32; l++) {
                int  is = l / 16;

                sub[is] += ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) * q8[l];
                sub[is + 2] += ((ql[l + 32] & 0x0f)
                                | (((qh[l] >> 2) & 3) << 4)) * q8[l + 32];
                sub[is + 4] += ((ql[l] >> 4)
                                | (((qh[l] >> 4) & 3) << 4)) * q8[l + 64];
                sub[is + 6] += ((ql[l + 32] >> 4)
                                | ((qh[l] >> 6) << 4)) * q8[l + 96];
            }

            for (int i = 0; i < 8; i++) {
                isum += sc[i] * (sub[i] - 32 * x[b].bsums[8 * half + i]);
            }

            ql += 64;
            qh += 32;
            sc += 8;
            q8 += 128;
        }

        sum += llm_cpu_half(w + 208) * x[b].d * (float) isum;
    }

    return sum;
}


static void
llm_gemm_f32(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_f32)
}


static void
llm_gemm_f16(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_f16)
}


static void
llm_gemm_bf16(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_bf16)
}


static void
llm_gemm_q8_0(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_q8_0)
}


static void
llm_gemm_q4_0(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_q4_0)
}


static void
llm_gemm_q4_k(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_q4_k)
}


static void
llm_gemm_q5_k(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_q5_k)
}


static void
llm_gemm_q6_k(const llm_gemm_t *g)
{
    LLM_GEMM_LOOP(g, llm_dot_q6_k)
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


static void
llm_sgemm(const llm_sgemm_t *s)
{
    float         sum;
    const float  *w, *x;

    for (int64_t t = 0; t < s->n_tok; t++) {
        x = s->x + t * s->x_ld;

        for (int64_t r = 0; r < s->n_rows; r++) {
            w = s->w + r * s->w_ld;
            sum = 0.0f;

            for (int64_t i = 0; i < s->k; i++) {
                sum += w[i] * x[i];
            }

            if (s->accumulate) {
                s->out[t * s->ld + r] += sum;

            } else {
                s->out[t * s->ld + r] = sum;
            }
        }
    }
}
