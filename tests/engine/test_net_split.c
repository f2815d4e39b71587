/*
 * tests/engine/test_net_split.c -- bg_net_split_even (now partition's
 * bg_split_prefix over FLOP+1 weights) cuts exactly where the engine's own
 * greedy splitter used to, on every model in models/ and on random weights
 * for every chunk count. The old splitter is kept here as the reference.
 * Must NOT change the reference: it pins the executor's default layout.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/net.h"
#include "partition/partition.h"
#include "test_util.h"

/* The splitter engine/net.c had before it used bg_split_prefix (verbatim
 * logic over per-layer weights w [L]). */
static void reference_split(const double *w, int L, int n_chunks, int *first)
{
    double total = 0;
    for (int l = 0; l < L; l++)
        total += w[l];
    first[0] = 0;
    double run = 0;
    int c = 1;
    for (int l = 0; l < L && c < n_chunks; l++) {
        run += w[l];
        int left_layers = L - (l + 1), left_chunks = n_chunks - c;
        if ((run >= total * c / n_chunks && l + 1 > first[c - 1]) || left_layers == left_chunks)
            first[c++] = l + 1;
    }
    first[n_chunks] = L;
}

/* bg_split_prefix against the reference for weights w [L], all chunk counts. */
static void compare(const double *w, int L, const char *what)
{
    double *pre = malloc(sizeof(double) * ((size_t)L + 1));
    int *a = malloc(sizeof(int) * ((size_t)L + 1)), *b = malloc(sizeof(int) * ((size_t)L + 1));
    if (!pre || !a || !b) {
        CHECK(!"out of memory");
        goto out;
    }
    pre[0] = 0;
    for (int l = 0; l < L; l++)
        pre[l + 1] = pre[l] + w[l];
    for (int G = 1; G <= L; G++) {
        reference_split(w, L, G, a);
        bg_split_prefix(pre, L, G, b);
        CHECK_MSG(!memcmp(a, b, sizeof(int) * ((size_t)G + 1)), "%s: %d chunks differ", what, G);
    }
out:
    free(pre);
    free(a);
    free(b);
}

static void models(void)
{
    const char *src = getenv("BRIGADE_SOURCE_DIR");
    const char *names[] = {"gpt-tiny", "gpt2-124m",  "mlp-fashion",
                           "skip-mlp", "uneven-mlp", "uniform-mlp"};
    if (!src)
        src = ".";
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/models/%s.graph", src, names[i]);
        bg_graph_t *g = NULL;
        CHECK_OK(bg_graph_parse_file(path, 4, &g));
        if (!g)
            continue;
        int L = bg_graph_n_layers(g);
        double *w = malloc(sizeof(double) * (size_t)L);
        int *a = malloc(sizeof(int) * ((size_t)L + 1)), *b = malloc(sizeof(int) * ((size_t)L + 1));
        for (int l = 0; w && l < L; l++) {
            const bg_layer_cost_t *c = &bg_graph_layer(g, l)->cost;
            w[l] = c->fwd_flops + c->bwd_input_flops + c->bwd_weight_flops + 1.0;
        }
        for (int G = 1; w && a && b && G <= L; G++) {
            reference_split(w, L, G, a);
            CHECK_OK(bg_net_split_even(g, G, b));
            CHECK_MSG(!memcmp(a, b, sizeof(int) * ((size_t)G + 1)), "%s: %d chunks differ",
                      names[i], G);
        }
        CHECK(bg_net_split_even(g, L + 1, b) == BG_ERR_INVALID);
        free(w);
        free(a);
        free(b);
        bg_graph_free(g);
    }
}

/* Random weights, including zero-cost layers (+1 keeps the prefix rising)
 * and one dominant layer, where several quantiles fall into one layer. */
static void random_weights(void)
{
    uint64_t x = 7;
    double w[40];
    for (int t = 0; t < 300; t++) {
        int L = 1 + t % 40;
        for (int l = 0; l < L; l++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            int kind = (int)(x >> 60) % 4;
            w[l] = 1.0 + (kind == 0 ? 0 : kind == 1 ? 1e6 : (double)(x >> 40));
        }
        compare(w, L, "random");
    }
}

int main(void)
{
    models();
    random_weights();
    return bg_test_finish("test_net_split");
}
