/*
 * Copyright (C) ngx_llm developers
 *
 * KV block bookkeeping: exact behaviour on small cases, then a long random
 * run checked step by step against a naive model written here (arrays and
 * linear searches, LRU by a logical clock).
 */

#include <string.h>

#include "tap.h"
#include "llm_kv.h"


static void
test_basics(void)
{
    int32_t         b0, b1, b2, x;
    int32_t         toks[4] = { 1, 2, 3, 4 };
    uint64_t        h1, h2;
    llm_err_t       err;
    llm_kv_alloc_t  a;

    ok(llm_kv_alloc_init(&a, 3, 16, &err) == LLM_OK, "init 3 blocks");
    b0 = llm_kv_alloc_block(&a);
    b1 = llm_kv_alloc_block(&a);
    b2 = llm_kv_alloc_block(&a);
    ok(b0 >= 0 && b1 >= 0 && b2 >= 0 && b0 != b1 && b1 != b2 && b0 != b2,
       "three distinct blocks");
    is_int(llm_kv_alloc_block(&a), -1, "none left while all are in use");
    is_int(llm_kv_available(&a), 0, "nothing available");

    h1 = llm_kv_hash(7, toks, 4);
    h2 = llm_kv_hash(h1, toks, 4);
    ok(h1 != h2 && h1 >= 2 && h2 >= 2, "chained hashes differ");
    ok(llm_kv_hash(8, toks, 4) != h1, "the parent changes the hash");
    toks[3] = 5;
    ok(llm_kv_hash(7, toks, 4) != h1, "a token changes the hash");

    llm_kv_publish(&a, b0, h1);
    is_int(llm_kv_lookup(&a, h1), b0, "a published block is found");
    is_int(a.ref[b0], 2, "and shared: two references");
    is_int(llm_kv_lookup(&a, h2), -1, "an unknown prefix is not");

    llm_kv_release(&a, b0);
    llm_kv_release(&a, b0);
    is_int(a.n_cached, 1, "unreferenced, the block is kept");
    llm_kv_release(&a, b1);
    is_int(a.n_free, 1, "an unpublished block is freed");
    is_int(llm_kv_available(&a), 2, "two available");

    x = llm_kv_alloc_block(&a);
    is_int(x, b1, "allocation prefers a free block to a kept one");
    is_int(llm_kv_lookup(&a, h1), b0, "so the kept prefix survives");
    llm_kv_release(&a, b0);

    x = llm_kv_alloc_block(&a);
    is_int(x, b0, "with nothing free, the kept block is reused");
    is_int(llm_kv_lookup(&a, h1), -1, "and its prefix is gone");
    is_int(a.evictions, 1, "one eviction");

    /* a second block published under a hash already known stays private */
    llm_kv_publish(&a, x, h2);
    llm_kv_publish(&a, b2, h2);
    llm_kv_release(&a, b2);
    is_int(a.n_free, 1, "a duplicate prefix is freed, not kept");

    llm_kv_alloc_free(&a);
}


/* the naive model */
#define NB  24

static int       m_ref[NB];
static uint64_t  m_hash[NB];
static uint64_t  m_used_at[NB];   /* when it last went unreferenced */


static void
test_random(void)
{
    int             bad = 0, steps = 200000;
    int32_t         held[4096];
    int             n_held = 0;
    uint64_t        clock = 0, rng = 88172645463325252ULL;
    llm_err_t       err;
    llm_kv_alloc_t  a;

    llm_kv_alloc_init(&a, NB, 4, &err);
    memset(m_ref, 0, sizeof(m_ref));
    memset(m_hash, 0, sizeof(m_hash));

    for (int s = 0; s < steps && !bad; s++) {
        int       op;
        uint64_t  h;

        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        op = (int) (rng % 4);
        h = 2 + (rng >> 8) % 40;      /* few distinct prefixes: collisions */
        clock++;

        if (op == 0) {
            /* allocate: naive choice is a free block if any, else the
             * kept one unreferenced longest */
            int32_t  want = -1, got;
            int      any_free = 0;

            for (int b = 0; b < NB; b++) {
                if (m_ref[b] == 0 && m_hash[b] == 0) {
                    any_free = 1;
                }
            }
            if (!any_free) {
                for (int b = 0; b < NB; b++) {
                    if (m_ref[b] == 0 && m_hash[b] != 0
                        && (want == -1 || m_used_at[b] < m_used_at[want]))
                    {
                        want = b;
                    }
                }
            }
            got = llm_kv_alloc_block(&a);
            if (got == -1) {
                for (int b = 0; b < NB; b++) {
                    bad |= m_ref[b] == 0;
                }
                continue;
            }
            if (!any_free && got != want) {
                diag("step %d: evicted %d, want %d", s, got, want);
                bad = 1;
            }
            if (m_ref[got] != 0 || (any_free && m_hash[got] != 0)) {
                diag("step %d: got a busy block %d", s, got);
                bad = 1;
            }
            m_ref[got] = 1;
            m_hash[got] = 0;
            held[n_held++] = got;

        } else if (op == 1 && n_held > 0) {
            int      i = (int) ((rng >> 20) % (uint64_t) n_held);
            int32_t  b = held[i];

            held[i] = held[--n_held];
            llm_kv_release(&a, b);
            if (--m_ref[b] == 0) {
                m_used_at[b] = clock;
            }

        } else if (op == 2 && n_held > 0) {
            int32_t  b = held[(rng >> 20) % (uint64_t) n_held];
            int      known = 0;

            for (int x = 0; x < NB; x++) {
                known |= m_hash[x] == h;
            }
            llm_kv_publish(&a, b, h);
            if (!known && m_hash[b] == 0) {
                m_hash[b] = h;
            }

        } else if (op == 3 && n_held < 4096) {
            int32_t  want = -1, got;

            for (int x = 0; x < NB; x++) {
                if (m_hash[x] == h) {
                    want = x;
                }
            }
            got = llm_kv_lookup(&a, h);
            if (got != want) {
                diag("step %d: hash[%d]=%llu ref %d tomb %u", s, got, (unsigned long long) (got >= 0 ? a.hash[got] : 0), got >= 0 ? a.ref[got] : 0, a.n_tomb);
                diag("step %d: lookup %llu gave %d, want %d", s,
                     (unsigned long long) h, got, want);
                bad = 1;
            }
            if (got >= 0) {
                m_ref[got]++;
                held[n_held++] = got;
            }
        }

        /* the counters add up */
        {
            int  used = 0, cached = 0, free_ = 0;

            for (int b = 0; b < NB; b++) {
                if (m_ref[b] > 0) {
                    used++;
                } else if (m_hash[b] != 0) {
                    cached++;
                } else {
                    free_++;
                }
                if (a.ref[b] != m_ref[b] || a.hash[b] != m_hash[b]) {
                    diag("step %d: block %d ref %d/%d hash %llu/%llu", s, b,
                         a.ref[b], m_ref[b], (unsigned long long) a.hash[b],
                         (unsigned long long) m_hash[b]);
                    bad = 1;
                    break;
                }
            }
            if (used != a.n_used || cached != a.n_cached
                || free_ != a.n_free)
            {
                diag("step %d: used %d/%d cached %d/%d free %d/%d", s, used,
                     a.n_used, cached, a.n_cached, free_, a.n_free);
                bad = 1;
            }
        }
    }

    ok(!bad, "%d random operations agree with the naive model", steps);
    ok(a.evictions > 0 && a.hits > 0 && a.misses > 0,
       "the run evicted, hit and missed (%llu, %llu, %llu)",
       (unsigned long long) a.evictions, (unsigned long long) a.hits,
       (unsigned long long) a.misses);
    llm_kv_alloc_free(&a);
}


int
main(void)
{
    test_basics();
    test_random();
    return done_testing();
}
