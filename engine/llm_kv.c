/*
 * Copyright (C) ngx_llm developers
 *
 * Paged KV cache bookkeeping: free list, reference counts, published
 * prefixes in a hash map, and an LRU list of kept blocks.  Every array is
 * sized at init; nothing is allocated afterwards.
 */

#include <stdlib.h>
#include <string.h>

#include "llm_kv.h"


#define LLM_MAP_EMPTY  0
#define LLM_MAP_TOMB   1


static void llm_kv_lru_remove(llm_kv_alloc_t *a, int32_t b);
static void llm_kv_lru_append(llm_kv_alloc_t *a, int32_t b);
static uint32_t llm_kv_map_find(const llm_kv_alloc_t *a, uint64_t key);
static void llm_kv_map_put(llm_kv_alloc_t *a, uint64_t key, int32_t b);
static void llm_kv_map_del(llm_kv_alloc_t *a, uint64_t key);
static void llm_kv_map_rebuild(llm_kv_alloc_t *a);


int
llm_kv_alloc_init(llm_kv_alloc_t *a, int n_blocks, int block_size,
    llm_err_t *err)
{
    memset(a, 0, sizeof(llm_kv_alloc_t));

    if (n_blocks <= 0 || n_blocks > (1 << 26) || block_size <= 0) {
        return llm_err_set(err, LLM_EINVAL, "kv cache: %d blocks of %d",
                           n_blocks, block_size);
    }

    a->n_blocks = n_blocks;
    a->block_size = block_size;
    a->map_cap = 16;
    while (a->map_cap < 4 * (uint32_t) n_blocks) {
        a->map_cap <<= 1;
    }

    a->ref = calloc((size_t) n_blocks, sizeof(int32_t));
    a->hash = calloc((size_t) n_blocks, sizeof(uint64_t));
    a->prev = malloc((size_t) n_blocks * sizeof(int32_t));
    a->next = malloc((size_t) n_blocks * sizeof(int32_t));
    a->free = malloc((size_t) n_blocks * sizeof(int32_t));
    a->map_key = calloc(a->map_cap, sizeof(uint64_t));
    a->map_val = calloc(a->map_cap, sizeof(int32_t));

    if (a->ref == NULL || a->hash == NULL || a->prev == NULL
        || a->next == NULL || a->free == NULL || a->map_key == NULL
        || a->map_val == NULL)
    {
        llm_kv_alloc_free(a);
        return llm_err_set(err, LLM_ENOMEM, "kv cache: out of memory");
    }

    /* popped from the end: block 0 first */
    for (int i = 0; i < n_blocks; i++) {
        a->free[i] = n_blocks - 1 - i;
    }
    a->n_free = n_blocks;
    a->lru_head = -1;
    a->lru_tail = -1;

    return LLM_OK;
}


void
llm_kv_alloc_free(llm_kv_alloc_t *a)
{
    free(a->ref);
    free(a->hash);
    free(a->prev);
    free(a->next);
    free(a->free);
    free(a->map_key);
    free(a->map_val);
    memset(a, 0, sizeof(llm_kv_alloc_t));
}


int32_t
llm_kv_alloc_block(llm_kv_alloc_t *a)
{
    int32_t  b;

    if (a->n_free > 0) {
        b = a->free[--a->n_free];

    } else if (a->lru_head != -1) {
        /* the least recently used kept prefix gives way */
        uint64_t  h;

        b = a->lru_head;
        llm_kv_lru_remove(a, b);

        /* cleared first: a rebuild of the map reads the blocks' hashes */
        h = a->hash[b];
        a->hash[b] = 0;
        llm_kv_map_del(a, h);
        a->n_cached--;
        a->evictions++;

    } else {
        return -1;
    }

    a->ref[b] = 1;
    a->n_used++;
    return b;
}


void
llm_kv_release(llm_kv_alloc_t *a, int32_t b)
{
    if (b < 0 || b >= a->n_blocks || a->ref[b] <= 0) {
        return;
    }

    if (--a->ref[b] > 0) {
        return;
    }

    a->n_used--;

    if (a->hash[b] != 0) {
        llm_kv_lru_append(a, b);
        a->n_cached++;
    } else {
        a->free[a->n_free++] = b;
    }
}


int32_t
llm_kv_lookup(llm_kv_alloc_t *a, uint64_t hash)
{
    int32_t   b;
    uint32_t  i;

    i = llm_kv_map_find(a, hash);
    if (i == UINT32_MAX) {
        a->misses++;
        return -1;
    }

    b = a->map_val[i];
    if (a->ref[b] == 0) {
        llm_kv_lru_remove(a, b);
        a->n_cached--;
        a->n_used++;
    }
    a->ref[b]++;
    a->hits++;

    return b;
}


void
llm_kv_publish(llm_kv_alloc_t *a, int32_t b, uint64_t hash)
{
    if (b < 0 || b >= a->n_blocks || a->ref[b] <= 0 || a->hash[b] != 0
        || hash < 2)
    {
        return;
    }

    if (llm_kv_map_find(a, hash) != UINT32_MAX) {
        /* another sequence computed the same prefix first */
        return;
    }

    a->hash[b] = hash;
    llm_kv_map_put(a, hash, b);
}


int
llm_kv_available(const llm_kv_alloc_t *a)
{
    return a->n_free + a->n_cached;
}


uint64_t
llm_kv_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t  h;

    h = parent ^ 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t) (uint32_t) tokens[i];
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }

    /* splitmix64's finalizer */
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;

    return h < 2 ? h + 2 : h;
}


static void
llm_kv_lru_remove(llm_kv_alloc_t *a, int32_t b)
{
    if (a->prev[b] != -1) {
        a->next[a->prev[b]] = a->next[b];
    } else {
        a->lru_head = a->next[b];
    }

    if (a->next[b] != -1) {
        a->prev[a->next[b]] = a->prev[b];
    } else {
        a->lru_tail = a->prev[b];
    }
}


static void
llm_kv_lru_append(llm_kv_alloc_t *a, int32_t b)
{
    a->prev[b] = a->lru_tail;
    a->next[b] = -1;

    if (a->lru_tail != -1) {
        a->next[a->lru_tail] = b;
    } else {
        a->lru_head = b;
    }
    a->lru_tail = b;
}


/* the map slot holding key, or UINT32_MAX */
static uint32_t
llm_kv_map_find(const llm_kv_alloc_t *a, uint64_t key)
{
    uint32_t  mask, i;

    mask = a->map_cap - 1;
    for (i = (uint32_t) key & mask; a->map_key[i] != LLM_MAP_EMPTY;
         i = (i + 1) & mask)
    {
        if (a->map_key[i] == key) {
            return i;
        }
    }

    return UINT32_MAX;
}


static void
llm_kv_map_put(llm_kv_alloc_t *a, uint64_t key, int32_t b)
{
    uint32_t  mask, i;

    mask = a->map_cap - 1;
    for (i = (uint32_t) key & mask; a->map_key[i] > LLM_MAP_TOMB;
         i = (i + 1) & mask)
    {
        /* void */
    }

    if (a->map_key[i] == LLM_MAP_TOMB) {
        a->n_tomb--;
    }
    a->map_key[i] = key;
    a->map_val[i] = b;
}


/*
 * Live entries never pass n_blocks, a quarter of the map, and tombstones
 * are cleared when they pass another quarter: at least half of the map
 * is always empty, so every probe ends.
 */
static void
llm_kv_map_del(llm_kv_alloc_t *a, uint64_t key)
{
    uint32_t  i;

    i = llm_kv_map_find(a, key);
    if (i == UINT32_MAX) {
        return;
    }

    a->map_key[i] = LLM_MAP_TOMB;
    if (++a->n_tomb > a->map_cap / 4) {
        llm_kv_map_rebuild(a);
    }
}


static void
llm_kv_map_rebuild(llm_kv_alloc_t *a)
{
    uint32_t  mask, i;

    memset(a->map_key, 0, a->map_cap * sizeof(uint64_t));
    a->n_tomb = 0;
    mask = a->map_cap - 1;

    for (int32_t b = 0; b < a->n_blocks; b++) {
        if (a->hash[b] == 0) {
            continue;
        }
        for (i = (uint32_t) a->hash[b] & mask; a->map_key[i] != LLM_MAP_EMPTY;
             i = (i + 1) & mask)
        {
            /* void */
        }
        a->map_key[i] = a->hash[b];
        a->map_val[i] = b;
    }
}
