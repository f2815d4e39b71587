/*
 * layers/attention.c -- multi-head self-attention with its own projections,
 * grouped-query heads, rotary positions and memory-efficient (tiled,
 * online-softmax) kernels.
 *
 * x (B, T, C) -> qkv = x Wqkv^T + bqkv (B, T, Wq), Wq = C + 2 KV hs, laid
 * out [q | k | v]: q has H heads of hs = C / H columns (head h at columns
 * h*hs..), k and v have KV heads each (kv_heads=, default H; KV divides
 * H). Query head h reads kv head h / (H / KV) (consecutive query heads
 * share a kv head, as Llama's repeat_kv). With KV = H this is GPT-2's
 * layout, bit for bit in the projections.
 * rope=true rotates q and k per head after the projection, HF Llama's
 * rotate_half convention: for i < hs/2, angle = t * rope_theta^(-2i/hs)
 * (t = position in the sequence), the pair (i, i + hs/2) becomes
 * (x_i cos - x_{i+hs/2} sin, x_{i+hs/2} cos + x_i sin); angles in double.
 * att = softmax(q k^T / sqrt(hs)) with a causal mask unless causal=false;
 * y = att v (B, T, C) heads concatenated; out = y Wproj^T + bproj.
 * bias=false (Llama) drops bqkv and bproj: no slots, no add, no gradient;
 * the slots that remain keep their order (bg_att_dims_t.pq*, pp*).
 *
 * Memory-efficient: F walks score tiles of BG_ATT_CPU_TILE^2 with an
 * online softmax and keeps only y and the per-row log-sum-exp; B
 * recomputes each score tile from q, k and the lse. Tiles above the
 * causal diagonal are skipped. No (T, T) buffer exists; saved scratch and
 * workspace are O(B T C) (layout in layers/attention_impl.h).
 * F fills qkv, y, lse. B fills dqkv (W needs it for d(Wqkv)) and writes dx.
 * ORDER: W of a micro-batch requires B of that same micro-batch to have run
 * first (it reads the dqkv that B left in saved). B computes dqkv even when
 * din[0] is NULL, so W stays possible for a layer whose input needs no grad.
 * CPU half: f32 only; products through bg_gemm per tile, exponentials
 * through cpu_math.h (vectorised, < 2 ulp), reductions in a fixed order,
 * each (sequence, head) on its own: a sequence's numbers never depend on
 * which other sequences share its micro-batch. Must not keep state
 * between calls.
 */
#include "layers/attention_impl.h"
#include "layers/cpu_math.h"
#include "layers/cpu_util.h"
#include "layers/kernels_cuda.h"
#include "layers/layer.h"

#include <math.h>
#include <string.h>

static const bg_key_desc_t attention_keys[] = {
    {"heads", BG_ATTR_INT, true},      {"kv_heads", BG_ATTR_INT, false},
    {"causal", BG_ATTR_BOOL, false},   {"rope", BG_ATTR_BOOL, false},
    {"rope_theta", BG_ATTR_FLOAT, false}, {"std", BG_ATTR_FLOAT, false},
    {"bias", BG_ATTR_BOOL, false},
};

/* The head keys: heads divides C, kv_heads divides heads, rope's needs. */
static bg_status_t attention_check_heads(const bg_layer_spec_t *spec, int64_t C, bg_errbuf_t *err)
{
    const bg_attrs_t *a = &spec->attrs;
    int64_t heads = bg_attrs_int(a, "heads", 0), kv = bg_attrs_int(a, "kv_heads", heads);
    if (heads <= 0) return bg_errbuf_set(err, "attention: heads must be positive");
    if (C % heads)
        return bg_errbuf_set(err, "attention: channels %lld not divisible by heads=%lld",
                             (long long)C, (long long)heads);
    if (kv <= 0 || heads % kv)
        return bg_errbuf_set(err, "attention: kv_heads=%lld must be positive and divide heads=%lld",
                             (long long)kv, (long long)heads);
    bool rope = bg_attrs_bool(a, "rope", false);
    if (bg_attrs_find(a, "rope_theta") && !rope)
        return bg_errbuf_set(err, "attention: rope_theta= needs rope=true");
    double theta = bg_attrs_float(a, "rope_theta", 10000.0);
    if (rope && !(theta > 0.0 && isfinite(theta)))
        return bg_errbuf_set(err, "attention: rope_theta must be positive, got %g", theta);
    if (rope && (C / heads) % 2)
        return bg_errbuf_set(err, "attention: rope needs an even head size, got %lld / %lld = %lld",
                             (long long)C, (long long)heads, (long long)(C / heads));
    return BG_OK;
}

static bg_status_t attention_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_shape_t *x = &spec->in[0];
    if (x->dtype != BG_F32)
        return bg_errbuf_set(err, "attention: input must be a float tensor, got %s",
                             bg_dtype_name(x->dtype));
    if (x->ndim != 3)
        return bg_errbuf_set(err, "attention: input must be (B, T, C), got %d dimensions",
                             x->ndim);
    bg_status_t st = attention_check_heads(spec, x->d[2], err);
    if (st != BG_OK) return st;
    spec->out = *x;
    return BG_OK;
}

static int attention_params(const bg_layer_spec_t *spec, bg_param_desc_t *p)
{
    int n = 0;
    bg_att_dims_t d = bg_att_dims_of(spec);
    float std = (float)bg_attrs_float(&spec->attrs, "std", 0.02);
    int64_t qw[2] = {d.Wq, d.C}, qb[1] = {d.Wq}, pw[2] = {d.C, d.C}, pb[1] = {d.C};
    bg_param_slot(p, &n, "qkv.weight", 2, qw, BG_INIT_NORMAL, std, false);
    if (d.bias) bg_param_slot(p, &n, "qkv.bias", 1, qb, BG_INIT_ZEROS, 0.0f, false);
    bg_param_slot(p, &n, "proj.weight", 2, pw, BG_INIT_NORMAL, std, false);
    if (d.bias) bg_param_slot(p, &n, "proj.bias", 1, pb, BG_INIT_ZEROS, 0.0f, false);
    return n;
}

/*
 * FLOPs count the (query, key) pairs the kernels visit: T (T + 1) / 2 per
 * head when causal (masked tiles are skipped; the diagonal tiles' masked
 * half is noise at these sizes). B recomputes the scores (that is the price
 * of not keeping them). Bytes are linear in T (see attention_impl.h).
 */
static void attention_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *c)
{
    bg_att_dims_t d = bg_att_dims_of(spec);
    double N = (double)d.N, C = (double)d.C, Wq = (double)d.Wq, T = (double)d.T;
    double pairs = (double)d.B * (double)d.H * (d.causal ? T * (T + 1.0) / 2.0 : T * T);
    double hs = (double)d.hs, rope = d.rope ? 6.0 * N * (C + (double)d.KV * hs) : 0.0;
    c->fwd_flops = 2.0 * N * C * Wq + 4.0 * pairs * hs + 5.0 * pairs + 2.0 * N * C * C + rope;
    c->bwd_input_flops = 2.0 * N * C * C + 2.0 * N * C + 10.0 * pairs * hs + 7.0 * pairs +
                         rope + 2.0 * N * Wq * C;
    double bias = d.bias ? N * (Wq + C) : 0.0;
    c->fwd_flops += bias;
    c->bwd_weight_flops = 2.0 * N * Wq * C + 2.0 * N * C * C + bias;
    bg_att_layout_t l = bg_att_layout_of(&d, (int64_t)bg_dtype_size(dtype));
    c->saved_bytes = l.saved;
    c->workspace_bytes = l.workspace;
}

/* ---- CPU half ---- */

/* Float views of saved and workspace (f32: es = 4). */
typedef struct att_bufs {
    float *qkv, *y, *dqkv, *lse; /* saved */
    float *dy, *dsum, *s, *ds, *m, *l; /* workspace; s, ds: TILE^2; m, l: TILE */
} att_bufs_t;

static att_bufs_t att_bufs(const bg_layer_call_t *c, const bg_att_dims_t *d)
{
    att_bufs_t b = {0};
    bg_att_layout_t l = bg_att_layout_of(d, 4);
    char *s = c->saved->data, *w = c->workspace->data;
    const int64_t tt = (int64_t)BG_ATT_CPU_TILE * BG_ATT_CPU_TILE;
    b.qkv = (float *)(s + l.qkv);
    b.y = (float *)(s + l.y);
    b.dqkv = (float *)(s + l.dqkv);
    b.lse = (float *)(s + l.lse);
    b.dy = (float *)(w + l.dy);
    b.dsum = (float *)(w + l.dsum);
    b.s = (float *)(w + l.tiles);
    b.ds = b.s + tt;
    b.m = b.ds + tt;
    b.l = b.m + BG_ATT_CPU_TILE;
    return b;
}

/* c = alpha op(a) op(b) + beta c, f32, row-major. */
static bg_status_t att_gemm(const bg_layer_call_t *c, bool ta, bool tb, int64_t m, int64_t n,
                            int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float beta, float *out, int64_t ldc)
{
    bg_gemm_args_t g = {
        .trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta,
        .a = a, .lda = lda, .b = b, .ldb = ldb, .c = out, .ldc = ldc,
        .ab = BG_F32, .c_dtype = BG_F32,
    };
    return bg_gemm(c->be, c->stream, &g);
}

/*
 * In place over qkv-shaped rows (N, Wq): rotate the q heads (H) and k
 * heads (KV, right after the q heads) of each row by its position's
 * angles; inverse rotates back (the transpose: turns gradients of rotated
 * q/k into gradients of the projections). cos/sin in double, applied in f32.
 */
static void att_rope(float *qkv, const bg_att_dims_t *d, bool inverse)
{
    enum { RC = 64 }; /* angles per batch: one position's cos/sin, computed once for all B */
    float co[RC], si[RC];
    int64_t half = d->hs / 2, nh = d->H + d->KV;
    for (int64_t t = 0; t < d->T; t++)
        for (int64_t i0 = 0; i0 < half; i0 += RC) {
            int64_t ni = half - i0 < RC ? half - i0 : RC;
            for (int64_t i = 0; i < ni; i++) {
                double a = (double)t * pow(d->theta, -2.0 * (double)(i0 + i) / (double)d->hs);
                co[i] = (float)cos(a);
                si[i] = inverse ? -(float)sin(a) : (float)sin(a);
            }
            for (int64_t b = 0; b < d->B; b++)
                for (int64_t h = 0; h < nh; h++) {
                    float *x = qkv + (b * d->T + t) * d->Wq + h * d->hs + i0;
                    for (int64_t i = 0; i < ni; i++) {
                        float x0 = x[i], x1 = x[i + half];
                        x[i] = x0 * co[i] - x1 * si[i];
                        x[i + half] = x1 * co[i] + x0 * si[i];
                    }
                }
        }
}

/* Pointers of head h of sequence b into a qkv-shaped block. */
typedef struct att_head {
    float *q, *k, *v; /* row stride Wq */
} att_head_t;

static att_head_t att_head(float *qkv, const bg_att_dims_t *d, int64_t b, int64_t h)
{
    att_head_t p;
    float *base = qkv + b * d->T * d->Wq;
    p.q = base + h * d->hs;
    p.k = base + d->ko + (h / d->G) * d->hs;
    p.v = base + d->vo + (h / d->G) * d->hs;
    return p;
}

/* Keys of query row i a tile starting at column j0 with bc columns may see. */
static int64_t att_visible(const bg_att_dims_t *d, int64_t i, int64_t j0, int64_t bc)
{
    if (!d->causal) return bc;
    int64_t n = i - j0 + 1;
    return n < 0 ? 0 : n < bc ? n : bc;
}

/*
 * Online softmax over one score tile s (br, bc; row stride TILE) for query
 * rows i0..: updates the running max m and sum l, turns s into the tile's
 * probabilities relative to the new max (masked entries exactly 0) and
 * rescales the rows of y (row stride ldy) already accumulated.
 */
static void att_online_tile(const bg_att_dims_t *d, float *s, int64_t i0, int64_t br, int64_t j0,
                            int64_t bc, float *m, float *l, float *y, int64_t ldy)
{
    for (int64_t r = 0; r < br; r++) {
        float *row = s + r * BG_ATT_CPU_TILE;
        int64_t n = att_visible(d, i0 + r, j0, bc);
        float mx = m[r];
        for (int64_t j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        /* m = -inf on the first tile: alpha ~1e-38 scales l = 0 and y = 0 */
        float alpha = bg_cpu_expf(m[r] - mx);
        for (int64_t j = 0; j < n; j++) row[j] = bg_cpu_expf(row[j] - mx);
        for (int64_t j = n; j < bc; j++) row[j] = 0.0f;
        l[r] = l[r] * alpha + (float)bg_cpu_sum(row, n);
        m[r] = mx;
        if (alpha != 1.0f)
            for (int64_t e = 0; e < d->hs; e++) y[r * ldy + e] *= alpha;
    }
}

/* F of head h of sequence b: y block and lse row, tile by tile. */
static bg_status_t att_forward_head(const bg_layer_call_t *c, const bg_att_dims_t *d,
                                    const att_bufs_t *bf, int64_t b, int64_t h)
{
    const int64_t TL = BG_ATT_CPU_TILE, T = d->T;
    att_head_t p = att_head(bf->qkv, d, b, h);
    float *y = bf->y + b * T * d->C + h * d->hs, *lse = bf->lse + (b * d->H + h) * T;
    bg_status_t st = BG_OK;
    for (int64_t i0 = 0; i0 < T && st == BG_OK; i0 += TL) {
        int64_t br = T - i0 < TL ? T - i0 : TL, jend = d->causal ? i0 + br : T;
        float *yi = y + i0 * d->C;
        for (int64_t r = 0; r < br; r++) {
            bf->m[r] = -INFINITY;
            bf->l[r] = 0.0f;
            memset(yi + r * d->C, 0, sizeof(float) * (size_t)d->hs);
        }
        for (int64_t j0 = 0; j0 < jend && st == BG_OK; j0 += TL) {
            int64_t bc = jend - j0 < TL ? jend - j0 : TL;
            st = att_gemm(c, false, true, br, bc, d->hs, d->scale, p.q + i0 * d->Wq, d->Wq,
                          p.k + j0 * d->Wq, d->Wq, 0.0f, bf->s, TL);
            if (st != BG_OK) break;
            att_online_tile(d, bf->s, i0, br, j0, bc, bf->m, bf->l, yi, d->C);
            st = att_gemm(c, false, false, br, d->hs, bc, 1.0f, bf->s, TL, p.v + j0 * d->Wq,
                          d->Wq, 1.0f, yi, d->C);
        }
        for (int64_t r = 0; r < br && st == BG_OK; r++) {
            float inv = 1.0f / bf->l[r];
            for (int64_t e = 0; e < d->hs; e++) yi[r * d->C + e] *= inv;
            lse[i0 + r] = bf->m[r] + logf(bf->l[r]);
        }
    }
    return st;
}

static bg_status_t attention_forward(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_attention_forward(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "forward");
    if (st != BG_OK) return st;
    bg_att_dims_t d = bg_att_dims_of(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    st = att_gemm(c, false, true, d.N, d.Wq, d.C, 1.0f, c->in[0]->data, d.C,
                  c->params[d.pqw]->data, d.C, 0.0f, bf.qkv, d.Wq);
    if (st != BG_OK) return st;
    if (d.bias) bg_cpu_add_bias(bf.qkv, c->params[d.pqb]->data, d.N, d.Wq);
    if (d.rope) att_rope(bf.qkv, &d, false);
    for (int64_t b = 0; st == BG_OK && b < d.B; b++)
        for (int64_t h = 0; st == BG_OK && h < d.H; h++) st = att_forward_head(c, &d, &bf, b, h);
    if (st != BG_OK) return st;
    st = att_gemm(c, false, true, d.N, d.C, d.C, 1.0f, bf.y, d.C, c->params[d.ppw]->data, d.C,
                  0.0f, c->out->data, d.C);
    if (st == BG_OK && d.bias) bg_cpu_add_bias(c->out->data, c->params[d.ppb]->data, d.N, d.C);
    return st;
}

/* dsum (B, H, T) = rowsum over each head's columns of dy * y, in double. */
static void att_dsum(const bg_att_dims_t *d, const att_bufs_t *bf)
{
    for (int64_t n = 0; n < d->N; n++)
        for (int64_t h = 0; h < d->H; h++) {
            const float *a = bf->dy + n * d->C + h * d->hs, *y = bf->y + n * d->C + h * d->hs;
            double s = 0.0;
            for (int64_t e = 0; e < d->hs; e++) s += (double)a[e] * y[e];
            bf->dsum[((n / d->T) * d->H + h) * d->T + n % d->T] = (float)s;
        }
}

/*
 * Probabilities of one tile from the kept lse (p = exp(s - lse), masked
 * entries 0) in s, and, given dp = dy v^T in ds, dS = p (dp - dsum) in ds.
 */
BG_CPU_WIDE static void att_tile_grad(const bg_att_dims_t *d, float *s, float *ds, const float *lse,
                          const float *dsum, int64_t i0, int64_t br, int64_t j0, int64_t bc)
{
    for (int64_t r = 0; r < br; r++) {
        float *ps = s + r * BG_ATT_CPU_TILE, *g = ds + r * BG_ATT_CPU_TILE;
        int64_t n = att_visible(d, i0 + r, j0, bc);
        float ls = lse[i0 + r], D = dsum[i0 + r];
        for (int64_t j = 0; j < n; j++) {
            ps[j] = bg_cpu_expf(ps[j] - ls);
            g[j] = ps[j] * (g[j] - D);
        }
        for (int64_t j = n; j < bc; j++) ps[j] = g[j] = 0.0f;
    }
}

/*
 * B of head h of sequence b, accumulating into dqkv (zeroed by the caller):
 * per key tile j (outer) and query tile i >= j when causal (inner):
 *   s = q_i k_j^T scale, p = exp(s - lse)   dv_j += p^T dy_i
 *   dp = dy_i v_j^T, dS = p (dp - dsum)     dq_i += dS k_j scale
 *                                           dk_j += dS^T q_i scale
 * A fixed loop order, so the sums come out the same every time.
 */
static bg_status_t att_backward_head(const bg_layer_call_t *c, const bg_att_dims_t *d,
                                     const att_bufs_t *bf, int64_t b, int64_t h)
{
    const int64_t TL = BG_ATT_CPU_TILE, T = d->T, W = d->Wq, hs = d->hs;
    att_head_t p = att_head(bf->qkv, d, b, h), g = att_head(bf->dqkv, d, b, h);
    const float *dy = bf->dy + b * T * d->C + h * hs, *lse = bf->lse + (b * d->H + h) * T;
    const float *dsum = bf->dsum + (b * d->H + h) * T;
    bg_status_t st = BG_OK;
    for (int64_t j0 = 0; j0 < T && st == BG_OK; j0 += TL) {
        int64_t bc = T - j0 < TL ? T - j0 : TL;
        for (int64_t i0 = d->causal ? j0 : 0; i0 < T && st == BG_OK; i0 += TL) {
            int64_t br = T - i0 < TL ? T - i0 : TL;
            st = att_gemm(c, false, true, br, bc, hs, d->scale, p.q + i0 * W, W, p.k + j0 * W, W,
                          0.0f, bf->s, TL);
            if (st == BG_OK)
                st = att_gemm(c, false, true, br, bc, hs, 1.0f, dy + i0 * d->C, d->C,
                              p.v + j0 * W, W, 0.0f, bf->ds, TL);
            if (st != BG_OK) break;
            att_tile_grad(d, bf->s, bf->ds, lse, dsum, i0, br, j0, bc);
            st = att_gemm(c, true, false, bc, hs, br, 1.0f, bf->s, TL, dy + i0 * d->C, d->C,
                          1.0f, g.v + j0 * W, W);
            if (st == BG_OK)
                st = att_gemm(c, false, false, br, hs, bc, d->scale, bf->ds, TL, p.k + j0 * W, W,
                              1.0f, g.q + i0 * W, W);
            if (st == BG_OK)
                st = att_gemm(c, true, false, bc, hs, br, d->scale, bf->ds, TL, p.q + i0 * W, W,
                              1.0f, g.k + j0 * W, W);
        }
    }
    return st;
}

/*
 * B: dy_att (N, C) = dout Wproj; dsum; per (sequence, head) dqkv (kept in
 * saved for W; rotated back when rope); dx (N, C) = dqkv (N, Wq) Wqkv
 * (Wq, C) when din[0] is wanted.
 */
static bg_status_t attention_backward_input(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_attention_backward_input(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-input");
    if (st != BG_OK) return st;
    bg_att_dims_t d = bg_att_dims_of(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    st = att_gemm(c, false, false, d.N, d.C, d.C, 1.0f, c->dout->data, d.C,
                  c->params[d.ppw]->data, d.C, 0.0f, bf.dy, d.C);
    if (st != BG_OK) return st;
    att_dsum(&d, &bf);
    memset(bf.dqkv, 0, sizeof(float) * (size_t)(d.N * d.Wq));
    /* h in kv-group order: a kv head's dk/dv sums its query heads in order. */
    for (int64_t b = 0; st == BG_OK && b < d.B; b++)
        for (int64_t h = 0; st == BG_OK && h < d.H; h++) st = att_backward_head(c, &d, &bf, b, h);
    if (st != BG_OK) return st;
    if (d.rope) att_rope(bf.dqkv, &d, true);
    if (!c->din[0]) return BG_OK;
    return att_gemm(c, false, false, d.N, d.C, d.Wq, 1.0f, bf.dqkv, d.Wq, c->params[d.pqw]->data,
                    d.C, 0.0f, c->din[0]->data, d.C);
}

/*
 * W (after B of the same micro-batch): dWproj (C, C) += dout^T y,
 * dbproj += colsum(dout), dWqkv (Wq, C) += dqkv^T x, dbqkv += colsum(dqkv)
 * (the bias sums only when bias=true).
 */
static bg_status_t attention_backward_weight(const bg_layer_call_t *c)
{
#ifdef BG_HAVE_CUDA
    if (bg_backend_device(c->be) == BG_DEV_CUDA)
        return bg_cuda_attention_backward_weight(c);
#endif
    bg_status_t st = bg_cpu_require_f32(c, "backward-weight");
    if (st != BG_OK) return st;
    bg_att_dims_t d = bg_att_dims_of(c->spec);
    if (d.N == 0) return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    bg_tensor_t *gqw = c->grads[d.pqw], *gpw = c->grads[d.ppw];
    bg_tensor_t *gqb = d.bias ? c->grads[d.pqb] : NULL, *gpb = d.bias ? c->grads[d.ppb] : NULL;
    if (gqw && (st = att_gemm(c, true, false, d.Wq, d.C, d.N, 1.0f, bf.dqkv, d.Wq, c->in[0]->data,
                              d.C, 1.0f, gqw->data, d.C)) != BG_OK)
        return st;
    if (gqb) bg_cpu_colsum_add(bf.dqkv, d.N, d.Wq, gqb->data);
    if (gpw && (st = att_gemm(c, true, false, d.C, d.C, d.N, 1.0f, c->dout->data, d.C, bf.y, d.C,
                              1.0f, gpw->data, d.C)) != BG_OK)
        return st;
    if (gpb) bg_cpu_colsum_add(c->dout->data, d.N, d.C, gpb->data);
    return BG_OK;
}

const bg_layer_kind_t bg_kind_attention = {
    .name = "attention",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = attention_keys,
    .n_keys = sizeof(attention_keys) / sizeof(attention_keys[0]),
    .doc = "attention(x, heads=H, kv_heads=H, causal=true, rope=false, rope_theta=10000, "
           "bias=true): multi-head self-attention with qkv/proj",
    .infer = attention_infer,
    .params = attention_params,
    .cost = attention_cost,
    .forward = attention_forward,
    .backward_input = attention_backward_input,
    .backward_weight = attention_backward_weight,
};
