/*
 * Copyright (C) ngx_llm developers
 *
 * `llm-engine serve`: loads the models, opens the shared memory and the
 * socket, and runs the serving loop.  One thread owns the models and
 * every sequence; each turn of the loop it polls the sockets and the
 * doorbell, admits submitted slots, advances each running sequence by one
 * step (a chunk of its prompt, or one generated token) and rings the
 * doorbells of the workers it wrote events for.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "llm_ipc.h"
#include "llm_log.h"
#include "llm_model.h"
#include "llm_ring.h"
#include "llm_sampler.h"
#include "llm_serve.h"
#include "llm_tokenizer.h"


#define LLM_PREFILL_CHUNK   256       /* prompt tokens per step */
#define LLM_TEXT_MAX        512       /* bytes of text one token may add */


typedef struct {
    char                 name[LLM_MODEL_NAME_MAX];
    llm_model_t         *model;
    const llm_config_t  *cfg;
    int                  n_ctx;       /* served context length */
} llm_serve_model_t;


typedef struct {
    unsigned             active:1;
    unsigned             paused:1;    /* its ring was full */
    uint32_t             slot;
    uint32_t             owner;
    llm_serve_model_t   *m;
    llm_kv_t            *kv;
    llm_sampler_t        sampler;
    llm_detok_t          detok;
    int32_t             *tokens;      /* prompt, then generated; n_ctx */
    int                  n_prompt;
    int                  n_tokens;    /* prompt + generated so far */
    int                  n_past;      /* tokens whose K/V are cached */
    int                  max_tokens;
    int                  n_gen;
    float               *logits;      /* n_vocab */
    uint64_t             t_submit;
    uint64_t             t_start;
    uint64_t             t_first;

    uint32_t             finish;      /* reason once decided, else 0 */

    /* an event that did not fit in the ring yet; everything above pend
     * is reset when the sequence starts and ends */
    uint16_t             pend_type;   /* 0: none */
    uint32_t             pend_len;
    unsigned char        pend[LLM_EVENT_MAX];
} llm_seq_t;


typedef struct {
    llm_ipc_t            ipc;
    int                  n_models;
    llm_serve_model_t    models[LLM_MAX_MODELS];
    int                  max_seqs;
    llm_seq_t           *seqs;
    int                  n_active;
    int                  step_delay_ms;   /* fault mode for tests */
} llm_server_t;


static volatile sig_atomic_t  llm_stop;


static void llm_serve_usage(void);
static int llm_serve_load(llm_server_t *srv, const char *spec, int ctx_cap);
static void llm_serve_loop(llm_server_t *srv);
static void llm_serve_admit(llm_server_t *srv);
static int llm_serve_start(llm_server_t *srv, llm_seq_t *q, uint32_t slot,
    const char *req, size_t len);
static void llm_serve_step(llm_server_t *srv, llm_seq_t *q);
static int llm_serve_emit(llm_server_t *srv, llm_seq_t *q, uint16_t type,
    const void *a, uint32_t alen, const void *b, uint32_t blen);
static void llm_serve_error(llm_server_t *srv, llm_seq_t *q, uint16_t status,
    const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void llm_serve_done(llm_server_t *srv, llm_seq_t *q);
static void llm_serve_release(llm_server_t *srv, llm_seq_t *q, int finished);
static void llm_serve_reclaim(void *data, uint32_t slot);
static void llm_serve_signal(int signo);


static void
llm_serve_usage(void)
{
    fprintf(stderr,
        "usage: llm-engine serve --socket PATH --model NAME=PATH"
        " [--model NAME=PATH ...]\n"
        "         [--slots N] [--max-seqs N] [--ctx N]"
        " [--socket-mode OCTAL] [--log-level L]\n"
        "\n"
        "  --socket PATH       unix socket nginx workers connect to\n"
        "  --model NAME=PATH   serve the GGUF file PATH as NAME"
        " (repeatable)\n"
        "  --slots N           request slots in shared memory (64)\n"
        "  --max-seqs N        sequences generated at once (16)\n"
        "  --ctx N             cap on each model's context length"
        " (4096)\n"
        "  --socket-mode M     permissions of the socket (0660)\n"
        "  --log-level L       error, warn, info or debug (info)\n"
        "  --debug-step-delay MS  sleep after every step (a fault mode for"
        " tests)\n");
}


int
llm_serve_main(int argc, char **argv)
{
    int                  c, ctx_cap, rc;
    char                *end;
    const char          *models[LLM_MAX_MODELS];
    int                  n_models;
    llm_err_t            err;
    llm_server_t        *srv;
    llm_ipc_conf_t       conf;
    struct sigaction     sa;

    static const struct option  opts[] = {
        { "socket",      required_argument, NULL, 's' },
        { "model",       required_argument, NULL, 'm' },
        { "slots",       required_argument, NULL, 'n' },
        { "max-seqs",    required_argument, NULL, 'q' },
        { "ctx",         required_argument, NULL, 'c' },
        { "socket-mode", required_argument, NULL, 'p' },
        { "log-level",   required_argument, NULL, 'l' },
        { "debug-step-delay", required_argument, NULL, 'd' },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    memset(&conf, 0, sizeof(conf));
    conf.n_slots = 64;
    conf.req_max = 256 * 1024;
    conf.ring_size = 64 * 1024;
    conf.socket_mode = 0660;

    srv = calloc(1, sizeof(llm_server_t));
    if (srv == NULL) {
        fprintf(stderr, "llm-engine: out of memory\n");
        return 1;
    }
    srv->max_seqs = 16;
    ctx_cap = 4096;
    n_models = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {

        case 's':
            conf.socket_path = optarg;
            break;

        case 'm':
            if (n_models == LLM_MAX_MODELS) {
                fprintf(stderr, "llm-engine: more than %d models\n",
                        LLM_MAX_MODELS);
                return 2;
            }
            models[n_models++] = optarg;
            break;

        case 'n':
        case 'q':
        case 'c':
        case 'd':
            errno = 0;
            rc = (int) strtol(optarg, &end, 10);
            if (errno || *end != '\0' || rc <= 0 || rc > 1 << 20) {
                fprintf(stderr, "llm-engine: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (c == 'n') {
                conf.n_slots = (uint32_t) rc;
            } else if (c == 'q') {
                srv->max_seqs = rc;
            } else if (c == 'd') {
                srv->step_delay_ms = rc;
            } else {
                ctx_cap = rc;
            }
            break;

        case 'p':
            conf.socket_mode = (unsigned) strtoul(optarg, &end, 8);
            if (*end != '\0' || conf.socket_mode > 0777) {
                fprintf(stderr, "llm-engine: bad mode \"%s\"\n", optarg);
                return 2;
            }
            break;

        case 'l':
            if (strcmp(optarg, "error") == 0) {
                llm_log_level = LLM_LOG_ERR;
            } else if (strcmp(optarg, "warn") == 0) {
                llm_log_level = LLM_LOG_WARN;
            } else if (strcmp(optarg, "info") == 0) {
                llm_log_level = LLM_LOG_INFO;
            } else if (strcmp(optarg, "debug") == 0) {
                llm_log_level = LLM_LOG_DEBUG;
            } else {
                fprintf(stderr, "llm-engine: bad log level \"%s\"\n", optarg);
                return 2;
            }
            break;

        case 'h':
            llm_serve_usage();
            return 0;

        default:
            llm_serve_usage();
            return 2;
        }
    }

    if (optind != argc || conf.socket_path == NULL || n_models == 0) {
        llm_serve_usage();
        return 2;
    }

    for (int i = 0; i < n_models; i++) {
        if (llm_serve_load(srv, models[i], ctx_cap) != LLM_OK) {
            return 1;
        }
    }

    srv->seqs = calloc((size_t) srv->max_seqs, sizeof(llm_seq_t));
    if (srv->seqs == NULL) {
        fprintf(stderr, "llm-engine: out of memory\n");
        return 1;
    }

    if (llm_ipc_init(&srv->ipc, &conf, &err) != LLM_OK) {
        fprintf(stderr, "llm-engine: %s\n", err.errstr);
        return 1;
    }

    for (int i = 0; i < srv->n_models; i++) {
        llm_serve_model_t  *m = &srv->models[i];

        if (llm_ipc_add_model(&srv->ipc, m->name, (uint32_t) m->n_ctx,
                              (uint32_t) m->cfg->n_vocab, &err)
            != LLM_OK)
        {
            fprintf(stderr, "llm-engine: %s\n", err.errstr);
            llm_ipc_free(&srv->ipc);
            return 1;
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = llm_serve_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    llm_log(LLM_LOG_INFO, "serving %d model(s) on %s, %u slots, "
            "%d sequences at once", srv->n_models, conf.socket_path,
            conf.n_slots, srv->max_seqs);

    llm_serve_loop(srv);

    llm_log(LLM_LOG_INFO, "stopping");

    for (int i = 0; i < srv->max_seqs; i++) {
        if (srv->seqs[i].active) {
            llm_serve_error(srv, &srv->seqs[i], 503, "server_error",
                            "engine_stopping", "the engine is stopping");
        }
    }
    llm_ipc_ring(&srv->ipc);
    llm_ipc_free(&srv->ipc);

    for (int i = 0; i < srv->n_models; i++) {
        llm_model_free(srv->models[i].model);
    }
    free(srv->seqs);
    free(srv);

    return 0;
}


static int
llm_serve_load(llm_server_t *srv, const char *spec, int ctx_cap)
{
    size_t              len;
    const char         *eq;
    llm_err_t           err;
    llm_serve_model_t  *m;

    eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || eq[1] == '\0') {
        fprintf(stderr, "llm-engine: --model wants NAME=PATH, not \"%s\"\n",
                spec);
        return LLM_ERR;
    }

    len = (size_t) (eq - spec);
    if (len >= LLM_MODEL_NAME_MAX) {
        fprintf(stderr, "llm-engine: model name too long in \"%s\"\n", spec);
        return LLM_ERR;
    }

    m = &srv->models[srv->n_models];
    memcpy(m->name, spec, len);
    m->name[len] = '\0';

    if (llm_model_load(&m->model, eq + 1, &err) != LLM_OK) {
        fprintf(stderr, "llm-engine: %s\n", err.errstr);
        return LLM_ERR;
    }

    m->cfg = llm_model_config(m->model);
    m->n_ctx = m->cfg->n_ctx > 0 && m->cfg->n_ctx < ctx_cap ? m->cfg->n_ctx
                                                            : ctx_cap;
    srv->n_models++;

    llm_log(LLM_LOG_INFO, "model %s: %s, %s, %d layers, d=%d, vocab %d, "
            "context %d", m->name, eq + 1, m->cfg->arch, m->cfg->n_layer,
            m->cfg->n_embd, m->cfg->n_vocab, m->n_ctx);

    return LLM_OK;
}


static void
llm_serve_signal(int signo)
{
    (void) signo;
    llm_stop = 1;
}


static void
llm_serve_loop(llm_server_t *srv)
{
    int  timeout, runnable, paused;

    while (!llm_stop) {
        runnable = 0;
        paused = 0;
        for (int i = 0; i < srv->max_seqs; i++) {
            if (srv->seqs[i].active) {
                if (srv->seqs[i].paused) {
                    paused = 1;
                } else {
                    runnable = 1;
                }
            }
        }

        /*
         * Busy: just look at the sockets.  A paused sequence waits for its
         * worker's ring on the doorbell, with a short timer as a net.
         */
        timeout = runnable ? 0 : (paused ? 20 : 1000);

        if (llm_ipc_poll(&srv->ipc, timeout, llm_serve_reclaim, srv) == -1
            && errno != EINTR)
        {
            llm_log(LLM_LOG_ERR, "epoll_wait: %s", strerror(errno));
            return;
        }

        llm_serve_admit(srv);

        for (int i = 0; i < srv->max_seqs; i++) {
            if (srv->seqs[i].active) {
                llm_serve_step(srv, &srv->seqs[i]);
            }
        }

        llm_ipc_ring(&srv->ipc);

        if (srv->step_delay_ms && runnable) {
            usleep((useconds_t) srv->step_delay_ms * 1000);
        }
    }
}


/* SUBMITTED slots become sequences while there is room for them */
static void
llm_serve_admit(llm_server_t *srv)
{
    char               *buf;
    uint32_t            w, len;
    llm_seq_t          *q;
    llm_slot_t         *s;
    llm_shm_header_t   *h;

    h = srv->ipc.hdr;

    for (uint32_t i = 0; i < h->n_slots; i++) {
        if (srv->n_active == srv->max_seqs) {
            return;
        }

        s = llm_shm_slot(srv->ipc.base, h, i);
        w = atomic_load_explicit(&s->state, memory_order_acquire);
        if (llm_slot_state(w) != LLM_SLOT_SUBMITTED) {
            continue;
        }

        if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
                llm_slot_word(LLM_SLOT_RUNNING, llm_slot_owner(w)),
                memory_order_acq_rel, memory_order_acquire))
        {
            continue;     /* cancelled meanwhile: seen on the next scan */
        }

        q = NULL;
        for (int j = 0; j < srv->max_seqs; j++) {
            if (!srv->seqs[j].active) {
                q = &srv->seqs[j];
                break;
            }
        }

        memset(q, 0, offsetof(llm_seq_t, pend));
        q->active = 1;
        q->slot = i;
        q->owner = llm_slot_owner(w);
        q->t_submit = llm_now_us();
        srv->n_active++;

        /* copy the request out of shared memory before looking at it */
        len = s->req_len;
        if (len > h->req_max) {
            llm_serve_error(srv, q, 400, "invalid_request_error", "",
                            "request length %u over the limit %u", len,
                            h->req_max);
            continue;
        }

        buf = malloc(len + 1);
        if (buf == NULL) {
            llm_serve_error(srv, q, 503, "server_error", "",
                            "engine out of memory");
            continue;
        }
        memcpy(buf, llm_slot_req(s, h), len);
        buf[len] = '\0';

        atomic_fetch_add_explicit(&h->stats[LLM_STAT_REQUESTS], 1,
                                  memory_order_relaxed);

        if (llm_serve_start(srv, q, i, buf, len) == LLM_OK) {
            atomic_fetch_add_explicit(&h->stats[LLM_STAT_RUNNING], 1,
                                      memory_order_relaxed);
        }
        free(buf);
    }
}


static int
llm_json_number(json_t *o, const char *key, double lo, double hi,
    double *out)
{
    json_t  *v;

    v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_number(v)) {
        return -1;
    }
    *out = json_number_value(v);
    if (!(*out >= lo && *out <= hi)) {
        return -1;
    }
    return 0;
}


/* parses and checks the request, then tokenizes the prompt */
static int
llm_serve_start(llm_server_t *srv, llm_seq_t *q, uint32_t slot,
    const char *req, size_t len)
{
    int                     n;
    double                  temperature, top_p, max_tokens, seed;
    json_t                 *root, *v;
    const char             *name, *prompt;
    size_t                  prompt_len;
    llm_err_t               err;
    json_error_t            jerr;
    llm_serve_model_t      *m;
    const llm_tokenizer_t  *tok;

    (void) slot;

    root = json_loadb(req, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        llm_serve_error(srv, q, 400, "invalid_request_error", "",
                        "request is not a JSON object");
        return LLM_ERR;
    }

    v = json_object_get(root, "model");
    name = json_is_string(v) ? json_string_value(v) : NULL;
    m = NULL;
    for (int i = 0; name != NULL && i < srv->n_models; i++) {
        if (strcmp(srv->models[i].name, name) == 0) {
            m = &srv->models[i];
            break;
        }
    }
    if (m == NULL) {
        json_decref(root);
        llm_serve_error(srv, q, 400, "invalid_request_error",
                        "model_not_found", "the model does not exist");
        return LLM_ERR;
    }

    v = json_object_get(root, "prompt");
    if (!json_is_string(v)) {
        json_decref(root);
        llm_serve_error(srv, q, 400, "invalid_request_error", "",
                        "prompt must be a string");
        return LLM_ERR;
    }
    prompt = json_string_value(v);
    prompt_len = json_string_length(v);

    temperature = 1.0;
    top_p = 1.0;
    max_tokens = 16;
    seed = (double) (llm_now_us() & 0xffffffffu);

    if (llm_json_number(root, "temperature", 0, 2, &temperature) != 0
        || llm_json_number(root, "top_p", 0, 1, &top_p) != 0
        || llm_json_number(root, "max_tokens", 1, 1 << 30, &max_tokens) != 0
        || llm_json_number(root, "seed", -9.3e18, 9.3e18, &seed) != 0
        || top_p == 0)
    {
        json_decref(root);
        llm_serve_error(srv, q, 400, "invalid_request_error", "",
                        "a sampling parameter is out of range");
        return LLM_ERR;
    }

    q->m = m;
    q->max_tokens = (int) max_tokens;

    q->tokens = malloc(sizeof(int32_t) * (size_t) m->n_ctx);
    q->logits = malloc(sizeof(float) * (size_t) m->cfg->n_vocab);
    if (q->tokens == NULL || q->logits == NULL) {
        json_decref(root);
        llm_serve_error(srv, q, 503, "server_error", "",
                        "engine out of memory");
        return LLM_ERR;
    }

    tok = llm_model_tokenizer(m->model);
    n = llm_tokenize(tok, prompt, prompt_len, 1, q->tokens, m->n_ctx, &err);
    json_decref(root);

    if (n < 0) {
        llm_serve_error(srv, q, 400, "invalid_request_error", "",
                        "prompt: %s", err.errstr);
        return LLM_ERR;
    }
    if (n == 0) {
        llm_serve_error(srv, q, 400, "invalid_request_error", "",
                        "prompt is empty");
        return LLM_ERR;
    }
    if (n >= m->n_ctx) {
        llm_serve_error(srv, q, 400, "invalid_request_error",
                        "context_length_exceeded",
                        "prompt is %d tokens, the context holds %d", n,
                        m->n_ctx);
        return LLM_ERR;
    }

    q->n_prompt = n;
    q->n_tokens = n;

    if (llm_sampler_init(&q->sampler, m->cfg->n_vocab, (float) temperature,
                         (float) top_p, (uint64_t) (int64_t) seed, &err)
        != LLM_OK)
    {
        llm_serve_error(srv, q, 503, "server_error", "", "%s", err.errstr);
        return LLM_ERR;
    }
    llm_detok_init(&q->detok);

    q->kv = llm_kv_new(m->model, m->n_ctx, &err);
    if (q->kv == NULL) {
        llm_serve_error(srv, q, 503, "server_error", "", "%s", err.errstr);
        return LLM_ERR;
    }

    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_PROMPT_TOKENS],
                              (uint64_t) n, memory_order_relaxed);
    return LLM_OK;
}


/* one step of one sequence: a prompt chunk or one generated token */
static void
llm_serve_step(llm_server_t *srv, llm_seq_t *q)
{
    int              n;
    float            logprob;
    size_t           tlen;
    int32_t          id;
    uint16_t         type;
    uint32_t         w;
    llm_err_t        err;
    llm_slot_t      *s;
    llm_ev_token_t   ev;
    char             text[LLM_TEXT_MAX];

    s = llm_shm_slot(srv->ipc.base, srv->ipc.hdr, q->slot);
    w = atomic_load_explicit(&s->state, memory_order_acquire);

    if (llm_slot_state(w) == LLM_SLOT_CANCELLED) {
        llm_log(LLM_LOG_INFO, "slot %u cancelled by its worker after %d of "
                "%d tokens", q->slot, q->n_gen, q->max_tokens);
        atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_CANCELLED], 1,
                                  memory_order_relaxed);
        llm_serve_release(srv, q, 0);
        return;
    }

    /* first deliver what did not fit before */
    if (q->pend_type != 0) {
        type = q->pend_type;
        if (llm_serve_emit(srv, q, type, q->pend, q->pend_len, NULL, 0)
            != LLM_OK)
        {
            return;
        }
        q->pend_type = 0;

        if (type != LLM_EV_TOKEN) {
            /* DONE or ERROR: the sequence is over */
            llm_serve_release(srv, q, 1);
            return;
        }

        atomic_fetch_add_explicit(
            &srv->ipc.hdr->stats[LLM_STAT_COMPLETION_TOKENS], 1,
            memory_order_relaxed);

        if (q->finish) {
            llm_serve_done(srv, q);
            return;
        }
    }

    if (q->t_start == 0) {
        q->t_start = llm_now_us();
    }

    /* prompt: one chunk per step, logits only after the last one */
    if (q->n_past < q->n_prompt) {
        n = q->n_prompt - q->n_past;
        if (n > LLM_PREFILL_CHUNK) {
            n = LLM_PREFILL_CHUNK;
        }
        if (llm_model_forward(q->m->model, q->kv, q->tokens + q->n_past, n,
                              q->n_past, q->logits, 0, &err)
            != LLM_OK)
        {
            llm_serve_error(srv, q, 500, "server_error", "", "%s",
                            err.errstr);
            return;
        }
        q->n_past += n;
        atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_STEPS], 1,
                                  memory_order_relaxed);
        if (q->n_past < q->n_prompt) {
            return;
        }

    } else {
        /* feed the token sampled last step */
        if (llm_model_forward(q->m->model, q->kv, q->tokens + q->n_past, 1,
                              q->n_past, q->logits, 0, &err)
            != LLM_OK)
        {
            llm_serve_error(srv, q, 500, "server_error", "", "%s",
                            err.errstr);
            return;
        }
        q->n_past++;
        atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_STEPS], 1,
                                  memory_order_relaxed);
    }

    id = llm_sample(&q->sampler, q->logits, &logprob);

    if (llm_tokenizer_is_eog(llm_model_tokenizer(q->m->model), id)) {
        q->finish = LLM_FINISH_STOP;
        llm_serve_done(srv, q);
        return;
    }

    q->tokens[q->n_tokens++] = id;
    q->n_gen++;
    if (q->t_first == 0) {
        q->t_first = llm_now_us();
    }

    tlen = llm_detok_push(&q->detok, llm_model_tokenizer(q->m->model), id,
                          text, sizeof(text));

    if (q->n_gen >= q->max_tokens || q->n_tokens >= q->m->n_ctx) {
        q->finish = LLM_FINISH_LENGTH;
        tlen += llm_detok_flush(&q->detok, text + tlen, sizeof(text) - tlen);
    }

    ev.token = id;
    ev.logprob = logprob;

    if (llm_serve_emit(srv, q, LLM_EV_TOKEN, &ev, sizeof(ev), text,
                       (uint32_t) tlen)
        != LLM_OK)
    {
        /* keep it whole for later; the sequence waits for its reader,
         * and DONE follows it when q->finish is set */
        memcpy(q->pend, &ev, sizeof(ev));
        memcpy(q->pend + sizeof(ev), text, tlen);
        q->pend_type = LLM_EV_TOKEN;
        q->pend_len = (uint32_t) (sizeof(ev) + tlen);
        return;
    }

    atomic_fetch_add_explicit(
        &srv->ipc.hdr->stats[LLM_STAT_COMPLETION_TOKENS], 1,
        memory_order_relaxed);

    if (q->finish) {
        llm_serve_done(srv, q);
    }
}


/*
 * Writes an event into the sequence's ring.  When the ring is full it
 * asks the worker to ring back after draining and returns LLM_ERR; the
 * caller keeps the event and the sequence pauses.
 */
static int
llm_serve_emit(llm_server_t *srv, llm_seq_t *q, uint16_t type,
    const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    int          rc;
    llm_slot_t  *s;

    s = llm_shm_slot(srv->ipc.base, srv->ipc.hdr, q->slot);

    for (int tries = 0; tries < 2; tries++) {
        rc = llm_ring_put(s, llm_slot_ring(s, srv->ipc.hdr),
                          srv->ipc.hdr->ring_size, type, a, alen, b, blen);
        if (rc == LLM_RING_OK) {
            q->paused = 0;
            llm_ipc_mark(&srv->ipc, q->owner);
            return LLM_OK;
        }

        /*
         * Full: raise the flag, then look again, so a worker that drained
         * between our look and the flag cannot leave us waiting.
         */
        atomic_store_explicit(&s->engine_waiting, 1, memory_order_seq_cst);
        atomic_thread_fence(memory_order_seq_cst);
    }

    q->paused = 1;
    llm_ipc_mark(&srv->ipc, q->owner);
    return LLM_ERR;
}


static void
llm_serve_done(llm_server_t *srv, llm_seq_t *q)
{
    uint64_t        now;
    llm_ev_done_t   d;

    now = llm_now_us();

    memset(&d, 0, sizeof(d));
    d.finish_reason = q->finish;
    d.prompt_tokens = (uint32_t) q->n_prompt;
    d.completion_tokens = (uint32_t) q->n_gen;
    d.cached_tokens = 0;
    d.queue_us = q->t_start - q->t_submit;
    d.ttft_us = q->t_first ? q->t_first - q->t_submit : now - q->t_submit;
    d.total_us = now - q->t_submit;

    if (llm_serve_emit(srv, q, LLM_EV_DONE, &d, sizeof(d), NULL, 0)
        != LLM_OK)
    {
        memcpy(q->pend, &d, sizeof(d));
        q->pend_type = LLM_EV_DONE;
        q->pend_len = sizeof(d);
        return;
    }

    llm_serve_release(srv, q, 1);
}


static void
llm_serve_error(llm_server_t *srv, llm_seq_t *q, uint16_t status,
    const char *type, const char *code, const char *fmt, ...)
{
    int              n;
    va_list          ap;
    llm_ev_error_t   e;
    char             msg[512];

    memset(&e, 0, sizeof(e));
    e.status = status;
    strncpy(e.type, type, sizeof(e.type) - 1);
    strncpy(e.code, code, sizeof(e.code) - 1);

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    } else if (n >= (int) sizeof(msg)) {
        n = sizeof(msg) - 1;
    }

    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_REQUESTS_FAILED],
                              1, memory_order_relaxed);

    /*
     * An error ends the sequence whatever was pending: the ring is drained
     * by a live worker, and one that stopped reading loses nothing it
     * would have read.
     */
    q->pend_type = 0;
    q->finish = LLM_FINISH_STOP;

    if (llm_serve_emit(srv, q, LLM_EV_ERROR, &e, sizeof(e), msg,
                       (uint32_t) n)
        != LLM_OK)
    {
        memcpy(q->pend, &e, sizeof(e));
        memcpy(q->pend + sizeof(e), msg, (size_t) n);
        q->pend_type = LLM_EV_ERROR;
        q->pend_len = (uint32_t) (sizeof(e) + (size_t) n);
        return;
    }

    llm_serve_release(srv, q, 1);
}


/*
 * Ends a sequence.  finished: its last event is written, hand the slot to
 * the worker (RUNNING -> FINISHED); else the worker cancelled it and the
 * slot goes FREE.
 */
static void
llm_serve_release(llm_server_t *srv, llm_seq_t *q, int finished)
{
    uint32_t     w;
    llm_slot_t  *s;

    s = llm_shm_slot(srv->ipc.base, srv->ipc.hdr, q->slot);

    w = atomic_load_explicit(&s->state, memory_order_acquire);

    if (finished && llm_slot_state(w) == LLM_SLOT_RUNNING
        && atomic_compare_exchange_strong_explicit(&s->state, &w,
               llm_slot_word(LLM_SLOT_FINISHED, q->owner),
               memory_order_acq_rel, memory_order_acquire))
    {
        llm_ipc_mark(&srv->ipc, q->owner);

    } else if (llm_slot_state(w) == LLM_SLOT_CANCELLED
               && llm_slot_owner(w) == q->owner)
    {
        atomic_store_explicit(&s->state, llm_slot_word(LLM_SLOT_FREE, 0),
                              memory_order_release);
    }

    if (q->kv != NULL) {
        llm_kv_free(q->kv);
        atomic_fetch_sub_explicit(&srv->ipc.hdr->stats[LLM_STAT_RUNNING], 1,
                                  memory_order_relaxed);
    }
    if (q->sampler.probs != NULL || q->sampler.index != NULL) {
        llm_sampler_free(&q->sampler);
    }
    free(q->tokens);
    free(q->logits);

    memset(q, 0, offsetof(llm_seq_t, pend));
    srv->n_active--;
}


/* a worker died: drop the sequence of its slot, if any */
static void
llm_serve_reclaim(void *data, uint32_t slot)
{
    llm_server_t  *srv = data;

    for (int i = 0; i < srv->max_seqs; i++) {
        llm_seq_t  *q = &srv->seqs[i];

        if (q->active && q->slot == slot) {
            q->finish = 0;
            q->pend_type = 0;
            llm_serve_release(srv, q, 0);
        }
    }
}
