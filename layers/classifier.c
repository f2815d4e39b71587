/*
 * layers/classifier.c -- the fused classifier: a linear head and the mean
 * cross-entropy in one kind, computed in logits tiles so that the (rows, V)
 * logits are never stored.
 *
 * x (..., C), targets i32 (...) -> loss f32 [1] = (1/R) sum_r (lse_r -
 * z[r, t_r]) with z = x W^T + b, W (V, C) and b (V) the linear's slots
 * (same suffixes, inits, bias= and share= as `linear`: graph_fuse.c turns
 * a linear feeding cross_entropy into this kind and keeps the names).
 * F walks tiles of BG_CLS_ROWS x BG_CLS_VOCAB logits (layers/
 * classifier_impl.h) with an online log-sum-exp per row and keeps only the
 * per-row lse and argmax (saved) -- the loss needs the target logit, read
 * from the tile that holds it. B recomputes each tile and adds dz W into
 * dx; W recomputes it again and adds dz^T x into dW and colsum(dz) into
 * db, with dz = (softmax - onehot) dloss / R. The price of not storing
 * logits: B and W each redo the head GEMM of their tile.
 * row_argmax hands the saved argmax to the engine's accuracy.
 * Targets outside [0, V) are an error (BG_ERR_INVALID, as cross_entropy).
 * CPU half: f32, exponentials through cpu_math.h (vectorised, < 2 ulp),
 * sums in double lanes in a fixed order (tiles in row-block, then
 * vocabulary order), each row on its own. Must not keep state between calls.
 */
#include "layers/classifier_impl.h"
#include "layers/cpu_math.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"
#include "layers/layer.h"

#include <math.h>
#include <string.h>

extern const bg_layer_kind_t bg_kind_linear;

static const bg_key_desc_t classifier_keys[] = {
    {"out", BG_ATTR_INT, true},
    {"bias", BG_ATTR_BOOL, false},
    {"share", BG_ATTR_REF, false},
    {"std", BG_ATTR_FLOAT, false},
};

static bg_status_t classifier_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    int64_t V = bg_attrs_int(&spec->attrs, "out", 0);
    if (V <= 0)
        return bg_errbuf_set(err, "classifier: out must be positive, got %lld", (long long)V);
    return bg_loss_infer(spec, "input", err);
}

/* The linear's slots: weight (V, C), bias (V) unless bias=false. */
static int classifier_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    return bg_kind_linear.params(spec, p);
}

/*
 * F: the head GEMM plus ~4 flops per logit (max, exp, sum). B and W each
 * recompute the head GEMM and the probabilities, then one GEMM each.
 */
static void classifier_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    bg_cls_dims_t d = bg_cls_dims_of(spec);
    double z = (double)d.rows * (double)d.V, gemm = 2.0 * z * (double)d.C;
    double bias = d.bias ? z : 0.0;
    c->fwd_flops = gemm + bias + 4.0 * z;
    c->bwd_input_flops = 2.0 * gemm + bias + 4.0 * z;
    c->bwd_weight_flops = 2.0 * gemm + 2.0 * bias + 4.0 * z;
    bg_cls_layout_t l = bg_cls_layout_of(&d, (int64_t)bg_dtype_size(dtype));
    c->saved_bytes = l.saved;
    c->workspace_bytes = l.workspace;
}

/* ---- CPU half ---- */

/* One tile of the call: rows r0..r0+br, classes v0..v0+bc; stored (br, bc) contiguous. */
typedef struct cls_tile {
    int64_t r0, br, v0, bc;
} cls_tile_t;

/* z (br, bc) = x[r0..] W[v0..]^T + b[v0..] into the workspace tile. */
static bg_status_t cls_logits(const bg_layer_call_t *c, const bg_cls_dims_t *d, cls_tile_t t,
                              float *z)
{
    const float *x = c->in[0]->data, *w = c->params[0]->data;
    bg_gemm_args_t g = {
        .trans_b = true,
        .m = t.br,
        .n = t.bc,
        .k = d->C,
        .alpha = 1.0f,
        .beta = 0.0f,
        .a = x + t.r0 * d->C,
        .lda = d->C,
        .b = w + t.v0 * d->C,
        .ldb = d->C,
        .c = z,
        .ldc = t.bc,
        .ab = BG_F32,
        .c_dtype = BG_F32,
    };
    bg_status_t st = bg_gemm(c->be, c->stream, &g);
    if (st == BG_OK && d->bias)
        bg_cpu_add_bias(z, (const float *)c->params[1]->data + t.v0, t.br, t.bc);
    return st;
}

/* Running row statistics of a row block (workspace). */
typedef struct cls_rows {
    float *m, *tl;
    double *s;
    int32_t *am;
} cls_rows_t;

/*
 * Fold one tile into its rows' running max m, sum s = sum exp(z - m) (in
 * double lanes, rescaled when the max grows), argmax (first index of the
 * max) and target logit. Overwrites the tile with exp(z - m): F needs
 * nothing else of it.
 */
static void cls_fold_tile(float *z, int64_t ldz, cls_tile_t t, const int32_t *tg, cls_rows_t rs)
{
    for (int64_t r = 0; r < t.br; r++) {
        float *row = z + r * ldz;
        int64_t best = 0;
        for (int64_t j = 1; j < t.bc; j++)
            best = row[j] > row[best] ? j : best;
        float mx = row[best];
        if (t.v0 == 0 || mx > rs.m[r]) {
            rs.s[r] = t.v0 == 0 ? 0.0 : rs.s[r] * exp((double)rs.m[r] - (double)mx);
            rs.m[r] = mx;
            rs.am[r] = (int32_t)(t.v0 + best);
        }
        int64_t k = tg[t.r0 + r] - t.v0;
        if (k >= 0 && k < t.bc)
            rs.tl[r] = row[k];
        float m = rs.m[r];
        for (int64_t j = 0; j < t.bc; j++)
            row[j] = bg_cpu_expf(row[j] - m);
        rs.s[r] += bg_cpu_sum(row, t.bc);
    }
}

static bg_status_t classifier_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_classifier_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK)
        return st;
    bg_cls_dims_t d = bg_cls_dims_of(c->spec);
    const int32_t *tg = c->in[1]->data;
    if (d.rows <= 0)
        return bg_errorf(BG_ERR_INVALID, "layer %s: no target positions", c->spec->name);
    if ((st = bg_cpu_check_targets(c, tg, d.rows, d.V)) != BG_OK)
        return st;
    bg_cls_layout_t l = bg_cls_layout_of(&d, 4);
    char *sv = c->saved->data, *ws = c->workspace->data;
    float *lse = (float *)(sv + l.lse), *z = (float *)(ws + l.tile);
    int32_t *am = (int32_t *)(sv + l.argmax);
    cls_rows_t rs = {(float *)(ws + l.m), (float *)(ws + l.tl), (double *)(ws + l.s),
                     (int32_t *)(ws + l.am)};
    double total = 0.0;
    for (int64_t r0 = 0; r0 < d.rows && st == BG_OK; r0 += d.rc) {
        cls_tile_t t = {r0, d.rows - r0 < d.rc ? d.rows - r0 : d.rc, 0, 0};
        for (t.v0 = 0; t.v0 < d.V && st == BG_OK; t.v0 += d.vc) {
            t.bc = d.V - t.v0 < d.vc ? d.V - t.v0 : d.vc;
            if ((st = cls_logits(c, &d, t, z)) == BG_OK)
                cls_fold_tile(z, t.bc, t, tg, rs);
        }
        for (int64_t r = 0; r < t.br && st == BG_OK; r++) {
            double ls = (double)rs.m[r] + log(rs.s[r]);
            lse[r0 + r] = (float)ls;
            am[r0 + r] = rs.am[r];
            total += ls - (double)rs.tl[r];
        }
    }
    if (st == BG_OK)
        ((float *)c->out->data)[0] = (float)(total / (double)d.rows);
    return st;
}

/* dz = (exp(z - lse) - onehot) g over a tile, in place. */
BG_CPU_WIDE static void cls_dlogits(float *z, int64_t ldz, cls_tile_t t, const float *lse, const int32_t *tg,
                        float g)
{
    for (int64_t r = 0; r < t.br; r++) {
        float *row = z + r * ldz, l = lse[t.r0 + r];
        for (int64_t j = 0; j < t.bc; j++)
            row[j] = bg_cpu_expf(row[j] - l) * g;
        int64_t k = tg[t.r0 + r] - t.v0;
        if (k >= 0 && k < t.bc)
            row[k] -= g;
    }
}

/* Per-tile step of B or W on a recomputed dz tile. */
typedef bg_status_t (*cls_tile_fn)(const bg_layer_call_t *c, const bg_cls_dims_t *d, cls_tile_t t,
                                   const float *dz);

/* Every tile in row-block, then vocabulary order: recompute z, turn it into
 * dz, hand it to fn. */
static bg_status_t cls_each_dtile(const bg_layer_call_t *c, cls_tile_fn fn)
{
    bg_cls_dims_t d = bg_cls_dims_of(c->spec);
    const int32_t *tg = c->in[1]->data;
    bg_status_t st = bg_cpu_check_targets(c, tg, d.rows, d.V);
    bg_cls_layout_t l = bg_cls_layout_of(&d, 4);
    const float *lse = (const float *)((const char *)c->saved->data + l.lse);
    float *z = (float *)((char *)c->workspace->data + l.tile);
    float g = ((const float *)c->dout->data)[0] / (float)d.rows;
    for (int64_t r0 = 0; r0 < d.rows && st == BG_OK; r0 += d.rc) {
        cls_tile_t t = {r0, d.rows - r0 < d.rc ? d.rows - r0 : d.rc, 0, 0};
        for (t.v0 = 0; t.v0 < d.V && st == BG_OK; t.v0 += d.vc) {
            t.bc = d.V - t.v0 < d.vc ? d.V - t.v0 : d.vc;
            if ((st = cls_logits(c, &d, t, z)) != BG_OK)
                break;
            cls_dlogits(z, t.bc, t, lse, tg, g);
            st = fn(c, &d, t, z);
        }
    }
    return st;
}

/* dx[r0..] (br, C) += dz (br, bc) W[v0..] (bc, C). */
static bg_status_t cls_dx_tile(const bg_layer_call_t *c, const bg_cls_dims_t *d, cls_tile_t t,
                               const float *dz)
{
    bg_gemm_args_t g = {
        .m = t.br,
        .n = d->C,
        .k = t.bc,
        .alpha = 1.0f,
        .beta = 1.0f,
        .a = dz,
        .lda = t.bc,
        .b = (const float *)c->params[0]->data + t.v0 * d->C,
        .ldb = d->C,
        .c = (float *)c->din[0]->data + t.r0 * d->C,
        .ldc = d->C,
        .ab = BG_F32,
        .c_dtype = BG_F32,
    };
    return bg_gemm(c->be, c->stream, &g);
}

/* B: dx (rows, C) = sum over vocabulary tiles of dz W. */
static bg_status_t classifier_backward_input(const bg_layer_call_t *c)
{
    if (c->din[1])
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (classifier): targets are class ids and have no gradient",
                         c->spec->name);
    if (!c->din[0])
        return BG_OK;
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_classifier_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK)
        return st;
    memset(c->din[0]->data, 0, bg_tensor_nbytes(c->din[0]));
    return cls_each_dtile(c, cls_dx_tile);
}

/* dW[v0..] (bc, C) += dz^T (bc, br) x[r0..] (br, C); db[v0..] += colsum(dz). */
static bg_status_t cls_dw_tile(const bg_layer_call_t *c, const bg_cls_dims_t *d, cls_tile_t t,
                               const float *dz)
{
    if (c->grads[0]) {
        bg_gemm_args_t g = {
            .trans_a = true,
            .m = t.bc,
            .n = d->C,
            .k = t.br,
            .alpha = 1.0f,
            .beta = 1.0f,
            .a = dz,
            .lda = t.bc,
            .b = (const float *)c->in[0]->data + t.r0 * d->C,
            .ldb = d->C,
            .c = (float *)c->grads[0]->data + t.v0 * d->C,
            .ldc = d->C,
            .ab = BG_F32,
            .c_dtype = BG_F32,
        };
        bg_status_t st = bg_gemm(c->be, c->stream, &g);
        if (st != BG_OK)
            return st;
    }
    if (d->bias && c->grads[1])
        bg_cpu_colsum_add(dz, t.br, t.bc, (float *)c->grads[1]->data + t.v0);
    return BG_OK;
}

/* W: dW += dz^T x, db += colsum(dz), tile by tile (B need not have run). */
static bg_status_t classifier_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_classifier_backward_weight(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK)
        return st;
    if (!c->grads[0] && !(bg_cls_dims_of(c->spec).bias && c->grads[1]))
        return BG_OK;
    return cls_each_dtile(c, cls_dw_tile);
}

/* The argmax F kept, to `out` on the call's device (any backend). */
static bg_status_t classifier_row_argmax(const bg_layer_call_t *c, int32_t *out)
{
    bg_cls_dims_t d = bg_cls_dims_of(c->spec);
    bg_cls_layout_t l = bg_cls_layout_of(&d, (int64_t)bg_dtype_size(c->dtype));
    if (!d.rows)
        return BG_OK;
    return bg_backend_copy(c->be, out, (const char *)c->saved->data + l.argmax, (size_t)d.rows * 4,
                           BG_COPY_D2D, c->stream);
}

const bg_layer_kind_t bg_kind_classifier = {
    .name = "classifier",
    .min_inputs = 2,
    .max_inputs = 2,
    .keys = classifier_keys,
    .n_keys = sizeof(classifier_keys) / sizeof(classifier_keys[0]),
    .doc = "classifier(x, targets, out=V, bias=true, share=PARAM, std=S): linear head + mean "
           "cross-entropy in logits tiles (what a linear feeding cross_entropy becomes)",
    .out_f32 = true,
    .infer = classifier_infer,
    .params = classifier_params,
    .cost = classifier_cost,
    .forward = classifier_forward,
    .backward_input = classifier_backward_input,
    .backward_weight = classifier_backward_weight,
    .row_argmax = classifier_row_argmax,
};
