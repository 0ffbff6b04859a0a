/*
 * Copyright (C) ngx_llm developers
 *
 * Tokens drawn where the logits are (the backend's sample hook), against
 * llm_sample_twin, the reference of the draw (llm_backend.h), on logits
 * computed here.  First the model: llm_model_forward_batch_draw on the
 * CPU backend, batches that mix rows drawn there with rows whose logits
 * come to the host, more rows than one classifier pass takes.  Then a
 * real `llm-engine serve`: seeded requests give exactly the tokens found
 * here by running the model a token at a time (llm_model_forward) and
 * drawing with the twin under the request's seed and the count of
 * tokens drawn so far, with logit_bias and penalties applied here from
 * their definitions; plain requests are drawn by the backend, those
 * asking for logprobs, bias or penalties on the host, and the same
 * request with logprobs gives the same tokens as without; a batch
 * mixing them all gives each what it gives alone.  Where the build has
 * the CPU emulator of CUDA, some of them again on the CUDA backend.
 */

#define _GNU_SOURCE

#include "tap.h"
#include "xorshift.h"
#include "llm_test_client.h"

#include "llm_backend.h"
#include "llm_model.h"
#include "llm_tokenizer.h"


#define N_SEQS      80        /* more than one classifier pass (64) */
#define N_STEPS     12
#define MAX_GEN     48
#define N_REQ       12


static const char *
fixtures(void)
{
    const char  *f = getenv("LLM_FIXTURES");

    return f ? f : "../shared/fixtures";
}


static uint32_t  rnd_state = 88172645u;

static uint32_t
rnd(void)
{
    return xorshift32(&rnd_state);
}


static void
rnd_params(llm_sample_params_t *p, int i)
{
    static const float  temps[] = { 0.0f, 0.6f, 0.9f, 1.0f, 1.4f };
    static const float  top_ps[] = { 1.0f, 0.95f, 0.8f, 0.3f };
    static const float  min_ps[] = { 0.0f, 0.0f, 0.02f, 0.2f };
    static const int    top_ks[] = { 0, 0, 1, 5, 40 };

    p->temperature = temps[i % 5];
    p->top_p = top_ps[rnd() % 4];
    p->min_p = min_ps[rnd() % 4];
    p->top_k = top_ks[rnd() % 5];
    p->seed = ((uint64_t) rnd() << 32) | rnd();
    p->counter = 0;
}


/*
 * One model: N_SEQS sequences with prompts of their own, decoded
 * together for N_STEPS steps (the first step their prompts); odd ones
 * draw on the backend, even ones get logits and the twin draws here.
 * Each is also run alone through llm_model_forward, and its tokens must
 * be the twin's on those logits.
 */
static void
test_model(const char *name, const char *path)
{
    int                   n_vocab, bs, n_blocks, bad_alone, bad_err, n_not_max;
    int32_t               tok[N_SEQS][64 + N_STEPS], *blocks, next;
    int                   n[N_SEQS], past[N_SEQS];
    float                *logits, *ref;
    llm_err_t             err = { 0 };
    llm_kv_t             *kv[N_SEQS];
    llm_model_t          *m;
    llm_kv_pool_t        *pool;
    llm_batch_seq_t       b[N_SEQS];
    llm_batch_draw_t      d[N_SEQS];
    llm_sample_params_t   p[N_SEQS];

    if (llm_model_load(&m, path, &err) != LLM_OK) {
        ok(0, "%s: %s", name, err.errstr);
        return;
    }

    ok(llm_model_can_draw(m), "%s: the CPU backend draws tokens", name);

    n_vocab = llm_model_config(m)->n_vocab;
    bs = 16;
    n_blocks = N_SEQS * ((64 + N_STEPS) / bs + 1);

    pool = llm_kv_pool_new(m, n_blocks, bs, &err);
    blocks = malloc((size_t) n_blocks * sizeof(int32_t));
    logits = malloc((size_t) N_SEQS * n_vocab * sizeof(float));
    ref = malloc((size_t) n_vocab * sizeof(float));

    if (pool == NULL || blocks == NULL || logits == NULL || ref == NULL) {
        ok(0, "%s: a pool and buffers", name);
        return;
    }

    for (int i = 0; i < n_blocks; i++) {
        blocks[i] = i;
    }

    for (int s = 0; s < N_SEQS; s++) {
        n[s] = 1 + (int) (rnd() % 40);
        past[s] = 0;
        tok[s][0] = 1;
        for (int j = 1; j < n[s]; j++) {
            tok[s][j] = 3 + (int32_t) (rnd() % (uint32_t) (n_vocab - 3));
        }
        rnd_params(&p[s], s);
        kv[s] = llm_kv_new(m, 64 + N_STEPS, &err);
    }

    /* a draw and logits both asked for, or a draw from a backend that
     * has none, are refused */
    b[0].tokens = tok[0];
    b[0].n_tokens = n[0];
    b[0].pos = 0;
    b[0].blocks = blocks;
    b[0].n_blocks = (64 + N_STEPS) / bs + 1;
    b[0].logits = logits;
    d[0].draw = 1;
    d[0].params = p[0];
    ok(llm_model_forward_batch_draw(m, pool, b, d, 1, &err) == LLM_ERR
       && err.err == LLM_EINVAL, "%s: a draw with logits refused: %s",
       name, err.errstr);

    bad_alone = 0;
    bad_err = 0;
    n_not_max = 0;

    for (int step = 0; step < N_STEPS; step++) {
        for (int s = 0; s < N_SEQS; s++) {
            b[s].tokens = tok[s] + past[s];
            b[s].n_tokens = n[s] - past[s];
            b[s].pos = past[s];
            b[s].blocks = blocks + s * ((64 + N_STEPS) / bs + 1);
            b[s].n_blocks = (64 + N_STEPS) / bs + 1;
            b[s].logits = s % 2 ? NULL : logits + (size_t) s * n_vocab;
            d[s].draw = s % 2;
            d[s].params = p[s];
            d[s].params.counter = (uint64_t) step;
            d[s].token = -1;
        }

        if (llm_model_forward_batch_draw(m, pool, b, d, N_SEQS, &err)
            != LLM_OK)
        {
            ok(0, "%s step %d: %s", name, step, err.errstr);
            bad_err++;
            break;
        }

        for (int s = 0; s < N_SEQS; s++) {
            llm_sample_params_t  q = p[s];

            q.counter = (uint64_t) step;

            /* alone, through the single-sequence path */
            if (llm_model_forward(m, kv[s], tok[s] + past[s], n[s] - past[s],
                                  past[s], ref, 0, &err)
                != LLM_OK)
            {
                bad_err++;
                continue;
            }

            if (s % 2) {
                next = d[s].token;

            } else {
                next = llm_sample_twin(logits + (size_t) s * n_vocab,
                                       n_vocab, &q);
            }

            if (next != llm_sample_twin(ref, n_vocab, &q)) {
                if (bad_alone++ < 5) {
                    diag("%s seq %d step %d (%s): %d, the twin on its "
                         "logits alone %d", name, s, step,
                         s % 2 ? "drawn" : "host", next,
                         llm_sample_twin(ref, n_vocab, &q));
                }
            }

            q.temperature = 0.0f;
            n_not_max += next != llm_sample_twin(ref, n_vocab, &q);

            past[s] = n[s];
            tok[s][n[s]++] = next;
        }
    }

    is_int(bad_err, 0, "%s: %d steps of %d sequences, half drawn on the "
           "backend", name, N_STEPS, N_SEQS);
    is_int(bad_alone, 0, "%s: every token is the twin's on the logits of "
           "the sequence run alone", name);
    ok(n_not_max > N_SEQS, "%s: %d of them not the most likely", name,
       n_not_max);

    for (int s = 0; s < N_SEQS; s++) {
        llm_kv_free(kv[s]);
    }
    llm_kv_pool_free(pool);
    free(blocks);
    free(logits);
    free(ref);
    llm_model_free(m);
}


/* ---- the engine ---- */


typedef struct {
    const char  *model;
    int          n_prompt;
    int32_t      prompt[16];
    int          max_tokens;
    float        temperature;
    float        top_p;
    int          top_k;
    float        min_p;
    uint64_t     seed;
    int          logprobs;        /* -1: not asked */
    int          n_bias;
    int32_t      bias_ids[2];
    float        bias[2];
    float        repetition;
    float        frequency;
    float        presence;
} req_t;


typedef struct {
    int          n;
    int32_t      ids[MAX_GEN];
    int          done;
    int          error;
} ids_t;


static req_t  reqs[N_REQ] = {
    /* drawn on the backend */
    { "stories", 5, { 1, 403, 407, 261, 378 }, 40, 0.9f, 1.0f, 40, 0.0f,
      11, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "stories", 3, { 1, 365, 465 }, 40, 1.0f, 0.9f, 0, 0.0f,
      12, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "stories", 4, { 1, 412, 307, 99 }, 40, 0.7f, 1.0f, 0, 0.05f,
      13, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "stories", 2, { 1, 450 }, 40, 1.3f, 1.0f, 0, 0.0f,
      14, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "llama3", 6, { 1, 33, 44, 55, 66, 77 }, 40, 1.0f, 0.95f, 100, 0.0f,
      15, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "llama3", 3, { 1, 200, 300 }, 40, 0.8f, 1.0f, 0, 0.0f,
      16, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "stories", 5, { 1, 403, 407, 261, 378 }, 30, 0.0f, 1.0f, 0, 0.0f,
      17, -1, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },

    /* on the host: the first and the fifth again, with logprobs */
    { "stories", 5, { 1, 403, 407, 261, 378 }, 40, 0.9f, 1.0f, 40, 0.0f,
      11, 2, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },
    { "llama3", 6, { 1, 33, 44, 55, 66, 77 }, 40, 1.0f, 0.95f, 100, 0.0f,
      15, 0, 0, { 0 }, { 0 }, 1.0f, 0.0f, 0.0f },

    /* logit_bias, and the penalties */
    { "stories", 5, { 1, 403, 407, 261, 378 }, 40, 0.9f, 1.0f, 40, 0.0f,
      21, -1, 2, { 13, 29 }, { 6.0f, -4.0f }, 1.0f, 0.0f, 0.0f },
    { "stories", 3, { 1, 365, 465 }, 40, 1.0f, 0.95f, 0, 0.0f,
      22, -1, 0, { 0 }, { 0 }, 1.3f, 0.4f, 0.5f },
    { "llama3", 3, { 1, 200, 300 }, 40, 0.8f, 1.0f, 0, 0.02f,
      23, -1, 1, { 5 }, { 3.0f }, 1.1f, 0.2f, 0.0f },
};


static char *
req_json(const req_t *r)
{
    char    *j, *p, bias[128], prompt[256];
    size_t   off;

    off = 0;
    for (int i = 0; i < r->n_prompt; i++) {
        off += (size_t) snprintf(prompt + off, sizeof(prompt) - off, "%s%d",
                                 i ? "," : "", r->prompt[i]);
    }

    off = 0;
    bias[0] = '\0';
    for (int i = 0; i < r->n_bias; i++) {
        off += (size_t) snprintf(bias + off, sizeof(bias) - off,
                                 "%s\"%d\":%g", i ? "," : "",
                                 r->bias_ids[i], (double) r->bias[i]);
    }

    if (asprintf(&p, "%s%s%s", r->n_bias ? ",\"logit_bias\":{" : "", bias,
                 r->n_bias ? "}" : "") < 0)
    {
        return NULL;
    }

    if (asprintf(&j, "{\"model\":\"%s\",\"prompt_tokens\":[%s],"
                 "\"max_tokens\":%d,\"temperature\":%g,\"top_p\":%g,"
                 "\"top_k\":%d,\"min_p\":%g,\"seed\":%llu,"
                 "\"repetition_penalty\":%g,\"frequency_penalty\":%g,"
                 "\"presence_penalty\":%g%s%s%s}",
                 r->model, prompt, r->max_tokens, (double) r->temperature,
                 (double) r->top_p, r->top_k, (double) r->min_p,
                 (unsigned long long) r->seed, (double) r->repetition,
                 (double) r->frequency, (double) r->presence,
                 r->logprobs >= 0 ? ",\"logprobs\":" : "",
                 r->logprobs >= 0 ? (r->logprobs ? "2" : "0") : "", p)
        < 0)
    {
        j = NULL;
    }

    free(p);
    return j;
}


/*
 * The request's tokens computed here: the model a token at a time, the
 * bias and penalties applied as llm_sampler.h defines them, the twin
 * drawing under the seed and the count of tokens drawn so far, until an
 * end-of-generation token or max_tokens.
 */
static int
reference(llm_model_t *m, const req_t *r, ids_t *out)
{
    int                     n_vocab, pos;
    float                  *l;
    int32_t                 id;
    uint8_t                *seen;
    uint32_t               *counts;
    llm_err_t               err = { 0 };
    llm_kv_t               *kv;
    llm_sample_params_t     p;
    const llm_tokenizer_t  *tok;

    n_vocab = llm_model_config(m)->n_vocab;
    tok = llm_model_tokenizer(m);
    kv = llm_kv_new(m, r->n_prompt + r->max_tokens + 1, &err);
    l = malloc((size_t) n_vocab * sizeof(float));
    seen = calloc((size_t) n_vocab, 1);
    counts = calloc((size_t) n_vocab, sizeof(uint32_t));

    memset(out, 0, sizeof(*out));

    if (kv == NULL || l == NULL || seen == NULL || counts == NULL
        || llm_model_forward(m, kv, r->prompt, r->n_prompt, 0, l, 0, &err)
           != LLM_OK)
    {
        return -1;
    }

    for (int i = 0; i < r->n_prompt; i++) {
        seen[r->prompt[i]] = 1;
    }

    p.temperature = r->temperature;
    p.top_p = r->top_p;
    p.top_k = r->top_k;
    p.min_p = r->min_p;
    p.seed = r->seed;
    pos = r->n_prompt;

    for (int i = 0; i < r->max_tokens; i++) {
        for (int b = 0; b < r->n_bias; b++) {
            l[r->bias_ids[b]] += r->bias[b];
        }

        for (int t = 0; t < n_vocab; t++) {
            float  v = l[t];

            if (!seen[t]) {
                continue;
            }
            if (r->repetition != 1.0f) {
                v = v > 0.0f ? v / r->repetition : v * r->repetition;
            }
            if (counts[t]) {
                v -= (float) counts[t] * r->frequency + r->presence;
            }
            l[t] = v;
        }

        p.counter = (uint64_t) i;
        id = llm_sample_twin(l, n_vocab, &p);

        if (llm_tokenizer_is_eog(tok, id)) {
            break;
        }

        out->ids[out->n++] = id;
        seen[id] = 1;
        counts[id]++;

        if (i + 1 == r->max_tokens
            || llm_model_forward(m, kv, &id, 1, pos++, l, 0, &err) != LLM_OK)
        {
            break;
        }
    }

    out->done = 1;

    llm_kv_free(kv);
    free(l);
    free(seen);
    free(counts);
    return 0;
}


/* one slot's events: the ids of its TOKEN events; 1 once it ended */
static int
drain_ids(client_t *c, int slot, ids_t *r)
{
    llm_event_t     ev;
    llm_ev_token_t  t;
    unsigned char   buf[LLM_EVENT_MAX];

    while (llm_client_event(c, (uint32_t) slot, &ev, buf) == LLM_RING_OK) {
        if (ev.type == LLM_EV_TOKEN) {
            memcpy(&t, buf, sizeof(t));
            if (t.token >= 0 && r->n < MAX_GEN) {
                r->ids[r->n++] = t.token;
            }

        } else if (ev.type == LLM_EV_DONE) {
            r->done = 1;

        } else if (ev.type == LLM_EV_ERROR) {
            r->error = 1;
        }
    }

    llm_client_drained(c, (uint32_t) slot);

    return r->done || r->error;
}


static int
drain_ids_at(client_t *c, int slot, int i, void *arg)
{
    return drain_ids(c, slot, (ids_t *) arg + i);
}


/* submits the requests json[which[i]] at once and gathers them; 0 when
 * all ended */
static int
serve(client_t *c, char **json, const int *which, int n, ids_t *r)
{
    char  *pick[N_REQ];

    for (int i = 0; i < n; i++) {
        pick[i] = json[which[i]];
    }

    memset(r, 0, (size_t) n * sizeof(ids_t));
    return run_all(c, pick, n, drain_ids_at, r);
}


static int
same_ids(const ids_t *a, const ids_t *b)
{
    return a->done && b->done && !a->error && !b->error && a->n == b->n
           && memcmp(a->ids, b->ids, (size_t) a->n * sizeof(int32_t)) == 0;
}


static void
test_engine(client_t *c, llm_model_t *stories, llm_model_t *llama3)
{
    int      bad, which[N_REQ];
    char    *json[N_REQ];
    ids_t    want[N_REQ], alone[N_REQ], together[N_REQ];

    for (int i = 0; i < N_REQ; i++) {
        json[i] = req_json(&reqs[i]);
        which[i] = i;

        if (reference(strcmp(reqs[i].model, "stories") == 0 ? stories
                                                             : llama3,
                      &reqs[i], &want[i])
            != 0)
        {
            ok(0, "reference of request %d", i);
            return;
        }
    }

    /* the references themselves: the plain ones differ from greedy, the
     * adjusted ones from the same request without the adjustments */
    {
        req_t  r;
        ids_t  g;

        r = reqs[0];
        r.temperature = 0.0f;
        reference(stories, &r, &g);
        ok(!same_ids(&g, &want[0]) && want[0].n > 10,
           "request 0 does not draw the greedy tokens (%d tokens)",
           want[0].n);

        r = reqs[9];
        r.n_bias = 0;
        reference(stories, &r, &g);
        ok(!same_ids(&g, &want[9]), "the bias changes request 9's tokens");

        r = reqs[10];
        r.repetition = 1.0f;
        r.frequency = 0.0f;
        r.presence = 0.0f;
        reference(stories, &r, &g);
        ok(!same_ids(&g, &want[10]),
           "the penalties change request 10's tokens");
    }

    ok(same_ids(&want[0], &want[7]) && same_ids(&want[4], &want[8]),
       "logprobs change nothing in the reference");

    bad = 0;
    for (int i = 0; i < N_REQ; i++) {
        if (serve(c, json, &which[i], 1, &alone[i]) != 0
            || !same_ids(&alone[i], &want[i]))
        {
            diag("request %d alone: %d tokens (%s), want %d", i, alone[i].n,
                 alone[i].error ? "error" : "done", want[i].n);
            for (int j = 0; j < alone[i].n && j < want[i].n; j++) {
                if (alone[i].ids[j] != want[i].ids[j]) {
                    diag("  token %d: %d, want %d", j, alone[i].ids[j],
                         want[i].ids[j]);
                    break;
                }
            }
            bad++;
        }
    }
    is_int(bad, 0, "each seeded request alone: exactly the tokens drawn "
           "here by the twin, step by step");

    ok(same_ids(&alone[0], &alone[7]) && same_ids(&alone[4], &alone[8]),
       "with logprobs (sampled on the host) the same tokens as drawn on "
       "the backend");

    bad = 0;
    if (serve(c, json, which, N_REQ, together) != 0) {
        bad = N_REQ;
    }
    for (int i = 0; i < N_REQ; i++) {
        if (!same_ids(&together[i], &alone[i])) {
            diag("request %d together: %d tokens, alone %d", i,
                 together[i].n, alone[i].n);
            bad++;
        }
    }
    is_int(bad, 0, "%d at once, drawn on the backend and on the host in "
           "the same steps: each what it gives alone", N_REQ);

    for (int i = 0; i < N_REQ; i++) {
        free(json[i]);
    }
}


/*
 * Some of the requests, shorter, on the CUDA backend where the build has
 * the CPU emulator of CUDA (t/gpu/emu, slow): the tokens are drawn by
 * the sample kernel from logits in device memory, or, with logprobs, by
 * the twin on the host from the same logits read back.  The logits are
 * not the CPU's, so the tokens are held to each other; how many match
 * the CPU's is only said.
 */
#define N_EMU  4

static void
test_emu(const char *exe, const char *m2)
{
    int               status, bad, which[N_EMU];
    char             *json[N_EMU], sock[108], uid[32];
    pid_t             pid;
    req_t             r;
    ids_t             alone[N_EMU], together[N_EMU];
    client_t          c;
    const char       *argv[] = { exe, "serve", "--socket", sock,
                                 "--allow-user", uid, "--log-level", "warn",
                                 "--backend", "cuda", "--model",
                                 "stories=models/stories260K.gguf",
                                 "--model", m2, "--slots", "16",
                                 "--max-seqs", "16", NULL };
    static const int  pick[N_EMU] = { 0, 7, 4, 8 };   /* 7, 8: logprobs */

    snprintf(sock, sizeof(sock), "/tmp/llm_draw_emu_%d.sock",
             (int) getpid());
    snprintf(uid, sizeof(uid), "%u", (unsigned) getuid());

    pid = fork();
    if (pid == 0) {
        setenv("LLM_EMU_QUIET", "1", 1);
        execv(exe, (char **) argv);
        _exit(127);
    }

    for (int i = 0; i < 400 && access(sock, F_OK) != 0; i++) {
        sleep_ms(25);
    }

    if (!ok(client_connect(&c, sock) == 0,
            "the engine on the CUDA emulator"))
    {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return;
    }

    bad = 0;
    for (int i = 0; i < N_EMU; i++) {
        r = reqs[pick[i]];
        r.max_tokens = 10;
        json[i] = req_json(&r);
        which[i] = i;

        if (serve(&c, json, &which[i], 1, &alone[i]) != 0
            || !alone[i].done || alone[i].error || alone[i].n == 0)
        {
            bad++;
        }
    }
    is_int(bad, 0, "CUDA: every request served");

    ok(same_ids(&alone[0], &alone[1]) && same_ids(&alone[2], &alone[3]),
       "CUDA: the sample kernel draws what the twin draws on the host");

    bad = 0;
    if (serve(&c, json, which, N_EMU, together) != 0) {
        bad = N_EMU;
    }
    for (int i = 0; i < N_EMU; i++) {
        bad += !same_ids(&together[i], &alone[i]);
    }
    is_int(bad, 0, "CUDA: %d at once, each what it gives alone", N_EMU);

    for (int i = 0; i < N_EMU; i++) {
        free(json[i]);
    }

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
}


int
main(void)
{
    int           status;
    pid_t         pid;
    client_t      c;
    result_t      r;
    char          sock[108], m2[512], emu[512];
    llm_err_t     err = { 0 };
    llm_model_t  *stories, *llama3;
    const char   *args[] = { "--model", "stories=models/stories260K.gguf",
                             "--model", m2, "--slots", "16",
                             "--max-seqs", "16", NULL };

    snprintf(m2, sizeof(m2), "llama3=%s/models/tiny-llama3-f32.gguf",
             fixtures());
    if (access(m2 + 7, R_OK) != 0) {
        skip_all("no fixtures (LLM_FIXTURES)");
    }

    test_model("stories260K", "models/stories260K.gguf");
    test_model("tiny-llama3", m2 + 7);

    if (!ok(llm_model_load(&stories, "models/stories260K.gguf", &err)
            == LLM_OK
            && llm_model_load(&llama3, m2 + 7, &err) == LLM_OK,
            "the models, here: %s", err.errstr))
    {
        return done_testing();
    }

    snprintf(sock, sizeof(sock), "/tmp/llm_draw_%d.sock", (int) getpid());
    pid = start_engine_argv(sock, (unsigned) getuid(), args);

    if (!ok(pid > 0 && client_connect(&c, sock) == 0,
            "an engine serving both"))
    {
        if (pid > 0) {
            kill(pid, SIGKILL);
        }
        return done_testing();
    }

    /* a request without a seed gets one from the clock */
    ok(run(&c, "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":8}",
           &r) == 0 && r.done && r.d.completion_tokens > 0,
       "no seed: served");

    test_engine(&c, stories, llama3);

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);

    snprintf(emu, sizeof(emu), "%s/emu/llm-engine",
             getenv("LLM_BUILD") ? getenv("LLM_BUILD") : "build");
    if (access(emu, X_OK) == 0) {
        test_emu(emu, m2);
    }

    llm_model_free(stories);
    llm_model_free(llama3);

    return done_testing();
}
