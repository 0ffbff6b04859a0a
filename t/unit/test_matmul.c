/*
 * Copyright (C) ngx_llm developers
 *
 * llm_matmul() at every instruction-set level this CPU runs, for every
 * weight type and several token counts, against the reference
 * dequantizer and a dot product in double precision.  The tolerance of
 * each output is what rounding the input to the type's activation
 * format can cost (sum over i of |w_i| times the largest error of x_i),
 * plus a little float summation error; the thread pool is checked on
 * its own first.  Three shapes: 37 rows of 512; 5 rows of 2304, whose
 * columns the many-token path takes in blocks of 1024, 1024 and 256;
 * 3 rows of 800, an odd number of 32-blocks (not for the k-quants).
 */

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "llm_gguf.h"
#include "llm_quant.h"
#include "llm_threads.h"


#define MAX_ROWS  37
#define MAX_COLS  2304
#define MAX_TOK   64


typedef struct {
    _Atomic int  *hits;
    _Atomic int   bad_thread;
    int           n_threads;
    int           nested;
} pool_job_t;


static uint64_t  rng = 0x9e3779b97f4a7c15ULL;


static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}


static float
uniform(void)
{
    return (float) ((double) (next() >> 11) / 9007199254740992.0);
}


static void
count_task(void *arg, int64_t task, int thread)
{
    pool_job_t  *job = arg;

    if (thread < 0 || thread >= job->n_threads) {
        atomic_store(&job->bad_thread, 1);
    }

    if (job->nested) {
        pool_job_t  inner = *job;

        inner.nested = 0;
        inner.hits = job->hits + 1000 * (task + 1);
        llm_threads_run(count_task, &inner, 10);
    }

    atomic_fetch_add(&job->hits[task], 1);
}


static void
test_pool(void)
{
    static _Atomic int  hits[20000];
    int                 n, bad;
    pool_job_t          job;

    for (n = 1; n <= 5; n += 2) {
        ok(llm_threads_init(n, NULL) == LLM_OK
           && llm_threads_count() == n, "pool of %d threads", n);

        memset(&job, 0, sizeof(job));
        job.hits = hits;
        job.n_threads = n;

        for (int round = 0; round < 200; round++) {
            int64_t  tasks = round % 37;

            memset(hits, 0, sizeof(hits));
            llm_threads_run(count_task, &job, tasks);

            for (int64_t i = 0; i < 1000; i++) {
                if (hits[i] != (i < tasks)) {
                    ok(0, "round %d, task %lld ran %d times", round,
                       (long long) i, hits[i]);
                    return;
                }
            }
        }

        ok(!atomic_load(&job.bad_thread),
           "%d threads: 200 jobs, each task run once", n);

        memset(hits, 0, sizeof(hits));
        job.nested = 1;
        llm_threads_run(count_task, &job, 8);

        bad = 0;
        for (int64_t i = 0; i < 8; i++) {
            bad += hits[i] != 1;
            for (int j = 0; j < 10; j++) {
                bad += hits[1000 * (i + 1) + j] != 1;
            }
        }

        is_int(bad, 0, "%d threads: jobs started inside tasks run inline",
               n);
    }
}


/* random rows of a type, with scales in a sane range */
static void
fill_weights(uint32_t type, uint8_t *w, size_t row_bytes, int rows)
{
    float     f;
    size_t    bs, scale_at[2];
    int       n_scales;
    uint16_t  h;

    for (size_t i = 0; i < row_bytes * rows; i++) {
        w[i] = (uint8_t) next();
    }

    switch (type) {
    case LLM_TYPE_F32:
        for (size_t i = 0; i < row_bytes * rows; i += 4) {
            f = uniform() * 2.0f - 1.0f;
            memcpy(w + i, &f, 4);
        }
        return;

    case LLM_TYPE_F16:
    case LLM_TYPE_BF16:
        for (size_t i = 0; i < row_bytes * rows; i += 2) {
            f = uniform() * 2.0f - 1.0f;
            h = type == LLM_TYPE_F16 ? llm_fp32_to_fp16(f)
                                     : llm_fp32_to_bf16(f);
            memcpy(w + i, &h, 2);
        }
        return;

    case LLM_TYPE_Q8_0:
        bs = 34; n_scales = 1; scale_at[0] = 0;
        break;
    case LLM_TYPE_Q4_0:
        bs = 18; n_scales = 1; scale_at[0] = 0;
        break;
    case LLM_TYPE_Q4_K:
        bs = 144; n_scales = 2; scale_at[0] = 0; scale_at[1] = 2;
        break;
    case LLM_TYPE_Q5_K:
        bs = 176; n_scales = 2; scale_at[0] = 0; scale_at[1] = 2;
        break;
    default:
        bs = 210; n_scales = 1; scale_at[0] = 208;
        break;
    }

    for (size_t b = 0; b < row_bytes * rows; b += bs) {
        for (int i = 0; i < n_scales; i++) {
            h = llm_fp32_to_fp16(0.001f + 0.02f * uniform());
            memcpy(w + b + scale_at[i], &h, 2);
        }
    }
}


/* the largest error rounding x[i] to the activation format can make */
static void
input_error(uint32_t type, const float *x, double *e, int n)
{
    int     bs;
    double  amax;

    switch (type) {
    case LLM_TYPE_F32:
        for (int i = 0; i < n; i++) {
            e[i] = 0.0;
        }
        return;
    case LLM_TYPE_F16:
        for (int i = 0; i < n; i++) {
            e[i] = fabs(x[i]) * ldexp(1.0, -11) + ldexp(1.0, -25);
        }
        return;
    case LLM_TYPE_BF16:
        for (int i = 0; i < n; i++) {
            e[i] = fabs(x[i]) * ldexp(1.0, -8);
        }
        return;
    case LLM_TYPE_Q8_0:
    case LLM_TYPE_Q4_0:
        bs = 32;
        break;
    default:
        bs = 256;
        break;
    }

    for (int b = 0; b < n; b += bs) {
        amax = 0.0;
        for (int i = b; i < b + bs; i++) {
            amax = fmax(amax, fabs(x[i]));
        }
        for (int i = b; i < b + bs; i++) {
            e[i] = amax / 127.0 * 0.5 * 1.0001;
        }
    }
}


int
main(void)
{
    static const uint32_t  types[] = {
        LLM_TYPE_F32, LLM_TYPE_F16, LLM_TYPE_BF16, LLM_TYPE_Q8_0,
        LLM_TYPE_Q4_0, LLM_TYPE_Q4_K, LLM_TYPE_Q5_K, LLM_TYPE_Q6_K
    };
    static const int       toks[] = { 1, 2, 3, 7, 64 };
    static const int       shapes[][2] = { { 37, 512 }, { 5, 2304 },
                                           { 3, 800 } };
    static float           x[MAX_TOK * MAX_COLS], out[MAX_TOK * MAX_ROWS];
    static float           deq[MAX_ROWS * MAX_COLS];
    static double          ref[MAX_TOK * MAX_ROWS], tol[MAX_TOK * MAX_ROWS];
    static double          err[MAX_COLS];
    static uint8_t         w[MAX_ROWS * MAX_COLS * 4];
    int                    best, bad, n_rows, n_cols;
    double                 worst, sa, se;
    size_t                 row_bytes;

    llm_quant_init();
    test_pool();

    /* activations of llama's typical spread, with a few outliers */
    for (int i = 0; i < MAX_TOK * MAX_COLS; i++) {
        x[i] = (uniform() * 2.0f - 1.0f) * (next() % 97 == 0 ? 20.0f : 1.0f);
    }

    best = llm_quant_best_level();
    diag("this CPU runs up to %s", llm_quant_level_name(best));

    ok(llm_quant_force(LLM_CPU_NLEVELS) == LLM_ERR
       && llm_quant_force(-1) == LLM_ERR, "unknown levels are refused");

    ok(llm_matmul_reserve(MAX_TOK, MAX_COLS, NULL) == LLM_OK,
       "the scratch is reserved");

    for (size_t si = 0; si < 3; si++)
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        uint32_t  type = types[ti];

        n_rows = shapes[si][0];
        n_cols = shapes[si][1];

        if (n_cols % (int) llm_ggml_blck_size(type) != 0) {
            continue;
        }

        row_bytes = llm_ggml_row_size(type, n_cols);
        fill_weights(type, w, row_bytes, n_rows);

        for (int r = 0; r < n_rows; r++) {
            (void) llm_dequant_row(type, w + r * row_bytes,
                                   deq + r * n_cols, n_cols);
        }

        for (int t = 0; t < MAX_TOK; t++) {
            input_error(type, x + t * n_cols, err, n_cols);

            for (int r = 0; r < n_rows; r++) {
                double  s = 0.0;

                sa = 0.0;
                se = 0.0;

                for (int i = 0; i < n_cols; i++) {
                    double  wi = deq[r * n_cols + i];

                    s += wi * x[t * n_cols + i];
                    sa += fabs(wi * x[t * n_cols + i]);
                    se += fabs(wi) * err[i];
                }

                ref[t * n_rows + r] = s;
                tol[t * n_rows + r] = se * 1.001 + 2e-6 * sa + 1e-6;
            }
        }

        for (int level = 0; level <= best; level++) {
            ok(llm_quant_force(level) == LLM_OK && llm_quant_level() == level,
               "%s kernels", llm_quant_level_name(level));

            for (size_t k = 0; k < sizeof(toks) / sizeof(toks[0]); k++) {
                int  n_tok = toks[k];

                for (int i = 0; i < n_tok * n_rows; i++) {
                    out[i] = NAN;
                }

                llm_matmul(out, x, n_tok, w, type, n_rows, n_cols);

                bad = 0;
                worst = 0.0;

                for (int i = 0; i < n_tok * n_rows; i++) {
                    double  d = fabs(out[i] - ref[i]);

                    if (!(d <= tol[i])) {
                        if (bad++ < 3) {
                            diag("token %d row %d: %g, want %g +- %g",
                                 i / n_rows, i % n_rows, out[i], ref[i],
                                 tol[i]);
                        }
                    }

                    if (d / tol[i] > worst) {
                        worst = d / tol[i];
                    }
                }

                ok(bad == 0, "%s %s, %d token%s: %d rows of %d within the "
                   "tolerance (worst at %.2f of it)",
                   llm_quant_level_name(level), llm_ggml_type_name(type),
                   n_tok, n_tok == 1 ? "" : "s", n_rows, n_cols, worst);
            }
        }
    }

    memset(out, 0x7f, sizeof(out));
    llm_matmul(out, x, 2, w, LLM_TYPE_Q4_1, 3, 512);
    ok(out[0] == 0.0f && out[5] == 0.0f && out[6] != 0.0f,
       "an unsupported type gives zeros");

    llm_threads_free();

    return done_testing();
}
