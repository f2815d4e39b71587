/*
 * layers/swiglu.cu -- CUDA half of swiglu: x (rows, 2H) = (gate a | up b)
 * -> y (rows, H) = silu(a) * b; B recomputes the sigmoid from the kept
 * input (nothing saved), as layers/swiglu.c. No W.
 * Math in f32 whatever the storage dtype. Must not synchronise with the host.
 */
#include "layers/cuda_common.cuh"

/* ---- kernels ---- */

/* Element i of y is row i / H, column i % H. */
template <typename T> __global__ void swiglu_forward_kernel(const T *x, T *y, int64_t n, int64_t H)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / H, j = i - r * H;
        float a = bg_ld(&x[r * 2 * H + j]), b = bg_ld(&x[r * 2 * H + H + j]);
        bg_st(&y[i], a / (1.0f + expf(-a)) * b);
    }
}

/* e = exp(-a), s = 1 / (1 + e): da = dy b s (1 + a e s), db = dy a s. */
template <typename T>
__global__ void swiglu_backward_kernel(const T *x, const T *dy, T *dx, int64_t n, int64_t H)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / H, j = i - r * H, ia = r * 2 * H + j;
        float a = bg_ld(&x[ia]), b = bg_ld(&x[ia + H]), d = bg_ld(&dy[i]);
        float e = expf(-a), s = 1.0f / (1.0f + e);
        bg_st(&dx[ia], d * b * s * (1.0f + a * (e * s)));
        bg_st(&dx[ia + H], d * (a * s));
    }
}

/* ---- launchers ---- */

template <typename T> static bg_status_t swiglu_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->out), H = bg_tensor_cols(c->out);
    if (!n)
        return BG_OK;
    swiglu_forward_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>((const T *)c->in[0]->data,
                                                                     (T *)c->out->data, n, H);
    BG_CUDA_LAUNCH_CHECK("swiglu_forward_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t swiglu_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->dout), H = bg_tensor_cols(c->dout);
    if (!n)
        return BG_OK;
    swiglu_backward_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->dout->data, (T *)c->din[0]->data, n, H);
    BG_CUDA_LAUNCH_CHECK("swiglu_backward_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_swiglu_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, swiglu_forward_t, c, st);
}

bg_status_t bg_cuda_swiglu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, swiglu_backward_t, c, st);
}
