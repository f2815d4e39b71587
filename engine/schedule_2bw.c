/*
 * engine/schedule_2bw.c -- PipeDream-2BW (Narayanan et al. 2021): 1F1B that
 * never flushes. Its generator, its checker and the unrolling both use.
 *
 * A step's list on rank r is m pairs (F of this step's micro-batch k, then
 * the oldest backward not yet run). The first c_r = min(p-r-1, m) backwards
 * belong to the previous step's last micro-batches (written mb + m: carried
 * over the boundary), the rest to this step's first m - c_r. After the
 * carried ones the previous step's gradient is complete: its ALLREDUCE
 * starts there, and the OPTIMIZER, last on every rank, applies it (one step
 * of delay; this step's gradient meanwhile accumulates into a second set of
 * accumulators). Micro-batches keep the weight version they entered with,
 * hence two versions (docs/schedules.md, "2bw").
 *
 * The lists are checked by unrolling: three steps and the drain as one plain
 * schedule, which the ordinary checker proves complete and deadlock-free.
 * Must NOT touch tensors, devices or time (pure, as the other generators).
 */
#include "engine/schedule_impl.h"

#include <stdlib.h>
#include <string.h>

/* Steps the checker unrolls (plus the drain): the first step, whose
 * carried actions are absent, and two steady ones, so every kind of step
 * boundary (fill -> steady, steady -> steady, steady -> drain) is run. */
#define CHECK_STEPS 3

/* Backwards rank r carries into the next step: its 1F1B warm-up, capped by
 * m (the carried ones all come from one step, so two weight versions do). */
static int carry_of(const bg_sched_t *s, int r)
{
    return s->p - r - 1 < s->m ? s->p - r - 1 : s->m;
}

static bg_status_t put(bg_sched_t *s, int r, bg_action_t a)
{
    return bg_sched_append(s, r, a);
}

/* Backward of encoded micro-batch mb on rank r with its transfers: the
 * output gradient's receive before, the input gradient's send after B. */
static bg_status_t put_backward(bg_sched_t *s, int r, int mb, int split)
{
    bg_status_t st = BG_OK;
    if (r + 1 < s->p)
        st = put(s, r, bg_action_transfer(BG_ACT_RECV_GRAD, mb, r + 1, r, r + 1));
    if (!st) st = put(s, r, bg_action_compute(split ? BG_ACT_B : BG_ACT_BW, mb, r));
    if (!st && r > 0) st = put(s, r, bg_action_transfer(BG_ACT_SEND_GRAD, mb, r, r - 1, r - 1));
    if (!st && split) st = put(s, r, bg_action_compute(BG_ACT_W, mb, r));
    return st;
}

static bg_status_t put_forward(bg_sched_t *s, int r, int mb)
{
    bg_status_t st = BG_OK;
    if (r > 0) st = put(s, r, bg_action_transfer(BG_ACT_RECV_ACT, mb, r - 1, r, r - 1));
    if (!st) st = put(s, r, bg_action_compute(BG_ACT_F, mb, r));
    if (!st && r + 1 < s->p)
        st = put(s, r, bg_action_transfer(BG_ACT_SEND_ACT, mb, r, r + 1, r + 1));
    return st;
}

/* Steady-state lists, one chunk per rank on rank = chunk (v = 1, LOOP). */
bg_status_t bg_sched_gen_2bw_(bg_sched_t *s, int split)
{
    if (s->v != 1 || (long)2 * s->m >= BG_SCHED_MAX_MB)
        return bg_errorf(BG_ERR_INVALID, "2bw: needs one chunk per rank and m < %d (got v=%d "
                         "m=%d)", BG_SCHED_MAX_MB / 2, s->v, s->m);
    s->flush_free = 1;
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p && !st; r++) {
        int c = carry_of(s, r), m = s->m;
        /* the previous step's gradient is complete after the carried
         * backwards: its allreduce starts there (first when none is carried) */
        if (c == 0) st = put(s, r, bg_action_compute(BG_ACT_ALLREDUCE, -1, r));
        for (int k = 0; k < m && !st; k++) {
            st = put_forward(s, r, k);
            /* the k-th backward of the step: carried (previous step's
             * micro-batch m - c + k, written + m) or this step's k - c */
            if (!st) st = put_backward(s, r, k < c ? 2 * m - c + k : k - c, split);
            if (!st && k == c - 1) st = put(s, r, bg_action_compute(BG_ACT_ALLREDUCE, -1, r));
        }
        if (!st) st = put(s, r, bg_action_compute(BG_ACT_OPTIMIZER, -1, -1));
    }
    return st;
}

/* ------------------------------------------------------------------ unroll */

/* Micro-batch of action a of step t in the unrolled run, or -1 when the
 * action does not run in that step (carried in the first, current in the
 * drain t == steps). */
static int unrolled_mb(const bg_sched_t *s, const bg_action_t *a, int t, int steps)
{
    if (a->mb >= s->m) return t == 0 ? -1 : (t - 1) * s->m + a->mb - s->m;
    return t == steps ? -1 : t * s->m + a->mb;
}

/* W run per gradient (step parity) not yet applied: per chunk and in all. */
typedef struct {
    int *wc[2];
    int wtotal[2], n;
} upd_t;

/* Whether ALLREDUCE / OPTIMIZER `a` of step t runs: they serve step t-1's
 * gradient and run only when some of its W ran here and it is not applied
 * yet (the rule the executor follows: the first step has none, a step after
 * a drain has it applied already). */
static int update_runs(upd_t *u, const bg_action_t *a, int t)
{
    int g = (t + 1) & 1; /* parity of t - 1 */
    if (a->kind == BG_ACT_ALLREDUCE) return u->wc[g][a->chunk] > 0;
    int run = u->wtotal[g] > 0;
    u->wtotal[g] = 0;
    for (int c = 0; c < u->n; c++) u->wc[g][c] = 0;
    return run;
}

/* Rank r's unrolled list into o. */
static bg_status_t unroll_rank(const bg_sched_t *s, int r, int steps, int keep, int mark,
                               size_t *start, upd_t *u, bg_sched_t *o)
{
    const bg_sched_list_t *l = &s->lists[r];
    bg_status_t st = BG_OK;
    for (int t = 0; t <= steps && !st; t++) {
        if (t == mark && start) *start = o->lists[r].len;
        for (size_t i = 0; i < l->len && !st; i++) {
            bg_action_t a = l->a[i];
            if (a.kind == BG_ACT_ALLREDUCE || a.kind == BG_ACT_OPTIMIZER) {
                if (keep && update_runs(u, &a, t)) st = bg_sched_append(o, r, a);
                continue;
            }
            int g = (a.mb >= s->m ? t + 1 : t) & 1; /* the gradient it adds to */
            if ((a.mb = unrolled_mb(s, &a, t, steps)) < 0) continue;
            if (a.kind == BG_ACT_W || a.kind == BG_ACT_BW) u->wc[g][a.chunk]++, u->wtotal[g]++;
            st = bg_sched_append(o, r, a);
        }
    }
    for (int c = 0; c < s->nchunks && !keep && !st; c++)
        if (s->chunk_rank[c] == r) st = bg_sched_append(o, r, bg_action_compute(BG_ACT_ALLREDUCE, -1, c));
    if (!keep && !st) st = bg_sched_append(o, r, bg_action_compute(BG_ACT_OPTIMIZER, -1, -1));
    return st;
}

bg_status_t bg_sched_unroll_(const bg_sched_t *s, int steps, int keep_updates, int mark,
                             size_t *starts, bg_sched_t **out)
{
    if (steps < 1 || (long)steps * s->m >= BG_SCHED_MAX_MB)
        return bg_errorf(BG_ERR_INVALID, "%s: cannot unroll %d steps of %d micro-batches",
                         s->name, steps, s->m);
    bg_sched_t *o = NULL;
    bg_status_t st = bg_sched_create(s->p, steps * s->m, s->v, s->chunk_rank, &o);
    if (st) return st;
    snprintf(o->name, sizeof(o->name), "%s", s->name);
    /* the same edges, skip connections included */
    bg_sched_edge_t *e = malloc((size_t)(s->nedges ? s->nedges : 1) * sizeof(*e));
    if (!e) {
        bg_sched_free(o);
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory unrolling", s->name);
    }
    if (s->nedges) memcpy(e, s->edges, (size_t)s->nedges * sizeof(*e));
    free(o->edges);
    o->edges = e, o->nedges = s->nedges, o->cap_edges = (size_t)(s->nedges ? s->nedges : 1);
    upd_t u = {{calloc((size_t)s->nchunks, sizeof(int)), calloc((size_t)s->nchunks, sizeof(int))},
               {0, 0}, s->nchunks};
    if (!u.wc[0] || !u.wc[1]) st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory unrolling", s->name);
    for (int r = 0; r < s->p && !st; r++) {
        u.wtotal[0] = u.wtotal[1] = 0;
        st = unroll_rank(s, r, steps, keep_updates, mark, starts ? &starts[r] : NULL, &u, o);
    }
    free(u.wc[0]), free(u.wc[1]);
    if (st) {
        bg_sched_free(o);
        return st;
    }
    *out = o;
    return BG_OK;
}

/* ----------------------------------------------------------------- checker */

static bg_status_t fail(const bg_sched_t *s, int r, size_t i, const char *why)
{
    char act[96];
    bg_action_str(&s->lists[r].a[i], act, sizeof(act));
    return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d, action %zu (%s): %s",
                     s->name, r, i, act, why);
}

/*
 * What unrolling cannot see, on one rank's step list: carried actions are
 * backwards and gradient transfers of micro-batches m..2m-1 (so they come
 * from the previous step only: two weight versions suffice); one OPTIMIZER,
 * last; one ALLREDUCE per local chunk, after the last carried W (the
 * gradient it syncs, the previous step's, is complete there).
 */
static bg_status_t check_updates(const bg_sched_t *s, int r)
{
    const bg_sched_list_t *l = &s->lists[r];
    long opt = -1, last_carried_w = -1;
    for (size_t i = 0; i < l->len; i++) {
        const bg_action_t *a = &l->a[i];
        if (a->kind == BG_ACT_OPTIMIZER) {
            if (opt >= 0) return fail(s, r, i, "a second OPTIMIZER");
            opt = (long)i;
        } else if (a->kind != BG_ACT_ALLREDUCE) {
            if (a->mb < 0 || a->mb >= 2 * s->m) return fail(s, r, i, "micro-batch out of range");
            int carried = a->mb >= s->m;
            if (carried && (a->kind == BG_ACT_F || a->kind == BG_ACT_SEND_ACT ||
                            a->kind == BG_ACT_RECV_ACT))
                return fail(s, r, i, "only backwards and gradients are carried into a step");
            if (carried && (a->kind == BG_ACT_W || a->kind == BG_ACT_BW)) last_carried_w = (long)i;
        }
    }
    if (opt != (long)l->len - 1 || opt < 0)
        return bg_errorf(BG_ERR_INVALID, "schedule check (%s): rank %d: OPTIMIZER must be last "
                         "(it applies the previous step's gradient)", s->name, r);
    for (int c = 0; c < s->nchunks; c++) {
        if (s->chunk_rank[c] != r) continue;
        long ar = -1;
        for (size_t i = 0; i < l->len; i++)
            if (l->a[i].kind == BG_ACT_ALLREDUCE && l->a[i].chunk == c) {
                if (ar >= 0) return fail(s, r, i, "duplicate ALLREDUCE");
                ar = (long)i;
            }
        if (ar < 0) return fail(s, r, (size_t)opt, "needs its chunks' ALLREDUCE before it");
        if (ar < last_carried_w)
            return fail(s, r, (size_t)ar, "runs before the last carried W: the previous "
                                          "step's gradient is not complete");
    }
    return BG_OK;
}

bg_status_t bg_sched_check_2bw_(const bg_sched_t *s, int *peak_live)
{
    bg_status_t st = BG_OK;
    for (int r = 0; r < s->p && !st; r++) st = check_updates(s, r);
    bg_sched_t *u = NULL;
    if (!st) st = bg_sched_unroll_(s, CHECK_STEPS, 0, 0, NULL, &u);
    if (!st) {
        st = bg_sched_check(u, peak_live);
        if (st)
            bg_error_prefix(st, "%s run for %d steps and drained (micro-batch t*m + k is step "
                            "t's k): ", s->name, CHECK_STEPS);
    }
    bg_sched_free(u);
    return st;
}
