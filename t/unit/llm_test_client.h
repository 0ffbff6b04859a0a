/*
 * Copyright (C) ngx_llm developers
 *
 * For the tests that drive a real `llm-engine serve`: start an engine,
 * then speak the protocol through bench/llm_client.h (the handshake,
 * claiming and submitting slots, rings, doorbells) and gather a
 * request's events into a result_t.  Header-only; include it once per
 * test program, after defining _GNU_SOURCE.
 */

#ifndef LLM_TEST_CLIENT_H
#define LLM_TEST_CLIENT_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "../../bench/llm_client.h"


typedef llm_client_t  client_t;


typedef struct {
    char            text[65536];
    size_t          text_len;
    int             n_token_events;
    int             n_logprobs;
    int             logprobs_before_token;   /* every LOGPROBS then TOKEN */
    int             first_top_matches;       /* greedy pick is top[0] */
    int             done;
    llm_ev_done_t   d;
    int             error;
    llm_ev_error_t  e;
    char            message[512];
} result_t;


static void
sleep_ms(int ms)
{
    struct timespec  ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}


/* starts an engine on path that lets in only the user uid, with the
 * extra arguments (NULL-terminated) naming its models and settings */
static pid_t
start_engine_argv(const char *path, unsigned uid, const char **extra)
{
    int          n;
    pid_t        pid;
    const char  *build, *argv[64];
    char         exe[512], allow[32];

    build = getenv("LLM_BUILD");
    snprintf(exe, sizeof(exe), "%s/llm-engine", build ? build : "build");
    snprintf(allow, sizeof(allow), "%u", uid);

    n = 0;
    argv[n++] = exe;
    argv[n++] = "serve";
    argv[n++] = "--socket";
    argv[n++] = path;
    argv[n++] = "--allow-user";
    argv[n++] = allow;
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    for (int i = 0; extra[i] != NULL && n < 63; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;

    pid = fork();
    if (pid == 0) {
        execv(exe, (char **) argv);
        _exit(127);
    }

    for (int i = 0; i < 200; i++) {
        if (access(path, F_OK) == 0) {
            return pid;
        }
        sleep_ms(25);
    }
    return -1;
}


static pid_t __attribute__((unused))
start_engine_as(const char *path, unsigned uid)
{
    const char  *extra[] = { "--model", "stories=models/stories260K.gguf",
                             "--slots", "8", NULL };

    return start_engine_argv(path, uid, extra);
}


static int
client_connect(client_t *c, const char *path)
{
    char  err[256];

    return llm_client_connect(c, path, err, sizeof(err));
}


static void __attribute__((unused))
ring_engine(client_t *c)
{
    llm_client_ring(c);
}


/* claims a free slot and submits json; returns the slot or -1 */
static int
submit(client_t *c, const char *json)
{
    uint32_t  gen;

    return llm_client_submit(c, json, strlen(json), &gen);
}


/* drains one slot's ring into r; returns 1 once DONE or ERROR arrived */
static int
drain(client_t *c, int slot, result_t *r)
{
    int             last_was_logprobs = 0;
    llm_event_t     ev;
    llm_ev_token_t  t;
    unsigned char   buf[LLM_EVENT_MAX];

    while (llm_client_event(c, (uint32_t) slot, &ev, buf) == LLM_RING_OK) {

        switch (ev.type) {

        case LLM_EV_TOKEN:
            memcpy(&t, buf, sizeof(t));
            memcpy(r->text + r->text_len, buf + sizeof(t),
                   ev.len - sizeof(t));
            r->text_len += ev.len - sizeof(t);
            r->n_token_events++;
            if (r->n_logprobs && !last_was_logprobs && t.token >= 0) {
                r->logprobs_before_token = 0;
            }
            last_was_logprobs = 0;
            break;

        case LLM_EV_LOGPROBS: {
            llm_ev_logprobs_t  lp;
            llm_ev_alt_t       alt;

            memcpy(&lp, buf, sizeof(lp));
            if (lp.n_top > 0) {
                memcpy(&alt, buf + sizeof(lp) + lp.piece_len, sizeof(alt));
                if (alt.token != lp.token
                    || alt.logprob - lp.logprob > 1e-4f
                    || lp.logprob - alt.logprob > 1e-4f)
                {
                    r->first_top_matches = 0;
                }
            }
            r->n_logprobs++;
            last_was_logprobs = 1;
            break;
        }

        case LLM_EV_DONE:
            memcpy(&r->d, buf, sizeof(r->d));
            r->done = 1;
            break;

        case LLM_EV_ERROR:
            memcpy(&r->e, buf, sizeof(r->e));
            memcpy(r->message, buf + sizeof(r->e), ev.len - sizeof(r->e));
            r->error = 1;
            break;
        }
    }

    r->text[r->text_len] = '\0';

    llm_client_drained(c, (uint32_t) slot);

    return r->done || r->error;
}


/* waits for the slot to finish, frees it; returns 0 or -1 on timeout */
static int
run(client_t *c, const char *json, result_t *r)
{
    int          slot;
    uint32_t     w;
    uint64_t     v;
    llm_slot_t  *s;

    memset(r, 0, sizeof(*r));
    r->logprobs_before_token = 1;
    r->first_top_matches = 1;

    slot = submit(c, json);
    if (slot < 0) {
        return -1;
    }
    s = llm_shm_slot(c->base, c->h, (uint32_t) slot);

    for (int i = 0; i < 30000; i++) {
        struct pollfd  p = { c->my_bell, POLLIN, 0 };

        poll(&p, 1, 20);
        (void) !read(c->my_bell, &v, sizeof(v));
        if (drain(c, slot, r)) {
            /* the engine marks FINISHED right after its last event */
            for (int j = 0; j < 100; j++) {
                w = atomic_load(&s->state);
                if (llm_slot_state(w) == LLM_SLOT_FINISHED) {
                    atomic_store(&s->state, llm_slot_word(LLM_SLOT_FREE, 0));
                    return 0;
                }
                sleep_ms(5);
            }
            return -1;
        }
    }
    return -1;
}


/*
 * Submits every request at once (n <= 64), then gathers them:
 * drain_one(c, slot, i, arg) takes request i's events and returns 1
 * once its last came; each slot is freed when the engine marks it
 * FINISHED.  0 when all ended.
 */
static int __attribute__((unused))
run_all(client_t *c, char *const *json, int n,
    int (*drain_one)(client_t *c, int slot, int i, void *arg), void *arg)
{
    int          slot[64], left;
    uint64_t     v;
    llm_slot_t  *s;

    if (n > 64) {
        return -1;
    }

    for (int i = 0; i < n; i++) {
        slot[i] = submit(c, json[i]);
        if (slot[i] < 0) {
            return -1;
        }
    }

    left = n;
    for (int round = 0; round < 60000 && left > 0; round++) {
        struct pollfd  p = { c->my_bell, POLLIN, 0 };

        poll(&p, 1, 5);
        (void) !read(c->my_bell, &v, sizeof(v));

        for (int i = 0; i < n; i++) {
            if (slot[i] < 0 || !drain_one(c, slot[i], i, arg)) {
                continue;
            }

            s = llm_shm_slot(c->base, c->h, (uint32_t) slot[i]);
            if (llm_slot_state(atomic_load(&s->state)) == LLM_SLOT_FINISHED)
            {
                atomic_store(&s->state, llm_slot_word(LLM_SLOT_FREE, 0));
                slot[i] = -1;
                left--;
            }
        }
    }

    return left == 0 ? 0 : -1;
}


static uint64_t __attribute__((unused))
stat(client_t *c, int i)
{
    return llm_client_stat(c, i);
}


#endif /* LLM_TEST_CLIENT_H */
