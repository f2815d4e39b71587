/*
 * layers/add.c -- y = a + b for two tensors of the same shape (residuals).
 * B copies dy to both input gradients; no W, nothing saved.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/kernels_cuda.h"

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
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "add: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_add = {
    .name = "add",
    .min_inputs = 2,
    .max_inputs = 2,
    .doc = "add(a, b): elementwise sum of two tensors of the same shape",
    .infer = add_infer,
    .cost = add_cost,
    .forward = add_forward,
};
