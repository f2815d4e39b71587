/*
 * layers/classifier.cu -- CUDA half of the fused classifier (linear head +
 * mean cross-entropy in logits tiles): same math, tiles and saved /
 * workspace layout (layers/classifier_impl.h) and F/B/W split as
 * layers/classifier.c. Tile GEMMs go through bg_gemm (cuBLAS) with f32
 * logits whatever the compute dtype; this file adds the row kernels.
 *  - F per tile: block per row folds the tile into the row's running max,
 *    sum of exp (f64), argmax (lowest index on ties, a (value, index)
 *    shuffle tree) and target logit; per row block ONE block turns the rows
 *    into lse/argmax (saved) and a partial loss sum in a fixed tree; one
 *    thread adds the partial sums in order. No atomics: same bits every run.
 *  - B/W recompute a tile, turn it into dz (compute dtype, the GEMM operand)
 *    with dloss read on the device; bf16/fp16 dx is summed over vocabulary
 *    tiles in f32 (dxacc) and rounded once.
 * Out-of-range targets (a host check would need a sync): the row's loss is
 * NaN, and so is its gradient, as cross_entropy.cu does.
 * Must not synchronise with the host or keep state between calls.
 */
#include "layers/cuda_common.cuh" /* first: it includes the C headers with C linkage */
#include "layers/classifier_impl.h"

#include <math.h>

#define CLS_THREADS 256      /* per row in the fold */
#define CLS_SUM_THREADS 1024 /* the single block of a row block's loss sum */

/* ---- kernels ---- */

/* z (br, bc) f32 += b[v0..] (compute dtype) per row. */
template <typename T> __global__ void cls_bias_kernel(float *z, const T *b, int64_t br, int64_t bc)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < br * bc;
         i += (int64_t)gridDim.x * blockDim.x)
        z[i] += bg_ld(&b[i % bc]);
}

/* (v, i) of the larger value, the lower index on ties. */
__device__ __forceinline__ void cls_best(float *v, int64_t *i, float v2, int64_t i2)
{
    if (v2 > *v || (v2 == *v && i2 < *i)) {
        *v = v2;
        *i = i2;
    }
}

/* Block-wide (max, first index); every thread gets it. sv/si: 32 each. */
__device__ void cls_block_argmax(float *v, int64_t *i, float *sv, int64_t *si)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        cls_best(v, i, __shfl_down_sync(0xffffffffu, *v, o), __shfl_down_sync(0xffffffffu, *i, o));
    __syncthreads();
    if (lane == 0) {
        sv[warp] = *v;
        si[warp] = *i;
    }
    __syncthreads();
    if (warp == 0) {
        *v = lane < nw ? sv[lane] : -INFINITY;
        *i = lane < nw ? si[lane] : INT64_MAX;
        for (int o = 16; o > 0; o >>= 1)
            cls_best(v, i, __shfl_down_sync(0xffffffffu, *v, o),
                     __shfl_down_sync(0xffffffffu, *i, o));
        if (lane == 0) {
            sv[0] = *v;
            si[0] = *i;
        }
    }
    __syncthreads();
    *v = sv[0];
    *i = si[0];
}

/* Running row statistics of a row block (workspace). */
typedef struct cls_rows {
    float *m, *tl;
    double *s;
    int32_t *am;
} cls_rows_t;

/* Block per row of a tile: fold it into the row's running statistics
 * (v0 == 0 starts them). tg: the row block's targets. */
__global__ void cls_fold_kernel(const float *z, int64_t bc, int64_t v0, const int32_t *tg,
                                cls_rows_t rs)
{
    __shared__ float sv[32], sh[32];
    __shared__ int64_t si[32];
    int64_t r = blockIdx.x;
    const float *row = z + r * bc;
    float bv = -INFINITY;
    int64_t bi = INT64_MAX;
    for (int64_t j = threadIdx.x; j < bc; j += blockDim.x)
        cls_best(&bv, &bi, row[j], j);
    cls_block_argmax(&bv, &bi, sv, si);
    float mold = v0 == 0 ? -INFINITY : rs.m[r];
    bool grow = v0 == 0 || bv > mold;
    float mx = grow ? bv : mold;
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < bc; j += blockDim.x)
        sum += expf(row[j] - mx);
    sum = bg_block_sum(sum, sh);
    if (threadIdx.x != 0)
        return;
    double s = v0 == 0 ? 0.0 : rs.s[r];
    if (grow && v0 != 0)
        s *= exp((double)mold - (double)mx);
    if (grow) {
        rs.m[r] = mx;
        rs.am[r] = (int32_t)(v0 + (bi == INT64_MAX ? 0 : bi));
    }
    rs.s[r] = s + (double)sum;
    if (v0 == 0)
        rs.tl[r] = __int_as_float(0x7fc00000); /* stays NaN for a target out of range */
    int64_t k = (int64_t)tg[r] - v0;
    if (k >= 0 && k < bc)
        rs.tl[r] = row[k];
}

/* One block per row block: lse and argmax to saved, the block's loss sum
 * (fixed tree, f64) to part[0]. */
__global__ void cls_rows_done_kernel(cls_rows_t rs, int64_t br, float *lse, int32_t *am,
                                     double *part)
{
    __shared__ double acc[CLS_SUM_THREADS];
    double a = 0.0;
    for (int64_t r = threadIdx.x; r < br; r += blockDim.x) {
        double ls = (double)rs.m[r] + log(rs.s[r]);
        lse[r] = (float)ls;
        am[r] = rs.am[r];
        a += ls - (double)rs.tl[r];
    }
    acc[threadIdx.x] = a;
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < s)
            acc[threadIdx.x] += acc[threadIdx.x + s];
    }
    if (threadIdx.x == 0)
        part[0] = acc[0];
}

/* out[0] = (part[0] + part[1] + ...) / rows, in order. */
__global__ void cls_mean_kernel(const double *part, int64_t n, int64_t rows, float *out)
{
    double a = 0.0;
    for (int64_t i = 0; i < n; i++)
        a += part[i];
    out[0] = (float)(a / (double)rows);
}

/* dz = (exp(z - lse) - onehot) dloss / rows over a tile; z and dz may alias
 * (f32). lse, tg: the row block's. */
template <typename T>
__global__ void cls_dz_kernel(const float *z, T *dz, const float *lse, const int32_t *tg,
                              const float *dloss, int64_t br, int64_t bc, int64_t v0, int64_t V,
                              int64_t rows)
{
    float g = dloss[0] / (float)rows;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < br * bc;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / bc, j = i % bc;
        int32_t t = tg[r];
        float p = expf(z[i] - lse[r]);
        bool bad = t < 0 || t >= V;
        bg_st(&dz[i], bad ? __int_as_float(0x7fc00000) : (p - (v0 + j == t ? 1.0f : 0.0f)) * g);
    }
}

/* y (n) = x (n) f32, rounded to T. */
template <typename T> __global__ void cls_round_kernel(const float *x, T *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bg_st(&y[i], x[i]);
}

/* ---- launchers ---- */

template <typename T>
static bg_status_t cls_bias_t(float *z, const void *b, int64_t br, int64_t bc, cudaStream_t st)
{
    cls_bias_kernel<T><<<bg_cuda_blocks(br * bc, 256), 256, 0, st>>>(z, (const T *)b, br, bc);
    BG_CUDA_LAUNCH_CHECK("cls_bias_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t cls_dz_t(const float *z, void *dz, const float *lse, const int32_t *tg,
                            const float *dloss, int64_t br, int64_t bc, int64_t v0, int64_t V,
                            int64_t rows, cudaStream_t st)
{
    cls_dz_kernel<T><<<bg_cuda_blocks(br * bc, 256), 256, 0, st>>>(z, (T *)dz, lse, tg, dloss, br,
                                                                   bc, v0, V, rows);
    BG_CUDA_LAUNCH_CHECK("cls_dz_kernel");
    return BG_OK;
}

template <typename T>
static bg_status_t cls_round_t(const float *x, void *y, int64_t n, cudaStream_t st)
{
    cls_round_kernel<T><<<bg_cuda_blocks(n, 256), 256, 0, st>>>(x, (T *)y, n);
    BG_CUDA_LAUNCH_CHECK("cls_round_kernel");
    return BG_OK;
}

/* What every launcher needs of a call. */
typedef struct cls_run {
    bg_cls_dims_t d;
    bg_cls_layout_t l;
    bg_dtype_t dt;
    size_t es;
    cudaStream_t st;
    char *ws;
    cls_rows_t rs;
} cls_run_t;

static bg_status_t cls_run_of(const bg_layer_call_t *c, cls_run_t *r)
{
    r->d = bg_cls_dims_of(c->spec);
    r->dt = c->dtype;
    r->es = bg_dtype_size(c->dtype);
    r->l = bg_cls_layout_of(&r->d, (int64_t)r->es);
    if (r->d.rows <= 0)
        return bg_errorf(BG_ERR_INVALID, "layer %s: no target positions", c->spec->name);
    if (r->d.rc > INT32_MAX)
        return bg_errorf(BG_ERR_UNSUPPORTED, "layer %s: row block too large", c->spec->name);
    BG_TRY_STATUS(bg_cuda_stream_of(c->be, c->stream, &r->st));
    r->ws = (char *)c->workspace->data;
    r->rs.m = (float *)(r->ws + r->l.m);
    r->rs.s = (double *)(r->ws + r->l.s);
    r->rs.tl = (float *)(r->ws + r->l.tl);
    r->rs.am = (int32_t *)(r->ws + r->l.am);
    return BG_OK;
}

/* z (br, bc) f32 = x[r0..] W[v0..]^T + b[v0..]. */
static bg_status_t cls_logits(const bg_layer_call_t *c, const cls_run_t *r, int64_t r0, int64_t br,
                              int64_t v0, int64_t bc, float *z)
{
    const char *x = (const char *)c->in[0]->data, *w = (const char *)c->params[0]->data;
    bg_gemm_args_t g = {};
    g.trans_b = true;
    g.m = br, g.n = bc, g.k = r->d.C, g.alpha = 1.0f, g.beta = 0.0f;
    g.a = x + (size_t)(r0 * r->d.C) * r->es, g.lda = r->d.C;
    g.b = w + (size_t)(v0 * r->d.C) * r->es, g.ldb = r->d.C;
    g.c = z, g.ldc = bc, g.ab = r->dt, g.c_dtype = BG_F32;
    BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    if (!r->d.bias)
        return BG_OK;
    const char *b = (const char *)c->params[1]->data + (size_t)v0 * r->es;
    return BG_CUDA_DISPATCH(r->dt, cls_bias_t, z, b, br, bc, r->st);
}

bg_status_t bg_cuda_classifier_forward(const bg_layer_call_t *c)
{
    cls_run_t r;
    BG_TRY_STATUS(cls_run_of(c, &r));
    const bg_cls_dims_t &d = r.d;
    float *z = (float *)(r.ws + r.l.tile), *lse = (float *)((char *)c->saved->data + r.l.lse);
    int32_t *am = (int32_t *)((char *)c->saved->data + r.l.argmax);
    const int32_t *tg = (const int32_t *)c->in[1]->data;
    double *part = (double *)(r.ws + r.l.part);
    int64_t nb = 0;
    for (int64_t r0 = 0; r0 < d.rows; r0 += d.rc, nb++) {
        int64_t br = d.rows - r0 < d.rc ? d.rows - r0 : d.rc;
        for (int64_t v0 = 0; v0 < d.V; v0 += d.vc) {
            int64_t bc = d.V - v0 < d.vc ? d.V - v0 : d.vc;
            BG_TRY_STATUS(cls_logits(c, &r, r0, br, v0, bc, z));
            cls_fold_kernel<<<(unsigned)br, CLS_THREADS, 0, r.st>>>(z, bc, v0, tg + r0, r.rs);
            BG_CUDA_LAUNCH_CHECK("cls_fold_kernel");
        }
        cls_rows_done_kernel<<<1, CLS_SUM_THREADS, 0, r.st>>>(r.rs, br, lse + r0, am + r0,
                                                              part + nb);
        BG_CUDA_LAUNCH_CHECK("cls_rows_done_kernel");
    }
    cls_mean_kernel<<<1, 1, 0, r.st>>>(part, nb, d.rows, (float *)c->out->data);
    BG_CUDA_LAUNCH_CHECK("cls_mean_kernel");
    return BG_OK;
}

/* dz of one recomputed tile into the dtile region (in place for f32). */
static bg_status_t cls_dz(const bg_layer_call_t *c, const cls_run_t *r, int64_t r0, int64_t br,
                          int64_t v0, int64_t bc, void **dz)
{
    float *z = (float *)(r->ws + r->l.tile);
    BG_TRY_STATUS(cls_logits(c, r, r0, br, v0, bc, z));
    const float *lse = (const float *)((const char *)c->saved->data + r->l.lse) + r0;
    const int32_t *tg = (const int32_t *)c->in[1]->data + r0;
    const float *dl = (const float *)c->dout->data;
    *dz = r->ws + r->l.dtile;
    return BG_CUDA_DISPATCH(r->dt, cls_dz_t, z, *dz, lse, tg, dl, br, bc, v0, r->d.V, r->d.rows,
                            r->st);
}

/* B or W's GEMM on one dz tile (br, bc) of rows r0.., classes v0... */
typedef bg_status_t (*cls_tile_fn)(const bg_layer_call_t *c, const cls_run_t *r, int64_t r0,
                                   int64_t br, int64_t v0, int64_t bc, const void *dz);

/* Every tile in row-block, then vocabulary order: recompute, dz, fn. */
static bg_status_t cls_each_dz(const bg_layer_call_t *c, const cls_run_t *r, cls_tile_fn fn)
{
    const bg_cls_dims_t &d = r->d;
    for (int64_t r0 = 0; r0 < d.rows; r0 += d.rc) {
        int64_t br = d.rows - r0 < d.rc ? d.rows - r0 : d.rc;
        for (int64_t v0 = 0; v0 < d.V; v0 += d.vc) {
            int64_t bc = d.V - v0 < d.vc ? d.V - v0 : d.vc;
            void *dz;
            BG_TRY_STATUS(cls_dz(c, r, r0, br, v0, bc, &dz));
            BG_TRY_STATUS(fn(c, r, r0, br, v0, bc, dz));
        }
    }
    return BG_OK;
}

/* f32 accumulator of dx: dx itself in f32 runs, dxacc in bf16/fp16 ones. */
static float *cls_dx_acc(const bg_layer_call_t *c, const cls_run_t *r)
{
    return r->dt == BG_F32 ? (float *)c->din[0]->data : (float *)(r->ws + r->l.dxacc);
}

/* acc[r0..] (br, C) += dz (br, bc) W[v0..] (bc, C). */
static bg_status_t cls_dx_tile(const bg_layer_call_t *c, const cls_run_t *r, int64_t r0, int64_t br,
                               int64_t v0, int64_t bc, const void *dz)
{
    bg_gemm_args_t g = {};
    g.m = br, g.n = r->d.C, g.k = bc, g.alpha = 1.0f, g.beta = 1.0f;
    g.a = dz, g.lda = bc;
    g.b = (const char *)c->params[0]->data + (size_t)(v0 * r->d.C) * r->es, g.ldb = r->d.C;
    g.c = cls_dx_acc(c, r) + r0 * r->d.C, g.ldc = r->d.C, g.ab = r->dt, g.c_dtype = BG_F32;
    return bg_gemm(c->be, c->stream, &g);
}

/* B: dx (rows, C) = sum over vocabulary tiles of dz W, in f32, rounded once. */
bg_status_t bg_cuda_classifier_backward_input(const bg_layer_call_t *c)
{
    if (!c->din[0])
        return BG_OK;
    cls_run_t r;
    BG_TRY_STATUS(cls_run_of(c, &r));
    int64_t n = r.d.rows * r.d.C;
    float *acc = cls_dx_acc(c, &r);
    BG_TRY_STATUS(bg_backend_memset(c->be, acc, 0, (size_t)n * 4, c->stream));
    BG_TRY_STATUS(cls_each_dz(c, &r, cls_dx_tile));
    if (r.dt == BG_F32)
        return BG_OK;
    return BG_CUDA_DISPATCH(r.dt, cls_round_t, acc, c->din[0]->data, n, r.st);
}

/* dW[v0..] (bc, C) += dz^T x[r0..] (f32 accumulator); db[v0..] += colsum(dz). */
static bg_status_t cls_dw_tile(const bg_layer_call_t *c, const cls_run_t *r, int64_t r0, int64_t br,
                               int64_t v0, int64_t bc, const void *dz)
{
    if (c->grads[0]) {
        bg_gemm_args_t g = {};
        g.trans_a = true;
        g.m = bc, g.n = r->d.C, g.k = br, g.alpha = 1.0f, g.beta = 1.0f;
        g.a = dz, g.lda = bc;
        g.b = (const char *)c->in[0]->data + (size_t)(r0 * r->d.C) * r->es, g.ldb = r->d.C;
        g.c = (float *)c->grads[0]->data + v0 * r->d.C, g.ldc = r->d.C;
        g.ab = r->dt, g.c_dtype = BG_F32;
        BG_TRY_STATUS(bg_gemm(c->be, c->stream, &g));
    }
    if (r->d.bias && c->grads[1])
        BG_TRY_STATUS(
            bg_cuda_colsum_add(dz, r->dt, br, bc, (float *)c->grads[1]->data + v0, r->st));
    return BG_OK;
}

/* W: dW (f32) += dz^T x, db += colsum(dz), tile by tile. */
bg_status_t bg_cuda_classifier_backward_weight(const bg_layer_call_t *c)
{
    cls_run_t r;
    BG_TRY_STATUS(cls_run_of(c, &r));
    if (!c->grads[0] && !(r.d.bias && c->grads[1]))
        return BG_OK;
    return cls_each_dz(c, &r, cls_dw_tile);
}
