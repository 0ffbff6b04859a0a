/*
 * Copyright (C) ngx_llm developers
 *
 * The serving state shared by the serve loop (llm_serve.c: sockets,
 * admission, events) and the scheduler (llm_sched.c: batches, KV blocks,
 * the prefix cache, preemption, sampling).  One thread owns all of it.
 */

#ifndef LLM_SCHED_H
#define LLM_SCHED_H

#include "llm_ipc.h"
#include "llm_kv.h"
#include "llm_model.h"
#include "llm_request.h"
#include "llm_rkv.h"
#include "llm_sampler.h"
#include "llm_template.h"
#include "llm_tokenizer.h"


#define LLM_TEXT_MAX        512       /* bytes of text one token may add */


typedef struct {
    char                 name[LLM_MODEL_NAME_MAX];
    llm_model_t         *model;
    const llm_config_t  *cfg;
    int                  n_ctx;       /* served context length */
    llm_template_t      *tpl;         /* chat template, or NULL */
    char                 tpl_err[LLM_ERRSTR_MAX];
    const char          *bos;         /* token texts for the template */
    const char          *eos;

    /* paged KV cache: this model's share of --kv-cache */
    llm_kv_pool_t       *pool;
    llm_kv_alloc_t       alloc;
    int                  block_size;
    uint64_t             seed;        /* prefix hash of the empty prefix */
    uint64_t             fingerprint; /* names the weights in Redis keys */
} llm_serve_model_t;


typedef struct {
    unsigned             active:1;
    unsigned             paused:1;    /* its ring was full */
    unsigned             started:1;   /* counted in LLM_STAT_RUNNING */
    unsigned             rkv_wait:1;  /* a Redis lookup is out */
    unsigned             rkv_tried:1;
    int                  rkv_from;    /* n_hashed when it was asked */
    uint32_t             slot;
    uint32_t             owner;
    uint64_t             order;       /* admission order: larger is younger */
    int                  priority;
    llm_serve_model_t   *m;
    llm_sampler_t        sampler;
    llm_detok_t          detok;
    llm_stop_t           stop;

    /* tokens[0..n_tokens): the prompt, then what was generated;
     * tokens[0..n_past) have keys and values in the blocks */
    int32_t             *tokens;      /* n_ctx */
    int                  n_prompt;
    int                  n_tokens;
    int                  n_past;
    int                  n_cached;    /* prompt tokens the prefix cache gave */
    int32_t             *blocks;      /* block table, n_ctx / block_size + 1 */
    int                  n_blocks;
    int                  n_hashed;    /* leading blocks published or found */
    uint64_t             hash;        /* prefix hash after n_hashed blocks */

    int                  max_tokens;
    int                  n_gen;
    int                  logprobs;    /* alternatives wanted, -1: none */
    float               *logits;      /* n_vocab */
    uint64_t             t_submit;
    uint64_t             t_start;
    uint64_t             t_first;
    uint32_t             finish;      /* reason once decided, else 0 */

    /* events not yet in the ring, in order: records of llm_event_t and
     * payload; everything above out_len is reset when a sequence starts
     * and ends */
    size_t               out_len;
    size_t               out_off;
    unsigned char        out[2 * LLM_EVENT_MAX + 1024];
} llm_seq_t;


typedef struct {
    llm_ipc_t            ipc;
    int                  n_models;
    llm_serve_model_t    models[LLM_MAX_MODELS];
    int                  max_seqs;
    llm_seq_t           *seqs;
    int                  n_active;
    uint64_t             n_admitted;
    int                  batch_tokens;    /* token budget of one step */
    int                  step_delay_ms;   /* fault mode for tests */

    /* the Redis tier of the prefix cache, or NULL */
    llm_rkv_t           *rkv;
    void                *rkv_buf;         /* one block's bytes */

    /* one step's batch, sized max_seqs */
    llm_batch_seq_t     *batch;
    llm_batch_draw_t    *batch_draw;      /* the tokens the backend draws */
    llm_seq_t          **batch_seq;
    int                 *batch_ntok;
} llm_server_t;


/* llm_sched.c */
int llm_sched_model_init(llm_serve_model_t *m, size_t kv_bytes,
    int block_size, llm_err_t *err);
void llm_sched_model_free(llm_serve_model_t *m);
int llm_sched_admit_check(llm_seq_t *q, llm_err_t *err);
void llm_sched_step(llm_server_t *srv);
void llm_sched_release_blocks(llm_server_t *srv, llm_seq_t *q);
void llm_sched_rkv_poll(llm_server_t *srv);

/* llm_serve.c */
void llm_serve_queue(llm_seq_t *q, uint16_t type, const void *a,
    size_t alen, const void *b, size_t blen);
int llm_serve_flush(llm_server_t *srv, llm_seq_t *q);
void llm_serve_error(llm_server_t *srv, llm_seq_t *q, uint16_t status,
    const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void llm_serve_release(llm_server_t *srv, llm_seq_t *q, int finished);
void llm_serve_token(llm_server_t *srv, llm_seq_t *q, int32_t drawn);


#endif /* LLM_SCHED_H */
