/*
 * layers/layernorm.cu -- CUDA half of layernorm over the last dim:
 * y = (x - mean) * rstd * w + b. F saves mean (N) | rstd (N) in f32 (the
 * layout layers/layernorm.c fixes, also in bf16 runs); B and W read them.
 * One warp per row for F and B (rows are short: C = 768 is 24 values per
 * lane); W sums over rows per column in a fixed tree (no atomics).
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh"

#define LN_ROWS_PER_BLOCK 8 /* warps per block in F and B */
#define LNW_COLS 32         /* W: columns per block */
#define LNW_ROWS 32         /* W: row groups per block */

/* ---- kernels ---- */

/*
 * Warp per row: mean, then the biased variance around it (two passes over
 * the row: no cancellation when rows sit far from 0), then y.
 */
template <typename T>
__global__ void layernorm_forward_kernel(const T *x, const T *w, const T *b, T *y, float *mean,
                                         float *rstd, int64_t rows, int64_t C, float eps)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const T *xr = x + r * C;
    float s = 0.0f;
    for (int64_t j = lane; j < C; j += 32)
        s += bg_ld(&xr[j]);
    float m = bg_warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int64_t j = lane; j < C; j += 32) {
        float d = bg_ld(&xr[j]) - m;
        v += d * d;
    }
    float rs = rsqrtf(bg_warp_sum(v) / (float)C + eps);
    T *yr = y + r * C;
    for (int64_t j = lane; j < C; j += 32)
        bg_st(&yr[j], (bg_ld(&xr[j]) - m) * rs * bg_ld(&w[j]) + bg_ld(&b[j]));
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

/* Warp per row: dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w. */
template <typename T>
__global__ void layernorm_backward_kernel(const T *x, const T *w, const T *dy, const float *mean,
                                          const float *rstd, T *dx, int64_t rows, int64_t C)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const T *xr = x + r * C, *dyr = dy + r * C;
    float m = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = lane; j < C; j += 32) {
        float g = bg_ld(&dyr[j]) * bg_ld(&w[j]);
        sg += g;
        sgx += g * (bg_ld(&xr[j]) - m) * rs;
    }
    float mg = bg_warp_sum(sg) / (float)C, mgx = bg_warp_sum(sgx) / (float)C;
    T *dxr = dx + r * C;
    for (int64_t j = lane; j < C; j += 32) {
        float g = bg_ld(&dyr[j]) * bg_ld(&w[j]);
        float xh = (bg_ld(&xr[j]) - m) * rs;
        bg_st(&dxr[j], rs * (g - mg - xh * mgx));
    }
}

/*
 * dw[j] += sum_r dy[r,j] xhat[r,j]; db[j] += sum_r dy[r,j]. Block owns
 * LNW_COLS columns; thread (tx, ty) takes rows ty, ty + LNW_ROWS, ... in
 * order and the partials meet in a fixed tree: same shape, same bits.
 */
template <typename T>
__global__ void layernorm_wgrad_kernel(const T *x, const T *dy, const float *mean,
                                       const float *rstd, float *gw, float *gb, int64_t rows,
                                       int64_t C)
{
    __shared__ float pw[LNW_ROWS][LNW_COLS + 1], pb[LNW_ROWS][LNW_COLS + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t j = (int64_t)blockIdx.x * LNW_COLS + tx;
    float aw = 0.0f, ab = 0.0f;
    if (j < C) {
        for (int64_t r = ty; r < rows; r += LNW_ROWS) {
            float d = bg_ld(&dy[r * C + j]);
            aw += d * (bg_ld(&x[r * C + j]) - mean[r]) * rstd[r];
            ab += d;
        }
    }
    pw[ty][tx] = aw;
    pb[ty][tx] = ab;
    for (int s = LNW_ROWS / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (ty < s) {
            pw[ty][tx] += pw[ty + s][tx];
            pb[ty][tx] += pb[ty + s][tx];
        }
    }
    if (ty == 0 && j < C) {
        if (gw)
            gw[j] += pw[0][tx];
        if (gb)
            gb[j] += pb[0][tx];
    }
}

/* ---- launchers ---- */

/* Rows, columns and the saved mean/rstd arrays of a call. */
static void ln_dims(const bg_layer_call_t *c, int64_t *rows, int64_t *C, float **mean, float **rstd)
{
    *C = bg_tensor_cols(c->in[0]);
    *rows = bg_tensor_rows(c->in[0]);
    *mean = (float *)c->saved->data;
    *rstd = *mean + *rows;
}

static unsigned ln_row_blocks(int64_t rows)
{
    return (unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
}

template <typename T>
static bg_status_t layernorm_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t rows, C;
    float *mean, *rstd;
    ln_dims(c, &rows, &C, &mean, &rstd);
    if (rows * C == 0)
        return BG_OK;
    float eps = (float)bg_attrs_float(&c->spec->attrs, "eps", 1e-5);
    layernorm_forward_kernel<T><<<ln_row_blocks(rows), 32 * LN_ROWS_PER_BLOCK, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->params[0]->data, (const T *)c->params[1]->data,
        (T *)c->out->data, mean, rstd, rows, C, eps);
    BG_CUDA_LAUNCH_CHECK("layernorm_forward_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t layernorm_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t rows, C;
    float *mean, *rstd;
    ln_dims(c, &rows, &C, &mean, &rstd);
    if (rows * C == 0)
        return BG_OK;
    layernorm_backward_kernel<T><<<ln_row_blocks(rows), 32 * LN_ROWS_PER_BLOCK, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->params[0]->data, (const T *)c->dout->data, mean,
        rstd, (T *)c->din[0]->data, rows, C);
    BG_CUDA_LAUNCH_CHECK("layernorm_backward_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t layernorm_wgrad_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t rows, C;
    float *mean, *rstd;
    ln_dims(c, &rows, &C, &mean, &rstd);
    float *gw = c->grads[0] ? (float *)c->grads[0]->data : NULL;
    float *gb = c->grads[1] ? (float *)c->grads[1]->data : NULL;
    if (C == 0 || (!gw && !gb))
        return BG_OK;
    dim3 block(LNW_COLS, LNW_ROWS);
    unsigned grid = (unsigned)((C + LNW_COLS - 1) / LNW_COLS);
    layernorm_wgrad_kernel<T><<<grid, block, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->dout->data, mean, rstd, gw, gb, rows, C);
    BG_CUDA_LAUNCH_CHECK("layernorm_wgrad_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_layernorm_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, layernorm_forward_t, c, st);
}

bg_status_t bg_cuda_layernorm_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, layernorm_backward_t, c, st);
}

bg_status_t bg_cuda_layernorm_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, layernorm_wgrad_t, c, st);
}
