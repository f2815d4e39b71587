/*
 * layers/relu.c -- relu(x) = max(x, 0), elementwise, any shape.
 * No parameters; backward-input reads the kept input (not the output), so
 * nothing extra is saved. No W. Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

static bg_status_t relu_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    if (spec->in[0].dtype != BG_F32)
        return bg_errbuf_set(err, "relu: input must be a float tensor, got %s",
                             bg_dtype_name(spec->in[0].dtype));
    spec->out = spec->in[0];
    return BG_OK;
}

static void relu_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    double n = (double)bg_shape_numel(&spec->in[0]);
    c->fwd_flops = n;
    c->bwd_input_flops = n;
}

/* Both loops load every operand unconditionally so that the `?:` is a
 * select the compiler vectorises (layers/ builds at -O3), not a branch. */
static void relu_forward_cpu(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

static void relu_backward_cpu(const float *x, const float *dy, float *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], d = dy[i];
        dx[i] = v > 0.0f ? d : 0.0f;
    }
}

static bg_status_t relu_forward(const bg_layer_call_t *c)
{
    int64_t n = bg_tensor_numel(c->in[0]);
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_relu_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    relu_forward_cpu(c->in[0]->data, c->out->data, n);
    return BG_OK;
}

static bg_status_t relu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0]) return BG_OK;
    int64_t n = bg_tensor_numel(c->in[0]);
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_relu_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    relu_backward_cpu(c->in[0]->data, c->dout->data, c->din[0]->data, n);
    return BG_OK;
}

const bg_layer_kind_t bg_kind_relu = {
    .name = "relu",
    .min_inputs = 1,
    .max_inputs = 1,
    .doc = "relu(x): max(x, 0) elementwise",
    .infer = relu_infer,
    .cost = relu_cost,
    .forward = relu_forward,
    .backward_input = relu_backward_input,
};
