/*
 * Copyright (C) ngx_llm developers
 *
 * The compute backends behind one function table.  The model code
 * (llm_model.c) allocates, uploads and computes through llm_backend_t
 * only and never sees a CUDA type; the CPU backend (llm_backend_cpu.c)
 * is the reference every other one is tested against, the CUDA backend
 * is llm_backend_cuda.c.
 *
 * Buffers are backend memory: host memory on the CPU, device memory on
 * a GPU.  The model code may offset a pointer inside a buffer it got
 * from alloc or upload, never dereference one; bytes cross with write
 * and read.  Activations are f32 with rows contiguous: "(T, d)" is T
 * rows of d floats.
 *
 * Ops run in the order they are issued (at once on the CPU, on one
 * stream on a GPU) and return nothing: a backend records the first
 * error of a step and sync() reports it, as a GPU reports a fault late.
 * Every op of a step works on the step's tokens (T = st->n_tok) as
 * step() described them; the members marked optional may be NULL.
 */

#ifndef LLM_BACKEND_H
#define LLM_BACKEND_H

#include "llm_common.h"


typedef struct llm_backend_s  llm_backend_t;


/* a weight matrix as GGUF stores it: rows x cols of ggml type type, row
 * r (output r) at data + r * row_bytes; cols is whole blocks */
typedef struct {
    const void      *data;          /* backend memory */
    uint32_t         type;
    int              rows;          /* output width (ne[1]) */
    int              cols;          /* input width (ne[0]) */
    size_t           row_bytes;
} llm_mat_t;


/* rotation angles: theta_i = pos * base^(-2i/n_rot) / freqs[i] * scale */
typedef struct {
    int              n_rot;         /* rotated dims per head (even) */
    float            base;
    float            scale;         /* 1 / the linear scaling factor */
    const float     *freqs;         /* (n_rot / 2) f32 backend memory, or
                                     * NULL: Llama 3.1's factors */
} llm_rope_t;


/*
 * One step: T tokens of one or more sequences ("segments"), host
 * memory, valid until step() is called again.  Position p of segment s
 * is slot p % block_size of block blocks[s][p / block_size].
 */
typedef struct {
    int              n_tok;
    const int32_t   *tokens;        /* (T) */
    const int32_t   *pos;           /* (T) position of each token */
    const int32_t   *seg;           /* (T) its segment, non-decreasing */
    int              n_segs;
    const int32_t  **blocks;        /* (n_segs) block tables */
    const int32_t   *n_blocks;      /* (n_segs) entries each one needs:
                                     * its last position / bs + 1 */
    int              block_size;    /* positions per block */
    int              decode;        /* one token per segment: the shape
                                     * a graph may replay */
} llm_step_t;


/*
 * One share of a paged KV cache: every block holds keys then values of
 * every layer for block_size positions and kv_dim channels (the KV
 * heads this backend computes), as f32, or as f16 where f16 is set (a
 * backend with kv_f16, for a model whose attention may round to f16).
 */
typedef struct {
    void            *data;          /* (n_blocks, n_layer, 2, block_size,
                                     * kv_dim), backend memory */
    int              f16;
    int              n_blocks;
    int              block_size;
    int              n_layer;
    int              kv_dim;
    size_t           layer_elems;   /* 2 * block_size * kv_dim */
    size_t           block_elems;   /* n_layer * layer_elems */
} llm_kv_buf_t;


#ifdef __CUDACC__
#define LLM_HOST_DEVICE  __host__ __device__
#else
#define LLM_HOST_DEVICE
#endif


/*
 * What to draw from a row of logits (the sample hook): weights
 * w = exp((l - max) / temperature); kept are the top_k largest logits
 * (ties kept), of those the ones of weight >= min_p, of those the
 * fewest largest whose weight is top_p of theirs (never fewer than the
 * largest).  u = llm_sample_uniform(seed, counter) picks the first kept
 * index, in index order, where the running weight passes u times the
 * kept weight.  Temperature 0 is argmax (the first largest).
 */
typedef struct {
    float            temperature;
    int32_t          top_k;         /* 0: all */
    float            top_p;         /* 1: all */
    float            min_p;         /* 0: all */
    uint64_t         seed;          /* the request's */
    uint64_t         counter;       /* tokens drawn so far */
} llm_sample_params_t;


/* the uniform draw in [0, 1) of a request's counter-th token: splitmix64
 * of seed and counter, 24 bits; the same on the host and the device */
static inline LLM_HOST_DEVICE float
llm_sample_uniform(uint64_t seed, uint64_t counter)
{
    uint64_t  z;

    z = seed + (counter + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;

    return (float) (z >> 40) * (1.0f / 16777216.0f);
}


/* a float's bits as an unsigned key in the floats' order (NaN aside) */
static inline LLM_HOST_DEVICE uint32_t
llm_sample_key(uint32_t bits)
{
    return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}


/* the draw on the host: the reference of the sample hooks */
int32_t llm_sample_twin(const float *logits, int n,
    const llm_sample_params_t *p);

/* llm_sample_twin's token, bit for bit, in a few passes over the row
 * instead of some seventy: the CPU's sample hook and llm_sample() use
 * it; scratch holds LLM_SAMPLE_SCRATCH(n) bytes */
#define LLM_SAMPLE_SCRATCH(n)  ((size_t) (n) * 16)

int32_t llm_sample_fast(const float *logits, int n,
    const llm_sample_params_t *p, void *scratch);


/* what the ops of a step may need at most, to size scratch up front */
typedef struct {
    int              max_tok;       /* tokens per step */
    int              max_cols;      /* widest matmul input */
    int              max_rows;      /* widest matmul output */
    int              n_head;        /* query heads of this backend */
    int              head_dim;
    int              att_f16;       /* attention may round q, k, v to
                                     * f16: the model's products do as
                                     * much (16-bit or quantized
                                     * weights); the CPU never does */
} llm_reserve_t;


struct llm_backend_s {
    const char      *name;          /* "cpu", "cuda" */
    int              device;        /* GPU number, -1 on the CPU */
    int              host_mem;      /* buffers are host memory: upload
                                     * returns the caller's bytes, which
                                     * must outlive their use */
    int              kv_f16;        /* its ops take a KV cache of f16
                                     * (llm_kv_buf_t) */
    void            *data;          /* the backend's own state */

    void  (*destroy)(llm_backend_t *be);

    /* memory; alloc returns zeroed memory, aligned for any op */
    void *(*alloc)(llm_backend_t *be, size_t size, llm_err_t *err);
    void  (*free)(llm_backend_t *be, void *p);
    /* read-only weights; freed with the backend */
    const void *(*upload)(llm_backend_t *be, const void *host, size_t size,
                          llm_err_t *err);
    /* host <-> buffer, complete when they return */
    int   (*write)(llm_backend_t *be, void *dst, const void *src,
                   size_t size, llm_err_t *err);
    int   (*read)(llm_backend_t *be, void *dst, const void *src,
                  size_t size, llm_err_t *err);
    /* waits for every op issued; returns the first error since the last
     * sync (and clears it) */
    int   (*sync)(llm_backend_t *be, llm_err_t *err);

    /* sizes the scratch of the ops (nothing allocates during a step);
     * ops beyond it may be slow, or fail at sync */
    int   (*reserve)(llm_backend_t *be, const llm_reserve_t *r,
                     llm_err_t *err);

    /* starts a step: the ops below work on its tokens */
    int   (*step)(llm_backend_t *be, const llm_step_t *st, llm_err_t *err);

    /* out (T, embd->cols) = the rows of the step's tokens, decoded */
    void  (*embed)(llm_backend_t *be, float *out, const llm_mat_t *embd);

    /* out (n_rows, dim) = x / rms(x) * w (dim) f32, row by row; out may
     * be x */
    void  (*rmsnorm)(llm_backend_t *be, float *out, const float *x,
                     const float *w, int64_t n_rows, int dim, float eps);

    /* x (n_rows, dim) += y; then out (n_rows, dim) = rmsnorm(x) * w:
     * the residual add and the next block's norm in one pass */
    void  (*add_rmsnorm)(llm_backend_t *be, float *out, float *x,
                         const float *y, const float *w, int64_t n_rows,
                         int dim, float eps);

    /* out (n, w->rows) = x (n, w->cols) W^T, any supported type */
    void  (*matmul)(llm_backend_t *be, float *out, const float *x, int n,
                    const llm_mat_t *w);

    /* the same, out in host memory and written when it returns: the
     * classifier, straight into the caller's logits */
    void  (*matmul_host)(llm_backend_t *be, float *out, const float *x,
                         int n, const llm_mat_t *w);

    /* x (n) += y (n) */
    void  (*add)(llm_backend_t *be, float *x, const float *y, int64_t n);

    /* x (n_rows, dim) += b (dim), each row: biases */
    void  (*add_rows)(llm_backend_t *be, float *x, const float *b,
                      int64_t n_rows, int dim);

    /* cs (T, n_rot): cos of the n_rot / 2 angles of each token's
     * position, then their sin */
    void  (*rope_cache)(llm_backend_t *be, float *cs, const llm_rope_t *r);

    /* rotates the first n_rot dims of each head of x (T, n_heads *
     * head_dim) by cs: pairs (2i, 2i+1), or (i, i + n_rot/2) for neox */
    void  (*rope)(llm_backend_t *be, float *x, int n_heads, int head_dim,
                  int n_rot, int neox, const float *cs);

    /* k, v (T, kv->kv_dim) into layer's slots of each token's position */
    void  (*kv_store)(llm_backend_t *be, const llm_kv_buf_t *kv, int layer,
                      const float *k, const float *v);

    /* optional: rope of q (T, n_heads * head_dim) and of k (T,
     * n_heads_kv * head_dim), then kv_store of k and v, with the same
     * results as the three calls; kv->kv_dim is n_heads_kv * head_dim.
     * One pass where a GPU would launch three */
    void  (*rope_store)(llm_backend_t *be, float *q, float *k,
                        const float *v, int n_heads, int n_heads_kv,
                        int head_dim, int n_rot, int neox, const float *cs,
                        const llm_kv_buf_t *kv, int layer);

    /* out (T, n_head * head_dim) = softmax(q K^T / sqrt(head_dim)) V for
     * each query head of q (same shape), over its segment's positions
     * 0..pos; query head h reads KV head h / (n_head / n_head_kv), where
     * n_head_kv = kv->kv_dim / head_dim */
    void  (*attention)(llm_backend_t *be, float *out, const float *q,
                       const llm_kv_buf_t *kv, int layer, int n_head,
                       int head_dim);

    /* g (n) = silu(g) * u (n): SwiGLU */
    void  (*silu_mul)(llm_backend_t *be, float *g, const float *u,
                      int64_t n);

    /* optional: makes group[0..n) (backends of this kind, shard i on
     * group[i]) one tensor-parallel group, for allreduce; errors of the
     * group's collectives are fatal from then on */
    int   (*group)(llm_backend_t **group, int n, llm_err_t *err);

    /* optional: bufs[i] (count) of group[i], a backend of this kind,
     * each becomes the sum of all of them, added in group order so that
     * every shard holds the same bits (tensor parallelism) */
    int   (*allreduce)(llm_backend_t **group, int n, float **bufs,
                       int64_t count, llm_err_t *err);

    /*
     * optional: recording a step's ops once and replaying them (CUDA
     * graphs).  graph_begin returns 1 if a recording for key exists and
     * was launched (issue nothing until graph_end), 0 if the ops to
     * issue now are being recorded (or not, when recording fails: the
     * ops then run as usual).  Whatever the step reads that changes
     * between replays must come through step().
     */
    int   (*graph_begin)(llm_backend_t *be, uint64_t key, llm_err_t *err);
    int   (*graph_end)(llm_backend_t *be, uint64_t key, llm_err_t *err);

    /* optional: out (n_rows) host memory = a token drawn from each row
     * of logits (n_rows, n_vocab), under params (n_rows) host memory,
     * so that the logits need not leave the device */
    int   (*sample)(llm_backend_t *be, int32_t *out, const float *logits,
                    int n_rows, int n_vocab,
                    const llm_sample_params_t *params, llm_err_t *err);
};


/*
 * Opens a backend: "cpu", "cuda" (GPU device), or "auto": cuda where a
 * usable GPU is, else the CPU with a log line.  NULL name is "cpu".
 */
llm_backend_t *llm_backend_open(const char *name, int device,
    llm_err_t *err);
void llm_backend_close(llm_backend_t *be);

llm_backend_t *llm_backend_cpu_new(llm_err_t *err);

/* NULL, err saying why, where the build has no CUDA or device is not a
 * usable GPU */
llm_backend_t *llm_backend_cuda_new(int device, llm_err_t *err);

/* GPUs the CUDA backend could open: 0 without CUDA or a driver */
int llm_backend_cuda_devices(void);


#endif /* LLM_BACKEND_H */
