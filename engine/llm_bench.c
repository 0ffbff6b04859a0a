/*
 * Copyright (C) ngx_llm developers
 *
 * llm-engine bench --model M [--threads N] [--prompt-tokens P]
 *                  [--gen-tokens G] [--reps R] [--bw-mb MB] [--seqs S]
 *                  [--backend cpu|cuda|auto] [--device N] [--tp N]
 *
 * Decoding one token reads every weight once, so its rate is bounded by
 * memory read bandwidth / bytes of weights read per token.  This
 * measures that bandwidth itself (every thread streaming its part of a
 * buffer far larger than the caches, best of several passes, before and
 * after the model runs, since neighbours on the machine come and go),
 * then a prefill of P tokens in one forward pass and G decode steps of
 * one token, each best of R repetitions, and prints the rates, the
 * ceiling and the decode rate's share of it; the last line sums it up
 * as key=value pairs for scripts (bench/cpu.sh).  On a GPU the host's
 * bandwidth says nothing, so there is no ceiling (0 in the last line).
 *
 * --seqs S (more than 1) adds the serving shape: S sequences of P
 * prompt tokens prefilled in batches through the paged pool, then G
 * steps decoding all S at once (greedy, on the host, as the server
 * does without the sample hook), best of R: the decode rate is S x G
 * generated tokens over the decode steps' time, the total rate
 * S x (P + G) tokens over both.
 */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm_bench.h"
#include "llm_common.h"
#include "llm_gguf.h"
#include "llm_model.h"
#include "llm_quant.h"
#include "llm_threads.h"


#define LLM_BENCH_CHUNK  (1 << 20)     /* bytes per bandwidth task */


typedef struct {
    const char      *model;
    int              kernels;
    long             threads;
    long             prompt;
    long             gen;
    long             reps;
    long             bw_mb;
    long             device;
    long             tp;
    long             seqs;
    const char      *backend;
} llm_bench_opts_t;


typedef struct {
    const uint8_t   *buf;
    size_t           len;
    uint64_t         sink[256];    /* per thread: keeps the reads live */
} llm_bw_job_t;


static int llm_bench_parse(int argc, char **argv, llm_bench_opts_t *o);
static int llm_bench_seqs(llm_model_t *m, const llm_bench_opts_t *o,
    const int32_t *prompt, double *prefill, double *decode, double *all);
static double llm_bench_bandwidth(size_t len, int passes);
static void llm_bw_task(void *arg, int64_t task, int thread);
static size_t llm_bench_weight_bytes(const llm_model_t *m, char *types,
    size_t types_len);
static double llm_bench_cpu(void);
static int llm_bench_kernels(void);
static double llm_bench_matmul(uint32_t type, int64_t rows, int64_t cols,
    int64_t n_tok, int reps);
static int llm_bench_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


int
llm_bench_main(int argc, char **argv)
{
    int                  rc, n_vocab, host;
    char                 types[256];
    float               *logits;
    double               bw, bw2, prefill, decode, t, ceiling, c0;
    double               prefill_cpu, decode_cpu, share;
    double               b_prefill, b_decode, b_all;
    size_t               wbytes;
    int32_t             *tokens, next;
    uint64_t             t0, rng;
    llm_kv_t            *kv;
    llm_err_t            err;
    llm_model_t         *m;
    llm_bench_opts_t     o;
    llm_model_opts_t     mo;
    const llm_config_t  *c;

    memset(&o, 0, sizeof(o));
    o.prompt = 128;
    o.gen = 32;
    o.reps = 3;
    o.bw_mb = 512;

    if (llm_bench_parse(argc - 1, argv + 1, &o) != LLM_OK) {
        return 2;
    }

    if (o.kernels) {
        if (llm_threads_init((int) o.threads, &err) != LLM_OK) {
            fprintf(stderr, "llm-engine bench: %s (going on)\n",
                    err.errstr);
        }

        rc = llm_bench_kernels();
        llm_threads_free();
        return rc;
    }

    if (o.model == NULL) {
        return llm_bench_fail("--model is required");
    }

    memset(&err, 0, sizeof(err));

    if (llm_threads_init((int) o.threads, &err) != LLM_OK) {
        fprintf(stderr, "llm-engine bench: %s (going on)\n", err.errstr);
    }

    memset(&mo, 0, sizeof(mo));
    mo.backend = o.backend;
    mo.device = (int) o.device;
    mo.tp = (int) o.tp;

    if (llm_model_load_opts(&m, o.model, &mo, &err) != LLM_OK) {
        return llm_bench_fail("%s", err.errstr);
    }

    host = strcmp(llm_model_backend(m), "cpu") == 0;

    c = llm_model_config(m);
    n_vocab = c->n_vocab;
    rc = 1;
    kv = NULL;
    tokens = NULL;
    logits = NULL;

    if (o.prompt + o.gen > c->n_ctx) {
        llm_bench_fail("%ld + %ld tokens do not fit the context of %d",
                       o.prompt, o.gen, c->n_ctx);
        goto done;
    }

    if (o.prompt > llm_model_max_batch(m)
        && llm_model_set_max_batch(m, (int) o.prompt, &err) != LLM_OK)
    {
        llm_bench_fail("%s", err.errstr);
        goto done;
    }

    kv = llm_kv_new(m, (int) (o.prompt + o.gen), &err);
    tokens = malloc((size_t) o.prompt * sizeof(int32_t));
    logits = malloc((size_t) n_vocab * sizeof(float));

    if (kv == NULL || tokens == NULL || logits == NULL) {
        llm_bench_fail("%s", kv == NULL ? err.errstr : "out of memory");
        goto done;
    }

    /* a fixed pseudo-random prompt, clear of the special tokens */
    rng = 0x9e3779b97f4a7c15ULL;
    for (long i = 0; i < o.prompt; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokens[i] = (int32_t) (3 + rng % (uint64_t) (n_vocab - 3));
    }

    wbytes = llm_bench_weight_bytes(m, types, sizeof(types));

    printf("model     %s (%s, %d layers, width %d, ffn %d, vocab %d)\n",
           o.model, c->arch, c->n_layer, c->n_embd, c->n_ff, n_vocab);
    printf("weights   %.1f MB read per token:%s\n", wbytes / 1e6, types);
    printf("cpu       %s kernels, %d threads\n",
           llm_quant_level_name(llm_quant_level()), llm_threads_count());
    printf("backend   %s, %d shard%s\n", llm_model_backend(m),
           llm_model_tp(m), llm_model_tp(m) == 1 ? "" : "s");
    fflush(stdout);

    bw = host ? llm_bench_bandwidth((size_t) o.bw_mb << 20, 5) : 0.0;

    prefill = 0.0;
    decode = 0.0;
    prefill_cpu = 0.0;
    decode_cpu = 0.0;

    /*
     * "ran": CPU time used / (wall time x threads).  On a large model
     * the workers never sleep between matmuls, so below 1 means that
     * other processes held the CPUs (a busy shared machine), which
     * slows the compute-heavy decoding more than the streaming read
     * that sets the ceiling.
     */
    for (long r = 0; r < o.reps; r++) {
        c0 = llm_bench_cpu();
        t0 = llm_now_us();
        if (llm_model_forward(m, kv, tokens, (int) o.prompt, 0, logits, 0,
                              &err)
            != LLM_OK)
        {
            llm_bench_fail("%s", err.errstr);
            goto done;
        }

        t = (double) o.prompt * 1e6 / (double) (llm_now_us() - t0 + 1);
        share = (llm_bench_cpu() - c0) * 1e6
                / ((double) (llm_now_us() - t0 + 1) * llm_threads_count());
        if (t > prefill) {
            prefill = t;
            prefill_cpu = share;
        }

        /* greedy, so that the work is that of real decoding */
        c0 = llm_bench_cpu();
        t0 = llm_now_us();

        for (long g = 0; g < o.gen; g++) {
            next = 0;
            for (int i = 1; i < n_vocab; i++) {
                if (logits[i] > logits[next]) {
                    next = i;
                }
            }

            if (llm_model_forward(m, kv, &next, 1, (int) (o.prompt + g),
                                  logits, 0, &err)
                != LLM_OK)
            {
                llm_bench_fail("%s", err.errstr);
                goto done;
            }
        }

        t = (double) o.gen * 1e6 / (double) (llm_now_us() - t0 + 1);
        share = (llm_bench_cpu() - c0) * 1e6
                / ((double) (llm_now_us() - t0 + 1) * llm_threads_count());
        if (t > decode) {
            decode = t;
            decode_cpu = share;
        }
    }

    b_prefill = 0.0;
    b_decode = 0.0;
    b_all = 0.0;

    if (o.seqs > 1) {
        if (llm_bench_seqs(m, &o, tokens, &b_prefill, &b_decode, &b_all)
            != LLM_OK)
        {
            goto done;
        }

        printf("batch     %ld sequences of %ld + %ld tokens: prefill %.1f "
               "tok/s, decode %.1f tok/s, all %.1f tok/s (best of %ld)\n",
               o.seqs, o.prompt, o.gen, b_prefill, b_decode, b_all, o.reps);
    }

    bw2 = host ? llm_bench_bandwidth((size_t) o.bw_mb << 20, 5) : 0.0;
    bw = bw2 > bw ? bw2 : bw;

    ceiling = bw / (double) wbytes;

    if (!host) {
        printf("prefill   %ld tokens: %.1f tok/s (best of %ld)\n", o.prompt,
               prefill, o.reps);
        printf("decode    %ld tokens: %.2f tok/s (best of %ld)\n", o.gen,
               decode, o.reps);
        printf("result backend=%s tp=%d weights_mb=%.1f decode_tps=%.2f "
               "prefill_tps=%.2f seqs=%ld batch_prefill_tps=%.2f "
               "batch_decode_tps=%.2f batch_tps=%.2f\n",
               llm_model_backend(m), llm_model_tp(m), wbytes / 1e6, decode,
               prefill, o.seqs, b_prefill, b_decode, b_all);
        rc = 0;
        goto done;
    }

    printf("memory    %.1f GB/s read (best of 10 passes over %ld MB, "
           "before and after)\n", bw / 1e9, o.bw_mb);
    printf("prefill   %ld tokens: %.1f tok/s (best of %ld; the threads ran "
           "%.0f%% of the time)\n", o.prompt, prefill, o.reps,
           100.0 * prefill_cpu);
    printf("decode    %ld tokens: %.2f tok/s (best of %ld; the threads ran "
           "%.0f%% of the time) = %.0f%% of the ceiling %.2f tok/s\n",
           o.gen, decode, o.reps, 100.0 * decode_cpu,
           100.0 * decode / ceiling, ceiling);
    printf("result threads=%d cpu=%s weights_mb=%.1f bw_gbs=%.2f "
           "ceiling_tps=%.2f decode_tps=%.2f ratio=%.3f prefill_tps=%.2f "
           "decode_ran=%.2f prefill_ran=%.2f seqs=%ld batch_prefill_tps=%.2f "
           "batch_decode_tps=%.2f batch_tps=%.2f\n",
           llm_threads_count(), llm_quant_level_name(llm_quant_level()),
           wbytes / 1e6, bw / 1e9, ceiling, decode, decode / ceiling,
           prefill, decode_cpu, prefill_cpu, o.seqs, b_prefill, b_decode,
           b_all);

    rc = 0;

done:

    free(logits);
    free(tokens);
    llm_kv_free(kv);
    llm_model_free(m);
    llm_threads_free();

    return rc;
}


static int
llm_bench_parse(int argc, char **argv, llm_bench_opts_t *o)
{
    long        *dst, min, max;
    char        *end;
    const char  *name, *val;

    for (int i = 0; i < argc; i++) {
        name = argv[i];

        if (strcmp(name, "--kernels") == 0) {
            o->kernels = 1;
            continue;
        }

        if (i + 1 >= argc) {
            llm_bench_fail("option %s needs a value (or is unknown)", name);
            return LLM_ERR;
        }

        val = argv[++i];
        min = 1;
        max = INT_MAX;

        if (strcmp(name, "--model") == 0) {
            o->model = val;
            continue;

        } else if (strcmp(name, "--backend") == 0) {
            o->backend = val;
            continue;

        } else if (strcmp(name, "--device") == 0) {
            dst = &o->device;
            min = 0;
            max = 1024;

        } else if (strcmp(name, "--tp") == 0) {
            dst = &o->tp;
            max = LLM_TP_MAX;

        } else if (strcmp(name, "--threads") == 0) {
            dst = &o->threads;
            max = 256;

        } else if (strcmp(name, "--prompt-tokens") == 0) {
            dst = &o->prompt;
            max = 1 << 20;

        } else if (strcmp(name, "--gen-tokens") == 0) {
            dst = &o->gen;
            max = 1 << 20;

        } else if (strcmp(name, "--seqs") == 0) {
            dst = &o->seqs;
            max = 4096;

        } else if (strcmp(name, "--reps") == 0) {
            dst = &o->reps;
            max = 1000;

        } else if (strcmp(name, "--bw-mb") == 0) {
            dst = &o->bw_mb;
            min = 16;
            max = 1 << 16;

        } else {
            llm_bench_fail("unknown option %s", name);
            return LLM_ERR;
        }

        errno = 0;
        *dst = strtol(val, &end, 10);

        if (errno != 0 || *end != '\0' || end == val || *dst < min
            || *dst > max)
        {
            llm_bench_fail("%s: \"%s\" is not a number in %ld..%ld", name,
                           val, min, max);
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


/*
 * S sequences through one pool, as the server batches them: each gets
 * the prompt with its first token changed (no two share a prefix), the
 * prompts prefilled in batches of whole sequences up to the model's
 * batch, then G decode steps of all S.
 */
static int
llm_bench_seqs(llm_model_t *m, const llm_bench_opts_t *o,
    const int32_t *prompt, double *prefill, double *decode, double *all)
{
    int               rc, n_vocab, bs, per, n_seqs, first, batch;
    float            *logits;
    double            t;
    int32_t          *blocks, *toks, *next;
    uint64_t          t0, t_pre, t_dec;
    llm_err_t         err;
    llm_kv_pool_t    *pool;
    llm_batch_seq_t  *seqs;

    memset(&err, 0, sizeof(err));

    n_seqs = (int) o->seqs;
    n_vocab = llm_model_config(m)->n_vocab;
    bs = 16;
    per = (int) ((o->prompt + o->gen + bs - 1) / bs);
    rc = LLM_ERR;

    /* the steps decode all of them at once */
    if (n_seqs > llm_model_max_batch(m)
        && llm_model_set_max_batch(m, n_seqs, &err) != LLM_OK)
    {
        return llm_bench_fail("%s", err.errstr);
    }

    batch = llm_model_max_batch(m);

    pool = llm_kv_pool_new(m, n_seqs * per, bs, &err);
    seqs = calloc((size_t) n_seqs, sizeof(llm_batch_seq_t));
    blocks = malloc((size_t) n_seqs * per * sizeof(int32_t));
    toks = malloc((size_t) n_seqs * o->prompt * sizeof(int32_t));
    next = malloc((size_t) n_seqs * sizeof(int32_t));
    logits = malloc((size_t) n_seqs * n_vocab * sizeof(float));

    if (pool == NULL || seqs == NULL || blocks == NULL || toks == NULL
        || next == NULL || logits == NULL)
    {
        llm_bench_fail("%s", pool == NULL ? err.errstr : "out of memory");
        goto done;
    }

    for (int i = 0; i < n_seqs * per; i++) {
        blocks[i] = i;
    }

    for (int i = 0; i < n_seqs; i++) {
        memcpy(toks + (size_t) i * o->prompt, prompt,
               (size_t) o->prompt * sizeof(int32_t));
        toks[(size_t) i * o->prompt] = 3 + i % (n_vocab - 3);
    }

    for (long r = 0; r < o->reps; r++) {
        t0 = llm_now_us();

        for (int i = 0; i < n_seqs; i = first) {
            /* whole sequences up to the batch, at least one */
            for (first = i; first < n_seqs; first++) {
                if (first > i
                    && (long) (first - i + 1) * o->prompt > batch)
                {
                    break;
                }

                seqs[first].tokens = toks + (size_t) first * o->prompt;
                seqs[first].n_tokens = (int) o->prompt;
                seqs[first].pos = 0;
                seqs[first].blocks = blocks + (size_t) first * per;
                seqs[first].n_blocks = per;
                seqs[first].logits = logits + (size_t) first * n_vocab;
            }

            if (llm_model_forward_batch(m, pool, seqs + i, first - i, &err)
                != LLM_OK)
            {
                llm_bench_fail("%s", err.errstr);
                goto done;
            }
        }

        t_pre = llm_now_us() - t0 + 1;
        t0 = llm_now_us();

        for (long g = 0; g < o->gen; g++) {
            for (int i = 0; i < n_seqs; i++) {
                const float  *l = logits + (size_t) i * n_vocab;

                next[i] = 0;
                for (int v = 1; v < n_vocab; v++) {
                    if (l[v] > l[next[i]]) {
                        next[i] = v;
                    }
                }

                seqs[i].tokens = &next[i];
                seqs[i].n_tokens = 1;
                seqs[i].pos = (int) (o->prompt + g);
            }

            if (llm_model_forward_batch(m, pool, seqs, n_seqs, &err)
                != LLM_OK)
            {
                llm_bench_fail("%s", err.errstr);
                goto done;
            }
        }

        t_dec = llm_now_us() - t0 + 1;

        t = (double) n_seqs * o->prompt * 1e6 / (double) t_pre;
        *prefill = t > *prefill ? t : *prefill;
        t = (double) n_seqs * o->gen * 1e6 / (double) t_dec;
        *decode = t > *decode ? t : *decode;
        t = (double) n_seqs * (o->prompt + o->gen) * 1e6
            / (double) (t_pre + t_dec);
        *all = t > *all ? t : *all;
    }

    rc = LLM_OK;

done:

    free(logits);
    free(next);
    free(toks);
    free(blocks);
    free(seqs);
    llm_kv_pool_free(pool);

    return rc;
}


/* bytes per second, best of passes over a buffer of len bytes */
static double
llm_bench_bandwidth(size_t len, int passes)
{
    double         best, rate;
    uint64_t       t0, dt;
    llm_bw_job_t   job;
    uint8_t       *buf;

    buf = malloc(len);
    if (buf == NULL) {
        return 0.0;
    }

    /* touch every page, with data that is not all zeros */
    for (size_t i = 0; i < len; i += 64) {
        buf[i] = (uint8_t) i;
    }

    memset(&job, 0, sizeof(job));
    job.buf = buf;
    job.len = len;
    best = 0.0;

    for (int p = 0; p < passes; p++) {
        t0 = llm_now_us();
        llm_threads_run(llm_bw_task, &job,
                        (int64_t) ((len + LLM_BENCH_CHUNK - 1)
                                   / LLM_BENCH_CHUNK));
        dt = llm_now_us() - t0;

        rate = (double) len * 1e6 / (double) (dt + 1);
        best = rate > best ? rate : best;
    }

    free(buf);

    return best;
}


/* sums one chunk with four independent 16-byte accumulators: as many
 * loads in flight as the core allows, whatever the vector width */
static void
llm_bw_task(void *arg, int64_t task, int thread)
{
    typedef uint64_t  v2_t __attribute__((vector_size(16), aligned(16)));

    size_t         off, end;
    v2_t           s0, s1, s2, s3;
    const v2_t    *p;
    llm_bw_job_t  *job;

    job = arg;
    off = (size_t) task * LLM_BENCH_CHUNK;
    end = off + LLM_BENCH_CHUNK;
    if (end > job->len) {
        end = job->len;
    }

    s0 = (v2_t) { 0, 0 };
    s1 = s0;
    s2 = s0;
    s3 = s0;

    /* malloc's large blocks are page-aligned plus a header: round in */
    off = (off + 63) & ~(size_t) 63;

    for ( ; off + 64 <= end; off += 64) {
        p = (const v2_t *) (job->buf + off);
        s0 += p[0];
        s1 += p[1];
        s2 += p[2];
        s3 += p[3];
    }

    s0 += s1 + s2 + s3;
    job->sink[thread & 255] += s0[0] + s0[1];
}


/*
 * What one decode step reads: every tensor but the token embeddings, of
 * which it reads one row (unless they double as the output matrix).
 * types gets a summary: " Q8_0 1170.1 MB, F32 0.2 MB".
 */
static size_t
llm_bench_weight_bytes(const llm_model_t *m, char *types, size_t types_len)
{
    int                       tied;
    size_t                    total, by_type[LLM_TYPE_COUNT], len;
    const llm_gguf_t         *g;
    const llm_gguf_tensor_t  *t;

    g = llm_model_gguf(m);
    tied = llm_gguf_tensor(g, "output.weight") == NULL;
    memset(by_type, 0, sizeof(by_type));
    total = 0;

    for (size_t i = 0; i < llm_gguf_n_tensors(g); i++) {
        size_t  n;

        t = llm_gguf_tensor_at(g, i);
        n = t->nbytes;

        if (!tied && strcmp(t->name, "token_embd.weight") == 0) {
            n = llm_ggml_row_size(t->type, t->ne[0]);
        }

        total += n;
        if (t->type < LLM_TYPE_COUNT) {
            by_type[t->type] += n;
        }
    }

    types[0] = '\0';
    len = 0;

    for (uint32_t k = 0; k < LLM_TYPE_COUNT; k++) {
        if (by_type[k] >= 100000 && len < types_len) {
            len += (size_t) snprintf(types + len, types_len - len,
                                     "%s %s %.1f MB", len ? "," : "",
                                     llm_ggml_type_name(k),
                                     by_type[k] / 1e6);
        }
    }

    return total;
}


static int
llm_bench_kernels(void)
{
    static const uint32_t  types[] = {
        LLM_TYPE_F32, LLM_TYPE_F16, LLM_TYPE_BF16, LLM_TYPE_Q8_0,
        LLM_TYPE_Q4_0, LLM_TYPE_Q4_K, LLM_TYPE_Q5_K, LLM_TYPE_Q6_K
    };
    double                 one, many;
    size_t                 rb;

    printf("cpu       %s kernels, %d threads; rates per CPU-second\n",
           llm_quant_level_name(llm_quant_level()), llm_threads_count());
    printf("%-6s %28s %28s\n", "type", "1 token x 128 x 2048",
           "128 tokens x 2048 x 2048");

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        rb = llm_ggml_row_size(types[i], 2048);
        one = llm_bench_matmul(types[i], 128, 2048, 1, 200);
        many = llm_bench_matmul(types[i], 2048, 2048, 128, 2);

        if (one <= 0.0 || many <= 0.0) {
            return llm_bench_fail("out of memory");
        }

        printf("%-6s %9.1f GB/s %7.1f GMAC/s %20.1f GMAC/s\n",
               llm_ggml_type_name(types[i]), 128.0 * rb / one / 1e9,
               128.0 * 2048 / one / 1e9, 2048.0 * 2048 * 128 / many / 1e9);
    }

    return 0;
}


/* the least CPU-seconds one call took, best of reps */
static double
llm_bench_matmul(uint32_t type, int64_t rows, int64_t cols, int64_t n_tok,
    int reps)
{
    float     *x, *out, *row;
    double     best, c0, dt;
    size_t     rb;
    uint8_t   *w;
    uint64_t   rng;

    rb = llm_ggml_row_size(type, cols);
    x = malloc((size_t) (n_tok * cols) * sizeof(float));
    out = malloc((size_t) (n_tok * rows) * sizeof(float));
    row = malloc((size_t) cols * sizeof(float));
    w = malloc(rb * (size_t) rows);
    best = 0.0;

    if (x == NULL || out == NULL || row == NULL || w == NULL) {
        goto done;
    }

    rng = 0x2545f4914f6cdd1dULL;

    for (int64_t i = 0; i < n_tok * cols + rows * cols; i++) {
        float  v;

        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        v = (float) (rng % 2001) / 1000.0f - 1.0f;

        if (i < n_tok * cols) {
            x[i] = v;
            continue;
        }

        row[(i - n_tok * cols) % cols] = v * 0.05f;

        if ((i - n_tok * cols) % cols == cols - 1) {
            (void) llm_quantize_row(type, row,
                                    w + rb * (size_t) ((i - n_tok * cols)
                                                       / cols), cols);
        }
    }

    if (llm_matmul_reserve(n_tok, cols, NULL) != LLM_OK) {
        goto done;
    }

    best = 1e30;

    for (int r = 0; r < reps; r++) {
        c0 = llm_bench_cpu();
        llm_matmul(out, x, n_tok, w, type, rows, cols);
        dt = llm_bench_cpu() - c0;
        best = dt < best ? dt : best;
    }

done:

    free(x);
    free(out);
    free(row);
    free(w);

    return best;
}


/* seconds of CPU this process has used, all threads */
static double
llm_bench_cpu(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}


static int
llm_bench_fail(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "llm-engine bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");

    return 1;
}
