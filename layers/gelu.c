/*
 * layers/gelu.c -- GELU, tanh form as in GPT-2:
 * y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise.
 * B recomputes from the kept input; nothing saved. No W.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
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

static bg_status_t gelu_forward(const bg_layer_call_t *c)
{
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "gelu: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_gelu = {
    .name = "gelu",
    .min_inputs = 1,
    .max_inputs = 1,
    .doc = "gelu(x): GELU, tanh approximation (GPT-2)",
    .infer = gelu_infer,
    .cost = gelu_cost,
    .forward = gelu_forward,
};
