/*
 * Copyright (C) ngx_llm developers
 *
 * The CUDA emulator's own tests (t/gpu/emu/README.md): that it computes
 * what CUDA defines (half and bfloat16 conversions against the CPU's
 * F16C instructions and the engine's converters, block reductions,
 * shuffles, cuBLAS's column-major products and warp matrix products
 * against plain loops written here, NCCL's sums) and that it faults where a GPU would.  A fault is
 * sticky for the process, as on a device: each fault case runs in a
 * child of its own.  Built from this .cu as the kernels are, so its
 * launches are written as CUDA writes them.
 */

#include <immintrin.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <mma.h>
#include <nccl.h>

extern "C" {
#include "tap.h"
#include "llm_quant.h"
}


static __global__ void
k_block_sum(float *out, const float *x, int n)
{
    __shared__ float  part[32];
    float             v = 0.0f;
    int               lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        v += x[(size_t) blockIdx.x * n + i];
    }

    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }

    if (lane == 0) {
        part[warp] = v;
    }
    __syncthreads();

    if (warp == 0) {
        v = lane < (int) (blockDim.x / 32) ? part[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, o);
        }
        if (lane == 0) {
            out[blockIdx.x] = v;
        }
    }
}


/* each thread writes its index into the slot its neighbour reads after
 * the barrier: wrong without the barrier's wait */
static __global__ void
k_rotate(int *out)
{
    __shared__ int  s[1024];
    int             t = threadIdx.x, n = blockDim.x;

    s[t] = t * 7 + (int) blockIdx.x;
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}


static __global__ void
k_dyn(float *out, int n)
{
    extern __shared__ float  buf[];

    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        buf[i] = (float) i;
    }
    __syncthreads();

    if (threadIdx.x == 0) {
        float  s = 0.0f;

        for (int i = 0; i < n; i++) {
            s += buf[i];
        }
        *out = s;
    }
}


static __global__ void
k_add(float *y, const float *x, int n)
{
    int  i = blockIdx.x * blockDim.x + threadIdx.x;

    if (i < n) {
        y[i] += x[i];
    }
}


/* half a warp at the barrier, the other half in a shuffle that waits
 * for the first: a hang on the device */
static __global__ void
k_bad_barrier(float *out)
{
    float  v = (float) threadIdx.x;

    if (threadIdx.x % 32 < 16) {
        __syncthreads();
    }
    v = __shfl_xor_sync(0xffffffffu, v, 16);
    out[threadIdx.x] = v;
}


static __global__ void
k_bad_shuffle(float *out)
{
    float  v = (float) threadIdx.x;

    if (threadIdx.x == 5) {
        return;
    }

    v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}


/* who writes last: what the device does not promise */
static __global__ void
k_last(int *out)
{
    __shared__ int  last;

    last = (int) threadIdx.x;
    __syncthreads();

    if (threadIdx.x == 0) {
        out[0] = (int) blockIdx.x;
        out[1 + blockIdx.x] = last;
    }
}


static __global__ void
k_read(float *out, const float *in, int i)
{
    out[0] = in[i];
}


/* c (16 x 16, f32, ld 20) = a (16 x 32 half, row-major, ld 40) b (32 x
 * 16 half, col-major, ld 40) + c, in shared memory: one warp; off moves
 * a's tile off its 32-byte alignment */
static __global__ void
k_wmma(float *c, const __half *a, const __half *b, int off)
{
    using namespace nvcuda;

    __shared__ __align__(32) __half  as[16 * 40 + 8];
    __shared__ __align__(32) float   cs[16 * 20];

    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major>  fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major>  fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float>                 fc;

    for (int i = threadIdx.x; i < 16 * 40; i += 32) {
        as[off + i] = a[i];
    }

    for (int i = threadIdx.x; i < 16 * 20; i += 32) {
        cs[i] = c[i];
    }

    __syncwarp();

    wmma::load_matrix_sync(fc, cs, 20, wmma::mem_row_major);

    for (int k = 0; k < 32; k += 16) {
        wmma::load_matrix_sync(fa, as + off + k, 40);
        wmma::load_matrix_sync(fb, b + k, 40);
        wmma::mma_sync(fc, fa, fb, fc);
    }

    for (int i = 0; i < fc.num_elements; i++) {
        fc.x[i] *= 2.0f;                /* element-wise, as allowed */
    }

    wmma::store_matrix_sync(cs, fc, 20, wmma::mem_row_major);
    __syncwarp();

    for (int i = threadIdx.x; i < 16 * 20; i += 32) {
        c[i] = cs[i];
    }
}


/* ------------------------------------------------------------------ */

static int
f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c");
}


__attribute__((target("f16c"))) static unsigned short
hw_f2h(float f)
{
    return (unsigned short) _cvtss_sh(f, 0);
}


__attribute__((target("f16c"))) static float
hw_h2f(unsigned short h)
{
    return _cvtsh_ss(h);
}


static int
same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof(float)) == 0;
}


static void
test_half(void)
{
    int       bad_h2f = 0, bad_f2h = 0, bad_eng = 0, bad_bf = 0, hw;
    uint32_t  bits, seed = 12345;
    float     f;

    llm_quant_init();
    hw = f16c();

    for (uint32_t h = 0; h < 65536; h++) {
        float  e = __half2float(__ushort_as_half((unsigned short) h));

        if (!same_float(e, llm_fp16_to_fp32((uint16_t) h))
            || (hw && !same_float(e, hw_h2f((unsigned short) h))))
        {
            bad_h2f++;
        }
    }

    ok(bad_h2f == 0, "__half2float: all 65536 halves as the engine's "
       "table%s (%d differ)", hw ? " and F16C" : "", bad_h2f);

    for (int i = 0; i < 2000000; i++) {
        unsigned short  e;

        seed = seed * 1664525u + 1013904223u;
        bits = seed;

        /* the interesting exponents more often: halves' range, ties */
        if (i % 2) {
            bits = (bits & 0x807fffffu) | ((100u + (bits >> 24) % 60) << 23);
        }
        if (i % 8 == 1) {
            bits &= ~0xfffu;
            bits |= 0x1000u;
        }

        memcpy(&f, &bits, sizeof(f));
        e = __half_as_ushort(__float2half_rn(f));

        if (hw && e != hw_f2h(f) && !isnan(f)) {
            bad_f2h++;
        }

        if (e != llm_fp32_to_fp16(f) && !isnan(f)) {
            bad_eng++;
        }

        if (__float2bfloat16_rn(f).x != llm_fp32_to_bf16(f) && !isnan(f)) {
            bad_bf++;
        }
    }

    if (hw) {
        ok(bad_f2h == 0, "__float2half_rn: 2e6 floats as F16C rounds them "
           "(%d differ)", bad_f2h);
    }
    ok(bad_eng == 0, "__float2half_rn: 2e6 floats as the engine rounds them "
       "(%d differ)", bad_eng);
    ok(bad_bf == 0, "__float2bfloat16_rn: 2e6 floats as the engine rounds "
       "them (%d differ)", bad_bf);

    f = 1.0f;
    ok(__bfloat162float(__float2bfloat16_rn(f)) == 1.0f
       && __half2float(__float2half_rn(65504.0f)) == 65504.0f
       && isinf(__half2float(__float2half_rn(65520.0f))),
       "1, 65504 and the overflow to infinity");
}


static void
test_blocks(void)
{
    int     rows = 5, n = 3000, wrong = 0;
    float  *x, *dx, *dout, out[5];
    int    *dr, r[4 * 256];
    double  want;

    x = (float *) malloc((size_t) rows * n * sizeof(float));
    for (int i = 0; i < rows * n; i++) {
        x[i] = (float) ((i * 37) % 101) - 50.0f;
    }

    cudaMalloc((void **) &dx, (size_t) rows * n * sizeof(float));
    cudaMalloc((void **) &dout, rows * sizeof(float));
    cudaMemcpy(dx, x, (size_t) rows * n * sizeof(float),
               cudaMemcpyHostToDevice);

    k_block_sum<<<rows, 256>>>(dout, dx, n);
    ok(cudaGetLastError() == cudaSuccess, "a launch of 5 blocks of 256");
    ok(cudaMemcpy(out, dout, sizeof(out), cudaMemcpyDeviceToHost)
       == cudaSuccess, "the sums back");

    for (int b = 0; b < rows; b++) {
        want = 0.0;
        for (int i = 0; i < n; i++) {
            want += x[b * n + i];
        }
        wrong += fabs(out[b] - want) > 1e-3;
    }
    ok(wrong == 0, "block sums through shuffles and a barrier: %d of %d "
       "rows wrong", wrong, rows);

    cudaMalloc((void **) &dr, sizeof(r));
    k_rotate<<<4, 256>>>(dr);
    cudaMemcpy(r, dr, sizeof(r), cudaMemcpyDeviceToHost);

    wrong = 0;
    for (int b = 0; b < 4; b++) {
        for (int t = 0; t < 256; t++) {
            wrong += r[b * 256 + t] != ((t + 1) % 256) * 7 + b;
        }
    }
    ok(wrong == 0, "__syncthreads: every thread reads its neighbour's "
       "write (%d wrong)", wrong);

    k_dyn<<<1, 128, 1000 * sizeof(float)>>>(dout, 1000);
    cudaMemcpy(out, dout, sizeof(float), cudaMemcpyDeviceToHost);
    ok(out[0] == 499500.0f, "dynamic shared memory: sum %g", out[0]);

    k_dyn<<<1, 128, 64 * 1024>>>(dout, 1000);
    ok(cudaGetLastError() == cudaErrorInvalidValue,
       "64 KiB of dynamic shared memory without the attribute is refused");

    cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         64 * 1024);
    k_dyn<<<1, 128, 64 * 1024>>>(dout, 1000);
    ok(cudaGetLastError() == cudaSuccess, "and allowed with it");

    k_add<<<1, 2048>>>(dout, dx, 1);
    ok(cudaGetLastError() == cudaErrorInvalidConfiguration,
       "a block of 2048 threads is refused");

    /* the orders: blocks and threads shuffled, so that a kernel that
     * counts on one computes something else here */
    k_last<<<64, 256>>>(dr);
    cudaMemcpy(r, dr, 65 * sizeof(int), cudaMemcpyDeviceToHost);

    wrong = 0;
    for (int b = 0; b < 64; b++) {
        wrong += r[1 + b] == 255;
    }
    ok(r[0] != 63, "the blocks run in a shuffled order (the last was %d)",
       r[0]);
    ok(wrong < 8, "the threads run in a shuffled order (%d of 64 blocks "
       "had thread 255 last)", wrong);

    ok(cudaDeviceSynchronize() == cudaSuccess, "no fault so far");

    cudaFree(dx);
    cudaFree(dout);
    cudaFree(dr);
    free(x);
}


static void
test_streams(void)
{
    float           *d, *pinned, host[4] = { 1, 2, 3, 4 }, v;
    cudaStream_t     s;
    cudaGraph_t      g;
    cudaGraphExec_t  ge;

    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMalloc((void **) &d, 4 * sizeof(float));
    cudaMallocHost((void **) &pinned, 4 * sizeof(float));

    /* pageable source: staged when the call returns */
    cudaMemcpyAsync(d, host, sizeof(host), cudaMemcpyHostToDevice, s);
    host[0] = 100.0f;

    /* pinned destination: written only once the stream is waited for */
    pinned[0] = -1.0f;
    cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s);
    v = pinned[0];
    cudaStreamSynchronize(s);

    ok(v == -1.0f, "a pinned copy not waited for is not there yet (%g)", v);
    ok(pinned[0] == 1.0f, "after the wait it is, with the value staged "
       "before the host changed it (%g)", pinned[0]);

    /* to pageable memory the call itself waits */
    host[3] = 0.0f;
    cudaMemcpyAsync(host, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s);
    ok(host[3] == 4.0f, "a copy into pageable memory is done on return");

    ok(cudaMemcpyAsync(d, host, 5 * sizeof(float), cudaMemcpyHostToDevice,
                       s) == cudaErrorInvalidValue,
       "a copy past the end of the device buffer is refused");
    (void) cudaGetLastError();
    ok(cudaMemcpyAsync(host, d, 4 * sizeof(float), cudaMemcpyHostToDevice,
                       s) == cudaErrorInvalidValue,
       "a copy of the wrong kind is refused");
    (void) cudaGetLastError();

    /* graphs: replays read the device memory of their time */
    ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal)
       == cudaSuccess, "capture begins");
    k_add<<<1, 32, 0, s>>>(d, d, 4);
    ok(cudaStreamEndCapture(s, &g) == cudaSuccess && g != NULL,
       "capture ends with a graph");
    cudaGraphInstantiate(&ge, g, 0);

    cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    ok(pinned[1] == 2.0f, "capturing ran nothing (%g)", pinned[1]);

    cudaGraphLaunch(ge, s);
    cudaGraphLaunch(ge, s);
    cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s);
    cudaStreamSynchronize(s);
    ok(pinned[1] == 8.0f, "two replays doubled it twice (%g)", pinned[1]);

    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);

    /* what a capture forbids */
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    k_add<<<1, 32, 0, s>>>(d, d, 4);
    {
        void  *p;

        ok(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported,
           "cudaMalloc while capturing is refused");
    }
    ok(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated
       && g == NULL, "and the capture is invalidated");
    (void) cudaGetLastError();

    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    ok(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported,
       "synchronizing a capturing stream is refused");
    ok(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated,
       "and invalidates its capture");
    (void) cudaGetLastError();

    ok(cudaDeviceSynchronize() == cudaSuccess, "no fault so far");

    cudaFree(d);
    cudaFreeHost(pinned);
    cudaStreamDestroy(s);
}


/* column-major C = op(A) op(B), m x n, k deep, computed here plainly */
static void
test_gemm(void)
{
    int             m = 7, n = 5, k = 33, lda, ldb, bad;
    float          *a, *b, *c, *da, *db, *dc, one = 1.0f, half = 0.5f;
    __half         *a16;
    cublasHandle_t  h;

    cublasCreate(&h);

    a = (float *) malloc(64 * 64 * sizeof(float));
    b = (float *) malloc(64 * 64 * sizeof(float));
    c = (float *) malloc(64 * 64 * sizeof(float));
    a16 = (__half *) malloc(64 * 64 * sizeof(__half));

    for (int i = 0; i < 64 * 64; i++) {
        a[i] = (float) ((i * 13) % 17) / 8.0f - 1.0f;
        b[i] = (float) ((i * 7) % 11) / 4.0f - 1.25f;
        a16[i] = __float2half_rn(a[i]);
    }

    cudaMalloc((void **) &da, 64 * 64 * sizeof(float));
    cudaMalloc((void **) &db, 64 * 64 * sizeof(float));
    cudaMalloc((void **) &dc, 64 * 64 * sizeof(float));

    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            for (int f16 = 0; f16 < 2; f16++) {
                lda = (ta ? k : m) + 3;
                ldb = (tb ? n : k) + 1;

                cudaMemcpy(da, f16 ? (const void *) a16 : (const void *) a,
                           64 * 64 * (f16 ? 2 : 4), cudaMemcpyHostToDevice);
                cudaMemcpy(db, b, 64 * 64 * 4, cudaMemcpyHostToDevice);
                for (int i = 0; i < 64 * 64; i++) {
                    c[i] = 1.0f;
                }
                cudaMemcpy(dc, c, 64 * 64 * 4, cudaMemcpyHostToDevice);

                cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                             tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &one,
                             da, f16 ? CUDA_R_16F : CUDA_R_32F, lda, db,
                             CUDA_R_32F, ldb, &half, dc, CUDA_R_32F, m + 2,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                cudaMemcpy(c, dc, 64 * 64 * 4, cudaMemcpyDeviceToHost);

                bad = 0;
                for (int j = 0; j < n; j++) {
                    for (int i = 0; i < m; i++) {
                        double  s = 0.5;

                        for (int l = 0; l < k; l++) {
                            float  x = ta ? a[i * lda + l] : a[l * lda + i];
                            float  y = tb ? b[l * ldb + j] : b[j * ldb + l];

                            if (f16) {
                                x = __half2float(__float2half_rn(x));
                            }
                            s += (double) x * y;
                        }

                        bad += fabs(c[j * (m + 2) + i] - s) > 1e-4;
                    }
                }

                ok(bad == 0, "cublasGemmEx %s%s %s, beta 0.5: %d wrong",
                   ta ? "T" : "N", tb ? "T" : "N", f16 ? "f16" : "f32",
                   bad);
            }
        }
    }

    ok(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da,
                    CUDA_R_32F, m - 1, db, CUDA_R_32F, k, &half, dc,
                    CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
       == CUBLAS_STATUS_INVALID_VALUE, "a leading dimension too small is "
       "refused");

    ok(cudaDeviceSynchronize() == cudaSuccess, "no fault so far");

    cublasDestroy(h);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    free(a);
    free(b);
    free(c);
    free(a16);
}


/* two devices, one communicator each, driven by this one thread */
static void
test_nccl(void)
{
    float         *d[2], h[2][3];
    ncclComm_t     comm[2];
    ncclUniqueId   id;
    cudaStream_t   s[2];

    ncclGetUniqueId(&id);
    ncclGroupStart();
    for (int r = 0; r < 2; r++) {
        cudaSetDevice(r);
        ok(ncclCommInitRank(&comm[r], 2, id, r) == ncclSuccess,
           "rank %d joins", r);
    }
    ncclGroupEnd();

    for (int r = 0; r < 2; r++) {
        cudaSetDevice(r);
        cudaStreamCreateWithFlags(&s[r], cudaStreamNonBlocking);
        cudaMalloc((void **) &d[r], 3 * sizeof(float));
        for (int i = 0; i < 3; i++) {
            h[r][i] = (float) (r * 10 + i);
        }
        cudaMemcpy(d[r], h[r], sizeof(h[r]), cudaMemcpyHostToDevice);
    }

    ncclGroupStart();
    for (int r = 0; r < 2; r++) {
        cudaSetDevice(r);
        ncclAllReduce(d[r], d[r], 3, ncclFloat32, ncclSum, comm[r], s[r]);
    }
    ncclGroupEnd();

    for (int r = 0; r < 2; r++) {
        cudaSetDevice(r);
        cudaMemcpyAsync(h[r], d[r], sizeof(h[r]), cudaMemcpyDeviceToHost,
                        s[r]);
    }

    ok(h[0][0] == 10.0f && h[0][2] == 14.0f && h[1][1] == 12.0f,
       "all-reduce: both ranks hold the sums (%g %g %g)", h[0][0], h[0][2],
       h[1][1]);

    cudaSetDevice(0);
    k_add<<<1, 32, 0, s[1]>>>(d[1], d[1], 3);
    ok(cudaGetLastError() == cudaErrorInvalidResourceHandle,
       "a launch on device 1's stream with device 0 current is refused");

    ok(ncclAllReduce(d[1], d[1], 3, ncclFloat32, ncclSum, comm[0], s[0])
       == ncclInvalidArgument, "an all-reduce of device 1's buffer on rank "
       "0 is refused");

    for (int r = 0; r < 2; r++) {
        cudaSetDevice(r);
        ncclCommDestroy(comm[r]);
        cudaFree(d[r]);
        cudaStreamDestroy(s[r]);
    }
    cudaSetDevice(0);
}


/* warp matrix products against a loop over the same halves */
static void
test_wmma(void)
{
    float    c[16 * 20], want[16 * 20], *dc, worst;
    __half   a[16 * 40], b[16 * 40], *da, *db;
    uint32_t seed = 777;

    for (int i = 0; i < 16 * 40; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = __float2half_rn((float) ((int) (seed >> 20) - 2048) / 512);
        seed = seed * 1664525u + 1013904223u;
        b[i] = __float2half_rn((float) ((int) (seed >> 20) - 2048) / 512);
    }

    for (int i = 0; i < 16 * 20; i++) {
        c[i] = (float) (i % 7) - 3.0f;
    }

    /* c(i, j) = 2 (c + sum_k a(i, k) b(k, j)); b(k, j) at b[j * 40 + k] */
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 20; j++) {
            double  s = c[i * 20 + j];

            for (int k = 0; k < 32 && j < 16; k++) {
                s += (double) __half2float(a[i * 40 + k])
                     * __half2float(b[j * 40 + k]);
            }

            want[i * 20 + j] = j < 16 ? (float) (2 * s) : c[i * 20 + j];
        }
    }

    cudaMalloc((void **) &da, sizeof(a));
    cudaMalloc((void **) &db, sizeof(b));
    cudaMalloc((void **) &dc, sizeof(c));
    cudaMemcpy(da, a, sizeof(a), cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, sizeof(b), cudaMemcpyHostToDevice);
    cudaMemcpy(dc, c, sizeof(c), cudaMemcpyHostToDevice);

    k_wmma<<<1, 32>>>(dc, da, db, 0);
    ok(cudaMemcpy(c, dc, sizeof(c), cudaMemcpyDeviceToHost) == cudaSuccess,
       "a warp's matrix products run");

    worst = 0.0f;
    for (int i = 0; i < 16 * 20; i++) {
        worst = fmaxf(worst, fabsf(c[i] - want[i]));
    }

    ok(worst < 1e-4f, "wmma 16x16x16: a (row-major) b (col-major) + c, "
       "scaled element-wise, as a loop computes it (worst %g)", worst);

    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
}


/* ----------------------------------------------------- fault cases */

static int
fault_barrier(void)
{
    float  *d;

    cudaMalloc((void **) &d, 64 * sizeof(float));
    k_bad_barrier<<<1, 64>>>(d);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure
           && cudaMemset(d, 0, 4) == cudaErrorLaunchFailure;
}


static int
fault_shuffle(void)
{
    float  *d;

    cudaMalloc((void **) &d, 32 * sizeof(float));
    k_bad_shuffle<<<1, 32>>>(d);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure;
}


static int
fault_host_pointer(void)
{
    float  *d, *host = (float *) malloc(16);

    cudaMalloc((void **) &d, 16);
    k_read<<<1, 1>>>(d, host, 0);
    return cudaGetLastError() == cudaSuccess
           && cudaDeviceSynchronize() == cudaErrorIllegalAddress;
}


static int
fault_past_end(void)
{
    float  *d, *o;

    cudaMalloc((void **) &d, 100 * sizeof(float));
    cudaMalloc((void **) &o, sizeof(float));
    k_read<<<1, 1>>>(o, d, 100 + 1024);
    cudaDeviceSynchronize();
    return 0;                                   /* not reached */
}


/* k_wmma with threads lanes, a's tile off bytes off alignment: true if
 * the launch failed */
static int
wmma_fails(int threads, int off)
{
    float   *c;
    __half  *a, *b;

    cudaMalloc((void **) &a, 16 * 40 * sizeof(__half));
    cudaMalloc((void **) &b, 16 * 40 * sizeof(__half));
    cudaMalloc((void **) &c, 16 * 20 * sizeof(float));
    k_wmma<<<1, threads>>>(c, a, b, off / 2);
    return cudaDeviceSynchronize() == cudaErrorLaunchFailure;
}


static int fault_wmma_align(void) { return wmma_fails(32, 16); }
static int fault_wmma_lanes(void) { return wmma_fails(16, 0); }


/* runs f in a child: 1 if it returned true, or was killed by SIGSEGV
 * when want_segv */
static int
in_child(int (*f)(void), int want_segv)
{
    int    st;
    pid_t  pid;

    fflush(stdout);
    pid = fork();

    if (pid == 0) {
        /* quiet: the emulator says what it caught on stderr */
        if (freopen("/dev/null", "w", stderr) == NULL) {
            _exit(3);
        }
        _exit(f() ? 0 : 1);
    }

    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        return 0;
    }

    if (want_segv) {
        return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
    }

    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}


int
main(void)
{
    int  n;

    /* two devices for the NCCL case; the faults provoked here are not
     * news on stderr */
    setenv("LLM_EMU_GPUS", "2", 1);
    setenv("LLM_EMU_QUIET", "1", 1);

    ok(cudaGetDeviceCount(&n) == cudaSuccess && n == 2, "two devices");

    test_half();
    test_blocks();
    test_streams();
    test_gemm();
    test_nccl();
    test_wmma();

    ok(in_child(fault_barrier, 0), "a barrier and a shuffle waiting for "
       "each other are a launch failure, sticky");
    ok(in_child(fault_shuffle, 0), "a shuffle naming a lane that exited is "
       "a launch failure");
    ok(in_child(fault_host_pointer, 0), "a kernel given a host pointer "
       "faults with an illegal address");
    ok(in_child(fault_past_end, 1), "a read past a device buffer's end "
       "crashes at the read");
    ok(in_child(fault_wmma_align, 0), "a wmma load off 32-byte alignment "
       "is a launch failure");
    ok(in_child(fault_wmma_lanes, 0), "a wmma operation without the "
       "whole warp is a launch failure");

    return done_testing();
}
