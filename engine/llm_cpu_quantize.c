/*
 * Copyright (C) ngx_llm developers
 *
 * f32 rows to each stored weight type, for the model writer
 * (tools/gguf_write.c) and the tests: plain round-to-nearest with the
 * block scales chosen from each block's range, no search for better
 * scales.  Good enough for benchmark files of random weights and to
 * check the dequantizers, not meant to rival a real quantizer's error.
 * The layouts are described at the top of llm_quant.c.
 */

#include <math.h>
#include <string.h>

#include "llm_cpu.h"
#include "llm_gguf.h"
#include "llm_quant.h"


static void llm_put_half(uint8_t *p, float f);
static int llm_clampi(float v, int lo, int hi);
static void llm_quantize_q8_0(const float *x, uint8_t *y, int64_t n);
static void llm_quantize_q4_0(const float *x, uint8_t *y, int64_t n);
static void llm_quantize_k45(const float *x, uint8_t *y, int64_t n,
    int bits);
static void llm_quantize_q6_k(const float *x, uint8_t *y, int64_t n);


int
llm_quantize_row(uint32_t type, const float *x, void *out, int64_t n)
{
    uint8_t   *y;
    uint16_t   h;

    y = out;

    if (n % (int64_t) llm_ggml_blck_size(type) != 0) {
        return LLM_ERR;
    }

    switch (type) {
    case LLM_TYPE_F32:
        memcpy(y, x, (size_t) n * sizeof(float));
        return LLM_OK;

    case LLM_TYPE_F16:
    case LLM_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            h = type == LLM_TYPE_F16 ? llm_fp32_to_fp16(x[i])
                                     : llm_fp32_to_bf16(x[i]);
            memcpy(y + 2 * i, &h, 2);
        }
        return LLM_OK;

    case LLM_TYPE_Q8_0:
        llm_quantize_q8_0(x, y, n);
        return LLM_OK;

    case LLM_TYPE_Q4_0:
        llm_quantize_q4_0(x, y, n);
        return LLM_OK;

    case LLM_TYPE_Q4_K:
        llm_quantize_k45(x, y, n, 4);
        return LLM_OK;

    case LLM_TYPE_Q5_K:
        llm_quantize_k45(x, y, n, 5);
        return LLM_OK;

    case LLM_TYPE_Q6_K:
        llm_quantize_q6_k(x, y, n);
        return LLM_OK;

    default:
        return LLM_ERR;
    }
}


static void
llm_put_half(uint8_t *p, float f)
{
    uint16_t  h;

    h = llm_fp32_to_fp16(f);
    memcpy(p, &h, 2);
}


static int
llm_clampi(float v, int lo, int hi)
{
    int  i;

    i = (int) lrintf(v);

    return i < lo ? lo : (i > hi ? hi : i);
}


static void
llm_quantize_q8_0(const float *x, uint8_t *y, int64_t n)
{
    float  amax, d, id;

    for (int64_t b = 0; b < n / LLM_QK; b++, x += LLM_QK, y += 34) {
        amax = 0.0f;
        for (int j = 0; j < LLM_QK; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }

        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        llm_put_half(y, d);

        for (int j = 0; j < LLM_QK; j++) {
            y[2 + j] = (uint8_t) (int8_t) llm_clampi(x[j] * id, -127, 127);
        }
    }
}


/* the value of largest magnitude maps to -8, the end with one more
 * level, so that the scale loses nothing on that side */
static void
llm_quantize_q4_0(const float *x, uint8_t *y, int64_t n)
{
    int    lo, hi;
    float  big, d, id;

    for (int64_t b = 0; b < n / LLM_QK; b++, x += LLM_QK, y += 18) {
        big = 0.0f;
        for (int j = 0; j < LLM_QK; j++) {
            if (fabsf(x[j]) > fabsf(big)) {
                big = x[j];
            }
        }

        d = big / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        llm_put_half(y, d);

        for (int j = 0; j < LLM_QK / 2; j++) {
            lo = llm_clampi(x[j] * id + 8.0f, 0, 15);
            hi = llm_clampi(x[j + 16] * id + 8.0f, 0, 15);
            y[2 + j] = (uint8_t) (lo | hi << 4);
        }
    }
}


/*
 * Q4_K and Q5_K: each sub-block of 32 is x ~ scale * q - min with q in
 * 0..2^bits-1; the eight scales and mins are themselves 6-bit multiples
 * of the block's d and dmin.
 */
static void
llm_quantize_k45(const float *x, uint8_t *y, int64_t n, int bits)
{
    int       top, q;
    float     scale[8], mn[8], d, dmin, maxs, maxm, lo, hi, ds, dm;
    uint8_t   sc[8], m[8], *scales, *qh, *qs;

    top = (1 << bits) - 1;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, x += LLM_QK_K) {
        maxs = 0.0f;
        maxm = 0.0f;

        for (int j = 0; j < 8; j++) {
            lo = 0.0f;
            hi = 0.0f;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }

            scale[j] = (hi - lo) / (float) top;
            mn[j] = -lo;
            maxs = fmaxf(maxs, scale[j]);
            maxm = fmaxf(maxm, mn[j]);
        }

        d = maxs / 63.0f;
        dmin = maxm / 63.0f;

        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t) (d > 0.0f ? llm_clampi(scale[j] / d, 0, 63)
                                        : 0);
            m[j] = (uint8_t) (dmin > 0.0f ? llm_clampi(mn[j] / dmin, 0, 63)
                                          : 0);
        }

        llm_put_half(y, d);
        llm_put_half(y + 2, dmin);

        /* what the dequantizer will multiply by: the stored halves */
        d = llm_fp16_to_fp32(llm_fp32_to_fp16(d));
        dmin = llm_fp16_to_fp32(llm_fp32_to_fp16(dmin));

        /* the inverse of llm_cpu_scales_k4 */
        scales = y + 4;
        for (int j = 0; j < 4; j++) {
            scales[j] = (uint8_t) (sc[j] | (sc[j + 4] >> 4) << 6);
            scales[j + 4] = (uint8_t) (m[j] | (m[j + 4] >> 4) << 6);
            scales[j + 8] = (uint8_t) ((sc[j + 4] & 0x0f)
                                       | (m[j + 4] & 0x0f) << 4);
        }

        if (bits == 5) {
            qh = y + 16;
            qs = y + 48;
            memset(qh, 0, 32);
            y += 176;

        } else {
            qh = NULL;
            qs = y + 16;
            y += 144;
        }

        /* pair p: sub-block 2p in the low nibbles of qs[32p..], 2p+1 in
         * the high ones; bit 2p / 2p+1 of qh[l] is their fifth bit */
        for (int p = 0; p < 4; p++) {
            for (int l = 0; l < 32; l++) {
                uint8_t  v[2];

                for (int h = 0; h < 2; h++) {
                    int  j = 2 * p + h;

                    ds = d * sc[j];
                    dm = dmin * m[j];
                    q = ds > 0.0f ? llm_clampi((x[32 * j + l] + dm) / ds, 0,
                                               top)
                                  : 0;
                    v[h] = (uint8_t) q;

                    if (qh != NULL && (q & 16)) {
                        qh[l] |= (uint8_t) (1 << j);
                    }
                }

                qs[32 * p + l] = (uint8_t) ((v[0] & 0x0f)
                                            | (v[1] & 0x0f) << 4);
            }
        }
    }
}


/* Q6_K: sixteen sub-blocks of 16, x ~ d * sc * (q - 32), sc signed */
static void
llm_quantize_q6_k(const float *x, uint8_t *y, int64_t n)
{
    int       q[LLM_QK_K];
    float     scale[16], big, d, ds, maxs;
    int8_t    sc[16];
    uint8_t  *ql, *qh;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, x += LLM_QK_K, y += 210) {
        maxs = 0.0f;

        for (int i = 0; i < 16; i++) {
            big = 0.0f;
            for (int l = 0; l < 16; l++) {
                if (fabsf(x[16 * i + l]) > fabsf(big)) {
                    big = x[16 * i + l];
                }
            }

            scale[i] = big / -32.0f;
            maxs = fmaxf(maxs, fabsf(scale[i]));
        }

        d = maxs / 127.0f;
        llm_put_half(y + 208, d);
        d = llm_fp16_to_fp32(llm_fp32_to_fp16(d));

        for (int i = 0; i < 16; i++) {
            sc[i] = (int8_t) (d > 0.0f ? llm_clampi(scale[i] / d, -128, 127)
                                       : 0);
            ds = d * sc[i];

            for (int l = 0; l < 16; l++) {
                q[16 * i + l] = ds != 0.0f
                                ? llm_clampi(x[16 * i + l] / ds + 32.0f, 0,
                                             63)
                                : 32;
            }
        }

        memcpy(y + 192, sc, 16);

        /* per half of 128: element l and l+64 share ql[l] (low, high
         * nibble), l+32 and l+96 share ql[l+32]; their top 2 bits go to
         * qh[l] at bits 0, 2, 4, 6 for l, l+32, l+64, l+96 */
        ql = y;
        qh = y + 128;

        for (int half = 0; half < 2; half++) {
            const int  *v = q + 128 * half;

            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t) ((v[l] & 0x0f) | (v[l + 64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t) ((v[l + 32] & 0x0f)
                                        | (v[l + 96] & 0x0f) << 4);
                qh[l] = (uint8_t) ((v[l] >> 4) | (v[l + 32] >> 4) << 2
                                   | (v[l + 64] >> 4) << 4
                                   | (v[l + 96] >> 4) << 6);
            }

            ql += 64;
            qh += 32;
        }
    }
}
