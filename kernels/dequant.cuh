/*
 * Copyright (C) ngx_llm developers
 *
 * Decoding GGUF's quantized blocks on the device, 32 values ("a chunk")
 * at a time: chunk c of a row holds its values 32c..32c+31.  Every
 * quantized type here has blocks of 32 or 256 values, so a row of them
 * is whole chunks.  Layouts (bytes per block), as llm_quant.c decodes
 * them on the CPU:
 *
 *   Q8_0 (34)  f16 d, int8 q[32]:                 d * q
 *   Q4_0 (18)  f16 d, u8 q[16]: low nibbles are values 0..15, high
 *              ones 16..31:                         d * (nibble - 8)
 *   Q4_K (144) f16 d, f16 dmin, u8 scales[12], u8 q[128]: 8 sub-blocks
 *              of 32 with 6-bit scale sc and min m (packed, see
 *              llm_scale_min); sub-block j takes the low (j even) or
 *              high nibbles of q[32 (j / 2) ..]: d sc nibble - dmin m
 *   Q5_K (176) as Q4_K with u8 qh[32] before q: bit j of qh[l] is the
 *              fifth bit of value l of sub-block j
 *   Q6_K (210) u8 ql[128], u8 qh[64], int8 sc[16], f16 d: two halves
 *              of 128 values, each 64 bytes of ql, 32 of qh, 8 scales;
 *              quarter k of a half: 4 bits of ql[l] or ql[l + 32] (low
 *              for k < 2 ... see llm_deq_q6_k), 2 bits of qh[l] at 2k,
 *              scale sc[k * 2 + l / 16]:          d * sc * (q - 32)
 */

#ifndef LLM_DEQUANT_CUH
#define LLM_DEQUANT_CUH

#include "common.cuh"
#include "llm_kernels.h"


static __device__ __forceinline__ float
llm_ld_f16(const uint8_t *p)
{
    return __half2float(__ushort_as_half(*(const unsigned short *) p));
}


static __device__ __forceinline__ void
llm_scale_min(int j, const uint8_t *q, float *sc, float *m)
{
    if (j < 4) {
        *sc = (float) (q[j] & 63);
        *m = (float) (q[j + 4] & 63);

    } else {
        *sc = (float) ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (float) ((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}


static __device__ __forceinline__ void
llm_deq_q8_0(const uint8_t *row, int64_t c, float *v)
{
    const uint8_t  *b = row + c * 34;
    float           d = llm_ld_f16(b);

#pragma unroll
    for (int i = 0; i < 32; i++) {
        v[i] = d * (float) (int8_t) b[2 + i];
    }
}


static __device__ __forceinline__ void
llm_deq_q4_0(const uint8_t *row, int64_t c, float *v)
{
    const uint8_t  *b = row + c * 18;
    float           d = llm_ld_f16(b);

#pragma unroll
    for (int i = 0; i < 16; i++) {
        v[i] = d * (float) ((b[2 + i] & 0x0f) - 8);
        v[i + 16] = d * (float) ((b[2 + i] >> 4) - 8);
    }
}


/* Q4_K and Q5_K: qh NULL for Q4_K */
static __device__ __forceinline__ void
llm_deq_k45(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, int j,
    float *v)
{
    float           d, dmin, sc, m, d1, m1;
    const uint8_t  *q;

    d = llm_ld_f16(b);
    dmin = llm_ld_f16(b + 2);
    llm_scale_min(j, b + 4, &sc, &m);
    d1 = d * sc;
    m1 = dmin * m;
    q = qs + 32 * (j / 2);

#pragma unroll
    for (int l = 0; l < 32; l++) {
        int  n = (j & 1) ? q[l] >> 4 : q[l] & 0x0f;

        if (qh != NULL) {
            n += ((qh[l] >> j) & 1) << 4;
        }

        v[l] = d1 * (float) n - m1;
    }
}


static __device__ __forceinline__ void
llm_deq_q4_k(const uint8_t *row, int64_t c, float *v)
{
    const uint8_t  *b = row + (c / 8) * 144;

    llm_deq_k45(b, NULL, b + 16, (int) (c % 8), v);
}


static __device__ __forceinline__ void
llm_deq_q5_k(const uint8_t *row, int64_t c, float *v)
{
    const uint8_t  *b = row + (c / 8) * 176;

    llm_deq_k45(b, b + 16, b + 48, (int) (c % 8), v);
}


static __device__ __forceinline__ void
llm_deq_q6_k(const uint8_t *row, int64_t c, float *v)
{
    int             k, h, q, shift;
    float           d;
    const int8_t   *sc;
    const uint8_t  *b, *ql, *qh;

    b = row + (c / 8) * 210;
    k = (int) (c % 8);
    h = k / 4;
    k %= 4;

    ql = b + 64 * h + (k & 1) * 32;
    qh = b + 128 + 32 * h;
    sc = (const int8_t *) (b + 192) + 8 * h + 2 * k;
    d = llm_ld_f16(b + 208);
    shift = 2 * k;

#pragma unroll
    for (int l = 0; l < 32; l++) {
        q = ((k < 2 ? ql[l] & 0x0f : ql[l] >> 4)
             | (((qh[l] >> shift) & 3) << 4)) - 32;
        v[l] = d * (float) sc[l / 16] * (float) q;
    }
}


/* chunk c of a row of a quantized type; the caller has checked type */
static __device__ __forceinline__ void
llm_deq_chunk(uint32_t type, const uint8_t *row, int64_t c, float *v)
{
    switch (type) {
    case LLM_KT_Q8_0:
        llm_deq_q8_0(row, c, v);
        break;
    case LLM_KT_Q4_0:
        llm_deq_q4_0(row, c, v);
        break;
    case LLM_KT_Q4_K:
        llm_deq_q4_k(row, c, v);
        break;
    case LLM_KT_Q5_K:
        llm_deq_q5_k(row, c, v);
        break;
    default:
        llm_deq_q6_k(row, c, v);
        break;
    }
}


/* one value of a row of F32, F16 or BF16 */
static __device__ __forceinline__ float
llm_deq_plain(uint32_t type, const uint8_t *row, int64_t i)
{
    if (type == LLM_KT_F32) {
        return ((const float *) row)[i];
    }

    if (type == LLM_KT_F16) {
        return __half2float(((const __half *) row)[i]);
    }

    return __bfloat162float(((const __nv_bfloat16 *) row)[i]);
}


static inline __host__ __device__ int
llm_type_plain(uint32_t type)
{
    return type == LLM_KT_F32 || type == LLM_KT_F16 || type == LLM_KT_BF16;
}

#endif /* LLM_DEQUANT_CUH */
