/*
 * Copyright (C) ngx_llm developers
 *
 * The CUDA backend: llm_backend_t on one GPU.  Everything runs on one
 * non-blocking stream, with one cuBLAS handle bound to it and a
 * workspace of its own; weights live in device arenas (a few large
 * allocations, bump-allocated); a step's per-token data crosses in one
 * copy, from pinned memory.  Ops are launches (kernels/llm_kernels.h),
 * never waits: the first failure is kept and sync() reports it.
 *
 * Matrix products: f32, f16 and bf16 weights go to cuBLAS (f16/bf16
 * activations rounded as the CPU rounds them, f32 accumulation);
 * quantized weights go to the GEMV kernels up to LLM_CUDA_GEMV_MAX
 * tokens, and beyond, to cuBLAS on slices of rows decoded to f16.
 *
 * Decode steps (one token per sequence) are recorded as CUDA graphs per
 * batch shape: the second time a shape is seen its ops are captured,
 * from then on replayed by one launch.  Everything a replay reads that
 * changes between steps (tokens, positions, block tables) is in the
 * step's device buffer, at offsets that depend on the shape only.
 * LLM_CUDA_GRAPHS=0 turns graphs off.
 *
 * Built without CUDA (plain make) only the stubs at the end remain.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_backend.h"
#include "llm_log.h"

#ifdef LLM_CUDA

#include <cuda_runtime_api.h>
#include <cublas_v2.h>

#include "common.cuh"
#include "llm_kernels.h"
#include "llm_nccl.h"


#define LLM_CUDA_ARENA       ((size_t) 256 << 20)  /* weight chunks */
#define LLM_CUDA_ALIGN       256
#define LLM_CUDA_BLAS_WS     ((size_t) 32 << 20)
#define LLM_CUDA_STAGE_ROWS  16         /* rows of matmul_host per copy */
#define LLM_CUDA_DEQ_ELEMS   ((size_t) 16 << 20)   /* f16 weights decoded
                                                    * per GEMM slice */
#define LLM_CUDA_N_GRAPHS    64


typedef struct llm_cuda_chunk_s  llm_cuda_chunk_t;

struct llm_cuda_chunk_s {
    llm_cuda_chunk_t    *next;
    char                *base;
    size_t               size;
    size_t               used;
};


typedef struct {
    uint64_t             key;
    int                  seen;          /* steps of this shape so far */
    cudaGraphExec_t      exec;          /* NULL until captured */
    uint64_t             used;          /* tick of the last use (LRU) */
} llm_cuda_graph_t;


typedef struct {
    int                  device;
    cudaStream_t         stream;
    cublasHandle_t       blas;
    void                *blas_ws;
    llm_cuda_chunk_t    *arena;

    /* the step: the host's description and its device copy */
    llm_step_t           st;
    llm_cuda_step_t      dst;
    int32_t             *d_step;
    int32_t             *h_step;        /* pinned */
    size_t               step_cap;      /* int32s in each */
    int                  n_split;       /* decode attention splits */

    /* scratch, sized by reserve() */
    llm_reserve_t        r;
    void                *act16;         /* (max_tok, max_cols) f16/bf16 */
    const float         *act16_x;       /* what act16 holds, rounded */
    int                  act16_n;
    int                  act16_cols;
    uint32_t             act16_type;

    /* decode products not launched yet: one input, launched together
     * by the next op that is not one of them (llm_cuda_defer) */
    llm_cuda_gemv_set_t  pend;
    const float         *pend_x;
    int                  pend_n;
    int                  pend_cols;
    uint32_t             pend_type;

    /* an RMSNorm not launched yet, after a residual add a product did:
     * it joins the products of its output that follow, or is launched
     * on its own by whatever else comes (llm_cuda_add_rmsnorm_op) */
    struct {
        float           *out;
        float           *x;
        const float     *w;
        int64_t          n_rows;
        int              dim;
        float            eps;
        int              on;
    } norm;
    void                *deq16;         /* LLM_CUDA_DEQ_ELEMS f16 */
    float               *partial;       /* decode attention partials */
    size_t               partial_cap;   /* floats */
    unsigned int        *arrived;       /* (max_tok, n_head) splits done,
                                         * 0 between launches */
    float               *d_stage;       /* (STAGE_ROWS, max_rows) f32 */
    float               *h_stage;       /* pinned, the same */
    int32_t             *d_tokens;      /* (max_tok) drawn tokens */
    llm_sample_params_t *d_params;      /* (max_tok) */

    /* decode graphs */
    llm_cuda_graph_t     graphs[LLM_CUDA_N_GRAPHS];
    uint64_t             tick;
    int                  capturing;
    int                  replaying;
    int                  graphs_off;

    void                *comm;          /* ncclComm_t of a TP group */

    int                  failed;
    char                 errstr[LLM_ERRSTR_MAX];
} llm_cuda_t;


static void llm_cuda_destroy(llm_backend_t *be);
static void *llm_cuda_alloc(llm_backend_t *be, size_t size, llm_err_t *err);
static void llm_cuda_free(llm_backend_t *be, void *p);
static const void *llm_cuda_upload(llm_backend_t *be, const void *host,
    size_t size, llm_err_t *err);
static int llm_cuda_write(llm_backend_t *be, void *dst, const void *src,
    size_t size, llm_err_t *err);
static int llm_cuda_read(llm_backend_t *be, void *dst, const void *src,
    size_t size, llm_err_t *err);
static int llm_cuda_sync(llm_backend_t *be, llm_err_t *err);
static int llm_cuda_reserve(llm_backend_t *be, const llm_reserve_t *r,
    llm_err_t *err);
static int llm_cuda_step(llm_backend_t *be, const llm_step_t *st,
    llm_err_t *err);
static void llm_cuda_embed_op(llm_backend_t *be, float *out,
    const llm_mat_t *embd);
static void llm_cuda_rmsnorm_op(llm_backend_t *be, float *out,
    const float *x, const float *w, int64_t n_rows, int dim, float eps);
static void llm_cuda_add_rmsnorm_op(llm_backend_t *be, float *out, float *x,
    const float *y, const float *w, int64_t n_rows, int dim, float eps);
static void llm_cuda_matmul(llm_backend_t *be, float *out, const float *x,
    int n, const llm_mat_t *w);
static void llm_cuda_matmul_host(llm_backend_t *be, float *out,
    const float *x, int n, const llm_mat_t *w);
static void llm_cuda_add_op(llm_backend_t *be, float *x, const float *y,
    int64_t n);
static void llm_cuda_add_rows_op(llm_backend_t *be, float *x,
    const float *b, int64_t n_rows, int dim);
static void llm_cuda_rope_cache_op(llm_backend_t *be, float *cs,
    const llm_rope_t *r);
static void llm_cuda_rope_op(llm_backend_t *be, float *x, int n_heads,
    int head_dim, int n_rot, int neox, const float *cs);
static void llm_cuda_kv_store_op(llm_backend_t *be, const llm_kv_buf_t *kv,
    int layer, const float *k, const float *v);
static void llm_cuda_rope_store_op(llm_backend_t *be, float *q, float *k,
    const float *v, int n_heads, int n_heads_kv, int head_dim, int n_rot,
    int neox, const float *cs, const llm_kv_buf_t *kv, int layer);
static void llm_cuda_attention(llm_backend_t *be, float *out,
    const float *q, const llm_kv_buf_t *kv, int layer, int n_head,
    int head_dim);
static void llm_cuda_silu_mul_op(llm_backend_t *be, float *g,
    const float *u, int64_t n);
static int llm_cuda_graph_begin(llm_backend_t *be, uint64_t key,
    llm_err_t *err);
static int llm_cuda_graph_end(llm_backend_t *be, uint64_t key,
    llm_err_t *err);
static int llm_cuda_sample_op(llm_backend_t *be, int32_t *out,
    const float *logits, int n_rows, int n_vocab,
    const llm_sample_params_t *params, llm_err_t *err);
static void llm_cuda_graphs_drop(llm_cuda_t *c);
static void llm_cuda_scratch_free(llm_cuda_t *c);
static int llm_cuda_use(llm_cuda_t *c);
static llm_cuda_t *llm_cuda_op(llm_backend_t *be);
static int llm_cuda_gemm(llm_cuda_t *c, float *out, int ldo,
    const void *x, cudaDataType_t xt, int n, const void *w,
    cudaDataType_t wt, int rows, int cols, int ldw);
static int llm_cuda_mm(llm_cuda_t *c, float *out, const float *x, int n,
    int batch, int defer, const llm_mat_t *w);
static void llm_cuda_barrier(llm_cuda_t *c);
static void llm_cuda_flush(llm_cuda_t *c);
static void llm_cuda_defer(llm_cuda_t *c, float *out, const float *x, int n,
    const llm_mat_t *w);
static int llm_cuda_act16(llm_cuda_t *c, const float *x, int n, int cols,
    uint32_t t16);
static llm_cuda_t *llm_cuda_mm_op(llm_backend_t *be, const float *out,
    size_t n);
static void llm_cuda_failed(llm_cuda_t *c, int rc);
static int llm_cuda_report(llm_cuda_t *c, llm_err_t *err);
static llm_stream_t llm_cuda_stream(llm_cuda_t *c);


int
llm_backend_cuda_devices(void)
{
    int  n = 0;

    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void) cudaGetLastError();
        return 0;
    }

    return n;
}


llm_backend_t *
llm_backend_cuda_new(int device, llm_err_t *err)
{
    int                    n;
    const char            *e;
    cudaError_t            rc;
    llm_cuda_t            *c;
    llm_backend_t         *be;
    struct cudaDeviceProp  prop;

    n = 0;
    rc = cudaGetDeviceCount(&n);

    if (rc != cudaSuccess || n == 0) {
        llm_err_set(err, LLM_EUNSUPPORTED, "no usable CUDA device (%s)",
                    rc != cudaSuccess ? cudaGetErrorString(rc)
                                      : "none found");
        (void) cudaGetLastError();
        return NULL;
    }

    if (device < 0 || device >= n) {
        llm_err_set(err, LLM_EUNSUPPORTED,
                    "no CUDA device %d (%d found)", device, n);
        return NULL;
    }

    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess
        || prop.major < 8)
    {
        llm_err_set(err, LLM_EUNSUPPORTED,
                    "CUDA device %d (%s) has compute capability %d.%d; the "
                    "kernels are built for 8.0 and 9.0", device, prop.name,
                    prop.major, prop.minor);
        return NULL;
    }

    be = calloc(1, sizeof(llm_backend_t));
    c = calloc(1, sizeof(llm_cuda_t));

    if (be == NULL || c == NULL) {
        free(be);
        free(c);
        llm_err_set(err, LLM_ENOMEM, "out of memory for the CUDA backend");
        return NULL;
    }

    c->device = device;
    e = getenv("LLM_CUDA_GRAPHS");
    c->graphs_off = (e != NULL && strcmp(e, "0") == 0)
                    || llm_cuda_sync_debug();

    be->name = "cuda";
    be->device = device;
    be->host_mem = 0;
    be->kv_f16 = 1;
    be->data = c;

    if (llm_cuda_use(c) != 0
        || cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)
           != cudaSuccess
        || cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS
        || cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS
        || cudaMalloc(&c->blas_ws, LLM_CUDA_BLAS_WS) != cudaSuccess
        || cublasSetWorkspace(c->blas, c->blas_ws, LLM_CUDA_BLAS_WS)
           != CUBLAS_STATUS_SUCCESS
        || cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)
           != CUBLAS_STATUS_SUCCESS)
    {
        llm_err_set(err, LLM_EUNSUPPORTED,
                    "CUDA device %d (%s): cannot set up a stream and "
                    "cuBLAS (%s)", device, prop.name,
                    cudaGetErrorString(cudaGetLastError()));
        llm_cuda_destroy(be);
        return NULL;
    }

    be->destroy = llm_cuda_destroy;
    be->alloc = llm_cuda_alloc;
    be->free = llm_cuda_free;
    be->upload = llm_cuda_upload;
    be->write = llm_cuda_write;
    be->read = llm_cuda_read;
    be->sync = llm_cuda_sync;
    be->reserve = llm_cuda_reserve;
    be->step = llm_cuda_step;
    be->embed = llm_cuda_embed_op;
    be->rmsnorm = llm_cuda_rmsnorm_op;
    be->add_rmsnorm = llm_cuda_add_rmsnorm_op;
    be->matmul = llm_cuda_matmul;
    be->matmul_host = llm_cuda_matmul_host;
    be->add = llm_cuda_add_op;
    be->add_rows = llm_cuda_add_rows_op;
    be->rope_cache = llm_cuda_rope_cache_op;
    be->rope = llm_cuda_rope_op;
    be->kv_store = llm_cuda_kv_store_op;
    be->rope_store = llm_cuda_rope_store_op;
    be->attention = llm_cuda_attention;
    be->silu_mul = llm_cuda_silu_mul_op;
    be->group = llm_nccl_group;
    be->allreduce = llm_nccl_allreduce;
    be->graph_begin = llm_cuda_graph_begin;
    be->graph_end = llm_cuda_graph_end;
    be->sample = llm_cuda_sample_op;

    llm_log(LLM_LOG_INFO, "cuda: device %d, %s, compute capability %d.%d, "
            "%zu MiB", device, prop.name, prop.major, prop.minor,
            (size_t) (prop.totalGlobalMem >> 20));

    return be;
}


static void
llm_cuda_destroy(llm_backend_t *be)
{
    llm_cuda_t        *c = be->data;
    llm_cuda_chunk_t  *ch, *next;

    (void) llm_cuda_use(c);

    if (c->stream != NULL) {
        (void) cudaStreamSynchronize(c->stream);
    }

    llm_cuda_graphs_drop(c);
    llm_cuda_scratch_free(c);

    for (ch = c->arena; ch != NULL; ch = next) {
        next = ch->next;
        (void) cudaFree(ch->base);
        free(ch);
    }

    if (c->comm != NULL) {
        llm_nccl_free(c->comm);
    }

    if (c->blas != NULL) {
        (void) cublasDestroy(c->blas);
    }

    (void) cudaFree(c->blas_ws);

    if (c->stream != NULL) {
        (void) cudaStreamDestroy(c->stream);
    }

    (void) cudaGetLastError();
    free(c);
    free(be);
}


/* the calling thread drives this backend's device from here on; one
 * thread may drive several (tensor parallelism) */
static int
llm_cuda_use(llm_cuda_t *c)
{
    static __thread int  current = -1;

    if (current != c->device) {
        LLM_CUDA_CHECK(cudaSetDevice(c->device));
        current = c->device;
    }

    return 0;
}


/* an op's backend, its device the thread's (a failure to select it is
 * the step's failure, and the launch that follows fails too); every op
 * but the products */
static llm_cuda_t *
llm_cuda_op(llm_backend_t *be)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_failed(c, llm_cuda_use(c));
    llm_cuda_barrier(c);
    return c;
}


/*
 * Before any op but a product: the deferred products are launched (the
 * op may read what they write, or write what they read) and act16 is
 * forgotten (the op may write its input).
 */
static void
llm_cuda_barrier(llm_cuda_t *c)
{
    llm_cuda_flush(c);
    c->act16_x = NULL;
}


static void
llm_cuda_flush(llm_cuda_t *c)
{
    if (c->pend.n_mats == 0 && !c->norm.on) {
        return;
    }

    /* on its device: the caller may not have selected it yet */
    llm_cuda_failed(c, llm_cuda_use(c));

    if (c->norm.on) {
        /* no product took it: pend is empty (llm_cuda_defer) */
        c->norm.on = 0;
        llm_cuda_failed(c, llm_cuda_rmsnorm(c->norm.out, c->norm.x,
                                            c->norm.w, c->norm.n_rows,
                                            c->norm.dim, c->norm.eps,
                                            llm_cuda_stream(c)));
        return;
    }

    llm_cuda_failed(c, llm_cuda_gemv_set(&c->pend, c->pend_x, c->pend_n,
                                         c->pend_type, c->pend_cols,
                                         llm_cuda_stream(c)));
    memset(&c->pend, 0, sizeof(c->pend));
    c->pend_x = NULL;
}


static int
llm_cuda_overlap(const void *a, size_t an, const void *b, size_t bn)
{
    return (const char *) a < (const char *) b + bn
           && (const char *) b < (const char *) a + an;
}


/*
 * A decode product, kept to be launched with the ones that follow it on
 * the same input (Q, K, V; gate, up): what is pending is launched first
 * when this one cannot join it (another input, or an output that
 * overlaps an input or output of the set).
 */
static void
llm_cuda_defer(llm_cuda_t *c, float *out, const float *x, int n,
    const llm_mat_t *w)
{
    int      k;
    size_t   on, xn;

    on = (size_t) n * w->rows * sizeof(float);
    xn = (size_t) n * w->cols * sizeof(float);

    /* a pending norm whose output this product reads: the set computes
     * it (its output not among the set's outputs, its input not among
     * anything the set writes); any other product launches it first */
    if (c->norm.on) {
        size_t  nn = (size_t) c->norm.n_rows * c->norm.dim * sizeof(float);

        if (x == c->norm.out && n == c->norm.n_rows && w->cols == c->norm.dim
            && !llm_cuda_overlap(c->norm.out, nn, c->norm.x, nn)
            && !llm_cuda_overlap(out, on, c->norm.x, nn)
            && !llm_cuda_overlap(out, on, c->norm.out, nn))
        {
            c->norm.on = 0;
            c->pend.norm_x = c->norm.x;
            c->pend.norm_w = c->norm.w;
            c->pend.norm_out = c->norm.out;
            c->pend.norm_eps = c->norm.eps;

        } else {
            llm_cuda_flush(c);
        }
    }

    k = c->pend.n_mats;

    if (k > 0
        && (c->pend_x != x || c->pend_n != n || c->pend_cols != w->cols
            || c->pend_type != w->type || k == LLM_CUDA_GEMV_SET))
    {
        llm_cuda_flush(c);
        k = 0;
    }

    for (int m = 0; m < k; m++) {
        if (llm_cuda_overlap(out, on, c->pend.out[m],
                             (size_t) n * c->pend.rows[m] * sizeof(float)))
        {
            llm_cuda_flush(c);
            k = 0;
            break;
        }
    }

    if (k > 0 && c->pend.norm_x != NULL
        && llm_cuda_overlap(out, on, c->pend.norm_x, xn))
    {
        llm_cuda_flush(c);
        k = 0;
    }

    if (llm_cuda_overlap(out, on, x, xn)) {
        /* in place: not with others, and not deferred */
        llm_cuda_flush(c);
        k = 0;
    }

    c->pend.w[k] = w->data;
    c->pend.out[k] = out;
    c->pend.rows[k] = w->rows;
    c->pend.row_bytes[k] = w->row_bytes;
    c->pend.n_mats = k + 1;
    c->pend.swiglu = 0;
    c->pend_x = x;
    c->pend_n = n;
    c->pend_cols = w->cols;
    c->pend_type = w->type;

    if (llm_cuda_overlap(out, on, x, xn)) {
        llm_cuda_flush(c);
    }
}


/* a product's: act16 still holds its input unless out (n floats)
 * overlaps it */
static llm_cuda_t *
llm_cuda_mm_op(llm_backend_t *be, const float *out, size_t n)
{
    llm_cuda_t  *c = be->data;

    if (c->act16_x != NULL && out != NULL
        && out < c->act16_x + (size_t) c->act16_n * c->act16_cols
        && c->act16_x < out + n)
    {
        c->act16_x = NULL;
    }

    llm_cuda_failed(c, llm_cuda_use(c));
    return c;
}


static llm_stream_t
llm_cuda_stream(llm_cuda_t *c)
{
    return (llm_stream_t) c->stream;
}


/* keeps the first failure of a step; rc is a launcher's */
static void
llm_cuda_failed(llm_cuda_t *c, int rc)
{
    char  buf[LLM_ERRSTR_MAX - 32];

    if (rc == 0) {
        return;
    }

    if (!llm_cuda_take_error(buf, sizeof(buf))) {
        snprintf(buf, sizeof(buf), "an operation failed");
    }

    if (!c->failed) {
        c->failed = 1;
        snprintf(c->errstr, sizeof(c->errstr), "cuda device %d: %s",
                 c->device, buf);
    }
}


static int
llm_cuda_report(llm_cuda_t *c, llm_err_t *err)
{
    if (!c->failed) {
        return LLM_OK;
    }

    c->failed = 0;
    return llm_err_set(err, LLM_EIO, "%s", c->errstr);
}


static void *
llm_cuda_alloc(llm_backend_t *be, size_t size, llm_err_t *err)
{
    void        *p;
    llm_cuda_t  *c = be->data;

    p = NULL;

    /* zeroed on the stream: the legacy stream a plain cudaMemset goes
     * to does not order a non-blocking one */
    if (llm_cuda_use(c) != 0
        || cudaMalloc(&p, size > 0 ? size : 1) != cudaSuccess
        || cudaMemsetAsync(p, 0, size, c->stream) != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        if (p != NULL) {
            (void) cudaFree(p);
        }

        llm_err_set(err, LLM_ENOMEM,
                    "cuda device %d: cannot allocate %zu bytes (%s)",
                    c->device, size, cudaGetErrorString(cudaGetLastError()));
        return NULL;
    }

    return p;
}


static void
llm_cuda_free(llm_backend_t *be, void *p)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);

    if (llm_cuda_use(c) == 0) {
        (void) cudaStreamSynchronize(c->stream);
        (void) cudaFree(p);
    }

    (void) cudaGetLastError();
}


/* weights into the arena: chunks of LLM_CUDA_ARENA, or one of its own
 * for a larger tensor */
static const void *
llm_cuda_upload(llm_backend_t *be, const void *host, size_t size,
    llm_err_t *err)
{
    char              *p;
    size_t             off;
    llm_cuda_t        *c = be->data;
    llm_cuda_chunk_t  *ch;

    if (llm_cuda_use(c) != 0) {
        llm_cuda_take_error(NULL, 0);
        llm_err_set(err, LLM_EIO, "cuda device %d: cannot select it",
                    c->device);
        return NULL;
    }

    for (ch = c->arena; ch != NULL; ch = ch->next) {
        off = (ch->used + LLM_CUDA_ALIGN - 1) & ~((size_t) LLM_CUDA_ALIGN - 1);

        if (off <= ch->size && size <= ch->size - off) {
            break;
        }
    }

    if (ch == NULL) {
        ch = calloc(1, sizeof(llm_cuda_chunk_t));
        if (ch == NULL) {
            llm_err_set(err, LLM_ENOMEM, "out of memory");
            return NULL;
        }

        ch->size = size > LLM_CUDA_ARENA ? size : LLM_CUDA_ARENA;

        if (cudaMalloc((void **) &ch->base, ch->size) != cudaSuccess
            && ch->size > size)
        {
            /* a device nearly full: no more than this tensor */
            (void) cudaGetLastError();
            ch->size = size;
            (void) cudaMalloc((void **) &ch->base, ch->size);
        }

        if (ch->base == NULL) {
            free(ch);
            llm_err_set(err, LLM_ENOMEM,
                        "cuda device %d: no room for %zu bytes of weights "
                        "(%s)", c->device, size,
                        cudaGetErrorString(cudaGetLastError()));
            return NULL;
        }

        ch->next = c->arena;
        c->arena = ch;
        off = 0;
    }

    p = ch->base + off;
    ch->used = off + size;

    /* on the stream, and waited for: a pageable copy may return before
     * its DMA is done */
    if (cudaMemcpyAsync(p, host, size, cudaMemcpyHostToDevice, c->stream)
            != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        llm_err_set(err, LLM_EIO, "cuda device %d: copying weights: %s",
                    c->device, cudaGetErrorString(cudaGetLastError()));
        return NULL;
    }

    return p;
}


static int
llm_cuda_write(llm_backend_t *be, void *dst, const void *src, size_t size,
    llm_err_t *err)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);

    if (llm_cuda_use(c) != 0
        || cudaMemcpyAsync(dst, src, size, cudaMemcpyHostToDevice,
                           c->stream) != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        llm_cuda_take_error(NULL, 0);
        return llm_err_set(err, LLM_EIO, "cuda device %d: write: %s",
                           c->device,
                           cudaGetErrorString(cudaGetLastError()));
    }

    return LLM_OK;
}


static int
llm_cuda_read(llm_backend_t *be, void *dst, const void *src, size_t size,
    llm_err_t *err)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);

    if (llm_cuda_use(c) != 0
        || cudaMemcpyAsync(dst, src, size, cudaMemcpyDeviceToHost,
                           c->stream) != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        llm_cuda_take_error(NULL, 0);
        return llm_err_set(err, LLM_EIO, "cuda device %d: read: %s",
                           c->device,
                           cudaGetErrorString(cudaGetLastError()));
    }

    return LLM_OK;
}


static int
llm_cuda_sync(llm_backend_t *be, llm_err_t *err)
{
    cudaError_t  rc;
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);

    if (llm_cuda_use(c) != 0) {
        llm_cuda_failed(c, LLM_CUDA_FAILED);
        return llm_cuda_report(c, err);
    }

    rc = cudaStreamSynchronize(c->stream);

    if (rc != cudaSuccess && !c->failed) {
        c->failed = 1;
        snprintf(c->errstr, sizeof(c->errstr), "cuda device %d: %s",
                 c->device, cudaGetErrorString(rc));
    }

    if (c->comm != NULL) {
        /* a collective that failed on the device is fatal */
        llm_nccl_check(c->comm);
    }

    return llm_cuda_report(c, err);
}


static void
llm_cuda_scratch_free(llm_cuda_t *c)
{
    (void) cudaFree(c->act16);
    (void) cudaFree(c->deq16);
    (void) cudaFree(c->partial);
    (void) cudaFree(c->arrived);
    (void) cudaFree(c->d_stage);
    (void) cudaFreeHost(c->h_stage);
    (void) cudaFree(c->d_step);
    (void) cudaFreeHost(c->h_step);
    (void) cudaFree(c->d_tokens);
    (void) cudaFree(c->d_params);

    c->act16 = NULL;
    c->deq16 = NULL;
    c->partial = NULL;
    c->partial_cap = 0;
    c->arrived = NULL;
    c->d_stage = NULL;
    c->h_stage = NULL;
    c->d_step = NULL;
    c->h_step = NULL;
    c->step_cap = 0;
    c->d_tokens = NULL;
    c->d_params = NULL;
}


/*
 * The scratch of steps of up to r->max_tok tokens: f16 activations,
 * decoded weight slices, the host-matmul stage, the step buffer (grown
 * by step() for longer block tables) and the sampler's rows.  Graphs
 * point into the old buffers, so they go.
 */
static int
llm_cuda_reserve(llm_backend_t *be, const llm_reserve_t *r, llm_err_t *err)
{
    size_t       stage;
    llm_cuda_t  *c = be->data;

    if (llm_cuda_use(c) != 0) {
        llm_cuda_take_error(NULL, 0);
        return llm_err_set(err, LLM_EIO, "cuda device %d: cannot select it",
                           c->device);
    }

    (void) cudaStreamSynchronize(c->stream);
    llm_cuda_graphs_drop(c);
    llm_cuda_scratch_free(c);

    c->r = *r;
    stage = (size_t) LLM_CUDA_STAGE_ROWS * (size_t) r->max_rows
            * sizeof(float);
    /* tokens, pos, seg, two lists of tiles, block tables of 64 */
    c->step_cap = (size_t) r->max_tok * (7 + 64);

    if (cudaMalloc(&c->act16, (size_t) r->max_tok * (size_t) r->max_cols * 2)
            != cudaSuccess
        || cudaMalloc(&c->deq16, LLM_CUDA_DEQ_ELEMS * 2) != cudaSuccess
        || cudaMalloc((void **) &c->d_stage, stage) != cudaSuccess
        || cudaMallocHost((void **) &c->h_stage, stage) != cudaSuccess
        || cudaMalloc((void **) &c->d_step, c->step_cap * sizeof(int32_t))
            != cudaSuccess
        || cudaMallocHost((void **) &c->h_step,
                          c->step_cap * sizeof(int32_t)) != cudaSuccess
        || cudaMalloc((void **) &c->d_tokens,
                      (size_t) r->max_tok * sizeof(int32_t)) != cudaSuccess
        || cudaMalloc((void **) &c->d_params,
                      (size_t) r->max_tok * sizeof(llm_sample_params_t))
            != cudaSuccess
        || cudaMalloc((void **) &c->arrived, (size_t) r->max_tok
                      * (size_t) r->n_head * sizeof(unsigned int))
            != cudaSuccess
        || cudaMemsetAsync(c->arrived, 0, (size_t) r->max_tok
                           * (size_t) r->n_head * sizeof(unsigned int),
                           c->stream) != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        llm_err_set(err, LLM_ENOMEM,
                    "cuda device %d: no room for the scratch of %d tokens "
                    "(%s)", c->device, r->max_tok,
                    cudaGetErrorString(cudaGetLastError()));
        llm_cuda_scratch_free(c);
        return LLM_ERR;
    }

    return LLM_OK;
}


/*
 * The step's runs of one sequence, at most size tokens each, as (first
 * token, count) pairs into tiles unless NULL; returns how many.
 */
static int
llm_cuda_tiles(const llm_step_t *st, int size, int32_t *tiles)
{
    int  n, t0;

    n = 0;
    t0 = 0;

    for (int t = 0; t < st->n_tok; t++) {
        if (t == 0 || st->seg[t] != st->seg[t - 1] || t - t0 == size) {
            t0 = t;
            if (tiles != NULL) {
                tiles[2 * n] = t;
                tiles[2 * n + 1] = 0;
            }
            n++;
        }

        if (tiles != NULL) {
            tiles[2 * (n - 1) + 1]++;
        }
    }

    return n;
}


/*
 * The step's data in one pinned buffer, then one copy: tokens, pos, seg
 * (T each), tiles (2 per tile: runs of one sequence, at most QTILE
 * tokens), the same of TC tokens, block tables (n_segs rows of bt_stride, a power of two so
 * that decode shapes repeat).  The previous step's copy is done: every
 * step ends with sync().
 */
static int
llm_cuda_step(llm_backend_t *be, const llm_step_t *st, llm_err_t *err)
{
    int           T, stride, most, n_tiles, n_tiles_tc;
    size_t        need, part;
    int32_t      *h, *tiles, *bt;
    llm_cuda_t   *c = be->data;

    llm_cuda_barrier(c);

    if (llm_cuda_use(c) != 0) {
        llm_cuda_failed(c, LLM_CUDA_FAILED);
        return llm_cuda_report(c, err);
    }

    c->st = *st;
    T = st->n_tok;

    most = 1;
    for (int i = 0; i < st->n_segs; i++) {
        most = st->n_blocks[i] > most ? st->n_blocks[i] : most;
    }

    for (stride = 16; stride < most; stride *= 2) {
        /* void */
    }

    n_tiles = llm_cuda_tiles(st, LLM_CUDA_QTILE, NULL);
    n_tiles_tc = llm_cuda_tiles(st, LLM_CUDA_QTILE_TC, NULL);

    need = 3 * (size_t) T + 2 * (size_t) (n_tiles + n_tiles_tc)
           + (size_t) st->n_segs * (size_t) stride;

    if (need > c->step_cap) {
        /* longer block tables than seen so far: the graphs point into
         * the old buffer */
        (void) cudaStreamSynchronize(c->stream);
        llm_cuda_graphs_drop(c);
        (void) cudaFree(c->d_step);
        (void) cudaFreeHost(c->h_step);
        c->d_step = NULL;
        c->h_step = NULL;
        c->step_cap = 0;

        if (cudaMalloc((void **) &c->d_step, 2 * need * sizeof(int32_t))
                != cudaSuccess
            || cudaMallocHost((void **) &c->h_step,
                              2 * need * sizeof(int32_t)) != cudaSuccess)
        {
            return llm_err_set(err, LLM_ENOMEM,
                               "cuda device %d: no room for a step's "
                               "block tables", c->device);
        }

        c->step_cap = 2 * need;
    }

    /* the decode splits cover every position the tables can name */
    c->n_split = (int) (((int64_t) stride * st->block_size
                         + LLM_CUDA_ATT_CHUNK - 1) / LLM_CUDA_ATT_CHUNK);

    part = (size_t) T * (size_t) c->r.n_head * (size_t) c->n_split
           * (size_t) (c->r.head_dim + 2);

    if (st->decode && part > c->partial_cap) {
        (void) cudaStreamSynchronize(c->stream);
        llm_cuda_graphs_drop(c);
        (void) cudaFree(c->partial);
        c->partial_cap = 0;

        if (cudaMalloc((void **) &c->partial, part * sizeof(float))
            != cudaSuccess)
        {
            c->partial = NULL;
            return llm_err_set(err, LLM_ENOMEM,
                               "cuda device %d: no room for attention "
                               "partials", c->device);
        }

        c->partial_cap = part;
    }

    h = c->h_step;
    memcpy(h, st->tokens, (size_t) T * sizeof(int32_t));
    memcpy(h + T, st->pos, (size_t) T * sizeof(int32_t));
    memcpy(h + 2 * T, st->seg, (size_t) T * sizeof(int32_t));

    tiles = h + 3 * T;
    (void) llm_cuda_tiles(st, LLM_CUDA_QTILE, tiles);
    (void) llm_cuda_tiles(st, LLM_CUDA_QTILE_TC, tiles + 2 * n_tiles);

    bt = tiles + 2 * (n_tiles + n_tiles_tc);

    for (int i = 0; i < st->n_segs; i++) {
        memcpy(bt + (size_t) i * stride, st->blocks[i],
               (size_t) st->n_blocks[i] * sizeof(int32_t));
        memset(bt + (size_t) i * stride + st->n_blocks[i], 0,
               (size_t) (stride - st->n_blocks[i]) * sizeof(int32_t));
    }

    if (cudaMemcpyAsync(c->d_step, h, need * sizeof(int32_t),
                        cudaMemcpyHostToDevice, c->stream)
        != cudaSuccess)
    {
        return llm_err_set(err, LLM_EIO, "cuda device %d: step copy: %s",
                           c->device,
                           cudaGetErrorString(cudaGetLastError()));
    }

    c->dst.tokens = c->d_step;
    c->dst.pos = c->d_step + T;
    c->dst.seg = c->d_step + 2 * T;
    c->dst.tiles = c->d_step + 3 * T;
    c->dst.tiles_tc = c->dst.tiles + 2 * n_tiles;
    c->dst.bt = c->dst.tiles_tc + 2 * n_tiles_tc;
    c->dst.n_tok = T;
    c->dst.n_tiles = n_tiles;
    c->dst.n_tiles_tc = n_tiles_tc;
    c->dst.bt_stride = stride;

    return LLM_OK;
}


static void
llm_cuda_embed_op(llm_backend_t *be, float *out, const llm_mat_t *embd)
{
    llm_cuda_t  *c = llm_cuda_op(be);

    llm_cuda_failed(c, llm_cuda_embed(out, embd->data, embd->type,
                                      embd->row_bytes, embd->cols, &c->dst,
                                      llm_cuda_stream(c)));
}


static void
llm_cuda_rmsnorm_op(llm_backend_t *be, float *out, const float *x,
    const float *w, int64_t n_rows, int dim, float eps)
{
    llm_cuda_t  *c = llm_cuda_op(be);

    llm_cuda_failed(c, llm_cuda_rmsnorm(out, x, w, n_rows, dim, eps,
                                        llm_cuda_stream(c)));
}


/*
 * x += y, out = rmsnorm(x) w.  Where y is the one product pending (a
 * decode step's output projection or down projection), that product
 * adds itself to x as it writes y, and the norm waits to join the
 * products of out that follow: two launches a layer fewer.  Otherwise
 * one kernel does both.
 */
static void
llm_cuda_add_rmsnorm_op(llm_backend_t *be, float *out, float *x,
    const float *y, const float *w, int64_t n_rows, int dim, float eps)
{
    size_t       xn;
    llm_cuda_t  *c = be->data;

    xn = (size_t) n_rows * dim * sizeof(float);

    if (c->pend.n_mats == 1 && !c->pend.swiglu && c->pend.norm_x == NULL
        && c->pend.out[0] == y && c->pend.rows[0] == dim
        && c->pend_n == n_rows
        && !llm_cuda_overlap(x, xn, y, xn)
        && !llm_cuda_overlap(x, xn, c->pend_x,
                             (size_t) c->pend_n * c->pend_cols
                             * sizeof(float))
        && !llm_cuda_overlap(x, xn, w, (size_t) dim * sizeof(float)))
    {
        c->pend.resid = x;
        llm_cuda_failed(c, llm_cuda_use(c));
        llm_cuda_barrier(c);

        c->norm.out = out;
        c->norm.x = x;
        c->norm.w = w;
        c->norm.n_rows = n_rows;
        c->norm.dim = dim;
        c->norm.eps = eps;
        c->norm.on = 1;
        return;
    }

    c = llm_cuda_op(be);
    llm_cuda_failed(c, llm_cuda_add_rmsnorm(out, x, y, w, n_rows, dim, eps,
                                            llm_cuda_stream(c)));
}


static void
llm_cuda_add_op(llm_backend_t *be, float *x, const float *y, int64_t n)
{
    llm_cuda_t  *c = llm_cuda_op(be);

    llm_cuda_failed(c, llm_cuda_add(x, y, n, llm_cuda_stream(c)));
}


static void
llm_cuda_add_rows_op(llm_backend_t *be, float *x, const float *b,
    int64_t n_rows, int dim)
{
    llm_cuda_t  *c = llm_cuda_op(be);

    llm_cuda_failed(c, llm_cuda_add_rows(x, b, n_rows, dim,
                                         llm_cuda_stream(c)));
}


static void
llm_cuda_silu_mul_op(llm_backend_t *be, float *g, const float *u, int64_t n)
{
    llm_cuda_t  *c = be->data;

    /* gate and up still pending: SwiGLU in their launch */
    if (c->pend.n_mats == 2 && c->pend.out[0] == g && c->pend.out[1] == u
        && c->pend.rows[0] == c->pend.rows[1]
        && n == (int64_t) c->pend_n * c->pend.rows[0])
    {
        c->pend.swiglu = 1;
        llm_cuda_failed(c, llm_cuda_use(c));
        llm_cuda_barrier(c);
        return;
    }

    c = llm_cuda_op(be);
    llm_cuda_failed(c, llm_cuda_silu_mul(g, u, n, llm_cuda_stream(c)));
}


/* the angle's step is the CPU's float, so that both step alike */
static void
llm_cuda_rope_cache_op(llm_backend_t *be, float *cs, const llm_rope_t *r)
{
    float        theta_scale;
    llm_cuda_t  *c = llm_cuda_op(be);

    theta_scale = powf(r->base, -2.0f / (float) r->n_rot);

    llm_cuda_failed(c, llm_cuda_rope_cache(cs, &c->dst, r->n_rot,
                                           theta_scale, r->scale, r->freqs,
                                           llm_cuda_stream(c)));
}


static void
llm_cuda_rope_op(llm_backend_t *be, float *x, int n_heads, int head_dim,
    int n_rot, int neox, const float *cs)
{
    llm_cuda_t  *c = llm_cuda_op(be);

    llm_cuda_failed(c, llm_cuda_rope(x, &c->dst, n_heads, head_dim, n_rot,
                                     neox, cs, llm_cuda_stream(c)));
}


/* the kernels' view of a KV share */
static void
llm_cuda_kv_of(const llm_kv_buf_t *kv, llm_cuda_kv_t *ck)
{
    ck->data = kv->data;
    ck->f16 = kv->f16;
    ck->block_size = kv->block_size;
    ck->kv_dim = kv->kv_dim;
    ck->layer_elems = (int64_t) kv->layer_elems;
    ck->block_elems = (int64_t) kv->block_elems;
}


static void
llm_cuda_kv_store_op(llm_backend_t *be, const llm_kv_buf_t *kv, int layer,
    const float *k, const float *v)
{
    llm_cuda_t     *c = llm_cuda_op(be);
    llm_cuda_kv_t   ck;

    llm_cuda_kv_of(kv, &ck);

    llm_cuda_failed(c, llm_cuda_kv_store(&ck, layer, k, v, &c->dst,
                                         llm_cuda_stream(c)));
}


static void
llm_cuda_rope_store_op(llm_backend_t *be, float *q, float *k,
    const float *v, int n_heads, int n_heads_kv, int head_dim, int n_rot,
    int neox, const float *cs, const llm_kv_buf_t *kv, int layer)
{
    llm_cuda_t     *c = llm_cuda_op(be);
    llm_cuda_kv_t   ck;

    llm_cuda_kv_of(kv, &ck);

    llm_cuda_failed(c, llm_cuda_rope_store(q, k, v, n_heads, n_heads_kv,
                                           head_dim, n_rot, neox, cs, &ck,
                                           layer, &c->dst,
                                           llm_cuda_stream(c)));
}


static void
llm_cuda_attention(llm_backend_t *be, float *out, const float *q,
    const llm_kv_buf_t *kv, int layer, int n_head, int head_dim)
{
    llm_cuda_t     *c = llm_cuda_op(be);
    llm_cuda_kv_t   ck;

    llm_cuda_kv_of(kv, &ck);

    if (c->st.decode && c->partial != NULL && n_head <= c->r.n_head
        && c->st.n_tok <= c->r.max_tok
        && (size_t) c->st.n_tok * (size_t) n_head * (size_t) c->n_split
           * (size_t) (head_dim + 2) <= c->partial_cap)
    {
        llm_cuda_failed(c, llm_cuda_attention_decode(out, q, &ck, layer,
                                                     n_head, head_dim,
                                                     &c->dst, c->n_split,
                                                     c->partial, c->arrived,
                                                     llm_cuda_stream(c)));
        return;
    }

    llm_cuda_failed(c, llm_cuda_attention_prefill(out, q, &ck, layer, n_head,
                                                  head_dim, &c->dst,
                                                  c->r.att_f16,
                                                  llm_cuda_stream(c)));
}


/*
 * out (n, rows) f32, row-major, ldo floats apart = x (n, cols) W^T, W
 * (rows, cols) row-major, ldw elements apart.  cuBLAS is column-major:
 * a row-major (n, cols) matrix is its (cols, n) column-major transpose,
 * so out^T (rows, n) = W x^T is op(A) = T on W as (cols, rows), B = x
 * as (cols, n).  This is the one place the orders are swapped.
 */
static int
llm_cuda_gemm(llm_cuda_t *c, float *out, int ldo, const void *x,
    cudaDataType_t xt, int n, const void *w, cudaDataType_t wt, int rows,
    int cols, int ldw)
{
    const float  one = 1.0f, zero = 0.0f;

    LLM_CUBLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N,
                                  rows, n, cols, &one, w, wt, ldw, x, xt,
                                  cols, &zero, out, CUDA_R_32F, ldo,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));

    return 0;
}


/*
 * out (n, w->rows) = x (n, w->cols) W^T on the device, by type; the
 * kernel is chosen by batch, the rows of the whole product that these n
 * are part of, so that a product done in parts computes each row as the
 * whole would
 */
static int
llm_cuda_mm(llm_cuda_t *c, float *out, const float *x, int n, int batch,
    int defer, const llm_mat_t *w)
{
    int             slice, rows;
    uint32_t        t16;

    if (n <= 0) {
        return 0;
    }

    if (!llm_cuda_type_supported(w->type)) {
        llm_cuda_record("kernel", (int) w->type, "weight type",
                        "llm_cuda_mm", __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    /* a decode step's tokens: each weight read once, x as it is */
    if (batch <= LLM_CUDA_GEMV_MAX
        && llm_cuda_gemv_ok(w->type, w->cols, w->row_bytes, w->data))
    {
        if (defer) {
            llm_cuda_defer(c, out, x, n, w);
            return 0;
        }

        llm_cuda_flush(c);
        return llm_cuda_gemv(out, x, n, w->data, w->type, w->rows, w->cols,
                             w->row_bytes, llm_cuda_stream(c));
    }

    /* cuBLAS reads x, which a deferred product may write */
    llm_cuda_flush(c);

    if (w->type == LLM_KT_F32) {
        return llm_cuda_gemm(c, out, w->rows, x, CUDA_R_32F, n, w->data,
                             CUDA_R_32F, w->rows, w->cols,
                             (int) (w->row_bytes / sizeof(float)));
    }

    /* x rounded as the CPU rounds it for these weights: f16, or bf16
     * for BF16; quantized weights are decoded to f16 */
    t16 = w->type == LLM_KT_BF16 ? LLM_KT_BF16 : LLM_KT_F16;

    if (llm_cuda_act16(c, x, n, w->cols, t16) != 0) {
        return LLM_CUDA_FAILED;
    }

    if (w->type == LLM_KT_F16 || w->type == LLM_KT_BF16) {
        return llm_cuda_gemm(c, out, w->rows, c->act16,
                             t16 == LLM_KT_F16 ? CUDA_R_16F : CUDA_R_16BF,
                             n, w->data,
                             t16 == LLM_KT_F16 ? CUDA_R_16F : CUDA_R_16BF,
                             w->rows, w->cols, (int) (w->row_bytes / 2));
    }

    /* a batch: slices of rows decoded to f16, multiplied by cuBLAS */

    slice = (int) (LLM_CUDA_DEQ_ELEMS / (size_t) w->cols);
    slice = slice < 1 ? 1 : slice;

    for (int r0 = 0; r0 < w->rows; r0 += slice) {
        rows = w->rows - r0 < slice ? w->rows - r0 : slice;

        if (llm_cuda_dequant_f16(c->deq16, w->data, w->type, r0, rows,
                                 w->cols, w->row_bytes, llm_cuda_stream(c))
                != 0
            || llm_cuda_gemm(c, out + r0, w->rows, c->act16, CUDA_R_16F, n,
                             c->deq16, CUDA_R_16F, rows, w->cols, w->cols)
               != 0)
        {
            return LLM_CUDA_FAILED;
        }
    }

    return 0;
}


/*
 * x (n, cols) rounded to t16 into act16, unless act16 holds it already:
 * the products that follow one another on the same input (Q, K and V;
 * gate and up) convert it once.  What act16 holds is forgotten by every
 * op but a product (llm_cuda_op), and by a product whose output
 * overlaps its input.
 */
static int
llm_cuda_act16(llm_cuda_t *c, const float *x, int n, int cols,
    uint32_t t16)
{
    if (c->act16_x == x && c->act16_n == n && c->act16_cols == cols
        && c->act16_type == t16)
    {
        return 0;
    }

    c->act16_x = NULL;

    if (n > c->r.max_tok || cols > c->r.max_cols) {
        llm_cuda_record("cuda", 0, "activations past the scratch",
                        "llm_cuda_mm", __FILE__, __LINE__);
        return LLM_CUDA_FAILED;
    }

    if (llm_cuda_convert(c->act16, t16, x, (int64_t) n * cols,
                         llm_cuda_stream(c)) != 0)
    {
        return LLM_CUDA_FAILED;
    }

    c->act16_x = x;
    c->act16_n = n;
    c->act16_cols = cols;
    c->act16_type = t16;

    return 0;
}


static void
llm_cuda_matmul(llm_backend_t *be, float *out, const float *x, int n,
    const llm_mat_t *w)
{
    llm_cuda_t  *c = llm_cuda_mm_op(be, out, (size_t) n * w->rows);

    llm_cuda_failed(c, llm_cuda_mm(c, out, x, n, n, 1, w));
}


/* the classifier into host memory: LLM_CUDA_STAGE_ROWS rows at a time
 * through the stage and its pinned twin; waits for each */
static void
llm_cuda_matmul_host(llm_backend_t *be, float *out, const float *x, int n,
    const llm_mat_t *w)
{
    int          k;
    size_t       bytes;
    llm_cuda_t  *c = llm_cuda_mm_op(be, NULL, 0);

    llm_cuda_flush(c);

    if (c->capturing || w->rows > c->r.max_rows) {
        llm_cuda_record("cuda", 0, "host output in a graph or too wide",
                        "llm_cuda_matmul_host", __FILE__, __LINE__);
        llm_cuda_failed(c, LLM_CUDA_FAILED);
        return;
    }

    for (int t = 0; t < n; t += k) {
        k = n - t < LLM_CUDA_STAGE_ROWS ? n - t : LLM_CUDA_STAGE_ROWS;
        bytes = (size_t) k * (size_t) w->rows * sizeof(float);

        if (llm_cuda_mm(c, c->d_stage, x + (size_t) t * w->cols, k, n, 0, w)
            != 0)
        {
            llm_cuda_failed(c, LLM_CUDA_FAILED);
            return;
        }

        if (cudaMemcpyAsync(c->h_stage, c->d_stage, bytes,
                            cudaMemcpyDeviceToHost, c->stream)
                != cudaSuccess
            || cudaStreamSynchronize(c->stream) != cudaSuccess)
        {
            llm_cuda_record("cuda", 0,
                            cudaGetErrorString(cudaGetLastError()),
                            "logits to the host", __FILE__, __LINE__);
            llm_cuda_failed(c, LLM_CUDA_FAILED);
            return;
        }

        memcpy(out + (size_t) t * w->rows, c->h_stage, bytes);
    }
}


static void
llm_cuda_graphs_drop(llm_cuda_t *c)
{
    for (int i = 0; i < LLM_CUDA_N_GRAPHS; i++) {
        if (c->graphs[i].exec != NULL) {
            (void) cudaGraphExecDestroy(c->graphs[i].exec);
        }
    }

    memset(c->graphs, 0, sizeof(c->graphs));
    c->capturing = 0;
    c->replaying = 0;
}


/*
 * A decode shape seen before is recorded (its second step) or replayed
 * (from the third on): the first step of a shape runs plainly, so that
 * whatever cuBLAS and the kernels set up lazily happens outside a
 * capture.  The key is the model's (batch size and pool) with the
 * block-table stride, on which the step buffer's layout depends.
 */
static int
llm_cuda_graph_begin(llm_backend_t *be, uint64_t key, llm_err_t *err)
{
    int                i, free_i, old_i;
    llm_cuda_t        *c = be->data;
    llm_cuda_graph_t  *g;

    llm_cuda_barrier(c);

    if (c->graphs_off || c->failed || llm_cuda_use(c) != 0) {
        llm_cuda_take_error(NULL, 0);
        return 0;
    }

    key = key * 0x9e3779b97f4a7c15ULL + (uint64_t) c->dst.bt_stride;
    c->tick++;

    free_i = -1;
    old_i = 0;

    for (i = 0; i < LLM_CUDA_N_GRAPHS; i++) {
        g = &c->graphs[i];

        if (g->seen > 0 && g->key == key) {
            break;
        }

        if (g->seen == 0 && free_i < 0) {
            free_i = i;
        }

        if (g->used < c->graphs[old_i].used) {
            old_i = i;
        }
    }

    if (i == LLM_CUDA_N_GRAPHS) {
        /* a new shape: remembered, run plainly */
        i = free_i >= 0 ? free_i : old_i;
        g = &c->graphs[i];

        if (g->exec != NULL) {
            (void) cudaGraphExecDestroy(g->exec);
        }

        memset(g, 0, sizeof(llm_cuda_graph_t));
        g->key = key;
        g->seen = 1;
        g->used = c->tick;
        return 0;
    }

    g->seen++;
    g->used = c->tick;

    if (g->exec != NULL) {
        if (cudaGraphLaunch(g->exec, c->stream) != cudaSuccess) {
            return llm_err_set(err, LLM_EIO, "cuda device %d: graph "
                               "launch: %s", c->device,
                               cudaGetErrorString(cudaGetLastError()));
        }

        c->replaying = 1;
        return 1;
    }

    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal)
        != cudaSuccess)
    {
        /* not recorded: the ops run as usual */
        (void) cudaGetLastError();
        return 0;
    }

    c->capturing = 1;
    return 0;
}


static int
llm_cuda_graph_end(llm_backend_t *be, uint64_t key, llm_err_t *err)
{
    int                i;
    cudaGraph_t        graph;
    cudaError_t        rc;
    llm_cuda_t        *c = be->data;
    llm_cuda_graph_t  *g;

    llm_cuda_barrier(c);

    if (c->replaying) {
        c->replaying = 0;
        return LLM_OK;
    }

    if (!c->capturing) {
        return LLM_OK;
    }

    c->capturing = 0;
    key = key * 0x9e3779b97f4a7c15ULL + (uint64_t) c->dst.bt_stride;

    graph = NULL;
    rc = cudaStreamEndCapture(c->stream, &graph);

    for (i = 0; i < LLM_CUDA_N_GRAPHS; i++) {
        if (c->graphs[i].seen > 0 && c->graphs[i].key == key) {
            break;
        }
    }

    if (rc != cudaSuccess || c->failed || i == LLM_CUDA_N_GRAPHS) {
        /* the captured ops never ran: the step failed */
        if (graph != NULL) {
            (void) cudaGraphDestroy(graph);
        }

        (void) cudaGetLastError();
        llm_cuda_failed(c, LLM_CUDA_FAILED);
        return llm_cuda_report(c, err);
    }

    g = &c->graphs[i];
    rc = cudaGraphInstantiate(&g->exec, graph, 0);
    (void) cudaGraphDestroy(graph);

    if (rc != cudaSuccess) {
        g->exec = NULL;
        return llm_err_set(err, LLM_EIO, "cuda device %d: graph: %s",
                           c->device, cudaGetErrorString(rc));
    }

    /* what was recorded has not run yet */
    if (cudaGraphLaunch(g->exec, c->stream) != cudaSuccess) {
        return llm_err_set(err, LLM_EIO, "cuda device %d: graph launch: %s",
                           c->device,
                           cudaGetErrorString(cudaGetLastError()));
    }

    return LLM_OK;
}


static int
llm_cuda_sample_op(llm_backend_t *be, int32_t *out, const float *logits,
    int n_rows, int n_vocab, const llm_sample_params_t *params,
    llm_err_t *err)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);

    if (n_rows > c->r.max_tok) {
        return llm_err_set(err, LLM_EINVAL, "%d rows to draw from, room "
                           "for %d", n_rows, c->r.max_tok);
    }

    if (llm_cuda_use(c) != 0
        || cudaMemcpyAsync(c->d_params, params,
                           (size_t) n_rows * sizeof(llm_sample_params_t),
                           cudaMemcpyHostToDevice, c->stream) != cudaSuccess
        || llm_cuda_sample(c->d_tokens, logits, n_rows, n_vocab, c->d_params,
                           llm_cuda_stream(c)) != 0
        || cudaMemcpyAsync(out, c->d_tokens,
                           (size_t) n_rows * sizeof(int32_t),
                           cudaMemcpyDeviceToHost, c->stream) != cudaSuccess
        || cudaStreamSynchronize(c->stream) != cudaSuccess)
    {
        llm_cuda_failed(c, LLM_CUDA_FAILED);
        return llm_cuda_report(c, err);
    }

    return LLM_OK;
}


/* for llm_nccl.c: the stream collectives go on, the group's comm */

void *
llm_backend_cuda_stream(llm_backend_t *be)
{
    llm_cuda_t  *c = be->data;

    llm_cuda_barrier(c);                /* a collective comes next */
    return c->stream;
}


void
llm_backend_cuda_set_comm(llm_backend_t *be, void *comm)
{
    ((llm_cuda_t *) be->data)->comm = comm;
}


void *
llm_backend_cuda_comm(llm_backend_t *be)
{
    return ((llm_cuda_t *) be->data)->comm;
}


int
llm_backend_cuda_select(llm_backend_t *be)
{
    return llm_cuda_use(be->data) == 0 ? LLM_OK : LLM_ERR;
}


#else /* !LLM_CUDA */


llm_backend_t *
llm_backend_cuda_new(int device, llm_err_t *err)
{
    llm_err_set(err, LLM_EUNSUPPORTED,
                "no CUDA device %d: the engine was built without CUDA "
                "(make CUDA=1)", device);
    return NULL;
}


int
llm_backend_cuda_devices(void)
{
    return 0;
}


#endif /* LLM_CUDA */
