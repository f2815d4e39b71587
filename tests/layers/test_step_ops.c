/*
 * tests/layers/test_step_ops.c -- the training step's flat-buffer ops on
 * the CPU backend (layers/backend.h, bg_step_*).
 *
 * The fused update against the host optimizer it replaced (the loop of the
 * former engine/optim.c, kept here verbatim as the reference): AdamW and
 * SGD with momentum, weight decay on some segments only, gradient scale,
 * several steps, bit for bit, with 1 and 3 threads. Sums of squares: the
 * same bits for 1, 2 and 5 threads, and within 1e-12 relative of a plain
 * double sum (fixed chunks change the order, not the precision). Casts:
 * f32 -> bf16/fp16 agree with the host rounding functions, fp16 rounding
 * corner cases (ties to even, overflow to inf, subnormals, NaN). Scale and
 * add are exact elementwise. Must not test on zeros.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/backend.h"
#include "flat_util.h"
#include "test_util.h"

/* ---- the reference: the host optimizer as it was (engine/optim.c) ---- */

typedef struct ref_conf {
    bool sgd;
    float momentum, beta1, beta2, eps, weight_decay;
} ref_conf_t;

static void ref_update(const ref_conf_t *c, int64_t step, float lr, float gscale, bool decay,
                       float *p, const float *g, float *s0, float *s1, int64_t n)
{
    float wd = decay ? c->weight_decay : 0.0f;
    if (c->sgd) {
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] * gscale + wd * p[i];
            s0[i] = c->momentum * s0[i] + gi;
            p[i] -= lr * s0[i];
        }
        return;
    }
    float b1 = c->beta1, b2 = c->beta2;
    float bc1 = 1.0f - powf(b1, (float)(step + 1));
    float bc2 = 1.0f - powf(b2, (float)(step + 1));
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
        s1[i] = b2 * s1[i] + (1.0f - b2) * gi * gi;
        float mhat = s0[i] / bc1, vhat = s1[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + c->eps) + wd * p[i]);
    }
}

/* ---- a flat layout: segments of odd sizes, some decayed ---- */

#define NSEG 7
static const int64_t seg_len[NSEG] = {1, 37, 70000, 4096, 4097, 3, 150001};

typedef bg_test_flat_t flat_t;

static void flat_make(flat_t *f)
{
    bg_test_flat_make(f, seg_len, NSEG);
}

static float *fvec(int64_t n, uint64_t *seed, float lo, float hi)
{
    float *x = malloc((size_t)n * sizeof(float));
    if (!x) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    bg_test_fill(x, n, seed, lo, hi);
    return x;
}

static float *fcopy(const float *x, int64_t n)
{
    float *y = malloc((size_t)n * sizeof(float));
    if (!y)
        exit(1);
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

/* Three steps of the fused update vs the reference on every segment. */
static void check_update(bg_backend_t *be, bool sgd, const char *threads)
{
    setenv("BRIGADE_STEP_THREADS", threads, 1);
    flat_t f;
    flat_make(&f);
    uint64_t seed = sgd ? 11 : 12;
    ref_conf_t rc = {sgd, 0.9f, 0.9f, 0.95f, 1e-8f, 0.1f};
    float *p = fvec(f.n, &seed, -1, 1), *s0 = fvec(f.n, &seed, -0.1f, 0.1f);
    float *s1 = fvec(f.n, &seed, 0.0f, 0.01f);
    float *rp = fcopy(p, f.n), *r0 = fcopy(s0, f.n), *r1 = fcopy(s1, f.n);
    for (int64_t step = 0; step < 3; step++) {
        float *g = fvec(f.n, &seed, -2, 2);
        float lr = 1e-3f * (float)(step + 1), gscale = step == 1 ? 0.37f : 1.0f;
        bg_step_args_t a = {sgd ? BG_STEP_SGD : BG_STEP_ADAMW,
                            lr,
                            gscale,
                            rc.weight_decay,
                            rc.momentum,
                            rc.beta1,
                            rc.beta2,
                            rc.eps,
                            1.0f - powf(rc.beta1, (float)(step + 1)),
                            1.0f - powf(rc.beta2, (float)(step + 1))};
        CHECK_OK(bg_step_update(be, NULL, &a, &f.segs, p, g, s0, sgd ? NULL : s1));
        for (int i = 0; i < NSEG; i++) /* the reference updates the gaps too: zero-free here */
            ref_update(&rc, step, lr, gscale, f.decay[i], rp + f.off[i], g + f.off[i],
                       r0 + f.off[i], r1 + f.off[i], f.off[i + 1] - f.off[i]);
        free(g);
    }
    CHECK_MSG(!memcmp(p, rp, (size_t)f.n * 4), "%s update (threads %s): parameters differ",
              sgd ? "sgd" : "adamw", threads);
    CHECK_MSG(!memcmp(s0, r0, (size_t)f.n * 4), "%s state 0 differs", sgd ? "sgd" : "adamw");
    if (!sgd)
        CHECK_MSG(!memcmp(s1, r1, (size_t)f.n * 4), "adamw state 1 differs");
    free(p), free(s0), free(s1), free(rp), free(r0), free(r1);
}

static void check_sumsq(bg_backend_t *be)
{
    flat_t f;
    flat_make(&f);
    uint64_t seed = 5;
    float *x = fvec(f.n, &seed, -3, 3);
    float out[3][NSEG];
    const char *threads[3] = {"1", "2", "5"};
    for (int t = 0; t < 3; t++) {
        setenv("BRIGADE_STEP_THREADS", threads[t], 1);
        CHECK_OK(bg_step_sumsq(be, NULL, &f.segs, x, out[t]));
    }
    CHECK_MSG(!memcmp(out[0], out[1], sizeof(out[0])) && !memcmp(out[0], out[2], sizeof(out[0])),
              "sum of squares depends on the thread count");
    for (int i = 0; i < NSEG; i++) {
        double s = 0;
        for (int64_t e = f.off[i]; e < f.off[i + 1]; e++)
            s += (double)x[e] * (double)x[e];
        CHECK_MSG(fabs(out[0][i] - (float)s) <= 1e-6 * s, "segment %d: %g vs %g", i,
                  (double)out[0][i], s);
    }
    free(x);
}

static void check_cast(bg_backend_t *be)
{
    enum { N = 4099 };
    uint64_t seed = 9;
    float *x = fvec(N, &seed, -70000.0f, 70000.0f), back[N];
    uint16_t h[N];
    x[0] = 65520.0f, x[1] = 65519.0f, x[2] = 5.9604645e-08f; /* inf, 65504, smallest subnormal */
    x[3] = 2.9802322e-08f, x[4] = NAN, x[5] = 1.0009765625f + 0.00048828125f; /* 0, tie */
    CHECK_OK(bg_step_cast(be, NULL, h, BG_F16, x, BG_F32, N));
    for (int i = 0; i < N; i++)
        CHECK_MSG(h[i] == bg_f32_to_f16(x[i]), "fp16 cast of %g", (double)x[i]);
    CHECK(h[0] == 0x7c00 && h[1] == 0x7bff && h[2] == 0x0001 && h[3] == 0x0000);
    CHECK(isnan(bg_f16_to_f32(h[4])) && h[5] == 0x3c02); /* 1 + 2^-10 + 2^-11: tie to even */
    CHECK_OK(bg_step_cast(be, NULL, back, BG_F32, h, BG_F16, N));
    for (int i = 6; i < N; i++) /* round trip within half's precision (or inf beyond 65504) */
        CHECK_MSG(fabsf(x[i]) >= 65520.0f ? isinf(back[i])
                                          : fabsf(back[i] - x[i]) <= fabsf(x[i]) * 4.9e-4f + 6e-8f,
                  "fp16 round trip of %g gave %g", (double)x[i], (double)back[i]);
    CHECK_OK(bg_step_cast(be, NULL, h, BG_BF16, x, BG_F32, N));
    for (int i = 0; i < N; i++)
        CHECK(h[i] == bg_f32_to_bf16(x[i]));
    CHECK(bg_step_cast(be, NULL, h, BG_I32, x, BG_F32, N) == BG_ERR_INVALID);
    free(x);
}

static void check_scale_add(bg_backend_t *be)
{
    enum { N = 200003 };
    uint64_t seed = 21;
    setenv("BRIGADE_STEP_THREADS", "3", 1);
    float *x = fvec(N, &seed, -1, 1), *y = fvec(N, &seed, -1, 1);
    float *ry = fcopy(y, N);
    CHECK_OK(bg_step_add(be, NULL, y, x, N));
    CHECK_OK(bg_step_scale(be, NULL, y, 0.3f, N));
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += y[i] != (ry[i] + x[i]) * 0.3f;
    CHECK_MSG(!bad, "%d elements of add+scale differ", bad);
    free(x), free(y), free(ry);
}

int main(void)
{
    bg_backend_t *be = NULL;
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &be));
    if (!be)
        return 1;
    check_update(be, false, "1");
    check_update(be, false, "3");
    check_update(be, true, "1");
    check_update(be, true, "3");
    check_sumsq(be);
    check_cast(be);
    check_scale_add(be);
    CHECK(bg_backend_local_index(BG_DEV_CPU, 5) == 0);
    bg_backend_destroy(be);
    return bg_test_finish("test_step_ops");
}
