/*
 * Copyright (C) ngx_llm developers
 *
 * Token sampling: greedy when temperature is 0, else temperature and
 * top-p (nucleus) over a per-request xorshift generator, so the same seed
 * gives the same tokens.
 */

#ifndef LLM_SAMPLER_H
#define LLM_SAMPLER_H

#include "llm_common.h"


typedef struct {
    float      temperature;   /* 0: argmax */
    float      top_p;         /* (0, 1] */
    uint64_t   rng;           /* xorshift64* state, never 0 */
    int        n_vocab;
    float     *probs;         /* n_vocab scratch, allocated by init */
    int32_t   *index;         /* n_vocab scratch */
    uint64_t  *keys;          /* n_vocab scratch: top-p sort keys */
} llm_sampler_t;


int llm_sampler_init(llm_sampler_t *s, int n_vocab, float temperature,
    float top_p, uint64_t seed, llm_err_t *err);
void llm_sampler_free(llm_sampler_t *s);

/* picks the next token from n_vocab logits (which it may modify); stores
 * the chosen token's log-probability under the unmodified distribution
 * (temperature 1, no truncation) in *logprob when that is not NULL */
int32_t llm_sample(llm_sampler_t *s, float *logits, float *logprob);


#endif /* LLM_SAMPLER_H */
