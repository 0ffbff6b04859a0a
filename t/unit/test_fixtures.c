/*
 * Copyright (C) ngx_llm developers
 *
 * The forward pass against llama.cpp: for each model in the fixtures and
 * each of its reference prompts, the logits of prompt + greedy tokens
 * (all rows, one batch) within the tolerance of the weights' type, and
 * greedy generation, one token at a time, giving the same tokens.
 *
 * Near ties: llama.cpp rounds activations to the weights' precision, so
 * a difference in the last bit of a sum (summation order) can flip one
 * bf16 rounding, and from there the two runs differ by the type's
 * noise, within the tolerance.  Where the reference's two best logits
 * are closer than that noise (the tolerance spread over the row,
 * tol * |ref| / sqrt(n_vocab)), either token is a correct argmax: such
 * rows count as matching, and greedy comparison stops there.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "tap.h"
#include "llm_model.h"
#include "llm_sampler.h"
#include "llm_tokenizer.h"


typedef struct {
    const char  *name;
    double       tol;          /* relative L2 per row */
    double       argmax;       /* share of rows whose argmax must match */
    int          greedy;       /* check the greedy tokens too */
} model_case_t;


static const model_case_t  cases[] = {
    { "stories260K",          1e-3, 1.0, 1 },
    { "tiny-llama3-f32",      1e-3, 1.0, 1 },
    { "tiny-llama-mha-f32",   1e-3, 1.0, 1 },
    { "tiny-llama3-f16",      3e-3, 1.0, 1 },
    { "tiny-llama3-bf16",     1e-2, 1.0, 1 },
    { "tiny-llama3-q8_0",     5e-2, 0.9, 0 },
    { "tiny-llama3-q4_0",     5e-2, 0.9, 0 },
    { "tiny-llama3-q4_k_m",   5e-2, 0.9, 0 },
    { "tiny-llama3-q5_k_m",   5e-2, 0.9, 0 },
    { "tiny-llama3-q6_k",     5e-2, 0.9, 0 },
    { "tiny-qwen2-f32",       1e-3, 1.0, 1 },
    { "tiny-qwen2-q8_0",      5e-2, 0.9, 0 },
    { "tiny-qwen3-f32",       1e-3, 1.0, 1 },
    { "tiny-qwen3-q4_k_m",    5e-2, 0.9, 0 },
};


static const char *fixtures(void);
static void test_model(const model_case_t *mc);
static void test_prompt(const model_case_t *mc, llm_model_t *m, int p,
    double *worst, int *rows, int *exact);
static int32_t *json_ids(json_t *a, int *n);
static int argmax(const float *x, int n);
static int argmax_d(json_t *row, int n);
static int near_tie(json_t *row, int n, int a, int b, double tol);
static void test_api(void);
static void test_arch(void);
static unsigned char *read_file(const char *path, size_t *len);
static int run_file(const unsigned char *p, size_t len, const int32_t *toks,
    int n, float *logits, llm_err_t *err);
static double rel_l2f(const float *a, const float *b, int n);
static size_t find_bytes(const unsigned char *p, size_t len, const char *s,
    size_t n, size_t from);
static uint64_t rd64(const unsigned char *p);
static uint32_t rd32(const unsigned char *p);
static size_t gguf_value_size(const unsigned char *p, uint32_t t);
static void gguf_layout(const unsigned char *p, size_t *kv_end,
    size_t *ti_end, size_t *data);
static unsigned char *gguf_add_kv(const unsigned char *p, size_t len,
    const char *key, uint32_t t, const void *v, size_t vlen,
    size_t *out_len);
static size_t tensor_data(const unsigned char *p, size_t len,
    const char *name, int *n);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    test_api();
    test_arch();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_model(&cases[i]);
    }

    return done_testing();
}


static const char *
fixtures(void)
{
    const char  *p = getenv("LLM_FIXTURES");

    return p != NULL && *p != '\0' ? p : "../shared/fixtures";
}


static void
test_model(const model_case_t *mc)
{
    int           rows, exact;
    char          path[1024];
    double        worst;
    llm_err_t     err = { 0 };
    llm_model_t  *m;
    struct stat   st;

    snprintf(path, sizeof(path), "%s/models/%s.gguf", fixtures(), mc->name);

    if (stat(path, &st) != 0) {
        ok(1, "# SKIP %s: not in the fixtures", mc->name);
        return;
    }

    /* every architecture and type in the fixtures is one the engine
     * must run: refusing one is a failure, not a skip */
    if (!ok(llm_model_load(&m, path, &err) == LLM_OK, "%s loads",
            mc->name))
    {
        diag("%s", err.errstr);
        return;
    }

    worst = 0.0;
    rows = 0;
    exact = 0;

    for (int p = 0; p < 3; p++) {
        test_prompt(mc, m, p, &worst, &rows, &exact);
    }

    diag("%s: worst relative L2 %.3g (tolerance %.0e), argmax equal on "
         "%d of %d rows (%.1f%%)", mc->name, worst, mc->tol, exact, rows,
         rows > 0 ? 100.0 * exact / rows : 0.0);

    llm_model_free(m);
}


static void
test_prompt(const model_case_t *mc, llm_model_t *m, int p, double *worst,
    int *n_rows, int *n_exact)
{
    int                     n_prompt, n_greedy, n, n_vocab, match, same,
                            exact, a, b;
    char                    path[1024];
    float                  *logits, *row;
    double                  d, r, rel, max_rel;
    json_t                 *root, *rows;
    int32_t                *prompt, *greedy, *all, id;
    llm_kv_t               *kv;
    llm_err_t               err = { 0 };
    json_error_t            jerr;
    const llm_config_t     *c;

    snprintf(path, sizeof(path), "%s/ref/%s.p%d.json", fixtures(),
             mc->name, p);

    root = json_load_file(path, 0, &jerr);
    if (!ok(root != NULL, "%s p%d: reference loads", mc->name, p)) {
        diag("%s: %s", path, jerr.text);
        return;
    }

    c = llm_model_config(m);
    prompt = json_ids(json_object_get(root, "prompt_tokens"), &n_prompt);
    greedy = json_ids(json_object_get(root, "greedy_tokens"), &n_greedy);
    rows = json_object_get(root, "logits");
    n_vocab = (int) json_integer_value(json_object_get(root, "n_vocab"));

    n = n_prompt + n_greedy - 1;

    if (!ok(prompt != NULL && greedy != NULL && n_greedy > 0
            && json_array_size(rows) == (size_t) n
            && n_vocab == c->n_vocab,
            "%s p%d: %d rows of %d logits", mc->name, p, n, n_vocab))
    {
        goto out;
    }

    all = malloc((size_t) n * sizeof(int32_t));
    logits = malloc((size_t) n * (size_t) n_vocab * sizeof(float));
    memcpy(all, prompt, (size_t) n_prompt * sizeof(int32_t));
    memcpy(all + n_prompt, greedy, (size_t) (n_greedy - 1) * sizeof(int32_t));

    /* every row at once */

    kv = llm_kv_new(m, n, &err);
    if (!ok(kv != NULL
            && llm_model_forward(m, kv, all, n, 0, logits, 1, &err)
               == LLM_OK,
            "%s p%d: forward of %d tokens", mc->name, p, n))
    {
        diag("%s", err.errstr);
        llm_kv_free(kv);
        free(all);
        free(logits);
        goto out;
    }

    llm_kv_free(kv);

    max_rel = 0.0;
    match = 0;
    exact = 0;

    for (int i = 0; i < n; i++) {
        json_t  *ref = json_array_get(rows, (size_t) i);

        row = logits + (size_t) i * (size_t) n_vocab;
        d = 0.0;
        r = 0.0;

        for (int j = 0; j < n_vocab; j++) {
            double  want = json_number_value(json_array_get(ref, (size_t) j));

            d += (row[j] - want) * (row[j] - want);
            r += want * want;
        }

        rel = sqrt(d) / sqrt(r);
        if (!(rel <= max_rel)) {
            max_rel = rel;
        }

        a = argmax(row, n_vocab);
        b = argmax_d(ref, n_vocab);
        exact += a == b;
        match += a == b || near_tie(ref, n_vocab, a, b, mc->tol);
    }

    if (max_rel > *worst) {
        *worst = max_rel;
    }

    *n_rows += n;
    *n_exact += exact;

    ok(max_rel <= mc->tol, "%s p%d: logits within %.0e (worst row %.3g)",
       mc->name, p, mc->tol, max_rel);
    /* near ties excuse rows only where every row must match; the
     * quantized types' share is of exact matches */
    if (mc->argmax < 1.0) {
        match = exact;
    }

    ok(match >= (int) ceil(mc->argmax * n),
       "%s p%d: argmax equal on %d of %d rows (%d more near ties)",
       mc->name, p, exact, n, match - exact);

    /* greedy generation, one token at a time after the prompt */

    if (mc->greedy) {
        kv = llm_kv_new(m, n + 1, &err);
        same = kv != NULL
               && llm_model_forward(m, kv, prompt, n_prompt, 0, logits, 0,
                                    &err) == LLM_OK;

        for (int i = 0; same && i < n_greedy; i++) {
            id = argmax(logits, n_vocab);

            if (id != greedy[i]) {
                json_t  *ref = json_array_get(rows,
                                              (size_t) (n_prompt - 1 + i));

                if (near_tie(ref, n_vocab, id, greedy[i], mc->tol)) {
                    diag("greedy token %d: %d and %d are a near tie, "
                         "compared up to here", i, id, greedy[i]);
                    break;
                }

                diag("greedy token %d: got %d, want %d", i, id, greedy[i]);
                same = 0;
                break;
            }

            if (llm_model_forward(m, kv, &id, 1, n_prompt + i, logits, 0,
                                  &err)
                != LLM_OK)
            {
                diag("%s", err.errstr);
                same = 0;
            }
        }

        ok(same, "%s p%d: %d greedy tokens equal llama.cpp's", mc->name, p,
           n_greedy);
        llm_kv_free(kv);
    }

    free(all);
    free(logits);

out:

    free(prompt);
    free(greedy);
    json_decref(root);
}


static int32_t *
json_ids(json_t *a, int *n)
{
    int32_t  *ids;

    *n = (int) json_array_size(a);
    if (*n == 0) {
        return NULL;
    }

    ids = malloc((size_t) *n * sizeof(int32_t));
    for (int i = 0; i < *n; i++) {
        ids[i] = (int32_t) json_integer_value(json_array_get(a, (size_t) i));
    }

    return ids;
}


static int
argmax(const float *x, int n)
{
    int  best = 0;

    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }

    return best;
}


static int
argmax_d(json_t *row, int n)
{
    int     best = 0;
    double  bv = json_number_value(json_array_get(row, 0));

    for (int i = 1; i < n; i++) {
        double  v = json_number_value(json_array_get(row, (size_t) i));

        if (v > bv) {
            bv = v;
            best = i;
        }
    }

    return best;
}


/* are a and b within the per-logit noise of the tolerance in row? */
static int
near_tie(json_t *row, int n, int a, int b, double tol)
{
    double  r, va, vb;

    r = 0.0;
    for (int i = 0; i < n; i++) {
        double  v = json_number_value(json_array_get(row, (size_t) i));

        r += v * v;
    }

    va = json_number_value(json_array_get(row, (size_t) a));
    vb = json_number_value(json_array_get(row, (size_t) b));

    return fabs(va - vb) <= tol * sqrt(r) / sqrt((double) n);
}


/* misuse of the forward pass is an error, not a crash */
static void
test_api(void)
{
    int32_t              toks[4] = { 1, 403, 407, 261 };
    float               *logits;
    llm_kv_t            *kv, *kv2;
    llm_err_t            err = { 0 };
    llm_model_t         *m, *m2;
    llm_sampler_t        s;
    const llm_config_t  *c;

    if (!ok(llm_model_load(&m, "models/stories260K.gguf", &err) == LLM_OK,
            "stories260K loads"))
    {
        diag("%s", err.errstr);
        return;
    }

    c = llm_model_config(m);
    is_int(c->n_layer, 5, "5 layers");
    is_int(c->n_embd, 64, "width 64");
    is_int(c->n_head, 8, "8 heads");
    is_int(c->n_head_kv, 4, "4 kv heads");
    is_int(c->head_dim, 8, "head size 8");
    is_int(c->n_ff, 172, "ffn 172");
    is_int(c->n_vocab, 512, "vocabulary 512");
    is_int(c->n_ctx, 2048, "context 2048");
    ok(strcmp(c->arch, "llama") == 0, "arch llama");
    ok(fabsf(c->rope_base - 10000.0f) < 1e-3f, "rope base defaults to 1e4");
    ok(fabsf(c->norm_eps - 1e-5f) < 1e-9f, "rms epsilon 1e-5");

    logits = malloc(4 * (size_t) c->n_vocab * sizeof(float));

    ok(llm_kv_new(m, 0, &err) == NULL && err.err == LLM_EINVAL,
       "a context of 0 is refused");
    ok(llm_kv_new(m, c->n_ctx + 1, &err) == NULL && err.err == LLM_EINVAL,
       "a context beyond the model's is refused");

    kv = llm_kv_new(m, 4, &err);
    is_int(llm_kv_capacity(kv), 4, "kv capacity 4");

    ok(llm_model_forward(m, kv, toks, 2, 1, logits, 0, &err) == LLM_ERR
       && err.err == LLM_EINVAL, "a gap before pos is refused: %s",
       err.errstr);
    ok(llm_model_forward(m, kv, toks, 5, 0, logits, 0, &err) == LLM_ERR,
       "more tokens than the cache holds are refused");

    toks[1] = 512;
    ok(llm_model_forward(m, kv, toks, 2, 0, logits, 0, &err) == LLM_ERR
       && strstr(err.errstr, "512") != NULL,
       "a token out of the vocabulary is refused: %s", err.errstr);
    toks[1] = -1;
    ok(llm_model_forward(m, kv, toks, 2, 0, logits, 0, &err) == LLM_ERR,
       "a negative token is refused");
    toks[1] = 403;

    ok(llm_model_forward(m, kv, toks, 4, 0, logits, 1, &err) == LLM_OK,
       "four tokens run");

    /* rerunning the last position gives the same row */
    {
        float  row[512];

        memcpy(row, logits + 3 * 512, sizeof(row));
        ok(llm_model_forward(m, kv, toks + 3, 1, 3, logits, 0, &err)
           == LLM_OK && memcmp(row, logits, sizeof(row)) == 0,
           "a position can be recomputed, with the same logits");
    }

    if (llm_model_load(&m2, "models/stories260K.gguf", &err) == LLM_OK) {
        kv2 = llm_kv_new(m2, 4, &err);
        ok(llm_model_forward(m, kv2, toks, 1, 0, logits, 0, &err)
           == LLM_ERR, "another model's cache is refused");
        llm_kv_free(kv2);
        llm_model_free(m2);
    }

    /* sampling the model: same seed, same tokens */
    if (llm_sampler_init(&s, c->n_vocab, 0.0f, 1.0f, 0, &err) == LLM_OK) {
        float  lp;

        ok(llm_model_forward(m, kv, toks, 4, 0, logits, 0, &err) == LLM_OK
           && llm_sample(&s, logits, &lp) == 378 && lp < 0.0f,
           "greedy after 'Once upon a' is ' time'");
        llm_sampler_free(&s);
    }

    llm_kv_free(kv);
    free(logits);
    llm_model_free(m);
}


/*
 * The architectures' differences, on copies of the fixture files with
 * metadata added or tensors renamed: what is refused names itself, and
 * linear rope scaling by 2 is exactly Llama 3's rope_freqs times 2 (both
 * divide every pair's angle by the same number).
 */
static void
test_arch(void)
{
    int                  n, rc;
    double               e;
    char                 path[1024];
    float               *a, *b, *f;
    size_t               len, len2, at;
    int32_t              toks[6] = { 1, 403, 407, 261, 378, 11 };
    llm_err_t            err = { 0 };
    llm_model_t         *m;
    unsigned char       *p, *p2;
    const llm_config_t  *c;

    snprintf(path, sizeof(path), "%s/models/tiny-qwen3-f32.gguf",
             fixtures());

    if (llm_model_load(&m, path, &err) == LLM_OK) {
        c = llm_model_config(m);
        ok(strcmp(c->arch, "qwen3") == 0 && c->head_dim == 64
           && c->n_embd == 256 && c->n_head == 8 && c->n_head_kv == 4,
           "qwen3: 8 heads of 64 on a width of 256, 4 kv heads");
        llm_model_free(m);
    }

    snprintf(path, sizeof(path), "%s/models/tiny-llama3-f32.gguf",
             fixtures());

    p = read_file(path, &len);
    if (!ok(p != NULL, "tiny-llama3-f32 read")) {
        return;
    }

    a = malloc(6 * 512 * sizeof(float));
    b = malloc(6 * 512 * sizeof(float));

    /* linear, factor 2 */
    p2 = gguf_add_kv(p, len, "llama.rope.scaling.type", 8, "linear", 6,
                     &len2);
    free(p);
    p = gguf_add_kv(p2, len2, "llama.rope.scaling.factor", 6, "\0\0\0@", 4,
                    &len);
    free(p2);

    ok(run_file(p, len, toks, 6, a, &err) == LLM_OK,
       "llama with linear rope scaling by 2 runs: %s", err.errstr);

    /* the original, its rope_freqs doubled */
    p2 = read_file(path, &len2);
    at = tensor_data(p2, len2, "rope_freqs.weight", &n);

    if (ok(at != 0 && n == 16, "rope_freqs.weight found (%d)", n)) {
        for (int i = 0; i < n; i++) {
            f = (float *) (p2 + at) + i;
            *f *= 2.0f;
        }
    }

    rc = run_file(p2, len2, toks, 6, b, &err);
    e = rel_l2f(a, b, 6 * 512);
    ok(rc == LLM_OK && memcmp(a, b, 512 * sizeof(float)) == 0 && e < 1e-6,
       "linear scaling by 2 = rope_freqs times 2 (relative L2 %.3g); the "
       "first row, at position 0, bit for bit", e);
    free(p2);

    /* unscaled is different beyond position 0 */
    p2 = read_file(path, &len2);
    rc = run_file(p2, len2, toks, 6, b, &err);
    e = rel_l2f(a + 512, b + 512, 5 * 512);
    ok(rc == LLM_OK && e > 1e-3, "and differs from unscaled (%.3g)", e);
    free(p);

    /* yarn is refused, by name */
    p = gguf_add_kv(p2, len2, "llama.rope.scaling.type", 8, "yarn", 4,
                    &len);
    ok(run_file(p, len, toks, 6, b, &err) == LLM_ERR
       && err.err == LLM_EUNSUPPORTED && strstr(err.errstr, "yarn") != NULL,
       "yarn rope scaling is refused: %s", err.errstr);
    free(p);

    /* so is another architecture: the value after the key, its type
     * and its length */
    at = find_bytes(p2, len2, "general.architecture", 20, 0);
    if (at != 0 && memcmp(p2 + at + 20 + 4 + 8, "llama", 5) == 0) {
        memcpy(p2 + at + 20 + 4 + 8, "gemma", 5);
    }
    ok(run_file(p2, len2, toks, 6, b, &err) == LLM_ERR
       && err.err == LLM_EUNSUPPORTED && strstr(err.errstr, "gemma") != NULL,
       "architecture gemma is refused by name: %s", err.errstr);
    free(p2);

    /* qwen3 without its per-head norm, qwen2 without a bias */
    snprintf(path, sizeof(path), "%s/models/tiny-qwen3-f32.gguf",
             fixtures());
    p = read_file(path, &len);
    if (p != NULL) {
        at = find_bytes(p, len, "blk.1.attn_k_norm", 17, 0);
        if (at != 0) {
            p[at + 4] = '7';
        }
        ok(run_file(p, len, toks, 6, b, &err) == LLM_ERR
           && strstr(err.errstr, "blk.1.attn_k_norm.weight") != NULL,
           "qwen3 without attn_k_norm is refused: %s", err.errstr);
        free(p);
    }

    snprintf(path, sizeof(path), "%s/models/tiny-qwen2-f32.gguf",
             fixtures());
    p = read_file(path, &len);
    if (p != NULL) {
        at = find_bytes(p, len, "blk.2.attn_v.bias", 17, 0);
        if (at != 0) {
            p[at + 4] = '7';
        }
        ok(run_file(p, len, toks, 6, b, &err) == LLM_ERR
           && strstr(err.errstr, "blk.2.attn_v.bias") != NULL,
           "qwen2 without attn_v.bias is refused: %s", err.errstr);
        free(p);
    }

    free(a);
    free(b);
}


static unsigned char *
read_file(const char *path, size_t *len)
{
    FILE           *fp;
    long            n;
    unsigned char  *p;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        return NULL;
    }

    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);

    p = malloc((size_t) n);
    if (p == NULL || fread(p, 1, (size_t) n, fp) != (size_t) n) {
        free(p);
        p = NULL;
    }

    fclose(fp);
    *len = (size_t) n;
    return p;
}


/* loads the bytes as a model and runs the tokens: every row's logits */
static int
run_file(const unsigned char *p, size_t len, const int32_t *toks, int n,
    float *logits, llm_err_t *err)
{
    int           rc;
    FILE         *fp;
    llm_kv_t     *kv;
    llm_model_t  *m;
    const char   *path = "arch.gguf";

    fp = fopen(path, "wb");
    if (fp == NULL || fwrite(p, 1, len, fp) != len) {
        if (fp != NULL) {
            fclose(fp);
        }
        return llm_err_set(err, LLM_EIO, "cannot write %s", path);
    }
    fclose(fp);

    rc = llm_model_load(&m, path, err);
    unlink(path);

    if (rc != LLM_OK) {
        return LLM_ERR;
    }

    kv = llm_kv_new(m, n, err);
    rc = kv != NULL
         ? llm_model_forward(m, kv, toks, n, 0, logits, 1, err) : LLM_ERR;

    llm_kv_free(kv);
    llm_model_free(m);

    return rc;
}


static double
rel_l2f(const float *a, const float *b, int n)
{
    double  d = 0.0, r = 0.0;

    for (int i = 0; i < n; i++) {
        d += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
        r += (double) b[i] * b[i];
    }

    return sqrt(d / r);
}


static size_t
find_bytes(const unsigned char *p, size_t len, const char *s, size_t n,
    size_t from)
{
    for (size_t i = from; i + n <= len; i++) {
        if (memcmp(p + i, s, n) == 0) {
            return i;
        }
    }

    return 0;
}


/* GGUF walking, for these well-formed fixture files only */

static uint64_t
rd64(const unsigned char *p)
{
    uint64_t  v;

    memcpy(&v, p, 8);
    return v;
}


static uint32_t
rd32(const unsigned char *p)
{
    uint32_t  v;

    memcpy(&v, p, 4);
    return v;
}


/* bytes of a value of type t at p */
static size_t
gguf_value_size(const unsigned char *p, uint32_t t)
{
    static const size_t  fixed[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0,
                                       8, 8, 8 };
    size_t               n, off;
    uint32_t             et;

    if (t == 8) {
        return 8 + rd64(p);
    }

    if (t == 9) {
        et = rd32(p);
        n = rd64(p + 4);
        off = 12;

        for (size_t i = 0; i < n; i++) {
            off += gguf_value_size(p + off, et);
        }

        return off;
    }

    return fixed[t];
}


/* offsets of the end of the metadata, of the end of the tensor infos,
 * and of the data section */
static void
gguf_layout(const unsigned char *p, size_t *kv_end, size_t *ti_end,
    size_t *data)
{
    size_t    off;
    uint64_t  n_t, n_kv;

    n_t = rd64(p + 8);
    n_kv = rd64(p + 16);
    off = 24;

    for (uint64_t i = 0; i < n_kv; i++) {
        off += 8 + rd64(p + off);
        off += 4 + gguf_value_size(p + off + 4, rd32(p + off));
    }

    *kv_end = off;

    for (uint64_t i = 0; i < n_t; i++) {
        off += 8 + rd64(p + off);
        off += 4 + 8 * rd32(p + off) + 4 + 8;
    }

    *ti_end = off;
    *data = (off + 31) / 32 * 32;
}


/* a copy with one more key (of type t, value bytes v) after the others;
 * the data section moves, tensor offsets are relative to it */
static unsigned char *
gguf_add_kv(const unsigned char *p, size_t len, const char *key,
    uint32_t t, const void *v, size_t vlen, size_t *out_len)
{
    size_t          kv_end, ti_end, data, off, klen, n;
    uint64_t        n_kv, l;
    unsigned char  *q;

    gguf_layout(p, &kv_end, &ti_end, &data);

    klen = strlen(key);
    n = len + 8 + klen + 4 + (t == 8 ? 8 : 0) + vlen + 32;
    q = calloc(1, n);

    memcpy(q, p, kv_end);
    n_kv = rd64(p + 16) + 1;
    memcpy(q + 16, &n_kv, 8);

    off = kv_end;
    l = klen;
    memcpy(q + off, &l, 8);
    memcpy(q + off + 8, key, klen);
    off += 8 + klen;
    memcpy(q + off, &t, 4);
    off += 4;

    if (t == 8) {
        l = vlen;
        memcpy(q + off, &l, 8);
        off += 8;
    }

    memcpy(q + off, v, vlen);
    off += vlen;

    memcpy(q + off, p + kv_end, ti_end - kv_end);
    off += ti_end - kv_end;
    off = (off + 31) / 32 * 32;

    memcpy(q + off, p + data, len - data);
    *out_len = off + len - data;

    return q;
}


/* where a tensor's data is in the file, and its element count */
static size_t
tensor_data(const unsigned char *p, size_t len, const char *name, int *n)
{
    size_t    kv_end, ti_end, data, off, nl;
    uint32_t  nd;
    uint64_t  n_t;

    (void) len;

    gguf_layout(p, &kv_end, &ti_end, &data);
    n_t = rd64(p + 8);
    off = kv_end;
    *n = 0;

    for (uint64_t i = 0; i < n_t; i++) {
        nl = rd64(p + off);
        nd = rd32(p + off + 8 + nl);

        if (nl == strlen(name) && memcmp(p + off + 8, name, nl) == 0) {
            *n = (int) rd64(p + off + 8 + nl + 4);
            return data + rd64(p + off + 8 + nl + 4 + 8 * nd + 4);
        }

        off += 8 + nl + 4 + 8 * nd + 4 + 8;
    }

    return 0;
}
