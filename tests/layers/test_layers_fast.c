/*
 * tests/layers/test_layers_fast.c -- the vectorisable CPU kernels:
 *   - cpu_math.h's exp within 2 ulp of double exp over [-87, 88];
 *   - gelu F and B (no libm tanh) within their stated bounds of GPT-2's
 *     gelu evaluated in double, over [-12, 12];
 *   - swiglu and rmsnorm against values computed by hand in double;
 *   - relu's select keeps its semantics (-0, NaN and negatives give +0);
 *   - rows and elements do not depend on their neighbours: a row computed
 *     alone equals the same row inside a batch, bit for bit (what lets a
 *     pipeline split micro-batches any way without changing results).
 * Must not need a GPU or any file.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/cpu_math.h"
#include "layers/layer.h"
#include "test_util.h"

static bg_backend_t *g_be;

/* One layer on host arrays: spec from `kind`, one input of `in` shape. */
typedef struct fl {
    bg_layer_spec_t s;
    bg_tensor_t tx, ty, tdy, tdx, tw, tgw, tsaved;
    float saved[64];
} fl_t;

static bool fl_init(fl_t *L, const char *kind, int ndim, const int64_t *d, float *x, float *y,
                    float *dy, float *dx, float *w, float *gw)
{
    memset(L, 0, sizeof(*L));
    L->s.kind = bg_layer_kind_find(kind);
    CHECK_MSG(L->s.kind, "kind %s is not registered", kind);
    if (!L->s.kind)
        return false;
    snprintf(L->s.name, sizeof(L->s.name), "fast.%s", kind);
    L->s.n_in = 1;
    L->s.in[0].dtype = BG_F32;
    L->s.in[0].ndim = ndim;
    for (int i = 0; i < ndim; i++)
        L->s.in[0].d[i] = d[i];
    bg_errbuf_t err;
    bg_status_t st = bg_layer_infer(&L->s, &err);
    CHECK_MSG(st == BG_OK, "%s: %s", kind, err.msg);
    if (st != BG_OK)
        return false;
    L->tx = bg_tensor_from_shape(x, BG_DEV_CPU, &L->s.in[0]);
    L->tdx = bg_tensor_from_shape(dx, BG_DEV_CPU, &L->s.in[0]);
    L->ty = bg_tensor_from_shape(y, BG_DEV_CPU, &L->s.out);
    L->tdy = bg_tensor_from_shape(dy, BG_DEV_CPU, &L->s.out);
    int64_t C = d[ndim - 1], ns = 64;
    L->tw = bg_tensor_make(w, BG_F32, BG_DEV_CPU, 1, &C);
    L->tgw = bg_tensor_make(gw, BG_F32, BG_DEV_CPU, 1, &C);
    L->tsaved = bg_tensor_make(L->saved, BG_F32, BG_DEV_CPU, 1, &ns);
    return true;
}

static bg_layer_call_t fl_call(fl_t *L)
{
    bg_layer_call_t c = {.spec = &L->s,
                         .be = g_be,
                         .dtype = BG_F32,
                         .in = {&L->tx},
                         .out = &L->ty,
                         .saved = &L->tsaved,
                         .dout = &L->tdy,
                         .din = {&L->tdx}};
    bg_param_desc_t pd[BG_MAX_PARAMS];
    int np = L->s.kind->params ? L->s.kind->params(&L->s, pd) : 0;
    for (int j = 0; j < np; j++) { /* layernorm's bias reuses the weight's values */
        c.params[j] = &L->tw;
        c.grads[j] = &L->tgw;
    }
    return c;
}

/* ---- exp ---- */

static void test_expf(void)
{
    double worst = 0.0;
    float wx = 0.0f;
    /* every 257th float of [-87, 88] by bit pattern: ~8 million points,
     * all exponents, both signs */
    for (uint32_t b = 0; b <= 0x42B00000u; b += 257) {
        for (int sign = 0; sign < 2; sign++) {
            uint32_t bits = b | (sign ? 0x80000000u : 0u);
            float x;
            memcpy(&x, &bits, 4);
            if (x < -87.0f || x > 88.0f)
                continue;
            double ref = exp((double)x);
            float rf = (float)ref;
            double ulp = (double)nextafterf(rf, INFINITY) - (double)rf;
            double e = fabs((double)bg_cpu_expf(x) - ref) / ulp;
            if (e > worst)
                worst = e, wx = x;
        }
    }
    printf("exp: max error %.3f ulp at %.9g\n", worst, wx);
    CHECK_MSG(worst <= 2.0, "exp: %.3f ulp at %.9g", worst, wx);
    CHECK(bg_cpu_expf(0.0f) == 1.0f);
    CHECK(isnan(bg_cpu_expf(NAN)));
    CHECK(bg_cpu_expf(-1000.0f) > 0.0f && bg_cpu_expf(-1000.0f) < 2e-38f);
    CHECK(isfinite(bg_cpu_expf(1000.0f)) && bg_cpu_expf(1000.0f) > 1e38f);
}

/* ---- gelu ---- */

#define GELU_N 4801 /* [-12, 12] in steps of 0.005 */

/* Stated bounds (layers/gelu.c): F 1.5e-7 (1 + |y|), B 2e-7 (1 + |y'|);
 * measured 9.5e-8 and 1.0e-7 over a 1e-5 grid. */
static void test_gelu_sweep(void)
{
    static float x[GELU_N], y[GELU_N], dy[GELU_N], dx[GELU_N];
    for (int i = 0; i < GELU_N; i++)
        x[i] = -12.0f + 0.005f * (float)i, dy[i] = 1.0f;
    int64_t d[1] = {GELU_N};
    fl_t L;
    if (!fl_init(&L, "gelu", 1, d, x, y, dy, dx, NULL, NULL))
        return;
    bg_layer_call_t c = fl_call(&L);
    CHECK_OK(bg_layer_forward(&c));
    CHECK_OK(bg_layer_backward_input(&c));
    double wf = 0.0, wb = 0.0;
    for (int i = 0; i < GELU_N; i++) {
        double v = x[i], k = 0.7978845608028654, a = 0.044715;
        double t = tanh(k * (v + a * v * v * v));
        double ref = 0.5 * v * (1.0 + t);
        double dref = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * a * v * v);
        wf = fmax(wf, fabs(y[i] - ref) / (1.0 + fabs(ref)));
        wb = fmax(wb, fabs(dx[i] - dref) / (1.0 + fabs(dref)));
    }
    printf("gelu: max error F %.3g, B %.3g (x (1 + |ref|))\n", wf, wb);
    CHECK_MSG(wf <= 1.5e-7, "gelu forward error %.3g", wf);
    CHECK_MSG(wb <= 2e-7, "gelu backward error %.3g", wb);
}

/* ---- swiglu ---- */

static void test_swiglu_values(void)
{
    /* 2 rows of (gate | up), H = 3 */
    float x[12] = {1.0f, -2.0f, 0.5f, 3.0f, -1.0f, 2.0f, -8.0f, 0.0f, 12.0f, 0.25f, 4.0f, -1.5f};
    float y[6], dy[6] = {1.0f, -0.5f, 2.0f, 0.75f, 1.5f, -1.0f}, dx[12];
    int64_t d[2] = {2, 6};
    fl_t L;
    if (!fl_init(&L, "swiglu", 2, d, x, y, dy, dx, NULL, NULL))
        return;
    CHECK(L.s.out.ndim == 2 && L.s.out.d[1] == 3);
    bg_layer_call_t c = fl_call(&L);
    CHECK_OK(bg_layer_forward(&c));
    CHECK_OK(bg_layer_backward_input(&c));
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 3; j++) {
            double a = x[r * 6 + j], b = x[r * 6 + 3 + j], g = dy[r * 3 + j];
            double s = 1.0 / (1.0 + exp(-a)), want = a * s * b;
            double da = g * b * s * (1.0 + a * (1.0 - s)), db = g * a * s;
            CHECK_MSG(fabs(y[r * 3 + j] - want) <= 3e-7 * (1.0 + fabs(want)),
                      "swiglu y[%d,%d] = %.9g, want %.9g", r, j, y[r * 3 + j], want);
            CHECK_MSG(fabs(dx[r * 6 + j] - da) <= 3e-7 * (1.0 + fabs(da)),
                      "swiglu da[%d,%d] = %.9g, want %.9g", r, j, dx[r * 6 + j], da);
            CHECK_MSG(fabs(dx[r * 6 + 3 + j] - db) <= 3e-7 * (1.0 + fabs(db)),
                      "swiglu db[%d,%d] = %.9g, want %.9g", r, j, dx[r * 6 + 3 + j], db);
        }
    /* an odd last dimension is refused with a reason */
    bg_layer_spec_t s = L.s;
    s.in[0].d[1] = 7;
    bg_errbuf_t err;
    CHECK(bg_layer_infer(&s, &err) == BG_ERR_INVALID && strstr(err.msg, "odd"));
}

/* ---- rmsnorm ---- */

static void test_rmsnorm_values(void)
{
    /* rows [1, 2, 4] (mean square 7) and [40, 20, 10] (700), weight w */
    float x[6] = {1, 2, 4, 40, 20, 10}, y[6], w[3] = {2.0f, -1.0f, 0.5f}, gw[3] = {0, 0, 0};
    float dy[6] = {1.0f, 0.5f, -1.0f, 0.25f, -2.0f, 1.0f}, dx[6];
    int64_t d[2] = {2, 3};
    fl_t L;
    if (!fl_init(&L, "rmsnorm", 2, d, x, y, dy, dx, w, gw))
        return;
    bg_layer_call_t c = fl_call(&L);
    CHECK_OK(bg_layer_forward(&c));
    CHECK_OK(bg_layer_backward_input(&c));
    CHECK_OK(bg_layer_backward_weight(&c));
    double rs[2] = {1.0 / sqrt(7.0 + 1e-5), 1.0 / sqrt(700.0 + 1e-5)}, gwant[3] = {0, 0, 0};
    for (int r = 0; r < 2; r++) {
        CHECK_MSG(fabs(L.saved[r] - rs[r]) <= 1e-7 * rs[r], "rmsnorm rstd[%d] = %.9g", r,
                  L.saved[r]);
        double sgx = 0.0;
        for (int j = 0; j < 3; j++)
            sgx += dy[r * 3 + j] * w[j] * x[r * 3 + j] * rs[r];
        for (int j = 0; j < 3; j++) {
            double xh = x[r * 3 + j] * rs[r], want = xh * w[j];
            double dwant = rs[r] * (dy[r * 3 + j] * w[j] - xh * sgx / 3.0);
            gwant[j] += dy[r * 3 + j] * xh;
            CHECK_MSG(fabs(y[r * 3 + j] - want) <= 3e-7, "rmsnorm y[%d,%d] = %.9g, want %.9g", r, j,
                      y[r * 3 + j], want);
            CHECK_MSG(fabs(dx[r * 3 + j] - dwant) <= 3e-7, "rmsnorm dx[%d,%d] = %.9g, want %.9g", r,
                      j, dx[r * 3 + j], dwant);
        }
    }
    for (int j = 0; j < 3; j++)
        CHECK_MSG(fabs(gw[j] - gwant[j]) <= 3e-7 * (1.0 + fabs(gwant[j])),
                  "rmsnorm dw[%d] = %.9g, want %.9g", j, gw[j], gwant[j]);
}

/* ---- relu semantics ---- */

static void test_relu_select(void)
{
    float x[6] = {-0.0f, 0.0f, -3.0f, 2.5f, NAN, 1e-40f}, y[6], dy[6] = {1, 2, 3, 4, 5, 6}, dx[6];
    int64_t d[1] = {6};
    fl_t L;
    if (!fl_init(&L, "relu", 1, d, x, y, dy, dx, NULL, NULL))
        return;
    bg_layer_call_t c = fl_call(&L);
    CHECK_OK(bg_layer_forward(&c));
    CHECK_OK(bg_layer_backward_input(&c));
    const float want[6] = {0.0f, 0.0f, 0.0f, 2.5f, 0.0f, 1e-40f};
    const float dwant[6] = {0, 0, 0, 4, 0, 6};
    for (int i = 0; i < 6; i++) {
        CHECK_MSG(!memcmp(&y[i], &want[i], 4), "relu(%g) = %g", x[i], y[i]);
        CHECK_MSG(!memcmp(&dx[i], &dwant[i], 4), "relu'(%g) dy = %g", x[i], dx[i]);
    }
}

/* ---- neighbour independence ---- */

/* Run F (+ B) of `kind` on x (rows, C) as one call and as `rows` one-row
 * calls; the results must be the same bits. */
static void check_row_split(const char *kind, int64_t rows, int64_t C, uint64_t *s)
{
    int64_t n = rows * C, d[2] = {rows, C}, d1[2] = {1, C};
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    float *dy = malloc(sizeof(float) * (size_t)n), *dx = malloc(sizeof(float) * (size_t)n);
    float *y1 = malloc(sizeof(float) * (size_t)n), *dx1 = malloc(sizeof(float) * (size_t)n);
    float w[64], gw[64] = {0};
    if (!x || !y || !dy || !dx || !y1 || !dx1)
        abort();
    bg_test_fill(x, n, s, -3.0f, 3.0f);
    bg_test_fill(dy, n, s, -1.0f, 1.0f);
    bg_test_fill(w, 64, s, 0.5f, 1.5f);
    fl_t L;
    if (fl_init(&L, kind, 2, d, x, y, dy, dx, w, gw)) {
        int64_t on = bg_shape_numel(&L.s.out) / rows, in = C;
        bg_layer_call_t c = fl_call(&L);
        CHECK_OK(bg_layer_forward(&c));
        CHECK_OK(bg_layer_backward_input(&c));
        for (int64_t r = 0; r < rows; r++) {
            fl_t R;
            if (!fl_init(&R, kind, 2, d1, x + r * in, y1 + r * on, dy + r * on, dx1 + r * in, w,
                         gw))
                break;
            bg_layer_call_t c1 = fl_call(&R);
            CHECK_OK(bg_layer_forward(&c1));
            CHECK_OK(bg_layer_backward_input(&c1));
        }
        CHECK_MSG(!memcmp(y, y1, sizeof(float) * (size_t)(on * rows)),
                  "%s: forward of a row depends on the other rows", kind);
        CHECK_MSG(!memcmp(dx, dx1, sizeof(float) * (size_t)n),
                  "%s: backward-input of a row depends on the other rows", kind);
    }
    free(x), free(y), free(dy), free(dx), free(y1), free(dx1);
}

static void test_row_split(void)
{
    uint64_t s = 0x5eed;
    static const char *const kinds[] = {"gelu", "relu", "swiglu", "layernorm", "rmsnorm"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        check_row_split(kinds[k], 5, 46, &s); /* 46: not a multiple of any vector width */
}

int main(void)
{
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_be));
    if (!g_be)
        return bg_test_finish("test_layers_fast");
    test_expf();
    test_gelu_sweep();
    test_swiglu_values();
    test_rmsnorm_values();
    test_relu_select();
    test_row_split();
    bg_backend_destroy(g_be);
    return bg_test_finish("test_layers_fast");
}
