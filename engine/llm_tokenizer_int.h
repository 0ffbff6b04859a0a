/*
 * Copyright (C) ngx_llm developers
 *
 * Internals of the tokenizer, shared by llm_tokenizer*.c:
 *
 *   llm_tokenizer.c      loading, token ids and types, special tokens,
 *                        SentencePiece BPE, the incremental detokenizer
 *   llm_tokenizer_bpe.c  byte-level BPE (tokenizer.ggml.model "gpt2"):
 *                        pre-tokenizer regexes on PCRE2, GPT-2's byte
 *                        mapping, merges by rank
 */

#ifndef LLM_TOKENIZER_INT_H
#define LLM_TOKENIZER_INT_H

#define PCRE2_CODE_UNIT_WIDTH  8
#include <pcre2.h>

#include "llm_common.h"
#include "llm_gguf.h"
#include "llm_tokenizer.h"


/* the most regexes a pre-tokenizer applies one after another */
#define LLM_PRE_MAX_RE  8


typedef enum {
    LLM_VOCAB_SPM = 1,       /* "llama": SentencePiece BPE, scores */
    LLM_VOCAB_BPE            /* "gpt2": byte-level BPE, merges */
} llm_vocab_e;


typedef struct {
    const char  *text;       /* in t->arena, not NUL-terminated */
    uint32_t     len;
    uint32_t     piece_len;
    const char  *piece;      /* the bytes the token prints as */
    float        score;
    int          type;       /* LLM_TOKEN_* */
} llm_token_t;


/* a merge of the byte-level BPE, in an open-addressing table keyed by
 * the ids of its two parts */
typedef struct {
    uint64_t     key;        /* left id << 32 | right id; empty: ~0 */
    int32_t      rank;       /* index in tokenizer.ggml.merges */
    int32_t      id;         /* the merged token */
} llm_merge_t;


struct llm_tokenizer_s {
    int            vocab;        /* llm_vocab_e */
    int            n_vocab;
    llm_token_t   *tokens;
    char          *arena;        /* texts, then pieces */

    int32_t       *hash;         /* open addressing: text -> id, -1 */
    size_t         hash_mask;

    int32_t       *special;      /* user-defined, control and unknown
                                  * tokens, longest text first */
    int            n_special;

    uint8_t       *eog;          /* n_vocab flags */

    int32_t        bos;
    int32_t        eos;
    int32_t        unk;
    int32_t        eot;
    int32_t        eom;
    int            add_bos;
    int            add_eos;
    int            add_space_prefix;
    size_t         max_piece;

    char           model[16];    /* tokenizer.ggml.model */
    char           pre[32];      /* tokenizer.ggml.pre, or "default" */

    /* byte-level BPE only */
    int            pre_set;      /* index of the pre-tokenizer's regexes */
    int            ignore_merges;  /* a word that is a token is taken
                                    * whole (Llama 3) */
    int            n_re;
    pcre2_code    *re[LLM_PRE_MAX_RE];
    llm_merge_t   *merges;
    size_t         merge_mask;
    int32_t        byte_tok[256];  /* the token of each byte's mapped
                                    * character, or -1 */
};


/* where tokens go while tokenizing: counted always, stored while room */
typedef struct {
    int32_t  *out;
    int       cap;
    int       n;
} llm_tokout_t;


void llm_tokout_push(llm_tokout_t *o, int32_t id);
int32_t llm_tok_text_to_id(const llm_tokenizer_t *t, const char *s,
    size_t n);

/* checks the name of tokenizer.ggml.pre and sets t->pre, pre_set,
 * ignore_merges and the add_bos default */
int llm_bpe_pre(llm_tokenizer_t *t, const char *name, size_t len,
    const char *path, llm_err_t *err);
/* compiles the pre-tokenizer and reads the merges; needs t->hash */
int llm_bpe_init(llm_tokenizer_t *t, const llm_gguf_t *g, llm_err_t *err);
void llm_bpe_free(llm_tokenizer_t *t);

/* the bytes a byte-level token text stands for; writes at most len
 * bytes to out and returns their count */
size_t llm_bpe_unmap(const char *text, size_t len, char *out);

/* tokenizes a stretch of raw text (no special tokens in it) */
int llm_bpe_fragment(const llm_tokenizer_t *t, const char *text,
    size_t len, llm_tokout_t *o, llm_err_t *err);


#endif /* LLM_TOKENIZER_INT_H */
