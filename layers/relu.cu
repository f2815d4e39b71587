/*
 * layers/relu.cu -- CUDA half of relu: y = max(x, 0); B: dx = dy where
 * x > 0, else 0 (from the kept input, as layers/relu.c). No W, nothing saved.
 * Must not synchronise with the host.
 */
#include "layers/cuda_common.cuh"

/* ---- kernels ---- */

template <typename T> __global__ void relu_forward_kernel(const T *x, T *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = bg_ld(&x[i]);
        bg_st(&y[i], v > 0.0f ? v : 0.0f);
    }
}

template <typename T>
__global__ void relu_backward_kernel(const T *x, const T *dy, T *dx, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&dx[i], bg_ld(&x[i]) > 0.0f ? bg_ld(&dy[i]) : 0.0f);
}

/* ---- launchers ---- */

template <typename T> static bg_status_t relu_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->in[0]);
    if (!n)
        return BG_OK;
    relu_forward_kernel<T>
        <<<bg_cuda_blocks(n, 256), 256, 0, st>>>((const T *)c->in[0]->data, (T *)c->out->data, n);
    BG_CUDA_LAUNCH_CHECK("relu_forward_kernel");
    return BG_OK;
}

template <typename T> static bg_status_t relu_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->in[0]);
    if (!n)
        return BG_OK;
    relu_backward_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->dout->data, (T *)c->din[0]->data, n);
    BG_CUDA_LAUNCH_CHECK("relu_backward_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_relu_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, relu_forward_t, c, st);
}

bg_status_t bg_cuda_relu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, relu_backward_t, c, st);
}
