/*
 * Copyright (C) ngx_llm developers
 *
 * Every CUDA kernel against its CPU twin, through the two backends'
 * function tables (llm_backend.h) on the same random inputs: the CPU
 * backend is the reference.  Tolerances are relative L2 per output, by
 * what the two sides compute differently:
 *
 *   f32 elementwise, norms, rope, KV stores      1e-5 (order of sums,
 *                                                 libm's last bits)
 *   attention                                    1e-4 (exp, order)
 *   attention over an f16 cache, prefill on      3e-3 (k, v, there q and
 *     the tensor cores                            the weights, rounded
 *                                                 to f16; 1e-4 against
 *                                                 the CPU's over the
 *                                                 rounded cache)
 *   matmul f32                                   1e-5
 *   matmul f16 / bf16 (both round x alike)       1e-4 / 1e-3
 *   matmul quantized vs the decoded f32 product  1e-5 (GEMV) / 2e-3
 *                                                 (f16 GEMM path)
 *   matmul quantized vs llm_matmul               2e-2 (the CPU rounds x
 *                                                 to 8 bits, as
 *                                                 llama.cpp does)
 *
 * then a fixture model decoding on both, which runs the CUDA graphs (an
 * f16 model within 3e-3, the fixtures' tolerance for it: the GPU keeps
 * its KV cache in f16, as llama.cpp does, the CPU in f32).
 * Prints "1..0 # SKIP" where there is no CUDA device, so that it can
 * sit under prove -r t/ (t/gpu/kernels.t); built by make CUDA=1 only.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cuda_runtime_api.h>

#include "tap.h"
#include "llm_backend.h"
#include "llm_gguf.h"
#include "llm_model.h"
#include "llm_quant.h"


/* the steps of test_step() */
enum {
    STEP_PREFILL = 0,
    STEP_DECODE,
    STEP_LONG
};

#define STEP_STORAGE  (3 * 64 + 3 * 256)


static llm_backend_t  *cpu, *gpu;
static llm_reserve_t   reserved = { 256, 4096, 40000, 32, 256, 0 };
static uint64_t        rng = 0x2545f4914f6cdd1dULL;


static float frand(void);
static float *rand_vec(size_t n, float scale);
static float *to_dev(llm_backend_t *be, const void *host, size_t bytes);
static float *from_dev(llm_backend_t *be, const float *d, size_t n);
static double rel_l2(const float *a, const float *b, size_t n);
static void check(const char *what, const float *a, const float *b,
    size_t n, double tol);
static void sync_both(void);
static void test_elementwise(void);
static void test_step(llm_step_t *st, int32_t *storage, int kind);
static void test_embed_matmul(uint32_t type, int cols);
static void test_rope(void);
static void test_rope_store(int n_head, int n_head_kv, int hd, int n_rot,
    int neox, int decode, int f16);
static void test_products(uint32_t type);
static void test_fused_norm(uint32_t type);
static void pool_geometry(llm_kv_buf_t *kv, int kv_dim, int f16);
static void *pool_to_dev(llm_backend_t *be, const llm_kv_buf_t *kv,
    const float *pool, size_t n);
static float *pool_from_dev(llm_backend_t *be, const llm_kv_buf_t *kv,
    size_t n);
static void round16(float *x, size_t n);
static void rotated_both(const char *what, const float *c, const float *g,
    const float *g3, size_t n);
static void mat_both(llm_mat_t *cm, llm_mat_t *gm, uint32_t type,
    int rows, int cols);
static void test_attention(int n_head, int n_head_kv, int hd, int kind,
    int f16);
static void test_sample(void);
static void test_model(const char *name, double tol);
static void test_block_copy(const char *name, llm_model_t *m,
    llm_kv_pool_t *pc, llm_kv_pool_t *pg, double tol);


int
main(void)
{
    int        n;
    llm_err_t  err = { 0 };

    n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        skip_all("no CUDA device");
    }

    llm_quant_init();

    cpu = llm_backend_cpu_new(&err);
    gpu = llm_backend_cuda_new(0, &err);

    if (!ok(cpu != NULL && gpu != NULL, "backends open")) {
        diag("%s", err.errstr);
        return done_testing();
    }

    if (!ok(cpu->reserve(cpu, &reserved, &err) == LLM_OK
            && gpu->reserve(gpu, &reserved, &err) == LLM_OK,
            "scratch reserved"))
    {
        diag("%s", err.errstr);
        return done_testing();
    }

    test_elementwise();
    test_rope();
    test_rope_store(8, 2, 64, 32, 0, 0, 0);
    test_rope_store(8, 2, 64, 32, 1, 0, 0);
    test_rope_store(8, 2, 64, 64, 1, 1, 0);
    test_rope_store(4, 4, 16, 16, 0, 1, 0);
    test_rope_store(8, 4, 8, 8, 0, 0, 0);    /* stories260K's heads */
    test_rope_store(8, 2, 64, 32, 1, 0, 1);  /* an f16 cache */
    test_rope_store(8, 4, 8, 8, 0, 1, 1);

    {
        static const uint32_t  types[] = {
            LLM_TYPE_F32, LLM_TYPE_F16, LLM_TYPE_BF16, LLM_TYPE_Q8_0,
            LLM_TYPE_Q4_0, LLM_TYPE_Q4_K, LLM_TYPE_Q5_K, LLM_TYPE_Q6_K
        };

        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            test_embed_matmul(types[i], 512);
        }

        /* rows of 8 bytes past 16-byte alignment: the plain types'
         * GEMV does not take them, cuBLAS does */
        test_embed_matmul(LLM_TYPE_F16, 36);
        test_embed_matmul(LLM_TYPE_F32, 42);

        test_products(LLM_TYPE_F16);
        test_products(LLM_TYPE_Q4_0);
        test_products(LLM_TYPE_Q6_K);
        test_fused_norm(LLM_TYPE_F16);
        test_fused_norm(LLM_TYPE_Q4_0);
    }

    for (int f16 = 0; f16 < 2; f16++) {
        test_attention(8, 2, 64, STEP_PREFILL, f16);
        test_attention(8, 2, 64, STEP_DECODE, f16);
        test_attention(8, 4, 8, STEP_PREFILL, f16);  /* stories260K's */
        test_attention(4, 4, 128, STEP_PREFILL, f16);
        test_attention(4, 4, 128, STEP_LONG, f16);
        test_attention(2, 1, 256, STEP_PREFILL, f16);
        test_attention(2, 1, 256, STEP_LONG, f16);
        test_attention(4, 2, 80, STEP_LONG, f16);
    }

    test_attention(8, 4, 8, STEP_DECODE, 0);
    test_attention(4, 4, 128, STEP_DECODE, 0);
    test_attention(2, 1, 256, STEP_DECODE, 0);
    test_attention(2, 1, 256, STEP_DECODE, 1);

    test_sample();

    /* those t/gpu/check.sh stages, then any others there are */
    test_model("tiny-llama3-f32", 1e-4);
    test_model("stories260K", 1e-4);
    test_model("tiny-llama3-f16", 3e-3);
    test_model("tiny-llama3-q4_k_m", 5e-2);
    test_model("tiny-qwen3-f32", 1e-4);

    llm_backend_close(gpu);
    llm_backend_close(cpu);

    return done_testing();
}


static float
frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;

    return (float) (rng >> 40) / 16777216.0f * 2.0f - 1.0f;
}


static float *
rand_vec(size_t n, float scale)
{
    float  *v = malloc((n > 0 ? n : 1) * sizeof(float));

    for (size_t i = 0; i < n; i++) {
        v[i] = frand() * scale;
    }

    return v;
}



/* one weight matrix of type on both backends, random values; the
 * CPU's weights are the caller's bytes, freed with free_both() */
static void     *mat_host[16];
static int       n_mat_host;

static void
mat_both(llm_mat_t *cm, llm_mat_t *gm, uint32_t type, int rows, int cols)
{
    size_t      rb = llm_ggml_row_size(type, cols);
    float      *wf = rand_vec((size_t) rows * cols, 1.0f);
    uint8_t    *wq = malloc(rb * rows);
    llm_err_t   err = { 0 };

    for (int r = 0; r < rows; r++) {
        (void) llm_quantize_row(type, wf + (size_t) r * cols, wq + r * rb,
                                cols);
    }

    cm->data = cpu->upload(cpu, wq, rb * rows, &err);
    gm->data = gpu->upload(gpu, wq, rb * rows, &err);
    cm->type = gm->type = type;
    cm->rows = gm->rows = rows;
    cm->cols = gm->cols = cols;
    cm->row_bytes = gm->row_bytes = rb;

    free(wf);
    mat_host[n_mat_host++] = wq;
}


/*
 * A layer's two halves as it issues them: a product y (the output or
 * down projection), x += y with the RMSNorm of x (add_rmsnorm), then
 * the products of the norm: Q and K; gate, up and SwiGLU.  On the GPU
 * the first product adds itself to x and the norm runs inside the
 * launch of the next products.  Each result must be that of the same
 * ops with a sync after each (nothing fused): the residual and y bit
 * for bit, the norm and the products too for the plain types (their
 * blocks sum as wide as the norm kernel's), within 1e-6 for quantized
 * ones; and the CPU's within the matmul tolerance.
 */
static void
test_fused_norm(uint32_t type)
{
    enum { N_OUT = 6 };

    int          n = 3, d = 512, c1 = 256, rq = 96, rk = 32, rf = 80;
    int          rows[N_OUT] = { 512, 512, 96, 32, 80, 512 };
    char         what[160];
    float       *x, *h, *nw, *cbuf[N_OUT + 1], *gbuf[2][N_OUT + 1], *a, *b;
    double       tol;
    llm_mat_t    cm[5], gm[5];
    llm_err_t    err = { 0 };
    const char  *tn = llm_ggml_type_name(type);
    static const char  *names[N_OUT] = {
        "y", "the norm", "Q", "K", "SwiGLU", "the residual"
    };

    tol = type == LLM_TYPE_F16 ? 1e-4 : 2e-2;

    mat_both(&cm[0], &gm[0], type, d, c1);          /* y = W h */
    mat_both(&cm[1], &gm[1], type, rq, d);
    mat_both(&cm[2], &gm[2], type, rk, d);
    mat_both(&cm[3], &gm[3], type, rf, d);
    mat_both(&cm[4], &gm[4], type, rf, d);

    x = rand_vec((size_t) n * d, 1.0f);
    h = rand_vec((size_t) n * c1, 1.0f);
    nw = rand_vec((size_t) d, 1.0f);

    /* buffers: y, xb, q, k, gate, x; then up; [0] fused, [1] not */
    for (int v = 0; v < 3; v++) {
        llm_backend_t  *be = v < 2 ? gpu : cpu;
        float         **buf = v < 2 ? gbuf[v] : cbuf;
        float          *bh, *bnw;
        int             sync = v == 1;

        for (int i = 0; i < N_OUT - 1; i++) {
            buf[i] = be->alloc(be, (size_t) n * d * 4, &err);
        }
        buf[N_OUT - 1] = to_dev(be, x, (size_t) n * d * 4);
        buf[N_OUT] = be->alloc(be, (size_t) n * d * 4, &err);
        bh = to_dev(be, h, (size_t) n * c1 * 4);
        bnw = to_dev(be, nw, (size_t) d * 4);

#define STEP(op)  do { op; if (sync) (void) be->sync(be, &err); } while (0)

        for (int half = 0; half < 2; half++) {
            STEP(be->matmul(be, buf[0], bh, n, v < 2 ? &gm[0] : &cm[0]));
            STEP(be->add_rmsnorm(be, buf[1], buf[N_OUT - 1], buf[0], bnw,
                                 n, d, 1e-5f));

            if (half == 0) {
                STEP(be->matmul(be, buf[2], buf[1], n,
                                v < 2 ? &gm[1] : &cm[1]));
                STEP(be->matmul(be, buf[3], buf[1], n,
                                v < 2 ? &gm[2] : &cm[2]));
            } else {
                STEP(be->matmul(be, buf[4], buf[1], n,
                                v < 2 ? &gm[3] : &cm[3]));
                STEP(be->matmul(be, buf[N_OUT], buf[1], n,
                                v < 2 ? &gm[4] : &cm[4]));
                STEP(be->silu_mul(be, buf[4], buf[N_OUT],
                                  (int64_t) n * rf));
            }
        }

#undef STEP

        (void) be->sync(be, &err);
        be->free(be, bh);
        be->free(be, bnw);
    }

    for (int i = 0; i < N_OUT; i++) {
        size_t  len = (size_t) n * rows[i];
        float  *c = from_dev(cpu, cbuf[i], len);

        a = from_dev(gpu, gbuf[0][i], len);
        b = from_dev(gpu, gbuf[1][i], len);

        snprintf(what, sizeof(what), "%s: %s, fused, against the ops one by "
                 "one", tn, names[i]);

        if (i == 0 || i == N_OUT - 1 || type == LLM_TYPE_F16) {
            ok(memcmp(a, b, len * 4) == 0, "%s: the same bits", what);
        } else {
            check(what, a, b, len, 1e-6);
        }

        snprintf(what, sizeof(what), "%s: %s, fused, against the CPU", tn,
                 names[i]);
        check(what, a, c, len, tol);

        free(a);
        free(b);
        free(c);
    }

    for (int i = 0; i <= N_OUT; i++) {
        cpu->free(cpu, cbuf[i]);
        gpu->free(gpu, gbuf[0][i]);
        gpu->free(gpu, gbuf[1][i]);
    }

    free(x);
    free(h);
    free(nw);

    while (n_mat_host > 0) {
        free(mat_host[--n_mat_host]);
    }
}


/*
 * Products of one input in a row, as a layer issues them: the GPU runs
 * Q, K and V in one launch and gate, up and SwiGLU in another.  Each
 * output must be the bits of the same product issued alone (a sync
 * after each), and the CPU's within the matmul tolerance; two products
 * into one buffer leave the second's; a fourth product of the same
 * input starts a new launch.
 */
static void
test_products(uint32_t type)
{
    int             n = 3, cols = 512, rq = 96, rk = 32, rf = 80;
    char            what[128];
    float          *x, *cx, *gx, *go[4], *co[4], *alone, *h, *hc;
    double          tol;
    llm_mat_t       cm[6], gm[6];
    llm_err_t       err = { 0 };
    const char     *tn = llm_ggml_type_name(type);
    static const char  *names[] = { "Q", "K", "V", "Q again" };

    tol = type == LLM_TYPE_F16 ? 1e-4 : 2e-2;

    mat_both(&cm[0], &gm[0], type, rq, cols);
    mat_both(&cm[1], &gm[1], type, rk, cols);
    mat_both(&cm[2], &gm[2], type, rk, cols);
    mat_both(&cm[3], &gm[3], type, rf, cols);
    mat_both(&cm[4], &gm[4], type, rf, cols);
    mat_both(&cm[5], &gm[5], type, rq, cols);

    x = rand_vec((size_t) n * cols, 1.0f);
    cx = to_dev(cpu, x, (size_t) n * cols * 4);
    gx = to_dev(gpu, x, (size_t) n * cols * 4);

    for (int i = 0; i < 4; i++) {
        go[i] = gpu->alloc(gpu, (size_t) n * rq * 4, &err);
        co[i] = cpu->alloc(cpu, (size_t) n * rq * 4, &err);
    }

    /* Q, K, V, and Q again (the set holds 3): no sync between */
    for (int i = 0; i < 4; i++) {
        gpu->matmul(gpu, go[i], gx, n, &gm[i == 3 ? 0 : i]);
        cpu->matmul(cpu, co[i], cx, n, &cm[i == 3 ? 0 : i]);
    }

    for (int i = 0; i < 4; i++) {
        int  rows = gm[i == 3 ? 0 : i].rows;

        h = from_dev(gpu, go[i], (size_t) n * rows);
        hc = from_dev(cpu, co[i], (size_t) n * rows);

        gpu->matmul(gpu, go[i], gx, n, &gm[i == 3 ? 0 : i]);
        alone = from_dev(gpu, go[i], (size_t) n * rows);

        ok(memcmp(h, alone, (size_t) n * rows * 4) == 0,
           "%s: %s in a set of products is the product alone, bit for bit",
           tn, names[i]);
        snprintf(what, sizeof(what), "%s: %s in a set against the CPU", tn,
                 names[i]);
        check(what, h, hc, (size_t) n * rows, tol);

        free(h);
        free(hc);
        free(alone);
    }

    /* gate, up, SwiGLU */
    gpu->matmul(gpu, go[0], gx, n, &gm[3]);
    gpu->matmul(gpu, go[1], gx, n, &gm[4]);
    gpu->silu_mul(gpu, go[0], go[1], (int64_t) n * rf);
    cpu->matmul(cpu, co[0], cx, n, &cm[3]);
    cpu->matmul(cpu, co[1], cx, n, &cm[4]);
    cpu->silu_mul(cpu, co[0], co[1], (int64_t) n * rf);

    h = from_dev(gpu, go[0], (size_t) n * rf);
    hc = from_dev(cpu, co[0], (size_t) n * rf);
    snprintf(what, sizeof(what), "%s: gate, up and SwiGLU in one launch "
             "against the CPU", tn);
    check(what, h, hc, (size_t) n * rf, tol);
    free(h);
    free(hc);

    h = from_dev(gpu, go[1], (size_t) n * rf);
    hc = from_dev(cpu, co[1], (size_t) n * rf);
    snprintf(what, sizeof(what), "%s: and up is still written", tn);
    check(what, h, hc, (size_t) n * rf, tol);
    free(h);
    free(hc);

    /* two products into one buffer: the second's */
    gpu->matmul(gpu, go[2], gx, n, &gm[0]);
    gpu->matmul(gpu, go[2], gx, n, &gm[5]);
    h = from_dev(gpu, go[2], (size_t) n * rq);
    gpu->matmul(gpu, go[3], gx, n, &gm[5]);
    alone = from_dev(gpu, go[3], (size_t) n * rq);
    ok(memcmp(h, alone, (size_t) n * rq * 4) == 0,
       "%s: two products into one buffer leave the second's", tn);
    free(h);
    free(alone);

    for (int i = 0; i < 4; i++) {
        gpu->free(gpu, go[i]);
        cpu->free(cpu, co[i]);
    }

    gpu->free(gpu, gx);
    cpu->free(cpu, cx);
    free(x);

    while (n_mat_host > 0) {
        free(mat_host[--n_mat_host]);
    }
}


/* the tests' pools: 128 blocks of 16 positions, 2 layers of kv_dim */
static void
pool_geometry(llm_kv_buf_t *kv, int kv_dim, int f16)
{
    kv->data = NULL;
    kv->f16 = f16;
    kv->n_blocks = 128;
    kv->block_size = 16;
    kv->n_layer = 2;
    kv->kv_dim = kv_dim;
    kv->layer_elems = 2 * 16 * (size_t) kv_dim;
    kv->block_elems = kv->layer_elems * 2;
}

/* a buffer of the backend holding bytes of host */
static float *
to_dev(llm_backend_t *be, const void *host, size_t bytes)
{
    float      *d;
    llm_err_t   err = { 0 };

    d = be->alloc(be, bytes, &err);
    if (d == NULL || be->write(be, d, host, bytes, &err) != LLM_OK) {
        diag("%s: %s", be->name, err.errstr);
        exit(1);
    }

    return d;
}


static float *
from_dev(llm_backend_t *be, const float *d, size_t n)
{
    float      *h = malloc((n > 0 ? n : 1) * sizeof(float));
    llm_err_t   err = { 0 };

    if (be->sync(be, &err) != LLM_OK
        || be->read(be, h, d, n * sizeof(float), &err) != LLM_OK)
    {
        diag("%s: %s", be->name, err.errstr);
    }

    return h;
}


/* a pool of the backend's from n host floats: f32, or rounded to f16 */
static void *
pool_to_dev(llm_backend_t *be, const llm_kv_buf_t *kv, const float *pool,
    size_t n)
{
    void      *d;
    uint16_t  *h;

    if (!kv->f16) {
        return to_dev(be, pool, n * sizeof(float));
    }

    h = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        h[i] = llm_fp32_to_fp16(pool[i]);
    }

    d = to_dev(be, h, n * sizeof(uint16_t));
    free(h);

    return d;
}


/* a pool's n elements back as floats */
static float *
pool_from_dev(llm_backend_t *be, const llm_kv_buf_t *kv, size_t n)
{
    float      *f;
    uint16_t   *h;
    llm_err_t   err = { 0 };

    if (!kv->f16) {
        return from_dev(be, kv->data, n);
    }

    f = malloc((n > 0 ? n : 1) * sizeof(float));
    h = malloc((n > 0 ? n : 1) * sizeof(uint16_t));

    if (be->sync(be, &err) != LLM_OK
        || be->read(be, h, kv->data, n * sizeof(uint16_t), &err) != LLM_OK)
    {
        diag("%s: %s", be->name, err.errstr);
    }

    for (size_t i = 0; i < n; i++) {
        f[i] = llm_fp16_to_fp32(h[i]);
    }

    free(h);
    return f;
}


static void
round16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = llm_fp16_to_fp32(llm_fp32_to_fp16(x[i]));
    }
}


static double
rel_l2(const float *a, const float *b, size_t n)
{
    double  d, num = 0.0, den = 0.0;

    for (size_t i = 0; i < n; i++) {
        d = (double) a[i] - (double) b[i];
        num += d * d;
        den += (double) b[i] * (double) b[i];
    }

    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}


/* a: the GPU's, b: the reference */
static void
check(const char *what, const float *a, const float *b, size_t n,
    double tol)
{
    double  e = rel_l2(a, b, n);

    ok(e <= tol, "%s: rel. L2 %.3g <= %.0e", what, e, tol);
}


static void
sync_both(void)
{
    llm_err_t  err = { 0 };

    if (cpu->sync(cpu, &err) != LLM_OK || gpu->sync(gpu, &err) != LLM_OK) {
        ok(0, "sync: %s", err.errstr);
    }
}


/* the same op on both backends: a, b host inputs of n floats */
static void
test_elementwise(void)
{
    int      rows = 7, dim = 4096;
    size_t   n = (size_t) rows * dim;
    float   *x, *y, *w, *b, *cx, *cy, *cw, *cb, *co, *gx, *gy, *gw, *gb,
            *go, *r1, *r2;

    x = rand_vec(n, 3.0f);
    y = rand_vec(n, 1.0f);
    w = rand_vec(dim, 1.0f);
    b = rand_vec(dim, 0.5f);

    cx = to_dev(cpu, x, n * 4);
    cy = to_dev(cpu, y, n * 4);
    cw = to_dev(cpu, w, dim * 4);
    cb = to_dev(cpu, b, dim * 4);
    co = to_dev(cpu, x, n * 4);
    gx = to_dev(gpu, x, n * 4);
    gy = to_dev(gpu, y, n * 4);
    gw = to_dev(gpu, w, dim * 4);
    gb = to_dev(gpu, b, dim * 4);
    go = to_dev(gpu, x, n * 4);

    cpu->rmsnorm(cpu, co, cx, cw, rows, dim, 1e-5f);
    gpu->rmsnorm(gpu, go, gx, gw, rows, dim, 1e-5f);
    r1 = from_dev(cpu, co, n);
    r2 = from_dev(gpu, go, n);
    check("rmsnorm (7, 4096)", r2, r1, n, 1e-5);
    free(r1);
    free(r2);

    /* per-head norms: rows of 8 (stories260K's heads), in place */
    cpu->rmsnorm(cpu, cx, cx, cw, (int64_t) n / 8, 8, 1e-6f);
    gpu->rmsnorm(gpu, gx, gx, gw, (int64_t) n / 8, 8, 1e-6f);
    r1 = from_dev(cpu, cx, n);
    r2 = from_dev(gpu, gx, n);
    check("rmsnorm in place, rows of 8", r2, r1, n, 1e-5);
    free(r1);
    free(r2);

    cpu->add_rmsnorm(cpu, co, cx, cy, cw, rows, dim, 1e-5f);
    gpu->add_rmsnorm(gpu, go, gx, gy, gw, rows, dim, 1e-5f);
    r1 = from_dev(cpu, co, n);
    r2 = from_dev(gpu, go, n);
    check("add_rmsnorm: the norm", r2, r1, n, 1e-5);
    free(r1);
    free(r2);
    r1 = from_dev(cpu, cx, n);
    r2 = from_dev(gpu, gx, n);
    check("add_rmsnorm: the sum", r2, r1, n, 1e-7);
    free(r1);
    free(r2);

    cpu->add(cpu, cx, cy, (int64_t) n);
    gpu->add(gpu, gx, gy, (int64_t) n);
    cpu->add_rows(cpu, cx, cb, rows, dim);
    gpu->add_rows(gpu, gx, gb, rows, dim);
    r1 = from_dev(cpu, cx, n);
    r2 = from_dev(gpu, gx, n);
    check("add, add_rows", r2, r1, n, 1e-7);
    free(r1);
    free(r2);

    cpu->silu_mul(cpu, cx, cy, (int64_t) n);
    gpu->silu_mul(gpu, gx, gy, (int64_t) n);
    r1 = from_dev(cpu, cx, n);
    r2 = from_dev(gpu, gx, n);
    check("silu_mul", r2, r1, n, 1e-6);
    free(r1);
    free(r2);

    cpu->free(cpu, cx);
    cpu->free(cpu, cy);
    cpu->free(cpu, cw);
    cpu->free(cpu, cb);
    cpu->free(cpu, co);
    gpu->free(gpu, gx);
    gpu->free(gpu, gy);
    gpu->free(gpu, gw);
    gpu->free(gpu, gb);
    gpu->free(gpu, go);
    free(x);
    free(y);
    free(w);
    free(b);
}


/*
 * A step of three sequences in a pool of 128 blocks of 16: STEP_PREFILL
 * has 37 prompt tokens at 0..36, one token at 300, 20 tokens at
 * 100..119; STEP_DECODE one token each, at 36, 300 and 600; STEP_LONG
 * 150 tokens at 30..179 (tiles of 64 that start and end mid-tile of
 * K/V), 70 at 0..69 and one at 200.  Block tables are scattered
 * permutations.  storage: STEP_STORAGE int32: 3 * 64 of block tables,
 * then 256 each of tokens, positions and segments.
 */
static const int32_t  *step_blocks[3];
static int32_t         step_nblocks[3];

static void
test_step(llm_step_t *st, int32_t *storage, int kind)
{
    int          n, t, decode;
    int32_t     *bt, *tok, *pos, *seg;
    const int   *first, *count;
    llm_err_t    err = { 0 };

    static const int  first_of[3][3] = {
        { 0, 300, 100 }, { 36, 300, 600 }, { 30, 0, 200 }
    };
    static const int  count_of[3][3] = {
        { 37, 1, 20 }, { 1, 1, 1 }, { 150, 70, 1 }
    };

    decode = kind == STEP_DECODE;
    first = first_of[kind];
    count = count_of[kind];

    bt = storage;
    tok = storage + 3 * 64;
    pos = tok + 256;
    seg = pos + 256;

    /* sequence s owns blocks s, s + 3, s + 6 ... in a shuffled order */
    for (int s = 0; s < 3; s++) {
        for (int j = 0; j < 40; j++) {
            bt[s * 64 + j] = (int32_t) ((j * 7 % 40) * 3 + s);
        }

        step_blocks[s] = bt + s * 64;
    }

    t = 0;
    for (int s = 0; s < 3; s++) {
        n = count[s];

        for (int j = 0; j < n; j++, t++) {
            tok[t] = (int32_t) ((t * 37 + 11) % 512);
            pos[t] = first[s] + j;
            seg[t] = s;
        }

        step_nblocks[s] = pos[t - 1] / 16 + 1;
    }

    st->n_tok = t;
    st->tokens = tok;
    st->pos = pos;
    st->seg = seg;
    st->n_segs = 3;
    st->blocks = step_blocks;
    st->n_blocks = step_nblocks;
    st->block_size = 16;
    st->decode = decode;

    if (!ok(cpu->step(cpu, st, &err) == LLM_OK
            && gpu->step(gpu, st, &err) == LLM_OK,
            "a step of %d tokens (%s)", t, decode ? "decode" : "prefill"))
    {
        diag("%s", err.errstr);
    }
}


static void
test_rope(void)
{
    int          hd = 64, nh = 8, T;
    size_t       n;
    float       *x, *freqs, *cx, *gx, *ccs, *gcs, *cf, *gf, *r1, *r2;
    char         what[96];
    int32_t      storage[STEP_STORAGE];
    llm_step_t   st;
    llm_rope_t   rp;

    test_step(&st, storage, 0);
    T = st.n_tok;
    n = (size_t) T * nh * hd;

    freqs = rand_vec(hd / 2, 1.0f);
    for (int i = 0; i < hd / 2; i++) {
        freqs[i] = 1.0f + fabsf(freqs[i]) * 8.0f;
    }

    cf = to_dev(cpu, freqs, hd / 2 * 4);
    gf = to_dev(gpu, freqs, hd / 2 * 4);

    for (int variant = 0; variant < 4; variant++) {
        int  neox = variant & 1, with_freqs = variant >> 1;

        rp.n_rot = variant == 3 ? hd / 2 : hd;     /* partial rotation */
        rp.base = with_freqs ? 500000.0f : 10000.0f;
        rp.scale = variant == 1 ? 0.25f : 1.0f;

        x = rand_vec(n, 2.0f);
        cx = to_dev(cpu, x, n * 4);
        gx = to_dev(gpu, x, n * 4);
        ccs = to_dev(cpu, x, (size_t) T * rp.n_rot * 4);
        gcs = to_dev(gpu, x, (size_t) T * rp.n_rot * 4);

        rp.freqs = with_freqs ? cf : NULL;
        cpu->rope_cache(cpu, ccs, &rp);
        rp.freqs = with_freqs ? gf : NULL;
        gpu->rope_cache(gpu, gcs, &rp);

        r1 = from_dev(cpu, ccs, (size_t) T * rp.n_rot);
        r2 = from_dev(gpu, gcs, (size_t) T * rp.n_rot);
        snprintf(what, sizeof(what), "rope_cache (n_rot %d%s%s)", rp.n_rot,
                 with_freqs ? ", factors" : "",
                 rp.scale != 1.0f ? ", scaled" : "");
        check(what, r2, r1, (size_t) T * rp.n_rot, 1e-5);
        free(r1);
        free(r2);

        cpu->rope(cpu, cx, nh, hd, rp.n_rot, neox, ccs);
        gpu->rope(gpu, gx, nh, hd, rp.n_rot, neox, gcs);

        r1 = from_dev(cpu, cx, n);
        r2 = from_dev(gpu, gx, n);
        snprintf(what, sizeof(what), "rope %s (n_rot %d)",
                 neox ? "neox" : "normal", rp.n_rot);
        check(what, r2, r1, n, 1e-5);
        free(r1);
        free(r2);

        cpu->free(cpu, cx);
        cpu->free(cpu, ccs);
        gpu->free(gpu, gx);
        gpu->free(gpu, gcs);
        free(x);
    }

    cpu->free(cpu, cf);
    gpu->free(gpu, gf);
    free(freqs);
}


/* a rope_store output (g) against the CPU's rope (c) and the GPU's own
 * (g3): n floats each */
static void
rotated_both(const char *what, const float *c, const float *g,
    const float *g3, size_t n)
{
    char    label[64];
    float  *r1, *r2, *r3;

    r1 = from_dev(cpu, c, n);
    r2 = from_dev(gpu, g, n);
    r3 = from_dev(gpu, g3, n);

    snprintf(label, sizeof(label), "%s against the CPU", what);
    check(label, r2, r1, n, 1e-5);
    ok(memcmp(r2, r3, n * 4) == 0, "%s: the bits of rope", what);

    free(r1);
    free(r2);
    free(r3);
}


/*
 * rope_store (q and k rotated, then k and v into layer 1 of a pool of
 * 128 blocks of 16, the step's tokens across block boundaries) against
 * the CPU's rope, rope, kv_store, and bit for bit against the GPU's own
 * three ops.  Against the CPU, the pool is the same bits but for the
 * rotated dims of the stored keys, which are held to rope's tolerance.
 */
static void
test_rope_store(int n_head, int n_head_kv, int hd, int n_rot, int neox,
    int decode, int f16)
{
    int            T, kv_dim, blk;
    char           what[128];
    float         *pool, *q, *k, *v, *r1, *r2, *r3, *e1, *e2;
    size_t         pool_n, nq, nk, ne, off;
    int32_t        storage[STEP_STORAGE];
    llm_step_t     st;
    llm_rope_t     rp;
    llm_kv_buf_t   ckv, gkv, gkv3;

    snprintf(what, sizeof(what), "rope_store %s, %s: %d heads (%d KV) of "
             "%d, n_rot %d, %s cache", decode ? "decode" : "prefill",
             neox ? "neox" : "normal", n_head, n_head_kv, hd, n_rot,
             f16 ? "f16" : "f32");

    if (!ok(gpu->rope_store != NULL, "%s: the CUDA backend has it", what))
    {
        return;
    }

    kv_dim = n_head_kv * hd;

    pool_geometry(&ckv, kv_dim, 0);
    pool_geometry(&gkv, kv_dim, f16);
    gkv3 = gkv;

    pool_n = ckv.block_elems * 128;
    pool = rand_vec(pool_n, 1.0f);
    ckv.data = to_dev(cpu, pool, pool_n * 4);
    gkv.data = pool_to_dev(gpu, &gkv, pool, pool_n);
    gkv3.data = pool_to_dev(gpu, &gkv3, pool, pool_n);

    test_step(&st, storage, decode);
    T = st.n_tok;

    nq = (size_t) T * n_head * hd;
    nk = (size_t) T * kv_dim;
    q = rand_vec(nq, 2.0f);
    k = rand_vec(nk, 2.0f);
    v = rand_vec(nk, 1.0f);

    rp.n_rot = n_rot;
    rp.base = 10000.0f;
    rp.scale = 1.0f;
    rp.freqs = NULL;

    {
        float  *cq = to_dev(cpu, q, nq * 4);
        float  *ck = to_dev(cpu, k, nk * 4);
        float  *cv = to_dev(cpu, v, nk * 4);
        float  *ccs = to_dev(cpu, q, (size_t) T * n_rot * 4);
        float  *gq = to_dev(gpu, q, nq * 4);
        float  *gk = to_dev(gpu, k, nk * 4);
        float  *gv = to_dev(gpu, v, nk * 4);
        float  *gq3 = to_dev(gpu, q, nq * 4);
        float  *gk3 = to_dev(gpu, k, nk * 4);
        float  *gcs = to_dev(gpu, q, (size_t) T * n_rot * 4);

        cpu->rope_cache(cpu, ccs, &rp);
        gpu->rope_cache(gpu, gcs, &rp);

        cpu->rope(cpu, cq, n_head, hd, n_rot, neox, ccs);
        cpu->rope(cpu, ck, n_head_kv, hd, n_rot, neox, ccs);
        cpu->kv_store(cpu, &ckv, 1, ck, cv);

        gpu->rope(gpu, gq3, n_head, hd, n_rot, neox, gcs);
        gpu->rope(gpu, gk3, n_head_kv, hd, n_rot, neox, gcs);
        gpu->kv_store(gpu, &gkv3, 1, gk3, gv);

        gpu->rope_store(gpu, gq, gk, gv, n_head, n_head_kv, hd, n_rot,
                        neox, gcs, &gkv, 1);
        sync_both();

        rotated_both("  q", cq, gq, gq3, nq);
        rotated_both("  k", ck, gk, gk3, nk);

        cpu->free(cpu, cq);
        cpu->free(cpu, ck);
        cpu->free(cpu, cv);
        cpu->free(cpu, ccs);
        gpu->free(gpu, gq);
        gpu->free(gpu, gk);
        gpu->free(gpu, gv);
        gpu->free(gpu, gq3);
        gpu->free(gpu, gk3);
        gpu->free(gpu, gcs);
    }

    r1 = from_dev(cpu, ckv.data, pool_n);
    r2 = pool_from_dev(gpu, &gkv, pool_n);
    r3 = pool_from_dev(gpu, &gkv3, pool_n);
    ok(memcmp(r2, r3, pool_n * 4) == 0,
       "  the pool: the bits of rope, rope, kv_store");

    /* an f16 cache holds the CPU's values rounded */
    if (f16) {
        round16(r1, pool_n);
    }

    /* the stored keys' rotated dims out of both pools, to a tolerance;
     * the rest of the pools the same bits (no slot written amiss) */
    ne = (size_t) T * n_head_kv * n_rot;
    e1 = malloc((ne > 0 ? ne : 1) * sizeof(float));
    e2 = malloc((ne > 0 ? ne : 1) * sizeof(float));
    ne = 0;

    for (int t = 0; t < T; t++) {
        blk = st.blocks[st.seg[t]][st.pos[t] / 16];
        off = (size_t) blk * ckv.block_elems + ckv.layer_elems
              + (size_t) (st.pos[t] % 16) * kv_dim;

        /* memcpy and memset, not a loop: gcc 12 -O2 distributes such a
         * loop into calls of its own and zeroes r2 before copying it */
        for (int h = 0; h < n_head_kv; h++, ne += n_rot) {
            memcpy(e1 + ne, r1 + off + h * hd, n_rot * sizeof(float));
            memcpy(e2 + ne, r2 + off + h * hd, n_rot * sizeof(float));
            memset(r1 + off + h * hd, 0, n_rot * sizeof(float));
            memset(r2 + off + h * hd, 0, n_rot * sizeof(float));
        }
    }

    check("  the stored keys' rotated dims against the CPU", e2, e1, ne,
          f16 ? 1e-3 : 1e-5);
    ok(memcmp(r1, r2, pool_n * 4) == 0,
       "  the rest of the pool: the CPU's bits");

    free(e1);
    free(e2);
    free(r1);
    free(r2);
    free(r3);

    cpu->free(cpu, ckv.data);
    gpu->free(gpu, gkv.data);
    gpu->free(gpu, gkv3.data);
    free(pool);
    free(q);
    free(k);
    free(v);
}


/*
 * The embedding and the matmul of one weight type: rows of random
 * values quantized by llm_quantize_row; the GPU against the decoded f32
 * product (exact arithmetic on the same weights) and against
 * llm_matmul, for 1, 3, 8 (GEMV) and 37 (GEMM) tokens, and the host
 * variant.
 */
static void
test_embed_matmul(uint32_t type, int cols)
{
    int             rows = 300, n_tok;
    char            what[128];
    float          *wf, *deq, *x, *ref, *cx, *gx, *co, *go, *r1, *r2, *host;
    size_t          rb;
    uint8_t        *wq;
    int32_t         storage[STEP_STORAGE];
    llm_mat_t       cm, gm;
    llm_step_t      st;
    llm_err_t       err = { 0 };
    const char     *tn = llm_ggml_type_name(type);

    static const int  ns[] = { 1, 3, 8, 37 };

    rb = llm_ggml_row_size(type, cols);
    wf = rand_vec((size_t) rows * cols, 1.0f);
    wq = malloc(rb * rows);
    deq = malloc((size_t) rows * cols * sizeof(float));

    for (int r = 0; r < rows; r++) {
        (void) llm_quantize_row(type, wf + (size_t) r * cols, wq + r * rb,
                                cols);
        (void) llm_dequant_row(type, wq + r * rb, deq + (size_t) r * cols,
                               cols);
    }

    cm.data = cpu->upload(cpu, wq, rb * rows, &err);
    gm.data = gpu->upload(gpu, wq, rb * rows, &err);
    cm.type = gm.type = type;
    cm.rows = gm.rows = rows;
    cm.cols = gm.cols = cols;
    cm.row_bytes = gm.row_bytes = rb;

    if (!ok(cm.data != NULL && gm.data != NULL, "%s: weights uploaded",
            tn))
    {
        diag("%s", err.errstr);
        return;
    }

    /* embedding rows of the step's tokens (all < 512: rows wrap) */
    test_step(&st, storage, 0);
    for (int t = 0; t < st.n_tok; t++) {
        ((int32_t *) st.tokens)[t] %= rows;
    }
    (void) cpu->step(cpu, &st, &err);
    (void) gpu->step(gpu, &st, &err);

    co = cpu->alloc(cpu, (size_t) st.n_tok * cols * 4, &err);
    go = gpu->alloc(gpu, (size_t) st.n_tok * cols * 4, &err);
    cpu->embed(cpu, co, &cm);
    gpu->embed(gpu, go, &gm);
    r1 = from_dev(cpu, co, (size_t) st.n_tok * cols);
    r2 = from_dev(gpu, go, (size_t) st.n_tok * cols);
    snprintf(what, sizeof(what), "%s: embedding of %d tokens", tn,
             st.n_tok);
    check(what, r2, r1, (size_t) st.n_tok * cols, 1e-6);
    free(r1);
    free(r2);
    cpu->free(cpu, co);
    gpu->free(gpu, go);

    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        n_tok = ns[k];
        x = rand_vec((size_t) n_tok * cols, 1.0f);
        ref = malloc((size_t) n_tok * rows * sizeof(float));

        for (int t = 0; t < n_tok; t++) {
            for (int r = 0; r < rows; r++) {
                double  s = 0.0;

                for (int i = 0; i < cols; i++) {
                    s += (double) deq[(size_t) r * cols + i]
                         * (double) x[(size_t) t * cols + i];
                }

                ref[(size_t) t * rows + r] = (float) s;
            }
        }

        cx = to_dev(cpu, x, (size_t) n_tok * cols * 4);
        gx = to_dev(gpu, x, (size_t) n_tok * cols * 4);
        co = cpu->alloc(cpu, (size_t) n_tok * rows * 4, &err);
        go = gpu->alloc(gpu, (size_t) n_tok * rows * 4, &err);

        cpu->matmul(cpu, co, cx, n_tok, &cm);
        gpu->matmul(gpu, go, gx, n_tok, &gm);
        r1 = from_dev(cpu, co, (size_t) n_tok * rows);
        r2 = from_dev(gpu, go, (size_t) n_tok * rows);

        if (type == LLM_TYPE_F32) {
            snprintf(what, sizeof(what), "%s: matmul of %d tokens", tn,
                     n_tok);
            check(what, r2, r1, (size_t) n_tok * rows, 1e-5);

        } else if (type == LLM_TYPE_F16 || type == LLM_TYPE_BF16) {
            snprintf(what, sizeof(what), "%s: matmul of %d tokens (x "
                     "rounded alike)", tn, n_tok);
            check(what, r2, r1, (size_t) n_tok * rows,
                  type == LLM_TYPE_F16 ? 1e-4 : 1e-3);

        } else {
            snprintf(what, sizeof(what), "%s: matmul of %d tokens vs the "
                     "decoded f32 product (%s)", tn, n_tok,
                     n_tok <= 8 ? "GEMV" : "f16 GEMM");
            check(what, r2, ref, (size_t) n_tok * rows,
                  n_tok <= 8 ? 1e-5 : 2e-3);

            snprintf(what, sizeof(what), "%s: matmul of %d tokens vs "
                     "llm_matmul (8-bit x)", tn, n_tok);
            check(what, r2, r1, (size_t) n_tok * rows, 2e-2);
        }

        free(r2);

        /* the same into host memory */
        host = malloc((size_t) n_tok * rows * sizeof(float));
        gpu->matmul_host(gpu, host, gx, n_tok, &gm);
        sync_both();
        snprintf(what, sizeof(what), "%s: matmul_host of %d tokens", tn,
                 n_tok);
        r2 = from_dev(gpu, go, (size_t) n_tok * rows);
        check(what, host, r2, (size_t) n_tok * rows, 1e-6);

        free(host);
        free(r1);
        free(r2);
        free(ref);
        free(x);
        cpu->free(cpu, cx);
        cpu->free(cpu, co);
        gpu->free(gpu, gx);
        gpu->free(gpu, go);
    }

    free(wf);
    free(wq);
    free(deq);
}


/*
 * KV stores and attention over a pool of 128 blocks of 16 positions,
 * filled with random keys and values, for a step of test_step(): the
 * prefill kernel (tiles of queries), or the decode kernel (positions
 * split in chunks of LLM_CUDA_ATT_CHUNK, here up to 10 of them).  With
 * f16, the GPU's pool is f16 and the backend is told that attention may
 * round to f16 (llm_reserve_t): the stores must leave the CPU's values
 * rounded, the CUDA-core kernels must compute the CPU's attention over
 * the rounded pool (1e-4), and prefill heads of a multiple of 16 dims go to the
 * tensor cores, which must be within 3e-3 of the CPU's and nearer the
 * CPU's on q and the pool rounded to f16 than on them as they are (the
 * rounding happened: the tensor cores ran).
 */
static void
test_attention(int n_head, int n_head_kv, int hd, int kind, int f16)
{
    int            T, kv_dim, tc;
    char           what[160];
    float         *pool, *k, *v, *q, *r1, *r2, *r3;
    size_t         pool_n, n;
    int32_t        storage[STEP_STORAGE];
    llm_err_t      err = { 0 };
    llm_step_t     st;
    llm_reserve_t  r;
    llm_kv_buf_t   ckv, gkv;

    tc = f16 && kind != STEP_DECODE && hd % 16 == 0;

    r = reserved;
    r.att_f16 = f16;
    if (!ok(gpu->reserve(gpu, &r, &err) == LLM_OK, "reserved, att_f16 %d",
            f16))
    {
        diag("%s", err.errstr);
    }

    kv_dim = n_head_kv * hd;

    pool_geometry(&ckv, kv_dim, 0);
    pool_geometry(&gkv, kv_dim, f16);

    pool_n = ckv.block_elems * 128;
    pool = rand_vec(pool_n, 1.0f);
    ckv.data = to_dev(cpu, pool, pool_n * 4);
    gkv.data = pool_to_dev(gpu, &gkv, pool, pool_n);

    test_step(&st, storage, kind);
    T = st.n_tok;

    /* layer 1's slots of the step's tokens get new keys and values */
    k = rand_vec((size_t) T * kv_dim, 1.0f);
    v = rand_vec((size_t) T * kv_dim, 1.0f);
    {
        float  *ck = to_dev(cpu, k, (size_t) T * kv_dim * 4);
        float  *cv = to_dev(cpu, v, (size_t) T * kv_dim * 4);
        float  *gk = to_dev(gpu, k, (size_t) T * kv_dim * 4);
        float  *gv = to_dev(gpu, v, (size_t) T * kv_dim * 4);

        cpu->kv_store(cpu, &ckv, 1, ck, cv);
        gpu->kv_store(gpu, &gkv, 1, gk, gv);

        r1 = from_dev(cpu, ckv.data, pool_n);
        r2 = pool_from_dev(gpu, &gkv, pool_n);
        if (f16) {
            round16(r1, pool_n);
        }
        snprintf(what, sizeof(what), "kv_store of %d tokens, kv_dim %d, %s "
                 "cache", T, kv_dim, f16 ? "f16" : "f32");
        ok(memcmp(r1, r2, pool_n * sizeof(float)) == 0, "%s: the same pool",
           what);
        free(r2);

        cpu->free(cpu, ck);
        cpu->free(cpu, cv);
        gpu->free(gpu, gk);
        gpu->free(gpu, gv);
    }

    n = (size_t) T * n_head * hd;
    q = rand_vec(n, 2.0f);
    {
        float  *cq = to_dev(cpu, q, n * 4);
        float  *gq = to_dev(gpu, q, n * 4);
        float  *co = to_dev(cpu, q, n * 4);
        float  *go = to_dev(gpu, q, n * 4);

        cpu->attention(cpu, co, cq, &ckv, 1, n_head, hd);
        gpu->attention(gpu, go, gq, &gkv, 1, n_head, hd);

        r3 = from_dev(cpu, co, n);
        r2 = from_dev(gpu, go, n);
        snprintf(what, sizeof(what), "attention %s%s: %d tokens, %d heads "
                 "(%d KV) of %d, %s cache",
                 kind == STEP_DECODE ? "decode" : "prefill",
                 tc ? " (tensor cores)" : "", T, n_head, n_head_kv, hd,
                 f16 ? "f16" : "f32");
        check(what, r2, r3, n, f16 ? 3e-3 : 1e-4);

        if (f16) {
            /* the CPU's on the inputs rounded: the pool as the GPU holds
             * it (r1), and q where the tensor cores round it */
            float   *rq = malloc(n * sizeof(float));
            double   e_raw, e_rounded;

            memcpy(rq, q, n * sizeof(float));
            if (tc) {
                round16(rq, n);
            }

            if (cpu->write(cpu, ckv.data, r1, pool_n * 4, &err) != LLM_OK
                || cpu->write(cpu, cq, rq, n * 4, &err) != LLM_OK)
            {
                diag("%s", err.errstr);
            }

            cpu->attention(cpu, co, cq, &ckv, 1, n_head, hd);

            e_raw = rel_l2(r2, r3, n);
            free(r3);
            r3 = from_dev(cpu, co, n);
            e_rounded = rel_l2(r2, r3, n);

            if (tc) {
                ok(e_rounded < e_raw, "%s: nearer the CPU's on f16 inputs "
                   "(%.3g) than on f32 (%.3g)", what, e_rounded, e_raw);
            } else {
                check("  against the CPU's over the rounded pool", r2, r3, n,
                      1e-4);
            }

            free(rq);
        }

        free(r2);
        free(r3);

        cpu->free(cpu, cq);
        cpu->free(cpu, co);
        gpu->free(gpu, gq);
        gpu->free(gpu, go);
    }

    free(r1);
    cpu->free(cpu, ckv.data);
    gpu->free(gpu, gkv.data);
    free(pool);
    free(k);
    free(v);
    free(q);

    if (f16 && !ok(gpu->reserve(gpu, &reserved, &err) == LLM_OK,
                   "reserved again"))
    {
        diag("%s", err.errstr);
    }
}


/* tokens drawn on the device against the CPU twin, same seeds */
static void
test_sample(void)
{
    int                   rows = 64, n_vocab = 32000, same, same_arg;
    float                *logits, *gl;
    int32_t               a[64], b[64];
    llm_err_t             err = { 0 };
    llm_sample_params_t   p[64];

    logits = malloc((size_t) rows * n_vocab * sizeof(float));

    /* a peaked row: a few large logits over a noisy floor */
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < n_vocab; i++) {
            logits[(size_t) r * n_vocab + i] = frand() * 3.0f;
        }

        for (int j = 0; j < 20; j++) {
            logits[(size_t) r * n_vocab + (rng >> 20) % n_vocab] +=
                8.0f + frand();
            (void) frand();
        }
    }

    gl = to_dev(gpu, logits, (size_t) rows * n_vocab * 4);

    for (int r = 0; r < rows; r++) {
        memset(&p[r], 0, sizeof(p[r]));
        p[r].temperature = 0.0f;
    }

    if (ok(gpu->sample != NULL
           && gpu->sample(gpu, a, gl, rows, n_vocab, p, &err) == LLM_OK
           && cpu->sample(cpu, b, logits, rows, n_vocab, p, &err) == LLM_OK,
           "argmax of %d rows", rows))
    {
        same_arg = 0;
        for (int r = 0; r < rows; r++) {
            same_arg += a[r] == b[r];
        }
        is_int(same_arg, rows, "argmax: every row as the CPU's");
    }

    for (int r = 0; r < rows; r++) {
        p[r].temperature = 0.5f + (float) (r % 4) * 0.25f;
        p[r].top_k = (r % 3 == 0) ? 0 : 5 + r;
        p[r].top_p = (r % 5 == 0) ? 1.0f : 0.5f + 0.01f * (float) r;
        p[r].min_p = (r % 2 == 0) ? 0.0f : 0.02f;
        p[r].seed = 1000003ULL * (uint64_t) r + 7;
        p[r].counter = (uint64_t) r;
    }

    if (ok(gpu->sample(gpu, a, gl, rows, n_vocab, p, &err) == LLM_OK
           && cpu->sample(cpu, b, logits, rows, n_vocab, p, &err) == LLM_OK,
           "sampling %d rows (top-k, top-p, min-p, temperatures)", rows))
    {
        same = 0;
        for (int r = 0; r < rows; r++) {
            same += a[r] == b[r];

            if (a[r] != b[r]) {
                diag("row %d: device %d, host %d", r, a[r], b[r]);
            }
        }

        /* a draw within rounding of a boundary may differ */
        ok(same >= rows - 2, "sampling: %d of %d rows as the CPU's twin",
           same, rows);
    }

    gpu->free(gpu, gl);
    free(logits);
}


/*
 * A block as it crosses to the host (the Redis tier's bytes) out of the
 * CPU's pool and the GPU's after the same steps: within tol; the GPU
 * holds f16 blocks for a model that is not f32.  The CPU's block into a
 * free block of the GPU's pool and out again: its bits, rounded to f16
 * where the GPU's pool is.
 */
static void
test_block_copy(const char *name, llm_model_t *m, llm_kv_pool_t *pc,
    llm_kv_pool_t *pg, double tol)
{
    int      f32;
    size_t   len;
    float   *bc, *bg, *bb;

    f32 = strstr(name, "f32") != NULL || strstr(name, "stories") != NULL;
    ok(llm_kv_pool_f16(pg) == !f32, "%s: the GPU's KV cache is %s", name,
       f32 ? "f32" : "f16");

    len = llm_kv_block_bytes(m, 16);
    bc = malloc(len);
    bg = malloc(len);
    bb = malloc(len);

    if (!ok(llm_kv_block_read(pc, 0, bc, len) == LLM_OK
            && llm_kv_block_read(pg, 0, bg, len) == LLM_OK,
            "%s: a block out of both pools", name))
    {
        goto done;
    }

    check("  the GPU's block against the CPU's", bg, bc, len / 4, tol);

    if (!ok(llm_kv_block_write(pg, 24, bc, len) == LLM_OK
            && llm_kv_block_read(pg, 24, bb, len) == LLM_OK,
            "%s: the CPU's block into the GPU's pool and out", name))
    {
        goto done;
    }

    if (!f32) {
        round16(bc, len / 4);
    }

    ok(memcmp(bb, bc, len) == 0, "  its bits%s", f32 ? "" : ", rounded");

done:

    free(bc);
    free(bg);
    free(bb);
}


/*
 * A fixture model on both backends: 48 tokens, the first 16 as one
 * prefill, then one at a time (decode: recorded as a graph on the
 * second step of the shape, replayed after), then three sequences
 * decoding together; the logits of each step within tol.
 */
static void
test_model(const char *name, double tol)
{
    int                n_vocab;
    char               path[1024];
    float             *lc, *lg, worst, e;
    const char        *dir;
    int32_t            toks[48], blocks[3][8];
    llm_kv_t          *kc, *kg;
    llm_err_t          err = { 0 };
    llm_model_t       *mc, *mg;
    struct stat        sb;
    llm_kv_pool_t     *pc, *pg;
    llm_batch_seq_t    seqs[3];
    llm_model_opts_t   o;

    dir = getenv("LLM_FIXTURES");
    snprintf(path, sizeof(path), "%s/models/%s.gguf",
             dir != NULL && *dir != '\0' ? dir : "../shared/fixtures", name);

    if (stat(path, &sb) != 0) {
        ok(1, "# SKIP %s: not in the fixtures", name);
        return;
    }

    memset(&o, 0, sizeof(o));
    o.backend = "cuda";

    if (!ok(llm_model_load(&mc, path, &err) == LLM_OK
            && llm_model_load_opts(&mg, path, &o, &err) == LLM_OK,
            "%s loads on the CPU and the GPU", name))
    {
        diag("%s", err.errstr);
        return;
    }

    n_vocab = llm_model_config(mc)->n_vocab;
    lc = malloc(3 * (size_t) n_vocab * sizeof(float));
    lg = malloc(3 * (size_t) n_vocab * sizeof(float));
    kc = llm_kv_new(mc, 48, &err);
    kg = llm_kv_new(mg, 48, &err);

    for (int i = 0; i < 48; i++) {
        toks[i] = (int32_t) (1 + (i * 97 + 13) % (n_vocab - 1));
    }

    worst = 0.0f;

    for (int pos = 0; pos < 48; pos += pos == 0 ? 16 : 1) {
        int  n = pos == 0 ? 16 : 1;

        if (llm_model_forward(mc, kc, toks + pos, n, pos, lc, 0, &err)
                != LLM_OK
            || llm_model_forward(mg, kg, toks + pos, n, pos, lg, 0, &err)
               != LLM_OK)
        {
            ok(0, "%s: step at %d: %s", name, pos, err.errstr);
            break;
        }

        e = (float) rel_l2(lg, lc, (size_t) n_vocab);
        worst = e > worst || isnan(e) ? e : worst;
    }

    ok(worst <= tol, "%s: a prefill of 16, then 32 decode steps (graphs): "
       "worst rel. L2 %.3g <= %.0e", name, worst, tol);

    /* three sequences at once, 8 steps of the same shape */
    pc = llm_kv_pool_new(mc, 25, 16, &err);
    pg = llm_kv_pool_new(mg, 25, 16, &err);

    for (int s = 0; s < 3; s++) {
        for (int j = 0; j < 8; j++) {
            blocks[s][j] = (int32_t) (s + 3 * j);
        }
    }

    worst = 0.0f;

    for (int step = 0; step < 12 && pc != NULL && pg != NULL; step++) {
        for (int s = 0; s < 3; s++) {
            seqs[s].tokens = toks + (step == 0 ? 0 : 3 + step + s);
            seqs[s].n_tokens = step == 0 ? 4 + s : 1;
            seqs[s].pos = step == 0 ? 0 : 3 + s + step;
            seqs[s].blocks = blocks[s];
            seqs[s].n_blocks = 8;
        }

        for (int s = 0; s < 3; s++) {
            seqs[s].logits = lc + (size_t) s * n_vocab;
        }

        if (llm_model_forward_batch(mc, pc, seqs, 3, &err) != LLM_OK) {
            ok(0, "%s: batch step %d (cpu): %s", name, step, err.errstr);
            break;
        }

        for (int s = 0; s < 3; s++) {
            seqs[s].logits = lg + (size_t) s * n_vocab;
        }

        if (llm_model_forward_batch(mg, pg, seqs, 3, &err) != LLM_OK) {
            ok(0, "%s: batch step %d (cuda): %s", name, step, err.errstr);
            break;
        }

        e = (float) rel_l2(lg, lc, 3 * (size_t) n_vocab);
        worst = e > worst || isnan(e) ? e : worst;
    }

    ok(worst <= tol, "%s: 3 sequences, 11 batched decode steps: worst "
       "rel. L2 %.3g <= %.0e", name, worst, tol);

    if (pc != NULL && pg != NULL) {
        test_block_copy(name, mc, pc, pg, tol);
    }

    llm_kv_pool_free(pc);
    llm_kv_pool_free(pg);
    llm_kv_free(kc);
    llm_kv_free(kg);
    free(lc);
    free(lg);
    llm_model_free(mg);
    llm_model_free(mc);
}
