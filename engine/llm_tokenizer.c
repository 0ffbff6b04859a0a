/*
 * Copyright (C) ngx_llm developers
 *
 * Tokenizers from a GGUF file's tokenizer.ggml.* metadata: loading, the
 * special tokens, and SentencePiece-style BPE (tokenizer.ggml.model
 * "llama"); byte-level BPE ("gpt2") is in llm_tokenizer_bpe.c.
 *
 * SentencePiece BPE, as llama.cpp and HF tokenizers apply it to GGUF
 * vocabularies:
 *
 *   1. user-defined tokens (and control tokens, when asked) are cut out
 *      of the text first and emitted as they are;
 *   2. each remaining fragment gets a leading space when it starts the
 *      text or follows such a token (add_space_prefix), and its spaces
 *      become U+2581;
 *   3. the fragment is split into UTF-8 characters, and the adjacent pair
 *      whose concatenation is a token with the highest score is merged,
 *      leftmost first on ties, until no pair is a token;
 *   4. a symbol that is not a token falls back to its bytes, <0xNN>.
 *
 * Step 1 is shared by both models: special tokens are cut out longest
 * first, each at all its places in what is left, as llama.cpp does.
 */

#define _GNU_SOURCE                     /* memmem() */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_tokenizer_int.h"


#define LLM_SPACE      "\xe2\x96\x81"    /* U+2581, SentencePiece's space */
#define LLM_SPACE_LEN  3


/* a symbol of the SPM merge: a run of bytes in the escaped text */
typedef struct {
    int          prev;
    int          next;
    const char  *text;
    size_t       n;
} llm_sym_t;


typedef struct {
    float   score;
    int     left;
    int     right;
    size_t  size;
} llm_bigram_t;


/* a stretch of the input: raw text, or a special token cut out of it */
typedef struct {
    size_t   off;
    size_t   len;
    int32_t  id;             /* -1 for raw text */
} llm_frag_t;


static int llm_tokenizer_build(llm_tokenizer_t *t, const llm_gguf_t *g,
    llm_err_t *err);
static int llm_tokenizer_special_ids(llm_tokenizer_t *t,
    const llm_gguf_t *g, llm_err_t *err);
static int llm_tokenizer_index(llm_tokenizer_t *t, llm_err_t *err);
static uint64_t llm_hash_bytes(const char *s, size_t n);
static int llm_byte_of_token(const char *s, size_t n);
static int llm_cmp_special_len(const void *a, const void *b);
static int llm_partition(const llm_tokenizer_t *t, const char *text,
    size_t len, int flags, llm_frag_t **frags, size_t *n_frags,
    llm_err_t *err);
static int llm_spm_fragment(const llm_tokenizer_t *t, const char *text,
    size_t len, int space_prefix, llm_tokout_t *o, llm_err_t *err);
static void llm_bigram_push(const llm_tokenizer_t *t, llm_sym_t *syms,
    llm_bigram_t *heap, size_t *n_heap, int left, int right);
static llm_bigram_t llm_bigram_pop(llm_bigram_t *heap, size_t *n_heap);
static int llm_bigram_before(const llm_bigram_t *a, const llm_bigram_t *b);
static int llm_spm_resegment(const llm_tokenizer_t *t, const llm_sym_t *s,
    llm_tokout_t *o, llm_err_t *err);
static size_t llm_utf8_need(const unsigned char *p, int n);


/* texts of control tokens that end a turn in common vocabularies
 * (DeepSeek's bars are U+FF5C, its spaces U+2581) */
static const char  *llm_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "<|end_of_text|>",
    "<|return|>", "<end_of_utterance>", "<|EOT|>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence"
    "\xef\xbd\x9c>",
    NULL
};


int
llm_tokenizer_load(llm_tokenizer_t **out, const char *path, llm_err_t *err)
{
    int          rc;
    llm_gguf_t  *g;

    *out = NULL;

    if (llm_gguf_open(&g, path, err) != LLM_OK) {
        return LLM_ERR;
    }

    rc = llm_tokenizer_from_gguf(out, g, err);
    llm_gguf_close(g);

    return rc;
}


int
llm_tokenizer_from_gguf(llm_tokenizer_t **out, const llm_gguf_t *g,
    llm_err_t *err)
{
    int               rc, vocab;
    size_t            len;
    const char       *model, *pre;
    llm_tokenizer_t  *t;

    *out = NULL;

    rc = llm_gguf_get_str(g, "tokenizer.ggml.model", &model, &len, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: no tokenizer (tokenizer.ggml.model is "
                           "missing)", llm_gguf_path(g));
    }

    if (len == 5 && memcmp(model, "llama", 5) == 0) {
        vocab = LLM_VOCAB_SPM;

    } else if (len == 4 && memcmp(model, "gpt2", 4) == 0) {
        vocab = LLM_VOCAB_BPE;

    } else {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: tokenizer model '%.*s' is not supported "
                           "(only 'llama' and 'gpt2')", llm_gguf_path(g),
                           (int) (len > 32 ? 32 : len), model);
    }

    t = calloc(1, sizeof(llm_tokenizer_t));
    if (t == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory",
                           llm_gguf_path(g));
    }

    t->vocab = vocab;
    memcpy(t->model, model, len);

    /* a file without tokenizer.ggml.pre predates it: llama.cpp then
     * takes "default" too */
    rc = llm_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &len, err);
    if (rc == LLM_GGUF_MISSING) {
        pre = "default";
        len = 7;
    }

    if (rc == LLM_ERR
        || llm_bpe_pre(t, pre, len, llm_gguf_path(g), err) != LLM_OK
        || llm_tokenizer_build(t, g, err) != LLM_OK
        || llm_tokenizer_special_ids(t, g, err) != LLM_OK
        || llm_tokenizer_index(t, err) != LLM_OK
        || (vocab == LLM_VOCAB_BPE && llm_bpe_init(t, g, err) != LLM_OK))
    {
        if (err != NULL && err->err == LLM_ENOMEM) {
            llm_err_set(err, LLM_ENOMEM, "%s: out of memory",
                        llm_gguf_path(g));
        }

        llm_tokenizer_free(t);
        return LLM_ERR;
    }

    *out = t;
    return LLM_OK;
}


void
llm_tokenizer_free(llm_tokenizer_t *t)
{
    if (t == NULL) {
        return;
    }

    free(t->tokens);
    free(t->arena);
    free(t->hash);
    free(t->special);
    free(t->eog);
    llm_bpe_free(t);
    free(t);
}


/* copies the vocabulary out of the file and decodes each piece */
static int
llm_tokenizer_build(llm_tokenizer_t *t, const llm_gguf_t *g,
    llm_err_t *err)
{
    int                   rc, b;
    char                 *p, *piece;
    size_t                total, len, n;
    const char           *s;
    llm_token_t          *tok;
    const llm_gguf_kv_t  *tokens, *scores, *types;

    rc = llm_gguf_get_arr(g, "tokenizer.ggml.tokens", LLM_GGUF_STRING,
                          &tokens, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING || tokens->arr_n == 0) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tokenizer.ggml.tokens is missing or empty",
                           llm_gguf_path(g));
    }

    if (tokens->arr_n > INT32_MAX / 2) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: %llu tokens is too many", llm_gguf_path(g),
                           (unsigned long long) tokens->arr_n);
    }

    n = (size_t) tokens->arr_n;

    rc = llm_gguf_get_arr(g, "tokenizer.ggml.scores", LLM_GGUF_NTYPES,
                          &scores, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        scores = NULL;

    } else if (scores->arr_n != n
               || (scores->arr_type != LLM_GGUF_FLOAT32
                   && scores->arr_type != LLM_GGUF_FLOAT64))
    {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tokenizer.ggml.scores has %llu %s values "
                           "for %zu tokens", llm_gguf_path(g),
                           (unsigned long long) scores->arr_n,
                           llm_gguf_type_name(scores->arr_type), n);
    }

    rc = llm_gguf_get_arr(g, "tokenizer.ggml.token_type", LLM_GGUF_NTYPES,
                          &types, err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        types = NULL;

    } else if (types->arr_n != n
               || types->arr_type == LLM_GGUF_STRING
               || types->arr_type == LLM_GGUF_FLOAT32
               || types->arr_type == LLM_GGUF_FLOAT64)
    {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tokenizer.ggml.token_type has %llu %s "
                           "values for %zu tokens", llm_gguf_path(g),
                           (unsigned long long) types->arr_n,
                           llm_gguf_type_name(types->arr_type), n);
    }

    /* texts are bounded by the file; a piece is never longer than its
     * text, so twice the texts holds both */

    total = 0;
    for (size_t i = 0; i < n; i++) {
        (void) llm_gguf_arr_str(tokens, i, &len);

        if (len > UINT32_MAX / 2
            || llm_add_size(total, len, &total) != 0)
        {
            return llm_err_set(err, LLM_EFORMAT, "%s: token %zu is too "
                               "long", llm_gguf_path(g), i);
        }
    }

    if (llm_mul_size(total, 2, &total) != 0
        || llm_add_size(total, 1, &total) != 0)
    {
        return llm_err_set(err, LLM_EFORMAT, "%s: vocabulary too large",
                           llm_gguf_path(g));
    }

    t->tokens = calloc(n, sizeof(llm_token_t));
    t->arena = malloc(total);

    if (t->tokens == NULL || t->arena == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    t->n_vocab = (int) n;
    p = t->arena;

    for (size_t i = 0; i < n; i++) {
        tok = &t->tokens[i];
        s = llm_gguf_arr_str(tokens, i, &len);

        memcpy(p, s, len);
        tok->text = p;
        tok->len = (uint32_t) len;
        p += len;

        tok->score = scores != NULL ? llm_gguf_arr_f32(scores, i) : 0.0f;
        tok->type = types != NULL ? (int) llm_gguf_arr_int(types, i)
                                  : LLM_TOKEN_NORMAL;
    }

    for (size_t i = 0; i < n; i++) {
        tok = &t->tokens[i];
        piece = p;

        switch (tok->type) {

        case LLM_TOKEN_CONTROL:
        case LLM_TOKEN_UNUSED:
            break;

        case LLM_TOKEN_UNKNOWN:
        case LLM_TOKEN_USER_DEFINED:
            memcpy(p, tok->text, tok->len);
            p += tok->len;
            break;

        case LLM_TOKEN_BYTE:
            b = t->vocab == LLM_VOCAB_SPM
                ? llm_byte_of_token(tok->text, tok->len) : -1;
            if (b >= 0) {
                *p++ = (char) b;
                break;
            }

            /* fall through */

        default:
            if (t->vocab == LLM_VOCAB_BPE) {
                /* GPT-2's byte mapping undone */
                p += llm_bpe_unmap(tok->text, tok->len, p);
                break;
            }

            /* normal: U+2581 is a space */
            for (size_t j = 0; j < tok->len; j++) {
                if (tok->len - j >= LLM_SPACE_LEN
                    && memcmp(tok->text + j, LLM_SPACE, LLM_SPACE_LEN) == 0)
                {
                    *p++ = ' ';
                    j += LLM_SPACE_LEN - 1;

                } else {
                    *p++ = tok->text[j];
                }
            }
        }

        tok->piece = piece;
        tok->piece_len = (uint32_t) (p - piece);

        if (tok->piece_len > t->max_piece) {
            t->max_piece = tok->piece_len;
        }
    }

    return LLM_OK;
}


static int
llm_tokenizer_special_ids(llm_tokenizer_t *t, const llm_gguf_t *g,
    llm_err_t *err)
{
    int          rc;
    int32_t      def;
    uint32_t     v;
    static const struct {
        const char  *key;
        size_t       field;
        int32_t      def;
    } ids[] = {
        { "tokenizer.ggml.bos_token_id",
          offsetof(llm_tokenizer_t, bos), 1 },
        { "tokenizer.ggml.eos_token_id",
          offsetof(llm_tokenizer_t, eos), 2 },
        { "tokenizer.ggml.unknown_token_id",
          offsetof(llm_tokenizer_t, unk), 0 },
        { "tokenizer.ggml.eot_token_id",
          offsetof(llm_tokenizer_t, eot), -1 },
        { "tokenizer.ggml.eom_token_id",
          offsetof(llm_tokenizer_t, eom), -1 },
    };

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        int32_t  *field = (int32_t *) ((char *) t + ids[i].field);

        /* SentencePiece's <unk>, <s>, </s> are 0, 1, 2 by convention;
         * byte-level vocabularies have no such convention (llama.cpp
         * guesses 11, Falcon's, which in GPT-2's vocabulary is ",") */
        def = t->vocab == LLM_VOCAB_SPM ? ids[i].def : -1;
        *field = def < t->n_vocab ? def : -1;

        rc = llm_gguf_get_u32(g, ids[i].key, &v, err);
        if (rc == LLM_ERR) {
            return LLM_ERR;
        }

        /* an id out of range (often 0xffffffff for "none") keeps the
         * default, as llama.cpp does */
        if (rc == LLM_OK && v < (uint32_t) t->n_vocab) {
            *field = (int32_t) v;
        }
    }

    /* without the key, SentencePiece models want BOS; byte-level ones
     * do when their pre-tokenizer says so (llm_bpe_pre(), Llama 3) */
    if (t->vocab == LLM_VOCAB_SPM) {
        t->add_bos = 1;
    }

    rc = llm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos,
                           err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    t->add_eos = 0;
    rc = llm_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos,
                           err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    /* a byte-level vocabulary spells spaces as bytes: no prefix */
    t->add_space_prefix = 0;

    if (t->vocab == LLM_VOCAB_SPM) {
        t->add_space_prefix = 1;
        rc = llm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix",
                               &t->add_space_prefix, err);
        if (rc == LLM_ERR) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_tokenizer_index(llm_tokenizer_t *t, llm_err_t *err)
{
    size_t        size, h;
    uint64_t     *keys;
    llm_token_t  *tok;

    /* a power of two at least twice the vocabulary */

    size = 16;
    while (size < 2 * (size_t) t->n_vocab) {
        size *= 2;
    }

    t->hash = malloc(size * sizeof(int32_t));
    t->special = malloc((size_t) t->n_vocab * sizeof(int32_t));
    t->eog = calloc((size_t) t->n_vocab, 1);

    if (t->hash == NULL || t->special == NULL || t->eog == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    memset(t->hash, 0xff, size * sizeof(int32_t));
    t->hash_mask = size - 1;

    for (int32_t id = 0; id < t->n_vocab; id++) {
        tok = &t->tokens[id];
        h = llm_hash_bytes(tok->text, tok->len) & t->hash_mask;

        /* a text listed twice maps to its last id, as in llama.cpp */

        while (t->hash[h] != -1) {
            const llm_token_t  *o = &t->tokens[t->hash[h]];

            if (o->len == tok->len
                && memcmp(o->text, tok->text, tok->len) == 0)
            {
                break;
            }

            h = (h + 1) & t->hash_mask;
        }

        t->hash[h] = id;

        if ((tok->type == LLM_TOKEN_CONTROL
             || tok->type == LLM_TOKEN_USER_DEFINED
             || tok->type == LLM_TOKEN_UNKNOWN)
            && tok->len > 0)
        {
            t->special[t->n_special++] = id;
        }

        if (tok->type == LLM_TOKEN_CONTROL
            || tok->type == LLM_TOKEN_USER_DEFINED)
        {
            for (int i = 0; llm_eog_texts[i] != NULL; i++) {
                if (strlen(llm_eog_texts[i]) == tok->len
                    && memcmp(llm_eog_texts[i], tok->text, tok->len) == 0)
                {
                    t->eog[id] = 1;
                }
            }
        }
    }

    if (t->eos >= 0) {
        t->eog[t->eos] = 1;
    }

    if (t->eot >= 0) {
        t->eog[t->eot] = 1;
    }

    if (t->eom >= 0) {
        t->eog[t->eom] = 1;
    }

    /* longest first, so "<|end|>" is not cut out of "<|endoftext|>";
     * ties by id keep the order stable */

    keys = malloc(((size_t) t->n_special + 1) * sizeof(uint64_t));
    if (keys == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    for (int i = 0; i < t->n_special; i++) {
        keys[i] = ((uint64_t) t->tokens[t->special[i]].len << 32)
                  | (uint32_t) (INT32_MAX - t->special[i]);
    }

    qsort(keys, (size_t) t->n_special, sizeof(uint64_t),
          llm_cmp_special_len);

    for (int i = 0; i < t->n_special; i++) {
        t->special[i] = INT32_MAX - (int32_t) (keys[i] & 0xffffffff);
    }

    free(keys);

    return LLM_OK;
}


/* keys are (length << 32 | INT32_MAX - id): descending puts the longest
 * first and, among equals, the lowest id */
static int
llm_cmp_special_len(const void *a, const void *b)
{
    uint64_t  ka = *(const uint64_t *) a;
    uint64_t  kb = *(const uint64_t *) b;

    return (ka < kb) - (ka > kb);
}


/* FNV-1a */
static uint64_t
llm_hash_bytes(const char *s, size_t n)
{
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 0x100000001b3ULL;
    }

    return h;
}


int32_t
llm_tok_text_to_id(const llm_tokenizer_t *t, const char *s, size_t n)
{
    size_t              h;
    const llm_token_t  *tok;

    h = llm_hash_bytes(s, n) & t->hash_mask;

    while (t->hash[h] != -1) {
        tok = &t->tokens[t->hash[h]];

        if (tok->len == n && memcmp(tok->text, s, n) == 0) {
            return t->hash[h];
        }

        h = (h + 1) & t->hash_mask;
    }

    return -1;
}


/* "<0xNN>" -> NN, else -1 */
static int
llm_byte_of_token(const char *s, size_t n)
{
    int  v;

    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') {
        return -1;
    }

    v = 0;
    for (int i = 3; i < 5; i++) {
        char  c = s[i];

        v <<= 4;

        if (c >= '0' && c <= '9') {
            v |= c - '0';

        } else if (c >= 'A' && c <= 'F') {
            v |= c - 'A' + 10;

        } else if (c >= 'a' && c <= 'f') {
            v |= c - 'a' + 10;

        } else {
            return -1;
        }
    }

    return v;
}


int
llm_tokenizer_n_vocab(const llm_tokenizer_t *t)
{
    return t->n_vocab;
}


int32_t
llm_tokenizer_bos(const llm_tokenizer_t *t)
{
    return t->bos;
}


int32_t
llm_tokenizer_eos(const llm_tokenizer_t *t)
{
    return t->eos;
}


int
llm_tokenizer_is_eog(const llm_tokenizer_t *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}


int
llm_tokenizer_wants_bos(const llm_tokenizer_t *t)
{
    return t->add_bos && t->bos >= 0;
}


int
llm_tokenizer_wants_eos(const llm_tokenizer_t *t)
{
    return t->add_eos && t->eos >= 0;
}


const char *
llm_tokenizer_model(const llm_tokenizer_t *t)
{
    return t->model;
}


const char *
llm_tokenizer_pre(const llm_tokenizer_t *t)
{
    return t->pre;
}


int
llm_tokenizer_token_type(const llm_tokenizer_t *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->tokens[id].type : -1;
}


const char *
llm_tokenizer_token_text(const llm_tokenizer_t *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }

    *len = t->tokens[id].len;
    return t->tokens[id].text;
}


size_t
llm_tokenizer_max_piece(const llm_tokenizer_t *t)
{
    return t->max_piece;
}


const char *
llm_token_piece(const llm_tokenizer_t *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }

    *len = t->tokens[id].piece_len;
    return t->tokens[id].piece;
}


int
llm_tokenize(const llm_tokenizer_t *t, const char *text, size_t len,
    int add_bos, int32_t *out, int cap, llm_err_t *err)
{
    return llm_tokenize_ex(t, text, len, add_bos ? LLM_TOK_ADD_BOS : 0,
                           out, cap, err);
}


int
llm_tokenize_ex(const llm_tokenizer_t *t, const char *text, size_t len,
    int flags, int32_t *out, int cap, llm_err_t *err)
{
    int            prev_special, rc;
    size_t         n_frags;
    llm_frag_t    *frags;
    llm_tokout_t   o;

    if (len > INT32_MAX / 4) {
        return llm_err_set(err, LLM_EINVAL, "text of %zu bytes is too long "
                           "to tokenize", len);
    }

    o.out = out;
    o.cap = cap < 0 ? 0 : cap;
    o.n = 0;
    frags = NULL;
    n_frags = 0;

    if ((flags & LLM_TOK_ADD_BOS) && t->bos >= 0) {
        llm_tokout_push(&o, t->bos);
    }

    if (llm_partition(t, text, len, flags, &frags, &n_frags, err)
        != LLM_OK)
    {
        return -1;
    }

    /* the text's start counts as following a special token */

    prev_special = 1;

    for (size_t i = 0; i < n_frags; i++) {
        if (frags[i].id >= 0) {
            llm_tokout_push(&o, frags[i].id);
            prev_special = 1;
            continue;
        }

        if (t->vocab == LLM_VOCAB_BPE) {
            rc = llm_bpe_fragment(t, text + frags[i].off, frags[i].len, &o,
                                  err);

        } else {
            rc = llm_spm_fragment(t, text + frags[i].off, frags[i].len,
                                  t->add_space_prefix && prev_special, &o,
                                  err);
        }

        if (rc != LLM_OK) {
            free(frags);
            return -1;
        }

        prev_special = 0;
    }

    free(frags);

    if ((flags & LLM_TOK_ADD_EOS) && t->eos >= 0) {
        llm_tokout_push(&o, t->eos);
    }

    return o.n;
}


void
llm_tokout_push(llm_tokout_t *o, int32_t id)
{
    if (o->n < o->cap) {
        o->out[o->n] = id;
    }

    o->n++;
}


/*
 * Cuts the special tokens out of the text: user-defined ones always,
 * control and unknown ones with PARSE_SPECIAL.  As in llama.cpp, the
 * longest token goes first and takes all its places, left to right, in
 * what earlier tokens left; then the next.
 *
 * own[] marks the bytes taken so far: the id at a token's first byte,
 * -2 on the rest, -1 where free.  A token is looked for only if each of
 * its byte pairs occurs somewhere in the text, so ordinary text costs a
 * pass over the bytes whatever the number of special tokens.
 */
static int
llm_partition(const llm_tokenizer_t *t, const char *text, size_t len,
    int flags, llm_frag_t **frags, size_t *n_frags, llm_err_t *err)
{
    int                 possible;
    size_t              n, m, off, q, n_taken;
    int32_t            *own;
    uint8_t            *pairs, bytes[32];
    llm_frag_t         *f;
    const char         *p, *hit, *end;
    const unsigned char  *u;
    const llm_token_t  *tok;

    own = NULL;
    pairs = NULL;
    n_taken = 0;
    u = (const unsigned char *) text;
    end = text + len;

    for (int s = 0; s < t->n_special && len > 0; s++) {
        tok = &t->tokens[t->special[s]];
        m = tok->len;

        if ((tok->type != LLM_TOKEN_USER_DEFINED
             && !(flags & LLM_TOK_PARSE_SPECIAL))
            || m > len)
        {
            continue;
        }

        if (pairs == NULL) {
            pairs = calloc(65536 / 8, 1);
            if (pairs == NULL) {
                goto nomem;
            }

            memset(bytes, 0, sizeof(bytes));

            for (size_t i = 0; i < len; i++) {
                bytes[u[i] >> 3] |= (uint8_t) (1 << (u[i] & 7));

                if (i + 1 < len) {
                    unsigned  k = (unsigned) u[i] << 8 | u[i + 1];

                    pairs[k >> 3] |= (uint8_t) (1 << (k & 7));
                }
            }
        }

        {
            const unsigned char  *tt = (const unsigned char *) tok->text;

            possible = (bytes[tt[0] >> 3] >> (tt[0] & 7)) & 1;

            for (size_t i = 0; possible && i + 1 < m; i++) {
                unsigned  k = (unsigned) tt[i] << 8 | tt[i + 1];

                possible = (pairs[k >> 3] >> (k & 7)) & 1;
            }
        }

        if (!possible) {
            continue;
        }

        for (p = text;
             (size_t) (end - p) >= m
             && (hit = memmem(p, (size_t) (end - p), tok->text, m)) != NULL;
             /* void */)
        {
            off = (size_t) (hit - text);

            if (own == NULL) {
                own = malloc(len * sizeof(int32_t));
                if (own == NULL) {
                    goto nomem;
                }

                for (size_t i = 0; i < len; i++) {
                    own[i] = -1;
                }
            }

            /* a place that overlaps one taken: go on past the taken run
             * (any place starting before it overlaps it too) */

            for (q = off; q < off + m && own[q] == -1; q++) {
                /* void */
            }

            if (q < off + m) {
                while (q < len && own[q] != -1) {
                    q++;
                }

                p = text + q;
                continue;
            }

            own[off] = t->special[s];
            for (size_t i = off + 1; i < off + m; i++) {
                own[i] = -2;
            }

            n_taken++;
            p = hit + m;
        }
    }

    free(pairs);
    pairs = NULL;

    /* each token taken splits a raw stretch in two at most */

    f = malloc((2 * n_taken + 1) * sizeof(llm_frag_t));
    if (f == NULL) {
        goto nomem;
    }

    n = 0;
    off = 0;

    for (size_t i = 0; own != NULL && i < len; i++) {
        if (own[i] < 0) {
            continue;
        }

        if (i > off) {
            f[n].off = off;
            f[n].len = i - off;
            f[n].id = -1;
            n++;
        }

        f[n].off = i;
        f[n].len = t->tokens[own[i]].len;
        f[n].id = own[i];
        n++;

        off = i + t->tokens[own[i]].len;
        i = off - 1;
    }

    if (len > off) {
        f[n].off = off;
        f[n].len = len - off;
        f[n].id = -1;
        n++;
    }

    free(own);

    *frags = f;
    *n_frags = n;
    return LLM_OK;

nomem:

    free(own);
    free(pairs);
    return llm_err_set(err, LLM_ENOMEM, "out of memory");
}


static int
llm_spm_fragment(const llm_tokenizer_t *t, const char *text, size_t len,
    int space_prefix, llm_tokout_t *o, llm_err_t *err)
{
    int             n_syms, rc;
    char           *buf, *p;
    size_t          size, n_heap, cl;
    llm_sym_t      *syms;
    llm_bigram_t   *heap, b;
    static const uint8_t  utf8_len[16] = {
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4
    };

    /* escaped text: U+2581 for each space, one in front if asked */

    size = (len + 1) * LLM_SPACE_LEN;
    buf = malloc(size);
    syms = malloc((len + 1) * sizeof(llm_sym_t));

    /* each merge pushes at most two bigrams, after at most len - 1 */
    heap = malloc(3 * (len + 1) * sizeof(llm_bigram_t));

    if (buf == NULL || syms == NULL || heap == NULL) {
        free(buf);
        free(syms);
        free(heap);
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    p = buf;

    if (space_prefix) {
        memcpy(p, LLM_SPACE, LLM_SPACE_LEN);
        p += LLM_SPACE_LEN;
    }

    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(p, LLM_SPACE, LLM_SPACE_LEN);
            p += LLM_SPACE_LEN;

        } else {
            *p++ = text[i];
        }
    }

    size = (size_t) (p - buf);

    /* one symbol per UTF-8 character, as long as its lead byte says if
     * that many continuation bytes follow; other bytes are symbols of
     * their own.  (llama.cpp takes as many bytes as the lead byte says
     * whatever they are, so a stray lead byte before a space swallows
     * part of its U+2581, which then decodes as "\xe2\x96\x81" and not
     * as the space it was.) */

    n_syms = 0;
    for (size_t off = 0; off < size; off += cl) {
        cl = utf8_len[(unsigned char) buf[off] >> 4];
        if (cl > size - off) {
            cl = 1;
        }

        for (size_t i = 1; i < cl; i++) {
            if (((unsigned char) buf[off + i] & 0xc0) != 0x80) {
                cl = 1;
                break;
            }
        }

        syms[n_syms].text = buf + off;
        syms[n_syms].n = cl;
        syms[n_syms].prev = n_syms - 1;
        syms[n_syms].next = off + cl == size ? -1 : n_syms + 1;
        n_syms++;
    }

    n_heap = 0;
    for (int i = 1; i < n_syms; i++) {
        llm_bigram_push(t, syms, heap, &n_heap, i - 1, i);
    }

    while (n_heap > 0) {
        llm_sym_t  *l, *r;

        b = llm_bigram_pop(heap, &n_heap);
        l = &syms[b.left];
        r = &syms[b.right];

        /* stale: one side was merged away since */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) {
            continue;
        }

        l->n += r->n;
        r->n = 0;
        l->next = r->next;

        if (r->next >= 0) {
            syms[r->next].prev = b.left;
        }

        llm_bigram_push(t, syms, heap, &n_heap, l->prev, b.left);
        llm_bigram_push(t, syms, heap, &n_heap, b.left, l->next);
    }

    rc = LLM_OK;

    for (int i = n_syms > 0 ? 0 : -1; i != -1; i = syms[i].next) {
        if (llm_spm_resegment(t, &syms[i], o, err) != LLM_OK) {
            rc = LLM_ERR;
            break;
        }
    }

    free(buf);
    free(syms);
    free(heap);

    return rc;
}


static void
llm_bigram_push(const llm_tokenizer_t *t, llm_sym_t *syms,
    llm_bigram_t *heap, size_t *n_heap, int left, int right)
{
    size_t        i, parent;
    int32_t       id;
    llm_bigram_t  b, tmp;

    if (left < 0 || right < 0) {
        return;
    }

    b.left = left;
    b.right = right;
    b.size = syms[left].n + syms[right].n;

    /* the two symbols are adjacent in the buffer */
    id = llm_tok_text_to_id(t, syms[left].text, b.size);
    if (id < 0) {
        return;
    }

    b.score = t->tokens[id].score;

    i = (*n_heap)++;
    heap[i] = b;

    while (i > 0) {
        parent = (i - 1) / 2;

        if (!llm_bigram_before(&heap[i], &heap[parent])) {
            break;
        }

        tmp = heap[parent];
        heap[parent] = heap[i];
        heap[i] = tmp;
        i = parent;
    }
}


static llm_bigram_t
llm_bigram_pop(llm_bigram_t *heap, size_t *n_heap)
{
    size_t        i, l, r, best, n;
    llm_bigram_t  top, tmp;

    top = heap[0];
    n = --(*n_heap);
    heap[0] = heap[n];

    i = 0;
    for ( ;; ) {
        l = 2 * i + 1;
        r = l + 1;
        best = i;

        if (l < n && llm_bigram_before(&heap[l], &heap[best])) {
            best = l;
        }

        if (r < n && llm_bigram_before(&heap[r], &heap[best])) {
            best = r;
        }

        if (best == i) {
            break;
        }

        tmp = heap[best];
        heap[best] = heap[i];
        heap[i] = tmp;
        i = best;
    }

    return top;
}


/* the higher score merges first; on a tie, the leftmost */
static int
llm_bigram_before(const llm_bigram_t *a, const llm_bigram_t *b)
{
    if (a->score != b->score) {
        return a->score > b->score;
    }

    return a->left < b->left;
}


static int
llm_spm_resegment(const llm_tokenizer_t *t, const llm_sym_t *s,
    llm_tokout_t *o, llm_err_t *err)
{
    int32_t  id;
    char     name[8];

    id = llm_tok_text_to_id(t, s->text, s->n);
    if (id >= 0) {
        llm_tokout_push(o, id);
        return LLM_OK;
    }

    /* every merge made a token, so this is a single character that is
     * not one: spell it in bytes */

    for (size_t i = 0; i < s->n; i++) {
        unsigned char  c = (unsigned char) s->text[i];

        snprintf(name, sizeof(name), "<0x%02X>", c);
        id = llm_tok_text_to_id(t, name, 6);

        if (id < 0) {
            id = llm_tok_text_to_id(t, (const char *) &c, 1);
        }

        if (id < 0) {
            id = t->unk;
        }

        if (id < 0) {
            return llm_err_set(err, LLM_EINVAL,
                               "byte 0x%02x has no token and there is no "
                               "unknown token", c);
        }

        llm_tokout_push(o, id);
    }

    return LLM_OK;
}


void
llm_detok_init(llm_detok_t *d)
{
    d->n_pending = 0;
}


/* how long the UTF-8 sequence starting p[0] must be: 1..4, or 0 when
 * the n bytes so far can never be valid */
static size_t
llm_utf8_need(const unsigned char *p, int n)
{
    size_t  need;

    if (p[0] < 0x80) {
        return 1;
    }

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;

    } else {
        return 0;
    }

    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }

    /* overlongs, surrogates and code points past U+10FFFF */
    if (n >= 2) {
        if ((p[0] == 0xe0 && p[1] < 0xa0)
            || (p[0] == 0xed && p[1] > 0x9f)
            || (p[0] == 0xf0 && p[1] < 0x90)
            || (p[0] == 0xf4 && p[1] > 0x8f))
        {
            return 0;
        }
    }

    return need;
}


#define LLM_REPLACEMENT      "\xef\xbf\xbd"   /* U+FFFD */
#define LLM_REPLACEMENT_LEN  3


/* appends n bytes if they fit; the caller's cap is sized for pieces of
 * valid text, so only a vocabulary of invalid UTF-8 could be cut */
static void
llm_detok_emit(char *out, size_t cap, size_t *w, const void *p, size_t n)
{
    if (n > cap - *w) {
        n = cap - *w;
    }

    memcpy(out + *w, p, n);
    *w += n;
}


static void
llm_detok_byte(llm_detok_t *d, unsigned char c, char *out, size_t cap,
    size_t *w)
{
    size_t  need;

    d->pending[d->n_pending++] = c;
    need = llm_utf8_need(d->pending, d->n_pending);

    if (need == 0) {
        if (d->n_pending == 1) {
            /* a byte that cannot start a character */
            llm_detok_emit(out, cap, w, LLM_REPLACEMENT,
                           LLM_REPLACEMENT_LEN);
            d->n_pending = 0;
            return;
        }

        /* the character before c was cut short: replace it, and start
         * again from c */
        d->n_pending--;
        llm_detok_emit(out, cap, w, LLM_REPLACEMENT, LLM_REPLACEMENT_LEN);
        d->n_pending = 0;
        llm_detok_byte(d, c, out, cap, w);
        return;
    }

    if ((size_t) d->n_pending == need) {
        llm_detok_emit(out, cap, w, d->pending, need);
        d->n_pending = 0;
    }
}


size_t
llm_detok_push(llm_detok_t *d, const llm_tokenizer_t *t, int32_t id,
    char *out, size_t cap)
{
    size_t       len, w;
    const char  *piece;

    piece = llm_token_piece(t, id, &len);
    w = 0;

    for (size_t i = 0; i < len; i++) {
        llm_detok_byte(d, (unsigned char) piece[i], out, cap, &w);
    }

    return w;
}


size_t
llm_detok_flush(llm_detok_t *d, char *out, size_t cap)
{
    size_t  w;

    w = 0;

    if (d->n_pending > 0) {
        llm_detok_emit(out, cap, &w, LLM_REPLACEMENT, LLM_REPLACEMENT_LEN);
        d->n_pending = 0;
    }

    return w;
}
