/*
 * layers/cross_entropy.c -- fused softmax + mean negative log-likelihood:
 * logits (..., V), targets i32 (...) -> loss f32 [1], averaged over all
 * target positions of the micro-batch. Numerically stable (max-shifted).
 * F saves each row's log-sum-exp (f32); B recomputes the softmax from the
 * kept logits: dlogits = (softmax - onehot) * dloss / N. dloss is read from
 * the output-gradient tensor on the device (no host sync). No W.
 * Targets outside [0, V) are an error. Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/kernels_cuda.h"

static bg_status_t cross_entropy_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *lg = &spec->in[0], *tg = &spec->in[1];
    if (lg->dtype != BG_F32)
        return bg_errbuf_set(err, "cross_entropy: logits must be a float tensor, got %s",
                             bg_dtype_name(lg->dtype));
    if (tg->dtype != BG_I32)
        return bg_errbuf_set(err, "cross_entropy: targets must be i32 class ids, got %s",
                             bg_dtype_name(tg->dtype));
    bool ok = tg->ndim == lg->ndim - 1;
    for (int i = 0; ok && i < tg->ndim; i++) ok = tg->d[i] == lg->d[i];
    if (!ok) {
        char a[96], b[96];
        return bg_errbuf_set(err,
                             "cross_entropy: targets %s must have the logits' shape %s "
                             "without its last dimension",
                             bg_shape_str(tg, b, sizeof(b)), bg_shape_str(lg, a, sizeof(a)));
    }
    spec->out.dtype = BG_F32;
    spec->out.ndim = 1;
    spec->out.d[0] = 1;
    return BG_OK;
}

static void cross_entropy_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    const bg_shape_t *lg = &spec->in[0];
    double n = (double)bg_shape_numel(lg);
    double rows = n / (double)lg->d[lg->ndim - 1];
    c->fwd_flops = 4.0 * n;
    c->bwd_input_flops = 4.0 * n;
    c->saved_bytes = (int64_t)(rows * sizeof(float));
}

static bg_status_t cross_entropy_forward(const bg_layer_call_t *c)
{
    (void)c;
    return bg_errorf(BG_ERR_UNSUPPORTED, "cross_entropy: forward not implemented yet");
}

const bg_layer_kind_t bg_kind_cross_entropy = {
    .name = "cross_entropy",
    .min_inputs = 2,
    .max_inputs = 2,
    .doc = "cross_entropy(logits, targets): mean NLL of softmax over the last dim",
    .out_f32 = true,
    .infer = cross_entropy_infer,
    .cost = cross_entropy_cost,
    .forward = cross_entropy_forward,
};
