/*
 * Copyright (C) ngx_llm developers
 *
 * llm_matmul() at every instruction-set level this CPU runs, for every
 * weight type and several token counts, against the reference
 * dequantizer and a dot product in double precision.  The tolerance of
 * each output is what rounding the input to the type's activation
 * format can cost (sum over i of |w_i| times the largest error of x_i),
 * plus a little float summation error; the thread pool is checked on
 * its own first.  Three shapes: 37 rows of 512; 5 rows of 2304; 3 rows
 * of 800, an odd number of 32-blocks (not for the k-quants).
 *
 * Then batch invariance: for every type, level and pool size, shapes
 * whose rows and columns are no multiples of the kernels' tiles (172
 * columns of f32, as the shipped model's FFN has), and 1 to 17 tokens,
 * each token's outputs must be bit for bit those it gets alone: the
 * scheduler batches requests, and that must not change what they
 * generate.
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

#define INV_TOK   17
#define INV_ROWS  200
#define INV_COLS  800


typedef struct {
    _Atomic int  *hits;
    _Atomic int   bad_thread;
    int           n_threads;
    int           nested;
} pool_job_t;


typedef struct {
    const void  *w;
    uint32_t     type;
    const float  *x;
    float       *out;
    int          n_rows;
    int          n_cols;
} matmul_job_t;


static uint64_t  rng = 0x9e3779b97f4a7c15ULL;

static const uint32_t  types[] = {
    LLM_TYPE_F32, LLM_TYPE_F16, LLM_TYPE_BF16, LLM_TYPE_Q8_0,
    LLM_TYPE_Q4_0, LLM_TYPE_Q4_K, LLM_TYPE_Q5_K, LLM_TYPE_Q6_K
};

#define N_TYPES  (sizeof(types) / sizeof(types[0]))


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


/*
 * ref and tol (n_tok, n_rows): the dot products in double precision of
 * the reference dequantizer's weights with the f32 input, and how far
 * llm_matmul may be from them
 */
static void
reference(uint32_t type, const uint8_t *w, int n_rows, int n_cols,
    const float *x, int n_tok, float *deq, double *err, double *ref,
    double *tol)
{
    double  s, sa, se, wi;
    size_t  row_bytes;

    row_bytes = llm_ggml_row_size(type, n_cols);

    for (int r = 0; r < n_rows; r++) {
        (void) llm_dequant_row(type, w + r * row_bytes, deq + r * n_cols,
                               n_cols);
    }

    for (int t = 0; t < n_tok; t++) {
        input_error(type, x + t * n_cols, err, n_cols);

        for (int r = 0; r < n_rows; r++) {
            s = 0.0;
            sa = 0.0;
            se = 0.0;

            for (int i = 0; i < n_cols; i++) {
                wi = deq[r * n_cols + i];
                s += wi * x[t * n_cols + i];
                sa += fabs(wi * x[t * n_cols + i]);
                se += fabs(wi) * err[i];
            }

            ref[t * n_rows + r] = s;
            tol[t * n_rows + r] = se * 1.001 + 2e-6 * sa + 1e-6;
        }
    }
}


/* outputs outside the tolerance, the first few told */
static int
check_ref(const float *out, const double *ref, const double *tol, int n_tok,
    int n_rows, double *worst)
{
    int     bad;
    double  d;

    bad = 0;
    *worst = 0.0;

    for (int i = 0; i < n_tok * n_rows; i++) {
        d = fabs(out[i] - ref[i]);

        if (!(d <= tol[i])) {
            if (bad++ < 3) {
                diag("token %d row %d: %g, want %g +- %g", i / n_rows,
                     i % n_rows, out[i], ref[i], tol[i]);
            }
        }

        if (d / tol[i] > *worst) {
            *worst = d / tol[i];
        }
    }

    return bad;
}


static void
matmul_task(void *arg, int64_t task, int thread)
{
    matmul_job_t  *job = arg;

    (void) thread;

    llm_matmul(job->out + task * job->n_rows, job->x + task * job->n_cols,
               1, job->w, job->type, job->n_rows, job->n_cols);
}


static void
test_invariance(int best)
{
    static const int    cols_f[] = { 1, 7, 172, 257 };
    static const int    cols_q[] = { 32, 64, 800 };
    static const int    cols_k[] = { 256, 768 };
    static const int    rows[] = { 3, 37, INV_ROWS };
    static const int    threads[] = { 1, 2, 3 };
    static float        x[INV_TOK * INV_COLS];
    static float        batch[INV_TOK * INV_ROWS], alone[INV_TOK * INV_ROWS];
    static float        deq[INV_ROWS * INV_COLS];
    static double       ref[INV_TOK * INV_ROWS], tol[INV_TOK * INV_ROWS];
    static double       err[INV_COLS];
    static uint8_t      w[INV_ROWS * INV_COLS * 4];
    int                 n_cols, n_rows, n_shapes, bad_inv, bad_ref, n_bad;
    double              worst, wt;
    size_t              row_bytes;
    const int          *cols;
    matmul_job_t        job;

    for (int i = 0; i < INV_TOK * INV_COLS; i++) {
        x[i] = (uniform() * 2.0f - 1.0f) * (next() % 97 == 0 ? 20.0f : 1.0f);
    }

    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t  type = types[ti];

        switch (llm_ggml_blck_size(type)) {
        case 1:
            cols = cols_f;
            n_shapes = sizeof(cols_f) / sizeof(cols_f[0]);
            break;
        case 32:
            cols = cols_q;
            n_shapes = sizeof(cols_q) / sizeof(cols_q[0]);
            break;
        default:
            cols = cols_k;
            n_shapes = sizeof(cols_k) / sizeof(cols_k[0]);
            break;
        }

        for (int ci = 0; ci < n_shapes; ci++)
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
            n_cols = cols[ci];
            n_rows = rows[ri];
            row_bytes = llm_ggml_row_size(type, n_cols);

            fill_weights(type, w, row_bytes, n_rows);
            reference(type, w, n_rows, n_cols, x, INV_TOK, deq, err, ref,
                      tol);

            for (int level = 0; level <= best; level++)
            for (size_t pi = 0; pi < sizeof(threads) / sizeof(threads[0]);
                 pi++)
            {
                (void) llm_quant_force(level);
                (void) llm_threads_init(threads[pi], NULL);

                bad_inv = 0;
                bad_ref = 0;
                wt = 0.0;

                /* alone: one call per token */
                for (int t = 0; t < INV_TOK; t++) {
                    llm_matmul(alone + t * n_rows, x + t * n_cols, 1, w,
                               type, n_rows, n_cols);
                }

                for (int n_tok = 1; n_tok <= INV_TOK; n_tok++) {
                    for (int i = 0; i < n_tok * n_rows; i++) {
                        batch[i] = NAN;
                    }

                    llm_matmul(batch, x, n_tok, w, type, n_rows, n_cols);

                    if (memcmp(batch, alone,
                               (size_t) (n_tok * n_rows) * sizeof(float))
                        != 0)
                    {
                        if (bad_inv++ == 0) {
                            for (int i = 0; i < n_tok * n_rows; i++) {
                                if (memcmp(&batch[i], &alone[i], 4) != 0) {
                                    diag("%d tokens: token %d row %d: "
                                         "%.9g, alone %.9g", n_tok,
                                         i / n_rows, i % n_rows, batch[i],
                                         alone[i]);
                                    break;
                                }
                            }
                        }
                    }

                    n_bad = check_ref(batch, ref, tol, n_tok, n_rows, &worst);
                    bad_ref += n_bad;
                    if (worst > wt) {
                        wt = worst;
                    }
                }

                ok(bad_inv == 0 && bad_ref == 0,
                   "%s %s, %d threads, %d rows of %d: 1..%d tokens as "
                   "alone, bit for bit%s%s (worst at %.2f of the "
                   "tolerance)", llm_quant_level_name(level),
                   llm_ggml_type_name(type), threads[pi], n_rows, n_cols,
                   INV_TOK, bad_inv ? " NOT" : "",
                   bad_ref ? ", NOT near the reference" : "", wt);
            }
        }
    }

    /* llm_matmul inside pool tasks: inline on each task's thread */
    n_rows = 37;
    n_cols = 800;
    row_bytes = llm_ggml_row_size(LLM_TYPE_Q8_0, n_cols);
    fill_weights(LLM_TYPE_Q8_0, w, row_bytes, n_rows);
    (void) llm_quant_force(best);
    (void) llm_threads_init(2, NULL);

    llm_matmul(alone, x, 4, w, LLM_TYPE_Q8_0, n_rows, n_cols);

    job.w = w;
    job.type = LLM_TYPE_Q8_0;
    job.x = x;
    job.out = batch;
    job.n_rows = n_rows;
    job.n_cols = n_cols;
    llm_threads_run(matmul_task, &job, 4);

    ok(memcmp(batch, alone, (size_t) (4 * n_rows) * sizeof(float)) == 0,
       "llm_matmul inside pool tasks gives the same outputs");
}


int
main(void)
{
    static const int       toks[] = { 1, 2, 3, 7, 64 };
    static const int       shapes[][2] = { { 37, 512 }, { 5, 2304 },
                                           { 3, 800 } };
    static float           x[MAX_TOK * MAX_COLS], out[MAX_TOK * MAX_ROWS];
    static float           deq[MAX_ROWS * MAX_COLS];
    static double          ref[MAX_TOK * MAX_ROWS], tol[MAX_TOK * MAX_ROWS];
    static double          err[MAX_COLS];
    static uint8_t         w[MAX_ROWS * MAX_COLS * 4];
    int                    best, bad, n_rows, n_cols;
    double                 worst;
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
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t  type = types[ti];

        n_rows = shapes[si][0];
        n_cols = shapes[si][1];

        if (n_cols % (int) llm_ggml_blck_size(type) != 0) {
            continue;
        }

        row_bytes = llm_ggml_row_size(type, n_cols);
        fill_weights(type, w, row_bytes, n_rows);

        reference(type, w, n_rows, n_cols, x, MAX_TOK, deq, err, ref, tol);

        for (int level = 0; level <= best; level++) {
            ok(llm_quant_force(level) == LLM_OK && llm_quant_level() == level,
               "%s kernels", llm_quant_level_name(level));

            for (size_t k = 0; k < sizeof(toks) / sizeof(toks[0]); k++) {
                int  n_tok = toks[k];

                for (int i = 0; i < n_tok * n_rows; i++) {
                    out[i] = NAN;
                }

                llm_matmul(out, x, n_tok, w, type, n_rows, n_cols);

                bad = check_ref(out, ref, tol, n_tok, n_rows, &worst);

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

    test_invariance(best);

    llm_threads_free();

    return done_testing();
}
