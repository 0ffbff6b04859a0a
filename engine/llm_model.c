/*
 * Copyright (C) ngx_llm developers
 *
 * Decoder-only transformers of the llama family on the CPU:
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
 */

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_gguf.h"
#include "llm_model.h"
#include "llm_quant.h"
#include "llm_threads.h"
#include "llm_tokenizer.h"


#define LLM_MAX_BATCH_DEFAULT  256     /* tokens per step until set */
#define LLM_MAX_BATCH_LIMIT    65536
#define LLM_LOGIT_ROWS         16      /* logits rows per classifier pass
                                        * when they go to separate
                                        * buffers */
#define LLM_ATT_TILE           128     /* positions scored at a time */
#define LLM_KV_SEQ_BLOCK       64      /* block size of an llm_kv_t */
#define LLM_ATT_INLINE         65536   /* attention multiply-adds of a
                                        * step below which threads cost
                                        * more than they save */


typedef enum {
    LLM_ARCH_LLAMA = 0,
    LLM_ARCH_QWEN2,
    LLM_ARCH_QWEN3
} llm_arch_e;


/* a weight matrix in the map: rows x cols of type */
typedef struct {
    const void      *data;
    uint32_t         type;
    int              rows;          /* output width (ne[1]) */
    int              cols;          /* input width (ne[0]) */
    size_t           row_bytes;
} llm_mat_t;


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
} llm_seg_t;


/*
 * The activations of one step of up to max_batch tokens (T below), one
 * row per token.  Allocated at load and by llm_model_set_max_batch,
 * never during a step.
 */
typedef struct {
    int              max_batch;
    float           *x;             /* (T, d) residual stream */
    float           *xb;            /* (T, d) normed input of a block */
    float           *xb2;           /* (T, d) output of a block */
    float           *q;             /* (T, q_dim) */
    float           *k;             /* (T, kv_dim) the step's keys */
    float           *v;             /* (T, kv_dim) and values */
    float           *att_out;       /* (T, q_dim) */
    float           *hb;            /* (T, n_ff) gate */
    float           *hb2;           /* (T, n_ff) up */
    float           *rope_cos;      /* (T, n_rot / 2) */
    float           *rope_sin;      /* (T, n_rot / 2) */
    float           *logits;        /* (min(T, LLM_LOGIT_ROWS), n_vocab) */
    int32_t         *tok_pos;       /* (T) position of each token */
    int32_t         *tok_seg;       /* (T) its segment */
    llm_seg_t       *segs;          /* (T) */
} llm_state_t;


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
    llm_weights_t     w;
    llm_state_t       s;
    llm_gguf_t       *gguf;
    llm_tokenizer_t  *tok;
};


/* who writes a block in the current step, to refuse a step that would
 * write a block twice or read one that another sequence writes */
typedef struct {
    uint32_t          step;
    int32_t           seq;
    int32_t           idx;          /* in the sequence's block table */
} llm_kv_mark_t;


struct llm_kv_pool_s {
    const llm_model_t  *model;
    int                 n_blocks;
    int                 block_size;
    int                 kv_dim;
    size_t              layer_floats;   /* 2 * block_size * kv_dim: the
                                         * keys, then the values */
    size_t              block_floats;   /* n_layer * layer_floats */
    size_t              block_bytes;
    float              *data;           /* (n_blocks, n_layer, 2,
                                         * block_size, kv_dim) f32 */
    uint32_t            step;
    llm_kv_mark_t      *mark;           /* (n_blocks) */
};


/* attention of one layer of a step, as tasks for the thread pool: one
 * per (token, kv head), covering the query heads that share it */
typedef struct {
    const llm_model_t    *m;
    const llm_kv_pool_t  *p;
    const llm_seg_t      *segs;
    int                   layer;
} llm_att_job_t;


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
static int llm_state_alloc(llm_model_t *m, llm_state_t *s, int max_batch,
    llm_err_t *err);
static void llm_state_free(llm_state_t *s);
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
static int llm_batch_check(llm_model_t *m, llm_kv_pool_t *p,
    const llm_batch_seq_t *seqs, int n_seqs, llm_err_t *err);
static void llm_forward(llm_model_t *m, llm_kv_pool_t *p,
    const llm_seg_t *segs, int n_segs, int n_tok);
static void llm_forward_logits(llm_model_t *m, const llm_seg_t *segs,
    int n_segs);
static void llm_attend_task(void *arg, int64_t task, int thread);
static void llm_attend(const llm_model_t *m, const llm_kv_pool_t *p,
    const int32_t *blocks, int layer, int n_pos, int kv_head,
    const float *q, float *out);
static void llm_rope_table(const llm_model_t *m, int pos, float *cos_t,
    float *sin_t);
static void llm_mm(float *out, const float *x, int n_tok,
    const llm_mat_t *w);
static void rmsnorm(float *out, const float *x, const float *w, int n,
    float eps);
static void rope(float *v, int n_heads, int head_dim, int n_rot, int neox,
    const float *cos_t, const float *sin_t);


int
llm_model_load(llm_model_t **out, const char *path, llm_err_t *err)
{
    llm_model_t  *m;

    *out = NULL;
    llm_quant_init();

    m = calloc(1, sizeof(llm_model_t));
    if (m == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    }

    if (llm_gguf_open(&m->gguf, path, err) != LLM_OK
        || llm_model_hparams(m, err) != LLM_OK
        || llm_tokenizer_from_gguf(&m->tok, m->gguf, err) != LLM_OK
        || llm_model_weights(m, err) != LLM_OK
        || llm_state_alloc(m, &m->s, LLM_MAX_BATCH_DEFAULT, err) != LLM_OK)
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
    free(m->w.layers);
    llm_tokenizer_free(m->tok);
    llm_gguf_close(m->gguf);
    free(m);
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
    llm_state_t  s;

    if (max_batch <= 0 || max_batch > LLM_MAX_BATCH_LIMIT) {
        return llm_err_set(err, LLM_EINVAL,
                           "a batch of %d tokens is out of range (1..%d)",
                           max_batch, LLM_MAX_BATCH_LIMIT);
    }

    if (max_batch == m->s.max_batch) {
        return LLM_OK;
    }

    /* the old buffers stay until the new ones exist */
    if (llm_state_alloc(m, &s, max_batch, err) != LLM_OK) {
        return LLM_ERR;
    }

    llm_state_free(&m->s);
    m->s = s;

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


/* the step's buffers for max_batch tokens: one block of floats, one of
 * token indices, one of segments, each checked */
static int
llm_state_alloc(llm_model_t *m, llm_state_t *s, int max_batch,
    llm_err_t *err)
{
    int            d, half, n_logit;
    size_t         per_tok, n, nl;
    float         *p;
    llm_config_t  *c;

    c = &m->config;
    d = c->n_embd;
    half = m->n_rot / 2;
    n_logit = max_batch < LLM_LOGIT_ROWS ? max_batch : LLM_LOGIT_ROWS;

    memset(s, 0, sizeof(llm_state_t));

    per_tok = 3 * (size_t) d + 2 * (size_t) m->q_dim
              + 2 * (size_t) m->kv_dim + 2 * (size_t) c->n_ff
              + 2 * (size_t) half;

    if (llm_mul_size(per_tok, (size_t) max_batch, &n) != 0
        || llm_mul_size((size_t) n_logit, (size_t) c->n_vocab, &nl) != 0
        || llm_add_size(n, nl, &n) != 0
        || llm_mul_size(n, sizeof(float), &n) != 0)
    {
        return llm_err_set(err, LLM_ENOMEM,
                           "%s: buffers for a batch of %d overflow",
                           llm_gguf_path(m->gguf), max_batch);
    }

    p = malloc(n);
    s->tok_pos = malloc(2 * (size_t) max_batch * sizeof(int32_t));
    s->segs = malloc((size_t) max_batch * sizeof(llm_seg_t));

    if (p == NULL || s->tok_pos == NULL || s->segs == NULL) {
        free(p);
        free(s->tok_pos);
        free(s->segs);
        s->tok_pos = NULL;
        s->segs = NULL;
        return llm_err_set(err, LLM_ENOMEM,
                           "%s: out of memory for a batch of %d tokens "
                           "(%zu bytes)", llm_gguf_path(m->gguf),
                           max_batch, n);
    }

    s->max_batch = max_batch;
    s->tok_seg = s->tok_pos + max_batch;

    s->x = p;
    s->xb = s->x + (size_t) max_batch * d;
    s->xb2 = s->xb + (size_t) max_batch * d;
    s->q = s->xb2 + (size_t) max_batch * d;
    s->k = s->q + (size_t) max_batch * m->q_dim;
    s->v = s->k + (size_t) max_batch * m->kv_dim;
    s->att_out = s->v + (size_t) max_batch * m->kv_dim;
    s->hb = s->att_out + (size_t) max_batch * m->q_dim;
    s->hb2 = s->hb + (size_t) max_batch * c->n_ff;
    s->rope_cos = s->hb2 + (size_t) max_batch * c->n_ff;
    s->rope_sin = s->rope_cos + (size_t) max_batch * half;
    s->logits = s->rope_sin + (size_t) max_batch * half;

    /* llm_matmul's own buffer for its prepared input, so that it does
     * not allocate during a step either */
    if (llm_matmul_reserve(max_batch, m->max_cols, err) != LLM_OK) {
        llm_state_free(s);
        return LLM_ERR;
    }

    return LLM_OK;
}


static void
llm_state_free(llm_state_t *s)
{
    free(s->x);
    free(s->tok_pos);
    free(s->segs);
    memset(s, 0, sizeof(llm_state_t));
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


llm_kv_pool_t *
llm_kv_pool_new(const llm_model_t *m, int n_blocks, int block_size,
    llm_err_t *err)
{
    size_t          bytes, n;
    llm_kv_pool_t  *p;

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

    if (bytes == 0 || llm_mul_size(bytes, (size_t) n_blocks, &n) != 0) {
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
    p->layer_floats = 2 * (size_t) block_size * (size_t) m->kv_dim;
    p->block_floats = p->layer_floats * (size_t) m->config.n_layer;
    p->block_bytes = bytes;

    /* zeroed, so that a position nobody wrote reads as zeros, not as
     * another request's keys */
    p->data = calloc(1, n);
    if (p->data == NULL) {
        llm_kv_pool_free(p);
        llm_err_set(err, LLM_ENOMEM,
                    "out of memory for a KV pool of %zu bytes", n);
        return NULL;
    }

    p->mark = calloc((size_t) n_blocks, sizeof(llm_kv_mark_t));
    if (p->mark == NULL) {
        llm_kv_pool_free(p);
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV pool");
        return NULL;
    }

    return p;
}


void
llm_kv_pool_free(llm_kv_pool_t *p)
{
    if (p == NULL) {
        return;
    }

    free(p->data);
    free(p->mark);
    free(p);
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

    memcpy(buf, p->data + (size_t) block * p->block_floats, len);

    return LLM_OK;
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

    memcpy(p->data + (size_t) block * p->block_floats, buf, len);

    return LLM_OK;
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

        if (logits == NULL) {
            seg.logits = NULL;

        } else if (all_logits) {
            seg.logits = logits + (size_t) i * (size_t) n_vocab;

        } else {
            seg.logits = i + c == n ? logits : NULL;
        }

        llm_forward(m, kv->pool, &seg, 1, c);
        kv->n_pos = pos + i + c;
    }

    return LLM_OK;
}


int
llm_model_forward_batch(llm_model_t *m, llm_kv_pool_t *pool,
    const llm_batch_seq_t *seqs, int n_seqs, llm_err_t *err)
{
    int                     n, n_segs, n_tok, max;
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

    if (llm_batch_check(m, pool, seqs, n_seqs, err) != LLM_OK) {
        return LLM_ERR;
    }

    /* a batch of more than max_batch tokens runs as several steps, in
     * order; a sequence cut between two has its logits from the last */

    max = m->s.max_batch;
    n_segs = 0;
    n_tok = 0;

    for (int i = 0; i < n_seqs; i++) {
        q = &seqs[i];

        for (int done = 0; done < q->n_tokens; done += n) {
            if (n_tok == max) {
                llm_forward(m, pool, m->s.segs, n_segs, n_tok);
                n_segs = 0;
                n_tok = 0;
            }

            n = q->n_tokens - done;
            if (n > max - n_tok) {
                n = max - n_tok;
            }

            seg = &m->s.segs[n_segs++];
            seg->tokens = q->tokens + done;
            seg->n = n;
            seg->pos = q->pos + done;
            seg->blocks = q->blocks;
            seg->logits = done + n == q->n_tokens ? q->logits : NULL;
            seg->all = 0;

            n_tok += n;
        }
    }

    llm_forward(m, pool, m->s.segs, n_segs, n_tok);

    return LLM_OK;
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
    const llm_batch_seq_t *seqs, int n_seqs, llm_err_t *err)
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
 * One step over n_tok tokens (at most max_batch), in segments of one
 * sequence each, already checked.  Reads like the diagram at the top;
 * every matmul takes all n_tok rows at once.
 */
static void
llm_forward(llm_model_t *m, llm_kv_pool_t *p, const llm_seg_t *segs,
    int n_segs, int n_tok)
{
    int                 d, hd, half, t, pos;
    float              *q, *k, *v, *kc, *vc;
    int64_t             work;
    llm_state_t        *s;
    llm_layer_t        *l;
    llm_config_t       *c;
    llm_att_job_t       job;
    const llm_seg_t    *seg;

    c = &m->config;
    s = &m->s;
    d = c->n_embd;
    hd = c->head_dim;
    half = m->n_rot / 2;
    work = 0;

    /* each token's sequence, position, embedding row (decoded from its
     * stored type) and rotation angles */

    t = 0;
    for (int i = 0; i < n_segs; i++) {
        for (int j = 0; j < segs[i].n; j++, t++) {
            s->tok_seg[t] = i;
            s->tok_pos[t] = segs[i].pos + j;

            (void) llm_dequant_row(m->w.token_embd.type,
                                   (const char *) m->w.token_embd.data
                                   + (size_t) segs[i].tokens[j]
                                     * m->w.token_embd.row_bytes,
                                   s->x + (size_t) t * d, d);

            llm_rope_table(m, s->tok_pos[t], s->rope_cos + (size_t) t * half,
                           s->rope_sin + (size_t) t * half);

            work += (int64_t) (s->tok_pos[t] + 1) * m->q_dim;
        }
    }

    job.m = m;
    job.p = p;
    job.segs = segs;

    for (int li = 0; li < c->n_layer; li++) {
        l = &m->w.layers[li];

        for (t = 0; t < n_tok; t++) {
            rmsnorm(s->xb + (size_t) t * d, s->x + (size_t) t * d,
                    l->attn_norm, d, c->norm_eps);
        }

        llm_mm(s->q, s->xb, n_tok, &l->wq);
        llm_mm(s->k, s->xb, n_tok, &l->wk);
        llm_mm(s->v, s->xb, n_tok, &l->wv);

        /* biases, per-head norms and rotation; then each key and value
         * goes to its position's slot in its sequence's blocks */

        for (t = 0; t < n_tok; t++) {
            q = s->q + (size_t) t * m->q_dim;
            k = s->k + (size_t) t * m->kv_dim;
            v = s->v + (size_t) t * m->kv_dim;

            if (l->bq != NULL) {
                for (int i = 0; i < m->q_dim; i++) {
                    q[i] += l->bq[i];
                }
            }

            if (l->bk != NULL) {
                for (int i = 0; i < m->kv_dim; i++) {
                    k[i] += l->bk[i];
                }
            }

            if (l->bv != NULL) {
                for (int i = 0; i < m->kv_dim; i++) {
                    v[i] += l->bv[i];
                }
            }

            if (l->q_norm != NULL) {
                for (int h = 0; h < c->n_head; h++) {
                    rmsnorm(q + (size_t) h * hd, q + (size_t) h * hd,
                            l->q_norm, hd, c->norm_eps);
                }

                for (int h = 0; h < c->n_head_kv; h++) {
                    rmsnorm(k + (size_t) h * hd, k + (size_t) h * hd,
                            l->k_norm, hd, c->norm_eps);
                }
            }

            rope(q, c->n_head, hd, m->n_rot, m->rope_neox,
                 s->rope_cos + (size_t) t * half,
                 s->rope_sin + (size_t) t * half);
            rope(k, c->n_head_kv, hd, m->n_rot, m->rope_neox,
                 s->rope_cos + (size_t) t * half,
                 s->rope_sin + (size_t) t * half);

            seg = &segs[s->tok_seg[t]];
            pos = s->tok_pos[t];

            kc = p->data
                 + (size_t) seg->blocks[pos / p->block_size]
                   * p->block_floats
                 + (size_t) li * p->layer_floats
                 + (size_t) (pos % p->block_size) * p->kv_dim;
            vc = kc + (size_t) p->block_size * p->kv_dim;

            memcpy(kc, k, (size_t) m->kv_dim * sizeof(float));
            memcpy(vc, v, (size_t) m->kv_dim * sizeof(float));
        }

        /* attention of each query head over its sequence's positions
         * 0..pos, the step's own keys included */

        job.layer = li;

        if (work < LLM_ATT_INLINE) {
            for (int64_t i = 0; i < (int64_t) n_tok * c->n_head_kv; i++) {
                llm_attend_task(&job, i, 0);
            }

        } else {
            llm_threads_run(llm_attend_task, &job,
                            (int64_t) n_tok * c->n_head_kv);
        }

        llm_mm(s->xb2, s->att_out, n_tok, &l->wo);

        for (size_t i = 0; i < (size_t) n_tok * d; i++) {
            s->x[i] += s->xb2[i];
        }

        /* SwiGLU feed-forward */

        for (t = 0; t < n_tok; t++) {
            rmsnorm(s->xb + (size_t) t * d, s->x + (size_t) t * d,
                    l->ffn_norm, d, c->norm_eps);
        }

        llm_mm(s->hb, s->xb, n_tok, &l->w_gate);
        llm_mm(s->hb2, s->xb, n_tok, &l->w_up);

        for (size_t i = 0; i < (size_t) n_tok * c->n_ff; i++) {
            float  g = s->hb[i];

            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
        }

        llm_mm(s->xb2, s->hb, n_tok, &l->w_down);

        for (size_t i = 0; i < (size_t) n_tok * d; i++) {
            s->x[i] += s->xb2[i];
        }
    }

    llm_forward_logits(m, segs, n_segs);
}


/*
 * The classifier, only on the rows that want logits.  A segment that
 * wants every row writes straight into its caller's buffer; the last
 * rows of the others are gathered LLM_LOGIT_ROWS at a time, so that the
 * output matrix (the largest) is read once per that many sequences.
 */
static void
llm_forward_logits(llm_model_t *m, const llm_seg_t *segs, int n_segs)
{
    int             d, n_vocab, t, rows;
    int             pending[LLM_LOGIT_ROWS];
    llm_state_t    *s;
    llm_config_t   *c;

    c = &m->config;
    s = &m->s;
    d = c->n_embd;
    n_vocab = c->n_vocab;
    rows = 0;
    t = 0;

    for (int i = 0; i <= n_segs; i++) {
        if (i == n_segs || rows == LLM_LOGIT_ROWS) {
            /* flush the gathered rows; one goes straight to its buffer */

            if (rows == 1) {
                llm_mm(segs[pending[0]].logits, s->xb, 1, &m->w.output);

            } else if (rows > 1) {
                llm_mm(s->logits, s->xb, rows, &m->w.output);

                for (int r = 0; r < rows; r++) {
                    memcpy(segs[pending[r]].logits,
                           s->logits + (size_t) r * n_vocab,
                           (size_t) n_vocab * sizeof(float));
                }
            }

            rows = 0;

            if (i == n_segs) {
                break;
            }
        }

        if (segs[i].logits != NULL && segs[i].all) {
            /* rows t.. of xb are past every gathered row (one per
             * earlier segment at most) */
            for (int j = 0; j < segs[i].n; j++) {
                rmsnorm(s->xb + (size_t) (t + j) * d,
                        s->x + (size_t) (t + j) * d, m->w.output_norm, d,
                        c->norm_eps);
            }

            llm_mm(segs[i].logits, s->xb + (size_t) t * d, segs[i].n,
                   &m->w.output);

        } else if (segs[i].logits != NULL) {
            rmsnorm(s->xb + (size_t) rows * d,
                    s->x + (size_t) (t + segs[i].n - 1) * d,
                    m->w.output_norm, d, c->norm_eps);
            pending[rows++] = i;
        }

        t += segs[i].n;
    }
}


/* task: token task / n_head_kv, the query heads of kv head
 * task % n_head_kv */
static void
llm_attend_task(void *arg, int64_t task, int thread)
{
    int                  t, g, hd, kv_mul;
    llm_att_job_t       *job;
    const llm_state_t   *s;
    const llm_config_t  *c;

    (void) thread;

    job = arg;
    c = &job->m->config;
    s = &job->m->s;
    hd = c->head_dim;
    kv_mul = c->n_head / c->n_head_kv;
    t = (int) (task / c->n_head_kv);
    g = (int) (task % c->n_head_kv);

    for (int h = g * kv_mul; h < (g + 1) * kv_mul; h++) {
        llm_attend(job->m, job->p, job->segs[s->tok_seg[t]].blocks,
                   job->layer, s->tok_pos[t] + 1, g,
                   s->q + (size_t) t * job->m->q_dim + (size_t) h * hd,
                   s->att_out + (size_t) t * job->m->q_dim
                   + (size_t) h * hd);
    }
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
static void
llm_attend(const llm_model_t *m, const llm_kv_pool_t *p,
    const int32_t *blocks, int layer, int n_pos, int kv_head,
    const float *q, float *out)
{
    int           hd, bs, tn, pos;
    float         sc[LLM_ATT_TILE], scale, mx, tmx, r, e, dot;
    double        sum;
    const float  *kt, *vt, *base;

    hd = m->config.head_dim;
    bs = p->block_size;
    scale = 1.0f / sqrtf((float) hd);
    mx = -INFINITY;
    sum = 0.0;

    memset(out, 0, (size_t) hd * sizeof(float));

    for (int t0 = 0; t0 < n_pos; t0 += LLM_ATT_TILE) {
        tn = n_pos - t0 < LLM_ATT_TILE ? n_pos - t0 : LLM_ATT_TILE;
        tmx = mx;

        for (int j = 0; j < tn; j++) {
            pos = t0 + j;
            base = p->data + (size_t) blocks[pos / bs] * p->block_floats
                   + (size_t) layer * p->layer_floats;
            kt = base + (size_t) (pos % bs) * p->kv_dim
                 + (size_t) kv_head * hd;

            dot = 0.0f;
            for (int i = 0; i < hd; i++) {
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

            for (int i = 0; i < hd; i++) {
                out[i] *= r;
            }

            mx = tmx;
        }

        for (int j = 0; j < tn; j++) {
            pos = t0 + j;
            base = p->data + (size_t) blocks[pos / bs] * p->block_floats
                   + (size_t) layer * p->layer_floats;
            vt = base + (size_t) (bs + pos % bs) * p->kv_dim
                 + (size_t) kv_head * hd;

            e = expf(sc[j] - mx);
            sum += e;

            for (int i = 0; i < hd; i++) {
                out[i] += e * vt[i];
            }
        }
    }

    r = (float) (1.0 / sum);

    for (int i = 0; i < hd; i++) {
        out[i] *= r;
    }
}


/* rotation angles of a position: theta_i = pos * base^(-2i/n_rot),
 * stepped as llama.cpp steps them, divided by the Llama 3.1 factor and
 * by the linear scaling factor */
static void
llm_rope_table(const llm_model_t *m, int pos, float *cos_t, float *sin_t)
{
    int    n_rot;
    float  theta, theta_scale, t;

    n_rot = m->n_rot;
    theta_scale = powf(m->config.rope_base, -2.0f / (float) n_rot);
    theta = (float) pos;

    for (int i = 0; i < n_rot / 2; i++) {
        t = theta;

        if (m->w.rope_freqs != NULL) {
            t /= m->w.rope_freqs[i];
        }

        t *= m->rope_scale;

        cos_t[i] = cosf(t);
        sin_t[i] = sinf(t);
        theta *= theta_scale;
    }
}


/*
 * out (n_tok, rows) = x (n_tok, cols) W^T: the hot spot, nearly all the
 * time of a step.  llm_matmul (engine/llm_quant.c) rounds or quantizes
 * x as llama.cpp does for the weights' type and splits the rows over
 * the thread pool.
 */
static void
llm_mm(float *out, const float *x, int n_tok, const llm_mat_t *w)
{
    llm_matmul(out, x, n_tok, w->data, w->type, w->rows, w->cols);
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


/* rotates pairs of the first n_rot dims of each head: adjacent ones
 * (v[2i], v[2i+1]), the layout GGUF llama files are converted to, or
 * halves (v[i], v[i + n_rot/2]) for neox */
static void
rope(float *v, int n_heads, int head_dim, int n_rot, int neox,
    const float *cos_t, const float *sin_t)
{
    int     a, b, half;
    float   x0, x1, *p;

    half = n_rot / 2;

    for (int h = 0; h < n_heads; h++) {
        p = v + (size_t) h * head_dim;

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
