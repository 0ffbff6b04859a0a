/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator's warp matrix operations (t/gpu/emu/README.md): the
 * 16x16x16 shape with half inputs and float or half accumulators, the
 * part of nvcuda::wmma the kernels use.
 *
 * On the device a fragment is spread over the warp's lanes in a layout
 * the programming guide leaves unspecified; here every lane holds the
 * whole tile, so that a kernel may only do what the guide allows with
 * one: load, store, fill, multiply, and element-wise operations the same
 * for every element.  Each operation is a warp-wide wait (all 32 lanes,
 * as on the device, or the emulator faults), and the device's
 * requirements are checked: pointers aligned to 32 bytes, leading
 * dimensions a multiple of 16 bytes.  Products are summed in float in
 * k order; tensor cores round differently (README: not modelled).
 */

#ifndef LLM_EMU_MMA_H
#define LLM_EMU_MMA_H

#include <stdint.h>

#include <type_traits>

#include "cuda_fp16.h"


namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};

enum layout_t {
    mem_row_major,
    mem_col_major
};


template <typename Use, int M, int N, int K, typename T,
          typename Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16,
                  "the emulator has the 16x16x16 shape only");

    static constexpr int  num_elements = 256;
    typedef T             element_type;

    T  x[256];                          /* (i, j) at x[i * 16 + j] */
};


static inline void
llm_emu_wmma_wait(void)
{
    unsigned int  n, tid;

    /* a warp of 32 lanes, all of them here, or a fault */
    n = blockDim.x * blockDim.y * blockDim.z;
    tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x
          + threadIdx.x;

    if (tid / 32 * 32 + 32 > n) {
        llm_emu_fault("a wmma operation in a warp of fewer than 32 lanes");
    }

    __syncwarp();
}


static inline void
llm_emu_wmma_check(const void *p, unsigned ldm, size_t elem)
{
    if (((uintptr_t) p & 31) != 0) {
        llm_emu_fault("a wmma load or store of a pointer not aligned to "
                      "32 bytes");
    }

    if ((ldm * elem) % 16 != 0) {
        llm_emu_fault("a wmma leading dimension not a multiple of 16 "
                      "bytes");
    }
}


static inline float llm_emu_wmma_f(float v) { return v; }
static inline float llm_emu_wmma_f(__half v) { return __half2float(v); }

template <typename T> static inline T llm_emu_wmma_to(float v);
template <> inline float llm_emu_wmma_to<float>(float v) { return v; }
template <> inline __half llm_emu_wmma_to<__half>(float v)
{
    return __float2half_rn(v);
}


/* element (i, j) of a tile at p: row-major (i * ldm + j) or not */
template <typename T, typename P>
static inline void
llm_emu_wmma_load(T *x, const P *p, unsigned ldm, bool row)
{
    llm_emu_wmma_wait();
    llm_emu_wmma_check(p, ldm, sizeof(P));

    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 16; j++) {
            x[i * 16 + j] = row ? p[(size_t) i * ldm + j]
                                : p[(size_t) j * ldm + i];
        }
    }

    llm_emu_wmma_wait();
}


/* matrix_a or matrix_b: the layout is the fragment's */
template <typename Use, typename Layout, typename T, typename P>
static inline void
load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout> &f, const P *p,
    unsigned ldm)
{
    static_assert(!std::is_same<Use, accumulator>::value,
                  "an accumulator's load names its layout");

    llm_emu_wmma_load(f.x, p, ldm,
                      std::is_same<Layout, row_major>::value);
}

template <typename T, typename P>
static inline void
load_matrix_sync(fragment<accumulator, 16, 16, 16, T> &c, const P *p,
    unsigned ldm, layout_t layout)
{
    llm_emu_wmma_load(c.x, p, ldm, layout == mem_row_major);
}


template <typename T, typename P>
static inline void
store_matrix_sync(P *p, const fragment<accumulator, 16, 16, 16, T> &c,
    unsigned ldm, layout_t layout)
{
    llm_emu_wmma_wait();
    llm_emu_wmma_check(p, ldm, sizeof(P));

    /* every lane writes the same tile */
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 16; j++) {
            if (layout == mem_row_major) {
                p[(size_t) i * ldm + j] = c.x[i * 16 + j];
            } else {
                p[(size_t) j * ldm + i] = c.x[i * 16 + j];
            }
        }
    }

    llm_emu_wmma_wait();
}


template <typename Use, typename T, typename L, typename V>
static inline void
fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, V v)
{
    llm_emu_wmma_wait();

    for (int i = 0; i < 256; i++) {
        f.x[i] = llm_emu_wmma_to<T>((float) v);
    }
}


/* d = a b + c, each d(i, j) summed in float over k, then stored as D */
template <typename LA, typename LB, typename A, typename B, typename C,
          typename D>
static inline void
mma_sync(fragment<accumulator, 16, 16, 16, D> &d,
    const fragment<matrix_a, 16, 16, 16, A, LA> &a,
    const fragment<matrix_b, 16, 16, 16, B, LB> &b,
    const fragment<accumulator, 16, 16, 16, C> &c)
{
    float  r[256];

    llm_emu_wmma_wait();

    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 16; j++) {
            float  s = llm_emu_wmma_f(c.x[i * 16 + j]);

            for (int k = 0; k < 16; k++) {
                s += llm_emu_wmma_f(a.x[i * 16 + k])
                     * llm_emu_wmma_f(b.x[k * 16 + j]);
            }

            r[i * 16 + j] = s;
        }
    }

    for (int i = 0; i < 256; i++) {
        d.x[i] = llm_emu_wmma_to<D>(r[i]);
    }
}

} /* namespace wmma */
} /* namespace nvcuda */

#endif /* LLM_EMU_MMA_H */
