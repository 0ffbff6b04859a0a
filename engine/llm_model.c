/*
 * Copyright (C) ngx_llm developers
 *
 * The llama architecture (Llama 2/3, Mistral, TinyLlama) on the CPU:
 *
 *   x = token_embd[token]
 *   for each layer:
 *       h = rmsnorm(x) * attn_norm
 *       q, k, v = Wq h, Wk h, Wv h;  rope(q, k);  k, v -> cache
 *       x += Wo attention(q, cache)       grouped-query: n_head / n_head_kv
 *                                         query heads share a kv head
 *       h = rmsnorm(x) * ffn_norm
 *       x += Wdown (silu(Wgate h) * Wup h)
 *   logits = Woutput (rmsnorm(x) * output_norm)
 *
 * Weights stay in the mapped file in their stored type; matmul()
 * dispatches on it.  Tensor shapes are ggml's: ne[0] is the input width
 * (contiguous), ne[1] the output width, so row r of a weight is output r.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_gguf.h"
#include "llm_model.h"
#include "llm_quant.h"
#include "llm_tokenizer.h"


/* a weight matrix in the map: rows x cols of type */
typedef struct {
    const void      *data;
    uint32_t         type;
    int              rows;          /* output width (ne[1]) */
    int              cols;          /* input width (ne[0]) */
    size_t           row_bytes;
    llm_dot_pt       dot;
} llm_mat_t;


typedef struct {
    const float     *attn_norm;     /* (d) f32 */
    llm_mat_t        wq;            /* (n_head * head_dim, d) */
    llm_mat_t        wk;            /* (n_head_kv * head_dim, d) */
    llm_mat_t        wv;            /* (n_head_kv * head_dim, d) */
    llm_mat_t        wo;            /* (d, n_head * head_dim) */
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


/* activations of one token, allocated once at load */
typedef struct {
    float           *x;             /* (d) residual stream */
    float           *xb;            /* (d) normed input of a block */
    float           *xb2;           /* (d) output of a block */
    float           *q;             /* (n_head * head_dim) */
    float           *att_out;       /* (n_head * head_dim) */
    float           *hb;            /* (n_ff) gate */
    float           *hb2;           /* (n_ff) up */
    float           *rope_cos;      /* (n_rot / 2) */
    float           *rope_sin;      /* (n_rot / 2) */
    float           *xr;            /* (max(d, q_dim, n_ff)) a matmul's
                                     * input rounded to the weights' type */
} llm_state_t;


struct llm_model_s {
    llm_config_t      config;
    int               n_rot;        /* rotated dims per head (even) */
    int               q_dim;        /* n_head * head_dim */
    int               kv_dim;       /* n_head_kv * head_dim */
    llm_weights_t     w;
    llm_state_t       s;
    llm_gguf_t       *gguf;
    llm_tokenizer_t  *tok;
};


struct llm_kv_s {
    const llm_model_t  *model;
    int                 n_ctx;
    int                 n_pos;      /* positions 0..n_pos-1 are stored */
    float              *k;          /* (n_layer, n_ctx, kv_dim) f32 */
    float              *v;          /* (n_layer, n_ctx, kv_dim) f32 */
    float              *att;        /* (n_ctx) scores of one head */
};


static int llm_model_hparams(llm_model_t *m, llm_err_t *err);
static int llm_model_weights(llm_model_t *m, llm_err_t *err);
static int llm_model_scratch(llm_model_t *m, llm_err_t *err);
static int llm_tensor(llm_model_t *m, const char *name, int64_t ne0,
    int64_t ne1, int required, const llm_gguf_tensor_t **out,
    llm_err_t *err);
static const char *llm_blk(char *buf, size_t size, int layer,
    const char *suffix);
static int llm_mat(llm_model_t *m, llm_mat_t *mat, const char *name,
    int64_t cols, int64_t rows, int required, llm_err_t *err);
static int llm_norm_weight(llm_model_t *m, const float **w,
    const char *name, int64_t n, llm_err_t *err);
static int llm_model_u32(llm_model_t *m, const char *key, int required,
    uint32_t def, uint32_t *out, llm_err_t *err);
static void llm_forward_token(llm_model_t *m, llm_kv_t *kv, int32_t token,
    int pos, float *logits);
static void rmsnorm(float *out, const float *x, const float *w, int n,
    float eps);
static void matmul(float *out, const float *x, const llm_mat_t *w,
    float *scratch);
static void rope(float *v, int n_heads, int head_dim, int n_rot,
    const float *cos_t, const float *sin_t);
static void softmax(float *x, int n);


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
        || llm_model_scratch(m, err) != LLM_OK)
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

    free(m->s.x);
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

    if (len != 5 || memcmp(arch, "llama", 5) != 0) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: architecture '%.*s' is not supported "
                           "(only 'llama')", path,
                           (int) (len > 31 ? 31 : len), arch);
    }

    memcpy(c->arch, arch, len);
    c->arch[len] = '\0';

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

    if (c->n_embd % c->n_head != 0) {
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

    return LLM_OK;
}


/* "llama." + key: a positive u32 (zero is allowed for nothing here) */
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
    int                       n_vocab, n_ff, d;
    char                      name[64];
    llm_layer_t              *l;
    llm_config_t             *c;
    const llm_gguf_tensor_t  *t;

    c = &m->config;
    d = c->n_embd;
    n_ff = c->n_ff;

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

    if (llm_norm_weight(m, &m->w.output_norm, "output_norm.weight", d, err)
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
        /* tied embeddings */
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
        l = &m->w.layers[i];

        if (llm_norm_weight(m, &l->attn_norm,
                            llm_blk(name, sizeof(name), i,
                                    "attn_norm.weight"), d, err) != LLM_OK
            || llm_mat(m, &l->wq,
                       llm_blk(name, sizeof(name), i, "attn_q.weight"),
                       d, m->q_dim, 1, err) != LLM_OK
            || llm_mat(m, &l->wk,
                       llm_blk(name, sizeof(name), i, "attn_k.weight"),
                       d, m->kv_dim, 1, err) != LLM_OK
            || llm_mat(m, &l->wv,
                       llm_blk(name, sizeof(name), i, "attn_v.weight"),
                       d, m->kv_dim, 1, err) != LLM_OK
            || llm_mat(m, &l->wo,
                       llm_blk(name, sizeof(name), i, "attn_output.weight"),
                       m->q_dim, d, 1, err) != LLM_OK
            || llm_norm_weight(m, &l->ffn_norm,
                               llm_blk(name, sizeof(name), i,
                                       "ffn_norm.weight"), d, err) != LLM_OK
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

    mat->dot = llm_quant_dot(t->type);
    if (mat->dot == NULL) {
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


static int
llm_norm_weight(llm_model_t *m, const float **w, const char *name,
    int64_t n, llm_err_t *err)
{
    const llm_gguf_tensor_t  *t;

    if (llm_tensor(m, name, n, 1, 1, &t, err) != LLM_OK) {
        return LLM_ERR;
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


static int
llm_model_scratch(llm_model_t *m, llm_err_t *err)
{
    int            d, n;
    float         *p;
    llm_state_t   *s;
    llm_config_t  *c;

    c = &m->config;
    s = &m->s;
    d = c->n_embd;

    /* one block: three of d, two of q_dim, two of n_ff, the rope table,
     * and the widest matmul input */

    n = 3 * d + 2 * m->q_dim + 2 * c->n_ff + m->n_rot;
    n += d > m->q_dim ? (d > c->n_ff ? d : c->n_ff)
                      : (m->q_dim > c->n_ff ? m->q_dim : c->n_ff);

    p = calloc((size_t) n, sizeof(float));
    if (p == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory",
                           llm_gguf_path(m->gguf));
    }

    s->x = p;
    s->xb = s->x + d;
    s->xb2 = s->xb + d;
    s->q = s->xb2 + d;
    s->att_out = s->q + m->q_dim;
    s->hb = s->att_out + m->q_dim;
    s->hb2 = s->hb + c->n_ff;
    s->rope_cos = s->hb2 + c->n_ff;
    s->rope_sin = s->rope_cos + m->n_rot / 2;
    s->xr = s->rope_sin + m->n_rot / 2;

    return LLM_OK;
}


llm_kv_t *
llm_kv_new(const llm_model_t *m, int n_ctx, llm_err_t *err)
{
    size_t     n;
    llm_kv_t  *kv;

    if (n_ctx <= 0 || n_ctx > m->config.n_ctx) {
        llm_err_set(err, LLM_EINVAL,
                    "context of %d positions is out of range (1..%d)",
                    n_ctx, m->config.n_ctx);
        return NULL;
    }

    if (llm_mul_size((size_t) m->config.n_layer, (size_t) n_ctx, &n) != 0
        || llm_mul_size(n, (size_t) m->kv_dim, &n) != 0
        || llm_mul_size(n, sizeof(float), &n) != 0)
    {
        llm_err_set(err, LLM_ENOMEM, "KV cache size overflows");
        return NULL;
    }

    kv = calloc(1, sizeof(llm_kv_t));
    if (kv == NULL) {
        llm_err_set(err, LLM_ENOMEM, "out of memory for the KV cache");
        return NULL;
    }

    kv->model = m;
    kv->n_ctx = n_ctx;
    kv->k = malloc(n);
    kv->v = malloc(n);
    kv->att = malloc((size_t) n_ctx * sizeof(float));

    if (kv->k == NULL || kv->v == NULL || kv->att == NULL) {
        llm_kv_free(kv);
        llm_err_set(err, LLM_ENOMEM,
                    "out of memory for a KV cache of %zu bytes", 2 * n);
        return NULL;
    }

    return kv;
}


void
llm_kv_free(llm_kv_t *kv)
{
    if (kv == NULL) {
        return;
    }

    free(kv->k);
    free(kv->v);
    free(kv->att);
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
    int     n_vocab;
    float  *row;

    n_vocab = m->config.n_vocab;

    if (kv == NULL || kv->model != m) {
        return llm_err_set(err, LLM_EINVAL,
                           "KV cache belongs to another model");
    }

    if (n <= 0 || pos < 0 || pos > kv->n_pos || n > kv->n_ctx - pos) {
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

    /* one position at a time; the classifier only runs where logits are
     * wanted */

    for (int i = 0; i < n; i++) {
        if (all_logits) {
            row = logits + (size_t) i * (size_t) n_vocab;

        } else {
            row = i == n - 1 ? logits : NULL;
        }

        llm_forward_token(m, kv, tokens[i], pos + i, row);
        kv->n_pos = pos + i + 1;
    }

    return LLM_OK;
}


static void
llm_forward_token(llm_model_t *m, llm_kv_t *kv, int32_t token, int pos,
    float *logits)
{
    int            d, hd, kv_mul, n_rot;
    float          theta, theta_scale, scale, score, a;
    float         *k, *v, *att, *out;
    size_t         loff;
    llm_state_t   *s;
    llm_layer_t   *l;
    llm_config_t  *c;
    const float   *q, *kt, *vt;

    c = &m->config;
    s = &m->s;
    d = c->n_embd;
    hd = c->head_dim;
    kv_mul = c->n_head / c->n_head_kv;
    n_rot = m->n_rot;
    att = kv->att;

    /* embedding: the token's row, decoded from its stored type */

    (void) llm_dequant_row(m->w.token_embd.type,
                           (const char *) m->w.token_embd.data
                           + (size_t) token * m->w.token_embd.row_bytes,
                           s->x, d);

    /* rotation angles of this position: theta_i = pos * base^(-2i/n_rot),
     * stepped as llama.cpp steps them, divided by the Llama 3.1 factor */

    theta_scale = powf(c->rope_base, -2.0f / (float) n_rot);
    theta = (float) pos;

    for (int i = 0; i < n_rot / 2; i++) {
        float  t = theta;

        if (m->w.rope_freqs != NULL) {
            t /= m->w.rope_freqs[i];
        }

        s->rope_cos[i] = cosf(t);
        s->rope_sin[i] = sinf(t);
        theta *= theta_scale;
    }

    scale = 1.0f / sqrtf((float) hd);

    for (int li = 0; li < c->n_layer; li++) {
        l = &m->w.layers[li];

        /* this position's key and value go straight into the cache */
        loff = (size_t) li * (size_t) kv->n_ctx * (size_t) m->kv_dim;
        k = kv->k + loff + (size_t) pos * (size_t) m->kv_dim;
        v = kv->v + loff + (size_t) pos * (size_t) m->kv_dim;

        rmsnorm(s->xb, s->x, l->attn_norm, d, c->norm_eps);

        matmul(s->q, s->xb, &l->wq, s->xr);
        matmul(k, s->xb, &l->wk, s->xr);
        matmul(v, s->xb, &l->wv, s->xr);

        rope(s->q, c->n_head, hd, n_rot, s->rope_cos, s->rope_sin);
        rope(k, c->n_head_kv, hd, n_rot, s->rope_cos, s->rope_sin);

        /* attention of each query head over positions 0..pos */

        for (int h = 0; h < c->n_head; h++) {
            q = s->q + (size_t) h * hd;
            out = s->att_out + (size_t) h * hd;

            for (int t = 0; t <= pos; t++) {
                kt = kv->k + loff + (size_t) t * m->kv_dim
                     + (size_t) (h / kv_mul) * hd;
                score = 0.0f;

                for (int i = 0; i < hd; i++) {
                    score += q[i] * kt[i];
                }

                att[t] = score * scale;
            }

            softmax(att, pos + 1);

            memset(out, 0, (size_t) hd * sizeof(float));

            for (int t = 0; t <= pos; t++) {
                vt = kv->v + loff + (size_t) t * m->kv_dim
                     + (size_t) (h / kv_mul) * hd;
                a = att[t];

                for (int i = 0; i < hd; i++) {
                    out[i] += a * vt[i];
                }
            }
        }

        matmul(s->xb2, s->att_out, &l->wo, s->xr);

        for (int i = 0; i < d; i++) {
            s->x[i] += s->xb2[i];
        }

        /* SwiGLU feed-forward */

        rmsnorm(s->xb, s->x, l->ffn_norm, d, c->norm_eps);

        matmul(s->hb, s->xb, &l->w_gate, s->xr);
        matmul(s->hb2, s->xb, &l->w_up, s->xr);

        for (int i = 0; i < c->n_ff; i++) {
            float  g = s->hb[i];

            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
        }

        matmul(s->xb2, s->hb, &l->w_down, s->xr);

        for (int i = 0; i < d; i++) {
            s->x[i] += s->xb2[i];
        }
    }

    if (logits == NULL) {
        return;
    }

    rmsnorm(s->xb, s->x, m->w.output_norm, d, c->norm_eps);
    matmul(logits, s->xb, &m->w.output, s->xr);
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


/*
 * out (rows) = W (rows, cols) x (cols); scratch holds x rounded for
 * f16 and bf16 weights (cols).  The hot spot: nearly all the
 * time of a token is spent here.  Rows are independent, which is where
 * threads will split the work.
 */
static void
matmul(float *out, const float *x, const llm_mat_t *w, float *scratch)
{
    const char  *row;

    row = w->data;
    x = llm_quant_round_act(w->type, x, scratch, w->cols);

    for (int r = 0; r < w->rows; r++) {
        out[r] = w->dot(row, x, w->cols);
        row += w->row_bytes;
    }
}


/* rotates adjacent pairs (v[2i], v[2i+1]) of the first n_rot dims of
 * each head: the "normal" layout GGUF llama files are converted to */
static void
rope(float *v, int n_heads, int head_dim, int n_rot, const float *cos_t,
    const float *sin_t)
{
    float  x0, x1, *p;

    for (int h = 0; h < n_heads; h++) {
        p = v + (size_t) h * head_dim;

        for (int i = 0; i < n_rot / 2; i++) {
            x0 = p[2 * i];
            x1 = p[2 * i + 1];
            p[2 * i] = x0 * cos_t[i] - x1 * sin_t[i];
            p[2 * i + 1] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}


static void
softmax(float *x, int n)
{
    float   max, inv;
    double  sum;

    max = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] > max) {
            max = x[i];
        }
    }

    sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }

    inv = (float) (1.0 / sum);

    for (int i = 0; i < n; i++) {
        x[i] *= inv;
    }
}


const llm_gguf_t *
llm_model_gguf(const llm_model_t *m)
{
    return m->gguf;
}
