/*
 * Copyright (C) ngx_llm developers
 *
 * Tensor parallelism: how a model is cut into shards, and the sum of
 * the shards' partial outputs on the host.  Shard i computes a run of
 * KV heads with their query heads and a run of FFN columns; the
 * attention output and FFN down projections are then sums over the
 * shards (llm_tp_allreduce_host here, NCCL's all-reduce in
 * llm_nccl.c on GPUs).
 */

#ifndef LLM_TP_H
#define LLM_TP_H

#include "llm_backend.h"
#include "llm_common.h"


/* what one shard computes */
typedef struct {
    int              head0;         /* query heads [head0, head0+n_head) */
    int              n_head;
    int              kv_head0;      /* KV heads */
    int              n_head_kv;
    int              ff0;           /* FFN columns [ff0, ff0+n_ff) */
    int              n_ff;
} llm_tp_part_t;


/*
 * Cuts n_head_kv KV heads (and the n_head / n_head_kv query heads of
 * each) into tp equal runs, and n_ff FFN columns into tp runs of whole
 * ff_unit columns (the block size of the down projection's type, so
 * its column slices stay in that type), as even as the units allow.
 * LLM_ERR when the heads do not divide or a shard would get no column.
 */
int llm_tp_split(llm_tp_part_t *parts, int tp, int n_head, int n_head_kv,
    int n_ff, int ff_unit, llm_err_t *err);

/*
 * Columns [col0, col0 + n_cols) of every row of w (host memory), packed
 * into *mem (malloc'ed, the caller frees it) and described by *out: in
 * w's type when col0 and n_cols are whole blocks of it, else decoded to
 * F32 (the same weights, wider).
 */
int llm_tp_slice_cols(const llm_mat_t *w, int col0, int n_cols,
    llm_mat_t *out, void **mem, llm_err_t *err);

/* the allreduce of host-memory backends: bufs[i] (count) of shard i each
 * become the sum over i = 0..n-1 in that order, the same bits on every
 * shard */
int llm_tp_allreduce_host(llm_backend_t **group, int n, float **bufs,
    int64_t count, llm_err_t *err);


#endif /* LLM_TP_H */
