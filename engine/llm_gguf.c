/*
 * Copyright (C) ngx_llm developers
 *
 * GGUF reader.  The file is hostile until proven otherwise: every read
 * goes through a cursor that knows how many bytes are left, every count
 * is checked against the bytes it would need before anything is
 * allocated for it, and every size is computed with overflow checks.
 * Multi-byte fields are little-endian, as on every host we build for.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llm_gguf.h"


struct llm_gguf_s {
    char                 *path;
    const uint8_t        *map;           /* the whole file, read-only */
    size_t                size;
    int                   mapped;        /* map is ours to munmap() */
    uint32_t              version;
    size_t                alignment;
    size_t                data_off;      /* start of the data section */

    size_t                n_kv;
    llm_gguf_kv_t        *kv;            /* in file order */
    llm_gguf_kv_t       **kv_sorted;     /* by key, for lookups */

    size_t                n_tensors;
    llm_gguf_tensor_t    *tensors;       /* in file order */
    llm_gguf_tensor_t   **t_sorted;      /* by name, for lookups */

    char                 *names;         /* keys and tensor names */
};


/* a cursor over the mapped file; every read checks what is left */
typedef struct {
    const uint8_t  *p;
    size_t          size;
    size_t          off;
    const char     *path;
    llm_err_t      *err;
} llm_gguf_rd_t;


/* the smallest encodings, used to bound counts before allocating */
#define LLM_GGUF_MIN_KV      (8 + 4 + 1)      /* empty key, u8 value */
#define LLM_GGUF_MIN_TENSOR  (8 + 1 + 4 + 4 + 8)


static int llm_gguf_parse(llm_gguf_t *g, llm_err_t *err);
static int llm_gguf_parse_kv(llm_gguf_t *g, llm_gguf_rd_t *rd,
    llm_gguf_kv_t *kv, size_t *key_off, size_t *key_len);
static int llm_gguf_parse_tensor(llm_gguf_t *g, llm_gguf_rd_t *rd,
    llm_gguf_tensor_t *t, size_t *name_off, size_t *name_len);
static int llm_gguf_check_alignment(llm_gguf_t *g, llm_err_t *err);
static int llm_gguf_check_tensors(llm_gguf_t *g, llm_err_t *err);
static int llm_gguf_index(llm_gguf_t *g, llm_err_t *err);
static int llm_gguf_rd_bytes(llm_gguf_rd_t *rd, size_t n,
    const uint8_t **out, const char *what);
static int llm_gguf_rd_u32(llm_gguf_rd_t *rd, uint32_t *v,
    const char *what);
static int llm_gguf_rd_u64(llm_gguf_rd_t *rd, uint64_t *v,
    const char *what);
static int llm_gguf_rd_str(llm_gguf_rd_t *rd, size_t *len,
    const char *what);
static size_t llm_gguf_scalar_size(uint32_t type);
static int llm_gguf_int_value(uint32_t type, const uint8_t *p, int64_t *s,
    uint64_t *u);
static int llm_gguf_cmp_kv(const void *a, const void *b);
static int llm_gguf_cmp_name(const void *a, const void *b);
static int llm_gguf_cmp_offset(const void *a, const void *b);


/* ggml's block layouts: elements per block, bytes per block */
static const struct {
    const char  *name;
    uint32_t     blck;
    uint32_t     size;
} llm_ggml_types[LLM_TYPE_COUNT] = {
    [LLM_TYPE_F32]  = { "F32",  1,   4 },
    [LLM_TYPE_F16]  = { "F16",  1,   2 },
    [LLM_TYPE_Q4_0] = { "Q4_0", 32,  2 + 16 },
    [LLM_TYPE_Q4_1] = { "Q4_1", 32,  2 + 2 + 16 },
    [4]             = { "Q4_2 (removed)", 0, 0 },
    [5]             = { "Q4_3 (removed)", 0, 0 },
    [LLM_TYPE_Q5_0] = { "Q5_0", 32,  2 + 4 + 16 },
    [LLM_TYPE_Q5_1] = { "Q5_1", 32,  2 + 2 + 4 + 16 },
    [LLM_TYPE_Q8_0] = { "Q8_0", 32,  2 + 32 },
    [LLM_TYPE_Q8_1] = { "Q8_1", 32,  2 + 2 + 32 },
    [LLM_TYPE_Q2_K] = { "Q2_K", 256, 16 + 64 + 2 + 2 },
    [LLM_TYPE_Q3_K] = { "Q3_K", 256, 32 + 64 + 12 + 2 },
    [LLM_TYPE_Q4_K] = { "Q4_K", 256, 2 + 2 + 12 + 128 },
    [LLM_TYPE_Q5_K] = { "Q5_K", 256, 2 + 2 + 12 + 32 + 128 },
    [LLM_TYPE_Q6_K] = { "Q6_K", 256, 128 + 64 + 16 + 2 },
    [LLM_TYPE_Q8_K] = { "Q8_K", 256, 4 + 256 + 32 },
    [16]            = { "IQ2_XXS", 0, 0 },
    [17]            = { "IQ2_XS", 0, 0 },
    [18]            = { "IQ3_XXS", 0, 0 },
    [19]            = { "IQ1_S", 0, 0 },
    [20]            = { "IQ4_NL", 0, 0 },
    [21]            = { "IQ3_S", 0, 0 },
    [22]            = { "IQ2_S", 0, 0 },
    [23]            = { "IQ4_XS", 0, 0 },
    [LLM_TYPE_I8]   = { "I8",   1,   1 },
    [LLM_TYPE_I16]  = { "I16",  1,   2 },
    [LLM_TYPE_I32]  = { "I32",  1,   4 },
    [LLM_TYPE_I64]  = { "I64",  1,   8 },
    [LLM_TYPE_F64]  = { "F64",  1,   8 },
    [29]            = { "IQ1_M", 0, 0 },
    [LLM_TYPE_BF16] = { "BF16", 1,   2 },
    [34]            = { "TQ1_0", 0, 0 },
    [35]            = { "TQ2_0", 0, 0 },
    [39]            = { "MXFP4", 0, 0 },
};


static const char  *llm_gguf_type_names[LLM_GGUF_NTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
    "array", "u64", "i64", "f64"
};


int
llm_gguf_open(llm_gguf_t **out, const char *path, llm_err_t *err)
{
    int           fd;
    void         *map;
    struct stat   st;

    *out = NULL;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return llm_err_set(err, LLM_EIO, "%s: open: %s", path,
                           strerror(errno));
    }

    if (fstat(fd, &st) == -1) {
        llm_err_set(err, LLM_EIO, "%s: fstat: %s", path, strerror(errno));
        close(fd);
        return LLM_ERR;
    }

    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return llm_err_set(err, LLM_EIO, "%s: not a regular file", path);
    }

    if ((uint64_t) st.st_size < 4 + 4 + 8 + 8) {
        close(fd);
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: truncated: %lld bytes is too short for a "
                           "GGUF header", path, (long long) st.st_size);
    }

    if ((uint64_t) st.st_size > SIZE_MAX) {
        close(fd);
        return llm_err_set(err, LLM_EIO, "%s: too large to map", path);
    }

    map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);

    if (map == MAP_FAILED) {
        return llm_err_set(err, LLM_EIO, "%s: mmap: %s", path,
                           strerror(errno));
    }

    if (llm_gguf_open_mem(out, path, map, (size_t) st.st_size, err)
        != LLM_OK)
    {
        munmap(map, (size_t) st.st_size);
        return LLM_ERR;
    }

    (*out)->mapped = 1;
    return LLM_OK;
}


int
llm_gguf_open_mem(llm_gguf_t **out, const char *name, const void *p,
    size_t size, llm_err_t *err)
{
    llm_gguf_t  *g;

    *out = NULL;

    if (size < 4 + 4 + 8 + 8) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: truncated: %zu bytes is too short for a "
                           "GGUF header", name, size);
    }

    g = calloc(1, sizeof(llm_gguf_t));
    if (g == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", name);
    }

    g->map = p;
    g->size = size;

    g->path = strdup(name);
    if (g->path == NULL) {
        llm_gguf_close(g);
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", name);
    }

    if (llm_gguf_parse(g, err) != LLM_OK) {
        llm_gguf_close(g);
        return LLM_ERR;
    }

    *out = g;
    return LLM_OK;
}


void
llm_gguf_close(llm_gguf_t *g)
{
    if (g == NULL) {
        return;
    }

    if (g->kv != NULL) {
        for (size_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].str_off);
        }
    }

    free(g->kv);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->t_sorted);
    free(g->names);
    free(g->path);

    if (g->mapped) {
        munmap((void *) g->map, g->size);
    }

    free(g);
}


static int
llm_gguf_parse(llm_gguf_t *g, llm_err_t *err)
{
    size_t          *key_off, *key_len, *name_off, *name_len;
    size_t           total, n, bytes;
    uint32_t         magic;
    uint64_t         n_kv, n_tensors;
    llm_gguf_rd_t    rd;

    rd.p = g->map;
    rd.size = g->size;
    rd.off = 0;
    rd.path = g->path;
    rd.err = err;

    (void) llm_gguf_rd_u32(&rd, &magic, "magic");
    if (magic != LLM_GGUF_MAGIC) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: bad magic 0x%08x, not a GGUF file",
                           g->path, magic);
    }

    (void) llm_gguf_rd_u32(&rd, &g->version, "version");
    if (g->version != 2 && g->version != 3) {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: unsupported GGUF version %u (want 2 or 3)",
                           g->path, g->version);
    }

    (void) llm_gguf_rd_u64(&rd, &n_tensors, "tensor count");
    (void) llm_gguf_rd_u64(&rd, &n_kv, "metadata count");

    /* bound the counts by what the rest of the file could hold */

    if (n_kv > (g->size - rd.off) / LLM_GGUF_MIN_KV) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: metadata count %llu does not fit in the "
                           "file", g->path, (unsigned long long) n_kv);
    }

    if (n_tensors > (g->size - rd.off) / LLM_GGUF_MIN_TENSOR) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor count %llu does not fit in the file",
                           g->path, (unsigned long long) n_tensors);
    }

    g->n_kv = (size_t) n_kv;
    g->n_tensors = (size_t) n_tensors;

    /* the counts are bounded by the file size, so these cannot overflow,
     * but keep the arithmetic checked anyway */

    n = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    if (llm_mul_size(n + 1, 4 * sizeof(size_t), &bytes) != 0) {
        return llm_err_set(err, LLM_EFORMAT, "%s: counts overflow",
                           g->path);
    }

    g->kv = calloc(g->n_kv + 1, sizeof(llm_gguf_kv_t));
    g->tensors = calloc(g->n_tensors + 1, sizeof(llm_gguf_tensor_t));
    key_off = malloc(bytes);

    if (g->kv == NULL || g->tensors == NULL || key_off == NULL) {
        free(key_off);
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", g->path);
    }

    key_len = key_off + (n + 1);
    name_off = key_len + (n + 1);
    name_len = name_off + (n + 1);

    for (size_t i = 0; i < g->n_kv; i++) {
        if (llm_gguf_parse_kv(g, &rd, &g->kv[i], &key_off[i], &key_len[i])
            != LLM_OK)
        {
            free(key_off);
            return LLM_ERR;
        }
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        if (llm_gguf_parse_tensor(g, &rd, &g->tensors[i], &name_off[i],
                                  &name_len[i])
            != LLM_OK)
        {
            free(key_off);
            return LLM_ERR;
        }
    }

    /* copy keys and names out, NUL-terminated; each is bounded by the
     * file, so the sum is too */

    total = 0;
    for (size_t i = 0; i < g->n_kv; i++) {
        total += key_len[i] + 1;
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        total += name_len[i] + 1;
    }

    g->names = malloc(total + 1);
    if (g->names == NULL) {
        free(key_off);
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", g->path);
    }

    total = 0;
    for (size_t i = 0; i < g->n_kv; i++) {
        memcpy(g->names + total, g->map + key_off[i], key_len[i]);
        g->names[total + key_len[i]] = '\0';
        g->kv[i].key = g->names + total;
        total += key_len[i] + 1;
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        memcpy(g->names + total, g->map + name_off[i], name_len[i]);
        g->names[total + name_len[i]] = '\0';
        g->tensors[i].name = g->names + total;
        total += name_len[i] + 1;
    }

    free(key_off);

    if (llm_gguf_check_alignment(g, err) != LLM_OK) {
        return LLM_ERR;
    }

    /* the data section starts at the next multiple of the alignment */

    if (llm_add_size(rd.off, g->alignment - 1, &g->data_off) != 0) {
        return llm_err_set(err, LLM_EFORMAT, "%s: data offset overflows",
                           g->path);
    }

    g->data_off &= ~(g->alignment - 1);

    if (llm_gguf_check_tensors(g, err) != LLM_OK) {
        return LLM_ERR;
    }

    return llm_gguf_index(g, err);
}


static int
llm_gguf_parse_kv(llm_gguf_t *g, llm_gguf_rd_t *rd, llm_gguf_kv_t *kv,
    size_t *key_off, size_t *key_len)
{
    size_t          esize, bytes, start;
    uint32_t        type;
    const uint8_t  *p;

    if (llm_gguf_rd_str(rd, key_len, "metadata key") != LLM_OK) {
        return LLM_ERR;
    }

    *key_off = rd->off - *key_len;

    if (llm_gguf_rd_u32(rd, &type, "metadata value type") != LLM_OK) {
        return LLM_ERR;
    }

    if (type >= LLM_GGUF_NTYPES) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: key '%.*s' has unknown value type %u",
                           g->path, (int) (*key_len > 64 ? 64 : *key_len),
                           (const char *) g->map + *key_off, type);
    }

    kv->type = type;
    kv->val = g->map + rd->off;

    if (type == LLM_GGUF_STRING) {
        return llm_gguf_rd_str(rd, &bytes, "string value");
    }

    if (type != LLM_GGUF_ARRAY) {
        return llm_gguf_rd_bytes(rd, llm_gguf_scalar_size(type), &p,
                                 "metadata value");
    }

    if (llm_gguf_rd_u32(rd, &kv->arr_type, "array element type") != LLM_OK
        || llm_gguf_rd_u64(rd, &kv->arr_n, "array length") != LLM_OK)
    {
        return LLM_ERR;
    }

    kv->val = g->map + rd->off;

    if (kv->arr_type >= LLM_GGUF_NTYPES) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: key '%.*s' has unknown array element type "
                           "%u", g->path,
                           (int) (*key_len > 64 ? 64 : *key_len),
                           (const char *) g->map + *key_off, kv->arr_type);
    }

    if (kv->arr_type == LLM_GGUF_ARRAY) {
        return llm_err_set(rd->err, LLM_EUNSUPPORTED,
                           "%s: key '%.*s' is an array of arrays, which is "
                           "not supported", g->path,
                           (int) (*key_len > 64 ? 64 : *key_len),
                           (const char *) g->map + *key_off);
    }

    if (kv->arr_type != LLM_GGUF_STRING) {
        esize = llm_gguf_scalar_size(kv->arr_type);

        if (kv->arr_n > SIZE_MAX
            || llm_mul_size((size_t) kv->arr_n, esize, &bytes) != 0
            || bytes > rd->size - rd->off)
        {
            return llm_err_set(rd->err, LLM_EFORMAT,
                               "%s: array length %llu of key '%.*s' does "
                               "not fit in the file", g->path,
                               (unsigned long long) kv->arr_n,
                               (int) (*key_len > 64 ? 64 : *key_len),
                               (const char *) g->map + *key_off);
        }

        rd->off += bytes;
        return LLM_OK;
    }

    /* each string takes at least its 8-byte length */

    if (kv->arr_n > (rd->size - rd->off) / 8) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: array length %llu of key '%.*s' does not "
                           "fit in the file", g->path,
                           (unsigned long long) kv->arr_n,
                           (int) (*key_len > 64 ? 64 : *key_len),
                           (const char *) g->map + *key_off);
    }

    kv->str_off = malloc(((size_t) kv->arr_n + 1) * sizeof(uint64_t));
    if (kv->str_off == NULL) {
        return llm_err_set(rd->err, LLM_ENOMEM, "%s: out of memory",
                           g->path);
    }

    start = rd->off;

    for (uint64_t i = 0; i < kv->arr_n; i++) {
        kv->str_off[i] = rd->off - start;

        if (llm_gguf_rd_str(rd, &bytes, "string in array") != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_gguf_parse_tensor(llm_gguf_t *g, llm_gguf_rd_t *rd,
    llm_gguf_tensor_t *t, size_t *name_off, size_t *name_len)
{
    int         nlen;
    size_t      blck;
    uint32_t    n_dims;
    uint64_t    dim;
    const char *name;

    if (llm_gguf_rd_str(rd, name_len, "tensor name") != LLM_OK) {
        return LLM_ERR;
    }

    *name_off = rd->off - *name_len;
    name = (const char *) g->map + *name_off;
    nlen = (int) (*name_len > 64 ? 64 : *name_len);

    if (*name_len == 0 || *name_len >= LLM_GGUF_NAME_MAX) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: tensor name '%.*s' has length %zu (want "
                           "1..%d)", g->path, nlen, name, *name_len,
                           LLM_GGUF_NAME_MAX - 1);
    }

    if (llm_gguf_rd_u32(rd, &n_dims, "tensor dimension count") != LLM_OK) {
        return LLM_ERR;
    }

    if (n_dims > LLM_GGUF_MAX_DIMS) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: tensor '%.*s' has %u dimensions (at most "
                           "%d)", g->path, nlen, name, n_dims,
                           LLM_GGUF_MAX_DIMS);
    }

    t->n_dims = n_dims;
    t->n_elems = 1;

    for (uint32_t i = 0; i < LLM_GGUF_MAX_DIMS; i++) {
        dim = 1;

        if (i < n_dims
            && llm_gguf_rd_u64(rd, &dim, "tensor dimension") != LLM_OK)
        {
            return LLM_ERR;
        }

        if (dim > (uint64_t) INT64_MAX || dim > SIZE_MAX
            || llm_mul_size(t->n_elems, (size_t) dim, &t->n_elems) != 0)
        {
            return llm_err_set(rd->err, LLM_EFORMAT,
                               "%s: tensor '%.*s' dimensions overflow "
                               "(dim %u is %llu)", g->path, nlen, name, i,
                               (unsigned long long) dim);
        }

        t->ne[i] = (int64_t) dim;
    }

    if (llm_gguf_rd_u32(rd, &t->type, "tensor type") != LLM_OK
        || llm_gguf_rd_u64(rd, &t->offset, "tensor offset") != LLM_OK)
    {
        return LLM_ERR;
    }

    blck = llm_ggml_blck_size(t->type);
    if (blck == 0) {
        return llm_err_set(rd->err, LLM_EUNSUPPORTED,
                           "%s: tensor '%.*s' has unknown type %u (%s)",
                           g->path, nlen, name, t->type,
                           llm_ggml_type_name(t->type));
    }

    if (t->ne[0] % (int64_t) blck != 0) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: tensor '%.*s' of type %s has %lld columns, "
                           "not a multiple of its block size %zu",
                           g->path, nlen, name, llm_ggml_type_name(t->type),
                           (long long) t->ne[0], blck);
    }

    /* ne[0] is whole blocks, so n_elems is too */

    if (llm_mul_size(t->n_elems / blck, llm_ggml_type_size(t->type),
                     &t->nbytes)
        != 0)
    {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: tensor '%.*s' size overflows", g->path,
                           nlen, name);
    }

    return LLM_OK;
}


static int
llm_gguf_check_alignment(llm_gguf_t *g, llm_err_t *err)
{
    uint32_t                align;
    const llm_gguf_kv_t    *kv;

    g->alignment = LLM_GGUF_DEFAULT_ALIGN;

    /* the index is not built yet: scan (the last one would win, but
     * duplicate keys are rejected later anyway) */

    kv = NULL;
    for (size_t i = 0; i < g->n_kv; i++) {
        if (strcmp(g->kv[i].key, "general.alignment") == 0) {
            kv = &g->kv[i];
        }
    }

    if (kv == NULL) {
        return LLM_OK;
    }

    if (kv->type != LLM_GGUF_UINT32) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: general.alignment has type %s, want u32",
                           g->path, llm_gguf_type_name(kv->type));
    }

    memcpy(&align, kv->val, 4);

    /* the spec asks for a multiple of 8; a power of two keeps the
     * masking above correct */

    if (align < 8 || (align & (align - 1)) != 0) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: general.alignment %u is not a power of two "
                           ">= 8", g->path, align);
    }

    g->alignment = align;
    return LLM_OK;
}


static int
llm_gguf_check_tensors(llm_gguf_t *g, llm_err_t *err)
{
    size_t               end;
    llm_gguf_tensor_t   *t, *prev;
    llm_gguf_tensor_t  **by_off;

    if (g->n_tensors == 0) {
        return LLM_OK;
    }

    if (g->data_off > g->size) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: truncated: the data section would start at "
                           "%zu, past the end (%zu bytes)", g->path,
                           g->data_off, g->size);
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        t = &g->tensors[i];

        if (t->offset % g->alignment != 0) {
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: tensor '%s' offset %llu is not a "
                               "multiple of the alignment %zu", g->path,
                               t->name, (unsigned long long) t->offset,
                               g->alignment);
        }

        if (t->offset > g->size - g->data_off
            || t->nbytes > g->size - g->data_off - t->offset)
        {
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: tensor '%s' data (offset %llu, %zu "
                               "bytes) lies past the end of the file",
                               g->path, t->name,
                               (unsigned long long) t->offset, t->nbytes);
        }

        t->data = g->map + g->data_off + t->offset;
    }

    by_off = malloc(g->n_tensors * sizeof(llm_gguf_tensor_t *));
    if (by_off == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", g->path);
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        by_off[i] = &g->tensors[i];
    }

    qsort(by_off, g->n_tensors, sizeof(llm_gguf_tensor_t *),
          llm_gguf_cmp_offset);

    for (size_t i = 1; i < g->n_tensors; i++) {
        prev = by_off[i - 1];
        t = by_off[i];
        end = (size_t) prev->offset + prev->nbytes;

        if (end > t->offset) {
            llm_err_set(err, LLM_EFORMAT,
                        "%s: tensors '%s' and '%s' overlap", g->path,
                        prev->name, t->name);
            free(by_off);
            return LLM_ERR;
        }
    }

    free(by_off);
    return LLM_OK;
}


static int
llm_gguf_index(llm_gguf_t *g, llm_err_t *err)
{
    g->kv_sorted = malloc((g->n_kv + 1) * sizeof(llm_gguf_kv_t *));
    g->t_sorted = malloc((g->n_tensors + 1) * sizeof(llm_gguf_tensor_t *));

    if (g->kv_sorted == NULL || g->t_sorted == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", g->path);
    }

    for (size_t i = 0; i < g->n_kv; i++) {
        g->kv_sorted[i] = &g->kv[i];
    }

    qsort(g->kv_sorted, g->n_kv, sizeof(llm_gguf_kv_t *), llm_gguf_cmp_kv);

    for (size_t i = 1; i < g->n_kv; i++) {
        if (strcmp(g->kv_sorted[i - 1]->key, g->kv_sorted[i]->key) == 0) {
            return llm_err_set(err, LLM_EFORMAT, "%s: duplicate key '%.64s'",
                               g->path, g->kv_sorted[i]->key);
        }
    }

    for (size_t i = 0; i < g->n_tensors; i++) {
        g->t_sorted[i] = &g->tensors[i];
    }

    qsort(g->t_sorted, g->n_tensors, sizeof(llm_gguf_tensor_t *),
          llm_gguf_cmp_name);

    for (size_t i = 1; i < g->n_tensors; i++) {
        if (strcmp(g->t_sorted[i - 1]->name, g->t_sorted[i]->name) == 0) {
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: duplicate tensor '%s'", g->path,
                               g->t_sorted[i]->name);
        }
    }

    return LLM_OK;
}


static int
llm_gguf_rd_bytes(llm_gguf_rd_t *rd, size_t n, const uint8_t **out,
    const char *what)
{
    *out = NULL;

    if (n > rd->size - rd->off) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: truncated: %s at offset %zu needs %zu "
                           "bytes, %zu left", rd->path, what, rd->off, n,
                           rd->size - rd->off);
    }

    *out = rd->p + rd->off;
    rd->off += n;
    return LLM_OK;
}


static int
llm_gguf_rd_u32(llm_gguf_rd_t *rd, uint32_t *v, const char *what)
{
    const uint8_t  *p;

    *v = 0;

    if (llm_gguf_rd_bytes(rd, 4, &p, what) != LLM_OK) {
        return LLM_ERR;
    }

    memcpy(v, p, 4);
    return LLM_OK;
}


static int
llm_gguf_rd_u64(llm_gguf_rd_t *rd, uint64_t *v, const char *what)
{
    const uint8_t  *p;

    *v = 0;

    if (llm_gguf_rd_bytes(rd, 8, &p, what) != LLM_OK) {
        return LLM_ERR;
    }

    memcpy(v, p, 8);
    return LLM_OK;
}


/* a u64 length and that many bytes; leaves the cursor after them */
static int
llm_gguf_rd_str(llm_gguf_rd_t *rd, size_t *len, const char *what)
{
    uint64_t  n;

    *len = 0;

    if (llm_gguf_rd_u64(rd, &n, what) != LLM_OK) {
        return LLM_ERR;
    }

    if (n > rd->size - rd->off) {
        return llm_err_set(rd->err, LLM_EFORMAT,
                           "%s: truncated: %s length %llu at offset %zu "
                           "runs past the end", rd->path, what,
                           (unsigned long long) n, rd->off - 8);
    }

    *len = (size_t) n;
    rd->off += (size_t) n;
    return LLM_OK;
}


static size_t
llm_gguf_scalar_size(uint32_t type)
{
    switch (type) {
    case LLM_GGUF_UINT8:
    case LLM_GGUF_INT8:
    case LLM_GGUF_BOOL:
        return 1;
    case LLM_GGUF_UINT16:
    case LLM_GGUF_INT16:
        return 2;
    case LLM_GGUF_UINT32:
    case LLM_GGUF_INT32:
    case LLM_GGUF_FLOAT32:
        return 4;
    case LLM_GGUF_UINT64:
    case LLM_GGUF_INT64:
    case LLM_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}


/* reads an integer value: signed types into *s (returns 1), unsigned
 * into *u (returns 0); -1 for non-integer types */
static int
llm_gguf_int_value(uint32_t type, const uint8_t *p, int64_t *s,
    uint64_t *u)
{
    int8_t    i8;
    int16_t   i16;
    int32_t   i32;
    uint16_t  u16;
    uint32_t  u32;

    switch (type) {
    case LLM_GGUF_UINT8:
    case LLM_GGUF_BOOL:
        *u = p[0];
        return 0;
    case LLM_GGUF_INT8:
        memcpy(&i8, p, 1);
        *s = i8;
        return 1;
    case LLM_GGUF_UINT16:
        memcpy(&u16, p, 2);
        *u = u16;
        return 0;
    case LLM_GGUF_INT16:
        memcpy(&i16, p, 2);
        *s = i16;
        return 1;
    case LLM_GGUF_UINT32:
        memcpy(&u32, p, 4);
        *u = u32;
        return 0;
    case LLM_GGUF_INT32:
        memcpy(&i32, p, 4);
        *s = i32;
        return 1;
    case LLM_GGUF_UINT64:
        memcpy(u, p, 8);
        return 0;
    case LLM_GGUF_INT64:
        memcpy(s, p, 8);
        return 1;
    default:
        return -1;
    }
}


static int
llm_gguf_cmp_kv(const void *a, const void *b)
{
    const llm_gguf_kv_t  *ka = *(llm_gguf_kv_t * const *) a;
    const llm_gguf_kv_t  *kb = *(llm_gguf_kv_t * const *) b;

    return strcmp(ka->key, kb->key);
}


static int
llm_gguf_cmp_name(const void *a, const void *b)
{
    const llm_gguf_tensor_t  *ta = *(llm_gguf_tensor_t * const *) a;
    const llm_gguf_tensor_t  *tb = *(llm_gguf_tensor_t * const *) b;

    return strcmp(ta->name, tb->name);
}


static int
llm_gguf_cmp_offset(const void *a, const void *b)
{
    const llm_gguf_tensor_t  *ta = *(llm_gguf_tensor_t * const *) a;
    const llm_gguf_tensor_t  *tb = *(llm_gguf_tensor_t * const *) b;

    if (ta->offset != tb->offset) {
        return ta->offset < tb->offset ? -1 : 1;
    }

    /* equal offsets: the empty one first, so it cannot hide an overlap */
    return (ta->nbytes > tb->nbytes) - (ta->nbytes < tb->nbytes);
}


const char *
llm_gguf_path(const llm_gguf_t *g)
{
    return g->path;
}


uint32_t
llm_gguf_version(const llm_gguf_t *g)
{
    return g->version;
}


size_t
llm_gguf_alignment(const llm_gguf_t *g)
{
    return g->alignment;
}


size_t
llm_gguf_n_kv(const llm_gguf_t *g)
{
    return g->n_kv;
}


const llm_gguf_kv_t *
llm_gguf_kv_at(const llm_gguf_t *g, size_t i)
{
    return i < g->n_kv ? &g->kv[i] : NULL;
}


const llm_gguf_kv_t *
llm_gguf_find(const llm_gguf_t *g, const char *key)
{
    int     c;
    size_t  lo, hi, mid;

    lo = 0;
    hi = g->n_kv;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = strcmp(key, g->kv_sorted[mid]->key);

        if (c == 0) {
            return g->kv_sorted[mid];
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


size_t
llm_gguf_n_tensors(const llm_gguf_t *g)
{
    return g->n_tensors;
}


const llm_gguf_tensor_t *
llm_gguf_tensor_at(const llm_gguf_t *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}


const llm_gguf_tensor_t *
llm_gguf_tensor(const llm_gguf_t *g, const char *name)
{
    int     c;
    size_t  lo, hi, mid;

    lo = 0;
    hi = g->n_tensors;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = strcmp(name, g->t_sorted[mid]->name);

        if (c == 0) {
            return g->t_sorted[mid];
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


static int
llm_gguf_get_int(const llm_gguf_t *g, const char *key, int64_t min,
    uint64_t max, int64_t *out, llm_err_t *err)
{
    int                   sign;
    int64_t               s;
    uint64_t              u;
    const llm_gguf_kv_t  *kv;

    kv = llm_gguf_find(g, key);
    if (kv == NULL) {
        return LLM_GGUF_MISSING;
    }

    s = 0;
    u = 0;
    sign = llm_gguf_int_value(kv->type, kv->val, &s, &u);

    if (sign < 0) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: key '%s' has type %s, want an integer",
                           g->path, key, llm_gguf_type_name(kv->type));
    }

    if (sign == 1) {
        if (s < min || (s >= 0 && (uint64_t) s > max)) {
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: key '%s' value %lld is out of range",
                               g->path, key, (long long) s);
        }

        *out = s;
        return LLM_OK;
    }

    if (u > max) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: key '%s' value %llu is out of range",
                           g->path, key, (unsigned long long) u);
    }

    *out = (int64_t) u;
    return LLM_OK;
}


int
llm_gguf_get_u32(const llm_gguf_t *g, const char *key, uint32_t *out,
    llm_err_t *err)
{
    int      rc;
    int64_t  v;

    rc = llm_gguf_get_int(g, key, 0, UINT32_MAX, &v, err);
    if (rc == LLM_OK) {
        *out = (uint32_t) v;
    }

    return rc;
}


int
llm_gguf_get_i32(const llm_gguf_t *g, const char *key, int32_t *out,
    llm_err_t *err)
{
    int      rc;
    int64_t  v;

    rc = llm_gguf_get_int(g, key, INT32_MIN, INT32_MAX, &v, err);
    if (rc == LLM_OK) {
        *out = (int32_t) v;
    }

    return rc;
}


int
llm_gguf_get_f32(const llm_gguf_t *g, const char *key, float *out,
    llm_err_t *err)
{
    float                 f;
    double                d;
    int64_t               s;
    uint64_t              u;
    const llm_gguf_kv_t  *kv;

    kv = llm_gguf_find(g, key);
    if (kv == NULL) {
        return LLM_GGUF_MISSING;
    }

    switch (kv->type) {
    case LLM_GGUF_FLOAT32:
        memcpy(&f, kv->val, 4);
        *out = f;
        return LLM_OK;

    case LLM_GGUF_FLOAT64:
        memcpy(&d, kv->val, 8);
        *out = (float) d;
        return LLM_OK;

    default:
        switch (llm_gguf_int_value(kv->type, kv->val, &s, &u)) {
        case 0:
            *out = (float) u;
            return LLM_OK;
        case 1:
            *out = (float) s;
            return LLM_OK;
        }
    }

    return llm_err_set(err, LLM_EFORMAT,
                       "%s: key '%s' has type %s, want a number",
                       g->path, key, llm_gguf_type_name(kv->type));
}


int
llm_gguf_get_bool(const llm_gguf_t *g, const char *key, int *out,
    llm_err_t *err)
{
    int      rc;
    int64_t  v;

    rc = llm_gguf_get_int(g, key, INT64_MIN, UINT64_MAX, &v, err);
    if (rc == LLM_OK) {
        *out = v != 0;
    }

    return rc;
}


int
llm_gguf_get_str(const llm_gguf_t *g, const char *key, const char **s,
    size_t *len, llm_err_t *err)
{
    uint64_t              n;
    const llm_gguf_kv_t  *kv;

    kv = llm_gguf_find(g, key);
    if (kv == NULL) {
        return LLM_GGUF_MISSING;
    }

    if (kv->type != LLM_GGUF_STRING) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: key '%s' has type %s, want string",
                           g->path, key, llm_gguf_type_name(kv->type));
    }

    memcpy(&n, kv->val, 8);
    *s = (const char *) kv->val + 8;
    *len = (size_t) n;
    return LLM_OK;
}


int
llm_gguf_get_arr(const llm_gguf_t *g, const char *key, uint32_t want,
    const llm_gguf_kv_t **out, llm_err_t *err)
{
    const llm_gguf_kv_t  *kv;

    kv = llm_gguf_find(g, key);
    if (kv == NULL) {
        return LLM_GGUF_MISSING;
    }

    if (kv->type != LLM_GGUF_ARRAY) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: key '%s' has type %s, want array",
                           g->path, key, llm_gguf_type_name(kv->type));
    }

    if (want != LLM_GGUF_NTYPES && kv->arr_type != want) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: key '%s' is an array of %s, want %s",
                           g->path, key, llm_gguf_type_name(kv->arr_type),
                           llm_gguf_type_name(want));
    }

    *out = kv;
    return LLM_OK;
}


const char *
llm_gguf_arr_str(const llm_gguf_kv_t *kv, uint64_t i, size_t *len)
{
    uint64_t        n;
    const uint8_t  *p;

    if (kv->type != LLM_GGUF_ARRAY || kv->arr_type != LLM_GGUF_STRING
        || i >= kv->arr_n)
    {
        *len = 0;
        return "";
    }

    p = kv->val + kv->str_off[i];
    memcpy(&n, p, 8);
    *len = (size_t) n;
    return (const char *) p + 8;
}


float
llm_gguf_arr_f32(const llm_gguf_kv_t *kv, uint64_t i)
{
    float   f;
    double  d;

    if (kv->type != LLM_GGUF_ARRAY || i >= kv->arr_n) {
        return 0.0f;
    }

    if (kv->arr_type == LLM_GGUF_FLOAT32) {
        memcpy(&f, kv->val + i * 4, 4);
        return f;
    }

    if (kv->arr_type == LLM_GGUF_FLOAT64) {
        memcpy(&d, kv->val + i * 8, 8);
        return (float) d;
    }

    return (float) llm_gguf_arr_int(kv, i);
}


int64_t
llm_gguf_arr_int(const llm_gguf_kv_t *kv, uint64_t i)
{
    size_t    es;
    int64_t   s;
    uint64_t  u;

    if (kv->type != LLM_GGUF_ARRAY || i >= kv->arr_n) {
        return 0;
    }

    es = llm_gguf_scalar_size(kv->arr_type);

    switch (llm_gguf_int_value(kv->arr_type, kv->val + i * es, &s, &u)) {
    case 0:
        return u > INT64_MAX ? INT64_MAX : (int64_t) u;
    case 1:
        return s;
    default:
        return 0;
    }
}


const char *
llm_gguf_type_name(uint32_t type)
{
    return type < LLM_GGUF_NTYPES ? llm_gguf_type_names[type] : "unknown";
}


const char *
llm_ggml_type_name(uint32_t type)
{
    if (type < LLM_TYPE_COUNT && llm_ggml_types[type].name != NULL) {
        return llm_ggml_types[type].name;
    }

    return "unknown";
}


size_t
llm_ggml_blck_size(uint32_t type)
{
    return type < LLM_TYPE_COUNT ? llm_ggml_types[type].blck : 0;
}


size_t
llm_ggml_type_size(uint32_t type)
{
    return type < LLM_TYPE_COUNT ? llm_ggml_types[type].size : 0;
}


size_t
llm_ggml_row_size(uint32_t type, int64_t n)
{
    size_t  blck, bytes;

    blck = llm_ggml_blck_size(type);

    if (blck == 0 || n < 0 || n % (int64_t) blck != 0
        || llm_mul_size((size_t) n / blck, llm_ggml_type_size(type), &bytes)
           != 0)
    {
        return 0;
    }

    return bytes;
}
