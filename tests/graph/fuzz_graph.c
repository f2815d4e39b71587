/*
 * tests/graph/fuzz_graph.c -- libFuzzer target for the graph parser: any
 * byte string must either parse into a self-consistent graph or fail with
 * BG_ERR_INVALID and a well-formed "NAME:L:C: error:" message; anything
 * else (crash, leak, hang, other status, broken invariant) is a finding.
 * Built with clang -fsanitize=fuzzer,address,undefined (BG_FUZZ=ON).
 * Must not keep state between inputs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/graph.h"

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz_graph: %s\n%s\n", what, msg ? msg : "");
    abort();
}

/* The invariants a consumer relies on. */
static void check_graph(const bg_graph_t *g)
{
    int nl = bg_graph_n_layers(g), nt = bg_graph_n_tensors(g), np = bg_graph_n_params(g);
    if (nl < 1 || nl > BG_GRAPH_MAX_LAYERS) die("layer count out of range", NULL);
    int loss = bg_graph_loss_tensor(g);
    if (loss < 0 || loss >= nt || bg_graph_loss_layer(g) != bg_graph_tensor(g, loss)->producer)
        die("bad loss", NULL);
    int64_t total = 0;
    for (int l = 0; l < nl; l++) {
        const bg_graph_layer_t *L = bg_graph_layer(g, l);
        if (bg_graph_find_layer(g, L->spec.name) != l) die("layer name not unique", L->spec.name);
        if (L->out < 0 || L->out >= nt || bg_graph_tensor(g, L->out)->producer != l)
            die("bad output tensor", L->spec.name);
        for (int i = 0; i < L->spec.n_in; i++) {
            const bg_graph_tensor_t *t = bg_graph_tensor(g, L->in[i]);
            if (!t || t->producer >= l) die("input not earlier", L->spec.name);
            if (!bg_shape_eq(&t->shape, &L->spec.in[i])) die("input shape mismatch", L->spec.name);
        }
        for (int j = 0; j < L->n_params; j++) {
            const bg_graph_param_t *p = bg_graph_param(g, L->param[j]);
            if (!p || !bg_shape_eq(&p->desc.shape, &L->slot[j].shape)) die("param slot", L->spec.name);
            if (p->owner > l) die("param owner later than user", p->name);
        }
        total += L->cost.params;
    }
    int64_t sum = 0;
    for (int p = 0; p < np; p++) {
        const bg_graph_param_t *P = bg_graph_param(g, p);
        if (bg_graph_find_param(g, P->name) != p) die("param name not unique", P->name);
        sum += P->numel;
    }
    if (sum != total || sum != bg_graph_totals(g)->params || sum > BG_GRAPH_MAX_PARAMS)
        die("parameter totals disagree", NULL);
    for (int t = 0; t < nt; t++) {
        const bg_graph_tensor_t *T = bg_graph_tensor(g, t);
        if (!T->n_consumers && t != loss) die("unused tensor accepted", T->name);
        for (int c = 0; c < T->n_consumers; c++)
            if (T->consumers[c] <= T->producer || (c && T->consumers[c] <= T->consumers[c - 1]))
                die("consumer order", T->name);
    }
}

static void check_message(const char *m)
{
    int line = 0, col = 0, used = 0;
    if (strncmp(m, "fuzz:", 5) || sscanf(m + 4, ":%d:%d: error: %n", &line, &col, &used) != 2 ||
        !used || line < 1 || col < 1)
        die("malformed message", m);
    const char *a = strchr(m, '\n'), *b = a ? strchr(a + 1, '\n') : NULL;
    if (!b || m[strlen(m) - 1] != '^') die("message lacks the line and caret", m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A small batch explores the language; the largest explores overflow. */
    static const int64_t batches[] = {3, BG_GRAPH_MAX_DIM};
    for (int i = 0; i < 2; i++) {
        bg_graph_t *g = NULL;
        bg_status_t st = bg_graph_parse_string((const char *)data, size, "fuzz", batches[i], &g);
        if (st == BG_OK) {
            check_graph(g);
            bg_graph_free(g);
        } else if (st == BG_ERR_INVALID) {
            check_message(bg_last_error());
        } else {
            die("unexpected status", bg_last_error());
        }
    }
    return 0;
}
