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
    free(s->work);
    free(s->counts);
    free(s->seen);
    free(s->hist);
    free(s->bias_ids);
    free(s->bias);
    s->probs = NULL;
    s->index = NULL;
    s->keys = NULL;
    s->work = NULL;
    s->counts = NULL;
    s->seen = NULL;
    s->hist = NULL;
    s->bias_ids = NULL;
    s->bias = NULL;
    s->n_hist = 0;
    s->n_bias = 0;
}


static int
llm_sampler_work(llm_sampler_t *s, llm_err_t *err)
{
    if (s->work == NULL) {
        s->work = malloc((size_t) s->n_vocab * sizeof(float));
        if (s->work == NULL) {
            return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory");
        }
    }
    return LLM_OK;
}


int
llm_sampler_set_penalties(llm_sampler_t *s, float repetition,
    float frequency, float presence, llm_err_t *err)
{
    if (!(repetition > 0.0f && repetition <= 10.0f)
        || !(frequency >= -2.0f && frequency <= 2.0f)
        || !(presence >= -2.0f && presence <= 2.0f))
    {
        return llm_err_set(err, LLM_EINVAL, "sampler: penalty out of range");
    }

    s->repetition = repetition;
    s->frequency = frequency;
    s->presence = presence;

    if (repetition == 1.0f && frequency == 0.0f && presence == 0.0f) {
        return LLM_OK;
    }

    if (s->counts == NULL) {
        s->counts = calloc((size_t) s->n_vocab, sizeof(uint32_t));
        s->seen = calloc((size_t) s->n_vocab, sizeof(uint8_t));
        s->hist = malloc((size_t) s->n_vocab * sizeof(int32_t));
        if (s->counts == NULL || s->seen == NULL || s->hist == NULL) {
            return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory");
        }
    }

    return llm_sampler_work(s, err);
}


int
llm_sampler_set_bias(llm_sampler_t *s, const int32_t *ids, const float *bias,
    int n, llm_err_t *err)
{
    if (n < 0 || n > s->n_vocab) {
        return llm_err_set(err, LLM_EINVAL, "sampler: %d biases", n);
    }

    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->n_vocab) {
            return llm_err_set(err, LLM_EINVAL,
                               "sampler: logit_bias token %d is not in the "
                               "vocabulary of %d", ids[i], s->n_vocab);
        }
        if (!(bias[i] >= -100.0f && bias[i] <= 100.0f)) {
            return llm_err_set(err, LLM_EINVAL,
                               "sampler: logit_bias %g is not in -100..100",
                               bias[i]);
        }
    }

    free(s->bias_ids);
    free(s->bias);
    s->bias_ids = NULL;
    s->bias = NULL;
    s->n_bias = 0;

    if (n == 0) {
        return LLM_OK;
    }

    s->bias_ids = malloc((size_t) n * sizeof(int32_t));
    s->bias = malloc((size_t) n * sizeof(float));
    if (s->bias_ids == NULL || s->bias == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory");
    }

    memcpy(s->bias_ids, ids, (size_t) n * sizeof(int32_t));
    memcpy(s->bias, bias, (size_t) n * sizeof(float));
    s->n_bias = n;

    return llm_sampler_work(s, err);
}


void
llm_sampler_accept(llm_sampler_t *s, int32_t id, int generated)
{
    if (s->counts == NULL || id < 0 || id >= s->n_vocab) {
        return;
    }

    if (!s->seen[id]) {
        s->seen[id] = 1;
        s->hist[s->n_hist++] = id;
    }

    if (generated && s->counts[id] < UINT32_MAX) {
        s->counts[id]++;
    }
}


/* logits with logit_bias and the penalties applied, in s->work; or the
 * logits themselves when nothing applies */
static const float *
llm_sampler_adjust(llm_sampler_t *s, const float *logits)
{
    float  v;

    if (s->work == NULL || (s->n_bias == 0 && s->n_hist == 0)) {
        return logits;
    }

    memcpy(s->work, logits, (size_t) s->n_vocab * sizeof(float));

    for (int i = 0; i < s->n_bias; i++) {
        s->work[s->bias_ids[i]] += s->bias[i];
    }

    for (int i = 0; i < s->n_hist; i++) {
        int32_t  id = s->hist[i];

        v = s->work[id];
        if (s->repetition != 1.0f) {
            v = v > 0.0f ? v / s->repetition : v * s->repetition;
        }
        if (s->counts[id]) {
            v -= (float) s->counts[id] * s->frequency + s->presence;
        }
        s->work[id] = v;
    }

    return s->work;
}


/* sort key: a non-negative float's bits order as the float does; lower
 * id first on ties */
static uint64_t
llm_sampler_key(float p, int32_t id)
{
    uint32_t  bits;

    memcpy(&bits, &p, 4);
    return ((uint64_t) bits << 32) | (uint32_t) (INT32_MAX - id);
}


static int32_t
llm_sampler_key_id(uint64_t key)
{
    return INT32_MAX - (int32_t) (key & 0xffffffff);
}


/* moves the k largest of keys[0..n) to keys[0..k), in no order: a
 * min-heap of k over one pass, O(n log k) */
static void
llm_select_largest(uint64_t *keys, int n, int k)
{
    uint64_t  t;
    int       i, c;

    if (k <= 0 || k >= n) {
        return;
    }

    for (int j = k / 2 - 1; j >= 0; j--) {
        for (i = j; (c = 2 * i + 1) < k; i = c) {
            if (c + 1 < k && keys[c + 1] < keys[c]) {
                c++;
            }
            if (keys[i] <= keys[c]) {
                break;
            }
            t = keys[i]; keys[i] = keys[c]; keys[c] = t;
        }
    }

    for (int j = k; j < n; j++) {
        if (keys[j] <= keys[0]) {
            continue;
        }
        keys[0] = keys[j];
        for (i = 0; (c = 2 * i + 1) < k; i = c) {
            if (c + 1 < k && keys[c + 1] < keys[c]) {
                c++;
            }
            if (keys[i] <= keys[c]) {
                break;
            }
            t = keys[i]; keys[i] = keys[c]; keys[c] = t;
        }
    }
}


int
llm_sampler_top(llm_sampler_t *s, const float *logits, int k, int32_t *ids,
    float *logprobs)
{
    int     n;
    float   max;
    double  sum, lse;

    n = s->n_vocab;
    if (k > n) {
        k = n;
    }
    if (k <= 0) {
        return 0;
    }

    max = logits[llm_argmax(logits, n)];
    sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += exp((double) logits[i] - max);
    }
    lse = log(sum) + max;

    /* order by logit: shift so that every key is non-negative */
    for (int i = 0; i < n; i++) {
        float  v = logits[i] - max;

        s->keys[i] = llm_sampler_key(v == v ? expf(v) : 0.0f, i);
    }

    llm_select_largest(s->keys, n, k);
    qsort(s->keys, (size_t) k, sizeof(uint64_t), llm_cmp_key_desc);

    for (int i = 0; i < k; i++) {
        ids[i] = llm_sampler_key_id(s->keys[i]);
        logprobs[i] = (float) ((double) logits[ids[i]] - lse);
    }

    return k;
}


int32_t
llm_sample(llm_sampler_t *s, float *logits, float *logprob)
{
    int           n, n_cand, k;
    float         max, r, cdf, cutoff, mass, thr, *p;
    double        sum;
    int32_t       id, *idx;
    const float  *l;

    n = s->n_vocab;
    p = s->probs;
    idx = s->index;

    if (logprob != NULL) {
        /* under the model's own distribution: temperature 1, nothing
         * applied; the token's own logit is added once it is known */
        max = logits[llm_argmax(logits, n)];
        sum = 0.0;
        for (int i = 0; i < n; i++) {
            sum += exp((double) logits[i] - max);
        }
        *logprob = (float) -log(sum) - max;
    }

    l = llm_sampler_adjust(s, logits);

    if (s->temperature == 0.0f) {
        id = llm_argmax(l, n);
        goto done;
    }

    /* softmax of l / temperature, into the scratch */

    max = l[llm_argmax(l, n)];
    sum = 0.0;
    for (int i = 0; i < n; i++) {
        p[i] = expf((l[i] - max) / s->temperature);
        sum += p[i];
    }

    if (!(sum > 0.0) || !isfinite(sum)) {
        /* NaN or overflow somewhere upstream: fall back to greedy */
        id = llm_argmax(l, n);
        goto done;
    }

    for (int i = 0; i < n; i++) {
        p[i] = (float) (p[i] / sum);
    }

    r = llm_rng_float(&s->rng);
    k = s->top_k > 0 && s->top_k < n ? s->top_k : 0;

    if (k == 0 && s->top_p >= 1.0f && s->min_p <= 0.0f) {
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
     * Candidates.  min_p drops p < min_p * p_max.  Without top_k, a token
     * below (1 - top_p) / (n - 1) can never be in the nucleus (the others
     * would have reached top_p without it), so only what is above that
     * cutoff needs sorting.
     */

    thr = s->min_p > 0.0f ? s->min_p * p[llm_argmax(p, n)] : 0.0f;
    if (k == 0 && s->top_p < 1.0f && n > 1) {
        cutoff = (1.0f - s->top_p) / (float) (n - 1);
        if (cutoff > thr) {
            thr = cutoff;
        }
    }

    n_cand = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] >= thr && p[i] > 0.0f) {
            s->keys[n_cand++] = llm_sampler_key(p[i], i);
        }
    }

    if (n_cand == 0) {
        id = llm_argmax(l, n);
        goto done;
    }

    if (k && n_cand > k) {
        llm_select_largest(s->keys, n_cand, k);
        n_cand = k;
    }

    qsort(s->keys, (size_t) n_cand, sizeof(uint64_t), llm_cmp_key_desc);

    /* the nucleus of what is left, renormalized */
    mass = 0.0f;
    for (int i = 0; i < n_cand; i++) {
        idx[i] = llm_sampler_key_id(s->keys[i]);
        mass += p[idx[i]];
    }

    if (s->top_p < 1.0f) {
        /* over the whole distribution, or over what top_k and min_p
         * left (the cutoff alone drops no part of the nucleus) */
        float  total = (k == 0 && s->min_p <= 0.0f) ? 1.0f : mass;

        mass = 0.0f;
        for (int i = 0; i < n_cand; i++) {
            mass += p[idx[i]];
            if (mass >= s->top_p * total) {
                n_cand = i + 1;
                break;
            }
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
