/*
 * Copyright (C) ngx_llm developers
 *
 * Decoder-only transformers of the llama family:
 *
 *   x = token_embd[token]
 *   for each layer:
 *       h = rmsnorm(x) * attn_norm
 *       q, k, v = Wq h + bq, Wk h + bk, Wv h + bv   biases: qwen2
 *       q, k = rmsnorm(each head) * q_norm, k_norm  qwen3
 *       rope(q, k);  k, v -> the sequence's KV blocks
 *       x += Wo attention(q, blocks)      grouped-query: n_head / n_head_kv
 *                                         query heads share a kv head
 *       h = rmsnorm(x) * ffn_norm
 *       x += Wdown (silu(Wgate h) * Wup h)
 *   logits = Woutput (rmsnorm(x) * output_norm)   token_embd when tied
 *
 * llama rotates adjacent pairs (x[2i], x[2i+1]) of a head; qwen2 and
 * qwen3 rotate (x[i], x[i + n_rot/2]) ("NEOX" order).
 *
 * A step runs T tokens, of one sequence or of many, together: the
 * activations are (T, d) matrices and each weight matrix is applied to
 * all T rows in one pass, so that a weight is read from memory once per
 * step whatever the batch.  Only attention is per sequence: a token
 * reads the keys and values of its own sequence's positions 0..pos
 * through that sequence's block table.  The single-sequence API
 * (llm_kv_t, llm_model_forward) is a one-sequence pool run through the
 * same step, so there is one forward pass.
 *
 * Weights stay in the mapped file in their stored type.  Tensor shapes
 * are ggml's: ne[0] is the input width (contiguous), ne[1] the output
 * width, so row r of a weight is output r.
 *
 * The arithmetic runs on a backend (llm_backend.h: the CPU, or a GPU),
 * which this file only calls: it never touches an activation itself.
 * The model is cut into shards, one backend each (--tp N: tensor
 * parallelism); with one shard, the shard is the whole model.
 */

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_backend.h"
#include "llm_gguf.h"
#include "llm_log.h"
#include "llm_model.h"
#include "llm_quant.h"
#include "llm_tokenizer.h"
#include "llm_tp.h"


#define LLM_MAX_BATCH_DEFAULT  256     /* tokens per step until set */
#define LLM_MAX_BATCH_LIMIT    65536
#define LLM_LOGIT_ROWS         64      /* last rows per classifier pass:
                                        * the output matrix is read once
                                        * per that many sequences */
#define LLM_KV_SEQ_BLOCK       64      /* block size of an llm_kv_t */


typedef enum {
    LLM_ARCH_LLAMA = 0,
    LLM_ARCH_QWEN2,
    LLM_ARCH_QWEN3
} llm_arch_e;


typedef struct {
    const float     *attn_norm;     /* (d) f32 */
    llm_mat_t        wq;            /* (q_dim, d) */
    llm_mat_t        wk;            /* (kv_dim, d) */
    llm_mat_t        wv;            /* (kv_dim, d) */
    const float     *bq;            /* (q_dim) f32 or NULL (qwen2) */
    const float     *bk;            /* (kv_dim) f32 or NULL */
    const float     *bv;            /* (kv_dim) f32 or NULL */
    const float     *q_norm;        /* (head_dim) f32 or NULL (qwen3) */
    const float     *k_norm;        /* (head_dim) f32 or NULL */
    llm_mat_t        wo;            /* (d, q_dim) */
    const float     *ffn_norm;      /* (d) f32 */
    llm_mat_t        w_gate;        /* (n_ff, d) */
    llm_mat_t        w_up;          /* (n_ff, d) */
    llm_mat_t        w_down;        /* (d, n_ff) */
} llm_layer_t;


/* the model's weights in the mapped file (llm_model_t.w), or a shard's
 * share of them in its backend's memory, where q_dim, kv_dim and n_ff
 * above are the shard's */
typedef struct {
    llm_mat_t        token_embd;    /* (n_vocab, d) */
    const float     *output_norm;   /* (d) f32 */
    llm_mat_t        output;        /* (n_vocab, d); token_embd when tied */
    const float     *rope_freqs;    /* (n_rot / 2) f32 or NULL: Llama 3.1
                                     * divides each pair's angle by it */
    llm_layer_t     *layers;        /* (n_layer) */
} llm_weights_t;


/* a run of one sequence's new tokens within a step */
typedef struct {
    const int32_t   *tokens;        /* (n) */
    int              n;
    int              pos;           /* position of tokens[0] */
    const int32_t   *blocks;        /* the sequence's block table */
    float           *logits;        /* NULL, or where the logits go */
    int              all;           /* logits of every token, n rows;
                                     * else of the last one */
    llm_batch_draw_t *draw;         /* NULL, or the token to draw from
                                     * the last one's, instead */
} llm_seg_t;


/*
 * A step of up to max_batch tokens (T below), one row per token, as the
 * host describes it to the backends, and where the logits come back.
 * Allocated at load and by llm_model_set_max_batch, never during a step.
 */
typedef struct {
    int              max_batch;
    int              n_logit;       /* min(T, LLM_LOGIT_ROWS) */
    llm_sample_params_t *draw_params;   /* (n_logit) the rows' draws */
    int32_t         *drawn;         /* (n_logit) and their tokens */
    int32_t         *tokens;        /* (T) */
    int32_t         *tok_pos;       /* (T) position of each token */
    int32_t         *tok_seg;       /* (T) its segment */
    const int32_t  **seg_blocks;    /* (T) each segment's block table */
    int32_t         *seg_nblocks;   /* (T) and the entries it needs */
    llm_seg_t       *segs;          /* (T) */
} llm_state_t;


/* a shard's activations for a step: backend memory, one allocation */
typedef struct {
    void            *mem;
    float           *x;             /* (T, d) residual stream: every shard
                                     * holds all of it */
    float           *xb;            /* (T, d) normed input of a block */
    float           *xb2;           /* (T, d) output of a block (before
                                     * the shards' sum) */
    float           *q;             /* (T, q_dim) */
    float           *k;             /* (T, kv_dim) the step's keys */
    float           *v;             /* (T, kv_dim) and values */
    float           *att_out;       /* (T, q_dim) */
    float           *hb;            /* (T, n_ff) gate */
    float           *hb2;           /* (T, n_ff) up */
    float           *rope_cs;       /* (T, n_rot) cos, then sin */
    float           *logits;        /* (n_logit, n_vocab) the classifier's
                                     * gathered rows: shard 0 only */
} llm_act_t;


/*
 * One shard: its backend, the query heads, KV heads and FFN columns it
 * computes, its share of the weights and its activations.  Shard 0 also
 * computes the logits.
 */
typedef struct {
    llm_backend_t   *be;
    int              head0;         /* first query head */
    int              n_head;
    int              kv_head0;
    int              n_head_kv;
    int              q_dim;         /* n_head * head_dim */
    int              kv_dim;        /* n_head_kv * head_dim */
    int              ff0;           /* first FFN column */
    int              n_ff;
    llm_weights_t    w;
    llm_act_t        a;
    void           **owned;         /* host copies made for this shard
                                     * (column slices), freed with it */
    int              n_owned;
} llm_shard_t;


struct llm_model_s {
    llm_config_t      config;
    llm_arch_e        arch;
    int               rope_neox;    /* pairs (i, i + n_rot/2), else
                                     * (2i, 2i + 1) */
    float             rope_scale;   /* positions times this: 1 / the
                                     * linear scaling factor */
    int               n_rot;        /* rotated dims per head (even) */
    int               q_dim;        /* n_head * head_dim */
    int               kv_dim;       /* n_head_kv * head_dim */
    int               max_cols;     /* widest matmul input */
    llm_weights_t     w;            /* in the map */
    llm_state_t       s;
    int               n_shards;
    llm_shard_t      *shards;       /* (n_shards) */
    llm_backend_t   **group;        /* (n_shards) their backends */
    float           **partial;      /* (n_shards) each one's xb2 */
    llm_gguf_t       *gguf;
    llm_tokenizer_t  *tok;
};


/* a row the classifier gathers: the last token of a segment */
typedef struct {
    int               seg;
    int               tok;          /* its row in the step's (T, d) */
} llm_row_t;


/* who writes a block in the current step, to refuse a step that would
 * write a block twice or read one that another sequence writes */
typedef struct {
    uint32_t          step;
    int32_t           seq;
    int32_t           idx;          /* in the sequence's block table */
} llm_kv_mark_t;


/*
 * The pool's blocks are split by KV heads: shard i holds the channels
 * of its heads, kv[i].kv_dim of kv_dim, in its backend's memory.
 * Blocks cross to the host (llm_kv_block_read) in the layout of one
 * shard, whatever the shards, so that stored blocks fit any of them.
 */
struct llm_kv_pool_s {
    const llm_model_t  *model;
    int                 n_blocks;
    int                 block_size;
    int                 kv_dim;
    size_t              block_bytes;    /* all shards' */
    llm_kv_buf_t       *kv;             /* (n_shards) */
    void               *scratch;        /* one shard's block, host
                                         * memory, when n_shards > 1 or
                                         * the blocks are f16 */
    uint32_t            step;
    llm_kv_mark_t      *mark;           /* (n_blocks) */
};


/* one sequence: a pool of its own, blocks in order */
struct llm_kv_s {
    const llm_model_t  *model;
    int                 n_ctx;
    int                 n_pos;      /* positions 0..n_pos-1 are stored */
    llm_kv_pool_t      *pool;
    int32_t            *blocks;     /* (pool->n_blocks) 0, 1, 2 ... */
};


static int llm_model_hparams(llm_model_t *m, llm_err_t *err);
static int llm_model_arch(llm_model_t *m, const char *arch, size_t len,
    llm_err_t *err);
static int llm_model_rope_scaling(llm_model_t *m, llm_err_t *err);
static int llm_model_weights(llm_model_t *m, llm_err_t *err);
static int llm_model_layer(llm_model_t *m, int i, llm_err_t *err);
static int llm_model_shards(llm_model_t *m, const llm_model_opts_t *o,
    llm_err_t *err);
static int llm_shard_weights(llm_model_t *m, llm_shard_t *sh, int first,
    llm_err_t *err);
static int llm_shard_mat(llm_shard_t *sh, llm_mat_t *dst,
    const llm_mat_t *src, int row0, int n_rows, int col0, int n_cols,
    llm_err_t *err);
static int llm_shard_vec(llm_shard_t *sh, const float **dst,
    const float *src, int off, int n, llm_err_t *err);
static void llm_shard_free(llm_shard_t *sh);
static int llm_state_alloc(llm_model_t *m, llm_state_t *s, int max_batch,
    llm_err_t *err);
static void llm_state_free(llm_state_t *s);
static int llm_att_f16(const llm_model_t *m);
static int llm_act_alloc(llm_model_t *m, llm_shard_t *sh, llm_act_t *a,
    int max_batch, llm_err_t *err);
static void llm_act_free(llm_shard_t *sh, llm_act_t *a);
static int llm_tensor(llm_model_t *m, const char *name, int64_t ne0,
    int64_t ne1, int required, const llm_gguf_tensor_t **out,
    llm_err_t *err);
static const char *llm_blk(char *buf, size_t size, int layer,
    const char *suffix);
static int llm_mat(llm_model_t *m, llm_mat_t *mat, const char *name,
    int64_t cols, int64_t rows, int required, llm_err_t *err);
static int llm_vec(llm_model_t *m, const float **w, const char *name,
    int64_t n, int required, llm_err_t *err);
static int llm_model_u32(llm_model_t *m, const char *key, int required,
    uint32_t def, uint32_t *out, llm_err_t *err);
static int llm_kv_block_copy(llm_kv_pool_t *p, int32_t block, float *host,
    int out);
static int llm_batch_check(llm_model_t *m, llm_kv_pool_t *p,
    const llm_batch_seq_t *seqs, const llm_batch_draw_t *draws, int n_seqs,
    llm_err_t *err);
static int llm_forward(llm_model_t *m, llm_kv_pool_t *p,
    const llm_seg_t *segs, int n_segs, int n_tok, llm_err_t *err);
static void llm_forward_layers(llm_model_t *m, llm_kv_pool_t *p,
    int n_tok);
static int llm_forward_logits(llm_model_t *m, const llm_seg_t *segs,
    int n_segs, llm_err_t *err);
static int llm_forward_rows(llm_model_t *m, const llm_seg_t *segs,
    const llm_row_t *rows, int n_draw, int n_host, llm_err_t *err);
static void llm_allreduce(llm_model_t *m, int64_t n);
static void llm_group_lost(llm_model_t *m, const char *why);


int
llm_model_load(llm_model_t **out, const char *path, llm_err_t *err)
{
    return llm_model_load_opts(out, path, NULL, err);
}


int
llm_model_load_opts(llm_model_t **out, const char *path,
    const llm_model_opts_t *opts, llm_err_t *err)
{
    llm_model_t       *m;
    llm_model_opts_t   o;

    *out = NULL;
    llm_quant_init();

    memset(&o, 0, sizeof(o));
    if (opts != NULL) {
        o = *opts;
    }

    if (o.tp <= 0) {
        o.tp = 1;
    }

    m = calloc(1, sizeof(llm_model_t));
    if (m == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    }

    if (llm_gguf_open(&m->gguf, path, err) != LLM_OK
        || llm_model_hparams(m, err) != LLM_OK
        || llm_tokenizer_from_gguf(&m->tok, m->gguf, err) != LLM_OK
        || llm_model_weights(m, err) != LLM_OK
        || llm_model_shards(m, &o, err) != LLM_OK
        || llm_model_set_max_batch(m, LLM_MAX_BATCH_DEFAULT, err) != LLM_OK)
    {
        llm_model_free(m);
        return LLM_ERR;
    }

    *out = m;
    return LLM_OK;
}


void
llm_model_free(llm_model_t *m)
{
    if (m == NULL) {
        return;
    }

    llm_state_free(&m->s);

    /* the activations, then the backends with the weights they hold */
    for (int i = 0; i < m->n_shards; i++) {
        llm_act_free(&m->shards[i], &m->shards[i].a);
    }

    for (int i = 0; i < m->n_shards; i++) {
        llm_shard_free(&m->shards[i]);
    }

    free(m->shards);
    free(m->group);
    free(m->partial);
    free(m->w.layers);
    llm_tokenizer_free(m->tok);
    llm_gguf_close(m->gguf);
    free(m);
}


const char *
llm_model_backend(const llm_model_t *m)
{
    return m->shards[0].be->name;
}


int
llm_model_tp(const llm_model_t *m)
{
    return m->n_shards;
}


const llm_config_t *
llm_model_config(const llm_model_t *m)
{
    return &m->config;
}


const llm_tokenizer_t *
llm_model_tokenizer(const llm_model_t *m)
{
    return m->tok;
}


const llm_gguf_t *
llm_model_gguf(const llm_model_t *m)
{
    return m->gguf;
}


int
llm_model_set_max_batch(llm_model_t *m, int max_batch, llm_err_t *err)
{
    int           i;
    llm_act_t     a[LLM_TP_MAX];
    llm_state_t   s;

    if (max_batch <= 0 || max_batch > LLM_MAX_BATCH_LIMIT) {
        return llm_err_set(err, LLM_EINVAL,
                           "a batch of %d tokens is out of range (1..%d)",
                           max_batch, LLM_MAX_BATCH_LIMIT);
    }

    if (max_batch == m->s.max_batch) {
        return LLM_OK;
    }

    /* the old buffers stay until all the new ones exist */

    if (llm_state_alloc(m, &s, max_batch, err) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < m->n_shards; i++) {
        if (llm_act_alloc(m, &m->shards[i], &a[i], max_batch, err)
            != LLM_OK)
        {
            while (i-- > 0) {
                llm_act_free(&m->shards[i], &a[i]);
            }

            llm_state_free(&s);
            return LLM_ERR;
        }
    }

    llm_state_free(&m->s);
    m->s = s;

    for (i = 0; i < m->n_shards; i++) {
        llm_act_free(&m->shards[i], &m->shards[i].a);
        m->shards[i].a = a[i];
        m->partial[i] = a[i].xb2;
    }

    return LLM_OK;
}


int
llm_model_max_batch(const llm_model_t *m)
{
    return m->s.max_batch;
}


/* the hyperparameters, each checked so later size arithmetic is safe */
static int
llm_model_hparams(llm_model_t *m, llm_err_t *err)
{
    int            rc;
    char           key[96];
    size_t         len;
    uint32_t       v;
    const char    *arch, *path;
    llm_config_t  *c;

    c = &m->config;
    path = llm_gguf_path(m->gguf);

    rc = llm_gguf_get_str(m->gguf, "general.architecture", &arch, &len,
                          err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: general.architecture is missing", path);
    }

    if (llm_model_arch(m, arch, len, err) != LLM_OK) {
        return LLM_ERR;
    }

    /* bounds keep every product below fit in int and size_t */

    if (llm_model_u32(m, "block_count", 1, 0, &v, err) != LLM_OK) {
        return LLM_ERR;
    }
    c->n_layer = (int) v;

    if (llm_model_u32(m, "embedding_length", 1, 0, &v, err) != LLM_OK) {
        return LLM_ERR;
    }
    c->n_embd = (int) v;

    if (llm_model_u32(m, "feed_forward_length", 1, 0, &v, err) != LLM_OK) {
        return LLM_ERR;
    }
    c->n_ff = (int) v;

    if (llm_model_u32(m, "attention.head_count", 1, 0, &v, err) != LLM_OK) {
        return LLM_ERR;
    }
    c->n_head = (int) v;

    if (llm_model_u32(m, "attention.head_count_kv", 0, (uint32_t) c->n_head,
                      &v, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }
    c->n_head_kv = (int) v;

    if (llm_model_u32(m, "context_length", 1, 0, &v, err) != LLM_OK) {
        return LLM_ERR;
    }
    c->n_ctx = (int) v;

    /* the head size is d / n_head unless the file says otherwise, as
     * qwen3's does (8 heads of 64 on a width of 256) */

    snprintf(key, sizeof(key), "%s.attention.key_length", c->arch);

    if (llm_gguf_find(m->gguf, key) == NULL
        && c->n_embd % c->n_head != 0)
    {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: embedding_length %d is not a multiple of "
                           "head_count %d", path, c->n_embd, c->n_head);
    }

    if (llm_model_u32(m, "attention.key_length", 0,
                      (uint32_t) (c->n_embd / c->n_head), &v, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }
    c->head_dim = (int) v;

    if (llm_model_u32(m, "attention.value_length", 0,
                      (uint32_t) c->head_dim, &v, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if ((int64_t) v != c->head_dim) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: attention.value_length %u differs from "
                           "key_length %d", path, v, c->head_dim);
    }

    if (llm_model_u32(m, "rope.dimension_count", 0, (uint32_t) c->head_dim,
                      &v, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }
    m->n_rot = (int) v;

    if (c->n_head_kv == 0 || c->n_head % c->n_head_kv != 0) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: head_count %d is not a multiple of "
                           "head_count_kv %d", path, c->n_head,
                           c->n_head_kv);
    }

    if (m->n_rot % 2 != 0 || m->n_rot > c->head_dim) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: rope.dimension_count %d must be even and at "
                           "most the head size %d", path, m->n_rot,
                           c->head_dim);
    }

    /* widths up to 2^20 and heads up to 2^12 keep n_head * head_dim and
     * the like far inside int */
    if (c->n_layer > 4096 || c->n_embd > (1 << 20) || c->n_ff > (1 << 22)
        || c->n_head > 4096 || c->head_dim > 4096 || c->n_ctx > (1 << 24))
    {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: hyperparameters out of range (layers %d, "
                           "width %d, ffn %d, heads %d, head size %d, "
                           "context %d)", path, c->n_layer, c->n_embd,
                           c->n_ff, c->n_head, c->head_dim, c->n_ctx);
    }

    m->q_dim = c->n_head * c->head_dim;
    m->kv_dim = c->n_head_kv * c->head_dim;

    m->max_cols = c->n_embd;
    if (m->q_dim > m->max_cols) {
        m->max_cols = m->q_dim;
    }
    if (c->n_ff > m->max_cols) {
        m->max_cols = c->n_ff;
    }

    c->rope_base = 10000.0f;
    snprintf(key, sizeof(key), "%s.rope.freq_base", c->arch);
    if (llm_gguf_get_f32(m->gguf, key, &c->rope_base, err) == LLM_ERR) {
        return LLM_ERR;
    }

    c->norm_eps = 1e-5f;
    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon",
             c->arch);
    if (llm_gguf_get_f32(m->gguf, key, &c->norm_eps, err) == LLM_ERR) {
        return LLM_ERR;
    }

    if (!(c->rope_base > 0.0f) || !isfinite(c->rope_base)
        || !(c->norm_eps >= 0.0f) || !isfinite(c->norm_eps))
    {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: bad rope.freq_base %g or rms epsilon %g",
                           path, c->rope_base, c->norm_eps);
    }

    return llm_model_rope_scaling(m, err);
}


/* the architectures this file computes, and how they differ */
static int
llm_model_arch(llm_model_t *m, const char *arch, size_t len,
    llm_err_t *err)
{
    static const struct {
        const char  *name;
        llm_arch_e   arch;
        int          neox;
    } archs[] = {
        { "llama", LLM_ARCH_LLAMA, 0 },
        { "qwen2", LLM_ARCH_QWEN2, 1 },
        { "qwen3", LLM_ARCH_QWEN3, 1 },
    };

    for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++) {
        if (len == strlen(archs[i].name)
            && memcmp(arch, archs[i].name, len) == 0)
        {
            m->arch = archs[i].arch;
            m->rope_neox = archs[i].neox;
            memcpy(m->config.arch, arch, len);
            m->config.arch[len] = '\0';
            return LLM_OK;
        }
    }

    return llm_err_set(err, LLM_EUNSUPPORTED,
                       "%s: architecture '%.*s' is not supported "
                       "(llama, qwen2, qwen3)", llm_gguf_path(m->gguf),
                       (int) (len > 31 ? 31 : len), arch);
}


/*
 * Linear rope scaling (positions divided by rope.scaling.factor, or by
 * the older rope.scale_linear) is what a missing scaling type means;
 * the other kinds (yarn, longrope) change more than the angle and are
 * refused rather than computed wrongly.
 */
static int
llm_model_rope_scaling(llm_model_t *m, llm_err_t *err)
{
    int          rc;
    char         key[96];
    float        factor;
    size_t       len;
    const char  *type, *arch, *path;

    arch = m->config.arch;
    path = llm_gguf_path(m->gguf);
    m->rope_scale = 1.0f;

    snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
    rc = llm_gguf_get_str(m->gguf, key, &type, &len, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_OK) {
        if (len == 4 && memcmp(type, "none", 4) == 0) {
            return LLM_OK;
        }

        if (len != 6 || memcmp(type, "linear", 6) != 0) {
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: rope scaling '%.*s' is not supported "
                               "(linear, none)", path,
                               (int) (len > 31 ? 31 : len), type);
        }
    }

    factor = 0.0f;

    snprintf(key, sizeof(key), "%s.rope.scaling.factor", arch);
    rc = llm_gguf_get_f32(m->gguf, key, &factor, err);

    if (rc == LLM_GGUF_MISSING) {
        snprintf(key, sizeof(key), "%s.rope.scale_linear", arch);
        rc = llm_gguf_get_f32(m->gguf, key, &factor, err);
    }

    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING || factor == 0.0f) {
        /* 0 means unscaled, as converters write it */
        return LLM_OK;
    }

    if (!(factor > 0.0f) || !isfinite(factor)) {
        return llm_err_set(err, LLM_EFORMAT, "%s: %s is %g", path, key,
                           factor);
    }

    m->rope_scale = 1.0f / factor;

    return LLM_OK;
}


/* "<arch>." + key: a positive u32 (zero is allowed for nothing here) */
static int
llm_model_u32(llm_model_t *m, const char *key, int required, uint32_t def,
    uint32_t *out, llm_err_t *err)
{
    int   rc;
    char  full[128];

    snprintf(full, sizeof(full), "%s.%s", m->config.arch, key);

    rc = llm_gguf_get_u32(m->gguf, full, out, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        if (required) {
            return llm_err_set(err, LLM_EFORMAT, "%s: %s is missing",
                               llm_gguf_path(m->gguf), full);
        }

        *out = def;
    }

    if (*out == 0 || *out > INT32_MAX) {
        return llm_err_set(err, LLM_EFORMAT, "%s: %s is %u",
                           llm_gguf_path(m->gguf), full, *out);
    }

    return LLM_OK;
}


static int
llm_model_weights(llm_model_t *m, llm_err_t *err)
{
    int                       n_vocab, d;
    llm_config_t             *c;
    const llm_gguf_tensor_t  *t;

    c = &m->config;
    d = c->n_embd;

    /* the vocabulary size comes from the tokenizer; the embedding must
     * have a row for each token */

    n_vocab = llm_tokenizer_n_vocab(m->tok);
    c->n_vocab = n_vocab;

    if (llm_mat(m, &m->w.token_embd, "token_embd.weight", d, n_vocab, 1,
                err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if (llm_vec(m, &m->w.output_norm, "output_norm.weight", d, 1, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if (llm_mat(m, &m->w.output, "output.weight", d, n_vocab, 0, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if (m->w.output.data == NULL) {
        /* tied embeddings (qwen2 and qwen3 tie theirs) */
        m->w.output = m->w.token_embd;
    }

    if (llm_tensor(m, "rope_freqs.weight", m->n_rot / 2, 1, 0, &t, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if (t != NULL) {
        if (t->type != LLM_TYPE_F32) {
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: tensor 'rope_freqs.weight' has type %s, "
                               "want F32", llm_gguf_path(m->gguf),
                               llm_ggml_type_name(t->type));
        }

        m->w.rope_freqs = t->data;
    }

    m->w.layers = calloc((size_t) c->n_layer, sizeof(llm_layer_t));
    if (m->w.layers == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory",
                           llm_gguf_path(m->gguf));
    }

    for (int i = 0; i < c->n_layer; i++) {
        if (llm_model_layer(m, i, err) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_model_layer(llm_model_t *m, int i, llm_err_t *err)
{
    int            d, n_ff, hd, bias;
    char           name[64];
    llm_layer_t   *l;

    l = &m->w.layers[i];
    d = m->config.n_embd;
    n_ff = m->config.n_ff;
    hd = m->config.head_dim;

    /* qwen2 always has Q/K/V biases; a llama file may */
    bias = m->arch == LLM_ARCH_QWEN2;

    if (llm_vec(m, &l->attn_norm,
                llm_blk(name, sizeof(name), i, "attn_norm.weight"), d, 1,
                err) != LLM_OK
        || llm_mat(m, &l->wq,
                   llm_blk(name, sizeof(name), i, "attn_q.weight"),
                   d, m->q_dim, 1, err) != LLM_OK
        || llm_mat(m, &l->wk,
                   llm_blk(name, sizeof(name), i, "attn_k.weight"),
                   d, m->kv_dim, 1, err) != LLM_OK
        || llm_mat(m, &l->wv,
                   llm_blk(name, sizeof(name), i, "attn_v.weight"),
                   d, m->kv_dim, 1, err) != LLM_OK
        || llm_vec(m, &l->bq, llm_blk(name, sizeof(name), i, "attn_q.bias"),
                   m->q_dim, bias, err) != LLM_OK
        || llm_vec(m, &l->bk, llm_blk(name, sizeof(name), i, "attn_k.bias"),
                   m->kv_dim, bias, err) != LLM_OK
        || llm_vec(m, &l->bv, llm_blk(name, sizeof(name), i, "attn_v.bias"),
                   m->kv_dim, bias, err) != LLM_OK
        || llm_mat(m, &l->wo,
                   llm_blk(name, sizeof(name), i, "attn_output.weight"),
                   m->q_dim, d, 1, err) != LLM_OK
        || llm_vec(m, &l->ffn_norm,
                   llm_blk(name, sizeof(name), i, "ffn_norm.weight"), d, 1,
                   err) != LLM_OK
        || llm_mat(m, &l->w_gate,
                   llm_blk(name, sizeof(name), i, "ffn_gate.weight"),
                   d, n_ff, 1, err) != LLM_OK
        || llm_mat(m, &l->w_up,
                   llm_blk(name, sizeof(name), i, "ffn_up.weight"),
                   d, n_ff, 1, err) != LLM_OK
        || llm_mat(m, &l->w_down,
                   llm_blk(name, sizeof(name), i, "ffn_down.weight"),
                   n_ff, d, 1, err) != LLM_OK)
    {
        return LLM_ERR;
    }

    if (m->arch == LLM_ARCH_QWEN3
        && (llm_vec(m, &l->q_norm,
                    llm_blk(name, sizeof(name), i, "attn_q_norm.weight"),
                    hd, 1, err) != LLM_OK
            || llm_vec(m, &l->k_norm,
                       llm_blk(name, sizeof(name), i, "attn_k_norm.weight"),
                       hd, 1, err) != LLM_OK))
    {
        return LLM_ERR;
    }

    return LLM_OK;
}


/* finds a tensor and checks its shape; *out is NULL when the tensor is
 * absent and optional */
static int
llm_tensor(llm_model_t *m, const char *name, int64_t ne0, int64_t ne1,
    int required, const llm_gguf_tensor_t **out, llm_err_t *err)
{
    const llm_gguf_tensor_t  *t;

    *out = NULL;

    t = llm_gguf_tensor(m->gguf, name);
    if (t == NULL) {
        if (required) {
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: tensor '%s' is missing",
                               llm_gguf_path(m->gguf), name);
        }

        return LLM_OK;
    }

    if (t->n_dims > 2 || t->ne[0] != ne0 || t->ne[1] != ne1) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor '%s' has shape [%lld, %lld, %lld, "
                           "%lld], want [%lld, %lld]",
                           llm_gguf_path(m->gguf), name,
                           (long long) t->ne[0], (long long) t->ne[1],
                           (long long) t->ne[2], (long long) t->ne[3],
                           (long long) ne0, (long long) ne1);
    }

    *out = t;
    return LLM_OK;
}


static const char *
llm_blk(char *buf, size_t size, int layer, const char *suffix)
{
    snprintf(buf, size, "blk.%d.%s", layer, suffix);
    return buf;
}


static int
llm_mat(llm_model_t *m, llm_mat_t *mat, const char *name, int64_t cols,
    int64_t rows, int required, llm_err_t *err)
{
    const llm_gguf_tensor_t  *t;

    memset(mat, 0, sizeof(llm_mat_t));

    if (llm_tensor(m, name, cols, rows, required, &t, err) != LLM_OK) {
        return LLM_ERR;
    }

    if (t == NULL) {
        return LLM_OK;
    }

    if (!llm_quant_supported(t->type)) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: tensor '%s' has type %s, which the engine "
                           "cannot compute with yet", llm_gguf_path(m->gguf),
                           name, llm_ggml_type_name(t->type));
    }

    mat->data = t->data;
    mat->type = t->type;
    mat->rows = (int) rows;
    mat->cols = (int) cols;
    mat->row_bytes = llm_ggml_row_size(t->type, cols);

    return LLM_OK;
}


/* a vector of n f32 (norm weights, biases); *w is NULL when it is
 * absent and optional */
static int
llm_vec(llm_model_t *m, const float **w, const char *name, int64_t n,
    int required, llm_err_t *err)
{
    const llm_gguf_tensor_t  *t;

    *w = NULL;

    if (llm_tensor(m, name, n, 1, required, &t, err) != LLM_OK) {
        return LLM_ERR;
    }

    if (t == NULL) {
        return LLM_OK;
    }

    if (t->type != LLM_TYPE_F32) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: tensor '%s' has type %s, want F32",
                           llm_gguf_path(m->gguf), name,
                           llm_ggml_type_name(t->type));
    }

    *w = t->data;
    return LLM_OK;
}


/*
 * Cuts the model into o->tp shards, one backend each, and gives each
 * its share of the weights.  With one shard on the CPU, the shard's
 * weights are the model's, in the map.
 */
static int
llm_model_shards(llm_model_t *m, const llm_model_opts_t *o, llm_err_t *err)
{
    int             n, unit, bs;
    llm_shard_t    *sh;
    llm_config_t   *c;
    llm_tp_part_t   parts[LLM_TP_MAX];

    c = &m->config;
    n = o->tp;

    if (n < 1 || n > LLM_TP_MAX) {
        return llm_err_set(err, LLM_EINVAL, "--tp %d is out of range "
                           "(1..%d)", n, LLM_TP_MAX);
    }

    /* FFN columns go in whole blocks of every layer's down projection,
     * so that its slices keep their type (block sizes are powers of 2:
     * the largest is a multiple of the others) */
    unit = 1;
    for (int i = 0; i < c->n_layer; i++) {
        bs = (int) llm_ggml_blck_size(m->w.layers[i].w_down.type);
        unit = bs > unit ? bs : unit;
    }

    if (llm_tp_split(parts, n, c->n_head, c->n_head_kv, c->n_ff, unit, err)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    m->shards = calloc((size_t) n, sizeof(llm_shard_t));
    m->group = calloc((size_t) n, sizeof(llm_backend_t *));
    m->partial = calloc((size_t) n, sizeof(float *));

    if (m->shards == NULL || m->group == NULL || m->partial == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory",
                           llm_gguf_path(m->gguf));
    }

    for (int i = 0; i < n; i++) {
        sh = &m->shards[i];

        sh->be = llm_backend_open(o->backend, o->device + i, err);
        if (sh->be == NULL) {
            return LLM_ERR;
        }

        m->n_shards = i + 1;
        m->group[i] = sh->be;

        sh->head0 = parts[i].head0;
        sh->n_head = parts[i].n_head;
        sh->kv_head0 = parts[i].kv_head0;
        sh->n_head_kv = parts[i].n_head_kv;
        sh->ff0 = parts[i].ff0;
        sh->n_ff = parts[i].n_ff;
        sh->q_dim = sh->n_head * c->head_dim;
        sh->kv_dim = sh->n_head_kv * c->head_dim;

        if (i > 0 && strcmp(sh->be->name, m->shards[0].be->name) != 0) {
            /* "auto" found one device but not the next */
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "shard %d would run on %s, shard 0 on %s",
                               i, sh->be->name, m->shards[0].be->name);
        }

        if (llm_shard_weights(m, sh, i == 0, err) != LLM_OK) {
            return LLM_ERR;
        }
    }

    if (n > 1) {
        if (m->shards[0].be->allreduce == NULL) {
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "the %s backend cannot sum over shards",
                               m->shards[0].be->name);
        }

        if (m->shards[0].be->group != NULL
            && m->shards[0].be->group(m->group, n, err) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


/* the shard's slices of every weight, in its backend; the embedding on
 * every shard (each holds the residual stream), the classifier on the
 * first only */
static int
llm_shard_weights(llm_model_t *m, llm_shard_t *sh, int first,
    llm_err_t *err)
{
    int             d, hd, qo, ko, n_layer;
    llm_layer_t    *l, *src;
    llm_weights_t  *w;

    d = m->config.n_embd;
    hd = m->config.head_dim;
    n_layer = m->config.n_layer;
    qo = sh->head0 * hd;
    ko = sh->kv_head0 * hd;
    w = &sh->w;

    if (llm_shard_mat(sh, &w->token_embd, &m->w.token_embd, 0,
                      m->w.token_embd.rows, 0, d, err) != LLM_OK
        || (m->w.rope_freqs != NULL
            && llm_shard_vec(sh, &w->rope_freqs, m->w.rope_freqs, 0,
                             m->n_rot / 2, err) != LLM_OK))
    {
        return LLM_ERR;
    }

    if (first) {
        if (llm_shard_vec(sh, &w->output_norm, m->w.output_norm, 0, d, err)
            != LLM_OK)
        {
            return LLM_ERR;
        }

        if (m->w.output.data == m->w.token_embd.data) {
            w->output = w->token_embd;

        } else if (llm_shard_mat(sh, &w->output, &m->w.output, 0,
                                 m->w.output.rows, 0, d, err) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    w->layers = calloc((size_t) n_layer, sizeof(llm_layer_t));
    if (w->layers == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    for (int i = 0; i < n_layer; i++) {
        l = &w->layers[i];
        src = &m->w.layers[i];

        if (llm_shard_vec(sh, &l->attn_norm, src->attn_norm, 0, d, err)
                != LLM_OK
            || llm_shard_mat(sh, &l->wq, &src->wq, qo, sh->q_dim, 0, d, err)
                != LLM_OK
            || llm_shard_mat(sh, &l->wk, &src->wk, ko, sh->kv_dim, 0, d,
                             err) != LLM_OK
            || llm_shard_mat(sh, &l->wv, &src->wv, ko, sh->kv_dim, 0, d,
                             err) != LLM_OK
            || llm_shard_vec(sh, &l->bq, src->bq, qo, sh->q_dim, err)
                != LLM_OK
            || llm_shard_vec(sh, &l->bk, src->bk, ko, sh->kv_dim, err)
                != LLM_OK
            || llm_shard_vec(sh, &l->bv, src->bv, ko, sh->kv_dim, err)
                != LLM_OK
            || llm_shard_vec(sh, &l->q_norm, src->q_norm, 0, hd, err)
                != LLM_OK
            || llm_shard_vec(sh, &l->k_norm, src->k_norm, 0, hd, err)
                != LLM_OK
            || llm_shard_mat(sh, &l->wo, &src->wo, 0, d, qo, sh->q_dim, err)
                != LLM_OK
            || llm_shard_vec(sh, &l->ffn_norm, src->ffn_norm, 0, d, err)
                != LLM_OK
            || llm_shard_mat(sh, &l->w_gate, &src->w_gate, sh->ff0,
                             sh->n_ff, 0, d, err) != LLM_OK
            || llm_shard_mat(sh, &l->w_up, &src->w_up, sh->ff0, sh->n_ff,
                             0, d, err) != LLM_OK
            || llm_shard_mat(sh, &l->w_down, &src->w_down, 0, d, sh->ff0,
                             sh->n_ff, err) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


/*
 * dst = rows [row0, row0 + n_rows) and columns [col0, col0 + n_cols) of
 * src (in the map), in the shard's backend.  Whole rows are contiguous
 * in the map and go as they are.
 */
static int
llm_shard_mat(llm_shard_t *sh, llm_mat_t *dst, const llm_mat_t *src,
    int row0, int n_rows, int col0, int n_cols, llm_err_t *err)
{
    void       *mem, **owned;
    llm_mat_t   cut;

    *dst = *src;
    dst->rows = n_rows;
    dst->data = (const char *) src->data + (size_t) row0 * src->row_bytes;
    mem = NULL;

    if (col0 != 0 || n_cols != src->cols) {
        /* a column slice: every row cut and packed on the host */
        cut = *dst;

        if (llm_tp_slice_cols(&cut, col0, n_cols, dst, &mem, err)
            != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    cut = *dst;
    dst->data = sh->be->upload(sh->be, cut.data,
                               (size_t) n_rows * cut.row_bytes, err);

    if (mem == NULL) {
        return dst->data != NULL ? LLM_OK : LLM_ERR;
    }

    /* the copy lives as long as the backend reads it in place */
    if (dst->data == NULL || !sh->be->host_mem) {
        free(mem);
        return dst->data != NULL ? LLM_OK : LLM_ERR;
    }

    owned = realloc(sh->owned, (size_t) (sh->n_owned + 1) * sizeof(void *));
    if (owned == NULL) {
        free(mem);
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    sh->owned = owned;
    sh->owned[sh->n_owned++] = mem;

    return LLM_OK;
}


/* dst = src[off, off + n) in the shard's backend; NULL stays NULL */
static int
llm_shard_vec(llm_shard_t *sh, const float **dst, const float *src,
    int off, int n, llm_err_t *err)
{
    *dst = NULL;

    if (src == NULL) {
        return LLM_OK;
    }

    *dst = sh->be->upload(sh->be, src + off, (size_t) n * sizeof(float),
                          err);

    return *dst != NULL ? LLM_OK : LLM_ERR;
}


/* the backend first: its uploads may point into the host copies */
static void
llm_shard_free(llm_shard_t *sh)
{
    llm_backend_close(sh->be);
    sh->be = NULL;

    for (int i = 0; i < sh->n_owned; i++) {
        free(sh->owned[i]);
    }

    free(sh->owned);
    free(sh->w.layers);
}


/* the host side of a step of max_batch tokens: the draws of the
 * classifier's rows, one block of token indices, one of pointers, one
 * of segments, each checked */
static int
llm_state_alloc(llm_model_t *m, llm_state_t *s, int max_batch,
    llm_err_t *err)
{
    int  n_logit;

    (void) m;

    n_logit = max_batch < LLM_LOGIT_ROWS ? max_batch : LLM_LOGIT_ROWS;

    memset(s, 0, sizeof(llm_state_t));

    s->draw_params = malloc((size_t) n_logit * sizeof(llm_sample_params_t));
    s->drawn = malloc((size_t) n_logit * sizeof(int32_t));
    s->tokens = malloc(4 * (size_t) max_batch * sizeof(int32_t));
    s->seg_blocks = malloc((size_t) max_batch * sizeof(int32_t *));
    s->segs = malloc((size_t) max_batch * sizeof(llm_seg_t));

    if (s->draw_params == NULL || s->drawn == NULL || s->tokens == NULL
        || s->seg_blocks == NULL || s->segs == NULL)
    {
        llm_state_free(s);
        return llm_err_set(err, LLM_ENOMEM,
                           "%s: out of memory for a batch of %d tokens",
                           llm_gguf_path(m->gguf), max_batch);
    }

    s->max_batch = max_batch;
    s->n_logit = n_logit;
    s->tok_pos = s->tokens + max_batch;
    s->tok_seg = s->tok_pos + max_batch;
    s->seg_nblocks = s->tok_seg + max_batch;

    return LLM_OK;
}


static void
llm_state_free(llm_state_t *s)
{
    free(s->draw_params);
    free(s->drawn);
    free(s->tokens);
    free((void *) s->seg_blocks);
    free(s->segs);
    memset(s, 0, sizeof(llm_state_t));
}


/* a shard's activations for max_batch tokens (and on the first, the
 * classifier's rows), in one buffer of its backend, and the backend's
 * scratch for steps of that size */
static int
llm_act_alloc(llm_model_t *m, llm_shard_t *sh, llm_act_t *a, int max_batch,
    llm_err_t *err)
{
    int             d, n_logit;
    size_t          per_tok, n, nl, acts;
    float          *p;
    llm_reserve_t   r;

    d = m->config.n_embd;
    n_logit = max_batch < LLM_LOGIT_ROWS ? max_batch : LLM_LOGIT_ROWS;

    memset(a, 0, sizeof(llm_act_t));

    per_tok = 3 * (size_t) d + 2 * (size_t) sh->q_dim
              + 2 * (size_t) sh->kv_dim + 2 * (size_t) sh->n_ff
              + (size_t) m->n_rot;

    nl = 0;
    if (sh == &m->shards[0]) {
        nl = (size_t) n_logit * (size_t) m->config.n_vocab;
    }

    /* the logits start at a multiple of 64 floats into the buffer:
     * as aligned as the buffer, for the kernels that read them */

    if (llm_mul_size(per_tok, (size_t) max_batch, &acts) != 0
        || llm_add_size(acts, 63, &acts) != 0
        || llm_add_size(acts & ~(size_t) 63, nl, &n) != 0
        || llm_mul_size(n, sizeof(float), &n) != 0)
    {
        return llm_err_set(err, LLM_ENOMEM,
                           "%s: buffers for a batch of %d overflow",
                           llm_gguf_path(m->gguf), max_batch);
    }

    a->mem = sh->be->alloc(sh->be, n, err);
    if (a->mem == NULL) {
        return LLM_ERR;
    }

    p = a->mem;
    a->x = p;
    a->xb = a->x + (size_t) max_batch * d;
    a->xb2 = a->xb + (size_t) max_batch * d;
    a->q = a->xb2 + (size_t) max_batch * d;
    a->k = a->q + (size_t) max_batch * sh->q_dim;
    a->v = a->k + (size_t) max_batch * sh->kv_dim;
    a->att_out = a->v + (size_t) max_batch * sh->kv_dim;
    a->hb = a->att_out + (size_t) max_batch * sh->q_dim;
    a->hb2 = a->hb + (size_t) max_batch * sh->n_ff;
    a->rope_cs = a->hb2 + (size_t) max_batch * sh->n_ff;
    a->logits = nl ? p + (acts & ~(size_t) 63) : NULL;

    r.max_tok = max_batch;
    r.max_cols = m->max_cols;
    r.max_rows = m->config.n_vocab > m->max_cols ? m->config.n_vocab
                                                 : m->max_cols;
    r.n_head = sh->n_head;
    r.head_dim = m->config.head_dim;
    r.att_f16 = llm_att_f16(m);

    if (sh->be->reserve(sh->be, &r, err) != LLM_OK) {
        llm_act_free(sh, a);
        return LLM_ERR;
    }

    return LLM_OK;
}


static void
llm_act_free(llm_shard_t *sh, llm_act_t *a)
{
    if (a->mem != NULL) {
        sh->be->free(sh->be, a->mem);
    }

    memset(a, 0, sizeof(llm_act_t));
}


size_t
llm_kv_block_bytes(const llm_model_t *m, int block_size)
{
    size_t  n;

    if (m == NULL || block_size <= 0
        || llm_mul_size((size_t) m->config.n_layer * 2, (size_t) block_size,
                        &n) != 0
        || llm_mul_size(n, (size_t) m->kv_dim, &n) != 0
        || llm_mul_size(n, sizeof(float), &n) != 0)
    {
        return 0;
    }

    return n;
}


/* the model's attention may round q, k, v to f16: its products do as
 * much (16-bit or quantized weights) */
static int
llm_att_f16(const llm_model_t *m)
{
    return m->w.layers[0].wq.type != LLM_TYPE_F32;
}


/* a shard keeps its KV blocks in f16 where its backend can and the
 * model's attention may round to f16 */
static int
llm_kv_f16(const llm_model_t *m, const llm_shard_t *sh)
{
    return sh->be->kv_f16 && llm_att_f16(m);
}


size_t
llm_kv_cache_bytes(const llm_model_t *m, int block_size)
{
    size_t  n, sum;

    if (m == NULL || block_size <= 0) {
        return 0;
    }

    sum = 0;

    for (int i = 0; i < m->n_shards; i++) {
        if (llm_mul_size((size_t) m->config.n_layer * 2, (size_t) block_size,
                         &n) != 0
            || llm_mul_size(n, (size_t) m->shards[i].kv_dim, &n) != 0
            || llm_mul_size(n, llm_kv_f16(m, &m->shards[i]) ? 2 : 4, &n)
               != 0
            || llm_add_size(sum, n, &sum) != 0)
        {
            return 0;
        }
    }

    return sum;
}


llm_kv_pool_t *
llm_kv_pool_new(const llm_model_t *m, int n_blocks, int block_size,
    llm_err_t *err)
{
    int                 any16;
    size_t              bytes, n, most;
    llm_kv_buf_t       *kv;
    llm_kv_pool_t      *p;
    const llm_shard_t  *sh;

    /* positions are ints: a sequence can use the whole pool */
    if (m == NULL || n_blocks <= 0 || block_size <= 0
        || (int64_t) n_blocks * block_size > INT_MAX)
    {
        llm_err_set(err, LLM_EINVAL,
                    "a KV pool of %d blocks of %d positions is out of "
                    "range", n_blocks, block_size);
        return NULL;
    }

    bytes = llm_kv_block_bytes(m, block_size);
    n = llm_kv_cache_bytes(m, block_size);

    if (bytes == 0 || n == 0 || llm_mul_size(n, (size_t) n_blocks, &n) != 0)
    {
        llm_err_set(err, LLM_ENOMEM, "KV pool size overflows");
        return NULL;
    }

    p = calloc(1, sizeof(llm_kv_pool_t));
    if (p == NULL) {
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV pool");
        return NULL;
    }

    p->model = m;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->kv_dim = m->kv_dim;
    p->block_bytes = bytes;

    p->kv = calloc((size_t) m->n_shards, sizeof(llm_kv_buf_t));
    p->mark = calloc((size_t) n_blocks, sizeof(llm_kv_mark_t));

    if (p->kv == NULL || p->mark == NULL) {
        llm_kv_pool_free(p);
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV pool");
        return NULL;
    }

    most = 0;
    any16 = 0;

    for (int i = 0; i < m->n_shards; i++) {
        sh = &m->shards[i];
        kv = &p->kv[i];

        kv->f16 = llm_kv_f16(m, sh);
        any16 |= kv->f16;
        kv->n_blocks = n_blocks;
        kv->block_size = block_size;
        kv->n_layer = m->config.n_layer;
        kv->kv_dim = sh->kv_dim;
        kv->layer_elems = 2 * (size_t) block_size * (size_t) sh->kv_dim;
        kv->block_elems = kv->layer_elems * (size_t) kv->n_layer;

        if (kv->block_elems > most) {
            most = kv->block_elems;
        }

        /* zeroed, so that a position nobody wrote reads as zeros, not
         * as another request's keys; a shard's share is at most the
         * whole, so the product cannot overflow */
        kv->data = sh->be->alloc(sh->be, kv->block_elems
                                         * (kv->f16 ? 2 : sizeof(float))
                                         * (size_t) n_blocks, err);
        if (kv->data == NULL) {
            llm_kv_pool_free(p);
            return NULL;
        }
    }

    if (m->n_shards > 1 || any16) {
        p->scratch = malloc(most * sizeof(float));
        if (p->scratch == NULL) {
            llm_kv_pool_free(p);
            llm_err_set(err, LLM_ENOMEM, "out of memory for the KV pool");
            return NULL;
        }
    }

    return p;
}


int
llm_kv_pool_f16(const llm_kv_pool_t *p)
{
    return p->kv[0].f16;
}


void
llm_kv_pool_free(llm_kv_pool_t *p)
{
    llm_backend_t  *be;

    if (p == NULL) {
        return;
    }

    if (p->kv != NULL) {
        for (int i = 0; i < p->model->n_shards; i++) {
            be = p->model->shards[i].be;

            if (p->kv[i].data != NULL) {
                be->free(be, p->kv[i].data);
            }
        }
    }

    free(p->kv);
    free(p->scratch);
    free(p->mark);
    free(p);
}


/*
 * A block crosses in one layout: (n_layer, 2, block_size, kv_dim) f32,
 * each row of kv_dim the channels of every shard in turn.  With shards,
 * or f16 blocks, each one's share goes through the scratch (converted
 * to f32 on the way out, rounded to f16 on the way in).
 */
static int
llm_kv_block_copy(llm_kv_pool_t *p, int32_t block, float *host, int out)
{
    int                 off, w;
    size_t              rows, size;
    char               *dev;
    float              *a;
    llm_err_t           err;
    llm_backend_t      *be;
    const llm_kv_buf_t *kv;

    memset(&err, 0, sizeof(err));
    rows = (size_t) p->model->config.n_layer * 2 * (size_t) p->block_size;
    off = 0;

    for (int i = 0; i < p->model->n_shards; i++) {
        be = p->model->shards[i].be;
        kv = &p->kv[i];
        size = kv->block_elems * (kv->f16 ? 2 : sizeof(float));
        dev = (char *) kv->data + (size_t) block * size;
        w = kv->kv_dim;

        if (p->model->n_shards == 1 && !kv->f16) {
            return out ? be->read(be, host, dev, p->block_bytes, &err)
                       : be->write(be, dev, host, p->block_bytes, &err);
        }

        if (out && be->read(be, p->scratch, dev, size, &err) != LLM_OK) {
            return LLM_ERR;
        }

        for (size_t r = 0; r < rows; r++) {
            a = host + r * (size_t) p->kv_dim + off;

            if (kv->f16) {
                uint16_t  *h = (uint16_t *) p->scratch + r * (size_t) w;

                for (int j = 0; j < w; j++) {
                    if (out) {
                        a[j] = llm_fp16_to_fp32(h[j]);
                    } else {
                        h[j] = llm_fp32_to_fp16(a[j]);
                    }
                }

            } else if (out) {
                memcpy(a, (float *) p->scratch + r * (size_t) w,
                       (size_t) w * sizeof(float));
            } else {
                memcpy((float *) p->scratch + r * (size_t) w, a,
                       (size_t) w * sizeof(float));
            }
        }

        if (!out && be->write(be, dev, p->scratch, size, &err) != LLM_OK) {
            return LLM_ERR;
        }

        off += w;
    }

    return LLM_OK;
}


int
llm_kv_block_read(const llm_kv_pool_t *p, int32_t block, void *buf,
    size_t len)
{
    if (p == NULL || buf == NULL || block < 0 || block >= p->n_blocks
        || len != p->block_bytes)
    {
        return LLM_ERR;
    }

    /* the scratch is the pool's own, not its contents */
    return llm_kv_block_copy((llm_kv_pool_t *) p, block, buf, 1);
}


int
llm_kv_block_write(llm_kv_pool_t *p, int32_t block, const void *buf,
    size_t len)
{
    if (p == NULL || buf == NULL || block < 0 || block >= p->n_blocks
        || len != p->block_bytes)
    {
        return LLM_ERR;
    }

    return llm_kv_block_copy(p, block, (float *) buf, 0);
}


llm_kv_t *
llm_kv_new(const llm_model_t *m, int n_ctx, llm_err_t *err)
{
    int        bs, n_blocks;
    llm_kv_t  *kv;

    if (n_ctx <= 0 || n_ctx > m->config.n_ctx) {
        llm_err_set(err, LLM_EINVAL,
                    "context of %d positions is out of range (1..%d)",
                    n_ctx, m->config.n_ctx);
        return NULL;
    }

    bs = n_ctx < LLM_KV_SEQ_BLOCK ? n_ctx : LLM_KV_SEQ_BLOCK;
    n_blocks = (n_ctx + bs - 1) / bs;

    kv = calloc(1, sizeof(llm_kv_t));
    if (kv == NULL) {
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV cache");
        return NULL;
    }

    kv->model = m;
    kv->n_ctx = n_ctx;

    kv->pool = llm_kv_pool_new(m, n_blocks, bs, err);
    if (kv->pool == NULL) {
        llm_kv_free(kv);
        return NULL;
    }

    kv->blocks = malloc((size_t) n_blocks * sizeof(int32_t));
    if (kv->blocks == NULL) {
        llm_kv_free(kv);
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV cache");
        return NULL;
    }

    for (int i = 0; i < n_blocks; i++) {
        kv->blocks[i] = i;
    }

    return kv;
}


void
llm_kv_free(llm_kv_t *kv)
{
    if (kv == NULL) {
        return;
    }

    llm_kv_pool_free(kv->pool);
    free(kv->blocks);
    free(kv);
}


int
llm_kv_capacity(const llm_kv_t *kv)
{
    return kv->n_ctx;
}


int
llm_model_forward(llm_model_t *m, llm_kv_t *kv, const int32_t *tokens,
    int n, int pos, float *logits, int all_logits, llm_err_t *err)
{
    int         n_vocab, c;
    llm_seg_t   seg;

    n_vocab = m->config.n_vocab;

    if (kv == NULL || kv->model != m) {
        return llm_err_set(err, LLM_EINVAL,
                           "KV cache belongs to another model");
    }

    if (tokens == NULL || n <= 0 || pos < 0 || pos > kv->n_pos
        || n > kv->n_ctx - pos)
    {
        return llm_err_set(err, LLM_EINVAL,
                           "cannot run %d tokens at position %d: %d "
                           "positions cached, room for %d", n, pos,
                           kv->n_pos, kv->n_ctx);
    }

    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            return llm_err_set(err, LLM_EINVAL,
                               "token %d is out of the vocabulary (0..%d)",
                               tokens[i], n_vocab - 1);
        }
    }

    /* the batched step, max_batch tokens at a time; the classifier runs
     * only where logits are wanted */

    for (int i = 0; i < n; i += c) {
        c = n - i < m->s.max_batch ? n - i : m->s.max_batch;

        seg.tokens = tokens + i;
        seg.n = c;
        seg.pos = pos + i;
        seg.blocks = kv->blocks;
        seg.all = all_logits;
        seg.draw = NULL;

        if (logits == NULL) {
            seg.logits = NULL;

        } else if (all_logits) {
            seg.logits = logits + (size_t) i * (size_t) n_vocab;

        } else {
            seg.logits = i + c == n ? logits : NULL;
        }

        if (llm_forward(m, kv->pool, &seg, 1, c, err) != LLM_OK) {
            return LLM_ERR;
        }

        kv->n_pos = pos + i + c;
    }

    return LLM_OK;
}


int
llm_model_forward_batch(llm_model_t *m, llm_kv_pool_t *pool,
    const llm_batch_seq_t *seqs, int n_seqs, llm_err_t *err)
{
    return llm_model_forward_batch_draw(m, pool, seqs, NULL, n_seqs, err);
}


int
llm_model_can_draw(const llm_model_t *m)
{
    return m->shards[0].be->sample != NULL;
}


int
llm_model_forward_batch_draw(llm_model_t *m, llm_kv_pool_t *pool,
    const llm_batch_seq_t *seqs, llm_batch_draw_t *draws, int n_seqs,
    llm_err_t *err)
{
    int                     n, n_segs, n_tok, max, last;
    llm_seg_t              *seg;
    const llm_batch_seq_t  *q;

    if (m == NULL || pool == NULL || seqs == NULL || n_seqs <= 0) {
        return llm_err_set(err, LLM_EINVAL,
                           "a batch needs a model, a pool and sequences "
                           "(%d)", n_seqs);
    }

    if (pool->model != m) {
        return llm_err_set(err, LLM_EINVAL,
                           "KV pool belongs to another model");
    }

    if (llm_batch_check(m, pool, seqs, draws, n_seqs, err) != LLM_OK) {
        return LLM_ERR;
    }

    /* a batch of more than max_batch tokens runs as several steps, in
     * order; a sequence cut between two has its logits (or its token)
     * from the last */

    max = m->s.max_batch;
    n_segs = 0;
    n_tok = 0;

    for (int i = 0; i < n_seqs; i++) {
        q = &seqs[i];

        for (int done = 0; done < q->n_tokens; done += n) {
            if (n_tok == max) {
                if (llm_forward(m, pool, m->s.segs, n_segs, n_tok, err)
                    != LLM_OK)
                {
                    return LLM_ERR;
                }

                n_segs = 0;
                n_tok = 0;
            }

            n = q->n_tokens - done;
            if (n > max - n_tok) {
                n = max - n_tok;
            }

            last = done + n == q->n_tokens;

            seg = &m->s.segs[n_segs++];
            seg->tokens = q->tokens + done;
            seg->n = n;
            seg->pos = q->pos + done;
            seg->blocks = q->blocks;
            seg->logits = last ? q->logits : NULL;
            seg->all = 0;
            seg->draw = last && draws != NULL && draws[i].draw ? &draws[i]
                                                               : NULL;

            n_tok += n;
        }
    }

    return llm_forward(m, pool, m->s.segs, n_segs, n_tok, err);
}


/*
 * Everything a step reads is checked before it writes anything: tokens,
 * positions against the pool, block tables (long enough, blocks in the
 * pool), and that no block is written twice or read by one sequence
 * while another writes it (the blocks a sequence writes start at
 * pos / block_size).
 */
static int
llm_batch_check(llm_model_t *m, llm_kv_pool_t *p,
    const llm_batch_seq_t *seqs, const llm_batch_draw_t *draws, int n_seqs,
    llm_err_t *err)
{
    int                     bs, first, need;
    int32_t                 b;
    int64_t                 cap;
    llm_kv_mark_t          *mk;
    const llm_batch_seq_t  *q;

    bs = p->block_size;
    cap = (int64_t) p->n_blocks * bs;

    if (++p->step == 0) {
        memset(p->mark, 0, (size_t) p->n_blocks * sizeof(llm_kv_mark_t));
        p->step = 1;
    }

    for (int i = 0; i < n_seqs; i++) {
        q = &seqs[i];

        if (q->tokens == NULL || q->n_tokens <= 0) {
            return llm_err_set(err, LLM_EINVAL,
                               "sequence %d of the batch has no tokens "
                               "(%d)", i, q->n_tokens);
        }

        if (q->pos < 0 || q->pos > cap - q->n_tokens) {
            return llm_err_set(err, LLM_EINVAL,
                               "sequence %d: positions %d..%lld are "
                               "outside the pool's %lld", i, q->pos,
                               (long long) q->pos + q->n_tokens - 1,
                               (long long) cap);
        }

        if (draws != NULL && draws[i].draw
            && (q->logits != NULL || !llm_model_can_draw(m)))
        {
            return llm_err_set(err, LLM_EINVAL,
                               "sequence %d: %s", i, q->logits != NULL
                               ? "a token to draw and logits both wanted"
                               : "the backend draws no tokens");
        }

        need = (q->pos + q->n_tokens - 1) / bs + 1;

        if (q->blocks == NULL || q->n_blocks < need) {
            return llm_err_set(err, LLM_EINVAL,
                               "sequence %d: a block table of %d blocks "
                               "cannot hold positions 0..%d (%d needed)",
                               i, q->blocks == NULL ? 0 : q->n_blocks,
                               q->pos + q->n_tokens - 1, need);
        }

        for (int j = 0; j < q->n_tokens; j++) {
            if (q->tokens[j] < 0 || q->tokens[j] >= m->config.n_vocab) {
                return llm_err_set(err, LLM_EINVAL,
                                   "sequence %d: token %d is out of the "
                                   "vocabulary (0..%d)", i, q->tokens[j],
                                   m->config.n_vocab - 1);
            }
        }

        for (int j = 0; j < need; j++) {
            if (q->blocks[j] < 0 || q->blocks[j] >= p->n_blocks) {
                return llm_err_set(err, LLM_EINVAL,
                                   "sequence %d: block %d is not in the "
                                   "pool (0..%d)", i, q->blocks[j],
                                   p->n_blocks - 1);
            }
        }

        first = q->pos / bs;

        for (int j = first; j < need; j++) {
            b = q->blocks[j];
            mk = &p->mark[b];

            if (mk->step == p->step) {
                return llm_err_set(err, LLM_EINVAL,
                                   "block %d would be written twice in one "
                                   "step (sequences %d and %d)", b,
                                   mk->seq, i);
            }

            mk->step = p->step;
            mk->seq = i;
            mk->idx = j;
        }
    }

    for (int i = 0; i < n_seqs; i++) {
        q = &seqs[i];
        first = q->pos / bs;

        for (int j = 0; j < first; j++) {
            b = q->blocks[j];

            if (p->mark[b].step == p->step) {
                return llm_err_set(err, LLM_EINVAL,
                                   "sequence %d reads block %d, which "
                                   "sequence %d writes in the same step",
                                   i, b, p->mark[b].seq);
            }
        }
    }

    return LLM_OK;
}


/*
 * A step a tensor-parallel group cannot finish: some shards have work
 * queued that waits for the others' collectives, which will not come.
 * As a failed collective (llm_nccl.c), the engine exits to be restarted;
 * a single shard just fails the step.
 */
static void
llm_group_lost(llm_model_t *m, const char *why)
{
    if (m->n_shards == 1) {
        return;
    }

    llm_log(LLM_LOG_ERR, "%s: a step of the group of %d shards failed: "
            "%s; exiting for a restart", llm_gguf_path(m->gguf),
            m->n_shards, why);
    exit(EXIT_FAILURE);
}


/*
 * One step over n_tok tokens (at most max_batch), in segments of one
 * sequence each, already checked: the step's description for the
 * backends, the layers (recorded once and replayed for a decode shape
 * where the backend can), then the classifier.
 */
static int
llm_forward(llm_model_t *m, llm_kv_pool_t *p, const llm_seg_t *segs,
    int n_segs, int n_tok, llm_err_t *err)
{
    int             t, rc, r, replay, graphs;
    uint64_t        key;
    llm_step_t      st;
    llm_state_t    *s;
    llm_backend_t  *be;

    s = &m->s;

    t = 0;
    for (int i = 0; i < n_segs; i++) {
        s->seg_blocks[i] = segs[i].blocks;
        s->seg_nblocks[i] = (segs[i].pos + segs[i].n - 1) / p->block_size
                            + 1;

        for (int j = 0; j < segs[i].n; j++, t++) {
            s->tokens[t] = segs[i].tokens[j];
            s->tok_seg[t] = i;
            s->tok_pos[t] = segs[i].pos + j;
        }
    }

    st.n_tok = n_tok;
    st.tokens = s->tokens;
    st.pos = s->tok_pos;
    st.seg = s->tok_seg;
    st.n_segs = n_segs;
    st.blocks = s->seg_blocks;
    st.n_blocks = s->seg_nblocks;
    st.block_size = p->block_size;
    st.decode = n_segs == n_tok;

    for (int i = 0; i < m->n_shards; i++) {
        be = m->shards[i].be;

        if (be->step(be, &st, err) != LLM_OK) {
            return LLM_ERR;
        }
    }

    /*
     * A graph per decode shape (the batch, and the pool whose addresses
     * and sizes a recording holds), on every shard of a group at once:
     * each records its part, its collectives with it, and all replay
     * together.  The shards see the same shapes, so they record and
     * replay in step; one that does not (its device failed) leaves the
     * others' collectives waiting for it: a failure of the group, fatal
     * as a collective's is.
     */
    graphs = st.decode && m->shards[0].be->graph_begin != NULL
             && m->shards[0].be->graph_end != NULL;
    replay = 0;

    for (int i = 0; graphs && i < m->n_shards; i++) {
        be = m->shards[i].be;
        key = llm_hash_data((uint64_t) n_tok, &p->kv[i],
                            sizeof(llm_kv_buf_t));
        r = be->graph_begin(be, key, err);

        if (r < 0 || (i > 0 && r != replay)) {
            llm_group_lost(m, r < 0 ? err->errstr
                                    : "the shards' graphs are out of step");
            return LLM_ERR;
        }

        replay = r;
    }

    if (!replay) {
        llm_forward_layers(m, p, n_tok);
    }

    for (int i = 0; graphs && i < m->n_shards; i++) {
        be = m->shards[i].be;
        key = llm_hash_data((uint64_t) n_tok, &p->kv[i],
                            sizeof(llm_kv_buf_t));

        if (be->graph_end(be, key, err) != LLM_OK) {
            llm_group_lost(m, err->errstr);
            return LLM_ERR;
        }
    }

    rc = llm_forward_logits(m, segs, n_segs, err);

    for (int i = 0; i < m->n_shards; i++) {
        be = m->shards[i].be;

        if (be->sync(be, err) != LLM_OK) {
            rc = LLM_ERR;
        }
    }

    return rc;
}


/*
 * The layers, reading like the diagram at the top; every matmul takes
 * all n_tok rows at once.  Each shard computes its heads and FFN
 * columns; the outputs of the attention and FFN blocks are its share
 * of a sum over the shards, which llm_allreduce completes.  A block's
 * residual add is fused with the norm of the next.
 */
static void
llm_forward_layers(llm_model_t *m, llm_kv_pool_t *p, int n_tok)
{
    int                 d, hd, last;
    llm_act_t          *a;
    llm_shard_t        *sh;
    llm_rope_t          rope;
    llm_config_t       *c;
    llm_layer_t        *l;
    llm_backend_t      *be;
    const llm_kv_buf_t *kv;

    c = &m->config;
    d = c->n_embd;
    hd = c->head_dim;
    last = c->n_layer - 1;

    rope.n_rot = m->n_rot;
    rope.base = c->rope_base;
    rope.scale = m->rope_scale;

    /* each token's embedding row (decoded from its stored type) and
     * rotation angles */

    for (int i = 0; i < m->n_shards; i++) {
        sh = &m->shards[i];
        be = sh->be;
        rope.freqs = sh->w.rope_freqs;

        be->embed(be, sh->a.x, &sh->w.token_embd);
        be->rope_cache(be, sh->a.rope_cs, &rope);
        be->rmsnorm(be, sh->a.xb, sh->a.x, sh->w.layers[0].attn_norm,
                    n_tok, d, c->norm_eps);
    }

    for (int li = 0; li < c->n_layer; li++) {

        for (int i = 0; i < m->n_shards; i++) {
            sh = &m->shards[i];
            be = sh->be;
            a = &sh->a;
            l = &sh->w.layers[li];
            kv = &p->kv[i];

            be->matmul(be, a->q, a->xb, n_tok, &l->wq);
            be->matmul(be, a->k, a->xb, n_tok, &l->wk);
            be->matmul(be, a->v, a->xb, n_tok, &l->wv);

            /* biases, per-head norms and rotation; then each key and
             * value goes to its position's slot in its sequence's
             * blocks */

            if (l->bq != NULL) {
                be->add_rows(be, a->q, l->bq, n_tok, sh->q_dim);
            }

            if (l->bk != NULL) {
                be->add_rows(be, a->k, l->bk, n_tok, sh->kv_dim);
            }

            if (l->bv != NULL) {
                be->add_rows(be, a->v, l->bv, n_tok, sh->kv_dim);
            }

            if (l->q_norm != NULL) {
                be->rmsnorm(be, a->q, a->q, l->q_norm,
                            (int64_t) n_tok * sh->n_head, hd, c->norm_eps);
                be->rmsnorm(be, a->k, a->k, l->k_norm,
                            (int64_t) n_tok * sh->n_head_kv, hd,
                            c->norm_eps);
            }

            if (be->rope_store != NULL) {
                be->rope_store(be, a->q, a->k, a->v, sh->n_head,
                               sh->n_head_kv, hd, m->n_rot, m->rope_neox,
                               a->rope_cs, kv, li);

            } else {
                be->rope(be, a->q, sh->n_head, hd, m->n_rot, m->rope_neox,
                         a->rope_cs);
                be->rope(be, a->k, sh->n_head_kv, hd, m->n_rot,
                         m->rope_neox, a->rope_cs);

                be->kv_store(be, kv, li, a->k, a->v);
            }

            /* attention of each query head over its sequence's
             * positions 0..pos, the step's own keys included */

            be->attention(be, a->att_out, a->q, kv, li, sh->n_head, hd);

            be->matmul(be, a->xb2, a->att_out, n_tok, &l->wo);
        }

        llm_allreduce(m, (int64_t) n_tok * d);

        /* SwiGLU feed-forward */

        for (int i = 0; i < m->n_shards; i++) {
            sh = &m->shards[i];
            be = sh->be;
            a = &sh->a;
            l = &sh->w.layers[li];

            be->add_rmsnorm(be, a->xb, a->x, a->xb2, l->ffn_norm, n_tok, d,
                            c->norm_eps);

            be->matmul(be, a->hb, a->xb, n_tok, &l->w_gate);
            be->matmul(be, a->hb2, a->xb, n_tok, &l->w_up);
            be->silu_mul(be, a->hb, a->hb2, (int64_t) n_tok * sh->n_ff);
            be->matmul(be, a->xb2, a->hb, n_tok, &l->w_down);
        }

        llm_allreduce(m, (int64_t) n_tok * d);

        for (int i = 0; i < m->n_shards; i++) {
            sh = &m->shards[i];
            be = sh->be;
            a = &sh->a;

            if (li < last) {
                be->add_rmsnorm(be, a->xb, a->x, a->xb2,
                                sh->w.layers[li + 1].attn_norm, n_tok, d,
                                c->norm_eps);

            } else {
                be->add(be, a->x, a->xb2, (int64_t) n_tok * d);
            }
        }
    }
}


/* the shards' shares of a block's output (xb2) summed on every shard */
static void
llm_allreduce(llm_model_t *m, int64_t n)
{
    llm_err_t       err;
    llm_backend_t  *be;

    if (m->n_shards == 1) {
        return;
    }

    /* a failure is recorded by the backend and reported at sync */
    memset(&err, 0, sizeof(err));
    be = m->shards[0].be;
    (void) be->allreduce(m->group, m->n_shards, m->partial, n, &err);
}


/*
 * The classifier on the first shard, only on the rows that want logits
 * or a token.  A segment that wants every row writes straight into its
 * caller's buffer.  The last rows of the others are gathered
 * LLM_LOGIT_ROWS at a time, so that the output matrix (the largest) is
 * read once per that many sequences: rows to draw from first, then the
 * rows that go to the host.
 */
static int
llm_forward_logits(llm_model_t *m, const llm_seg_t *segs, int n_segs,
    llm_err_t *err)
{
    int             d, t, n_draw, n_host, cap;
    float          *x, *xb;
    llm_row_t       rows[LLM_LOGIT_ROWS];
    llm_config_t   *c;
    llm_shard_t    *sh;
    llm_backend_t  *be;

    c = &m->config;
    sh = &m->shards[0];
    be = sh->be;
    x = sh->a.x;
    xb = sh->a.xb;
    d = c->n_embd;

    /* first the segments that want every row, in rows t.. of xb: the
     * gathered rows below overwrite rows 0.. once these are done */

    t = 0;
    for (int i = 0; i < n_segs; i++) {
        if (segs[i].logits != NULL && segs[i].all) {
            be->rmsnorm(be, xb + (size_t) t * d, x + (size_t) t * d,
                        sh->w.output_norm, segs[i].n, d, c->norm_eps);

            be->matmul_host(be, segs[i].logits, xb + (size_t) t * d,
                            segs[i].n, &sh->w.output);
        }

        t += segs[i].n;
    }

    /* rows to draw from fill rows[] from the front, rows for the host
     * from the back */

    cap = m->s.n_logit;
    n_draw = 0;
    n_host = 0;
    t = 0;

    for (int i = 0; i < n_segs; i++) {
        t += segs[i].n;

        if (segs[i].draw != NULL) {
            rows[n_draw].seg = i;
            rows[n_draw].tok = t - 1;
            n_draw++;

        } else if (segs[i].logits != NULL && !segs[i].all) {
            n_host++;
            rows[cap - n_host].seg = i;
            rows[cap - n_host].tok = t - 1;

        } else {
            continue;
        }

        if (n_draw + n_host == cap) {
            if (llm_forward_rows(m, segs, rows, n_draw, n_host, err)
                != LLM_OK)
            {
                return LLM_ERR;
            }

            n_draw = 0;
            n_host = 0;
        }
    }

    if (n_draw + n_host > 0
        && llm_forward_rows(m, segs, rows, n_draw, n_host, err) != LLM_OK)
    {
        return LLM_ERR;
    }

    return LLM_OK;
}


/*
 * One pass of the classifier over gathered rows: rows[0..n_draw) to
 * draw from, rows[cap - 1] down to rows[cap - n_host] for the host
 * (cap = LLM_LOGIT_ROWS rows at most).  Their logits go to the shard's
 * buffer in that order, one matrix product; the tokens are drawn there
 * with one call of the sample hook, the host's rows are read out.
 */
static int
llm_forward_rows(llm_model_t *m, const llm_seg_t *segs, const llm_row_t *rows,
    int n_draw, int n_host, llm_err_t *err)
{
    int                 d, n_vocab, cap;
    size_t              row_bytes;
    float              *logits;
    llm_state_t        *s;
    llm_config_t       *c;
    llm_shard_t        *sh;
    llm_backend_t      *be;
    const llm_row_t    *r;

    c = &m->config;
    s = &m->s;
    sh = &m->shards[0];
    be = sh->be;
    d = c->n_embd;
    n_vocab = c->n_vocab;
    cap = s->n_logit;
    logits = sh->a.logits;
    row_bytes = (size_t) n_vocab * sizeof(float);

    for (int i = 0; i < n_draw + n_host; i++) {
        r = i < n_draw ? &rows[i] : &rows[cap - 1 - (i - n_draw)];

        be->rmsnorm(be, sh->a.xb + (size_t) i * d,
                    sh->a.x + (size_t) r->tok * d, sh->w.output_norm, 1, d,
                    c->norm_eps);
    }

    if (n_draw == 0 && n_host == 1) {
        /* one row, to the host: straight into its buffer */
        be->matmul_host(be, segs[rows[cap - 1].seg].logits, sh->a.xb, 1,
                        &sh->w.output);
        return LLM_OK;
    }

    be->matmul(be, logits, sh->a.xb, n_draw + n_host, &sh->w.output);

    if (n_draw > 0) {
        for (int i = 0; i < n_draw; i++) {
            s->draw_params[i] = segs[rows[i].seg].draw->params;
        }

        if (be->sample(be, s->drawn, logits, n_draw, n_vocab,
                       s->draw_params, err)
            != LLM_OK)
        {
            return LLM_ERR;
        }

        for (int i = 0; i < n_draw; i++) {
            segs[rows[i].seg].draw->token = s->drawn[i];
        }
    }

    for (int i = 0; i < n_host; i++) {
        if (be->read(be, segs[rows[cap - 1 - i].seg].logits,
                     logits + (size_t) (n_draw + i) * n_vocab, row_bytes,
                     err)
            != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}
