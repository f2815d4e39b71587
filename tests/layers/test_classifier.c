/*
 * tests/layers/test_classifier.c -- the fused classifier against the pair
 * it replaces, and the graph rewrite that introduces it.
 *
 * Kind (CPU): for one logits tile and for several (rows past BG_CLS_ROWS,
 * V past BG_CLS_VOCAB), with and without bias, the fused F (loss), B (dx)
 * and W (dW, db) match linear + cross_entropy: loss within 1e-6 relative,
 * gradients within 1e-5 normwise relative (max |a - b| / max |b|). The
 * unfused pair computes the logits with one GEMM over all rows and V and
 * the fused kind tile by tile, and its online log-sum-exp rescales across
 * vocabulary tiles: f32 rounding differs by a few ulps, nothing more (one
 * tile measures 0 for the loss). Each row's argmax (row_argmax) is the
 * logits' argmax wherever the top two logits are apart by more than 1e-5.
 * Out-of-range targets are refused by F, B and W.
 * Graph: gpt-tiny (head tied to the embedding) and llama-tiny fuse with
 * layer ids, names, parameter names and counts unchanged, the loss layer a
 * classifier owning (or sharing) the head's slots and the head an identity;
 * a model whose logits feed something else, or are narrower than the
 * input (mlp-fashion), is left alone; the kept bytes fall.
 * Must not depend on anything but the CPU backend and the model files.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/classifier_impl.h"
#include "layers/graph.h"
#include "layers/layer.h"
#include "test_util.h"

static bg_backend_t *g_be;

static float *falloc(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* One problem: x (rows, C), W (V, C), b (V), targets (rows), dloss. */
typedef struct prob {
    int64_t rows, C, V;
    bool bias;
    float *x, *w, *b, dloss;
    int32_t *tg;
} prob_t;

static void prob_make(prob_t *p, int64_t rows, int64_t C, int64_t V, bool bias, uint64_t seed)
{
    uint64_t s = seed;
    *p = (prob_t){rows, C, V, bias, falloc(rows * C), falloc(V * C), falloc(V), 0.7f, NULL};
    p->tg = malloc(sizeof(int32_t) * (size_t)rows);
    bg_test_fill(p->x, rows * C, &s, -1.0f, 1.0f);
    bg_test_fill(p->w, V * C, &s, -0.5f, 0.5f);
    bg_test_fill(p->b, V, &s, -0.5f, 0.5f);
    for (int64_t r = 0; r < rows; r++)
        p->tg[r] = (int32_t)(bg_test_next(&s) % (uint64_t)V);
}

static void prob_free(prob_t *p)
{
    free(p->x), free(p->w), free(p->b), free(p->tg);
}

static void spec_of(bg_layer_spec_t *s, const char *kind, const prob_t *p, int64_t in_cols)
{
    memset(s, 0, sizeof(*s));
    s->kind = bg_layer_kind_find(kind);
    snprintf(s->name, sizeof(s->name), "head.%s", kind);
    s->n_in = strcmp(kind, "linear") ? 2 : 1;
    s->in[0] = (bg_shape_t){BG_F32, 2, {p->rows, in_cols}};
    s->in[1] = (bg_shape_t){BG_I32, 1, {p->rows}};
    if (strcmp(kind, "cross_entropy")) {
        CHECK_OK(bg_attrs_set_int(&s->attrs, "out", p->V));
        CHECK_OK(bg_attrs_set_bool(&s->attrs, "bias", p->bias));
    }
    bg_errbuf_t err = {{0}};
    CHECK_MSG(bg_layer_infer(s, &err) == BG_OK, "%s: %s", kind, err.msg);
}

/* Results of one side: loss, dx, dW, db (grads accumulate from zero). */
typedef struct res {
    float loss, *dx, *dw, *db;
    int32_t *argmax; /* fused side only */
    float *logits;   /* unfused side only */
} res_t;

static void res_alloc(res_t *r, const prob_t *p)
{
    memset(r, 0, sizeof(*r));
    r->dx = falloc(p->rows * p->C);
    r->dw = falloc(p->V * p->C);
    r->db = falloc(p->V);
}

static void res_free(res_t *r)
{
    free(r->dx), free(r->dw), free(r->db), free(r->argmax), free(r->logits);
}

/* Scratch tensor of `bytes` (u8 as i32 words, as the engine hands them). */
static bg_tensor_t scratch(int64_t bytes, void **mem)
{
    int64_t n = (bytes + 3) / 4;
    *mem = calloc((size_t)(n > 0 ? n : 1), 4);
    return bg_tensor_make(*mem, BG_I32, BG_DEV_CPU, 1, &n);
}

/* Tensors over a problem and a result, shared by both sides. */
typedef struct views {
    bg_tensor_t x, w, b, tg, loss, dloss, dx, dw, db;
} views_t;

static views_t views_of(const prob_t *p, res_t *r, float *loss, float *dloss)
{
    int64_t dx[2] = {p->rows, p->C}, dw[2] = {p->V, p->C}, db[1] = {p->V};
    int64_t dt[1] = {p->rows}, one[1] = {1};
    views_t v = {
        .x = bg_tensor_make(p->x, BG_F32, BG_DEV_CPU, 2, dx),
        .w = bg_tensor_make(p->w, BG_F32, BG_DEV_CPU, 2, dw),
        .b = bg_tensor_make(p->b, BG_F32, BG_DEV_CPU, 1, db),
        .tg = bg_tensor_make(p->tg, BG_I32, BG_DEV_CPU, 1, dt),
        .loss = bg_tensor_make(loss, BG_F32, BG_DEV_CPU, 1, one),
        .dloss = bg_tensor_make(dloss, BG_F32, BG_DEV_CPU, 1, one),
        .dx = bg_tensor_make(r->dx, BG_F32, BG_DEV_CPU, 2, dx),
        .dw = bg_tensor_make(r->dw, BG_F32, BG_DEV_CPU, 2, dw),
        .db = bg_tensor_make(r->db, BG_F32, BG_DEV_CPU, 1, db),
    };
    return v;
}

/* A call of s on the CPU in f32, nothing wired yet. */
static bg_layer_call_t call_of(const bg_layer_spec_t *s)
{
    bg_layer_call_t c = {.spec = s, .be = g_be, .dtype = BG_F32};
    return c;
}

/* linear + cross_entropy, F then B then W of both. */
static void run_unfused(const prob_t *p, res_t *r)
{
    bg_layer_spec_t sl, sc;
    spec_of(&sl, "linear", p, p->C);
    spec_of(&sc, "cross_entropy", p, p->V);
    int64_t dz[2] = {p->rows, p->V};
    float loss = 0.0f, dl = p->dloss, *dlog = falloc(p->rows * p->V);
    r->logits = falloc(p->rows * p->V);
    views_t v = views_of(p, r, &loss, &dl);
    bg_tensor_t tz = bg_tensor_make(r->logits, BG_F32, BG_DEV_CPU, 2, dz);
    bg_tensor_t tdz = bg_tensor_make(dlog, BG_F32, BG_DEV_CPU, 2, dz);
    bg_layer_cost_t cc;
    bg_layer_cost(&sc, BG_F32, &cc);
    void *sv;
    bg_tensor_t tsv = scratch(cc.saved_bytes, &sv);
    bg_layer_call_t lin = call_of(&sl), ce = call_of(&sc);
    lin.in[0] = &v.x, lin.out = &tz, lin.params[0] = &v.w, lin.params[1] = p->bias ? &v.b : NULL;
    ce.in[0] = &tz, ce.in[1] = &v.tg, ce.out = &v.loss, ce.saved = &tsv, ce.dout = &v.dloss;
    ce.din[0] = &tdz;
    CHECK_OK(bg_layer_forward(&lin));
    CHECK_OK(bg_layer_forward(&ce));
    CHECK_OK(bg_layer_backward_input(&ce));
    lin.dout = &tdz, lin.din[0] = &v.dx, lin.grads[0] = &v.dw;
    lin.grads[1] = p->bias ? &v.db : NULL;
    CHECK_OK(bg_layer_backward_input(&lin));
    CHECK_OK(bg_layer_backward_weight(&lin));
    r->loss = loss;
    free(dlog), free(sv);
}

/* The classifier, F then B then W; the three statuses in st. */
static void run_fused(const prob_t *p, res_t *r, bg_status_t st[3])
{
    bg_layer_spec_t s;
    spec_of(&s, "classifier", p, p->C);
    float loss = 0.0f, dl = p->dloss;
    views_t v = views_of(p, r, &loss, &dl);
    bg_layer_cost_t cc;
    bg_layer_cost(&s, BG_F32, &cc);
    void *sv, *ws;
    bg_tensor_t tsv = scratch(cc.saved_bytes, &sv), tws = scratch(cc.workspace_bytes, &ws);
    bg_layer_call_t c = call_of(&s);
    c.in[0] = &v.x, c.in[1] = &v.tg, c.out = &v.loss, c.saved = &tsv, c.workspace = &tws;
    c.params[0] = &v.w, c.params[1] = p->bias ? &v.b : NULL, c.dout = &v.dloss;
    c.din[0] = &v.dx, c.grads[0] = &v.dw, c.grads[1] = p->bias ? &v.db : NULL;
    st[0] = bg_layer_forward(&c);
    st[1] = bg_layer_backward_input(&c);
    st[2] = bg_layer_backward_weight(&c);
    r->loss = loss;
    free(r->argmax);
    r->argmax = malloc(sizeof(int32_t) * (size_t)p->rows);
    if (st[0] == BG_OK)
        CHECK_OK(s.kind->row_argmax(&c, r->argmax));
    free(sv), free(ws);
}

/* max |a - b| / max |b| over n. */
static double normwise(const float *a, const float *b, int64_t n)
{
    double d = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0.0 ? d / m : d;
}

/* Rows whose argmax disagrees although their top two logits are apart. */
static int64_t argmax_misses(const prob_t *p, const res_t *u, const res_t *f)
{
    int64_t bad = 0;
    for (int64_t r = 0; r < p->rows; r++) {
        const float *z = u->logits + r * p->V;
        int64_t best = 0;
        for (int64_t v = 1; v < p->V; v++)
            best = z[v] > z[best] ? v : best;
        float second = -INFINITY;
        for (int64_t v = 0; v < p->V; v++)
            if (v != best && z[v] > second)
                second = z[v];
        bad += f->argmax[r] != best && z[best] - second > 1e-5f;
    }
    return bad;
}

static void check_against_pair(int64_t rows, int64_t C, int64_t V, bool bias)
{
    prob_t p;
    prob_make(&p, rows, C, V, bias, 0x5eed ^ (uint64_t)(rows * 31 + V));
    res_t u, f;
    res_alloc(&u, &p);
    res_alloc(&f, &p);
    run_unfused(&p, &u);
    bg_status_t st[3];
    run_fused(&p, &f, st);
    CHECK_OK(st[0]);
    CHECK_OK(st[1]);
    CHECK_OK(st[2]);
    double el = fabs((double)f.loss - (double)u.loss) / fabs((double)u.loss);
    double ex = normwise(f.dx, u.dx, rows * C), ew = normwise(f.dw, u.dw, V * C);
    double eb = bias ? normwise(f.db, u.db, V) : 0.0;
    int64_t miss = argmax_misses(&p, &u, &f);
    printf("rows %5lld C %2lld V %5lld bias %d: loss %.3g, dx %.3g, dW %.3g, db %.3g (relative); "
           "argmax misses %lld\n",
           (long long)rows, (long long)C, (long long)V, bias, el, ex, ew, eb, (long long)miss);
    CHECK_MSG(el <= 1e-6, "loss %g vs %g", f.loss, u.loss);
    CHECK_MSG(ex <= 1e-5 && ew <= 1e-5 && eb <= 1e-5, "gradients beyond 1e-5");
    CHECK(miss == 0);
    /* A target out of range: F, B and W refuse it, naming the kind. */
    p.tg[rows - 1] = (int32_t)V;
    run_fused(&p, &f, st);
    CHECK(st[0] == BG_ERR_INVALID && st[1] == BG_ERR_INVALID && st[2] == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "classifier") && strstr(bg_last_error(), "outside"),
              "message: %s", bg_last_error());
    res_free(&u);
    res_free(&f);
    prob_free(&p);
}

/* ---- the graph rewrite ---- */

static const char *src_dir(void)
{
    const char *s = getenv("BRIGADE_SOURCE_DIR");
    return s ? s : ".";
}

static bg_graph_t *parse_model(const char *model, int64_t batch)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/%s", src_dir(), model);
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(path, batch, &g));
    return g;
}

static const char *kind_of(const bg_graph_t *g, const char *layer)
{
    int id = bg_graph_find_layer(g, layer);
    return id >= 0 ? bg_graph_layer(g, id)->spec.kind->name : "(none)";
}

/* Fuse `model`; head `head`, tied to `tied` (NULL: owns its weight). */
static void check_fused_model(const char *model, const char *head, const char *tied)
{
    bg_graph_t *a = parse_model(model, 2), *g = parse_model(model, 2);
    if (!a || !g)
        goto out;
    bg_graph_fusion_t f;
    CHECK_OK(bg_graph_fuse_classifier(g, BG_F32, &f));
    int loss = bg_graph_loss_layer(g);
    CHECK(f.n == 1 && f.head == bg_graph_find_layer(g, head) && f.loss == loss);
    CHECK(f.kept_after < f.kept_before);
    CHECK(bg_graph_totals(g)->kept_bytes < bg_graph_totals(a)->kept_bytes);
    CHECK(bg_graph_n_layers(g) == bg_graph_n_layers(a) &&
          bg_graph_n_params(g) == bg_graph_n_params(a));
    CHECK(bg_graph_totals(g)->params == bg_graph_totals(a)->params);
    for (int l = 0; l < bg_graph_n_layers(g); l++)
        CHECK(!strcmp(bg_graph_layer(g, l)->spec.name, bg_graph_layer(a, l)->spec.name));
    for (int p = 0; p < bg_graph_n_params(g); p++)
        CHECK(!strcmp(bg_graph_param(g, p)->name, bg_graph_param(a, p)->name));
    CHECK(!strcmp(kind_of(g, head), "identity") && !strcmp(kind_of(a, head), "linear"));
    CHECK(!strcmp(bg_graph_layer(g, loss)->spec.kind->name, "classifier"));
    CHECK(bg_graph_layer(g, bg_graph_find_layer(g, head))->n_params == 0);
    char wname[BG_NAME_MAX];
    snprintf(wname, sizeof(wname), "%s.weight", head);
    int w = bg_graph_find_param(g, tied ? tied : wname);
    CHECK(w >= 0 && bg_graph_layer(g, loss)->param[0] == w);
    if (w >= 0 && tied) /* the embedding keeps it; the classifier shares it */
        CHECK(bg_graph_param(g, w)->n_users == 1 && bg_graph_param(g, w)->users[0] == loss);
    if (w >= 0 && !tied)
        CHECK(bg_graph_param(g, w)->owner == loss && bg_graph_param(g, w)->slot == 0);
    printf("%s: %s + %s fused, kept %lld -> %lld bytes\n", model, head,
           bg_graph_layer(g, loss)->spec.name, (long long)f.kept_before, (long long)f.kept_after);
out:
    bg_graph_free(a);
    bg_graph_free(g);
}

static void check_not_fused(const char *text, const char *why)
{
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_string(text, strlen(text), why, 2, &g));
    if (!g)
        return;
    bg_graph_fusion_t f;
    CHECK_OK(bg_graph_fuse_classifier(g, BG_F32, &f));
    CHECK_MSG(f.n == 0, "%s: fused", why);
    CHECK(!strcmp(bg_graph_layer(g, bg_graph_loss_layer(g))->spec.kind->name, "cross_entropy"));
    bg_graph_free(g);
}

static void test_graph_rewrite(void)
{
    check_fused_model("gpt-tiny.graph", "head", "embed.tokens");
    check_fused_model("llama-tiny.graph", "output", NULL);
    bg_graph_t *g = parse_model("mlp-fashion.graph", 2); /* 10 classes from 128 */
    if (g) {
        bg_graph_fusion_t f;
        CHECK_OK(bg_graph_fuse_classifier(g, BG_F32, &f));
        CHECK(f.n == 0);
        bg_graph_free(g);
    }
    check_not_fused("input x : f32[B, 4]\ninput y : i32[B]\n"
                    "z = linear(x, out=9) as head\nh = relu(z)\nz = add(z, h)\n"
                    "loss = cross_entropy(z, y)\n",
                    "logits read elsewhere");
}

int main(void)
{
    CHECK_OK(bg_backend_create(BG_DEV_CPU, 0, &g_be));
    if (!g_be)
        return bg_test_finish("test_classifier");
    check_against_pair(37, 16, 300, true); /* one tile */
    check_against_pair(37, 16, 300, false);
    check_against_pair(BG_CLS_ROWS + 77, 8, BG_CLS_VOCAB + 104, true); /* 2 x 2 tiles */
    check_against_pair(BG_CLS_ROWS + 77, 8, BG_CLS_VOCAB + 104, false);
    test_graph_rewrite();
    bg_backend_destroy(g_be);
    return bg_test_finish("test_classifier");
}
