/*
 * Copyright (C) ngx_llm developers
 *
 * The sampler: argmax, reproducibility per seed, top-p, and sampling
 * frequencies against a softmax computed here independently.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "llm_sampler.h"


#define N_DRAWS  200000


static void test_init(void);
static void test_argmax(void);
static void test_seeds(void);
static void test_distribution(void);
static void test_top_p(void);
static void test_logprob(void);


int
main(void)
{
    test_init();
    test_argmax();
    test_seeds();
    test_distribution();
    test_top_p();
    test_logprob();

    return done_testing();
}


static void
test_init(void)
{
    llm_err_t      err = { 0 };
    llm_sampler_t  s;

    ok(llm_sampler_init(&s, 10, -1.0f, 1.0f, 1, &err) == LLM_ERR
       && err.err == LLM_EINVAL, "negative temperature refused: %s",
       err.errstr);
    ok(llm_sampler_init(&s, 10, NAN, 1.0f, 1, &err) == LLM_ERR,
       "NaN temperature refused");
    ok(llm_sampler_init(&s, 10, 1.0f, 0.0f, 1, &err) == LLM_ERR,
       "top_p 0 refused");
    ok(llm_sampler_init(&s, 10, 1.0f, 1.5f, 1, &err) == LLM_ERR,
       "top_p above 1 refused");
    ok(llm_sampler_init(&s, 0, 1.0f, 1.0f, 1, &err) == LLM_ERR,
       "empty vocabulary refused");

    ok(llm_sampler_init(&s, 10, 1.0f, 1.0f, 0, &err) == LLM_OK
       && s.rng != 0, "seed 0 gives a valid state");
    llm_sampler_free(&s);
}


static void
test_argmax(void)
{
    float          logits[6] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.9f, NAN };
    float          copy[6];
    llm_err_t      err = { 0 };
    llm_sampler_t  s;

    llm_sampler_init(&s, 6, 0.0f, 1.0f, 7, &err);
    memcpy(copy, logits, sizeof(logits));

    is_int(llm_sample(&s, logits, NULL), 1,
           "temperature 0: argmax, lowest index on ties, NaN ignored");
    ok(memcmp(copy, logits, sizeof(logits)) == 0, "logits left alone");

    for (int i = 0; i < 100; i++) {
        if (llm_sample(&s, logits, NULL) != 1) {
            ok(0, "argmax is stable");
            break;
        }

        if (i == 99) {
            ok(1, "argmax is stable over 100 draws");
        }
    }

    llm_sampler_free(&s);

    /* a tiny nucleus holds only the most likely token */
    logits[5] = 0.0f;
    llm_sampler_init(&s, 6, 1.0f, 1e-6f, 7, &err);

    for (int i = 0; i < 1000; i++) {
        if (llm_sample(&s, logits, NULL) != 1) {
            ok(0, "top_p 1e-6 always gives the argmax");
            break;
        }

        if (i == 999) {
            ok(1, "top_p 1e-6 always gives the argmax");
        }
    }

    llm_sampler_free(&s);
}


static void
fill_logits(float *x, int n, unsigned seed)
{
    srand(seed);

    for (int i = 0; i < n; i++) {
        x[i] = (float) rand() / (float) RAND_MAX * 8.0f - 4.0f;
    }
}


static void
test_seeds(void)
{
    int            same, differ, distinct, seen[256];
    float          logits[256];
    int32_t        a[200], b[200], c[200];
    llm_err_t      err = { 0 };
    llm_sampler_t  s1, s2, s3;

    fill_logits(logits, 256, 1);

    llm_sampler_init(&s1, 256, 0.8f, 0.95f, 42, &err);
    llm_sampler_init(&s2, 256, 0.8f, 0.95f, 42, &err);
    llm_sampler_init(&s3, 256, 0.8f, 0.95f, 43, &err);

    for (int i = 0; i < 200; i++) {
        a[i] = llm_sample(&s1, logits, NULL);
        b[i] = llm_sample(&s2, logits, NULL);
        c[i] = llm_sample(&s3, logits, NULL);
    }

    same = memcmp(a, b, sizeof(a)) == 0;
    differ = 0;
    for (int i = 0; i < 200; i++) {
        differ += a[i] != c[i];
    }

    ok(same, "same seed, same 200 tokens");
    ok(differ > 100, "a different seed differs (%d of 200 tokens)", differ);

    llm_sampler_free(&s1);
    llm_sampler_free(&s2);
    llm_sampler_free(&s3);

    /* seed 0 samples as well as any other */
    llm_sampler_init(&s1, 256, 1.0f, 1.0f, 0, &err);
    memset(seen, 0, sizeof(seen));
    distinct = 0;

    for (int i = 0; i < 200; i++) {
        int32_t  id = llm_sample(&s1, logits, NULL);

        distinct += seen[id] == 0;
        seen[id] = 1;
    }

    ok(distinct > 30, "seed 0: %d distinct tokens in 200 draws", distinct);
    llm_sampler_free(&s1);
}


/* frequencies of many draws against softmax(logits / T) in double */
static void
test_distribution(void)
{
    int            count[8];
    float          logits[8] = { 1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 2.5f, 0.0f,
                                 1.5f };
    double         p[8], sum, worst, t;
    llm_err_t      err = { 0 };
    llm_sampler_t  s;

    t = 0.7;
    sum = 0.0;
    for (int i = 0; i < 8; i++) {
        p[i] = exp(logits[i] / t);
        sum += p[i];
    }

    for (int i = 0; i < 8; i++) {
        p[i] /= sum;
    }

    llm_sampler_init(&s, 8, (float) t, 1.0f, 12345, &err);
    memset(count, 0, sizeof(count));

    for (int i = 0; i < N_DRAWS; i++) {
        count[llm_sample(&s, logits, NULL)]++;
    }

    worst = 0.0;
    for (int i = 0; i < 8; i++) {
        double  d = fabs((double) count[i] / N_DRAWS - p[i]);

        if (d > worst) {
            worst = d;
        }
    }

    /* the standard error of each share is below 0.0012 */
    ok(worst < 0.005, "temperature 0.7: frequencies within %.4f of the "
       "softmax", worst);

    llm_sampler_free(&s);
}


static void
test_top_p(void)
{
    int            count[4];
    float          logits[4];
    double         p[4] = { 0.5, 0.3, 0.15, 0.05 };
    llm_err_t      err = { 0 };
    llm_sampler_t  s;

    for (int i = 0; i < 4; i++) {
        logits[i] = (float) log(p[i]);
    }

    /* 0.5 < 0.75 <= 0.5 + 0.3: the nucleus is the first two tokens */
    llm_sampler_init(&s, 4, 1.0f, 0.75f, 99, &err);
    memset(count, 0, sizeof(count));

    for (int i = 0; i < N_DRAWS; i++) {
        count[llm_sample(&s, logits, NULL)]++;
    }

    ok(count[2] == 0 && count[3] == 0, "top_p 0.75: tokens outside the "
       "nucleus never drawn");
    ok(fabs((double) count[0] / N_DRAWS - 0.625) < 0.005,
       "and the nucleus renormalized: %.4f for 0.625",
       (double) count[0] / N_DRAWS);

    llm_sampler_free(&s);
}


static void
test_logprob(void)
{
    int            bad;
    float          logits[256], lp;
    double         sum, max, want;
    int32_t        id;
    llm_err_t      err = { 0 };
    llm_sampler_t  s;

    fill_logits(logits, 256, 5);

    max = logits[0];
    for (int i = 1; i < 256; i++) {
        max = logits[i] > max ? logits[i] : max;
    }

    sum = 0.0;
    for (int i = 0; i < 256; i++) {
        sum += exp(logits[i] - max);
    }

    /* whatever temperature and top_p pick, the logprob is the model's */
    llm_sampler_init(&s, 256, 0.3f, 0.5f, 3, &err);
    bad = 0;

    for (int i = 0; i < 100; i++) {
        id = llm_sample(&s, logits, &lp);
        want = logits[id] - max - log(sum);
        bad += fabs(lp - want) > 1e-4;
    }

    is_int(bad, 0, "logprob is log softmax at temperature 1, untruncated");
    llm_sampler_free(&s);

    llm_sampler_init(&s, 256, 0.0f, 1.0f, 3, &err);
    id = llm_sample(&s, logits, &lp);
    ok(fabs(lp - (logits[id] - max - log(sum))) < 1e-4 && lp < 0.0f,
       "and at temperature 0");
    llm_sampler_free(&s);
}
