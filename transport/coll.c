/*
 * transport/coll.c -- rank groups and the machinery every collective
 * shares (handles, tags, lanes, the group's scratch cache and device
 * reducer, registration with the progress queue, waiting), plus the two
 * collectives that reduce nothing: chain broadcast and dissemination
 * barrier. Reduce-scatter, all-gather and allreduce are ring.c's.
 *
 * Driving: a started collective registers its advance function with the
 * point-to-point layer's progress queue (removed once it is done) and an
 * abort hook that fails and frees it when the context is destroyed; the
 * point-to-point layer never names this file.
 *
 * Must NOT: know what the buffers hold beyond dtype, block (all waits have
 * deadlines), use p2p internals (only p2p.h), send outside the collective
 * traffic class, allocate device memory per collective (the group's
 * scratch cache keeps it), or name ring.c or direct.c (they register
 * their advance function on the handle and call down into this file,
 * never back).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "transport/backoff.h"
#include "transport/coll_int.h"

static const char *kind_name(bg_tp_coll_kind_t k)
{
    static const char *names[] = {"allreduce", "reduce-scatter", "all-gather", "broadcast",
                                  "barrier"};
    return names[k];
}

/* ---------------- groups ---------------- */

static bg_status_t group_check(bg_tp_t *tp, const int *ranks, int n, int *me)
{
    int world = bg_tp_world_size(tp);
    *me = -1;
    if (n < 1 || n > 512)
        return bg_errorf(BG_ERR_INVALID, "group: %d ranks (1..512 supported)", n);
    for (int i = 0; i < n; i++) {
        if (ranks[i] < 0 || ranks[i] >= world)
            return bg_errorf(BG_ERR_INVALID, "group: rank %d out of range (world size %d)",
                             ranks[i], world);
        for (int j = 0; j < i; j++)
            if (ranks[j] == ranks[i])
                return bg_errorf(BG_ERR_INVALID, "group: rank %d listed twice", ranks[i]);
        if (ranks[i] == bg_tp_rank(tp))
            *me = i;
    }
    if (*me < 0)
        return bg_errorf(BG_ERR_INVALID, "group: calling rank %d is not a member", bg_tp_rank(tp));
    return BG_OK;
}

bg_status_t bg_tp_group_create(bg_tp_t *tp, const int *ranks, int n, bg_tp_group_t **out)
{
    int me;
    bg_status_t st = group_check(tp, ranks, n, &me);
    if (st != BG_OK)
        return st;
    bg_tp_group_t *g = calloc(1, sizeof(*g));
    int *r = malloc((size_t)n * sizeof(int));
    if (!g || !r) {
        free(g);
        free(r);
        return bg_errorf(BG_ERR_NOMEM, "group: out of memory");
    }
    memcpy(r, ranks, (size_t)n * sizeof(int));
    /* Why a hash: members must agree on the id without talking. */
    char desc[64];
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        snprintf(desc, sizeof(desc), "%d,", ranks[i]);
        h ^= bg_hash_str(desc);
        h *= 1099511628211ull;
    }
    g->tp = tp;
    g->n = n;
    g->me = me;
    g->ranks = r;
    g->gid = (unsigned)(h ^ (h >> 12) ^ (h >> 24) ^ (h >> 36)) & 0xfffu;
    g->device = bg_tp_cuda_device(tp);
    *out = g;
    return BG_OK;
}

static void scratch_release(int device, bg_tp_scratch_t *s)
{
#ifdef BG_HAVE_CUDA
    if (s->mem == BG_TP_MEM_CUDA)
        bg_tp_cuda_free(device, s->ptr);
    else
        free(s->ptr);
#else
    (void)device;
    free(s->ptr);
#endif
    free(s);
}

static void group_free(bg_tp_group_t *g)
{
    while (g->idle) {
        bg_tp_scratch_t *s = g->idle;
        g->idle = s->next;
        scratch_release(g->device, s);
    }
#ifdef BG_HAVE_CUDA
    bg_tp_cuda_red_destroy(g->red);
#endif
    free(g->cma_pids);
    free(g->ranks);
    free(g);
}

void bg_tp_group_destroy(bg_tp_group_t *g)
{
    if (!g)
        return;
    /* Handles still out (the context's teardown frees them later) keep the
     * group alive until the last one goes. */
    if (g->live > 0) {
        g->destroyed = 1;
        return;
    }
    group_free(g);
}

int bg_tp_group_size(const bg_tp_group_t *g)
{
    return g->n;
}
int bg_tp_group_index(const bg_tp_group_t *g)
{
    return g->me;
}

size_t bg_tp_group_scratch_allocs(const bg_tp_group_t *g)
{
    return g->scratch_allocs;
}

size_t bg_tp_shard_offset(size_t count, int n, int i)
{
    if (n < 1)
        return 0;
    if (i <= 0)
        return 0;
    if (i >= n)
        return count;
    /* 128-bit product: count * i must not wrap for large buffers. */
    return (size_t)((unsigned __int128)count * (unsigned)i / (unsigned)n);
}

/* ---------------- scratch ---------------- */

static bg_status_t scratch_alloc(bg_tp_group_t *g, size_t bytes, bg_tp_mem_t mem,
                                 bg_tp_scratch_t **out)
{
    bg_tp_scratch_t *s = calloc(1, sizeof(*s));
    if (!s)
        return bg_errorf(BG_ERR_NOMEM, "collective: out of memory");
    s->cap = bytes;
    s->mem = mem;
    bg_status_t st = BG_OK;
    if (mem == BG_TP_MEM_CUDA) {
#ifdef BG_HAVE_CUDA
        st = bg_tp_cuda_alloc(g->device, bytes, &s->ptr);
#else
        st = bg_errorf(BG_ERR_UNSUPPORTED, "collective: device buffer but built without CUDA");
#endif
    } else {
        /* Page-aligned: UCX's shared-memory copies like whole pages. */
        s->ptr = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
        if (!s->ptr)
            st = bg_errorf(BG_ERR_NOMEM, "collective: out of memory for %zu bytes of scratch",
                           bytes);
    }
    if (st != BG_OK) {
        free(s);
        return st;
    }
    g->scratch_allocs++;
    *out = s;
    return BG_OK;
}

bg_status_t bg_tp_coll_scratch(bg_tp_coll_t *c, size_t bytes, void **out)
{
    bg_tp_group_t *g = c->g;
    if (bytes == 0)
        bytes = 1;
    /* Smallest idle buffer that fits; a buffer too small is freed rather
     * than kept, so the cache converges on the sizes in use. */
    bg_tp_scratch_t **best = NULL;
    for (bg_tp_scratch_t **p = &g->idle; *p; p = &(*p)->next)
        if ((*p)->mem == c->mem && (*p)->cap >= bytes && (!best || (*p)->cap < (*best)->cap))
            best = p;
    bg_tp_scratch_t *s = NULL;
    if (best) {
        s = *best;
        *best = s->next;
    } else {
        for (bg_tp_scratch_t **p = &g->idle; *p; p = &(*p)->next)
            if ((*p)->mem == c->mem) {
                bg_tp_scratch_t *small = *p;
                *p = small->next;
                scratch_release(g->device, small);
                break;
            }
        bg_status_t st = scratch_alloc(g, bytes, c->mem, &s);
        if (st != BG_OK)
            return st;
    }
    s->next = NULL;
    c->scr = s;
    *out = s->ptr;
    return BG_OK;
}

#ifdef BG_HAVE_CUDA
bg_status_t bg_tp_group_reducer(bg_tp_group_t *g, bg_tp_cuda_red_t **out)
{
    if (!g->red) {
        bg_status_t st = bg_tp_cuda_red_create(g->device, &g->red);
        if (st != BG_OK)
            return st;
    }
    *out = g->red;
    return BG_OK;
}

bg_status_t bg_tp_lane_event(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    if (l->has_ev)
        return BG_OK;
    bg_tp_cuda_red_t *red;
    bg_status_t st = bg_tp_group_reducer(c->g, &red);
    if (st == BG_OK)
        st = bg_tp_cuda_red_event_get(red, &l->ev);
    if (st == BG_OK)
        l->has_ev = 1;
    return st;
}
#endif

/* ---------------- handles ---------------- */

size_t bg_tp_coll_knob(const char *name, size_t def)
{
    const char *v = getenv(name);
    unsigned long long x = v && *v ? strtoull(v, NULL, 10) : 0;
    return x ? (size_t)x : def;
}

uint64_t bg_tp_coll_tag(const bg_tp_coll_t *c, int step, size_t seg)
{
    return ((uint64_t)(c->g->gid & 0xfffu) << 32) | ((uint64_t)(c->seq & 0xfffu) << 20) |
           ((uint64_t)((unsigned)step & 0x3ffu) << 10) | (uint64_t)(seg & 0x3ffu);
}

/* A finished collective needs no more progress: leave the queue (safe from
 * inside its own callback). */
static void coll_settle(bg_tp_coll_t *c)
{
    if (!c->done || !c->progress_id)
        return;
    bg_tp_progress_remove(c->tp, c->progress_id);
    c->progress_id = 0;
}

static void cancel_req(bg_tp_coll_t *c, bg_tp_req_t **r)
{
    if (*r)
        bg_tp_cancel(c->tp, *r);
    *r = NULL;
}

void bg_tp_coll_fail(bg_tp_coll_t *c, bg_status_t st, const char *msg)
{
    if (c->status != BG_OK)
        return;
    c->status = st;
    snprintf(c->err, sizeof(c->err), "%s", msg);
    for (int i = 0; i < BG_TP_LANES; i++) {
        bg_tp_lane_t *l = &c->lanes[i];
        cancel_req(c, &l->sreq);
        cancel_req(c, &l->rreq);
        l->busy = 0;
    }
    if (c->dreq)
        for (int i = 0; i < 2 * (c->g->n - 1); i++)
            cancel_req(c, &c->dreq[i]);
    for (int i = 0; i < c->nxreq; i++)
        cancel_req(c, &c->xreq[i]);
    c->done = 1;
    coll_settle(c);
}

void bg_tp_coll_fail_last(bg_tp_coll_t *c, bg_status_t st)
{
    char msg[BG_TP_COLL_ERRLEN];
    snprintf(msg, sizeof(msg), "%s: %s", kind_name(c->kind), bg_last_error());
    bg_tp_coll_fail(c, st, msg);
}

int bg_tp_coll_poll(bg_tp_coll_t *c, bg_tp_req_t **req)
{
    if (!*req)
        return 1;
    int done;
    bg_status_t st = bg_tp_req_poll(c->tp, *req, &done);
    if (!done)
        return 0;
    *req = NULL;
    if (st != BG_OK) {
        bg_tp_coll_fail_last(c, st);
        return 0;
    }
    return 1;
}

void bg_tp_coll_free(bg_tp_coll_t *c)
{
    bg_tp_group_t *g = c->g;
    bg_tp_progress_remove(c->tp, c->progress_id);
    bg_tp_abort_hook_remove(c->tp, c->abort_id);
#ifdef BG_HAVE_CUDA
    for (int i = 0; i < BG_TP_LANES; i++)
        if (c->lanes[i].has_ev) {
            /* A reduction may still run into the scratch: let it finish
             * before the scratch goes back (failures only). */
            if (c->lanes[i].reducing)
                cudaEventSynchronize(c->lanes[i].ev);
            bg_tp_cuda_red_event_put(g->red, c->lanes[i].ev);
        }
#endif
    if (c->scr) {
        c->scr->next = g->idle;
        g->idle = c->scr;
    }
    free(c->dreq);
    free(c->xreq);
    free(c->ext);
    free(c);
    if (--g->live == 0 && g->destroyed)
        group_free(g);
}

bg_status_t bg_tp_coll_new(bg_tp_group_t *g, bg_tp_coll_kind_t kind, bg_tp_coll_advance_fn advance,
                           void *buf, bg_tp_mem_t mem, bg_tp_coll_t **out)
{
    if (mem != BG_TP_MEM_HOST && mem != BG_TP_MEM_CUDA)
        return bg_errorf(BG_ERR_INVALID, "%s: unknown memory kind %d", kind_name(kind), (int)mem);
    bg_tp_coll_t *c = calloc(1, sizeof(*c));
    if (!c)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", kind_name(kind));
    c->tp = g->tp;
    c->g = g;
    c->kind = kind;
    c->advance = advance;
    c->seq = g->seq++;
    c->buf = buf;
    c->mem = mem;
    c->waiting_on = -1;
    g->live++;
    *out = c;
    return BG_OK;
}

void bg_tp_lane_post(bg_tp_coll_t *c, bg_tp_lane_t *l, uint64_t tag, int to, const void *sbuf,
                     size_t sbytes, int from, void *rbuf, size_t rbytes)
{
    bg_status_t st = BG_OK;
    if (from >= 0 && rbytes) {
        c->waiting_on = from;
        st = bg_tp_recv_raw(c->tp, BG_TP_CLASS_COLL, from, tag, rbuf, rbytes, c->mem, &l->rreq);
    }
    if (st == BG_OK && to >= 0 && sbytes)
        st = bg_tp_send_raw(c->tp, BG_TP_CLASS_COLL, to, tag, sbuf, sbytes, c->mem, &l->sreq);
    if (st != BG_OK)
        bg_tp_coll_fail_last(c, st);
}

int bg_tp_lane_take(bg_tp_coll_t *c, bg_tp_lane_t *l, int step)
{
    if (c->next_seg >= c->nseg)
        return 0;
    l->busy = 1;
    l->seg = c->next_seg++;
    l->step = step;
    return 1;
}

/* ---------------- driving ---------------- */

/* Progress callback: advance one collective; 1 if it moved. */
static int coll_progress_cb(void *arg)
{
    bg_tp_coll_t *c = arg;
    int moved = 0;
    if (!c->done)
        moved = c->advance(c);
    coll_settle(c);
    return moved;
}

/* Abort hook: the context is going away; the handle dies with it. */
static int coll_abort_cb(void *arg)
{
    bg_tp_coll_t *c = arg;
    bg_tp_coll_fail(c, BG_ERR_CANCELED, "transport context destroyed");
    bg_tp_coll_free(c);
    return 0;
}

bg_status_t bg_tp_coll_launch(bg_tp_coll_t *c, bg_tp_coll_t **out)
{
    bg_status_t st = bg_tp_abort_hook_add(c->tp, coll_abort_cb, c, &c->abort_id);
    if (st == BG_OK && !c->done) {
        st = bg_tp_progress_add(c->tp, coll_progress_cb, c, &c->progress_id);
        if (st != BG_OK) {
            bg_tp_abort_hook_remove(c->tp, c->abort_id);
            c->abort_id = 0;
        }
    }
    if (st != BG_OK) {
        bg_tp_coll_fail(c, st, "out of memory registering the collective");
        bg_tp_coll_free(c);
        return st;
    }
    coll_progress_cb(c);
    *out = c;
    return BG_OK;
}

/* ---------------- broadcast ---------------- */

#define BC_LANES 4 /* segments of a broadcast in flight */

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

static void bc_post(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    bg_tp_group_t *g = c->g;
    int pos = mod(g->me - c->root, g->n);
    size_t off = l->seg * c->seg_bytes;
    size_t len = c->len - off < c->seg_bytes ? c->len - off : c->seg_bytes;
    /* A broadcast's receive (step 0) and forward (step 1) are one message
     * each way, so its tag does not carry the step. */
    uint64_t tag = bg_tp_coll_tag(c, 0, l->seg);
    /* Step 0 receives from the predecessor, step 1 forwards to the successor. */
    if (l->step == 0 && pos > 0)
        bg_tp_lane_post(c, l, tag, -1, NULL, 0, g->ranks[mod(g->me - 1, g->n)], c->buf + off, len);
    else if (l->step == 1 && pos < g->n - 1)
        bg_tp_lane_post(c, l, tag, g->ranks[mod(g->me + 1, g->n)], c->buf + off, len, -1, NULL, 0);
}

static int bc_advance(bg_tp_coll_t *c)
{
    int moved = 0;
    for (int i = 0; i < BC_LANES && !c->done; i++) {
        bg_tp_lane_t *l = &c->lanes[i];
        if (!l->busy) {
            if (!bg_tp_lane_take(c, l, 0))
                continue;
            bc_post(c, l);
            moved = 1;
            continue;
        }
        while (!c->done && bg_tp_coll_poll(c, &l->rreq) && bg_tp_coll_poll(c, &l->sreq)) {
            moved = 1;
            if (++l->step == 2) {
                l->busy = 0;
                c->segs_done++;
                break;
            }
            bc_post(c, l);
        }
    }
    if (!c->done && c->segs_done == c->nseg)
        c->done = 1;
    return moved;
}

bg_status_t bg_tp_bcast_start(bg_tp_group_t *g, void *buf, size_t len, int root, bg_tp_mem_t mem,
                              bg_tp_coll_t **out)
{
    if (root < 0 || root >= g->n)
        return bg_errorf(BG_ERR_INVALID, "broadcast: root index %d not in group of %d", root, g->n);
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_coll_new(g, COLL_BCAST, bc_advance, buf, mem, &c);
    if (st != BG_OK)
        return st;
    c->len = len;
    c->root = root;
    c->seg_bytes = (size_t)1 << 20;
    if (c->seg_bytes * BG_TP_MAX_SEGS < len)
        c->seg_bytes = (len + BG_TP_MAX_SEGS - 1) / BG_TP_MAX_SEGS;
    c->nseg = g->n == 1 || len == 0 ? 0 : (len + c->seg_bytes - 1) / c->seg_bytes;
    if (c->nseg == 0)
        c->done = 1;
    return bg_tp_coll_launch(c, out);
}

/* ---------------- barrier ---------------- */

static void ba_post(bg_tp_coll_t *c, bg_tp_lane_t *l)
{
    static char token;
    bg_tp_group_t *g = c->g;
    int d = 1 << l->step;
    /* One byte, not zero: lane_post skips empty transfers. */
    bg_tp_lane_post(c, l, bg_tp_coll_tag(c, l->step, 0), g->ranks[mod(g->me + d, g->n)], &token,
                    1, g->ranks[mod(g->me - d, g->n)], c->pad, 1);
}

static int ba_advance(bg_tp_coll_t *c)
{
    bg_tp_lane_t *l = &c->lanes[0];
    int moved = 0;
    while (!c->done && bg_tp_coll_poll(c, &l->rreq) && bg_tp_coll_poll(c, &l->sreq)) {
        moved = 1;
        if (++l->step == c->nsteps) {
            c->done = 1;
            break;
        }
        ba_post(c, l);
    }
    return moved;
}

bg_status_t bg_tp_barrier_start(bg_tp_group_t *g, bg_tp_coll_t **out)
{
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_coll_new(g, COLL_BARRIER, ba_advance, NULL, BG_TP_MEM_HOST, &c);
    if (st != BG_OK)
        return st;
    while ((1 << c->nsteps) < g->n)
        c->nsteps++;
    if (c->nsteps == 0)
        c->done = 1;
    else
        ba_post(c, &c->lanes[0]);
    return bg_tp_coll_launch(c, out);
}

/* ---------------- waiting ---------------- */

static bg_status_t coll_finish(bg_tp_coll_t *c)
{
    bg_status_t st = c->status;
    if (st != BG_OK)
        bg_errorf(st, "rank %d: %s", bg_tp_rank(c->tp), c->err);
    bg_tp_coll_free(c);
    return st;
}

bg_status_t bg_tp_coll_test(bg_tp_coll_t *c, int *done)
{
    bg_tp_progress(c->tp);
    if (!c->done) {
        *done = 0;
        return BG_OK;
    }
    *done = 1;
    return coll_finish(c);
}

bg_status_t bg_tp_coll_wait(bg_tp_coll_t *c, double timeout_s)
{
    double deadline = bg_tp_deadline(timeout_s);
    unsigned idle = 0;
    for (unsigned it = 1;; it++) {
        int moved = bg_tp_progress(c->tp);
        if (c->done)
            return coll_finish(c);
        idle = moved ? 0 : idle + 1;
        if ((it & 255) == 0 && bg_now_s() >= deadline) {
            char msg[BG_TP_COLL_ERRLEN], done[64];
            if (c->cma) /* the same-host path has no segments */
                snprintf(done, sizeof(done), "same-host direct path");
            else
                snprintf(done, sizeof(done), "%zu of %zu segments done", c->segs_done, c->nseg);
            snprintf(msg, sizeof(msg),
                     "%s #%u over a group of %d timed out after %.1f s (%s; last waited for "
                     "rank %d)",
                     kind_name(c->kind), c->seq, c->g->n, timeout_s, done, c->waiting_on);
            bg_tp_coll_fail(c, BG_ERR_TIMEOUT, msg);
            return coll_finish(c);
        }
        bg_tp_backoff(idle);
    }
}

/* ---------------- blocking conveniences ---------------- */

/* `c` by address: the start in the same call sets it (argument order). */
bg_status_t bg_tp_coll_start_wait(bg_status_t st, bg_tp_coll_t **c, double timeout_s)
{
    return st != BG_OK ? st : bg_tp_coll_wait(*c, timeout_s);
}

bg_status_t bg_tp_bcast(bg_tp_group_t *g, void *buf, size_t len, int root, bg_tp_mem_t mem,
                        double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    return bg_tp_coll_start_wait(bg_tp_bcast_start(g, buf, len, root, mem, &c), &c, timeout_s);
}

bg_status_t bg_tp_barrier(bg_tp_group_t *g, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    return bg_tp_coll_start_wait(bg_tp_barrier_start(g, &c), &c, timeout_s);
}
