/*
 * engine/schedule_check.c -- the checker: proves a schedule complete and
 * deadlock-free, and counts live activations per rank.
 *
 * Three passes: (1) walk each rank's list in order, checking every action's
 * fields and that its inputs were produced earlier on that rank (locally or
 * by a receive); (2) completeness and send/receive matching; (3) run all lists
 * together with buffered sends and blocking receives until every rank ends.
 * Forward-only lists (evaluation) go through the same passes, refusing
 * anything but F and activation transfers and requiring no B/W/OPTIMIZER.
 * Must NOT modify the schedule or assume it came from a generator.
 */
#include "engine/schedule_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int rank;
    long idx;
} pos_t;

typedef struct {
    const bg_sched_t *s;
    long *f, *b, *w; /* index of F / B-or-BW / W-or-BW of (mb, chunk), -1 if not seen */
    int *b_fused;    /* the backward of (mb, chunk) was a BW */
    int *next_w;     /* per chunk: next micro-batch whose W is due */
    long *ar;        /* per chunk: index of its ALLREDUCE, -1 */
    pos_t *send, *recv; /* per (direction, edge, mb) */
    int *live, *peak;   /* per rank */
    int fwd;            /* forward-only lists (evaluation): F and activations only */
    pos_t bad;          /* the action the error names first; {-1, -1} if none */
} ck_t;

#define MC(k, mb, c) ((size_t)(mb) * (k)->s->nchunks + (size_t)(c))
#define XK(k, grad, e, mb) (((size_t)(grad) * (k)->s->nedges + (size_t)(e)) * (k)->s->m + (size_t)(mb))

/* Record "rank r, action i (A): <why>" as the error, and (r, i) as where. */
static bg_status_t fail_at(ck_t *k, int r, long i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bg_status_t fail_at(ck_t *k, int r, long i, const char *fmt, ...)
{
    const bg_sched_t *s = k->s;
    char act[96], why[512];
    k->bad = (pos_t){r, i};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    bg_action_str(&s->lists[r].a[i], act, sizeof(act));
    return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d, action %ld (%s): %s", s->name,
                     r, i, act, why);
}

static void ck_free(ck_t *k)
{
    free(k->f), free(k->b), free(k->w), free(k->b_fused), free(k->next_w), free(k->ar);
    free(k->send), free(k->recv), free(k->live), free(k->peak);
}

static bg_status_t ck_init(ck_t *k, const bg_sched_t *s)
{
    memset(k, 0, sizeof(*k));
    k->s = s;
    size_t n = (size_t)s->m * s->nchunks, nx = 2 * (size_t)s->nedges * s->m;
    k->f = malloc(n * sizeof(long));
    k->b = malloc(n * sizeof(long));
    k->w = malloc(n * sizeof(long));
    k->b_fused = calloc(n, sizeof(int));
    k->next_w = calloc((size_t)s->nchunks, sizeof(int));
    k->ar = malloc((size_t)s->nchunks * sizeof(long));
    k->send = malloc((nx ? nx : 1) * sizeof(pos_t));
    k->recv = malloc((nx ? nx : 1) * sizeof(pos_t));
    k->live = calloc((size_t)s->p, sizeof(int));
    k->peak = calloc((size_t)s->p, sizeof(int));
    if (!k->f || !k->b || !k->w || !k->b_fused || !k->next_w || !k->ar || !k->send || !k->recv ||
        !k->live || !k->peak) {
        ck_free(k);
        return bg_errorf(BG_ERR_NOMEM, "schedule check: out of memory");
    }
    for (size_t i = 0; i < n; i++) k->f[i] = k->b[i] = k->w[i] = -1;
    for (int c = 0; c < s->nchunks; c++) k->ar[c] = -1;
    for (size_t i = 0; i < nx; i++) k->send[i] = k->recv[i] = (pos_t){-1, -1};
    k->bad = (pos_t){-1, -1};
    return BG_OK;
}

/*
 * F(mb, c) (grad = 0) or B/BW(mb, c) (grad = 1) at (r, i): the data it reads
 * over every edge is here already -- activations of each incoming edge, or
 * the gradient of each outgoing gradient edge -- from a local F/B earlier in
 * the list or from a preceding receive.
 */
static bg_status_t need_edge_data(ck_t *k, int r, long i, int mb, int c, int grad)
{
    static const char *const what[2] = {"activations", "the gradient"};
    static const char *const local[2] = {"F", "B"};
    static const char *const recv[2] = {"RECV_ACT", "RECV_GRAD"};
    const bg_sched_t *s = k->s;
    for (int e = 0; e < s->nedges; e++) {
        /* The chunk at the edge's other end, which produces the data. */
        int o = grad ? s->edges[e].dst : s->edges[e].src;
        if ((grad ? s->edges[e].src : s->edges[e].dst) != c || (grad && !s->edges[e].grad))
            continue;
        if (s->chunk_rank[o] == r) {
            if ((grad ? k->b : k->f)[MC(k, mb, o)] < 0)
                return fail_at(k, r, i, "needs %s of chunk %d (same rank) but %s(mb=%d, c=%d) "
                               "has not run before it", what[grad], o, local[grad], mb, o);
        } else if (k->recv[XK(k, grad, e, mb)].rank < 0) {
            return fail_at(k, r, i, "needs %s from chunk %d (rank %d) but no %s(mb=%d, %d->%d) "
                           "precedes it", what[grad], o, s->chunk_rank[o], recv[grad], mb, o, c);
        }
    }
    return BG_OK;
}

static bg_status_t check_compute(ck_t *k, int r, long i, const bg_action_t *a)
{
    const bg_sched_t *s = k->s;
    int mb = a->mb, c = a->chunk;
    bg_status_t st;
    if (mb < 0 || mb >= s->m || c < 0 || c >= s->nchunks)
        return fail_at(k, r, i, "micro-batch or chunk out of range (m=%d, chunks=%d)", s->m,
                       s->nchunks);
    if (s->chunk_rank[c] != r)
        return fail_at(k, r, i, "chunk %d lives on rank %d", c, s->chunk_rank[c]);
    size_t x = MC(k, mb, c);
    switch (a->kind) {
    case BG_ACT_F:
        if (k->f[x] >= 0) return fail_at(k, r, i, "duplicate: F already at action %ld", k->f[x]);
        if ((st = need_edge_data(k, r, i, mb, c, 0))) return st;
        k->f[x] = i;
        if (++k->live[r] > k->peak[r]) k->peak[r] = k->live[r];
        return BG_OK;
    case BG_ACT_B:
    case BG_ACT_BW:
        if (k->b[x] >= 0)
            return fail_at(k, r, i, "duplicate: backward already at action %ld", k->b[x]);
        if (k->f[x] < 0) return fail_at(k, r, i, "runs before F(mb=%d, c=%d)", mb, c);
        if ((st = need_edge_data(k, r, i, mb, c, 1))) return st;
        k->b[x] = i;
        k->b_fused[x] = a->kind == BG_ACT_BW;
        if (a->kind == BG_ACT_B) return BG_OK;
        break; /* BW also completes W */
    case BG_ACT_W:
        if (k->w[x] >= 0) return fail_at(k, r, i, "duplicate: W already at action %ld", k->w[x]);
        if (k->b[x] < 0) return fail_at(k, r, i, "runs before B(mb=%d, c=%d)", mb, c);
        break;
    default: return fail_at(k, r, i, "not a compute action");
    }
    if (k->w[x] >= 0) return fail_at(k, r, i, "duplicate: W already at action %ld", k->w[x]);
    if (mb != k->next_w[c])
        return fail_at(k, r, i, "weight gradients of chunk %d out of micro-batch order "
                       "(expected mb=%d next)", c, k->next_w[c]);
    k->next_w[c]++;
    k->w[x] = i;
    k->live[r]--;
    return BG_OK;
}

static bg_status_t check_transfer(ck_t *k, int r, long i, const bg_action_t *a)
{
    const bg_sched_t *s = k->s;
    int grad = a->kind == BG_ACT_SEND_GRAD || a->kind == BG_ACT_RECV_GRAD;
    int send = bg_act_is_send(a->kind);
    if (a->mb < 0 || a->mb >= s->m || a->src < 0 || a->src >= s->nchunks || a->dst < 0 ||
        a->dst >= s->nchunks)
        return fail_at(k, r, i, "micro-batch or chunk out of range (m=%d, chunks=%d)", s->m,
                       s->nchunks);
    int e = grad ? bg_sched_find_edge_(s, a->dst, a->src) : bg_sched_find_edge_(s, a->src, a->dst);
    if (e < 0 || (grad && !s->edges[e].grad))
        return fail_at(k, r, i, "no %s edge %d -> %d declared", grad ? "gradient" : "activation",
                       grad ? a->dst : a->src, grad ? a->src : a->dst);
    int rs = s->chunk_rank[a->src], rd = s->chunk_rank[a->dst];
    if (rs == rd)
        return fail_at(k, r, i, "chunks %d and %d are both on rank %d: hand off locally", a->src,
                       a->dst, rs);
    int here = send ? rs : rd, there = send ? rd : rs;
    if (r != here || a->peer != there || a->chunk != (send ? a->src : a->dst))
        return fail_at(k, r, i, "belongs on rank %d with peer %d and chunk %d", here, there,
                       send ? a->src : a->dst);
    pos_t *slot = send ? &k->send[XK(k, grad, e, a->mb)] : &k->recv[XK(k, grad, e, a->mb)];
    if (slot->rank >= 0)
        return fail_at(k, r, i, "duplicate: same transfer already at action %ld", slot->idx);
    if (send && !grad && k->f[MC(k, a->mb, a->src)] < 0)
        return fail_at(k, r, i, "sends before F(mb=%d, c=%d) produced the data", a->mb, a->src);
    if (send && grad && k->b[MC(k, a->mb, a->src)] < 0)
        return fail_at(k, r, i, "sends before B(mb=%d, c=%d) produced the data", a->mb, a->src);
    *slot = (pos_t){r, i};
    return BG_OK;
}

/* Pass 1: one rank's list, in order. */
static bg_status_t check_rank(ck_t *k, int r)
{
    const bg_sched_t *s = k->s;
    const bg_sched_list_t *l = &s->lists[r];
    for (long i = 0; i < (long)l->len; i++) {
        const bg_action_t *a = &l->a[i];
        bg_status_t st = BG_OK;
        if (k->fwd && a->kind != BG_ACT_F && a->kind != BG_ACT_SEND_ACT &&
            a->kind != BG_ACT_RECV_ACT)
            return fail_at(k, r, i, "a forward-only list holds only F and activation transfers");
        if (bg_act_is_compute(a->kind)) {
            st = check_compute(k, r, i, a);
        } else if (bg_act_is_send(a->kind) || bg_act_is_recv(a->kind)) {
            st = check_transfer(k, r, i, a);
        } else if (a->kind == BG_ACT_ALLREDUCE) {
            int c = a->chunk;
            if (c < 0 || c >= s->nchunks || s->chunk_rank[c] != r)
                return fail_at(k, r, i, "chunk %d is not on this rank", c);
            if (k->ar[c] >= 0)
                return fail_at(k, r, i, "duplicate: ALLREDUCE already at action %ld", k->ar[c]);
            if (k->next_w[c] != s->m)
                return fail_at(k, r, i, "runs before W(mb=%d, c=%d)", k->next_w[c], c);
            k->ar[c] = i;
        } else if (a->kind == BG_ACT_OPTIMIZER) {
            if (i != (long)l->len - 1) return fail_at(k, r, i, "OPTIMIZER must be last");
            for (int c = 0; c < s->nchunks; c++)
                if (s->chunk_rank[c] == r && k->ar[c] < 0)
                    return fail_at(k, r, i, "runs before ALLREDUCE(c=%d)", c);
        } else {
            return fail_at(k, r, i, "unknown action kind %d", (int)a->kind);
        }
        if (st) return st;
    }
    return BG_OK;
}

/* Pass 2: everything present once, every transfer matched. */
static bg_status_t check_complete(ck_t *k)
{
    const bg_sched_t *s = k->s;
    char act[96];
    for (int c = 0; c < s->nchunks; c++) {
        int r = s->chunk_rank[c];
        for (int mb = 0; mb < s->m; mb++) {
            size_t x = MC(k, mb, c);
            const char *miss = k->f[x] < 0 ? "F" : k->fwd ? 0
                               : k->b[x] < 0 ? "B (or BW)" : k->w[x] < 0 ? "W" : 0;
            if (miss)
                return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d: %s(mb=%d, c=%d) "
                                 "missing", s->name, r, miss, mb, c);
        }
        if (k->ar[c] < 0 && !k->fwd)
            return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d: ALLREDUCE(c=%d) "
                             "missing", s->name, r, c);
    }
    for (int r = 0; r < s->p; r++) {
        const bg_sched_list_t *l = &s->lists[r];
        if (!k->fwd && (!l->len || l->a[l->len - 1].kind != BG_ACT_OPTIMIZER))
            return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d: OPTIMIZER missing",
                             s->name, r);
    }
    size_t nx = 2 * (size_t)s->nedges * s->m;
    for (size_t x = 0; x < nx; x++) {
        pos_t sd = k->send[x], rv = k->recv[x];
        if ((sd.rank < 0) == (rv.rank < 0)) continue;
        pos_t at = sd.rank >= 0 ? sd : rv;
        k->bad = at;
        bg_action_str(&s->lists[at.rank].a[at.idx], act, sizeof(act));
        return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d, action %ld (%s): no "
                         "matching %s", s->name, at.rank, at.idx, act,
                         sd.rank >= 0 ? "receive" : "send");
    }
    return BG_OK;
}

/* The matching send of the receive at (r, i); pass 2 guarantees it exists. */
static pos_t matching_send(const ck_t *k, int r, long i)
{
    const bg_sched_t *s = k->s;
    const bg_action_t *a = &s->lists[r].a[i];
    int grad = a->kind == BG_ACT_RECV_GRAD;
    int e = grad ? bg_sched_find_edge_(s, a->dst, a->src) : bg_sched_find_edge_(s, a->src, a->dst);
    return k->send[XK(k, grad, e, a->mb)];
}

/* Append "rank r, action i (A) waits for rank r2, action j (A2)" (stuck
 * rank r at pc[r]) to buf, which has room (report_cycle sizes it). */
static size_t put_wait(const ck_t *k, const long *pc, int r, const char *sep, char *buf,
                       size_t len, size_t n)
{
    const bg_sched_t *s = k->s;
    char act[96], act2[96];
    pos_t from = matching_send(k, r, pc[r]);
    bg_action_str(&s->lists[r].a[pc[r]], act, sizeof(act));
    bg_action_str(&s->lists[from.rank].a[from.idx], act2, sizeof(act2));
    int w = snprintf(buf + n, len - n,
                     "%srank %d, action %ld (%s) waits for rank %d, action %ld (%s)", sep, r, pc[r],
                     act, from.rank, from.idx, act2);
    return w > 0 ? n + (size_t)w : n;
}

/*
 * The error for a stuck run. From the first stuck rank r0, follow who waits
 * for whom until a rank repeats -- a rank waited for is stuck too, so this
 * takes at most p hops -- and name that cycle first, then the ranks on the
 * way in as blocked on it. The cycle's first wait becomes k->bad.
 */
static bg_status_t report_cycle(ck_t *k, const long *pc, int r0)
{
    const bg_sched_t *s = k->s;
    size_t len = (size_t)s->p * 320 + 128; /* one wait is < 2 * 96 + 64 bytes */
    int *hop = malloc((size_t)s->p * sizeof(int));
    char *msg = malloc(len);
    if (!hop || !msg) {
        free(hop), free(msg);
        return bg_errorf(BG_ERR_NOMEM, "schedule check: out of memory");
    }
    for (int r = 0; r < s->p; r++) hop[r] = -1;
    int r = r0;
    for (int h = 0; hop[r] < 0; h++) {
        hop[r] = h;
        r = matching_send(k, r, pc[r]).rank;
    }
    int start = r;
    size_t n = (size_t)snprintf(msg, len, "cycle of waits: ");
    do {
        n = put_wait(k, pc, r, r == start ? "" : "; ", msg, len, n);
        r = matching_send(k, r, pc[r]).rank;
    } while (r != start);
    n += (size_t)snprintf(msg + n, len - n, " (back to rank %d)", start);
    for (r = r0; r != start; r = matching_send(k, r, pc[r]).rank)
        n = put_wait(k, pc, r, r == r0 ? "; blocked on it: " : "; ", msg, len, n);
    k->bad = (pos_t){start, pc[start]};
    bg_status_t st = bg_errorf(BG_ERR_INVALID, "schedule check (%s): deadlock: %s", s->name, msg);
    free(hop), free(msg);
    return st;
}

/* Pass 3: run the lists; a rank blocks only on a receive whose send has not
 * run. Stuck with work left = a cycle of waits; report it. */
static bg_status_t check_deadlock(ck_t *k)
{
    const bg_sched_t *s = k->s;
    bg_status_t st = BG_OK;
    long *pc = calloc((size_t)s->p, sizeof(long));
    if (!pc) return bg_errorf(BG_ERR_NOMEM, "schedule check: out of memory");
    for (int progress = 1; progress;) {
        progress = 0;
        for (int r = 0; r < s->p; r++) {
            const bg_sched_list_t *l = &s->lists[r];
            while (pc[r] < (long)l->len) {
                if (bg_act_is_recv(l->a[pc[r]].kind)) {
                    pos_t from = matching_send(k, r, pc[r]);
                    if (pc[from.rank] <= from.idx) break;
                }
                pc[r]++;
                progress = 1;
            }
        }
    }
    for (int r0 = 0; r0 < s->p && !st; r0++)
        if (pc[r0] != (long)s->lists[r0].len) st = report_cycle(k, pc, r0);
    free(pc);
    return st;
}

static bg_status_t check(const bg_sched_t *s, int fwd, int *peak_live, pos_t *bad)
{
    ck_t k;
    bg_status_t st = ck_init(&k, s);
    if (st) return st;
    k.fwd = fwd;
    for (int r = 0; r < s->p && !st; r++) st = check_rank(&k, r);
    if (!st) st = check_complete(&k);
    if (!st) st = check_deadlock(&k);
    if (!st && peak_live) memcpy(peak_live, k.peak, (size_t)s->p * sizeof(int));
    if (bad) *bad = k.bad;
    ck_free(&k);
    return st;
}

bg_status_t bg_sched_check(const bg_sched_t *s, int *peak_live)
{
    if (s->flush_free) return bg_sched_check_2bw_(s, peak_live);
    return check(s, 0, peak_live, NULL);
}

bg_status_t bg_sched_check_forward(const bg_sched_t *s)
{
    return check(s, 1, NULL, NULL);
}

bg_status_t bg_sched_check_at_(const bg_sched_t *s, int *bad_rank, long *bad_index)
{
    pos_t bad = {-1, -1};
    bg_status_t st = s->flush_free ? bg_sched_check_2bw_(s, NULL) : check(s, 0, NULL, &bad);
    *bad_rank = bad.rank;
    *bad_index = bad.idx;
    return st;
}

void bg_sched_peaks(const bg_sched_t *s, int *peak_live, int *peak_stash)
{
    for (int r = 0; r < s->p; r++) {
        int live = 0, stash = 0, pl = 0, ps = 0;
        const bg_sched_list_t *l = &s->lists[r];
        /* A flush-free step starts with its carried micro-batches live. */
        for (size_t i = 0; s->flush_free && i < l->len; i++) {
            bg_act_kind_t k = l->a[i].kind;
            if (l->a[i].mb < s->m || !bg_act_is_compute(k)) continue;
            live += k == BG_ACT_W || k == BG_ACT_BW;
            stash += k == BG_ACT_B || k == BG_ACT_BW;
        }
        pl = live, ps = stash;
        for (size_t i = 0; i < l->len; i++) {
            switch (l->a[i].kind) {
            case BG_ACT_F: live++, stash++; break;
            case BG_ACT_B: stash--; break;
            case BG_ACT_W: live--; break;
            case BG_ACT_BW: live--, stash--; break;
            default: break;
            }
            pl = live > pl ? live : pl;
            ps = stash > ps ? stash : ps;
        }
        if (peak_live) peak_live[r] = pl;
        if (peak_stash) peak_stash[r] = ps;
    }
}
