/*
 * layers/gelu.cu -- CUDA half of gelu, tanh form (GPT-2):
 * y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); B recomputes from
 * the kept input (nothing saved), as layers/gelu.c. No W.
 * Math in f32 whatever the storage dtype. Must not synchronise with the host.
 */
#include "layers/cuda_common.cuh"

#define GELU_K0 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K1 0.044715f

/* ---- kernels ---- */

template <typename T> __global__ void gelu_forward_kernel(const T *x, T *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = bg_ld(&x[i]);
        float u = GELU_K0 * (v + GELU_K1 * v * v * v);
        bg_st(&y[i], 0.5f * v * (1.0f + tanhf(u)));
    }
}

/* d/dx: 0.5 (1 + th) + 0.5 x (1 - th^2) u', u' = k0 (1 + 3 k1 x^2). */
template <typename T>
__global__ void gelu_backward_kernel(const T *x, const T *dy, T *dx, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = bg_ld(&x[i]);
        float u = GELU_K0 * (v + GELU_K1 * v * v * v);
        float th = tanhf(u);
        float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
        float grad = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du;
        bg_st(&dx[i], grad * bg_ld(&dy[i]));
    }
}

/* ---- launchers ---- */

template <typename T> static bg_status_t gelu_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->in[0]);
    if (!n)
        return BG_OK;
    gelu_forward_kernel<T>
        <<<bg_cuda_blocks(n, 256), 256, 0, st>>>((const T *)c->in[0]->data, (T *)c->out->data, n);
    BG_CUDA_LAUNCH_CHECK("gelu_forward_kernel");
    return BG_OK;
}

template <typename T> static bg_status_t gelu_backward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->in[0]);
    if (!n)
        return BG_OK;
    gelu_backward_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->dout->data, (T *)c->din[0]->data, n);
    BG_CUDA_LAUNCH_CHECK("gelu_backward_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_gelu_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, gelu_forward_t, c, st);
}

bg_status_t bg_cuda_gelu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, gelu_backward_t, c, st);
}
