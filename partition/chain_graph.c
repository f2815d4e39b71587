/*
 * partition/chain_graph.c -- graph -> per-sample cost chain.
 * Per layer: the kind's FLOPs and bytes at the requested activation dtype
 * (bg_layer_cost), owned and tied parameters; per tensor: its producer and
 * bytes, so that cuts pay for skip connections. Reads the graph only.
 */
#include "partition/chain_graph.h"

#include <stdio.h>
#include <string.h>

/* value / batch rounded up: a batch-independent byte count (a scalar
 * loss) then stays charged rather than vanishing. */
static int64_t per_sample(int64_t v, int64_t batch)
{
    return (v + batch - 1) / batch;
}

static bg_status_t chain_layer(const bg_graph_t *g, int i, bg_dtype_t dtype, bg_chain_t *c)
{
    const bg_graph_layer_t *gl = bg_graph_layer(g, i);
    bg_chain_layer_t *l = &c->layer[i];
    int64_t B = bg_graph_batch(g);
    bg_layer_cost_t cost;
    bg_layer_cost(&gl->spec, dtype, &cost);
    snprintf(l->name, sizeof(l->name), "%s", gl->spec.name);
    snprintf(l->kind, sizeof(l->kind), "%s", gl->spec.kind->name);
    l->fwd_flops = cost.fwd_flops / (double)B;
    l->bwd_input_flops = cost.bwd_input_flops / (double)B;
    l->bwd_weight_flops = cost.bwd_weight_flops / (double)B;
    l->saved_bytes = per_sample(cost.saved_bytes, B);
    l->workspace_bytes = per_sample(cost.workspace_bytes, B);
    l->out_bytes = per_sample(cost.out_bytes, B);
    l->params = cost.params;
    l->shared_params = 0;
    for (int k = 0; k < gl->n_params; k++)
        if (gl->slot[k].shared) l->shared_params += bg_shape_numel(&gl->slot[k].shape);
    l->n_in = gl->spec.n_in;
    for (int k = 0; k < l->n_in; k++) l->in_tensor[k] = gl->in[k];
    /* A layer none of whose inputs carries a gradient computes no dX. */
    l->no_input_grad = true;
    for (int k = 0; k < l->n_in; k++)
        if (bg_graph_tensor_needs_grad(bg_graph_tensor(g, gl->in[k]))) l->no_input_grad = false;
    return BG_OK;
}

bg_status_t bg_chain_from_graph(const bg_graph_t *g, bg_dtype_t dtype, bg_chain_t *out)
{
    if (dtype != BG_F32 && dtype != BG_BF16 && dtype != BG_F16)
        return bg_errorf(BG_ERR_INVALID, "activation dtype must be f32, bf16 or fp16");
    int L = bg_graph_n_layers(g), T = bg_graph_n_tensors(g);
    int64_t B = bg_graph_batch(g);
    bg_chain_t c;
    bg_status_t st = bg_chain_alloc(L, T, dtype, &c);
    if (st) return st;
    for (int t = 0; t < T; t++) {
        const bg_graph_tensor_t *gt = bg_graph_tensor(g, t);
        c.tensor[t].producer = gt->producer;
        c.tensor[t].bytes =
            per_sample(bg_shape_numel(&gt->shape) * bg_spec_dtype_bytes(gt->shape.dtype, dtype), B);
    }
    for (int i = 0; i < L; i++)
        if ((st = chain_layer(g, i, dtype, &c))) goto err_free;
    if ((st = bg_chain_finalize(&c))) goto err_free;
    *out = c;
    return BG_OK;
err_free:
    bg_chain_free(&c);
    return st;
}
