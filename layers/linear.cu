/*
 * layers/linear.cu -- CUDA half of linear (y = x W^T + b): the GEMMs go
 * through bg_gemm (cuBLAS), this file adds the bias kernels: bias add in F
 * (in bf16/fp16 fused with the one rounding of the f32 GEMM result) and
 * the bias-gradient column sum in W. The column sum is also the shared
 * helper other kinds use for their bias gradients (attention).
 * Math and contract as layers/linear.c documents; nothing saved.
 * Must not use atomics for reductions (results must not depend on timing)
 * and must not synchronise with the host.
 */
#include "layers/cuda_common.cuh"

/* ---- kernels ---- */

/* y (rows, cols) += b (cols) per row, in T with an f32 add. */
template <typename T>
__global__ void linear_bias_add_kernel(T *y, const T *b, int64_t rows, int64_t cols)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&y[i], bg_ld(&y[i]) + bg_ld(&b[i % cols]));
}

/* y (rows, cols) = acc + b per row, rounded to T once: the bf16/fp16
 * forward keeps the GEMM's f32 result until the bias is in. */
template <typename T>
__global__ void linear_bias_round_kernel(T *y, const float *acc, const T *b, int64_t rows,
                                         int64_t cols)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&y[i], acc[i] + bg_ld(&b[i % cols]));
}

#define COLSUM_COLS 32 /* columns per block: one warp reads 32 adjacent values */
#define COLSUM_ROWS 32 /* row groups per block */

/*
 * g[j] += sum_r x[r, j]. Block (COLSUM_COLS, COLSUM_ROWS) owns COLSUM_COLS
 * columns; thread (tx, ty) sums rows ty, ty + 32, ... in order, then the 32
 * partial sums meet in a fixed binary tree. Same shape -> same bits.
 */
template <typename T>
__global__ void linear_colsum_add_kernel(const T *x, int64_t rows, int64_t cols, float *g)
{
    __shared__ float part[COLSUM_ROWS][COLSUM_COLS + 1]; /* +1: no bank conflicts */
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t j = (int64_t)blockIdx.x * COLSUM_COLS + tx;
    float acc = 0.0f;
    if (j < cols)
        for (int64_t r = ty; r < rows; r += COLSUM_ROWS)
            acc += bg_ld(&x[r * cols + j]);
    part[ty][tx] = acc;
    for (int s = COLSUM_ROWS / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (ty < s)
            part[ty][tx] += part[ty + s][tx];
    }
    if (ty == 0 && j < cols)
        g[j] += part[0][tx];
}

/* ---- shared launchers (declared in cuda_common.cuh) ---- */

template <typename T>
static bg_status_t bias_add_t(void *y, const void *b, int64_t rows, int64_t cols, cudaStream_t st)
{
    linear_bias_add_kernel<T>
        <<<bg_cuda_blocks(rows * cols, 256), 256, 0, st>>>((T *)y, (const T *)b, rows, cols);
    BG_CUDA_LAUNCH_CHECK("linear_bias_add_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_bias_add(void *y, const void *b, bg_dtype_t dt, int64_t rows, int64_t cols,
                             cudaStream_t st)
{
    if (rows * cols == 0)
        return BG_OK;
    return BG_CUDA_DISPATCH(dt, bias_add_t, y, b, rows, cols, st);
}

template <typename T>
static bg_status_t colsum_add_t(const void *x, int64_t rows, int64_t cols, float *g,
                                cudaStream_t st)
{
    dim3 block(COLSUM_COLS, COLSUM_ROWS);
    unsigned grid = (unsigned)((cols + COLSUM_COLS - 1) / COLSUM_COLS);
    linear_colsum_add_kernel<T><<<grid, block, 0, st>>>((const T *)x, rows, cols, g);
    BG_CUDA_LAUNCH_CHECK("linear_colsum_add_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_colsum_add(const void *x, bg_dtype_t dt, int64_t rows, int64_t cols, float *g,
                               cudaStream_t st)
{
    if (cols == 0)
        return BG_OK;
    if ((cols + COLSUM_COLS - 1) / COLSUM_COLS > INT32_MAX)
        return bg_errorf(BG_ERR_UNSUPPORTED, "cuda colsum: %lld columns is too many",
                         (long long)cols);
    return BG_CUDA_DISPATCH(dt, colsum_add_t, x, rows, cols, g, st);
}

/* ---- linear's F, B, W ---- */

static bool linear_bias(const bg_layer_spec_t *spec)
{
    return bg_attrs_bool(&spec->attrs, "bias", true);
}

template <typename T>
static bg_status_t bias_round_t(void *y, const float *acc, const void *b, int64_t rows,
                                int64_t cols, cudaStream_t st)
{
    linear_bias_round_kernel<T>
        <<<bg_cuda_blocks(rows * cols, 256), 256, 0, st>>>((T *)y, acc, (const T *)b, rows, cols);
    BG_CUDA_LAUNCH_CHECK("linear_bias_round_kernel");
    return BG_OK;
}

/* The low-precision case of bg_cuda_gemm_bias: f32 scratch, one rounding. */
static bg_status_t gemm_bias_round_once(bg_backend_t *be, bg_stream_t *s, bg_gemm_args_t *g,
                                        const void *bias, bg_dtype_t dt, cudaStream_t st)
{
    float *acc = NULL;
    size_t n = (size_t)(g->m * g->n);
    BG_CUDA_CHECK(cudaMallocAsync((void **)&acc, n * sizeof(float) + 4, st));
    void *y = g->c;
    g->c = acc, g->c_dtype = BG_F32;
    bg_status_t r = bg_gemm(be, s, g);
    if (r == BG_OK && n)
        r = BG_CUDA_DISPATCH(dt, bias_round_t, y, acc, bias, g->m, g->n, st);
    cudaError_t e = cudaFreeAsync(acc, st);
    if (r == BG_OK && e != cudaSuccess)
        r = bg_cuda_fail(e, "cudaFreeAsync(gemm+bias scratch)", __FILE__, __LINE__);
    return r;
}

bg_status_t bg_cuda_gemm_bias(bg_backend_t *be, bg_stream_t *s, bg_gemm_args_t *g,
                              const void *bias, bg_dtype_t dt, cudaStream_t st)
{
    if (bias && dt != BG_F32)
        return gemm_bias_round_once(be, s, g, bias, dt, st);
    BG_TRY_STATUS(bg_gemm(be, s, g));
    return bias ? bg_cuda_bias_add(g->c, bias, dt, g->m, g->n, st) : BG_OK;
}

/* y (rows, out) = x (rows, in) @ W^T (in, out) + b, rounded once. */
bg_status_t bg_cuda_linear_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->out);
    bg_gemm_args_t g = {};
    g.trans_b = true;
    g.m = rows, g.n = out, g.k = in;
    g.alpha = 1.0f, g.beta = 0.0f;
    g.a = c->in[0]->data, g.lda = in;
    g.b = c->params[0]->data, g.ldb = in;
    g.c = c->out->data, g.ldc = out;
    g.ab = c->dtype, g.c_dtype = c->dtype;
    return bg_cuda_gemm_bias(c->be, c->stream, &g,
                             linear_bias(c->spec) ? c->params[1]->data : NULL, c->dtype, st);
}

/* dx (rows, in) = dy (rows, out) @ W (out, in). */
bg_status_t bg_cuda_linear_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->dout);
    bg_gemm_args_t g = {};
    g.m = rows, g.n = in, g.k = out;
    g.alpha = 1.0f, g.beta = 0.0f;
    g.a = c->dout->data, g.lda = out;
    g.b = c->params[0]->data, g.ldb = in;
    g.c = c->din[0]->data, g.ldc = in;
    g.ab = c->dtype, g.c_dtype = c->dtype;
    return bg_gemm(c->be, c->stream, &g);
}

/* dW (out, in) += dy^T (out, rows) @ x (rows, in) in f32; db += colsum(dy). */
bg_status_t bg_cuda_linear_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->dout);
    if (c->grads[0]) {
        bg_gemm_args_t g = {};
        g.trans_a = true;
        g.m = out, g.n = in, g.k = rows;
        g.alpha = 1.0f, g.beta = 1.0f;
        g.a = c->dout->data, g.lda = out;
        g.b = c->in[0]->data, g.ldb = in;
        g.c = c->grads[0]->data, g.ldc = in;
        g.ab = c->dtype, g.c_dtype = BG_F32;
        BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    }
    if (linear_bias(c->spec) && c->grads[1])
        BG_TRY_STATUS(
            bg_cuda_colsum_add(c->dout->data, c->dtype, rows, out, (float *)c->grads[1]->data, st));
    return BG_OK;
}
