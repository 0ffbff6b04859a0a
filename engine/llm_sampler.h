/*
 * Copyright (C) ngx_llm developers
 *
 * Token sampling, per request and deterministic for a seed.  In order:
 * logit_bias, then the penalties (repetition over the prompt and what was
 * generated; frequency and presence over what was generated), both on a
 * copy of the logits; then greedy when temperature is 0 (the first
 * largest, NaN never), else the draw of llm_backend.h, the one the
 * backends' sample hooks make: weights exp((l - max) / temperature),
 * top_k (ties at the k-th kept), min_p (weight >= min_p times the
 * largest), top_p (the fewest largest reaching top_p of what is left,
 * ties kept) and u = llm_sample_uniform(seed, counter), counter being
 * the tokens drawn so far.  So a request without bias or penalties gets
 * the same tokens whether it is sampled here or by the backend from
 * logits that never left it (llm_model_forward_batch_draw).
 */

#ifndef LLM_SAMPLER_H
#define LLM_SAMPLER_H

#include "llm_backend.h"
#include "llm_common.h"


typedef struct {
    float      temperature;   /* 0: argmax */
    float      top_p;         /* (0, 1] */
    uint64_t   seed;          /* the request's */
    uint64_t   counter;       /* tokens drawn so far */
    int        n_vocab;
    void      *scratch;       /* LLM_SAMPLE_SCRATCH(n_vocab), allocated
                               * by init: the draw's, or the sort keys of
                               * llm_sampler_top() (uint64_t, n_vocab) */
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

/* picks the next token from n_vocab logits (which it may modify) and
 * counts it drawn; stores the chosen token's log-probability under the
 * unmodified distribution (temperature 1, no truncation) in *logprob
 * when that is not NULL */
int32_t llm_sample(llm_sampler_t *s, float *logits, float *logprob);

/*
 * Whether llm_sample() is the draw of llm_backend.h on the logits as
 * they are, nothing applied first (no logit_bias, no penalty): a token
 * may then be drawn by a backend's sample hook under
 * llm_sampler_params(), and counted with llm_sampler_drawn().
 */
int llm_sampler_plain(const llm_sampler_t *s);
void llm_sampler_params(const llm_sampler_t *s, llm_sample_params_t *p);
void llm_sampler_drawn(llm_sampler_t *s);


#endif /* LLM_SAMPLER_H */
