/*
 * Copyright (C) ngx_llm developers
 *
 * sched-bench: measures the engine's scheduler through its own protocol
 * (no nginx in the way).
 *
 *   sched-bench throughput SOCKET MODEL N GEN
 *       N sequences at once, each a short prompt and GEN greedy tokens:
 *       prints the total decode rate (generated tokens / wall time from
 *       the first first-token to the last token).
 *
 *   sched-bench ttft SOCKET MODEL PREFIX SEED
 *       one request of PREFIX token ids (a fixed pseudo-random prefix)
 *       plus 8 tokens that depend on SEED, 1 generated token: prints the
 *       engine's time to first token and the cached prompt tokens.
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>

#include "llm_common.h"
#include "llm_test_client.h"


static int
usage(void)
{
    fprintf(stderr, "usage: sched-bench throughput SOCKET MODEL N GEN\n"
                    "       sched-bench ttft SOCKET MODEL PREFIX SEED\n");
    return 2;
}


static int
throughput(client_t *c, const char *model, int n, int gen)
{
    int        slot[256], left;
    char      *json;
    uint64_t   v, t0, t_first, t_end;
    long long  tokens;
    result_t  *r;

    if (n < 1 || n > 256 || gen < 1) {
        return usage();
    }

    r = calloc((size_t) n, sizeof(result_t));
    if (r == NULL) {
        return 1;
    }

    t0 = llm_now_us();
    for (int i = 0; i < n; i++) {
        if (asprintf(&json, "{\"model\":\"%s\",\"prompt_tokens\":[1,%d,%d,"
                     "%d,%d],\"max_tokens\":%d,\"temperature\":0}", model,
                     300 + i, 301 + i % 7, 302 + i % 13, 303 + i % 3, gen)
            < 0)
        {
            return 1;
        }
        slot[i] = submit(c, json);
        free(json);
        if (slot[i] < 0) {
            fprintf(stderr, "sched-bench: no free slot for %d\n", i);
            return 1;
        }
    }

    left = n;
    while (left > 0) {
        struct pollfd  p = { c->my_bell, POLLIN, 0 };

        poll(&p, 1, 5);
        (void) !read(c->my_bell, &v, sizeof(v));
        for (int i = 0; i < n; i++) {
            llm_slot_t  *s;

            if (slot[i] < 0 || !drain(c, slot[i], &r[i])) {
                continue;
            }
            s = llm_shm_slot(c->base, c->h, (uint32_t) slot[i]);
            if (llm_slot_state(atomic_load(&s->state)) == LLM_SLOT_FINISHED) {
                atomic_store(&s->state, llm_slot_word(LLM_SLOT_FREE, 0));
                slot[i] = -1;
                left--;
            }
        }
    }
    t_end = llm_now_us();

    tokens = 0;
    t_first = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (r[i].error) {
            fprintf(stderr, "sched-bench: request %d: %s\n", i, r[i].message);
            return 1;
        }
        tokens += r[i].d.completion_tokens;
        if (t0 + r[i].d.ttft_us < t_first) {
            t_first = t0 + r[i].d.ttft_us;
        }
    }

    printf("sequences: %d\ngenerated: %lld\nwall_s: %.3f\n"
           "decode_tok_s: %.2f\n", n, tokens, (t_end - t0) / 1e6,
           tokens / ((t_end - t_first) / 1e6));
    free(r);
    return 0;
}


static int
ttft(client_t *c, const char *model, int prefix, int seed)
{
    int       n;
    char     *json;
    size_t    len;
    result_t  r;
    uint64_t  x;

    len = (size_t) prefix * 8 + 256;
    json = malloc(len);
    if (json == NULL || prefix < 1) {
        return 1;
    }

    n = snprintf(json, len, "{\"model\":\"%s\",\"prompt_tokens\":[1", model);
    x = 88172645463325252ULL;
    for (int i = 0; i < prefix + 8; i++) {
        if (i == prefix) {
            x ^= (uint64_t) seed * 0x9e3779b97f4a7c15ULL;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += snprintf(json + n, len - (size_t) n, ",%d",
                      (int) (259 + x % 30000));
    }
    snprintf(json + n, len - (size_t) n, "],\"max_tokens\":1,"
             "\"temperature\":0}");

    if (run(c, json, &r) != 0 || !r.done) {
        fprintf(stderr, "sched-bench: %s\n", r.error ? r.message : "timeout");
        return 1;
    }
    free(json);

    printf("prompt_tokens: %u\ncached_tokens: %u\nttft_ms: %.1f\n",
           r.d.prompt_tokens, r.d.cached_tokens, r.d.ttft_us / 1000.0);
    return 0;
}


int
main(int argc, char **argv)
{
    client_t  c;

    if (argc != 6) {
        return usage();
    }
    if (client_connect(&c, argv[2]) != 0) {
        fprintf(stderr, "sched-bench: cannot attach to %s\n", argv[2]);
        return 1;
    }

    if (strcmp(argv[1], "throughput") == 0) {
        return throughput(&c, argv[3], atoi(argv[4]), atoi(argv[5]));
    }
    if (strcmp(argv[1], "ttft") == 0) {
        return ttft(&c, argv[3], atoi(argv[4]), atoi(argv[5]));
    }
    return usage();
}
