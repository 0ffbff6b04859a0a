/*
 * Copyright (C) ngx_llm developers
 *
 * The CPU emulator of the CUDA runtime, cuBLAS and NCCL calls the
 * project makes (t/gpu/emu/README.md).  It runs the kernels and the CUDA
 * backend on a machine without a GPU, to find what a GPU would fault
 * on or compute differently before a GPU is lent:
 *
 *   - work is queued per stream and runs only when something waits for
 *     it (a synchronize, a blocking copy, a copy to pageable memory, a
 *     free), so that a host read without the wait sees stale bytes
 *     every time, not once in a while;
 *   - each CUDA thread runs on a fiber: __syncthreads and the shuffles
 *     wait for the block or warp; a barrier not every thread reaches,
 *     or a shuffle naming a lane that exited, is a kernel fault;
 *   - a kernel's pointer arguments must lie in device memory of the
 *     stream's device or in pinned host memory; device buffers end at
 *     a guard page, so reading past one crashes at the read;
 *   - copies and memsets are checked against their allocations and
 *     their kind; launches against the device's limits;
 *   - graphs record what a captured stream was given and replay it;
 *     a wait or an allocation while capturing invalidates the capture;
 *   - a kernel fault is sticky, as on the device: every later call
 *     fails with it.
 *
 *   - the blocks of a grid run in a shuffled order, and the threads of
 *     a block in a shuffled order between two waits, so that a kernel
 *     that counts on an order the device does not promise computes
 *     something else here (LLM_EMU_ORDER=forward: in order; LLM_EMU_SEED:
 *     another shuffle).
 *
 * Environment: LLM_EMU_GPUS (devices, 1), LLM_EMU_MEM_MB (memory of
 * each, 16384), LLM_EMU_TRACE=1 (each launch on stderr), LLM_EMU_QUIET=1
 * (nothing on stderr: for tests that provoke the faults).
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "emu_device.h"
#include "cublas_v2.h"
#include "nccl.h"
#include "cuda_fp16.h"
#include "cuda_bf16.h"


#define LLM_EMU_MAX_GPUS     16
#define LLM_EMU_MAX_THREADS  1024
#define LLM_EMU_STACK        (256 * 1024)
#define LLM_EMU_SMEM         (48 * 1024)
#define LLM_EMU_SMEM_OPTIN   (227 * 1024)
#define LLM_EMU_ALIGN        256


/* ---------------------------------------------------------------- state */

enum {
    LLM_EMU_DEVICE_MEM = 0,
    LLM_EMU_PINNED
};

struct llm_emu_alloc {
    char    *base;
    size_t   size;
    int      kind;
    int      device;
    void    *map;
    size_t   map_len;
};

enum {
    LLM_EMU_OP_KERNEL = 0,
    LLM_EMU_OP_COPY,
    LLM_EMU_OP_SET,
    LLM_EMU_OP_ALLREDUCE
};

struct llm_emu_coll;

struct llm_emu_op {
    int                          kind;
    /* kernels and cuBLAS */
    std::string                  name;
    llm_emu_cfg                  cfg;
    std::function<void()>        body;
    std::vector<const void *>    ptrs;
    /* copies and memsets */
    void                        *dst;
    const void                  *src;
    size_t                       size;
    int                          value;
    std::vector<char>            snapshot;   /* pageable source, copied */
    /* all-reduce */
    ncclComm_t                   comm;
    ncclDataType_t               type;
    /* per queued instance: the collective it joined */
    std::shared_ptr<llm_emu_coll>  coll;
};

typedef std::shared_ptr<llm_emu_op>  llm_emu_op_ptr;

struct llm_emu_graph_s {
    std::vector<llm_emu_op_ptr>  ops;
};

struct llm_emu_graph_exec_s {
    std::vector<llm_emu_op_ptr>  ops;
};

struct llm_emu_stream_s {
    int                          device;
    unsigned int                 flags;
    std::deque<llm_emu_op_ptr>   q;
    /* capture */
    llm_emu_graph_s             *graph;
    int                          capture_mode;
    bool                         invalidated;
    std::thread::id              capture_thread;
};

struct llm_emu_clique {
    int                          nranks;
    std::vector<ncclComm_t>      ranks;
    std::map<uint64_t, std::shared_ptr<llm_emu_coll>>  colls;
};

struct llm_emu_comm_s {
    std::shared_ptr<llm_emu_clique>  clique;
    int                          rank;
    int                          device;
    uint64_t                     arrived;     /* collectives joined */
    ncclResult_t                 async_error;
};

struct llm_emu_coll {
    int                          n_arrived;
    int                          n_left;      /* still to leave */
    bool                         done;
    std::vector<llm_emu_op *>    ops;         /* by rank */
};

struct llm_emu_blas_s {
    cudaStream_t                 stream;
};


static std::mutex                          llm_emu_mu;
static std::condition_variable             llm_emu_cv;
static std::map<uintptr_t, llm_emu_alloc>  llm_emu_allocs;
static std::vector<llm_emu_stream_s *>     llm_emu_streams;
static std::map<std::string, std::shared_ptr<llm_emu_clique>>
                                           llm_emu_cliques;
static std::map<std::pair<const void *, int>, int>
                                           llm_emu_smem_attr;
static llm_emu_stream_s                   *llm_emu_legacy[LLM_EMU_MAX_GPUS];
static size_t                              llm_emu_used[LLM_EMU_MAX_GPUS];
static cudaError_t                         llm_emu_sticky;
static int                                 llm_emu_n_gpus = -1;
static size_t                              llm_emu_mem;
static int                                 llm_emu_trace;
static int                                 llm_emu_quiet;
static int                                 llm_emu_in_order;
static uint64_t                            llm_emu_seed;

static thread_local int                    llm_emu_device;
static thread_local cudaError_t            llm_emu_last;
static thread_local int                    llm_emu_group_depth;


static void llm_emu_init(void);
static cudaError_t llm_emu_error(cudaError_t e);
static void llm_emu_say(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static llm_emu_stream_s *llm_emu_stream(cudaStream_t s);
static const llm_emu_alloc *llm_emu_find(const void *p);
static cudaError_t llm_emu_unsafe_call(void);
static void llm_emu_enqueue(llm_emu_stream_s *s, llm_emu_op_ptr op);
static cudaError_t llm_emu_drain(llm_emu_stream_s *only, int device,
    std::unique_lock<std::mutex> &lk);
static void llm_emu_run(llm_emu_op *op);
static void llm_emu_run_kernel(llm_emu_op *op);
static void llm_emu_run_block(llm_emu_op *op, uint3 b);
static void llm_emu_reduce(llm_emu_coll *c);
static cudaError_t llm_emu_check_range(const void *p, size_t size,
    int want_device);


static void
llm_emu_init(void)
{
    const char  *v;

    if (llm_emu_n_gpus >= 0) {
        return;
    }

    v = getenv("LLM_EMU_GPUS");
    llm_emu_n_gpus = v != NULL ? atoi(v) : 1;
    if (llm_emu_n_gpus < 0 || llm_emu_n_gpus > LLM_EMU_MAX_GPUS) {
        llm_emu_n_gpus = 1;
    }

    v = getenv("LLM_EMU_MEM_MB");
    llm_emu_mem = (size_t) (v != NULL && atol(v) > 0 ? atol(v) : 16384)
                  << 20;

    v = getenv("LLM_EMU_TRACE");
    llm_emu_trace = v != NULL && strcmp(v, "1") == 0;

    v = getenv("LLM_EMU_QUIET");
    llm_emu_quiet = v != NULL && strcmp(v, "1") == 0;

    v = getenv("LLM_EMU_ORDER");
    llm_emu_in_order = v != NULL && strcmp(v, "forward") == 0;

    v = getenv("LLM_EMU_SEED");
    llm_emu_seed = (v != NULL ? strtoull(v, NULL, 10) : 1) * 2 + 1;

    for (int i = 0; i < llm_emu_n_gpus; i++) {
        llm_emu_legacy[i] = new llm_emu_stream_s();
        llm_emu_legacy[i]->device = i;
        llm_emu_legacy[i]->flags = cudaStreamDefault;
        llm_emu_legacy[i]->graph = NULL;
        llm_emu_legacy[i]->invalidated = false;
        llm_emu_streams.push_back(llm_emu_legacy[i]);
    }
}


static void
llm_emu_say(const char *fmt, ...)
{
    va_list  ap;
    char     buf[1024];

    if (llm_emu_quiet) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    fprintf(stderr, "llm-emu: %s\n", buf);
}


/* a call's result: the sticky fault first, as on the device */
static cudaError_t
llm_emu_error(cudaError_t e)
{
    if (llm_emu_sticky != cudaSuccess) {
        e = llm_emu_sticky;
    }

    if (e != cudaSuccess) {
        llm_emu_last = e;
    }

    return e;
}


static llm_emu_stream_s *
llm_emu_stream(cudaStream_t s)
{
    if (s == NULL) {
        return llm_emu_device < llm_emu_n_gpus
               ? llm_emu_legacy[llm_emu_device] : NULL;
    }

    return s;
}


static const llm_emu_alloc *
llm_emu_find(const void *p)
{
    uintptr_t  a = (uintptr_t) p;

    auto  it = llm_emu_allocs.upper_bound(a);

    if (it == llm_emu_allocs.begin()) {
        return NULL;
    }

    --it;

    /* one past the end is a valid empty range */
    if (a > it->first + it->second.size) {
        return NULL;
    }

    return &it->second;
}


/* [p, p + size) within one allocation; want_device 1: device memory,
 * 0: not device memory (pinned or pageable), -1: either */
static cudaError_t
llm_emu_check_range(const void *p, size_t size, int want_device)
{
    const llm_emu_alloc  *a = llm_emu_find(p);

    if (want_device == 0) {
        if (a != NULL && a->kind == LLM_EMU_DEVICE_MEM) {
            return cudaErrorInvalidValue;
        }

        if (a != NULL && (const char *) p + size > a->base + a->size) {
            return cudaErrorInvalidValue;
        }

        return cudaSuccess;
    }

    if (a == NULL || (want_device == 1 && a->kind != LLM_EMU_DEVICE_MEM)) {
        return want_device == -1 ? cudaSuccess : cudaErrorInvalidValue;
    }

    if ((const char *) p + size > a->base + a->size) {
        return cudaErrorInvalidValue;
    }

    return cudaSuccess;
}


/* ------------------------------------------------------------- errors */

extern "C" const char *
cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
        return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
        return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported:
        return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
        return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread:
        return "cudaErrorStreamCaptureWrongThread";
    }

    return "cudaErrorUnknown";
}


extern "C" const char *
cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default:
        return cudaGetErrorName(e);
    }
}


extern "C" cudaError_t
cudaGetLastError(void)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    cudaError_t                  e;

    e = llm_emu_sticky != cudaSuccess ? llm_emu_sticky : llm_emu_last;
    llm_emu_last = cudaSuccess;

    return e;
}


extern "C" cudaError_t
cudaPeekAtLastError(void)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    return llm_emu_sticky != cudaSuccess ? llm_emu_sticky : llm_emu_last;
}


/* ------------------------------------------------------------ devices */

extern "C" cudaError_t
cudaGetDeviceCount(int *n)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();
    *n = llm_emu_n_gpus;

    return llm_emu_n_gpus > 0 ? cudaSuccess : llm_emu_error(cudaErrorNoDevice);
}


extern "C" cudaError_t
cudaSetDevice(int device)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();

    if (device < 0 || device >= llm_emu_n_gpus) {
        return llm_emu_error(llm_emu_n_gpus ? cudaErrorInvalidDevice
                                            : cudaErrorNoDevice);
    }

    llm_emu_device = device;
    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaGetDevice(int *device)
{
    *device = llm_emu_device;
    return cudaSuccess;
}


extern "C" cudaError_t
cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();

    if (device < 0 || device >= llm_emu_n_gpus) {
        return llm_emu_error(cudaErrorInvalidDevice);
    }

    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "ngx_llm CPU emulator");
    p->totalGlobalMem = llm_emu_mem;
    p->sharedMemPerBlock = LLM_EMU_SMEM;
    p->sharedMemPerBlockOptin = LLM_EMU_SMEM_OPTIN;
    p->warpSize = 32;
    p->maxThreadsPerBlock = LLM_EMU_MAX_THREADS;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->multiProcessorCount = 132;
    p->major = 9;
    p->minor = 0;

    return cudaSuccess;
}


extern "C" cudaError_t
cudaDeviceSynchronize(void)
{
    std::unique_lock<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();

    return llm_emu_error(llm_emu_drain(NULL, llm_emu_device, lk));
}


/* ------------------------------------------------------------- memory */

/* a mapping whose last page is inaccessible, the buffer ending at it */
static void *
llm_emu_map(size_t size, void **map, size_t *map_len)
{
    size_t   page, body;
    char    *m;

    page = (size_t) sysconf(_SC_PAGESIZE);
    size = (size + LLM_EMU_ALIGN - 1) / LLM_EMU_ALIGN * LLM_EMU_ALIGN;
    body = (size + page - 1) / page * page;

    m = (char *) mmap(NULL, body + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        return NULL;
    }

    if (mprotect(m + body, page, PROT_NONE) != 0) {
        munmap(m, body + page);
        return NULL;
    }

    *map = m;
    *map_len = body + page;

    return m + body - size;
}


static cudaError_t
llm_emu_malloc(void **p, size_t size, int kind)
{
    llm_emu_alloc  a;
    int            dev;

    llm_emu_init();

    dev = kind == LLM_EMU_DEVICE_MEM ? llm_emu_device : -1;

    if (dev >= llm_emu_n_gpus) {
        return cudaErrorNoDevice;
    }

    if (llm_emu_trace) {
        llm_emu_say("%s %zu bytes on device %d (%zu in use)",
                    kind == LLM_EMU_DEVICE_MEM ? "cudaMalloc"
                                               : "cudaMallocHost",
                    size, dev, dev >= 0 ? llm_emu_used[dev] : 0);
    }

    if (dev >= 0 && llm_emu_used[dev] + size > llm_emu_mem) {
        return cudaErrorMemoryAllocation;
    }

    a.base = (char *) llm_emu_map(size ? size : 1, &a.map, &a.map_len);
    if (a.base == NULL) {
        return cudaErrorMemoryAllocation;
    }

    /* what the device holds before anyone writes it: not zeros */
    memset(a.base, 0xa5, size);

    a.size = size;
    a.kind = kind;
    a.device = dev;
    llm_emu_allocs[(uintptr_t) a.base] = a;

    if (dev >= 0) {
        llm_emu_used[dev] += size;
    }

    *p = a.base;
    return cudaSuccess;
}


static cudaError_t
llm_emu_free(void *p, int kind, std::unique_lock<std::mutex> &lk)
{
    cudaError_t  e;

    if (p == NULL) {
        return cudaSuccess;
    }

    auto  it = llm_emu_allocs.find((uintptr_t) p);

    if (it == llm_emu_allocs.end() || it->second.kind != kind) {
        return cudaErrorInvalidValue;
    }

    /* frees wait for the device, as cudaFree does */
    e = llm_emu_drain(NULL, kind == LLM_EMU_DEVICE_MEM ? it->second.device
                                                       : -1, lk);

    it = llm_emu_allocs.find((uintptr_t) p);
    if (it == llm_emu_allocs.end()) {
        return cudaErrorInvalidValue;
    }

    if (it->second.device >= 0) {
        llm_emu_used[it->second.device] -= it->second.size;
    }

    munmap(it->second.map, it->second.map_len);
    llm_emu_allocs.erase(it);

    return e;
}


/* the API's allocations and frees: refused while a capture forbids them */
static cudaError_t
llm_emu_alloc_call(void **p, size_t size, int kind)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    cudaError_t                  e;

    *p = NULL;

    e = llm_emu_unsafe_call();
    if (e != cudaSuccess) {
        return llm_emu_error(e);
    }

    return llm_emu_error(llm_emu_malloc(p, size, kind));
}


static cudaError_t
llm_emu_free_call(void *p, int kind)
{
    std::unique_lock<std::mutex>  lk(llm_emu_mu);
    cudaError_t                   e;

    e = llm_emu_unsafe_call();
    if (e != cudaSuccess) {
        return llm_emu_error(e);
    }

    return llm_emu_error(llm_emu_free(p, kind, lk));
}


extern "C" cudaError_t
cudaMalloc(void **p, size_t size)
{
    return llm_emu_alloc_call(p, size, LLM_EMU_DEVICE_MEM);
}


extern "C" cudaError_t
cudaMallocHost(void **p, size_t size)
{
    return llm_emu_alloc_call(p, size, LLM_EMU_PINNED);
}


extern "C" cudaError_t
cudaFree(void *p)
{
    return llm_emu_free_call(p, LLM_EMU_DEVICE_MEM);
}


extern "C" cudaError_t
cudaFreeHost(void *p)
{
    return llm_emu_free_call(p, LLM_EMU_PINNED);
}


extern "C" cudaError_t
cudaMemGetInfo(size_t *free_bytes, size_t *total)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();
    *total = llm_emu_mem;
    *free_bytes = llm_emu_mem - llm_emu_used[llm_emu_device];

    return llm_emu_error(cudaSuccess);
}


/* ---------------------------------------------------------- streams */

extern "C" cudaError_t
cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    llm_emu_stream_s            *st;

    llm_emu_init();

    if (llm_emu_device >= llm_emu_n_gpus) {
        return llm_emu_error(cudaErrorNoDevice);
    }

    st = new llm_emu_stream_s();
    st->device = llm_emu_device;
    st->flags = flags;
    st->graph = NULL;
    st->invalidated = false;
    llm_emu_streams.push_back(st);

    *s = st;
    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaStreamCreate(cudaStream_t *s)
{
    return cudaStreamCreateWithFlags(s, cudaStreamDefault);
}


extern "C" cudaError_t
cudaStreamDestroy(cudaStream_t s)
{
    std::unique_lock<std::mutex>  lk(llm_emu_mu);
    cudaError_t                   e;

    if (s == NULL) {
        return llm_emu_error(cudaErrorInvalidResourceHandle);
    }

    e = llm_emu_drain(s, -1, lk);

    for (size_t i = 0; i < llm_emu_streams.size(); i++) {
        if (llm_emu_streams[i] == s) {
            llm_emu_streams.erase(llm_emu_streams.begin() + i);
            break;
        }
    }

    delete s->graph;
    delete s;

    return llm_emu_error(e);
}


extern "C" cudaError_t
cudaStreamSynchronize(cudaStream_t s)
{
    std::unique_lock<std::mutex>  lk(llm_emu_mu);
    llm_emu_stream_s             *st;

    llm_emu_init();

    st = llm_emu_stream(s);
    if (st == NULL) {
        return llm_emu_error(cudaErrorNoDevice);
    }

    if (st->graph != NULL) {
        st->invalidated = true;
        return llm_emu_error(cudaErrorStreamCaptureUnsupported);
    }

    return llm_emu_error(llm_emu_drain(st, -1, lk));
}


/*
 * Calls a capture forbids (allocations, frees, blocking copies): they
 * invalidate every capture of this thread (ThreadLocal) or of any
 * thread (Global).
 */
static cudaError_t
llm_emu_unsafe_call(void)
{
    cudaError_t  e = cudaSuccess;

    for (llm_emu_stream_s *s : llm_emu_streams) {
        if (s->graph != NULL
            && s->capture_mode != cudaStreamCaptureModeRelaxed
            && (s->capture_mode == cudaStreamCaptureModeGlobal
                || s->capture_thread == std::this_thread::get_id()))
        {
            s->invalidated = true;
            e = cudaErrorStreamCaptureUnsupported;
        }
    }

    return e;
}


/* work for a stream: recorded while it captures, else queued, after
 * what the legacy stream's rules make it wait for */
static void
llm_emu_enqueue(llm_emu_stream_s *s, llm_emu_op_ptr op)
{
    if (s->graph != NULL) {
        s->graph->ops.push_back(op);
        return;
    }

    s->q.push_back(op);
    llm_emu_cv.notify_all();
}


/* ------------------------------------------------------------- copies */

static cudaError_t
llm_emu_copy_check(void *dst, const void *src, size_t size,
    enum cudaMemcpyKind kind, int *to_pageable, int *from_pageable)
{
    const llm_emu_alloc  *d, *s;
    int                   dd, sd;

    d = llm_emu_find(dst);
    s = llm_emu_find(src);
    dd = d != NULL && d->kind == LLM_EMU_DEVICE_MEM;
    sd = s != NULL && s->kind == LLM_EMU_DEVICE_MEM;

    switch (kind) {
    case cudaMemcpyHostToDevice:
        if (!dd || sd) {
            return cudaErrorInvalidValue;
        }
        break;
    case cudaMemcpyDeviceToHost:
        if (dd || !sd) {
            return cudaErrorInvalidValue;
        }
        break;
    case cudaMemcpyDeviceToDevice:
        if (!dd || !sd) {
            return cudaErrorInvalidValue;
        }
        break;
    case cudaMemcpyHostToHost:
        if (dd || sd) {
            return cudaErrorInvalidValue;
        }
        break;
    case cudaMemcpyDefault:
        break;
    default:
        return cudaErrorInvalidValue;
    }

    if (llm_emu_check_range(dst, size, dd ? 1 : 0) != cudaSuccess
        || llm_emu_check_range(src, size, sd ? 1 : 0) != cudaSuccess)
    {
        return cudaErrorInvalidValue;
    }

    *to_pageable = d == NULL;
    *from_pageable = s == NULL;

    return cudaSuccess;
}


extern "C" cudaError_t
cudaMemcpyAsync(void *dst, const void *src, size_t size,
    enum cudaMemcpyKind kind, cudaStream_t stream)
{
    std::unique_lock<std::mutex>  lk(llm_emu_mu);
    int                           to_pg, from_pg;
    cudaError_t                   e;
    llm_emu_op_ptr                op;
    llm_emu_stream_s             *s;

    llm_emu_init();

    if (llm_emu_sticky != cudaSuccess) {
        return llm_emu_error(llm_emu_sticky);
    }

    s = llm_emu_stream(stream);
    if (s == NULL) {
        return llm_emu_error(cudaErrorNoDevice);
    }

    e = llm_emu_copy_check(dst, src, size, kind, &to_pg, &from_pg);
    if (e != cudaSuccess) {
        llm_emu_say("cudaMemcpyAsync(%p, %p, %zu, kind %d): the pointers "
                    "do not fit the kind or their allocations", dst, src,
                    size, (int) kind);
        return llm_emu_error(e);
    }

    if (size == 0) {
        return cudaSuccess;
    }

    op = std::make_shared<llm_emu_op>();
    op->kind = LLM_EMU_OP_COPY;
    op->dst = dst;
    op->src = src;
    op->size = size;

    if (from_pg && s->graph == NULL) {
        /* from pageable memory the source is staged when the call
         * returns */
        op->snapshot.assign((const char *) src, (const char *) src + size);
    }

    llm_emu_enqueue(s, op);

    if (to_pg && s->graph == NULL) {
        /* to pageable memory the call returns when the copy is done */
        return llm_emu_error(llm_emu_drain(s, -1, lk));
    }

    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaMemcpy(void *dst, const void *src, size_t size,
    enum cudaMemcpyKind kind)
{
    cudaError_t  e;

    {
        std::lock_guard<std::mutex>  lk(llm_emu_mu);

        llm_emu_init();

        e = llm_emu_unsafe_call();
        if (e != cudaSuccess) {
            return llm_emu_error(e);
        }
    }

    e = cudaMemcpyAsync(dst, src, size, kind, NULL);
    if (e != cudaSuccess) {
        return e;
    }

    return cudaStreamSynchronize(NULL);
}


extern "C" cudaError_t
cudaMemsetAsync(void *p, int value, size_t size, cudaStream_t stream)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    llm_emu_op_ptr               op;
    llm_emu_stream_s            *s;

    llm_emu_init();

    if (llm_emu_sticky != cudaSuccess) {
        return llm_emu_error(llm_emu_sticky);
    }

    s = llm_emu_stream(stream);
    if (s == NULL) {
        return llm_emu_error(cudaErrorNoDevice);
    }

    if (llm_emu_check_range(p, size, 1) != cudaSuccess) {
        llm_emu_say("cudaMemset(%p, %d, %zu): not within device memory", p,
                    value, size);
        return llm_emu_error(cudaErrorInvalidValue);
    }

    op = std::make_shared<llm_emu_op>();
    op->kind = LLM_EMU_OP_SET;
    op->dst = p;
    op->value = value;
    op->size = size;

    llm_emu_enqueue(s, op);

    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaMemset(void *p, int value, size_t size)
{
    cudaError_t  e;

    {
        std::lock_guard<std::mutex>  lk(llm_emu_mu);

        llm_emu_init();

        e = llm_emu_unsafe_call();
        if (e != cudaSuccess) {
            return llm_emu_error(e);
        }
    }

    e = cudaMemsetAsync(p, value, size, NULL);
    if (e != cudaSuccess) {
        return e;
    }

    return cudaStreamSynchronize(NULL);
}


/* ------------------------------------------------------------ graphs */

extern "C" cudaError_t
cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();

    if (stream == NULL || stream->graph != NULL) {
        return llm_emu_error(cudaErrorStreamCaptureUnsupported);
    }

    stream->graph = new llm_emu_graph_s();
    stream->capture_mode = mode;
    stream->capture_thread = std::this_thread::get_id();
    stream->invalidated = false;

    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    *graph = NULL;

    if (stream == NULL || stream->graph == NULL) {
        return llm_emu_error(cudaErrorIllegalState);
    }

    if (stream->capture_mode != cudaStreamCaptureModeRelaxed
        && stream->capture_thread != std::this_thread::get_id())
    {
        return llm_emu_error(cudaErrorStreamCaptureWrongThread);
    }

    if (stream->invalidated) {
        delete stream->graph;
        stream->graph = NULL;
        return llm_emu_error(cudaErrorStreamCaptureInvalidated);
    }

    *graph = stream->graph;
    stream->graph = NULL;

    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
    unsigned long long flags)
{
    (void) flags;

    if (graph == NULL) {
        return cudaErrorInvalidValue;
    }

    *exec = new llm_emu_graph_exec_s();
    (*exec)->ops = graph->ops;

    return cudaSuccess;
}


extern "C" cudaError_t
cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    llm_emu_stream_s            *s;

    llm_emu_init();

    if (llm_emu_sticky != cudaSuccess) {
        return llm_emu_error(llm_emu_sticky);
    }

    s = llm_emu_stream(stream);
    if (exec == NULL || s == NULL) {
        return llm_emu_error(cudaErrorInvalidResourceHandle);
    }

    for (const llm_emu_op_ptr &op : exec->ops) {
        /* each replay is an instance of its own (a collective joins
         * anew); the arguments stay the recorded ones */
        llm_emu_enqueue(s, std::make_shared<llm_emu_op>(*op));
    }

    return llm_emu_error(cudaSuccess);
}


extern "C" cudaError_t
cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}


extern "C" cudaError_t
cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}


/* ----------------------------------------------------------- launches */

extern "C" cudaError_t
cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr,
    int value)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize
        || value < 0 || value > LLM_EMU_SMEM_OPTIN)
    {
        return llm_emu_error(cudaErrorInvalidValue);
    }

    llm_emu_smem_attr[std::make_pair(func, llm_emu_device)] = value;

    return llm_emu_error(cudaSuccess);
}


void
llm_emu_launch(const llm_emu_cfg &c, const void *func, const char *name,
    std::function<void()> body, std::vector<const void *> ptrs)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    size_t                       smem_max, threads;
    llm_emu_op_ptr               op;
    llm_emu_stream_s            *s;

    llm_emu_init();

    if (llm_emu_sticky != cudaSuccess) {
        llm_emu_last = llm_emu_sticky;
        return;
    }

    s = llm_emu_stream(c.stream);
    if (s == NULL) {
        llm_emu_last = cudaErrorNoDevice;
        return;
    }

    if (s->device != llm_emu_device) {
        llm_emu_say("%s: launched on a stream of device %d while device %d "
                    "is current", name, s->device, llm_emu_device);
        llm_emu_last = cudaErrorInvalidResourceHandle;
        return;
    }

    threads = (size_t) c.block.x * c.block.y * c.block.z;

    if (threads == 0 || threads > LLM_EMU_MAX_THREADS
        || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64
        || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0
        || c.grid.x > 0x7fffffffu || c.grid.y > 65535 || c.grid.z > 65535)
    {
        llm_emu_say("%s: grid (%u,%u,%u) of blocks (%u,%u,%u) is not a "
                    "valid launch", name, c.grid.x, c.grid.y, c.grid.z,
                    c.block.x, c.block.y, c.block.z);
        llm_emu_last = cudaErrorInvalidConfiguration;
        return;
    }

    auto  it = llm_emu_smem_attr.find(std::make_pair(func, llm_emu_device));

    smem_max = it != llm_emu_smem_attr.end() ? (size_t) it->second
                                             : LLM_EMU_SMEM;
    if (smem_max < LLM_EMU_SMEM) {
        smem_max = LLM_EMU_SMEM;
    }

    if (c.smem > smem_max) {
        llm_emu_say("%s: %zu bytes of dynamic shared memory, more than the "
                    "%zu allowed", name, c.smem, smem_max);
        llm_emu_last = cudaErrorInvalidValue;
        return;
    }

    if (llm_emu_trace) {
        llm_emu_say("launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu "
                    "device %d%s", name, c.grid.x, c.grid.y, c.grid.z,
                    c.block.x, c.block.y, c.block.z, c.smem, s->device,
                    s->graph ? " (captured)" : "");
    }

    op = std::make_shared<llm_emu_op>();
    op->kind = LLM_EMU_OP_KERNEL;
    op->name = name;
    op->cfg = c;
    op->body = std::move(body);
    op->ptrs = std::move(ptrs);

    llm_emu_enqueue(s, op);
}


/* ---------------------------------------------------------- execution */

/*
 * Runs queued work until the stream only (or every stream of device,
 * or every stream, device -1) is empty.  A stream whose head is a
 * collective waits for the other ranks' streams, which run meanwhile;
 * when nothing can move, other host threads may still queue the
 * partners: it waits for them a while, then calls it a hang.
 */
static cudaError_t
llm_emu_drain(llm_emu_stream_s *only, int device,
    std::unique_lock<std::mutex> &lk)
{
    bool                  progress, pending;
    llm_emu_op_ptr        op;
    llm_emu_coll         *c;

    for ( ;; ) {
        pending = false;
        progress = false;

        for (size_t i = 0; i < llm_emu_streams.size(); i++) {
            llm_emu_stream_s  *s = llm_emu_streams[i];

            while (!s->q.empty()) {
                op = s->q.front();

                if (op->kind == LLM_EMU_OP_ALLREDUCE) {
                    if (op->coll == NULL) {
                        ncclComm_t  m = op->comm;
                        auto       &slot = m->clique->colls[m->arrived++];

                        if (slot == NULL) {
                            slot = std::make_shared<llm_emu_coll>();
                            slot->n_arrived = 0;
                            slot->n_left = m->clique->nranks;
                            slot->done = false;
                            slot->ops.assign(m->clique->nranks, NULL);
                        }

                        op->coll = slot;
                        slot->ops[m->rank] = op.get();
                        slot->n_arrived++;
                        progress = true;
                    }

                    c = op->coll.get();

                    if (c->n_arrived < (int) c->ops.size()) {
                        break;
                    }

                    if (!c->done) {
                        if (llm_emu_sticky == cudaSuccess) {
                            llm_emu_reduce(c);
                        }
                        c->done = true;
                    }

                    if (--c->n_left == 0) {
                        for (auto it = op->comm->clique->colls.begin();
                             it != op->comm->clique->colls.end(); ++it)
                        {
                            if (it->second.get() == c) {
                                op->comm->clique->colls.erase(it);
                                break;
                            }
                        }
                    }

                    s->q.pop_front();
                    progress = true;
                    continue;
                }

                s->q.pop_front();

                if (llm_emu_sticky == cudaSuccess) {
                    llm_emu_run(op.get());
                }

                progress = true;
            }
        }

        for (llm_emu_stream_s *s : llm_emu_streams) {
            if (!s->q.empty()
                && (only != NULL ? s == only
                                 : device < 0 || s->device == device))
            {
                pending = true;
            }
        }

        if (!pending) {
            return llm_emu_sticky;
        }

        if (!progress) {
            if (llm_emu_cv.wait_for(lk, std::chrono::seconds(30))
                == std::cv_status::timeout)
            {
                llm_emu_say("a collective waited 30 s for ranks that never "
                            "joined it: a hang on the device");
                llm_emu_sticky = cudaErrorLaunchFailure;

                for (llm_emu_stream_s *s : llm_emu_streams) {
                    s->q.clear();
                }

                return llm_emu_sticky;
            }
        }
    }
}


static void
llm_emu_run(llm_emu_op *op)
{
    switch (op->kind) {

    case LLM_EMU_OP_KERNEL:
        llm_emu_run_kernel(op);
        break;

    case LLM_EMU_OP_COPY:
        memmove(op->dst, op->snapshot.empty() ? op->src : op->snapshot.data(),
                op->size);
        break;

    case LLM_EMU_OP_SET:
        memset(op->dst, op->value, op->size);
        break;
    }
}


static void
llm_emu_reduce(llm_emu_coll *c)
{
    size_t                n;
    std::vector<double>   sum;

    n = c->ops[0]->size;
    sum.assign(n, 0.0);

    /* rank order, in the element type: every rank gets the same bits */
    if (c->ops[0]->type == ncclFloat32) {
        std::vector<float>  s(n, 0.0f);

        for (llm_emu_op *o : c->ops) {
            for (size_t i = 0; i < n; i++) {
                s[i] += ((const float *) o->src)[i];
            }
        }

        for (llm_emu_op *o : c->ops) {
            memcpy(o->dst, s.data(), n * sizeof(float));
        }

    } else {
        std::vector<int32_t>  s(n, 0);

        for (llm_emu_op *o : c->ops) {
            for (size_t i = 0; i < n; i++) {
                s[i] += ((const int32_t *) o->src)[i];
            }
        }

        for (llm_emu_op *o : c->ops) {
            memcpy(o->dst, s.data(), n * sizeof(int32_t));
        }
    }
}


/* ------------------------------------------------------------ fibers */

/*
 * The CUDA threads of a block, each a fiber on the host thread that
 * runs the kernel.  A fiber runs until it waits (a barrier, a shuffle)
 * or ends; the scheduler then runs the next one that may go on.
 */

enum {
    LLM_EMU_RUN = 0,
    LLM_EMU_BARRIER,
    LLM_EMU_WARP,
    LLM_EMU_DONE
};

struct llm_emu_lane {
    void            *sp;
    int              state;
    uint3            idx;
    int              id;
};

struct llm_emu_warp {
    int              arrived;
    unsigned int     mask;            /* lanes of the exchange */
    unsigned int     done;            /* lanes that ended */
    int              gen;
    uint64_t         slot[2][32];
};

struct llm_emu_block {
    llm_emu_op      *op;
    int              n;
    int              live;
    int              arrived;
    int              current;
    void            *sched_sp;
    llm_emu_lane     lanes[LLM_EMU_MAX_THREADS];
    llm_emu_warp     warps[LLM_EMU_MAX_THREADS / 32];
    char            *stacks;
    const char      *fault;
};

thread_local uint3         llm_emu_thread_idx;
thread_local uint3         llm_emu_block_idx;
thread_local dim3          llm_emu_block_dim;
thread_local dim3          llm_emu_grid_dim;

static thread_local llm_emu_block      *llm_emu_blk;
static thread_local uint64_t            llm_emu_rng;
static thread_local std::vector<uint32_t>  llm_emu_perm;
static thread_local std::vector<char>   llm_emu_smem;


extern "C" void llm_emu_swap(void **save, void *to);

#if defined(__x86_64__)

/* saves the callee-saved registers and the FP control words on this
 * stack, stores the stack pointer in *save, and resumes the fiber whose
 * stack pointer is to */
__asm__(
    ".text\n"
    ".globl llm_emu_swap\n"
    ".type llm_emu_swap, @function\n"
    "llm_emu_swap:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size llm_emu_swap, .-llm_emu_swap\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n");

#else
#error "the CUDA emulator switches fibers on x86-64 only"
#endif


static void llm_emu_lane_main(void) __attribute__((noreturn));


/* a fresh fiber's stack: llm_emu_swap "returns" into llm_emu_lane_main */
static void *
llm_emu_lane_stack(char *top)
{
    uint64_t  *sp = (uint64_t *) ((uintptr_t) top & ~(uintptr_t) 15);

    *--sp = 0;                                  /* lane_main's return */
    *--sp = (uint64_t) (uintptr_t) llm_emu_lane_main;
    for (int i = 0; i < 6; i++) {
        *--sp = 0;                              /* rbp .. r15 */
    }
    *--sp = 0x1f80 | ((uint64_t) 0x037f << 32); /* mxcsr, x87 cw */

    return sp;
}


static void
llm_emu_enter(llm_emu_block *b, int i)
{
    llm_emu_lane  *l = &b->lanes[i];

    b->current = i;
    llm_emu_thread_idx = l->idx;
    llm_emu_swap(&b->sched_sp, l->sp);
}


/* back to the scheduler, from lane b->current */
static void
llm_emu_yield(llm_emu_block *b)
{
    llm_emu_swap(&b->lanes[b->current].sp, b->sched_sp);
    llm_emu_thread_idx = b->lanes[b->current].idx;
}


static void
llm_emu_lane_main(void)
{
    llm_emu_block  *b = llm_emu_blk;
    llm_emu_lane   *l = &b->lanes[b->current];
    llm_emu_warp   *w;

    b->op->body();

    l = &b->lanes[b->current];
    l->state = LLM_EMU_DONE;
    b->live--;
    w = &b->warps[l->id / 32];
    w->done |= 1u << (l->id % 32);

    /* the block's others may wait for nobody but it */
    if (b->live > 0 && b->arrived == b->live) {
        b->arrived = 0;
        for (int i = 0; i < b->n; i++) {
            if (b->lanes[i].state == LLM_EMU_BARRIER) {
                b->lanes[i].state = LLM_EMU_RUN;
            }
        }
    }

    llm_emu_swap(&l->sp, b->sched_sp);
    abort();
}


void
llm_emu_fault(const char *what)
{
    llm_emu_block  *b = llm_emu_blk;

    if (b != NULL && b->fault == NULL) {
        b->fault = what;
    }
}


void
llm_emu_syncthreads(void)
{
    llm_emu_block  *b = llm_emu_blk;

    b->lanes[b->current].state = LLM_EMU_BARRIER;

    if (++b->arrived == b->live) {
        b->arrived = 0;
        for (int i = 0; i < b->n; i++) {
            if (b->lanes[i].state == LLM_EMU_BARRIER) {
                b->lanes[i].state = LLM_EMU_RUN;
            }
        }
        return;
    }

    llm_emu_yield(b);
}


uint64_t
llm_emu_shfl(uint64_t v, unsigned int mask, int mode, int arg, int width)
{
    int             lane, src, base, g, n_lanes;
    unsigned int    want;
    llm_emu_block  *b = llm_emu_blk;
    llm_emu_lane   *l;
    llm_emu_warp   *w;

    l = &b->lanes[b->current];
    lane = l->id % 32;
    w = &b->warps[l->id / 32];

    /* the lanes that exist in this warp */
    n_lanes = b->n - (l->id / 32) * 32;
    want = n_lanes >= 32 ? 0xffffffffu : (1u << n_lanes) - 1;
    want &= mask;

    if (!(want & (1u << lane))) {
        llm_emu_fault("a shuffle from a lane its mask leaves out");
        return v;
    }

    if (want & w->done) {
        llm_emu_fault("a shuffle whose mask names a lane that exited");
        return v;
    }

    if (w->arrived == 0) {
        w->mask = want;
    } else if (w->mask != want) {
        llm_emu_fault("lanes of a warp shuffle with different masks");
        return v;
    }

    g = w->gen & 1;
    w->slot[g][lane] = v;

    if (++w->arrived == __builtin_popcount(want)) {
        w->arrived = 0;
        w->gen++;
        for (int i = 0; i < 32; i++) {
            if (want & (1u << i)) {
                b->lanes[(l->id / 32) * 32 + i].state = LLM_EMU_RUN;
            }
        }

    } else {
        l->state = LLM_EMU_WARP;
        llm_emu_yield(b);
        l = &b->lanes[b->current];
    }

    base = lane & ~(width - 1);

    switch (mode) {
    case LLM_EMU_SHFL_XOR:
        src = lane ^ arg;
        break;
    case LLM_EMU_SHFL_DOWN:
        src = (lane - base) + arg < width ? lane + arg : lane;
        break;
    case LLM_EMU_SHFL_UP:
        src = lane - base >= arg ? lane - arg : lane;
        break;
    default:
        src = base + (arg % width);
        break;
    }

    if (src < 0 || src > 31 || !(want & (1u << src))) {
        llm_emu_fault("a shuffle reads a lane outside its mask");
        return v;
    }

    return w->slot[g][src];
}


void *
llm_emu_dyn_smem(void)
{
    /* aligned as the device's (wmma wants 32 bytes) */
    return (void *) (((uintptr_t) llm_emu_smem.data() + 127)
                     & ~(uintptr_t) 127);
}


/* 0..n-1 in the order the emulator runs them */
static void
llm_emu_order(std::vector<uint32_t> &v, uint32_t n)
{
    uint32_t  j, t;

    v.resize(n);
    for (uint32_t i = 0; i < n; i++) {
        v[i] = i;
    }

    if (llm_emu_in_order) {
        return;
    }

    for (uint32_t i = n; i > 1; i--) {
        llm_emu_rng ^= llm_emu_rng << 13;
        llm_emu_rng ^= llm_emu_rng >> 7;
        llm_emu_rng ^= llm_emu_rng << 17;
        j = (uint32_t) (llm_emu_rng % i);
        t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}


static void
llm_emu_run_block(llm_emu_op *op, uint3 bi)
{
    int             n, stuck;
    dim3            bd;
    llm_emu_block  *b = llm_emu_blk;

    bd = op->cfg.block;
    n = (int) (bd.x * bd.y * bd.z);

    b->op = op;
    b->n = n;
    b->live = n;
    b->arrived = 0;
    b->fault = NULL;
    llm_emu_block_idx = bi;

    for (int i = 0; i < n; i++) {
        llm_emu_lane  *l = &b->lanes[i];

        l->id = i;
        l->state = LLM_EMU_RUN;
        l->idx.x = (unsigned int) i % bd.x;
        l->idx.y = (unsigned int) i / bd.x % bd.y;
        l->idx.z = (unsigned int) i / (bd.x * bd.y);
        l->sp = llm_emu_lane_stack(b->stacks + (size_t) (i + 1)
                                               * LLM_EMU_STACK);
    }

    for (int i = 0; i < (n + 31) / 32; i++) {
        memset(&b->warps[i], 0, sizeof(llm_emu_warp));
    }

    while (b->live > 0) {
        stuck = 1;

        llm_emu_order(llm_emu_perm, (uint32_t) n);

        for (int k = 0; k < n; k++) {
            int  i = (int) llm_emu_perm[k];

            if (b->lanes[i].state == LLM_EMU_RUN) {
                llm_emu_enter(b, i);
                stuck = 0;
            }
        }

        if (stuck) {
            llm_emu_fault("threads wait at a barrier or shuffle the others "
                          "never reach");
            break;
        }
    }

    if (b->fault != NULL) {
        llm_emu_say("kernel %s, block (%u,%u,%u): %s", op->name.c_str(),
                    bi.x, bi.y, bi.z, b->fault);
        llm_emu_sticky = cudaErrorLaunchFailure;
    }
}


static void
llm_emu_run_kernel(llm_emu_op *op)
{
    size_t                page;
    llm_emu_stream_s     *s;
    const llm_emu_alloc  *a;

    s = llm_emu_stream(op->cfg.stream);

    for (size_t i = 0; i < op->ptrs.size(); i++) {
        if (op->ptrs[i] == NULL) {
            continue;
        }

        a = llm_emu_find(op->ptrs[i]);

        if (a == NULL
            || (a->kind == LLM_EMU_DEVICE_MEM && s != NULL
                && a->device != s->device))
        {
            llm_emu_say("kernel %s: pointer argument %zu (%p) is not in "
                        "memory of device %d", op->name.c_str(), i,
                        op->ptrs[i], s != NULL ? s->device : -1);
            llm_emu_sticky = cudaErrorIllegalAddress;
            return;
        }
    }

    if (llm_emu_blk == NULL) {
        llm_emu_blk = new llm_emu_block();
        page = (size_t) sysconf(_SC_PAGESIZE);
        llm_emu_blk->stacks = (char *) mmap(NULL,
                             (size_t) LLM_EMU_MAX_THREADS * LLM_EMU_STACK,
                             PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                             -1, 0);
        if (llm_emu_blk->stacks == MAP_FAILED) {
            llm_emu_say("no memory for the fibers' stacks: %s",
                        strerror(errno));
            abort();
        }

        /* a guard page under each stack */
        for (int i = 0; i < LLM_EMU_MAX_THREADS; i++) {
            mprotect(llm_emu_blk->stacks + (size_t) i * LLM_EMU_STACK, page,
                     PROT_NONE);
        }
    }

    /* shared memory before anyone writes it: NaNs */
    llm_emu_smem.assign(op->cfg.smem + 16 + 128, (char) 0xff);

    llm_emu_block_dim = op->cfg.block;
    llm_emu_grid_dim = op->cfg.grid;

    /* each launch shuffles alike for a seed, whatever ran before */
    llm_emu_rng = llm_emu_seed;
    for (const char *c = op->name.c_str(); *c; c++) {
        llm_emu_rng = (llm_emu_rng ^ (uint8_t) *c) * 0x100000001b3ULL;
    }
    llm_emu_rng |= 1;

    {
        std::vector<uint32_t>  blocks;
        uint64_t               n_blocks;
        dim3                   g = op->cfg.grid;

        n_blocks = (uint64_t) g.x * g.y * g.z;

        if (n_blocks > (1u << 28)) {
            llm_emu_say("kernel %s: %llu blocks, more than the emulator runs",
                        op->name.c_str(), (unsigned long long) n_blocks);
            llm_emu_sticky = cudaErrorLaunchFailure;
            return;
        }

        llm_emu_order(blocks, (uint32_t) n_blocks);

        for (uint64_t k = 0; k < n_blocks; k++) {
            uint32_t  i = blocks[k];
            uint3     bi = { i % g.x, i / g.x % g.y, i / (g.x * g.y) };

            llm_emu_run_block(op, bi);

            if (llm_emu_sticky != cudaSuccess) {
                return;
            }
        }
    }
}


/* ------------------------------------------------------------- cuBLAS */

extern "C" cublasStatus_t
cublasCreate(cublasHandle_t *h)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    llm_emu_init();

    if (llm_emu_n_gpus == 0) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }

    *h = new llm_emu_blas_s();
    (*h)->stream = NULL;

    return CUBLAS_STATUS_SUCCESS;
}


extern "C" cublasStatus_t
cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}


extern "C" cublasStatus_t
cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}


extern "C" cublasStatus_t
cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    (void) h;
    (void) mode;
    return CUBLAS_STATUS_SUCCESS;
}


extern "C" cublasStatus_t
cublasSetWorkspace(cublasHandle_t h, void *ws, size_t size)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    (void) h;

    if (size > 0 && llm_emu_check_range(ws, size, 1) != cudaSuccess) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }

    return CUBLAS_STATUS_SUCCESS;
}


extern "C" const char *
cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }

    return "CUBLAS_STATUS_UNKNOWN";
}


static size_t
llm_emu_type_size(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}


static float
llm_emu_load(const void *p, cudaDataType_t t, size_t i)
{
    switch (t) {
    case CUDA_R_16F:
        return __half2float(((const __half *) p)[i]);
    case CUDA_R_16BF:
        return __bfloat162float(((const __nv_bfloat16 *) p)[i]);
    default:
        return ((const float *) p)[i];
    }
}


static void
llm_emu_store(void *p, cudaDataType_t t, size_t i, float v)
{
    switch (t) {
    case CUDA_R_16F:
        ((__half *) p)[i] = __float2half_rn(v);
        break;
    case CUDA_R_16BF:
        ((__nv_bfloat16 *) p)[i] = __float2bfloat16_rn(v);
        break;
    default:
        ((float *) p)[i] = v;
    }
}


/* column-major C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C */
extern "C" cublasStatus_t
cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
    int m, int n, int k, const void *alpha, const void *a,
    cudaDataType_t at, int lda, const void *b, cudaDataType_t bt, int ldb,
    const void *beta, void *c, cudaDataType_t ct, int ldc,
    cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    float                        al, be;
    int                          ar, br;
    llm_emu_op_ptr               op;
    llm_emu_stream_s            *s;

    (void) algo;

    llm_emu_init();

    if (h == NULL) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }

    /* stored rows of A and B (column-major leading dimensions) */
    ar = ta == CUBLAS_OP_N ? m : k;
    br = tb == CUBLAS_OP_N ? k : n;

    if (m < 0 || n < 0 || k < 0 || lda < (ar > 1 ? ar : 1)
        || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)
        || (compute != CUBLAS_COMPUTE_32F
            && compute != CUBLAS_COMPUTE_32F_FAST_16F
            && compute != CUBLAS_COMPUTE_32F_FAST_16BF
            && compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        || ta == CUBLAS_OP_C || tb == CUBLAS_OP_C)
    {
        llm_emu_say("cublasGemmEx: m %d n %d k %d lda %d ldb %d ldc %d: "
                    "invalid", m, n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }

    if (m == 0 || n == 0) {
        return CUBLAS_STATUS_SUCCESS;
    }

    /* the extents the product reads and writes, in device memory */
    if ((k > 0
         && (llm_emu_check_range(a, ((size_t) (ta == CUBLAS_OP_N ? k : m)
                                     - 1) * lda * llm_emu_type_size(at)
                                    + (size_t) ar * llm_emu_type_size(at), 1)
             != cudaSuccess
             || llm_emu_check_range(b, ((size_t) (tb == CUBLAS_OP_N ? n : k)
                                        - 1) * ldb * llm_emu_type_size(bt)
                                       + (size_t) br * llm_emu_type_size(bt),
                                    1)
                != cudaSuccess))
        || llm_emu_check_range(c, ((size_t) n - 1) * ldc
                                  * llm_emu_type_size(ct)
                                  + (size_t) m * llm_emu_type_size(ct), 1)
           != cudaSuccess)
    {
        llm_emu_say("cublasGemmEx: m %d n %d k %d: a matrix is not within "
                    "device memory", m, n, k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }

    s = llm_emu_stream(h->stream);
    if (s == NULL) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }

    /* host pointer mode: the scalars are read now */
    al = *(const float *) alpha;
    be = *(const float *) beta;

    op = std::make_shared<llm_emu_op>();
    op->kind = LLM_EMU_OP_KERNEL;
    op->name = "cublasGemmEx";
    op->cfg = llm_emu_cfg_of(dim3(1), dim3(1), 0, h->stream);
    op->body = [=]() {
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                double  acc = 0.0;

                for (int l = 0; l < k; l++) {
                    float  x, y;

                    x = llm_emu_load(a, at, ta == CUBLAS_OP_N
                                     ? (size_t) l * lda + i
                                     : (size_t) i * lda + l);
                    y = llm_emu_load(b, bt, tb == CUBLAS_OP_N
                                     ? (size_t) j * ldb + l
                                     : (size_t) l * ldb + j);
                    acc += (double) x * y;
                }

                size_t  o = (size_t) j * ldc + i;
                float   v = al * (float) acc;

                if (be != 0.0f) {
                    v += be * llm_emu_load(c, ct, o);
                }

                llm_emu_store(c, ct, o, v);
            }
        }
    };
    op->ptrs = { a, b, c };

    llm_emu_enqueue(s, op);

    return CUBLAS_STATUS_SUCCESS;
}


/* -------------------------------------------------------------- NCCL */

extern "C" const char *
ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a "
                                 "network error";
    case ncclInProgress: return "NCCL operation in progress";
    }

    return "unknown result code";
}


extern "C" ncclResult_t
ncclGetUniqueId(ncclUniqueId *id)
{
    static uint64_t  n;
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    memset(id, 0, sizeof(*id));
    snprintf(id->internal, sizeof(id->internal), "emu-%d-%llu",
             (int) getpid(), (unsigned long long) ++n);

    return ncclSuccess;
}


extern "C" ncclResult_t
ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    std::string                  key(id.internal,
                                     strnlen(id.internal,
                                             sizeof(id.internal)));
    ncclComm_t                   m;

    llm_emu_init();
    *comm = NULL;

    if (nranks < 1 || rank < 0 || rank >= nranks
        || llm_emu_device >= llm_emu_n_gpus)
    {
        return ncclInvalidArgument;
    }

    auto  &cl = llm_emu_cliques[key];

    if (cl == NULL) {
        cl = std::make_shared<llm_emu_clique>();
        cl->nranks = nranks;
        cl->ranks.assign(nranks, NULL);
    }

    if (cl->nranks != nranks || cl->ranks[rank] != NULL) {
        return ncclInvalidUsage;
    }

    for (ncclComm_t o : cl->ranks) {
        if (o != NULL && o->device == llm_emu_device) {
            /* NCCL refuses two ranks on one GPU */
            return ncclInvalidUsage;
        }
    }

    m = new llm_emu_comm_s();
    m->clique = cl;
    m->rank = rank;
    m->device = llm_emu_device;
    m->arrived = 0;
    m->async_error = ncclSuccess;
    cl->ranks[rank] = m;

    *comm = m;
    return ncclSuccess;
}


static ncclResult_t
llm_emu_comm_free(ncclComm_t comm)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    if (comm == NULL) {
        return ncclInvalidArgument;
    }

    comm->clique->ranks[comm->rank] = NULL;
    delete comm;

    return ncclSuccess;
}


extern "C" ncclResult_t
ncclCommDestroy(ncclComm_t comm)
{
    return llm_emu_comm_free(comm);
}


extern "C" ncclResult_t
ncclCommAbort(ncclComm_t comm)
{
    return llm_emu_comm_free(comm);
}


extern "C" ncclResult_t
ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *r)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);

    *r = llm_emu_sticky != cudaSuccess ? ncclUnhandledCudaError
                                       : comm->async_error;
    return ncclSuccess;
}


extern "C" ncclResult_t
ncclGroupStart(void)
{
    llm_emu_group_depth++;
    return ncclSuccess;
}


extern "C" ncclResult_t
ncclGroupEnd(void)
{
    if (llm_emu_group_depth == 0) {
        return ncclInvalidUsage;
    }

    llm_emu_group_depth--;
    return ncclSuccess;
}


extern "C" ncclResult_t
ncclAllReduce(const void *send, void *recv, size_t count,
    ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
    cudaStream_t stream)
{
    std::lock_guard<std::mutex>  lk(llm_emu_mu);
    size_t                       bytes;
    llm_emu_op_ptr               o;
    llm_emu_stream_s            *s;

    llm_emu_init();

    if (comm == NULL || op != ncclSum
        || (type != ncclFloat32 && type != ncclInt32))
    {
        return ncclInvalidArgument;
    }

    s = llm_emu_stream(stream);
    if (s == NULL || s->device != comm->device) {
        llm_emu_say("ncclAllReduce: rank %d of device %d on a stream of "
                    "device %d", comm->rank, comm->device,
                    s != NULL ? s->device : -1);
        return ncclInvalidUsage;
    }

    bytes = count * 4;

    if (llm_emu_check_range(send, bytes, 1) != cudaSuccess
        || llm_emu_check_range(recv, bytes, 1) != cudaSuccess
        || llm_emu_find(send)->device != comm->device
        || llm_emu_find(recv)->device != comm->device)
    {
        llm_emu_say("ncclAllReduce: rank %d: buffers not within memory of "
                    "device %d", comm->rank, comm->device);
        return ncclInvalidArgument;
    }

    if (llm_emu_trace) {
        llm_emu_say("ncclAllReduce of %zu on device %d%s", count,
                    comm->device, s->graph ? " (captured)" : "");
    }

    o = std::make_shared<llm_emu_op>();
    o->kind = LLM_EMU_OP_ALLREDUCE;
    o->name = "ncclAllReduce";
    o->src = send;
    o->dst = recv;
    o->size = count;
    o->comm = comm;
    o->type = type;

    llm_emu_enqueue(s, o);

    return ncclSuccess;
}
