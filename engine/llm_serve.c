/*
 * Copyright (C) ngx_llm developers
 *
 * `llm-engine serve`: loads the models, opens the shared memory and the
 * socket, and runs the serving loop.  One thread owns the models and
 * every sequence; each turn of the loop it polls the sockets and the
 * doorbell, admits submitted slots (parsing and tokenizing their
 * requests), lets the scheduler (llm_sched.c) run one batched step, turns
 * the logits it produced into tokens and events, and rings the doorbells
 * of the workers it wrote events for.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "llm_gguf.h"
#include "llm_ipc.h"
#include "llm_log.h"
#include "llm_ring.h"
#include "llm_sched.h"
#include "llm_serve.h"
#include "llm_threads.h"


#define LLM_BLOCK_SIZE      16        /* positions per KV block */


static volatile sig_atomic_t  llm_stop;


static void llm_serve_usage(void);
static int llm_serve_load(llm_server_t *srv, const char *spec, int ctx_cap,
    const llm_model_opts_t *mo);
static void llm_serve_loop(llm_server_t *srv);
static void llm_serve_admit(llm_server_t *srv);
static int llm_serve_start(llm_server_t *srv, llm_seq_t *q,
    const char *req, size_t len);
static int llm_serve_prompt(llm_server_t *srv, llm_seq_t *q,
    llm_request_t *rq);
static void llm_serve_housekeep(llm_server_t *srv, llm_seq_t *q);
static void llm_serve_logprobs(llm_seq_t *q, int32_t id, float logprob,
    const int32_t *ids, const float *lps, int n);
static void llm_serve_reclaim(void *data, uint32_t slot);
static int llm_serve_template(llm_serve_model_t *m);
static int llm_serve_size(const char *s, size_t *out);
static int llm_serve_uid(const char *name, uid_t *uid);
static int llm_serve_gid(const char *name, gid_t *gid);
static void llm_serve_signal(int signo);


static void
llm_serve_usage(void)
{
    fprintf(stderr,
        "usage: llm-engine serve --socket PATH --model NAME=PATH"
        " [--model NAME=PATH ...]\n"
        "         [--slots N] [--max-seqs N] [--ctx N] [--kv-cache SIZE]"
        " [--batch-tokens N]\n"
        "         [--socket-mode OCTAL] [--log-level L]\n"
        "\n"
        "  --socket PATH       unix socket nginx workers connect to\n"
        "  --model NAME=PATH   serve the GGUF file PATH as NAME"
        " (repeatable)\n"
        "  --slots N           request slots in shared memory (64)\n"
        "  --max-seqs N        sequences generated at once (64)\n"
        "  --ctx N             cap on each model's context length"
        " (4096)\n"
        "  --kv-cache SIZE     KV cache memory, shared by the models"
        " (512M; K, M, G)\n"
        "  --batch-tokens N    tokens one step may compute (256)\n"
        "  --threads N         compute threads ($LLM_THREADS, else every"
        " online CPU)\n"
        "  --redis ADDR        share prefix KV blocks through Redis"
        " (host:port, unix:path;\n"
        "                      the password, if any, in $LLM_REDIS_PASSWORD)\n"
        "  --redis-kv-ttl S    seconds a block lives in Redis (3600)\n"
        "  --redis-kv-max SIZE writes waiting for Redis, at most (64M)\n"
        "  --redis-db N        Redis database (0)\n"
        "  --socket-mode M     permissions of the socket (0660)\n"
        "  --socket-group G    group of the socket (nginx's workers')\n"
        "  --allow-user U      only this user may attach (repeatable;"
        " name or uid)\n"
        "  --backend B         cpu, cuda or auto (a GPU if usable; cpu)\n"
        "  --device N          the GPU of the first shard (0)\n"
        "  --tp N              shards of each model: heads and FFN split"
        " over\n"
        "                      GPUs device..device+N-1, or CPU loops (1)\n"
        "  --log-level L       error, warn, info or debug (info)\n"
        "  --debug-step-delay MS  sleep after every step (a fault mode for"
        " tests)\n");
}


int
llm_serve_main(int argc, char **argv)
{
    int                  c, ctx_cap, rc;
    char                *end;
    int                  n_threads;
    size_t               kv_bytes;
    llm_rkv_conf_t       rconf;
    const char          *models[LLM_MAX_MODELS];
    int                  n_models;
    llm_err_t            err;
    llm_server_t        *srv;
    llm_ipc_conf_t       conf;
    struct sigaction     sa;
    llm_model_opts_t     mopts;

    static const struct option  opts[] = {
        { "socket",      required_argument, NULL, 's' },
        { "model",       required_argument, NULL, 'm' },
        { "slots",       required_argument, NULL, 'n' },
        { "max-seqs",    required_argument, NULL, 'q' },
        { "ctx",         required_argument, NULL, 'c' },
        { "socket-mode", required_argument, NULL, 'p' },
        { "log-level",   required_argument, NULL, 'l' },
        { "redis",       required_argument, NULL, 'r' },
        { "redis-kv-ttl", required_argument, NULL, 't' },
        { "redis-kv-max", required_argument, NULL, 'x' },
        { "redis-db",    required_argument, NULL, 'B' },
        { "allow-user",  required_argument, NULL, 'u' },
        { "socket-group", required_argument, NULL, 'g' },
        { "kv-cache",    required_argument, NULL, 'k' },
        { "batch-tokens", required_argument, NULL, 'b' },
        { "threads",     required_argument, NULL, 'H' },
        { "debug-step-delay", required_argument, NULL, 'd' },
        { "backend",     required_argument, NULL, 'E' },
        { "device",      required_argument, NULL, 'D' },
        { "tp",          required_argument, NULL, 'T' },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    memset(&conf, 0, sizeof(conf));
    conf.n_slots = 64;
    conf.req_max = 256 * 1024;
    conf.ring_size = 64 * 1024;
    conf.socket_mode = 0660;
    conf.socket_group = (gid_t) -1;

    memset(&rconf, 0, sizeof(rconf));
    rconf.ttl = 3600;
    rconf.queue_max = (size_t) 64 << 20;

    srv = calloc(1, sizeof(llm_server_t));
    if (srv == NULL) {
        fprintf(stderr, "llm-engine: out of memory\n");
        return 1;
    }
    srv->max_seqs = 64;
    srv->batch_tokens = 256;
    kv_bytes = (size_t) 512 << 20;
    n_threads = 0;
    ctx_cap = 4096;
    n_models = 0;
    memset(&mopts, 0, sizeof(mopts));

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

        case 'k':
        case 'x':
            if (llm_serve_size(optarg, c == 'k' ? &kv_bytes
                                                : &rconf.queue_max) != 0)
            {
                fprintf(stderr, "llm-engine: bad size \"%s\"\n", optarg);
                return 2;
            }
            break;

        case 'r':
            rconf.addr = optarg;
            break;

        case 'E':
            mopts.backend = optarg;
            break;

        case 'D':
        case 'T':
            errno = 0;
            rc = (int) strtol(optarg, &end, 10);
            if (errno || *end != '\0' || rc < (c == 'T')
                || rc > (c == 'T' ? LLM_TP_MAX : 1024))
            {
                fprintf(stderr, "llm-engine: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (c == 'T') {
                mopts.tp = rc;
            } else {
                mopts.device = rc;
            }
            break;

        case 't':
        case 'B':
            errno = 0;
            rc = (int) strtol(optarg, &end, 10);
            if (errno || *end != '\0' || rc < 0) {
                fprintf(stderr, "llm-engine: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (c == 't') {
                rconf.ttl = rc;
            } else {
                rconf.db = rc;
            }
            break;

        case 'n':
        case 'q':
        case 'c':
        case 'b':
        case 'H':
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
            } else if (c == 'b') {
                srv->batch_tokens = rc;
            } else if (c == 'H') {
                n_threads = rc;
            } else {
                ctx_cap = rc;
            }
            break;

        case 'u':
            if (conf.n_allow == LLM_IPC_MAX_ALLOW
                || llm_serve_uid(optarg, &conf.allow[conf.n_allow]) != 0)
            {
                fprintf(stderr, "llm-engine: bad or too many users at "
                        "\"%s\"\n", optarg);
                return 2;
            }
            conf.n_allow++;
            break;

        case 'g':
            if (llm_serve_gid(optarg, &conf.socket_group) != 0) {
                fprintf(stderr, "llm-engine: unknown group \"%s\"\n",
                        optarg);
                return 2;
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

    if (llm_threads_init(n_threads, &err) != LLM_OK) {
        fprintf(stderr, "llm-engine: %s\n", err.errstr);
        return 1;
    }

    for (int i = 0; i < n_models; i++) {
        if (llm_serve_load(srv, models[i], ctx_cap, &mopts) != LLM_OK) {
            return 1;
        }
    }

    for (int i = 0; i < srv->n_models; i++) {
        if (llm_sched_model_init(&srv->models[i],
                                 kv_bytes / (size_t) srv->n_models,
                                 LLM_BLOCK_SIZE, &err)
            != LLM_OK)
        {
            fprintf(stderr, "llm-engine: %s\n", err.errstr);
            return 1;
        }
    }

    if (rconf.addr != NULL) {
        size_t  max = 0;

        rconf.password = getenv("LLM_REDIS_PASSWORD");
        if (llm_rkv_open(&srv->rkv, &rconf, &err) != LLM_OK) {
            fprintf(stderr, "llm-engine: %s\n", err.errstr);
            return 1;
        }
        for (int i = 0; i < srv->n_models; i++) {
            size_t  bb = llm_kv_block_bytes(srv->models[i].model,
                                            srv->models[i].block_size);

            max = bb > max ? bb : max;
        }
        srv->rkv_buf = malloc(max);
        if (srv->rkv_buf == NULL) {
            fprintf(stderr, "llm-engine: out of memory\n");
            return 1;
        }
        llm_log(LLM_LOG_INFO, "prefix KV blocks shared through redis %s, "
                "ttl %ds", rconf.addr, rconf.ttl);
    }

    srv->seqs = calloc((size_t) srv->max_seqs, sizeof(llm_seq_t));
    srv->batch = calloc((size_t) srv->max_seqs, sizeof(llm_batch_seq_t));
    srv->batch_draw = calloc((size_t) srv->max_seqs,
                             sizeof(llm_batch_draw_t));
    srv->batch_seq = calloc((size_t) srv->max_seqs, sizeof(llm_seq_t *));
    srv->batch_ntok = calloc((size_t) srv->max_seqs, sizeof(int));
    if (srv->seqs == NULL || srv->batch == NULL || srv->batch_draw == NULL
        || srv->batch_seq == NULL || srv->batch_ntok == NULL)
    {
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
        atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_KV_BLOCKS],
                                  (uint64_t) m->alloc.n_blocks,
                                  memory_order_relaxed);
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
    llm_rkv_close(srv->rkv);
    free(srv->rkv_buf);

    for (int i = 0; i < srv->n_models; i++) {
        llm_sched_model_free(&srv->models[i]);
        llm_template_free(srv->models[i].tpl);
        free((char *) srv->models[i].bos);
        free((char *) srv->models[i].eos);
        llm_model_free(srv->models[i].model);
    }
    free(srv->seqs);
    free(srv->batch);
    free(srv->batch_draw);
    free(srv->batch_seq);
    free(srv->batch_ntok);
    free(srv);

    return 0;
}


static int
llm_serve_load(llm_server_t *srv, const char *spec, int ctx_cap,
    const llm_model_opts_t *mo)
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

    if (llm_model_load_opts(&m->model, eq + 1, mo, &err) != LLM_OK) {
        fprintf(stderr, "llm-engine: %s\n", err.errstr);
        return LLM_ERR;
    }

    m->cfg = llm_model_config(m->model);
    m->n_ctx = m->cfg->n_ctx > 0 && m->cfg->n_ctx < ctx_cap ? m->cfg->n_ctx
                                                            : ctx_cap;
    srv->n_models++;

    if (llm_serve_template(m) != LLM_OK) {
        return LLM_ERR;
    }

    llm_log(LLM_LOG_INFO, "model %s: %s, %s, %d layers, d=%d, vocab %d, "
            "context %d, on %s x%d", m->name, eq + 1, m->cfg->arch,
            m->cfg->n_layer, m->cfg->n_embd, m->cfg->n_vocab, m->n_ctx,
            llm_model_backend(m->model), llm_model_tp(m->model));

    return LLM_OK;
}


/*
 * The model's chat template, parsed once.  A model without one gets
 * ChatML, and the log says so; a template that does not parse leaves chat
 * requests failing with the reason, and completions working.
 */
static int
llm_serve_template(llm_serve_model_t *m)
{
    int                     rc;
    size_t                  len;
    int32_t                 id;
    llm_err_t               err;
    const char             *src, *text;
    const llm_tokenizer_t  *tok;

    static const char  chatml[] =
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}";

    tok = llm_model_tokenizer(m->model);

    id = llm_tokenizer_bos(tok);
    text = llm_tokenizer_token_text(tok, id, &len);
    m->bos = strndup(id >= 0 ? text : "", id >= 0 ? len : 0);
    id = llm_tokenizer_eos(tok);
    text = llm_tokenizer_token_text(tok, id, &len);
    m->eos = strndup(id >= 0 ? text : "", id >= 0 ? len : 0);
    if (m->bos == NULL || m->eos == NULL) {
        fprintf(stderr, "llm-engine: out of memory\n");
        return LLM_ERR;
    }

    rc = llm_gguf_get_str(llm_model_gguf(m->model), "tokenizer.chat_template",
                          &src, &len, &err);
    if (rc == LLM_ERR) {
        fprintf(stderr, "llm-engine: %s\n", err.errstr);
        return LLM_ERR;
    }

    if (rc != LLM_OK) {
        llm_log(LLM_LOG_INFO, "model %s has no chat template, using ChatML",
                m->name);
        src = chatml;
        len = sizeof(chatml) - 1;
    }

    if (llm_template_parse(&m->tpl, src, len, &err) != LLM_OK) {
        m->tpl = NULL;
        snprintf(m->tpl_err, sizeof(m->tpl_err), "%s", err.errstr);
        llm_log(LLM_LOG_WARN, "model %s: chat template: %s; chat requests "
                "will fail", m->name, err.errstr);
    }

    return LLM_OK;
}


/* a byte count with an optional K, M or G */
static int
llm_serve_size(const char *s, size_t *out)
{
    char                *end;
    unsigned long long   v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || v == 0 || *s == '-') {
        return -1;
    }
    if (*end != '\0') {
        if (strchr("KMG", *end) == NULL || end[1] != '\0') {
            return -1;
        }
        v <<= *end == 'K' ? 10 : *end == 'M' ? 20 : 30;
    }
    *out = (size_t) v;
    return 0;
}


/* a user name or a numeric uid */
static int
llm_serve_uid(const char *name, uid_t *uid)
{
    char           *end;
    unsigned long   v;
    struct passwd  *pw;

    pw = getpwnam(name);
    if (pw != NULL) {
        *uid = pw->pw_uid;
        return 0;
    }

    v = strtoul(name, &end, 10);
    if (*name == '\0' || *end != '\0' || v >= (uid_t) -1) {
        return -1;
    }
    *uid = (uid_t) v;
    return 0;
}


static int
llm_serve_gid(const char *name, gid_t *gid)
{
    char           *end;
    unsigned long   v;
    struct group   *gr;

    gr = getgrnam(name);
    if (gr != NULL) {
        *gid = gr->gr_gid;
        return 0;
    }

    v = strtoul(name, &end, 10);
    if (*name == '\0' || *end != '\0' || v >= (gid_t) -1) {
        return -1;
    }
    *gid = (gid_t) v;
    return 0;
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
        if (srv->rkv != NULL && llm_rkv_pending(srv->rkv) && timeout > 2) {
            timeout = 2;      /* a Redis answer is due */
        }

        if (llm_ipc_poll(&srv->ipc, timeout, llm_serve_reclaim, srv) == -1
            && errno != EINTR)
        {
            llm_log(LLM_LOG_ERR, "epoll_wait: %s", strerror(errno));
            return;
        }

        llm_serve_admit(srv);
        llm_sched_rkv_poll(srv);

        for (int i = 0; i < srv->max_seqs; i++) {
            if (srv->seqs[i].active) {
                llm_serve_housekeep(srv, &srv->seqs[i]);
            }
        }

        llm_sched_step(srv);

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

        memset(q, 0, offsetof(llm_seq_t, out_len));
        q->active = 1;
        q->slot = i;
        q->owner = llm_slot_owner(w);
        q->order = ++srv->n_admitted;
        q->t_submit = llm_now_us();
        srv->n_active++;

        atomic_fetch_add_explicit(&h->stats[LLM_STAT_REQUESTS], 1,
                                  memory_order_relaxed);

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

        if (llm_serve_start(srv, q, buf, len) == LLM_OK) {
            q->started = 1;
            atomic_fetch_add_explicit(&h->stats[LLM_STAT_RUNNING], 1,
                                      memory_order_relaxed);
        }
        free(buf);
    }
}


/* parses and checks the request, builds the prompt, sets up sampling */
static int
llm_serve_start(llm_server_t *srv, llm_seq_t *q, const char *req, size_t len)
{
    llm_err_t           err;
    llm_request_t       rq;
    llm_serve_model_t  *m;
    llm_request_err_t   re;

    if (llm_request_parse(&rq, req, len, llm_now_us() ^ (uint64_t) q->slot,
                          &re)
        != LLM_OK)
    {
        llm_serve_error(srv, q, re.status, re.type, re.code, "%s",
                        re.message);
        return LLM_ERR;
    }

    m = NULL;
    for (int i = 0; i < srv->n_models; i++) {
        if (strcmp(srv->models[i].name, rq.model) == 0) {
            m = &srv->models[i];
            break;
        }
    }
    if (m == NULL) {
        llm_request_free(&rq);
        llm_serve_error(srv, q, 404, "invalid_request_error",
                        "model_not_found", "the model does not exist");
        return LLM_ERR;
    }

    q->m = m;
    q->max_tokens = rq.max_tokens;
    q->logprobs = rq.logprobs;
    q->priority = rq.priority;
    q->hash = m->seed;

    q->tokens = malloc(sizeof(int32_t) * (size_t) m->n_ctx);
    q->logits = malloc(sizeof(float) * (size_t) m->cfg->n_vocab);
    q->blocks = malloc(sizeof(int32_t)
                       * (size_t) (m->n_ctx / m->block_size + 2));
    if (q->tokens == NULL || q->logits == NULL || q->blocks == NULL) {
        llm_request_free(&rq);
        llm_serve_error(srv, q, 503, "server_error", "", "out of memory");
        return LLM_ERR;
    }

    if (llm_serve_prompt(srv, q, &rq) != LLM_OK) {
        llm_request_free(&rq);
        return LLM_ERR;
    }

    if (llm_sampler_init(&q->sampler, m->cfg->n_vocab, rq.temperature,
                         rq.top_p, rq.seed, &err) != LLM_OK
        || llm_sampler_set_penalties(&q->sampler, rq.repetition_penalty,
                                     rq.frequency_penalty,
                                     rq.presence_penalty, &err) != LLM_OK
        || llm_sampler_set_bias(&q->sampler, rq.bias_ids, rq.bias, rq.n_bias,
                                &err) != LLM_OK)
    {
        llm_request_free(&rq);
        llm_serve_error(srv, q, err.err == LLM_ENOMEM ? 503 : 400,
                        err.err == LLM_ENOMEM ? "server_error"
                                              : "invalid_request_error",
                        err.err == LLM_ENOMEM ? "" : "logit_bias",
                        "%s", err.errstr);
        return LLM_ERR;
    }
    q->sampler.top_k = rq.top_k;
    q->sampler.min_p = rq.min_p;

    for (int i = 0; i < q->n_prompt; i++) {
        llm_sampler_accept(&q->sampler, q->tokens[i], 0);
    }

    llm_detok_init(&q->detok);
    llm_stop_init(&q->stop, &rq);
    llm_request_free(&rq);

    if (llm_sched_admit_check(q, &err) != LLM_OK) {
        llm_serve_error(srv, q, 400, "invalid_request_error",
                        "context_length_exceeded", "%s", err.errstr);
        return LLM_ERR;
    }

    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_PROMPT_TOKENS],
                              (uint64_t) q->n_prompt, memory_order_relaxed);
    return LLM_OK;
}


/* the prompt's tokens: text tokenized, ids checked, or a chat rendered */
static int
llm_serve_prompt(llm_server_t *srv, llm_seq_t *q, llm_request_t *rq)
{
    int                     n, flags, bos;
    char                   *text;
    size_t                  text_len, i;
    json_t                 *v;
    llm_err_t               err;
    llm_serve_model_t      *m;
    llm_template_vars_t     vars;
    const llm_tokenizer_t  *tok;

    m = q->m;
    tok = llm_model_tokenizer(m->model);
    bos = llm_tokenizer_bos(tok);
    n = 0;

    switch (rq->kind) {

    case LLM_PROMPT_TOKENS:
        if (json_array_size(rq->tokens) >= (size_t) m->n_ctx) {
            n = (int) json_array_size(rq->tokens);
            break;
        }
        json_array_foreach(rq->tokens, i, v) {
            if (json_integer_value(v) >= m->cfg->n_vocab) {
                llm_serve_error(srv, q, 400, "invalid_request_error",
                                "prompt_tokens", "token %lld is not in the "
                                "vocabulary of %d",
                                (long long) json_integer_value(v),
                                m->cfg->n_vocab);
                return LLM_ERR;
            }
            q->tokens[n++] = (int32_t) json_integer_value(v);
        }
        break;

    case LLM_PROMPT_CHAT:
        if (m->tpl == NULL) {
            llm_serve_error(srv, q, 500, "server_error", "chat_template",
                            "the model's chat template is unusable: %s",
                            m->tpl_err);
            return LLM_ERR;
        }

        memset(&vars, 0, sizeof(vars));
        vars.messages = rq->messages;
        vars.bos_token = m->bos;
        vars.eos_token = m->eos;
        vars.add_generation_prompt = 1;

        if (llm_template_render(m->tpl, &vars, &text, &text_len, &err)
            != LLM_OK)
        {
            /* raise_exception(): the template refused the conversation */
            llm_serve_error(srv, q, err.err == LLM_EINVAL ? 400 : 500,
                            err.err == LLM_EINVAL ? "invalid_request_error"
                                                  : "server_error",
                            "messages", "%s", err.errstr);
            return LLM_ERR;
        }

        llm_log(LLM_LOG_DEBUG, "slot %u: chat rendered to %zu bytes",
                q->slot, text_len);

        /* the template writes BOS itself where the model wants it */
        n = llm_tokenize_ex(tok, text, text_len, LLM_TOK_PARSE_SPECIAL,
                            q->tokens, m->n_ctx, &err);
        free(text);
        if (n >= 0 && n < m->n_ctx && bos >= 0
            && llm_tokenizer_wants_bos(tok) && (n == 0 || q->tokens[0] != bos))
        {
            memmove(q->tokens + 1, q->tokens, sizeof(int32_t) * (size_t) n);
            q->tokens[0] = bos;
            n++;
        }
        break;

    default: /* LLM_PROMPT_TEXT */
        flags = llm_tokenizer_wants_bos(tok) ? LLM_TOK_ADD_BOS : 0;
        n = llm_tokenize_ex(tok, rq->prompt, rq->prompt_len, flags,
                            q->tokens, m->n_ctx, &err);
        break;
    }

    if (n < 0) {
        llm_serve_error(srv, q, 400, "invalid_request_error", "prompt",
                        "%s", err.errstr);
        return LLM_ERR;
    }
    if (n == 0) {
        llm_serve_error(srv, q, 400, "invalid_request_error", "prompt",
                        "the prompt is empty");
        return LLM_ERR;
    }
    if (n >= m->n_ctx) {
        llm_serve_error(srv, q, 400, "invalid_request_error",
                        "context_length_exceeded",
                        "the prompt is %d tokens, the context holds %d", n,
                        m->n_ctx);
        return LLM_ERR;
    }

    q->n_prompt = n;
    q->n_tokens = n;
    return LLM_OK;
}


/* before a step: cancellation, and events still waiting for room */
static void
llm_serve_housekeep(llm_server_t *srv, llm_seq_t *q)
{
    uint32_t     w;
    llm_slot_t  *s;

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

    if (q->out_len && llm_serve_flush(srv, q) == LLM_OK && q->finish) {
        llm_serve_release(srv, q, 1);
    }
}


/*
 * After a step that computed the sequence's last known token: takes the
 * token the backend drew (drawn >= 0), or samples the next one from
 * q->logits, and queues its events (LOGPROBS, TOKEN, and DONE when the
 * sequence ends).
 */
void
llm_serve_token(llm_server_t *srv, llm_seq_t *q, int32_t drawn)
{
    int                     stopped, n_top;
    float                   logprob, top_lps[LLM_LOGPROBS_MAX];
    size_t                  tlen, olen;
    int32_t                 id, top_ids[LLM_LOGPROBS_MAX];
    llm_ev_token_t          ev;
    llm_ev_done_t           d;
    const llm_tokenizer_t  *tok;
    char                    text[LLM_TEXT_MAX];
    char                    out[LLM_TEXT_MAX + 2 * LLM_STOP_LEN_MAX];

    tok = llm_model_tokenizer(q->m->model);

    n_top = 0;
    logprob = 0.0f;

    if (drawn >= 0) {
        /* the same draw as llm_sample()'s, made where the logits are
         * (llm_sched.c asks for it only when nothing else needs them) */
        id = drawn;
        llm_sampler_drawn(&q->sampler);

    } else {
        if (q->logprobs > 0) {
            /* before sampling, from the model's own logits */
            n_top = llm_sampler_top(&q->sampler, q->logits, q->logprobs,
                                    top_ids, top_lps);
        }

        /* the token's log-probability costs an exponential per
         * vocabulary entry: only for a request that asked for logprobs */
        id = llm_sample(&q->sampler, q->logits,
                        q->logprobs >= 0 ? &logprob : NULL);
    }

    if (q->t_first == 0) {
        q->t_first = llm_now_us();
    }

    if (llm_tokenizer_is_eog(tok, id)) {
        /* what detokenizing and the stop strings held back is text */
        q->finish = LLM_FINISH_STOP;
        tlen = llm_detok_flush(&q->detok, text, sizeof(text));
        llm_stop_feed(&q->stop, text, tlen, out, &olen);
        olen += llm_stop_flush(&q->stop, out + olen);
        if (olen) {
            ev.token = -1;
            ev.logprob = 0.0f;
            llm_serve_queue(q, LLM_EV_TOKEN, &ev, sizeof(ev), out, olen);
        }
        goto done;
    }

    q->tokens[q->n_tokens++] = id;
    q->n_gen++;
    llm_sampler_accept(&q->sampler, id, 1);
    atomic_fetch_add_explicit(
        &srv->ipc.hdr->stats[LLM_STAT_COMPLETION_TOKENS], 1,
        memory_order_relaxed);

    if (q->logprobs >= 0) {
        llm_serve_logprobs(q, id, logprob, top_ids, top_lps, n_top);
    }

    if (q->n_gen >= q->max_tokens || q->n_tokens >= q->m->n_ctx) {
        q->finish = LLM_FINISH_LENGTH;
    }

    tlen = llm_detok_push(&q->detok, tok, id, text, sizeof(text));
    if (q->finish) {
        tlen += llm_detok_flush(&q->detok, text + tlen, sizeof(text) - tlen);
    }

    stopped = llm_stop_feed(&q->stop, text, tlen, out, &olen);
    if (stopped) {
        q->finish = LLM_FINISH_STOP;
    } else if (q->finish) {
        olen += llm_stop_flush(&q->stop, out + olen);
    }

    ev.token = id;
    ev.logprob = logprob;
    llm_serve_queue(q, LLM_EV_TOKEN, &ev, sizeof(ev), out, olen);

done:

    if (q->finish) {
        uint64_t  now = llm_now_us();

        memset(&d, 0, sizeof(d));
        d.finish_reason = q->finish;
        d.prompt_tokens = (uint32_t) q->n_prompt;
        d.completion_tokens = (uint32_t) q->n_gen;
        d.cached_tokens = (uint32_t) q->n_cached;
        d.queue_us = q->t_start - q->t_submit;
        d.ttft_us = q->t_first - q->t_submit;
        d.total_us = now - q->t_submit;
        llm_serve_queue(q, LLM_EV_DONE, &d, sizeof(d), NULL, 0);
    }

    if (llm_serve_flush(srv, q) == LLM_OK && q->finish) {
        llm_serve_release(srv, q, 1);
    }
}


/* queues the LOGPROBS event of token id with the alternatives found
 * before sampling */
static void
llm_serve_logprobs(llm_seq_t *q, int32_t id, float logprob,
    const int32_t *ids, const float *lps, int n)
{
    size_t                  plen, off;
    const char             *piece;
    llm_ev_alt_t            alt;
    llm_ev_logprobs_t       lp;
    const llm_tokenizer_t  *tok;
    unsigned char           buf[LLM_EVENT_MAX];

    tok = llm_model_tokenizer(q->m->model);

    piece = llm_token_piece(tok, id, &plen);
    plen = plen > LLM_PIECE_MAX ? LLM_PIECE_MAX : plen;

    lp.token = id;
    lp.logprob = logprob;
    lp.n_top = (uint16_t) n;
    lp.piece_len = (uint16_t) plen;

    memcpy(buf, &lp, sizeof(lp));
    memcpy(buf + sizeof(lp), piece, plen);
    off = sizeof(lp) + plen;

    for (int i = 0; i < n; i++) {
        piece = llm_token_piece(tok, ids[i], &plen);
        plen = plen > LLM_PIECE_MAX ? LLM_PIECE_MAX : plen;

        alt.token = ids[i];
        alt.logprob = lps[i];
        alt.piece_len = (uint16_t) plen;
        alt.reserved = 0;
        memcpy(buf + off, &alt, sizeof(alt));
        memcpy(buf + off + sizeof(alt), piece, plen);
        off += sizeof(alt) + plen;
    }

    llm_serve_queue(q, LLM_EV_LOGPROBS, buf, off, NULL, 0);
}


/* appends an event to the sequence's outgoing queue */
void
llm_serve_queue(llm_seq_t *q, uint16_t type, const void *a, size_t alen,
    const void *b, size_t blen)
{
    llm_event_t  ev;

    ev.type = type;
    ev.flags = 0;
    ev.len = (uint32_t) (alen + blen);

    if (q->out_len + sizeof(ev) + alen + blen > sizeof(q->out)
        || alen + blen > LLM_EVENT_MAX)
    {
        llm_log(LLM_LOG_ERR, "slot %u: event of %zu bytes dropped", q->slot,
                alen + blen);
        return;
    }

    memcpy(q->out + q->out_len, &ev, sizeof(ev));
    q->out_len += sizeof(ev);
    if (alen) {
        memcpy(q->out + q->out_len, a, alen);
        q->out_len += alen;
    }
    if (blen) {
        memcpy(q->out + q->out_len, b, blen);
        q->out_len += blen;
    }
}


/*
 * Moves queued events into the ring, in order.  When the ring is full it
 * asks the worker to ring back after draining (see llm_proto.h) and
 * returns LLM_ERR: the sequence pauses until then.
 */
int
llm_serve_flush(llm_server_t *srv, llm_seq_t *q)
{
    int           rc;
    llm_slot_t   *s;
    llm_event_t   ev;

    s = llm_shm_slot(srv->ipc.base, srv->ipc.hdr, q->slot);

    while (q->out_off < q->out_len) {
        memcpy(&ev, q->out + q->out_off, sizeof(ev));

        for (int tries = 0; ; tries++) {
            rc = llm_ring_put(s, llm_slot_ring(s, srv->ipc.hdr),
                              srv->ipc.hdr->ring_size, ev.type,
                              q->out + q->out_off + sizeof(ev), ev.len,
                              NULL, 0);
            if (rc == LLM_RING_OK || tries == 1) {
                break;
            }

            /* full: raise the flag, fence, and look once more */
            atomic_store_explicit(&s->engine_waiting, 1,
                                  memory_order_seq_cst);
            atomic_thread_fence(memory_order_seq_cst);
        }

        llm_ipc_mark(&srv->ipc, q->owner);

        if (rc != LLM_RING_OK) {
            q->paused = 1;
            return LLM_ERR;
        }

        q->out_off += sizeof(ev) + ev.len;
    }

    q->paused = 0;
    q->out_len = 0;
    q->out_off = 0;
    return LLM_OK;
}


void
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

    /* an error ends the sequence: what was queued is not sent */
    q->out_len = 0;
    q->out_off = 0;
    q->finish = LLM_FINISH_STOP;
    llm_serve_queue(q, LLM_EV_ERROR, &e, sizeof(e), msg, (size_t) n);

    if (llm_serve_flush(srv, q) == LLM_OK) {
        llm_serve_release(srv, q, 1);
    }
}


/*
 * Ends a sequence.  finished: its last event is written, hand the slot to
 * the worker (RUNNING -> FINISHED); else the worker cancelled it and the
 * slot goes FREE.
 */
void
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

    if (q->started) {
        atomic_fetch_sub_explicit(&srv->ipc.hdr->stats[LLM_STAT_RUNNING], 1,
                                  memory_order_relaxed);
    }
    if (q->m != NULL) {
        llm_sched_release_blocks(srv, q);
    }
    llm_sampler_free(&q->sampler);
    free(q->tokens);
    free(q->logits);
    free(q->blocks);

    memset(q, 0, offsetof(llm_seq_t, out_len));
    q->out_len = 0;
    q->out_off = 0;
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
            llm_serve_release(srv, q, 0);
        }
    }
}
