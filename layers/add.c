/*
 * layers/add.c -- y = a + b for two tensors of the same shape (residuals).
 * B copies dy to both input gradients; no W, nothing saved.
 * The CPU half computes in f32 only.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

#include <string.h>

static bg_status_t add_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *a = &spec->in[0], *b = &spec->in[1];
    if (a->dtype != BG_F32 || b->dtype != BG_F32)
        return bg_errbuf_set(err, "add: inputs must be float tensors");
    if (!bg_shape_eq(a, b)) {
        char sa[96], sb[96];
        return bg_errbuf_set(err, "add: shapes differ: %s vs %s", bg_shape_str(a, sa, sizeof(sa)),
                             bg_shape_str(b, sb, sizeof(sb)));
    }
    spec->out = *a;
    return BG_OK;
}

static void add_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    c->fwd_flops = (double)bg_shape_numel(&spec->out);
}

static bg_status_t add_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_add_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    const float *a = c->in[0]->data, *b = c->in[1]->data;
    float *y = c->out->data;
    int64_t n = bg_tensor_numel(c->out);
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return BG_OK;
}

/* Both inputs get dy unchanged; either may be unwanted (NULL). */
static bg_status_t add_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0] && !c->din[1]) return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_add_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    size_t bytes = bg_tensor_nbytes(c->dout);
    for (int i = 0; i < 2; i++)
        if (c->din[i]) memcpy(c->din[i]->data, c->dout->data, bytes);
    return BG_OK;
}

const bg_layer_kind_t bg_kind_add = {
    .name = "add",
    .min_inputs = 2,
    .max_inputs = 2,
    .doc = "add(a, b): elementwise sum of two tensors of the same shape",
    .infer = add_infer,
    .cost = add_cost,
    .forward = add_forward,
    .backward_input = add_backward_input,
};
