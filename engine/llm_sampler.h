/*
 * Copyright (C) ngx_llm developers
 *
 * Token sampling, per request and deterministic for a seed.  In order:
 * logit_bias, then the penalties (repetition over the prompt and what was
 * generated; frequency and presence over what was generated), then greedy
 * when temperature is 0, else softmax(logits / temperature), min_p, top_k,
 * top_p (nucleus, renormalized over what is left) and a draw from a
 * per-request xorshift generator.
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
    float     *work;          /* n_vocab scratch: adjusted logits */

    /* set by the caller after init; 0 is off */
    int        top_k;         /* keep the k most likely */
    float      min_p;         /* drop p < min_p * p_max */

    /* penalties: llm_sampler_set_penalties(), history: accept() */
    float      repetition;    /* 1: off; > 1 discourages repeats */
    float      frequency;     /* -2..2, per occurrence in the output */
    float      presence;      /* -2..2, once if in the output */
    uint32_t  *counts;        /* n_vocab: occurrences in the output */
    uint8_t   *seen;          /* n_vocab: in the prompt or the output */
    int32_t   *hist;          /* distinct tokens seen, n_hist of them */
    int        n_hist;

    /* logit_bias: llm_sampler_set_bias() */
    int        n_bias;
    int32_t   *bias_ids;
    float     *bias;
} llm_sampler_t;


int llm_sampler_init(llm_sampler_t *s, int n_vocab, float temperature,
    float top_p, uint64_t seed, llm_err_t *err);
void llm_sampler_free(llm_sampler_t *s);

/* penalties; history is kept only when one of them is active */
int llm_sampler_set_penalties(llm_sampler_t *s, float repetition,
    float frequency, float presence, llm_err_t *err);

/* adds bias[i] to the logit of ids[i] before anything else */
int llm_sampler_set_bias(llm_sampler_t *s, const int32_t *ids,
    const float *bias, int n, llm_err_t *err);

/* records a token of the prompt (generated = 0) or of the output */
void llm_sampler_accept(llm_sampler_t *s, int32_t id, int generated);

/*
 * The k most likely tokens under the model's own distribution
 * (temperature 1, nothing applied), most likely first; returns how many
 * were written (k at most, n_vocab at most).  Call it before
 * llm_sample(), which may change the logits.
 */
int llm_sampler_top(llm_sampler_t *s, const float *logits, int k,
    int32_t *ids, float *logprobs);

/* picks the next token from n_vocab logits (which it may modify); stores
 * the chosen token's log-probability under the unmodified distribution
 * (temperature 1, no truncation) in *logprob when that is not NULL */
int32_t llm_sample(llm_sampler_t *s, float *logits, float *logprob);


#endif /* LLM_SAMPLER_H */
