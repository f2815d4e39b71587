/*
 * layers/rmsnorm.cu -- CUDA half of rmsnorm over the last dim:
 * y = x * rstd * w, rstd = rsqrt(mean(x^2) + eps). F saves rstd (N) in f32
 * (the layout layers/rmsnorm.c fixes, also in bf16 runs); B and W read it.
 * One warp per row for F and B (a lane strides the row: C = 4096 is 128
 * values per lane); W sums over rows per column in a fixed tree (no
 * atomics), so the same shape always gives the same bits.
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh"

#define RMS_ROWS_PER_BLOCK 8 /* warps per block in F and B */
#define RMSW_COLS 32         /* W: columns per block */
#define RMSW_ROWS 32         /* W: row groups per block */

/* ---- kernels ---- */

/* Warp per row: mean of squares, then y = x rstd w. */
template <typename T>
__global__ void rmsnorm_forward_kernel(const T *x, const T *w, T *y, float *rstd, int64_t rows,
                                       int64_t C, float eps)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const T *xr = x + r * C;
    float ss = 0.0f;
    for (int64_t j = lane; j < C; j += 32) {
        float v = bg_ld(&xr[j]);
        ss += v * v;
    }
    float rs = rsqrtf(bg_warp_sum(ss) / (float)C + eps);
    T *yr = y + r * C;
    for (int64_t j = lane; j < C; j += 32)
        bg_st(&yr[j], bg_ld(&xr[j]) * rs * bg_ld(&w[j]));
    if (lane == 0)
        rstd[r] = rs;
}

/* Warp per row: dx = rstd (g - xhat mean(g xhat)), g = dy w, xhat = x rstd. */
template <typename T>
__global__ void rmsnorm_backward_kernel(const T *x, const T *w, const T *dy, const float *rstd,
                                        T *dx, int64_t rows, int64_t C)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const T *xr = x + r * C, *dyr = dy + r * C;
    float rs = rstd[r], sgx = 0.0f;
    for (int64_t j = lane; j < C; j += 32)
        sgx += bg_ld(&dyr[j]) * bg_ld(&w[j]) * bg_ld(&xr[j]) * rs;
    float mgx = bg_warp_sum(sgx) / (float)C;
    T *dxr = dx + r * C;
    for (int64_t j = lane; j < C; j += 32) {
        float g = bg_ld(&dyr[j]) * bg_ld(&w[j]);
        bg_st(&dxr[j], rs * (g - bg_ld(&xr[j]) * rs * mgx));
    }
}

/*
 * gw[j] += sum_r dy[r,j] x[r,j] rstd[r]. Block owns RMSW_COLS columns;
 * thread (tx, ty) takes rows ty, ty + RMSW_ROWS, ... in order and the
 * partials meet in a fixed tree.
 */
template <typename T>
__global__ void rmsnorm_wgrad_kernel(const T *x, const T *dy, const float *rstd, float *gw,
                                     int64_t rows, int64_t C)
{
    __shared__ float pw[RMSW_ROWS][RMSW_COLS + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t j = (int64_t)blockIdx.x * RMSW_COLS + tx;
    float aw = 0.0f;
    if (j < C)
        for (int64_t r = ty; r < rows; r += RMSW_ROWS)
            aw += bg_ld(&dy[r * C + j]) * bg_ld(&x[r * C + j]) * rstd[r];
    pw[ty][tx] = aw;
    for (int s = RMSW_ROWS / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (ty < s)
            pw[ty][tx] += pw[ty + s][tx];
    }
    if (ty == 0 && j < C)
        gw[j] += pw[0][tx];
}

/* ---- launchers ---- */

static unsigned rms_row_blocks(int64_t rows)
{
    return (unsigned)((rows + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
}

template <typename T>
static bg_status_t rmsnorm_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    if (rows * C == 0)
        return BG_OK;
    float eps = (float)bg_attrs_float(&c->spec->attrs, "eps", 1e-5);
    rmsnorm_forward_kernel<T><<<rms_row_blocks(rows), 32 * RMS_ROWS_PER_BLOCK, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->params[0]->data, (T *)c->out->data,
        (float *)c->saved->data, rows, C, eps);
    BG_CUDA_LAUNCH_CHECK("rmsnorm_forward_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t rmsnorm_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    if (rows * C == 0)
        return BG_OK;
    rmsnorm_backward_kernel<T><<<rms_row_blocks(rows), 32 * RMS_ROWS_PER_BLOCK, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->params[0]->data, (const T *)c->dout->data,
        (const float *)c->saved->data, (T *)c->din[0]->data, rows, C);
    BG_CUDA_LAUNCH_CHECK("rmsnorm_backward_kernel");
    return BG_OK;
}

template <typename T> static bg_status_t rmsnorm_wgrad_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    float *gw = c->grads[0] ? (float *)c->grads[0]->data : NULL;
    if (C == 0 || !gw)
        return BG_OK;
    dim3 block(RMSW_COLS, RMSW_ROWS);
    unsigned grid = (unsigned)((C + RMSW_COLS - 1) / RMSW_COLS);
    rmsnorm_wgrad_kernel<T><<<grid, block, 0, st>>>((const T *)c->in[0]->data,
                                                    (const T *)c->dout->data,
                                                    (const float *)c->saved->data, gw, rows, C);
    BG_CUDA_LAUNCH_CHECK("rmsnorm_wgrad_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_rmsnorm_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, rmsnorm_forward_t, c, st);
}

bg_status_t bg_cuda_rmsnorm_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, rmsnorm_backward_t, c, st);
}

bg_status_t bg_cuda_rmsnorm_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, rmsnorm_wgrad_t, c, st);
}
