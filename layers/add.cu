/*
 * layers/add.cu -- CUDA half of add (residuals): y = a + b; B writes dy to
 * each wanted input gradient (device-to-device copies on the call's stream,
 * no kernel needed). No W, nothing saved.
 * Must not synchronise with the host.
 */
#include "layers/cuda_common.cuh"

/* ---- kernels ---- */

template <typename T> __global__ void add_forward_kernel(const T *a, const T *b, T *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&y[i], bg_ld(&a[i]) + bg_ld(&b[i]));
}

/* ---- launchers ---- */

template <typename T> static bg_status_t add_forward_t(const bg_layer_call_t *c, cudaStream_t st)
{
    int64_t n = bg_tensor_numel(c->out);
    if (!n)
        return BG_OK;
    add_forward_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>(
        (const T *)c->in[0]->data, (const T *)c->in[1]->data, (T *)c->out->data, n);
    BG_CUDA_LAUNCH_CHECK("add_forward_kernel");
    return BG_OK;
}

bg_status_t bg_cuda_add_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    return BG_CUDA_DISPATCH(c->dtype, add_forward_t, c, st);
}

/* d(a) = d(b) = dy: the gradient of a sum passes through unchanged. */
bg_status_t bg_cuda_add_backward_input(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    size_t bytes = bg_tensor_nbytes(c->dout);
    for (int i = 0; i < 2; i++) {
        if (!c->din[i] || !bytes)
            continue;
        BG_CUDA_CHECK(
            cudaMemcpyAsync(c->din[i]->data, c->dout->data, bytes, cudaMemcpyDeviceToDevice, st));
    }
    return BG_OK;
}
