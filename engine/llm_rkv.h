/*
 * Copyright (C) ngx_llm developers
 *
 * The Redis tier of the prefix cache.  Full KV blocks are stored under a
 * key made of the model's fingerprint and the block's prefix hash, with
 * the block's tokens and a checksum beside the bytes, so that a wrong
 * model, a hash collision, a damaged value or an evicted key is a miss,
 * never wrong output.
 *
 * All Redis traffic runs on one I/O thread of its own: the scheduler
 * queues writes (copied, bounded, dropped when the queue is full) and
 * lookups, and collects finished lookups with llm_rkv_poll().  Nothing
 * here ever blocks the scheduler.
 */

#ifndef LLM_RKV_H
#define LLM_RKV_H

#include "llm_common.h"


#define LLM_RKV_CHAIN_MAX   256        /* blocks one lookup may ask for */


typedef struct llm_rkv_s  llm_rkv_t;


typedef struct {
    const char  *addr;          /* "host:port" or "unix:/path" */
    const char  *password;      /* NULL: no AUTH */
    int          db;
    int          ttl;           /* seconds a block lives in Redis */
    size_t       queue_max;     /* bytes of writes waiting, at most */
    int          timeout_ms;    /* per command */
} llm_rkv_conf_t;


/* a finished lookup: the leading blocks found, in chain order */
typedef struct {
    void        *ctx;           /* as given to llm_rkv_get() */
    int          n_found;
    void        *data[LLM_RKV_CHAIN_MAX];   /* malloc()ed, the caller's */
    size_t       len;
} llm_rkv_result_t;


typedef struct {
    uint64_t     puts;          /* blocks written */
    uint64_t     put_drops;     /* writes dropped: queue full, no Redis */
    uint64_t     gets;          /* blocks asked for */
    uint64_t     hits;          /* blocks found and valid */
    uint64_t     rejects;       /* values found but not valid */
    uint64_t     errors;        /* connection and command failures */
    int          connected;
} llm_rkv_stats_t;


int llm_rkv_open(llm_rkv_t **out, const llm_rkv_conf_t *conf,
    llm_err_t *err);
void llm_rkv_close(llm_rkv_t *r);

/* queues a write of one block: its prefix hash, its block_size tokens,
 * and len bytes of KV (all copied) */
void llm_rkv_put(llm_rkv_t *r, uint64_t fingerprint, uint64_t hash,
    const int32_t *tokens, int block_size, const void *data, size_t len);

/* queues a lookup of n chained blocks (their hashes and their tokens,
 * n * block_size of them); the result comes back through llm_rkv_poll() */
int llm_rkv_get(llm_rkv_t *r, uint64_t fingerprint, const uint64_t *hashes,
    const int32_t *tokens, int n, int block_size, size_t len, void *ctx);

/* takes one finished lookup; returns 1, or 0 when none is ready */
int llm_rkv_poll(llm_rkv_t *r, llm_rkv_result_t *res);

/* lookups queued or running */
int llm_rkv_pending(llm_rkv_t *r);

void llm_rkv_stats(llm_rkv_t *r, llm_rkv_stats_t *st);


#endif /* LLM_RKV_H */
