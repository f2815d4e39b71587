/*
 * engine/runtime_grad.c -- the OPTIMIZER action: gradient sync and the
 * optimizer step.
 *
 * Waits for the chunks' data-parallel allreduces, brings the buckets to
 * the host, folds each parameter's users into its gradient (exchanging
 * accumulators with the other pipeline ranks holding a tied copy), computes
 * the layout-independent global norm, clips, updates the f32 masters and
 * uploads them, then zeroes the buckets. Any step can fail (transport,
 * device, out of memory); the parameters are then partly updated and the
 * run must stop.
 * Must NOT change the order of any sum (docs/engine.md, "Numerics do not
 * depend on the layout").
 */
#include <math.h>
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

static bg_status_t grads_to_host(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        if (ch->ar) {
            bg_status_t st = bg_tp_coll_wait(ch->ar, rt->conf.timeout_s);
            ch->ar = NULL;
            if (st != BG_OK)
                return st;
        }
        if (ch->grad_host != ch->grad_dev && ch->grad_len) {
            bg_status_t st = bg_backend_copy(rt->conf.be, ch->grad_host, ch->grad_dev,
                                             ch->grad_len * 4, BG_COPY_D2H, rt->compute);
            if (st == BG_OK)
                st = bg_stream_synchronize(rt->conf.be, rt->compute);
            if (st != BG_OK)
                return st;
        }
    }
    return BG_OK;
}

/* Requests of one tied-gradient exchange, grown as they are posted. */
typedef struct exchange {
    bg_tp_req_t **req;
    size_t n, cap;
    float **remote; /* [layer * BG_MAX_PARAMS + slot]: other ranks' accumulators */
} exchange_t;

static bg_status_t exchange_slot(exchange_t *x)
{
    if (bg_grow(&x->req, &x->cap, x->n + 1, sizeof(*x->req)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory exchanging tied gradients");
    x->req[x->n] = NULL;
    return BG_OK;
}

/* Tied parameter p: every local user's accumulator goes to the other
 * holders; the remote users' accumulators come here. */
static bg_status_t exchange_param(bg_rt_t *rt, const rt_param_t *p, exchange_t *x)
{
    const bg_net_t *n = rt->net;
    const bg_net_param_t *np = &n->params[p->p];
    bg_status_t st = BG_OK;
    for (int u = 0; u < np->n_users && st == BG_OK; u++) {
        int l = np->users[u], slot = np->user_slot[u];
        uint64_t tag;
        if ((st = bg_tag_param(u, p->p, &tag)) != BG_OK)
            break;
        if (rt_local_of(rt, n->layer_chunk[l]) >= 0) {
            for (int k = 0; k < p->n_remote && st == BG_OK; k++)
                if ((st = exchange_slot(x)) == BG_OK)
                    st = bg_tp_send(rt->conf.tp, p->remote_rank[k], tag,
                                    rt->uacc_host[l * BG_MAX_PARAMS + slot], (size_t)p->n * 4,
                                    BG_TP_MEM_HOST, &x->req[x->n++]);
            continue;
        }
        float *buf = malloc((size_t)p->n * 4);
        if (!buf)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for tied gradients");
        x->remote[l * BG_MAX_PARAMS + slot] = buf;
        if ((st = exchange_slot(x)) == BG_OK)
            st = bg_tp_recv(rt->conf.tp, rt_rank_of_chunk(rt, n->layer_chunk[l]), tag, buf,
                            (size_t)p->n * 4, BG_TP_MEM_HOST, &x->req[x->n++]);
    }
    return st;
}

/* Every held parameter's gradient: the fold of its users' accumulators in
 * ascending layer order, or the only user's accumulator itself. */
static void fold_users(bg_rt_t *rt, float *const *remote)
{
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        const bg_net_param_t *np = &rt->net->params[p->p];
        if (np->n_users == 1) { /* the common case: no copy */
            p->gview = rt->uacc_host[np->users[0] * BG_MAX_PARAMS + np->user_slot[0]];
            continue;
        }
        for (int u = 0; u < np->n_users; u++) {
            int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
            const float *acc = remote[key] ? remote[key] : rt->uacc_host[key];
            if (u == 0)
                memcpy(p->grad, acc, (size_t)p->n * 4);
            else
                for (int64_t e = 0; e < p->n; e++)
                    p->grad[e] += acc[e];
        }
        p->gview = p->grad;
    }
}

/* Fold every held parameter's users into its gradient, exchanging
 * accumulators with the other pipeline ranks that hold a tied copy. */
static bg_status_t fold_param_grads(bg_rt_t *rt)
{
    size_t nkeys = (size_t)rt->net->n_layers * BG_MAX_PARAMS;
    exchange_t x = {NULL, 0, 0, calloc(nkeys + 1, sizeof(float *))};
    bg_status_t st = BG_OK;
    if (!x.remote)
        return bg_errorf(BG_ERR_NOMEM, "out of memory folding gradients");
    for (int i = 0; i < rt->nparam && st == BG_OK; i++)
        if (rt->par[i].n_remote)
            st = exchange_param(rt, &rt->par[i], &x);
    for (size_t k = 0; k < x.n; k++) {
        if (!x.req[k])
            continue;
        bg_status_t s2 = st == BG_OK ? bg_tp_wait(rt->conf.tp, x.req[k], rt->conf.timeout_s)
                                     : (bg_tp_cancel(rt->conf.tp, x.req[k]), BG_OK);
        if (st == BG_OK)
            st = s2;
    }
    if (st == BG_OK)
        fold_users(rt, x.remote);
    for (size_t k = 0; k < nkeys; k++)
        free(x.remote[k]);
    free(x.remote);
    free(x.req);
    return st;
}

/* Global gradient norm: each parameter's sum of squares (double, then f32)
 * from its owner, summed over the pipeline in global parameter order. */
static bg_status_t global_norm(bg_rt_t *rt, double *out)
{
    int np = rt->net->n_params;
    float *ss = calloc((size_t)np + 1, sizeof(float));
    if (!ss)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the gradient norm");
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        if (!p->owned)
            continue;
        double s = 0;
        for (int64_t e = 0; e < p->n; e++)
            s += (double)p->gview[e] * (double)p->gview[e];
        ss[p->p] = (float)s;
    }
    bg_status_t st = BG_OK;
    if (rt->pp_group && rt->conf.stages > 1)
        st = bg_tp_allreduce(rt->pp_group, ss, (size_t)np, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                             rt->conf.timeout_s);
    double tot = 0;
    for (int p = 0; p < np; p++)
        tot += ss[p];
    free(ss);
    if (st == BG_OK)
        *out = sqrt(tot);
    return st;
}

bg_status_t bg_rt_optimizer_(bg_rt_t *rt, int64_t step)
{
    bg_status_t st = bg_rt_defer_progress_(rt, true);
    if (st == BG_OK)
        st = grads_to_host(rt);
    if (st == BG_OK)
        st = fold_param_grads(rt);
    double norm = 0;
    if (st == BG_OK)
        st = global_norm(rt, &norm);
    if (st != BG_OK)
        return st;
    const bg_optim_conf_t *oc = &rt->conf.optim;
    float lr = bg_optim_lr(oc, step), scale = bg_optim_clip_scale(oc, norm);
    rt->stats->grad_norm = norm;
    rt->stats->lr = lr;
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        rt_param_t *p = &rt->par[i];
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
        bg_optim_update_host(oc, step, lr, scale, gp->desc.shape.ndim >= 2, p->master, p->gview,
                             p->state[0], p->state[1], p->n);
        st = bg_rt_param_upload_(rt, p);
    }
    for (int i = 0; i < rt->nlc && st == BG_OK; i++)
        st = bg_backend_memset(rt->conf.be, rt->lc[i].grad_dev, 0, rt->lc[i].grad_len * 4,
                               rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    return st;
}

/* One contiguous accumulator region per local chunk (the allreduce bucket),
 * cut into one accumulator per (layer, parameter slot) in layer order. */
bg_status_t bg_rt_buckets_setup_(bg_rt_t *rt)
{
    bg_status_t st;
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        for (int l = ch->l0; l < ch->l1; l++) {
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
            for (int j = 0; j < gl->n_params; j++)
                ch->grad_len += (size_t)bg_shape_numel(&gl->slot[j].shape);
        }
        if ((st = rt_dalloc(rt, ch->grad_len * 4 + 4, (void **)&ch->grad_dev)) != BG_OK)
            return st;
        if ((st = bg_backend_memset(rt->conf.be, ch->grad_dev, 0, ch->grad_len * 4, rt->compute)) !=
            BG_OK)
            return st;
        ch->grad_host = rt->dev == BG_DEV_CPU ? ch->grad_dev : malloc(ch->grad_len * 4 + 4);
        if (!ch->grad_host)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for chunk %d's gradients", ch->c);
        size_t off = 0;
        for (int l = ch->l0; l < ch->l1; l++) {
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
            for (int j = 0; j < gl->n_params; j++) {
                rt->uacc_dev[l * BG_MAX_PARAMS + j] = ch->grad_dev + off;
                rt->uacc_host[l * BG_MAX_PARAMS + j] = ch->grad_host + off;
                off += (size_t)bg_shape_numel(&gl->slot[j].shape);
            }
        }
    }
    return BG_OK;
}
