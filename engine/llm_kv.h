/*
 * Copyright (C) ngx_llm developers
 *
 * Bookkeeping of the paged KV cache: which block is free, which is in use
 * by how many sequences, and which full blocks are kept for their prefix
 * (identified by a hash chained over the tokens before and in them), in
 * least-recently-used order.  The block contents live in the model's KV
 * pool; this file only hands out block numbers.
 *
 * One thread (the scheduler's) uses an allocator; nothing here locks.
 */

#ifndef LLM_KV_H
#define LLM_KV_H

#include "llm_common.h"


typedef struct {
    int         n_blocks;
    int         block_size;      /* positions per block */

    int32_t    *ref;             /* sequences using each block */
    uint64_t   *hash;            /* prefix hash of a published block, 0 */

    /* blocks nobody uses but whose prefix is kept: LRU, oldest first */
    int32_t    *prev;
    int32_t    *next;
    int32_t     lru_head;
    int32_t     lru_tail;

    int32_t    *free;            /* blocks holding nothing */
    int         n_free;

    /* hash -> block, open addressing, linear probing, tombstones */
    uint64_t   *map_key;
    int32_t    *map_val;
    uint32_t    map_cap;         /* a power of two, >= 4 * n_blocks */
    uint32_t    n_tomb;          /* deleted entries not yet cleared */

    /* counters */
    int         n_used;          /* blocks with ref > 0 */
    int         n_cached;        /* blocks with ref == 0 and a prefix */
    uint64_t    hits;            /* lookups that found a block */
    uint64_t    misses;
    uint64_t    evictions;       /* kept prefixes dropped for room */
} llm_kv_alloc_t;


int llm_kv_alloc_init(llm_kv_alloc_t *a, int n_blocks, int block_size,
    llm_err_t *err);
void llm_kv_alloc_free(llm_kv_alloc_t *a);

/* a block for one sequence (ref 1): a free one, else the least recently
 * used kept prefix; -1 when every block is in use */
int32_t llm_kv_alloc_block(llm_kv_alloc_t *a);

/* a sequence is done with a block: at ref 0 it is kept if published,
 * else freed */
void llm_kv_release(llm_kv_alloc_t *a, int32_t block);

/* the published block with this prefix hash, now also used by the
 * caller (ref + 1); -1 when there is none */
int32_t llm_kv_lookup(llm_kv_alloc_t *a, uint64_t hash);

/* block (in use by the caller, full) now holds the prefix hash; a block
 * already published under the same hash stays the one found */
void llm_kv_publish(llm_kv_alloc_t *a, int32_t block, uint64_t hash);

/* blocks that an allocation can get now: free plus kept */
int llm_kv_available(const llm_kv_alloc_t *a);


/*
 * The prefix hash of a block: chained over the hash of everything before
 * it (parent; for the first block, a seed naming the model) and its own
 * block_size tokens.  Never 0.
 */
uint64_t llm_kv_hash(uint64_t parent, const int32_t *tokens, int n);


#endif /* LLM_KV_H */
