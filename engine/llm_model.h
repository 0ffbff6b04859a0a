/*
 * Copyright (C) ngx_llm developers
 *
 * A loaded model: its GGUF file (mapped), hyperparameters, weights,
 * tokenizer, and the forward pass.  One thread uses a model at a time
 * (the scheduler thread); the scratch buffers inside belong to it.
 */

#ifndef LLM_MODEL_H
#define LLM_MODEL_H

#include "llm_backend.h"
#include "llm_common.h"


typedef struct llm_model_s      llm_model_t;
typedef struct llm_kv_s         llm_kv_t;
typedef struct llm_tokenizer_s  llm_tokenizer_t;


typedef struct {
    int      n_layer;
    int      n_embd;         /* model width d */
    int      n_head;
    int      n_head_kv;
    int      head_dim;       /* per-head width of q and k */
    int      n_ff;           /* FFN hidden width */
    int      n_vocab;
    int      n_ctx;          /* training context length */
    float    rope_base;
    float    norm_eps;
    char     arch[32];       /* general.architecture */
} llm_config_t;


#define LLM_TP_MAX  16     /* shards of a model at most */


/* where a model computes */
typedef struct {
    const char  *backend;    /* "cpu" (NULL), "cuda" or "auto": cuda
                              * where a GPU is usable, else the CPU */
    int          device;     /* GPU of the first shard; shard i runs on
                              * device + i */
    int          tp;         /* shards (tensor parallelism over heads and
                              * FFN columns); 0 is 1 */
} llm_model_opts_t;


/* maps and validates path; on failure *out is NULL and err says why */
int llm_model_load(llm_model_t **out, const char *path, llm_err_t *err);
/* the same, computing where opts says (NULL: one shard on the CPU) */
int llm_model_load_opts(llm_model_t **out, const char *path,
    const llm_model_opts_t *opts, llm_err_t *err);
void llm_model_free(llm_model_t *m);

/* the backend computing ("cpu", "cuda") and over how many shards */
const char *llm_model_backend(const llm_model_t *m);
int llm_model_tp(const llm_model_t *m);

const llm_config_t *llm_model_config(const llm_model_t *m);
const llm_tokenizer_t *llm_model_tokenizer(const llm_model_t *m);

/* the mapped GGUF file, for metadata the model itself does not use
 * (tokenizer.chat_template, general.name ...) */
typedef struct llm_gguf_s  llm_gguf_t;
const llm_gguf_t *llm_model_gguf(const llm_model_t *m);


/*
 * The forward pass runs up to max_batch tokens per step in buffers
 * allocated with the model (256 tokens at load).  More tokens in one
 * call run as several steps.  Setting it allocates, so call it at
 * start-up, never between the steps of a request; on failure the old
 * buffers stay.
 */
int llm_model_set_max_batch(llm_model_t *m, int max_batch, llm_err_t *err);
int llm_model_max_batch(const llm_model_t *m);


/* the KV cache of one sequence, room for n_ctx positions: a pool of
 * its own, run through llm_model_forward_batch's step */
llm_kv_t *llm_kv_new(const llm_model_t *m, int n_ctx, llm_err_t *err);
void llm_kv_free(llm_kv_t *kv);
int llm_kv_capacity(const llm_kv_t *kv);


/*
 * Runs tokens[0..n) at positions pos..pos+n-1 of the sequence whose
 * cache is kv (positions before pos must already be in it) and stores
 * their keys and values there.  Writes logits: n_vocab floats for the
 * last token, or n * n_vocab (row i for token i) when all_logits is set.
 */
int llm_model_forward(llm_model_t *m, llm_kv_t *kv, const int32_t *tokens,
    int n, int pos, float *logits, int all_logits, llm_err_t *err);


/*
 * Paged KV storage for the serving path: n_blocks blocks of block_size
 * positions, each block holding the keys and values of every layer for
 * its positions.  Which block a sequence uses for which positions is the
 * caller's business (engine/llm_kv.c hands out block numbers).  A block
 * is (n_layer, 2, block_size, kv_dim) f32 in host byte order: keys, then
 * values; n_blocks * block_size must fit in an int.  A new pool reads
 * as zeros.
 */
typedef struct llm_kv_pool_s  llm_kv_pool_t;

/* bytes of one block as it crosses to the host (f32) */
size_t llm_kv_block_bytes(const llm_model_t *m, int block_size);

/* bytes one block takes in the backends' memory (f16 where they keep
 * it so), to size a pool from a memory budget */
size_t llm_kv_cache_bytes(const llm_model_t *m, int block_size);

llm_kv_pool_t *llm_kv_pool_new(const llm_model_t *m, int n_blocks,
    int block_size, llm_err_t *err);
void llm_kv_pool_free(llm_kv_pool_t *p);

/* 1 when the backends keep the pool's blocks in f16 */
int llm_kv_pool_f16(const llm_kv_pool_t *p);

/* one block's contents as bytes, out and in (the Redis tier stores
 * them); len must be llm_kv_block_bytes() */
int llm_kv_block_read(const llm_kv_pool_t *p, int32_t block, void *buf,
    size_t len);
int llm_kv_block_write(llm_kv_pool_t *p, int32_t block, const void *buf,
    size_t len);


/* one sequence's part of a batch */
typedef struct {
    const int32_t  *tokens;     /* n_tokens new tokens */
    int             n_tokens;
    int             pos;        /* position of tokens[0]; positions
                                   0..pos-1 are in the pool already */
    const int32_t  *blocks;     /* block table: position p is slot
                                   p % block_size of blocks[p / block_size],
                                   covering 0..pos+n_tokens-1 */
    int             n_blocks;   /* entries in blocks: at least
                                   (pos + n_tokens - 1) / block_size + 1 */
    float          *logits;     /* NULL, or n_vocab floats: the logits of
                                   the last new token */
} llm_batch_seq_t;

/*
 * One forward pass over the new tokens of every sequence at once, so
 * that each weight is read once per step whatever the batch: their keys
 * and values go into the pool, each attends to its own positions only.
 * Blocks may be shared between sequences for positions before their
 * pos (a shared prefix); blocks written here are not shared.
 *
 * Everything is checked before anything is written: tokens, positions
 * against the pool, the block tables, and that no block is written by
 * two sequences or read by one while another writes it; an error leaves
 * the pool as it was.  A batch of more than llm_model_max_batch()
 * tokens runs as several steps.  Not reentrant: one thread per model.
 */
int llm_model_forward_batch(llm_model_t *m, llm_kv_pool_t *pool,
    const llm_batch_seq_t *seqs, int n_seqs, llm_err_t *err);


/* a token to draw from a sequence's next logits, instead of the logits */
typedef struct {
    int                  draw;      /* 0: nothing to draw */
    llm_sample_params_t  params;    /* the draw of llm_backend.h */
    int32_t              token;     /* out: the token drawn */
} llm_batch_draw_t;

/* whether the backend draws tokens itself (its sample hook), so that
 * llm_model_forward_batch_draw() can be asked to */
int llm_model_can_draw(const llm_model_t *m);

/*
 * llm_model_forward_batch(), where each sequence i with draws[i].draw
 * set (and no logits buffer) has the token after its last new token
 * drawn by the backend into draws[i].token: its logits are computed
 * with the others' and never leave the backend.  draws (n_seqs) may be
 * NULL: nothing drawn.
 */
int llm_model_forward_batch_draw(llm_model_t *m, llm_kv_pool_t *pool,
    const llm_batch_seq_t *seqs, llm_batch_draw_t *draws, int n_seqs,
    llm_err_t *err);


#endif /* LLM_MODEL_H */
