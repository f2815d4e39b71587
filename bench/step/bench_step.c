/*
 * bench/step/bench_step.c -- time of one optimizer step per parameter on
 * the CPU: the backend's step (layers/backend.h: gradient into the flat
 * buffer, per-parameter sums of squares, fused AdamW, and for bf16 the cast
 * of the masters) against the former host optimizer (per parameter: a
 * sequential double sum of squares, the AdamW loop of the old
 * engine/optim.c, and for bf16 a per-parameter conversion), on the same
 * parameter set (a GPT-like mix of matrices and vectors).
 * Repeats are interleaved (old, new, old, new ...) so that machine load
 * hits both alike; prints median and min in ns per parameter and the
 * ratio. BRIGADE_STEP_THREADS sets the new step's threads (default 1).
 * Must not pass or fail on time: it reports.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "layers/backend.h"

/* ---- the former host optimizer (engine/optim.c, AdamW branch) ---- */
static void old_adamw(int64_t step, float lr, float gscale, float wd, float *p, const float *g,
                      float *s0, float *s1, int64_t n)
{
    float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    float bc1 = 1.0f - powf(b1, (float)(step + 1));
    float bc2 = 1.0f - powf(b2, (float)(step + 1));
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
        s1[i] = b2 * s1[i] + (1.0f - b2) * gi * gi;
        float mhat = s0[i] / bc1, vhat = s1[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    }
}

typedef struct set {
    int n;
    int64_t *len, *off, *chunk0, total;
    uint8_t *decay;
    float *p, *g, *m, *v, *gflat, *acc; /* acc: the accumulators, gflat: the flat gradient */
    uint16_t *dev;                      /* bf16 compute copy */
} set_t;

/* A GPT-like parameter set: per block 4 matrices (d x 3d, d x d, d x 4d,
 * 4d x d) and 6 vectors, plus an embedding, to about `target` elements. */
static void set_make(set_t *s, int64_t target)
{
    int64_t d = 768, per = 12 * d * d + 13 * d;
    int blocks = (int)(target / per > 0 ? target / per : 1);
    s->n = blocks * 10 + 1;
    s->len = calloc((size_t)s->n, 8), s->off = calloc((size_t)s->n + 1, 8);
    s->chunk0 = calloc((size_t)s->n + 1, 8), s->decay = calloc((size_t)s->n, 1);
    int k = 0;
    s->len[k] = 8192 * d, s->decay[k++] = 1;
    for (int b = 0; b < blocks; b++) {
        const int64_t mats[4] = {3 * d * d, d * d, 4 * d * d, 4 * d * d};
        const int64_t vecs[6] = {d, d, 3 * d, d, 4 * d, d};
        for (int j = 0; j < 4; j++)
            s->len[k] = mats[j], s->decay[k++] = 1;
        for (int j = 0; j < 6; j++)
            s->len[k] = vecs[j], s->decay[k++] = 0;
    }
    int64_t o = 0;
    for (int i = 0; i < s->n; i++)
        s->off[i] = o, o += (s->len[i] + 63) / 64 * 64;
    s->off[s->n] = s->total = o;
    bg_flat_chunks(s->off, s->n, s->chunk0);
    float **bufs[6] = {&s->p, &s->g, &s->m, &s->v, &s->gflat, &s->acc};
    for (int i = 0; i < 6; i++) {
        *bufs[i] = aligned_alloc(64, (size_t)o * 4 + 64);
        if (!*bufs[i]) {
            fprintf(stderr, "bench_step: out of memory\n");
            exit(1);
        }
        for (int64_t e = 0; e < o; e++)
            (*bufs[i])[e] = i == 3 ? 1e-4f : (float)((e * 2654435761u) % 1000) * 1e-3f - 0.5f;
    }
    s->dev = aligned_alloc(64, (size_t)o * 2 + 64);
}

/* The old step: per parameter, norm then update then (bf16) convert. */
static double run_old(set_t *s, int64_t step, int bf16)
{
    double t0 = bg_now_s(), tot = 0;
    for (int i = 0; i < s->n; i++) {
        const float *g = s->acc + s->off[i];
        double q = 0;
        for (int64_t e = 0; e < s->len[i]; e++)
            q += (double)g[e] * (double)g[e];
        tot += (float)q;
    }
    float gscale = tot > 1.0 ? (float)(1.0 / sqrt(tot)) : 1.0f;
    for (int i = 0; i < s->n; i++) {
        int64_t o = s->off[i];
        old_adamw(step, 1e-4f, gscale, s->decay[i] ? 0.1f : 0.0f, s->p + o, s->acc + o, s->m + o,
                  s->v + o, s->len[i]);
        for (int64_t e = 0; bf16 && e < s->len[i]; e++)
            s->dev[o + e] = bg_f32_to_bf16(s->p[o + e]);
    }
    return bg_now_s() - t0;
}

/* The new step through the CPU backend's ops. */
static double run_new(bg_backend_t *be, set_t *s, int64_t step, int bf16, float *ssq)
{
    bg_flat_segs_t segs = {s->n, s->off, s->decay, s->off, s->chunk0, s->chunk0[s->n]};
    double t0 = bg_now_s(), tot = 0;
    memcpy(s->gflat, s->acc, (size_t)s->total * 4); /* accumulators -> flat gradient */
    bg_step_sumsq(be, NULL, &segs, s->gflat, ssq);
    for (int i = 0; i < s->n; i++)
        tot += ssq[i];
    bg_step_args_t a = {BG_STEP_ADAMW,
                        1e-4f,
                        tot > 1.0 ? (float)(1.0 / sqrt(tot)) : 1.0f,
                        0.1f,
                        0.9f,
                        0.9f,
                        0.95f,
                        1e-8f,
                        1.0f - powf(0.9f, (float)(step + 1)),
                        1.0f - powf(0.95f, (float)(step + 1))};
    bg_step_update(be, NULL, &a, &segs, s->p, s->gflat, s->m, s->v);
    if (bf16)
        bg_step_cast(be, NULL, s->dev, BG_BF16, s->p, BG_F32, s->total);
    return bg_now_s() - t0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    double millions = argc > 1 ? atof(argv[1]) : 30.0;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    if (reps < 1 || reps > 1000 || !(millions > 0)) {
        fprintf(stderr, "usage: bench_step [params_millions > 0] [repeats 1..1000]\n");
        return 2;
    }
    bg_backend_t *be = NULL;
    if (bg_backend_create(BG_DEV_CPU, 0, &be) != BG_OK) {
        fprintf(stderr, "bench_step: %s\n", bg_last_error());
        return 1;
    }
    set_t s;
    set_make(&s, (int64_t)(millions * 1e6));
    float *ssq = calloc((size_t)s.n, 4);
    double *to = calloc((size_t)reps, 8), *tn = calloc((size_t)reps, 8);
    const char *th = getenv("BRIGADE_STEP_THREADS");
    printf("optimizer step on the cpu: %lld parameters in %d tensors, %d interleaved repeats, "
           "new step threads %s\n",
           (long long)s.total, s.n, reps, th ? th : "1");
    printf("%-14s %12s %12s %12s %12s %8s\n", "case", "old med ns/p", "old min", "new med ns/p",
           "new min", "speedup");
    for (int bf16 = 0; bf16 < 2; bf16++) {
        run_old(&s, 0, bf16), run_new(be, &s, 0, bf16, ssq); /* warm the pages */
        for (int r = 0; r < reps; r++) {
            to[r] = run_old(&s, r + 1, bf16);
            tn[r] = run_new(be, &s, r + 1, bf16, ssq);
        }
        qsort(to, (size_t)reps, 8, cmp_d), qsort(tn, (size_t)reps, 8, cmp_d);
        double k = 1e9 / (double)s.total;
        printf("%-14s %12.3f %12.3f %12.3f %12.3f %7.2fx\n", bf16 ? "adamw+bf16" : "adamw f32",
               to[reps / 2] * k, to[0] * k, tn[reps / 2] * k, tn[0] * k,
               to[reps / 2] / tn[reps / 2]);
    }
    free(ssq), free(to), free(tn);
    bg_backend_destroy(be);
    return 0;
}
