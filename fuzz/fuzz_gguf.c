/*
 * Copyright (C) ngx_llm developers
 *
 * libFuzzer target for the GGUF reader and the model loader (make
 * fuzz).
 *
 * An input is a GGUF file.
 *
 *   - llm_gguf_open_mem() reads it from an allocation of exactly its
 *     size (a mapped file would hide reads past its end up to the page
 *     boundary from ASan).  A refusal is one line naming the file; an
 *     accepted file is read back whole: every key through every typed
 *     lookup, every array element, every string and every tensor's
 *     first and last byte, each of which must lie in the file, and each
 *     key and tensor must be found by name.
 *   - llm_tokenizer_from_gguf() takes the vocabulary; one that loads
 *     tokenizes a few texts and detokenizes them, every id in range.
 *   - llm_model_load() takes the file itself (from a memfd), unless its
 *     hyperparameters would ask for more than a few MB of activations:
 *     the loader's own limits allow gigabytes, which a file of a few KB
 *     can claim.  A model that loads runs two tokens through a forward
 *     pass, when its KV cache is small too.
 *
 * Built with -DLLM_GGUF_SEED_MAIN this file is instead the program that
 * writes the seed corpus: the small fixture models and vocabularies (up
 * to 2 MB each), and synthetic files: one with every metadata type, and
 * tiny llama, qwen2 and qwen3 models (SentencePiece and byte-level BPE
 * vocabularies, F32, F16, Q8_0 and Q4_0 weights) that load and run.
 */

#define _GNU_SOURCE                     /* memfd_create() */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "llm_gguf.h"
#include "llm_log.h"
#include "llm_model.h"
#include "llm_threads.h"
#include "llm_tokenizer.h"

#include "../t/unit/gguf_buf.h"
#include "fuzz_seed.h"


#define FUZZ_NAME  "fuzz.gguf"


#ifndef LLM_GGUF_SEED_MAIN

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int   fuzz_fd = -1;
static char  fuzz_path[64];
static int   fuzz_verbose;            /* $LLM_FUZZ_VERBOSE: say what
                                       * became of each input */

static volatile uint8_t  fuzz_sink;


static void
touch(const void *p, size_t n)
{
    const uint8_t  *b = p;

    if (n > 0) {
        fuzz_sink ^= b[0] ^ b[n - 1];
    }
}


static void
inside(const uint8_t *map, size_t size, const void *p, size_t n,
    const char *what)
{
    const uint8_t  *b = p;

    if (b < map || b > map + size || n > (size_t) (map + size - b)) {
        fprintf(stderr, "fuzz_gguf: %s lies outside the file\n", what);
        abort();
    }

    touch(p, n);
}


/* every key, array element and tensor, read back */
static void
check_gguf(const llm_gguf_t *g, const uint8_t *map, size_t size)
{
    int                       b;
    float                     f;
    size_t                    len, align;
    int32_t                   i32;
    uint32_t                  u32;
    llm_err_t                 err;
    const char               *s;
    const llm_gguf_kv_t      *kv, *arr;
    const llm_gguf_tensor_t  *t;

    align = llm_gguf_alignment(g);

    if ((llm_gguf_version(g) != 2 && llm_gguf_version(g) != 3)
        || align < 8 || (align & (align - 1)) != 0)
    {
        abort();
    }

    for (size_t i = 0; i < llm_gguf_n_kv(g); i++) {
        kv = llm_gguf_kv_at(g, i);

        if (kv == NULL || llm_gguf_find(g, kv->key) != kv
            || kv->type >= LLM_GGUF_NTYPES)
        {
            fprintf(stderr, "fuzz_gguf: key %zu is not found by name\n", i);
            abort();
        }

        memset(&err, 0, sizeof(err));

        /* each lookup either reads the value or refuses its type */
        (void) llm_gguf_get_u32(g, kv->key, &u32, &err);
        (void) llm_gguf_get_i32(g, kv->key, &i32, &err);
        (void) llm_gguf_get_f32(g, kv->key, &f, &err);
        (void) llm_gguf_get_bool(g, kv->key, &b, &err);

        if (llm_gguf_get_str(g, kv->key, &s, &len, &err) == LLM_OK) {
            inside(map, size, s, len, "a string");
        }

        if (llm_gguf_get_arr(g, kv->key, LLM_GGUF_NTYPES, &arr, &err)
            != LLM_OK)
        {
            continue;
        }

        if (arr->arr_type >= LLM_GGUF_NTYPES
            || arr->arr_type == LLM_GGUF_ARRAY)
        {
            abort();
        }

        for (uint64_t j = 0; j < arr->arr_n; j++) {
            if (arr->arr_type == LLM_GGUF_STRING) {
                s = llm_gguf_arr_str(arr, j, &len);
                inside(map, size, s, len, "an array's string");

            } else {
                fuzz_sink ^= (uint8_t) llm_gguf_arr_int(arr, j);
                f = llm_gguf_arr_f32(arr, j);
                fuzz_sink ^= (uint8_t) (f == f);
            }
        }

        /* one past the end gives nothing */
        s = llm_gguf_arr_str(arr, arr->arr_n, &len);
        if (len != 0 || llm_gguf_arr_int(arr, arr->arr_n) != 0) {
            abort();
        }
    }

    for (size_t i = 0; i < llm_gguf_n_tensors(g); i++) {
        t = llm_gguf_tensor_at(g, i);

        /* a name may hold a NUL, which ends its copy early: names are
         * unique up to it, so lookups still find each tensor */
        if (t == NULL || llm_gguf_tensor(g, t->name) != t
            || strlen(t->name) >= LLM_GGUF_NAME_MAX
            || t->n_dims > LLM_GGUF_MAX_DIMS
            || llm_ggml_blck_size(t->type) == 0)
        {
            fprintf(stderr, "fuzz_gguf: tensor %zu is inconsistent\n", i);
            abort();
        }

        for (uint32_t d = t->n_dims; d < LLM_GGUF_MAX_DIMS; d++) {
            if (t->ne[d] != 1) {
                abort();
            }
        }

        if (((const uint8_t *) t->data - map) % align != 0) {
            fprintf(stderr, "fuzz_gguf: tensor '%s' is misaligned\n",
                    t->name);
            abort();
        }

        inside(map, size, t->data, t->nbytes, "a tensor");
    }
}


static void
check_tokenizer(const llm_gguf_t *g)
{
    int               n, m, n_vocab;
    char             *out;
    size_t            len, cap, w;
    int32_t          *ids;
    llm_err_t         err;
    llm_detok_t       d;
    llm_tokenizer_t  *t;

    static const char *const  texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        " \xe2\x96\x81x\n\n\t<s></s><|endoftext|><|im_start|>user\n",
        "\xff\xfe\xc3 \xc3\xa9t\xc3\xa9 \xf0\x9f\xa6\x99 123 4567 ab ab ab",
        ""
    };

    memset(&err, 0, sizeof(err));

    if (llm_tokenizer_from_gguf(&t, g, &err) != LLM_OK) {
        if (t != NULL || err.errstr[0] == '\0') {
            abort();
        }

        if (fuzz_verbose) {
            fprintf(stderr, "fuzz_gguf: no tokenizer: %s\n", err.errstr);
        }

        return;
    }

    n_vocab = llm_tokenizer_n_vocab(t);
    cap = llm_tokenizer_max_piece(t) + 64;

    for (int32_t id = 0; id < n_vocab; id++) {
        (void) llm_token_piece(t, id, &len);

        if (len > llm_tokenizer_max_piece(t)) {
            fprintf(stderr, "fuzz_gguf: piece %d longer than the longest\n",
                    id);
            abort();
        }
    }

    out = malloc(cap);
    if (out == NULL) {
        abort();
    }

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        len = strlen(texts[i]);

        n = llm_tokenize_ex(t, texts[i], len, LLM_TOK_PARSE_SPECIAL
                            | LLM_TOK_ADD_BOS | LLM_TOK_ADD_EOS, NULL, 0,
                            &err);
        if (n < 0) {
            abort();
        }

        ids = malloc(((size_t) n + 1) * sizeof(int32_t));
        if (ids == NULL) {
            abort();
        }

        m = llm_tokenize_ex(t, texts[i], len, LLM_TOK_PARSE_SPECIAL
                            | LLM_TOK_ADD_BOS | LLM_TOK_ADD_EOS, ids, n,
                            &err);
        if (m != n) {
            fprintf(stderr, "fuzz_gguf: %d ids counted, %d written\n", n, m);
            abort();
        }

        llm_detok_init(&d);

        for (int j = 0; j < n; j++) {
            if (ids[j] < 0 || ids[j] >= n_vocab) {
                fprintf(stderr, "fuzz_gguf: id %d of %d\n", ids[j],
                        n_vocab);
                abort();
            }

            w = llm_detok_push(&d, t, ids[j], out, cap);
            if (w > cap) {
                abort();
            }

            touch(out, w);
        }

        if (llm_detok_flush(&d, out, cap) > cap) {
            abort();
        }

        free(ids);
    }

    free(out);
    llm_tokenizer_free(t);
}


/* "<arch>.key" as a u32, or 0 */
static uint64_t
hparam(const llm_gguf_t *g, const char *arch, size_t alen, const char *key)
{
    char       full[160];
    uint32_t   v;
    llm_err_t  err;

    snprintf(full, sizeof(full), "%.*s.%s", (int) (alen > 64 ? 64 : alen),
             arch, key);

    memset(&err, 0, sizeof(err));

    if (llm_gguf_get_u32(g, full, &v, &err) != LLM_OK) {
        return 0;
    }

    return v;
}


/*
 * Whether loading the file could ask for more than about 16 MB of
 * activations (256 tokens of every width) or logits; 2: the KV cache of
 * a short sequence stays small too, so a forward pass may run.
 */
static int
model_size(const llm_gguf_t *g)
{
    size_t                alen;
    uint64_t              d, ff, heads, kv_heads, hd, layers, q, kvd, vocab;
    llm_err_t             err;
    const char           *arch;
    const llm_gguf_kv_t  *tokens;

    memset(&err, 0, sizeof(err));

    if (llm_gguf_get_str(g, "general.architecture", &arch, &alen, &err)
        != LLM_OK)
    {
        return 1;       /* refused before anything is allocated */
    }

    d = hparam(g, arch, alen, "embedding_length");
    ff = hparam(g, arch, alen, "feed_forward_length");
    heads = hparam(g, arch, alen, "attention.head_count");
    kv_heads = hparam(g, arch, alen, "attention.head_count_kv");
    hd = hparam(g, arch, alen, "attention.key_length");
    layers = hparam(g, arch, alen, "block_count");

    if (heads == 0) {
        return 1;
    }

    if (hd == 0) {
        hd = d / heads;
    }

    if (kv_heads == 0) {
        kv_heads = heads;
    }

    q = heads * hd;
    kvd = kv_heads * hd;

    vocab = 0;
    if (llm_gguf_get_arr(g, "tokenizer.ggml.tokens", LLM_GGUF_STRING,
                         &tokens, &err) == LLM_OK)
    {
        vocab = tokens->arr_n;
    }

    if (d > 4096 || ff > 16384 || q > 16384 || kvd > 16384
        || 3 * d + 2 * q + 2 * kvd + 2 * ff + hd > 16384
        || vocab > (1 << 18))
    {
        return 0;
    }

    return layers * kvd <= (1 << 16) ? 2 : 1;
}


static void
check_model(const uint8_t *data, size_t size, int forward)
{
    int32_t        tokens[2];
    float         *logits;
    llm_err_t      err;
    llm_kv_t      *kv;
    llm_model_t   *m;
    const llm_config_t  *c;

    if (ftruncate(fuzz_fd, 0) != 0
        || pwrite(fuzz_fd, data, size, 0) != (ssize_t) size)
    {
        perror("fuzz_gguf: memfd");
        abort();
    }

    memset(&err, 0, sizeof(err));

    if (llm_model_load(&m, fuzz_path, &err) != LLM_OK) {
        if (m != NULL || strstr(err.errstr, fuzz_path) == NULL
            || strchr(err.errstr, '\n') != NULL)
        {
            fprintf(stderr, "fuzz_gguf: refused with '%s'\n", err.errstr);
            abort();
        }

        if (fuzz_verbose) {
            fprintf(stderr, "fuzz_gguf: no model: %s\n", err.errstr);
        }

        return;
    }

    c = llm_model_config(m);

    if (c->n_vocab != llm_tokenizer_n_vocab(llm_model_tokenizer(m))
        || c->n_vocab <= 0 || c->n_layer <= 0 || c->n_embd <= 0)
    {
        abort();
    }

    if (forward) {
        kv = llm_kv_new(m, 8, &err);
        logits = malloc((size_t) c->n_vocab * sizeof(float));

        if (kv != NULL && logits != NULL) {
            tokens[0] = llm_tokenizer_bos(llm_model_tokenizer(m));
            tokens[0] = tokens[0] >= 0 ? tokens[0] : 0;
            tokens[1] = (int32_t) (size % (size_t) c->n_vocab);

            if (llm_model_forward(m, kv, tokens, 2, 0, logits, 0, &err)
                != LLM_OK && fuzz_verbose)
            {
                fprintf(stderr, "fuzz_gguf: forward: %s\n", err.errstr);
            }
        }

        free(logits);
        llm_kv_free(kv);
    }

    if (fuzz_verbose) {
        fprintf(stderr, "fuzz_gguf: a %s model of %d layers loaded%s\n",
                c->arch, c->n_layer, forward ? " and ran" : "");
    }

    llm_model_free(m);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    llm_err_t  err;

    (void) argc;
    (void) argv;

    llm_log_level = LLM_LOG_ERR;
    fuzz_verbose = getenv("LLM_FUZZ_VERBOSE") != NULL;

    /* everything on this thread: no workers to race with */
    memset(&err, 0, sizeof(err));
    (void) llm_threads_init(1, &err);

    fuzz_fd = memfd_create(FUZZ_NAME, MFD_CLOEXEC);
    if (fuzz_fd == -1) {
        perror("fuzz_gguf: memfd_create");
        exit(1);
    }

    snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d", fuzz_fd);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          model;
    uint8_t     *copy;
    llm_err_t    err;
    llm_gguf_t  *g;

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        abort();
    }

    memcpy(copy, data, size);
    memset(&err, 0, sizeof(err));

    if (llm_gguf_open_mem(&g, FUZZ_NAME, copy, size, &err) != LLM_OK) {
        if (g != NULL || strstr(err.errstr, FUZZ_NAME) == NULL
            || strchr(err.errstr, '\n') != NULL)
        {
            fprintf(stderr, "fuzz_gguf: refused with '%s'\n", err.errstr);
            abort();
        }

        if (fuzz_verbose) {
            fprintf(stderr, "fuzz_gguf: %s\n", err.errstr);
        }

        free(copy);
        return 0;
    }

    check_gguf(g, copy, size);
    check_tokenizer(g);

    model = model_size(g);

    llm_gguf_close(g);
    free(copy);

    if (model) {
        check_model(data, size, model == 2);

    } else if (fuzz_verbose) {
        fprintf(stderr, "fuzz_gguf: too large a model to load\n");
    }

    return 0;
}


#else /* LLM_GGUF_SEED_MAIN */


#define SEED_MAX  (2 * 1024 * 1024)


typedef struct {
    buf_t      kv;
    buf_t      ti;
    buf_t      data;
    uint64_t   n_kv;
    uint64_t   n_t;
    uint32_t   rng;
    uint32_t   align;        /* of the data section, 0: the default */
} gguf_t;


static void
kv_str(gguf_t *g, const char *key, const char *v)
{
    put_str(&g->kv, key);
    put_u32(&g->kv, LLM_GGUF_STRING);
    put_str(&g->kv, v);
    g->n_kv++;
}


static void
kv_scalar(gguf_t *g, const char *key, uint32_t type, const void *v,
    size_t n)
{
    put_str(&g->kv, key);
    put_u32(&g->kv, type);
    put(&g->kv, v, n);
    g->n_kv++;
}


static void
kv_u32(gguf_t *g, const char *key, uint32_t v)
{
    kv_scalar(g, key, LLM_GGUF_UINT32, &v, 4);
}


static void
kv_f32(gguf_t *g, const char *key, float v)
{
    kv_scalar(g, key, LLM_GGUF_FLOAT32, &v, 4);
}


static void
kv_arr(gguf_t *g, const char *key, uint32_t type, const void *v,
    uint64_t n, size_t esize)
{
    put_str(&g->kv, key);
    put_u32(&g->kv, LLM_GGUF_ARRAY);
    put_u32(&g->kv, type);
    put_u64(&g->kv, n);
    put(&g->kv, v, n * esize);
    g->n_kv++;
}


static void
kv_arr_str(gguf_t *g, const char *key, const char *const *v, uint64_t n)
{
    put_str(&g->kv, key);
    put_u32(&g->kv, LLM_GGUF_ARRAY);
    put_u32(&g->kv, LLM_GGUF_STRING);
    put_u64(&g->kv, n);

    for (uint64_t i = 0; i < n; i++) {
        put_str(&g->kv, v[i]);
    }

    g->n_kv++;
}


static uint32_t
rnd(gguf_t *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 17;
    g->rng ^= g->rng << 5;

    return g->rng;
}


/* a tensor of ne0 x ne1 (ne1 0: a vector) with small random weights */
static void
tensor(gguf_t *g, const char *name, uint32_t type, uint64_t ne0,
    uint64_t ne1)
{
    float     f;
    size_t    n, blocks;
    int8_t    q;
    uint8_t   nib;
    uint16_t  h;

    while (g->data.n % LLM_GGUF_DEFAULT_ALIGN != 0) {
        put(&g->data, "", 1);
    }

    put_str(&g->ti, name);
    put_u32(&g->ti, ne1 ? 2 : 1);
    put_u64(&g->ti, ne0);
    if (ne1) {
        put_u64(&g->ti, ne1);
    }
    put_u32(&g->ti, type);
    put_u64(&g->ti, g->data.n);
    g->n_t++;

    n = (size_t) (ne0 * (ne1 ? ne1 : 1));

    switch (type) {

    case LLM_TYPE_F32:
        for (size_t i = 0; i < n; i++) {
            f = ((float) (rnd(g) % 2001) - 1000.0f) / 4000.0f;
            put(&g->data, &f, 4);
        }
        break;

    case LLM_TYPE_F16:
        for (size_t i = 0; i < n; i++) {
            /* +-(2^-5 .. 2^-2) */
            h = (uint16_t) (0x2800 + rnd(g) % 0xc00) | (rnd(g) & 0x8000);
            put(&g->data, &h, 2);
        }
        break;

    case LLM_TYPE_Q8_0:
        blocks = n / 32;
        for (size_t i = 0; i < blocks; i++) {
            h = 0x1c00;                     /* 2^-8 */
            put(&g->data, &h, 2);
            for (int j = 0; j < 32; j++) {
                q = (int8_t) (rnd(g) % 255 - 127);
                put(&g->data, &q, 1);
            }
        }
        break;

    default: /* LLM_TYPE_Q4_0 */
        blocks = n / 32;
        for (size_t i = 0; i < blocks; i++) {
            h = 0x2000;                     /* 2^-7 */
            put(&g->data, &h, 2);
            for (int j = 0; j < 16; j++) {
                nib = (uint8_t) rnd(g);
                put(&g->data, &nib, 1);
            }
        }
        break;
    }
}


static int
write_gguf(const char *dir, const char *name, gguf_t *g, uint32_t version)
{
    int    rc;
    char   path[4096];
    buf_t  f;

    memset(&f, 0, sizeof(f));

    put_u32(&f, LLM_GGUF_MAGIC);
    put_u32(&f, version);
    put_u64(&f, g->n_t);
    put_u64(&f, g->n_kv);
    put(&f, g->kv.p, g->kv.n);
    put(&f, g->ti.p, g->ti.n);

    while (g->n_t
           && f.n % (g->align ? g->align : LLM_GGUF_DEFAULT_ALIGN) != 0)
    {
        put(&f, "", 1);
    }

    put(&f, g->data.p, g->data.n);

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    rc = fuzz_seed_write(path, f.p, f.n, NULL, 0);

    free(f.p);
    free(g->kv.p);
    free(g->ti.p);
    free(g->data.p);
    memset(g, 0, sizeof(gguf_t));

    return rc;
}


/* a SentencePiece vocabulary: control tokens, bytes, a few pieces */
static int
vocab_spm(gguf_t *g)
{
    int32_t  types[40];
    float    scores[40];
    int      n;

    static const char *const  toks[] = {
        "<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "<0xC3>", "<0xA9>",
        "<0xFF>", "\xe2\x96\x81", "a", "b", "e", "t", "h", "ab", "th",
        "the", "\xe2\x96\x81t", "\xe2\x96\x81the", "\xe2\x96\x81" "a",
        "\xe2\x96\x81" "ab", "<|im_start|>", "<|im_end|>", "\xc3\xa9", "ee",
        "\xe2\x96\x81\xe2\x96\x81", "x", "\xe2\x96\x81x"
    };

    n = (int) (sizeof(toks) / sizeof(toks[0]));

    for (int i = 0; i < n; i++) {
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 8 ? 6 : i == 21 || i == 22
                   ? 4 : 1;
        scores[i] = -(float) i;
    }

    kv_str(g, "tokenizer.ggml.model", "llama");
    kv_arr_str(g, "tokenizer.ggml.tokens", toks, (uint64_t) n);
    kv_arr(g, "tokenizer.ggml.scores", LLM_GGUF_FLOAT32, scores,
           (uint64_t) n, 4);
    kv_arr(g, "tokenizer.ggml.token_type", LLM_GGUF_INT32, types,
           (uint64_t) n, 4);
    kv_u32(g, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(g, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(g, "tokenizer.ggml.unknown_token_id", 0);

    return n;
}


/* a byte-level BPE vocabulary (GPT-2's byte mapping) with merges */
static int
vocab_bpe(gguf_t *g, const char *pre)
{
    int32_t  types[32];
    int      n;

    static const char *const  toks[] = {
        "a", "b", "c", "e", "h", "t", "\xc4\xa0", "\xc4\x8a", "!", "1",
        "2", "ab", "th", "the", "\xc4\xa0t", "\xc4\xa0the", "\xc4\xa0" "a",
        "\xc4\xa0" "ab", "\xc3\x83", "\xc2\xa9", "<|endoftext|>",
        "<|im_start|>", "<|im_end|>", "12"
    };

    static const char *const  merges[] = {
        "a b", "t h", "th e", "\xc4\xa0 t", "\xc4\xa0 the", "\xc4\xa0 a",
        "\xc4\xa0" "a b", "1 2"
    };

    n = (int) (sizeof(toks) / sizeof(toks[0]));

    for (int i = 0; i < n; i++) {
        types[i] = i >= 20 && i <= 22 ? 3 : 1;
    }

    kv_str(g, "tokenizer.ggml.model", "gpt2");
    kv_str(g, "tokenizer.ggml.pre", pre);
    kv_arr_str(g, "tokenizer.ggml.tokens", toks, (uint64_t) n);
    kv_arr(g, "tokenizer.ggml.token_type", LLM_GGUF_INT32, types,
           (uint64_t) n, 4);
    kv_arr_str(g, "tokenizer.ggml.merges", merges,
               sizeof(merges) / sizeof(merges[0]));
    kv_u32(g, "tokenizer.ggml.bos_token_id", 20);
    kv_u32(g, "tokenizer.ggml.eos_token_id", 22);

    return n;
}


/*
 * A model of one or two layers: width d, heads of hd, n_head query and
 * n_kv key/value heads, FFN n_ff, matrices of type mt.
 */
static void
model(gguf_t *g, const char *arch, int spm, uint32_t mt, int layers,
    int d, int n_head, int n_kv, int hd, int n_ff, int tied)
{
    int   n_vocab;
    char  key[96], name[64];

    g->rng = 0x12345678u ^ (uint32_t) (d * 31 + layers);

    kv_str(g, "general.architecture", arch);
    kv_str(g, "general.name", "fuzz-seed");

#define ARCH_U32(k, v)                                                     \
    snprintf(key, sizeof(key), "%s." k, arch);                              \
    kv_u32(g, key, (uint32_t) (v))

    ARCH_U32("context_length", 64);
    ARCH_U32("embedding_length", d);
    ARCH_U32("block_count", layers);
    ARCH_U32("feed_forward_length", n_ff);
    ARCH_U32("attention.head_count", n_head);
    ARCH_U32("attention.head_count_kv", n_kv);

    if (hd * n_head != d) {
        ARCH_U32("attention.key_length", hd);
        ARCH_U32("attention.value_length", hd);
    }

    ARCH_U32("rope.dimension_count", hd);

#undef ARCH_U32

    snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", arch);
    kv_f32(g, key, 1e-5f);
    snprintf(key, sizeof(key), "%s.rope.freq_base", arch);
    kv_f32(g, key, 10000.0f);

    n_vocab = spm ? vocab_spm(g)
                  : vocab_bpe(g, strcmp(arch, "llama") == 0 ? "llama-bpe"
                                                            : "qwen2");

    tensor(g, "token_embd.weight", mt, (uint64_t) d, (uint64_t) n_vocab);
    tensor(g, "output_norm.weight", LLM_TYPE_F32, (uint64_t) d, 0);

    if (!tied) {
        tensor(g, "output.weight", mt, (uint64_t) d, (uint64_t) n_vocab);
    }

    for (int l = 0; l < layers; l++) {

#define BLK(suffix)  (snprintf(name, sizeof(name), "blk.%d.%s", l, suffix), \
                      name)

        tensor(g, BLK("attn_norm.weight"), LLM_TYPE_F32, (uint64_t) d, 0);
        tensor(g, BLK("attn_q.weight"), mt, (uint64_t) d,
               (uint64_t) (n_head * hd));
        tensor(g, BLK("attn_k.weight"), mt, (uint64_t) d,
               (uint64_t) (n_kv * hd));
        tensor(g, BLK("attn_v.weight"), mt, (uint64_t) d,
               (uint64_t) (n_kv * hd));

        if (strcmp(arch, "qwen2") == 0) {
            tensor(g, BLK("attn_q.bias"), LLM_TYPE_F32,
                   (uint64_t) (n_head * hd), 0);
            tensor(g, BLK("attn_k.bias"), LLM_TYPE_F32,
                   (uint64_t) (n_kv * hd), 0);
            tensor(g, BLK("attn_v.bias"), LLM_TYPE_F32,
                   (uint64_t) (n_kv * hd), 0);
        }

        if (strcmp(arch, "qwen3") == 0) {
            tensor(g, BLK("attn_q_norm.weight"), LLM_TYPE_F32,
                   (uint64_t) hd, 0);
            tensor(g, BLK("attn_k_norm.weight"), LLM_TYPE_F32,
                   (uint64_t) hd, 0);
        }

        tensor(g, BLK("attn_output.weight"), mt, (uint64_t) (n_head * hd),
               (uint64_t) d);
        tensor(g, BLK("ffn_norm.weight"), LLM_TYPE_F32, (uint64_t) d, 0);
        tensor(g, BLK("ffn_gate.weight"), mt, (uint64_t) d,
               (uint64_t) n_ff);
        tensor(g, BLK("ffn_up.weight"), mt, (uint64_t) d, (uint64_t) n_ff);
        tensor(g, BLK("ffn_down.weight"), mt, (uint64_t) n_ff,
               (uint64_t) d);

#undef BLK
    }
}


/* t/unit/test_gguf.c's file: every metadata type, alignment 64 */
static void
every_type(gguf_t *g)
{
    int8_t    i8 = -5;
    int16_t   i16 = -300;
    uint16_t  u16 = 60000;
    uint32_t  u32 = 4000000000u, align = 64;
    int32_t   i32 = -7, ai[4] = { 10, -20, 30, 40 };
    uint64_t  u64 = 12345678901234ULL;
    int64_t   i64 = -5000000000LL;
    float     f32 = 1.5f, af[2] = { 1.5f, -0.25f };
    double    f64 = -2.25;
    uint8_t   u8 = 0xfe, bl = 1;

    static const char *const  strs[] = { "a", "", "\xe2\x96\x81three" };

    kv_scalar(g, "t.u8", LLM_GGUF_UINT8, &u8, 1);
    kv_scalar(g, "t.i8", LLM_GGUF_INT8, &i8, 1);
    kv_scalar(g, "t.u16", LLM_GGUF_UINT16, &u16, 2);
    kv_scalar(g, "t.i16", LLM_GGUF_INT16, &i16, 2);
    kv_scalar(g, "t.u32", LLM_GGUF_UINT32, &u32, 4);
    kv_scalar(g, "t.i32", LLM_GGUF_INT32, &i32, 4);
    kv_scalar(g, "t.f32", LLM_GGUF_FLOAT32, &f32, 4);
    kv_scalar(g, "t.bool", LLM_GGUF_BOOL, &bl, 1);
    kv_str(g, "t.str", "hello, world");
    kv_scalar(g, "t.u64", LLM_GGUF_UINT64, &u64, 8);
    kv_scalar(g, "t.i64", LLM_GGUF_INT64, &i64, 8);
    kv_scalar(g, "t.f64", LLM_GGUF_FLOAT64, &f64, 8);
    kv_arr_str(g, "t.arr.str", strs, 3);
    kv_arr(g, "t.arr.i32", LLM_GGUF_INT32, ai, 4, 4);
    kv_arr(g, "t.arr.f32", LLM_GGUF_FLOAT32, af, 2, 4);
    kv_arr(g, "t.arr.empty", LLM_GGUF_UINT8, "", 0, 1);
    kv_arr(g, "t.arr.f64", LLM_GGUF_FLOAT64, &f64, 1, 8);
    kv_arr(g, "t.arr.u64", LLM_GGUF_UINT64, &u64, 1, 8);
    kv_scalar(g, "general.alignment", LLM_GGUF_UINT32, &align, 4);

    /* 64-aligned offsets although the default is 32: padded by hand */
    g->align = 64;
    g->rng = 7;
    tensor(g, "w.f32", LLM_TYPE_F32, 4, 2);
    while (g->data.n % 64 != 0) {
        put(&g->data, "", 1);
    }
    tensor(g, "w.f16", LLM_TYPE_F16, 32, 0);
    while (g->data.n % 64 != 0) {
        put(&g->data, "", 1);
    }
    tensor(g, "w.q8", LLM_TYPE_Q8_0, 32, 2);
}


static int
copy_file(const char *from, const char *dir, const char *name)
{
    int     rc;
    char    path[4096], *buf;
    long    size;
    FILE   *fp;

    fp = fopen(from, "rb");
    if (fp == NULL) {
        fprintf(stderr, "%s: not found, not a seed\n", from);
        return 0;
    }

    fseek(fp, 0, SEEK_END);
    size = ftell(fp);
    fseek(fp, 0, SEEK_SET);

    if (size <= 0 || size > SEED_MAX) {
        fclose(fp);
        fprintf(stderr, "%s: %ld bytes, not a seed\n", from, size);
        return 0;
    }

    buf = malloc((size_t) size);
    if (buf == NULL || fread(buf, 1, (size_t) size, fp) != (size_t) size) {
        free(buf);
        fclose(fp);
        return 0;
    }

    fclose(fp);

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    rc = fuzz_seed_write(path, buf, (size_t) size, NULL, 0);
    free(buf);

    return rc == 0;
}


int
main(int argc, char **argv)
{
    int      n;
    char     from[4096];
    gguf_t   g;

    /* the fixtures that fit: a SentencePiece and a byte-level BPE
     * vocabulary, and models of each architecture and weight family */
    static const char *const  fixtures[] = {
        "models/tiny-qwen3-q4_k_m.gguf",
        "models/tiny-qwen2-q8_0.gguf",
        "models/tiny-llama3-q4_0.gguf",
        "vocab/ggml-vocab-llama-spm.gguf",
        "vocab/ggml-vocab-deepseek-coder.gguf",
    };

    if (argc != 4) {
        fprintf(stderr, "usage: %s FIXTURES models/stories260K.gguf "
                "CORPUS_DIR\n", argv[0]);
        return 2;
    }

    n = 0;

    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        snprintf(from, sizeof(from), "%s/%s", argv[1], fixtures[i]);
        n += copy_file(from, argv[3], strrchr(fixtures[i], '/') + 1);
    }

    n += copy_file(argv[2], argv[3], "stories260K.gguf");

    memset(&g, 0, sizeof(g));

    every_type(&g);
    n += write_gguf(argv[3], "every-type-v3.gguf", &g, 3) == 0;
    every_type(&g);
    n += write_gguf(argv[3], "every-type-v2.gguf", &g, 2) == 0;

    model(&g, "llama", 1, LLM_TYPE_F32, 2, 8, 2, 1, 4, 16, 0);
    n += write_gguf(argv[3], "llama-spm-f32.gguf", &g, 3) == 0;

    model(&g, "llama", 0, LLM_TYPE_F16, 1, 8, 2, 2, 4, 12, 1);
    n += write_gguf(argv[3], "llama-bpe-f16.gguf", &g, 3) == 0;

    model(&g, "llama", 1, LLM_TYPE_Q8_0, 1, 32, 4, 2, 8, 64, 0);
    n += write_gguf(argv[3], "llama-spm-q8_0.gguf", &g, 2) == 0;

    model(&g, "qwen2", 0, LLM_TYPE_Q4_0, 1, 32, 4, 2, 8, 32, 1);
    n += write_gguf(argv[3], "qwen2-bpe-q4_0.gguf", &g, 3) == 0;

    model(&g, "qwen3", 0, LLM_TYPE_F32, 1, 8, 4, 2, 4, 16, 1);
    n += write_gguf(argv[3], "qwen3-bpe-f32.gguf", &g, 3) == 0;

    model(&g, "qwen3", 1, LLM_TYPE_F32, 2, 12, 2, 2, 8, 8, 0);
    n += write_gguf(argv[3], "qwen3-spm-f32.gguf", &g, 3) == 0;

    printf("%d seeds in %s\n", n, argv[3]);
    return 0;
}


#endif /* LLM_GGUF_SEED_MAIN */
