/*
 * Copyright (C) ngx_llm developers
 *
 * Included first in every kernel file the CPU emulator builds
 * (t/gpu/emu/README.md): the CUDA C++ the kernels use, as plain C++.
 * A kernel is an ordinary function; each CUDA thread of a block runs
 * it on a fiber of its own (emu.cc), so that __syncthreads and the
 * warp shuffles wait for the others as on the device.  __shared__
 * variables are per host thread statics: the fibers of a block share
 * them, one block runs at a time.  emu-cu.pl turns launches
 * (k<<<grid, block, smem, stream>>>(args)) into llm_emu_launch_k().
 */

#ifndef LLM_EMU_DEVICE_H
#define LLM_EMU_DEVICE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime_api.h"


#define __CUDACC__        1
#define __global__
#define __device__
#define __host__
#define __forceinline__   inline
#define __shared__        static thread_local
#define __launch_bounds__(...)
#define __align__(n)      __attribute__((aligned(n)))


struct uint3 {
    unsigned int  x, y, z;
};

/* the vector types the kernels load 8 and 16 bytes at a time with */
struct alignas(16) uint4 {
    unsigned int  x, y, z, w;
};

struct alignas(16) float4 {
    float  x, y, z, w;
};

static inline float4
make_float4(float x, float y, float z, float w)
{
    float4  v = { x, y, z, w };

    return v;
}

struct alignas(8) float2 {
    float  x, y;
};

struct alignas(8) uint2 {
    unsigned int  x, y;
};

struct dim3 {
    unsigned int  x, y, z;

    dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1)
        : x(a), y(b), z(c) {}
};


/* the running CUDA thread: set by the fiber scheduler at every switch */
extern thread_local uint3  llm_emu_thread_idx;
extern thread_local uint3  llm_emu_block_idx;
extern thread_local dim3   llm_emu_block_dim;
extern thread_local dim3   llm_emu_grid_dim;

#define threadIdx  llm_emu_thread_idx
#define blockIdx   llm_emu_block_idx
#define blockDim   llm_emu_block_dim
#define gridDim    llm_emu_grid_dim
static constexpr int  warpSize = 32;


void llm_emu_syncthreads(void);
uint64_t llm_emu_shfl(uint64_t v, unsigned int mask, int mode, int arg,
    int width);
void *llm_emu_dyn_smem(void);
void llm_emu_fault(const char *what);


enum {
    LLM_EMU_SHFL_IDX = 0,
    LLM_EMU_SHFL_XOR,
    LLM_EMU_SHFL_DOWN,
    LLM_EMU_SHFL_UP
};


static inline void
__syncthreads(void)
{
    llm_emu_syncthreads();
}


template <typename T>
static inline T
llm_emu_shfl_t(unsigned int mask, T v, int mode, int arg, int width)
{
    uint64_t  b = 0;

    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "a shuffle moves 8 bytes at most");

    memcpy(&b, &v, sizeof(T));
    b = llm_emu_shfl(b, mask, mode, arg, width);
    memcpy(&v, &b, sizeof(T));

    return v;
}

/* the lanes of mask wait for each other: a shuffle of nothing */
static inline void
__syncwarp(unsigned int mask = 0xffffffffu)
{
    (void) llm_emu_shfl(0, mask, LLM_EMU_SHFL_XOR, 0, 32);
}

template <typename T>
static inline T
__shfl_sync(unsigned int mask, T v, int src, int width = 32)
{
    return llm_emu_shfl_t(mask, v, LLM_EMU_SHFL_IDX, src, width);
}

template <typename T>
static inline T
__shfl_xor_sync(unsigned int mask, T v, int lanes, int width = 32)
{
    return llm_emu_shfl_t(mask, v, LLM_EMU_SHFL_XOR, lanes, width);
}

template <typename T>
static inline T
__shfl_down_sync(unsigned int mask, T v, unsigned int d, int width = 32)
{
    return llm_emu_shfl_t(mask, v, LLM_EMU_SHFL_DOWN, (int) d, width);
}

template <typename T>
static inline T
__shfl_up_sync(unsigned int mask, T v, unsigned int d, int width = 32)
{
    return llm_emu_shfl_t(mask, v, LLM_EMU_SHFL_UP, (int) d, width);
}


/* one fiber runs at a time on a host thread, and a kernel's blocks on
 * one host thread: atomics need no more than the compiler's */
template <typename T>
static inline T
atomicAdd(T *p, T v)
{
    T  old = *p;

    *p = old + v;
    return old;
}

template <typename T>
static inline T
atomicMax(T *p, T v)
{
    T  old = *p;

    *p = old > v ? old : v;
    return old;
}

template <typename T>
static inline T
atomicCAS(T *p, T cmp, T v)
{
    T  old = *p;

    *p = old == cmp ? v : old;
    return old;
}


template <typename A, typename B>
static inline typename std::common_type<A, B>::type
min(A a, B b)
{
    typedef typename std::common_type<A, B>::type  C;

    return (C) a < (C) b ? (C) a : (C) b;
}

template <typename A, typename B>
static inline typename std::common_type<A, B>::type
max(A a, B b)
{
    typedef typename std::common_type<A, B>::type  C;

    return (C) a > (C) b ? (C) a : (C) b;
}


static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x)
{
    return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}

static inline unsigned int
__float_as_uint(float f)
{
    unsigned int  u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float
__uint_as_float(unsigned int u)
{
    float  f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline int __float_as_int(float f) { return (int) __float_as_uint(f); }
static inline float __int_as_float(int i)
{
    return __uint_as_float((unsigned int) i);
}

template <typename T>
static inline T __ldg(const T *p) { return *p; }

template <typename T>
static inline T __ldcg(const T *p) { return *p; }

/* blocks run one after another on one host thread: their writes are
 * seen in order already */
static inline void __threadfence(void) {}


/*
 * A launch: the arguments converted to the kernel's parameter types
 * and copied (as the device gets them), pointers listed so that the
 * runtime can check that each lies in device or pinned memory.
 */
struct llm_emu_cfg {
    dim3          grid;
    dim3          block;
    size_t        smem;
    cudaStream_t  stream;
};

static inline llm_emu_cfg
llm_emu_cfg_of(dim3 grid, dim3 block, size_t smem = 0,
    cudaStream_t stream = 0)
{
    llm_emu_cfg  c;

    c.grid = grid;
    c.block = block;
    c.smem = smem;
    c.stream = stream;

    return c;
}

void llm_emu_launch(const llm_emu_cfg &c, const void *func,
    const char *name, std::function<void()> body,
    std::vector<const void *> ptrs);


template <typename T>
static inline void
llm_emu_ptr_of(std::vector<const void *> &ptrs, const T &v)
{
    if constexpr (std::is_pointer<T>::value) {
        ptrs.push_back((const void *) v);
    }
}

template <typename... P, typename... A>
static inline void
llm_emu_launch_k(const llm_emu_cfg &c, const char *name, void (*k)(P...),
    A &&...a)
{
    std::tuple<typename std::decay<P>::type...>  args(
        static_cast<typename std::decay<P>::type>(a)...);
    std::vector<const void *>                    ptrs;

    static_assert(sizeof...(P) == sizeof...(A), "kernel arguments");

    std::apply([&ptrs](const auto &...v) {
                   (llm_emu_ptr_of(ptrs, v), ...);
               }, args);

    llm_emu_launch(c, (const void *) k, name,
                   [k, args]() { std::apply(k, args); }, std::move(ptrs));
}

#endif /* LLM_EMU_DEVICE_H */
