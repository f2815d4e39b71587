/*
 * layers/attention.c -- multi-head self-attention with its own projections:
 * x (B, T, C) -> qkv = x Wqkv^T + bqkv (B, T, 3C), laid out [q | k | v],
 * head h using columns h*hs..(h+1)*hs of each (hs = C / heads, GPT-2
 * layout); att = softmax(q k^T / sqrt(hs)) with a causal mask unless
 * causal=false; y = att v (B, T, C) heads concatenated; out = y Wproj^T + bproj.
 *
 * saved scratch (compute dtype), in this order:
 *   qkv (B, T, 3C) | att (B, H, T, T) probabilities | y (B, T, C) | dqkv (B, T, 3C)
 * F fills qkv, att, y. B fills dqkv (W needs it for d(Wqkv)) and writes dx.
 * W reads dout, y (for proj) and x, dqkv (for qkv).
 * workspace (compute dtype): dy_att (B, T, C) | datt (B, H, T, T), used by B only.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/kernels_cuda.h"

static const bg_key_desc_t attention_keys[] = {
    {"heads", BG_ATTR_INT, true},
    {"causal", BG_ATTR_BOOL, false},
    {"std", BG_ATTR_FLOAT, false},
};

static bg_status_t attention_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    int64_t heads = bg_attrs_int(&spec->attrs, "heads", 0);
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "attention: input must be a float tensor, got %s",
                             bg_dtype_name(x->dtype));
    if (x->ndim != 3)
        return bg_errbuf_set(err, "attention: input must be (B, T, C), got %d dimensions",
                             x->ndim);
    if (heads <= 0) return bg_errbuf_set(err, "attention: heads must be positive");
    if (x->d[2] % heads)
        return bg_errbuf_set(err, "attention: channels %lld not divisible by heads=%lld",
                             (long long)x->d[2], (long long)heads);
    spec->out = *x;
    return BG_OK;
}

static int attention_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t C = spec->in[0].d[2];
    float std = (float)bg_attrs_float(&spec->attrs, "std", 0.02);
    int64_t qw[2] = {3 * C, C}, qb[1] = {3 * C}, pw[2] = {C, C}, pb[1] = {C};
    bg_param_slot(p, &n, "qkv.weight", 2, qw, BG_INIT_NORMAL, std, false);
    bg_param_slot(p, &n, "qkv.bias", 1, qb, BG_INIT_ZEROS, 0.0f, false);
    bg_param_slot(p, &n, "proj.weight", 2, pw, BG_INIT_NORMAL, std, false);
    bg_param_slot(p, &n, "proj.bias", 1, pb, BG_INIT_ZEROS, 0.0f, false);
    return n;
}

static void attention_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    const bg_shape_t *x = &spec->in[0];
    double B = (double)x->d[0], T = (double)x->d[1], C = (double)x->d[2];
    double H = (double)bg_attrs_int(&spec->attrs, "heads", 1);
    double N = B * T, es = (double)bg_dtype_size(dtype);
    /* Causal masking is not subtracted: the kernels compute full rows. */
    c->fwd_flops = 2.0 * N * C * 3.0 * C + 4.0 * B * T * T * C + 2.0 * N * C * C + 5.0 * B * H * T * T;
    c->bwd_input_flops = 2.0 * N * C * C + 8.0 * B * T * T * C + 2.0 * N * 3.0 * C * C +
                         5.0 * B * H * T * T;
    c->bwd_weight_flops = 2.0 * N * 3.0 * C * C + 2.0 * N * C * C + 4.0 * N * C;
    c->saved_bytes = (int64_t)(es * (N * 3.0 * C + B * H * T * T + N * C + N * 3.0 * C));
    c->workspace_bytes = (int64_t)(es * (N * C + B * H * T * T));
}

static bg_status_t attention_forward(const bg_layer_call_t *c)
{
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "attention: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_attention = {
    .name = "attention",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = attention_keys,
    .n_keys = sizeof(attention_keys) / sizeof(attention_keys[0]),
    .doc = "attention(x, heads=H, causal=true): multi-head self-attention with qkv/proj",
    .infer = attention_infer,
    .params = attention_params,
    .cost = attention_cost,
    .forward = attention_forward,
};
