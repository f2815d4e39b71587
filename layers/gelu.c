/*
 * layers/gelu.c -- GELU, tanh form as in GPT-2:
 * y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise.
 * B recomputes from the kept input; nothing saved. No W.
 * The CPU half computes in f32 only, without libm (cpu_math.h): see
 * gelu_forward_cpu for the form and its error.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/cpu_math.h"
#include "layers/kernels_cuda.h"

static bg_status_t gelu_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    if (spec->in[0].dtype != BG_F32)
        return bg_errbuf_set(err, "gelu: input must be a float tensor, got %s",
                             bg_dtype_name(spec->in[0].dtype));
    spec->out = spec->in[0];
    return BG_OK;
}

static void gelu_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    double n = (double)bg_shape_numel(&spec->in[0]);
    c->fwd_flops = 10.0 * n;
    c->bwd_input_flops = 16.0 * n;
}

/* sqrt(2/pi) and the cubic coefficient of GPT-2's gelu. */
#define GELU_K 0.7978845608028654f
#define GELU_A 0.044715f

/*
 * 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + exp(-2u)): exact algebra,
 * and it avoids both libm's tanhf (a call: no vectorisation) and the
 * cancellation of 1 + tanh(u) near tanh = -1. With cpu_math.h's exp
 * (< 1 ulp measured, 2 ulp asserted) the max error against GPT-2's gelu
 * evaluated in double is 1.5e-7 (1 + |y|) forward and 2e-7 (1 + |y'|)
 * backward (measured 9.5e-8 and 1.0e-7 on a 1e-5 grid over [-12, 12];
 * libm tanhf gave 8.3e-8): tests/layers/test_layers_fast.c asserts both.
 */
BG_CPU_WIDE static void gelu_forward_cpu(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_K * (v + GELU_A * v * v * v);
        y[i] = v / (1.0f + bg_cpu_expf(-2.0f * u));
    }
}

/*
 * d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u', t = tanh(u), u' = K (1 + 3 A x^2).
 * With e = exp(-2u) and s = 1 / (1 + e): 0.5 (1 + t) = s and
 * 0.5 (1 - t^2) = 2 s (1 - s) = 2 e s^2, so d = s + 2 x (e s) s u'.
 */
BG_CPU_WIDE static void gelu_backward_cpu(const float *x, const float *dy, float *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_K * (v + GELU_A * v * v * v);
        float e = bg_cpu_expf(-2.0f * u), s = 1.0f / (1.0f + e);
        float du = GELU_K * (1.0f + 3.0f * GELU_A * v * v);
        float d = s + 2.0f * v * (e * s) * s * du;
        dx[i] = dy[i] * d;
    }
}

static bg_status_t gelu_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_gelu_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    gelu_forward_cpu(c->in[0]->data, c->out->data, bg_tensor_numel(c->in[0]));
    return BG_OK;
}

static bg_status_t gelu_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0]) return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_gelu_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    gelu_backward_cpu(c->in[0]->data, c->dout->data, c->din[0]->data, bg_tensor_numel(c->in[0]));
    return BG_OK;
}

const bg_layer_kind_t bg_kind_gelu = {
    .name = "gelu",
    .min_inputs = 1,
    .max_inputs = 1,
    .doc = "gelu(x): GELU, tanh approximation (GPT-2)",
    .infer = gelu_infer,
    .cost = gelu_cost,
    .forward = gelu_forward,
    .backward_input = gelu_backward_input,
};
