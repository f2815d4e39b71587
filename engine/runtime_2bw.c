/*
 * engine/runtime_2bw.c -- what the executor adds for a flush-free schedule
 * (2bw, engine/schedule_2bw.c): two weight versions, micro-batches carried
 * over the step boundary, the one-step-delayed update and the drain.
 *
 * Semantics (docs/schedules.md, "2bw"): every micro-batch of step t runs F
 * and backward on W(t-1), the version stashed when it entered, and its W
 * adds to g_t; the OPTIMIZER at the end of step t+1's list applies it,
 * W(t+1) = W(t) - lr * g_t (the optimizer at step t), with W(-1) = W(0).
 * The flat buffers hold the newest version; the stash holds the one before,
 * in the compute dtype, at the same offsets. The update copies the newest
 * into the stash and then steps the flat buffers: never a third version.
 * Gradients: two sets of accumulators (buckets), g of even and of odd
 * steps; the executor's code sees one set, the active one, switched here
 * before each W, ALLREDUCE and OPTIMIZER.
 *
 * Slots: list micro-batch k (this step) is slot (t & 1) * m + k, carried
 * k >= m (previous step) slot ((t - 1) & 1) * m + k - m; transfers are
 * tagged by slot, so both ends agree across the boundary. Finished slots
 * close at the step's end, carried ones stay open.
 * Must NOT change anything for other schedules: every entry point is a
 * no-op (or the identity) when rt->tbw is NULL.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/runtime_impl.h"

/* One set of gradient accumulators: the flat gradient (every chunk's
 * bucket is a range of it), the tied users' buckets, and the per-use views
 * (the fields runtime_grad.c's bg_rt_buckets_setup_ sets). */
typedef struct {
    float *grad;                   /* flat gradient, rt->flat.n floats */
    float **grad_dev;              /* [nlc] */
    float **tied_dev, **tied_host; /* [nlc] */
    float **uacc_dev, **uacc_host; /* [layers * BG_MAX_PARAMS] */
} gset_t;

struct rt_2bw {
    int m;
    int64_t step;       /* the step being run (the drain: last step + 1) */
    int64_t newest;     /* version index of the weights in the flat buffers */
    bool fresh;         /* stash just refilled: the next step numbers the versions */
    unsigned weights_seen; /* rt->weights_set the stash was filled at */
    bool carry_live;    /* the last step left carried micro-batches open */
    bool drain;         /* running the drain: carried actions only */
    bool bad_version;   /* a slot asked for a version that is not held (a bug) */
    void *stash;        /* previous version, compute dtype, flat layout */
    gset_t set[2];      /* gradients of even / odd steps */
    int active;         /* the set the executor's fields point at */
    int *wc[2];         /* [nlc] W run into each set since it was last applied */
    int wtotal[2];
    unsigned char *pending; /* [2m * nlc] F ran, W (or BW) not yet */
};

/* Point the executor's gradient fields at set k. */
static void gset_use(bg_rt_t *rt, int k)
{
    rt_2bw_t *b = rt->tbw;
    gset_t *g = &b->set[k];
    rt->flat.grad = g->grad;
    for (int i = 0; i < rt->nlc; i++) {
        rt->lc[i].grad_dev = g->grad_dev[i];
        rt->lc[i].tied_dev = g->tied_dev[i];
        rt->lc[i].tied_host = g->tied_host[i];
    }
    rt->uacc_dev = g->uacc_dev;
    rt->uacc_host = g->uacc_host;
    b->active = k;
}

/* Remember the executor's current gradient fields as set k. */
static void gset_take(bg_rt_t *rt, int k)
{
    gset_t *g = &rt->tbw->set[k];
    g->grad = rt->flat.grad;
    for (int i = 0; i < rt->nlc; i++) {
        g->grad_dev[i] = rt->lc[i].grad_dev;
        g->tied_dev[i] = rt->lc[i].tied_dev;
        g->tied_host[i] = rt->lc[i].tied_host;
    }
    g->uacc_dev = rt->uacc_dev;
    g->uacc_host = rt->uacc_host;
}

/* The second set: a second flat gradient, and the buckets set up once more
 * into fresh view arrays. Whatever it got is recorded as set 1 even on
 * failure (freed with it). */
static bg_status_t gset_second(bg_rt_t *rt)
{
    rt_2bw_t *b = rt->tbw;
    size_t nv = (size_t)rt->net->n_layers * BG_MAX_PARAMS + 1, nc = (size_t)rt->nlc + 1;
    for (int k = 0; k < 2; k++) {
        gset_t *g = &b->set[k];
        g->grad_dev = calloc(nc, sizeof(float *));
        g->tied_dev = calloc(nc, sizeof(float *));
        g->tied_host = calloc(nc, sizeof(float *));
        if (!g->grad_dev || !g->tied_dev || !g->tied_host)
            return bg_errorf(BG_ERR_NOMEM, "2bw: out of memory");
    }
    gset_take(rt, 0);
    b->set[1].uacc_dev = calloc(nv, sizeof(float *));
    b->set[1].uacc_host = calloc(nv, sizeof(float *));
    if (!b->set[1].uacc_dev || !b->set[1].uacc_host)
        return bg_errorf(BG_ERR_NOMEM, "2bw: out of memory");
    rt->uacc_dev = b->set[1].uacc_dev, rt->uacc_host = b->set[1].uacc_host;
    for (int i = 0; i < rt->nlc; i++)
        rt->lc[i].tied_dev = rt->lc[i].tied_host = NULL;
    bg_status_t st = rt_dalloc(rt, (size_t)rt->flat.n * 4 + 4, (void **)&rt->flat.grad);
    if (st == BG_OK)
        st = bg_backend_memset(rt->conf.be, rt->flat.grad, 0, (size_t)rt->flat.n * 4,
                               rt->compute);
    if (st == BG_OK)
        st = bg_rt_buckets_setup_(rt);
    gset_take(rt, 1);
    gset_use(rt, 0);
    return st;
}

bg_status_t bg_rt_2bw_setup_(bg_rt_t *rt)
{
    if (!bg_sched_flush_free(rt->conf.sched))
        return BG_OK;
    rt_2bw_t *b = calloc(1, sizeof(*b));
    if (!b)
        return bg_errorf(BG_ERR_NOMEM, "2bw: out of memory");
    rt->tbw = b;
    b->m = bg_sched_microbatches(rt->conf.sched);
    b->wc[0] = calloc((size_t)rt->nlc + 1, sizeof(int));
    b->wc[1] = calloc((size_t)rt->nlc + 1, sizeof(int));
    b->pending = calloc((size_t)2 * b->m * (size_t)rt->nlc + 1, 1);
    if (!b->wc[0] || !b->wc[1] || !b->pending)
        return bg_errorf(BG_ERR_NOMEM, "2bw: out of memory");
    bg_status_t st = gset_second(rt);
    if (st == BG_OK)
        st = rt_dalloc(rt, (size_t)rt->flat.n * bg_dtype_size(rt->conf.dtype) + 4, &b->stash);
    b->weights_seen = rt->weights_set - 1; /* the first step fills the stash */
    return st;
}

void bg_rt_2bw_free_(bg_rt_t *rt)
{
    rt_2bw_t *b = rt->tbw;
    if (!b)
        return;
    if (b->set[0].uacc_dev) { /* set 0 taken: the executor frees it as its own */
        gset_use(rt, 0);
        for (int i = 0; b->set[1].tied_host && i < rt->nlc; i++)
            if (b->set[1].tied_host[i] != b->set[1].tied_dev[i])
                free(b->set[1].tied_host[i]);
    }
    free(b->set[1].uacc_dev), free(b->set[1].uacc_host);
    for (int k = 0; k < 2; k++)
        free(b->set[k].grad_dev), free(b->set[k].tied_dev), free(b->set[k].tied_host),
            free(b->wc[k]);
    free(b->pending);
    free(b);
    rt->tbw = NULL; /* device buffers (stash, buckets) belong to the cache */
}

/* stash := the flat buffers' compute copy. */
static bg_status_t stash_newest(bg_rt_t *rt)
{
    return bg_backend_copy(rt->conf.be, rt->tbw->stash, rt->flat.dev,
                           (size_t)rt->flat.n * bg_dtype_size(rt->conf.dtype), BG_COPY_D2D,
                           rt->compute);
}

/* The stash := the current weights, and the versions renumbered at the
 * next step (after create or an upload: W(-1) = W(0)). */
static bg_status_t restash(bg_rt_t *rt)
{
    rt->tbw->fresh = true;
    rt->tbw->weights_seen = rt->weights_set;
    return stash_newest(rt);
}

int bg_rt_2bw_slot_factor_(const bg_rt_t *rt)
{
    return rt->tbw ? 2 : 1;
}

bg_status_t bg_rt_2bw_begin_(bg_rt_t *rt, int64_t step, bool drain)
{
    rt_2bw_t *b = rt->tbw;
    if (!b)
        return BG_OK;
    bg_status_t st = BG_OK;
    if (b->weights_seen != rt->weights_set)
        st = restash(rt);
    if (b->fresh && !drain)
        b->newest = step; /* step `step` runs on W(step - 1), the stash */
    b->fresh = b->fresh && drain;
    b->step = step;
    b->drain = drain;
    return st;
}

/* Step whose micro-batch sits in slot id (0 <= id < 2m). */
static int64_t slot_step(const rt_2bw_t *b, int id)
{
    return (id / b->m) == (int)(b->step & 1) ? b->step : b->step - 1;
}

/* ALLREDUCE / OPTIMIZER of step t serve g_{t-1}: run only when some of
 * its W ran here and it is not applied yet (none in the first step, and a
 * step after a drain finds it applied). */
static int update_admit(bg_rt_t *rt, const bg_action_t *a)
{
    rt_2bw_t *b = rt->tbw;
    int g = (int)((b->step + 1) & 1), lci = rt_local_of(rt, a->chunk);
    if (a->kind == BG_ACT_ALLREDUCE && (lci < 0 || b->wc[g][lci] == 0))
        return 0;
    if (a->kind == BG_ACT_OPTIMIZER) {
        if (!b->wtotal[g])
            return 0;
        b->wtotal[g] = 0;
        memset(b->wc[g], 0, (size_t)rt->nlc * sizeof(int));
    }
    gset_use(rt, g);
    return 1;
}

int bg_rt_2bw_admit_(bg_rt_t *rt, const bg_action_t *a, bg_action_t *out)
{
    rt_2bw_t *b = rt->tbw;
    *out = *a;
    if (!b || rt->eval) /* an evaluation runs its own list on the drained weights */
        return 1;
    if (a->kind == BG_ACT_ALLREDUCE || a->kind == BG_ACT_OPTIMIZER)
        return update_admit(rt, a);
    int carried = a->mb >= b->m;
    if (carried ? !b->carry_live : b->drain)
        return 0;
    int k = carried ? a->mb - b->m : a->mb;
    int64_t t = carried ? b->step - 1 : b->step;
    out->mb = (int)(t & 1) * b->m + k;
    if (a->kind == BG_ACT_W || a->kind == BG_ACT_BW)
        gset_use(rt, (int)(t & 1)); /* g_t accumulates in set t & 1 */
    return 1;
}

void bg_rt_2bw_ran_(bg_rt_t *rt, const bg_action_t *a)
{
    rt_2bw_t *b = rt->tbw;
    int lci = rt_local_of(rt, a->chunk);
    if (!b || rt->eval || lci < 0 || !bg_act_is_compute(a->kind))
        return;
    size_t at = (size_t)a->mb * (size_t)rt->nlc + (size_t)lci;
    if (a->kind == BG_ACT_F)
        b->pending[at] = 1;
    if (a->kind == BG_ACT_W || a->kind == BG_ACT_BW) {
        int g = a->mb / b->m; /* the slot's parity is its step's */
        b->pending[at] = 0;
        b->wc[g][lci]++, b->wtotal[g]++;
    }
}

const void *bg_rt_2bw_param_dev_(bg_rt_t *rt, const rt_slot_t *s, const rt_param_t *p)
{
    rt_2bw_t *b = rt->tbw;
    if (!b || rt->eval)
        return p->dev;
    int64_t need = slot_step(b, s->mb) - 1;
    if (need == b->newest)
        return p->dev;
    if (need != b->newest - 1)
        b->bad_version = true;
    return (const char *)b->stash + ((const char *)p->dev - (const char *)rt->flat.dev);
}

bg_status_t bg_rt_2bw_optimizer_(bg_rt_t *rt, int64_t step)
{
    rt_2bw_t *b = rt->tbw;
    if (!b)
        return bg_rt_optimizer_(rt, step);
    /* The older version's last reader (a carried backward) has run; the
     * newest becomes the older one. */
    bg_status_t st = stash_newest(rt);
    if (st == BG_OK)
        st = bg_rt_optimizer_(rt, b->step - 1); /* g_{t-1}: that step's lr */
    if (st == BG_OK)
        b->newest++;
    return st;
}

int bg_rt_2bw_feed_mb_(const bg_rt_t *rt, int slot_mb)
{
    return rt->tbw && !rt->eval ? slot_mb % rt->tbw->m : slot_mb;
}

bool bg_rt_2bw_sends_cross_(const bg_rt_t *rt)
{
    return rt->tbw && !rt->tbw->drain && !rt->eval;
}

bool bg_rt_2bw_carrying_(const bg_rt_t *rt)
{
    return rt->tbw && rt->tbw->carry_live;
}

bg_status_t bg_rt_2bw_end_(bg_rt_t *rt, bg_status_t st)
{
    rt_2bw_t *b = rt->tbw;
    if (!b) {
        bg_rt_slots_reset_(rt);
        return st;
    }
    if (st == BG_OK && b->bad_version)
        st = bg_errorf(BG_ERR_INTERNAL, "2bw: step %lld needed a weight version older than the "
                       "two held", (long long)b->step);
    if (st != BG_OK || b->drain) {
        bg_rt_slots_reset_(rt);
        memset(b->pending, 0, (size_t)2 * b->m * (size_t)rt->nlc);
        b->carry_live = false;
        return st;
    }
    for (int id = 0; id < 2 * b->m; id++)
        for (int i = 0; i < rt->nlc; i++) {
            rt_slot_t *s = rt_slot_at(rt, id, i);
            if (s->live && !b->pending[(size_t)id * (size_t)rt->nlc + (size_t)i])
                bg_rt_slot_release_(rt, i, s, false);
        }
    b->carry_live = true;
    return st;
}
