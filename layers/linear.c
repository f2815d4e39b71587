/*
 * layers/linear.c -- y = x W^T + b over the last dimension: (..., in) -> (..., out).
 * W is (out, in) and may be another layer's parameter (share=, e.g. GPT's
 * head tied to the token embedding). B: dx = dy W. W: dW += dy^T x,
 * db += column sums of dy. Nothing saved beyond the input. Matrix products
 * go through bg_gemm (any backend); the CPU half computes in f32 only.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
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

static bool linear_has_bias(const bg_layer_spec_t *spec)
{
    return bg_attrs_bool(&spec->attrs, "bias", true);
}

/* y (rows, out) = x (rows, in) @ W^T, W (out, in); then y += b per row. */
static bg_status_t linear_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_linear_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->out);
    bg_gemm_args_t g = {
        .trans_b = true, .m = rows, .n = out, .k = in, .alpha = 1.0f, .beta = 0.0f,
        .a = c->in[0]->data, .lda = in, .b = c->params[0]->data, .ldb = in,
        .c = c->out->data, .ldc = out, .ab = BG_F32, .c_dtype = BG_F32,
    };
    if ((st = bg_gemm(c->be, c->stream, &g)) != BG_OK) return st;
    if (linear_has_bias(c->spec)) bg_cpu_add_bias(c->out->data, c->params[1]->data, rows, out);
    return BG_OK;
}

/* dx (rows, in) = dy (rows, out) @ W (out, in). */
static bg_status_t linear_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0]) return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_linear_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->dout);
    bg_gemm_args_t g = {
        .m = rows, .n = in, .k = out, .alpha = 1.0f, .beta = 0.0f,
        .a = c->dout->data, .lda = out, .b = c->params[0]->data, .ldb = in,
        .c = c->din[0]->data, .ldc = in, .ab = BG_F32, .c_dtype = BG_F32,
    };
    return bg_gemm(c->be, c->stream, &g);
}

/*
 * dW (out, in) += dy^T (out, rows) @ x (rows, in); db (out) += column sums
 * of dy. A shared weight is whatever tensor sits in slot 0: its owner sums
 * the contributions of every layer that uses it.
 */
static bg_status_t linear_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_linear_backward_weight(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK) return st;
    int64_t in = bg_tensor_cols(c->in[0]), rows = bg_tensor_rows(c->in[0]);
    int64_t out = bg_tensor_cols(c->dout);
    if (c->grads[0]) {
        bg_gemm_args_t g = {
            .trans_a = true, .m = out, .n = in, .k = rows, .alpha = 1.0f, .beta = 1.0f,
            .a = c->dout->data, .lda = out, .b = c->in[0]->data, .ldb = in,
            .c = c->grads[0]->data, .ldc = in, .ab = BG_F32, .c_dtype = BG_F32,
        };
        if ((st = bg_gemm(c->be, c->stream, &g)) != BG_OK) return st;
    }
    if (linear_has_bias(c->spec) && c->grads[1])
        bg_cpu_colsum_add(c->dout->data, rows, out, c->grads[1]->data);
    return BG_OK;
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
    .backward_input = linear_backward_input,
    .backward_weight = linear_backward_weight,
};
