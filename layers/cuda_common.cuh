/*
 * layers/cuda_common.cuh -- what every CUDA file of layers/ shares:
 * status-checking macros that turn cudaError_t / cublasStatus_t into a
 * bg_status_t with the failing call, the library's message and file:line;
 * bf16/fp16/f32 load-store helpers for templated kernels and the one dtype
 * dispatch; deterministic warp and block reductions; and access to the
 * backend's streams.
 * Included by .cu files only. Must not hold state, launch work, or know
 * about any layer kind's math.
 */
#ifndef BG_CUDA_COMMON_CUH
#define BG_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* The project headers are C: give their functions C linkage here, before
 * kernels_cuda.h includes them again (the include guards keep this one). */
extern "C" {
#include "base/status.h"
#include "layers/backend_impl.h"
#include "layers/layer.h"
#include "layers/tensor.h"
}
#include "layers/kernels_cuda.h"

/* ---- status conversion ---- */

/* Record a failed CUDA runtime call; returns BG_ERR_CUDA. */
static inline bg_status_t bg_cuda_fail(cudaError_t e, const char *call, const char *file, int line)
{
    return bg_errorf(BG_ERR_CUDA, "%s failed: %s (%s) at %s:%d", call, cudaGetErrorString(e),
                     cudaGetErrorName(e), file, line);
}

/* Record a failed cuBLAS call; returns BG_ERR_CUDA. */
static inline bg_status_t bg_cublas_fail(cublasStatus_t s, const char *call, const char *file,
                                         int line)
{
    return bg_errorf(BG_ERR_CUDA, "%s failed: %s (%s) at %s:%d", call, cublasGetStatusString(s),
                     cublasGetStatusName(s), file, line);
}

/* In a function returning bg_status_t: return on failure. */
#define BG_CUDA_CHECK(call)                                                                        \
    do {                                                                                           \
        cudaError_t bg_e_ = (call);                                                                \
        if (bg_e_ != cudaSuccess)                                                                  \
            return bg_cuda_fail(bg_e_, #call, __FILE__, __LINE__);                                 \
    } while (0)

#define BG_CUBLAS_CHECK(call)                                                                      \
    do {                                                                                           \
        cublasStatus_t bg_s_ = (call);                                                             \
        if (bg_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
            return bg_cublas_fail(bg_s_, #call, __FILE__, __LINE__);                               \
    } while (0)

/* With a `bg_status_t st` in scope: set it and jump to `label` on failure. */
#define BG_CUDA_TRY(call, label)                                                                   \
    do {                                                                                           \
        cudaError_t bg_e_ = (call);                                                                \
        if (bg_e_ != cudaSuccess) {                                                                \
            st = bg_cuda_fail(bg_e_, #call, __FILE__, __LINE__);                                   \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define BG_CUBLAS_TRY(call, label)                                                                 \
    do {                                                                                           \
        cublasStatus_t bg_s_ = (call);                                                             \
        if (bg_s_ != CUBLAS_STATUS_SUCCESS) {                                                      \
            st = bg_cublas_fail(bg_s_, #call, __FILE__, __LINE__);                                 \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

/* After a <<<...>>> launch: configuration errors surface here, not later. */
#define BG_CUDA_LAUNCH_CHECK(kernel_name)                                                          \
    do {                                                                                           \
        cudaError_t bg_e_ = cudaGetLastError();                                                    \
        if (bg_e_ != cudaSuccess)                                                                  \
            return bg_cuda_fail(bg_e_, "launch of " kernel_name, __FILE__, __LINE__);              \
    } while (0)

/* Propagate a status from a helper unchanged (its message is already set). */
#define BG_TRY_STATUS(expr)                                                                        \
    do {                                                                                           \
        bg_status_t bg_st_ = (expr);                                                               \
        if (bg_st_ != BG_OK)                                                                       \
            return bg_st_;                                                                         \
    } while (0)

/* ---- backend access (implemented in backend_cuda.cu) ---- */

/* The cudaStream_t behind `s` (NULL: the backend's own default stream).
 * Also makes the backend's device current on this thread. */
bg_status_t bg_cuda_stream_of(bg_backend_t *be, bg_stream_t *s, cudaStream_t *out);

/* Device properties the launchers size grids by (cached at backend create). */
int bg_cuda_sm_count(bg_backend_t *be);

/* ---- the training step's ops (layers/optim.cu), for the backend table ---- */

bg_status_t bg_cuda_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                                const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                                float *s1);
bg_status_t bg_cuda_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                               const float *x, float *out);
bg_status_t bg_cuda_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n);
bg_status_t bg_cuda_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n);
bg_status_t bg_cuda_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                              const void *src, bg_dtype_t src_dt, int64_t n);

/* ---- element access for templated kernels ---- */

__device__ __forceinline__ float bg_ld(const float *p)
{
    return *p;
}
__device__ __forceinline__ float bg_ld(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}
__device__ __forceinline__ void bg_st(float *p, float v)
{
    *p = v;
}
/* Round to nearest even, like the host bg_f32_to_bf16: one rounding rule. */
__device__ __forceinline__ void bg_st(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}
__device__ __forceinline__ float bg_ld(const __half *p)
{
    return __half2float(*p);
}
/* Nearest even, overflow to inf: the host's bg_f32_to_f16. */
__device__ __forceinline__ void bg_st(__half *p, float v)
{
    *p = __float2half_rn(v);
}

/*
 * fn<T>(args...) with T the element type of compute dtype `dt`:
 * __nv_bfloat16 (bf16), __half (fp16) or float (f32; the layer call checks
 * admit no other). The one place a dtype becomes a template argument, so a
 * kernel templated on T covers every compute dtype with one line.
 */
#define BG_CUDA_DISPATCH(dt, fn, ...)                                                              \
    ((dt) == BG_BF16  ? fn<__nv_bfloat16>(__VA_ARGS__)                                             \
     : (dt) == BG_F16 ? fn<__half>(__VA_ARGS__)                                                    \
                      : fn<float>(__VA_ARGS__))

/* ---- deterministic reductions ----
 * Fixed shuffle trees: the same inputs in the same lanes always give the
 * same bits, which atomics would not. */

__device__ __forceinline__ float bg_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float bg_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/*
 * Sum over a block of blockDim.x threads (a multiple of 32, at most 1024);
 * every thread gets the result. `sh` is 32 floats of shared memory that the
 * caller does not touch in between (two back-to-back calls are fine: the
 * leading __syncthreads guards reuse).
 */
__device__ __forceinline__ float bg_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = bg_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return bg_warp_sum(v);
}

__device__ __forceinline__ float bg_block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = bg_warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return bg_warp_max(v);
}

/* ---- launch geometry ---- */

static inline unsigned bg_cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    /* Grid-stride loops cover the rest: keep the grid within limits. */
    if (b > 65535LL * 32)
        b = 65535LL * 32;
    return (unsigned)(b > 0 ? b : 1);
}

/*
 * Column sums added into an f32 accumulator: g[j] += sum_r x[r, j] for
 * x (rows, cols) row-major in dtype `dt` (implemented in linear.cu; used by
 * linear, attention and layernorm's bias gradients). Deterministic: a fixed
 * reduction tree that depends only on the shape.
 */
bg_status_t bg_cuda_colsum_add(const void *x, bg_dtype_t dt, int64_t rows, int64_t cols, float *g,
                               cudaStream_t st);

/* y[r, j] += b[j] for y (rows, cols) in dtype `dt`, b in dtype `dt`. */
bg_status_t bg_cuda_bias_add(void *y, const void *b, bg_dtype_t dt, int64_t rows, int64_t cols,
                             cudaStream_t st);

/*
 * C (m, n) = the GEMM g (g->c contiguous: ldc == n) + bias[j] (NULL: none),
 * rounded once to `dt`: for bf16/fp16 the GEMM writes f32 into a stream-
 * ordered scratch and one kernel adds the bias and rounds (a low-precision
 * GEMM output plus a separate bias add would round twice). Implemented in
 * linear.cu; used by linear and attention. g->c and g->c_dtype may be
 * changed.
 */
bg_status_t bg_cuda_gemm_bias(bg_backend_t *be, bg_stream_t *s, bg_gemm_args_t *g,
                              const void *bias, bg_dtype_t dt, cudaStream_t st);

#endif
