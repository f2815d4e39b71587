/*
 * tests/graph/test_graph.c -- the graph language through the library:
 * example models (GPT-2 small's published parameter count), naming of
 * layers and parameters, rebinding and repeat scoping, skip connections,
 * sharing, expressions and B, limits, message format and "did you mean".
 * Must not depend on the `brigade` binary (cli_test.sh covers that).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/graph.h"
#include "test_util.h"

static const char *src_dir(void)
{
    const char *s = getenv("BRIGADE_SOURCE_DIR");
    return s ? s : ".";
}

static bg_graph_t *parse(const char *text, int64_t batch)
{
    bg_graph_t *g = NULL;
    bg_status_t st = bg_graph_parse_string(text, strlen(text), "t.graph", batch, &g);
    if (st != BG_OK) {
        fprintf(stderr, "unexpected parse failure: %s\n", bg_last_error());
        bg_test_failures++;
        return NULL;
    }
    return g;
}

/* Parse must fail with BG_ERR_INVALID and a message containing `want`. */
static void expect_error(const char *text, const char *want)
{
    bg_graph_t *g = (bg_graph_t *)(uintptr_t)0x1; /* must stay untouched */
    bg_status_t st = bg_graph_parse_string(text, strlen(text), "t.graph", 1, &g);
    CHECK_MSG(st == BG_ERR_INVALID, "expected an error containing \"%s\", got %s", want,
              bg_status_str(st));
    CHECK(g == (bg_graph_t *)(uintptr_t)0x1);
    CHECK_MSG(strstr(bg_last_error(), want), "message\n%s\ndoes not contain \"%s\"", bg_last_error(),
              want);
}

static const char *layer_name(const bg_graph_t *g, int i)
{
    const bg_graph_layer_t *L = bg_graph_layer(g, i);
    return L ? L->spec.name : "(none)";
}

#define HEAD "input x : f32[B, 8]\ninput y : i32[B]\n"
#define TAIL "logits = linear(h, out=3)\nloss = cross_entropy(logits, y)\n"

static void test_models(void)
{
    static const char *const models[] = {"mlp-fashion", "gpt-tiny", "gpt2-124m", "gpt3-175b",
                                         "skip-mlp"};
    char path[1024];
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        snprintf(path, sizeof(path), "%s/models/%s.graph", src_dir(), models[i]);
        bg_graph_t *g = NULL;
        CHECK_OK(bg_graph_parse_file(path, 4, &g));
        if (!g) continue;
        CHECK(!strcmp(bg_graph_model_name(g), models[i]));
        CHECK(bg_graph_loss_layer(g) == bg_graph_n_layers(g) - 1);
        bg_graph_free(g);
    }
}

static void test_gpt2_count(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/gpt2-124m.graph", src_dir());
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(path, 1, &g));
    if (!g) return;
    /* GPT-2 small's published count with the head tied to wte. */
    CHECK_MSG(bg_graph_totals(g)->params == 124439808, "got %lld",
              (long long)bg_graph_totals(g)->params);
    int64_t sum = 0;
    for (int p = 0; p < bg_graph_n_params(g); p++) sum += bg_graph_param(g, p)->numel;
    CHECK(sum == 124439808);
    int tok = bg_graph_find_param(g, "wte.tokens");
    CHECK(tok >= 0);
    CHECK(bg_graph_find_param(g, "lm_head.weight") == -1);
    CHECK(bg_graph_find_param(g, "h.11.attn.qkv.weight") >= 0);
    CHECK(bg_graph_find_param(g, "h.0.fc.bias") >= 0);
    int head = bg_graph_find_layer(g, "lm_head");
    CHECK(head >= 0);
    const bg_graph_param_t *P = bg_graph_param(g, tok);
    if (P && head >= 0) {
        CHECK(P->n_users == 1 && P->users[0] == head);
        CHECK(bg_graph_layer(g, head)->param[0] == tok);
        CHECK(P->desc.shape.d[0] == 50257 && P->desc.shape.d[1] == 768);
    }
    bg_graph_free(g);
}

static void test_mlp_shapes(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/mlp-fashion.graph", src_dir());
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(path, 32, &g));
    if (!g) return;
    CHECK(bg_graph_n_layers(g) == 8);
    CHECK(bg_graph_n_inputs(g) == 2);
    const bg_graph_input_t *x = bg_graph_input(g, 0);
    CHECK(x && x->shape.ndim == 2 && x->shape.d[0] == 32 && x->shape.d[1] == 784);
    int fc1 = bg_graph_find_layer(g, "fc1");
    CHECK(fc1 == 0);
    const bg_graph_layer_t *L = bg_graph_layer(g, fc1);
    CHECK(L && L->spec.out.d[0] == 32 && L->spec.out.d[1] == 512);
    int w = bg_graph_find_param(g, "fc1.weight");
    CHECK(w >= 0 && bg_graph_param(g, w)->desc.shape.d[0] == 512 &&
          bg_graph_param(g, w)->desc.shape.d[1] == 784);
    int64_t want = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;
    CHECK(bg_graph_totals(g)->params == want);
    /* Forward FLOPs of the linears dominate: 2*B*in*out each plus bias adds. */
    double f = 0;
    for (int l = 0; l < bg_graph_n_layers(g); l++) f += bg_graph_layer(g, l)->cost.fwd_flops;
    CHECK(f == bg_graph_totals(g)->fwd_flops && f > 2.0 * 32 * 784 * 512);
    CHECK(!strcmp(layer_name(g, 1), "relu") && !strcmp(layer_name(g, 3), "relu_1") &&
          !strcmp(layer_name(g, 5), "relu_2"));
    bg_graph_free(g);
}

static void test_naming(void)
{
    bg_graph_t *g = parse(HEAD "h = relu(x)\n"
                               "h = relu(h) as relu_1\n" /* takes the next auto name */
                               "h = relu(h)\n"
                               "repeat 2 {\n  h = linear(h, out=8)\n  h = linear(h, out=8)\n}\n"
                               "repeat 1 as blk {\n  repeat 2 as inner {\n    h = relu(h) as act\n  }\n}\n"
                               "repeat 1 {\n  h = relu(h)\n}\n" TAIL,
                          1);
    if (!g) return;
    static const char *const want[] = {"relu",
                                       "relu_1",
                                       "relu_2",
                                       "repeat_0.0.linear",
                                       "repeat_0.0.linear_1",
                                       "repeat_0.1.linear",
                                       "repeat_0.1.linear_1",
                                       "blk.0.inner.0.act",
                                       "blk.0.inner.1.act",
                                       "repeat_1.0.relu",
                                       "linear",
                                       "cross_entropy"};
    CHECK(bg_graph_n_layers(g) == (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 0; i < bg_graph_n_layers(g) && i < (int)(sizeof(want) / sizeof(want[0])); i++)
        CHECK_MSG(!strcmp(layer_name(g, i), want[i]), "layer %d is '%s', want '%s'", i,
                  layer_name(g, i), want[i]);
    CHECK(bg_graph_find_param(g, "repeat_0.1.linear_1.weight") >= 0);
    CHECK(bg_graph_find_param(g, "linear.bias") >= 0);
    bg_graph_free(g);
}

static void test_rebinding_and_repeat(void)
{
    /* z is first bound inside the repeat and used after it. */
    bg_graph_t *g = parse(HEAD "h = relu(x)\n"
                               "repeat 3 as r {\n  h = linear(h, out=8)\n  z = relu(h)\n  h = add(h, z)\n}\n"
                               "h = add(h, z)\n" TAIL,
                          2);
    if (!g) return;
    CHECK(bg_graph_n_layers(g) == 1 + 9 + 1 + 2);
    for (int i = 0; i < 3; i++) {
        char n[64];
        snprintf(n, sizeof(n), "r.%d.linear", i);
        int l = bg_graph_find_layer(g, n);
        CHECK(l == 1 + 3 * i);
        if (l < 0) continue;
        /* Iteration i reads the h that iteration i-1 bound (or the relu before). */
        const bg_graph_tensor_t *in = bg_graph_tensor(g, bg_graph_layer(g, l)->in[0]);
        CHECK(in->producer == l - 1);
        CHECK(!strcmp(in->var, "h"));
    }
    int last = bg_graph_find_layer(g, "add");
    CHECK(last == 10);
    if (last >= 0) {
        const bg_graph_layer_t *L = bg_graph_layer(g, last);
        CHECK(bg_graph_tensor(g, L->in[0])->producer == 9); /* r.2.add */
        CHECK(bg_graph_tensor(g, L->in[1])->producer == 8); /* r.2.relu */
        CHECK(!strcmp(bg_graph_tensor(g, L->in[1])->name, "r.2.relu"));
    }
    bg_graph_free(g);
}

static void test_skip_connection(void)
{
    /* A skip over 200 layers: the stem's tensor lists both consumers. */
    bg_graph_t *g = parse(HEAD "stem = linear(x, out=8) as stem\n"
                               "h = relu(stem)\n"
                               "repeat 100 as b {\n  h = linear(h, out=8)\n  h = relu(h)\n}\n"
                               "h = add(h, stem) as skip\n" TAIL,
                          3);
    if (!g) return;
    int stem = bg_graph_find_layer(g, "stem"), skip = bg_graph_find_layer(g, "skip");
    CHECK(stem == 0 && skip == 202);
    if (stem == 0 && skip > 0) {
        const bg_graph_tensor_t *t = bg_graph_tensor(g, bg_graph_layer(g, stem)->out);
        CHECK(t->n_consumers == 2 && t->consumers[0] == 1 && t->consumers[1] == skip);
        CHECK(!strcmp(t->name, "stem") && t->producer == 0);
    }
    /* Every tensor but the loss has consumers, all later than its producer. */
    for (int i = 0; i < bg_graph_n_tensors(g); i++) {
        const bg_graph_tensor_t *t = bg_graph_tensor(g, i);
        CHECK(t->n_consumers > 0 || i == bg_graph_loss_tensor(g));
        for (int c = 0; c < t->n_consumers; c++) {
            CHECK(t->consumers[c] > t->producer);
            if (c) CHECK(t->consumers[c] > t->consumers[c - 1]);
        }
    }
    /* add(x, x) lists its layer once. */
    bg_graph_t *g2 = parse(HEAD "h = add(x, x)\n" TAIL, 1);
    if (g2) {
        const bg_graph_tensor_t *t = bg_graph_tensor(g2, bg_graph_input(g2, 0)->tensor);
        CHECK(t->n_consumers == 1);
        bg_graph_free(g2);
    }
    bg_graph_free(g);
}

static void test_expressions(void)
{
    bg_graph_t *g = parse("let a = (3 + 4) * 2 - 10 / 5\n" /* 12 */
                          "let b = -a + 20\n"              /* 8 */
                          "let half = 768 / 2\n"           /* exact: integer 384 */
                          "let k = 1e3\n"                  /* integral float is a size */
                          "input x : f32[B, a]\ninput y : i32[B]\n"
                          "h = linear(x, out=b * B)\n"
                          "h = linear(h, out=half)\n"
                          "h = linear(h, out=k)\n"
                          "h = layernorm(h, eps=1e-6 * 2)\n"
                          "let a = 5\n" /* constants may be rebound too */
                          "logits = linear(h, out=a)\nloss = cross_entropy(logits, y)\n",
                          4);
    if (!g) return;
    CHECK(bg_graph_input(g, 0)->shape.d[1] == 12);
    CHECK(bg_graph_layer(g, 0)->spec.out.d[1] == 32);
    CHECK(bg_graph_layer(g, 1)->spec.out.d[1] == 384);
    CHECK(bg_graph_layer(g, 2)->spec.out.d[1] == 1000);
    const bg_attr_t *eps = bg_attrs_find(&bg_graph_layer(g, 3)->spec.attrs, "eps");
    CHECK(eps && eps->type == BG_ATTR_FLOAT && eps->f > 1.99e-6 && eps->f < 2.01e-6);
    CHECK(bg_graph_layer(g, 4)->spec.out.d[1] == 5);
    bg_graph_free(g);
    expect_error("let a = 3 / 0\n", "t.graph:1:11: error: division by zero");
    expect_error("let a = 2.5 / 0.0\n", "1:13: error: division by zero");
    expect_error("let a = -9223372036854775807 - 2\n", "integer overflow");
    expect_error(HEAD "h = linear(x, out=7 / 2)\n" TAIL, "out= must be an integer, got 3.5");
}

static void test_share(void)
{
    bg_graph_t *g = parse("input t : i32[B, 4]\ninput y : i32[B, 4]\n"
                          "e = embedding(t, vocab=16, dim=8, positions=4) as embed\n"
                          "repeat 2 as b {\n  e = linear(e, out=8)\n}\n"
                          "logits = linear(e, out=16, bias=false, share=embed.tokens) as head\n"
                          "loss = cross_entropy(logits, y)\n",
                          2);
    if (!g) return;
    int head = bg_graph_find_layer(g, "head"), tok = bg_graph_find_param(g, "embed.tokens");
    CHECK(head == 3 && tok == 0);
    if (head == 3 && tok == 0) {
        const bg_graph_layer_t *L = bg_graph_layer(g, head);
        CHECK(L->n_params == 1 && L->param[0] == tok && L->slot[0].shared);
        CHECK(L->cost.params == 0);
        CHECK(bg_graph_param(g, tok)->owner == 0 && bg_graph_param(g, tok)->n_users == 1);
    }
    CHECK(bg_graph_totals(g)->params == 16 * 8 + 4 * 8 + 2 * (8 * 8 + 8));
    /* Parameters of repeat iterations may be shared too. */
    bg_graph_free(g);
    g = parse(HEAD "h = relu(x)\nrepeat 2 as b {\n  h = linear(h, out=8) as fc\n}\n"
                   "h = linear(h, out=8, share=b.0.fc.weight) as again\n" TAIL,
              1);
    if (g) {
        int w = bg_graph_find_param(g, "b.0.fc.weight");
        CHECK(w >= 0 && bg_graph_param(g, w)->n_users == 1);
        CHECK(bg_graph_find_param(g, "again.bias") >= 0 && bg_graph_find_param(g, "again.weight") < 0);
        bg_graph_free(g);
    }
    expect_error(HEAD "repeat 2 as b {\n  h = linear(x, out=8) as fc\n}\n"
                      "h = linear(h, out=8, share=b.0.fc.wieght) as again\n" TAIL,
                 "unknown parameter 'b.0.fc.wieght'; did you mean 'b.0.fc.weight'?");
}

static void test_batch(void)
{
    bg_graph_t *g = parse(HEAD "h = linear(x, out=B)\n" TAIL, 7);
    if (g) {
        CHECK(bg_graph_batch(g) == 7 && bg_graph_layer(g, 0)->spec.out.d[1] == 7);
        bg_graph_free(g);
    }
    bg_graph_t *out = NULL;
    CHECK(bg_graph_parse_string(HEAD TAIL, strlen(HEAD TAIL), "t", 0, &out) == BG_ERR_INVALID);
    CHECK(out == NULL);
}

/* Message: "t.graph:L:C: error: ...\n<line>\n<spaces>^" with the caret under C. */
static void test_message_format(void)
{
    const char *text = HEAD "h = relu(x)\nh =  relu(hx)\n" TAIL;
    bg_graph_t *g = NULL;
    CHECK(bg_graph_parse_string(text, strlen(text), "t.graph", 1, &g) == BG_ERR_INVALID);
    const char *m = bg_last_error();
    const char *want = "t.graph:4:11: error: unknown tensor 'hx'; did you mean 'h'?\n";
    CHECK_MSG(!strncmp(m, want, strlen(want)), "%s", m);
    const char *l2 = strchr(m, '\n');
    CHECK(l2 && !strncmp(l2 + 1, "h =  relu(hx)\n", 14));
    const char *l3 = l2 ? strchr(l2 + 1, '\n') : NULL;
    CHECK(l3 && !strcmp(l3 + 1, "          ^"));
    /* Tabs are kept in the caret line so the caret lines up. */
    const char *tabbed = HEAD "h =\trelu(hx)\n" TAIL;
    CHECK(bg_graph_parse_string(tabbed, strlen(tabbed), "t.graph", 1, &g) == BG_ERR_INVALID);
    m = bg_last_error();
    CHECK_MSG(strstr(m, "t.graph:3:10:") && strstr(m, "\n   \t     ^"), "%s", m);
}

static void test_did_you_mean(void)
{
    expect_error(HEAD "h = lienar(x, out=4)\n" TAIL, "did you mean 'linear'?");
    expect_error(HEAD "h = layernrom(x)\n" TAIL, "did you mean 'layernorm'?");
    expect_error(HEAD "h = crossentropy(x, y)\n" TAIL, "did you mean 'cross_entropy'?");
    expect_error(HEAD "h = linear(x, ouf=4)\n" TAIL, "did you mean 'out'?");
    expect_error(HEAD "h = linear(x, out=4, bais=false)\n" TAIL, "did you mean 'bias'?");
    expect_error(HEAD "h = layernorm(x, esp=1e-5)\n" TAIL, "did you mean 'eps'?");
    expect_error(HEAD "hidden = relu(x)\nh = relu(hiden)\n" TAIL, "did you mean 'hidden'?");
    expect_error("let width = 8\n" HEAD "h = linear(x, out=with)\n" TAIL, "did you mean 'width'?");
    expect_error("inptu x : f32[B, 8]\n", "did you mean 'input'?");
    expect_error("lte a = 3\n", "did you mean 'let'?");
    expect_error(HEAD "h = relu(x)\nrepaet 2 { h = relu(h) }\n" TAIL, "did you mean 'repeat'?");
    /* Nothing close: no suggestion. */
    expect_error(HEAD "h = convolution(x)\n" TAIL, "unknown layer kind 'convolution' (see");
    expect_error(HEAD "h = relu(qqqqqq)\n" TAIL, "unknown tensor 'qqqqqq'\n");
}

/* Inputs that must fail cleanly and quickly: limits and structure. */
static void test_limits(void)
{
    size_t n = (size_t)BG_GRAPH_MAX_FILE_BYTES + 1;
    char *big = malloc(n);
    if (big) {
        memset(big, '\n', n);
        bg_graph_t *g = NULL;
        CHECK(bg_graph_parse_string(big, n, "big.graph", 1, &g) == BG_ERR_INVALID);
        CHECK(strstr(bg_last_error(), "big.graph:1:1: error: file is larger than"));
        free(big);
    }
    expect_error(HEAD "repeat 100001 { h = relu(x) }\n" TAIL, "repeat count 100001 is out of range");
    expect_error(HEAD "h = relu(x)\nrepeat 100000 {\n  repeat 100000 {\n  }\n}\n" TAIL,
                 "expands to more than 1000000 statements");
    expect_error(HEAD "h = relu(x)\nrepeat 20000 { h = relu(h) }\n" TAIL, "more than 16384 layers");
    expect_error("input x : f32[B, 2147483648]\n", "dimension 2147483648 is out of range");
    expect_error("input x : f32[B, 65536, 65536, 65536]\n", "more than 4398046511104 elements");
    expect_error(HEAD "h = linear(x, out=100000)\nh = linear(h, out=2000000000)\n" TAIL,
                 "parameter linear_1.weight f32[2000000000, 100000] is too large");
    /* Total parameters: many individually legal parameters. */
    expect_error("input x : f32[B, 2000000]\ninput y : i32[B]\n"
                 "repeat 8 { h = linear(x, out=2000000, bias=false) }\n",
                 "the model has more than 17592186044416 parameters");
    /* A label long enough that nested paths overflow. */
    char text[1024];
    snprintf(text, sizeof(text), HEAD "repeat 1 as %.60s { repeat 1 as %.60s { h = relu(x) } }\n" TAIL,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    expect_error(text, "longer than 127 characters");
    bg_graph_t *g = NULL;
    CHECK(bg_graph_parse_file("/nonexistent/model.graph", 1, &g) == BG_ERR_IO);
    CHECK(strstr(bg_last_error(), "/nonexistent/model.graph: cannot open"));
    /* Embedded NUL bytes are just bad characters. */
    const char nul[] = "input x : f32[B, 8]\0\n";
    CHECK(bg_graph_parse_string(nul, sizeof(nul) - 1, "t.graph", 1, &g) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "t.graph:1:20: error: unexpected byte 0x00"));
}

static void test_gpt3_fast(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/gpt3-175b.graph", src_dir());
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(path, 1, &g));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CHECK_MSG(s < 0.5, "parsing gpt3-175b took %.3f s", s);
    if (!g) return;
    int64_t p = bg_graph_totals(g)->params;
    CHECK_MSG(p > 174000000000LL && p < 176000000000LL, "%lld", (long long)p);
    CHECK(bg_graph_n_layers(g) == 1 + 96 * 8 + 3);
    bg_graph_free(g);
}

int main(void)
{
    test_models();
    test_gpt2_count();
    test_mlp_shapes();
    test_naming();
    test_rebinding_and_repeat();
    test_skip_connection();
    test_expressions();
    test_share();
    test_batch();
    test_message_format();
    test_did_you_mean();
    test_limits();
    test_gpt3_fast();
    return bg_test_finish("test_graph");
}
