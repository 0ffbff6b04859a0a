/*
 * Copyright (C) ngx_llm developers
 *
 * Weight formats on the CPU: half-precision conversion, dequantization
 * of one row, and the dot product of one stored row with f32 activations
 * for each ggml type the engine computes with.
 */

#ifndef LLM_QUANT_H
#define LLM_QUANT_H

#include "llm_common.h"


/* y = dot(row of n stored elements, x); n is whole blocks */
typedef float (*llm_dot_pt)(const void *row, const float *x, int64_t n);


/* builds the f16 table that every conversion below reads: call it
 * before them (llm_model_load does); safe to call again, from any
 * thread */
void llm_quant_init(void);

float llm_fp16_to_fp32(uint16_t h);
uint16_t llm_fp32_to_fp16(float f);
float llm_bf16_to_fp32(uint16_t h);

uint16_t llm_fp32_to_bf16(float f);

/*
 * Rounds activations the way the weights' type is multiplied: to f16
 * for F16 and to bf16 for BF16 weights, as llama.cpp does, so that
 * results agree with it to the last near-tie.  Returns x itself for
 * the other types, else out (n floats).
 */
const float *llm_quant_round_act(uint32_t type, const float *x, float *out,
    int64_t n);

/* true if the engine can compute with weights of this type */
int llm_quant_supported(uint32_t type);

/* NULL for types it cannot */
llm_dot_pt llm_quant_dot(uint32_t type);

/* writes n floats; returns LLM_ERR for types it cannot decode */
int llm_dequant_row(uint32_t type, const void *row, float *y, int64_t n);

/* the inverse, round to nearest: writes llm_ggml_row_size(type, n)
 * bytes; LLM_ERR for the other types or n not whole blocks */
int llm_quantize_row(uint32_t type, const float *x, void *out, int64_t n);


/*
 * out (n_tok, n_rows) f32 = x (n_tok, n_cols) f32 times the transpose
 * of w (n_rows, n_cols) of ggml type `type`, rows as the GGUF stores
 * them (llm_ggml_row_size(type, n_cols) bytes apart), n_cols a whole
 * number of the type's blocks.  The input is first rounded the way
 * llama.cpp multiplies it: to f16/bf16 for F16/BF16 weights, to 8-bit
 * blocks for the quantized types, whatever the number of tokens, so
 * that a token's result does not depend on how many share the call
 * (many tokens are tiled so that each weight block serves several).
 * The work is split over the thread pool (llm_threads.h), with kernels
 * for the best instruction set the CPU has (llm_quant_level()).
 *
 * One call runs at a time: concurrent callers take turns.  It may be
 * called from inside an llm_threads task (it then runs on that thread
 * alone), as long as no other thread runs pool jobs meanwhile.  Types
 * llm_quant_supported() refuses give zeros.
 */
void llm_matmul(float *out, const float *x, int64_t n_tok, const void *w,
    uint32_t type, int64_t n_rows, int64_t n_cols);

/*
 * Sizes the scratch llm_matmul() prepares its input in for up to n_tok
 * tokens of n_cols inputs, so that later calls up to that size allocate
 * nothing (call it at load, for the widest matmul and the largest
 * batch).  Calls beyond it grow the scratch; if that fails they take
 * as many tokens at a time as it holds (the same results), and with no
 * scratch at all the slow reference dot products, still correct.
 */
int llm_matmul_reserve(int64_t n_tok, int64_t n_cols, llm_err_t *err);


/* instruction sets the kernels are built for, chosen at run time */
enum {
    LLM_CPU_SCALAR = 0,
    LLM_CPU_AVX2,             /* with FMA and F16C */
    LLM_CPU_AVX512,           /* F, BW, VL, DQ */
    LLM_CPU_AVX512_VNNI,
    LLM_CPU_NLEVELS
};

/* the best level this CPU runs, capped by $LLM_CPU (scalar, avx2,
 * avx512, avx512_vnni) */
int llm_quant_best_level(void);
/* the level llm_matmul() uses now */
int llm_quant_level(void);
/* uses the kernels of one level (tests, benchmarks); LLM_ERR if this
 * CPU cannot run them */
int llm_quant_force(int level);
const char *llm_quant_level_name(int level);


#endif /* LLM_QUANT_H */
