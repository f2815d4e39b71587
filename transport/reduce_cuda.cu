/*
 * transport/reduce_cuda.cu -- device reductions for the collectives:
 * dst += src and x /= divisor on f32 and bf16, element for element the
 * same IEEE operations as reduce.c so host and device agree bit for bit,
 * queued on a reducer's own stream (one per group, created on the
 * context's device) and completed through reusable timing-free events.
 *
 * Must NOT: use fused multiply-add or fast-math rewrites (division stays a
 * true IEEE division), run on the caller's streams (a private stream keeps
 * the engine's compute streams unblocked), synchronise per segment (the
 * caller polls an event), or leave the caller's current device changed.
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "base/grow.h"
#include "transport/reduce.h"
}

namespace {

__device__ inline float bf16_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

__device__ inline uint16_t f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* One thread per element (grid-stride): dst += src, then / dv when dv > 1. */
__global__ void sum_f32(float *d, const float *s, size_t n, float dv)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = __fadd_rn(d[i], s[i]);
        d[i] = dv > 1.0f ? __fdiv_rn(v, dv) : v;
    }
}

__global__ void sum_bf16(uint16_t *d, const uint16_t *s, size_t n, float dv)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* Two roundings when averaging, as on the host: the sum is stored
         * as bf16 first, then divided. */
        uint16_t v = f32_to_bf16(__fadd_rn(bf16_to_f32(d[i]), bf16_to_f32(s[i])));
        d[i] = dv > 1.0f ? f32_to_bf16(__fdiv_rn(bf16_to_f32(v), dv)) : v;
    }
}

__global__ void div_f32(float *x, size_t n, float dv)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fdiv_rn(x[i], dv);
}

__global__ void div_bf16(uint16_t *x, size_t n, float dv)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = f32_to_bf16(__fdiv_rn(bf16_to_f32(x[i]), dv));
}

unsigned grid(size_t n)
{
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 1024 ? (b ? b : 1) : 1024);
}

/* Make `device` current for a scope (-1: leave the current one) and give
 * the caller its own back. */
struct device_guard {
    int prev = -1;
    cudaError_t ce = cudaSuccess;
    explicit device_guard(int device)
    {
        if (device < 0) return; /* no device named: stay on the current one */
        ce = cudaGetDevice(&prev);
        if (ce == cudaSuccess && prev != device) ce = cudaSetDevice(device);
        else prev = -1;
    }
    ~device_guard()
    {
        if (prev >= 0) cudaSetDevice(prev);
    }
};

bg_status_t cuda_err(const char *what, cudaError_t ce)
{
    return bg_errorf(BG_ERR_CUDA, "collective: %s: %s", what, cudaGetErrorString(ce));
}

} // namespace

struct bg_tp_cuda_red {
    int device;
    cudaStream_t stream;
    cudaEvent_t *pool; /* idle events */
    size_t npool, cap;
};

extern "C" bg_status_t bg_tp_cuda_red_create(int device, bg_tp_cuda_red_t **out)
{
    bg_tp_cuda_red_t *r = (bg_tp_cuda_red_t *)calloc(1, sizeof(*r));
    if (!r) return bg_errorf(BG_ERR_NOMEM, "collective: out of memory for a device reducer");
    r->device = device;
    device_guard g(device);
    if (g.ce != cudaSuccess) {
        free(r);
        return cuda_err("cudaSetDevice for the reduction stream", g.ce);
    }
    /* Created with the context's device current: a stream belongs to the
     * device current at its creation, and kernels must launch there. */
    cudaError_t ce = cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess) {
        free(r);
        return cuda_err("cudaStreamCreate (reduction stream)", ce);
    }
    *out = r;
    return BG_OK;
}

extern "C" void bg_tp_cuda_red_destroy(bg_tp_cuda_red_t *r)
{
    if (!r) return;
    device_guard g(r->device);
    cudaStreamSynchronize(r->stream);
    for (size_t i = 0; i < r->npool; i++) cudaEventDestroy(r->pool[i]);
    cudaStreamDestroy(r->stream);
    free(r->pool);
    free(r);
}

extern "C" cudaStream_t bg_tp_cuda_red_stream(bg_tp_cuda_red_t *r)
{
    return r->stream;
}

extern "C" bg_status_t bg_tp_cuda_red_event_get(bg_tp_cuda_red_t *r, cudaEvent_t *out)
{
    if (r->npool) {
        *out = r->pool[--r->npool];
        return BG_OK;
    }
    device_guard g(r->device);
    /* No timing: a timing event costs a timestamp write per record and is
     * never read here. */
    cudaError_t ce = g.ce == cudaSuccess ? cudaEventCreateWithFlags(out, cudaEventDisableTiming)
                                         : g.ce;
    return ce == cudaSuccess ? BG_OK : cuda_err("cudaEventCreate", ce);
}

extern "C" void bg_tp_cuda_red_event_put(bg_tp_cuda_red_t *r, cudaEvent_t ev)
{
    if (bg_grow(&r->pool, &r->cap, r->npool + 1, sizeof(*r->pool)) != 0) {
        cudaEventDestroy(ev); /* no room to keep it: not kept, not leaked */
        return;
    }
    r->pool[r->npool++] = ev;
}

/* After a launch: the launch's own error, then the completion event. */
static bg_status_t launched(bg_tp_cuda_red_t *r, const char *what, cudaEvent_t ev)
{
    cudaError_t ce = cudaGetLastError();
    if (ce == cudaSuccess) ce = cudaEventRecord(ev, r->stream);
    return ce == cudaSuccess ? BG_OK : cuda_err(what, ce);
}

extern "C" bg_status_t bg_tp_cuda_red_sum(bg_tp_cuda_red_t *r, void *dst, const void *src,
                                          size_t n, bg_tp_dtype_t dt, int divisor, cudaEvent_t ev)
{
    device_guard g(r->device);
    if (g.ce != cudaSuccess) return cuda_err("cudaSetDevice", g.ce);
    float dv = (float)divisor;
    if (dt == BG_TP_F32)
        sum_f32<<<grid(n), 256, 0, r->stream>>>((float *)dst, (const float *)src, n, dv);
    else
        sum_bf16<<<grid(n), 256, 0, r->stream>>>((uint16_t *)dst, (const uint16_t *)src, n, dv);
    return launched(r, "sum kernel", ev);
}

extern "C" bg_status_t bg_tp_cuda_red_div(bg_tp_cuda_red_t *r, void *x, size_t n, bg_tp_dtype_t dt,
                                          int divisor, cudaEvent_t ev)
{
    device_guard g(r->device);
    if (g.ce != cudaSuccess) return cuda_err("cudaSetDevice", g.ce);
    if (dt == BG_TP_F32)
        div_f32<<<grid(n), 256, 0, r->stream>>>((float *)x, n, (float)divisor);
    else
        div_bf16<<<grid(n), 256, 0, r->stream>>>((uint16_t *)x, n, (float)divisor);
    return launched(r, "divide kernel", ev);
}

extern "C" int bg_tp_cuda_event_done(cudaEvent_t ev, const char *what)
{
    cudaError_t ce = cudaEventQuery(ev);
    if (ce == cudaSuccess) return 1;
    if (ce == cudaErrorNotReady) {
        /* Why: cudaErrorNotReady is also left as this thread's last error,
         * so the next launch check anywhere (ours or the engine's) would
         * report a failure that never happened. Clear only that one. */
        if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
        return 0;
    }
    cudaGetLastError();
    bg_errorf(BG_ERR_CUDA, "collective: %s: %s", what, cudaGetErrorString(ce));
    return -1;
}

extern "C" bg_status_t bg_tp_cuda_alloc(int device, size_t bytes, void **out)
{
    device_guard g(device);
    void *p = NULL;
    cudaError_t ce = g.ce == cudaSuccess ? cudaMalloc(&p, bytes) : g.ce;
    if (ce != cudaSuccess)
        return bg_errorf(BG_ERR_CUDA, "collective: cudaMalloc(%zu) on device %d: %s", bytes,
                         device, cudaGetErrorString(ce));
    *out = p;
    return BG_OK;
}

extern "C" void bg_tp_cuda_free(int device, void *p)
{
    device_guard g(device);
    cudaFree(p);
}
