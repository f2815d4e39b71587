/*
 * layers/backend_cpu_step.c -- the training step's flat-buffer operations
 * on host memory (backend.h): fused SGD/AdamW, per-segment sums of squares,
 * scale, add, dtype casts. Used by the CPU backend, and the generic
 * implementation for any backend whose memory the host can read.
 *
 * Loops are written for -O3 to vectorise without reordering any sum.
 * Elementwise work may be split over BRIGADE_STEP_THREADS threads (default
 * 1: ranks are processes already); each element is computed the same way
 * whoever computes it. The sums of squares never depend on the thread
 * count: every BG_SUMSQ_CHUNK-element chunk of a segment is summed in
 * order (double), and the chunk partials are added in chunk order.
 * Must NOT allocate per step beyond a few partials, communicate, or know
 * about parameters, layouts or optimizers' schedules.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "layers/backend_impl.h"

/* ---- deterministic parallel-for over fixed element ranges ---- */

/* Elements per task: small enough to balance, large enough to amortise. */
#define STEP_TASK (1 << 16)

typedef void (*range_fn)(void *ctx, int64_t lo, int64_t hi);

typedef struct par {
    range_fn fn;
    void *ctx;
    int64_t n, task;
    int64_t next; /* next task start, under lock */
    pthread_mutex_t lock;
} par_t;

/* Read at every call (a getenv per flat buffer is nothing): tests change
 * it to prove the bits do not depend on it. */
static int step_threads(void)
{
    const char *e = getenv("BRIGADE_STEP_THREADS");
    int t = e ? atoi(e) : 1;
    return t > 0 && t <= 256 ? t : 1;
}

static void *par_worker(void *arg)
{
    par_t *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int64_t lo = p->next;
        p->next = lo < p->n ? lo + p->task : lo;
        pthread_mutex_unlock(&p->lock);
        if (lo >= p->n)
            return NULL;
        p->fn(p->ctx, lo, lo + p->task < p->n ? lo + p->task : p->n);
    }
}

/* fn over [0, n) in ranges of `task` units, on up to step_threads() threads.
 * Which thread runs a range never changes its bits: ranges are disjoint
 * and each element's arithmetic is local. Falls back to this thread when a
 * thread cannot be started. Cannot fail. */
static void par_for_in(range_fn fn, void *ctx, int64_t n, int64_t task)
{
    int t = step_threads();
    if (t == 1 || n <= task) {
        fn(ctx, 0, n);
        return;
    }
    par_t p = {fn, ctx, n, task, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[256];
    int started = 0;
    for (int i = 1; i < t; i++)
        if (pthread_create(&th[started], NULL, par_worker, &p) == 0)
            started++;
    par_worker(&p);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
}

/* Elementwise work: ranges of STEP_TASK elements. */
static void par_for(range_fn fn, void *ctx, int64_t n)
{
    par_for_in(fn, ctx, n, STEP_TASK);
}

/* ---- fused optimizer update ---- */

typedef struct upd {
    const bg_step_args_t *a;
    const bg_flat_segs_t *segs;
    float *p, *s0, *s1;
    const float *g;
} upd_t;

static void sgd_range(const bg_step_args_t *a, float wd, float *restrict p, const float *restrict g,
                      float *restrict s0, int64_t n)
{
    float gs = a->gscale, mom = a->momentum, lr = a->lr;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gs + wd * p[i];
        s0[i] = mom * s0[i] + gi;
        p[i] -= lr * s0[i];
    }
}

static void adamw_range(const bg_step_args_t *a, float wd, float *restrict p,
                        const float *restrict g, float *restrict s0, float *restrict s1, int64_t n)
{
    float gs = a->gscale, b1 = a->beta1, b2 = a->beta2, c1 = 1.0f - b1, c2 = 1.0f - b2;
    float bc1 = a->bc1, bc2 = a->bc2, eps = a->eps, lr = a->lr;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gs;
        s0[i] = b1 * s0[i] + c1 * gi;
        s1[i] = b2 * s1[i] + c2 * gi * gi;
        float mhat = s0[i] / bc1, vhat = s1[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    }
}

/* Segment containing element e (binary search over the host offsets). */
static int seg_of(const bg_flat_segs_t *s, int64_t e)
{
    int lo = 0, hi = s->n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->off_h[mid] <= e)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Elements [lo, hi) of the flat buffers, cut at segment boundaries so
 * each piece runs with its segment's weight decay. */
static void upd_range(void *ctx, int64_t lo, int64_t hi)
{
    upd_t *u = ctx;
    const bg_flat_segs_t *s = u->segs;
    for (int i = seg_of(s, lo); i < s->n && s->off_h[i] < hi; i++) {
        int64_t a = s->off_h[i] > lo ? s->off_h[i] : lo;
        int64_t b = s->off_h[i + 1] < hi ? s->off_h[i + 1] : hi;
        if (b <= a)
            continue;
        float wd = s->decay[i] ? u->a->weight_decay : 0.0f;
        if (u->a->kind == BG_STEP_SGD)
            sgd_range(u->a, wd, u->p + a, u->g + a, u->s0 + a, b - a);
        else
            adamw_range(u->a, wd, u->p + a, u->g + a, u->s0 + a, u->s1 + a, b - a);
    }
}

bg_status_t bg_cpu_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                               const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                               float *s1)
{
    (void)be, (void)s;
    if (segs->n <= 0)
        return BG_OK;
    upd_t u = {a, segs, p, s0, s1, g};
    par_for(upd_range, &u, segs->off_h[segs->n]);
    return BG_OK;
}

/* ---- sums of squares ---- */

typedef struct ssq {
    const float *x;
    int64_t base; /* first element of the segment */
    int64_t len;
    double *part; /* [chunks] */
} ssq_t;

/* Four independent lanes let the compiler vectorise without reassociating:
 * the lane split is part of the fixed order (lanes added 0+1, 2+3, then
 * together). */
static double sumsq_chunk(const float *x, int64_t n)
{
    double l0 = 0, l1 = 0, l2 = 0, l3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        l0 += (double)x[i] * (double)x[i];
        l1 += (double)x[i + 1] * (double)x[i + 1];
        l2 += (double)x[i + 2] * (double)x[i + 2];
        l3 += (double)x[i + 3] * (double)x[i + 3];
    }
    for (; i < n; i++)
        l0 += (double)x[i] * (double)x[i];
    return (l0 + l1) + (l2 + l3);
}

/* Ranges here are in chunks, not elements. */
static void ssq_range(void *ctx, int64_t lo, int64_t hi)
{
    ssq_t *q = ctx;
    for (int64_t c = lo; c < hi; c++) {
        int64_t a = c * BG_SUMSQ_CHUNK,
                b = a + BG_SUMSQ_CHUNK < q->len ? a + BG_SUMSQ_CHUNK : q->len;
        q->part[c] = sumsq_chunk(q->x + q->base + a, b - a);
    }
}

bg_status_t bg_cpu_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                              const float *x, float *out)
{
    (void)be, (void)s;
    double one;
    for (int i = 0; i < segs->n; i++) {
        int64_t len = segs->off_h[i + 1] - segs->off_h[i];
        int64_t nch = (len + BG_SUMSQ_CHUNK - 1) / BG_SUMSQ_CHUNK;
        double *part = nch <= 1 ? &one : malloc((size_t)nch * sizeof(double));
        if (!part)
            return bg_errorf(BG_ERR_NOMEM, "sum of squares: out of memory for %lld partials",
                             (long long)nch);
        ssq_t q = {x, segs->off_h[i], len, part};
        one = 0;
        par_for_in(ssq_range, &q, nch, STEP_TASK / BG_SUMSQ_CHUNK);
        double tot = 0;
        for (int64_t c = 0; c < nch; c++)
            tot += part[c];
        out[i] = (float)tot;
        if (part != &one)
            free(part);
    }
    return BG_OK;
}

/* ---- scale, add, cast ---- */

typedef struct ew {
    void *y;
    const void *x;
    float a;
    bg_dtype_t ydt, xdt;
} ew_t;

static void scale_range(void *ctx, int64_t lo, int64_t hi)
{
    ew_t *e = ctx;
    float *y = e->y, a = e->a;
    for (int64_t i = lo; i < hi; i++)
        y[i] *= a;
}

static void add_range(void *ctx, int64_t lo, int64_t hi)
{
    ew_t *e = ctx;
    float *restrict y = e->y;
    const float *restrict x = e->x;
    for (int64_t i = lo; i < hi; i++)
        y[i] += x[i];
}

static void cast_range(void *ctx, int64_t lo, int64_t hi)
{
    ew_t *e = ctx;
    if (e->xdt == BG_F32 && e->ydt == BG_BF16) {
        const float *x = e->x;
        uint16_t *y = e->y;
        for (int64_t i = lo; i < hi; i++)
            y[i] = bg_f32_to_bf16(x[i]);
    } else if (e->xdt == BG_F32 && e->ydt == BG_F16) {
        const float *x = e->x;
        uint16_t *y = e->y;
        for (int64_t i = lo; i < hi; i++)
            y[i] = bg_f32_to_f16(x[i]);
    } else if (e->ydt == BG_F32 && e->xdt == BG_BF16) {
        const uint16_t *x = e->x;
        float *y = e->y;
        for (int64_t i = lo; i < hi; i++)
            y[i] = bg_bf16_to_f32(x[i]);
    } else if (e->ydt == BG_F32 && e->xdt == BG_F16) {
        const uint16_t *x = e->x;
        float *y = e->y;
        for (int64_t i = lo; i < hi; i++)
            y[i] = bg_f16_to_f32(x[i]);
    }
}

bg_status_t bg_cpu_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n)
{
    (void)be, (void)s;
    ew_t e = {x, NULL, a, BG_F32, BG_F32};
    par_for(scale_range, &e, n);
    return BG_OK;
}

bg_status_t bg_cpu_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n)
{
    (void)be, (void)s;
    ew_t e = {y, x, 1.0f, BG_F32, BG_F32};
    par_for(add_range, &e, n);
    return BG_OK;
}

bg_status_t bg_cpu_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                             const void *src, bg_dtype_t src_dt, int64_t n)
{
    (void)be, (void)s;
    if (dst_dt == src_dt) {
        memmove(dst, src, (size_t)n * bg_dtype_size(dst_dt));
        return BG_OK;
    }
    ew_t e = {dst, src, 1.0f, dst_dt, src_dt};
    par_for(cast_range, &e, n);
    return BG_OK;
}
