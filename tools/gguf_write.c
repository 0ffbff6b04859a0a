/*
 * Copyright (C) ngx_llm developers
 *
 * gguf-write: writes a GGUF v3 file with the shape of a real model and
 * random weights, in any weight type the engine computes with, for
 * benchmarks (bench/cpu.sh) and tests.  The vocabulary is a
 * SentencePiece one of the preset's size: <unk>, <s>, </s>, the 256
 * byte tokens, then filler pieces, so that any text tokenizes (as
 * bytes) and decoding runs the real output width.
 *
 *   gguf-write --preset tinyllama --type q4_k_m --out /tmp/t.gguf
 *
 * Types: f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k, and q4_k_m (Q4_K with
 * Q6_K for output and ffn_down, as llama.cpp's Q4_K_M files mostly
 * are).  Like llama.cpp's files, q4_0 keeps output in Q6_K, and a
 * k-quant falls back to Q8_0 for rows that are not whole 256-blocks.
 * Norms and biases are F32.  Rows are made by every CPU at once, each
 * from a generator seeded by (seed, tensor, row), so that the file is
 * the same whatever the threads.
 */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_gguf.h"
#include "llm_quant.h"
#include "llm_threads.h"


#define GW_ALIGN      32
#define GW_MAX_TENS   (16 * 1024)
#define GW_CHUNK      (16 << 20)    /* bytes of rows made at once */


typedef struct {
    const char  *name;
    const char  *arch;
    int          n_layer;
    int          n_embd;
    int          n_head;
    int          n_head_kv;
    int          n_ff;
    int          n_vocab;
    int          n_ctx;
    float        rope_base;
    float        eps;
    int          tied;          /* no output.weight: token_embd is it */
    int          qkv_bias;      /* qwen2 */
} gw_preset_t;


typedef struct {
    char         name[64];
    uint32_t     type;
    int          n_dims;
    int64_t      ne[2];
    float        scale;         /* random weights in +-scale */
    float        base;          /* plus this (norm weights: 1) */
    uint64_t     offset;
    size_t       nbytes;
} gw_tensor_t;


static const gw_preset_t  gw_presets[] = {
    { "tinyllama", "llama", 22, 2048, 32, 4, 5632, 32000, 2048,
      10000.0f, 1e-5f, 0, 0 },
    { "llama3.2-1b", "llama", 16, 2048, 32, 8, 8192, 128256, 8192,
      500000.0f, 1e-5f, 1, 0 },
    { "qwen2.5-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, 8192,
      1000000.0f, 1e-6f, 1, 1 },
    { "llama3-8b", "llama", 32, 4096, 32, 8, 14336, 128256, 8192,
      500000.0f, 1e-5f, 0, 0 },
    /* for tests: seconds to write */
    { "micro", "llama", 2, 256, 8, 2, 768, 512, 512,
      10000.0f, 1e-5f, 0, 0 },
};


static gw_tensor_t  gw_tensors[GW_MAX_TENS];
static int          gw_n_tensors;
static uint64_t     gw_rng = 0x2545f4914f6cdd1dULL;


static int gw_usage(void);
static int gw_parse_type(const char *s, uint32_t *base, int *q4_k_m);
static uint32_t gw_pick(uint32_t base, int q4_k_m, const char *role,
    int64_t cols);
static void gw_add(const char *name, uint32_t type, int n_dims, int64_t ne0,
    int64_t ne1, float scale, float base);
static int gw_write(FILE *f, const gw_preset_t *p);
static void gw_str(FILE *f, const char *s);
static void gw_u32(FILE *f, uint32_t v);
static void gw_u64(FILE *f, uint64_t v);
static void gw_kv_str(FILE *f, const char *key, const char *val);
static void gw_kv_u32(FILE *f, const char *key, uint32_t v);
static void gw_kv_f32(FILE *f, const char *key, float v);
static void gw_kv_bool(FILE *f, const char *key, int v);
static int gw_pad(FILE *f, uint64_t *pos);
static float gw_random(uint64_t *state);
static void gw_row_task(void *arg, int64_t task, int thread);


/* rows r0.. of one tensor, made by the threads */
typedef struct {
    const gw_tensor_t  *t;
    int                 index;      /* of the tensor */
    int64_t             r0;
    size_t              rb;         /* bytes per row */
    int64_t             max_cols;   /* floats per thread in rows */
    uint8_t            *out;
    float              *rows;       /* per thread: ne[0] floats */
} gw_chunk_t;


int
main(int argc, char **argv)
{
    int                 q4_k_m, layers, vocab;
    char                key[128], *end;
    FILE               *f;
    uint32_t            base;
    gw_preset_t         p;
    const char         *preset, *type, *out;
    llm_err_t           err;
    const gw_preset_t  *pp;

    preset = "tinyllama";
    type = "q8_0";
    out = NULL;
    layers = 0;
    vocab = 0;

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            return gw_usage();
        }

        if (strcmp(argv[i], "--preset") == 0) {
            preset = argv[++i];

        } else if (strcmp(argv[i], "--type") == 0) {
            type = argv[++i];

        } else if (strcmp(argv[i], "--out") == 0) {
            out = argv[++i];

        } else if (strcmp(argv[i], "--layers") == 0) {
            layers = (int) strtol(argv[++i], &end, 10);
            if (*end != '\0' || layers < 1 || layers > 1024) {
                return gw_usage();
            }

        } else if (strcmp(argv[i], "--vocab") == 0) {
            vocab = (int) strtol(argv[++i], &end, 10);
            if (*end != '\0' || vocab < 259 || vocab > (1 << 22)) {
                return gw_usage();
            }

        } else if (strcmp(argv[i], "--seed") == 0) {
            gw_rng = strtoull(argv[++i], &end, 10) | 1;
            if (*end != '\0') {
                return gw_usage();
            }

        } else {
            return gw_usage();
        }
    }

    if (out == NULL) {
        return gw_usage();
    }

    pp = NULL;
    for (size_t i = 0; i < sizeof(gw_presets) / sizeof(gw_presets[0]); i++) {
        if (strcmp(preset, gw_presets[i].name) == 0) {
            pp = &gw_presets[i];
        }
    }

    if (pp == NULL) {
        fprintf(stderr, "gguf-write: unknown preset \"%s\"\n", preset);
        return gw_usage();
    }

    if (gw_parse_type(type, &base, &q4_k_m) != 0) {
        fprintf(stderr, "gguf-write: unknown type \"%s\"\n", type);
        return gw_usage();
    }

    p = *pp;
    if (layers > 0) {
        p.n_layer = layers;
    }
    if (vocab > 0) {
        p.n_vocab = vocab;
    }

    llm_quant_init();

    /* the tensors, in llama.cpp's order; weights of about the spread a
     * trained model's have */
    {
        int64_t  d = p.n_embd, hd = p.n_embd / p.n_head;
        int64_t  q_dim = hd * p.n_head, kv_dim = hd * p.n_head_kv;

        gw_add("token_embd.weight", gw_pick(base, q4_k_m, "embd", d), 2, d,
               p.n_vocab, 0.05f, 0.0f);

        for (int l = 0; l < p.n_layer; l++) {

#define GW_BLK(suffix)  (snprintf(key, sizeof(key), "blk.%d.%s", l, suffix), \
                         key)

            gw_add(GW_BLK("attn_norm.weight"), LLM_TYPE_F32, 1, d, 1, 0.1f,
                   1.0f);
            gw_add(GW_BLK("attn_q.weight"), gw_pick(base, q4_k_m, "q", d),
                   2, d, q_dim, 0.04f, 0.0f);
            gw_add(GW_BLK("attn_k.weight"), gw_pick(base, q4_k_m, "k", d),
                   2, d, kv_dim, 0.04f, 0.0f);
            gw_add(GW_BLK("attn_v.weight"), gw_pick(base, q4_k_m, "v", d),
                   2, d, kv_dim, 0.04f, 0.0f);

            if (p.qkv_bias) {
                gw_add(GW_BLK("attn_q.bias"), LLM_TYPE_F32, 1, q_dim, 1,
                       0.1f, 0.0f);
                gw_add(GW_BLK("attn_k.bias"), LLM_TYPE_F32, 1, kv_dim, 1,
                       0.1f, 0.0f);
                gw_add(GW_BLK("attn_v.bias"), LLM_TYPE_F32, 1, kv_dim, 1,
                       0.1f, 0.0f);
            }

            gw_add(GW_BLK("attn_output.weight"),
                   gw_pick(base, q4_k_m, "o", q_dim), 2, q_dim, d, 0.04f,
                   0.0f);
            gw_add(GW_BLK("ffn_norm.weight"), LLM_TYPE_F32, 1, d, 1, 0.1f,
                   1.0f);
            gw_add(GW_BLK("ffn_gate.weight"),
                   gw_pick(base, q4_k_m, "gate", d), 2, d, p.n_ff, 0.04f,
                   0.0f);
            gw_add(GW_BLK("ffn_up.weight"), gw_pick(base, q4_k_m, "up", d),
                   2, d, p.n_ff, 0.04f, 0.0f);
            gw_add(GW_BLK("ffn_down.weight"),
                   gw_pick(base, q4_k_m, "down", p.n_ff), 2, p.n_ff, d,
                   0.03f, 0.0f);
        }

        gw_add("output_norm.weight", LLM_TYPE_F32, 1, d, 1, 0.1f, 1.0f);

        if (!p.tied) {
            gw_add("output.weight", gw_pick(base, q4_k_m, "output", d), 2,
                   d, p.n_vocab, 0.05f, 0.0f);
        }
    }

    if (llm_threads_init(0, &err) != LLM_OK) {
        fprintf(stderr, "gguf-write: %s (one thread)\n", err.errstr);
    }

    f = fopen(out, "wb");
    if (f == NULL) {
        fprintf(stderr, "gguf-write: %s: %s\n", out, strerror(errno));
        llm_threads_free();
        return 1;
    }

    if (gw_write(f, &p) != 0 || fclose(f) != 0) {
        fprintf(stderr, "gguf-write: %s: %s\n", out, strerror(errno));
        remove(out);
        llm_threads_free();
        return 1;
    }

    llm_threads_free();
    return 0;
}


static int
gw_usage(void)
{
    fprintf(stderr,
        "usage: gguf-write --out FILE [--preset P] [--type T] [--layers N]\n"
        "                  [--vocab N] [--seed S]\n"
        "  presets: tinyllama (default), llama3.2-1b, qwen2.5-0.5b,\n"
        "           llama3-8b, micro\n"
        "  types:   f32 f16 bf16 q8_0 (default) q4_0 q4_k q5_k q6_k "
        "q4_k_m\n");
    return 2;
}


static int
gw_parse_type(const char *s, uint32_t *base, int *q4_k_m)
{
    static const struct {
        const char  *name;
        uint32_t     type;
    } types[] = {
        { "f32", LLM_TYPE_F32 }, { "f16", LLM_TYPE_F16 },
        { "bf16", LLM_TYPE_BF16 }, { "q8_0", LLM_TYPE_Q8_0 },
        { "q4_0", LLM_TYPE_Q4_0 }, { "q4_k", LLM_TYPE_Q4_K },
        { "q5_k", LLM_TYPE_Q5_K }, { "q6_k", LLM_TYPE_Q6_K },
        { "q4_k_m", LLM_TYPE_Q4_K }
    };

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(s, types[i].name) == 0) {
            *base = types[i].type;
            *q4_k_m = strcmp(s, "q4_k_m") == 0;
            return 0;
        }
    }

    return -1;
}


/* the type of one weight matrix of cols inputs per row */
static uint32_t
gw_pick(uint32_t base, int q4_k_m, const char *role, int64_t cols)
{
    uint32_t  t;

    t = base;

    if (q4_k_m && (strcmp(role, "output") == 0
                   || strcmp(role, "down") == 0))
    {
        t = LLM_TYPE_Q6_K;
    }

    if (base == LLM_TYPE_Q4_0 && strcmp(role, "output") == 0) {
        t = LLM_TYPE_Q6_K;
    }

    if (cols % (int64_t) llm_ggml_blck_size(t) != 0) {
        t = LLM_TYPE_Q8_0;
    }

    return t;
}


static void
gw_add(const char *name, uint32_t type, int n_dims, int64_t ne0,
    int64_t ne1, float scale, float base)
{
    gw_tensor_t  *t;

    /* at most 12 per layer, 1024 layers: far from GW_MAX_TENS */

    t = &gw_tensors[gw_n_tensors++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->scale = scale;
    t->base = base;
    t->nbytes = llm_ggml_row_size(type, ne0) * (size_t) ne1;
}


static int
gw_write(FILE *f, const gw_preset_t *p)
{
    int       n_kv, n_vocab;
    char      piece[32], key[128];
    float    *rows;
    uint8_t  *out;
    int64_t   n_rows;
    uint64_t  pos, off;
    int64_t   max_cols;

    n_vocab = p->n_vocab;
    n_kv = 19;

    gw_u32(f, LLM_GGUF_MAGIC);
    gw_u32(f, 3);
    gw_u64(f, (uint64_t) gw_n_tensors);
    gw_u64(f, (uint64_t) n_kv);

    gw_kv_str(f, "general.architecture", p->arch);
    gw_kv_str(f, "general.name", p->name);
    gw_kv_u32(f, "general.alignment", GW_ALIGN);

#define GW_ARCH(k)  (snprintf(key, sizeof(key), "%s.%s", p->arch, k), key)

    gw_kv_u32(f, GW_ARCH("block_count"), (uint32_t) p->n_layer);
    gw_kv_u32(f, GW_ARCH("context_length"), (uint32_t) p->n_ctx);
    gw_kv_u32(f, GW_ARCH("embedding_length"), (uint32_t) p->n_embd);
    gw_kv_u32(f, GW_ARCH("feed_forward_length"), (uint32_t) p->n_ff);
    gw_kv_u32(f, GW_ARCH("attention.head_count"), (uint32_t) p->n_head);
    gw_kv_u32(f, GW_ARCH("attention.head_count_kv"),
              (uint32_t) p->n_head_kv);
    gw_kv_f32(f, GW_ARCH("rope.freq_base"), p->rope_base);
    gw_kv_f32(f, GW_ARCH("attention.layer_norm_rms_epsilon"), p->eps);

    gw_kv_str(f, "tokenizer.ggml.model", "llama");
    gw_kv_u32(f, "tokenizer.ggml.bos_token_id", 1);
    gw_kv_u32(f, "tokenizer.ggml.eos_token_id", 2);
    gw_kv_u32(f, "tokenizer.ggml.unknown_token_id", 0);
    gw_kv_bool(f, "tokenizer.ggml.add_bos_token", 1);

    /* tokens: <unk> <s> </s>, <0x00>..<0xFF>, then "▁t<i>" fillers */
    gw_str(f, "tokenizer.ggml.tokens");
    gw_u32(f, LLM_GGUF_ARRAY);
    gw_u32(f, LLM_GGUF_STRING);
    gw_u64(f, (uint64_t) n_vocab);

    for (int i = 0; i < n_vocab; i++) {
        if (i < 3) {
            gw_str(f, i == 0 ? "<unk>" : (i == 1 ? "<s>" : "</s>"));

        } else if (i < 259) {
            snprintf(piece, sizeof(piece), "<0x%02X>", i - 3);
            gw_str(f, piece);

        } else {
            snprintf(piece, sizeof(piece), "\xe2\x96\x81t%d", i);
            gw_str(f, piece);
        }
    }

    gw_str(f, "tokenizer.ggml.scores");
    gw_u32(f, LLM_GGUF_ARRAY);
    gw_u32(f, LLM_GGUF_FLOAT32);
    gw_u64(f, (uint64_t) n_vocab);

    for (int i = 0; i < n_vocab; i++) {
        float  s = i < 259 ? 0.0f : -(float) i;

        fwrite(&s, 4, 1, f);
    }

    /* 2 unknown, 3 control, 6 byte, 1 normal */
    gw_str(f, "tokenizer.ggml.token_type");
    gw_u32(f, LLM_GGUF_ARRAY);
    gw_u32(f, LLM_GGUF_INT32);
    gw_u64(f, (uint64_t) n_vocab);

    for (int i = 0; i < n_vocab; i++) {
        int32_t  t = i == 0 ? 2 : (i < 3 ? 3 : (i < 259 ? 6 : 1));

        fwrite(&t, 4, 1, f);
    }

    off = 0;
    max_cols = 0;

    for (int i = 0; i < gw_n_tensors; i++) {
        gw_tensor_t  *t = &gw_tensors[i];

        gw_str(f, t->name);
        gw_u32(f, (uint32_t) t->n_dims);
        for (int k = 0; k < t->n_dims; k++) {
            gw_u64(f, (uint64_t) t->ne[k]);
        }
        gw_u32(f, t->type);

        t->offset = off;
        gw_u64(f, off);
        off = (off + t->nbytes + GW_ALIGN - 1) & ~(uint64_t) (GW_ALIGN - 1);

        if (t->ne[0] > max_cols) {
            max_cols = t->ne[0];
        }
    }

    pos = (uint64_t) ftell(f);
    if (gw_pad(f, &pos) != 0) {
        return -1;
    }

    /* each row from a generator of its own, so that the threads make
     * the same file as one would */
    rows = malloc((size_t) llm_threads_count() * max_cols * sizeof(float));
    out = malloc(GW_CHUNK + (size_t) max_cols * sizeof(float));
    if (rows == NULL || out == NULL) {
        free(rows);
        free(out);
        errno = ENOMEM;
        return -1;
    }

    for (int i = 0; i < gw_n_tensors; i++) {
        gw_chunk_t  ch;

        ch.t = &gw_tensors[i];
        ch.index = i;
        ch.rb = llm_ggml_row_size(ch.t->type, ch.t->ne[0]);
        ch.max_cols = max_cols;
        ch.out = out;
        ch.rows = rows;
        n_rows = (int64_t) (GW_CHUNK / ch.rb);
        n_rows = n_rows < 1 ? 1 : n_rows;

        for (ch.r0 = 0; ch.r0 < ch.t->ne[1]; ch.r0 += n_rows) {
            int64_t  n = ch.t->ne[1] - ch.r0 < n_rows ? ch.t->ne[1] - ch.r0
                                                      : n_rows;

            llm_threads_run(gw_row_task, &ch, n);

            if (fwrite(out, 1, (size_t) n * ch.rb, f) != (size_t) n * ch.rb) {
                free(rows);
                free(out);
                return -1;
            }
        }

        pos += ch.t->nbytes;
        if (gw_pad(f, &pos) != 0) {
            free(rows);
            free(out);
            return -1;
        }
    }

    free(rows);
    free(out);

    return ferror(f) ? -1 : 0;
}


static int
gw_pad(FILE *f, uint64_t *pos)
{
    static const char  zeros[GW_ALIGN];
    size_t             n;

    n = (size_t) ((GW_ALIGN - *pos % GW_ALIGN) % GW_ALIGN);
    *pos += n;

    return n > 0 && fwrite(zeros, 1, n, f) != n ? -1 : 0;
}


static void
gw_str(FILE *f, const char *s)
{
    gw_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}


static void
gw_u32(FILE *f, uint32_t v)
{
    fwrite(&v, 4, 1, f);
}


static void
gw_u64(FILE *f, uint64_t v)
{
    fwrite(&v, 8, 1, f);
}


static void
gw_kv_str(FILE *f, const char *key, const char *val)
{
    gw_str(f, key);
    gw_u32(f, LLM_GGUF_STRING);
    gw_str(f, val);
}


static void
gw_kv_u32(FILE *f, const char *key, uint32_t v)
{
    gw_str(f, key);
    gw_u32(f, LLM_GGUF_UINT32);
    gw_u32(f, v);
}


static void
gw_kv_f32(FILE *f, const char *key, float v)
{
    gw_str(f, key);
    gw_u32(f, LLM_GGUF_FLOAT32);
    fwrite(&v, 4, 1, f);
}


static void
gw_kv_bool(FILE *f, const char *key, int v)
{
    uint8_t  b;

    b = v != 0;
    gw_str(f, key);
    gw_u32(f, LLM_GGUF_BOOL);
    fwrite(&b, 1, 1, f);
}


static void
gw_row_task(void *arg, int64_t task, int thread)
{
    float               *row;
    uint64_t             st;
    gw_chunk_t          *ch = arg;
    const gw_tensor_t   *t = ch->t;

    row = ch->rows + (size_t) thread * (size_t) ch->max_cols;

    /* splitmix64 of the seed, the tensor and the row */
    st = gw_rng + ((uint64_t) ch->index << 40) + (uint64_t) (ch->r0 + task);
    st = (st ^ (st >> 30)) * 0xbf58476d1ce4e5b9ULL;
    st = (st ^ (st >> 27)) * 0x94d049bb133111ebULL;
    st = (st ^ (st >> 31)) | 1;

    for (int64_t c = 0; c < t->ne[0]; c++) {
        row[c] = t->base + t->scale * gw_random(&st);
    }

    (void) llm_quantize_row(t->type, row, ch->out + (size_t) task * ch->rb,
                            t->ne[0]);
}


/* roughly bell-shaped in -1..1: the mean of two uniforms, doubled */
static float
gw_random(uint64_t *state)
{
    uint64_t  r;

    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    r = *state;

    return ((float) (r & 0xffffff) + (float) ((r >> 24) & 0xffffff))
           / (float) 0xffffff - 1.0f;
}
