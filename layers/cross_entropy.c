/*
 * layers/cross_entropy.c -- fused softmax + mean negative log-likelihood:
 * logits (..., V), targets i32 (...) -> loss f32 [1], averaged over all
 * target positions of the micro-batch. Numerically stable (max-shifted).
 * F saves each row's log-sum-exp (f32); B recomputes the softmax from the
 * kept logits: dlogits = (softmax - onehot) * dloss / N. dloss is read from
 * the output-gradient tensor on the device (no host sync). No W.
 * Targets outside [0, V) are an error (BG_ERR_INVALID naming layer, position
 * and value), checked by F and B before anything is written; targets have
 * no gradient (din[1] must be NULL). Empty inputs are an error (no mean).
 * CPU half: f32 only, sums in double in a fixed order.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

#include <math.h>
#include <string.h>

bg_status_t bg_loss_infer(bg_layer_spec_t *spec, const char *input, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0], *tg = &spec->in[1];
    const char *kind = spec->kind->name;
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "%s: %s must be a float tensor, got %s", kind, input,
                             bg_dtype_name(x->dtype));
    if (tg->dtype != BG_I32)
        return bg_errbuf_set(err, "%s: targets must be i32 class ids, got %s", kind,
                             bg_dtype_name(tg->dtype));
    bool ok = tg->ndim == x->ndim - 1;
    for (int i = 0; ok && i < tg->ndim; i++) ok = tg->d[i] == x->d[i];
    if (!ok) {
        char a[96], b[96];
        const char *apos = input[strlen(input) - 1] == 's' ? "'" : "'s"; /* logits', input's */
        return bg_errbuf_set(err, "%s: targets %s must have the %s%s shape %s without its last "
                             "dimension", kind, bg_shape_str(tg, b, sizeof(b)), input, apos,
                             bg_shape_str(x, a, sizeof(a)));
    }
    spec->out.dtype = BG_F32;
    spec->out.ndim = 1;
    spec->out.d[0] = 1;
    return BG_OK;
}

static bg_status_t cross_entropy_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    return bg_loss_infer(spec, "logits", err);
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

/* log(sum_j exp(x_j)) of one row, shifted by its max so exp never overflows. */
static double ce_row_lse(const float *x, int64_t V)
{
    float mx = x[0];
    for (int64_t j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (int64_t j = 0; j < V; j++) sum += exp((double)x[j] - (double)mx);
    return (double)mx + log(sum);
}

/* Rows and classes of a call; BG_ERR_INVALID for empty inputs (no mean). */
static bg_status_t ce_sizes(const bg_layer_call_t *c, int64_t *rows, int64_t *V)
{
    int64_t v = bg_tensor_cols(c->in[0]), r = bg_tensor_rows(c->in[0]);
    if (v <= 0 || r <= 0)
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (cross_entropy): no target positions or no classes "
                         "(rows %lld, classes %lld): the mean loss is undefined",
                         c->spec->name, (long long)r, (long long)v);
    *rows = r;
    *V = v;
    return BG_OK;
}

/*
 * loss = (1/R) sum_r (lse_r - x[r, t_r]); lse_r kept in saved for B. The sum
 * is in double, in row order, so the value is reproducible.
 */
static bg_status_t cross_entropy_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_cross_entropy_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    int64_t rows = 0, V = 0;
    if (st == BG_OK) st = ce_sizes(c, &rows, &V);
    const int32_t *tg = c->in[1]->data;
    if (st == BG_OK) st = bg_cpu_check_targets(c, tg, rows, V);
    if (st != BG_OK) return st;
    const float *x = c->in[0]->data;
    float *lse = c->saved->data;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * V;
        double l = ce_row_lse(row, V);
        lse[r] = (float)l;
        total += l - (double)row[tg[r]];
    }
    ((float *)c->out->data)[0] = (float)(total / (double)rows);
    return BG_OK;
}

/*
 * dlogits[r, j] = (exp(x[r, j] - lse_r) - [j == t_r]) * dloss / R, dloss from
 * dout[0]. Targets have no gradient: asking for one is an error.
 */
static bg_status_t cross_entropy_backward_input(const bg_layer_call_t *c)
{
    if (c->din[1])
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (cross_entropy): targets are class ids and have no gradient",
                         c->spec->name);
    if (!c->din[0]) return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_cross_entropy_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    int64_t rows = 0, V = 0;
    if (st == BG_OK) st = ce_sizes(c, &rows, &V);
    const int32_t *tg = c->in[1]->data;
    if (st == BG_OK) st = bg_cpu_check_targets(c, tg, rows, V);
    if (st != BG_OK) return st;
    const float *x = c->in[0]->data, *lse = c->saved->data;
    float *dx = c->din[0]->data;
    float g = ((const float *)c->dout->data)[0] / (float)rows;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * V;
        float *drow = dx + r * V;
        for (int64_t j = 0; j < V; j++) drow[j] = expf(row[j] - lse[r]) * g;
        drow[tg[r]] -= g;
    }
    return BG_OK;
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
    .backward_input = cross_entropy_backward_input,
};
