/*
 * layers/rmsnorm.c -- RMS normalisation over the last dimension (Llama):
 * y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps), (..., C) -> same.
 * No centring and no bias. F saves rstd per row for B and W; the saved
 * scratch is always f32 (also in bf16 runs), N = rows = numel / C:
 *   rstd (N)
 * The CPU half computes in f32 (sums in double lanes) with the loops it
 * shares with layernorm (cpu_util.h).
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

static const bg_key_desc_t rmsnorm_keys[] = {
    {"eps", BG_ATTR_FLOAT, false},
};

static bg_status_t rmsnorm_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    if (spec->in[0].dtype != BG_F32)
        return bg_errbuf_set(err, "rmsnorm: input must be a float tensor, got %s",
                             bg_dtype_name(spec->in[0].dtype));
    if (bg_attrs_float(&spec->attrs, "eps", 1e-5) <= 0.0)
        return bg_errbuf_set(err, "rmsnorm: eps must be positive");
    spec->out = spec->in[0];
    return BG_OK;
}

static int rmsnorm_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t d[1] = {spec->in[0].d[spec->in[0].ndim - 1]};
    bg_param_slot(p, &n, "weight", 1, d, BG_INIT_ONES, 0.0f, false);
    return n;
}

/* Per element: F square-add, scale twice (4); B g, xhat, two sums, dx (7);
 * W one multiply-add on xhat (3). */
static void rmsnorm_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    const bg_shape_t *x = &spec->in[0];
    double n = (double)bg_shape_numel(x);
    double rows = n / (double)x->d[x->ndim - 1];
    c->fwd_flops = 4.0 * n;
    c->bwd_input_flops = 7.0 * n;
    c->bwd_weight_flops = 3.0 * n;
    c->saved_bytes = (int64_t)(rows * sizeof(float));
}

static bg_status_t rmsnorm_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_rmsnorm_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK)
        return st;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    bg_cpu_norm_forward(c->in[0]->data, c->params[0]->data, NULL, rows, C,
                        bg_attrs_float(&c->spec->attrs, "eps", 1e-5), c->out->data, NULL,
                        c->saved->data);
    return BG_OK;
}

/* With xhat = x rstd and g = dy w: dx = rstd (g - xhat mean(g xhat)). */
static bg_status_t rmsnorm_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_rmsnorm_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK)
        return st;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    bg_cpu_norm_backward_input(c->in[0]->data, c->params[0]->data, c->dout->data, NULL,
                               c->saved->data, rows, C, c->din[0]->data);
    return BG_OK;
}

/* dw[j] += sum_r dy[r,j] x[r,j] rstd[r], rows in order. */
static bg_status_t rmsnorm_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_rmsnorm_backward_weight(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK)
        return st;
    if (!c->grads[0])
        return BG_OK;
    int64_t C = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    bg_cpu_norm_backward_weight(c->in[0]->data, c->dout->data, NULL, c->saved->data, rows, C,
                                c->grads[0]->data, NULL);
    return BG_OK;
}

const bg_layer_kind_t bg_kind_rmsnorm = {
    .name = "rmsnorm",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = rmsnorm_keys,
    .n_keys = sizeof(rmsnorm_keys) / sizeof(rmsnorm_keys[0]),
    .doc = "rmsnorm(x, eps=1e-5): divide the last dim by its RMS, then scale (Llama)",
    .infer = rmsnorm_infer,
    .params = rmsnorm_params,
    .cost = rmsnorm_cost,
    .forward = rmsnorm_forward,
    .backward_input = rmsnorm_backward_input,
    .backward_weight = rmsnorm_backward_weight,
};
