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


#endif /* LLM_QUANT_H */
