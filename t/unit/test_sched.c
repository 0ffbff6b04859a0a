/*
 * Copyright (C) ngx_llm developers
 *
 * The scheduler through the protocol, on a real engine serving two
 * models: concurrent greedy requests give exactly what they give one at a
 * time; a shared prefix is served from the cache with identical output; a
 * KV pool too small for everyone still completes every request, through
 * preemption; a request larger than the pool is refused; cancelling gives
 * every block back.
 */

#define _GNU_SOURCE

#include "tap.h"
#include "llm_test_client.h"


#define N_PROMPTS  8


static const char  *prompts[N_PROMPTS] = {
    "Once upon a time",
    "The cat",
    "Lily and Tom went to the park to play with a big red ball. They ran and "
    "ran until they were tired. Then they sat under a tree and ate apples. "
    "A bird came down and",
    "One day",
    "Tom had a dog",
    "She saw a",
    "There was a little boat on the water. It was blue and",
    "Mom said",
};


static const char *
fixtures(void)
{
    const char  *f = getenv("LLM_FIXTURES");

    return f ? f : "../shared/fixtures";
}


static int
drain_result(client_t *c, int slot, int i, void *arg)
{
    return drain(c, slot, (result_t *) arg + i);
}


/* submits every request at once, then drains them all; 0 when all ended */
static int
run_many(client_t *c, char **json, int n, result_t *r)
{
    memset(r, 0, (size_t) n * sizeof(result_t));
    return run_all(c, json, n, drain_result, r);
}


static char *
request(const char *model, const char *prompt, int max_tokens)
{
    char  *j;

    if (asprintf(&j, "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,"
                 "\"temperature\":0}", model, prompt, max_tokens) < 0)
    {
        return NULL;
    }
    return j;
}


static void
test_concurrent(client_t *c)
{
    int        bad;
    char      *json[N_PROMPTS * 2];
    result_t  *alone, *together;

    alone = calloc(N_PROMPTS * 2, sizeof(result_t));
    together = calloc(N_PROMPTS * 2, sizeof(result_t));

    for (int i = 0; i < N_PROMPTS * 2; i++) {
        json[i] = request(i % 2 ? "llama3" : "stories", prompts[i / 2],
                          20 + 7 * (i % 5));
        run(c, json[i], &alone[i]);
    }

    for (int n = 2; n <= N_PROMPTS * 2; n *= 2) {
        ok(run_many(c, json, n, together) == 0, "%d requests at once end", n);
        bad = 0;
        for (int i = 0; i < n; i++) {
            if (!together[i].done
                || strcmp(together[i].text, alone[i].text) != 0
                || together[i].d.completion_tokens
                   != alone[i].d.completion_tokens)
            {
                diag("request %d: \"%s\" vs \"%s\"", i, together[i].text,
                     alone[i].text);
                bad++;
            }
        }
        is_int(bad, 0, "%d at once (two models, mixed lengths) give exactly "
               "what each gives alone", n);
    }

    for (int i = 0; i < N_PROMPTS * 2; i++) {
        free(json[i]);
    }
    free(alone);
    free(together);
}


static void
test_prefix(client_t *c, client_t *cold)
{
    char      *a, *b;
    result_t   ra, rb, rb_cold;
    char       prompt[4096];

    prompt[0] = '\0';
    for (int i = 0; i < 12; i++) {
        strcat(prompt, "Lily and Tom went to the park to play with a ball. ");
    }

    strcpy(prompt + strlen(prompt), "Then Lily");
    a = request("stories", prompt, 24);
    strcpy(prompt + strlen(prompt) - 4, "Tom");
    b = request("stories", prompt, 24);

    ok(run(c, a, &ra) == 0 && ra.done, "a long prompt");
    ok(run(c, b, &rb) == 0 && rb.done, "another with the same beginning");
    ok(rb.d.cached_tokens > 100, "served %u of %u prompt tokens from the "
       "prefix cache", rb.d.cached_tokens, rb.d.prompt_tokens);
    ok(rb.d.cached_tokens < rb.d.prompt_tokens, "but not the differing end");

    ok(run(cold, b, &rb_cold) == 0 && rb_cold.done
       && rb_cold.d.cached_tokens == 0, "the same on a cold engine");
    ok(strcmp(rb.text, rb_cold.text) == 0,
       "the cached run gives the identical text");

    free(a);
    free(b);
}


static void
test_preemption(client_t *c)
{
    int        bad;
    char      *json[6];
    result_t   alone[6], together[6];
    uint64_t   before;

    for (int i = 0; i < 6; i++) {
        json[i] = request("stories", prompts[i], 150 + 10 * i);
        run(c, json[i], &alone[i]);
    }

    before = stat(c, LLM_STAT_PREEMPTIONS);
    ok(run_many(c, json, 6, together) == 0,
       "six long requests on a small KV pool end");
    bad = 0;
    for (int i = 0; i < 6; i++) {
        if (!together[i].done || strcmp(together[i].text, alone[i].text)) {
            bad++;
        }
    }
    is_int(bad, 0, "each with its own text");
    ok(stat(c, LLM_STAT_PREEMPTIONS) > before, "some were preempted (%llu)",
       (unsigned long long) (stat(c, LLM_STAT_PREEMPTIONS) - before));
    is_int(stat(c, LLM_STAT_KV_USED), 0, "no block in use at the end");

    /* more than the whole pool: refused at once */
    {
        result_t  r;
        char     *j = request("stories", "Once", 2000);

        ok(run(c, j, &r) == 0 && r.error && r.e.status == 400,
           "a request larger than the pool is refused");
        free(j);
    }

    for (int i = 0; i < 6; i++) {
        free(json[i]);
    }
}


static void
test_cancel_blocks(client_t *c)
{
    int          slot;
    uint32_t     w;
    llm_slot_t  *s;

    slot = submit(c, "{\"model\":\"stories\",\"prompt\":\"Once\","
                     "\"max_tokens\":1500,\"temperature\":0}");
    s = llm_shm_slot(c->base, c->h, (uint32_t) slot);

    for (int i = 0; i < 2000 && stat(c, LLM_STAT_KV_USED) < 3; i++) {
        sleep_ms(5);
    }
    ok(stat(c, LLM_STAT_KV_USED) >= 3, "generating holds blocks");

    w = atomic_load(&s->state);
    atomic_compare_exchange_strong(&s->state, &w,
        llm_slot_word(LLM_SLOT_CANCELLED, c->worker_id));
    ring_engine(c);

    for (int i = 0; i < 2000; i++) {
        if (llm_slot_state(atomic_load(&s->state)) == LLM_SLOT_FREE
            && stat(c, LLM_STAT_KV_USED) == 0)
        {
            break;
        }
        sleep_ms(5);
    }
    is_int(stat(c, LLM_STAT_KV_USED), 0, "cancelled: every block back");
    is_int(stat(c, LLM_STAT_RUNNING), 0, "nothing running");
}


int
main(void)
{
    int          status;
    pid_t        big, cold, small;
    client_t     c, cc, cs;
    char         p1[108], p2[108], p3[108], m2[512];
    const char  *big_args[] = { "--model", "stories=models/stories260K.gguf",
                                "--model", m2, "--slots", "32",
                                "--max-seqs", "32", NULL };
    const char  *cold_args[] = { "--model",
                                 "stories=models/stories260K.gguf", NULL };
    /* 40 blocks of 16 positions: 640 positions for everyone */
    const char  *small_args[] = { "--model",
                                  "stories=models/stories260K.gguf",
                                  "--kv-cache", "819200", NULL };

    snprintf(m2, sizeof(m2), "llama3=%s/models/tiny-llama3-f32.gguf",
             fixtures());
    if (access(m2 + 7, R_OK) != 0) {
        skip_all("no fixtures (LLM_FIXTURES)");
    }

    snprintf(p1, sizeof(p1), "/tmp/llm_sched_a_%d.sock", (int) getpid());
    snprintf(p2, sizeof(p2), "/tmp/llm_sched_b_%d.sock", (int) getpid());
    snprintf(p3, sizeof(p3), "/tmp/llm_sched_c_%d.sock", (int) getpid());

    big = start_engine_argv(p1, (unsigned) getuid(), big_args);
    cold = start_engine_argv(p2, (unsigned) getuid(), cold_args);
    small = start_engine_argv(p3, (unsigned) getuid(), small_args);

    if (!ok(big > 0 && cold > 0 && small > 0, "three engines started")
        || !ok(client_connect(&c, p1) == 0 && client_connect(&cc, p2) == 0
               && client_connect(&cs, p3) == 0, "attached to each"))
    {
        kill(big, SIGKILL);
        kill(cold, SIGKILL);
        kill(small, SIGKILL);
        return done_testing();
    }

    test_concurrent(&c);
    test_prefix(&c, &cc);
    test_preemption(&cs);
    test_cancel_blocks(&c);

    kill(big, SIGTERM);
    kill(cold, SIGTERM);
    kill(small, SIGTERM);
    waitpid(big, &status, 0);
    waitpid(cold, &status, 0);
    waitpid(small, &status, 0);

    return done_testing();
}
