/*
 * layers/optim.cu -- the training step's flat-buffer operations on the
 * CUDA backend (backend.h): fused SGD/AdamW, per-segment sums of squares,
 * scale, add and dtype casts. One launch per flat buffer (the sums of
 * squares: two, chunks then segments), all on the caller's stream.
 *
 * The update is the same expression, element by element, as the CPU
 * backend's (layers/backend_cpu_step.c), with contraction into FMA turned
 * off (__fmul_rn/__fadd_rn) so the bits match it. A segment's sum of
 * squares: each BG_SUMSQ_CHUNK-element chunk in one block (per-thread
 * strided sums, then a fixed tree, in double), chunk partials added in
 * chunk order: deterministic, though not the CPU's bits (another tree).
 * Must not use atomics, synchronise with the host, or know about
 * parameters and optimizers' schedules.
 */
#include "layers/cuda_common.cuh"

#define STEP_THREADS 256

/* Segment of element e: the last i with off[i] <= e (off ascending). */
__device__ __forceinline__ int seg_find(const int64_t *off, int n, int64_t e)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (off[mid] <= e)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* ---- fused update ---- */

/* Every multiply and add rounded on its own (no FMA), in the CPU's order. */
__global__ void step_update_kernel(bg_step_args_t a, const int64_t *off, const uint8_t *decay,
                                   int n, int64_t total, float *p, const float *g, float *s0,
                                   float *s1)
{
    float c1 = __fsub_rn(1.0f, a.beta1), c2 = __fsub_rn(1.0f, a.beta2);
    for (int64_t i = off[0] + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float wd = decay[seg_find(off, n, i)] ? a.weight_decay : 0.0f;
        float pi = p[i];
        if (a.kind == BG_STEP_SGD) {
            float gi = __fadd_rn(__fmul_rn(g[i], a.gscale), __fmul_rn(wd, pi));
            float m = __fadd_rn(__fmul_rn(a.momentum, s0[i]), gi);
            s0[i] = m;
            p[i] = __fsub_rn(pi, __fmul_rn(a.lr, m));
            continue;
        }
        float gi = __fmul_rn(g[i], a.gscale);
        float m = __fadd_rn(__fmul_rn(a.beta1, s0[i]), __fmul_rn(c1, gi));
        float v = __fadd_rn(__fmul_rn(a.beta2, s1[i]), __fmul_rn(__fmul_rn(c2, gi), gi));
        s0[i] = m, s1[i] = v;
        float mhat = __fdiv_rn(m, a.bc1), vhat = __fdiv_rn(v, a.bc2);
        float u = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), a.eps)), __fmul_rn(wd, pi));
        p[i] = __fsub_rn(pi, __fmul_rn(a.lr, u));
    }
}

bg_status_t bg_cuda_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                                const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                                float *s1)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(be, s, &st));
    if (segs->n <= 0)
        return BG_OK;
    int64_t total = segs->off_h[segs->n], n = total - segs->off_h[0];
    step_update_kernel<<<bg_cuda_blocks(n, STEP_THREADS), STEP_THREADS, 0, st>>>(
        *a, segs->off, segs->decay, segs->n, total, p, g, s0, s1);
    BG_CUDA_LAUNCH_CHECK("step_update_kernel");
    return BG_OK;
}

/* ---- sums of squares ---- */

/* part[c] = sum of squares of chunk c (double): block-strided, then a
 * fixed shared-memory tree. */
__global__ void step_sumsq_chunks_kernel(const float *x, const int64_t *off, const int64_t *chunk0,
                                         int n, int64_t nchunks, double *part)
{
    __shared__ double sh[STEP_THREADS];
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
        int sg = seg_find(chunk0, n, c);
        int64_t a = off[sg] + (c - chunk0[sg]) * BG_SUMSQ_CHUNK;
        int64_t b = a + BG_SUMSQ_CHUNK < off[sg + 1] ? a + BG_SUMSQ_CHUNK : off[sg + 1];
        double acc = 0.0;
        for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x)
            acc += (double)x[i] * (double)x[i];
        sh[threadIdx.x] = acc;
        for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            __syncthreads();
            if ((int)threadIdx.x < w)
                sh[threadIdx.x] += sh[threadIdx.x + w];
        }
        if (threadIdx.x == 0)
            part[c] = sh[0];
        __syncthreads();
    }
}

/* out[i] = the segment's chunk partials added in chunk order, as f32. */
__global__ void step_sumsq_segs_kernel(const double *part, const int64_t *chunk0, int n, float *out)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        double t = 0.0;
        for (int64_t c = chunk0[i]; c < chunk0[i + 1]; c++)
            t += part[c];
        out[i] = (float)t;
    }
}

bg_status_t bg_cuda_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                               const float *x, float *out)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(be, s, &st));
    if (segs->n <= 0)
        return BG_OK;
    double *part = NULL;
    /* stream-ordered pool (kept by the backend): no device-wide sync */
    BG_CUDA_CHECK(
        cudaMallocAsync((void **)&part, sizeof(double) * (size_t)(segs->nchunks + 1), st));
    unsigned blocks =
        segs->nchunks < 65535 * 4 ? (unsigned)(segs->nchunks > 0 ? segs->nchunks : 1) : 65535u * 4;
    step_sumsq_chunks_kernel<<<blocks, STEP_THREADS, 0, st>>>(x, segs->off, segs->chunk0, segs->n,
                                                              segs->nchunks, part);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        step_sumsq_segs_kernel<<<bg_cuda_blocks(segs->n, 128), 128, 0, st>>>(part, segs->chunk0,
                                                                             segs->n, out);
        e = cudaGetLastError();
    }
    cudaError_t f = cudaFreeAsync(part, st);
    if (e != cudaSuccess)
        return bg_cuda_fail(e, "launch of step_sumsq kernels", __FILE__, __LINE__);
    BG_CUDA_CHECK(f);
    return BG_OK;
}

/* ---- scale, add, cast ---- */

__global__ void step_scale_kernel(float *x, float a, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], a);
}

__global__ void step_add_kernel(float *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

template <typename D, typename S> __global__ void step_cast_kernel(D *dst, const S *src, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&dst[i], bg_ld(&src[i]));
}

bg_status_t bg_cuda_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(be, s, &st));
    step_scale_kernel<<<bg_cuda_blocks(n, STEP_THREADS), STEP_THREADS, 0, st>>>(x, a, n);
    BG_CUDA_LAUNCH_CHECK("step_scale_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(be, s, &st));
    step_add_kernel<<<bg_cuda_blocks(n, STEP_THREADS), STEP_THREADS, 0, st>>>(y, x, n);
    BG_CUDA_LAUNCH_CHECK("step_add_kernel");
    return BG_OK;
}

template <typename D, typename S>
static bg_status_t cast_t(void *dst, const void *src, int64_t n, cudaStream_t st)
{
    step_cast_kernel<D, S>
        <<<bg_cuda_blocks(n, STEP_THREADS), STEP_THREADS, 0, st>>>((D *)dst, (const S *)src, n);
    BG_CUDA_LAUNCH_CHECK("step_cast_kernel");
    return BG_OK;
}

/* The two directions a cast takes, each templated on its low-precision
 * side alone, for BG_CUDA_DISPATCH. */
template <typename D>
static bg_status_t cast_narrow_t(void *dst, const void *src, int64_t n, cudaStream_t st)
{
    return cast_t<D, float>(dst, src, n, st);
}
template <typename S>
static bg_status_t cast_widen_t(void *dst, const void *src, int64_t n, cudaStream_t st)
{
    return cast_t<float, S>(dst, src, n, st);
}

bg_status_t bg_cuda_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                              const void *src, bg_dtype_t src_dt, int64_t n)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(be, s, &st));
    if (dst_dt == src_dt) {
        BG_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * bg_dtype_size(dst_dt),
                                      cudaMemcpyDeviceToDevice, st));
        return BG_OK;
    }
    /* one side is f32 (bg_step_cast checks); equal dtypes were copied above */
    if (src_dt == BG_F32)
        return BG_CUDA_DISPATCH(dst_dt, cast_narrow_t, dst, src, n, st);
    return BG_CUDA_DISPATCH(src_dt, cast_widen_t, dst, src, n, st);
}
