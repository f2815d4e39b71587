/*
 * layers/embedding.c -- token (+ optional learned position) embedding:
 * tokens i32 (B, T) -> (B, T, dim); out[b,t] = tokens[id] + positions[t].
 * No input gradient (ids are integers). W scatter-adds dy into the rows of
 * the ids, in a fixed order so results do not depend on threads or layout.
 * Ids outside [0, vocab) fail the call (BG_ERR_INVALID) before any write.
 * The CPU half computes in f32 only.
 * Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"

static const bg_key_desc_t embedding_keys[] = {
    {"vocab", BG_ATTR_INT, true},
    {"dim", BG_ATTR_INT, true},
    {"positions", BG_ATTR_INT, false},
};

static bg_status_t embedding_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    int64_t vocab = bg_attrs_int(&spec->attrs, "vocab", 0);
    int64_t dim = bg_attrs_int(&spec->attrs, "dim", 0);
    int64_t ctx = bg_attrs_int(&spec->attrs, "positions", 0);
    if (x->dtype != BG_I32)
        return bg_errbuf_set(err, "embedding: input must be i32 token ids, got %s",
                             bg_dtype_name(x->dtype));
    if (vocab <= 0 || dim <= 0)
        return bg_errbuf_set(err, "embedding: vocab and dim must be positive (vocab=%lld, dim=%lld)",
                             (long long)vocab, (long long)dim);
    if (x->ndim >= BG_MAX_DIMS)
        return bg_errbuf_set(err, "embedding: input has %d dimensions, at most %d supported",
                             x->ndim, BG_MAX_DIMS - 1);
    if (ctx < 0) return bg_errbuf_set(err, "embedding: positions must be >= 0");
    if (ctx > 0) {
        if (x->ndim < 2)
            return bg_errbuf_set(err, "embedding: positions need a (B, T) input, got %d dimension",
                                 x->ndim);
        if (x->d[x->ndim - 1] > ctx)
            return bg_errbuf_set(err, "embedding: sequence length %lld exceeds positions=%lld",
                                 (long long)x->d[x->ndim - 1], (long long)ctx);
    }
    spec->out = *x;
    spec->out.dtype = BG_F32;
    spec->out.ndim = x->ndim + 1;
    spec->out.d[x->ndim] = dim;
    return BG_OK;
}

static int embedding_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t vocab = bg_attrs_int(&spec->attrs, "vocab", 0);
    int64_t dim = bg_attrs_int(&spec->attrs, "dim", 0);
    int64_t ctx = bg_attrs_int(&spec->attrs, "positions", 0);
    int64_t td[2] = {vocab, dim}, pd[2] = {ctx, dim};
    bg_param_slot(p, &n, "tokens", 2, td, BG_INIT_NORMAL, 0.02f, false);
    if (ctx > 0) bg_param_slot(p, &n, "positions", 2, pd, BG_INIT_NORMAL, 0.02f, false);
    return n;
}

static void embedding_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    (void)dtype;
    double n = (double)bg_shape_numel(&spec->out);
    bool pos = bg_attrs_int(&spec->attrs, "positions", 0) > 0;
    c->fwd_flops = pos ? n : 0.0;
    c->bwd_weight_flops = pos ? 2.0 * n : n;
}

/*
 * Every id must index a row of the table: an out-of-range id would read or
 * (in W) write outside the parameter. Checked before anything is written,
 * so a failing call leaves out/grads as they were.
 */
static bg_status_t embedding_check_ids(const bg_layer_call_t *c, const int32_t *ids, int64_t n,
                                       int64_t vocab)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return bg_errorf(BG_ERR_INVALID,
                             "layer %s (embedding): token id %d at position %lld is outside "
                             "[0, %lld)",
                             c->spec->name, (int)ids[i], (long long)i, (long long)vocab);
    return BG_OK;
}

/* What the CPU passes read from a call: ids (B, T) as n = B*T positions of
 * rows T, the table width and whether positions are added. */
typedef struct {
    const int32_t *ids;
    int64_t n, T, dim;
    bool pos;
} emb_args_t;

/* Fills *out from c after checking f32 and every id (the error names the
 * layer, `pass` and the bad position); out is set only on success. */
static bg_status_t embedding_args(const bg_layer_call_t *c, const char *pass, emb_args_t *out)
{
    bg_status_t st = bg_cpu_require_f32(c, pass);
    if (st != BG_OK) return st;
    emb_args_t a = {
        .ids = c->in[0]->data,
        .n = bg_tensor_numel(c->in[0]),
        .T = bg_tensor_cols(c->in[0]),
        .dim = bg_attrs_int(&c->spec->attrs, "dim", 0),
        .pos = bg_attrs_int(&c->spec->attrs, "positions", 0) > 0,
    };
    int64_t vocab = bg_attrs_int(&c->spec->attrs, "vocab", 0);
    if ((st = embedding_check_ids(c, a.ids, a.n, vocab)) != BG_OK) return st;
    *out = a;
    return BG_OK;
}

/* out (N, dim) = tokens[ids[n]] (+ positions[n mod T]), N = B*T. */
static bg_status_t embedding_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_embedding_forward(c);
#endif
    emb_args_t a;
    bg_status_t st = embedding_args(c, "forward", &a);
    if (st != BG_OK) return st;
    const int32_t *ids = a.ids;
    int64_t n = a.n, T = a.T, dim = a.dim;
    const float *tok = c->params[0]->data;
    const float *pe = a.pos ? c->params[1]->data : NULL;
    float *y = c->out->data;
    for (int64_t i = 0; i < n; i++) {
        const float *row = tok + (int64_t)ids[i] * dim;
        float *dst = y + i * dim;
        if (pe) {
            const float *prow = pe + (i % T) * dim;
            for (int64_t j = 0; j < dim; j++) dst[j] = row[j] + prow[j];
        } else {
            for (int64_t j = 0; j < dim; j++) dst[j] = row[j];
        }
    }
    return BG_OK;
}

/*
 * tokens_grad[ids[n]] += dy[n]; positions_grad[n mod T] += dy[n].
 * Positions n are visited in increasing order, one at a time: repeated ids
 * always sum in the same order, so the result is bit-reproducible.
 */
static bg_status_t embedding_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_embedding_backward_weight(c);
#endif
    emb_args_t a;
    bg_status_t st = embedding_args(c, "backward-weight", &a);
    if (st != BG_OK) return st;
    const int32_t *ids = a.ids;
    int64_t n = a.n, T = a.T, dim = a.dim;
    const float *dy = c->dout->data;
    float *gt = c->grads[0] ? c->grads[0]->data : NULL;
    float *gp = a.pos && c->grads[1] ? c->grads[1]->data : NULL;
    for (int64_t i = 0; i < n; i++) {
        const float *src = dy + i * dim;
        if (gt) {
            float *dst = gt + (int64_t)ids[i] * dim;
            for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
        }
        if (gp) {
            float *dst = gp + (i % T) * dim;
            for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
        }
    }
    return BG_OK;
}

const bg_layer_kind_t bg_kind_embedding = {
    .name = "embedding",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = embedding_keys,
    .n_keys = sizeof(embedding_keys) / sizeof(embedding_keys[0]),
    .doc = "embedding(ids, vocab=V, dim=C, positions=CTX): token (+ position) embedding",
    .infer = embedding_infer,
    .params = embedding_params,
    .cost = embedding_cost,
    .forward = embedding_forward,
    .backward_weight = embedding_backward_weight,
};
