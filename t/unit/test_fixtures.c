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
    double *worst);
static int32_t *json_ids(json_t *a, int *n);
static int argmax(const float *x, int n);
static int argmax_d(json_t *row, int n);
static int near_tie(json_t *row, int n, int a, int b, double tol);
static void test_api(void);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    test_api();

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

    if (llm_model_load(&m, path, &err) != LLM_OK) {
        if (err.err == LLM_EUNSUPPORTED) {
            ok(1, "# SKIP %s: %s", mc->name, err.errstr);
            return;
        }

        ok(0, "%s loads", mc->name);
        diag("%s", err.errstr);
        return;
    }

    worst = 0.0;

    for (int p = 0; p < 3; p++) {
        test_prompt(mc, m, p, &worst);
    }

    diag("%s: worst relative L2 %.3g (tolerance %.0e)", mc->name, worst,
         mc->tol);

    llm_model_free(m);
}


static void
test_prompt(const model_case_t *mc, llm_model_t *m, int p, double *worst)
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
