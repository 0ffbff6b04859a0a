/*
 * Copyright (C) ngx_llm developers
 *
 * The sampling parameters beyond temperature and top_p: top_k, min_p,
 * the three penalties, logit_bias and the top alternatives for logprobs,
 * each checked against a computation written here from the definitions.
 */

#include <math.h>
#include <string.h>

#include "tap.h"
#include "llm_sampler.h"


#define N      8
#define DRAWS  20000


static const float  base[N] = { 3.0f, 2.5f, 2.0f, 1.0f, 0.5f, 0.0f,
                                 -1.0f, -2.0f };


/* draws DRAWS tokens with fresh logits each time */
static void
histogram(llm_sampler_t *s, int *count)
{
    float  logits[N];

    memset(count, 0, N * sizeof(int));
    for (int i = 0; i < DRAWS; i++) {
        memcpy(logits, base, sizeof(logits));
        count[llm_sample(s, logits, NULL)]++;
    }
}


static void
softmax(const float *l, float *p, int n, float t)
{
    double  sum = 0;

    for (int i = 0; i < n; i++) {
        sum += exp((l[i] - l[0]) / t);
    }
    for (int i = 0; i < n; i++) {
        p[i] = (float) (exp((l[i] - l[0]) / t) / sum);
    }
}


static void
test_top_k(void)
{
    int            count[N], bad;
    float          p[N], mass;
    llm_err_t      err;
    llm_sampler_t  s;

    llm_sampler_init(&s, N, 1.0f, 1.0f, 11, &err);
    s.top_k = 3;
    histogram(&s, count);

    is_int(count[3] + count[4] + count[5] + count[6] + count[7], 0,
           "top_k 3: nothing outside the three most likely");

    /* within the three, frequencies follow the renormalized softmax */
    softmax(base, p, N, 1.0f);
    mass = p[0] + p[1] + p[2];
    bad = 0;
    for (int i = 0; i < 3; i++) {
        double  want = p[i] / mass, got = (double) count[i] / DRAWS;

        if (fabs(got - want) > 0.02) {
            diag("token %d: %.3f, want %.3f", i, got, want);
            bad++;
        }
    }
    is_int(bad, 0, "top_k 3: frequencies follow the renormalized softmax");

    s.top_k = 1;
    histogram(&s, count);
    is_int(count[0], DRAWS, "top_k 1 is greedy");

    llm_sampler_free(&s);
}


static void
test_min_p(void)
{
    int            count[N];
    float          p[N];
    llm_err_t      err;
    llm_sampler_t  s;

    /* p_max * 0.3: with these logits tokens 0..2 pass (e^-1 = 0.37),
     * token 3 does not (e^-2 = 0.14) */
    softmax(base, p, N, 1.0f);
    ok(p[2] >= 0.3f * p[0] && p[3] < 0.3f * p[0], "min_p setup");

    llm_sampler_init(&s, N, 1.0f, 1.0f, 5, &err);
    s.min_p = 0.3f;
    histogram(&s, count);
    is_int(count[3] + count[4] + count[5] + count[6] + count[7], 0,
           "min_p 0.3: nothing below 0.3 * p_max");
    ok(count[0] > 0 && count[1] > 0 && count[2] > 0,
       "min_p 0.3: all three above it appear");
    llm_sampler_free(&s);
}


static void
test_penalties(void)
{
    float          l[N];
    llm_err_t      err;
    llm_sampler_t  s;

    /* frequency: token 0 generated twice, 0.3 each: 3.0 - 0.6 = 2.4 < 2.5 */
    llm_sampler_init(&s, N, 0.0f, 1.0f, 1, &err);
    ok(llm_sampler_set_penalties(&s, 1.0f, 0.3f, 0.0f, &err) == LLM_OK,
       "set frequency penalty");
    llm_sampler_accept(&s, 0, 1);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 0, "one occurrence: 2.7 still wins");
    llm_sampler_accept(&s, 0, 1);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 1, "two occurrences: 2.4 loses to 2.5");
    llm_sampler_free(&s);

    /* presence: once, whatever the count */
    llm_sampler_init(&s, N, 0.0f, 1.0f, 1, &err);
    llm_sampler_set_penalties(&s, 1.0f, 0.0f, 0.6f, &err);
    llm_sampler_accept(&s, 0, 1);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 1, "presence 0.6: 2.4 loses to 2.5");
    llm_sampler_accept(&s, 1, 1);
    llm_sampler_accept(&s, 1, 1);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 0,
           "presence ignores the count: 2.4 beats 1.9");
    llm_sampler_free(&s);

    /* prompt tokens do not count for frequency/presence */
    llm_sampler_init(&s, N, 0.0f, 1.0f, 1, &err);
    llm_sampler_set_penalties(&s, 1.0f, 2.0f, 2.0f, &err);
    llm_sampler_accept(&s, 0, 0);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 0, "prompt tokens are not penalized");
    llm_sampler_free(&s);

    /* repetition: positive logits divided, negative multiplied, prompt
     * included: 3.0 / 1.3 = 2.31 < 2.5 */
    llm_sampler_init(&s, N, 0.0f, 1.0f, 1, &err);
    llm_sampler_set_penalties(&s, 1.3f, 0.0f, 0.0f, &err);
    llm_sampler_accept(&s, 0, 0);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, NULL), 1, "repetition 1.3 on a prompt token");
    llm_sampler_free(&s);

    {
        float  neg[3] = { -1.0f, -1.2f, -5.0f };

        /* -1.0 * 1.5 = -1.5 < -1.2 */
        llm_sampler_init(&s, 3, 0.0f, 1.0f, 1, &err);
        llm_sampler_set_penalties(&s, 1.5f, 0.0f, 0.0f, &err);
        llm_sampler_accept(&s, 0, 1);
        is_int(llm_sample(&s, neg, NULL), 1,
               "repetition multiplies a negative logit");
        llm_sampler_free(&s);
    }

    llm_sampler_init(&s, N, 0.0f, 1.0f, 1, &err);
    ok(llm_sampler_set_penalties(&s, 0.0f, 0.0f, 0.0f, &err) == LLM_ERR,
       "repetition 0 refused");
    ok(llm_sampler_set_penalties(&s, 1.0f, 2.5f, 0.0f, &err) == LLM_ERR,
       "frequency 2.5 refused");
    llm_sampler_free(&s);
}


static void
test_bias(void)
{
    int            count[N];
    float          l[N], lp;
    int32_t        ids[2] = { 0, 7 };
    float          bias[2] = { -100.0f, 100.0f };
    llm_err_t      err;
    llm_sampler_t  s;

    llm_sampler_init(&s, N, 1.0f, 1.0f, 9, &err);
    ok(llm_sampler_set_bias(&s, ids, bias, 2, &err) == LLM_OK, "set bias");
    histogram(&s, count);
    is_int(count[7], DRAWS, "+100 forces the token");
    llm_sampler_free(&s);

    bias[1] = 0.0f;
    llm_sampler_init(&s, N, 1.0f, 1.0f, 9, &err);
    llm_sampler_set_bias(&s, ids, bias, 2, &err);
    histogram(&s, count);
    is_int(count[0], 0, "-100 bans the most likely token");
    llm_sampler_free(&s);

    /* the logprob stays that of the model, bias or not */
    llm_sampler_init(&s, N, 0.0f, 1.0f, 9, &err);
    bias[0] = 0.0f;
    bias[1] = 100.0f;
    llm_sampler_set_bias(&s, ids, bias, 2, &err);
    memcpy(l, base, sizeof(l));
    is_int(llm_sample(&s, l, &lp), 7, "greedy with a forced token");
    {
        double  sum = 0;

        for (int i = 0; i < N; i++) {
            sum += exp(base[i]);
        }
        ok(fabs(lp - (base[7] - log(sum))) < 1e-5,
           "its logprob is the model's, not the biased one");
    }

    ids[0] = N;
    ok(llm_sampler_set_bias(&s, ids, bias, 1, &err) == LLM_ERR,
       "bias on a token outside the vocabulary refused");
    ids[0] = 1;
    bias[0] = 101.0f;
    ok(llm_sampler_set_bias(&s, ids, bias, 1, &err) == LLM_ERR,
       "bias over 100 refused");
    llm_sampler_free(&s);
}


static void
test_top(void)
{
    int            n, bad;
    float          l[300], lps[20];
    int32_t        ids[20];
    double         sum, lse;
    llm_err_t      err;
    llm_sampler_t  s;

    /* a permuted ramp: the order is known */
    for (int i = 0; i < 300; i++) {
        l[i] = (float) ((i * 7919) % 300) * 0.01f;
    }
    sum = 0;
    for (int i = 0; i < 300; i++) {
        sum += exp(l[i]);
    }
    lse = log(sum);

    llm_sampler_init(&s, 300, 1.0f, 1.0f, 1, &err);
    n = llm_sampler_top(&s, l, 20, ids, lps);
    is_int(n, 20, "twenty alternatives");

    bad = 0;
    for (int i = 0; i < n; i++) {
        if ((ids[i] * 7919) % 300 != 299 - i
            || fabs(lps[i] - (l[ids[i]] - lse)) > 1e-4)
        {
            bad++;
        }
    }
    is_int(bad, 0, "most likely first, with log-softmax values");

    {
        int32_t  all_ids[300];
        float    all_lps[300];

        is_int(llm_sampler_top(&s, l, 1000, all_ids, all_lps), 300,
               "no more than the vocabulary");
    }
    llm_sampler_free(&s);
}


static void
test_seeded(void)
{
    int            same = 1;
    float          l1[N], l2[N];
    int32_t        a, b;
    llm_err_t      err;
    llm_sampler_t  s1, s2;

    llm_sampler_init(&s1, N, 0.9f, 0.9f, 77, &err);
    llm_sampler_init(&s2, N, 0.9f, 0.9f, 77, &err);
    s1.top_k = s2.top_k = 5;
    s1.min_p = s2.min_p = 0.01f;
    llm_sampler_set_penalties(&s1, 1.1f, 0.2f, 0.1f, &err);
    llm_sampler_set_penalties(&s2, 1.1f, 0.2f, 0.1f, &err);

    for (int i = 0; i < 500; i++) {
        memcpy(l1, base, sizeof(l1));
        memcpy(l2, base, sizeof(l2));
        a = llm_sample(&s1, l1, NULL);
        b = llm_sample(&s2, l2, NULL);
        llm_sampler_accept(&s1, a, 1);
        llm_sampler_accept(&s2, b, 1);
        same &= a == b;
    }
    ok(same, "every parameter on: the same seed gives the same tokens");

    llm_sampler_free(&s1);
    llm_sampler_free(&s2);
}


int
main(void)
{
    test_top_k();
    test_min_p();
    test_penalties();
    test_bias();
    test_top();
    test_seeded();
    return done_testing();
}
