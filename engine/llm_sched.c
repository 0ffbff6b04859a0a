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
 *
 * A sequence whose next token needs nothing but the draw of llm_backend.h
 * has it drawn by the backend, where its logits are (a GPU's memory), in
 * the same step; the others get their logits on the host, sampled by
 * llm_serve_token().  The draw is the same either way, so this changes
 * no token, only what crosses to the host.
 */

#include <stdlib.h>
#include <string.h>

#include "llm_gguf.h"
#include "llm_log.h"
#include "llm_sched.h"


static void llm_sched_prefix(llm_server_t *srv, llm_seq_t *q);
static int llm_sched_blocks(llm_seq_t *q, int upto);
static void llm_sched_preempt(llm_server_t *srv, llm_seq_t *q);
static llm_seq_t *llm_sched_victim(llm_server_t *srv, llm_serve_model_t *m);
static void llm_sched_publish(llm_server_t *srv, llm_seq_t *q);
static void llm_sched_rkv_ask(llm_server_t *srv, llm_seq_t *q);
static uint64_t llm_sched_fingerprint(const llm_model_t *model);
static int llm_sched_gather(llm_server_t *srv, llm_serve_model_t *m,
    int *n_tok);
static int llm_sched_draws(const llm_seq_t *q);
static void llm_sched_gauges(llm_server_t *srv);


int
llm_sched_model_init(llm_serve_model_t *m, size_t kv_bytes, int block_size,
    llm_err_t *err)
{
    size_t  bb, n;

    bb = llm_kv_cache_bytes(m->model, block_size);
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
    m->fingerprint = llm_sched_fingerprint(m->model);

    m->pool = llm_kv_pool_new(m->model, (int) n, block_size, err);
    if (m->pool == NULL) {
        return LLM_ERR;
    }

    /* blocks computed over an f16 cache are not the ones an f32 engine
     * computes: each precision shares blocks with its own kind, so that
     * a request's text does not depend on who filled the tier */
    if (llm_kv_pool_f16(m->pool)) {
        m->fingerprint = llm_hash_data(m->fingerprint, "kv f16", 6);
    }

    if (llm_kv_alloc_init(&m->alloc, (int) n, block_size, err) != LLM_OK) {
        llm_kv_pool_free(m->pool);
        m->pool = NULL;
        return LLM_ERR;
    }

    llm_log(LLM_LOG_INFO, "model %s: KV cache of %zu blocks of %d positions "
            "(%zu MiB, %s)", m->name, n, block_size, n * bb >> 20,
            llm_kv_pool_f16(m->pool) ? "f16" : "f32");
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
    int                  n, kept, can_draw, *n_tok;
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
                if (q->rkv_wait) {
                    /* back once Redis has answered */
                    srv->batch_seq[i] = NULL;
                    continue;
                }
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

        /* the next token of a sequence that completes its known tokens:
         * drawn by the backend, or its logits to the host */

        can_draw = llm_model_can_draw(m->model);
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
            srv->batch[kept].logits = NULL;
            srv->batch_draw[kept].draw = 0;

            if (q->n_past + n_tok[i] == q->n_tokens) {
                if (can_draw && llm_sched_draws(q)) {
                    srv->batch_draw[kept].draw = 1;
                    llm_sampler_params(&q->sampler,
                                       &srv->batch_draw[kept].params);

                } else {
                    srv->batch[kept].logits = q->logits;
                }
            }

            srv->batch_seq[kept] = q;
            n_tok[kept] = n_tok[i];
            kept++;
        }

        if (kept == 0) {
            continue;
        }

        t0 = llm_now_us();

        if (llm_model_forward_batch_draw(m->model, m->pool, srv->batch,
                                         srv->batch_draw, kept, &err)
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
            llm_sched_publish(srv, q);

            if (q->n_past == q->n_tokens) {
                llm_serve_token(srv, q, srv->batch_draw[i].draw
                                        ? srv->batch_draw[i].token : -1);
            }
        }
    }

    llm_sched_gauges(srv);
}


/*
 * Whether the sequence's next token needs nothing but the backend's draw:
 * llm_serve_token() reads q->logits for logprobs (the token's and the
 * alternatives) and llm_sample() for logit_bias and the penalties.
 */
static int
llm_sched_draws(const llm_seq_t *q)
{
    return q->logprobs < 0 && llm_sampler_plain(&q->sampler);
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
                    || q->rkv_wait || q->n_tokens <= q->n_past)
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

    if (srv->rkv != NULL && !q->rkv_tried && found < limit) {
        llm_sched_rkv_ask(srv, q);
    }

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


/*
 * Full blocks of known tokens become findable by their prefix, here and,
 * with a Redis tier, on every engine that shares it (the write is queued
 * for the tier's own thread).
 */
static void
llm_sched_publish(llm_server_t *srv, llm_seq_t *q)
{
    int                 bs;
    size_t              len;
    int32_t             b;
    const int32_t      *toks;
    llm_serve_model_t  *m;

    m = q->m;
    bs = m->block_size;

    while ((q->n_hashed + 1) * bs <= q->n_past
           && q->n_hashed < q->n_blocks)
    {
        b = q->blocks[q->n_hashed];
        toks = q->tokens + (size_t) q->n_hashed * bs;
        q->hash = llm_kv_hash(q->hash, toks, bs);
        llm_kv_publish(&m->alloc, b, q->hash);
        q->n_hashed++;

        if (srv->rkv == NULL || m->alloc.hash[b] != q->hash) {
            continue;
        }

        len = llm_kv_block_bytes(m->model, bs);
        if (llm_kv_block_read(m->pool, b, srv->rkv_buf, len) == LLM_OK) {
            llm_rkv_put(srv->rkv, m->fingerprint, q->hash, toks, bs,
                        srv->rkv_buf, len);
        }
    }
}


/* asks Redis for the blocks after those found here */
static void
llm_sched_rkv_ask(llm_server_t *srv, llm_seq_t *q)
{
    int                 bs, n, limit;
    uint64_t            h, hashes[LLM_RKV_CHAIN_MAX];
    llm_serve_model_t  *m;

    m = q->m;
    bs = m->block_size;
    limit = (q->n_tokens - 1) / bs;
    q->rkv_tried = 1;

    n = 0;
    h = q->hash;
    for (int i = q->n_hashed; i < limit && n < LLM_RKV_CHAIN_MAX; i++) {
        h = llm_kv_hash(h, q->tokens + (size_t) i * bs, bs);
        hashes[n++] = h;
    }

    if (llm_rkv_get(srv->rkv, m->fingerprint, hashes,
                    q->tokens + (size_t) q->n_hashed * bs, n, bs,
                    llm_kv_block_bytes(m->model, bs),
                    (void *) (uintptr_t) q->order)
        == LLM_OK)
    {
        q->rkv_wait = 1;
        q->rkv_from = q->n_hashed;
    }
}


/*
 * Blocks that came back from Redis go into the pool as if computed here:
 * a sequence that was preempted or ended meanwhile takes none of them.
 */
void
llm_sched_rkv_poll(llm_server_t *srv)
{
    int                 bs, added;
    int32_t             b;
    llm_seq_t          *q;
    llm_rkv_result_t    res;
    llm_serve_model_t  *m;

    if (srv->rkv == NULL) {
        return;
    }

    while (llm_rkv_poll(srv->rkv, &res)) {
        q = NULL;
        for (int i = 0; i < srv->max_seqs; i++) {
            if (srv->seqs[i].active && srv->seqs[i].rkv_wait
                && srv->seqs[i].order == (uint64_t) (uintptr_t) res.ctx)
            {
                q = &srv->seqs[i];
            }
        }

        added = 0;

        if (q != NULL && q->n_hashed == q->rkv_from
            && q->n_blocks == q->n_hashed)
        {
            m = q->m;
            bs = m->block_size;

            for (int i = 0; i < res.n_found; i++) {
                b = llm_kv_alloc_block(&m->alloc);
                if (b < 0) {
                    break;
                }
                if (llm_kv_block_write(m->pool, b, res.data[i], res.len)
                    != LLM_OK)
                {
                    llm_kv_release(&m->alloc, b);
                    break;
                }
                q->hash = llm_kv_hash(q->hash,
                                      q->tokens + (size_t) q->n_hashed * bs,
                                      bs);
                llm_kv_publish(&m->alloc, b, q->hash);
                q->blocks[q->n_blocks++] = b;
                q->n_hashed++;
                q->n_past += bs;
                added++;
            }

            if (q->n_gen == 0) {
                q->n_cached = q->n_past < q->n_prompt ? q->n_past
                                                      : q->n_prompt;
            }
            atomic_fetch_add_explicit(
                &srv->ipc.hdr->stats[LLM_STAT_CACHED_TOKENS],
                (uint64_t) added * (uint64_t) bs, memory_order_relaxed);
            atomic_fetch_add_explicit(
                &srv->ipc.hdr->stats[LLM_STAT_REDIS_HITS],
                (uint64_t) added, memory_order_relaxed);
        }

        if (q != NULL) {
            q->rkv_wait = 0;
        }

        for (int i = 0; i < res.n_found; i++) {
            free(res.data[i]);
        }
    }
}


/*
 * What names a model's weights in Redis keys: its metadata, its tensor
 * table and samples of every tensor's bytes (the first and last 256 and
 * 16 windows between), so that two fine-tunes of one shape differ
 * without hashing gigabytes at start-up.
 */
static uint64_t
llm_sched_fingerprint(const llm_model_t *model)
{
    size_t                    n, step, len;
    uint64_t                  h;
    const llm_gguf_t         *g;
    const llm_gguf_kv_t      *kv;
    const llm_gguf_tensor_t  *t;
    const unsigned char      *p;

    g = llm_model_gguf(model);
    h = 0x666e67727072ULL;

    n = llm_gguf_n_kv(g);
    for (size_t i = 0; i < n; i++) {
        kv = llm_gguf_kv_at(g, i);
        h = llm_hash_data(h, kv->key, strlen(kv->key));
        h = llm_hash_data(h, &kv->type, sizeof(kv->type));
        h = llm_hash_data(h, &kv->arr_n, sizeof(kv->arr_n));
    }

    n = llm_gguf_n_tensors(g);
    for (size_t i = 0; i < n; i++) {
        t = llm_gguf_tensor_at(g, i);
        h = llm_hash_data(h, t->name, strlen(t->name));
        h = llm_hash_data(h, &t->type, sizeof(t->type));
        h = llm_hash_data(h, t->ne, sizeof(t->ne));
        h = llm_hash_data(h, &t->offset, sizeof(t->offset));

        p = t->data;
        len = t->nbytes < 256 ? t->nbytes : 256;
        h = llm_hash_data(h, p, len);
        h = llm_hash_data(h, p + t->nbytes - len, len);

        step = t->nbytes / 17;
        for (int w = 1; w <= 16 && step >= 64; w++) {
            h = llm_hash_data(h, p + (size_t) w * step, 64);
        }
    }

    return h;
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
