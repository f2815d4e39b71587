/*
 * transport/coll.c -- rank groups and the collectives data parallelism
 * needs: ring allreduce (reduce-scatter + allgather), chain broadcast and a
 * dissemination barrier, all non-blocking state machines advanced by
 * bg_tp_progress so they overlap the engine's compute.
 *
 * Determinism: in the ring, block b is reduced along the fixed chain
 * b, b+1, ..., b-1 (each step adds the incoming partial to the local value),
 * and only the final owner's bits travel in the allgather. So every rank
 * ends with identical bits, and runs repeat bit for bit whatever the timing.
 *
 * Driving: a started collective registers its advance function with the
 * point-to-point layer's progress queue (removed once it is done) and an
 * abort hook that fails and frees it when the context is destroyed; the
 * point-to-point layer never names this file.
 *
 * Must NOT: know what the buffers hold beyond dtype, block (all waits have
 * deadlines), use p2p internals (only p2p.h), or send outside the
 * collective traffic class.
 *
 * Collective tag (the 44 bits callers own, in class BG_TP_CLASS_COLL):
 *   [43:32] group id (hash of the rank list)  [31:20] op sequence mod 4096
 *   [19:10] step                                [9:0] segment
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef BG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "base/rng.h"
#include "transport/backoff.h"
#include "transport/p2p.h"
#include "transport/reduce.h"

#define LANES 4       /* segments in flight per collective */
#define MAX_SEGS 1024 /* the segment field is 10 bits */
#define ERRLEN 400

struct bg_tp_group {
    bg_tp_t *tp;
    int n, me;
    int *ranks;
    unsigned gid;
    unsigned seq;
};

typedef enum { COLL_ALLREDUCE, COLL_BCAST, COLL_BARRIER } coll_kind_t;

typedef struct {
    int busy;
    size_t seg;
    int step;
    bg_tp_req_t *sreq, *rreq;
    void *tmp;
} lane_t;

struct bg_tp_coll {
    bg_tp_t *tp;
    bg_tp_group_t *g;
    coll_kind_t kind;
    unsigned seq;
    int done;
    bg_status_t status;
    char err[ERRLEN];
    int waiting_on;                 /* rank last waited for, for timeout messages */
    uint64_t progress_id, abort_id; /* registrations with the p2p layer */
    char *buf;
    bg_tp_mem_t mem;
    /* allreduce */
    size_t count, esz, seg_elems;
    bg_tp_dtype_t dt;
    bg_tp_op_t op;
    size_t *boff; /* n + 1 block offsets, in elements */
    /* bcast */
    size_t len, seg_bytes;
    int root;
    /* shared */
    size_t nseg, next_seg, segs_done;
    int nsteps;
    char pad[8]; /* barrier tokens land here */
    lane_t lanes[LANES];
};

static const char *kind_name(coll_kind_t k)
{
    return k == COLL_ALLREDUCE ? "allreduce" : k == COLL_BCAST ? "broadcast" : "barrier";
}

/* ---------------- groups ---------------- */

bg_status_t bg_tp_group_create(bg_tp_t *tp, const int *ranks, int n, bg_tp_group_t **out)
{
    int me = -1, world = bg_tp_world_size(tp);
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
            me = i;
    }
    if (me < 0)
        return bg_errorf(BG_ERR_INVALID, "group: calling rank %d is not a member", bg_tp_rank(tp));
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
    *out = g;
    return BG_OK;
}

void bg_tp_group_destroy(bg_tp_group_t *g)
{
    if (!g)
        return;
    free(g->ranks);
    free(g);
}

int bg_tp_group_size(const bg_tp_group_t *g)
{
    return g->n;
}
int bg_tp_group_index(const bg_tp_group_t *g)
{
    return g->me;
}

/* ---------------- shared machinery ---------------- */

static uint64_t coll_tag(const bg_tp_coll_t *c, int step, size_t seg)
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

static void coll_fail(bg_tp_coll_t *c, bg_status_t st, const char *msg)
{
    if (c->status != BG_OK)
        return;
    c->status = st;
    snprintf(c->err, sizeof(c->err), "%s", msg);
    for (int i = 0; i < LANES; i++) {
        lane_t *l = &c->lanes[i];
        if (l->sreq)
            bg_tp_cancel(c->tp, l->sreq);
        if (l->rreq)
            bg_tp_cancel(c->tp, l->rreq);
        l->sreq = l->rreq = NULL;
        l->busy = 0;
    }
    c->done = 1;
    coll_settle(c);
}

/* Poll one of a lane's requests; 1 when it is finished (NULL counts). */
static int lane_poll(bg_tp_coll_t *c, bg_tp_req_t **req)
{
    if (!*req)
        return 1;
    int done;
    bg_status_t st = bg_tp_req_poll(c->tp, *req, &done);
    if (!done)
        return 0;
    *req = NULL;
    if (st != BG_OK) {
        char msg[ERRLEN];
        snprintf(msg, sizeof(msg), "%s: %s", kind_name(c->kind), bg_last_error());
        coll_fail(c, st, msg);
        return 0;
    }
    return 1;
}

static void *lane_tmp(bg_tp_coll_t *c, size_t bytes, bg_status_t *st)
{
    void *p = NULL;
    *st = BG_OK;
    if (bytes == 0)
        bytes = 1;
    if (c->mem == BG_TP_MEM_CUDA) {
#ifdef BG_HAVE_CUDA
        cudaError_t ce = cudaMalloc(&p, bytes);
        if (ce != cudaSuccess) {
            *st = bg_errorf(BG_ERR_CUDA, "allreduce: cudaMalloc(%zu): %s", bytes,
                            cudaGetErrorString(ce));
            return NULL;
        }
#else
        *st = bg_errorf(BG_ERR_UNSUPPORTED, "allreduce: device buffer but built without CUDA");
#endif
        return p;
    }
    p = malloc(bytes);
    if (!p)
        *st = bg_errorf(BG_ERR_NOMEM, "allreduce: out of memory for %zu bytes", bytes);
    return p;
}

static void lane_tmp_free(bg_tp_coll_t *c, void *p)
{
    if (!p)
        return;
#ifdef BG_HAVE_CUDA
    if (c->mem == BG_TP_MEM_CUDA) {
        cudaFree(p);
        return;
    }
#else
    (void)c;
#endif
    free(p);
}

static void coll_free(bg_tp_coll_t *c)
{
    bg_tp_progress_remove(c->tp, c->progress_id);
    bg_tp_abort_hook_remove(c->tp, c->abort_id);
    for (int i = 0; i < LANES; i++)
        lane_tmp_free(c, c->lanes[i].tmp);
    free(c->boff);
    free(c);
}

static bg_status_t coll_new(bg_tp_group_t *g, coll_kind_t kind, void *buf, bg_tp_mem_t mem,
                            bg_tp_coll_t **out)
{
    bg_tp_coll_t *c = calloc(1, sizeof(*c));
    if (!c)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", kind_name(kind));
    c->tp = g->tp;
    c->g = g;
    c->kind = kind;
    c->seq = g->seq++;
    c->buf = buf;
    c->mem = mem;
    c->waiting_on = -1;
    *out = c;
    return BG_OK;
}

/* Post the send/recv pair of one lane step; sizes of 0 post nothing (both
 * sides compute the same sizes, so both skip). */
static void lane_post(bg_tp_coll_t *c, lane_t *l, int to, const void *sbuf, size_t sbytes, int from,
                      void *rbuf, size_t rbytes)
{
    /* A broadcast's receive (step 0) and forward (step 1) are one message
     * each way, so its tag must not carry the step. */
    uint64_t tag = coll_tag(c, c->kind == COLL_BCAST ? 0 : l->step, l->seg);
    bg_status_t st = BG_OK;
    if (from >= 0 && rbytes) {
        c->waiting_on = from;
        st = bg_tp_recv_raw(c->tp, BG_TP_CLASS_COLL, from, tag, rbuf, rbytes, c->mem, &l->rreq);
    }
    if (st == BG_OK && to >= 0 && sbytes)
        st = bg_tp_send_raw(c->tp, BG_TP_CLASS_COLL, to, tag, sbuf, sbytes, c->mem, &l->sreq);
    if (st != BG_OK) {
        char msg[ERRLEN];
        snprintf(msg, sizeof(msg), "%s: %s", kind_name(c->kind), bg_last_error());
        coll_fail(c, st, msg);
    }
}

/* ---------------- driving ---------------- */

static int ar_advance(bg_tp_coll_t *c);
static int bc_advance(bg_tp_coll_t *c);
static int ba_advance(bg_tp_coll_t *c);

/* Progress callback: advance one collective; 1 if it moved. */
static int coll_progress_cb(void *arg)
{
    bg_tp_coll_t *c = arg;
    int moved = 0;
    if (!c->done) {
        switch (c->kind) {
        case COLL_ALLREDUCE:
            moved = ar_advance(c);
            break;
        case COLL_BCAST:
            moved = bc_advance(c);
            break;
        case COLL_BARRIER:
            moved = ba_advance(c);
            break;
        }
    }
    coll_settle(c);
    return moved;
}

/* Abort hook: the context is going away; the handle dies with it. */
static int coll_abort_cb(void *arg)
{
    bg_tp_coll_t *c = arg;
    coll_fail(c, BG_ERR_CANCELED, "transport context destroyed");
    coll_free(c);
    return 0;
}

/* Hook a new collective into the p2p layer: progress while not done, and
 * abort at teardown. BG_ERR_NOMEM leaves nothing registered. */
static bg_status_t coll_register(bg_tp_coll_t *c)
{
    bg_status_t st = bg_tp_abort_hook_add(c->tp, coll_abort_cb, c, &c->abort_id);
    if (st != BG_OK)
        return st;
    if (c->done)
        return BG_OK;
    st = bg_tp_progress_add(c->tp, coll_progress_cb, c, &c->progress_id);
    if (st != BG_OK) {
        bg_tp_abort_hook_remove(c->tp, c->abort_id);
        c->abort_id = 0;
    }
    return st;
}

/* ---------------- allreduce ---------------- */

/* Elements [*off, *off + *n) of segment `seg` of block b. */
static void ar_range(const bg_tp_coll_t *c, int b, size_t seg, size_t *off, size_t *n)
{
    size_t lo = c->boff[b], hi = c->boff[b + 1];
    size_t s = lo + seg * c->seg_elems;
    if (s > hi)
        s = hi;
    size_t e = s + c->seg_elems;
    if (e > hi)
        e = hi;
    *off = s;
    *n = e - s;
}

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

static void ar_post_step(bg_tp_coll_t *c, lane_t *l)
{
    bg_tp_group_t *g = c->g;
    int n = g->n, me = g->me, s = l->step;
    int right = g->ranks[mod(me + 1, n)], left = g->ranks[mod(me - 1, n)];
    int sb, rb;
    if (s < n - 1) {
        sb = mod(me - s, n);
        rb = mod(me - s - 1, n);
    } else {
        int t = s - (n - 1);
        sb = mod(me + 1 - t, n);
        rb = mod(me - t, n);
    }
    size_t so, sn, ro, rn;
    ar_range(c, sb, l->seg, &so, &sn);
    ar_range(c, rb, l->seg, &ro, &rn);
    void *rdst = s < n - 1 ? l->tmp : c->buf + ro * c->esz;
    lane_post(c, l, right, c->buf + so * c->esz, sn * c->esz, left, rdst, rn * c->esz);
}

/* Both transfers of the lane's step are done: reduce (reduce-scatter
 * phase), then go on to the next step or finish the segment. */
static void ar_finish_step(bg_tp_coll_t *c, lane_t *l)
{
    int n = c->g->n, s = l->step;
    if (s < n - 1) {
        int rb = mod(c->g->me - s - 1, n);
        size_t ro, rn;
        ar_range(c, rb, l->seg, &ro, &rn);
        bg_status_t st = BG_OK;
        if (rn)
            st = bg_tp_reduce_sum(c->buf + ro * c->esz, l->tmp, rn, c->dt, c->mem);
        /* The last reduce-scatter step leaves this rank the final owner of
         * block rb: averaging here means every rank receives the same bits. */
        if (st == BG_OK && rn && s == n - 2 && c->op == BG_TP_AVG)
            st = bg_tp_reduce_div(c->buf + ro * c->esz, rn, c->dt, n, c->mem);
        if (st != BG_OK) {
            char msg[ERRLEN];
            snprintf(msg, sizeof(msg), "allreduce: %s", bg_last_error());
            coll_fail(c, st, msg);
            return;
        }
    }
    l->step++;
}

static int ar_advance(bg_tp_coll_t *c)
{
    int moved = 0;
    for (int i = 0; i < LANES && !c->done; i++) {
        lane_t *l = &c->lanes[i];
        if (!l->busy) {
            if (c->next_seg >= c->nseg)
                continue;
            l->busy = 1;
            l->seg = c->next_seg++;
            l->step = 0;
            ar_post_step(c, l);
            moved = 1;
            continue;
        }
        /* Several steps may complete back to back (zero-sized ones do). */
        for (;;) {
            int rd = lane_poll(c, &l->rreq);
            if (c->done)
                return 1;
            int sd = lane_poll(c, &l->sreq);
            if (c->done)
                return 1;
            if (!rd || !sd)
                break;
            ar_finish_step(c, l);
            moved = 1;
            if (c->done)
                return 1;
            if (l->step == c->nsteps) {
                l->busy = 0;
                c->segs_done++;
                break;
            }
            ar_post_step(c, l);
        }
    }
    if (!c->done && c->segs_done == c->nseg)
        c->done = 1;
    return moved;
}

bg_status_t bg_tp_allreduce_start(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                                  bg_tp_op_t op, bg_tp_mem_t mem, bg_tp_coll_t **out)
{
    if (dtype != BG_TP_F32 && dtype != BG_TP_BF16)
        return bg_errorf(BG_ERR_INVALID, "allreduce: unknown dtype %d", (int)dtype);
    if (op != BG_TP_SUM && op != BG_TP_AVG)
        return bg_errorf(BG_ERR_INVALID, "allreduce: unknown op %d", (int)op);
    bg_tp_coll_t *c = NULL;
    bg_status_t st = coll_new(g, COLL_ALLREDUCE, buf, mem, &c);
    if (st != BG_OK)
        return st;
    int n = g->n;
    c->count = count;
    c->dt = dtype;
    c->op = op;
    c->esz = dtype == BG_TP_F32 ? 4 : 2;
    c->nsteps = 2 * (n - 1);
    c->boff = malloc((size_t)(n + 1) * sizeof(size_t));
    if (!c->boff) {
        st = bg_errorf(BG_ERR_NOMEM, "allreduce: out of memory");
        goto err_coll;
    }
    for (int b = 0; b <= n; b++)
        c->boff[b] = (size_t)((unsigned __int128)count * (unsigned)b / (unsigned)n);
    size_t maxblock = (count + (size_t)n - 1) / (size_t)n;
    size_t seg_bytes = (size_t)strtoull(
        getenv("BRIGADE_TP_SEGMENT") ? getenv("BRIGADE_TP_SEGMENT") : "1048576", NULL, 10);
    if (seg_bytes < c->esz)
        seg_bytes = (size_t)1 << 20;
    c->seg_elems = seg_bytes / c->esz;
    if (c->seg_elems * MAX_SEGS < maxblock)
        c->seg_elems = (maxblock + MAX_SEGS - 1) / MAX_SEGS;
    c->nseg = n == 1 || maxblock == 0 ? 0 : (maxblock + c->seg_elems - 1) / c->seg_elems;
    for (int i = 0; i < LANES && (size_t)i < c->nseg; i++) {
        c->lanes[i].tmp = lane_tmp(c, c->seg_elems * c->esz, &st);
        if (st != BG_OK)
            goto err_coll;
    }
    if (c->nseg == 0)
        c->done = 1;
    st = coll_register(c);
    if (st != BG_OK)
        goto err_coll;
    ar_advance(c);
    coll_settle(c);
    *out = c;
    return BG_OK;

err_coll:
    coll_free(c);
    return st;
}

/* ---------------- broadcast ---------------- */

static void bc_post(bg_tp_coll_t *c, lane_t *l)
{
    bg_tp_group_t *g = c->g;
    int pos = mod(g->me - c->root, g->n);
    size_t off = l->seg * c->seg_bytes;
    size_t len = c->len - off < c->seg_bytes ? c->len - off : c->seg_bytes;
    /* Step 0 receives from the predecessor, step 1 forwards to the successor. */
    if (l->step == 0 && pos > 0) {
        lane_post(c, l, -1, NULL, 0, g->ranks[mod(g->me - 1, g->n)], c->buf + off, len);
    } else if (l->step == 1 && pos < g->n - 1) {
        lane_post(c, l, g->ranks[mod(g->me + 1, g->n)], c->buf + off, len, -1, NULL, 0);
    }
}

static int bc_advance(bg_tp_coll_t *c)
{
    int moved = 0;
    for (int i = 0; i < LANES && !c->done; i++) {
        lane_t *l = &c->lanes[i];
        if (!l->busy) {
            if (c->next_seg >= c->nseg)
                continue;
            l->busy = 1;
            l->seg = c->next_seg++;
            l->step = 0;
            bc_post(c, l);
            moved = 1;
            continue;
        }
        for (;;) {
            int rd = lane_poll(c, &l->rreq);
            if (c->done)
                return 1;
            int sd = lane_poll(c, &l->sreq);
            if (c->done)
                return 1;
            if (!rd || !sd)
                break;
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
    bg_status_t st = coll_new(g, COLL_BCAST, buf, mem, &c);
    if (st != BG_OK)
        return st;
    c->len = len;
    c->root = root;
    c->seg_bytes = (size_t)1 << 20;
    if (c->seg_bytes * MAX_SEGS < len)
        c->seg_bytes = (len + MAX_SEGS - 1) / MAX_SEGS;
    c->nseg = g->n == 1 || len == 0 ? 0 : (len + c->seg_bytes - 1) / c->seg_bytes;
    if (c->nseg == 0)
        c->done = 1;
    st = coll_register(c);
    if (st != BG_OK) {
        coll_free(c);
        return st;
    }
    bc_advance(c);
    coll_settle(c);
    *out = c;
    return BG_OK;
}

/* ---------------- barrier ---------------- */

static void ba_post(bg_tp_coll_t *c, lane_t *l)
{
    static char token;
    bg_tp_group_t *g = c->g;
    int d = 1 << l->step;
    /* One byte, not zero: lane_post skips empty transfers. */
    lane_post(c, l, g->ranks[mod(g->me + d, g->n)], &token, 1, g->ranks[mod(g->me - d, g->n)],
              c->pad, 1);
}

static int ba_advance(bg_tp_coll_t *c)
{
    lane_t *l = &c->lanes[0];
    int moved = 0;
    while (!c->done) {
        int rd = lane_poll(c, &l->rreq);
        if (c->done)
            break;
        int sd = lane_poll(c, &l->sreq);
        if (c->done || !rd || !sd)
            break;
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
    bg_status_t st = coll_new(g, COLL_BARRIER, NULL, BG_TP_MEM_HOST, &c);
    if (st != BG_OK)
        return st;
    while ((1 << c->nsteps) < g->n)
        c->nsteps++;
    if (c->nsteps == 0)
        c->done = 1;
    st = coll_register(c);
    if (st != BG_OK) {
        coll_free(c);
        return st;
    }
    if (!c->done)
        ba_post(c, &c->lanes[0]);
    coll_settle(c);
    *out = c;
    return BG_OK;
}

/* ---------------- waiting ---------------- */

static bg_status_t coll_finish(bg_tp_coll_t *c)
{
    bg_status_t st = c->status;
    if (st != BG_OK)
        bg_errorf(st, "rank %d: %s", bg_tp_rank(c->tp), c->err);
    coll_free(c);
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
        if ((it & 255) == 0) {
            if (bg_now_s() >= deadline) {
                char msg[ERRLEN];
                snprintf(msg, sizeof(msg),
                         "%s #%u over a group of %d timed out after %.1f s (%zu of %zu segments "
                         "done; last waited for rank %d)",
                         kind_name(c->kind), c->seq, c->g->n, timeout_s, c->segs_done, c->nseg,
                         c->waiting_on);
                coll_fail(c, BG_ERR_TIMEOUT, msg);
                return coll_finish(c);
            }
        }
        bg_tp_backoff(idle);
    }
}

bg_status_t bg_tp_allreduce(bg_tp_group_t *g, void *buf, size_t count, bg_tp_dtype_t dtype,
                            bg_tp_op_t op, bg_tp_mem_t mem, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_allreduce_start(g, buf, count, dtype, op, mem, &c);
    if (st != BG_OK)
        return st;
    return bg_tp_coll_wait(c, timeout_s);
}

bg_status_t bg_tp_bcast(bg_tp_group_t *g, void *buf, size_t len, int root, bg_tp_mem_t mem,
                        double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_bcast_start(g, buf, len, root, mem, &c);
    if (st != BG_OK)
        return st;
    return bg_tp_coll_wait(c, timeout_s);
}

bg_status_t bg_tp_barrier(bg_tp_group_t *g, double timeout_s)
{
    bg_tp_coll_t *c = NULL;
    bg_status_t st = bg_tp_barrier_start(g, &c);
    if (st != BG_OK)
        return st;
    return bg_tp_coll_wait(c, timeout_s);
}
