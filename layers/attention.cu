/*
 * layers/attention.cu -- CUDA half of causal multi-head self-attention.
 * GEMMs (projections, per-head scores and att@v) go through bg_gemm
 * (cuBLAS, batched over heads per sequence: a head's q/k/v are column
 * blocks of qkv with row stride 3C, so one strided batch covers the heads
 * of one sequence); this file adds the masked softmax and its backward.
 * saved (compute dtype): qkv (B,T,3C) | att (B,H,T,T) | y (B,T,C) | dqkv (B,T,3C)
 * workspace (compute dtype): dy_att (B,T,C) | datt (B,H,T,T)
 * exactly as layers/attention.c fixes; F fills qkv, att, y; B fills dqkv
 * (always: W needs it) and dx when wanted; W reads dout, y, x, dqkv.
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh"

#include <math.h>

#define ATT_ROWS_PER_BLOCK 8 /* warps per block: one warp per score row */

/* ---- kernels ---- */

/*
 * In place over rows of (B*H*T, T) scores, warp per row i (query index
 * i = row mod T): softmax over the first i+1 entries (causal) or all T,
 * masked entries set to exactly 0. Max-shifted; sums in a fixed tree.
 */
template <typename T>
__global__ void attention_softmax_kernel(T *att, int64_t rows, int64_t Tn, bool causal)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * ATT_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    T *row = att + r * Tn;
    int64_t n = causal ? r % Tn + 1 : Tn;
    float mx = -INFINITY;
    for (int64_t j = lane; j < n; j += 32)
        mx = fmaxf(mx, bg_ld(&row[j]));
    mx = bg_warp_max(mx);
    float sum = 0.0f;
    for (int64_t j = lane; j < n; j += 32)
        sum += expf(bg_ld(&row[j]) - mx);
    float inv = 1.0f / bg_warp_sum(sum);
    for (int64_t j = lane; j < Tn; j += 32)
        bg_st(&row[j], j < n ? expf(bg_ld(&row[j]) - mx) * inv : 0.0f);
}

/* In place over rows: datt -> att * (datt - sum_j att datt), the softmax
 * Jacobian; masked entries (att == 0) come out 0. Warp per row. */
template <typename T>
__global__ void attention_softmax_backward_kernel(const T *att, T *ds, int64_t rows, int64_t Tn)
{
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * ATT_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows)
        return;
    const T *p = att + r * Tn;
    T *g = ds + r * Tn;
    float dot = 0.0f;
    for (int64_t j = lane; j < Tn; j += 32)
        dot += bg_ld(&p[j]) * bg_ld(&g[j]);
    dot = bg_warp_sum(dot);
    for (int64_t j = lane; j < Tn; j += 32)
        bg_st(&g[j], bg_ld(&p[j]) * (bg_ld(&g[j]) - dot));
}

/* ---- launchers ---- */

typedef struct att_dims {
    int64_t B, T, C, H, hs, N; /* N = B * T rows */
    bool causal;
    float scale; /* 1 / sqrt(hs) */
    size_t es;   /* bytes per activation element */
    bg_dtype_t dt;
} att_dims_t;

static att_dims_t att_dims(const bg_layer_call_t *c)
{
    att_dims_t d;
    d.B = c->spec->in[0].d[0];
    d.T = c->spec->in[0].d[1];
    d.C = c->spec->in[0].d[2];
    d.H = bg_attrs_int(&c->spec->attrs, "heads", 1);
    d.hs = d.C / d.H;
    d.N = d.B * d.T;
    d.causal = bg_attrs_bool(&c->spec->attrs, "causal", true);
    d.scale = 1.0f / sqrtf((float)d.hs);
    d.dt = c->dtype;
    d.es = bg_dtype_size(c->dtype);
    return d;
}

/* Byte pointers into saved/workspace, in the order the file comment fixes. */
typedef struct att_bufs {
    char *qkv, *att, *y, *dqkv; /* saved */
    char *dy, *datt;            /* workspace (B only) */
} att_bufs_t;

static att_bufs_t att_bufs(const bg_layer_call_t *c, const att_dims_t *d)
{
    att_bufs_t b = {};
    char *s = (char *)c->saved->data;
    b.qkv = s;
    b.att = b.qkv + d->N * 3 * d->C * d->es;
    b.y = b.att + d->B * d->H * d->T * d->T * d->es;
    b.dqkv = b.y + d->N * d->C * d->es;
    if (c->workspace) {
        b.dy = (char *)c->workspace->data;
        b.datt = b.dy + d->N * d->C * d->es;
    }
    return b;
}

/* A GEMM in the call's dtype; batch strides in elements. */
static bg_gemm_args_t att_gemm(const att_dims_t *d, bool ta, bool tb, int64_t m, int64_t n,
                               int64_t k, float alpha, const void *a, int64_t lda, const void *b,
                               int64_t ldb, void *c, int64_t ldc)
{
    bg_gemm_args_t g = {};
    g.trans_a = ta, g.trans_b = tb;
    g.m = m, g.n = n, g.k = k;
    g.alpha = alpha, g.beta = 0.0f;
    g.a = a, g.lda = lda, g.b = b, g.ldb = ldb, g.c = c, g.ldc = ldc;
    g.ab = d->dt, g.c_dtype = d->dt;
    return g;
}

/* The same GEMM repeated over the H heads of one sequence. */
static bg_gemm_args_t att_heads(bg_gemm_args_t g, const att_dims_t *d, int64_t sa, int64_t sb,
                                int64_t sc)
{
    g.batch = d->H;
    g.sa = sa, g.sb = sb, g.sc = sc;
    return g;
}

/* y (rows, out) = x (rows, in) W^T + b. */
static bg_status_t att_project(const bg_layer_call_t *c, const att_dims_t *d, const void *x,
                               const void *w, const void *b, int64_t in, int64_t out, void *y,
                               cudaStream_t st)
{
    bg_gemm_args_t g = att_gemm(d, false, true, d->N, out, in, 1.0f, x, in, w, in, y, out);
    BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    return bg_cuda_bias_add(y, b, d->dt, d->N, out, st);
}

static unsigned att_row_blocks(int64_t rows)
{
    return (unsigned)((rows + ATT_ROWS_PER_BLOCK - 1) / ATT_ROWS_PER_BLOCK);
}

static bg_status_t att_softmax(const att_dims_t *d, void *att, cudaStream_t st)
{
    int64_t rows = d->B * d->H * d->T;
    unsigned blocks = att_row_blocks(rows);
    if (d->dt == BG_BF16)
        attention_softmax_kernel<<<blocks, 32 * ATT_ROWS_PER_BLOCK, 0, st>>>((__nv_bfloat16 *)att,
                                                                             rows, d->T, d->causal);
    else
        attention_softmax_kernel<<<blocks, 32 * ATT_ROWS_PER_BLOCK, 0, st>>>((float *)att, rows,
                                                                             d->T, d->causal);
    BG_CUDA_LAUNCH_CHECK("attention_softmax_kernel");
    return BG_OK;
}

static bg_status_t att_softmax_backward(const att_dims_t *d, const void *att, void *ds,
                                        cudaStream_t st)
{
    int64_t rows = d->B * d->H * d->T;
    unsigned blocks = att_row_blocks(rows);
    if (d->dt == BG_BF16)
        attention_softmax_backward_kernel<<<blocks, 32 * ATT_ROWS_PER_BLOCK, 0, st>>>(
            (const __nv_bfloat16 *)att, (__nv_bfloat16 *)ds, rows, d->T);
    else
        attention_softmax_backward_kernel<<<blocks, 32 * ATT_ROWS_PER_BLOCK, 0, st>>>(
            (const float *)att, (float *)ds, rows, d->T);
    BG_CUDA_LAUNCH_CHECK("attention_softmax_backward_kernel");
    return BG_OK;
}

/* Sequence b's pointers: q/k/v column blocks of qkv (or dqkv), att block. */
static char *att_seq(const att_dims_t *d, char *base, int64_t b, int64_t per_seq_elems)
{
    return base + b * per_seq_elems * (int64_t)d->es;
}

/*
 * F: qkv = x Wqkv^T + bqkv; per sequence scores (H, T, T) = q k^T * scale;
 * masked softmax over all rows; per sequence y_h = att_h v_h; out = y Wproj^T + bproj.
 */
bg_status_t bg_cuda_attention_forward(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    att_dims_t d = att_dims(c);
    if (d.N == 0)
        return BG_OK; /* no rows: no scratch was allocated either */
    att_bufs_t bf = att_bufs(c, &d);
    int64_t T = d.T, C = d.C, TT = T * T, hs = d.hs, es = (int64_t)d.es;
    BG_TRY_STATUS(att_project(c, &d, c->in[0]->data, c->params[0]->data, c->params[1]->data, C,
                              3 * C, bf.qkv, st));
    for (int64_t b = 0; b < d.B; b++) {
        char *q = att_seq(&d, bf.qkv, b, T * 3 * C), *k = q + C * es;
        bg_gemm_args_t g = att_heads(att_gemm(&d, false, true, T, T, hs, d.scale, q, 3 * C, k,
                                              3 * C, att_seq(&d, bf.att, b, d.H * TT), T),
                                     &d, hs, hs, TT);
        BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    }
    BG_TRY_STATUS(att_softmax(&d, bf.att, st));
    for (int64_t b = 0; b < d.B; b++) {
        char *v = att_seq(&d, bf.qkv, b, T * 3 * C) + 2 * C * es;
        bg_gemm_args_t g =
            att_heads(att_gemm(&d, false, false, T, hs, T, 1.0f, att_seq(&d, bf.att, b, d.H * TT),
                               T, v, 3 * C, att_seq(&d, bf.y, b, T * C), C),
                      &d, TT, hs, hs);
        BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    }
    return att_project(c, &d, bf.y, c->params[2]->data, c->params[3]->data, C, C, c->out->data, st);
}

/*
 * Sequence b, before the softmax backward:
 *   datt_h (T, T) = dy_h v_h^T        dv_h (T, hs) = att_h^T dy_h
 */
static bg_status_t att_backward_pre(const bg_layer_call_t *c, const att_dims_t *d,
                                    const att_bufs_t *bf, int64_t b)
{
    int64_t T = d->T, C = d->C, TT = T * T, hs = d->hs, es = (int64_t)d->es;
    char *v = att_seq(d, bf->qkv, b, T * 3 * C) + 2 * C * es;
    char *dv = att_seq(d, bf->dqkv, b, T * 3 * C) + 2 * C * es;
    char *att = att_seq(d, bf->att, b, d->H * TT), *datt = att_seq(d, bf->datt, b, d->H * TT);
    char *dy = att_seq(d, bf->dy, b, T * C);
    bg_gemm_args_t ga = att_heads(
        att_gemm(d, false, true, T, T, hs, 1.0f, dy, C, v, 3 * C, datt, T), d, hs, hs, TT);
    bg_gemm_args_t gv = att_heads(
        att_gemm(d, true, false, T, hs, T, 1.0f, att, T, dy, C, dv, 3 * C), d, TT, hs, hs);
    BG_TRY_STATUS(bg_gemm(c->be, c->stream, &ga));
    return bg_gemm(c->be, c->stream, &gv);
}

/*
 * Sequence b, after the softmax backward turned datt into dS:
 *   dq_h = dS k_h * scale              dk_h = dS^T q_h * scale
 */
static bg_status_t att_backward_post(const bg_layer_call_t *c, const att_dims_t *d,
                                     const att_bufs_t *bf, int64_t b)
{
    int64_t T = d->T, C = d->C, TT = T * T, hs = d->hs, es = (int64_t)d->es;
    char *q = att_seq(d, bf->qkv, b, T * 3 * C), *k = q + C * es;
    char *dq = att_seq(d, bf->dqkv, b, T * 3 * C), *dk = dq + C * es;
    char *ds = att_seq(d, bf->datt, b, d->H * TT);
    bg_gemm_args_t gq = att_heads(
        att_gemm(d, false, false, T, hs, T, d->scale, ds, T, k, 3 * C, dq, 3 * C), d, TT, hs, hs);
    bg_gemm_args_t gk = att_heads(
        att_gemm(d, true, false, T, hs, T, d->scale, ds, T, q, 3 * C, dk, 3 * C), d, TT, hs, hs);
    BG_TRY_STATUS(bg_gemm(c->be, c->stream, &gq));
    return bg_gemm(c->be, c->stream, &gk);
}

/*
 * B: dy_att (N, C) = dout Wproj; dqkv per sequence (kept in saved for W);
 * dx (N, C) = dqkv (N, 3C) Wqkv (3C, C) when din[0] is wanted.
 */
bg_status_t bg_cuda_attention_backward_input(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    att_dims_t d = att_dims(c);
    if (d.N == 0)
        return BG_OK;
    att_bufs_t bf = att_bufs(c, &d);
    bg_gemm_args_t gy = att_gemm(&d, false, false, d.N, d.C, d.C, 1.0f, c->dout->data, d.C,
                                 c->params[2]->data, d.C, bf.dy, d.C);
    BG_TRY_STATUS(bg_gemm(c->be, c->stream, &gy));
    for (int64_t b = 0; b < d.B; b++)
        BG_TRY_STATUS(att_backward_pre(c, &d, &bf, b));
    BG_TRY_STATUS(att_softmax_backward(&d, bf.att, bf.datt, st));
    for (int64_t b = 0; b < d.B; b++)
        BG_TRY_STATUS(att_backward_post(c, &d, &bf, b));
    if (!c->din[0])
        return BG_OK;
    bg_gemm_args_t gx = att_gemm(&d, false, false, d.N, d.C, 3 * d.C, 1.0f, bf.dqkv, 3 * d.C,
                                 c->params[0]->data, d.C, c->din[0]->data, d.C);
    return bg_gemm(c->be, c->stream, &gx);
}

/* dW (out, in) += dY^T (out, N) X (N, in), accumulated in f32. */
static bg_status_t att_wgrad(const bg_layer_call_t *c, const att_dims_t *d, const void *dy,
                             const void *x, int64_t out, int64_t in, float *gw)
{
    bg_gemm_args_t g = att_gemm(d, true, false, out, in, d->N, 1.0f, dy, out, x, in, gw, in);
    g.beta = 1.0f;
    g.c_dtype = BG_F32;
    return bg_gemm(c->be, c->stream, &g);
}

/*
 * W (after B of the same micro-batch): dWqkv += dqkv^T x, dbqkv += colsum(dqkv),
 * dWproj += dout^T y, dbproj += colsum(dout).
 */
bg_status_t bg_cuda_attention_backward_weight(const bg_layer_call_t *c)
{
    cudaStream_t st;
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &st));
    att_dims_t d = att_dims(c);
    if (d.N == 0)
        return BG_OK;
    att_bufs_t bf = att_bufs(c, &d);
    int64_t C = d.C;
    if (c->grads[0])
        BG_TRY_STATUS(
            att_wgrad(c, &d, bf.dqkv, c->in[0]->data, 3 * C, C, (float *)c->grads[0]->data));
    if (c->grads[1])
        BG_TRY_STATUS(
            bg_cuda_colsum_add(bf.dqkv, d.dt, d.N, 3 * C, (float *)c->grads[1]->data, st));
    if (c->grads[2])
        BG_TRY_STATUS(att_wgrad(c, &d, c->dout->data, bf.y, C, C, (float *)c->grads[2]->data));
    if (c->grads[3])
        BG_TRY_STATUS(
            bg_cuda_colsum_add(c->dout->data, d.dt, d.N, C, (float *)c->grads[3]->data, st));
    return BG_OK;
}
