/*
 * bench/layers/attention_naive.c -- the attention kernel as it was before
 * the memory-efficient one: it materialises the (B, H, T, T) probabilities
 * in saved scratch and their gradient in the workspace, computes full
 * score rows despite the causal mask and loops over sequences. Kept only
 * as the baseline bench_layers --attention-seqs compares against (same
 * math and parameters as the library's attention with kv_heads = heads and
 * rope off). CPU, f32 only. Must not be linked into the library or
 * registered as a kind.
 *
 * The original layout notes:
 * x (B, T, C) -> qkv = x Wqkv^T + bqkv (B, T, 3C), laid out [q | k | v],
 * head h using columns h*hs..(h+1)*hs of each (hs = C / heads, GPT-2
 * layout); att = softmax(q k^T / sqrt(hs)) with a causal mask unless
 * causal=false; y = att v (B, T, C) heads concatenated; out = y Wproj^T + bproj.
 * Masked scores get probability exactly 0.
 *
 * saved scratch (compute dtype), in this order:
 *   qkv (B, T, 3C) | att (B, H, T, T) probabilities | y (B, T, C) | dqkv (B, T, 3C)
 * F fills qkv, att, y. B fills dqkv (W needs it for d(Wqkv)) and writes dx.
 * W reads dout, y (for proj) and x, dqkv (for qkv).
 * ORDER: W of a micro-batch requires B of that same micro-batch to have run
 * first (it reads the dqkv that B left in saved). B computes dqkv even when
 * din[0] is NULL, so W stays possible for a layer whose input needs no grad.
 * workspace (compute dtype): dy_att (B, T, C) | datt (B, H, T, T), used by B only.
 * CPU half: f32 only; products through bg_gemm, one batched GEMM over the
 * heads per sequence, so a sequence's numbers never depend on which other
 * sequences share its micro-batch. Must not keep state between calls.
 */
#include "layers/layer.h"
#include "layers/cpu_util.h"

#include <math.h>

static const bg_key_desc_t attention_keys[] = {
    {"heads", BG_ATTR_INT, true},
    {"causal", BG_ATTR_BOOL, false},
    {"std", BG_ATTR_FLOAT, false},
};

static bg_status_t attention_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    int64_t heads = bg_attrs_int(&spec->attrs, "heads", 0);
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "attention: input must be a float tensor, got %s",
                             bg_dtype_name(x->dtype));
    if (x->ndim != 3)
        return bg_errbuf_set(err, "attention: input must be (B, T, C), got %d dimensions",
                             x->ndim);
    if (heads <= 0) return bg_errbuf_set(err, "attention: heads must be positive");
    if (x->d[2] % heads)
        return bg_errbuf_set(err, "attention: channels %lld not divisible by heads=%lld",
                             (long long)x->d[2], (long long)heads);
    spec->out = *x;
    return BG_OK;
}

static int attention_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    int64_t C = spec->in[0].d[2];
    float std = (float)bg_attrs_float(&spec->attrs, "std", 0.02);
    int64_t qw[2] = {3 * C, C}, qb[1] = {3 * C}, pw[2] = {C, C}, pb[1] = {C};
    bg_param_slot(p, &n, "qkv.weight", 2, qw, BG_INIT_NORMAL, std, false);
    bg_param_slot(p, &n, "qkv.bias", 1, qb, BG_INIT_ZEROS, 0.0f, false);
    bg_param_slot(p, &n, "proj.weight", 2, pw, BG_INIT_NORMAL, std, false);
    bg_param_slot(p, &n, "proj.bias", 1, pb, BG_INIT_ZEROS, 0.0f, false);
    return n;
}

static void attention_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    const bg_shape_t *x = &spec->in[0];
    double B = (double)x->d[0], T = (double)x->d[1], C = (double)x->d[2];
    double H = (double)bg_attrs_int(&spec->attrs, "heads", 1);
    double N = B * T, es = (double)bg_dtype_size(dtype);
    /* Causal masking is not subtracted: the kernels compute full rows. */
    c->fwd_flops = 2.0 * N * C * 3.0 * C + 4.0 * B * T * T * C + 2.0 * N * C * C + 5.0 * B * H * T * T;
    c->bwd_input_flops = 2.0 * N * C * C + 8.0 * B * T * T * C + 2.0 * N * 3.0 * C * C +
                         5.0 * B * H * T * T;
    c->bwd_weight_flops = 2.0 * N * 3.0 * C * C + 2.0 * N * C * C + 4.0 * N * C;
    c->saved_bytes = (int64_t)(es * (N * 3.0 * C + B * H * T * T + N * C + N * 3.0 * C));
    c->workspace_bytes = (int64_t)(es * (N * C + B * H * T * T));
}

/* Sizes of one call, derived from the spec (the checked entry point has
 * already matched the tensors against it). */
typedef struct att_dims {
    int64_t B, T, C, H, hs, N; /* N = B * T rows */
    bool causal;
    float scale; /* 1 / sqrt(hs) */
} att_dims_t;

static att_dims_t att_dims(const bg_layer_spec_t *spec)
{
    att_dims_t d;
    d.B = spec->in[0].d[0];
    d.T = spec->in[0].d[1];
    d.C = spec->in[0].d[2];
    d.H = bg_attrs_int(&spec->attrs, "heads", 1);
    d.hs = d.C / d.H;
    d.N = d.B * d.T;
    d.causal = bg_attrs_bool(&spec->attrs, "causal", true);
    d.scale = 1.0f / sqrtf((float)d.hs);
    return d;
}

/* Views into saved and workspace, in the order the file comment fixes. */
typedef struct att_bufs {
    float *qkv, *att, *y, *dqkv; /* saved */
    float *dy, *datt;            /* workspace (B only) */
} att_bufs_t;

static att_bufs_t att_bufs(const bg_layer_call_t *c, const att_dims_t *d)
{
    att_bufs_t b = {0};
    float *s = c->saved->data;
    b.qkv = s;
    b.att = b.qkv + d->N * 3 * d->C;
    b.y = b.att + d->B * d->H * d->T * d->T;
    b.dqkv = b.y + d->N * d->C;
    if (c->workspace) {
        b.dy = c->workspace->data;
        b.datt = b.dy + d->N * d->C;
    }
    return b;
}

/*
 * In place over one (T, T) score matrix: row i becomes softmax of its first
 * i+1 entries (causal) or of all T; masked entries become exactly 0. The
 * max shift keeps exp finite; the sum is in double, in column order.
 */
static void att_softmax_rows(float *s, int64_t T, bool causal)
{
    for (int64_t i = 0; i < T; i++) {
        float *row = s + i * T;
        int64_t n = causal ? i + 1 : T;
        float mx = row[0];
        for (int64_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        for (int64_t j = n; j < T; j++) row[j] = 0.0f;
    }
}

/*
 * In place over one (T, T) matrix: datt -> dscores = att * (datt - rowdot),
 * rowdot = sum_j att[i,j] datt[i,j] (the softmax Jacobian). Masked entries
 * have att == 0 and so come out exactly 0.
 */
static void att_softmax_backward_rows(const float *att, float *ds, int64_t T)
{
    for (int64_t i = 0; i < T; i++) {
        const float *p = att + i * T;
        float *g = ds + i * T;
        double dot = 0.0;
        for (int64_t j = 0; j < T; j++) dot += (double)p[j] * g[j];
        float fdot = (float)dot;
        for (int64_t j = 0; j < T; j++) g[j] = p[j] * (g[j] - fdot);
    }
}

/* rows x (N, in) -> y (N, out) = x W^T (+ b), W (out, in). */
static bg_status_t att_project(const bg_layer_call_t *c, const float *x, const float *w,
                               const float *b, int64_t rows, int64_t in, int64_t out, float *y)
{
    bg_gemm_args_t g = {
        .trans_b = true, .m = rows, .n = out, .k = in, .alpha = 1.0f, .beta = 0.0f,
        .a = x, .lda = in, .b = w, .ldb = in, .c = y, .ldc = out,
        .ab = BG_F32, .c_dtype = BG_F32,
    };
    bg_status_t st = bg_gemm(c->be, c->stream, &g);
    if (st != BG_OK) return st;
    bg_cpu_add_bias(y, b, rows, out);
    return BG_OK;
}

/*
 * One sequence b: scores (H, T, T) = q k^T * scale, softmax (masked), then
 * y_b (T, C) = att v, heads written to their own column blocks.
 */
static bg_status_t att_forward_seq(const bg_layer_call_t *c, const att_dims_t *d,
                                   const att_bufs_t *bf, int64_t b)
{
    int64_t T = d->T, C = d->C, TT = T * T;
    const float *q = bf->qkv + b * T * 3 * C, *k = q + C, *v = q + 2 * C;
    float *att = bf->att + b * d->H * TT;
    bg_gemm_args_t s = {
        .trans_b = true, .m = T, .n = T, .k = d->hs, .alpha = d->scale, .beta = 0.0f,
        .a = q, .lda = 3 * C, .b = k, .ldb = 3 * C, .c = att, .ldc = T,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = d->hs, .sb = d->hs, .sc = TT,
    };
    bg_status_t st = bg_gemm(c->be, c->stream, &s);
    if (st != BG_OK) return st;
    for (int64_t h = 0; h < d->H; h++) att_softmax_rows(att + h * TT, T, d->causal);
    bg_gemm_args_t y = {
        .m = T, .n = d->hs, .k = T, .alpha = 1.0f, .beta = 0.0f,
        .a = att, .lda = T, .b = v, .ldb = 3 * C, .c = bf->y + b * T * C, .ldc = C,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = TT, .sb = d->hs, .sc = d->hs,
    };
    return bg_gemm(c->be, c->stream, &y);
}

static bg_status_t attention_forward(const bg_layer_call_t *c)
{
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    att_dims_t d = att_dims(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    const float *x = c->in[0]->data;
    st = att_project(c, x, c->params[0]->data, c->params[1]->data, d.N, d.C, 3 * d.C, bf.qkv);
    for (int64_t b = 0; st == BG_OK && b < d.B; b++) st = att_forward_seq(c, &d, &bf, b);
    if (st != BG_OK) return st;
    return att_project(c, bf.y, c->params[2]->data, c->params[3]->data, d.N, d.C, d.C,
                       c->out->data);
}

/*
 * One sequence b, given dy_att (T, C) in the workspace: writes its dqkv
 * block (T, 3C) completely.
 *   datt (H, T, T) = dy_h v_h^T          dv_h = att_h^T dy_h
 *   dS = softmax backward of datt        dq_h = dS k_h * scale
 *                                        dk_h = dS^T q_h * scale
 */
static bg_status_t att_backward_seq(const bg_layer_call_t *c, const att_dims_t *d,
                                    const att_bufs_t *bf, int64_t b)
{
    int64_t T = d->T, C = d->C, TT = T * T, hs = d->hs;
    const float *q = bf->qkv + b * T * 3 * C, *k = q + C, *v = q + 2 * C;
    const float *att = bf->att + b * d->H * TT, *dy = bf->dy + b * T * C;
    float *datt = bf->datt + b * d->H * TT;
    float *dq = bf->dqkv + b * T * 3 * C, *dk = dq + C, *dv = dq + 2 * C;
    bg_gemm_args_t ga = {
        .trans_b = true, .m = T, .n = T, .k = hs, .alpha = 1.0f, .beta = 0.0f,
        .a = dy, .lda = C, .b = v, .ldb = 3 * C, .c = datt, .ldc = T,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = hs, .sb = hs, .sc = TT,
    };
    bg_gemm_args_t gv = {
        .trans_a = true, .m = T, .n = hs, .k = T, .alpha = 1.0f, .beta = 0.0f,
        .a = att, .lda = T, .b = dy, .ldb = C, .c = dv, .ldc = 3 * C,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = TT, .sb = hs, .sc = hs,
    };
    bg_status_t st = bg_gemm(c->be, c->stream, &ga);
    if (st == BG_OK) st = bg_gemm(c->be, c->stream, &gv);
    if (st != BG_OK) return st;
    for (int64_t h = 0; h < d->H; h++) att_softmax_backward_rows(att + h * TT, datt + h * TT, T);
    bg_gemm_args_t gq = {
        .m = T, .n = hs, .k = T, .alpha = d->scale, .beta = 0.0f,
        .a = datt, .lda = T, .b = k, .ldb = 3 * C, .c = dq, .ldc = 3 * C,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = TT, .sb = hs, .sc = hs,
    };
    bg_gemm_args_t gk = {
        .trans_a = true, .m = T, .n = hs, .k = T, .alpha = d->scale, .beta = 0.0f,
        .a = datt, .lda = T, .b = q, .ldb = 3 * C, .c = dk, .ldc = 3 * C,
        .ab = BG_F32, .c_dtype = BG_F32, .batch = d->H, .sa = TT, .sb = hs, .sc = hs,
    };
    st = bg_gemm(c->be, c->stream, &gq);
    return st != BG_OK ? st : bg_gemm(c->be, c->stream, &gk);
}

/*
 * B: dy_att (N, C) = dout Wproj; per sequence dqkv (kept in saved for W);
 * dx (N, C) = dqkv (N, 3C) Wqkv (3C, C) when din[0] is wanted.
 */
static bg_status_t attention_backward_input(const bg_layer_call_t *c)
{
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    att_dims_t d = att_dims(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    bg_gemm_args_t gy = {
        .m = d.N, .n = d.C, .k = d.C, .alpha = 1.0f, .beta = 0.0f,
        .a = c->dout->data, .lda = d.C, .b = c->params[2]->data, .ldb = d.C,
        .c = bf.dy, .ldc = d.C, .ab = BG_F32, .c_dtype = BG_F32,
    };
    st = bg_gemm(c->be, c->stream, &gy);
    for (int64_t b = 0; st == BG_OK && b < d.B; b++) st = att_backward_seq(c, &d, &bf, b);
    if (st != BG_OK || !c->din[0]) return st;
    bg_gemm_args_t gx = {
        .m = d.N, .n = d.C, .k = 3 * d.C, .alpha = 1.0f, .beta = 0.0f,
        .a = bf.dqkv, .lda = 3 * d.C, .b = c->params[0]->data, .ldb = d.C,
        .c = c->din[0]->data, .ldc = d.C, .ab = BG_F32, .c_dtype = BG_F32,
    };
    return bg_gemm(c->be, c->stream, &gx);
}

/*
 * W (after B of the same micro-batch): dWproj (C, C) += dout^T y,
 * dbproj += colsum(dout), dWqkv (3C, C) += dqkv^T x, dbqkv += colsum(dqkv).
 */
static bg_status_t attention_backward_weight(const bg_layer_call_t *c)
{
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK) return st;
    att_dims_t d = att_dims(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    if (c->grads[0]) {
        bg_gemm_args_t g = {
            .trans_a = true, .m = 3 * d.C, .n = d.C, .k = d.N, .alpha = 1.0f, .beta = 1.0f,
            .a = bf.dqkv, .lda = 3 * d.C, .b = c->in[0]->data, .ldb = d.C,
            .c = c->grads[0]->data, .ldc = d.C, .ab = BG_F32, .c_dtype = BG_F32,
        };
        if ((st = bg_gemm(c->be, c->stream, &g)) != BG_OK) return st;
    }
    if (c->grads[1]) bg_cpu_colsum_add(bf.dqkv, d.N, 3 * d.C, c->grads[1]->data);
    if (c->grads[2]) {
        bg_gemm_args_t g = {
            .trans_a = true, .m = d.C, .n = d.C, .k = d.N, .alpha = 1.0f, .beta = 1.0f,
            .a = c->dout->data, .lda = d.C, .b = bf.y, .ldb = d.C,
            .c = c->grads[2]->data, .ldc = d.C, .ab = BG_F32, .c_dtype = BG_F32,
        };
        if ((st = bg_gemm(c->be, c->stream, &g)) != BG_OK) return st;
    }
    if (c->grads[3]) bg_cpu_colsum_add(c->dout->data, d.N, d.C, c->grads[3]->data);
    return BG_OK;
}

const bg_layer_kind_t bench_kind_attention_naive = {
    .name = "attention_naive",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = attention_keys,
    .n_keys = sizeof(attention_keys) / sizeof(attention_keys[0]),
    .doc = "the materialising attention baseline (bench only)",
    .infer = attention_infer,
    .params = attention_params,
    .cost = attention_cost,
    .forward = attention_forward,
    .backward_input = attention_backward_input,
    .backward_weight = attention_backward_weight,
};
