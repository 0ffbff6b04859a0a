/*
 * Copyright (C) ngx_llm developers
 *
 * The batched, paged forward pass (llm_model_forward_batch) against the
 * one-sequence path and against llama.cpp's logits in the fixtures:
 *
 *   mix      sequences at different positions, prompt chunks and single
 *            decode tokens, in random interleavings and block sizes,
 *            give each sequence the logits it gets alone;
 *   prefix   a sequence starting on another's full blocks gives the
 *            logits of computing it whole;
 *   copy     blocks read out and written to other blocks (another pool)
 *            carry a sequence on unchanged;
 *   errors   bad batches fail with a message and leave the pool as it
 *            was.
 *
 * "Alone" is llm_model_forward with every row's logits; batches and
 * the one-sequence path share one implementation, and llm_matmul
 * computes a token's outputs by the same operations whatever the
 * batch, so they must agree to the last bit for every weight type
 * (tol_alone 0): batching must not change what a request generates.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "tap.h"
#include "llm_model.h"


#define MAX_SEQS  8


typedef struct {
    const char  *name;
    double       tol_alone;    /* batch vs alone, relative L2 per row:
                                * 0, bit for bit */
    double       tol_ref;      /* vs llama.cpp, the fixtures' tolerance */
} model_case_t;


typedef struct {
    int32_t     *tok;          /* the whole sequence */
    int          n;
    float       *alone;        /* (n, n_vocab) logits of every row, alone */
    float       *ref;          /* (n_ref, n_vocab) llama.cpp's, or NULL */
    int          n_ref;

    /* during a run */
    int          done;         /* tokens fed so far */
    int32_t     *blocks;
    int          n_blocks;
} seq_t;


typedef struct {
    double       alone;        /* worst relative L2 against alone */
    double       ref;          /* and against the fixtures */
    int          rows;
    int          ref_rows;
    int          argmax;       /* rows whose argmax matches the alone
                                * row's */
} worst_t;


static const model_case_t  cases[] = {
    { "stories260K",          0.0, 1e-3 },
    { "tiny-llama3-f32",      0.0, 1e-3 },
    { "tiny-qwen2-f32",       0.0, 1e-3 },
    { "tiny-qwen3-f32",       0.0, 1e-3 },
    { "tiny-llama3-q8_0",     0.0, 5e-2 },
    { "tiny-qwen3-q4_k_m",    0.0, 5e-2 },
};


static uint64_t  rng_state = 0x2545f4914f6cdd1dULL;


static const char *fixtures(void);
static uint32_t rnd(void);
static int load_seqs(llm_model_t *m, const char *name, seq_t *seqs);
static void free_seqs(seq_t *seqs, int n);
static float *run_alone(llm_model_t *m, const int32_t *tok, int n);
static double rel_l2(const float *a, const float *b, int n);
static int argmax(const float *x, int n);
static void check_row(llm_model_t *m, const seq_t *q, int row,
    const float *logits, worst_t *w);
static int assign_blocks(seq_t *seqs, int n, int bs, int n_blocks);
static void test_mix(llm_model_t *m, const model_case_t *mc, seq_t *seqs,
    int n_seqs, int bs, int max_chunk, const char *what);
static void test_prefix(llm_model_t *m, const model_case_t *mc,
    seq_t *seqs);
static void test_copy(llm_model_t *m, const model_case_t *mc,
    seq_t *seqs);
static void test_errors(llm_model_t *m);
static void test_model(const model_case_t *mc);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    diag("random seed %#llx", (unsigned long long) rng_state);

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


/* xorshift64: the same interleavings on every run */
static uint32_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t) (rng_state >> 32);
}


static void
test_model(const model_case_t *mc)
{
    int           n_seqs;
    char          path[1024];
    seq_t         seqs[MAX_SEQS];
    llm_err_t     err = { 0 };
    llm_model_t  *m;
    struct stat   st;

    snprintf(path, sizeof(path), "%s/models/%s.gguf", fixtures(), mc->name);

    if (stat(path, &st) != 0) {
        ok(1, "# SKIP %s: not in the fixtures", mc->name);
        return;
    }

    if (!ok(llm_model_load(&m, path, &err) == LLM_OK, "%s loads",
            mc->name))
    {
        diag("%s", err.errstr);
        return;
    }

    memset(seqs, 0, sizeof(seqs));

    n_seqs = load_seqs(m, mc->name, seqs);
    if (!ok(n_seqs > 3, "%s: %d sequences, their logits alone", mc->name,
            n_seqs))
    {
        free_seqs(seqs, MAX_SEQS);
        llm_model_free(m);
        return;
    }

    test_mix(m, mc, seqs, n_seqs, 16, 24, "block 16");
    test_mix(m, mc, seqs, n_seqs, 1, 8, "block 1");
    test_mix(m, mc, seqs, n_seqs, 7, 40, "block 7");
    test_mix(m, mc, seqs, n_seqs, 33, 1, "block 33, decode only");
    test_mix(m, mc, seqs, n_seqs, 5, 200, "block 5, whole prompts");

    /* batches of more tokens than the step holds run as several */
    if (ok(llm_model_set_max_batch(m, 5, &err) == LLM_OK
           && llm_model_max_batch(m) == 5, "%s: steps of 5 tokens",
           mc->name))
    {
        test_mix(m, mc, seqs, n_seqs, 16, 24, "block 16, steps of 5");
        ok(llm_model_set_max_batch(m, 256, &err) == LLM_OK,
           "%s: steps of 256 tokens again", mc->name);
    }

    test_prefix(m, mc, seqs);
    test_copy(m, mc, seqs);
    test_errors(m);

    free_seqs(seqs, MAX_SEQS);
    llm_model_free(m);
}


/*
 * The three fixture prompts with their greedy continuations (rows
 * checked against llama.cpp too), a copy of prompt 0 (two sequences
 * with the same tokens in one batch), and two of random tokens.
 */
static int
load_seqs(llm_model_t *m, const char *name, seq_t *seqs)
{
    int                  n, n_prompt, n_greedy, n_vocab;
    char                 path[1024];
    json_t              *root, *pt, *gt, *rows;
    seq_t               *q;
    json_error_t         jerr;
    const llm_config_t  *c;

    c = llm_model_config(m);
    n_vocab = c->n_vocab;
    n = 0;

    for (int p = 0; p < 3; p++) {
        snprintf(path, sizeof(path), "%s/ref/%s.p%d.json", fixtures(), name,
                 p);

        root = json_load_file(path, 0, &jerr);
        if (root == NULL) {
            diag("%s: %s", path, jerr.text);
            continue;
        }

        pt = json_object_get(root, "prompt_tokens");
        gt = json_object_get(root, "greedy_tokens");
        rows = json_object_get(root, "logits");
        n_prompt = (int) json_array_size(pt);
        n_greedy = (int) json_array_size(gt);

        if (n_prompt == 0 || n_greedy == 0
            || json_array_size(rows) != (size_t) (n_prompt + n_greedy - 1))
        {
            diag("%s: unexpected layout", path);
            json_decref(root);
            continue;
        }

        q = &seqs[n++];
        q->n = n_prompt + n_greedy - 1;
        q->tok = malloc((size_t) q->n * sizeof(int32_t));
        q->n_ref = q->n;
        q->ref = malloc((size_t) q->n * (size_t) n_vocab * sizeof(float));

        for (int i = 0; i < q->n; i++) {
            json_t  *id, *row;

            id = i < n_prompt ? json_array_get(pt, (size_t) i)
                              : json_array_get(gt, (size_t) (i - n_prompt));
            q->tok[i] = (int32_t) json_integer_value(id);

            row = json_array_get(rows, (size_t) i);
            for (int j = 0; j < n_vocab; j++) {
                q->ref[(size_t) i * n_vocab + j] =
                    (float) json_number_value(json_array_get(row,
                                                             (size_t) j));
            }
        }

        json_decref(root);
    }

    if (n == 0) {
        return 0;
    }

    /* the same tokens as the first, in the same batch */
    q = &seqs[n++];
    q->n = seqs[0].n;
    q->tok = malloc((size_t) q->n * sizeof(int32_t));
    memcpy(q->tok, seqs[0].tok, (size_t) q->n * sizeof(int32_t));

    for (int r = 0; r < 2; r++) {
        q = &seqs[n++];
        q->n = 20 + (int) (rnd() % 60);
        q->tok = malloc((size_t) q->n * sizeof(int32_t));
        q->tok[0] = 1;

        for (int i = 1; i < q->n; i++) {
            q->tok[i] = (int32_t) (rnd() % (uint32_t) n_vocab);
        }
    }

    for (int i = 0; i < n; i++) {
        seqs[i].alone = run_alone(m, seqs[i].tok, seqs[i].n);
        if (seqs[i].alone == NULL) {
            return 0;
        }
    }

    return n;
}


static void
free_seqs(seq_t *seqs, int n)
{
    for (int i = 0; i < n; i++) {
        free(seqs[i].tok);
        free(seqs[i].alone);
        free(seqs[i].ref);
        free(seqs[i].blocks);
    }
}


/* every row's logits through the one-sequence API */
static float *
run_alone(llm_model_t *m, const int32_t *tok, int n)
{
    float      *logits;
    llm_kv_t   *kv;
    llm_err_t   err = { 0 };

    logits = malloc((size_t) n * (size_t) llm_model_config(m)->n_vocab
                    * sizeof(float));
    kv = llm_kv_new(m, n, &err);

    if (kv == NULL
        || llm_model_forward(m, kv, tok, n, 0, logits, 1, &err) != LLM_OK)
    {
        diag("alone: %s", err.errstr);
        free(logits);
        logits = NULL;
    }

    llm_kv_free(kv);
    return logits;
}


static double
rel_l2(const float *a, const float *b, int n)
{
    double  d, r;

    d = 0.0;
    r = 0.0;

    for (int i = 0; i < n; i++) {
        d += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
        r += (double) b[i] * b[i];
    }

    return r > 0.0 ? sqrt(d / r) : sqrt(d);
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


/* a batch's logits for row `row` of q: as alone, and as llama.cpp's */
static void
check_row(llm_model_t *m, const seq_t *q, int row, const float *logits,
    worst_t *w)
{
    int      n_vocab;
    double   e;

    n_vocab = llm_model_config(m)->n_vocab;

    e = rel_l2(logits, q->alone + (size_t) row * n_vocab, n_vocab);
    if (!(e <= w->alone)) {
        w->alone = e;
    }

    w->argmax += argmax(logits, n_vocab)
                 == argmax(q->alone + (size_t) row * n_vocab, n_vocab);
    w->rows++;

    if (q->ref != NULL && row < q->n_ref) {
        e = rel_l2(logits, q->ref + (size_t) row * n_vocab, n_vocab);
        if (!(e <= w->ref)) {
            w->ref = e;
        }

        w->ref_rows++;
    }
}


/* blocks for every sequence from a shuffled 0..n_blocks-1, so that a
 * sequence's blocks are neither in order nor next to each other */
static int
assign_blocks(seq_t *seqs, int n, int bs, int n_blocks)
{
    int       k;
    int32_t  *perm;

    perm = malloc((size_t) n_blocks * sizeof(int32_t));

    for (int i = 0; i < n_blocks; i++) {
        perm[i] = i;
    }

    for (int i = n_blocks - 1; i > 0; i--) {
        int      j = (int) (rnd() % (uint32_t) (i + 1));
        int32_t  t = perm[i];

        perm[i] = perm[j];
        perm[j] = t;
    }

    k = 0;

    for (int i = 0; i < n; i++) {
        seqs[i].n_blocks = (seqs[i].n + bs - 1) / bs;
        free(seqs[i].blocks);
        seqs[i].blocks = malloc((size_t) seqs[i].n_blocks * sizeof(int32_t));

        for (int j = 0; j < seqs[i].n_blocks; j++) {
            if (k == n_blocks) {
                free(perm);
                return -1;
            }

            seqs[i].blocks[j] = perm[k++];
        }

        seqs[i].done = 0;
    }

    free(perm);
    return 0;
}


/*
 * Every sequence fed through batches of random makeup: each step takes
 * a random subset of the unfinished sequences, in random order, each
 * with a chunk of 1..max_chunk tokens (a decode step is a chunk of 1),
 * and mostly asks for logits.
 */
static void
test_mix(llm_model_t *m, const model_case_t *mc, seq_t *seqs, int n_seqs,
    int bs, int max_chunk, const char *what)
{
    int              n_blocks, left, nb, steps, failed, order[MAX_SEQS];
    float           *out;
    worst_t          w;
    seq_t           *q;
    llm_err_t        err = { 0 };
    llm_kv_pool_t   *pool;
    llm_batch_seq_t  b[MAX_SEQS];
    int              n_vocab = llm_model_config(m)->n_vocab;

    n_blocks = 3;
    for (int i = 0; i < n_seqs; i++) {
        n_blocks += (seqs[i].n + bs - 1) / bs;
    }

    pool = llm_kv_pool_new(m, n_blocks, bs, &err);
    if (!ok(pool != NULL, "%s %s: pool of %d blocks", mc->name, what,
            n_blocks))
    {
        diag("%s", err.errstr);
        return;
    }

    assign_blocks(seqs, n_seqs, bs, n_blocks);

    out = malloc((size_t) MAX_SEQS * n_vocab * sizeof(float));
    memset(&w, 0, sizeof(w));
    steps = 0;
    failed = 0;

    for ( ;; ) {
        left = 0;
        for (int i = 0; i < n_seqs; i++) {
            if (seqs[i].done < seqs[i].n) {
                order[left++] = i;
            }
        }

        if (left == 0) {
            break;
        }

        /* a random subset, at least one, in random order */
        for (int i = left - 1; i > 0; i--) {
            int  j = (int) (rnd() % (uint32_t) (i + 1));
            int  t = order[i];

            order[i] = order[j];
            order[j] = t;
        }

        nb = 1 + (int) (rnd() % (uint32_t) left);

        for (int i = 0; i < nb; i++) {
            q = &seqs[order[i]];

            b[i].tokens = q->tok + q->done;
            b[i].n_tokens = rnd() % 4 == 0
                            ? 1 : 1 + (int) (rnd() % (uint32_t) max_chunk);
            if (b[i].n_tokens > q->n - q->done) {
                b[i].n_tokens = q->n - q->done;
            }
            b[i].pos = q->done;
            b[i].blocks = q->blocks;
            b[i].n_blocks = q->n_blocks;
            b[i].logits = rnd() % 8 == 0 ? NULL
                                         : out + (size_t) i * n_vocab;
        }

        if (llm_model_forward_batch(m, pool, b, nb, &err) != LLM_OK) {
            diag("%s %s step %d: %s", mc->name, what, steps, err.errstr);
            failed = 1;
            break;
        }

        for (int i = 0; i < nb; i++) {
            q = &seqs[order[i]];

            if (b[i].logits != NULL) {
                check_row(m, q, b[i].pos + b[i].n_tokens - 1, b[i].logits,
                          &w);
            }

            q->done += b[i].n_tokens;
        }

        steps++;
    }

    ok(!failed, "%s %s: %d steps run", mc->name, what, steps);
    ok(w.rows > 0 && w.alone <= mc->tol_alone && w.argmax == w.rows,
       "%s %s: %d rows as alone (worst %.3g, tolerance %.0e), argmax "
       "equal on %d", mc->name, what, w.rows, w.alone, mc->tol_alone,
       w.argmax);
    ok(w.ref_rows > 0 && w.ref <= mc->tol_ref,
       "%s %s: %d rows as llama.cpp's (worst %.3g, tolerance %.0e)",
       mc->name, what, w.ref_rows, w.ref, mc->tol_ref);

    free(out);
    llm_kv_pool_free(pool);
}


/*
 * Prompt 2 (the long one) as sequence A; sequence B starts at pos L on
 * A's first L / bs blocks (full ones) with other tokens after them.
 * B's logits must be those of B computed whole, A's must not change,
 * and A and B then run on together in the same batches.
 */
static void
test_prefix(llm_model_t *m, const model_case_t *mc, seq_t *seqs)
{
    int              bs, L, n_a, n_b, nb_a, nb_b, n_vocab, good;
    float           *alone_b, *la, *lb;
    double           e, worst;
    int32_t         *tok_b, *blocks_a, *blocks_b;
    llm_err_t        err = { 0 };
    const seq_t     *a;
    llm_kv_pool_t   *pool;
    llm_batch_seq_t  b[2];

    n_vocab = llm_model_config(m)->n_vocab;
    a = &seqs[2];
    bs = 16;
    L = 48;
    n_a = a->n;
    n_b = L + 30;

    if (!ok(n_a > L + 8, "%s prefix: sequence of %d tokens", mc->name,
            n_a))
    {
        return;
    }

    /* B: A's first L tokens, then its own */
    tok_b = malloc((size_t) n_b * sizeof(int32_t));
    memcpy(tok_b, a->tok, (size_t) L * sizeof(int32_t));
    for (int i = L; i < n_b; i++) {
        tok_b[i] = (int32_t) (rnd() % (uint32_t) n_vocab);
    }

    alone_b = run_alone(m, tok_b, n_b);

    nb_a = (n_a + bs - 1) / bs;
    nb_b = (n_b + bs - 1) / bs;

    pool = llm_kv_pool_new(m, nb_a + nb_b, bs, &err);
    blocks_b = malloc((size_t) nb_b * sizeof(int32_t));
    la = malloc((size_t) n_vocab * sizeof(float));
    lb = malloc((size_t) n_vocab * sizeof(float));

    /* A in blocks nb_b.., reversed; B shares the first L / bs of them */
    blocks_a = malloc((size_t) nb_a * sizeof(int32_t));

    for (int j = 0; j < nb_a; j++) {
        blocks_a[j] = nb_a + nb_b - 1 - j;
    }

    for (int j = 0; j < nb_b; j++) {
        blocks_b[j] = j < L / bs ? blocks_a[j] : j;
    }

    /* A's first L + 5 tokens */
    b[0].tokens = a->tok;
    b[0].n_tokens = L + 5;
    b[0].pos = 0;
    b[0].blocks = blocks_a;
    b[0].n_blocks = nb_a;
    b[0].logits = la;

    good = pool != NULL && alone_b != NULL
           && llm_model_forward_batch(m, pool, b, 1, &err) == LLM_OK;

    /* B's own tokens, one chunk, with A's next token in the same step */
    b[1].tokens = tok_b + L;
    b[1].n_tokens = 10;
    b[1].pos = L;
    b[1].blocks = blocks_b;
    b[1].n_blocks = nb_b;
    b[1].logits = lb;

    b[0].tokens = a->tok + L + 5;
    b[0].n_tokens = 1;
    b[0].pos = L + 5;

    good = good && llm_model_forward_batch(m, pool, b, 2, &err) == LLM_OK;

    worst = 0.0;
    if (good) {
        e = rel_l2(lb, alone_b + (size_t) (L + 9) * n_vocab, n_vocab);
        worst = e > worst ? e : worst;
        e = rel_l2(la, a->alone + (size_t) (L + 5) * n_vocab, n_vocab);
        worst = e > worst ? e : worst;
    }

    /* then both to their ends, one token at a time for A */
    for (int pa = L + 6, pb = L + 10; good && (pa < n_a || pb < n_b); ) {
        int  nb = 0;

        if (pa < n_a) {
            b[nb].tokens = a->tok + pa;
            b[nb].n_tokens = 1;
            b[nb].pos = pa;
            b[nb].blocks = blocks_a;
            b[nb].n_blocks = nb_a;
            b[nb].logits = la;
            nb++;
        }

        if (pb < n_b) {
            b[nb].tokens = tok_b + pb;
            b[nb].n_tokens = n_b - pb < 3 ? n_b - pb : 3;
            b[nb].pos = pb;
            b[nb].blocks = blocks_b;
            b[nb].n_blocks = nb_b;
            b[nb].logits = lb;
            nb++;
        }

        if (llm_model_forward_batch(m, pool, b, nb, &err) != LLM_OK) {
            good = 0;
            break;
        }

        for (int i = 0; i < nb; i++) {
            const float  *want;

            if (b[i].blocks == blocks_a) {
                want = a->alone + (size_t) pa * n_vocab;
                pa++;

            } else {
                pb += b[i].n_tokens;
                want = alone_b + (size_t) (pb - 1) * n_vocab;
            }

            e = rel_l2(b[i].logits, want, n_vocab);
            worst = e > worst ? e : worst;
        }
    }

    if (!good) {
        diag("%s", err.errstr);
    }

    ok(good && worst <= mc->tol_alone,
       "%s prefix: a sequence on another's %d blocks, then both to the "
       "end: as computed whole (worst %.3g)", mc->name, L / bs, worst);

    /* the shared blocks are A's: B may not write them */
    b[0].tokens = tok_b + L - 1;
    b[0].n_tokens = 1;
    b[0].pos = L - 1;
    b[0].blocks = blocks_b;
    b[0].n_blocks = nb_b;
    b[0].logits = lb;
    b[1].tokens = a->tok + L - 8;
    b[1].n_tokens = 1;
    b[1].pos = L - 8;
    b[1].blocks = blocks_a;
    b[1].n_blocks = nb_a;
    b[1].logits = la;

    ok(pool != NULL
       && llm_model_forward_batch(m, pool, b, 2, &err) == LLM_ERR
       && strstr(err.errstr, "twice") != NULL,
       "%s prefix: two sequences writing one block are refused: %s",
       mc->name, err.errstr);

    /* A rewriting a shared block while B reads it */
    b[0].tokens = tok_b + L;
    b[0].n_tokens = 1;
    b[0].pos = L;
    b[1].tokens = a->tok + 10;
    b[1].pos = 10;

    ok(pool != NULL
       && llm_model_forward_batch(m, pool, b, 2, &err) == LLM_ERR
       && strstr(err.errstr, "reads block") != NULL,
       "%s prefix: reading a block another writes is refused: %s",
       mc->name, err.errstr);

    free(blocks_a);
    free(blocks_b);
    free(tok_b);
    free(alone_b);
    free(la);
    free(lb);
    llm_kv_pool_free(pool);
}


/*
 * A sequence run to position k in one pool, its blocks read out and
 * written to other block numbers of a second pool, then continued
 * there: the same logits as alone.
 */
static void
test_copy(llm_model_t *m, const model_case_t *mc, seq_t *seqs)
{
    int              bs, k, nb, n_vocab, good;
    void            *buf;
    float           *lg;
    double           e, worst;
    size_t           bytes;
    int32_t         *b1, *b2;
    llm_err_t        err = { 0 };
    const seq_t     *q;
    llm_kv_pool_t   *p1, *p2;
    llm_batch_seq_t  b;

    n_vocab = llm_model_config(m)->n_vocab;
    q = &seqs[1];
    bs = 8;
    k = q->n / 2;
    nb = (q->n + bs - 1) / bs;

    bytes = llm_kv_block_bytes(m, bs);
    p1 = llm_kv_pool_new(m, nb, bs, &err);
    p2 = llm_kv_pool_new(m, 2 * nb + 1, bs, &err);
    b1 = malloc((size_t) nb * sizeof(int32_t));
    b2 = malloc((size_t) nb * sizeof(int32_t));
    buf = malloc(bytes);
    lg = malloc((size_t) n_vocab * sizeof(float));

    for (int j = 0; j < nb; j++) {
        b1[j] = j;
        b2[j] = 2 * nb - 2 * j;     /* scattered, and in reverse */
    }

    b.tokens = q->tok;
    b.n_tokens = k;
    b.pos = 0;
    b.blocks = b1;
    b.n_blocks = nb;
    b.logits = lg;

    good = p1 != NULL && p2 != NULL && bytes > 0
           && llm_model_forward_batch(m, p1, &b, 1, &err) == LLM_OK;

    /* the blocks holding positions 0..k-1, the last one partly */
    for (int j = 0; good && j < (k + bs - 1) / bs; j++) {
        good = llm_kv_block_read(p1, b1[j], buf, bytes) == LLM_OK
               && llm_kv_block_write(p2, b2[j], buf, bytes) == LLM_OK;
    }

    worst = 0.0;

    for (int pos = k; good && pos < q->n; pos++) {
        b.tokens = q->tok + pos;
        b.n_tokens = 1;
        b.pos = pos;
        b.blocks = b2;

        if (llm_model_forward_batch(m, p2, &b, 1, &err) != LLM_OK) {
            diag("%s", err.errstr);
            good = 0;
            break;
        }

        e = rel_l2(lg, q->alone + (size_t) pos * n_vocab, n_vocab);
        worst = e > worst ? e : worst;
    }

    ok(good && worst <= mc->tol_alone,
       "%s copy: %d blocks of %zu bytes moved to another pool, then %d "
       "more tokens as alone (worst %.3g)", mc->name, (k + bs - 1) / bs,
       bytes, q->n - k, worst);

    ok(llm_kv_block_read(p1, -1, buf, bytes) == LLM_ERR
       && llm_kv_block_read(p1, nb, buf, bytes) == LLM_ERR
       && llm_kv_block_read(p1, 0, buf, bytes - 1) == LLM_ERR
       && llm_kv_block_read(p1, 0, NULL, bytes) == LLM_ERR
       && llm_kv_block_read(NULL, 0, buf, bytes) == LLM_ERR
       && llm_kv_block_write(p2, 2 * nb + 1, buf, bytes) == LLM_ERR
       && llm_kv_block_write(p2, 0, buf, bytes + 1) == LLM_ERR
       && llm_kv_block_write(p2, 0, NULL, bytes) == LLM_ERR,
       "%s copy: reads and writes out of range or of the wrong size are "
       "refused", mc->name);

    free(b1);
    free(b2);
    free(buf);
    free(lg);
    llm_kv_pool_free(p1);
    llm_kv_pool_free(p2);
}


/* every bad batch fails with a message, and the pool is as it was */
static void
test_errors(llm_model_t *m)
{
    int                  n_vocab, bs, nb, n_err, same;
    char                *before, *after;
    float               *lg;
    size_t               bytes;
    int32_t              tok[8] = { 1, 403, 407, 261, 378, 11, 12, 13 };
    int32_t              blocks[4] = { 0, 1, 2, 3 }, other[2] = { 2, 3 };
    int32_t              bad[4], badtok[2];
    llm_err_t            err = { 0 };
    llm_model_t         *m2;
    llm_kv_pool_t       *pool, *p2;
    llm_batch_seq_t      b[2], g;
    const llm_config_t  *c;

    c = llm_model_config(m);
    n_vocab = c->n_vocab;
    bs = 4;
    nb = 4;

    pool = llm_kv_pool_new(m, nb, bs, &err);
    lg = malloc((size_t) n_vocab * sizeof(float));
    bytes = llm_kv_block_bytes(m, bs);
    before = malloc(bytes * nb);
    after = malloc(bytes * nb);

    if (!ok(pool != NULL, "errors: a pool of 4 blocks of 4")) {
        diag("%s", err.errstr);
        goto out;
    }

    /* a good sequence at positions 0..5 */
    g.tokens = tok;
    g.n_tokens = 6;
    g.pos = 0;
    g.blocks = blocks;
    g.n_blocks = 2;
    g.logits = lg;

    ok(llm_model_forward_batch(m, pool, &g, 1, &err) == LLM_OK,
       "errors: a good batch runs");

    for (int j = 0; j < nb; j++) {
        llm_kv_block_read(pool, j, before + bytes * j, bytes);
    }

    n_err = 0;

    /* b[0] continues g (writes block 1), b[1] is another sequence at
     * the same positions in blocks 2 and 3; each setup spoils b[1] */

#define BAD(what, setup)                                                   \
    do {                                                                   \
        b[0] = g;                                                          \
        b[0].tokens = tok + 6;                                             \
        b[0].n_tokens = 2;                                                 \
        b[0].pos = 6;                                                      \
        b[1] = b[0];                                                       \
        b[1].blocks = other;                                               \
        err.errstr[0] = '\0';                                              \
        setup;                                                             \
        n_err++;                                                           \
        ok(llm_model_forward_batch(m, pool, b, 2, &err) == LLM_ERR         \
           && err.errstr[0] != '\0', "errors: %s: %s", what, err.errstr);  \
    } while (0)

    BAD("table too short", b[1].n_blocks = 1);
    BAD("table of 0 entries", b[1].n_blocks = 0);
    BAD("no block table", b[1].blocks = NULL);
    BAD("no tokens", b[1].tokens = NULL);
    BAD("0 tokens", b[1].n_tokens = 0);
    BAD("negative tokens", b[1].n_tokens = -3);
    BAD("negative position", b[1].pos = -1);
    BAD("positions past the pool",
        b[1].pos = nb * bs - 1; b[1].n_blocks = 4);
    BAD("a position near INT_MAX",
        b[1].pos = 0x7ffffffe; b[1].n_blocks = 4);
    memcpy(bad, blocks, sizeof(bad));
    bad[1] = -1;
    BAD("a block of -1", b[1].blocks = bad);
    bad[1] = nb;
    BAD("a block past the pool", b[1].blocks = bad);
    badtok[0] = 5;
    badtok[1] = n_vocab;
    BAD("a token past the vocabulary", b[1].tokens = badtok);
    badtok[1] = -1;
    BAD("a negative token", b[1].tokens = badtok);
    BAD("one block written by two sequences", b[1].blocks = blocks);
    BAD("a sequence reading a block another writes",
        bad[0] = 1; bad[1] = 3; b[1].blocks = bad);
    BAD("a table naming a block twice",
        bad[0] = 2; bad[1] = 3; bad[2] = 3; b[1].blocks = bad;
        b[1].n_blocks = 3; b[1].tokens = tok; b[1].n_tokens = 6);

#undef BAD

    ok(llm_model_forward_batch(m, pool, b, 0, &err) == LLM_ERR,
       "errors: no sequences: %s", err.errstr);
    ok(llm_model_forward_batch(m, pool, NULL, 1, &err) == LLM_ERR,
       "errors: a NULL batch: %s", err.errstr);
    ok(llm_model_forward_batch(m, NULL, &g, 1, &err) == LLM_ERR,
       "errors: no pool: %s", err.errstr);

    if (llm_model_load(&m2, "models/stories260K.gguf", &err) == LLM_OK) {
        p2 = llm_kv_pool_new(m2, nb, bs, &err);
        ok(llm_model_forward_batch(m, p2, &g, 1, &err) == LLM_ERR,
           "errors: another model's pool: %s", err.errstr);
        llm_kv_pool_free(p2);
        llm_model_free(m2);
    }

    for (int j = 0; j < nb; j++) {
        llm_kv_block_read(pool, j, after + bytes * j, bytes);
    }
    same = memcmp(before, after, bytes * nb) == 0;

    ok(same, "errors: the pool is unchanged after %d refused batches",
       n_err);

    /* pools and steps of impossible sizes */
    ok(llm_kv_pool_new(m, 0, 16, &err) == NULL, "errors: 0 blocks: %s",
       err.errstr);
    ok(llm_kv_pool_new(m, 16, 0, &err) == NULL,
       "errors: blocks of 0 positions: %s", err.errstr);
    ok(llm_kv_pool_new(m, 1 << 20, 1 << 12, &err) == NULL,
       "errors: 2^32 positions: %s", err.errstr);
    ok(llm_kv_block_bytes(m, 0) == 0 && llm_kv_block_bytes(m, -1) == 0
       && llm_kv_block_bytes(m, 16) == 16 * llm_kv_block_bytes(m, 1),
       "errors: block bytes of 0 positions is 0, of 16 is 16 times 1");
    ok(llm_model_set_max_batch(m, 0, &err) == LLM_ERR
       && llm_model_set_max_batch(m, 1 << 20, &err) == LLM_ERR
       && llm_model_max_batch(m) == 256,
       "errors: steps of 0 or 2^20 tokens are refused, 256 stay: %s",
       err.errstr);

out:

    free(lg);
    free(before);
    free(after);
    llm_kv_pool_free(pool);
}
