/*
 * Copyright (C) ngx_llm developers
 *
 * The CUDA kernels' launchers, callable from C.  Each takes an explicit
 * stream, neither allocates nor synchronizes (the backend decides where
 * to wait), and returns 0 or LLM_CUDA_FAILED with the failure recorded
 * (common.cuh: llm_cuda_take_error).  Pointers are device memory unless
 * said otherwise; matrices are row-major, activations f32, and every
 * sum is accumulated in f32.  The CPU twin of each is named: the tests
 * in t/gpu/test_kernels.c hold them to it.
 */

#ifndef LLM_KERNELS_H
#define LLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "llm_backend.h"            /* llm_sample_params_t */


#ifdef __cplusplus
extern "C" {
#endif


/* a cudaStream_t, without the CUDA headers */
typedef struct llm_stream_s  *llm_stream_t;


/* the ggml types the kernels decode (values as in llm_gguf.h) */
enum {
    LLM_KT_F32 = 0,
    LLM_KT_F16 = 1,
    LLM_KT_Q4_0 = 2,
    LLM_KT_Q8_0 = 8,
    LLM_KT_Q4_K = 12,
    LLM_KT_Q5_K = 13,
    LLM_KT_Q6_K = 14,
    LLM_KT_BF16 = 30
};

/* 1 if the kernels decode this type */
int llm_cuda_type_supported(uint32_t type);


/* where a step's per-token data lives on the device (llm_backend.h's
 * llm_step_t, uploaded): bt is (n_segs, bt_stride) block tables */
typedef struct {
    const int32_t   *tokens;        /* (T) */
    const int32_t   *pos;           /* (T) */
    const int32_t   *seg;           /* (T) */
    const int32_t   *bt;            /* (n_segs, bt_stride) */
    const int32_t   *tiles;         /* (n_tiles, 2): first token, count:
                                     * runs of one segment, at most
                                     * LLM_CUDA_QTILE tokens */
    const int32_t   *tiles_tc;      /* (n_tiles_tc, 2): the same, at most
                                     * LLM_CUDA_QTILE_TC tokens */
    int              n_tok;
    int              n_tiles;
    int              n_tiles_tc;
    int              bt_stride;
} llm_cuda_step_t;

/* one share of a paged KV cache (llm_kv_buf_t) */
typedef struct {
    void            *data;          /* (n_blocks, n_layer, 2, block_size,
                                     * kv_dim) f32, or f16 with f16 */
    int              f16;
    int              block_size;
    int              kv_dim;
    int64_t          layer_elems;
    int64_t          block_elems;
} llm_cuda_kv_t;


#define LLM_CUDA_QTILE       16     /* query tokens per prefill tile */
#define LLM_CUDA_QTILE_TC    64     /* the same, on the tensor cores */
#define LLM_CUDA_ATT_CHUNK   64     /* positions per decode split:
                                     * blocks enough to fill a GPU for
                                     * one short sequence */
#define LLM_CUDA_GEMV_MAX    8      /* tokens the GEMV kernels take */
#define LLM_CUDA_TOPK_MAX    1024


/* embed.cu: out (T, d) = row tokens[t] of w (n_vocab, d) of type type,
 * rows row_bytes apart, decoded.  CPU twin: llm_dequant_row */
int llm_cuda_embed(float *out, const void *w, uint32_t type,
    size_t row_bytes, int d, const llm_cuda_step_t *st,
    llm_stream_t stream);

/* rmsnorm.cu: out (n_rows, dim) = x / rms(x) * w; out may be x.
 * add_rmsnorm first adds y to x (the residual).  CPU twins:
 * llm_backend_cpu.c rmsnorm, add_rmsnorm */
int llm_cuda_rmsnorm(float *out, const float *x, const float *w,
    int64_t n_rows, int dim, float eps, llm_stream_t stream);
int llm_cuda_add_rmsnorm(float *out, float *x, const float *y,
    const float *w, int64_t n_rows, int dim, float eps,
    llm_stream_t stream);

/* elementwise.cu: x (n) += y; x (n_rows, dim) += b (dim) each row; f32
 * to f16 or bf16 (type LLM_KT_F16, LLM_KT_BF16) rounding to nearest */
int llm_cuda_add(float *x, const float *y, int64_t n, llm_stream_t stream);
int llm_cuda_add_rows(float *x, const float *b, int64_t n_rows, int dim,
    llm_stream_t stream);
int llm_cuda_convert(void *out, uint32_t type, const float *x, int64_t n,
    llm_stream_t stream);

/* silu_mul.cu: g (n) = silu(g) * u.  CPU twin: silu_mul */
int llm_cuda_silu_mul(float *g, const float *u, int64_t n,
    llm_stream_t stream);

/* rope.cu: cs (T, n_rot) = cos, then sin, of theta_i = pos * theta_scale^i
 * (stepped, as the CPU does) / freqs[i] * scale; then the rotation of
 * the first n_rot dims of each head of x (T, n_heads * head_dim), pairs
 * (2i, 2i+1) or, neox, (i, i + n_rot/2).  CPU twins: rope_cache, rope */
int llm_cuda_rope_cache(float *cs, const llm_cuda_step_t *st, int n_rot,
    float theta_scale, float scale, const float *freqs,
    llm_stream_t stream);
int llm_cuda_rope(float *x, const llm_cuda_step_t *st, int n_heads,
    int head_dim, int n_rot, int neox, const float *cs,
    llm_stream_t stream);

/* kv_store.cu: k, v (T, kv_dim) into layer's slots of each token's
 * position.  CPU twin: kv_store */
int llm_cuda_kv_store(const llm_cuda_kv_t *kv, int layer, const float *k,
    const float *v, const llm_cuda_step_t *st, llm_stream_t stream);

/* rope.cu: llm_cuda_rope of q (T, n_heads * head_dim) and of k (T,
 * n_heads_kv * head_dim), then llm_cuda_kv_store of k and v, in one
 * launch and with the same bits; kv->kv_dim is n_heads_kv * head_dim.
 * CPU twins: rope, rope, kv_store */
int llm_cuda_rope_store(float *q, float *k, const float *v, int n_heads,
    int n_heads_kv, int head_dim, int n_rot, int neox, const float *cs,
    const llm_cuda_kv_t *kv, int layer, const llm_cuda_step_t *st,
    llm_stream_t stream);

/*
 * attention.cu: out (T, n_head * hd) = softmax(q K^T / sqrt(hd)) V of
 * each query head over its segment's positions 0..pos (causal).
 * decode: one token per row of work, the positions split into
 * n_split chunks of LLM_CUDA_ATT_CHUNK (flash-decoding), merged by the
 * last block of each (token, head) in the same launch; partial holds
 * (T, n_head, n_split, hd + 2) floats, arrived (T, n_head) counts,
 * zero before the launch and after it.  prefill: tiles of query tokens
 * sharing each K/V tile; with f16 set, heads of a multiple of 16 dims
 * take q, k, v and the softmax weights rounded to f16 into the tensor
 * cores (f32 sums), where the device has the shared memory for it.
 * CPU twin: attention
 */
int llm_cuda_attention_decode(float *out, const float *q,
    const llm_cuda_kv_t *kv, int layer, int n_head, int hd,
    const llm_cuda_step_t *st, int n_split, float *partial,
    unsigned int *arrived, llm_stream_t stream);
int llm_cuda_attention_prefill(float *out, const float *q,
    const llm_cuda_kv_t *kv, int layer, int n_head, int hd,
    const llm_cuda_step_t *st, int f16, llm_stream_t stream);

/* gemv.cu: out (n, rows) = x (n, cols) W^T for a quantized, F32, F16 or
 * BF16 W (rows, cols, rows row_bytes apart), n <= LLM_CUDA_GEMV_MAX,
 * decoding W on the fly; x is rounded to f16 / bf16 for F16 / BF16 W,
 * as the CPU does.  llm_cuda_gemv_ok says whether a W qualifies (the
 * plain types need 16-byte rows).  CPU twin: llm_matmul */
int llm_cuda_gemv(float *out, const float *x, int n, const void *w,
    uint32_t type, int rows, int cols, size_t row_bytes,
    llm_stream_t stream);
int llm_cuda_gemv_ok(uint32_t type, int cols, size_t row_bytes,
    const void *w);

/*
 * Up to LLM_CUDA_GEMV_SET products of one x by matrices of one type and
 * width, in one launch; swiglu: two of the same rows, gate and up, and
 * out[0] becomes silu(gate) * up (out[1] still gets up).  With resid
 * (one product, not swiglu): resid (n, rows) += out as well, the
 * residual add of the add_rmsnorm that follows.  With norm_x: x is
 * norm_x (n, cols) RMS-normalized with norm_w, computed by each block
 * as llm_cuda_rmsnorm computes it, and written to norm_out by the
 * first block (the launch of the rmsnorm before the products saved);
 * norm_out may not overlap norm_x.  CPU twins: llm_matmul, silu_mul,
 * rmsnorm
 */
#define LLM_CUDA_GEMV_SET  3

typedef struct {
    const void      *w[LLM_CUDA_GEMV_SET];
    float           *out[LLM_CUDA_GEMV_SET];
    int              rows[LLM_CUDA_GEMV_SET];
    size_t           row_bytes[LLM_CUDA_GEMV_SET];
    int              n_mats;
    int              swiglu;
    float           *resid;
    const float     *norm_x;
    const float     *norm_w;
    float           *norm_out;
    float            norm_eps;
} llm_cuda_gemv_set_t;

int llm_cuda_gemv_set(const llm_cuda_gemv_set_t *set, const float *x,
    int n, uint32_t type, int cols, llm_stream_t stream);

/* dequant.cu: rows [row0, row0 + n_rows) of W decoded into out
 * (n_rows, cols) f16, for cuBLAS.  CPU twin: llm_dequant_row */
int llm_cuda_dequant_f16(void *out, const void *w, uint32_t type,
    int64_t row0, int n_rows, int cols, size_t row_bytes,
    llm_stream_t stream);


/* out (n_rows) = the first index of each row's largest logit */
int llm_cuda_argmax(int32_t *out, const float *logits, int n_rows,
    int n_vocab, llm_stream_t stream);

/*
 * out (n_rows) = a token drawn from each row of logits (n_rows, n_vocab)
 * under params (n_rows), as llm_backend.h defines the draw.  CPU twin:
 * llm_sample_twin (llm_backend_cpu.c)
 */
int llm_cuda_sample(int32_t *out, const float *logits, int n_rows,
    int n_vocab, const llm_sample_params_t *params, llm_stream_t stream);


#ifdef __cplusplus
}
#endif

#endif /* LLM_KERNELS_H */
