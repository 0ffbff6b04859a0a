/*
 * Copyright (C) ngx_llm developers
 *
 * Tokenizer built from a GGUF file's tokenizer.ggml.* metadata
 * (tokenizer.ggml.model "llama": SentencePiece BPE with byte fallback;
 * "gpt2": byte-level BPE with merges and the pre-tokenizer that
 * tokenizer.ggml.pre names), and the incremental detokenizer that never
 * emits a split UTF-8 character.  A tokenizer is read-only once built:
 * threads may share it.
 */

#ifndef LLM_TOKENIZER_H
#define LLM_TOKENIZER_H

#include "llm_common.h"
#include "llm_model.h"


typedef struct llm_gguf_s  llm_gguf_t;


/* token types, as tokenizer.ggml.token_type numbers them */
enum {
    LLM_TOKEN_UNDEFINED = 0,
    LLM_TOKEN_NORMAL = 1,
    LLM_TOKEN_UNKNOWN = 2,
    LLM_TOKEN_CONTROL = 3,
    LLM_TOKEN_USER_DEFINED = 4,
    LLM_TOKEN_UNUSED = 5,
    LLM_TOKEN_BYTE = 6
};

/* flags of llm_tokenize_ex() */
#define LLM_TOK_ADD_BOS        0x1
#define LLM_TOK_PARSE_SPECIAL  0x2   /* control tokens in the text too */
#define LLM_TOK_ADD_EOS        0x4


/* builds a tokenizer from a GGUF file's metadata; the file may hold
 * no tensors (a vocabulary-only file) */
int llm_tokenizer_load(llm_tokenizer_t **out, const char *path,
    llm_err_t *err);
/* the same from an open file; the tokenizer copies what it needs */
int llm_tokenizer_from_gguf(llm_tokenizer_t **out, const llm_gguf_t *g,
    llm_err_t *err);
void llm_tokenizer_free(llm_tokenizer_t *t);

int llm_tokenizer_n_vocab(const llm_tokenizer_t *t);
int32_t llm_tokenizer_bos(const llm_tokenizer_t *t);     /* -1 if none */
int32_t llm_tokenizer_eos(const llm_tokenizer_t *t);     /* -1 if none */

/* true for tokens that end generation: eos, eot and eom, and control
 * tokens spelled as a known end of turn (<|eot_id|>, <|im_end|>,
 * <|end|>, <end_of_turn>, <|endoftext|>, ...) */
int llm_tokenizer_is_eog(const llm_tokenizer_t *t, int32_t id);

/* whether the model wants BOS in front of a prompt (add_bos_token) */
int llm_tokenizer_wants_bos(const llm_tokenizer_t *t);
/* whether it wants EOS after one (add_eos_token) */
int llm_tokenizer_wants_eos(const llm_tokenizer_t *t);

/* tokenizer.ggml.model ("llama", "gpt2") and tokenizer.ggml.pre
 * ("default" when the file names none) */
const char *llm_tokenizer_model(const llm_tokenizer_t *t);
const char *llm_tokenizer_pre(const llm_tokenizer_t *t);

/* LLM_TOKEN_*, or -1 for an id out of range */
int llm_tokenizer_token_type(const llm_tokenizer_t *t, int32_t id);

/* the token's text as the vocabulary spells it (U+2581 for spaces) */
const char *llm_tokenizer_token_text(const llm_tokenizer_t *t, int32_t id,
    size_t *len);

/* the longest piece llm_token_piece() can return */
size_t llm_tokenizer_max_piece(const llm_tokenizer_t *t);

/*
 * Tokenizes len bytes of text (any bytes; invalid UTF-8 is tokenized
 * byte by byte where the vocabulary allows).  User-defined tokens are
 * always cut out of the text; control tokens only with PARSE_SPECIAL.
 * Prepends BOS when add_bos is set.  Writes at most cap ids to out and
 * returns the full count, which may exceed cap (then call again with
 * more room), or -1 with err set.  The time is linear in len, up to
 * log factors.
 */
int llm_tokenize(const llm_tokenizer_t *t, const char *text, size_t len,
    int add_bos, int32_t *out, int cap, llm_err_t *err);

/* the same with LLM_TOK_* flags */
int llm_tokenize_ex(const llm_tokenizer_t *t, const char *text, size_t len,
    int flags, int32_t *out, int cap, llm_err_t *err);

/* the bytes a token stands for (byte tokens decoded, U+2581 -> space,
 * GPT-2's byte mapping undone); control tokens give an empty piece */
const char *llm_token_piece(const llm_tokenizer_t *t, int32_t id,
    size_t *len);


/* incremental detokenizer state: bytes of an unfinished UTF-8 character */
typedef struct {
    unsigned char  pending[8];
    int            n_pending;
} llm_detok_t;

void llm_detok_init(llm_detok_t *d);

/*
 * Appends the piece of token id and writes to out (cap >= 64 plus the
 * longest piece) the bytes that are now complete UTF-8; returns their
 * count.  Bytes that can never become valid UTF-8 are replaced by
 * U+FFFD.
 */
size_t llm_detok_push(llm_detok_t *d, const llm_tokenizer_t *t, int32_t id,
    char *out, size_t cap);

/* flushes what is pending at the end of a sequence (as U+FFFD) */
size_t llm_detok_flush(llm_detok_t *d, char *out, size_t cap);


#endif /* LLM_TOKENIZER_H */
