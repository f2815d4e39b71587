/*
 * transport/ring.c -- reduce-scatter, all-gather and allreduce over a
 * group, in place: pipelined rings for large buffers, a direct exchange
 * for small ones (latency: 2 message rounds instead of 2 (n - 1)).
 *
 * Shards: member i owns elements [shard_offset(i), shard_offset(i + 1)),
 * shard_offset(i) = floor(count * i / n) (bg_tp_shard_offset). Reduce-scatter
 * leaves member i its shard reduced; all-gather sends each member's shard
 * to all; allreduce is the two back to back and is bit for bit the same.
 *
 * Determinism: shard b is reduced along the fixed chain b+1, b+2, ..., b
 * (mod n): ((x[b+1] + x[b+2]) + ...) + x[b], each addition one IEEE
 * operation (bf16: rounded after each), AVG divides once on the owner.
 * The ring does it one hop per step; the direct path receives all pieces
 * at the owner and adds them in that same order (a + b == b + a bitwise),
 * so the bits depend on neither the path, the segment size nor timing.
 *
 * Ring step s of a segment (unified numbering; an allreduce runs all,
 * reduce-scatter [0, n-1), all-gather [n-1, 2n-2)):
 *   s <  n-1: send shard me-1-s, receive shard me-2-s into scratch, add;
 *   s >= n-1: t = s-(n-1), send shard me-t, receive shard me-1-t in place.
 *
 * Same-host groups with large host buffers take direct.c's path instead
 * (bg_tp_cma_plan decides at start); until the group's probe has settled,
 * the ring is planned anyway and runs if the group cannot use the path.
 *
 * Must NOT: reduce in any other order, allocate per segment (scratch
 * comes from the group's cache), or wait on the device (reductions of
 * device buffers complete through events polled here).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "transport/coll_int.h"

#define DEFAULT_SEGMENT ((size_t)512 << 10)
#define DEFAULT_SMALL ((size_t)64 << 10)
#define DEFAULT_LANES 8

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

/* Elements [*off, *off + *n) of segment `seg` of shard b. */
static void seg_range(const bg_tp_coll_t *c, int b, size_t seg, size_t *off, size_t *n)
{
    size_t lo = bg_tp_shard_offset(c->count, c->g->n, b);
    size_t hi = bg_tp_shard_offset(c->count, c->g->n, b + 1);
    size_t s = lo + seg * c->seg_elems;
    if (s > hi)
        s = hi;
    size_t e = hi - s < c->seg_elems ? hi : s + c->seg_elems;
    *off = s;
    *n = e - s;
}

static void step_shards(const bg_tp_coll_t *c, int s, int *sb, int *rb)
{
    int n = c->g->n, me = c->g->me;
    if (s < n - 1) {
        *sb = mod(me - 1 - s, n);
        *rb = mod(me - 2 - s, n);
    } else {
        int t = s - (n - 1);
        *sb = mod(me - t, n);
        *rb = mod(me - 1 - t, n);
    }
}

/* ---------------- ring ---------------- */

static void ring_post(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    bg_tp_group_t *g = c->g;
    int n = g->n, sb, rb;
    step_shards(c, l->step, &sb, &rb);
    size_t so, sn, ro, rn;
    seg_range(c, sb, l->seg, &so, &sn);
    seg_range(c, rb, l->seg, &ro, &rn);
    void *rdst = l->step < n - 1 ? l->tmp : c->buf + ro * c->esz;
    bg_tp_lane_post(c, l, bg_tp_coll_tag(c, l->step, l->seg), g->ranks[mod(g->me + 1, n)],
                    c->buf + so * c->esz, sn * c->esz, g->ranks[mod(g->me - 1, n)], rdst,
                    rn * c->esz);
}

/* dst += src over m elements, then / div when div > 1: on the host now, or
 * queued on the device with lane l's event (l->reducing set). Fails the
 * collective on a device error. */
static void reduce_into(bg_tp_coll_t *c, bg_tp_lane_t *l, void *dst, const void *src, size_t m,
                        int div)
{
    if (c->mem == BG_TP_MEM_HOST) {
        bg_tp_reduce_sum(dst, src, m, c->dt);
        if (div > 1)
            bg_tp_reduce_div(dst, m, c->dt, div);
        return;
    }
#ifdef BG_HAVE_CUDA
    bg_status_t st = bg_tp_lane_event(c, l);
    if (st == BG_OK)
        st = bg_tp_cuda_red_sum(c->g->red, dst, src, m, c->dt, div, l->ev);
    if (st != BG_OK) {
        bg_tp_coll_fail_last(c, st);
        return;
    }
    l->reducing = 1;
#else
    (void)l, (void)dst, (void)src, (void)m, (void)div; /* refused at start */
#endif
}

/* The lane's transfers are done: add what came in (reduce-scatter steps).
 * The last reduce-scatter step leaves this rank the final owner of the
 * shard: averaging there means every rank receives the same bits. */
static void ring_reduce(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    int n = c->g->n, s = l->step, sb, rb;
    if (s >= n - 1)
        return;
    step_shards(c, s, &sb, &rb);
    size_t ro, rn;
    seg_range(c, rb, l->seg, &ro, &rn);
    if (rn)
        reduce_into(c, l, c->buf + ro * c->esz, l->tmp, rn,
                    s == n - 2 && c->op == BG_TP_AVG ? n : 1);
}

/* 1 when lane l has no device reduction in flight (any finished one is
 * settled), 0 while one runs or after a failure. */
static int lane_reduced(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    if (!l->reducing)
        return 1;
#ifdef BG_HAVE_CUDA
    int d = bg_tp_cuda_event_done(l->ev, "device reduction");
    if (d == 0)
        return 0;
    l->reducing = 0;
    if (d < 0) {
        bg_tp_coll_fail_last(c, BG_ERR_CUDA);
        return 0;
    }
#else
    (void)c;
#endif
    return 1;
}

/* Move a busy lane as far as it goes now (zero-sized steps and host
 * reductions complete at once). The reduction starts as soon as the
 * receive is in, overlapping the wait for the send's completion; the next
 * step is posted once both are done (its send reads what was just reduced,
 * and at most one send per lane is in flight). Returns 1 if it moved. */
static int lane_advance(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    int moved = 0;
    while (!c->done) {
        if (!l->received) {
            if (!bg_tp_coll_poll(c, &l->rreq))
                return moved;
            l->received = 1;
            moved = 1;
            ring_reduce(c, l);
            continue;
        }
        if (!lane_reduced(c, l) || !bg_tp_coll_poll(c, &l->sreq))
            return moved;
        moved = 1;
        l->received = 0;
        if (++l->step == c->step1) {
            l->busy = 0;
            c->segs_done++;
            return 1;
        }
        ring_post(c, l);
    }
    return 1;
}

static int ring_lanes_advance(bg_tp_coll_t *c)
{
    int moved = 0;
    for (int i = 0; i < c->nlanes && !c->done; i++) {
        bg_tp_lane_t *l = &c->lanes[i];
        if (!l->busy) {
            if (!bg_tp_lane_take(c, l, c->step0))
                continue;
            ring_post(c, l);
            moved = 1;
        }
        moved |= lane_advance(c, l);
    }
    if (!c->done && c->segs_done == c->nseg)
        c->done = 1;
    return moved;
}

/* ---------------- direct exchange (small buffers) ---------------- */

/* Phase 0 (reduce): every other member's piece of my shard comes into
 * scratch slot j, my copy of their shards goes to them. Phase 2 (gather):
 * my shard goes to all, theirs come into place. */
static void direct_post(bg_tp_coll_t *c, int gather)
{
    bg_tp_group_t *g = c->g;
    int n = g->n, me = g->me;
    uint64_t tag = bg_tp_coll_tag(c, gather, 0);
    size_t mlo = bg_tp_shard_offset(c->count, n, me);
    size_t mn = bg_tp_shard_offset(c->count, n, me + 1) - mlo;
    size_t stride = (c->count + (size_t)n - 1) / (size_t)n * c->esz;
    for (int i = 1; i < n && !c->done; i++) {
        int j = mod(me + i, n);
        size_t jlo = bg_tp_shard_offset(c->count, n, j);
        size_t jn = bg_tp_shard_offset(c->count, n, j + 1) - jlo;
        bg_tp_lane_t pair = {0};
        if (!gather)
            bg_tp_lane_post(c, &pair, tag, g->ranks[j], c->buf + jlo * c->esz, jn * c->esz,
                            g->ranks[j], (char *)c->lanes[0].tmp + (size_t)j * stride,
                            mn * c->esz);
        else
            bg_tp_lane_post(c, &pair, tag, g->ranks[j], c->buf + mlo * c->esz, mn * c->esz,
                            g->ranks[j], c->buf + jlo * c->esz, jn * c->esz);
        if (c->done) { /* failed: the collective's cancel did not see these yet */
            if (pair.rreq)
                bg_tp_cancel(c->tp, pair.rreq);
            if (pair.sreq)
                bg_tp_cancel(c->tp, pair.sreq);
            break;
        }
        c->dreq[2 * (i - 1)] = pair.rreq;
        c->dreq[2 * (i - 1) + 1] = pair.sreq;
    }
    c->phase = gather ? 2 : 0;
}

/* All pieces of my shard are here: add them along the chain me+1, ...,
 * me-1 into slot me+1, then into my own value (the ring's order). */
static void direct_reduce(bg_tp_coll_t *c)
{
    int n = c->g->n, me = c->g->me;
    size_t lo = bg_tp_shard_offset(c->count, n, me);
    size_t m = bg_tp_shard_offset(c->count, n, me + 1) - lo;
    size_t stride = (c->count + (size_t)n - 1) / (size_t)n * c->esz;
    char *slot = c->lanes[0].tmp;
    char *acc = slot + (size_t)mod(me + 1, n) * stride;
    c->phase = 1;
    if (m == 0)
        return;
    for (int i = 2; i < n && !c->done; i++)
        reduce_into(c, &c->lanes[0], acc, slot + (size_t)mod(me + i, n) * stride, m, 1);
    if (!c->done)
        reduce_into(c, &c->lanes[0], c->buf + lo * c->esz, acc, m, c->op == BG_TP_AVG ? n : 1);
}

/* 1 when every posted direct request has finished; 0 while some run or
 * after a failure. */
static int direct_polled(bg_tp_coll_t *c)
{
    int all = 1;
    for (int i = 0; i < 2 * (c->g->n - 1) && !c->done; i++)
        all &= bg_tp_coll_poll(c, &c->dreq[i]);
    return all && !c->done;
}

static int direct_advance(bg_tp_coll_t *c)
{
    int moved = 0;
    while (!c->done) {
        if (c->phase != 1) {
            if (!direct_polled(c))
                return moved;
            moved = 1;
            if (c->phase == 2) {
                c->done = 1;
                break;
            }
            direct_reduce(c);
            continue;
        }
        if (!lane_reduced(c, &c->lanes[0]))
            return moved;
        moved = 1;
        if (c->kind == COLL_REDUCE_SCATTER) {
            c->done = 1;
            break;
        }
        direct_post(c, 1);
    }
    return 1;
}

/* Advance a reduce-scatter / all-gather / allreduce; 1 if anything moved
 * (the handle's advance function, called by coll.c's progress loop). */
static int ring_advance(bg_tp_coll_t *c)
{
    if (c->cma) {
        /* The same-host path, until the group turns out unable to use it:
         * then the ring (or small exchange) planned at start takes over. */
        int moved = bg_tp_cma_advance(c);
        if (c->cma || c->done)
            return moved;
        if (c->direct)
            direct_post(c, c->kind == COLL_ALLGATHER);
    }
    return c->direct ? direct_advance(c) : ring_lanes_advance(c);
}

/* ---------------- starting ---------------- */

/* Segments, lanes and scratch of a ring; or the direct exchange's
 * scratch. `extra` more bytes of scratch go to *xtra (the same-host
 * path's, which falls back on this plan). */
static bg_status_t ring_plan(bg_tp_coll_t *c, size_t extra, void **xtra)
{
    int n = c->g->n;
    size_t maxshard = (c->count + (size_t)n - 1) / (size_t)n;
    int reduces = c->kind != COLL_ALLGATHER;
    if (c->count * c->esz <= bg_tp_coll_knob("BRIGADE_TP_SMALL", DEFAULT_SMALL)) {
        c->direct = 1;
        c->dreq = calloc(2 * (size_t)(n - 1), sizeof(*c->dreq));
        if (!c->dreq)
            return bg_errorf(BG_ERR_NOMEM, "collective: out of memory for %d requests", n);
        char *tmp = NULL;
        size_t need = reduces ? (size_t)n * maxshard * c->esz : 0;
        if (need + extra) {
            bg_status_t st = bg_tp_coll_scratch(c, need + extra, (void **)&tmp);
            if (st != BG_OK)
                return st;
        }
        c->lanes[0].tmp = reduces ? tmp : NULL;
        *xtra = extra ? tmp + need : NULL;
        return BG_OK;
    }
    size_t seg_bytes = bg_tp_coll_knob("BRIGADE_TP_SEGMENT", DEFAULT_SEGMENT);
    c->seg_elems = seg_bytes >= c->esz ? seg_bytes / c->esz : 1;
    if (c->seg_elems * BG_TP_MAX_SEGS < maxshard)
        c->seg_elems = (maxshard + BG_TP_MAX_SEGS - 1) / BG_TP_MAX_SEGS;
    c->nseg = (maxshard + c->seg_elems - 1) / c->seg_elems;
    size_t lanes = bg_tp_coll_knob("BRIGADE_TP_LANES", DEFAULT_LANES);
    if (lanes > BG_TP_LANES)
        lanes = BG_TP_LANES;
    if (lanes > c->nseg)
        lanes = c->nseg;
    c->nlanes = (int)lanes;
    size_t need = reduces ? lanes * c->seg_elems * c->esz : 0;
    if (!need && !extra)
        return BG_OK;
    char *tmp = NULL;
    bg_status_t st = bg_tp_coll_scratch(c, need + extra, (void **)&tmp);
    for (size_t i = 0; st == BG_OK && reduces && i < lanes; i++)
        c->lanes[i].tmp = tmp + i * c->seg_elems * c->esz;
    if (st == BG_OK)
        *xtra = extra ? tmp + need : NULL;
    return st;
}

static bg_status_t ring_start(bg_tp_group_t *g, bg_tp_coll_kind_t kind, void *buf, size_t count,
                              bg_tp_dtype_t dtype, bg_tp_op_t op, bg_tp_mem_t mem,
                              bg_tp_coll_t **out)
{
    static const char *names[] = {"allreduce", "reduce-scatter", "all-gather"};
    const char *what = names[kind];
    if (dtype != BG_TP_F32 && dtype != BG_TP_BF16)
        return bg_errorf(BG_ERR_INVALID, "%s: unknown dtype %d", what, (int)dtype);
    if (op != BG_TP_SUM && op != BG_TP_AVG)
        return bg_errorf(BG_ERR_INVALID, "%s: unknown op %d", what, (int)op);
    size_t esz = dtype == BG_TP_F32 ? 4 : 2;
    if (count > SIZE_MAX / 4 / esz)
        return bg_errorf(BG_ERR_INVALID, "%s: %zu elements overflow a size", what, count);
    if (!buf && count)
        return bg_errorf(BG_ERR_INVALID, "%s: NULL buffer for %zu elements", what, count);
#ifndef BG_HAVE_CUDA
    if (mem == BG_TP_MEM_CUDA)
        return bg_errorf(BG_ERR_UNSUPPORTED, "%s: device buffer but built without CUDA", what);
#endif
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_coll_new(g, kind, ring_advance, buf, mem, &c);
    if (st != BG_OK)
        return st;
    int n = g->n;
    c->count = count;
    c->dt = dtype;
    c->op = op;
    c->esz = esz;
    c->step0 = kind == COLL_ALLGATHER ? n - 1 : 0;
    c->step1 = kind == COLL_REDUCE_SCATTER ? n - 1 : 2 * (n - 1);
    int cma = 0;
    size_t extra = n == 1 || count == 0 ? 0 : bg_tp_cma_plan(c, &cma);
    void *xtra = NULL;
    if (n == 1 || count == 0) {
        c->done = 1; /* a group of one holds its own sum; AVG divides by 1 */
    } else if (cma && g->cma > 0) {
        /* The group chose the path (every member did, so none falls back):
         * only the path's scratch, not a ring's worth held for nothing. */
        if (extra && (st = bg_tp_coll_scratch(c, extra, &xtra)) != BG_OK) {
            bg_tp_coll_free(c);
            return st;
        }
        bg_tp_cma_start(c, xtra);
    } else if ((st = ring_plan(c, extra, &xtra)) != BG_OK) {
        bg_tp_coll_free(c);
        return st;
    } else if (cma) {
        bg_tp_cma_start(c, xtra); /* the ring stays planned for a fallback */
    } else if (c->direct) {
        direct_post(c, kind == COLL_ALLGATHER);
    }
    return bg_tp_coll_launch(c, out);
}

bg_status_t bg_tp_allreduce_start(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                  bg_tp_op_t op, bg_tp_mem_t mem, bg_tp_coll_t **out)
{
    return ring_start(g, COLL_ALLREDUCE, buf, count, dtype, op, mem, out);
}

bg_status_t bg_tp_reduce_scatter_start(bg_tp_group_t *g, void *buf, size_t count,
                                       bg_tp_dtype_t dtype, bg_tp_op_t op, bg_tp_mem_t mem,
                                       bg_tp_coll_t **out)
{
    return ring_start(g, COLL_REDUCE_SCATTER, buf, count, dtype, op, mem, out);
}

bg_status_t bg_tp_allgather_start(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                  bg_tp_mem_t mem, bg_tp_coll_t **out)
{
    return ring_start(g, COLL_ALLGATHER, buf, count, dtype, BG_TP_SUM, mem, out);
}

/* ---------------- blocking conveniences ---------------- */

bg_status_t bg_tp_allreduce(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                            bg_tp_op_t op, bg_tp_mem_t mem, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    return bg_tp_coll_start_wait(bg_tp_allreduce_start(g, buf, count, dtype, op, mem, &c), &c,
                                 timeout_s);
}

bg_status_t bg_tp_reduce_scatter(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                 bg_tp_op_t op, bg_tp_mem_t mem, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    return bg_tp_coll_start_wait(bg_tp_reduce_scatter_start(g, buf, count, dtype, op, mem, &c),
                                 &c, timeout_s);
}

bg_status_t bg_tp_allgather(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                            bg_tp_mem_t mem, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    return bg_tp_coll_start_wait(bg_tp_allgather_start(g, buf, count, dtype, mem, &c), &c,
                                 timeout_s);
}
