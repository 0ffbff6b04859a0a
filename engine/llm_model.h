/*
 * Copyright (C) ngx_llm developers
 *
 * A loaded model: its GGUF file (mapped), hyperparameters, weights,
 * tokenizer, and the forward pass.  One thread uses a model at a time
 * (the scheduler thread); the scratch buffers inside belong to it.
 */

#ifndef LLM_MODEL_H
#define LLM_MODEL_H

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


/* maps and validates path; on failure *out is NULL and err says why */
int llm_model_load(llm_model_t **out, const char *path, llm_err_t *err);
void llm_model_free(llm_model_t *m);

const llm_config_t *llm_model_config(const llm_model_t *m);
const llm_tokenizer_t *llm_model_tokenizer(const llm_model_t *m);

/* the mapped GGUF file, for metadata the model itself does not use
 * (tokenizer.chat_template, general.name ...) */
typedef struct llm_gguf_s  llm_gguf_t;
const llm_gguf_t *llm_model_gguf(const llm_model_t *m);


/* the KV cache of one sequence, room for n_ctx positions */
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


#endif /* LLM_MODEL_H */
