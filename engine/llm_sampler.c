/*
 * Copyright (C) ngx_llm developers
 *
 * The draw is llm_backend.h's (llm_sample_fast, the twin's rule): its
 * uniform is splitmix64 of the seed and the number of tokens drawn so
 * far, so that seeds 0, 1, 2 ... give unrelated streams, seed 0 is as
 * good as any, and the n-th token of a request depends on nothing but
 * its seed, n and its logits, wherever it is drawn.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_sampler.h"


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

    /* the draw's scratch, 16 bytes a token, holds llm_sampler_top()'s
     * keys as well */
    s->scratch = malloc(LLM_SAMPLE_SCRATCH(n_vocab));
    if (s->scratch == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory");
    }

    s->n_vocab = n_vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    s->seed = seed;
    s->counter = 0;

    return LLM_OK;
}


void
llm_sampler_free(llm_sampler_t *s)
{
    free(s->scratch);
    free(s->work);
    free(s->counts);
    free(s->seen);
    free(s->hist);
    free(s->bias_ids);
    free(s->bias);
    s->scratch = NULL;
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
    int        n;
    float      max;
    double     sum, lse;
    uint64_t  *keys;

    n = s->n_vocab;
    keys = s->scratch;

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

        keys[i] = llm_sampler_key(v == v ? expf(v) : 0.0f, i);
    }

    llm_select_largest(keys, n, k);
    qsort(keys, (size_t) k, sizeof(uint64_t), llm_cmp_key_desc);

    for (int i = 0; i < k; i++) {
        ids[i] = llm_sampler_key_id(keys[i]);
        logprobs[i] = (float) ((double) logits[ids[i]] - lse);
    }

    return k;
}


int32_t
llm_sample(llm_sampler_t *s, float *logits, float *logprob)
{
    int                   n;
    float                 max;
    double                sum;
    int32_t               id;
    const float          *l;
    llm_sample_params_t   p;

    n = s->n_vocab;

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

    } else {
        llm_sampler_params(s, &p);
        id = llm_sample_fast(l, n, &p, s->scratch);
    }

    s->counter++;

    if (logprob != NULL) {
        *logprob += logits[id];
    }

    return id;
}


int
llm_sampler_plain(const llm_sampler_t *s)
{
    /* the history is kept only once a penalty was set */
    return s->n_bias == 0
           && (s->counts == NULL
               || (s->repetition == 1.0f && s->frequency == 0.0f
                   && s->presence == 0.0f));
}


void
llm_sampler_params(const llm_sampler_t *s, llm_sample_params_t *p)
{
    p->temperature = s->temperature;
    p->top_k = s->top_k;
    p->top_p = s->top_p;
    p->min_p = s->min_p;
    p->seed = s->seed;
    p->counter = s->counter;
}


/* a token drawn under llm_sampler_params() by someone else: the next
 * draw is the next counter's */
void
llm_sampler_drawn(llm_sampler_t *s)
{
    s->counter++;
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
