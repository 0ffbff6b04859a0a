/*
 * Copyright (C) ngx_llm developers
 *
 * llm-engine: the daemon (serve) and the command-line tools around the
 * same engine code (generate, tokenize, logits).  Output goes to stdout,
 * errors to stderr as one line, and the exit status says which.
 */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llm_bench.h"
#include "llm_common.h"
#include "llm_model.h"
#include "llm_sampler.h"
#include "llm_serve.h"
#include "llm_template.h"
#include "llm_tokenizer.h"


#define LLM_DEFAULT_MAX_TOKENS  256


/* the options of the tools; each tool reads the ones it knows */
typedef struct {
    const char  *model;
    const char  *prompt;
    const char  *text;
    const char  *file;
    const char  *tokens;
    long         max_tokens;
    float        temperature;
    float        top_p;
    uint64_t     seed;
    int          have_seed;
    int          no_bos;
    long         tp;
    long         device;
    const char  *backend;
} llm_opts_t;


static void llm_usage(FILE *f);
static int llm_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int llm_parse_opts(int argc, char **argv, llm_opts_t *o);
static int llm_parse_long(const char *name, const char *s, long min,
    long max, long *out);
static int llm_parse_float(const char *name, const char *s, float *out);
static int llm_cmd_generate(llm_opts_t *o);
static int llm_cmd_tokenize(llm_opts_t *o);
static int llm_cmd_logits(llm_opts_t *o);
static char *llm_read_file(const char *path, size_t *len);
static int llm_load(const llm_opts_t *o, llm_model_t **m, llm_err_t *err);


int
main(int argc, char **argv)
{
    const char  *cmd;
    llm_opts_t   o;

    if (argc < 2) {
        llm_usage(stderr);
        return 2;
    }

    cmd = argv[1];

    if (strcmp(cmd, "serve") == 0) {
        return llm_serve_main(argc - 1, argv + 1);
    }

    if (strcmp(cmd, "bench") == 0) {
        return llm_bench_main(argc - 1, argv + 1);
    }

    if (strcmp(cmd, "render") == 0) {
        return llm_template_render_main(argc - 1, argv + 1);
    }

    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0
        || strcmp(cmd, "help") == 0)
    {
        llm_usage(stdout);
        return 0;
    }

    if (strcmp(cmd, "generate") != 0 && strcmp(cmd, "tokenize") != 0
        && strcmp(cmd, "logits") != 0)
    {
        fprintf(stderr, "llm-engine: unknown command \"%s\"\n", cmd);
        llm_usage(stderr);
        return 2;
    }

    memset(&o, 0, sizeof(llm_opts_t));
    o.max_tokens = LLM_DEFAULT_MAX_TOKENS;
    o.temperature = 1.0f;
    o.top_p = 1.0f;

    if (llm_parse_opts(argc - 2, argv + 2, &o) != LLM_OK) {
        return 2;
    }

    if (o.model == NULL) {
        return llm_fail("%s: --model is required", cmd);
    }

    if (strcmp(cmd, "generate") == 0) {
        return llm_cmd_generate(&o);
    }

    if (strcmp(cmd, "tokenize") == 0) {
        return llm_cmd_tokenize(&o);
    }

    return llm_cmd_logits(&o);
}


static void
llm_usage(FILE *f)
{
    fprintf(f,
        "usage: llm-engine COMMAND [options]\n"
        "\n"
        "  serve ...                      run the engine daemon for nginx\n"
        "  bench --model M [--threads N] [--prompt-tokens P]\n"
        "        [--gen-tokens G]         prefill and decode tok/s, and\n"
        "                                 decode against memory bandwidth\n"
        "                                 (llm-engine serve --help)\n"
        "  generate --model M --prompt TEXT [--max-tokens N]\n"
        "           [--temperature T] [--top-p P] [--seed S]\n"
        "                                 print a continuation of TEXT\n"
        "                                 (defaults: %d tokens, T 1, P 1,\n"
        "                                 a seed from the clock)\n"
        "  tokenize --model M (--text TEXT | --file F) [--no-bos]\n"
        "                                 print token ids\n"
        "  logits --model M --tokens 1,2,3\n"
        "                                 print every position's logits as\n"
        "                                 JSON\n"
        "  render --template FILE --messages JSON|@FILE [--bos S] [--eos S]\n"
        "         [--date D] [--vars JSON|@FILE] [--no-generation-prompt]\n"
        "                                 print a chat template's rendering\n"
        "\n"
        "  generate, logits, bench and serve also take\n"
        "    --backend cpu|cuda|auto      where to compute (cpu; auto: a\n"
        "                                 GPU if one is usable)\n"
        "    --device N                   the first GPU (0)\n"
        "    --tp N                       split heads and FFN columns over\n"
        "                                 N shards (shard i: GPU device+i)\n",
        LLM_DEFAULT_MAX_TOKENS);
}


static int
llm_fail(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "llm-engine: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");

    return 1;
}


static int
llm_parse_opts(int argc, char **argv, llm_opts_t *o)
{
    long         seed;
    const char  *name, *val;

    for (int i = 0; i < argc; i++) {
        name = argv[i];

        if (strcmp(name, "--no-bos") == 0) {
            o->no_bos = 1;
            continue;
        }

        if (i + 1 >= argc) {
            llm_fail("option %s needs a value (or is unknown)", name);
            return LLM_ERR;
        }

        val = argv[++i];

        if (strcmp(name, "--model") == 0) {
            o->model = val;

        } else if (strcmp(name, "--prompt") == 0) {
            o->prompt = val;

        } else if (strcmp(name, "--text") == 0) {
            o->text = val;

        } else if (strcmp(name, "--file") == 0) {
            o->file = val;

        } else if (strcmp(name, "--tokens") == 0) {
            o->tokens = val;

        } else if (strcmp(name, "--max-tokens") == 0) {
            if (llm_parse_long(name, val, 0, INT_MAX, &o->max_tokens)
                != LLM_OK)
            {
                return LLM_ERR;
            }

        } else if (strcmp(name, "--temperature") == 0) {
            if (llm_parse_float(name, val, &o->temperature) != LLM_OK) {
                return LLM_ERR;
            }

        } else if (strcmp(name, "--top-p") == 0) {
            if (llm_parse_float(name, val, &o->top_p) != LLM_OK) {
                return LLM_ERR;
            }

        } else if (strcmp(name, "--backend") == 0) {
            o->backend = val;

        } else if (strcmp(name, "--device") == 0) {
            if (llm_parse_long(name, val, 0, 1024, &o->device) != LLM_OK) {
                return LLM_ERR;
            }

        } else if (strcmp(name, "--tp") == 0) {
            if (llm_parse_long(name, val, 1, LLM_TP_MAX, &o->tp) != LLM_OK)
            {
                return LLM_ERR;
            }

        } else if (strcmp(name, "--seed") == 0) {
            if (llm_parse_long(name, val, LONG_MIN, LONG_MAX, &seed)
                != LLM_OK)
            {
                return LLM_ERR;
            }

            o->seed = (uint64_t) seed;
            o->have_seed = 1;

        } else {
            llm_fail("unknown option %s", name);
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_parse_long(const char *name, const char *s, long min, long max,
    long *out)
{
    long   v;
    char  *end;

    errno = 0;
    v = strtol(s, &end, 10);

    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        llm_fail("%s: bad value \"%s\"", name, s);
        return LLM_ERR;
    }

    *out = v;
    return LLM_OK;
}


static int
llm_parse_float(const char *name, const char *s, float *out)
{
    char   *end;
    double  v;

    errno = 0;
    v = strtod(s, &end);

    if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) {
        llm_fail("%s: bad value \"%s\"", name, s);
        return LLM_ERR;
    }

    *out = (float) v;
    return LLM_OK;
}


static int
llm_cmd_generate(llm_opts_t *o)
{
    int                     n, n_ctx, pos, rc;
    char                   *text;
    float                  *logits;
    size_t                  len, cap;
    int32_t                *tokens, id;
    llm_kv_t               *kv;
    llm_err_t               err = { 0 };
    llm_model_t            *m;
    llm_detok_t             detok;
    llm_sampler_t           sampler;
    const llm_config_t     *c;
    const llm_tokenizer_t  *tok;

    if (o->prompt == NULL) {
        return llm_fail("generate: --prompt is required");
    }

    if (llm_load(o, &m, &err) != LLM_OK) {
        return llm_fail("%s", err.errstr);
    }

    c = llm_model_config(m);
    tok = llm_model_tokenizer(m);

    if (!o->have_seed) {
        o->seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32)
                  ^ llm_now_us();
    }

    n = llm_tokenize(tok, o->prompt, strlen(o->prompt),
                     llm_tokenizer_wants_bos(tok), NULL, 0, &err);
    if (n < 0) {
        llm_model_free(m);
        return llm_fail("%s", err.errstr);
    }

    if (n == 0) {
        llm_model_free(m);
        return llm_fail("generate: the prompt is empty");
    }

    if (n >= c->n_ctx) {
        llm_model_free(m);
        return llm_fail("generate: the prompt is %d tokens, the context "
                        "holds %d", n, c->n_ctx);
    }

    /* room for the prompt and every token asked for, within context */
    n_ctx = o->max_tokens < c->n_ctx - n ? n + (int) o->max_tokens
                                         : c->n_ctx;

    cap = llm_tokenizer_max_piece(tok) * 3 + 64;
    tokens = malloc((size_t) n * sizeof(int32_t));
    logits = malloc((size_t) c->n_vocab * sizeof(float));
    text = malloc(cap);
    kv = llm_kv_new(m, n_ctx, &err);

    rc = 0;

    if (tokens == NULL || logits == NULL || text == NULL || kv == NULL) {
        rc = llm_fail("generate: %s",
                      kv == NULL ? err.errstr : "out of memory");
        goto done;
    }

    if (llm_sampler_init(&sampler, c->n_vocab, o->temperature, o->top_p,
                         o->seed, &err)
        != LLM_OK)
    {
        rc = llm_fail("generate: %s", err.errstr);
        goto done;
    }

    (void) llm_tokenize(tok, o->prompt, strlen(o->prompt),
                        llm_tokenizer_wants_bos(tok), tokens, n, &err);

    llm_detok_init(&detok);

    if (llm_model_forward(m, kv, tokens, n, 0, logits, 0, &err) != LLM_OK) {
        rc = llm_fail("generate: %s", err.errstr);
        goto sampler;
    }

    pos = n;

    for (long i = 0; i < o->max_tokens; i++) {
        id = llm_sample(&sampler, logits, NULL);

        if (llm_tokenizer_is_eog(tok, id)) {
            break;
        }

        len = llm_detok_push(&detok, tok, id, text, cap);
        fwrite(text, 1, len, stdout);
        fflush(stdout);

        if (i + 1 == o->max_tokens || pos >= n_ctx) {
            break;
        }

        if (llm_model_forward(m, kv, &id, 1, pos, logits, 0, &err)
            != LLM_OK)
        {
            rc = llm_fail("generate: %s", err.errstr);
            goto sampler;
        }

        pos++;
    }

    len = llm_detok_flush(&detok, text, cap);
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);

sampler:

    llm_sampler_free(&sampler);

done:

    llm_kv_free(kv);
    free(text);
    free(logits);
    free(tokens);
    llm_model_free(m);

    if (fflush(stdout) != 0 && rc == 0) {
        rc = llm_fail("generate: writing the output: %s", strerror(errno));
    }

    return rc;
}


static int
llm_cmd_tokenize(llm_opts_t *o)
{
    int               n, rc, flags;
    char             *buf;
    size_t            len;
    int32_t          *ids;
    llm_err_t         err = { 0 };
    const char       *text;
    llm_tokenizer_t  *tok;

    if ((o->text == NULL) == (o->file == NULL)) {
        return llm_fail("tokenize: give one of --text or --file");
    }

    buf = NULL;

    if (o->file != NULL) {
        buf = llm_read_file(o->file, &len);
        if (buf == NULL) {
            return llm_fail("%s: %s", o->file, strerror(errno));
        }

        text = buf;

    } else {
        text = o->text;
        len = strlen(text);
    }

    /* the tokenizer alone: the file may be a vocabulary without weights */

    if (llm_tokenizer_load(&tok, o->model, &err) != LLM_OK) {
        free(buf);
        return llm_fail("%s", err.errstr);
    }

    /* BOS and EOS as the model asks (add_bos_token, add_eos_token);
     * --no-bos leaves both out, as the vocabulary fixtures are */

    flags = 0;

    if (!o->no_bos && llm_tokenizer_wants_bos(tok)) {
        flags |= LLM_TOK_ADD_BOS;
    }

    if (!o->no_bos && llm_tokenizer_wants_eos(tok)) {
        flags |= LLM_TOK_ADD_EOS;
    }

    rc = 0;
    n = llm_tokenize_ex(tok, text, len, flags, NULL, 0, &err);

    ids = n > 0 ? malloc((size_t) n * sizeof(int32_t)) : NULL;

    if (n < 0) {
        rc = llm_fail("tokenize: %s", err.errstr);

    } else if (n > 0 && ids == NULL) {
        rc = llm_fail("tokenize: out of memory");

    } else {
        if (n > 0) {
            (void) llm_tokenize_ex(tok, text, len, flags, ids, n, &err);
        }

        for (int i = 0; i < n; i++) {
            printf(i == 0 ? "%d" : " %d", ids[i]);
        }

        printf("\n");
    }

    free(ids);
    llm_tokenizer_free(tok);
    free(buf);

    if (fflush(stdout) != 0 && rc == 0) {
        rc = llm_fail("tokenize: writing the output: %s", strerror(errno));
    }

    return rc;
}


static int
llm_cmd_logits(llm_opts_t *o)
{
    int                  n, rc;
    long                 v;
    char                *end;
    float               *logits, x;
    int32_t             *tokens;
    llm_kv_t            *kv;
    llm_err_t            err = { 0 };
    llm_model_t         *m;
    const char          *p;
    const llm_config_t  *c;

    if (o->tokens == NULL) {
        return llm_fail("logits: --tokens is required");
    }

    /* count, then parse: a comma-separated list of ids */

    n = 1;
    for (p = o->tokens; *p != '\0'; p++) {
        n += *p == ',';
    }

    tokens = malloc((size_t) n * sizeof(int32_t));
    if (tokens == NULL) {
        return llm_fail("logits: out of memory");
    }

    p = o->tokens;
    for (int i = 0; i < n; i++) {
        errno = 0;
        v = strtol(p, &end, 10);

        if (errno != 0 || end == p || v < 0 || v > INT32_MAX
            || (*end != ',' && *end != '\0'))
        {
            free(tokens);
            return llm_fail("logits: bad token list \"%s\"", o->tokens);
        }

        tokens[i] = (int32_t) v;
        p = end + 1;
    }

    if (llm_load(o, &m, &err) != LLM_OK) {
        free(tokens);
        return llm_fail("%s", err.errstr);
    }

    c = llm_model_config(m);
    rc = 0;

    logits = malloc((size_t) n * (size_t) c->n_vocab * sizeof(float));
    kv = llm_kv_new(m, n < c->n_ctx ? n : c->n_ctx, &err);

    if (logits == NULL || kv == NULL) {
        rc = llm_fail("logits: %s",
                      kv == NULL ? err.errstr : "out of memory");
        goto done;
    }

    if (llm_model_forward(m, kv, tokens, n, 0, logits, 1, &err) != LLM_OK) {
        rc = llm_fail("logits: %s", err.errstr);
        goto done;
    }

    /* %.9g round-trips a float; JSON has no NaN or infinity */

    printf("{\"n_vocab\": %d, \"logits\": [", c->n_vocab);

    for (int i = 0; i < n; i++) {
        printf(i == 0 ? "[" : ", [");

        for (int j = 0; j < c->n_vocab; j++) {
            x = logits[(size_t) i * (size_t) c->n_vocab + (size_t) j];

            if (isfinite(x)) {
                printf(j == 0 ? "%.9g" : ", %.9g", (double) x);

            } else {
                printf(j == 0 ? "null" : ", null");
            }
        }

        printf("]");
    }

    printf("]}\n");

done:

    llm_kv_free(kv);
    free(logits);
    llm_model_free(m);
    free(tokens);

    if (fflush(stdout) != 0 && rc == 0) {
        rc = llm_fail("logits: writing the output: %s", strerror(errno));
    }

    return rc;
}


/* the model where --backend, --device and --tp say */
static int
llm_load(const llm_opts_t *o, llm_model_t **m, llm_err_t *err)
{
    llm_model_opts_t  mo;

    memset(&mo, 0, sizeof(mo));
    mo.backend = o->backend;
    mo.device = (int) o->device;
    mo.tp = (int) o->tp;

    return llm_model_load_opts(m, o->model, &mo, err);
}


static char *
llm_read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf, *nb;
    size_t   n, cap;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    cap = 65536;
    n = 0;
    buf = malloc(cap);

    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);

        if (n < cap) {
            break;
        }

        cap *= 2;
        nb = realloc(buf, cap);
        if (nb == NULL) {
            free(buf);
            errno = ENOMEM;
            buf = NULL;
        }

        buf = nb;
    }

    if (buf != NULL && ferror(f)) {
        free(buf);
        buf = NULL;
        errno = EIO;
    }

    fclose(f);
    *len = n;
    return buf;
}
