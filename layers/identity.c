/*
 * layers/identity.c -- y = x, any float shape. What the linear of a fused
 * classifier becomes (layers/graph_fuse.c): its parameters moved to the
 * classifier, the layer stays so that layer ids, names and the pipeline
 * chain do not change. F copies x to y, B copies dy to dx; no parameters,
 * nothing saved, no W. Copies go through the backend (any device, on the
 * call's stream). Must not keep state between calls.
 */
#include "layers/cpu_util.h"
#include "layers/layer.h"

static bg_status_t identity_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    if (spec->in[0].dtype != BG_F32)
        return bg_errbuf_set(err, "identity: input must be a float tensor, got %s",
                             bg_dtype_name(spec->in[0].dtype));
    spec->out = spec->in[0];
    return BG_OK;
}

static void identity_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)spec, (void)dtype, (void)c; /* copies only: no flops, nothing kept */
}

static bg_status_t identity_forward(const bg_layer_call_t *c)
{
    if (bg_backend_device(c->be) == BG_DEV_CPU && c->dtype != BG_F32)
        return bg_cpu_require_f32(c, "forward"); /* as every CPU half */
    return bg_backend_copy(c->be, c->out->data, c->in[0]->data, bg_tensor_nbytes(c->out),
                           BG_COPY_D2D, c->stream);
}

static bg_status_t identity_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    if (bg_backend_device(c->be) == BG_DEV_CPU && c->dtype != BG_F32)
        return bg_cpu_require_f32(c, "backward-input");
    return bg_backend_copy(c->be, c->din[0]->data, c->dout->data, bg_tensor_nbytes(c->din[0]),
                           BG_COPY_D2D, c->stream);
}

const bg_layer_kind_t bg_kind_identity = {
    .name = "identity",
    .min_inputs = 1,
    .max_inputs = 1,
    .doc = "identity(x): x unchanged (what the head linear of a fused classifier becomes)",
    .infer = identity_infer,
    .cost = identity_cost,
    .forward = identity_forward,
    .backward_input = identity_backward_input,
};
