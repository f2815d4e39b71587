/*
 * layers/graph_fuse.c -- the one graph rewrite: a `linear` whose output
 * only feeds a cross_entropy's logits becomes a fused `classifier` (the
 * head GEMM and the loss in logits tiles: layers/classifier.c), so that
 * the (rows, V) logits are never stored.
 * The cross_entropy layer E takes kind `classifier` with the linear's
 * attributes, its input x and its parameter slots; the linear L becomes an
 * `identity` that passes x through. Layer ids, layer names, tensors and
 * parameter names stay (`head.weight` is still `head.weight`: checkpoints
 * and share= keep working); the parameters L owned are owned by E now.
 * Fuses only where it saves memory, V > C (logits rows wider than input
 * rows). Must not touch a pair it cannot rewrite exactly: a logits tensor
 * anything else reads, a linear whose own parameters other layers share.
 */
#include <string.h>

#include "layers/graph_impl.h"

/* Bytes a layer keeps from F to W when activations are `dt`. */
static int64_t kept_bytes(const bg_layer_spec_t *s, bg_dtype_t dt)
{
    bg_layer_cost_t c;
    bg_layer_cost(s, dt, &c);
    return c.input_bytes + c.saved_bytes;
}

/* The linear producing loss layer e's logits when the pair can fuse, else -1. */
static int fusable_head(const bg_graph_t *g, int e)
{
    const bg_graph_layer_t *E = &g->layers[e];
    if (strcmp(E->spec.kind->name, "cross_entropy") || E->in[0] == E->in[1])
        return -1;
    const bg_graph_tensor_t *t = &g->tensors[E->in[0]];
    if (t->producer < 0 || t->n_consumers != 1)
        return -1;
    const bg_graph_layer_t *L = &g->layers[t->producer];
    if (strcmp(L->spec.kind->name, "linear"))
        return -1;
    /* Only when logits rows are wider than the input rows: otherwise keeping
     * x for the tiles costs more than keeping the logits (an MLP's 10 classes). */
    const bg_shape_t *x = &L->spec.in[0];
    if (t->shape.d[t->shape.ndim - 1] <= x->d[x->ndim - 1])
        return -1;
    for (int j = 0; j < L->n_params; j++) {
        const bg_graph_param_t *p = &g->params[L->param[j]];
        if (p->owner == t->producer && p->n_users > 0)
            return -1;
    }
    return t->producer;
}

/* Rewrite the pair (l, e); both re-inferred (they cannot fail on shapes
 * the parser accepted). */
static bg_status_t fuse_pair(bg_graph_t *g, int l, int e)
{
    bg_graph_layer_t *L = &g->layers[l], *E = &g->layers[e];
    bg_errbuf_t err = {{0}};
    E->spec.kind = bg_layer_kind_find("classifier");
    E->spec.attrs = L->spec.attrs;
    E->spec.in[0] = L->spec.in[0];
    E->n_params = L->n_params;
    memcpy(E->param, L->param, sizeof(E->param));
    memcpy(E->slot, L->slot, sizeof(E->slot));
    for (int j = 0; j < L->n_params; j++)
        if (g->params[L->param[j]].owner == l)
            g->params[L->param[j]].owner = e;
    L->spec.kind = bg_layer_kind_find("identity");
    memset(&L->spec.attrs, 0, sizeof(L->spec.attrs));
    L->n_params = 0;
    if (!E->spec.kind || !L->spec.kind || bg_layer_infer(&L->spec, &err) != BG_OK ||
        (E->spec.in[0] = L->spec.out, bg_layer_infer(&E->spec, &err)) != BG_OK)
        return bg_errorf(BG_ERR_INTERNAL, "fusing %s into %s: %s", L->spec.name, E->spec.name,
                         err.msg[0] ? err.msg : "kind missing");
    g->tensors[E->in[0]].shape = L->spec.out;
    return BG_OK;
}

bg_status_t bg_graph_fuse_classifier(bg_graph_t *g, bg_dtype_t dtype, bg_graph_fusion_t *out)
{
    bg_graph_fusion_t f = {0, -1, -1, 0, 0};
    for (int e = 0; e < g->n_layers; e++) {
        int l = fusable_head(g, e);
        if (l < 0)
            continue;
        f.kept_before +=
            kept_bytes(&g->layers[l].spec, dtype) + kept_bytes(&g->layers[e].spec, dtype);
        bg_status_t st = fuse_pair(g, l, e);
        if (st != BG_OK)
            return st;
        f.kept_after +=
            kept_bytes(&g->layers[l].spec, dtype) + kept_bytes(&g->layers[e].spec, dtype);
        if (!f.n++)
            f.head = l, f.loss = e;
    }
    bg_status_t st = f.n ? bg_graph_finish(g) : BG_OK;
    if (st == BG_OK && out)
        *out = f;
    return st;
}
