/*
 * Copyright (C) ngx_llm developers
 *
 * GGUF reader: maps a file read-only and validates every count, length,
 * offset and tensor extent against the file size before anything else
 * reads it.  Strings and tensor data point into the mapping; keys and
 * tensor names are copied, NUL-terminated, so callers may print them.
 */

#ifndef LLM_GGUF_H
#define LLM_GGUF_H

#include "llm_common.h"


#define LLM_GGUF_MAGIC          0x46554747   /* "GGUF", little-endian */
#define LLM_GGUF_DEFAULT_ALIGN  32
#define LLM_GGUF_MAX_DIMS       4
#define LLM_GGUF_NAME_MAX       256          /* longest tensor name + 1 */

/* lookups return this (and leave err alone) when a key is absent */
#define LLM_GGUF_MISSING        1


/* metadata value types, as numbered in the file */
typedef enum {
    LLM_GGUF_UINT8 = 0,
    LLM_GGUF_INT8,
    LLM_GGUF_UINT16,
    LLM_GGUF_INT16,
    LLM_GGUF_UINT32,
    LLM_GGUF_INT32,
    LLM_GGUF_FLOAT32,
    LLM_GGUF_BOOL,
    LLM_GGUF_STRING,
    LLM_GGUF_ARRAY,
    LLM_GGUF_UINT64,
    LLM_GGUF_INT64,
    LLM_GGUF_FLOAT64,
    LLM_GGUF_NTYPES
} llm_gguf_type_e;


/* ggml tensor types, as numbered in the file (gaps are types we cannot
 * size, which the reader rejects) */
typedef enum {
    LLM_TYPE_F32 = 0,
    LLM_TYPE_F16 = 1,
    LLM_TYPE_Q4_0 = 2,
    LLM_TYPE_Q4_1 = 3,
    LLM_TYPE_Q5_0 = 6,
    LLM_TYPE_Q5_1 = 7,
    LLM_TYPE_Q8_0 = 8,
    LLM_TYPE_Q8_1 = 9,
    LLM_TYPE_Q2_K = 10,
    LLM_TYPE_Q3_K = 11,
    LLM_TYPE_Q4_K = 12,
    LLM_TYPE_Q5_K = 13,
    LLM_TYPE_Q6_K = 14,
    LLM_TYPE_Q8_K = 15,
    LLM_TYPE_I8 = 24,
    LLM_TYPE_I16 = 25,
    LLM_TYPE_I32 = 26,
    LLM_TYPE_I64 = 27,
    LLM_TYPE_F64 = 28,
    LLM_TYPE_BF16 = 30,
    LLM_TYPE_COUNT = 40
} llm_ggml_type_e;


typedef struct {
    const char      *key;        /* NUL-terminated copy */
    uint32_t         type;       /* llm_gguf_type_e */
    uint32_t         arr_type;   /* element type when type is ARRAY */
    uint64_t         arr_n;      /* element count when type is ARRAY */
    const uint8_t   *val;        /* in the map: the scalar, the string's
                                  * length field, or the first element */
    uint64_t        *str_off;    /* array of strings: offset of each
                                  * element's length field from val */
} llm_gguf_kv_t;


typedef struct {
    const char      *name;       /* NUL-terminated copy */
    uint32_t         type;       /* llm_ggml_type_e */
    uint32_t         n_dims;
    int64_t          ne[LLM_GGUF_MAX_DIMS];   /* ne[0] varies fastest;
                                               * unused dims are 1 */
    uint64_t         offset;     /* from the start of the data section */
    size_t           n_elems;
    size_t           nbytes;
    const void      *data;       /* in the map, alignment-aligned */
} llm_gguf_tensor_t;


typedef struct llm_gguf_s  llm_gguf_t;


int llm_gguf_open(llm_gguf_t **out, const char *path, llm_err_t *err);
/* the same over size bytes at p, which the caller keeps until
 * llm_gguf_close(); name stands for the path in errors */
int llm_gguf_open_mem(llm_gguf_t **out, const char *name, const void *p,
    size_t size, llm_err_t *err);
void llm_gguf_close(llm_gguf_t *g);

const char *llm_gguf_path(const llm_gguf_t *g);
uint32_t llm_gguf_version(const llm_gguf_t *g);
size_t llm_gguf_alignment(const llm_gguf_t *g);

size_t llm_gguf_n_kv(const llm_gguf_t *g);
const llm_gguf_kv_t *llm_gguf_kv_at(const llm_gguf_t *g, size_t i);
const llm_gguf_kv_t *llm_gguf_find(const llm_gguf_t *g, const char *key);

size_t llm_gguf_n_tensors(const llm_gguf_t *g);
const llm_gguf_tensor_t *llm_gguf_tensor_at(const llm_gguf_t *g, size_t i);
const llm_gguf_tensor_t *llm_gguf_tensor(const llm_gguf_t *g,
    const char *name);


/*
 * Typed lookups: LLM_OK with *out set, LLM_GGUF_MISSING when the key is
 * absent, LLM_ERR (err names the file and key) when the value has
 * another type or does not fit.  Integer lookups accept any integer
 * type whose value fits; f32 accepts f32 and f64.
 */
int llm_gguf_get_u32(const llm_gguf_t *g, const char *key, uint32_t *out,
    llm_err_t *err);
int llm_gguf_get_i32(const llm_gguf_t *g, const char *key, int32_t *out,
    llm_err_t *err);
int llm_gguf_get_f32(const llm_gguf_t *g, const char *key, float *out,
    llm_err_t *err);
int llm_gguf_get_bool(const llm_gguf_t *g, const char *key, int *out,
    llm_err_t *err);
/* *s points into the map and is not NUL-terminated */
int llm_gguf_get_str(const llm_gguf_t *g, const char *key, const char **s,
    size_t *len, llm_err_t *err);
/* an array whose elements are of type want (LLM_GGUF_NTYPES: any) */
int llm_gguf_get_arr(const llm_gguf_t *g, const char *key, uint32_t want,
    const llm_gguf_kv_t **kv, llm_err_t *err);

/* elements of an array kv; i must be < arr_n and the type must match */
const char *llm_gguf_arr_str(const llm_gguf_kv_t *kv, uint64_t i,
    size_t *len);
float llm_gguf_arr_f32(const llm_gguf_kv_t *kv, uint64_t i);
int64_t llm_gguf_arr_int(const llm_gguf_kv_t *kv, uint64_t i);


/* type names and sizes */
const char *llm_gguf_type_name(uint32_t type);
const char *llm_ggml_type_name(uint32_t type);
/* elements per block and bytes per block; 0 for types we cannot size */
size_t llm_ggml_blck_size(uint32_t type);
size_t llm_ggml_type_size(uint32_t type);
/* bytes of a row of n elements, or 0 if n is not whole blocks */
size_t llm_ggml_row_size(uint32_t type, int64_t n);


#endif /* LLM_GGUF_H */
