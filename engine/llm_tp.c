/*
 * Copyright (C) ngx_llm developers
 *
 * Tensor parallelism on the host: the shard plan, column slices of
 * weights, and the sum over shards.
 */

#include <stdlib.h>
#include <string.h>

#include "llm_gguf.h"
#include "llm_quant.h"
#include "llm_tp.h"


int
llm_tp_split(llm_tp_part_t *parts, int tp, int n_head, int n_head_kv,
    int n_ff, int ff_unit, llm_err_t *err)
{
    int  kv, q, units, u0, u1;

    if (tp <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0) {
        return llm_err_set(err, LLM_EINVAL,
                           "cannot split %d heads (%d KV heads) over %d "
                           "shards", n_head, n_head_kv, tp);
    }

    /* a KV head and the query heads reading it stay on one shard, so
     * attention needs nothing from the others */
    if (n_head_kv % tp != 0) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "--tp %d does not divide the model's %d KV "
                           "heads", tp, n_head_kv);
    }

    if (ff_unit <= 0 || n_ff % ff_unit != 0) {
        ff_unit = 1;
    }

    units = n_ff / ff_unit;

    if (units < tp) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "--tp %d is more than the %d blocks of %d FFN "
                           "columns", tp, units, ff_unit);
    }

    kv = n_head_kv / tp;
    q = n_head / tp;

    for (int i = 0; i < tp; i++) {
        parts[i].kv_head0 = i * kv;
        parts[i].n_head_kv = kv;
        parts[i].head0 = i * q;
        parts[i].n_head = q;

        u0 = (int) ((int64_t) units * i / tp);
        u1 = (int) ((int64_t) units * (i + 1) / tp);
        parts[i].ff0 = u0 * ff_unit;
        parts[i].n_ff = (u1 - u0) * ff_unit;
    }

    return LLM_OK;
}


int
llm_tp_slice_cols(const llm_mat_t *w, int col0, int n_cols, llm_mat_t *out,
    void **mem, llm_err_t *err)
{
    int          bs, whole;
    char        *p;
    float       *row;
    size_t       rb, off, size;
    const char  *src;

    *mem = NULL;

    if (col0 < 0 || n_cols <= 0 || col0 > w->cols - n_cols) {
        return llm_err_set(err, LLM_EINVAL,
                           "columns %d..%d of a matrix of %d", col0,
                           col0 + n_cols - 1, w->cols);
    }

    bs = (int) llm_ggml_blck_size(w->type);
    whole = bs > 0 && col0 % bs == 0 && n_cols % bs == 0;

    if (whole) {
        rb = llm_ggml_row_size(w->type, n_cols);
        off = llm_ggml_row_size(w->type, col0);

    } else {
        rb = (size_t) n_cols * sizeof(float);
        off = 0;
    }

    if (llm_mul_size(rb, (size_t) w->rows, &size) != 0) {
        return llm_err_set(err, LLM_ENOMEM, "a column slice overflows");
    }

    p = malloc(size > 0 ? size : 1);
    row = whole ? NULL : malloc((size_t) w->cols * sizeof(float));

    if (p == NULL || (!whole && row == NULL)) {
        free(p);
        free(row);
        return llm_err_set(err, LLM_ENOMEM,
                           "out of memory for a column slice (%zu bytes)",
                           size);
    }

    for (int r = 0; r < w->rows; r++) {
        src = (const char *) w->data + (size_t) r * w->row_bytes;

        if (whole) {
            memcpy(p + (size_t) r * rb, src + off, rb);
            continue;
        }

        /* a slice that cuts blocks: the row decoded, then cut */
        if (llm_dequant_row(w->type, src, row, w->cols) != LLM_OK) {
            free(p);
            free(row);
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "cannot decode a row of type %s",
                               llm_ggml_type_name(w->type));
        }

        memcpy(p + (size_t) r * rb, row + col0,
               (size_t) n_cols * sizeof(float));
    }

    free(row);

    out->data = p;
    out->type = whole ? w->type : LLM_TYPE_F32;
    out->rows = w->rows;
    out->cols = n_cols;
    out->row_bytes = rb;
    *mem = p;

    return LLM_OK;
}


int
llm_tp_allreduce_host(llm_backend_t **group, int n, float **bufs,
    int64_t count, llm_err_t *err)
{
    float  s;

    (void) group;
    (void) err;

    for (int64_t i = 0; i < count; i++) {
        s = bufs[0][i];

        for (int k = 1; k < n; k++) {
            s += bufs[k][i];
        }

        for (int k = 0; k < n; k++) {
            bufs[k][i] = s;
        }
    }

    return LLM_OK;
}
