/*
 * engine/net.c -- derive, from a graph and a chunk split, the facts the
 * executor needs: chunk of every layer, every use of every tensor, the
 * tensors crossing each chunk edge and how many gradient contributions
 * flow back over it. Pure bookkeeping: no devices, no communication.
 */
#include "engine/net.h"

#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "partition/partition.h"

static int64_t shape_elems(const bg_shape_t *s)
{
    return bg_shape_numel(s);
}

bg_status_t bg_net_split_even(const bg_graph_t *g, int n_chunks, int *chunk_first)
{
    int L = bg_graph_n_layers(g);
    if (n_chunks < 1 || L < n_chunks)
        return bg_errorf(BG_ERR_INVALID,
                         "cannot cut %d layers into %d chunks: each chunk needs "
                         "at least one layer",
                         L, n_chunks);
    double *pre = malloc(((size_t)L + 1) * sizeof(double));
    if (!pre)
        return bg_errorf(BG_ERR_NOMEM, "out of memory splitting %d layers", L);
    /* +1 per layer: FLOP-free layers still count, and the prefix is strictly
     * increasing, so every cut lands at a distinct layer. */
    pre[0] = 0;
    for (int l = 0; l < L; l++) {
        const bg_layer_cost_t *c = &bg_graph_layer(g, l)->cost;
        pre[l + 1] = pre[l] + (c->fwd_flops + c->bwd_input_flops + c->bwd_weight_flops + 1.0);
    }
    bg_split_prefix(pre, L, n_chunks, chunk_first);
    free(pre);
    return BG_OK;
}

int bg_net_edge_find(const bg_net_t *n, int src, int dst)
{
    for (int i = 0; i < n->n_edges; i++)
        if (n->edges[i].src == src && n->edges[i].dst == dst)
            return i;
    return -1;
}

int bg_net_uses_in_chunk(const bg_net_t *n, int t, int c)
{
    int k = 0;
    for (int i = 0; i < n->tensors[t].n_uses; i++)
        k += n->layer_chunk[n->tensors[t].uses[i].layer] == c;
    return k;
}

int bg_net_use_rank(const bg_net_t *n, int t, int c, int layer, int slot)
{
    const bg_net_tensor_t *nt = &n->tensors[t];
    int j = 0;
    for (int u = nt->n_uses - 1; u >= 0; u--) {
        if (n->layer_chunk[nt->uses[u].layer] != c)
            continue;
        if (nt->uses[u].layer == layer && nt->uses[u].slot == slot)
            break;
        j++;
    }
    return j;
}

bool bg_net_is_latest_user(const bg_net_t *n, int t, int c)
{
    const bg_net_tensor_t *nt = &n->tensors[t];
    return nt->n_uses && n->layer_chunk[nt->uses[nt->n_uses - 1].layer] == c;
}

void bg_net_free(bg_net_t *n)
{
    if (!n)
        return;
    for (int t = 0; n->tensors && t < n->n_tensors; t++)
        free(n->tensors[t].uses);
    for (int p = 0; n->params && p < n->n_params; p++) {
        free(n->params[p].users);
        free(n->params[p].user_slot);
    }
    for (int e = 0; n->edges && e < n->n_edges; e++) {
        free(n->edges[e].tensors);
        free(n->edges[e].n_contrib);
    }
    free(n->edges);
    free(n->params);
    free(n->tensors);
    free(n->layer_chunk);
    free(n->chunk_first);
    free(n);
}

static bg_status_t net_uses(bg_net_t *n)
{
    const bg_graph_t *g = n->graph;
    for (int l = 0; l < n->n_layers; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(g, l);
        for (int s = 0; s < gl->spec.n_in; s++)
            n->tensors[gl->in[s]].n_uses++;
    }
    for (int t = 0; t < n->n_tensors; t++) {
        const bg_graph_tensor_t *gt = bg_graph_tensor(g, t);
        n->tensors[t].chunk = gt->producer >= 0 ? n->layer_chunk[gt->producer] : -1;
        n->tensors[t].needs_grad = bg_graph_tensor_needs_grad(gt);
        n->tensors[t].uses = calloc((size_t)n->tensors[t].n_uses + 1, sizeof(bg_net_use_t));
        if (!n->tensors[t].uses)
            return bg_errorf(BG_ERR_NOMEM, "net: out of memory");
        n->tensors[t].n_uses = 0;
    }
    /* Layers ascending, slots ascending: uses come out sorted. */
    for (int l = 0; l < n->n_layers; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(g, l);
        for (int s = 0; s < gl->spec.n_in; s++) {
            bg_net_tensor_t *nt = &n->tensors[gl->in[s]];
            nt->uses[nt->n_uses++] = (bg_net_use_t){l, s};
        }
    }
    return BG_OK;
}

static bg_status_t net_params(bg_net_t *n)
{
    const bg_graph_t *g = n->graph;
    for (int p = 0; p < n->n_params; p++) {
        const bg_graph_param_t *gp = bg_graph_param(g, p);
        bg_net_param_t *np = &n->params[p];
        np->users = calloc((size_t)gp->n_users + 1, sizeof(int));
        np->user_slot = calloc((size_t)gp->n_users + 1, sizeof(int));
        if (!np->users || !np->user_slot)
            return bg_errorf(BG_ERR_NOMEM, "net: out of memory");
        /* The owner and the share= users, merged in ascending layer order. */
        int k = 0;
        bool owner_done = false;
        for (int i = 0; i <= gp->n_users; i++) {
            int u = i < gp->n_users ? gp->users[i] : -1;
            if (!owner_done && (u < 0 || gp->owner < u)) {
                np->users[k] = gp->owner;
                np->user_slot[k++] = gp->slot;
                owner_done = true;
            }
            if (u < 0)
                break;
            const bg_graph_layer_t *gl = bg_graph_layer(g, u);
            int slot = -1;
            for (int s = 0; s < gl->n_params; s++)
                if (gl->param[s] == p)
                    slot = s;
            if (slot < 0)
                return bg_errorf(BG_ERR_INTERNAL,
                                 "net: layer %s listed as a user of %s but has "
                                 "no slot for it",
                                 gl->spec.name, gp->name);
            np->users[k] = u;
            np->user_slot[k++] = slot;
        }
        np->n_users = k;
    }
    return BG_OK;
}

static bg_status_t net_edge_add(bg_net_t *n, int src, int dst, int t, int contrib)
{
    int e = bg_net_edge_find(n, src, dst);
    if (e < 0) {
        if (bg_grow(&n->edges, &n->cap_edges, (size_t)n->n_edges + 1, sizeof(*n->edges)))
            return bg_errorf(BG_ERR_NOMEM, "net: out of memory");
        e = n->n_edges++;
        memset(&n->edges[e], 0, sizeof(n->edges[e]));
        n->edges[e].src = src;
        n->edges[e].dst = dst;
    }
    bg_net_edge_t *ed = &n->edges[e];
    /* tensors and n_contrib grow in step: both get room before either is used. */
    size_t tcap = ed->cap, ccap = ed->cap;
    if (bg_grow(&ed->tensors, &tcap, (size_t)ed->n + 1, sizeof(int)) ||
        bg_grow(&ed->n_contrib, &ccap, (size_t)ed->n + 1, sizeof(int)))
        return bg_errorf(BG_ERR_NOMEM, "net: out of memory");
    ed->cap = tcap < ccap ? tcap : ccap;
    ed->tensors[ed->n] = t;
    ed->n_contrib[ed->n] = contrib;
    ed->n++;
    int64_t sz = shape_elems(&bg_graph_tensor(n->graph, t)->shape);
    ed->act_elems += (size_t)sz;
    ed->grad_elems += (size_t)(sz * contrib);
    return BG_OK;
}

static bg_status_t net_edges(bg_net_t *n)
{
    /* Tensor ids ascending, so every edge lists its tensors in ascending order. */
    for (int t = 0; t < n->n_tensors; t++) {
        int src = n->tensors[t].chunk;
        if (src < 0)
            continue;
        for (int c = src + 1; c < n->n_chunks; c++) {
            int k = bg_net_uses_in_chunk(n, t, c);
            if (!k)
                continue;
            int contrib = !n->tensors[t].needs_grad ? 0 : bg_net_is_latest_user(n, t, c) ? 1 : k;
            bg_status_t st = net_edge_add(n, src, c, t, contrib);
            if (st != BG_OK)
                return st;
        }
    }
    return BG_OK;
}

bg_status_t bg_net_create(const bg_graph_t *g, int n_chunks, const int *chunk_first, bg_net_t **out)
{
    int L = bg_graph_n_layers(g);
    if (n_chunks < 1 || chunk_first[0] != 0 || chunk_first[n_chunks] != L)
        return bg_errorf(BG_ERR_INVALID, "bad chunk split: must start at layer 0 and end at %d", L);
    for (int c = 0; c < n_chunks; c++)
        if (chunk_first[c + 1] <= chunk_first[c])
            return bg_errorf(BG_ERR_INVALID, "bad chunk split: chunk %d is empty", c);
    bg_status_t st = BG_ERR_NOMEM;
    bg_net_t *n = calloc(1, sizeof(*n));
    if (!n)
        return bg_errorf(BG_ERR_NOMEM, "net: out of memory");
    n->graph = g;
    n->n_layers = L;
    n->n_tensors = bg_graph_n_tensors(g);
    n->n_params = bg_graph_n_params(g);
    n->n_inputs = bg_graph_n_inputs(g);
    n->n_chunks = n_chunks;
    n->layer_chunk = calloc((size_t)L + 1, sizeof(int));
    n->chunk_first = calloc((size_t)n_chunks + 1, sizeof(int));
    n->tensors = calloc((size_t)n->n_tensors + 1, sizeof(bg_net_tensor_t));
    n->params = calloc((size_t)n->n_params + 1, sizeof(bg_net_param_t));
    if (!n->layer_chunk || !n->chunk_first || !n->tensors || !n->params) {
        bg_errorf(BG_ERR_NOMEM, "net: out of memory");
        goto err;
    }
    memcpy(n->chunk_first, chunk_first, sizeof(int) * (size_t)(n_chunks + 1));
    for (int c = 0; c < n_chunks; c++)
        for (int l = chunk_first[c]; l < chunk_first[c + 1]; l++)
            n->layer_chunk[l] = c;
    if ((st = net_uses(n)) != BG_OK)
        goto err;
    if ((st = net_params(n)) != BG_OK)
        goto err;
    if ((st = net_edges(n)) != BG_OK)
        goto err;
    *out = n;
    return BG_OK;
err:
    bg_net_free(n);
    return st;
}
