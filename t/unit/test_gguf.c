/*
 * Copyright (C) ngx_llm developers
 *
 * The GGUF reader: the shipped model read correctly, a synthetic file
 * with every metadata type read back, and corrupted files (of both)
 * refused with a one-line error that names the file, never a crash.
 * Run under `make SAN=1` to have ASan and UBSan watch the refusals.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "gguf_buf.h"
#include "llm_gguf.h"
#include "llm_model.h"
#include "llm_tokenizer.h"


/* where the synthetic file keeps the fields the tests corrupt */
typedef struct {
    size_t  version;
    size_t  n_tensors;
    size_t  n_kv;
    size_t  first_key_len;
    size_t  str_arr_len;          /* length field of the string array */
    size_t  i32_arr_len;
    size_t  value_type;           /* type field of the u8 key */
    size_t  align_value;
    size_t  dup_key;              /* a key's name */
    size_t  t_name[3];
    size_t  t_ndims[3];
    size_t  t_dims[3];
    size_t  t_type[3];
    size_t  t_offset[3];
} layout_t;


static char  tmpdir[64];
static char  path[256];


static void set_u32(buf_t *b, size_t off, uint32_t v);
static void set_u64(buf_t *b, size_t off, uint64_t v);
static void build(buf_t *b, layout_t *l, uint32_t version);
static int write_file(const char *name, const void *p, size_t n);
static unsigned char *read_all(const char *file, size_t *n);
static size_t find(const unsigned char *p, size_t n, const char *s);
static void poke(unsigned char *c, size_t n, size_t off, const void *src,
    size_t len);
static void fill(unsigned char *c, size_t n, size_t off, int v,
    size_t len);
static void test_stories(void);
static void test_synthetic(uint32_t version);
static void test_bad_synthetic(void);
static void test_bad_stories(void);
static void test_bad_models(void);
static void test_fuzz(void);
static void expect_fail(const char *what, const void *p, size_t n,
    const char *needle);
static void expect_model_fail(const char *what, const void *p, size_t n,
    int code, const char *needle);


int
main(void)
{
    char  cmd[128];

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/llm-test-gguf-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        skip_all("cannot make a temporary directory");
    }

    test_stories();
    test_synthetic(3);
    test_synthetic(2);
    test_bad_synthetic();
    test_bad_stories();
    test_bad_models();
    test_fuzz();

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        diag("could not remove %s", tmpdir);
    }

    return done_testing();
}


static void
test_stories(void)
{
    size_t                    len;
    int32_t                   i32;
    uint32_t                  u32;
    float                     f;
    llm_err_t                 err = { 0 };
    llm_gguf_t               *g;
    const char               *s;
    const llm_gguf_kv_t      *kv;
    const llm_gguf_tensor_t  *t;

    if (!ok(llm_gguf_open(&g, "models/stories260K.gguf", &err) == LLM_OK,
            "stories260K opens"))
    {
        diag("%s", err.errstr);
        return;
    }

    is_int(llm_gguf_version(g), 3, "version 3");
    is_int(llm_gguf_alignment(g), 32, "default alignment 32");
    is_int(llm_gguf_n_kv(g), 19, "19 keys");
    is_int(llm_gguf_n_tensors(g), 48, "48 tensors");

    ok(llm_gguf_get_str(g, "general.architecture", &s, &len, &err) == LLM_OK
       && len == 5 && memcmp(s, "llama", 5) == 0, "architecture llama");
    ok(llm_gguf_get_u32(g, "llama.block_count", &u32, &err) == LLM_OK
       && u32 == 5, "5 layers");
    ok(llm_gguf_get_u32(g, "llama.embedding_length", &u32, &err) == LLM_OK
       && u32 == 64, "width 64");
    ok(llm_gguf_get_i32(g, "llama.attention.head_count_kv", &i32, &err)
       == LLM_OK && i32 == 4, "4 kv heads, read as i32");
    ok(llm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f,
                        &err) == LLM_OK && f == 1e-5f, "rms epsilon 1e-5");

    ok(llm_gguf_get_arr(g, "tokenizer.ggml.tokens", LLM_GGUF_STRING, &kv,
                        &err) == LLM_OK && kv->arr_n == 512,
       "512 tokens");
    s = llm_gguf_arr_str(kv, 1, &len);
    ok(len == 3 && memcmp(s, "<s>", 3) == 0, "token 1 is <s>");
    ok(llm_gguf_get_arr(g, "tokenizer.ggml.token_type", LLM_GGUF_INT32,
                        &kv, &err) == LLM_OK
       && llm_gguf_arr_int(kv, 0) == 2 && llm_gguf_arr_int(kv, 1) == 3,
       "token types: unknown, control");

    is_int(llm_gguf_get_u32(g, "no.such.key", &u32, &err), LLM_GGUF_MISSING,
           "a missing key is reported as missing");
    err.errstr[0] = '\0';
    ok(llm_gguf_get_u32(g, "general.architecture", &u32, &err) == LLM_ERR
       && strstr(err.errstr, "general.architecture") != NULL,
       "a string read as u32 is an error naming the key");
    ok(llm_gguf_get_arr(g, "tokenizer.ggml.scores", LLM_GGUF_STRING, &kv,
                        &err) == LLM_ERR,
       "an array of another element type is an error");

    t = llm_gguf_tensor(g, "token_embd.weight");
    ok(t != NULL && t->type == LLM_TYPE_F32 && t->n_dims == 2
       && t->ne[0] == 64 && t->ne[1] == 512 && t->nbytes == 64 * 512 * 4,
       "token_embd.weight is F32 [64, 512]");
    ok(t != NULL && (uintptr_t) t->data % 32 == 0, "and aligned");

    t = llm_gguf_tensor(g, "blk.4.ffn_down.weight");
    ok(t != NULL && t->ne[0] == 172 && t->ne[1] == 64,
       "blk.4.ffn_down.weight is [172, 64]");
    ok(llm_gguf_tensor(g, "blk.5.ffn_down.weight") == NULL,
       "no blk.5");

    llm_gguf_close(g);
}


/* a small file with every value type, three tensors, alignment 64 */
static void
build(buf_t *b, layout_t *l, uint32_t version)
{
    int8_t    i8 = -5;
    int16_t   i16 = -300;
    uint16_t  u16 = 60000;
    int64_t   i64 = -5000000000LL;
    float     f32 = 1.5f;
    double    f64 = -2.25;
    size_t    data_start, pad;
    uint16_t  h;

    memset(b, 0, sizeof(buf_t));
    memset(l, 0, sizeof(layout_t));

    put_u32(b, LLM_GGUF_MAGIC);
    l->version = b->n;
    put_u32(b, version);
    l->n_tensors = b->n;
    put_u64(b, 3);
    l->n_kv = b->n;
    put_u64(b, 17);

    l->first_key_len = b->n;
    put_str(b, "t.u8");
    l->value_type = b->n;
    put_u32(b, LLM_GGUF_UINT8);
    put(b, "\xfe", 1);
    put_str(b, "t.i8");
    put_u32(b, LLM_GGUF_INT8);
    put(b, &i8, 1);
    put_str(b, "t.u16");
    put_u32(b, LLM_GGUF_UINT16);
    put(b, &u16, 2);
    put_str(b, "t.i16");
    put_u32(b, LLM_GGUF_INT16);
    put(b, &i16, 2);
    put_str(b, "t.u32");
    put_u32(b, LLM_GGUF_UINT32);
    put_u32(b, 4000000000u);
    put_str(b, "t.i32");
    put_u32(b, LLM_GGUF_INT32);
    put_u32(b, (uint32_t) -7);
    put_str(b, "t.f32");
    put_u32(b, LLM_GGUF_FLOAT32);
    put(b, &f32, 4);
    put_str(b, "t.bool");
    put_u32(b, LLM_GGUF_BOOL);
    put(b, "\x01", 1);
    put_str(b, "t.str");
    put_u32(b, LLM_GGUF_STRING);
    put_str(b, "hello, world");
    put_str(b, "t.u64");
    put_u32(b, LLM_GGUF_UINT64);
    put_u64(b, 12345678901234ULL);
    put_str(b, "t.i64");
    put_u32(b, LLM_GGUF_INT64);
    put(b, &i64, 8);
    put_str(b, "t.f64");
    put_u32(b, LLM_GGUF_FLOAT64);
    put(b, &f64, 8);

    put_str(b, "t.arr.str");
    put_u32(b, LLM_GGUF_ARRAY);
    put_u32(b, LLM_GGUF_STRING);
    l->str_arr_len = b->n;
    put_u64(b, 3);
    put_str(b, "a");
    put_str(b, "");
    put_str(b, "\xe2\x96\x81three");

    put_str(b, "t.arr.i32");
    put_u32(b, LLM_GGUF_ARRAY);
    put_u32(b, LLM_GGUF_INT32);
    l->i32_arr_len = b->n;
    put_u64(b, 4);
    put_u32(b, 10);
    put_u32(b, (uint32_t) -20);
    put_u32(b, 30);
    put_u32(b, 40);

    put_str(b, "t.arr.f32");
    put_u32(b, LLM_GGUF_ARRAY);
    put_u32(b, LLM_GGUF_FLOAT32);
    put_u64(b, 2);
    put(b, &f32, 4);
    put(b, &f32, 4);

    put_str(b, "t.arr.empty");
    put_u32(b, LLM_GGUF_ARRAY);
    put_u32(b, LLM_GGUF_UINT8);
    put_u64(b, 0);

    put_str(b, "general.alignment");
    put_u32(b, LLM_GGUF_UINT32);
    l->align_value = b->n;
    put_u32(b, 64);

    /* tensors: a [4, 2] f32 at 0, a [32] f16 at 64, a [32, 2] Q8_0 at 128
     * ending exactly at the end of the file */

    l->t_name[0] = b->n;
    put_str(b, "w.f32");
    l->t_ndims[0] = b->n;
    put_u32(b, 2);
    l->t_dims[0] = b->n;
    put_u64(b, 4);
    put_u64(b, 2);
    l->t_type[0] = b->n;
    put_u32(b, LLM_TYPE_F32);
    l->t_offset[0] = b->n;
    put_u64(b, 0);

    l->t_name[1] = b->n;
    put_str(b, "w.f16");
    l->t_ndims[1] = b->n;
    put_u32(b, 1);
    l->t_dims[1] = b->n;
    put_u64(b, 32);
    l->t_type[1] = b->n;
    put_u32(b, LLM_TYPE_F16);
    l->t_offset[1] = b->n;
    put_u64(b, 64);

    l->t_name[2] = b->n;
    put_str(b, "w.q8");
    l->t_ndims[2] = b->n;
    put_u32(b, 2);
    l->t_dims[2] = b->n;
    put_u64(b, 32);
    put_u64(b, 2);
    l->t_type[2] = b->n;
    put_u32(b, LLM_TYPE_Q8_0);
    l->t_offset[2] = b->n;
    put_u64(b, 128);

    /* pad to the alignment, then the data */
    pad = (64 - b->n % 64) % 64;
    put(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
           "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        pad);
    data_start = b->n;

    for (int i = 0; i < 8; i++) {
        float  v = (float) i;

        put(b, &v, 4);
    }

    while (b->n < data_start + 64) {
        put(b, "\0", 1);
    }

    h = 0x3c00;    /* 1.0 in f16 */
    for (int i = 0; i < 32; i++) {
        put(b, &h, 2);
    }

    for (int r = 0; r < 2; r++) {
        h = 0x3800;    /* 0.5 */
        put(b, &h, 2);

        for (int i = 0; i < 32; i++) {
            int8_t  q = (int8_t) (i - 16);

            put(b, &q, 1);
        }
    }

    /* "t.i8" becomes "t.u8" in the duplicate test */
    l->dup_key = find(b->p, b->n, "t.i8");
}


static void
test_synthetic(uint32_t version)
{
    int                       flag;
    size_t                    len;
    int32_t                   i32;
    uint32_t                  u32;
    float                     f;
    buf_t                     b;
    layout_t                  l;
    llm_err_t                 err = { 0 };
    llm_gguf_t               *g;
    const char               *s;
    const float              *fp;
    const llm_gguf_kv_t      *kv;
    const llm_gguf_tensor_t  *t;

    build(&b, &l, version);
    write_file("synthetic.gguf", b.p, b.n);
    free(b.p);

    if (!ok(llm_gguf_open(&g, path, &err) == LLM_OK,
            "v%u: a file with every value type opens", version))
    {
        diag("%s", err.errstr);
        return;
    }

    is_int(llm_gguf_version(g), version, "v%u: version", version);
    is_int(llm_gguf_alignment(g), 64, "v%u: general.alignment 64", version);

    ok(llm_gguf_get_u32(g, "t.u8", &u32, &err) == LLM_OK && u32 == 254,
       "u8");
    ok(llm_gguf_get_i32(g, "t.i8", &i32, &err) == LLM_OK && i32 == -5,
       "i8");
    ok(llm_gguf_get_u32(g, "t.u16", &u32, &err) == LLM_OK && u32 == 60000,
       "u16");
    ok(llm_gguf_get_i32(g, "t.i16", &i32, &err) == LLM_OK && i32 == -300,
       "i16");
    ok(llm_gguf_get_u32(g, "t.u32", &u32, &err) == LLM_OK
       && u32 == 4000000000u, "u32");
    ok(llm_gguf_get_i32(g, "t.u32", &i32, &err) == LLM_ERR,
       "u32 beyond i32 does not fit an i32");
    ok(llm_gguf_get_i32(g, "t.i32", &i32, &err) == LLM_OK && i32 == -7,
       "i32");
    ok(llm_gguf_get_u32(g, "t.i32", &u32, &err) == LLM_ERR,
       "a negative i32 does not fit a u32");
    ok(llm_gguf_get_f32(g, "t.f32", &f, &err) == LLM_OK && f == 1.5f,
       "f32");
    ok(llm_gguf_get_bool(g, "t.bool", &flag, &err) == LLM_OK && flag == 1,
       "bool");
    ok(llm_gguf_get_str(g, "t.str", &s, &len, &err) == LLM_OK && len == 12
       && memcmp(s, "hello, world", 12) == 0, "string");
    ok(llm_gguf_get_u32(g, "t.u64", &u32, &err) == LLM_ERR,
       "a large u64 does not fit a u32");
    ok(llm_gguf_find(g, "t.i64") != NULL
       && llm_gguf_find(g, "t.i64")->type == LLM_GGUF_INT64, "i64");
    ok(llm_gguf_get_f32(g, "t.f64", &f, &err) == LLM_OK && f == -2.25f,
       "f64 read as f32");

    ok(llm_gguf_get_arr(g, "t.arr.str", LLM_GGUF_STRING, &kv, &err)
       == LLM_OK && kv->arr_n == 3, "array of 3 strings");
    s = llm_gguf_arr_str(kv, 0, &len);
    ok(len == 1 && s[0] == 'a', "first string");
    s = llm_gguf_arr_str(kv, 1, &len);
    is_int(len, 0, "second string is empty");
    s = llm_gguf_arr_str(kv, 2, &len);
    ok(len == 8 && memcmp(s, "\xe2\x96\x81three", 8) == 0, "third string");
    s = llm_gguf_arr_str(kv, 3, &len);
    is_int(len, 0, "out of range reads as empty");

    ok(llm_gguf_get_arr(g, "t.arr.i32", LLM_GGUF_INT32, &kv, &err)
       == LLM_OK && kv->arr_n == 4 && llm_gguf_arr_int(kv, 1) == -20
       && llm_gguf_arr_int(kv, 3) == 40, "array of i32");
    ok(llm_gguf_get_arr(g, "t.arr.f32", LLM_GGUF_FLOAT32, &kv, &err)
       == LLM_OK && llm_gguf_arr_f32(kv, 1) == 1.5f, "array of f32");
    ok(llm_gguf_get_arr(g, "t.arr.empty", LLM_GGUF_NTYPES, &kv, &err)
       == LLM_OK && kv->arr_n == 0, "empty array");

    t = llm_gguf_tensor(g, "w.f32");
    fp = t != NULL ? t->data : NULL;
    ok(t != NULL && t->ne[0] == 4 && t->ne[1] == 2 && t->nbytes == 32
       && fp[7] == 7.0f, "f32 tensor and its data");
    ok(t != NULL && (uintptr_t) t->data % 64 == 0, "aligned to 64");

    t = llm_gguf_tensor(g, "w.f16");
    ok(t != NULL && t->n_dims == 1 && t->ne[0] == 32 && t->ne[1] == 1
       && t->nbytes == 64, "f16 tensor");

    t = llm_gguf_tensor(g, "w.q8");
    ok(t != NULL && t->type == LLM_TYPE_Q8_0 && t->nbytes == 2 * 34,
       "Q8_0 tensor: 2 blocks of 34 bytes");

    is_int(llm_ggml_row_size(LLM_TYPE_Q4_K, 512), 288, "Q4_K row size");
    is_int(llm_ggml_row_size(LLM_TYPE_Q6_K, 256), 210, "Q6_K row size");
    is_int(llm_ggml_row_size(LLM_TYPE_Q5_K, 256), 176, "Q5_K row size");
    is_int(llm_ggml_row_size(LLM_TYPE_Q4_0, 64), 36, "Q4_0 row size");
    is_int(llm_ggml_row_size(LLM_TYPE_BF16, 3), 6, "BF16 row size");
    is_int(llm_ggml_row_size(LLM_TYPE_Q8_0, 31), 0,
           "a partial block has no row size");

    llm_gguf_close(g);
}


static void
test_bad_synthetic(void)
{
    buf_t     b, c;
    layout_t  l;

    build(&b, &l, 3);

#define CORRUPT(what, needle, edit)                                        \
    do {                                                                   \
        c.p = malloc(b.n);                                                 \
        c.n = b.n;                                                         \
        memcpy(c.p, b.p, b.n);                                             \
        edit;                                                              \
        expect_fail(what, c.p, c.n, needle);                               \
        free(c.p);                                                         \
    } while (0)

    CORRUPT("bad magic", "magic", c.p[0] = 'X');
    CORRUPT("version 1", "version", set_u32(&c, l.version, 1));
    CORRUPT("version 4", "version", set_u32(&c, l.version, 4));
    CORRUPT("huge tensor count", "tensor count",
            set_u64(&c, l.n_tensors, 1ULL << 62));
    CORRUPT("huge key count", "metadata count",
            set_u64(&c, l.n_kv, UINT64_MAX));
    CORRUPT("one key too many", NULL, set_u64(&c, l.n_kv, 18));
    CORRUPT("huge key length", "length",
            set_u64(&c, l.first_key_len, 1ULL << 63));
    CORRUPT("unknown value type", "value type",
            set_u32(&c, l.value_type, 99));
    CORRUPT("unknown value type of a key with a newline", "t?u8",
            c.p[l.first_key_len + 8 + 1] = '\n';
            set_u32(&c, l.value_type, 99));
    CORRUPT("huge string array", "array length",
            set_u64(&c, l.str_arr_len, 1ULL << 61));
    CORRUPT("string array one too long", NULL,
            set_u64(&c, l.str_arr_len, 4));
    CORRUPT("huge i32 array (size overflows)", "array length",
            set_u64(&c, l.i32_arr_len, (1ULL << 62) + 1));
    CORRUPT("array of arrays", "array",
            set_u32(&c, l.str_arr_len - 4, LLM_GGUF_ARRAY));
    CORRUPT("alignment 3", "alignment", set_u32(&c, l.align_value, 3));
    CORRUPT("alignment 0", "alignment", set_u32(&c, l.align_value, 0));
    CORRUPT("duplicate key", "duplicate", c.p[l.dup_key + 2] = 'u');
    CORRUPT("duplicate tensor name", "duplicate",
            memcpy(c.p + l.t_name[1] + 8, "w.f32", 5));
    CORRUPT("5 dimensions", "dimensions", set_u32(&c, l.t_ndims[0], 5));
    CORRUPT("dims overflow", "overflow",
            set_u64(&c, l.t_dims[0], 1ULL << 32);
            set_u64(&c, l.t_dims[0] + 8, 1ULL << 32));
    CORRUPT("dim beyond int64", "overflow",
            set_u64(&c, l.t_dims[1], 1ULL << 63));
    CORRUPT("size overflow", NULL,
            set_u64(&c, l.t_dims[0], 1ULL << 61);
            set_u64(&c, l.t_dims[0] + 8, 4));
    CORRUPT("unknown tensor type 99", "unknown type 99",
            set_u32(&c, l.t_type[0], 99));
    CORRUPT("unsizable tensor type IQ2_XXS", "IQ2_XXS",
            set_u32(&c, l.t_type[0], 16));
    CORRUPT("Q8_0 with a partial block", "block size",
            set_u64(&c, l.t_dims[2], 48));
    CORRUPT("offset past the end", "past the end",
            set_u64(&c, l.t_offset[2], 1ULL << 40));
    CORRUPT("offset wraps around", "past the end",
            set_u64(&c, l.t_offset[2], UINT64_MAX - 63));
    CORRUPT("data one block past the end", "past the end",
            set_u64(&c, l.t_offset[2], 192));
    CORRUPT("misaligned offset", "alignment",
            set_u64(&c, l.t_offset[1], 96));
    CORRUPT("overlapping tensors", "overlap",
            set_u64(&c, l.t_offset[1], 0));
    CORRUPT("tensor grows into the next", "overlap",
            set_u64(&c, l.t_dims[0] + 8, 5));
    CORRUPT("empty tensor name", "name",
            set_u64(&c, l.t_name[0], 0));

#undef CORRUPT

    /* every proper prefix is refused: the last tensor ends the file */

    {
        int  bad = 0;

        for (size_t n = 0; n < b.n; n++) {
            llm_err_t    err = { 0 };
            llm_gguf_t  *g;

            write_file("prefix.gguf", b.p, n);

            if (llm_gguf_open(&g, path, &err) == LLM_OK) {
                diag("a prefix of %zu bytes opened", n);
                llm_gguf_close(g);
                bad++;

            } else if (strstr(err.errstr, "prefix.gguf") == NULL
                       || strchr(err.errstr, '\n') != NULL)
            {
                diag("prefix %zu: '%s'", n, err.errstr);
                bad++;
            }
        }

        is_int(bad, 0, "all %zu truncations refused with a one-line error",
               b.n);
    }

    free(b.p);
}


static void
test_bad_stories(void)
{
    size_t          n, tok, q;
    uint64_t        off;
    unsigned char  *p, *c;

    p = read_all("models/stories260K.gguf", &n);
    if (!ok(p != NULL && n > 16384, "stories260K read")) {
        free(p);
        return;
    }

    c = malloc(n);

#define CORRUPT(what, needle, edit)                                        \
    do {                                                                   \
        memcpy(c, p, n);                                                   \
        edit;                                                              \
        expect_fail(what, c, n, needle);                                   \
    } while (0)

    expect_fail("stories: truncated in the header", p, 20, "truncated");
    expect_fail("stories: truncated in the metadata", p, 1000,
                "does not fit");
    expect_fail("stories: truncated in the vocabulary", p, 5000,
                "truncated");
    expect_fail("stories: truncated in the tensor infos", p, 8000, NULL);
    expect_fail("stories: truncated in the data", p, n - 1, "past the end");
    expect_fail("stories: empty", p, 0, "truncated");

    CORRUPT("stories: bad magic", "magic", poke(c, n, 0, "GGUG", 4));
    CORRUPT("stories: bad version", "version", fill(c, n, 4, 9, 1));
    CORRUPT("stories: huge tensor count", "tensor count",
            fill(c, n, 8, 0x7f, 8));
    CORRUPT("stories: huge string length", "length",
            fill(c, n, 24, 0xff, 8));

    tok = find(p, n, "tokenizer.ggml.tokens");
    CORRUPT("stories: huge array length", "array length",
            fill(c, n, tok + 21 + 8, 0x3f, 8));

    /* blk.0.attn_q.weight: n_dims at +19, dims at +23, type at +39,
     * offset at +43 from its name */
    q = find(p, n, "blk.0.attn_q.weight");

    off = 1ULL << 40;
    CORRUPT("stories: tensor offset past the end", "past the end",
            poke(c, n, q + 43, &off, 8));
    CORRUPT("stories: tensor dims overflow", "overflow",
            fill(c, n, q + 23, 0x0f, 8); fill(c, n, q + 31, 0x0f, 8));
    CORRUPT("stories: unknown tensor type", "unknown type",
            fill(c, n, q + 39, 77, 1));
    CORRUPT("stories: overlapping tensors", "overlap",
            fill(c, n, q + 43, 0, 8));
    CORRUPT("stories: misaligned tensor offset", "alignment",
            fill(c, n, q + 43, p[q + 43] + 4, 1));

#undef CORRUPT

    free(c);
    free(p);
}


/* files the reader accepts but the llama loader must refuse */
static void
test_bad_models(void)
{
    size_t          n, q, k;
    uint32_t        v, nd;
    unsigned char  *p, *c;

    p = read_all("models/stories260K.gguf", &n);
    if (p == NULL || n <= 16384) {
        free(p);
        return;
    }

    c = malloc(n);
    q = find(p, n, "blk.0.attn_q.weight");

#define CORRUPT(what, code, needle, edit)                                  \
    do {                                                                   \
        memcpy(c, p, n);                                                   \
        edit;                                                              \
        expect_model_fail(what, c, n, code, needle);                       \
    } while (0)

    v = 32;
    CORRUPT("model: wrong shape", LLM_EFORMAT, "shape",
            poke(c, n, q + 23, &v, 4));
    v = LLM_TYPE_Q4_1;
    CORRUPT("model: unsupported weight type", LLM_EUNSUPPORTED, "Q4_1",
            poke(c, n, q + 39, &v, 4));
    v = LLM_TYPE_F16;
    k = find(p, n, "blk.0.attn_norm.weight");
    memcpy(&nd, p + k + 22, 4);
    CORRUPT("model: f16 norm", LLM_EUNSUPPORTED, "want F32",
            poke(c, n, k + 22 + 4 + 8 * nd, &v, 4));
    k = find(p, n, "blk.1.ffn_up.weight");
    CORRUPT("model: missing tensor", LLM_EFORMAT, "blk.1.ffn_up.weight",
            fill(c, n, k + 12, 'q', 1));
    k = find(p, n, "llama.block_count");
    v = 6;
    CORRUPT("model: more layers than tensors", LLM_EFORMAT, "blk.5",
            poke(c, n, k + 17 + 4, &v, 4));
    v = 0;
    CORRUPT("model: zero layers", LLM_EFORMAT, "block_count",
            poke(c, n, k + 17 + 4, &v, 4));
    k = find(p, n, "llama.attention.head_count");
    v = 7;
    CORRUPT("model: width not a multiple of heads", LLM_EFORMAT,
            "head_count", poke(c, n, k + 26 + 4, &v, 4));
    k = find(p, n, "general.architecture");
    CORRUPT("model: another architecture", LLM_EUNSUPPORTED, "llamb",
            fill(c, n, k + 20 + 4 + 8 + 4, 'b', 1));
    k = find(p, n, "tokenizer.ggml.tokens");
    CORRUPT("model: no tokenizer", LLM_EFORMAT, "tokenizer",
            fill(c, n, k + 10, 'X', 1));

#undef CORRUPT

    free(c);
    free(p);
}


/* random damage to the synthetic file and to stories260K's header
 * region: refused or accepted, never a crash */
static void
test_fuzz(void)
{
    int             opened, refused, ran, n_ids;
    size_t          n;
    buf_t           b;
    layout_t        l;
    uint64_t        x;
    unsigned char  *p, *c;

    build(&b, &l, 3);
    c = malloc(b.n);
    x = 0x9e3779b97f4a7c15ULL;
    opened = 0;
    refused = 0;

    for (int i = 0; i < 3000; i++) {
        llm_err_t    err = { 0 };
        llm_gguf_t  *g;

        memcpy(c, b.p, b.n);

        for (int j = 0; j < 1 + i % 4; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c[x % b.n] = (unsigned char) (x >> 32);
        }

        write_file("fuzz.gguf", c, b.n);

        if (llm_gguf_open(&g, path, &err) == LLM_OK) {
            opened++;
            llm_gguf_close(g);

        } else {
            refused += err.errstr[0] != '\0';
        }
    }

    ok(opened + refused == 3000, "3000 damaged files: %d opened, %d "
       "refused with a message, no crash", opened, refused);

    free(c);
    free(b.p);

    p = read_all("models/stories260K.gguf", &n);
    if (p == NULL || n <= 16384) {
        free(p);
        return;
    }

    c = malloc(n);
    opened = 0;
    refused = 0;
    ran = 0;

    for (int i = 0; i < 300; i++) {
        llm_err_t     err = { 0 };
        llm_model_t  *m;

        memcpy(c, p, n);

        for (int j = 0; j < 1 + i % 3; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* the metadata and tensor infos end before byte 12000 */
            c[x % 12000] = (unsigned char) (x >> 32);
        }

        write_file("fuzz.gguf", c, n);

        if (llm_model_load(&m, path, &err) == LLM_OK) {
            int32_t    ids[64];
            float     *logits;
            llm_kv_t  *kv;

            /* what loads must also run */
            opened++;
            n_ids = llm_tokenize(llm_model_tokenizer(m), "Once upon a time",
                                 16, 1, ids, 64, &err);
            kv = llm_kv_new(m, 64, &err);
            logits = malloc((size_t) llm_model_config(m)->n_vocab
                            * sizeof(float));

            if (kv != NULL && n_ids > 0 && n_ids <= 64) {
                for (int j = 0; j < n_ids; j++) {
                    ids[j] = ids[j] < llm_model_config(m)->n_vocab
                             ? ids[j] : 0;
                }

                ran += llm_model_forward(m, kv, ids, n_ids, 0, logits, 0,
                                         &err) == LLM_OK;
            }

            free(logits);
            llm_kv_free(kv);
            llm_model_free(m);

        } else {
            refused += err.errstr[0] != '\0';
        }
    }

    ok(opened + refused == 300, "300 damaged models: %d loaded, %d "
       "refused with a message, no crash", opened, refused);
    ok(ran > 0, "%d of the loaded ones ran a prompt", ran);

    free(c);
    free(p);
}


static void
expect_fail(const char *what, const void *p, size_t n, const char *needle)
{
    int          rc;
    llm_err_t    err = { 0 };
    llm_gguf_t  *g;

    write_file("bad.gguf", p, n);
    rc = llm_gguf_open(&g, path, &err);

    if (rc == LLM_OK) {
        llm_gguf_close(g);
    }

    if (!ok(rc == LLM_ERR && err.err != 0
            && strstr(err.errstr, "bad.gguf") != NULL
            && strchr(err.errstr, '\n') == NULL
            && (needle == NULL || strstr(err.errstr, needle) != NULL),
            "%s: refused", what))
    {
        diag("rc %d, error '%s', want '%s'", rc, err.errstr,
             needle != NULL ? needle : "");

    } else {
        diag("  %s", strstr(err.errstr, ".gguf: ") + 7);
    }
}


static void
expect_model_fail(const char *what, const void *p, size_t n, int code,
    const char *needle)
{
    int           rc;
    llm_err_t     err = { 0 };
    llm_model_t  *m;

    write_file("model.gguf", p, n);
    rc = llm_model_load(&m, path, &err);

    if (rc == LLM_OK) {
        llm_model_free(m);
    }

    if (!ok(rc == LLM_ERR && err.err == code
            && strstr(err.errstr, "model.gguf") != NULL
            && strstr(err.errstr, needle) != NULL,
            "%s: refused", what))
    {
        diag("rc %d, code %d, error '%s', want '%s'", rc, err.err,
             err.errstr, needle);

    } else {
        diag("  %s", strstr(err.errstr, ".gguf: ") + 7);
    }
}


static void
set_u32(buf_t *b, size_t off, uint32_t v)
{
    memcpy(b->p + off, &v, 4);
}


static void
set_u64(buf_t *b, size_t off, uint64_t v)
{
    memcpy(b->p + off, &v, 8);
}


static int
write_file(const char *name, const void *p, size_t n)
{
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);

    f = fopen(path, "wb");
    if (f == NULL) {
        return -1;
    }

    if (n > 0 && fwrite(p, 1, n, f) != n) {
        fclose(f);
        return -1;
    }

    return fclose(f);
}


static unsigned char *
read_all(const char *file, size_t *n)
{
    FILE           *f;
    long            len;
    unsigned char  *p;

    f = fopen(file, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);

    p = malloc((size_t) len);
    if (p != NULL && fread(p, 1, (size_t) len, f) != (size_t) len) {
        free(p);
        p = NULL;
    }

    fclose(f);
    *n = (size_t) len;
    return p;
}


/* edits of a copy of a file, within its bounds */
static void
poke(unsigned char *c, size_t n, size_t off, const void *src, size_t len)
{
    if (off <= n && len <= n - off) {
        memcpy(c + off, src, len);
    }
}


static void
fill(unsigned char *c, size_t n, size_t off, int v, size_t len)
{
    if (off <= n && len <= n - off) {
        memset(c + off, v, len);
    }
}


/* offset of the first occurrence of s in p; 0 if absent */
static size_t
find(const unsigned char *p, size_t n, const char *s)
{
    size_t  m = strlen(s);

    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(p + i, s, m) == 0) {
            return i;
        }
    }

    return 0;
}
