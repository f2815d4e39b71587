/*
 * engine/runtime_params.c -- the parameters this rank holds: flat buffers
 * on the rank's backend (f32 masters, authoritative; optimizer state;
 * gradients; the compute-dtype copy) laid out bucket by bucket (each local
 * chunk's one-user parameters, then those with several users), host
 * mirrors and views for checkpoints, which other pipeline ranks hold a tied
 * copy of each, and the loss scale.
 *
 * A parameter is held by every rank running one of its users (the owner
 * layer or a share= user); every holder initialises it identically from the
 * seed and the global name. Setup and upload can fail (out of memory,
 * device errors) with the parameter named; views cannot.
 * Must NOT decide when parameters change (runtime_grad.c updates them,
 * train.c loads them).
 */
#include <math.h>
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

/* A zeroed f32 flat buffer of backend memory. */
static bg_status_t flat_alloc(bg_rt_t *rt, size_t bytes, void **out)
{
    void *p = NULL;
    bg_status_t st = rt_dalloc(rt, bytes + 4, &p);
    if (st == BG_OK)
        st = bg_backend_memset(rt->conf.be, p, 0, bytes, rt->compute);
    if (st == BG_OK)
        *out = p;
    return st;
}

/* The local chunk whose bucket holds held parameter p: its only user's;
 * -1 for a parameter with several users (the tied region). */
static int param_bucket(const bg_rt_t *rt, const rt_param_t *p)
{
    const bg_net_param_t *np = &rt->net->params[p->p];
    return np->n_users == 1 ? rt_local_of(rt, rt->net->layer_chunk[np->users[0]]) : -1;
}

/* Offsets and decay flags of the held parameters in flat order (each local
 * chunk's bucket, then the tied region), on the host and (for the
 * backend's kernels) in backend memory; then the update ranges. */
static bg_status_t flat_layout(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    int np = rt->nparam, k = 0;
    f->off_h = malloc(sizeof(int64_t) * ((size_t)np + 1));
    f->decay_h = calloc((size_t)np + 1, 1);
    f->seg_par = calloc((size_t)np + 1, sizeof(int));
    if (!f->off_h || !f->decay_h || !f->seg_par)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter layout");
    int64_t off = 0;
    for (int b = 0; b <= rt->nlc; b++) {
        int want = b < rt->nlc ? b : -1;
        int64_t first = off;
        for (int i = 0; i < np; i++) {
            rt_param_t *p = &rt->par[i];
            if (param_bucket(rt, p) != want)
                continue;
            p->off = f->off_h[k] = off;
            f->decay_h[k] = bg_graph_param(rt->g, p->p)->desc.shape.ndim >= 2;
            f->seg_par[k++] = i;
            if (p->n > INT64_MAX - off - RT_FLAT_ALIGN)
                return bg_errorf(BG_ERR_INVALID, "parameters do not fit one flat buffer");
            off += (p->n + RT_FLAT_ALIGN - 1) / RT_FLAT_ALIGN * RT_FLAT_ALIGN;
        }
        if (b < rt->nlc)
            rt->lc[b].f0 = first, rt->lc[b].grad_len = (size_t)(off - first);
        else
            f->t0 = first;
    }
    f->off_h[np] = f->n = off;
    bg_status_t st = bg_rt_segs_make_(rt, np, f->off_h, f->decay_h, &f->segs_dev, &f->segs);
    return st == BG_OK ? bg_rt_zero_setup_(rt) : st;
}

/* The flat buffers, their host mirrors (without ZeRO), and every
 * parameter's views. */
static bg_status_t flat_setup(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    bg_status_t st = flat_layout(rt);
    size_t nst = (size_t)bg_optim_state_count(rt->conf.optim.kind);
    bool cpu = rt->dev == BG_DEV_CPU;
    size_t zbytes = (size_t)f->zn * 4; /* master and state: the update ranges' parts */
    if (st == BG_OK)
        st = flat_alloc(rt, zbytes, (void **)&f->master);
    for (size_t s = 0; s < nst && st == BG_OK; s++)
        st = flat_alloc(rt, zbytes, (void **)&f->state[s]);
    if (st == BG_OK)
        st = flat_alloc(rt, (size_t)f->n * 4, (void **)&f->grad);
    if (st == BG_OK)
        st = rt_dalloc(rt, sizeof(float) * ((size_t)rt->nparam + 1), (void **)&f->ssq_dev);
    if (st != BG_OK)
        return st;
    f->ssq_h = cpu ? f->ssq_dev : malloc(sizeof(float) * ((size_t)rt->nparam + 1));
    if (!f->ssq_h)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the gradient norm");
    if (!f->zero && cpu) {
        f->host_master = f->master;
        for (size_t s = 0; s < nst; s++)
            f->host_state[s] = f->state[s];
    } else if (!f->zero) {
        f->host_own = true;
        f->host_master = calloc(zbytes + 4, 1);
        for (size_t s = 0; s < nst; s++)
            f->host_state[s] = calloc(zbytes + 4, 1);
        if (!f->host_master || (nst && !f->host_state[nst - 1]) || !f->host_state[0])
            return bg_errorf(BG_ERR_NOMEM, "out of memory for the host copy of the parameters");
    }
    if (cpu && rt->conf.dtype == BG_F32 && !f->zero)
        f->dev = f->master;
    else if ((st = flat_alloc(rt, (size_t)f->n * bg_dtype_size(rt->conf.dtype), &f->dev)) != BG_OK)
        return st;
    bg_rt_views_point_(rt);
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        p->dev = (char *)f->dev + (size_t)p->off * bg_dtype_size(rt->conf.dtype);
    }
    return BG_OK;
}

/* Host mirrors <-> backend buffers without ZeRO (no-ops on the CPU: they
 * are one). */
static bg_status_t params_mirror(bg_rt_t *rt, bg_copy_kind_t kind)
{
    rt_flat_t *f = &rt->flat;
    if (!f->host_own)
        return BG_OK;
    size_t bytes = (size_t)f->n * 4;
    bool up = kind == BG_COPY_H2D;
    bg_status_t st =
        bg_backend_copy(rt->conf.be, up ? (void *)f->master : f->host_master,
                        up ? (void *)f->host_master : f->master, bytes, kind, rt->compute);
    for (int s = 0; s < bg_optim_state_count(rt->conf.optim.kind) && st == BG_OK; s++)
        st = bg_backend_copy(rt->conf.be, up ? (void *)f->state[s] : f->host_state[s],
                             up ? (void *)f->host_state[s] : f->state[s], bytes, kind, rt->compute);
    return st;
}

/* Host views -> backend buffers -> compute copy, then wait. */
static bg_status_t params_push(bg_rt_t *rt)
{
    bg_status_t st = params_mirror(rt, BG_COPY_H2D);
    if (st == BG_OK)
        st = bg_rt_params_cast_(rt);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}

/* Every held parameter's initial value, written into the host view and
 * pushed to the backend. */
static bg_status_t params_init(bg_rt_t *rt)
{
    if (rt->flat.zero)
        return bg_rt_zero_init_(rt);
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
        bg_param_init_host(&gp->desc, gp->name, rt->conf.seed, p->master);
    }
    return params_push(rt);
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
        if (st != BG_OK)
            return st;
    }
    bg_status_t st = flat_setup(rt);
    return st == BG_OK ? params_init(rt) : st;
}

void bg_rt_params_free_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    for (int i = 0; rt->par && i < rt->nparam; i++)
        free(rt->par[i].remote_rank);
    if (f->host_own) /* otherwise NULL or aliases of backend memory */
        free(f->host_master), free(f->host_state[0]), free(f->host_state[1]);
    if (rt->dev != BG_DEV_CPU)
        free(f->ssq_h);
    bg_rt_zero_free_(rt);
    free(f->off_h), free(f->decay_h), free(f->seg_par);
    free(rt->par), free(rt->param_local), free(rt->uacc_dev), free(rt->uacc_host);
}

/* ZeRO-1 has no full views: its state moves by shards (bg_rt_shard_*). */
static bg_status_t refuse_sharded(bg_rt_t *rt, const char *what)
{
    return bg_rt_err_(rt, bg_errorf(BG_ERR_INTERNAL,
                                    "%s: under ZeRO-1 the state is sharded; use the shard copies",
                                    what));
}

bg_status_t bg_rt_params_upload(bg_rt_t *rt)
{
    if (rt->flat.zero)
        return refuse_sharded(rt, "params upload");
    bg_status_t st = params_push(rt);
    if (st == BG_OK)
        rt->weights_set++; /* 2bw restarts its versions from these: W(-1) = W(0) */
    return st == BG_OK ? BG_OK : bg_rt_err_(rt, st);
}

bg_status_t bg_rt_params_download(bg_rt_t *rt)
{
    if (rt->flat.zero)
        return refuse_sharded(rt, "params download");
    bg_status_t st = params_mirror(rt, BG_COPY_D2H);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    return st == BG_OK ? BG_OK : bg_rt_err_(rt, st);
}

float bg_rt_loss_scale(const bg_rt_t *rt, int64_t *good)
{
    *good = rt->scale_good;
    return rt->conf.loss_scale > 0 ? rt->loss_scale : 0.0f;
}

bg_status_t bg_rt_loss_scale_set(bg_rt_t *rt, float scale, int64_t good)
{
    if (!(scale > 0.0f) || isinf(scale))
        return bg_errorf(BG_ERR_INVALID, "loss scale %g: must be positive and finite",
                         (double)scale);
    rt->loss_scale = scale;
    rt->scale_good = good > 0 ? good : 0;
    return bg_rt_dloss_upload_(rt);
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

bg_status_t bg_rt_dloss_upload_(bg_rt_t *rt)
{
    /* d(objective)/d(loss of one micro-batch): the mean over all of the
     * step's micro-batches, on every replica, times the loss scale. */
    float dl = 1.0f / (float)(bg_sched_microbatches(rt->conf.sched) * rt->conf.dps);
    dl *= rt->loss_scale;
    bg_status_t st = bg_backend_copy(rt->conf.be, rt->dloss, &dl, 4, BG_COPY_H2D, rt->compute);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}
