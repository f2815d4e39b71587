/*
 * layers/cross_entropy.cu -- CUDA half of fused softmax + mean NLL:
 * logits (R, V), targets i32 (R) -> loss f32 [1] = (1/R) sum_r (lse_r - x[r, t_r]).
 * F: block per row computes lse_r (max-shifted, f32; saved, f32 as
 * layers/cross_entropy.c fixes), then ONE block reduces the R row losses in
 * a fixed order (double accumulators, a fixed tree): no atomics, so the loss
 * has the same bits every run. B: dlogits = (softmax - onehot) * dloss / R
 * with dloss read from dout on the device (no host sync).
 * Out-of-range targets: checking on the host would need a sync, so the
 * row's loss is NaN (the mean, which the host reads, turns NaN) and B writes
 * NaN over that row's gradient; nothing is read or written out of bounds.
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh"

#include <math.h>

#define CE_THREADS 256      /* per row in F and B */
#define CE_SUM_THREADS 1024 /* the single block of the mean */

/* ---- kernels ---- */

/* Block per row: lse[r] = max + log(sum exp(x - max)). */
template <typename T> __global__ void ce_lse_kernel(const T *x, float *lse, int64_t V)
{
    __shared__ float sh[32];
    const T *row = x + (int64_t)blockIdx.x * V;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
        mx = fmaxf(mx, bg_ld(&row[j]));
    mx = bg_block_max(mx, sh);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
        s += expf(bg_ld(&row[j]) - mx);
    s = bg_block_sum(s, sh);
    if (threadIdx.x == 0)
        lse[blockIdx.x] = mx + logf(s);
}

/*
 * One block: out[0] = mean over rows of lse[r] - x[r, t_r]. Thread i sums
 * rows i, i + blockDim, ... in order, then a fixed shared-memory tree.
 */
template <typename T>
__global__ void ce_mean_kernel(const T *x, const int32_t *tg, const float *lse, float *out,
                               int64_t rows, int64_t V)
{
    __shared__ double part[CE_SUM_THREADS];
    double acc = 0.0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        int32_t t = tg[r];
        if (t < 0 || t >= V)
            acc += (double)__int_as_float(0x7fc00000); /* see file comment */
        else
            acc += (double)lse[r] - (double)bg_ld(&x[r * V + t]);
    }
    part[threadIdx.x] = acc;
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
    }
    if (threadIdx.x == 0)
        out[0] = (float)(part[0] / (double)rows);
}

/* Block per row: dx[r, j] = (exp(x - lse) - [j == t]) * dloss / R. */
template <typename T>
__global__ void ce_backward_kernel(const T *x, const int32_t *tg, const float *lse,
                                   const float *dloss, T *dx, int64_t rows, int64_t V)
{
    int64_t r = blockIdx.x;
    const T *row = x + r * V;
    T *drow = dx + r * V;
    int32_t t = tg[r];
    float g = dloss[0] / (float)rows, l = lse[r];
    bool bad = t < 0 || t >= V;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float p = expf(bg_ld(&row[j]) - l);
        float d = bad ? __int_as_float(0x7fc00000) : (p - (j == t ? 1.0f : 0.0f)) * g;
        bg_st(&drow[j], d);
    }
}

/* ---- launchers ---- */

/* Rows and classes; an empty call has no mean (as the CPU half says). */
static bg_status_t ce_sizes(const bg_layer_call_t *c, int64_t *rows, int64_t *V)
{
    int64_t v = bg_tensor_cols(c->in[0]), r = bg_tensor_rows(c->in[0]);
    if (v <= 0 || r <= 0)
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (cross_entropy): no target positions or no classes "
                         "(rows %lld, classes %lld): the mean loss is undefined",
                         c->spec->name, (long long)r, (long long)v);
    if (r > INT32_MAX)
        return bg_errorf(BG_ERR_UNSUPPORTED, "layer %s (cross_entropy): %lld rows is too many",
                         c->spec->name, (long long)r);
    *rows = r;
    *V = v;
    return BG_OK;
}

template <typename T> static bg_status_t ce_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t rows = 0, V = 0;
    BG_TRY_STATUS(ce_sizes(c, &rows, &V));
    const T *x = (const T *)c->in[0]->data;
    float *lse = (float *)c->saved->data;
    ce_lse_kernel<T><<<(unsigned)rows, CE_THREADS, 0, st>>>(x, lse, V);
    BG_CUDA_LAUNCH_CHECK("ce_lse_kernel");
    ce_mean_kernel<T><<<1, CE_SUM_THREADS, 0, st>>>(x, (const int32_t *)c->in[1]->data, lse,
                                                    (float *)c->out->data, rows, V);
    BG_CUDA_LAUNCH_CHECK("ce_mean_kernel");
    return BG_OK;
}

template <typename T> static bg_status_t ce_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t rows = 0, V = 0;
    BG_TRY_STATUS(ce_sizes(c, &rows, &V));
    ce_backward_kernel<T><<<(unsigned)rows, CE_THREADS, 0, st>>>(
        (const T *)c->in[0]->data, (const int32_t *)c->in[1]->data, (const float *)c->saved->data,
        (const float *)c->dout->data, (T *)c->din[0]->data, rows, V);
    BG_CUDA_LAUNCH_CHECK("ce_backward_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_cross_entropy_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, ce_forward_t, c, st);
}

bg_status_t bg_cuda_cross_entropy_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, ce_backward_t, c, st);
}
