/*
 * Copyright (C) ngx_llm developers
 *
 * Tensor parallelism on the CPU (--tp N): a model cut into shards must
 * give the logits of the whole model.  For each fixture model whose KV
 * heads divide: the logits of prompt + greedy tokens (every row, one
 * batch, then one token at a time) with 2 (and 4) shards against one
 * shard, to a tight tolerance for f32 weights (only the order of the
 * shards' sum differs), and against llama.cpp's reference within the
 * fixture's tolerance for every type.  Then the paged path: two
 * sequences in one batch on a sharded pool, a block read from a
 * sharded pool equal to the same block of an unsharded one (the layout
 * blocks have in Redis), written back into a sharded pool and computed
 * on; and the splits that cannot be made are refused.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "tap.h"
#include "llm_model.h"


typedef struct {
    const char  *name;
    int          max_tp;       /* shards the KV heads allow, at most 4 */
    double       tight;        /* rel. L2 per row, N shards vs one;
                                * 0: only against the reference */
    double       tol;          /* rel. L2 per row vs llama.cpp */
    double       argmax;       /* share of rows whose argmax matches it */
} tp_case_t;


/*
 * Quantized files cut the attention output's columns inside a K-quant
 * block (4 heads of 32 are 128 of 256 columns): that slice is computed
 * from its decoded weights in F32, so those models are held to the
 * fixture tolerance only.
 */
static const tp_case_t  cases[] = {
    { "stories260K",          4, 1e-5, 1e-3, 1.0 },
    { "tiny-llama3-f32",      2, 1e-5, 1e-3, 1.0 },
    { "tiny-llama-mha-f32",   4, 1e-5, 1e-3, 1.0 },
    { "tiny-qwen2-f32",       2, 1e-5, 1e-3, 1.0 },
    { "tiny-qwen3-f32",       4, 1e-5, 1e-3, 1.0 },
    { "tiny-llama3-f16",      2, 0,    3e-3, 1.0 },
    { "tiny-llama3-q8_0",     2, 0,    5e-2, 0.9 },
    { "tiny-llama3-q4_0",     2, 0,    5e-2, 0.9 },
    { "tiny-llama3-q4_k_m",   2, 0,    5e-2, 0.9 },
    { "tiny-qwen2-q8_0",      2, 0,    5e-2, 0.9 },
    { "tiny-qwen3-q4_k_m",    2, 0,    5e-2, 0.9 },
};


typedef struct {
    int32_t     *tokens;       /* prompt + greedy tokens but the last */
    int          n;
    int          n_vocab;
    float       *ref;          /* (n, n_vocab) llama.cpp's logits */
} ref_t;


static const char *fixtures(void);
static int load_ref(const char *name, int p, ref_t *r);
static void free_ref(ref_t *r);
static void test_model(const tp_case_t *tc);
static float *run_all(llm_model_t *m, const ref_t *r, int one_by_one);
static void compare(const char *what, const float *a, const float *b,
    int n, int n_vocab, double tol, double argmax);
static void test_pool(const tp_case_t *tc, llm_model_t *m1,
    llm_model_t *mn, const ref_t *r, int tp);
static void test_refused(void);
static llm_model_t *load(const char *name, int tp, llm_err_t *err);
static double rel_l2(const float *a, const float *b, int n);
static int argmax(const float *x, int n);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_model(&cases[i]);
    }

    test_refused();

    return done_testing();
}


static const char *
fixtures(void)
{
    const char  *p = getenv("LLM_FIXTURES");

    return p != NULL && *p != '\0' ? p : "../shared/fixtures";
}


static llm_model_t *
load(const char *name, int tp, llm_err_t *err)
{
    char               path[1024];
    llm_model_t       *m;
    llm_model_opts_t   o;

    snprintf(path, sizeof(path), "%s/models/%s.gguf", fixtures(), name);

    memset(&o, 0, sizeof(o));
    o.backend = "cpu";
    o.tp = tp;

    if (llm_model_load_opts(&m, path, &o, err) != LLM_OK) {
        return NULL;
    }

    return m;
}


static void
test_model(const tp_case_t *tc)
{
    int           p;
    char          path[1024], what[128];
    float        *l1, *ln, *ln1;
    ref_t         r;
    llm_err_t     err = { 0 };
    llm_model_t  *m1, *mn;
    struct stat   st;

    snprintf(path, sizeof(path), "%s/models/%s.gguf", fixtures(),
             tc->name);

    if (stat(path, &st) != 0) {
        ok(1, "# SKIP %s: not in the fixtures", tc->name);
        return;
    }

    m1 = load(tc->name, 1, &err);
    if (!ok(m1 != NULL, "%s loads whole", tc->name)) {
        diag("%s", err.errstr);
        return;
    }

    /* prompt 2 is the long one (~100 tokens): several KV blocks */
    p = 2;

    if (!ok(load_ref(tc->name, p, &r) == 0, "%s p%d: reference loads",
            tc->name, p))
    {
        llm_model_free(m1);
        return;
    }

    l1 = run_all(m1, &r, 0);

    for (int tp = 2; tp <= tc->max_tp; tp *= 2) {
        mn = load(tc->name, tp, &err);
        if (!ok(mn != NULL && llm_model_tp(mn) == tp,
                "%s loads in %d shards", tc->name, tp))
        {
            diag("%s", err.errstr);
            continue;
        }

        ln = run_all(mn, &r, 0);
        ln1 = run_all(mn, &r, 1);

        if (l1 != NULL && ln != NULL && ln1 != NULL) {
            if (tc->tight > 0) {
                snprintf(what, sizeof(what), "%s --tp %d vs --tp 1",
                         tc->name, tp);
                compare(what, ln, l1, r.n, r.n_vocab, tc->tight, 1.0);

                snprintf(what, sizeof(what),
                         "%s --tp %d one token at a time vs --tp 1",
                         tc->name, tp);
                compare(what, ln1, l1, r.n, r.n_vocab, tc->tight, 1.0);
            }

            snprintf(what, sizeof(what), "%s --tp %d vs llama.cpp",
                     tc->name, tp);
            compare(what, ln, r.ref, r.n, r.n_vocab, tc->tol, tc->argmax);

            snprintf(what, sizeof(what),
                     "%s --tp %d one token at a time vs llama.cpp",
                     tc->name, tp);
            compare(what, ln1, r.ref, r.n, r.n_vocab, tc->tol, tc->argmax);

        } else {
            ok(0, "%s --tp %d: forward passes ran", tc->name, tp);
        }

        test_pool(tc, m1, mn, &r, tp);

        free(ln);
        free(ln1);
        llm_model_free(mn);
    }

    free(l1);
    free_ref(&r);
    llm_model_free(m1);
}


/* every row's logits, in one call or a token at a time */
static float *
run_all(llm_model_t *m, const ref_t *r, int one_by_one)
{
    float      *logits;
    llm_kv_t   *kv;
    llm_err_t   err = { 0 };

    logits = malloc((size_t) r->n * (size_t) r->n_vocab * sizeof(float));
    kv = llm_kv_new(m, r->n, &err);

    if (logits == NULL || kv == NULL) {
        diag("%s", kv == NULL ? err.errstr : "out of memory");
        free(logits);
        llm_kv_free(kv);
        return NULL;
    }

    if (!one_by_one) {
        if (llm_model_forward(m, kv, r->tokens, r->n, 0, logits, 1, &err)
            != LLM_OK)
        {
            diag("%s", err.errstr);
            free(logits);
            logits = NULL;
        }

        llm_kv_free(kv);
        return logits;
    }

    for (int i = 0; i < r->n; i++) {
        if (llm_model_forward(m, kv, r->tokens + i, 1, i,
                              logits + (size_t) i * r->n_vocab, 0, &err)
            != LLM_OK)
        {
            diag("%s", err.errstr);
            free(logits);
            logits = NULL;
            break;
        }
    }

    llm_kv_free(kv);
    return logits;
}


static void
compare(const char *what, const float *a, const float *b, int n,
    int n_vocab, double tol, double share)
{
    int     same;
    double  rel, worst;

    worst = 0.0;
    same = 0;

    for (int i = 0; i < n; i++) {
        rel = rel_l2(a + (size_t) i * n_vocab, b + (size_t) i * n_vocab,
                     n_vocab);
        worst = rel > worst || isnan(rel) ? rel : worst;
        same += argmax(a + (size_t) i * n_vocab, n_vocab)
                == argmax(b + (size_t) i * n_vocab, n_vocab);
    }

    ok(worst <= tol && same >= share * n,
       "%s: %d rows within %.0e (worst %.3g), argmax equal on %d", what, n,
       tol, worst, same);
}


/*
 * The serving path on a sharded pool: two sequences of the reference
 * tokens in one batch, in interleaved blocks of 16, then one more token
 * each; a block of the sharded pool read out equals the same block
 * computed whole, and a block written into a sharded pool serves as
 * prefix for what comes after.
 */
static void
test_pool(const tp_case_t *tc, llm_model_t *m1, llm_model_t *mn,
    const ref_t *r, int tp)
{
    int               bs, n, nb, half;
    char              what[160];
    float            *out[2], *whole;
    void             *b1, *bn;
    size_t            bytes;
    int32_t           blocks[2][64];
    double            tol;
    llm_err_t         err = { 0 };
    llm_kv_pool_t    *p1, *pn, *pc;
    llm_batch_seq_t   seqs[2];

    bs = 16;
    n = r->n < 64 ? r->n : 64;
    nb = (n + bs - 1) / bs;
    half = n / 2;
    tol = tc->tight > 0 ? tc->tight : tc->tol;

    p1 = llm_kv_pool_new(m1, 2 * nb, bs, &err);
    pn = llm_kv_pool_new(mn, 2 * nb, bs, &err);
    pc = llm_kv_pool_new(mn, 2 * nb, bs, &err);
    bytes = llm_kv_block_bytes(mn, bs);
    b1 = malloc(bytes);
    bn = malloc(bytes);
    out[0] = malloc(2 * (size_t) r->n_vocab * sizeof(float));
    whole = malloc(2 * (size_t) r->n_vocab * sizeof(float));

    if (!ok(p1 != NULL && pn != NULL && pc != NULL && b1 != NULL
            && bn != NULL && out[0] != NULL && whole != NULL
            && bytes == llm_kv_block_bytes(m1, bs),
            "%s --tp %d: pools of %d blocks of %d", tc->name, tp, 2 * nb,
            bs))
    {
        diag("%s", err.errstr);
        goto done;
    }

    out[1] = out[0] + r->n_vocab;

    for (int j = 0; j < nb; j++) {
        blocks[0][j] = 2 * j;
        blocks[1][j] = 2 * j + 1;
    }

    /* sequence 0: the first half; sequence 1: all n tokens */
    for (int s = 0; s < 2; s++) {
        seqs[s].tokens = r->tokens;
        seqs[s].n_tokens = s == 0 ? half : n;
        seqs[s].pos = 0;
        seqs[s].blocks = blocks[s];
        seqs[s].n_blocks = nb;
        seqs[s].logits = out[s];
    }

    if (!ok(llm_model_forward_batch(mn, pn, seqs, 2, &err) == LLM_OK
            && llm_model_forward_batch(m1, p1, seqs, 2, &err) == LLM_OK,
            "%s --tp %d: a batch of two sequences runs", tc->name, tp))
    {
        diag("%s", err.errstr);
        goto done;
    }

    if (tc->tight > 0) {
        /* p1's logits went to out too: run again into whole */
        seqs[0].logits = whole;
        seqs[1].logits = whole + r->n_vocab;
        seqs[0].n_tokens = 1;
        seqs[0].pos = half;
        seqs[0].tokens = r->tokens + half;
        seqs[1].n_tokens = 1;
        seqs[1].pos = n - 1;
        seqs[1].tokens = r->tokens + n - 1;

        /* position n - 1 again: its keys are rewritten with the same */
        (void) llm_model_forward_batch(m1, p1, seqs, 2, &err);

        seqs[0].logits = out[0];
        seqs[1].logits = out[1];

        if (!ok(llm_model_forward_batch(mn, pn, seqs, 2, &err) == LLM_OK,
                "%s --tp %d: one more token each", tc->name, tp))
        {
            diag("%s", err.errstr);
            goto done;
        }

        snprintf(what, sizeof(what), "%s --tp %d: batched decode on a "
                 "sharded pool vs whole", tc->name, tp);
        compare(what, out[0], whole, 2, r->n_vocab, tol, 1.0);
    }

    /* the same block from each pool, in one layout */
    if (!ok(llm_kv_block_read(pn, blocks[1][1], bn, bytes) == LLM_OK
            && llm_kv_block_read(p1, blocks[1][1], b1, bytes) == LLM_OK,
            "%s --tp %d: blocks read out", tc->name, tp))
    {
        goto done;
    }

    ok(rel_l2(bn, b1, (int) (bytes / sizeof(float))) <= tol,
       "%s --tp %d: a block of the sharded pool is the whole one's "
       "(rel. L2 %.3g)", tc->name, tp,
       rel_l2(bn, b1, (int) (bytes / sizeof(float))));

    /* the whole pool's blocks of sequence 1 into a fresh sharded pool,
     * then the rest of its tokens on top: as computed there */
    for (int j = 0; j < 2; j++) {
        if (llm_kv_block_read(p1, blocks[1][j], b1, bytes) != LLM_OK
            || llm_kv_block_write(pc, blocks[1][j], b1, bytes) != LLM_OK)
        {
            ok(0, "%s --tp %d: blocks copied", tc->name, tp);
            goto done;
        }
    }

    seqs[0] = seqs[1];
    seqs[0].tokens = r->tokens + 2 * bs;
    seqs[0].pos = 2 * bs;
    seqs[0].n_tokens = n - 2 * bs;
    seqs[0].logits = whole;

    if (n > 2 * bs
        && ok(llm_model_forward_batch(mn, pc, seqs, 1, &err) == LLM_OK,
              "%s --tp %d: %d tokens on 2 copied blocks", tc->name, tp,
              n - 2 * bs))
    {
        snprintf(what, sizeof(what), "%s --tp %d: on copied blocks vs "
                 "computed there", tc->name, tp);
        compare(what, whole, out[1], 1, r->n_vocab, tol, 1.0);
    }

done:

    free(whole);
    free(out[0]);
    free(bn);
    free(b1);
    llm_kv_pool_free(pc);
    llm_kv_pool_free(pn);
    llm_kv_pool_free(p1);
}


static void
test_refused(void)
{
    llm_err_t     err = { 0 };
    llm_model_t  *m;

    /* 2 KV heads do not go into 4 shards, nor 4 into 3 */
    m = load("tiny-llama3-f32", 4, &err);
    ok(m == NULL && strstr(err.errstr, "KV heads") != NULL,
       "--tp 4 over 2 KV heads is refused: %s", err.errstr);
    llm_model_free(m);

    memset(&err, 0, sizeof(err));
    m = load("tiny-qwen3-f32", 3, &err);
    ok(m == NULL && strstr(err.errstr, "KV heads") != NULL,
       "--tp 3 over 4 KV heads is refused: %s", err.errstr);
    llm_model_free(m);

    memset(&err, 0, sizeof(err));
    m = load("tiny-llama3-f32", LLM_TP_MAX + 1, &err);
    ok(m == NULL, "--tp %d is refused: %s", LLM_TP_MAX + 1, err.errstr);
    llm_model_free(m);
}


static int
load_ref(const char *name, int p, ref_t *r)
{
    int            n_prompt, n_greedy, k;
    char           path[1024];
    json_t        *root, *prompt, *greedy, *rows, *row;
    json_error_t   jerr;

    memset(r, 0, sizeof(ref_t));
    snprintf(path, sizeof(path), "%s/ref/%s.p%d.json", fixtures(), name, p);

    root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        diag("%s: %s", path, jerr.text);
        return -1;
    }

    prompt = json_object_get(root, "prompt_tokens");
    greedy = json_object_get(root, "greedy_tokens");
    rows = json_object_get(root, "logits");
    r->n_vocab = (int) json_integer_value(json_object_get(root, "n_vocab"));
    n_prompt = (int) json_array_size(prompt);
    n_greedy = (int) json_array_size(greedy);
    r->n = n_prompt + n_greedy - 1;

    if (n_prompt == 0 || n_greedy == 0 || r->n_vocab <= 0
        || json_array_size(rows) != (size_t) r->n)
    {
        json_decref(root);
        return -1;
    }

    r->tokens = malloc((size_t) r->n * sizeof(int32_t));
    r->ref = malloc((size_t) r->n * (size_t) r->n_vocab * sizeof(float));

    if (r->tokens == NULL || r->ref == NULL) {
        json_decref(root);
        free_ref(r);
        return -1;
    }

    for (int i = 0; i < r->n; i++) {
        r->tokens[i] = (int32_t) json_integer_value(
            i < n_prompt ? json_array_get(prompt, (size_t) i)
                         : json_array_get(greedy, (size_t) (i - n_prompt)));

        row = json_array_get(rows, (size_t) i);
        k = (int) json_array_size(row);

        for (int j = 0; j < r->n_vocab; j++) {
            r->ref[(size_t) i * r->n_vocab + j] =
                j < k ? (float) json_number_value(json_array_get(row,
                                                                 (size_t) j))
                      : 0.0f;
        }
    }

    json_decref(root);
    return 0;
}


static void
free_ref(ref_t *r)
{
    free(r->tokens);
    free(r->ref);
    memset(r, 0, sizeof(ref_t));
}


static double
rel_l2(const float *a, const float *b, int n)
{
    double  d, num, den;

    num = 0.0;
    den = 0.0;

    for (int i = 0; i < n; i++) {
        d = (double) a[i] - (double) b[i];
        num += d * d;
        den += (double) b[i] * (double) b[i];
    }

    return den > 0.0 ? sqrt(num / den) : sqrt(num);
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
