/*
 * Copyright (C) ngx_llm developers
 *
 * The sampler: argmax, reproducibility per seed, top-p, and sampling
 * frequencies against a softmax computed here independently.  Then the
 * draw against llm_sample_twin (llm_backend.h's reference, the rule of
 * the backends' sample hooks): llm_sample_fast on rows of every shape,
 * llm_sample() on plain logits, and llm_sample() with logit_bias and
 * penalties against the twin on logits adjusted here.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "xorshift.h"
#include "llm_backend.h"
#include "llm_sampler.h"


#define N_DRAWS  200000


static void test_init(void);
static void test_argmax(void);
static void test_seeds(void);
static void test_distribution(void);
static void test_top_p(void);
static void test_logprob(void);
static void test_fast_twin(void);
static void test_host_twin(void);
static void test_adjusted_twin(void);
static void test_plain(void);


int
main(void)
{
    test_init();
    test_argmax();
    test_seeds();
    test_distribution();
    test_top_p();
    test_logprob();
    test_fast_twin();
    test_host_twin();
    test_adjusted_twin();
    test_plain();

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
       && s.seed == 0 && s.counter == 0, "seed 0 accepted, nothing drawn");
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

    /* a tiny nucleus holds only the most likely token, or the tokens
     * tied for it (the draw of llm_backend.h keeps ties) */
    logits[5] = 0.0f;
    llm_sampler_init(&s, 6, 1.0f, 1e-6f, 7, &err);

    {
        int  count[6] = { 0 };

        for (int i = 0; i < 1000; i++) {
            count[llm_sample(&s, logits, NULL)]++;
        }

        ok(count[1] + count[3] == 1000 && count[1] > 400 && count[3] > 400,
           "top_p 1e-6: only the two tied for the largest, evenly (%d, %d)",
           count[1], count[3]);
    }

    llm_sampler_free(&s);

    logits[3] = 2.99f;
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


/* the tests' own generator: xorshift32 */
static uint32_t  rnd_state = 2463534242u;

static uint32_t
rnd(void)
{
    return xorshift32(&rnd_state);
}


static float
rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float) (rnd() >> 8) * (1.0f / 16777216.0f);
}


/* a row of logits of one of several shapes, the awkward ones included */
static void
fill_row(float *x, int n, int kind)
{
    for (int i = 0; i < n; i++) {
        switch (kind) {

        case 0:                 /* flat */
            x[i] = rnd_uniform(-4.0f, 4.0f);
            break;

        case 1:                 /* peaked, like a trained model's */
            x[i] = -3.0f * logf(1.0f + (float) (rnd() % (uint32_t) n))
                   + rnd_uniform(-1.0f, 1.0f);
            break;

        case 2:                 /* few distinct values: ties everywhere */
            x[i] = (float) (int) rnd_uniform(-3.0f, 3.0f) * 0.5f;
            break;

        case 3:                 /* mostly masked */
            x[i] = rnd() % 8 == 0 ? rnd_uniform(-2.0f, 2.0f) : -INFINITY;
            break;

        case 4:                 /* all equal */
            x[i] = 1.25f;
            break;

        case 5:                 /* zeros of both signs, the largest */
            x[i] = rnd() % 3 == 0 ? (rnd() % 2 ? 0.0f : -0.0f)
                                  : rnd_uniform(-5.0f, -0.1f);
            break;

        case 6:                 /* a NaN here and there */
            x[i] = rnd() % 50 == 0 ? NAN : rnd_uniform(-4.0f, 4.0f);
            break;

        case 7:                 /* an infinity */
            x[i] = rnd() % 100 == 0 ? INFINITY : rnd_uniform(-4.0f, 4.0f);
            break;

        case 8:                 /* huge magnitudes */
            x[i] = rnd_uniform(-1.0f, 1.0f) * 1e30f;
            break;

        default:                /* tiny differences: rounding decides */
            x[i] = 10.0f + (float) (rnd() % 64) * 1e-6f;
            break;
        }
    }
}


static void
rnd_params(llm_sample_params_t *p, int n)
{
    static const float    temps[] = { 0.0f, 0.05f, 0.5f, 0.8f, 1.0f, 1.7f };
    static const float    top_ps[] = { 1.0f, 1.0f, 0.999f, 0.95f, 0.9f,
                                       0.5f, 0.05f, 1e-6f };
    static const float    min_ps[] = { 0.0f, 0.0f, 0.01f, 0.1f, 0.5f,
                                       1.0f };
    const int32_t         top_ks[] = { 0, 0, 1, 2, 5, 40, n - 1, n, n + 3 };

    p->temperature = temps[rnd() % 6];
    p->top_k = top_ks[rnd() % 9];
    p->top_p = top_ps[rnd() % 8];
    p->min_p = min_ps[rnd() % 6];
    p->seed = ((uint64_t) rnd() << 32) | rnd();
    p->counter = rnd() % 1000;
}


/* llm_sample_fast is the twin, token for token, on rows of every shape
 * and size under every kind of parameter */
static void
test_fast_twin(void)
{
    int                   n, bad, runs, cases, kinds[10];
    float                *x;
    void                 *scratch;
    int32_t               a, b;
    llm_sample_params_t   p, greedy;
    static const int      sizes[] = { 1, 2, 3, 17, 100, 512, 1500 };

    x = malloc(32000 * sizeof(float));
    scratch = malloc(LLM_SAMPLE_SCRATCH(32000));
    bad = 0;
    cases = 0;
    memset(kinds, 0, sizeof(kinds));
    memset(&greedy, 0, sizeof(greedy));
    greedy.top_p = 1.0f;

    for (runs = 0; runs < 30000; runs++) {
        n = runs % 500 == 0 ? 32000 : sizes[rnd() % 7];
        fill_row(x, n, runs % 10);
        rnd_params(&p, n);

        a = llm_sample_fast(x, n, &p, scratch);
        b = llm_sample_twin(x, n, &p);
        cases++;

        if (a != b && bad++ < 5) {
            diag("row kind %d, n %d, t %g, k %d, p %g, min_p %g: %d, the "
                 "twin %d", runs % 10, n, p.temperature, p.top_k, p.top_p,
                 p.min_p, a, b);
        }

        /* draws that did not fall to the largest: the thresholds were
         * exercised */
        kinds[runs % 10] += b != llm_sample_twin(x, n, &greedy);
    }

    is_int(bad, 0, "llm_sample_fast draws the twin's token in %d cases",
           cases);
    ok(kinds[0] > 300 && kinds[1] > 100 && kinds[2] > 300
       && kinds[9] > 300, "many of them not the largest (%d %d %d %d)",
       kinds[0], kinds[1], kinds[2], kinds[9]);

    free(x);
    free(scratch);
}


/* llm_sample() on plain logits, draw after draw: the twin under the
 * same seed and the count of tokens drawn so far */
static void
test_host_twin(void)
{
    int                   n, bad, cases, counted;
    float                 x[512], copy[512];
    int32_t               a, b;
    llm_err_t             err = { 0 };
    llm_sampler_t         s;
    llm_sample_params_t   p;

    bad = 0;
    cases = 0;
    counted = 0;

    for (int run = 0; run < 300; run++) {
        n = run % 3 == 0 ? 512 : 1 + (int) (rnd() % 300);
        rnd_params(&p, n);
        p.temperature = run % 20 == 0 ? 0.0f : rnd_uniform(0.01f, 2.0f);
        p.top_p = p.top_p > 0.0f ? p.top_p : 1.0f;

        if (llm_sampler_init(&s, n, p.temperature, p.top_p, p.seed, &err)
            != LLM_OK)
        {
            ok(0, "init: %s", err.errstr);
            return;
        }
        s.top_k = p.top_k;
        s.min_p = p.min_p;

        for (int i = 0; i < 40; i++) {
            fill_row(x, n, i % 3 == 0 ? 1 : (i % 3 == 1 ? 0 : 2));
            memcpy(copy, x, (size_t) n * sizeof(float));

            p.counter = (uint64_t) i;
            b = llm_sample_twin(x, n, &p);
            a = llm_sample(&s, copy, NULL);
            cases++;

            if (a != b && bad++ < 5) {
                diag("n %d, t %g, k %d, p %g, min_p %g, draw %d: %d, the "
                     "twin %d", n, p.temperature, p.top_k, p.top_p,
                     p.min_p, i, a, b);
            }
        }

        counted += s.counter == 40;
        llm_sampler_free(&s);
    }

    is_int(bad, 0, "llm_sample() on plain logits is the twin with the "
           "same seed and counter (%d draws)", cases);
    is_int(counted, 300, "each sampler counted its forty draws");
}


/* the adjusted logits, from the definitions of llm_sampler.h: bias, then
 * for every token of the prompt or the output the repetition penalty
 * (positive logits divided, others multiplied), then for every token of
 * the output count * frequency + presence subtracted */
static void
adjust(float *x, int n, const int32_t *ids, const float *bias, int n_bias,
    const uint8_t *seen, const uint32_t *counts, float rep, float freq,
    float pres)
{
    for (int i = 0; i < n_bias; i++) {
        x[ids[i]] += bias[i];
    }

    for (int i = 0; i < n; i++) {
        float  v = x[i];

        if (!seen[i]) {
            continue;
        }
        if (rep != 1.0f) {
            v = v > 0.0f ? v / rep : v * rep;
        }
        if (counts[i]) {
            v -= (float) counts[i] * freq + pres;
        }
        x[i] = v;
    }
}


static void
test_adjusted_twin(void)
{
    int                   n, bad, cases, n_bias, moved;
    float                 raw[512];
    float                 x[512], copy[512], bias[16], rep, freq, pres;
    int32_t               a, b, ids[16];
    uint8_t               seen[512];
    uint32_t              counts[512];
    llm_err_t             err = { 0 };
    llm_sampler_t         s;
    llm_sample_params_t   p;

    bad = 0;
    cases = 0;
    moved = 0;

    for (int run = 0; run < 200; run++) {
        n = 64 + (int) (rnd() % 449);
        rnd_params(&p, n);
        p.temperature = run % 10 == 0 ? 0.0f : rnd_uniform(0.2f, 1.5f);
        p.top_p = run % 2 ? 1.0f : rnd_uniform(0.3f, 1.0f);

        n_bias = (int) (rnd() % 17);
        for (int i = 0; i < n_bias; i++) {
            ids[i] = (int32_t) (rnd() % (uint32_t) n);
            bias[i] = rnd_uniform(-5.0f, 5.0f);
            for (int j = 0; j < i; j++) {
                if (ids[j] == ids[i]) {
                    ids[i] = (ids[i] + 1) % n;   /* distinct, mostly */
                }
            }
        }

        rep = run % 3 == 0 ? 1.0f : rnd_uniform(0.8f, 1.6f);
        freq = run % 4 == 0 ? 0.0f : rnd_uniform(-1.0f, 1.5f);
        pres = run % 5 == 0 ? 0.0f : rnd_uniform(-1.0f, 1.5f);

        llm_sampler_init(&s, n, p.temperature, p.top_p, p.seed, &err);
        s.top_k = p.top_k;
        s.min_p = p.min_p;
        if (llm_sampler_set_bias(&s, ids, bias, n_bias, &err) != LLM_OK
            || llm_sampler_set_penalties(&s, rep, freq, pres, &err)
               != LLM_OK)
        {
            ok(0, "bias and penalties: %s", err.errstr);
            llm_sampler_free(&s);
            return;
        }

        memset(seen, 0, sizeof(seen));
        memset(counts, 0, sizeof(counts));

        /* a prompt */
        for (int i = 0; i < 20; i++) {
            int32_t  t = (int32_t) (rnd() % (uint32_t) n);

            llm_sampler_accept(&s, t, 0);
            seen[t] = 1;
        }

        for (int i = 0; i < 30; i++) {
            fill_row(x, n, i % 2);
            memcpy(copy, x, (size_t) n * sizeof(float));
            memcpy(raw, x, (size_t) n * sizeof(float));

            a = llm_sample(&s, copy, NULL);

            adjust(x, n, ids, bias, n_bias, seen, counts, rep, freq, pres);
            p.counter = (uint64_t) i;
            b = llm_sample_twin(x, n, &p);
            cases++;

            /* where the adjustments decide the token */
            moved += b != llm_sample_twin(raw, n, &p);

            if (a != b && bad++ < 5) {
                diag("run %d draw %d (%d biases, rep %g freq %g pres %g, "
                     "t %g k %d p %g min_p %g): %d, the twin %d", run, i,
                     n_bias, rep, freq, pres, p.temperature, p.top_k,
                     p.top_p, p.min_p, a, b);
            }

            llm_sampler_accept(&s, a, 1);
            seen[a] = 1;
            counts[a]++;
        }

        llm_sampler_free(&s);
    }

    is_int(bad, 0, "with logit_bias and penalties: the twin on the logits "
           "adjusted here (%d draws)", cases);
    ok(moved > cases / 10, "where the adjustments changed the token in %d",
       moved);
}


static void
test_plain(void)
{
    int32_t               id = 3;
    float                 bias = 1.0f;
    llm_err_t             err = { 0 };
    llm_sampler_t         s;
    llm_sample_params_t   p;

    llm_sampler_init(&s, 10, 0.7f, 0.9f, 1234, &err);
    s.top_k = 4;
    s.min_p = 0.05f;
    ok(llm_sampler_plain(&s), "a fresh sampler is plain");

    llm_sampler_drawn(&s);
    llm_sampler_drawn(&s);
    llm_sampler_params(&s, &p);
    ok(p.temperature == 0.7f && p.top_p == 0.9f && p.top_k == 4
       && p.min_p == 0.05f && p.seed == 1234 && p.counter == 2,
       "its parameters, counting tokens drawn elsewhere");

    llm_sampler_set_penalties(&s, 1.0f, 0.0f, 0.0f, &err);
    ok(llm_sampler_plain(&s), "neutral penalties keep it plain");
    llm_sampler_set_penalties(&s, 1.0f, 0.0f, 0.5f, &err);
    ok(!llm_sampler_plain(&s), "a presence penalty does not");
    llm_sampler_set_penalties(&s, 1.0f, 0.0f, 0.0f, &err);
    ok(llm_sampler_plain(&s), "set back to neutral, plain again");
    llm_sampler_set_bias(&s, &id, &bias, 1, &err);
    ok(!llm_sampler_plain(&s), "a logit_bias is not plain");
    llm_sampler_free(&s);
}
