/*
 * Copyright (C) ngx_llm developers
 *
 * llm_matmul() kernels for x86-64 CPUs with AVX2, FMA and F16C, built
 * for that target whatever the compiler's default, and only called
 * when the CPU has them (llm_quant.c asks __builtin_cpu_supports).
 *
 * Each kernel walks tiles of NR weight rows by NT tokens: a weight
 * block is loaded and unpacked once per tile and used for NT tokens,
 * which is what makes many tokens at once (a prompt, a batch) cost
 * less than one at a time; one token uses tiles of 2 or 4 rows.  A
 * token's outputs are computed the same way in every tile (see
 * LLM_TILES), so they do not depend on its batch.  The 8-bit
 * products go through vpmaddubsw (unsigned by signed bytes, pairs
 * summed to 16 bits), then vpmaddwd to 32 bits (by ones, or by the
 * k-quants' integer sub-block scales, which scales for free), then a
 * float multiply by the blocks' scales.  Q8_0's signed weights use the
 * usual sign trick: |w| times x with w's sign moved onto x.
 */

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "llm_cpu.h"
#include "llm_gguf.h"


#if defined(__clang__)
#pragma clang attribute push (__attribute__((target("avx2,fma,f16c"))), \
                              apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif


#define LLM_INLINE  static inline __attribute__((always_inline))

/*
 * Bytes ahead of each weight row that the one-token loops prefetch.
 * The weights stream from memory through 4 KB pages of a file mapping,
 * at whose boundaries the hardware prefetchers stop; software
 * prefetches go on across them.
 */
#define LLM_PF_AHEAD  2048
#define LLM_UNROLL  _Pragma("GCC unroll 8")


static void llm_avx2_f32(const llm_gemm_t *g);
static void llm_avx2_f16(const llm_gemm_t *g);
static void llm_avx2_bf16(const llm_gemm_t *g);
static void llm_avx2_q8_0(const llm_gemm_t *g);
static void llm_avx2_q4_0(const llm_gemm_t *g);
static void llm_avx2_q4_k(const llm_gemm_t *g);
static void llm_avx2_q5_k(const llm_gemm_t *g);
static void llm_avx2_q6_k(const llm_gemm_t *g);
static void llm_avx2_quant_q8(const float *x, llm_q8_block_t *y, int64_t n);
static void llm_avx2_quant_q8k(const float *x, llm_q8k_block_t *y,
    int64_t n);


const llm_cpu_kernels_t  llm_cpu_avx2 = {
    "avx2",
    llm_avx2_f32,
    llm_avx2_f16,
    llm_avx2_bf16,
    llm_avx2_q8_0,
    llm_avx2_q4_0,
    llm_avx2_q4_k,
    llm_avx2_q5_k,
    llm_avx2_q6_k,
    llm_avx2_quant_q8,
    llm_avx2_quant_q8k,
    1
};


LLM_INLINE float
llm_hsum(__m256 v)
{
    __m128  s;

    s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));

    return _mm_cvtss_f32(s);
}


LLM_INLINE __m256
llm_half8(const uint8_t *p)
{
    return _mm256_set1_ps(llm_cpu_half(p));
}


/* 32 bytes of 4-bit values: low nibbles of 16 bytes, then high ones */
LLM_INLINE __m256i
llm_nibbles16(const uint8_t *p)
{
    __m128i  q;

    q = _mm_loadu_si128((const __m128i *) p);

    return _mm256_and_si256(_mm256_set1_epi8(0x0f),
                            _mm256_set_m128i(_mm_srli_epi16(q, 4), q));
}


/*
 * The tile loops every kernel shares.  TILE(r, t, NR, NT) must compute
 * out rows r..r+NR-1 for tokens t..t+NT-1; it is expanded with constant
 * NR and NT so that the compiler keeps the accumulators in registers.
 * Tokens go TB (at most LLM_NT_MAX) at a time with BR rows a tile, the
 * last 2..TB-1 tokens together the same way; a token alone (decoding)
 * takes RB rows a tile.  Each output is computed by the same
 * instructions in the same order whatever the tile it falls in, so
 * that a token's result does not depend on the others in its batch
 * (t/unit/test_matmul.c checks it).
 */
#define LLM_ROWS(g, TILE, t, RB, NT)                                        \
    do {                                                                    \
        int64_t  r_;                                                        \
                                                                            \
        for (r_ = 0; r_ + (RB) <= (g)->n_rows; r_ += (RB)) {                \
            TILE(g, r_, t, RB, NT);                                         \
        }                                                                   \
        for ( ; r_ < (g)->n_rows; r_++) {                                   \
            TILE(g, r_, t, 1, NT);                                          \
        }                                                                   \
    } while (0)

#define LLM_TILES(g, TILE, RB, BR, TB)                                      \
    do {                                                                    \
        int64_t  t_;                                                        \
                                                                            \
        for (t_ = 0; t_ + (TB) <= (g)->n_tok; t_ += (TB)) {                 \
            LLM_ROWS(g, TILE, t_, BR, TB);                                  \
        }                                                                   \
                                                                            \
        switch ((g)->n_tok - t_) {                                          \
        case 1:                                                             \
            LLM_ROWS(g, TILE, t_, RB, 1);                                   \
            break;                                                          \
        LLM_TCASE(g, TILE, BR, TB, 2)                                       \
        LLM_TCASE(g, TILE, BR, TB, 3)                                       \
        LLM_TCASE(g, TILE, BR, TB, 4)                                       \
        LLM_TCASE(g, TILE, BR, TB, 5)                                       \
        LLM_TCASE(g, TILE, BR, TB, 6)                                       \
        LLM_TCASE(g, TILE, BR, TB, 7)                                       \
        default:                                                            \
            break;                                                          \
        }                                                                   \
    } while (0)

/* the last N tokens, N < TB: dead code for the larger N */
#define LLM_TCASE(g, TILE, BR, TB, N)                                       \
        case N:                                                             \
            if ((N) < (TB)) {                                               \
                LLM_ROWS(g, TILE, t_, BR, N);                               \
            }                                                               \
            break;

#define LLM_NT_MAX  8


LLM_INLINE void
llm_store_tile(const llm_gemm_t *g, int64_t r, int64_t t, int nr, int nt,
    __m256 acc[4][LLM_NT_MAX])
{
    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        LLM_UNROLL
        for (int i = 0; i < nr; i++) {
            g->out[(t + j) * g->ld + r + i] = llm_hsum(acc[i][j]);
        }
    }
}


/* ---- f32, f16, bf16: float products, 8 columns at a time ---- */

/* the row's 8 weights at column c as floats */
LLM_INLINE __m256
llm_load_f32(const uint8_t *w, int64_t c)
{
    return _mm256_loadu_ps((const float *) w + c);
}


LLM_INLINE __m256
llm_load_f16(const uint8_t *w, int64_t c)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (w + 2 * c)));
}


LLM_INLINE __m256
llm_load_bf16(const uint8_t *w, int64_t c)
{
    __m128i  h;

    h = _mm_loadu_si128((const __m128i *) (w + 2 * c));

    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h),
                                                 16));
}


/*
 * The last n_cols % 8 columns: the weights through a zeroed copy (F16
 * and BF16 have no masked 16-bit load), the inputs by a masked load.
 * The lanes past the end multiply 0 by 0, which leaves every
 * accumulator as it was, so a row's sum is the same in any tile.
 */
LLM_INLINE __m256
llm_tail_f32(const uint8_t *w, int64_t c, int n)
{
    float  tmp[8] = { 0 };

    memcpy(tmp, (const float *) w + c, (size_t) n * sizeof(float));

    return _mm256_loadu_ps(tmp);
}


LLM_INLINE __m256
llm_tail_f16(const uint8_t *w, int64_t c, int n)
{
    uint16_t  tmp[8] = { 0 };

    memcpy(tmp, w + 2 * c, (size_t) n * 2);

    return llm_load_f16((const uint8_t *) tmp, 0);
}


LLM_INLINE __m256
llm_tail_bf16(const uint8_t *w, int64_t c, int n)
{
    uint16_t  tmp[8] = { 0 };

    memcpy(tmp, w + 2 * c, (size_t) n * 2);

    return llm_load_bf16((const uint8_t *) tmp, 0);
}


#define LLM_FLOAT_TILE(NAME, LOAD, TAIL)                                    \
LLM_INLINE void                                                             \
NAME(const llm_gemm_t *g, int64_t r, int64_t t, int nr, int nt)             \
{                                                                           \
    int64_t         c;                                                      \
    __m256          acc[4][LLM_NT_MAX], w[4];                               \
    __m256i         mask;                                                   \
    const uint8_t  *row[4];                                                 \
    const float    *x[LLM_NT_MAX];                                          \
                                                                            \
    LLM_UNROLL                                                              \
    for (int i = 0; i < nr; i++) {                                          \
        row[i] = g->w + (size_t) (r + i) * g->row_bytes;                    \
        LLM_UNROLL                                                          \
        for (int j = 0; j < nt; j++) {                                      \
            acc[i][j] = _mm256_setzero_ps();                                \
        }                                                                   \
    }                                                                       \
                                                                            \
    LLM_UNROLL                                                              \
    for (int j = 0; j < nt; j++) {                                          \
        x[j] = (const float *) (g->a + (size_t) (t + j) * g->a_stride);     \
    }                                                                       \
                                                                            \
    for (c = 0; c + 8 <= g->n_cols; c += 8) {                               \
        LLM_UNROLL                                                          \
        for (int i = 0; i < nr; i++) {                                      \
            w[i] = LOAD(row[i], c);                                         \
        }                                                                   \
        LLM_UNROLL                                                          \
        for (int j = 0; j < nt; j++) {                                      \
            __m256  a = _mm256_loadu_ps(x[j] + c);                          \
                                                                            \
            LLM_UNROLL                                                      \
            for (int i = 0; i < nr; i++) {                                  \
                acc[i][j] = _mm256_fmadd_ps(w[i], a, acc[i][j]);            \
            }                                                               \
        }                                                                   \
    }                                                                       \
                                                                            \
    if (c < g->n_cols) {                                                    \
        int  n = (int) (g->n_cols - c);                                     \
                                                                            \
        mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),                     \
                                  _mm256_setr_epi32(0, 1, 2, 3,             \
                                                    4, 5, 6, 7));           \
        LLM_UNROLL                                                          \
        for (int i = 0; i < nr; i++) {                                      \
            w[i] = TAIL(row[i], c, n);                                      \
        }                                                                   \
        LLM_UNROLL                                                          \
        for (int j = 0; j < nt; j++) {                                      \
            __m256  a = _mm256_maskload_ps(x[j] + c, mask);                 \
                                                                            \
            LLM_UNROLL                                                      \
            for (int i = 0; i < nr; i++) {                                  \
                acc[i][j] = _mm256_fmadd_ps(w[i], a, acc[i][j]);            \
            }                                                               \
        }                                                                   \
    }                                                                       \
                                                                            \
    llm_store_tile(g, r, t, nr, nt, acc);                                   \
}

LLM_FLOAT_TILE(llm_tile_f32, llm_load_f32, llm_tail_f32)
LLM_FLOAT_TILE(llm_tile_f16, llm_load_f16, llm_tail_f16)
LLM_FLOAT_TILE(llm_tile_bf16, llm_load_bf16, llm_tail_bf16)


static void
llm_avx2_f32(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_f32, 4, 2, 3);
}


static void
llm_avx2_f16(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_f16, 4, 2, 3);
}


static void
llm_avx2_bf16(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_bf16, 4, 2, 3);
}


/* ---- Q8_0 and Q4_0 against llm_q8_block_t ---- */

/*
 * Q8_0: the sign trick, |w| times x with w's sign moved onto x, since
 * vpmaddubsw wants one side unsigned.  Two blocks A, B at a time, one
 * per 128-bit half as for Q4_0 below (the input's pairs are swapped
 * the same way): [A 0..15 | B 0..15] and [A 16..31 | B 16..31] against
 * the two input blocks, each product to 32 bits (a sum of two would
 * not fit 16), then one conversion and one FMA for both blocks.
 */
LLM_INLINE void
llm_tile_q8_0(const llm_gemm_t *g, int64_t r, int64_t t, int nr, int nt)
{
    int64_t                nb, b;
    __m256                 acc[4][LLM_NT_MAX], dw[4];
    __m256i                lo[4], hi[4], ones;
    const uint8_t         *row[4];
    const llm_q8_block_t  *x[LLM_NT_MAX];

    ones = _mm256_set1_epi16(1);
    nb = g->n_cols / LLM_QK;

    LLM_UNROLL
    for (int i = 0; i < nr; i++) {
        row[i] = g->w + (size_t) (r + i) * g->row_bytes;
        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            acc[i][j] = _mm256_setzero_ps();
        }
    }

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        x[j] = (const llm_q8_block_t *) (g->a + (size_t) (t + j)
                                                * g->a_stride);
    }

    for (b = 0; b + 1 < nb; b += 2) {
        LLM_UNROLL
        for (int i = 0; i < nr; i++) {
            const uint8_t  *p = row[i] + 34 * b;

            if (nt == 1) {
                _mm_prefetch((const char *) p + LLM_PF_AHEAD, _MM_HINT_T0);
                _mm_prefetch((const char *) p + LLM_PF_AHEAD + 64,
                             _MM_HINT_T0);
            }

            lo[i] = _mm256_loadu2_m128i((const __m128i *) (p + 36),
                                        (const __m128i *) (p + 2));
            hi[i] = _mm256_loadu2_m128i((const __m128i *) (p + 52),
                                        (const __m128i *) (p + 18));
            dw[i] = _mm256_set_m128(_mm_set1_ps(llm_cpu_half(p + 34)),
                                    _mm_set1_ps(llm_cpu_half(p)));
        }

        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            const llm_q8_block_t  *xa = &x[j][b], *xb = &x[j][b + 1];
            __m256i                a0, a1;
            __m256                 dx;

            a0 = _mm256_loadu_si256((const __m256i *) xa->q);
            a1 = _mm256_loadu_si256((const __m256i *) xb->q);
            dx = _mm256_set_m128(_mm_set1_ps(xb->d), _mm_set1_ps(xa->d));

            LLM_UNROLL
            for (int i = 0; i < nr; i++) {
                __m256i  p0, p1;

                p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(lo[i], lo[i]),
                                          _mm256_sign_epi8(a0, lo[i]));
                p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(hi[i], hi[i]),
                                          _mm256_sign_epi8(a1, hi[i]));
                p0 = _mm256_add_epi32(_mm256_madd_epi16(p0, ones),
                                      _mm256_madd_epi16(p1, ones));
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0),
                                            _mm256_mul_ps(dw[i], dx),
                                            acc[i][j]);
            }
        }
    }

    /* an odd last block, not swapped */
    if (b < nb) {
        LLM_UNROLL
        for (int i = 0; i < nr; i++) {
            const uint8_t  *p = row[i] + 34 * b;

            lo[i] = _mm256_loadu_si256((const __m256i *) (p + 2));
            dw[i] = llm_half8(p);
        }

        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            __m256i  a = _mm256_loadu_si256((const __m256i *) x[j][b].q);
            __m256   dx = _mm256_broadcast_ss(&x[j][b].d);

            LLM_UNROLL
            for (int i = 0; i < nr; i++) {
                __m256i  p;

                p = _mm256_maddubs_epi16(_mm256_sign_epi8(lo[i], lo[i]),
                                         _mm256_sign_epi8(a, lo[i]));
                p = _mm256_madd_epi16(p, ones);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_mul_ps(dw[i], dx),
                                            acc[i][j]);
            }
        }
    }

    llm_store_tile(g, r, t, nr, nt, acc);
}


/*
 * Q4_0: the nibbles are unsigned, so vpmaddubsw takes them as they are;
 * the offset of 8 comes off as 8 times the block's sum of x, which is
 * the 32-bit lanes' total when each lane loses its share of it.
 *
 * Two blocks A, B at a time, one per 128-bit half: their 16 bytes of
 * nibbles give [A 0..15 | B 0..15] (low nibbles) and [A 16..31 | B
 * 16..31] (high), which the input matches because llm_matmul swapped
 * the middle halves of each pair of input blocks (q8_pairs): block
 * A's q holds x[A 0..15], x[B 0..15], block B's the rest.  Both
 * products fit 16 bits, so they add before the one vpmaddwd, and one
 * conversion and FMA serve both blocks: about half the instructions of
 * a block at a time, in the one-token loop that decoding is.
 */
LLM_INLINE void
llm_tile_q4_0(const llm_gemm_t *g, int64_t r, int64_t t, int nr, int nt)
{
    int64_t                nb, b;
    __m256                 acc[4][LLM_NT_MAX], dw[4];
    __m256i                lo[4], hi[4], ones, m4;
    const uint8_t         *row[4];
    const llm_q8_block_t  *x[LLM_NT_MAX];

    ones = _mm256_set1_epi16(1);
    m4 = _mm256_set1_epi8(0x0f);
    nb = g->n_cols / LLM_QK;

    LLM_UNROLL
    for (int i = 0; i < nr; i++) {
        row[i] = g->w + (size_t) (r + i) * g->row_bytes;
        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            acc[i][j] = _mm256_setzero_ps();
        }
    }

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        x[j] = (const llm_q8_block_t *) (g->a + (size_t) (t + j)
                                                * g->a_stride);
    }

    for (b = 0; b + 1 < nb; b += 2) {
        LLM_UNROLL
        for (int i = 0; i < nr; i++) {
            const uint8_t  *p = row[i] + 18 * b;
            __m256i         q;

            if (nt == 1) {
                _mm_prefetch((const char *) p + LLM_PF_AHEAD, _MM_HINT_T0);
            }

            q = _mm256_loadu2_m128i((const __m128i *) (p + 20),
                                    (const __m128i *) (p + 2));
            lo[i] = _mm256_and_si256(q, m4);
            hi[i] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            dw[i] = _mm256_set_m128(_mm_set1_ps(llm_cpu_half(p + 18)),
                                    _mm_set1_ps(llm_cpu_half(p)));
        }

        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            const llm_q8_block_t  *xa = &x[j][b], *xb = &x[j][b + 1];
            __m256i                a0, a1, s;
            __m256                 dx;

            a0 = _mm256_loadu_si256((const __m256i *) xa->q);
            a1 = _mm256_loadu_si256((const __m256i *) xb->q);
            s = _mm256_set_m128i(_mm_set1_epi32(2 * xb->sum),
                                 _mm_set1_epi32(2 * xa->sum));
            dx = _mm256_set_m128(_mm_set1_ps(xb->d), _mm_set1_ps(xa->d));

            LLM_UNROLL
            for (int i = 0; i < nr; i++) {
                __m256i  p;

                p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[i], a0),
                                     _mm256_maddubs_epi16(hi[i], a1));
                p = _mm256_sub_epi32(_mm256_madd_epi16(p, ones), s);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_mul_ps(dw[i], dx),
                                            acc[i][j]);
            }
        }
    }

    /* an odd last block, not swapped */
    if (b < nb) {
        LLM_UNROLL
        for (int i = 0; i < nr; i++) {
            const uint8_t  *p = row[i] + 18 * b;

            lo[i] = llm_nibbles16(p + 2);
            dw[i] = llm_half8(p);
        }

        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            __m256i  a = _mm256_loadu_si256((const __m256i *) x[j][b].q);
            __m256i  s = _mm256_set1_epi32(x[j][b].sum);
            __m256   dx = _mm256_broadcast_ss(&x[j][b].d);

            LLM_UNROLL
            for (int i = 0; i < nr; i++) {
                __m256i  p;

                p = _mm256_maddubs_epi16(lo[i], a);
                p = _mm256_sub_epi32(_mm256_madd_epi16(p, ones), s);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_mul_ps(dw[i], dx),
                                            acc[i][j]);
            }
        }
    }

    llm_store_tile(g, r, t, nr, nt, acc);
}


static void
llm_avx2_q8_0(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_q8_0, 2, 1, 8);
}


static void
llm_avx2_q4_0(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_q4_0, 2, 2, 4);
}


/* ---- k-quants against llm_q8k_block_t ---- */

/*
 * One 256-block of Q4_K or Q5_K against NT tokens: the 8 sub-block
 * scales multiply in vpmaddwd, so a block needs one conversion to
 * float per token; the mins multiply the token's sums of 16 (bsums,
 * paired by repeating each min) the same way.
 */
LLM_INLINE void
llm_block_k45(const uint8_t *blk, const uint8_t *qh, const uint8_t *qs,
    const llm_q8k_block_t **xb, int nt, __m256 *acc)
{
    __m256i   isum[LLM_NT_MAX], msum, mins, s16;
    uint32_t  a, b, c;
    uint64_t  sc, mn;
    __m256    d, dmin;

    /* llm_cpu_scales_k4 four bytes at a time: s[0..3] and m[0..3] are
     * the low 6 bits of words a and b; s[4..7] and m[4..7] the nibbles
     * of word c below the top 2 bits of a and b */
    memcpy(&a, blk + 4, 4);
    memcpy(&b, blk + 8, 4);
    memcpy(&c, blk + 12, 4);
    sc = (a & 0x3f3f3f3f)
         | (uint64_t) ((c & 0x0f0f0f0f) | ((a >> 2) & 0x30303030)) << 32;
    mn = (b & 0x3f3f3f3f)
         | (uint64_t) (((c >> 4) & 0x0f0f0f0f) | ((b >> 2) & 0x30303030))
           << 32;

    d = llm_half8(blk);
    dmin = llm_half8(blk + 2);

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        isum[j] = _mm256_setzero_si256();
    }

    /* the 8 scales as 16-bit lanes, to spread one by byte shuffles */
    s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(
              _mm_cvtsi64_si128((long long) sc)));

    LLM_UNROLL
    for (int k = 0; k < 4; k++) {
        __m256i  q, lo, hi, sl, sh;

        q = _mm256_loadu_si256((const __m256i *) (qs + 32 * k));
        lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
        hi = _mm256_and_si256(_mm256_srli_epi16(q, 4),
                              _mm256_set1_epi8(0x0f));

        if (qh != NULL) {
            __m256i  h, bl, bh;

            h = _mm256_loadu_si256((const __m256i *) qh);
            bl = _mm256_set1_epi8((char) (1 << (2 * k)));
            bh = _mm256_set1_epi8((char) (2 << (2 * k)));
            lo = _mm256_or_si256(lo, _mm256_and_si256(
                     _mm256_cmpeq_epi8(_mm256_and_si256(h, bl), bl),
                     _mm256_set1_epi8(16)));
            hi = _mm256_or_si256(hi, _mm256_and_si256(
                     _mm256_cmpeq_epi8(_mm256_and_si256(h, bh), bh),
                     _mm256_set1_epi8(16)));
        }

        sl = _mm256_shuffle_epi8(s16, _mm256_set1_epi16(
                                          (short) (0x0100 * (4 * k + 1)
                                                   + 4 * k)));
        sh = _mm256_shuffle_epi8(s16, _mm256_set1_epi16(
                                          (short) (0x0100 * (4 * k + 3)
                                                   + 4 * k + 2)));

        LLM_UNROLL
        for (int j = 0; j < nt; j++) {
            const int8_t  *a = xb[j]->q + 64 * k;
            __m256i        pl, ph;

            pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(
                                              (const __m256i *) a));
            ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(
                                              (const __m256i *) (a + 32)));
            isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(
                                           _mm256_madd_epi16(pl, sl),
                                           _mm256_madd_epi16(ph, sh)));
        }
    }

    /* (m0, m0, m1, m1, ...) against bsums (16 of 16 elements) */
    mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
               _mm_cvtsi64_si128((long long) mn),
               _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        __m256  dx = _mm256_broadcast_ss(&xb[j]->d);

        msum = _mm256_madd_epi16(mins, _mm256_loadu_si256(
                                           (const __m256i *) xb[j]->bsums));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]),
                                 _mm256_mul_ps(d, dx), acc[j]);
        acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum),
                                  _mm256_mul_ps(dmin, dx), acc[j]);
    }
}


/*
 * One 256-block of Q6_K: values q in 0..63 stand for q - 32; vpmaddubsw
 * takes q unsigned and the 32 comes off as 32 times the scaled bsums.
 * Each 32 elements span two signed 16-element scales, one per half of
 * the register.
 */
LLM_INLINE void
llm_block_q6_k(const uint8_t *blk, const llm_q8k_block_t **xb, int nt,
    __m256 *acc)
{
    __m256i        isum[LLM_NT_MAX], sc16, hs, m4, m2;
    __m256         d;
    const int8_t  *sc;

    sc = (const int8_t *) (blk + 192);
    d = llm_half8(blk + 208);
    m4 = _mm256_set1_epi8(0x0f);
    m2 = _mm256_set1_epi8(0x03);

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        isum[j] = _mm256_setzero_si256();
    }

    for (int half = 0; half < 2; half++) {
        const uint8_t  *ql = blk + 64 * half;
        __m256i         l0, l1, h, q[4];

        l0 = _mm256_loadu_si256((const __m256i *) ql);
        l1 = _mm256_loadu_si256((const __m256i *) (ql + 32));
        h = _mm256_loadu_si256((const __m256i *) (blk + 128 + 32 * half));

        /* the high bits go to bits 4-5 of each byte: shifting after
         * the mask moves nothing across bytes, and shifts, which have
         * one pipe, are the cost here */
        q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                   _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
        q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                   _mm256_slli_epi16(_mm256_and_si256(
                       h, _mm256_set1_epi8(0x0c)), 2));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4),
                                                m4),
                   _mm256_and_si256(h, _mm256_set1_epi8(0x30)));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4),
                                                m4),
                   _mm256_srli_epi16(_mm256_and_si256(
                       h, _mm256_set1_epi8((char) 0xc0)), 2));

        /* this half's 8 scales as 16-bit lanes, in both register
         * halves; a byte shuffle then spreads scale 2k over the low
         * half and 2k+1 over the high one, one instruction a group */
        hs = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(
                 _mm_loadl_epi64((const __m128i *) (sc + 8 * half))));

        LLM_UNROLL
        for (int k = 0; k < 4; k++) {
            sc16 = _mm256_shuffle_epi8(hs, _mm256_setr_epi8(
                       4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                       4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                       4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                       4 * k, 4 * k + 1, 4 * k, 4 * k + 1,
                       4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                       4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                       4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,
                       4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3));

            LLM_UNROLL
            for (int j = 0; j < nt; j++) {
                const int8_t  *a = xb[j]->q + 128 * half + 32 * k;
                __m256i        p;

                p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(
                                                   (const __m256i *) a));
                isum[j] = _mm256_add_epi32(isum[j],
                                           _mm256_madd_epi16(p, sc16));
            }
        }
    }

    /* 32 * sum over 16 of sc_i * bsums_i */
    sc16 = _mm256_slli_epi16(_mm256_cvtepi8_epi16(
               _mm_loadu_si128((const __m128i *) sc)), 5);

    LLM_UNROLL
    for (int j = 0; j < nt; j++) {
        __m256i  off;

        off = _mm256_madd_epi16(sc16, _mm256_loadu_si256(
                                          (const __m256i *) xb[j]->bsums));
        acc[j] = _mm256_fmadd_ps(
                     _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[j], off)),
                     _mm256_mul_ps(d, _mm256_broadcast_ss(&xb[j]->d)),
                     acc[j]);
    }
}


/* k-quant tiles are one row by NT tokens: a block's unpacking is
 * already spread over its 256 elements */
#define LLM_KTILE(NAME, BYTES, BLOCK)                                       \
LLM_INLINE void                                                             \
NAME(const llm_gemm_t *g, int64_t r, int64_t t, int nr, int nt)             \
{                                                                           \
    int64_t                 nb;                                             \
    __m256                  acc[4][LLM_NT_MAX];                             \
    const uint8_t          *row;                                            \
    const llm_q8k_block_t  *x[LLM_NT_MAX], *xb[LLM_NT_MAX];                 \
                                                                            \
    nb = g->n_cols / LLM_QK_K;                                              \
                                                                            \
    LLM_UNROLL                                                              \
    for (int j = 0; j < nt; j++) {                                          \
        x[j] = (const llm_q8k_block_t *) (g->a + (size_t) (t + j)           \
                                                 * g->a_stride);            \
    }                                                                       \
                                                                            \
    LLM_UNROLL                                                              \
    for (int i = 0; i < nr; i++) {                                          \
        row = g->w + (size_t) (r + i) * g->row_bytes;                       \
                                                                            \
        LLM_UNROLL                                                          \
        for (int j = 0; j < nt; j++) {                                      \
            acc[i][j] = _mm256_setzero_ps();                                \
        }                                                                   \
                                                                            \
        for (int64_t b = 0; b < nb; b++) {                                  \
            if (nt == 1) {                                                  \
                _mm_prefetch((const char *) row + (BYTES) * b               \
                             + LLM_PF_AHEAD, _MM_HINT_T0);                  \
                _mm_prefetch((const char *) row + (BYTES) * b               \
                             + LLM_PF_AHEAD + 64, _MM_HINT_T0);             \
                _mm_prefetch((const char *) row + (BYTES) * b               \
                             + LLM_PF_AHEAD + 128, _MM_HINT_T0);            \
            }                                                               \
            LLM_UNROLL                                                      \
            for (int j = 0; j < nt; j++) {                                  \
                xb[j] = &x[j][b];                                           \
            }                                                               \
            BLOCK;                                                          \
        }                                                                   \
    }                                                                       \
                                                                            \
    llm_store_tile(g, r, t, nr, nt, acc);                                   \
}

LLM_KTILE(llm_tile_q4_k, 144,
          llm_block_k45(row + 144 * b, NULL, row + 144 * b + 16, xb, nt,
                        acc[i]))
LLM_KTILE(llm_tile_q5_k, 176,
          llm_block_k45(row + 176 * b, row + 176 * b + 16,
                        row + 176 * b + 48, xb, nt, acc[i]))
LLM_KTILE(llm_tile_q6_k, 210,
          llm_block_q6_k(row + 210 * b, xb, nt, acc[i]))


static void
llm_avx2_q4_k(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_q4_k, 2, 2, 4);
}


static void
llm_avx2_q5_k(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_q5_k, 2, 2, 4);
}


static void
llm_avx2_q6_k(const llm_gemm_t *g)
{
    LLM_TILES(g, llm_tile_q6_k, 2, 2, 4);
}


/* ---- quantizing the input: the scalar arithmetic, 8 lanes wide ---- */

/* 32 floats -> 32 bytes of round(x * id), in order */
LLM_INLINE __m256i
llm_round32(const float *x, __m256 id)
{
    __m256i  i0, i1, i2, i3;

    i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), id));
    i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id));
    i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id));
    i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id));

    /* the packs work per 128-bit lane: put the 32-bit groups back */
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);

    return _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5,
                                                             2, 6, 3, 7));
}


LLM_INLINE float
llm_amax(const float *x, int n)
{
    __m256  m, abs;
    __m128  s;

    abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    m = _mm256_setzero_ps();

    for (int i = 0; i < n; i += 8) {
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), abs));
    }

    s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));

    return _mm_cvtss_f32(s);
}


LLM_INLINE int32_t
llm_sum_bytes(__m256i q)
{
    __m256i  s;
    __m128i  h;

    s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                          _mm256_set1_epi16(1));
    h = _mm_add_epi32(_mm256_castsi256_si128(s),
                      _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));

    return _mm_cvtsi128_si32(h);
}


static void
llm_avx2_quant_q8(const float *x, llm_q8_block_t *y, int64_t n)
{
    float    d, id;
    __m256i  q;

    for (int64_t b = 0; b < n / LLM_QK; b++, x += LLM_QK) {
        d = llm_amax(x, LLM_QK) / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;

        q = llm_round32(x, _mm256_set1_ps(id));
        _mm256_storeu_si256((__m256i *) y[b].q, q);
        y[b].d = d;
        y[b].sum = llm_sum_bytes(q);
    }
}


static void
llm_avx2_quant_q8k(const float *x, llm_q8k_block_t *y, int64_t n)
{
    float    d, id;
    __m256   idv;
    __m256i  q, s;

    for (int64_t b = 0; b < n / LLM_QK_K; b++, x += LLM_QK_K) {
        d = llm_amax(x, LLM_QK_K) / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        idv = _mm256_set1_ps(id);

        for (int k = 0; k < 8; k++) {
            q = llm_round32(x + 32 * k, idv);
            _mm256_storeu_si256((__m256i *) (y[b].q + 32 * k), q);

            /* two sums of 16: bytes to 16 bits to 32, then fold */
            s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1),
                                                       q),
                                  _mm256_set1_epi16(1));
            s = _mm256_hadd_epi32(s, s);
            s = _mm256_hadd_epi32(s, s);
            y[b].bsums[2 * k] = (int16_t) _mm256_extract_epi32(s, 0);
            y[b].bsums[2 * k + 1] = (int16_t) _mm256_extract_epi32(s, 4);
        }

        y[b].d = d;
    }
}


#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif /* __x86_64__ */
