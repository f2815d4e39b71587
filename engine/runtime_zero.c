/*
 * engine/runtime_zero.c -- ZeRO-1 (docs/engine.md, "ZeRO-1"): within a
 * stage's D replicas, each keeps the f32 masters and optimizer state of
 * its shard of the flat buffer only, [z0, z1) with the transport's shard
 * boundaries (bg_tp_shard_offset over the flat buffer's n elements, shard
 * index = replica), updates that shard and all-gathers the compute copy.
 * Checkpoints see full views: a gather assembles them from the shards
 * before a save, a scatter hands each replica its shard after a load.
 *
 * The gradients stay whole (the data-parallel allreduce, the tied folds
 * and the global norm are zero-0's, so the bits are too): only what the
 * update reads and writes is sharded, and an update is elementwise.
 * Must NOT change any sum or its order (runtime_grad.c owns them), nor
 * decide when to gather (the checkpoint code calls download/upload).
 */
#include <stdlib.h>
#include <string.h>

#include "engine/runtime_impl.h"

bg_status_t bg_rt_zero_setup_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    f->zero = rt->conf.zero > 0 && rt->conf.dps > 1;
    f->z0 = 0;
    f->z1 = f->n;
    f->zsegs = f->segs;
    if (!f->zero)
        return BG_OK;
    int D = rt->conf.dps, np = rt->nparam, k = 0;
    f->z0 = (int64_t)bg_tp_shard_offset((size_t)f->n, D, rt->conf.dp);
    f->z1 = (int64_t)bg_tp_shard_offset((size_t)f->n, D, rt->conf.dp + 1);
    f->zoff_h = malloc(sizeof(int64_t) * ((size_t)np + 1));
    uint8_t *decay = calloc((size_t)np + 1, 1);
    if (!f->zoff_h || !decay) {
        free(decay);
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the ZeRO shard's layout");
    }
    /* the parameters' ranges tile [0, n), so their cuts tile [z0, z1) */
    for (int i = 0; i < np; i++) {
        int64_t a = f->off_h[i] > f->z0 ? f->off_h[i] : f->z0;
        int64_t b = f->off_h[i + 1] < f->z1 ? f->off_h[i + 1] : f->z1;
        if (a >= b)
            continue;
        f->zoff_h[k] = a - f->z0;
        decay[k++] = f->decay_h[i];
    }
    f->zoff_h[k] = f->z1 - f->z0;
    bg_status_t st = bg_rt_segs_make_(rt, k, f->zoff_h, decay, &f->zsegs_dev, &f->zsegs);
    free(decay);
    return st;
}

void bg_rt_zero_free_(bg_rt_t *rt)
{
    free(rt->flat.zoff_h);
    rt->flat.zoff_h = NULL;
}

/* Transport dtype moving elements of the compute dtype: an all-gather only
 * copies, so any 2-byte type travels as BF16. */
static bg_tp_dtype_t gather_dtype(bg_dtype_t dt)
{
    return bg_dtype_size(dt) == 4 ? BG_TP_F32 : BG_TP_BF16;
}

bg_status_t bg_rt_zero_allgather_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    if (!f->zero)
        return BG_OK;
    bg_status_t st = bg_stream_synchronize(rt->conf.be, rt->compute); /* the cast wrote it */
    if (st == BG_OK)
        st = bg_tp_allgather(rt->dp_group, f->dev, (size_t)f->n, gather_dtype(rt->conf.dtype),
                             rt->mem, rt->conf.timeout_s);
    return st;
}

/* Full host views (masters, and the state when `with_state`), zeroed, of
 * the gather's own; views pointed at them. */
static bg_status_t views_alloc(bg_rt_t *rt, bool with_state)
{
    rt_flat_t *f = &rt->flat;
    size_t bytes = (size_t)f->n * 4 + 4;
    int nst = with_state ? bg_optim_state_count(rt->conf.optim.kind) : 0;
    f->host_own = true;
    if (!f->host_master)
        f->host_master = calloc(bytes, 1);
    for (int s = 0; s < nst; s++)
        if (!f->host_state[s])
            f->host_state[s] = calloc(bytes, 1);
    bg_rt_views_point_(rt);
    if (!f->host_master || (nst && !f->host_state[nst - 1]) || (nst && !f->host_state[0]))
        return bg_errorf(BG_ERR_NOMEM,
                         "out of memory for the full host copy of %lld parameter elements "
                         "(ZeRO-1 gather)",
                         (long long)f->n);
    return BG_OK;
}

/* Free the full views (ZeRO-1); views become NULL. Cannot fail. */
static void views_release(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    if (!f->zero || !f->host_own)
        return;
    free(f->host_master), free(f->host_state[0]), free(f->host_state[1]);
    f->host_master = f->host_state[0] = f->host_state[1] = NULL;
    f->host_own = false;
    bg_rt_views_point_(rt);
}

bg_status_t bg_rt_zero_init_views_(bg_rt_t *rt)
{
    return rt->flat.zero ? views_alloc(rt, false) : BG_OK;
}

/* The shard buffers (master, then each state) and their full host views. */
static int shard_pairs(bg_rt_t *rt, float **dev, float **host)
{
    rt_flat_t *f = &rt->flat;
    int n = 0;
    dev[n] = f->master, host[n++] = f->host_master;
    for (int s = 0; s < bg_optim_state_count(rt->conf.optim.kind); s++)
        dev[n] = f->state[s], host[n++] = f->host_state[s];
    return n;
}

bg_status_t bg_rt_optstate_gather_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    bg_status_t st = views_alloc(rt, true);
    float *dev[3], *host[3];
    int n = shard_pairs(rt, dev, host);
    size_t zb = (size_t)(f->z1 - f->z0) * 4;
    for (int i = 0; i < n && st == BG_OK; i++)
        st = bg_backend_copy(rt->conf.be, host[i] + f->z0, dev[i], zb, BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    for (int i = 0; i < n && st == BG_OK; i++)
        st = bg_tp_allgather(rt->dp_group, host[i], (size_t)f->n, BG_TP_F32, BG_TP_MEM_HOST,
                             rt->conf.timeout_s);
    return st;
}

bg_status_t bg_rt_optstate_scatter_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    float *dev[3], *host[3];
    int n = shard_pairs(rt, dev, host);
    size_t zb = (size_t)(f->z1 - f->z0) * 4;
    bg_status_t st = BG_OK;
    for (int i = 0; i < n && st == BG_OK; i++)
        if (host[i]) /* no state views after initialisation: the shards stay zero */
            st = bg_backend_copy(rt->conf.be, dev[i], host[i] + f->z0, zb, BG_COPY_H2D,
                                 rt->compute);
    if (st == BG_OK)
        st = bg_rt_params_cast_(rt); /* waits for the device, then all-gathers */
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    if (st == BG_OK)
        views_release(rt);
    return st;
}

void bg_rt_params_release(bg_rt_t *rt)
{
    views_release(rt);
}
