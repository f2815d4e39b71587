/*
 * transport/reduce_cuda.cu -- device kernels for allreduce: dst += src and
 * x /= divisor on f32 and bf16, element for element the same IEEE
 * operations as reduce.c so host and device reductions agree bit for bit.
 *
 * Must NOT: use fused multiply-add or fast-math rewrites (division stays a
 * true IEEE division), or run on the caller's streams (a private stream
 * keeps the engine's compute streams unblocked).
 */
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "base/status.h"
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

__global__ void sum_f32(float *d, const float *s, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = __fadd_rn(d[i], s[i]);
}

__global__ void sum_bf16(uint16_t *d, const uint16_t *s, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = f32_to_bf16(__fadd_rn(bf16_to_f32(d[i]), bf16_to_f32(s[i])));
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

cudaStream_t g_stream;
bool g_stream_ok;

bg_status_t launch_done(const char *what)
{
    cudaError_t ce = cudaGetLastError();
    if (ce == cudaSuccess) ce = cudaStreamSynchronize(g_stream);
    if (ce != cudaSuccess)
        return bg_errorf(BG_ERR_CUDA, "allreduce %s kernel: %s", what, cudaGetErrorString(ce));
    return BG_OK;
}

bg_status_t stream()
{
    if (g_stream_ok) return BG_OK;
    cudaError_t ce = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess)
        return bg_errorf(BG_ERR_CUDA, "allreduce: cudaStreamCreate: %s", cudaGetErrorString(ce));
    g_stream_ok = true;
    return BG_OK;
}

unsigned grid(size_t n)
{
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 1024 ? (b ? b : 1) : 1024);
}

} // namespace

extern "C" bg_status_t bg_tp_cuda_reduce_sum(void *dst, const void *src, size_t n, int dt)
{
    bg_status_t st = stream();
    if (st != BG_OK) return st;
    if (dt == 0)
        sum_f32<<<grid(n), 256, 0, g_stream>>>((float *)dst, (const float *)src, n);
    else
        sum_bf16<<<grid(n), 256, 0, g_stream>>>((uint16_t *)dst, (const uint16_t *)src, n);
    return launch_done("sum");
}

extern "C" bg_status_t bg_tp_cuda_reduce_div(void *x, size_t n, int dt, int divisor)
{
    bg_status_t st = stream();
    if (st != BG_OK) return st;
    if (dt == 0)
        div_f32<<<grid(n), 256, 0, g_stream>>>((float *)x, n, (float)divisor);
    else
        div_bf16<<<grid(n), 256, 0, g_stream>>>((uint16_t *)x, n, (float)divisor);
    return launch_done("divide");
}
