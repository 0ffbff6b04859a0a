/*
 * Copyright (C) ngx_llm developers
 *
 * Block layouts, as GGUF stores them (all little-endian, f16 scales):
 *
 *   Q8_0  32 elements: d, int8 q[32]                     x = d * q
 *   Q4_0  32 elements: d, q[16] nibbles (low: 0..15,     x = d * (q - 8)
 *         high: 16..31)
 *   Q4_K 256 elements: d, dmin, 12 bytes of 6-bit scales and mins for 8
 *         sub-blocks of 32, q[128] nibbles               x = d*s*q - dmin*m
 *   Q5_K  as Q4_K plus qh[32], the fifth bit of each element
 *   Q6_K 256 elements: ql[128] low nibbles, qh[64] high 2 bits, int8
 *         scales[16] for sub-blocks of 16, d            x = d * s * (q - 32)
 *
 * The dot products below are plain loops on purpose: this is the
 * reference the SIMD and GPU versions will be checked against.
 */

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "llm_cpu.h"
#include "llm_gguf.h"
#include "llm_quant.h"
#include "llm_threads.h"


float                   llm_fp16_table[65536];
static pthread_once_t   llm_quant_once = PTHREAD_ONCE_INIT;


static float llm_fp16_compute(uint16_t h);
static void llm_quant_build(void);
static float llm_dot_f32(const void *row, const float *x, int64_t n);
static float llm_dot_f16(const void *row, const float *x, int64_t n);
static float llm_dot_bf16(const void *row, const float *x, int64_t n);
static float llm_dot_q8_0(const void *row, const float *x, int64_t n);
static float llm_dot_q4_0(const void *row, const float *x, int64_t n);
static float llm_dot_q4_k(const void *row, const float *x, int64_t n);
static float llm_dot_q5_k(const void *row, const float *x, int64_t n);
static float llm_dot_q6_k(const void *row, const float *x, int64_t n);
static void llm_block_q4_k(const uint8_t *b, float *y);
static void llm_block_q5_k(const uint8_t *b, float *y);
static void llm_block_q6_k(const uint8_t *b, float *y);
static void llm_scale_min_k4(int j, const uint8_t *q, uint8_t *sc,
    uint8_t *m);


void
llm_quant_init(void)
{
    pthread_once(&llm_quant_once, llm_quant_build);
}


static void
llm_quant_build(void)
{
    for (uint32_t i = 0; i < 65536; i++) {
        llm_fp16_table[i] = llm_fp16_compute((uint16_t) i);
    }
}


static float
llm_fp16_compute(uint16_t h)
{
    float     f;
    uint32_t  sign, exp, mant, bits;

    sign = (uint32_t) (h & 0x8000) << 16;
    exp = (h >> 10) & 0x1f;
    mant = h & 0x3ff;

    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in f32 */
        f = ldexpf((float) mant, -24);
        return sign ? -f : f;
    }

    if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);

    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }

    memcpy(&f, &bits, 4);
    return f;
}


float
llm_fp16_to_fp32(uint16_t h)
{
    return llm_fp16_table[h];
}


/* round to nearest even; overflow goes to infinity */
uint16_t
llm_fp32_to_fp16(float f)
{
    int32_t   exp;
    uint32_t  bits, sign, mant, half, rem;

    memcpy(&bits, &f, 4);
    sign = (bits >> 16) & 0x8000;
    exp = (int32_t) ((bits >> 23) & 0xff) - 127 + 15;
    mant = bits & 0x7fffff;

    if (((bits >> 23) & 0xff) == 0xff) {
        return (uint16_t) (sign | 0x7c00 | (mant ? 0x200 : 0));
    }

    if (exp >= 31) {
        return (uint16_t) (sign | 0x7c00);
    }

    if (exp <= 0) {
        if (exp < -10) {
            return (uint16_t) sign;
        }

        /* subnormal: shift the implicit bit in */
        mant |= 0x800000;
        rem = mant & ((1u << (14 - exp)) - 1);
        half = 1u << (13 - exp);
        mant >>= 14 - exp;

        if (rem > half || (rem == half && (mant & 1))) {
            mant++;
        }

        return (uint16_t) (sign | mant);
    }

    rem = mant & 0x1fff;
    mant >>= 13;
    bits = sign | ((uint32_t) exp << 10) | mant;

    /* a carry out of the mantissa correctly bumps the exponent */
    if (rem > 0x1000 || (rem == 0x1000 && (mant & 1))) {
        bits++;
    }

    return (uint16_t) bits;
}


float
llm_bf16_to_fp32(uint16_t h)
{
    float     f;
    uint32_t  bits;

    bits = (uint32_t) h << 16;
    memcpy(&f, &bits, 4);
    return f;
}


/* round to nearest even, NaN kept quiet */
uint16_t
llm_fp32_to_bf16(float f)
{
    uint32_t  bits;

    memcpy(&bits, &f, 4);

    if ((bits & 0x7fffffff) > 0x7f800000) {
        return (uint16_t) ((bits >> 16) | 0x40);
    }

    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t) (bits >> 16);
}


const float *
llm_quant_round_act(uint32_t type, const float *x, float *out, int64_t n)
{
    switch (type) {
    case LLM_TYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            out[i] = llm_fp16_to_fp32(llm_fp32_to_fp16(x[i]));
        }
        return out;

    case LLM_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            out[i] = llm_bf16_to_fp32(llm_fp32_to_bf16(x[i]));
        }
        return out;

    default:
        return x;
    }
}


int
llm_quant_supported(uint32_t type)
{
    return llm_quant_dot(type) != NULL;
}


llm_dot_pt
llm_quant_dot(uint32_t type)
{
    switch (type) {
    case LLM_TYPE_F32:
        return llm_dot_f32;
    case LLM_TYPE_F16:
        return llm_dot_f16;
    case LLM_TYPE_BF16:
        return llm_dot_bf16;
    case LLM_TYPE_Q8_0:
        return llm_dot_q8_0;
    case LLM_TYPE_Q4_0:
        return llm_dot_q4_0;
    case LLM_TYPE_Q4_K:
        return llm_dot_q4_k;
    case LLM_TYPE_Q5_K:
        return llm_dot_q5_k;
    case LLM_TYPE_Q6_K:
        return llm_dot_q6_k;
    default:
        return NULL;
    }
}


int
llm_dequant_row(uint32_t type, const void *row, float *y, int64_t n)
{
    int8_t          q8;
    uint16_t        h;
    const uint8_t  *b;

    b = row;

    switch (type) {
    case LLM_TYPE_F32:
        memcpy(y, row, (size_t) n * sizeof(float));
        return LLM_OK;

    case LLM_TYPE_F16:
    case LLM_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            memcpy(&h, b + 2 * i, 2);
            y[i] = type == LLM_TYPE_F16 ? llm_fp16_to_fp32(h)
                                        : llm_bf16_to_fp32(h);
        }
        return LLM_OK;

    case LLM_TYPE_Q8_0:
        for (int64_t i = 0; i < n; i += LLM_QK, b += 2 + LLM_QK) {
            float  d;

            memcpy(&h, b, 2);
            d = llm_fp16_to_fp32(h);

            for (int j = 0; j < LLM_QK; j++) {
                memcpy(&q8, b + 2 + j, 1);
                y[i + j] = d * q8;
            }
        }
        return LLM_OK;

    case LLM_TYPE_Q4_0:
        for (int64_t i = 0; i < n; i += LLM_QK, b += 2 + LLM_QK / 2) {
            float  d;

            memcpy(&h, b, 2);
            d = llm_fp16_to_fp32(h);

            for (int j = 0; j < LLM_QK / 2; j++) {
                y[i + j] = d * ((b[2 + j] & 0x0f) - 8);
                y[i + j + LLM_QK / 2] = d * ((b[2 + j] >> 4) - 8);
            }
        }
        return LLM_OK;

    case LLM_TYPE_Q4_K:
        for (int64_t i = 0; i < n; i += LLM_QK_K, b += 144) {
            llm_block_q4_k(b, y + i);
        }
        return LLM_OK;

    case LLM_TYPE_Q5_K:
        for (int64_t i = 0; i < n; i += LLM_QK_K, b += 176) {
            llm_block_q5_k(b, y + i);
        }
        return LLM_OK;

    case LLM_TYPE_Q6_K:
        for (int64_t i = 0; i < n; i += LLM_QK_K, b += 210) {
            llm_block_q6_k(b, y + i);
        }
        return LLM_OK;

    default:
        return LLM_ERR;
    }
}


static float
llm_dot_f32(const void *row, const float *x, int64_t n)
{
    float         sum;
    const float  *w;

    w = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        sum += w[i] * x[i];
    }

    return sum;
}


static float
llm_dot_f16(const void *row, const float *x, int64_t n)
{
    float            sum;
    const uint16_t  *w;

    w = row;    /* tensor data is aligned to at least 8 bytes */
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        sum += llm_fp16_table[w[i]] * x[i];
    }

    return sum;
}


static float
llm_dot_bf16(const void *row, const float *x, int64_t n)
{
    float            sum;
    const uint16_t  *w;

    w = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i++) {
        sum += llm_bf16_to_fp32(w[i]) * x[i];
    }

    return sum;
}


static float
llm_dot_q8_0(const void *row, const float *x, int64_t n)
{
    float           sum, bsum;
    uint16_t        h;
    const int8_t   *q;
    const uint8_t  *b;

    b = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i += LLM_QK, b += 2 + LLM_QK) {
        memcpy(&h, b, 2);
        q = (const int8_t *) (b + 2);
        bsum = 0.0f;

        for (int j = 0; j < LLM_QK; j++) {
            bsum += q[j] * x[i + j];
        }

        sum += llm_fp16_to_fp32(h) * bsum;
    }

    return sum;
}


static float
llm_dot_q4_0(const void *row, const float *x, int64_t n)
{
    float           sum, bsum;
    uint16_t        h;
    const uint8_t  *b;

    b = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i += LLM_QK, b += 2 + LLM_QK / 2) {
        memcpy(&h, b, 2);
        bsum = 0.0f;

        for (int j = 0; j < LLM_QK / 2; j++) {
            bsum += ((b[2 + j] & 0x0f) - 8) * x[i + j];
            bsum += ((b[2 + j] >> 4) - 8) * x[i + j + LLM_QK / 2];
        }

        sum += llm_fp16_to_fp32(h) * bsum;
    }

    return sum;
}


/* the k-quants decode one block at a time onto the stack */

static float
llm_dot_q4_k(const void *row, const float *x, int64_t n)
{
    float           y[LLM_QK_K], sum;
    const uint8_t  *b;

    b = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i += LLM_QK_K, b += 144) {
        llm_block_q4_k(b, y);

        for (int j = 0; j < LLM_QK_K; j++) {
            sum += y[j] * x[i + j];
        }
    }

    return sum;
}


static float
llm_dot_q5_k(const void *row, const float *x, int64_t n)
{
    float           y[LLM_QK_K], sum;
    const uint8_t  *b;

    b = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i += LLM_QK_K, b += 176) {
        llm_block_q5_k(b, y);

        for (int j = 0; j < LLM_QK_K; j++) {
            sum += y[j] * x[i + j];
        }
    }

    return sum;
}


static float
llm_dot_q6_k(const void *row, const float *x, int64_t n)
{
    float           y[LLM_QK_K], sum;
    const uint8_t  *b;

    b = row;
    sum = 0.0f;

    for (int64_t i = 0; i < n; i += LLM_QK_K, b += 210) {
        llm_block_q6_k(b, y);

        for (int j = 0; j < LLM_QK_K; j++) {
            sum += y[j] * x[i + j];
        }
    }

    return sum;
}


/*
 * The 12 scale bytes of Q4_K and Q5_K hold eight 6-bit scales and eight
 * 6-bit mins: sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scale)
 * and 4..7 (min); sub-blocks 4..7 take their low 4 bits from bytes 8..11
 * and their top 2 bits from the spare top bits of bytes 0..7.
 */
static void
llm_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;

    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}


/* b: d, dmin, scales[12], qs[128]; 64 elements per pair of sub-blocks,
 * the first 32 in the low nibbles, the next 32 in the high ones */
static void
llm_block_q4_k(const uint8_t *b, float *y)
{
    float           d, dmin, d1, m1, d2, m2;
    uint8_t         sc, m;
    uint16_t        h;
    const uint8_t  *scales, *q;

    memcpy(&h, b, 2);
    d = llm_fp16_to_fp32(h);
    memcpy(&h, b + 2, 2);
    dmin = llm_fp16_to_fp32(h);
    scales = b + 4;
    q = b + 16;

    for (int j = 0; j < LLM_QK_K / 64; j++) {
        llm_scale_min_k4(2 * j, scales, &sc, &m);
        d1 = d * sc;
        m1 = dmin * m;
        llm_scale_min_k4(2 * j + 1, scales, &sc, &m);
        d2 = d * sc;
        m2 = dmin * m;

        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (q[l] & 0x0f) - m1;
            y[l + 32] = d2 * (q[l] >> 4) - m2;
        }

        q += 32;
        y += 64;
    }
}


/* b: d, dmin, scales[12], qh[32], qs[128]; bit 2j of qh[l] is the fifth
 * bit of low-nibble element l of pair j, bit 2j+1 of the high one */
static void
llm_block_q5_k(const uint8_t *b, float *y)
{
    float           d, dmin, d1, m1, d2, m2;
    uint8_t         sc, m, u1, u2;
    uint16_t        h;
    const uint8_t  *scales, *qh, *q;

    memcpy(&h, b, 2);
    d = llm_fp16_to_fp32(h);
    memcpy(&h, b + 2, 2);
    dmin = llm_fp16_to_fp32(h);
    scales = b + 4;
    qh = b + 16;
    q = b + 48;
    u1 = 1;
    u2 = 2;

    for (int j = 0; j < LLM_QK_K / 64; j++) {
        llm_scale_min_k4(2 * j, scales, &sc, &m);
        d1 = d * sc;
        m1 = dmin * m;
        llm_scale_min_k4(2 * j + 1, scales, &sc, &m);
        d2 = d * sc;
        m2 = dmin * m;

        for (int l = 0; l < 32; l++) {
            y[l] = d1 * ((q[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }

        q += 32;
        y += 64;
        u1 <<= 2;
        u2 <<= 2;
    }
}


/* b: ql[128], qh[64], scales[16], d; each half of 128 elements uses 64
 * bytes of ql, 32 of qh and 8 scales */
static void
llm_block_q6_k(const uint8_t *b, float *y)
{
    int             q1, q2, q3, q4, is;
    float           d;
    uint16_t        h;
    const int8_t   *sc;
    const uint8_t  *ql, *qh;

    ql = b;
    qh = b + 128;
    sc = (const int8_t *) (b + 192);
    memcpy(&h, b + 208, 2);
    d = llm_fp16_to_fp32(h);

    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 32; l++) {
            is = l / 16;
            q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
            q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;

            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }

        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}


/*
 * llm_matmul(): the input is prepared once (rounded to the weights'
 * activation format), then slices of rows go to the thread pool, where
 * the kernels multiply them by every token, tiles of rows by tokens at
 * a time (llm_cpu_avx2.c).  A token's result is computed by the same
 * operations in the same order whatever the number of tokens and the
 * tile it falls in: the scheduler's batching must not change what a
 * request generates (the same seed gives the same tokens under any
 * load), which t/unit/test_matmul.c and t/unit/test_batch.c check bit
 * for bit.
 */

#define LLM_MATMUL_TASK_MACS  (1 << 16)  /* the least multiply-adds of a
                                          * task: a few microseconds, so
                                          * that a small model's matmuls
                                          * do not wake the pool */


typedef struct {
    llm_gemm_pt   gemm;
    llm_gemm_t    g;        /* all rows; tasks take slices */
    int64_t       rows;     /* per task */
} llm_matmul_job_t;


static int llm_cpu_detect(void);
static void llm_matmul_init(void);
static void llm_matmul_run(const llm_cpu_kernels_t *k, llm_gemm_pt gemm,
    size_t stride, float *out, const float *x, int64_t n_tok, const void *w,
    uint32_t type, int64_t n_rows, int64_t n_cols);
static void llm_matmul_task(void *arg, int64_t task, int thread);
static int llm_matmul_grow(size_t size);
static void llm_matmul_pair_q8(llm_q8_block_t *x, int64_t nb);
static void llm_matmul_slow(float *out, const float *x, int64_t n_tok,
    const void *w, uint32_t type, int64_t n_rows, int64_t n_cols);


/* NULL: not built for this architecture */
static const llm_cpu_kernels_t  *llm_cpu_levels[LLM_CPU_NLEVELS] = {
    &llm_cpu_scalar,
#if defined(__x86_64__)
    &llm_cpu_avx2,
#endif
};

static pthread_once_t            llm_matmul_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t           llm_matmul_lock = PTHREAD_MUTEX_INITIALIZER;
static int                       llm_cpu_best;
static int                       llm_cpu_level;
static const llm_cpu_kernels_t  *llm_cpu;

/* the prepared input, under llm_matmul_lock */
static void                     *llm_matmul_buf;
static size_t                    llm_matmul_size;


static void
llm_matmul_init(void)
{
    const char  *env;

    llm_quant_init();
    llm_cpu_best = llm_cpu_detect();

    while (llm_cpu_levels[llm_cpu_best] == NULL) {
        llm_cpu_best--;
    }

    env = getenv("LLM_CPU");
    if (env != NULL && *env != '\0') {
        for (int i = 0; i < llm_cpu_best; i++) {
            if (strcmp(env, llm_quant_level_name(i)) == 0) {
                llm_cpu_best = i;
                break;
            }
        }
    }

    llm_cpu_level = llm_cpu_best;
    llm_cpu = llm_cpu_levels[llm_cpu_level];
}


static int
llm_cpu_detect(void)
{
#if defined(__x86_64__)
    int       f16c;
    unsigned  a, b, c, d;

    __builtin_cpu_init();

    /* clang's __builtin_cpu_supports() does not know "f16c" */
    f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);

    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("fma") && f16c)
    {
        return __builtin_cpu_supports("avx512vnni") ? LLM_CPU_AVX512_VNNI
                                                    : LLM_CPU_AVX512;
    }

    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && f16c)
    {
        return LLM_CPU_AVX2;
    }
#endif

    return LLM_CPU_SCALAR;
}


int
llm_quant_best_level(void)
{
    pthread_once(&llm_matmul_once, llm_matmul_init);
    return llm_cpu_best;
}


int
llm_quant_level(void)
{
    pthread_once(&llm_matmul_once, llm_matmul_init);
    return llm_cpu_level;
}


int
llm_quant_force(int level)
{
    pthread_once(&llm_matmul_once, llm_matmul_init);

    if (level < 0 || level > llm_cpu_best) {
        return LLM_ERR;
    }

    pthread_mutex_lock(&llm_matmul_lock);
    llm_cpu_level = level;
    llm_cpu = llm_cpu_levels[level];
    pthread_mutex_unlock(&llm_matmul_lock);

    return LLM_OK;
}


const char *
llm_quant_level_name(int level)
{
    static const char  *names[LLM_CPU_NLEVELS] = {
        "scalar", "avx2", "avx512", "avx512_vnni"
    };

    return level >= 0 && level < LLM_CPU_NLEVELS ? names[level] : "?";
}


/* the bytes of prepared input per token: f32 is the widest format */
int
llm_matmul_reserve(int64_t n_tok, int64_t n_cols, llm_err_t *err)
{
    int     rc;
    size_t  size;

    pthread_once(&llm_matmul_once, llm_matmul_init);

    if (n_tok < 0 || n_cols < 0
        || llm_mul_size((size_t) n_tok, (size_t) n_cols, &size) != 0
        || llm_mul_size(size, sizeof(float), &size) != 0)
    {
        return llm_err_set(err, LLM_EINVAL, "matmul scratch of %lld x %lld "
                           "is too large", (long long) n_tok,
                           (long long) n_cols);
    }

    pthread_mutex_lock(&llm_matmul_lock);
    rc = llm_matmul_grow(size);
    pthread_mutex_unlock(&llm_matmul_lock);

    if (rc != LLM_OK) {
        return llm_err_set(err, LLM_ENOMEM, "no memory for a matmul "
                           "scratch of %zu bytes", size);
    }

    return LLM_OK;
}


/* under the lock */
static int
llm_matmul_grow(size_t size)
{
    void  *p;

    if (size <= llm_matmul_size) {
        return LLM_OK;
    }

    size = (size + 4095) & ~(size_t) 4095;

    if (posix_memalign(&p, 64, size) != 0) {
        return LLM_ERR;
    }

    free(llm_matmul_buf);
    llm_matmul_buf = p;
    llm_matmul_size = size;

    return LLM_OK;
}


void
llm_matmul(float *out, const float *x, int64_t n_tok, const void *w,
    uint32_t type, int64_t n_rows, int64_t n_cols)
{
    size_t                    stride;
    int64_t                   chunk, n;
    llm_gemm_pt               gemm;
    const llm_cpu_kernels_t  *k;

    if (n_tok <= 0 || n_rows <= 0) {
        return;
    }

    if (n_cols <= 0) {
        memset(out, 0, (size_t) (n_tok * n_rows) * sizeof(float));
        return;
    }

    pthread_once(&llm_matmul_once, llm_matmul_init);
    pthread_mutex_lock(&llm_matmul_lock);

    k = llm_cpu;

    /* stride: the bytes of a token's prepared input, 0 for the f32
     * input as it is */
    switch (type) {
    case LLM_TYPE_F32:
        gemm = k->f32;
        stride = 0;
        break;
    case LLM_TYPE_F16:
        gemm = k->f16;
        stride = (size_t) n_cols * sizeof(float);
        break;
    case LLM_TYPE_BF16:
        gemm = k->bf16;
        stride = (size_t) n_cols * sizeof(float);
        break;
    case LLM_TYPE_Q8_0:
        gemm = k->q8_0;
        stride = (size_t) (n_cols / LLM_QK) * sizeof(llm_q8_block_t);
        break;
    case LLM_TYPE_Q4_0:
        gemm = k->q4_0;
        stride = (size_t) (n_cols / LLM_QK) * sizeof(llm_q8_block_t);
        break;
    case LLM_TYPE_Q4_K:
        gemm = k->q4_k;
        stride = (size_t) (n_cols / LLM_QK_K) * sizeof(llm_q8k_block_t);
        break;
    case LLM_TYPE_Q5_K:
        gemm = k->q5_k;
        stride = (size_t) (n_cols / LLM_QK_K) * sizeof(llm_q8k_block_t);
        break;
    case LLM_TYPE_Q6_K:
        gemm = k->q6_k;
        stride = (size_t) (n_cols / LLM_QK_K) * sizeof(llm_q8k_block_t);
        break;
    default:
        pthread_mutex_unlock(&llm_matmul_lock);
        memset(out, 0, (size_t) (n_tok * n_rows) * sizeof(float));
        return;
    }

    /*
     * Past the reserved scratch and with no memory to grow it, as many
     * tokens at a time as it holds: the same arithmetic per token.
     */
    chunk = n_tok;

    if (stride != 0 && llm_matmul_grow(stride * (size_t) n_tok) != LLM_OK) {
        if (llm_matmul_grow(stride) != LLM_OK) {
            pthread_mutex_unlock(&llm_matmul_lock);
            llm_matmul_slow(out, x, n_tok, w, type, n_rows, n_cols);
            return;
        }

        chunk = (int64_t) (llm_matmul_size / stride);
    }

    for (int64_t t = 0; t < n_tok; t += chunk) {
        n = n_tok - t < chunk ? n_tok - t : chunk;
        llm_matmul_run(k, gemm, stride, out + t * n_rows, x + t * n_cols, n,
                       w, type, n_rows, n_cols);
    }

    pthread_mutex_unlock(&llm_matmul_lock);
}


/* under the lock: n_tok tokens whose prepared input fits the scratch */
static void
llm_matmul_run(const llm_cpu_kernels_t *k, llm_gemm_pt gemm, size_t stride,
    float *out, const float *x, int64_t n_tok, const void *w, uint32_t type,
    int64_t n_rows, int64_t n_cols)
{
    int               n_threads;
    int64_t           rows, n_tasks, per_task;
    uint8_t          *buf;
    llm_matmul_job_t  job;

    if (stride == 0) {
        buf = (uint8_t *) x;
        stride = (size_t) n_cols * sizeof(float);

    } else {
        buf = llm_matmul_buf;

        for (int64_t t = 0; t < n_tok; t++) {
            const float  *xt = x + t * n_cols;
            uint8_t      *at = buf + (size_t) t * stride;

            switch (type) {
            case LLM_TYPE_F16:
            case LLM_TYPE_BF16:
                (void) llm_quant_round_act(type, xt, (float *) at, n_cols);
                break;
            case LLM_TYPE_Q8_0:
            case LLM_TYPE_Q4_0:
                k->quant_q8(xt, (llm_q8_block_t *) at, n_cols);
                if (k->q8_pairs) {
                    llm_matmul_pair_q8((llm_q8_block_t *) at,
                                       n_cols / LLM_QK);
                }
                break;
            default:
                k->quant_q8k(xt, (llm_q8k_block_t *) at, n_cols);
                break;
            }
        }
    }

    job.gemm = gemm;
    job.g.out = out;
    job.g.ld = n_rows;
    job.g.w = w;
    job.g.row_bytes = llm_ggml_row_size(type, n_cols);
    job.g.n_rows = n_rows;
    job.g.a = buf;
    job.g.a_stride = stride;
    job.g.n_tok = n_tok;
    job.g.n_cols = n_cols;

    /*
     * Slices of rows: many per thread so that a thread that falls behind
     * (a neighbour on its core) is made up for, of at least 32 KB of
     * weights and LLM_MATMUL_TASK_MACS so that a task costs far more
     * than claiming it (a matmul smaller than two tasks runs on the
     * caller alone); for many tokens, small enough that a slice stays
     * in the L2 cache while every token passes over it.  Multiples of 8
     * rows suit the kernels' row tiles.
     */
    n_threads = llm_threads_count();
    per_task = (n_rows + 16 * n_threads - 1) / (16 * n_threads);
    rows = (int64_t) ((32 * 1024) / job.g.row_bytes);
    if (per_task < rows) {
        per_task = rows;
    }

    rows = (LLM_MATMUL_TASK_MACS + n_cols * n_tok - 1) / (n_cols * n_tok);
    if (per_task < rows) {
        per_task = rows;
    }

    if (n_tok > 4) {
        rows = (int64_t) ((192 * 1024) / job.g.row_bytes);
        if (per_task > rows) {
            per_task = rows;
        }
    }

    per_task = (per_task + 7) & ~(int64_t) 7;
    n_tasks = (n_rows + per_task - 1) / per_task;
    job.rows = per_task;

    llm_threads_run(llm_matmul_task, &job, n_tasks);
}


static void
llm_matmul_task(void *arg, int64_t task, int thread)
{
    int64_t            r0;
    llm_gemm_t         g;
    llm_matmul_job_t  *job;

    (void) thread;

    job = arg;
    g = job->g;
    r0 = task * job->rows;

    g.out += r0;
    g.w += (size_t) r0 * g.row_bytes;
    g.n_rows = job->rows;
    if (g.n_rows > job->g.n_rows - r0) {
        g.n_rows = job->g.n_rows - r0;
    }

    job->gemm(&g);
}


/* block A's q[16..31] for block B's q[0..15], in each pair */
static void
llm_matmul_pair_q8(llm_q8_block_t *x, int64_t nb)
{
    int8_t  tmp[LLM_QK / 2];

    for (int64_t b = 0; b + 1 < nb; b += 2) {
        memcpy(tmp, x[b].q + LLM_QK / 2, LLM_QK / 2);
        memcpy(x[b].q + LLM_QK / 2, x[b + 1].q, LLM_QK / 2);
        memcpy(x[b + 1].q, tmp, LLM_QK / 2);
    }
}


/* with no memory for the prepared input: the reference dot products on
 * the input as it is */
static void
llm_matmul_slow(float *out, const float *x, int64_t n_tok, const void *w,
    uint32_t type, int64_t n_rows, int64_t n_cols)
{
    size_t       row_bytes;
    llm_dot_pt   dot;

    dot = llm_quant_dot(type);
    row_bytes = llm_ggml_row_size(type, n_cols);

    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < n_rows; r++) {
            out[t * n_rows + r] = dot((const uint8_t *) w + r * row_bytes,
                                      x + t * n_cols, n_cols);
        }
    }
}
