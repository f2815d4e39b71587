/*
 * layers/layernorm.c -- layer normalisation over the last dimension:
 * y = (x - mean) * rstd * weight + bias, (..., C) -> (..., C).
 * F saves mean and rstd per row (f32, 2 floats per row) for B and W.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/kernels_cuda.h"

static const bg_key_desc_t layernorm_keys[] = {
    {"eps", BG_ATTR_FLOAT, false},
};

static bg_status_t layernorm_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    if (spec->in[0].dtype != BG_F32)
        return bg_errbuf_set(err, "layernorm: input must be a float tensor, got %s",
                             bg_dtype_name(spec->in[0].dtype));
    if (bg_attrs_float(&spec->attrs, "eps", 1e-5) <= 0.0)
        return bg_errbuf_set(err, "layernorm: eps must be positive");
    spec->out = spec->in[0];
    return BG_OK;
}

static int layernorm_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t d[1] = {spec->in[0].d[spec->in[0].ndim - 1]};
    bg_param_slot(p, &n, "weight", 1, d, BG_INIT_ONES, 0.0f, false);
    bg_param_slot(p, &n, "bias", 1, d, BG_INIT_ZEROS, 0.0f, false);
    return n;
}

static void layernorm_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    const bg_shape_t *x = &spec->in[0];
    double n = (double)bg_shape_numel(x);
    double rows = n / (double)x->d[x->ndim - 1];
    c->fwd_flops = 8.0 * n;
    c->bwd_input_flops = 9.0 * n;
    c->bwd_weight_flops = 4.0 * n;
    c->saved_bytes = (int64_t)(rows * 2.0 * sizeof(float));
}

static bg_status_t layernorm_forward(const bg_layer_call_t *c)
{
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "layernorm: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_layernorm = {
    .name = "layernorm",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = layernorm_keys,
    .n_keys = sizeof(layernorm_keys) / sizeof(layernorm_keys[0]),
    .doc = "layernorm(x, eps=1e-5): normalise the last dim, then scale and shift",
    .infer = layernorm_infer,
    .params = layernorm_params,
    .cost = layernorm_cost,
    .forward = layernorm_forward,
};
