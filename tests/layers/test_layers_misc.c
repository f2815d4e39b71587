/*
 * tests/layers/test_layers_misc.c -- the layer room's helpers and guards:
 * tensor/shape helpers, bf16 rounding, the counter-based rng, parameter
 * init, the arena, attributes, call validation (wrong shapes, bad token
 * ids), shared weights, known values of the GPT-2 gelu/layernorm, and the
 * backend GEMM against a naive triple loop (transposes, strides, batches).
 * Must not need a GPU or any file.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "layers/layer.h"
#include "test_util.h"

static bg_backend_t *g_be;

/* ---- tensors and shapes ---- */

static void test_shapes(void)
{
    bg_shape_t a = {BG_F32, 3, {4, 128, 768}}, b = a, c = a;
    char buf[64];
    CHECK(bg_shape_numel(&a) == 4 * 128 * 768);
    CHECK(!strcmp(bg_shape_str(&a, buf, sizeof(buf)), "f32[4, 128, 768]"));
    CHECK(bg_shape_eq(&a, &b));
    b.dtype = BG_BF16;
    CHECK(!bg_shape_eq(&a, &b)); /* dtype is part of the shape */
    c.d[2] = 767;
    CHECK(!bg_shape_eq(&a, &c));
    c = a;
    c.ndim = 2;
    CHECK(!bg_shape_eq(&a, &c));
    char tiny[6];
    bg_shape_str(&a, tiny, sizeof(tiny)); /* truncates, never overflows */
    CHECK(strlen(tiny) == 5);
    CHECK(bg_dtype_size(BG_F32) == 4 && bg_dtype_size(BG_BF16) == 2 && bg_dtype_size(BG_I32) == 4);
    CHECK(!strcmp(bg_dtype_name(BG_BF16), "bf16") && !strcmp(bg_dtype_name(BG_I32), "i32"));
    CHECK(!strcmp(bg_device_name(BG_DEV_CPU), "cpu") && !strcmp(bg_device_name(BG_DEV_CUDA), "cuda"));

    float data[2 * 3 * 5];
    int64_t dims[3] = {2, 3, 5};
    bg_tensor_t t = bg_tensor_make(data, BG_F32, BG_DEV_CPU, 3, dims);
    CHECK(t.stride[0] == 15 && t.stride[1] == 5 && t.stride[2] == 1);
    CHECK(bg_tensor_numel(&t) == 30 && bg_tensor_nbytes(&t) == 120);
    CHECK(bg_tensor_rows(&t) == 6 && bg_tensor_cols(&t) == 5);
    CHECK(bg_tensor_is_contiguous(&t));
    bg_shape_t s = bg_tensor_shape(&t);
    CHECK(s.ndim == 3 && s.d[1] == 3 && s.dtype == BG_F32);
    bg_tensor_t u = bg_tensor_from_shape(data, BG_DEV_CPU, &s);
    CHECK(u.stride[0] == 15 && u.data == data);
    t.stride[1] = 6; /* a padded view: rows of 6 */
    CHECK(!bg_tensor_is_contiguous(&t));
    int64_t one[3] = {2, 1, 5};
    bg_tensor_t v = bg_tensor_make(data, BG_F32, BG_DEV_CPU, 3, one);
    v.stride[1] = 99; /* a size-1 dimension's stride does not matter */
    CHECK(bg_tensor_is_contiguous(&v));
}

/* ---- bf16 ---- */

static uint16_t bf16_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return bg_f32_to_bf16(f);
}

static void test_bf16(void)
{
    CHECK(bf16_of_bits(0x3f800000u) == 0x3f80);            /* 1.0 exact */
    CHECK(bf16_of_bits(0x3f808000u) == 0x3f80);            /* halfway, even below: down */
    CHECK(bf16_of_bits(0x3f818000u) == 0x3f82);            /* halfway, odd below: up */
    CHECK(bf16_of_bits(0x3f808001u) == 0x3f81);            /* above halfway: up */
    CHECK(bf16_of_bits(0x3f807fffu) == 0x3f80);            /* below halfway: down */
    CHECK(bf16_of_bits(0xbf818000u) == 0xbf82);            /* sign is symmetric */
    CHECK(bf16_of_bits(0x7f800000u) == 0x7f80);            /* +inf stays inf */
    CHECK(bf16_of_bits(0x7f7fffffu) == 0x7f80);            /* FLT_MAX rounds to inf */
    CHECK(bf16_of_bits(0x00000001u) == 0x0000);            /* tiny subnormal to zero */
    CHECK(bf16_of_bits(0x80000000u) == 0x8000);            /* -0 keeps its sign */
    uint16_t n1 = bf16_of_bits(0x7fc00000u), n2 = bf16_of_bits(0x7f800001u); /* qNaN, sNaN */
    uint16_t n3 = bf16_of_bits(0xffffffffu);
    CHECK(isnan(bg_bf16_to_f32(n1)) && isnan(bg_bf16_to_f32(n2)) && isnan(bg_bf16_to_f32(n3)));
    CHECK((n2 & 0x7f) != 0); /* a NaN whose payload sits in the low bits stays NaN */
    CHECK(bg_bf16_to_f32(0x3f80) == 1.0f && bg_bf16_to_f32(0xc040) == -3.0f);
    /* Every non-NaN bf16 value converts to f32 and back exactly. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bg_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        bad += bg_f32_to_bf16(f) != h;
    }
    CHECK_MSG(bad == 0, "%d bf16 values do not round-trip", bad);
}

/* ---- rng ---- */

static void test_rng(void)
{
    bg_rng_key_t k1 = bg_rng_key(42, "block.0.fc.weight"), k2 = bg_rng_key(42, "block.0.fc.weight");
    bg_rng_key_t k3 = bg_rng_key(42, "block.1.fc.weight"), k4 = bg_rng_key(43, "block.0.fc.weight");
    int same_name = 0, diff_name = 0, diff_seed = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        float a = bg_rng_uniform(k1, i);
        same_name += a == bg_rng_uniform(k2, i);
        diff_name += a == bg_rng_uniform(k3, i);
        diff_seed += a == bg_rng_uniform(k4, i);
    }
    CHECK(same_name == 1000);
    CHECK_MSG(diff_name < 5 && diff_seed < 5, "streams collide: %d (name) %d (seed)", diff_name,
              diff_seed);
    /* Value i does not depend on what was drawn before (counter-based). */
    float late = bg_rng_normal(k1, 777);
    for (uint64_t i = 0; i < 100; i++) (void)bg_rng_normal(k1, i);
    CHECK(bg_rng_normal(k1, 777) == late);

    const int n = 100000;
    double m = 0, v = 0, um = 0;
    int out_of_range = 0;
    for (int i = 0; i < n; i++) {
        double x = bg_rng_normal(k1, (uint64_t)i);
        float u = bg_rng_uniform(k3, (uint64_t)i);
        out_of_range += !(u >= 0.0f && u < 1.0f) || !isfinite(x);
        m += x;
        v += x * x;
        um += u;
    }
    m /= n;
    v = v / n - m * m;
    um /= n;
    /* 5 standard errors: 1/sqrt(n) = 0.0032 for the mean, sqrt(2/n) = 0.0045
     * for the variance, sqrt(1/12n) = 0.0009 for the uniform mean. */
    CHECK_MSG(fabs(m) < 0.016, "normal mean %g", m);
    CHECK_MSG(fabs(v - 1.0) < 0.023, "normal variance %g", v);
    CHECK_MSG(fabs(um - 0.5) < 0.0046, "uniform mean %g", um);
    CHECK(out_of_range == 0);
    CHECK(bg_hash_str("a") != bg_hash_str("b") && bg_hash_str("abc") == bg_hash_str("abc"));
}

/* ---- parameter init ---- */

static void test_param_init(void)
{
    bg_param_desc_t p[4];
    int n = 0;
    int64_t d2[2] = {33, 17}, d1[1] = {7};
    bg_param_slot(p, &n, "weight", 2, d2, BG_INIT_NORMAL, 0.02f, false);
    bg_param_slot(p, &n, "bias", 1, d1, BG_INIT_ZEROS, 0.0f, false);
    bg_param_slot(p, &n, "scale", 1, d1, BG_INIT_ONES, 0.0f, false);
    bg_param_slot(p, &n, "u", 2, d2, BG_INIT_UNIFORM, 0.5f, false);
    CHECK(n == 4 && !strcmp(p[0].suffix, "weight") && p[0].shape.dtype == BG_F32);
    enum { N = 33 * 17 };
    float a[N], b[N], c[N];
    bg_param_init_host(&p[0], "m.fc.weight", 7, a);
    bg_param_init_host(&p[0], "m.fc.weight", 7, b);
    bg_param_init_host(&p[0], "m.fc2.weight", 7, c);
    CHECK(!memcmp(a, b, sizeof(a)));
    CHECK(memcmp(a, c, sizeof(a)) != 0);
    double s2 = 0;
    for (int i = 0; i < N; i++) s2 += (double)a[i] * a[i];
    CHECK_MSG(fabs(sqrt(s2 / N) - 0.02) < 0.003, "normal init std %g", sqrt(s2 / N));
    /* The init does not depend on the seed-independent parts of a process:
     * element i of a larger draw equals element i of this one. */
    bg_param_desc_t big = p[0];
    big.shape.d[0] = 40;
    float *bigv = malloc(sizeof(float) * 40 * 17);
    if (bigv) {
        bg_param_init_host(&big, "m.fc.weight", 7, bigv);
        CHECK(!memcmp(a, bigv, sizeof(a)));
        free(bigv);
    }
    float z[7], o[7];
    bg_param_init_host(&p[1], "m.fc.bias", 7, z);
    bg_param_init_host(&p[2], "m.ln.scale", 7, o);
    for (int i = 0; i < 7; i++) CHECK(z[i] == 0.0f && o[i] == 1.0f);
    bg_param_init_host(&p[3], "m.u", 7, a);
    float lo = 1, hi = -1;
    for (int i = 0; i < N; i++) lo = fminf(lo, a[i]), hi = fmaxf(hi, a[i]);
    CHECK_MSG(lo >= -0.5f && hi < 0.5f && lo < -0.45f && hi > 0.45f, "uniform init in [%g, %g]",
              lo, hi);
}

/* ---- arena ---- */

static void test_arena(void)
{
    bg_arena_t a;
    void *p1 = NULL, *p2 = NULL, *p3 = (void *)&a;
    CHECK_OK(bg_arena_init(&a, g_be, 1024));
    CHECK_OK(bg_arena_alloc(&a, 100, &p1));
    CHECK_OK(bg_arena_alloc(&a, 10, &p2));
    CHECK(p1 && p2 && (char *)p2 - (char *)p1 == 256); /* 256-byte aligned */
    CHECK(((uintptr_t)p2 & 255) == ((uintptr_t)p1 & 255));
    void *keep = p3;
    bg_status_t st = bg_arena_alloc(&a, 1024, &p3);
    CHECK(st == BG_ERR_NOMEM);
    CHECK(p3 == keep); /* output untouched on failure */
    CHECK_MSG(strstr(bg_last_error(), "arena full") && strstr(bg_last_error(), "1024"),
              "message: %s", bg_last_error());
    bg_shape_t s = {BG_F32, 2, {3, 5}};
    bg_tensor_t t;
    CHECK_OK(bg_arena_tensor(&a, &s, &t));
    CHECK(t.ndim == 2 && t.shape[1] == 5 && t.device == BG_DEV_CPU && t.data);
    size_t peak = a.peak;
    bg_arena_reset(&a);
    CHECK(a.used == 0 && a.peak == peak);
    CHECK_OK(bg_arena_alloc(&a, 1024, &p3)); /* the whole arena after a reset */
    CHECK(p3 == p1);
    CHECK(bg_arena_alloc(&a, 1, &p3) == BG_ERR_NOMEM);
    bg_arena_destroy(&a);
}

/* ---- attributes ---- */

static void test_attrs(void)
{
    bg_attrs_t a;
    memset(&a, 0, sizeof(a));
    CHECK_OK(bg_attrs_set_int(&a, "out", 768));
    CHECK_OK(bg_attrs_set_float(&a, "eps", 1e-5));
    CHECK_OK(bg_attrs_set_bool(&a, "bias", false));
    CHECK_OK(bg_attrs_set_ref(&a, "share", "wte.tokens"));
    CHECK(bg_attrs_int(&a, "out", 0) == 768);
    CHECK(bg_attrs_float(&a, "out", 0) == 768.0); /* ints read as floats */
    CHECK(bg_attrs_float(&a, "eps", 0) == 1e-5);
    CHECK(bg_attrs_int(&a, "eps", -1) == -1); /* floats do not read as ints */
    CHECK(bg_attrs_bool(&a, "bias", true) == false);
    CHECK(bg_attrs_bool(&a, "out", true) == true); /* ints are not bools */
    CHECK(!strcmp(bg_attrs_ref(&a, "share"), "wte.tokens"));
    CHECK(bg_attrs_ref(&a, "out") == NULL && bg_attrs_ref(&a, "missing") == NULL);
    CHECK(bg_attrs_int(&a, "missing", 5) == 5 && bg_attrs_find(&a, "missing") == NULL);
    CHECK_OK(bg_attrs_set_int(&a, "out", 3)); /* replace, not append */
    CHECK(a.n == 4 && bg_attrs_int(&a, "out", 0) == 3);
    CHECK(bg_attrs_set_int(&a, "a_key_that_is_much_too_long_for_the_slot", 1) == BG_ERR_INVALID);
    char long_ref[BG_NAME_MAX + 10];
    memset(long_ref, 'x', sizeof(long_ref) - 1);
    long_ref[sizeof(long_ref) - 1] = 0;
    CHECK(bg_attrs_set_ref(&a, "r", long_ref) == BG_ERR_INVALID);
    char key[16];
    for (int i = a.n; i < BG_MAX_ATTRS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK_OK(bg_attrs_set_int(&a, key, i));
    }
    CHECK(bg_attrs_set_int(&a, "one_more", 1) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "attributes") != NULL, "message: %s", bg_last_error());
}

/* ---- checked calls ---- */

static void spec_linear(bg_layer_spec_t *s, int64_t rows, int64_t in, int64_t out, bool bias)
{
    memset(s, 0, sizeof(*s));
    s->kind = bg_layer_kind_find("linear");
    snprintf(s->name, sizeof(s->name), "block.3.mlp.fc");
    s->n_in = 1;
    s->in[0] = (bg_shape_t){BG_F32, 2, {rows, in}};
    bg_attrs_set_int(&s->attrs, "out", out);
    bg_attrs_set_bool(&s->attrs, "bias", bias);
    bg_errbuf_t err;
    CHECK_OK(bg_layer_infer(s, &err));
}

static void test_call_checks(void)
{
    bg_layer_spec_t s;
    spec_linear(&s, 3, 4, 5, true);
    float x[12], w[20], b[5], y[20];
    uint64_t r = 5;
    bg_test_fill(x, 12, &r, -1, 1);
    bg_test_fill(w, 20, &r, -1, 1);
    bg_test_fill(b, 5, &r, -1, 1);
    int64_t dx[2] = {3, 4}, dw[2] = {5, 4}, db[1] = {5}, dy[2] = {3, 5}, bad[2] = {5, 3};
    bg_tensor_t tx = bg_tensor_make(x, BG_F32, BG_DEV_CPU, 2, dx);
    bg_tensor_t tw = bg_tensor_make(w, BG_F32, BG_DEV_CPU, 2, dw);
    bg_tensor_t tb = bg_tensor_make(b, BG_F32, BG_DEV_CPU, 1, db);
    bg_tensor_t ty = bg_tensor_make(y, BG_F32, BG_DEV_CPU, 2, dy);
    bg_tensor_t tbad = bg_tensor_make(y, BG_F32, BG_DEV_CPU, 2, bad);
    bg_layer_call_t c = {.spec = &s, .be = g_be, .dtype = BG_F32, .in = {&tx}, .out = &ty,
                         .params = {&tw, &tb}};
    CHECK_OK(bg_layer_forward(&c));
    /* y = x W^T + b by hand for one element. */
    float y12 = b[2];
    for (int k = 0; k < 4; k++) y12 += x[1 * 4 + k] * w[2 * 4 + k];
    CHECK_MSG(fabsf(y[1 * 5 + 2] - y12) < 1e-5f, "linear y[1,2] = %g, expected %g", y[7], y12);

    c.out = &tbad;
    CHECK(bg_layer_forward(&c) == BG_ERR_INVALID);
    const char *m = bg_last_error();
    CHECK_MSG(strstr(m, "block.3.mlp.fc") && strstr(m, "output") && strstr(m, "f32[5, 3]") &&
                  strstr(m, "f32[3, 5]"),
              "message: %s", m);
    c.out = &ty;
    c.params[1] = NULL;
    CHECK(bg_layer_forward(&c) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "parameter 1 missing"), "message: %s", bg_last_error());
    c.params[1] = &tb;
    bg_tensor_t tx_cuda = tx;
    tx_cuda.device = BG_DEV_CUDA;
    c.in[0] = &tx_cuda;
    CHECK(bg_layer_forward(&c) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "cuda"), "message: %s", bg_last_error());
    bg_tensor_t tx_strided = tx;
    tx_strided.stride[0] = 5;
    c.in[0] = &tx_strided;
    CHECK(bg_layer_forward(&c) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "not contiguous"), "message: %s", bg_last_error());
    c.in[0] = &tx;
    /* A gradient of the wrong shape is refused before anything is added. */
    float gw[20];
    bg_test_fill(gw, 20, &r, -1, 1);
    float gw0[20];
    memcpy(gw0, gw, sizeof(gw));
    bg_tensor_t tgw_bad = bg_tensor_make(gw, BG_F32, BG_DEV_CPU, 2, bad);
    c.dout = &ty;
    c.grads[0] = &tgw_bad;
    CHECK(bg_layer_backward_weight(&c) == BG_ERR_INVALID);
    CHECK(!memcmp(gw, gw0, sizeof(gw)));
}

/* Two linears on one weight tensor (tied head): W of both adds both shares. */
static void test_shared_weight(void)
{
    bg_layer_spec_t s1, s2;
    spec_linear(&s1, 3, 4, 5, false);
    spec_linear(&s2, 2, 4, 5, false);
    bg_attrs_set_ref(&s2.attrs, "share", "block.3.mlp.fc.weight");
    bg_param_desc_t p[BG_MAX_PARAMS];
    CHECK(s2.kind->params(&s2, p) == 1 && p[0].shared);
    bg_layer_cost_t cost;
    bg_layer_cost(&s2, BG_F32, &cost);
    CHECK(cost.params == 0); /* a shared slot is not this layer's parameter */
    float x1[12], x2[8], w[20], dy1[15], dy2[10], g[20], g1[20], gboth[20];
    uint64_t r = 11;
    bg_test_fill(x1, 12, &r, -1, 1);
    bg_test_fill(x2, 8, &r, -1, 1);
    bg_test_fill(w, 20, &r, -1, 1);
    bg_test_fill(dy1, 15, &r, -1, 1);
    bg_test_fill(dy2, 10, &r, -1, 1);
    bg_test_fill(g, 20, &r, -1, 1);
    memcpy(gboth, g, sizeof(g));
    int64_t d1[2] = {3, 4}, d2[2] = {2, 4}, dw[2] = {5, 4}, do1[2] = {3, 5}, do2[2] = {2, 5};
    bg_tensor_t tx1 = bg_tensor_make(x1, BG_F32, BG_DEV_CPU, 2, d1);
    bg_tensor_t tx2 = bg_tensor_make(x2, BG_F32, BG_DEV_CPU, 2, d2);
    bg_tensor_t tw = bg_tensor_make(w, BG_F32, BG_DEV_CPU, 2, dw);
    bg_tensor_t tdy1 = bg_tensor_make(dy1, BG_F32, BG_DEV_CPU, 2, do1);
    bg_tensor_t tdy2 = bg_tensor_make(dy2, BG_F32, BG_DEV_CPU, 2, do2);
    bg_tensor_t tg = bg_tensor_make(gboth, BG_F32, BG_DEV_CPU, 2, dw);
    bg_layer_call_t c1 = {.spec = &s1, .be = g_be, .dtype = BG_F32, .in = {&tx1},
                          .params = {&tw}, .grads = {&tg}, .dout = &tdy1};
    bg_layer_call_t c2 = {.spec = &s2, .be = g_be, .dtype = BG_F32, .in = {&tx2},
                          .params = {&tw}, .grads = {&tg}, .dout = &tdy2};
    CHECK_OK(bg_layer_backward_weight(&c1));
    memcpy(g1, gboth, sizeof(g1));
    CHECK_OK(bg_layer_backward_weight(&c2));
    /* Expected by hand: g + dy1^T x1 + dy2^T x2. */
    for (int o = 0; o < 5; o++)
        for (int i = 0; i < 4; i++) {
            double e = g[o * 4 + i];
            for (int t = 0; t < 3; t++) e += (double)dy1[t * 5 + o] * x1[t * 4 + i];
            double e1 = e;
            for (int t = 0; t < 2; t++) e += (double)dy2[t * 5 + o] * x2[t * 4 + i];
            CHECK_MSG(fabs(g1[o * 4 + i] - e1) < 1e-5 && fabs(gboth[o * 4 + i] - e) < 1e-5,
                      "shared weight grad [%d,%d]: %g/%g expected %g/%g", o, i, g1[o * 4 + i],
                      gboth[o * 4 + i], e1, e);
        }
}

static void embedding_call(bg_layer_spec_t *s, int32_t *ids, float *tok, float *pos, float *out,
                           float *gt, float *gp, bg_tensor_t t[6], bg_layer_call_t *c)
{
    int64_t di[2] = {2, 3}, dt[2] = {4, 2}, dp[2] = {3, 2}, dout[3] = {2, 3, 2};
    memset(s, 0, sizeof(*s));
    s->kind = bg_layer_kind_find("embedding");
    snprintf(s->name, sizeof(s->name), "wte");
    s->n_in = 1;
    s->in[0] = (bg_shape_t){BG_I32, 2, {2, 3}};
    bg_attrs_set_int(&s->attrs, "vocab", 4);
    bg_attrs_set_int(&s->attrs, "dim", 2);
    bg_attrs_set_int(&s->attrs, "positions", 3);
    bg_errbuf_t err;
    CHECK_OK(bg_layer_infer(s, &err));
    t[0] = bg_tensor_make(ids, BG_I32, BG_DEV_CPU, 2, di);
    t[1] = bg_tensor_make(tok, BG_F32, BG_DEV_CPU, 2, dt);
    t[2] = bg_tensor_make(pos, BG_F32, BG_DEV_CPU, 2, dp);
    t[3] = bg_tensor_make(out, BG_F32, BG_DEV_CPU, 3, dout);
    t[4] = bg_tensor_make(gt, BG_F32, BG_DEV_CPU, 2, dt);
    t[5] = bg_tensor_make(gp, BG_F32, BG_DEV_CPU, 2, dp);
    memset(c, 0, sizeof(*c));
    c->spec = s;
    c->be = g_be;
    c->dtype = BG_F32;
    c->in[0] = &t[0];
    c->params[0] = &t[1];
    c->params[1] = &t[2];
    c->out = &t[3];
    c->dout = &t[3];
    c->grads[0] = &t[4];
    c->grads[1] = &t[5];
}

/* Ids outside [0, vocab) fail with the layer and the id named, nothing written. */
static void test_embedding_ids(void)
{
    bg_layer_spec_t s;
    bg_tensor_t t[6];
    bg_layer_call_t c;
    int32_t ids[6] = {0, 3, 1, 3, 3, 2};
    float tok[8], pos[6], out[12], gt[8], gp[6];
    uint64_t r = 3;
    bg_test_fill(tok, 8, &r, -1, 1);
    bg_test_fill(pos, 6, &r, -1, 1);
    bg_test_fill(gt, 8, &r, -1, 1);
    bg_test_fill(gp, 6, &r, -1, 1);
    embedding_call(&s, ids, tok, pos, out, gt, gp, t, &c);
    bg_test_poison(out, 12);
    CHECK_OK(bg_layer_forward(&c));
    CHECK(out[1 * 2 + 1] == tok[3 * 2 + 1] + pos[1 * 2 + 1]); /* (b0, t1) is id 3 at t=1 */
    CHECK(out[5 * 2 + 0] == tok[2 * 2 + 0] + pos[2 * 2 + 0]); /* (b1, t2) is id 2 at t=2 */
    /* Token 3 appears at positions 1, 3, 4 and must be summed in that order:
     * ((0 + 1) + 1e8) - 1e8 = 0 in f32, whereas any other order gives 1. */
    float dy[12], gp0[6];
    int64_t dd[3] = {2, 3, 2};
    bg_test_fill(dy, 12, &r, -1, 1);
    dy[1 * 2] = 1.0f, dy[3 * 2] = 1e8f, dy[4 * 2] = -1e8f;
    bg_tensor_t tdy = bg_tensor_make(dy, BG_F32, BG_DEV_CPU, 3, dd);
    c.dout = &tdy;
    gt[6] = 0.0f;
    float gt7 = gt[7];
    memcpy(gp0, gp, sizeof(gp));
    CHECK_OK(bg_layer_backward_weight(&c));
    CHECK_MSG(gt[6] == 0.0f, "token 3 grad %g: not summed in position order", gt[6]);
    CHECK(gt[7] == ((gt7 + dy[1 * 2 + 1]) + dy[3 * 2 + 1]) + dy[4 * 2 + 1]);
    CHECK(gp[0] == (gp0[0] + dy[0]) + dy[3 * 2]); /* position 0: n = 0, then n = 3 */
    CHECK(gp[2 * 2 + 1] == (gp0[2 * 2 + 1] + dy[2 * 2 + 1]) + dy[5 * 2 + 1]);

    const int32_t bad_ids[2] = {4, -1};
    for (int b = 0; b < 2; b++) {
        char want[32];
        ids[4] = bad_ids[b];
        snprintf(want, sizeof(want), "id %d", bad_ids[b]);
        float out0[12], g0[8];
        memcpy(out0, out, sizeof(out));
        memcpy(g0, gt, sizeof(gt));
        CHECK(bg_layer_forward(&c) == BG_ERR_INVALID);
        CHECK_MSG(strstr(bg_last_error(), "wte") && strstr(bg_last_error(), want),
                  "message: %s", bg_last_error());
        CHECK(!memcmp(out0, out, sizeof(out)));
        CHECK(bg_layer_backward_weight(&c) == BG_ERR_INVALID);
        CHECK_MSG(strstr(bg_last_error(), want), "message: %s", bg_last_error());
        CHECK(!memcmp(g0, gt, sizeof(gt)));
    }
}

/* GPT-2 gelu (tanh form) and layernorm against values derived by hand in double. */
static void test_known_values(void)
{
    bg_layer_spec_t s;
    memset(&s, 0, sizeof(s));
    s.kind = bg_layer_kind_find("gelu");
    snprintf(s.name, sizeof(s.name), "g");
    s.n_in = 1;
    s.in[0] = (bg_shape_t){BG_F32, 1, {4}};
    bg_errbuf_t err;
    CHECK_OK(bg_layer_infer(&s, &err));
    float x[4] = {1.0f, -0.5f, 2.0f, -3.0f}, y[4];
    const double want[4] = {0.8411919906082768, -0.15428599017485606, 1.954597694087775,
                            -0.0036373920817729943};
    int64_t d[1] = {4};
    bg_tensor_t tx = bg_tensor_make(x, BG_F32, BG_DEV_CPU, 1, d);
    bg_tensor_t ty = bg_tensor_make(y, BG_F32, BG_DEV_CPU, 1, d);
    bg_layer_call_t c = {.spec = &s, .be = g_be, .dtype = BG_F32, .in = {&tx}, .out = &ty};
    CHECK_OK(bg_layer_forward(&c));
    for (int i = 0; i < 4; i++)
        CHECK_MSG(fabs(y[i] - want[i]) < 2e-7 * (1 + fabs(want[i])), "gelu(%g) = %.9g, want %.9g",
                  x[i], y[i], want[i]);

    /* layernorm rows [1, 2, 4] and [4, 2, 1] with eps 1e-5, weight 2, bias 0.5;
     * the saved scratch must be mean (2) | rstd (2), the layout CUDA shares. */
    memset(&s, 0, sizeof(s));
    s.kind = bg_layer_kind_find("layernorm");
    snprintf(s.name, sizeof(s.name), "ln");
    s.n_in = 1;
    s.in[0] = (bg_shape_t){BG_F32, 2, {2, 3}};
    CHECK_OK(bg_layer_infer(&s, &err));
    float lx[6] = {1, 2, 4, 40, 20, 10}, ly[6], w[3] = {2, 2, 2}, b[3] = {0.5f, 0.5f, 0.5f};
    float saved[4];
    const double xhat[3] = {-1.0690415314502977, -0.26726038286257453, 1.3363019143128718};
    int64_t d2[2] = {2, 3}, d3[1] = {3}, ds[1] = {4};
    bg_tensor_t tlx = bg_tensor_make(lx, BG_F32, BG_DEV_CPU, 2, d2);
    bg_tensor_t tly = bg_tensor_make(ly, BG_F32, BG_DEV_CPU, 2, d2);
    bg_tensor_t tw = bg_tensor_make(w, BG_F32, BG_DEV_CPU, 1, d3);
    bg_tensor_t tb = bg_tensor_make(b, BG_F32, BG_DEV_CPU, 1, d3);
    bg_tensor_t ts = bg_tensor_make(saved, BG_F32, BG_DEV_CPU, 1, ds);
    bg_layer_call_t lc = {.spec = &s, .be = g_be, .dtype = BG_F32, .in = {&tlx}, .out = &tly,
                          .saved = &ts, .params = {&tw, &tb}};
    CHECK_OK(bg_layer_forward(&lc));
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(fabs(ly[i] - (2 * xhat[i] + 0.5)) < 1e-6, "layernorm y[0,%d] = %.9g", i, ly[i]);
        /* row 2 is row 1 reversed and scaled by 10: eps hardly matters */
        CHECK_MSG(fabs(ly[5 - i] - (2 * xhat[i] + 0.5)) < 1e-5, "layernorm y[1,%d] = %.9g", 2 - i,
                  ly[5 - i]);
    }
    CHECK_MSG(fabs(saved[0] - 7.0 / 3.0) < 1e-6 && fabs(saved[1] - 70.0 / 3.0) < 1e-5 &&
                  fabs(saved[2] - 1.0 / sqrt(14.0 / 9.0 + 1e-5)) < 1e-6 &&
                  fabs(saved[3] - 1.0 / sqrt(1400.0 / 9.0 + 1e-5)) < 1e-7,
              "layernorm saved %g %g %g %g", saved[0], saved[1], saved[2], saved[3]);
}

/* ---- gemm ---- */

/* C = alpha op(A) op(B) + beta C in double, as the reference. */
static void naive_gemm(const bg_gemm_args_t *g, const float *a, const float *b, const float *c0,
                       double *out)
{
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->n; j++) {
            double s = 0;
            for (int64_t p = 0; p < g->k; p++) {
                double av = g->trans_a ? a[p * g->lda + i] : a[i * g->lda + p];
                double bv = g->trans_b ? b[j * g->ldb + p] : b[p * g->ldb + j];
                s += av * bv;
            }
            out[i * g->n + j] = g->alpha * s + (g->beta != 0.0f ? g->beta * c0[i * g->ldc + j] : 0);
        }
}

static void test_gemm(void)
{
    uint64_t r = 99;
    const int64_t sizes[] = {1, 3, 17, 64};
    int cases = 0;
    for (int t = 0; t < 4; t++)
        for (int si = 0; si < 12; si++) {
            bg_gemm_args_t g = {0};
            g.trans_a = t & 1;
            g.trans_b = t >> 1;
            g.m = sizes[(si + 0) % 4];
            g.n = sizes[(si / 4 + 1) % 4];
            g.k = sizes[(si * 7 + 2) % 4];
            g.alpha = si % 3 == 0 ? 1.0f : 0.75f;
            g.beta = si % 2 ? 0.0f : -0.5f;
            g.batch = si % 4 == 1 ? 3 : 0;
            int64_t ar = g.trans_a ? g.k : g.m, ac = g.trans_a ? g.m : g.k;
            int64_t br = g.trans_b ? g.n : g.k, bc = g.trans_b ? g.k : g.n;
            g.lda = ac + (si & 1);  /* padded rows some of the time */
            g.ldb = bc + (si & 2 ? 2 : 0);
            g.ldc = g.n + (si % 3 == 2);
            int64_t nb = g.batch > 1 ? g.batch : 1;
            g.sa = ar * g.lda + 5;
            g.sb = br * g.ldb + 1;
            g.sc = g.m * g.ldc + 3;
            float *a = malloc(sizeof(float) * g.sa * nb), *b = malloc(sizeof(float) * g.sb * nb);
            float *c = malloc(sizeof(float) * g.sc * nb), *c0 = malloc(sizeof(float) * g.sc * nb);
            double *ref = malloc(sizeof(double) * g.m * g.n);
            if (!a || !b || !c || !c0 || !ref) {
                CHECK(!"out of memory");
                free(a), free(b), free(c), free(c0), free(ref);
                return;
            }
            bg_test_fill(a, g.sa * nb, &r, -1, 1);
            bg_test_fill(b, g.sb * nb, &r, -1, 1);
            bg_test_fill(c, g.sc * nb, &r, -1, 1);
            memcpy(c0, c, sizeof(float) * g.sc * nb);
            g.a = a, g.b = b, g.c = c;
            g.ab = g.c_dtype = BG_F32;
            CHECK_OK(bg_gemm(g_be, NULL, &g));
            for (int64_t q = 0; q < nb; q++) {
                naive_gemm(&g, a + q * g.sa, b + q * g.sb, c0 + q * g.sc, ref);
                double worst = 0;
                for (int64_t i = 0; i < g.m; i++)
                    for (int64_t j = 0; j < g.n; j++) {
                        /* f32 accumulation over k terms of magnitude <= 1 */
                        double tol = 1e-6 * (double)(g.k + 2);
                        double e = fabs(c[q * g.sc + i * g.ldc + j] - ref[i * g.n + j]) / tol;
                        if (!(e <= worst)) worst = e;
                    }
                /* Padding between rows and batches is left alone. */
                int64_t touched_bad = 0;
                for (int64_t i = 0; i < g.m; i++)
                    for (int64_t j = g.n; j < g.ldc; j++)
                        touched_bad += c[q * g.sc + i * g.ldc + j] != c0[q * g.sc + i * g.ldc + j];
                CHECK_MSG(worst <= 1.0 && touched_bad == 0,
                          "gemm ta=%d tb=%d m=%lld n=%lld k=%lld batch %lld/%lld: err/tol %g, "
                          "%lld padding elements written",
                          g.trans_a, g.trans_b, (long long)g.m, (long long)g.n, (long long)g.k,
                          (long long)q, (long long)nb, worst, (long long)touched_bad);
            }
            cases++;
            free(a), free(b), free(c), free(c0), free(ref);
        }
    CHECK(cases == 48);
    bg_gemm_args_t neg = {.m = -1, .n = 1, .k = 1, .ab = BG_F32, .c_dtype = BG_F32};
    CHECK(bg_gemm(g_be, NULL, &neg) == BG_ERR_INVALID);
    bg_gemm_args_t bf = {.m = 1, .n = 1, .k = 1, .ab = BG_BF16, .c_dtype = BG_F32};
    CHECK(bg_gemm(g_be, NULL, &bf) == BG_ERR_UNSUPPORTED); /* the cpu is f32 only */
}

int main(void)
{
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_be));
    if (!g_be) return bg_test_finish("test_layers_misc");
    test_shapes();
    test_bf16();
    test_rng();
    test_param_init();
    test_arena();
    test_attrs();
    test_call_checks();
    test_shared_weight();
    test_embedding_ids();
    test_known_values();
    test_gemm();
    bg_backend_destroy(g_be);
    return bg_test_finish("test_layers_misc");
}
