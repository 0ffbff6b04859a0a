/*
 * Copyright (C) ngx_llm developers
 *
 * The scheduler: continuous batching over a paged KV cache.
 *
 * Every step, for each model, it gathers the next token of every
 * generating sequence and then chunks of prompts (highest priority, then
 * oldest first) under a token budget, makes sure each has KV blocks for
 * the positions it is about to fill, and runs one batched forward pass.
 * A sequence that starts (or restarts) with nothing cached first looks its
 * prompt up in the prefix cache block by block.  When blocks run out, the
 * youngest sequence holding blocks is preempted: its blocks go back (the
 * published ones stay cached) and it recomputes later from its tokens.
 */

#include <stdlib.h>
#include <string.h>

#include "llm_log.h"
#include "llm_sched.h"


static void llm_sched_prefix(llm_server_t *srv, llm_seq_t *q);
static int llm_sched_blocks(llm_seq_t *q, int upto);
static void llm_sched_preempt(llm_server_t *srv, llm_seq_t *q);
static llm_seq_t *llm_sched_victim(llm_server_t *srv, llm_serve_model_t *m);
static void llm_sched_publish(llm_seq_t *q);
static int llm_sched_gather(llm_server_t *srv, llm_serve_model_t *m,
    int *n_tok);
static void llm_sched_gauges(llm_server_t *srv);


int
llm_sched_model_init(llm_serve_model_t *m, size_t kv_bytes, int block_size,
    llm_err_t *err)
{
    size_t  bb, n;

    bb = llm_kv_block_bytes(m->model, block_size);
    n = bb ? kv_bytes / bb : 0;

    /* room for at least one full context, or the cache is useless */
    if (n * (size_t) block_size < (size_t) m->n_ctx / 4 || n < 2) {
        return llm_err_set(err, LLM_EINVAL,
                           "model %s: a KV cache of %zu bytes holds %zu "
                           "positions; give --kv-cache more", m->name,
                           kv_bytes, n * (size_t) block_size);
    }
    if (n > (1u << 24)) {
        n = 1u << 24;
    }

    m->block_size = block_size;
    m->seed = llm_kv_hash(0x6c6c6d2d6b76ULL, NULL, 0);

    m->pool = llm_kv_pool_new(m->model, (int) n, block_size, err);
    if (m->pool == NULL) {
        return LLM_ERR;
    }

    if (llm_kv_alloc_init(&m->alloc, (int) n, block_size, err) != LLM_OK) {
        llm_kv_pool_free(m->pool);
        m->pool = NULL;
        return LLM_ERR;
    }

    llm_log(LLM_LOG_INFO, "model %s: KV cache of %zu blocks of %d positions "
            "(%zu MiB)", m->name, n, block_size, n * bb >> 20);
    return LLM_OK;
}


void
llm_sched_model_free(llm_serve_model_t *m)
{
    llm_kv_alloc_free(&m->alloc);
    llm_kv_pool_free(m->pool);
    m->pool = NULL;
}


/* a request that could never fit in the whole cache is refused now */
int
llm_sched_admit_check(llm_seq_t *q, llm_err_t *err)
{
    int64_t  need, have;

    need = (int64_t) q->n_prompt + q->max_tokens;
    if (need > q->m->n_ctx) {
        need = q->m->n_ctx;
    }
    have = (int64_t) q->m->alloc.n_blocks * q->m->block_size;

    if (need > have) {
        return llm_err_set(err, LLM_EINVAL,
                           "the request needs %lld KV positions, the cache "
                           "holds %lld", (long long) need, (long long) have);
    }

    return LLM_OK;
}


void
llm_sched_step(llm_server_t *srv)
{
    int                  n, kept, *n_tok;
    uint64_t             t0;
    llm_err_t            err;
    llm_seq_t           *q, *v;
    llm_serve_model_t   *m;
    llm_shm_header_t    *h;

    h = srv->ipc.hdr;
    n_tok = srv->batch_ntok;

    for (int mi = 0; mi < srv->n_models; mi++) {
        m = &srv->models[mi];

        n = llm_sched_gather(srv, m, n_tok);
        if (n == 0) {
            continue;
        }

        /* KV blocks for what each is about to compute, in batch order:
         * when they run out, the youngest holder gives its blocks back */
        for (int i = 0; i < n; i++) {
            q = srv->batch_seq[i];
            if (q == NULL) {
                continue;
            }

            if (q->n_blocks == 0 && q->n_past == 0) {
                llm_sched_prefix(srv, q);
                if (n_tok[i] > q->n_tokens - q->n_past) {
                    n_tok[i] = q->n_tokens - q->n_past;
                }
            }

            while (llm_sched_blocks(q, q->n_past + n_tok[i]) != LLM_OK) {
                v = llm_sched_victim(srv, m);

                if (v == NULL || v == q) {
                    /* nothing younger to take from: this one waits */
                    llm_sched_preempt(srv, q);
                    srv->batch_seq[i] = NULL;
                    break;
                }

                llm_sched_preempt(srv, v);
                for (int j = 0; j < n; j++) {
                    if (srv->batch_seq[j] == v) {
                        srv->batch_seq[j] = NULL;
                    }
                }
            }
        }

        kept = 0;
        for (int i = 0; i < n; i++) {
            q = srv->batch_seq[i];
            if (q == NULL) {
                continue;
            }
            if (q->t_start == 0) {
                q->t_start = llm_now_us();
            }
            srv->batch[kept].tokens = q->tokens + q->n_past;
            srv->batch[kept].n_tokens = n_tok[i];
            srv->batch[kept].pos = q->n_past;
            srv->batch[kept].blocks = q->blocks;
            srv->batch[kept].n_blocks = q->n_blocks;
            srv->batch[kept].logits = q->n_past + n_tok[i] == q->n_tokens
                                      ? q->logits : NULL;
            srv->batch_seq[kept] = q;
            n_tok[kept] = n_tok[i];
            kept++;
        }

        if (kept == 0) {
            continue;
        }

        t0 = llm_now_us();

        if (llm_model_forward_batch(m->model, m->pool, srv->batch, kept,
                                    &err)
            != LLM_OK)
        {
            llm_log(LLM_LOG_ERR, "model %s: forward: %s", m->name,
                    err.errstr);
            for (int i = 0; i < kept; i++) {
                llm_serve_error(srv, srv->batch_seq[i], 500, "server_error",
                                "", "%s", err.errstr);
            }
            continue;
        }

        atomic_fetch_add_explicit(&h->stats[LLM_STAT_STEPS], 1,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&h->stats[LLM_STAT_STEP_US],
                                  llm_now_us() - t0, memory_order_relaxed);

        for (int i = 0; i < kept; i++) {
            q = srv->batch_seq[i];
            q->n_past += n_tok[i];
            atomic_fetch_add_explicit(&h->stats[LLM_STAT_STEP_TOKENS],
                                      (uint64_t) n_tok[i],
                                      memory_order_relaxed);
            llm_sched_publish(q);

            if (q->n_past == q->n_tokens) {
                llm_serve_token(srv, q);
            }
        }
    }

    llm_sched_gauges(srv);
}


/*
 * The step's batch for one model into srv->batch_seq, with each one's
 * token count: first every sequence that feeds a single token (oldest
 * first), then prompt chunks by priority and age while the budget lasts.
 */
static int
llm_sched_gather(llm_server_t *srv, llm_serve_model_t *m, int *n_tok)
{
    int         n, budget, todo;
    llm_seq_t  *q, *best;

    n = 0;
    budget = srv->batch_tokens;

    for (int pass = 0; pass < 2; pass++) {
        for ( ;; ) {
            best = NULL;

            for (int i = 0; i < srv->max_seqs; i++) {
                q = &srv->seqs[i];

                if (!q->active || q->m != m || q->finish || q->out_len != 0
                    || q->n_tokens <= q->n_past)
                {
                    continue;
                }

                todo = q->n_tokens - q->n_past;
                if ((pass == 0) != (todo == 1 && q->n_past > 0)) {
                    continue;
                }

                /* already taken */
                for (int j = 0; j < n; j++) {
                    if (srv->batch_seq[j] == q) {
                        q = NULL;
                        break;
                    }
                }
                if (q == NULL) {
                    continue;
                }

                if (best == NULL || q->priority > best->priority
                    || (q->priority == best->priority
                        && q->order < best->order))
                {
                    best = q;
                }
            }

            if (best == NULL || budget == 0 || n == srv->max_seqs) {
                break;
            }

            todo = best->n_tokens - best->n_past;
            if (todo > budget) {
                todo = budget;
            }

            srv->batch_seq[n] = best;
            n_tok[n] = todo;
            n++;
            budget -= todo;
        }
    }

    return n;
}


/* attaches the longest cached prefix of the sequence's known tokens,
 * leaving at least one token to compute */
static void
llm_sched_prefix(llm_server_t *srv, llm_seq_t *q)
{
    int                 bs, limit, found;
    int32_t             b;
    uint64_t            h, next;
    llm_serve_model_t  *m;

    m = q->m;
    bs = m->block_size;
    limit = (q->n_tokens - 1) / bs;
    h = m->seed;
    found = 0;

    for (int i = 0; i < limit; i++) {
        next = llm_kv_hash(h, q->tokens + (size_t) i * bs, bs);
        b = llm_kv_lookup(&m->alloc, next);
        if (b < 0) {
            break;
        }
        q->blocks[q->n_blocks++] = b;
        h = next;
        found++;
    }

    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_PREFIX_LOOKUPS],
                              (uint64_t) (found < limit ? found + 1 : found),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_PREFIX_HITS],
                              (uint64_t) found, memory_order_relaxed);

    q->n_hashed = found;
    q->hash = h;
    q->n_past = found * bs;

    /* what the client is told: prompt tokens it did not pay for, on the
     * first run (a preempted sequence recomputes on its own account) */
    if (q->n_gen == 0 && q->n_cached == 0) {
        q->n_cached = q->n_past < q->n_prompt ? q->n_past : q->n_prompt;
        atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_CACHED_TOKENS],
                                  (uint64_t) q->n_cached,
                                  memory_order_relaxed);
    }
}


/* blocks for positions 0..upto-1 */
static int
llm_sched_blocks(llm_seq_t *q, int upto)
{
    int32_t  b;

    while (q->n_blocks * q->m->block_size < upto) {
        b = llm_kv_alloc_block(&q->m->alloc);
        if (b < 0) {
            return LLM_ERR;
        }
        q->blocks[q->n_blocks++] = b;
    }

    return LLM_OK;
}


/* full blocks of known tokens become findable by their prefix */
static void
llm_sched_publish(llm_seq_t *q)
{
    int  bs = q->m->block_size;

    while ((q->n_hashed + 1) * bs <= q->n_past
           && q->n_hashed < q->n_blocks)
    {
        q->hash = llm_kv_hash(q->hash, q->tokens + (size_t) q->n_hashed * bs,
                              bs);
        llm_kv_publish(&q->m->alloc, q->blocks[q->n_hashed], q->hash);
        q->n_hashed++;
    }
}


static void
llm_sched_preempt(llm_server_t *srv, llm_seq_t *q)
{
    llm_log(LLM_LOG_INFO, "slot %u preempted at %d of %d tokens to free KV "
            "blocks", q->slot, q->n_past, q->n_tokens);

    llm_sched_release_blocks(srv, q);
    q->n_past = 0;

    atomic_fetch_add_explicit(&srv->ipc.hdr->stats[LLM_STAT_PREEMPTIONS], 1,
                              memory_order_relaxed);
}


/* the youngest sequence of the model that holds blocks */
static llm_seq_t *
llm_sched_victim(llm_server_t *srv, llm_serve_model_t *m)
{
    llm_seq_t  *q, *v;

    v = NULL;
    for (int i = 0; i < srv->max_seqs; i++) {
        q = &srv->seqs[i];
        if (q->active && q->m == m && q->n_blocks > 0
            && (v == NULL || q->order > v->order))
        {
            v = q;
        }
    }

    return v;
}


void
llm_sched_release_blocks(llm_server_t *srv, llm_seq_t *q)
{
    (void) srv;

    for (int i = 0; i < q->n_blocks; i++) {
        llm_kv_release(&q->m->alloc, q->blocks[i]);
    }
    q->n_blocks = 0;
    q->n_hashed = 0;
    q->hash = q->m->seed;
}


static void
llm_sched_gauges(llm_server_t *srv)
{
    uint64_t           used, cached, waiting;
    llm_shm_header_t  *h;

    used = 0;
    cached = 0;
    for (int i = 0; i < srv->n_models; i++) {
        used += (uint64_t) srv->models[i].alloc.n_used;
        cached += (uint64_t) srv->models[i].alloc.n_cached;
    }

    waiting = 0;
    h = srv->ipc.hdr;
    for (uint32_t i = 0; i < h->n_slots; i++) {
        llm_slot_t  *s = llm_shm_slot(srv->ipc.base, h, i);

        waiting += llm_slot_state(atomic_load_explicit(&s->state,
                       memory_order_relaxed)) == LLM_SLOT_SUBMITTED;
    }

    atomic_store_explicit(&h->stats[LLM_STAT_KV_USED], used,
                          memory_order_relaxed);
    atomic_store_explicit(&h->stats[LLM_STAT_KV_CACHED], cached,
                          memory_order_relaxed);
    atomic_store_explicit(&h->stats[LLM_STAT_WAITING], waiting,
                          memory_order_relaxed);
}
