/*
 * tests/graph/test_model_counts.c -- the Llama model files count exactly
 * the published parameters: llama3-8b 8,030,261,248, llama3-70b
 * 70,553,706,496 (Meta's counts), llama-tiny 123,712 (by hand, see the
 * file). First the closed form (what each file's comment derives) is
 * checked against the published numbers, so the hand arithmetic cannot
 * drift; then each file is parsed and its totals and key parameter shapes
 * compared.
 * The files use attention's kv_heads=, rope=, rope_theta= and bias=false:
 * the attention projections are checked for their grouped-query shapes and
 * for having no bias slots.
 * Must not depend on anything but the parser and the kinds' tables.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/graph.h"
#include "layers/layer.h"
#include "test_util.h"

static const char *src_dir(void)
{
    const char *s = getenv("BRIGADE_SOURCE_DIR");
    return s ? s : ".";
}

typedef struct llama_shape {
    const char *model;
    int64_t vocab, dim, layers, heads, kv_heads, ffn;
    int64_t published; /* the count the file must report */
} llama_shape_t;

static const llama_shape_t k_models[] = {
    {"llama3-8b", 128256, 4096, 32, 32, 8, 14336, 8030261248LL},
    {"llama3-70b", 128256, 8192, 80, 64, 8, 28672, 70553706496LL},
    {"llama-tiny", 256, 64, 2, 4, 2, 172, 123712LL},
};

/* Untied embedding and head, per block q/o dim^2, k/v dim * kv_heads *
 * head_dim, SwiGLU 3 dim ffn, two norms; a final norm. No biases. */
static int64_t llama_params(const llama_shape_t *m)
{
    int64_t hd = m->dim / m->heads;
    int64_t attn = 2 * m->dim * m->dim + 2 * m->dim * m->kv_heads * hd;
    int64_t block = attn + 3 * m->dim * m->ffn + 2 * m->dim;
    return 2 * m->vocab * m->dim + m->layers * block + m->dim;
}

static void check_param_shape(bg_graph_t *g, const char *name, int64_t d0, int64_t d1)
{
    int id = bg_graph_find_param(g, name);
    CHECK_MSG(id >= 0, "no parameter %s", name);
    if (id < 0)
        return;
    const bg_shape_t *s = &bg_graph_param(g, id)->desc.shape;
    CHECK_MSG(s->d[0] == d0 && (s->ndim == 1 || s->d[1] == d1),
              "%s has shape (%lld, %lld), want (%lld, %lld)", name, (long long)s->d[0],
              (long long)(s->ndim > 1 ? s->d[1] : 0), (long long)d0, (long long)d1);
}

static void check_file(const llama_shape_t *m)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/%s.graph", src_dir(), m->model);
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(path, 1, &g));
    if (!g)
        return;
    CHECK(!strcmp(bg_graph_model_name(g), m->model));
    int64_t got = bg_graph_totals(g)->params;
    CHECK_MSG(got == m->published, "%s: %lld parameters, want %lld", m->model, (long long)got,
              (long long)m->published);
    check_param_shape(g, "tok_embeddings.tokens", m->vocab, m->dim);
    check_param_shape(g, "output.weight", m->vocab, m->dim);
    check_param_shape(g, "layers.0.w13.weight", 2 * m->ffn, m->dim);
    check_param_shape(g, "layers.0.w2.weight", m->dim, m->ffn);
    check_param_shape(g, "layers.0.ffn_norm.weight", m->dim, 0);
    check_param_shape(g, "norm.weight", m->dim, 0);
    CHECK(bg_graph_find_param(g, "layers.0.w13.bias") < 0);
    int64_t hd = m->dim / m->heads;
    check_param_shape(g, "layers.0.attention.qkv.weight", m->dim + 2 * m->kv_heads * hd, m->dim);
    check_param_shape(g, "layers.0.attention.proj.weight", m->dim, m->dim);
    CHECK(bg_graph_find_param(g, "layers.0.attention.qkv.bias") < 0);
    CHECK(bg_graph_find_param(g, "layers.0.attention.proj.bias") < 0);
    printf("%-12s %lld parameters\n", m->model, (long long)got);
    bg_graph_free(g);
}

/* A Llama feed-forward half-block without attention: what this room owns. */
static void test_ffn_block(void)
{
    const char *text = "input x : f32[B, 8, 64]\ninput y : i32[B, 8]\n"
                       "h = rmsnorm(x, eps=1e-5) as ffn_norm\n"
                       "h = linear(h, out=2 * 172, bias=false) as w13\n"
                       "h = swiglu(h)\n"
                       "h = linear(h, out=64, bias=false) as w2\n"
                       "x = add(x, h)\n"
                       "logits = linear(x, out=256, bias=false) as output\n"
                       "loss = cross_entropy(logits, y)\n";
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_string(text, strlen(text), "ffn.graph", 2, &g));
    if (!g)
        return;
    CHECK(bg_graph_totals(g)->params == 64 + 3 * 64 * 172 + 256 * 64);
    int sw = bg_graph_find_layer(g, "swiglu");
    CHECK(sw >= 0);
    if (sw >= 0) {
        const bg_shape_t *o = &bg_graph_layer(g, sw)->spec.out;
        CHECK(o->ndim == 3 && o->d[0] == 2 && o->d[1] == 8 && o->d[2] == 172);
    }
    bg_graph_free(g);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(k_models) / sizeof(k_models[0]); i++)
        CHECK_MSG(llama_params(&k_models[i]) == k_models[i].published, "%s: closed form gives %lld",
                  k_models[i].model, (long long)llama_params(&k_models[i]));
    test_ffn_block();
    for (size_t i = 0; i < sizeof(k_models) / sizeof(k_models[0]); i++)
        check_file(&k_models[i]);
    return bg_test_finish("test_model_counts");
}
