/*
 * Copyright (C) ngx_llm developers
 *
 * Inside llm_matmul(): the activation formats the kernels read and the
 * table of kernels each instruction set provides.  Only llm_quant.c and
 * the llm_cpu_*.c files include this.
 *
 * A kernel multiplies a slice of weight rows by every token's
 * activations, which llm_matmul() has prepared once per call:
 *
 *   F32 weights              the f32 input itself
 *   F16, BF16 weights        f32, rounded to the weights' type
 *   Q8_0, Q4_0 weights       llm_q8_block_t per 32 inputs
 *   Q4_K, Q5_K, Q6_K         llm_q8k_block_t per 256 inputs
 *
 * Quantizing the input to 8 bits is what llama.cpp does for these
 * types; it turns the dot products into integer ones.  Every variant
 * quantizes with the same arithmetic (round to nearest even of x / d),
 * so they differ only in the order of float sums.
 */

#ifndef LLM_CPU_H
#define LLM_CPU_H

#include "llm_common.h"
#include "llm_quant.h"


#define LLM_QK     32
#define LLM_QK_K   256


/* 32 inputs: x ~ d * q */
typedef struct {
    float      d;
    int32_t    sum;           /* sum of q, for Q4_0's offset of 8 */
    int8_t     q[LLM_QK];
} llm_q8_block_t;

/* 256 inputs: x ~ d * q */
typedef struct {
    float      d;
    int16_t    bsums[16];     /* sums of q over each 16: the k-quants'
                               * mins and offsets */
    int8_t     q[LLM_QK_K];
} llm_q8k_block_t;


typedef struct {
    float          *out;        /* out[t * ld + r], r in the slice */
    int64_t         ld;
    const uint8_t  *w;          /* the slice's first row */
    size_t          row_bytes;
    int64_t         n_rows;
    const uint8_t  *a;          /* token 0's activations */
    size_t          a_stride;   /* bytes from a token's to the next's */
    int64_t         n_tok;
    int64_t         n_cols;
} llm_gemm_t;

typedef void (*llm_gemm_pt)(const llm_gemm_t *g);


typedef struct {
    const char     *name;
    llm_gemm_pt     f32;
    llm_gemm_pt     f16;
    llm_gemm_pt     bf16;
    llm_gemm_pt     q8_0;
    llm_gemm_pt     q4_0;
    llm_gemm_pt     q4_k;
    llm_gemm_pt     q5_k;
    llm_gemm_pt     q6_k;
    /* n inputs (whole blocks) of one token */
    void          (*quant_q8)(const float *x, llm_q8_block_t *y,
                              int64_t n);
    void          (*quant_q8k)(const float *x, llm_q8k_block_t *y,
                               int64_t n);
    /* q8_0 and q4_0 want the middle 16 bytes of each pair of input
     * blocks swapped (see llm_cpu_avx2.c) */
    int             q8_pairs;
} llm_cpu_kernels_t;


extern const llm_cpu_kernels_t  llm_cpu_scalar;
extern const llm_cpu_kernels_t  llm_cpu_avx2;
extern const llm_cpu_kernels_t  llm_cpu_avx512;
extern const llm_cpu_kernels_t  llm_cpu_avx512_vnni;


/* the k-quants' packed 6-bit scales and mins, unpacked: sc[8], m[8] */
void llm_cpu_scales_k4(const uint8_t *packed, uint8_t *sc, uint8_t *m);

/* f16 -> f32 for every bit pattern, built by llm_quant_init() */
extern float  llm_fp16_table[65536];

static inline float
llm_cpu_half(const uint8_t *p)
{
    return llm_fp16_table[p[0] | (uint16_t) p[1] << 8];
}


#endif /* LLM_CPU_H */
