/*
 * engine/runtime_params.c -- the parameters this rank holds: f32 host
 * masters (authoritative), optimizer state, the compute copies on the
 * device, views for checkpoints, and which other pipeline ranks hold a
 * tied copy of each.
 *
 * A parameter is held by every rank running one of its users (the owner
 * layer or a share= user); every holder initialises it identically from the
 * seed and the global name. Setup and upload can fail (out of memory,
 * device errors) with the parameter named; views cannot.
 * Must NOT decide when parameters change (runtime_grad.c updates them,
 * train.c loads them).
 */
#include <string.h>

#include "engine/runtime_impl.h"

/* The global ranks, other than this one, running users of parameter p:
 * the partners of its tied-gradient exchange. At most one entry per user,
 * so the list never needs more room than the user count. */
static bg_status_t param_holders(bg_rt_t *rt, const bg_net_param_t *np, rt_param_t *rp)
{
    const bg_net_t *n = rt->net;
    rp->remote_rank = calloc((size_t)np->n_users + 1, sizeof(int));
    if (!rp->remote_rank)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the holders of parameter %s",
                         bg_graph_param(rt->g, rp->p)->name);
    int self = rt_peer_rank(rt, rt->conf.stage);
    for (int u = 0; u < np->n_users; u++) {
        int r = rt_rank_of_chunk(rt, n->layer_chunk[np->users[u]]);
        bool known = r == self;
        for (int k = 0; k < rp->n_remote; k++)
            known |= rp->remote_rank[k] == r;
        if (!known)
            rp->remote_rank[rp->n_remote++] = r;
    }
    return BG_OK;
}

/* Host memory, initial values and the device copy of held parameter p. */
static bg_status_t param_alloc(bg_rt_t *rt, const bg_net_param_t *np, rt_param_t *rp)
{
    const bg_graph_param_t *gp = bg_graph_param(rt->g, rp->p);
    size_t bytes = (size_t)rp->n * 4;
    rp->master = malloc(bytes + 4);
    /* A parameter with one user is its accumulator: no fold buffer. */
    rp->grad = np->n_users > 1 ? malloc(bytes + 4) : NULL;
    for (int s = 0; s < bg_optim_state_count(rt->conf.optim.kind); s++)
        rp->state[s] = calloc((size_t)rp->n + 1, 4);
    if (!rp->master || (np->n_users > 1 && !rp->grad) || !rp->state[0])
        return bg_errorf(BG_ERR_NOMEM, "out of memory for parameter %s (%lld elements)", gp->name,
                         (long long)rp->n);
    bg_param_init_host(&gp->desc, gp->name, rt->conf.seed, rp->master);
    if (rt->dev == BG_DEV_CPU && rt->conf.dtype == BG_F32) {
        rp->dev = rp->master;
        return BG_OK;
    }
    bg_status_t st = rt_dalloc(rt, (size_t)rp->n * bg_dtype_size(rt->conf.dtype), &rp->dev);
    return st == BG_OK ? bg_rt_param_upload_(rt, rp) : st;
}

bg_status_t bg_rt_params_setup_(bg_rt_t *rt)
{
    const bg_net_t *n = rt->net;
    rt->param_local = malloc(sizeof(int) * ((size_t)n->n_params + 1));
    rt->par = calloc((size_t)n->n_params + 1, sizeof(rt_param_t));
    rt->uacc_dev = calloc((size_t)n->n_layers * BG_MAX_PARAMS + 1, sizeof(float *));
    rt->uacc_host = calloc((size_t)n->n_layers * BG_MAX_PARAMS + 1, sizeof(float *));
    if (!rt->param_local || !rt->par || !rt->uacc_dev || !rt->uacc_host)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter tables");
    for (int p = 0; p < n->n_params; p++) {
        rt->param_local[p] = -1;
        const bg_net_param_t *np = &n->params[p];
        bool here = false;
        for (int u = 0; u < np->n_users; u++)
            here |= rt_local_of(rt, n->layer_chunk[np->users[u]]) >= 0;
        if (!here)
            continue;
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p);
        rt_param_t *rp = &rt->par[rt->nparam];
        rt->param_local[p] = rt->nparam++;
        rp->p = p;
        rp->n = gp->numel;
        rp->owned = rt_local_of(rt, n->layer_chunk[gp->owner]) >= 0;
        bg_status_t st = param_holders(rt, np, rp);
        if (st == BG_OK)
            st = param_alloc(rt, np, rp);
        if (st != BG_OK)
            return st;
    }
    return BG_OK;
}

void bg_rt_params_free_(bg_rt_t *rt)
{
    for (int i = 0; rt->par && i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        free(p->master), free(p->grad), free(p->state[0]), free(p->state[1]);
        free(p->remote_rank);
    }
    free(rt->par), free(rt->param_local), free(rt->uacc_dev), free(rt->uacc_host);
}

bg_status_t bg_rt_param_upload_(bg_rt_t *rt, rt_param_t *p)
{
    if (p->dev == (void *)p->master)
        return BG_OK;
    if (rt->conf.dtype == BG_F32)
        return bg_backend_copy(rt->conf.be, p->dev, p->master, (size_t)p->n * 4, BG_COPY_H2D,
                               rt->compute);
    uint16_t *h = malloc((size_t)p->n * 2 + 2);
    if (!h)
        return bg_errorf(BG_ERR_NOMEM, "out of memory converting parameters");
    for (int64_t e = 0; e < p->n; e++)
        h[e] = bg_f32_to_bf16(p->master[e]);
    bg_status_t st =
        bg_backend_copy(rt->conf.be, p->dev, h, (size_t)p->n * 2, BG_COPY_H2D, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    free(h);
    return st;
}

bg_status_t bg_rt_params_upload(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nparam; i++) {
        bg_status_t st = bg_rt_param_upload_(rt, &rt->par[i]);
        if (st != BG_OK)
            return bg_rt_err_(rt, st);
    }
    return bg_rt_err_(rt, bg_stream_synchronize(rt->conf.be, rt->compute));
}

int bg_rt_param_count(const bg_rt_t *rt)
{
    return rt->nparam;
}

void bg_rt_param_get(bg_rt_t *rt, int i, bg_rt_param_view_t *out)
{
    rt_param_t *p = &rt->par[i];
    const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
    out->name = gp->name;
    out->shape = &gp->desc.shape;
    out->numel = p->n;
    out->owned = p->owned;
    out->master = p->master;
    out->state[0] = p->state[0];
    out->state[1] = p->state[1];
}
