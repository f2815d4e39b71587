/*
 * engine/runtime_zero.c -- the update ranges of the flat buffer and ZeRO-1
 * (docs/engine.md, "ZeRO-1"). Without ZeRO one range covers everything.
 * Under ZeRO-1 (D > 1 replicas per stage) each chunk's bucket is
 * reduce-scattered and each replica keeps the f32 masters and optimizer
 * state of its transport shard (bg_tp_shard_offset, shard index = replica)
 * of every bucket and of the tied region only, updates them, and
 * all-gathers the compute copy range by range. The global norm stays
 * zero-0's: each parameter's sum of squares is taken whole by one replica
 * (its norm owner), which receives the other replicas' reduced pieces of
 * it first. Checkpoints save and load each replica's shard as it is
 * (bg_rt_shard_*); nothing ever assembles the stage's whole state.
 * Must NOT change any sum or its order (runtime_grad.c owns them), nor
 * decide when to save or load (the checkpoint code calls the shard copies).
 */
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

bg_status_t bg_rt_segs_make_(bg_rt_t *rt, int n, const int64_t *off_h, const uint8_t *decay_h,
                             void **dev, bg_flat_segs_t *out)
{
    size_t ob = sizeof(int64_t) * ((size_t)n + 1);
    int64_t *chunk0 = malloc(ob);
    if (!chunk0)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter layout");
    int64_t nch = bg_flat_chunks(off_h, n, chunk0);
    bg_status_t st = rt_dalloc(rt, 2 * ob + (size_t)n + 1, dev);
    char *d = st == BG_OK ? *dev : NULL;
    if (st == BG_OK)
        st = bg_backend_copy(rt->conf.be, d, off_h, ob, BG_COPY_H2D, rt->compute);
    if (st == BG_OK)
        st = bg_backend_copy(rt->conf.be, d + ob, chunk0, ob, BG_COPY_H2D, rt->compute);
    if (st == BG_OK && n > 0)
        st = bg_backend_copy(rt->conf.be, d + 2 * ob, decay_h, (size_t)n, BG_COPY_H2D,
                             rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute); /* chunk0 is freed next */
    free(chunk0);
    if (st == BG_OK)
        *out = (bg_flat_segs_t){n,     (const int64_t *)d,        (const uint8_t *)(d + 2 * ob),
                                off_h, (const int64_t *)(d + ob), nch};
    return st;
}

void bg_rt_views_point_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        p->master = f->host_master ? f->host_master + p->off : NULL;
        for (int s = 0; s < 2; s++)
            p->state[s] = f->host_state[s] ? f->host_state[s] + p->off : NULL;
    }
}

/* Transport dtype moving elements of the compute dtype: an all-gather only
 * copies, so any 2-byte type travels as BF16. */
static bg_tp_dtype_t gather_dtype(bg_dtype_t dt)
{
    return bg_dtype_size(dt) == 4 ? BG_TP_F32 : BG_TP_BF16;
}

/* Range r's all-gather, if one is in flight: wait for it (the handle is
 * freed either way). Transport errors pass through. */
static bg_status_t gather_wait(bg_rt_t *rt, int r)
{
    rt_flat_t *f = &rt->flat;
    bg_tp_coll_t *c = f->ag ? f->ag[r] : NULL;
    if (!c)
        return BG_OK;
    f->ag[r] = NULL;
    return bg_tp_coll_wait(c, rt->conf.timeout_s);
}

bg_status_t bg_rt_zero_settle_(bg_rt_t *rt)
{
    bg_status_t st = BG_OK;
    for (int r = 0; rt->flat.ag && r < rt->flat.nz; r++) {
        bg_status_t s = gather_wait(rt, r);
        st = st == BG_OK ? s : st;
    }
    return st;
}

bg_status_t bg_rt_zero_ready_(bg_rt_t *rt, int lci)
{
    if (!rt->flat.ag)
        return BG_OK;
    bg_status_t st = gather_wait(rt, lci);
    return st == BG_OK ? gather_wait(rt, rt->flat.nz - 1) : st; /* the shared range */
}

/*
 * The compute copy's shards to every replica (no-op without ZeRO):
 * collectives over the stage's replicas, one per range, started in range
 * order (the same on every replica). With `defer` they are left in flight
 * for the next step: each chunk's first action waits for its own range and
 * the shared one (bg_rt_zero_ready_), so the gathers of later chunks travel
 * while earlier ones compute. Transport errors pass through.
 */
static bg_status_t zero_allgather(bg_rt_t *rt, bool defer)
{
    rt_flat_t *f = &rt->flat;
    if (!f->zero)
        return BG_OK;
    size_t es = bg_dtype_size(rt->conf.dtype);
    bg_status_t st = bg_rt_zero_settle_(rt); /* a gather still out writes the same buffer */
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute); /* the cast wrote it */
    for (int r = 0; r < f->nz && st == BG_OK; r++)
        if (f->zr[r].glen)
            st = bg_tp_allgather_start(rt->dp_group, (char *)f->dev + (size_t)f->zr[r].g0 * es,
                                       (size_t)f->zr[r].glen, gather_dtype(rt->conf.dtype),
                                       rt->mem, &f->ag[r]);
    if (!defer || st != BG_OK) {
        bg_status_t s = bg_rt_zero_settle_(rt);
        st = st == BG_OK ? s : st;
    }
    return st;
}

/* The compute copy from the masters, range by range (all-gathered under
 * ZeRO-1; left in flight with `defer`, see zero_allgather). */
static bg_status_t params_cast(bg_rt_t *rt, bool defer)
{
    rt_flat_t *f = &rt->flat;
    if (f->dev == (void *)f->master)
        return BG_OK;
    size_t es = bg_dtype_size(rt->conf.dtype);
    bg_status_t st = BG_OK;
    for (int r = 0; r < f->nz && st == BG_OK; r++)
        st = bg_step_cast(rt->conf.be, rt->compute, (char *)f->dev + (size_t)f->zr[r].s0 * es,
                          rt->conf.dtype, f->master + f->zr[r].c0, BG_F32, f->zr[r].slen);
    return st == BG_OK ? zero_allgather(rt, defer) : st;
}

bg_status_t bg_rt_params_cast_(bg_rt_t *rt)
{
    return params_cast(rt, false);
}

bg_status_t bg_rt_params_cast_next_(bg_rt_t *rt)
{
    return params_cast(rt, rt->tbw == NULL); /* 2bw's stash reads the copy at once */
}

/* Range r's segment table: the held parameters' cuts of [s0, s0 + slen),
 * rebased to s0. */
static bg_status_t range_segs(bg_rt_t *rt, rt_zrange_t *z)
{
    const rt_flat_t *f = &rt->flat;
    int np = rt->nparam, k = 0;
    z->off_h = malloc(sizeof(int64_t) * ((size_t)np + 1));
    z->decay_h = calloc((size_t)np + 1, 1);
    if (!z->off_h || !z->decay_h)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the ZeRO shard's layout");
    int64_t lo = z->s0, hi = z->s0 + z->slen;
    for (int i = 0; i < np; i++) { /* segments tile [0, n), so their cuts tile [lo, hi) */
        int64_t a = f->off_h[i] > lo ? f->off_h[i] : lo;
        int64_t b = f->off_h[i + 1] < hi ? f->off_h[i + 1] : hi;
        if (a >= b)
            continue;
        z->off_h[k] = a - lo;
        z->decay_h[k++] = f->decay_h[i];
    }
    z->off_h[k] = z->slen;
    return bg_rt_segs_make_(rt, k, z->off_h, z->decay_h, &z->segs_dev, &z->segs);
}

bg_status_t bg_rt_zero_setup_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    f->zero = rt->conf.zero > 0 && rt->conf.dps > 1;
    f->nz = f->zero ? rt->nlc + 1 : 1;
    f->zr = calloc((size_t)f->nz, sizeof(rt_zrange_t));
    f->ag = f->zero ? calloc((size_t)f->nz, sizeof(bg_tp_coll_t *)) : NULL;
    if (!f->zr || (f->zero && !f->ag))
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the update ranges");
    if (!f->zero) {
        f->zr[0] = (rt_zrange_t){0, f->n, 0, f->n, 0, f->segs, NULL, NULL, NULL};
        f->zn = f->n;
        return BG_OK;
    }
    int D = rt->conf.dps, d = rt->conf.dp;
    bg_status_t st = BG_OK;
    f->zn = 0;
    for (int r = 0; r < f->nz && st == BG_OK; r++) {
        rt_zrange_t *z = &f->zr[r];
        z->g0 = r < rt->nlc ? rt->lc[r].f0 : f->t0;
        z->glen = r < rt->nlc ? (int64_t)rt->lc[r].grad_len : f->n - f->t0;
        z->s0 = z->g0 + (int64_t)bg_tp_shard_offset((size_t)z->glen, D, d);
        z->slen = z->g0 + (int64_t)bg_tp_shard_offset((size_t)z->glen, D, d + 1) - z->s0;
        z->c0 = f->zn;
        f->zn += z->slen;
        st = range_segs(rt, z);
    }
    return st;
}

void bg_rt_zero_free_(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    bg_rt_zero_settle_(rt); /* nothing may still write the buffers; errors were reported */
    free(f->ag);
    f->ag = NULL;
    for (int r = 0; f->zero && r < f->nz; r++)
        free(f->zr[r].off_h), free(f->zr[r].decay_h);
    free(f->zr);
    f->zr = NULL;
}

/* Parameter p's elements [a, b) of the flat buffer that this replica's
 * shards hold, from `val` (p's value, host) into the masters. */
static bg_status_t param_to_shards(bg_rt_t *rt, const rt_param_t *p, const float *val)
{
    const rt_flat_t *f = &rt->flat;
    bg_status_t st = BG_OK;
    for (int r = 0; r < f->nz && st == BG_OK; r++) {
        const rt_zrange_t *z = &f->zr[r];
        int64_t a = p->off > z->s0 ? p->off : z->s0;
        int64_t b = p->off + p->n < z->s0 + z->slen ? p->off + p->n : z->s0 + z->slen;
        if (a < b)
            st = bg_backend_copy(rt->conf.be, f->master + z->c0 + (a - z->s0), val + (a - p->off),
                                 (size_t)(b - a) * 4, BG_COPY_H2D, rt->compute);
    }
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st; /* val is reused */
}

bg_status_t bg_rt_zero_init_(bg_rt_t *rt)
{
    int64_t most = 1;
    for (int i = 0; i < rt->nparam; i++)
        most = rt->par[i].n > most ? rt->par[i].n : most;
    float *val = malloc((size_t)most * 4);
    if (!val)
        return bg_errorf(BG_ERR_NOMEM, "out of memory initialising parameters (%lld elements)",
                         (long long)most);
    bg_status_t st = BG_OK;
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        const rt_param_t *p = &rt->par[i];
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
        bg_param_init_host(&gp->desc, gp->name, rt->conf.seed, val);
        st = param_to_shards(rt, p, val);
    }
    free(val);
    if (st == BG_OK)
        st = bg_rt_params_cast_(rt);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}

bool bg_rt_sharded(const bg_rt_t *rt)
{
    return rt->flat.zero;
}

int64_t bg_rt_shard_numel(const bg_rt_t *rt)
{
    return rt->flat.zn;
}

int bg_rt_shard_ranges(const bg_rt_t *rt)
{
    return rt->flat.nz;
}

bool bg_rt_shard_piece(const bg_rt_t *rt, int i, int r, bg_rt_piece_t *out)
{
    const rt_zrange_t *z = &rt->flat.zr[r];
    const rt_param_t *p = &rt->par[i];
    int64_t a = p->off > z->s0 ? p->off : z->s0;
    int64_t b = p->off + p->n < z->s0 + z->slen ? p->off + p->n : z->s0 + z->slen;
    if (a >= b)
        return false;
    *out = (bg_rt_piece_t){a - p->off, b - a, z->c0 + (a - z->s0)};
    return true;
}

/* The compact shard buffers and host arrays, zn floats each (kind D2H: to
 * the host), on the compute stream, then waited for. */
static bg_status_t shard_move(bg_rt_t *rt, float *const *host, bg_copy_kind_t kind)
{
    rt_flat_t *f = &rt->flat;
    float *dev[3] = {f->master, f->state[0], f->state[1]};
    int n = 1 + bg_optim_state_count(rt->conf.optim.kind);
    size_t bytes = (size_t)f->zn * 4;
    bg_status_t st = BG_OK;
    for (int i = 0; i < n && st == BG_OK && bytes; i++)
        st = bg_backend_copy(rt->conf.be, kind == BG_COPY_D2H ? (void *)host[i] : (void *)dev[i],
                             kind == BG_COPY_D2H ? (void *)dev[i] : (void *)host[i], bytes, kind,
                             rt->compute);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}

bg_status_t bg_rt_shard_download(bg_rt_t *rt, float *master, float *const *state)
{
    float *host[3] = {master, state[0], state[1]};
    bg_status_t st = shard_move(rt, host, BG_COPY_D2H);
    return st == BG_OK ? BG_OK : bg_rt_err_(rt, st);
}

bg_status_t bg_rt_shard_upload(bg_rt_t *rt, const float *master, float *const *state)
{
    float *host[3] = {(float *)master, state[0], state[1]};
    bg_status_t st = shard_move(rt, host, BG_COPY_H2D);
    if (st == BG_OK)
        st = bg_rt_params_cast_(rt); /* waits for the device, then all-gathers */
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    if (st == BG_OK)
        rt->weights_set++; /* as bg_rt_params_upload */
    return st == BG_OK ? BG_OK : bg_rt_err_(rt, st);
}

/* ---------------------------------------------------------- the norm's pieces */

/* Requests of one piece exchange, grown as they are posted. */
typedef struct pieces {
    bg_tp_req_t **req;
    size_t n, cap;
} pieces_t;

/* Send (this replica is `from`) or receive (it is `to`) flat elements
 * [a, b) of the gradient of parameter `param`. */
static bg_status_t piece_post(bg_rt_t *rt, pieces_t *x, int param, int from, int to, int64_t a,
                              int64_t b)
{
    uint64_t tag;
    bg_status_t st = bg_tag_param(BG_TAG_ZERO_PIECE + from, param, &tag);
    if (st != BG_OK)
        return st;
    if (bg_grow(&x->req, &x->cap, x->n + 1, sizeof(*x->req)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory exchanging gradient pieces");
    float *buf = rt->flat.grad + a;
    size_t bytes = (size_t)(b - a) * 4;
    bool out = from == rt->conf.dp;
    int peer = rt_global_rank(rt, out ? to : from, rt->conf.stage);
    x->req[x->n] = NULL;
    st = out ? bg_tp_send(rt->conf.tp, peer, tag, buf, bytes, rt->mem, &x->req[x->n])
             : bg_tp_recv(rt->conf.tp, peer, tag, buf, bytes, rt->mem, &x->req[x->n]);
    x->n++;
    return st;
}

/* Segment k = [a, b) inside range z: its norm owner (the replica whose
 * shard holds a) and, in a reduce-scattered bucket, the pieces the other
 * replicas hold, sent to the owner. */
static bg_status_t segment_pieces(bg_rt_t *rt, const rt_zrange_t *z, bool bucket, int k,
                                  pieces_t *x, unsigned char *keep)
{
    const rt_flat_t *f = &rt->flat;
    int D = rt->conf.dps, me = rt->conf.dp, owner = 0;
    int64_t a = f->off_h[k], b = f->off_h[k + 1];
    for (int d = 1; d < D; d++)
        if (z->g0 + (int64_t)bg_tp_shard_offset((size_t)z->glen, D, d) <= a)
            owner = d;
    keep[k] = owner == me;
    bg_status_t st = BG_OK;
    for (int d = 0; bucket && d < D && st == BG_OK; d++) {
        int64_t lo = z->g0 + (int64_t)bg_tp_shard_offset((size_t)z->glen, D, d);
        int64_t hi = z->g0 + (int64_t)bg_tp_shard_offset((size_t)z->glen, D, d + 1);
        lo = lo > a ? lo : a;
        hi = hi < b ? hi : b;
        if (d == owner || lo >= hi || (me != d && me != owner))
            continue;
        st = piece_post(rt, x, rt->par[f->seg_par[k]].p, d, owner, lo, hi);
    }
    return st;
}

bg_status_t bg_rt_zero_norm_pieces_(bg_rt_t *rt, unsigned char *keep)
{
    const rt_flat_t *f = &rt->flat;
    if (!f->zero) {
        memset(keep, 1, (size_t)rt->nparam);
        return BG_OK;
    }
    pieces_t x = {NULL, 0, 0};
    bg_status_t st = BG_OK;
    int r = 0;
    for (int k = 0; k < rt->nparam && st == BG_OK; k++) {
        while (f->off_h[k] >= f->zr[r].g0 + f->zr[r].glen) /* ranges tile [0, n) in order */
            r++;
        st = segment_pieces(rt, &f->zr[r], r < rt->nlc, k, &x, keep);
    }
    for (size_t i = 0; i < x.n; i++) {
        if (!x.req[i])
            continue;
        bg_status_t s2 = st == BG_OK ? bg_tp_wait(rt->conf.tp, x.req[i], rt->conf.timeout_s)
                                     : (bg_tp_cancel(rt->conf.tp, x.req[i]), BG_OK);
        if (st == BG_OK)
            st = s2;
    }
    free(x.req);
    return st;
}
