/*
 * engine/runtime_grad.c -- the data-parallel gradient sync and the
 * OPTIMIZER action.
 *
 * Starts each chunk's sync when ALLREDUCE runs (one function per mode:
 * allreduce, or ZeRO-1's reduce-scatter), waits for them at OPTIMIZER, folds
 * the users of parameters with several users into their range of the flat
 * gradient buffer (exchanging accumulators with the other pipeline ranks
 * holding a tied copy; a parameter with one user accumulates in its range
 * directly), computes the layout-independent global norm, skips the step
 * when loss-scaled gradients overflowed, clips, runs the fused optimizer
 * over the update ranges and casts the masters to the compute copy, all on
 * the rank's backend (the host reads one float per parameter), then zeroes
 * the accumulators. Any step can fail (transport, device, out of memory); the
 * parameters are then partly updated and the run must stop.
 * Must NOT change the order of any sum (docs/engine.md, "Numerics do not
 * depend on the layout").
 */
#include <math.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

/* The bucket's allreduce: every replica ends with the whole sum. */
static bg_status_t dp_sync_allreduce(bg_rt_t *rt, rt_chunk_t *ch, float *grad)
{
    return bg_tp_allreduce_start(rt->dp_group, grad, ch->grad_len, BG_TP_F32, BG_TP_SUM, rt->mem,
                                 &ch->ar);
}

/* ZeRO-1: the bucket's reduce-scatter: each replica ends with its shard's
 * sum (the allreduce's bits there); the rest is scratch until zeroed. */
static bg_status_t dp_sync_reduce_scatter(bg_rt_t *rt, rt_chunk_t *ch, float *grad)
{
    return bg_tp_reduce_scatter_start(rt->dp_group, grad, ch->grad_len, BG_TP_F32, BG_TP_SUM,
                                      rt->mem, &ch->ar);
}

/* `grad` and `tied` are the chunk's buckets as of the issue: 2bw switches
 * gradient sets between the issue and the start. */
bg_status_t bg_rt_dp_sync_start_(bg_rt_t *rt, int lci, float *grad, float *tied)
{
    rt_chunk_t *ch = &rt->lc[lci];
    bg_status_t st = BG_OK;
    if (ch->grad_len)
        st = rt->flat.zero ? dp_sync_reduce_scatter(rt, ch, grad) : dp_sync_allreduce(rt, ch, grad);
    if (st == BG_OK && ch->tied_len) /* every replica folds tied users whole */
        st = bg_tp_allreduce_start(rt->dp_group, tied, ch->tied_len, BG_TP_F32, BG_TP_SUM,
                                   rt->mem, &ch->ar_tied);
    return st;
}

/* Wait for every chunk's data-parallel sync. */
static bg_status_t allreduces_wait(bg_rt_t *rt)
{
    bg_status_t st = BG_OK;
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        if (!ch->ar && !ch->ar_tied)
            continue;
        double t0 = bg_now_s();
        bg_status_t s1 = ch->ar ? bg_tp_coll_wait(ch->ar, rt->conf.timeout_s) : BG_OK;
        bg_status_t s2 = ch->ar_tied ? bg_tp_coll_wait(ch->ar_tied, rt->conf.timeout_s) : BG_OK;
        if (!rt->eval)
            bg_rt_event_wait_(rt, ch->c, t0, bg_now_s()); /* the trace's wait slice */
        ch->ar = ch->ar_tied = NULL;
        if (st == BG_OK)
            st = s1 != BG_OK ? s1 : s2;
    }
    return st;
}

/* The local users' accumulators of parameters tied across ranks, to the
 * host for the exchange (a no-op on the CPU: they are host memory). */
static bg_status_t tied_to_host(bg_rt_t *rt)
{
    if (rt->dev == BG_DEV_CPU)
        return BG_OK;
    bool any = false;
    bg_status_t st = BG_OK;
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        const rt_param_t *p = &rt->par[i];
        const bg_net_param_t *np = &rt->net->params[p->p];
        for (int u = 0; p->n_remote && u < np->n_users && st == BG_OK; u++) {
            int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
            if (rt_local_of(rt, rt->net->layer_chunk[np->users[u]]) < 0)
                continue;
            st = bg_backend_copy(rt->conf.be, rt->uacc_host[key], rt->uacc_dev[key],
                                 (size_t)p->n * 4, BG_COPY_D2H, rt->compute);
            any = true;
        }
    }
    if (st == BG_OK && any)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    return st;
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

/* A remote user's accumulator where the backend can read it: the host
 * buffer itself on the CPU, a staged copy (freed by the caller) elsewhere. */
static bg_status_t remote_on_backend(bg_rt_t *rt, const float *host, int64_t n, const float **out)
{
    if (rt->dev == BG_DEV_CPU) {
        *out = host;
        return BG_OK;
    }
    void *d = NULL;
    bg_status_t st = rt_dalloc(rt, (size_t)n * 4, &d);
    if (st == BG_OK)
        st = bg_backend_copy(rt->conf.be, d, host, (size_t)n * 4, BG_COPY_H2D, rt->compute);
    if (st == BG_OK)
        *out = d;
    else
        bg_rt_dfree_(rt, d);
    return st;
}

/* Parameter p's gradient into its range of the flat gradient buffer, on
 * the backend: the only user's accumulator copied, or the fold of its
 * users' accumulators in ascending layer order (elementwise f32 adds: the
 * same bits on every backend). */
static bg_status_t fold_param(bg_rt_t *rt, const rt_param_t *p, float *const *remote)
{
    const bg_net_param_t *np = &rt->net->params[p->p];
    float *g = rt->flat.grad + p->off;
    bg_status_t st = BG_OK;
    for (int u = 0; u < np->n_users && st == BG_OK; u++) {
        int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
        const float *acc = rt->uacc_dev[key];
        if (remote[key] && (st = remote_on_backend(rt, remote[key], p->n, &acc)) != BG_OK)
            break;
        if (u == 0)
            st = bg_backend_copy(rt->conf.be, g, acc, (size_t)p->n * 4, BG_COPY_D2D, rt->compute);
        else
            st = bg_step_add(rt->conf.be, rt->compute, g, acc, p->n);
        if (acc != rt->uacc_dev[key] && rt->dev != BG_DEV_CPU)
            bg_rt_dfree_(rt, (void *)acc);
    }
    return st;
}

/* Fold the users of every held parameter with several users into the
 * flat gradient buffer, exchanging accumulators with the other pipeline
 * ranks that hold a tied copy (a parameter with one user accumulated in
 * its range already). */
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
    for (int i = 0; i < rt->nparam && st == BG_OK; i++)
        if (rt->net->params[rt->par[i].p].n_users > 1)
            st = fold_param(rt, &rt->par[i], x.remote);
    for (size_t k = 0; k < nkeys; k++)
        free(x.remote[k]);
    free(x.remote);
    free(x.req);
    return st;
}

/* Global gradient norm (of the scaled gradients): each parameter's sum of
 * squares (double, fixed chunks, then f32) computed on the backend by its
 * owner stage (under ZeRO-1 by one replica of it, over the whole reduced
 * gradient: bg_rt_zero_norm_pieces_), summed over the pipeline in global
 * parameter order. Every other contribution to an entry is 0, so the
 * replicas' and stages' sums are exact and the bits are zero-0's. */
static bg_status_t global_norm(bg_rt_t *rt, double *out)
{
    rt_flat_t *f = &rt->flat;
    int np = rt->net->n_params;
    unsigned char *keep = malloc((size_t)rt->nparam + 1);
    if (!keep)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the gradient norm");
    bg_status_t st = bg_rt_zero_norm_pieces_(rt, keep);
    if (st == BG_OK)
        st = bg_step_sumsq(rt->conf.be, rt->compute, &f->segs, f->grad, f->ssq_dev);
    if (st == BG_OK && f->ssq_h != f->ssq_dev)
        st = bg_backend_copy(rt->conf.be, f->ssq_h, f->ssq_dev, sizeof(float) * (size_t)rt->nparam,
                             BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    float *ss = st == BG_OK ? calloc((size_t)np + 1, sizeof(float)) : NULL;
    if (st != BG_OK || !ss) {
        free(keep);
        return st != BG_OK ? st : bg_errorf(BG_ERR_NOMEM, "out of memory for the gradient norm");
    }
    for (int k = 0; k < rt->nparam; k++)
        if (keep[k] && rt->par[f->seg_par[k]].owned)
            ss[rt->par[f->seg_par[k]].p] = f->ssq_h[k];
    free(keep);
    if (f->zero)
        st = bg_tp_allreduce(rt->dp_group, ss, (size_t)np, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                             rt->conf.timeout_s);
    if (st == BG_OK && rt->pp_group && rt->conf.stages > 1)
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

/* Zero every chunk's accumulators for the next step. */
static bg_status_t buckets_zero(bg_rt_t *rt)
{
    bg_status_t st = BG_OK;
    for (int i = 0; i < rt->nlc && st == BG_OK; i++) {
        const rt_chunk_t *ch = &rt->lc[i];
        if (ch->grad_len)
            st = bg_backend_memset(rt->conf.be, ch->grad_dev, 0, ch->grad_len * 4, rt->compute);
        if (st == BG_OK && ch->tied_len)
            st = bg_backend_memset(rt->conf.be, ch->tied_dev, 0, ch->tied_len * 4, rt->compute);
    }
    return st;
}

/* Loss scaling after a step: an overflow halves a dynamic scale; enough
 * good steps in a row double it (up to 2^24, where f32 gradients of any
 * useful loss overflow anyway). */
static bg_status_t scale_adjust(bg_rt_t *rt, bool overflow)
{
    if (!rt->conf.scale_dynamic)
        return BG_OK;
    int64_t window = rt->conf.scale_window > 0 ? rt->conf.scale_window : 2000;
    float s = rt->loss_scale;
    if (overflow)
        s = s * 0.5f > 1.0f / 16777216.0f ? s * 0.5f : s;
    else if (++rt->scale_good >= window)
        s = s * 2.0f <= 16777216.0f ? s * 2.0f : s;
    if (s == rt->loss_scale) {
        if (overflow || rt->scale_good >= window)
            rt->scale_good = 0;
        return BG_OK;
    }
    rt->loss_scale = s;
    rt->scale_good = 0;
    return bg_rt_dloss_upload_(rt);
}

/* The update itself, on the backend: fused optimizer over each update
 * range (everything, or this replica's ZeRO-1 shards: the update is
 * elementwise, so a shard's bits are the whole's), then the compute copy
 * from the new masters (all-gathered under ZeRO-1). */
static bg_status_t apply_update(bg_rt_t *rt, int64_t step, float lr, float gscale)
{
    rt_flat_t *f = &rt->flat;
    bg_step_args_t a;
    bg_optim_step_args(&rt->conf.optim, step, lr, gscale, &a);
    bg_status_t st = BG_OK;
    for (int r = 0; r < f->nz && st == BG_OK; r++) {
        const rt_zrange_t *z = &f->zr[r];
        if (z->slen)
            st = bg_step_update(rt->conf.be, rt->compute, &a, &z->segs, f->master + z->c0,
                                f->grad + z->s0, f->state[0] ? f->state[0] + z->c0 : NULL,
                                f->state[1] ? f->state[1] + z->c0 : NULL);
    }
    return st == BG_OK ? bg_rt_params_cast_next_(rt) : st;
}

/* After an update (or a skipped one): the loss scale, zeroed buckets. */
static bg_status_t step_end(bg_rt_t *rt, bool overflow)
{
    bg_status_t st = rt->conf.loss_scale > 0 ? scale_adjust(rt, overflow) : BG_OK;
    if (st == BG_OK)
        st = buckets_zero(rt);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}

bg_status_t bg_rt_optimizer_(bg_rt_t *rt, int64_t step)
{
    bg_status_t st = BG_OK;
    bool overflow = false;
    if (rt->conf.ps.servers > 0) { /* parameter servers update (runtime_ps.c) */
        st = bg_rt_ps_step_(rt, step, &overflow);
        return st == BG_OK ? step_end(rt, overflow) : st;
    }
    st = allreduces_wait(rt);
    if (st == BG_OK)
        st = tied_to_host(rt);
    if (st == BG_OK)
        st = fold_param_grads(rt);
    double norm = 0;
    if (st == BG_OK)
        st = global_norm(rt, &norm);
    if (st != BG_OK)
        return st;
    const bg_optim_conf_t *oc = &rt->conf.optim;
    float scale = rt->loss_scale, lr = bg_optim_lr(oc, step);
    bool scaling = rt->conf.loss_scale > 0;
    overflow = scaling && !isfinite(norm);
    rt->stats->lr = lr;
    rt->stats->loss_scale = scale;
    rt->stats->skipped = overflow;
    rt->stats->grad_norm = overflow ? 0.0 : norm / scale;
    if (!overflow)
        st = apply_update(rt, step, lr, bg_optim_clip_scale(oc, norm / scale) / scale);
    return st == BG_OK ? step_end(rt, overflow) : st;
}

/* This chunk's uses of parameters with several users: their accumulators,
 * contiguous (held parameters in order, their local users in order), and
 * the host mirror the tied-weight exchange reads. */
static bg_status_t tied_setup(bg_rt_t *rt, rt_chunk_t *ch)
{
    const bg_net_t *n = rt->net;
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        for (int i = 0; i < rt->nparam; i++) {
            const rt_param_t *p = &rt->par[i];
            const bg_net_param_t *np = &n->params[p->p];
            for (int u = 0; np->n_users > 1 && u < np->n_users; u++) {
                if (n->layer_chunk[np->users[u]] != ch->c)
                    continue;
                int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
                if (pass) {
                    rt->uacc_dev[key] = ch->tied_dev + off;
                    rt->uacc_host[key] = ch->tied_host + off;
                }
                off += (size_t)p->n;
            }
        }
        if (pass || !(ch->tied_len = off))
            return BG_OK;
        bg_status_t st = rt_dalloc(rt, off * 4 + 4, (void **)&ch->tied_dev);
        if (st == BG_OK)
            st = bg_backend_memset(rt->conf.be, ch->tied_dev, 0, off * 4, rt->compute);
        if (st != BG_OK)
            return st;
        ch->tied_host = rt->dev == BG_DEV_CPU ? ch->tied_dev : malloc(off * 4 + 4);
        if (!ch->tied_host)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for chunk %d's tied gradients", ch->c);
    }
    return BG_OK;
}

/* Each local chunk's bucket is its range of the flat gradient buffer, and
 * a parameter with one user accumulates in its own range there; the uses
 * of parameters with several users get accumulators of their own
 * (tied_setup). */
bg_status_t bg_rt_buckets_setup_(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        ch->grad_dev = rt->flat.grad + ch->f0;
        bg_status_t st = tied_setup(rt, ch);
        if (st != BG_OK)
            return st;
    }
    for (int i = 0; i < rt->nparam; i++) {
        const rt_param_t *p = &rt->par[i];
        const bg_net_param_t *np = &rt->net->params[p->p];
        if (np->n_users == 1)
            rt->uacc_dev[np->users[0] * BG_MAX_PARAMS + np->user_slot[0]] = rt->flat.grad + p->off;
    }
    return BG_OK;
}
