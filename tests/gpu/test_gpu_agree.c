/*
 * tests/gpu/test_gpu_agree.c -- the CUDA backend agrees with the CPU one.
 *
 * Backend: copies H2D/D2H/D2D round trip, memset, streams and events,
 * GEMM in all transpose combinations, batched, k = 0, bf16 and fp16
 * operands with f32 and same-dtype results and f32 with f32 (f32 -> bf16
 * or fp16, which cuBLAS lacks, must be refused), against the CPU backend;
 * CUDA errors become statuses with the call named.
 * Layers: for every kind, random specs with odd sizes run F, B, W on the
 * CPU (f32) and on CUDA in f32, bf16 and fp16 (for bf16/fp16 the CPU
 * reference gets the same rounded inputs, parameters and output gradient,
 * so only the CUDA side's intermediate roundings count against it); a kind
 * not compared in every dtype fails. Outputs, input gradients, saved
 * scratch and workspaces are poisoned first; every output element must be
 * written; W must ADD into the gradients. Then every kind once at GPT-2
 * 124M's sizes (T 1024, C 768, H 12, V 50257) in bf16, its training dtype
 * (test_gpt2_sizes; a kind without such a case fails); the CPU-vs-CPU
 * self-test runs them too, so their shapes and the harness are exercised
 * on every machine.
 * Tolerances: |gpu - cpu| <= tol * (rms(ref) + |ref|) per element.
 *   f32  tol 1e-4: both sides compute in f32 and differ only in summation
 *        order (cuBLAS vs OpenBLAS, tree vs sequential sums): ~K * 6e-8
 *        relative for the K <= ~1000 term sums here, well under 1e-4.
 *   bf16 tol 2e-2 (attention 3e-2): each stored bf16 activation carries a
 *        relative rounding error up to 2^-9 = 2e-3; a chain of 3-6 rounded
 *        intermediates (attention: qkv, probabilities, y, then the
 *        gradient chain dy, dS, dqkv; scores stay f32 in the fused
 *        kernels) gives ~0.5-1.5% of the row
 *        scale; 2e-2 leaves margin without letting a wrong sign or a
 *        missing term (errors of order 1 * rms) through.
 *   fp16 tol 1e-2 (attention 1.5e-2): the same chains of roundings, each
 *        up to 2^-11 = 4.9e-4 relative (10 mantissa bits: 4x finer than
 *        bf16), so ~0.12-0.4% of the row scale. Only halved from bf16's,
 *        not quartered, to keep twice bf16's margin over the estimate:
 *        these cases have not been calibrated on a device. fp16's narrow
 *        range is what a loss scale is for: the output gradient of fp16
 *        runs is scaled (GA_F16_LOSS_SCALE) as training scales every
 *        gradient, so tiny gradients (a norm over one column, the loss
 *        kinds' per-class terms) stay out of fp16's subnormals, whose
 *        absolute steps of 6e-8 no relative tolerance allows for.
 * Skips (exit 0, "SKIP: ...") when this build or machine has no CUDA GPU.
 * Must not test on zeros, and must not depend on timing.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/backend.h"
#include "layers/layer.h"
#include "test_util.h"

static bg_backend_t *g_cpu, *g_gpu;
static bg_stream_t *g_stream; /* the GPU calls run on a created stream, not NULL */
/* BG_AGREE_SELFTEST=1: a second CPU backend stands in for the GPU to check
 * this harness itself on machines without a GPU (layers only; its bf16 and
 * fp16 runs compute in f32 and round each output once, layers/cpu_mixed.c). */
static bool g_selftest;

/* The loss scale of fp16 runs (see the file comment). 2^8: the smallest
 * gradients here (rmsnorm over one column: ~1e-7 unscaled) leave the
 * subnormals' coarse steps, and the largest (~1.7e3 scaled, linear's dx)
 * stay 40x under fp16's max of 65504. */
#define GA_F16_LOSS_SCALE 256.0f

/* The dtypes every layer kind is compared in, f32 first. */
static const bg_dtype_t ga_dtypes[] = {BG_F32, BG_BF16, BG_F16};
#define GA_NDT ((int)(sizeof(ga_dtypes) / sizeof(ga_dtypes[0])))

/* The stream a backend's work goes to here: g_stream belongs to the GPU. */
static bg_stream_t *ga_stream(bg_backend_t *be)
{
    return be == g_gpu ? g_stream : NULL;
}

/* ---- small helpers ---- */

static void *ga_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_gpu_agree: out of host memory\n");
        exit(1);
    }
    return p;
}

/* The poison value as f32 and bf16 see it: exact in bf16, so a bf16 buffer
 * poisoned with it reads back as the same f32. fp16 cannot hold it: there
 * it is -inf, which ga_compare counts as unwritten too. */
static float ga_poison(void)
{
    return bg_bf16_to_f32(bg_f32_to_bf16(BG_POISON_F32));
}

/* f32 <-> the 16-bit storage of dt (bf16 or fp16): the host's rounding
 * rule, the one the device stores follow. */
static uint16_t ga_narrow(bg_dtype_t dt, float x)
{
    return dt == BG_BF16 ? bg_f32_to_bf16(x) : bg_f32_to_f16(x);
}

static float ga_widen(bg_dtype_t dt, uint16_t h)
{
    return dt == BG_BF16 ? bg_bf16_to_f32(h) : bg_f16_to_f32(h);
}

/* x rounded in place to what dtype dt (bf16 or fp16) holds. */
static void ga_round(bg_dtype_t dt, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = ga_widen(dt, ga_narrow(dt, x[i]));
}

/* n f32 values as dtype `dt` (f32 copied, bf16/fp16 rounded), malloc'd. */
static void *ga_to_dt(const float *src, int64_t n, bg_dtype_t dt)
{
    if (dt != BG_F32) {
        uint16_t *h = ga_malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++)
            h[i] = ga_narrow(dt, src[i]);
        return h;
    }
    void *h = ga_malloc((size_t)n * 4);
    memcpy(h, src, (size_t)n * 4);
    return h;
}

static void ga_from_dt(const void *src, int64_t n, bg_dtype_t dt, float *dst)
{
    if (dt != BG_F32)
        for (int64_t i = 0; i < n; i++)
            dst[i] = ga_widen(dt, ((const uint16_t *)src)[i]);
    else
        memcpy(dst, src, (size_t)n * 4);
}

/* Device buffer holding host f32 `src` (n values) as dtype `dt`. */
static void *ga_upload(bg_backend_t *be, const float *src, int64_t n, bg_dtype_t dt)
{
    void *d = NULL, *h = ga_to_dt(src, n, dt);
    CHECK_OK(bg_backend_alloc(be, (size_t)n * bg_dtype_size(dt), &d));
    if (d)
        CHECK_OK(
            bg_backend_copy(be, d, h, (size_t)n * bg_dtype_size(dt), BG_COPY_H2D, ga_stream(be)));
    CHECK_OK(bg_stream_synchronize(be, ga_stream(be))); /* h is freed next */
    free(h);
    return d;
}

/* Device (n values of dtype dt) -> host f32 dst. */
static void ga_download(bg_backend_t *be, const void *d, int64_t n, bg_dtype_t dt, float *dst)
{
    void *h = ga_malloc((size_t)n * bg_dtype_size(dt));
    CHECK_OK(bg_backend_copy(be, h, d, (size_t)n * bg_dtype_size(dt), BG_COPY_D2H, ga_stream(be)));
    CHECK_OK(bg_stream_synchronize(be, ga_stream(be)));
    ga_from_dt(h, n, dt, dst);
    free(h);
}

/* Fill device memory with the poison value (as dtype dt). */
static void ga_poison_dev(bg_backend_t *be, void *d, int64_t n, bg_dtype_t dt)
{
    float *p = ga_malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        p[i] = ga_poison();
    void *h = ga_to_dt(p, n, dt);
    CHECK_OK(bg_backend_copy(be, d, h, (size_t)n * bg_dtype_size(dt), BG_COPY_H2D, ga_stream(be)));
    CHECK_OK(bg_stream_synchronize(be, ga_stream(be)));
    free(h);
    free(p);
}

/*
 * got vs ref, n values: every element written (no poison, no NaN) and
 * |got - ref| <= tol * (scale + |ref|), scale = rms(ref - base) (base: the
 * gradients' starting values, so that "W overwrote instead of adding" is
 * measured against the size of what W adds) or rms(ref) when base is NULL.
 */
static void ga_compare(const char *what, const char *case_name, const char *dt, const float *got,
                       const float *ref, const float *base, int64_t n, double tol)
{
    int64_t unwritten = 0, worst = -1;
    double scale = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)ref[i] - (base ? base[i] : 0.0);
        scale += d * d;
        unwritten += got[i] == ga_poison() || !isfinite(got[i]); /* fp16 poison: -inf */
    }
    scale = n ? sqrt(scale / (double)n) : 0.0;
    if (scale < 1e-20)
        scale = 1e-20;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (tol * (scale + fabs((double)ref[i])));
        if (!(e <= m))
            m = isnan(e) ? INFINITY : e, worst = i;
    }
    CHECK_MSG(unwritten == 0, "%s %s [%s]: %lld of %lld elements not written (poison/NaN/inf)",
              case_name, what, dt, (long long)unwritten, (long long)n);
    CHECK_MSG(m <= 1.0,
              "%s %s [%s]: error %.3g x tolerance %.0e at %lld: gpu %.8g cpu %.8g (rms %.3g)",
              case_name, what, dt, m, tol, (long long)worst, worst >= 0 ? got[worst] : 0.0,
              worst >= 0 ? ref[worst] : 0.0, scale);
    if (getenv("BG_TEST_VERBOSE"))
        printf("  %-24s %-14s %-4s worst %.3f of tolerance\n", case_name, what, dt, m);
}

/* ================= backend tests ================= */

static void test_copies(void)
{
    const int64_t n = 1000003; /* odd: no alignment luck */
    unsigned char *a = ga_malloc(n), *b = ga_malloc(n);
    uint64_t s = 11;
    for (int64_t i = 0; i < n; i++)
        a[i] = (unsigned char)(bg_test_next(&s) >> 56);
    memset(b, 0, n);
    void *d1 = NULL, *d2 = NULL;
    CHECK_OK(bg_backend_alloc(g_gpu, n, &d1));
    CHECK_OK(bg_backend_alloc(g_gpu, n, &d2));
    if (!d1 || !d2)
        goto out;
    CHECK_OK(bg_backend_copy(g_gpu, d1, a, n, BG_COPY_H2D, g_stream));
    CHECK_OK(bg_backend_copy(g_gpu, d2, d1, n, BG_COPY_D2D, g_stream));
    CHECK_OK(bg_backend_copy(g_gpu, b, d2, n, BG_COPY_D2H, g_stream));
    CHECK_OK(bg_stream_synchronize(g_gpu, g_stream));
    CHECK_MSG(!memcmp(a, b, n), "H2D -> D2D -> D2H round trip changed the bytes");

    /* memset of an interior range on the default (NULL) stream */
    CHECK_OK(bg_backend_memset(g_gpu, (char *)d2 + 17, 0x5a, 4099, NULL));
    CHECK_OK(bg_backend_copy(g_gpu, b, d2, n, BG_COPY_D2H, NULL));
    CHECK_OK(bg_backend_synchronize(g_gpu));
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        unsigned char want = i >= 17 && i < 17 + 4099 ? 0x5a : a[i];
        bad += b[i] != want;
    }
    CHECK_MSG(bad == 0, "memset: %lld bytes wrong", (long long)bad);
out:
    bg_backend_free(g_gpu, d1);
    bg_backend_free(g_gpu, d2);
    free(a);
    free(b);
}

/* Events time work on a stream; a second stream waits on an event. */
static void test_events(void)
{
    const size_t bytes = 64u << 20;
    void *d = NULL;
    bg_event_t *e0 = NULL, *e1 = NULL;
    bg_stream_t *s2 = NULL;
    CHECK_OK(bg_backend_alloc(g_gpu, bytes, &d));
    CHECK_OK(bg_event_create(g_gpu, &e0));
    CHECK_OK(bg_event_create(g_gpu, &e1));
    CHECK_OK(bg_stream_create(g_gpu, "test-second", &s2));
    if (!d || !e0 || !e1 || !s2)
        goto out;
    CHECK_OK(bg_event_record(g_gpu, e0, g_stream));
    for (int i = 0; i < 8; i++)
        CHECK_OK(bg_backend_memset(g_gpu, d, i + 1, bytes, g_stream));
    CHECK_OK(bg_event_record(g_gpu, e1, g_stream));
    CHECK_OK(bg_stream_wait_event(g_gpu, s2, e1));
    /* s2 must see the last memset (value 8) because it waited for e1 */
    unsigned char probe[4] = {0};
    CHECK_OK(bg_backend_copy(g_gpu, probe, (char *)d + bytes - 4, 4, BG_COPY_D2H, s2));
    CHECK_OK(bg_stream_synchronize(g_gpu, s2));
    CHECK_MSG(probe[0] == 8 && probe[3] == 8, "stream_wait_event: saw %d, want 8", probe[0]);
    CHECK_OK(bg_event_synchronize(g_gpu, e1));
    float ms = -1.0f;
    CHECK_OK(bg_event_elapsed_ms(g_gpu, e0, e1, &ms));
    CHECK_MSG(ms > 0.0f && ms < 10000.0f, "elapsed %g ms for 512 MiB of memset", ms);
out:
    bg_stream_destroy(g_gpu, s2);
    bg_event_destroy(g_gpu, e0);
    bg_event_destroy(g_gpu, e1);
    bg_backend_free(g_gpu, d);
}

/* Statuses from failing CUDA calls name the call and where it failed. */
static void test_errors(void)
{
    void *p = NULL;
    bg_status_t st = bg_backend_alloc(g_gpu, (size_t)1 << 56, &p);
    CHECK_MSG(st == BG_ERR_NOMEM && p == NULL, "absurd cudaMalloc gave %s", bg_status_str(st));
    CHECK_MSG(strstr(bg_last_error(), "cudaMalloc") && strstr(bg_last_error(), "backend_cuda.cu"),
              "message does not name the call and file: %s", bg_last_error());
    bg_backend_t *be = NULL;
    st = bg_backend_create(BG_DEV_CUDA, 4096, &be);
    CHECK_MSG(st != BG_OK && be == NULL, "device 4096 opened");
    /* The device must still work after those failures (errors not sticky). */
    void *q = NULL;
    CHECK_OK(bg_backend_alloc(g_gpu, 1024, &q));
    CHECK_OK(bg_backend_memset(g_gpu, q, 0, 1024, g_stream));
    CHECK_OK(bg_stream_synchronize(g_gpu, g_stream));
    bg_backend_free(g_gpu, q);
}

typedef struct ga_gemm_case {
    bool ta, tb;
    int64_t m, n, k, batch;
    float alpha, beta;
    bg_dtype_t ab, c;
} ga_gemm_case_t;

/* One GEMM on both backends (reference: f32 CPU with operands rounded to
 * the GPU's bf16/fp16). Leading dimensions are padded past the rows. */
static void test_gemm_case(const ga_gemm_case_t *gc, uint64_t *s)
{
    int64_t batch = gc->batch > 1 ? gc->batch : 1;
    int64_t ar = gc->ta ? gc->k : gc->m, ac = gc->ta ? gc->m : gc->k;
    int64_t br = gc->tb ? gc->n : gc->k, bc = gc->tb ? gc->k : gc->n;
    int64_t lda = ac + 3, ldb = bc + 1, ldc = gc->n + 2;
    int64_t sa = ar * lda + 5, sb = br * ldb + 7, sc = gc->m * ldc + 1;
    int64_t na = batch * sa, nb = batch * sb, nc = batch * sc;
    float *a = ga_malloc(na * 4), *b = ga_malloc(nb * 4), *c0 = ga_malloc(nc * 4);
    float *ref = ga_malloc(nc * 4), *got = ga_malloc(nc * 4);
    bg_test_fill(a, na, s, -1.0f, 1.0f);
    bg_test_fill(b, nb, s, -1.0f, 1.0f);
    bg_test_fill(c0, nc, s, -1.0f, 1.0f);
    if (gc->ab != BG_F32)
        ga_round(gc->ab, a, na), ga_round(gc->ab, b, nb);
    if (gc->c != BG_F32)
        ga_round(gc->c, c0, nc);
    memcpy(ref, c0, nc * 4);
    bg_gemm_args_t g = {
        .trans_a = gc->ta,
        .trans_b = gc->tb,
        .m = gc->m,
        .n = gc->n,
        .k = gc->k,
        .alpha = gc->alpha,
        .beta = gc->beta,
        .a = a,
        .lda = lda,
        .b = b,
        .ldb = ldb,
        .c = ref,
        .ldc = ldc,
        .ab = BG_F32,
        .c_dtype = BG_F32,
        .batch = gc->batch,
        .sa = sa,
        .sb = sb,
        .sc = sc,
    };
    CHECK_OK(bg_gemm(g_cpu, NULL, &g));
    void *da = ga_upload(g_gpu, a, na, gc->ab), *db = ga_upload(g_gpu, b, nb, gc->ab);
    void *dc = ga_upload(g_gpu, c0, nc, gc->c);
    g.a = da, g.b = db, g.c = dc, g.ab = gc->ab, g.c_dtype = gc->c;
    if (da && db && dc && gc->ab == BG_F32 && gc->c != BG_F32) {
        /* cuBLAS has no f32 x f32 -> bf16/fp16: refused with a status, C untouched */
        bg_status_t st = bg_gemm(g_gpu, g_stream, &g);
        CHECK_MSG(st == BG_ERR_UNSUPPORTED, "f32 x f32 -> %s gemm gave %s", bg_dtype_name(gc->c),
                  bg_status_str(st));
        ga_download(g_gpu, dc, nc, gc->c, got);
        CHECK_MSG(!memcmp(got, c0, (size_t)nc * 4), "refused gemm changed C");
    } else if (da && db && dc) {
        CHECK_OK(bg_gemm(g_gpu, g_stream, &g));
        ga_download(g_gpu, dc, nc, gc->c, got);
        char name[96];
        snprintf(name, sizeof(name), "gemm %c%c %lldx%lldx%lld b%lld", gc->ta ? 'T' : 'N',
                 gc->tb ? 'T' : 'N', (long long)gc->m, (long long)gc->n, (long long)gc->k,
                 (long long)batch);
        /* bf16 C: one output rounding (2^-9) on top of f32 accumulation;
         * fp16 C: one rounding of 2^-11, the same 5x margin over it. Products
         * of rounded operands are exact in f32 for both: f32 tolerance. */
        double tol = gc->c == BG_BF16 ? 1e-2 : gc->c == BG_F16 ? 2.5e-3 : 1e-4;
        ga_compare("C", name, bg_dtype_name(gc->ab), got, ref, NULL, nc, tol);
        /* padding between rows and batches must be left alone */
        int64_t touched = 0;
        for (int64_t i = 0; i < nc; i++) {
            int64_t r = (i % sc) / ldc, j = (i % sc) % ldc;
            bool inside = (i % sc) < gc->m * ldc && j < gc->n && r < gc->m;
            if (!inside && got[i] != c0[i])
                touched++;
        }
        CHECK_MSG(touched == 0, "%s: %lld padding elements changed", name, (long long)touched);
    }
    bg_backend_free(g_gpu, da);
    bg_backend_free(g_gpu, db);
    bg_backend_free(g_gpu, dc);
    free(a), free(b), free(c0), free(ref), free(got);
}

static void test_gemm(void)
{
    uint64_t s = 99;
    /* per low-precision dtype: {f32, it} operands x {f32, it} results (the
     * f32 x f32 -> f32 case repeats: cheap, and keeps the loop plain) */
    const bg_dtype_t lows[2] = {BG_BF16, BG_F16};
    for (int lo = 0; lo < 2; lo++)
        for (int t = 0; t < 4; t++)
            for (int d = 0; d < 2; d++)
                for (int cd = 0; cd < 2; cd++) {
                    bg_dtype_t ab = d ? lows[lo] : BG_F32, c = cd ? lows[lo] : BG_F32;
                    ga_gemm_case_t gc = {t & 1, (t >> 1) & 1, 37, 19, 53, 0, 0.7f, 0.3f, ab, c};
                    test_gemm_case(&gc, &s);
                }
    ga_gemm_case_t more[] = {
        {false, true, 17, 33, 65, 3, 1.0f, 0.0f, BG_F32, BG_F32}, /* batched */
        {true, false, 5, 7, 130, 4, 0.5f, 1.0f, BG_BF16, BG_F32}, /* batched, accumulate */
        {true, false, 5, 7, 130, 4, 0.5f, 1.0f, BG_F16, BG_F32},
        {false, false, 9, 11, 0, 0, 1.0f, 0.5f, BG_F32, BG_F32},   /* k = 0: C = beta C */
        {false, false, 9, 11, 0, 2, 1.0f, 0.0f, BG_BF16, BG_BF16}, /* k = 0, beta 0 */
        {false, false, 9, 11, 0, 2, 1.0f, 0.0f, BG_F16, BG_F16},
        {false, false, 1, 1, 1, 0, 1.0f, 0.0f, BG_F32, BG_F32},
        {true, true, 257, 129, 511, 0, 1.0f, 1.0f, BG_BF16, BG_F32},
        {true, true, 257, 129, 511, 0, 1.0f, 1.0f, BG_F16, BG_F32},
    };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        test_gemm_case(&more[i], &s);
}

/* ================= layer agreement ================= */

typedef struct ga_case {
    bg_layer_spec_t spec;
    int64_t id_range[BG_MAX_INPUTS]; /* i32 inputs: ids in [0, range) */
    float in_lo, in_hi;              /* float inputs U(lo, hi) */
} ga_case_t;

static int64_t ga_pick(uint64_t *s, const int64_t *v, int n)
{
    return v[bg_test_next(s) % (uint64_t)n];
}
#define PICK(s, ...)                                                                               \
    ga_pick((s), (const int64_t[]){__VA_ARGS__},                                                   \
            (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

static void ga_shape(bg_shape_t *sh, bg_dtype_t dt, int ndim, const int64_t *d)
{
    memset(sh, 0, sizeof(*sh));
    sh->dtype = dt;
    sh->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        sh->d[i] = d[i];
}

/* Sizes cross the kernels' internal boundaries: > 32 (a warp's lanes),
 * > 256 (a block's threads), not multiples of either. */
static void gen_linear(ga_case_t *k, int i, uint64_t *s)
{
    int64_t d[3] = {PICK(s, 1, 2, 3), PICK(s, 1, 7, 45), PICK(s, 1, 3, 17, 64, 97)};
    int nd = 1 + i % 3;
    ga_shape(&k->spec.in[0], BG_F32, nd, d + 3 - nd);
    k->spec.n_in = 1;
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "out", PICK(s, 1, 5, 33, 70)));
    if (i % 2)
        CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "bias", false));
    if (i == 2)
        CHECK_OK(bg_attrs_set_ref(&k->spec.attrs, "share", "wte.tokens"));
}

static void gen_embedding(ga_case_t *k, int i, uint64_t *s)
{
    int64_t vocab = PICK(s, 1, 3, 50), T = PICK(s, 1, 5, 40), d[2] = {PICK(s, 1, 2, 3), T};
    k->spec.n_in = 1;
    if (i % 2 == 0) {
        ga_shape(&k->spec.in[0], BG_I32, 2, d);
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "positions", T + i));
    } else {
        ga_shape(&k->spec.in[0], BG_I32, i == 1 ? 1 : 2, i == 1 ? d + 1 : d);
    }
    if (i == 0)
        vocab = 3; /* many positions per id: long runs in W */
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "vocab", vocab));
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "dim", i == 3 ? 300 : PICK(s, 1, 3, 17, 64)));
    k->id_range[0] = vocab;
}

static void gen_layernorm(ga_case_t *k, int i, uint64_t *s)
{
    int64_t C = i == 0 ? 1 : i == 3 ? 769 : PICK(s, 3, 17, 64, 100);
    int64_t d[3] = {PICK(s, 1, 2, 3), PICK(s, 1, 3, 33), C};
    int nd = 1 + i % 3;
    ga_shape(&k->spec.in[0], BG_F32, nd, d + 3 - nd);
    k->spec.n_in = 1;
    if (i == 2)
        CHECK_OK(bg_attrs_set_float(&k->spec.attrs, "eps", 1e-3));
    /* rows far from 0: the variance must not cancel */
    k->in_lo = 2.0f, k->in_hi = 4.0f;
}

static void gen_elementwise(ga_case_t *k, int i, uint64_t *s, int n_in)
{
    int64_t d[4];
    int nd = 1 + i % 4;
    for (int j = 0; j < nd; j++)
        d[j] = PICK(s, 1, 2, 3, 5, 17, 300);
    for (int j = 0; j < n_in; j++)
        ga_shape(&k->spec.in[j], BG_F32, nd, d);
    k->spec.n_in = n_in;
    k->in_lo = -3.0f, k->in_hi = 3.0f;
}

/* (..., 2H): odd H, and one Llama-like width (H = 172). */
static void gen_swiglu(ga_case_t *k, int i, uint64_t *s)
{
    int64_t d[3] = {PICK(s, 1, 2, 3), PICK(s, 1, 3, 33), 2 * (i == 3 ? 172 : PICK(s, 1, 5, 17))};
    int nd = 1 + i % 3;
    ga_shape(&k->spec.in[0], BG_F32, nd, d + 3 - nd);
    k->spec.n_in = 1;
    k->in_lo = -4.0f, k->in_hi = 4.0f;
}

static void gen_attention(ga_case_t *k, int i, uint64_t *s)
{
    int64_t heads = 1 + i % 3, hs = PICK(s, 1, 4, 8, 16);
    int64_t d[3] = {PICK(s, 1, 2, 3), i == 4 ? 70 : PICK(s, 1, 3, 17, 33), heads * hs};
    ga_shape(&k->spec.in[0], BG_F32, 3, d);
    k->spec.n_in = 1;
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "heads", heads));
    CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "causal", i != 1 && i != 5));
    if (i < 6)
        return;
    /* grouped-query + rope across several kernel tiles (64 rows in bf16 and
     * fp16, 32 in f32), T not a multiple of either: kv_heads 2 of 4, and 1 of
     * 8 at hs 64 */
    int64_t h2 = i == 6 ? 4 : 8, d2[3] = {2, i == 6 ? 70 : 130, h2 * (i == 6 ? 8 : 64)};
    ga_shape(&k->spec.in[0], BG_F32, 3, d2);
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "heads", h2));
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "kv_heads", i == 6 ? 2 : 1));
    CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "causal", i == 6));
    CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "rope", true));
    CHECK_OK(bg_attrs_set_float(&k->spec.attrs, "rope_theta", 500000.0));
}

static void gen_cross_entropy(ga_case_t *k, int i, uint64_t *s)
{
    int64_t V = i == 0 ? 1 : i == 3 ? 1000 : PICK(s, 2, 3, 17, 100);
    int64_t d[3] = {PICK(s, 1, 2), PICK(s, 1, 3, 37), V};
    int nd = 2 + i % 2;
    ga_shape(&k->spec.in[0], BG_F32, nd, d + 3 - nd);
    ga_shape(&k->spec.in[1], BG_I32, nd - 1, d + 3 - nd);
    k->spec.n_in = 2;
    k->id_range[1] = V;
    k->in_lo = -4.0f, k->in_hi = 4.0f;
}

/* The fused head + loss: one case spans several logits tiles (rows past
 * BG_CLS_ROWS, V past BG_CLS_VOCAB) so the online lse and the dx sum over
 * vocabulary tiles are compared too. */
static void gen_classifier(ga_case_t *k, int i, uint64_t *s)
{
    int64_t V = i == 0 ? 1 : i == 3 ? 4200 : PICK(s, 2, 17, 100, 1000);
    int64_t d[3] = {i == 3 ? 3 : PICK(s, 1, 2), i == 3 ? 350 : PICK(s, 1, 3, 37),
                    i == 3 ? 24 : PICK(s, 1, 8, 33, 64)};
    int nd = 2 + i % 2;
    ga_shape(&k->spec.in[0], BG_F32, nd, d + 3 - nd);
    ga_shape(&k->spec.in[1], BG_I32, nd - 1, d + 3 - nd);
    k->spec.n_in = 2;
    k->id_range[1] = V;
    CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "out", V));
    if (i % 2)
        CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "bias", false));
}

/* Cases for `kind`; 0 when there is no generator (reported as a failure). */
static int ga_cases(const bg_layer_kind_t *kind, uint64_t *s, ga_case_t *out)
{
    const char *n = kind->name;
    int count = !strcmp(n, "attention") ? 8 : 4;
    for (int i = 0; i < count; i++) {
        ga_case_t *k = &out[i];
        memset(k, 0, sizeof(*k));
        k->spec.kind = kind;
        snprintf(k->spec.name, sizeof(k->spec.name), "agree.%s.%d", n, i);
        k->in_lo = -1.0f, k->in_hi = 1.0f;
        if (!strcmp(n, "linear"))
            gen_linear(k, i, s);
        else if (!strcmp(n, "embedding"))
            gen_embedding(k, i, s);
        else if (!strcmp(n, "layernorm") || !strcmp(n, "rmsnorm"))
            gen_layernorm(k, i, s); /* same shapes and eps; rms of rows far from 0 */
        else if (!strcmp(n, "swiglu"))
            gen_swiglu(k, i, s);
        else if (!strcmp(n, "gelu") || !strcmp(n, "relu"))
            gen_elementwise(k, i, s, 1);
        else if (!strcmp(n, "add"))
            gen_elementwise(k, i, s, 2);
        else if (!strcmp(n, "attention"))
            gen_attention(k, i, s);
        else if (!strcmp(n, "cross_entropy"))
            gen_cross_entropy(k, i, s);
        else if (!strcmp(n, "classifier"))
            gen_classifier(k, i, s);
        else if (!strcmp(n, "identity"))
            gen_elementwise(k, i, s, 1);
        else
            return 0;
    }
    return count;
}

/*
 * GPT-2 124M's sizes for `kind` (B = 1, T = 1024, C = 768, H = 12,
 * V = 50257; the MLP's 4C = 3072), one case: the shapes a real model runs,
 * where tiles, grids and reductions are full size. false when the kind has
 * no such case (reported as a failure).
 */
static bool ga_gpt2_case(const bg_layer_kind_t *kind, ga_case_t *k)
{
    const char *n = kind->name;
    const int64_t T = 1024, C = 768, V = 50257;
    int64_t btc[3] = {1, T, C}, bt4c[3] = {1, T, 4 * C}, bt8c[3] = {1, T, 8 * C};
    int64_t btv[3] = {1, T, V}, bt[2] = {1, T};
    memset(k, 0, sizeof(*k));
    k->spec.kind = kind;
    snprintf(k->spec.name, sizeof(k->spec.name), "gpt2.%s", n);
    k->in_lo = -1.0f, k->in_hi = 1.0f;
    k->spec.n_in = 1;
    if (!strcmp(n, "linear")) { /* the MLP's c_fc */
        ga_shape(&k->spec.in[0], BG_F32, 3, btc);
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "out", 4 * C));
    } else if (!strcmp(n, "embedding")) { /* wte */
        ga_shape(&k->spec.in[0], BG_I32, 2, bt);
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "vocab", V));
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "dim", C));
        k->id_range[0] = V;
    } else if (!strcmp(n, "layernorm") || !strcmp(n, "rmsnorm")) {
        ga_shape(&k->spec.in[0], BG_F32, 3, btc);
        k->in_lo = 2.0f, k->in_hi = 4.0f; /* as gen_layernorm: no cancelling variance */
    } else if (!strcmp(n, "gelu") || !strcmp(n, "relu") || !strcmp(n, "identity")) {
        ga_shape(&k->spec.in[0], BG_F32, 3, bt4c);
        k->in_lo = -3.0f, k->in_hi = 3.0f;
    } else if (!strcmp(n, "add")) { /* the residual */
        ga_shape(&k->spec.in[0], BG_F32, 3, btc);
        ga_shape(&k->spec.in[1], BG_F32, 3, btc);
        k->spec.n_in = 2;
    } else if (!strcmp(n, "swiglu")) { /* not GPT-2's: its MLP width, gated */
        ga_shape(&k->spec.in[0], BG_F32, 3, bt8c);
        k->in_lo = -4.0f, k->in_hi = 4.0f;
    } else if (!strcmp(n, "attention")) {
        ga_shape(&k->spec.in[0], BG_F32, 3, btc);
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "heads", 12));
        CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "causal", true));
    } else if (!strcmp(n, "cross_entropy")) {
        ga_shape(&k->spec.in[0], BG_F32, 3, btv);
        ga_shape(&k->spec.in[1], BG_I32, 2, bt);
        k->spec.n_in = 2;
        k->id_range[1] = V;
        k->in_lo = -4.0f, k->in_hi = 4.0f;
    } else if (!strcmp(n, "classifier")) { /* lm_head (no bias) + loss */
        ga_shape(&k->spec.in[0], BG_F32, 3, btc);
        ga_shape(&k->spec.in[1], BG_I32, 2, bt);
        k->spec.n_in = 2;
        k->id_range[1] = V;
        CHECK_OK(bg_attrs_set_int(&k->spec.attrs, "out", V));
        CHECK_OK(bg_attrs_set_bool(&k->spec.attrs, "bias", false));
    } else {
        return false;
    }
    return true;
}

/* Host data of one case: f32 for float tensors, int32 for ids. */
typedef struct ga_data {
    int np;
    bg_param_desc_t pd[BG_MAX_PARAMS];
    int64_t n_in[BG_MAX_INPUTS], n_out, n_par[BG_MAX_PARAMS];
    void *in[BG_MAX_INPUTS];
    float *par[BG_MAX_PARAMS], *grad0[BG_MAX_PARAMS], *dout;
} ga_data_t;

/* What one backend produced: f32 host copies. */
typedef struct ga_result {
    float *out, *din[BG_MAX_INPUTS], *grad[BG_MAX_PARAMS];
} ga_result_t;

static bool ga_is_float(const ga_case_t *k, int i)
{
    return k->spec.in[i].dtype != BG_I32;
}

static bool ga_data_init(ga_case_t *k, ga_data_t *D, uint64_t *s)
{
    memset(D, 0, sizeof(*D));
    bg_errbuf_t err = {{0}};
    bg_status_t st = bg_layer_infer(&k->spec, &err);
    CHECK_MSG(st == BG_OK, "%s: infer failed: %s", k->spec.name, err.msg);
    if (st != BG_OK)
        return false;
    D->np = k->spec.kind->params ? k->spec.kind->params(&k->spec, D->pd) : 0;
    for (int i = 0; i < k->spec.n_in; i++) {
        D->n_in[i] = bg_shape_numel(&k->spec.in[i]);
        D->in[i] = ga_malloc((size_t)D->n_in[i] * 4);
        if (ga_is_float(k, i)) {
            bg_test_fill(D->in[i], D->n_in[i], s, k->in_lo, k->in_hi);
        } else {
            int32_t *ids = D->in[i];
            for (int64_t e = 0; e < D->n_in[i]; e++)
                ids[e] = (int32_t)(bg_test_next(s) % (uint64_t)k->id_range[i]);
        }
    }
    for (int j = 0; j < D->np; j++) {
        const bg_shape_t *ps = &D->pd[j].shape;
        D->n_par[j] = bg_shape_numel(ps);
        D->par[j] = ga_malloc((size_t)D->n_par[j] * 4);
        D->grad0[j] = ga_malloc((size_t)D->n_par[j] * 4);
        /* weights ~ U(+-1.5/sqrt(fan_in)) keep activations O(1); never zeros */
        float sc = ps->ndim == 2 ? 1.5f / sqrtf((float)ps->d[1]) : 0.5f;
        bg_test_fill(D->par[j], D->n_par[j], s, -sc, sc);
        if ((!strcmp(k->spec.kind->name, "layernorm") || !strcmp(k->spec.kind->name, "rmsnorm")) &&
            j == 0)
            for (int64_t e = 0; e < D->n_par[j]; e++)
                D->par[j][e] += 1.0f;
        bg_test_fill(D->grad0[j], D->n_par[j], s, -1.0f, 1.0f);
    }
    D->n_out = bg_shape_numel(&k->spec.out);
    D->dout = ga_malloc((size_t)D->n_out * 4);
    bg_test_fill(D->dout, D->n_out, s, -1.0f, 1.0f);
    if (k->spec.kind->out_f32)
        D->dout[0] = 0.75f; /* the loss gradient */
    return true;
}

/* Everything float rounded to dt (bf16 or fp16) once: the fair input for a
 * run in dt. In fp16 the output gradient is loss-scaled first (a power of
 * two: exact), as every gradient of an fp16 training step is. */
static void ga_data_round(const ga_case_t *k, ga_data_t *D, bg_dtype_t dt)
{
    for (int i = 0; i < k->spec.n_in; i++)
        if (ga_is_float(k, i))
            ga_round(dt, D->in[i], D->n_in[i]);
    for (int j = 0; j < D->np; j++)
        ga_round(dt, D->par[j], D->n_par[j]);
    for (int64_t e = 0; dt == BG_F16 && e < D->n_out; e++)
        D->dout[e] *= GA_F16_LOSS_SCALE;
    if (!k->spec.kind->out_f32)
        ga_round(dt, D->dout, D->n_out);
}

static void ga_data_copy(const ga_case_t *k, const ga_data_t *src, ga_data_t *dst)
{
    *dst = *src;
    for (int i = 0; i < k->spec.n_in; i++) {
        dst->in[i] = ga_malloc((size_t)src->n_in[i] * 4);
        memcpy(dst->in[i], src->in[i], (size_t)src->n_in[i] * 4);
    }
    for (int j = 0; j < src->np; j++) {
        dst->par[j] = ga_malloc((size_t)src->n_par[j] * 4);
        memcpy(dst->par[j], src->par[j], (size_t)src->n_par[j] * 4);
        dst->grad0[j] = ga_malloc((size_t)src->n_par[j] * 4);
        memcpy(dst->grad0[j], src->grad0[j], (size_t)src->n_par[j] * 4);
    }
    dst->dout = ga_malloc((size_t)src->n_out * 4);
    memcpy(dst->dout, src->dout, (size_t)src->n_out * 4);
}

static void ga_data_free(ga_data_t *D)
{
    for (int i = 0; i < BG_MAX_INPUTS; i++)
        free(D->in[i]);
    for (int j = 0; j < BG_MAX_PARAMS; j++)
        free(D->par[j]), free(D->grad0[j]);
    free(D->dout);
    memset(D, 0, sizeof(*D));
}

static void ga_result_free(ga_result_t *r)
{
    free(r->out);
    for (int i = 0; i < BG_MAX_INPUTS; i++)
        free(r->din[i]);
    for (int j = 0; j < BG_MAX_PARAMS; j++)
        free(r->grad[j]);
    memset(r, 0, sizeof(*r));
}

/* Device-side tensors of one run. */
typedef struct ga_dev {
    void *in[BG_MAX_INPUTS], *din[BG_MAX_INPUTS], *par[BG_MAX_PARAMS], *grad[BG_MAX_PARAMS];
    void *out, *dout, *saved, *ws;
    bg_tensor_t t_in[BG_MAX_INPUTS], t_din[BG_MAX_INPUTS], t_par[BG_MAX_PARAMS],
        t_grad[BG_MAX_PARAMS], t_out, t_dout, t_saved, t_ws;
} ga_dev_t;

static void ga_dev_free(bg_backend_t *be, ga_dev_t *V)
{
    for (int i = 0; i < BG_MAX_INPUTS; i++)
        bg_backend_free(be, V->in[i]), bg_backend_free(be, V->din[i]);
    for (int j = 0; j < BG_MAX_PARAMS; j++)
        bg_backend_free(be, V->par[j]), bg_backend_free(be, V->grad[j]);
    bg_backend_free(be, V->out);
    bg_backend_free(be, V->dout);
    bg_backend_free(be, V->saved);
    bg_backend_free(be, V->ws);
}

/* Upload the case's data to `be` in compute dtype `dt`; scratch poisoned. */
static void ga_dev_init(bg_backend_t *be, const ga_case_t *k, const ga_data_t *D, bg_dtype_t dt,
                        const bg_layer_cost_t *cost, ga_dev_t *V)
{
    bg_device_t dev = bg_backend_device(be);
    memset(V, 0, sizeof(*V));
    for (int i = 0; i < k->spec.n_in; i++) {
        bg_shape_t sh = k->spec.in[i];
        if (ga_is_float(k, i)) {
            sh.dtype = dt;
            V->in[i] = ga_upload(be, D->in[i], D->n_in[i], dt);
            CHECK_OK(bg_backend_alloc(be, (size_t)D->n_in[i] * bg_dtype_size(dt), &V->din[i]));
            V->t_din[i] = bg_tensor_from_shape(V->din[i], dev, &sh);
        } else {
            CHECK_OK(bg_backend_alloc(be, (size_t)D->n_in[i] * 4, &V->in[i]));
            if (V->in[i])
                CHECK_OK(bg_backend_copy(be, V->in[i], D->in[i], (size_t)D->n_in[i] * 4,
                                         BG_COPY_H2D, ga_stream(be)));
        }
        V->t_in[i] = bg_tensor_from_shape(V->in[i], dev, &sh);
    }
    bg_shape_t os = k->spec.out;
    os.dtype = k->spec.kind->out_f32 ? BG_F32 : dt;
    CHECK_OK(bg_backend_alloc(be, (size_t)D->n_out * bg_dtype_size(os.dtype), &V->out));
    V->dout = ga_upload(be, D->dout, D->n_out, os.dtype);
    V->t_out = bg_tensor_from_shape(V->out, dev, &os);
    V->t_dout = bg_tensor_from_shape(V->dout, dev, &os);
    for (int j = 0; j < D->np; j++) {
        bg_shape_t ps = D->pd[j].shape;
        ps.dtype = dt;
        V->par[j] = ga_upload(be, D->par[j], D->n_par[j], dt);
        V->t_par[j] = bg_tensor_from_shape(V->par[j], dev, &ps);
        ps.dtype = BG_F32;
        CHECK_OK(bg_backend_alloc(be, (size_t)D->n_par[j] * 4, &V->grad[j]));
        V->t_grad[j] = bg_tensor_from_shape(V->grad[j], dev, &ps);
    }
    int64_t ns = (cost->saved_bytes + 1) / 2, nw = (cost->workspace_bytes + 1) / 2;
    CHECK_OK(bg_backend_alloc(be, (size_t)ns * 2, &V->saved));
    CHECK_OK(bg_backend_alloc(be, (size_t)nw * 2, &V->ws));
    /* Scratch is bytes; a bf16 view of the right size carries them. */
    V->t_saved = bg_tensor_make(V->saved, BG_BF16, dev, 1, &ns);
    V->t_ws = bg_tensor_make(V->ws, BG_BF16, dev, 1, &nw);
    CHECK_OK(bg_backend_memset(be, V->saved, 0xff, (size_t)ns * 2, ga_stream(be))); /* NaN */
}

static bg_layer_call_t ga_call(bg_backend_t *be, const ga_case_t *k, const ga_data_t *D,
                               bg_dtype_t dt, const bg_layer_cost_t *cost, ga_dev_t *V)
{
    bg_layer_call_t c;
    memset(&c, 0, sizeof(c));
    c.spec = &k->spec;
    c.be = be;
    c.stream = ga_stream(be);
    c.dtype = dt;
    for (int i = 0; i < k->spec.n_in; i++) {
        c.in[i] = &V->t_in[i];
        c.din[i] = V->din[i] ? &V->t_din[i] : NULL;
    }
    c.out = &V->t_out;
    c.dout = &V->t_dout;
    c.saved = cost->saved_bytes ? &V->t_saved : NULL;
    c.workspace = cost->workspace_bytes ? &V->t_ws : NULL;
    for (int j = 0; j < D->np; j++) {
        c.params[j] = &V->t_par[j];
        c.grads[j] = &V->t_grad[j];
    }
    return c;
}

/*
 * F, then B (din poisoned, workspace NaN), then W (gradients start at
 * grad0) of one case on `be` in `dt`; results as f32 on the host.
 */
static bool ga_run(bg_backend_t *be, const ga_case_t *k, const ga_data_t *D, bg_dtype_t dt,
                   ga_result_t *R)
{
    bg_layer_cost_t cost;
    /* the CPU computes bf16/fp16 in f32 scratch (the self-test's stand-in) */
    bg_layer_cost(&k->spec, bg_layer_kernel_dtype(be, dt), &cost);
    ga_dev_t V;
    ga_dev_init(be, k, D, dt, &cost, &V);
    bg_layer_call_t c = ga_call(be, k, D, dt, &cost, &V);
    bg_dtype_t odt = V.t_out.dtype;
    bool ok = true;
    memset(R, 0, sizeof(*R));

    ga_poison_dev(be, V.out, D->n_out, odt);
    CHECK_OK(bg_backend_memset(be, V.ws, 0xff, bg_tensor_nbytes(&V.t_ws), ga_stream(be)));
    bg_status_t st = bg_layer_forward(&c);
    CHECK_MSG(st == BG_OK, "%s forward on %s/%s: %s", k->spec.name, bg_backend_name(be),
              bg_dtype_name(dt), bg_last_error());
    ok = ok && st == BG_OK;
    R->out = ga_malloc((size_t)D->n_out * 4);
    ga_download(be, V.out, D->n_out, odt, R->out);

    if (ok && k->spec.kind->backward_input) {
        for (int i = 0; i < k->spec.n_in; i++)
            if (V.din[i])
                ga_poison_dev(be, V.din[i], D->n_in[i], dt);
        CHECK_OK(bg_backend_memset(be, V.ws, 0xff, bg_tensor_nbytes(&V.t_ws), ga_stream(be)));
        st = bg_layer_backward_input(&c);
        CHECK_MSG(st == BG_OK, "%s backward-input on %s/%s: %s", k->spec.name, bg_backend_name(be),
                  bg_dtype_name(dt), bg_last_error());
        ok = ok && st == BG_OK;
        for (int i = 0; i < k->spec.n_in; i++) {
            if (!c.din[i])
                continue;
            R->din[i] = ga_malloc((size_t)D->n_in[i] * 4);
            ga_download(be, V.din[i], D->n_in[i], dt, R->din[i]);
        }
    }
    if (ok && k->spec.kind->backward_weight) {
        for (int j = 0; j < D->np; j++)
            CHECK_OK(bg_backend_copy(be, V.grad[j], D->grad0[j], (size_t)D->n_par[j] * 4,
                                     BG_COPY_H2D, ga_stream(be)));
        CHECK_OK(bg_backend_memset(be, V.ws, 0xff, bg_tensor_nbytes(&V.t_ws), ga_stream(be)));
        st = bg_layer_backward_weight(&c);
        CHECK_MSG(st == BG_OK, "%s backward-weight on %s/%s: %s", k->spec.name, bg_backend_name(be),
                  bg_dtype_name(dt), bg_last_error());
        ok = ok && st == BG_OK;
        for (int j = 0; j < D->np; j++) {
            R->grad[j] = ga_malloc((size_t)D->n_par[j] * 4);
            ga_download(be, V.grad[j], D->n_par[j], BG_F32, R->grad[j]);
        }
    }
    CHECK_OK(bg_stream_synchronize(be, ga_stream(be)));
    ga_dev_free(be, &V);
    return ok;
}

/* Tolerance of a kind in dt (see the file comment for why). */
static double ga_tol(const ga_case_t *k, bg_dtype_t dt)
{
    bool att = !strcmp(k->spec.kind->name, "attention");
    if (dt == BG_BF16)
        return att ? 3e-2 : 2e-2;
    if (dt == BG_F16)
        return att ? 1.5e-2 : 1e-2;
    return 1e-4;
}

static void ga_compare_all(const ga_case_t *k, const ga_data_t *D, const ga_result_t *got,
                           const ga_result_t *ref, bg_dtype_t dt)
{
    double tol = ga_tol(k, dt);
    const char *dn = bg_dtype_name(dt);
    ga_compare("forward", k->spec.name, dn, got->out, ref->out, NULL, D->n_out, tol);
    for (int i = 0; i < k->spec.n_in; i++) {
        if (!ref->din[i])
            continue;
        CHECK_MSG(got->din[i] != NULL, "%s: no input gradient %d on cuda", k->spec.name, i);
        if (got->din[i])
            ga_compare("backward-input", k->spec.name, dn, got->din[i], ref->din[i], NULL,
                       D->n_in[i], tol);
    }
    for (int j = 0; j < D->np; j++) {
        if (!ref->grad[j] || !got->grad[j])
            continue;
        char what[48];
        snprintf(what, sizeof(what), "grad %s", D->pd[j].suffix);
        ga_compare(what, k->spec.name, dn, got->grad[j], ref->grad[j], D->grad0[j], D->n_par[j],
                   tol);
    }
}

/* D in dt: CPU f32 reference vs CUDA f32, or the reference on the inputs
 * rounded to bf16/fp16 vs CUDA in that dtype. true if compared. */
static bool ga_check_dt(ga_case_t *k, const ga_data_t *D, bg_dtype_t dt)
{
    ga_data_t Dr;
    ga_result_t ref = {0}, got = {0};
    bool compared = false;
    ga_data_copy(k, D, &Dr);
    if (dt != BG_F32)
        ga_data_round(k, &Dr, dt);
    if (ga_run(g_cpu, k, &Dr, BG_F32, &ref) && ga_run(g_gpu, k, &Dr, dt, &got)) {
        ga_compare_all(k, &Dr, &got, &ref, dt);
        compared = true;
    }
    ga_result_free(&ref);
    ga_result_free(&got);
    ga_data_free(&Dr);
    return compared;
}

/* One case in every dtype of ga_dtypes. Bit i of the result: dtype
 * ga_dtypes[i] was compared. */
static unsigned ga_check_case(ga_case_t *k, uint64_t *s)
{
    ga_data_t D;
    unsigned compared = 0;
    if (!ga_data_init(k, &D, s))
        return 0;
    for (int i = 0; i < GA_NDT; i++)
        compared |= (unsigned)ga_check_dt(k, &D, ga_dtypes[i]) << i;
    ga_data_free(&D);
    return compared;
}

/* Same inputs twice on the GPU in dt: W (embedding's sort, bias column
 * sums) and the loss must come out with the same bits. */
static void ga_check_repeatable(ga_case_t *k, uint64_t *s, bg_dtype_t dt)
{
    ga_data_t D;
    if (!ga_data_init(k, &D, s))
        return;
    ga_result_t r1 = {0}, r2 = {0};
    if (ga_run(g_gpu, k, &D, dt, &r1) && ga_run(g_gpu, k, &D, dt, &r2)) {
        CHECK_MSG(!memcmp(r1.out, r2.out, (size_t)D.n_out * 4), "%s: %s forward not repeatable",
                  k->spec.name, bg_dtype_name(dt));
        for (int j = 0; j < D.np; j++)
            if (r1.grad[j] && r2.grad[j])
                CHECK_MSG(!memcmp(r1.grad[j], r2.grad[j], (size_t)D.n_par[j] * 4),
                          "%s: %s grad %s not bit-repeatable", k->spec.name, bg_dtype_name(dt),
                          D.pd[j].suffix);
    }
    ga_result_free(&r1);
    ga_result_free(&r2);
    ga_data_free(&D);
}

static void test_layers(void)
{
    int nk = 0;
    const bg_layer_kind_t *const *kinds = bg_layer_kinds(&nk);
    uint64_t s = 20240611;
    for (int i = 0; i < nk; i++) {
        ga_case_t cases[8];
        int n = ga_cases(kinds[i], &s, cases);
        CHECK_MSG(n > 0, "no agreement cases for kind %s", kinds[i]->name);
        int before = bg_test_failures;
        unsigned compared = 0;
        for (int j = 0; j < n; j++)
            compared |= ga_check_case(&cases[j], &s);
        /* the same data in each low dtype; s moves on as for one check */
        uint64_t s0 = s;
        for (int d = 1; d < GA_NDT; d++) {
            s = s0;
            ga_check_repeatable(&cases[0], &s, ga_dtypes[d]);
        }
        for (int d = 0; d < GA_NDT; d++)
            CHECK_MSG(compared & (1u << d), "kind %s: no case compared in %s", kinds[i]->name,
                      bg_dtype_name(ga_dtypes[d]));
        printf("%-14s %d cases, f32 + bf16 + fp16: %s\n", kinds[i]->name, n,
               bg_test_failures == before ? "agree" : "DISAGREE");
    }
}

/* Every kind at GPT-2 124M's sizes in bf16, the dtype it trains in (the
 * small cases above cover f32 and fp16 and the edges). */
static void test_gpt2_sizes(void)
{
    int nk = 0;
    const bg_layer_kind_t *const *kinds = bg_layer_kinds(&nk);
    uint64_t s = 124;
    for (int i = 0; i < nk; i++) {
        ga_case_t k;
        if (!ga_gpt2_case(kinds[i], &k)) {
            CHECK_MSG(false, "no GPT-2-size case for kind %s", kinds[i]->name);
            continue;
        }
        int before = bg_test_failures;
        ga_data_t D;
        bool init = ga_data_init(&k, &D, &s);
        bool compared = init && ga_check_dt(&k, &D, BG_BF16);
        if (init)
            ga_data_free(&D);
        CHECK_MSG(compared, "kind %s: the GPT-2-size case did not run", kinds[i]->name);
        printf("%-14s GPT-2 size, bf16: %s\n", kinds[i]->name,
               bg_test_failures == before ? "agree" : "DISAGREE");
    }
}

/* The harness against itself: CPU vs CPU (see g_selftest). */
static int ga_selftest(void)
{
    g_selftest = true;
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_cpu));
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_gpu));
    if (g_cpu && g_gpu)
        test_layers();
    if (g_cpu && g_gpu)
        test_gpt2_sizes(); /* ~15 s on 2 cores */
    bg_backend_destroy(g_gpu);
    bg_backend_destroy(g_cpu);
    return bg_test_finish("test_gpu_agree (harness self-test, CPU vs CPU)");
}

int main(void)
{
    if (getenv("BG_AGREE_SELFTEST"))
        return ga_selftest();
    if (!bg_backend_available(BG_DEV_CUDA))
        TEST_SKIP("no CUDA GPU for this build/machine (%s)",
                  bg_last_error()[0] ? bg_last_error() : "built without CUDA");
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_cpu));
    CHECK_OK(bg_backend_create(BG_DEV_CUDA, 0, &g_gpu));
    if (!g_cpu || !g_gpu)
        return bg_test_finish("test_gpu_agree");
    CHECK_OK(bg_stream_create(g_gpu, "test_gpu_agree", &g_stream));
    if (g_stream) {
        test_copies();
        test_events();
        test_errors();
        test_gemm();
        test_layers();
        test_gpt2_sizes();
    }
    bg_stream_destroy(g_gpu, g_stream);
    bg_backend_destroy(g_gpu);
    bg_backend_destroy(g_cpu);
    return bg_test_finish("test_gpu_agree");
}
