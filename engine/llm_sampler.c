/*
 * Copyright (C) ngx_llm developers
 *
 * The generator is xorshift64* (Vigna): 64 bits of state, never zero,
 * owned by the request.  A seed is mixed with splitmix64 first, so that
 * seeds 0, 1, 2 ... give unrelated streams and seed 0 gives a valid
 * state.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_sampler.h"


static uint64_t llm_splitmix64(uint64_t x);
static uint64_t llm_rng_next(uint64_t *state);
static float llm_rng_float(uint64_t *state);
static int32_t llm_argmax(const float *x, int n);
static int llm_cmp_key_desc(const void *a, const void *b);


int
llm_sampler_init(llm_sampler_t *s, int n_vocab, float temperature,
    float top_p, uint64_t seed, llm_err_t *err)
{
    memset(s, 0, sizeof(llm_sampler_t));

    if (n_vocab <= 0) {
        return llm_err_set(err, LLM_EINVAL, "sampler: vocabulary of %d",
                           n_vocab);
    }

    if (!(temperature >= 0.0f) || !isfinite(temperature)) {
        return llm_err_set(err, LLM_EINVAL,
                           "sampler: temperature %g is not >= 0",
                           temperature);
    }

    if (!(top_p > 0.0f && top_p <= 1.0f)) {
        return llm_err_set(err, LLM_EINVAL,
                           "sampler: top_p %g is not in (0, 1]", top_p);
    }

    s->probs = malloc((size_t) n_vocab * sizeof(float));
    s->index = malloc((size_t) n_vocab * sizeof(int32_t));
    s->keys = malloc((size_t) n_vocab * sizeof(uint64_t));

    if (s->probs == NULL || s->index == NULL || s->keys == NULL) {
        llm_sampler_free(s);
        return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory");
    }

    s->n_vocab = n_vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    s->rng = llm_splitmix64(seed);

    if (s->rng == 0) {
        s->rng = 0x9e3779b97f4a7c15ULL;
    }

    return LLM_OK;
}


void
llm_sampler_free(llm_sampler_t *s)
{
    free(s->probs);
    free(s->index);
    free(s->keys);
    s->probs = NULL;
    s->index = NULL;
    s->keys = NULL;
}


int32_t
llm_sample(llm_sampler_t *s, float *logits, float *logprob)
{
    int       n, n_cand;
    float     max, r, cdf, cutoff, mass, *p;
    double    sum;
    int32_t   id, *idx;

    n = s->n_vocab;
    p = s->probs;
    idx = s->index;

    max = logits[llm_argmax(logits, n)];

    if (logprob != NULL) {
        /* under the model's own distribution: temperature 1, no top-p */
        sum = 0.0;
        for (int i = 0; i < n; i++) {
            sum += exp((double) logits[i] - max);
        }

        /* filled in once the token is known */
        *logprob = (float) -log(sum) - max;
    }

    if (s->temperature == 0.0f) {
        id = llm_argmax(logits, n);
        goto done;
    }

    /* softmax of logits / temperature, into the scratch; the logits are
     * left alone */

    sum = 0.0;
    for (int i = 0; i < n; i++) {
        p[i] = expf((logits[i] - max) / s->temperature);
        sum += p[i];
    }

    if (!(sum > 0.0) || !isfinite(sum)) {
        /* NaN or overflow somewhere upstream: fall back to greedy */
        id = llm_argmax(logits, n);
        goto done;
    }

    for (int i = 0; i < n; i++) {
        p[i] = (float) (p[i] / sum);
    }

    r = llm_rng_float(&s->rng);

    if (s->top_p >= 1.0f) {
        cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += p[i];
            if (r < cdf) {
                id = i;
                goto done;
            }
        }

        /* rounding left r past the last sum: take the last token that
         * has any probability */
        for (id = n - 1; id > 0 && p[id] == 0.0f; id--) {
            /* void */
        }

        goto done;
    }

    /*
     * Nucleus: the smallest set of most likely tokens whose mass reaches
     * top_p.  A token below (1 - top_p) / (n - 1) can never be in it
     * (the others would have reached top_p without it), so only the
     * candidates above that cutoff are sorted.
     */

    cutoff = n > 1 ? (1.0f - s->top_p) / (float) (n - 1) : 0.0f;
    n_cand = 0;

    for (int i = 0; i < n; i++) {
        if (p[i] >= cutoff) {
            idx[n_cand++] = i;
        }
    }

    if (n_cand == 0) {
        id = llm_argmax(logits, n);
        goto done;
    }

    /* sort the candidates by probability, highest first, lower id first
     * on ties: a positive float's bits order as the float does */

    for (int i = 0; i < n_cand; i++) {
        uint32_t  bits;

        memcpy(&bits, &p[idx[i]], 4);
        s->keys[i] = ((uint64_t) bits << 32)
                     | (uint32_t) (INT32_MAX - idx[i]);
    }

    qsort(s->keys, (size_t) n_cand, sizeof(uint64_t), llm_cmp_key_desc);

    mass = 0.0f;
    for (int i = 0; i < n_cand; i++) {
        idx[i] = INT32_MAX - (int32_t) (s->keys[i] & 0xffffffff);
        mass += p[idx[i]];

        if (mass >= s->top_p) {
            n_cand = i + 1;
            break;
        }
    }

    r *= mass;
    cdf = 0.0f;
    id = idx[n_cand - 1];

    for (int i = 0; i < n_cand; i++) {
        cdf += p[idx[i]];
        if (r < cdf) {
            id = idx[i];
            break;
        }
    }

done:

    if (logprob != NULL) {
        *logprob += logits[id];
    }

    return id;
}


static uint64_t
llm_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}


static uint64_t
llm_rng_next(uint64_t *state)
{
    uint64_t  x;

    x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;

    return x * 0x2545f4914f6cdd1dULL;
}


/* uniform in [0, 1): the top 24 bits */
static float
llm_rng_float(uint64_t *state)
{
    return (float) (llm_rng_next(state) >> 40) * (1.0f / 16777216.0f);
}


/* the first index of the largest value; NaNs never win */
static int32_t
llm_argmax(const float *x, int n)
{
    int32_t  best;

    best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) {
            best = i;
        }
    }

    return best;
}


static int
llm_cmp_key_desc(const void *a, const void *b)
{
    uint64_t  ka = *(const uint64_t *) a;
    uint64_t  kb = *(const uint64_t *) b;

    return (ka < kb) - (ka > kb);
}
