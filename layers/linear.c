/*
 * layers/linear.c -- y = x W^T + b over the last dimension: (..., in) -> (..., out).
 * W is (out, in) and may be another layer's parameter (share=, e.g. GPT's
 * head tied to the token embedding). B: dx = dy W. W: dW += dy^T x,
 * db += column sums of dy. Nothing saved beyond the input.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/kernels_cuda.h"

#include <math.h>

static const bg_key_desc_t linear_keys[] = {
    {"out", BG_ATTR_INT, true},
    {"bias", BG_ATTR_BOOL, false},
    {"share", BG_ATTR_REF, false},
    {"std", BG_ATTR_FLOAT, false},
};

static bg_status_t linear_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    int64_t out = bg_attrs_int(&spec->attrs, "out", 0);
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "linear: input must be a float tensor, got %s",
                             bg_dtype_name(x->dtype));
    if (out <= 0) return bg_errbuf_set(err, "linear: out must be positive, got %lld", (long long)out);
    spec->out = *x;
    spec->out.d[x->ndim - 1] = out;
    return BG_OK;
}

static int linear_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t in = spec->in[0].d[spec->in[0].ndim - 1];
    int64_t out = bg_attrs_int(&spec->attrs, "out", 0);
    double std = bg_attrs_float(&spec->attrs, "std", 0.0);
    /* PyTorch's default U(+-1/sqrt(in)) unless a normal std is asked for (GPT: 0.02). */
    float bound = 1.0f / sqrtf((float)(in > 0 ? in : 1));
    int64_t wd[2] = {out, in}, bd[1] = {out};
    bool shared = bg_attrs_ref(&spec->attrs, "share") != NULL;
    if (std > 0.0)
        bg_param_slot(p, &n, "weight", 2, wd, BG_INIT_NORMAL, (float)std, shared);
    else
        bg_param_slot(p, &n, "weight", 2, wd, BG_INIT_UNIFORM, bound, shared);
    if (bg_attrs_bool(&spec->attrs, "bias", true))
        bg_param_slot(p, &n, "bias", 1, bd, std > 0.0 ? BG_INIT_ZEROS : BG_INIT_UNIFORM, bound,
                      false);
    return n;
}

static void linear_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    const bg_shape_t *x = &spec->in[0];
    double in = (double)x->d[x->ndim - 1];
    double rows = (double)bg_shape_numel(x) / in;
    double out = (double)bg_attrs_int(&spec->attrs, "out", 0);
    bool bias = bg_attrs_bool(&spec->attrs, "bias", true);
    c->fwd_flops = 2.0 * rows * in * out + (bias ? rows * out : 0.0);
    c->bwd_input_flops = 2.0 * rows * in * out;
    c->bwd_weight_flops = 2.0 * rows * in * out + (bias ? rows * out : 0.0);
}

static bg_status_t linear_forward(const bg_layer_call_t *c)
{
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "linear: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_linear = {
    .name = "linear",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = linear_keys,
    .n_keys = sizeof(linear_keys) / sizeof(linear_keys[0]),
    .doc = "linear(x, out=N, bias=true, share=PARAM, std=S): x W^T + b over the last dim",
    .infer = linear_infer,
    .params = linear_params,
    .cost = linear_cost,
    .forward = linear_forward,
};
