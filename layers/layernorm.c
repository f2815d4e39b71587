/*
 * layers/layernorm.c -- layer normalisation over the last dimension:
 * y = (x - mean) * rstd * weight + bias, (..., C) -> (..., C).
 * F saves mean and rstd per row for B and W; the saved scratch is always
 * f32 (also in bf16 runs), N = rows = numel / C:
 *   mean (N) | rstd (N)          rstd = 1 / sqrt(biased var + eps)
 * The CPU half computes in f32 only (loops shared with rmsnorm: cpu_util.h).
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
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

/* The saved scratch viewed as its two f32 arrays: mean (N) | rstd (N). */
static void layernorm_saved(const bg_layer_call_t *c, int64_t rows, float **mean, float **rstd)
{
    float *s = c->saved->data;
    *mean = s;
    *rstd = s + rows;
}

/* Per row of x (N, C): mean, biased variance (two passes, double lanes:
 * no cancellation for rows with a large offset), then
 * y = (x - mean) * rstd * w + b. Saves mean and rstd. */
static bg_status_t layernorm_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_layernorm_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    float *mean, *rstd;
    layernorm_saved(c, rows, &mean, &rstd);
    bg_cpu_norm_forward(c->in[0]->data, c->params[0]->data, c->params[1]->data, rows, C,
                        bg_attrs_float(&c->spec->attrs, "eps", 1e-5), c->out->data, mean, rstd);
    return BG_OK;
}

/*
 * With xhat = (x - mean) rstd and g = dy * w (per row, C columns):
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
 */
static bg_status_t layernorm_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0]) return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_layernorm_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    float *mean, *rstd;
    layernorm_saved(c, rows, &mean, &rstd);
    bg_cpu_norm_backward_input(c->in[0]->data, c->params[0]->data, c->dout->data, mean, rstd,
                               rows, C, c->din[0]->data);
    return BG_OK;
}

/*
 * dw[j] += sum_r dy[r,j] * xhat[r,j]; db[j] += sum_r dy[r,j]. Columns in
 * blocks with double accumulators, rows always summed in order r = 0, 1, ...
 */
static bg_status_t layernorm_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_layernorm_backward_weight(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK) return st;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    float *mean, *rstd;
    layernorm_saved(c, rows, &mean, &rstd);
    bg_cpu_norm_backward_weight(c->in[0]->data, c->dout->data, mean, rstd, rows, C,
                                c->grads[0] ? c->grads[0]->data : NULL,
                                c->grads[1] ? c->grads[1]->data : NULL);
    return BG_OK;
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
    .backward_input = layernorm_backward_input,
    .backward_weight = layernorm_backward_weight,
};
