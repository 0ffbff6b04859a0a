/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU backend: the reference for every other backend and the twin
 * of every CUDA kernel (t/gpu/test_kernels.c compares them).  Buffers
 * are host memory and weights stay where the caller has them (the
 * mapped GGUF file); matrix products go to llm_matmul (llm_quant.c),
 * attention runs on the thread pool (llm_threads.h), the rest are plain
 * loops.  The sample hook draws with llm_sample_fast, the twin's token
 * in fewer passes, rows on the thread pool.  Nothing here fails after
 * start-up, so sync() has nothing to report.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_backend.h"
#include "llm_log.h"
#include "llm_quant.h"
#include "llm_sampler.h"
#include "llm_threads.h"
#include "llm_tp.h"


#define LLM_ATT_TILE           128     /* positions scored at a time */
#define LLM_ATT_INLINE         65536   /* attention multiply-adds of a
                                        * step below which threads cost
                                        * more than they save */
#define LLM_DRAW_SLOTS         8       /* rows the sample hook draws at
                                        * once, each with its scratch */
#define LLM_DRAW_INLINE        262144  /* logits of a sample call below
                                        * which threads cost more than
                                        * they save */


/*
 * Attention and SiLU take eight floats at a time in GCC's generic
 * vectors: one AVX register in the clone built for x86-64-v3 (AVX2,
 * FMA), two SSE ones in the baseline clone; the loader picks the clone
 * for the CPU it runs on.
 */
typedef float    llm_v8f __attribute__((vector_size(32)));
typedef int32_t  llm_v8i __attribute__((vector_size(32)));

/* none under the sanitizers (GCC's __SANITIZE_ADDRESS__, clang's
 * feature): clang 14's UBSan reports a null pointer in every call of a
 * cloned function */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LLM_CPU_NO_CLONES
#endif
#endif

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)                \
    && !defined(LLM_CPU_NO_CLONES)
#define LLM_CPU_CLONES  __attribute__((target_clones("arch=x86-64-v3", \
                                                     "default")))
#else
#define LLM_CPU_CLONES
#endif


typedef struct {
    llm_step_t           st;        /* the current step (host memory) */
    char                *draw;      /* (n_draw, LLM_SAMPLE_SCRATCH(draw_n))
                                     * the sample hook's scratch, one per
                                     * row drawn at once (reserve) */
    int                  n_draw;
    int                  draw_n;    /* the widest row it fits */
} llm_cpu_t;


/* the sample hook's rows as tasks for the thread pool: task i draws
 * rows i, i + n_tasks ... with scratch i */
typedef struct {
    llm_cpu_t                  *cpu;
    int32_t                    *out;
    const float                *logits;
    int                         n_rows;
    int                         n_vocab;
    int                         n_tasks;
    const llm_sample_params_t  *params;
} llm_draw_job_t;


/* attention of one layer of a step, as tasks for the thread pool: one
 * per (token, kv head), covering the query heads that share it */
typedef struct {
    const llm_step_t    *st;
    const llm_kv_buf_t  *kv;
    const float         *q;
    float               *out;
    int                  layer;
    int                  n_head;
    int                  n_head_kv;
    int                  head_dim;
} llm_att_job_t;


static void llm_cpu_destroy(llm_backend_t *be);
static void *llm_cpu_alloc(llm_backend_t *be, size_t size, llm_err_t *err);
static void llm_cpu_free(llm_backend_t *be, void *p);
static const void *llm_cpu_upload(llm_backend_t *be, const void *host,
    size_t size, llm_err_t *err);
static int llm_cpu_copy(llm_backend_t *be, void *dst, const void *src,
    size_t size, llm_err_t *err);
static int llm_cpu_sync(llm_backend_t *be, llm_err_t *err);
static int llm_cpu_reserve(llm_backend_t *be, const llm_reserve_t *r,
    llm_err_t *err);
static int llm_cpu_step(llm_backend_t *be, const llm_step_t *st,
    llm_err_t *err);
static void llm_cpu_embed(llm_backend_t *be, float *out,
    const llm_mat_t *embd);
static void llm_cpu_rmsnorm(llm_backend_t *be, float *out, const float *x,
    const float *w, int64_t n_rows, int dim, float eps);
static void llm_cpu_add_rmsnorm(llm_backend_t *be, float *out, float *x,
    const float *y, const float *w, int64_t n_rows, int dim, float eps);
static void llm_cpu_matmul(llm_backend_t *be, float *out, const float *x,
    int n, const llm_mat_t *w);
static void llm_cpu_add(llm_backend_t *be, float *x, const float *y,
    int64_t n);
static void llm_cpu_add_rows(llm_backend_t *be, float *x, const float *b,
    int64_t n_rows, int dim);
static void llm_cpu_rope_cache(llm_backend_t *be, float *cs,
    const llm_rope_t *r);
static void llm_cpu_rope(llm_backend_t *be, float *x, int n_heads,
    int head_dim, int n_rot, int neox, const float *cs);
static void llm_cpu_kv_store(llm_backend_t *be, const llm_kv_buf_t *kv,
    int layer, const float *k, const float *v);
static void llm_cpu_attention(llm_backend_t *be, float *out, const float *q,
    const llm_kv_buf_t *kv, int layer, int n_head, int head_dim);
LLM_CPU_CLONES
static void llm_cpu_silu_mul(llm_backend_t *be, float *g, const float *u,
    int64_t n);
static void llm_attend_task(void *arg, int64_t task, int thread);
LLM_CPU_CLONES
static void llm_attend(const llm_kv_buf_t *kv, const int32_t *blocks,
    int layer, int n_pos, int kv_head, int hd, const float *q, float *out);
static void rmsnorm(float *out, const float *x, const float *w, int n,
    float eps);
static int llm_cpu_sample(llm_backend_t *be, int32_t *out,
    const float *logits, int n_rows, int n_vocab,
    const llm_sample_params_t *params, llm_err_t *err);
static void llm_draw_task(void *arg, int64_t task, int thread);
static uint32_t llm_key_of(float x);
static uint32_t llm_key_select(uint32_t *a, int n, int k);
static uint32_t llm_sample_nucleus(float *w, int32_t *idx, uint32_t *key,
    int *m, uint32_t lo, float target, uint32_t *sel);
static float llm_masked(float w, int keep);


llm_backend_t *
llm_backend_cpu_new(llm_err_t *err)
{
    llm_cpu_t      *cpu;
    llm_backend_t  *be;

    be = calloc(1, sizeof(llm_backend_t));
    cpu = calloc(1, sizeof(llm_cpu_t));

    if (be == NULL || cpu == NULL) {
        free(be);
        free(cpu);
        llm_err_set(err, LLM_ENOMEM, "out of memory for the CPU backend");
        return NULL;
    }

    be->name = "cpu";
    be->device = -1;
    be->host_mem = 1;
    be->data = cpu;

    be->destroy = llm_cpu_destroy;
    be->alloc = llm_cpu_alloc;
    be->free = llm_cpu_free;
    be->upload = llm_cpu_upload;
    be->write = llm_cpu_copy;
    be->read = llm_cpu_copy;
    be->sync = llm_cpu_sync;
    be->reserve = llm_cpu_reserve;
    be->step = llm_cpu_step;
    be->embed = llm_cpu_embed;
    be->rmsnorm = llm_cpu_rmsnorm;
    be->add_rmsnorm = llm_cpu_add_rmsnorm;
    be->matmul = llm_cpu_matmul;
    be->matmul_host = llm_cpu_matmul;
    be->add = llm_cpu_add;
    be->add_rows = llm_cpu_add_rows;
    be->rope_cache = llm_cpu_rope_cache;
    be->rope = llm_cpu_rope;
    be->kv_store = llm_cpu_kv_store;
    be->attention = llm_cpu_attention;
    be->silu_mul = llm_cpu_silu_mul;
    be->group = NULL;
    be->allreduce = llm_tp_allreduce_host;

    /* no graphs: issuing an op costs a call */
    be->graph_begin = NULL;
    be->graph_end = NULL;
    be->sample = llm_cpu_sample;

    return be;
}


static void
llm_cpu_destroy(llm_backend_t *be)
{
    llm_cpu_t  *cpu = be->data;

    free(cpu->draw);
    free(cpu);
    free(be);
}


static void *
llm_cpu_alloc(llm_backend_t *be, size_t size, llm_err_t *err)
{
    void  *p;

    (void) be;

    p = calloc(1, size > 0 ? size : 1);
    if (p == NULL) {
        llm_err_set(err, LLM_ENOMEM, "out of memory (%zu bytes)", size);
    }

    return p;
}


static void
llm_cpu_free(llm_backend_t *be, void *p)
{
    (void) be;
    free(p);
}


/* the weights stay in the caller's memory (the mapped file) */
static const void *
llm_cpu_upload(llm_backend_t *be, const void *host, size_t size,
    llm_err_t *err)
{
    (void) be;
    (void) size;
    (void) err;

    return host;
}


static int
llm_cpu_copy(llm_backend_t *be, void *dst, const void *src, size_t size,
    llm_err_t *err)
{
    (void) be;
    (void) err;

    memcpy(dst, src, size);
    return LLM_OK;
}


static int
llm_cpu_sync(llm_backend_t *be, llm_err_t *err)
{
    (void) be;
    (void) err;

    return LLM_OK;
}


/* llm_matmul's own buffer for its prepared input, and the sample hook's
 * scratch for rows of up to max_rows, so that a step allocates nothing */
static int
llm_cpu_reserve(llm_backend_t *be, const llm_reserve_t *r, llm_err_t *err)
{
    int         n_draw;
    size_t      size;
    llm_cpu_t  *cpu = be->data;

    n_draw = llm_threads_count();
    n_draw = n_draw < LLM_DRAW_SLOTS ? n_draw : LLM_DRAW_SLOTS;
    n_draw = n_draw < r->max_tok ? n_draw : r->max_tok;
    n_draw = n_draw > 1 ? n_draw : 1;

    if (r->max_rows > cpu->draw_n || n_draw > cpu->n_draw) {
        if (llm_mul_size(LLM_SAMPLE_SCRATCH(r->max_rows), (size_t) n_draw,
                         &size) != 0)
        {
            return llm_err_set(err, LLM_ENOMEM, "sampling scratch for rows "
                               "of %d overflows", r->max_rows);
        }

        free(cpu->draw);
        cpu->draw_n = 0;
        cpu->n_draw = 0;

        cpu->draw = malloc(size);
        if (cpu->draw == NULL) {
            return llm_err_set(err, LLM_ENOMEM, "out of memory for the "
                               "sampling scratch (%zu bytes)", size);
        }

        cpu->draw_n = r->max_rows;
        cpu->n_draw = n_draw;
    }

    return llm_matmul_reserve(r->max_tok, r->max_cols, err);
}


static int
llm_cpu_step(llm_backend_t *be, const llm_step_t *st, llm_err_t *err)
{
    llm_cpu_t  *cpu = be->data;

    (void) err;

    cpu->st = *st;
    return LLM_OK;
}


static void
llm_cpu_embed(llm_backend_t *be, float *out, const llm_mat_t *embd)
{
    llm_cpu_t         *cpu = be->data;
    const llm_step_t  *st = &cpu->st;

    for (int t = 0; t < st->n_tok; t++) {
        (void) llm_dequant_row(embd->type,
                               (const char *) embd->data
                               + (size_t) st->tokens[t] * embd->row_bytes,
                               out + (size_t) t * embd->cols, embd->cols);
    }
}


static void
llm_cpu_rmsnorm(llm_backend_t *be, float *out, const float *x,
    const float *w, int64_t n_rows, int dim, float eps)
{
    (void) be;

    for (int64_t r = 0; r < n_rows; r++) {
        rmsnorm(out + r * dim, x + r * dim, w, dim, eps);
    }
}


static void
llm_cpu_add_rmsnorm(llm_backend_t *be, float *out, float *x,
    const float *y, const float *w, int64_t n_rows, int dim, float eps)
{
    (void) be;

    for (int64_t i = 0; i < n_rows * dim; i++) {
        x[i] += y[i];
    }

    for (int64_t r = 0; r < n_rows; r++) {
        rmsnorm(out + r * dim, x + r * dim, w, dim, eps);
    }
}


/*
 * The hot spot, nearly all the time of a step.  llm_matmul rounds or
 * quantizes x as llama.cpp does for the weights' type and splits the
 * rows over the thread pool; out may be any host memory, so this is
 * matmul_host too.
 */
static void
llm_cpu_matmul(llm_backend_t *be, float *out, const float *x, int n,
    const llm_mat_t *w)
{
    (void) be;

    llm_matmul(out, x, n, w->data, w->type, w->rows, w->cols);
}


static void
llm_cpu_add(llm_backend_t *be, float *x, const float *y, int64_t n)
{
    (void) be;

    for (int64_t i = 0; i < n; i++) {
        x[i] += y[i];
    }
}


static void
llm_cpu_add_rows(llm_backend_t *be, float *x, const float *b,
    int64_t n_rows, int dim)
{
    float  *p;

    (void) be;

    for (int64_t r = 0; r < n_rows; r++) {
        p = x + r * dim;

        for (int i = 0; i < dim; i++) {
            p[i] += b[i];
        }
    }
}


/* theta_i = pos * base^(-2i/n_rot), stepped as llama.cpp steps it,
 * divided by the Llama 3.1 factor and by the linear scaling factor */
static void
llm_cpu_rope_cache(llm_backend_t *be, float *cs, const llm_rope_t *r)
{
    int                half;
    float              theta, theta_scale, t, *cos_t, *sin_t;
    llm_cpu_t         *cpu = be->data;
    const llm_step_t  *st = &cpu->st;

    half = r->n_rot / 2;
    theta_scale = powf(r->base, -2.0f / (float) r->n_rot);

    for (int k = 0; k < st->n_tok; k++) {
        cos_t = cs + (size_t) k * r->n_rot;
        sin_t = cos_t + half;
        theta = (float) st->pos[k];

        for (int i = 0; i < half; i++) {
            t = theta;

            if (r->freqs != NULL) {
                t /= r->freqs[i];
            }

            t *= r->scale;

            cos_t[i] = cosf(t);
            sin_t[i] = sinf(t);
            theta *= theta_scale;
        }
    }
}


/* rotates pairs of the first n_rot dims of each head: adjacent ones
 * (v[2i], v[2i+1]), the layout GGUF llama files are converted to, or
 * halves (v[i], v[i + n_rot/2]) for neox */
static void
llm_cpu_rope(llm_backend_t *be, float *x, int n_heads, int head_dim,
    int n_rot, int neox, const float *cs)
{
    int                a, b, half;
    float              x0, x1, *p;
    llm_cpu_t         *cpu = be->data;
    const float       *cos_t, *sin_t;
    const llm_step_t  *st = &cpu->st;

    half = n_rot / 2;

    for (int k = 0; k < st->n_tok; k++) {
        cos_t = cs + (size_t) k * n_rot;
        sin_t = cos_t + half;

        for (int h = 0; h < n_heads; h++) {
            p = x + ((size_t) k * n_heads + h) * head_dim;

            for (int i = 0; i < half; i++) {
                a = neox ? i : 2 * i;
                b = neox ? i + half : 2 * i + 1;

                x0 = p[a];
                x1 = p[b];
                p[a] = x0 * cos_t[i] - x1 * sin_t[i];
                p[b] = x0 * sin_t[i] + x1 * cos_t[i];
            }
        }
    }
}


static void
llm_cpu_kv_store(llm_backend_t *be, const llm_kv_buf_t *kv, int layer,
    const float *k, const float *v)
{
    int                pos;
    float             *kc, *vc;
    llm_cpu_t         *cpu = be->data;
    const llm_step_t  *st = &cpu->st;

    for (int t = 0; t < st->n_tok; t++) {
        pos = st->pos[t];

        kc = (float *) kv->data
             + (size_t) st->blocks[st->seg[t]][pos / kv->block_size]
               * kv->block_elems
             + (size_t) layer * kv->layer_elems
             + (size_t) (pos % kv->block_size) * kv->kv_dim;
        vc = kc + (size_t) kv->block_size * kv->kv_dim;

        memcpy(kc, k + (size_t) t * kv->kv_dim,
               (size_t) kv->kv_dim * sizeof(float));
        memcpy(vc, v + (size_t) t * kv->kv_dim,
               (size_t) kv->kv_dim * sizeof(float));
    }
}


/* attention of each query head over its sequence's positions 0..pos,
 * the step's own keys included */
static void
llm_cpu_attention(llm_backend_t *be, float *out, const float *q,
    const llm_kv_buf_t *kv, int layer, int n_head, int head_dim)
{
    int64_t            work, n_tasks;
    llm_cpu_t         *cpu = be->data;
    llm_att_job_t      job;
    const llm_step_t  *st = &cpu->st;

    job.st = st;
    job.kv = kv;
    job.q = q;
    job.out = out;
    job.layer = layer;
    job.n_head = n_head;
    job.n_head_kv = kv->kv_dim / head_dim;
    job.head_dim = head_dim;

    work = 0;
    for (int t = 0; t < st->n_tok; t++) {
        work += (int64_t) (st->pos[t] + 1) * n_head * head_dim;
    }

    n_tasks = (int64_t) st->n_tok * job.n_head_kv;

    if (work < LLM_ATT_INLINE) {
        for (int64_t i = 0; i < n_tasks; i++) {
            llm_attend_task(&job, i, 0);
        }

    } else {
        llm_threads_run(llm_attend_task, &job, n_tasks);
    }
}


/* task: token task / n_head_kv, the query heads of kv head
 * task % n_head_kv */
static void
llm_attend_task(void *arg, int64_t task, int thread)
{
    int                  t, g, hd, kv_mul, q_dim;
    llm_att_job_t       *job;
    const llm_step_t    *st;

    (void) thread;

    job = arg;
    st = job->st;
    hd = job->head_dim;
    q_dim = job->n_head * hd;
    kv_mul = job->n_head / job->n_head_kv;
    t = (int) (task / job->n_head_kv);
    g = (int) (task % job->n_head_kv);

    for (int h = g * kv_mul; h < (g + 1) * kv_mul; h++) {
        llm_attend(job->kv, st->blocks[st->seg[t]], job->layer,
                   st->pos[t] + 1, g, hd,
                   job->q + (size_t) t * q_dim + (size_t) h * hd,
                   job->out + (size_t) t * q_dim + (size_t) h * hd);
    }
}


/* vectors travel through memory: as arguments or results they would
 * depend on the clone's calling convention */
#define llm_v8_load(v, p)   memcpy(&(v), (p), sizeof(llm_v8f))
#define llm_v8_store(p, v)  memcpy((p), &(v), sizeof(llm_v8f))
#define llm_v8_sum(v)                                                      \
    ((((v)[0] + (v)[4]) + ((v)[1] + (v)[5]))                               \
     + (((v)[2] + (v)[6]) + ((v)[3] + (v)[7])))


/*
 * e^x of eight x <= 0 from in to out, to about one ulp: x = k ln 2 + r
 * with |r| <= ln 2 / 2, e^r by its Taylor polynomial to r^7, 2^k into
 * the exponent bits.  Below -87 (where e^x leaves the normal floats) the
 * answer is e^-87.
 */
static inline __attribute__((always_inline)) void
llm_v8_exp(float *out, const float *in)
{
    llm_v8i  k, low;
    llm_v8f  x, kf, r, p, floor;

    llm_v8_load(x, in);

    floor = (llm_v8f) { 0 } - 87.0f;
    low = x < floor;
    x = (llm_v8f) (((llm_v8i) x & ~low) | ((llm_v8i) floor & low));

    k = __builtin_convertvector(x * 1.44269504f - 0.5f, llm_v8i);
    kf = __builtin_convertvector(k, llm_v8f);
    r = x - kf * 0.693359375f;
    r = r + kf * 2.12194440e-4f;

    p = r * (1.0f / 5040) + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;

    p = p * (llm_v8f) ((k + 127) << 23);
    llm_v8_store(out, p);
}


/*
 * out (head_dim) = softmax(q . K / sqrt(head_dim)) V over positions
 * 0..n_pos-1 of kv head kv_head in layer, read through the block table.
 * Scores are taken LLM_ATT_TILE positions at a time with a running
 * maximum, rescaling what is summed so far when it grows, so no buffer
 * depends on the context length.  The tiles start at position 0
 * whatever the blocks are, so a sequence's result does not depend on
 * the block size or on the rest of the batch.
 */
LLM_CPU_CLONES
static void
llm_attend(const llm_kv_buf_t *kv, const int32_t *blocks, int layer,
    int n_pos, int kv_head, int hd, const float *q, float *out)
{
    int           bs, tn, pos, i, hd8;
    float         sc[LLM_ATT_TILE], ex[LLM_ATT_TILE], scale, mx, tmx, r, e,
                  dot;
    double        sum;
    llm_v8f       acc, a, b;
    const float  *kt, *vt, *base;

    bs = kv->block_size;
    scale = 1.0f / sqrtf((float) hd);
    mx = -INFINITY;
    sum = 0.0;
    hd8 = hd & ~7;

    memset(out, 0, (size_t) hd * sizeof(float));

    for (int t0 = 0; t0 < n_pos; t0 += LLM_ATT_TILE) {
        tn = n_pos - t0 < LLM_ATT_TILE ? n_pos - t0 : LLM_ATT_TILE;
        tmx = mx;

        for (int j = 0; j < tn; j++) {
            pos = t0 + j;
            base = (const float *) kv->data
                   + (size_t) blocks[pos / bs] * kv->block_elems
                   + (size_t) layer * kv->layer_elems;
            kt = base + (size_t) (pos % bs) * kv->kv_dim
                 + (size_t) kv_head * hd;

            acc = (llm_v8f) { 0 };
            for (i = 0; i < hd8; i += 8) {
                llm_v8_load(a, q + i);
                llm_v8_load(b, kt + i);
                acc += a * b;
            }

            dot = llm_v8_sum(acc);
            for ( /* void */ ; i < hd; i++) {
                dot += q[i] * kt[i];
            }

            sc[j] = dot * scale;
            if (sc[j] > tmx) {
                tmx = sc[j];
            }
        }

        if (tmx > mx) {
            /* 0 on the first tile, where nothing is summed yet */
            r = expf(mx - tmx);
            sum *= r;

            for (i = 0; i < hd; i++) {
                out[i] *= r;
            }

            mx = tmx;
        }

        /* the weights, eight at a time; the lanes past tn are unused */
        for (int j = tn; j % 8 != 0; j++) {
            sc[j] = tmx;
        }

        for (int j = 0; j < tn; j += 8) {
            llm_v8_load(a, sc + j);
            a -= mx;
            llm_v8_store(ex + j, a);
            llm_v8_exp(ex + j, ex + j);
        }

        for (int j = 0; j < tn; j++) {
            pos = t0 + j;
            base = (const float *) kv->data
                   + (size_t) blocks[pos / bs] * kv->block_elems
                   + (size_t) layer * kv->layer_elems;
            vt = base + (size_t) (bs + pos % bs) * kv->kv_dim
                 + (size_t) kv_head * hd;

            e = ex[j];
            sum += e;

            for (i = 0; i < hd8; i += 8) {
                llm_v8_load(a, out + i);
                llm_v8_load(b, vt + i);
                a += e * b;
                llm_v8_store(out + i, a);
            }

            for ( /* void */ ; i < hd; i++) {
                out[i] += e * vt[i];
            }
        }
    }

    r = (float) (1.0 / sum);

    for (i = 0; i < hd; i++) {
        out[i] *= r;
    }
}


/*
 * g = silu(g) * u for eight floats.  With e = e^-|x| (never above 1, so
 * the polynomial above serves): silu(x) = x / (1 + e) for x >= 0, and
 * x e / (1 + e) below.
 */
static inline __attribute__((always_inline)) void
llm_v8_silu_mul(float *g, const float *u)
{
    llm_v8i  neg;
    llm_v8f  v, e, a, w, one;

    one = (llm_v8f) { 0 } + 1.0f;

    llm_v8_load(v, g);
    neg = v < 0.0f;
    a = -(llm_v8f) ((llm_v8i) v & 0x7fffffff);
    llm_v8_store(g, a);
    llm_v8_exp(g, g);
    llm_v8_load(e, g);
    w = (llm_v8f) (((llm_v8i) one & ~neg) | ((llm_v8i) e & neg));
    llm_v8_load(a, u);
    v = v * w / (one + e) * a;
    llm_v8_store(g, v);
}


/* the last n % 8 go through the same arithmetic in a padded vector, so
 * that a token's result does not depend on where the batch put it */
LLM_CPU_CLONES
static void
llm_cpu_silu_mul(llm_backend_t *be, float *g, const float *u, int64_t n)
{
    int64_t  i;
    float    tg[8], tu[8];

    (void) be;

    for (i = 0; i + 8 <= n; i += 8) {
        llm_v8_silu_mul(g + i, u + i);
    }

    if (i < n) {
        memset(tg, 0, sizeof(tg));
        memset(tu, 0, sizeof(tu));
        memcpy(tg, g + i, (size_t) (n - i) * sizeof(float));
        memcpy(tu, u + i, (size_t) (n - i) * sizeof(float));
        llm_v8_silu_mul(tg, tu);
        memcpy(g + i, tg, (size_t) (n - i) * sizeof(float));
    }
}


static void
rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float   scale;
    double  ss;

    ss = 0.0;
    for (int i = 0; i < n; i++) {
        ss += x[i] * x[i];
    }

    scale = 1.0f / sqrtf((float) (ss / n) + eps);

    for (int i = 0; i < n; i++) {
        out[i] = x[i] * scale * w[i];
    }
}


/* llm_sample_fast on each row, on the thread pool where there are
 * several; the twin itself where reserve gave no scratch that fits */
static int
llm_cpu_sample(llm_backend_t *be, int32_t *out, const float *logits,
    int n_rows, int n_vocab, const llm_sample_params_t *params,
    llm_err_t *err)
{
    llm_cpu_t       *cpu = be->data;
    llm_draw_job_t   job;

    (void) err;

    if (n_vocab > cpu->draw_n || cpu->draw == NULL) {
        for (int r = 0; r < n_rows; r++) {
            out[r] = llm_sample_twin(logits + (size_t) r * n_vocab, n_vocab,
                                     &params[r]);
        }

        return LLM_OK;
    }

    job.cpu = cpu;
    job.out = out;
    job.logits = logits;
    job.n_rows = n_rows;
    job.n_vocab = n_vocab;
    job.n_tasks = n_rows < cpu->n_draw ? n_rows : cpu->n_draw;
    job.params = params;

    if ((int64_t) n_rows * n_vocab < LLM_DRAW_INLINE) {
        job.n_tasks = 1;
    }

    if (job.n_tasks == 1) {
        llm_draw_task(&job, 0, 0);

    } else if (job.n_tasks > 1) {
        llm_threads_run(llm_draw_task, &job, job.n_tasks);
    }

    return LLM_OK;
}


static void
llm_draw_task(void *arg, int64_t task, int thread)
{
    char            *scratch;
    llm_draw_job_t  *job = arg;

    (void) thread;

    scratch = job->cpu->draw
              + (size_t) task * LLM_SAMPLE_SCRATCH(job->cpu->draw_n);

    for (int r = (int) task; r < job->n_rows; r += job->n_tasks) {
        job->out[r] = llm_sample_fast(job->logits
                                      + (size_t) r * job->n_vocab,
                                      job->n_vocab, &job->params[r],
                                      scratch);
    }
}


static uint32_t
llm_key_of(float x)
{
    uint32_t  bits;

    memcpy(&bits, &x, sizeof(bits));
    return llm_sample_key(bits);
}


/*
 * The draw of llm_backend.h, plainly: the twin of kernels/sample.cu,
 * which finds the same thresholds by the same radix selection (sums
 * here run in index order, there over a block: rows whose thresholds
 * fall within rounding of a sum may differ).
 */
int32_t
llm_sample_twin(const float *x, int n, const llm_sample_params_t *p)
{
    int32_t   best, last;
    uint32_t  kk, kp, cand, kmax;
    float     mx, t, s, target, w;

#define LLM_W(v)     expf(((v) - mx) / t)
#define LLM_KEPT(v)  (llm_key_of(v) >= kk                                 \
                      && (p->min_p <= 0.0f || LLM_W(v) >= p->min_p))

    best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }

    if (!(p->temperature > 0.0f)) {
        return best;
    }

    t = p->temperature;
    mx = x[best];
    kmax = llm_key_of(mx);

    kk = 0;
    if (p->top_k > 0 && p->top_k < n) {
        for (int b = 31; b >= 0; b--) {
            cand = kk | (1u << b);
            s = 0.0f;

            for (int i = 0; i < n; i++) {
                s += llm_key_of(x[i]) >= cand ? 1.0f : 0.0f;
            }

            if (s >= (float) p->top_k) {
                kk = cand;
            }
        }
    }

    kp = 0;
    if (p->top_p < 1.0f) {
        s = 0.0f;
        for (int i = 0; i < n; i++) {
            s += LLM_KEPT(x[i]) ? LLM_W(x[i]) : 0.0f;
        }
        target = p->top_p * s;

        for (int b = 31; b >= 0; b--) {
            cand = kp | (1u << b);
            s = 0.0f;

            for (int i = 0; i < n; i++) {
                s += LLM_KEPT(x[i]) && llm_key_of(x[i]) >= cand
                     ? LLM_W(x[i]) : 0.0f;
            }

            if (s >= target) {
                kp = cand;
            }
        }

        kp = kp < kmax ? kp : kmax;
    }

    kk = kk > kp ? kk : kp;

    s = 0.0f;
    for (int i = 0; i < n; i++) {
        s += LLM_KEPT(x[i]) ? LLM_W(x[i]) : 0.0f;
    }

    target = llm_sample_uniform(p->seed, p->counter) * s;
    s = 0.0f;
    last = -1;

    for (int i = 0; i < n; i++) {
        if (LLM_KEPT(x[i])) {
            w = LLM_W(x[i]);
            s += w;
            last = i;

            if (s > target) {
                return i;
            }
        }
    }

#undef LLM_KEPT
#undef LLM_W

    return last >= 0 ? last : best;
}


/*
 * llm_sample_twin's token, bit for bit, in a few passes over the row
 * where the twin makes some seventy (for the sample hook above and the
 * host sampler, llm_sampler.c).  The twin's radix searches end on the
 * largest threshold that passes a monotone test, which is a key that
 * occurs; here that key is found by selection among the keys that do:
 * top_k's is the k-th largest, top_p's comes from a bisection over the
 * kept keys (llm_sample_nucleus).  Every sum compared is the twin's own:
 * the weights of the same tokens added in index order, so that rounding
 * decides the same way.  A row with a NaN or an infinite maximum, or
 * whose maximum is a -0 beside a +0 (equal values, different keys),
 * goes to the twin itself.
 */
int32_t
llm_sample_fast(const float *x, int n, const llm_sample_params_t *p,
    void *scratch)
{
    int        m, n_tail, nan;
    float      mx, t, s, sh, target, wi, cut, *w;
    int32_t    best, last, *idx;
    uint32_t   k, kk, kp, kmax, lb, tail, *key, *sel;

    /* the largest, in a loop that vectorizes, then its first index: the
     * twin's best where there is no NaN (and a -0 and a +0 compare
     * equal there as here) */
    mx = x[0];
    nan = 0;

    for (int i = 0; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
        nan |= x[i] != x[i];
    }

    if (nan) {
        return llm_sample_twin(x, n, p);
    }

    for (best = 0; x[best] != mx; best++) {
        /* void */
    }

    if (!(p->temperature > 0.0f)) {
        return best;
    }

    if (isinf(mx)) {
        return llm_sample_twin(x, n, p);
    }

    t = p->temperature;
    kmax = llm_key_of(mx);

    w = scratch;                        /* (m) the kept, in index order */
    idx = (int32_t *) (w + n);          /* (m) */
    key = (uint32_t *) (idx + n);       /* (m) */
    sel = key + n;                      /* (n) keys being selected from */

    kk = 0;
    if (p->top_k > 0 && p->top_k < n) {
        for (int i = 0; i < n; i++) {
            sel[i] = llm_key_of(x[i]);
        }

        kk = llm_key_select(sel, n, p->top_k);
    }

    if (kk == 0 && p->min_p <= 0.0f && !(p->top_p < 1.0f)) {
        /* temperature alone: every token is kept */

        s = 0.0f;
        for (int i = 0; i < n; i++) {
            w[i] = expf((x[i] - mx) / t);
            s += w[i];
        }

        target = llm_sample_uniform(p->seed, p->counter) * s;
        s = 0.0f;

        for (int i = 0; i < n; i++) {
            s += w[i];

            if (s > target) {
                return i;
            }
        }

        return n - 1;
    }

    /*
     * The kept tokens and their weight s (the twin's sum: in index
     * order).  Under top_p, a weight below (s - top_p * s) / n is never
     * in the nucleus: the others reach top_p without it.  s is at least
     * 1, the largest's weight, so below cut (halved, for rounding) the
     * kept form a tail, counted in s but left out of the list, whose
     * weight sh is then f(lb) of llm_sample_nucleus: the tail's keys are
     * below the list's as the weights are (tail < lb checks it); if f(lb)
     * does reach top_p * s, lb is where the nucleus search starts, else
     * the list is made again with every kept token.  On a peaked row the
     * list is a few hundred tokens long.
     */

    cut = 0.0f;
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        cut = 0.5f * (1.0f - p->top_p) / (float) n;
    }

again:

    lb = UINT32_MAX;
    tail = 0;
    n_tail = 0;
    s = 0.0f;
    sh = 0.0f;
    m = 0;

    for (int i = 0; i < n; i++) {
        k = llm_key_of(x[i]);

        if (k < kk) {
            continue;
        }

        if (k > kmax) {
            return llm_sample_twin(x, n, p);
        }

        wi = expf((x[i] - mx) / t);

        if (!(p->min_p <= 0.0f) && !(wi >= p->min_p)) {
            continue;
        }

        s += wi;

        if (wi < cut) {
            tail = k > tail ? k : tail;
            n_tail++;
            continue;
        }

        w[m] = wi;
        idx[m] = i;
        key[m] = k;
        m++;

        sh += wi;
        lb = k < lb ? k : lb;
    }

    if (m == 0 && n_tail == 0) {
        return best;
    }

    if (p->top_p < 1.0f) {
        target = p->top_p * s;

        if (n_tail > 0 && !(m > 0 && tail < lb && sh >= target)) {
            cut = 0.0f;
            goto again;
        }

        if (target > 0.0f) {
            kp = llm_sample_nucleus(w, idx, key, &m, lb, target, sel);

        } else {
            /* every threshold passes a target of 0 */
            kp = UINT32_MAX;
        }

        kp = kp < kmax ? kp : kmax;
        kk = kk > kp ? kk : kp;
    }

    s = 0.0f;
    for (int j = 0; j < m; j++) {
        if (key[j] >= kk) {
            s += w[j];
        }
    }

    target = llm_sample_uniform(p->seed, p->counter) * s;
    s = 0.0f;
    last = -1;

    for (int j = 0; j < m; j++) {
        if (key[j] >= kk) {
            s += w[j];
            last = idx[j];

            if (s > target) {
                return idx[j];
            }
        }
    }

    return last >= 0 ? last : best;
}


/* the k-th largest (k in 1..n) of a[0..n), which it reorders: a radix
 * selection, a byte at a time from the top, skipping the bytes that
 * all share; a few keys are simply sorted */
static uint32_t
llm_key_select(uint32_t *a, int n, int k)
{
    int       j, cnt[256];
    uint32_t  b, v, prefix, same, all;

    prefix = 0;

    for (int shift = 24; shift >= 0; shift -= 8) {
        if (n <= 16) {
            /* the k largest to the front, the k-th last */
            for (int i = 0; i < k; i++) {
                j = i;
                for (int l = i + 1; l < n; l++) {
                    j = a[l] > a[j] ? l : j;
                }
                v = a[i];
                a[i] = a[j];
                a[j] = v;
            }

            return a[k - 1];
        }

        same = ~0u;
        all = 0;
        for (int i = 0; i < n; i++) {
            same &= a[i];
            all |= a[i];
        }

        if ((((same ^ all) >> shift) & 0xff) == 0) {
            prefix |= all & (0xffu << shift);
            continue;
        }

        memset(cnt, 0, sizeof(cnt));

        for (int i = 0; i < n; i++) {
            cnt[(a[i] >> shift) & 0xff]++;
        }

        for (b = 0xff; cnt[b] < k; b--) {
            k -= cnt[b];
        }

        prefix |= b << shift;

        j = 0;
        for (int i = 0; i < n; i++) {
            if (((a[i] >> shift) & 0xff) == b) {
                a[j++] = a[i];
            }
        }

        n = j;
    }

    return prefix;
}


/*
 * top_p's threshold: the largest key v of the *m kept such that f(v),
 * the sum in index order of the weights whose key is >= v, reaches
 * target (> 0): f(lo) does.  Bisects over the keys that occur between
 * lo (passes) and hi (fails); when lo rises, the keys below it leave w,
 * idx and key (order kept, *m shrinks), as no later test counts them.
 */
static uint32_t
llm_sample_nucleus(float *w, int32_t *idx, uint32_t *key, int *m,
    uint32_t lo, float target, uint32_t *sel)
{
    int       n, c;
    float     s;
    uint32_t  pivot;
    uint64_t  hi;

    n = *m;
    hi = (uint64_t) UINT32_MAX + 1;

    for ( ;; ) {
        c = 0;
        for (int j = 0; j < n; j++) {
            sel[c] = key[j];
            c += key[j] > lo && key[j] < hi;
        }

        if (c == 0) {
            break;
        }

        pivot = llm_key_select(sel, c, (c + 1) / 2);

        s = 0.0f;
        for (int j = 0; j < n; j++) {
            s += llm_masked(w[j], key[j] >= pivot);
        }

        if (!(s >= target)) {
            hi = pivot;
            continue;
        }

        lo = pivot;
        c = 0;

        for (int j = 0; j < n; j++) {
            w[c] = w[j];
            idx[c] = idx[j];
            key[c] = key[j];
            c += key[j] >= lo;
        }

        n = c;
    }

    *m = n;

    return lo;
}


/* w, or +0 where keep is 0, without a branch: the loops that use it test
 * coin flips, and a sum of weights is left as it is by adding +0 */
static float
llm_masked(float w, int keep)
{
    uint32_t  bits;

    memcpy(&bits, &w, sizeof(bits));
    bits &= 0u - (uint32_t) keep;
    memcpy(&w, &bits, sizeof(w));

    return w;
}


llm_backend_t *
llm_backend_open(const char *name, int device, llm_err_t *err)
{
    llm_backend_t  *be;
    llm_err_t       e;

    if (name == NULL || strcmp(name, "cpu") == 0) {
        return llm_backend_cpu_new(err);
    }

    if (strcmp(name, "cuda") == 0) {
        return llm_backend_cuda_new(device, err);
    }

    if (strcmp(name, "auto") != 0) {
        llm_err_set(err, LLM_EINVAL,
                    "unknown backend \"%s\" (cpu, cuda, auto)", name);
        return NULL;
    }

    memset(&e, 0, sizeof(e));

    be = llm_backend_cuda_new(device, &e);
    if (be != NULL) {
        return be;
    }

    llm_log(LLM_LOG_WARN, "backend auto: %s; computing on the CPU",
            e.errstr);

    return llm_backend_cpu_new(err);
}


void
llm_backend_close(llm_backend_t *be)
{
    if (be != NULL) {
        be->destroy(be);
    }
}
