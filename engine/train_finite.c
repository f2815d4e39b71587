/*
 * engine/train_finite.c -- the per-step non-finite check every rank agrees
 * on: a non-finite loss or gradient norm on any rank stops every rank at
 * the same step, before anything is logged or saved from that state.
 *
 * The agreement is a world sum of two floats per step. Under parameter
 * servers with a staleness bound S > 0 (or inf) that sum is left in flight
 * for `lag` steps (S, at most BG_FINITE_LAG_MAX) and read then, so workers
 * may drift as far apart as the bound lets them instead of meeting every
 * step; every rank reads step t's verdict after the same step t + lag, so
 * all still stop at one step. Log points, evaluations, checkpoints and the
 * end settle every pending verdict first (bg_train_finite_settle_).
 *
 * Must NOT: decide anything from one rank's view alone, log or save, or
 * keep a verdict pending past a step that logs, evaluates or saves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/train_impl.h"

#define BG_FINITE_LAG_MAX 64

/* One step's check in flight: bad[0] ranks that found a non-finite value,
 * bad[1] the sum of their (rank + 1); what this rank found ("" none). */
typedef struct {
    bg_tp_coll_t *c;
    float bad[2];
    int64_t step;
    char what[BG_NAME_MAX + 96];
} fin_slot_t;

struct train_fin {
    int lag; /* steps a verdict stays in flight; 0: read at once */
    int head, n;
    fin_slot_t slot[]; /* [lag + 1], a ring */
};

/* What this rank found after a step ("" when all is finite). The loss and
 * norm cover every parameter (NaN propagates), so the parameters are
 * scanned only then, to name the first non-finite tensor. */
static void finite_local(train_t *t, const bg_rt_stats_t *s, char *what, size_t cap)
{
    what[0] = '\0';
    if (s->loss_count > 0 && !isfinite(s->loss_sum))
        snprintf(what, cap, "the loss is %g", s->loss_sum);
    else if (!isfinite(s->grad_norm))
        snprintf(what, cap, "the gradient norm is %g", s->grad_norm);
    for (int i = 0; *what && i < bg_rt_param_count(t->rt); i++) {
        bg_rt_param_view_t v;
        bg_rt_param_get(t->rt, i, &v);
        int64_t at = v.master ? first_invalid(v.master, v.numel, false) : -1; /* ZeRO-1: NULL */
        size_t n = strlen(what);
        if (at < 0)
            continue;
        snprintf(what + n, cap - n, "; first non-finite tensor here: '%s' (element %lld)", v.name,
                 (long long)at);
        break;
    }
}

/* The verdict of step `found` read after step `now` (equal without lag):
 * BG_ERR_CANCELED naming who found what, or BG_OK. */
static bg_status_t finite_verdict(train_t *t, int64_t found, int64_t now, const float *bad,
                                  const char *what)
{
    char late[64] = "";
    if (now != found)
        snprintf(late, sizeof(late), " (seen by all after step %lld)", (long long)now + 1);
    if (bad[0] == 0)
        return BG_OK;
    if (*what)
        return bg_errorf(BG_ERR_CANCELED,
                         "rank %d (stage %d, dp %d): non-finite value at step %lld: %s; "
                         "stopped without saving a checkpoint from this state%s",
                         t->rank, t->stage, t->dp, (long long)found + 1, what, late);
    if (bad[0] == 1)
        return bg_errorf(BG_ERR_CANCELED,
                         "rank %d: stopped at step %lld: rank %d found a non-finite value%s",
                         t->rank, (long long)found + 1, (int)bad[1] - 1, late);
    return bg_errorf(BG_ERR_CANCELED,
                     "rank %d: stopped at step %lld: %d ranks found non-finite values%s", t->rank,
                     (long long)found + 1, (int)bad[0], late);
}

bg_status_t bg_train_finite_setup_(train_t *t)
{
    int64_t s = t->ps.servers && t->world_group ? t->ps.staleness : 0;
    int lag = s > BG_FINITE_LAG_MAX || s < 0 ? BG_FINITE_LAG_MAX : (int)s; /* inf: the cap */
    struct train_fin *f = calloc(1, sizeof(*f) + (size_t)(lag + 1) * sizeof(fin_slot_t));
    if (!f)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the non-finite checks");
    f->lag = lag;
    t->fin = f;
    return BG_OK;
}

/* Reads the oldest pending verdict after step `now`. */
static bg_status_t settle_oldest(train_t *t, int64_t now)
{
    struct train_fin *f = t->fin;
    fin_slot_t *x = &f->slot[f->head];
    bg_status_t st = bg_tp_coll_wait(x->c, wait_bound(t));
    x->c = NULL;
    f->head = (f->head + 1) % (f->lag + 1);
    f->n--;
    return st == BG_OK ? finite_verdict(t, x->step, now, x->bad, x->what) : st;
}

bg_status_t bg_train_finite_settle_(train_t *t, int64_t now)
{
    bg_status_t st = BG_OK;
    while (st == BG_OK && t->fin && t->fin->n > 0)
        st = settle_oldest(t, now);
    return st;
}

bg_status_t bg_train_finite_step_(train_t *t, int64_t step, const bg_rt_stats_t *s)
{
    struct train_fin *f = t->fin;
    if (!f || !f->lag) {
        char what[BG_NAME_MAX + 96];
        finite_local(t, s, what, sizeof(what));
        float bad[2] = {*what ? 1.0f : 0.0f, *what ? (float)(t->rank + 1) : 0.0f};
        bg_status_t st = world_sum(t, bad, 2);
        return st == BG_OK ? finite_verdict(t, step, step, bad, what) : st;
    }
    fin_slot_t *x = &f->slot[(f->head + f->n) % (f->lag + 1)];
    finite_local(t, s, x->what, sizeof(x->what));
    x->bad[0] = *x->what ? 1.0f : 0.0f;
    x->bad[1] = *x->what ? (float)(t->rank + 1) : 0.0f;
    x->step = step;
    bg_status_t st = bg_tp_allreduce_start(t->world_group, x->bad, 2, BG_TP_F32, BG_TP_SUM,
                                           BG_TP_MEM_HOST, &x->c);
    if (st != BG_OK)
        return st;
    f->n++;
    while (st == BG_OK && f->n > f->lag)
        st = settle_oldest(t, step);
    return st;
}

void bg_train_finite_free_(train_t *t)
{
    free(t->fin); /* collectives still in flight are the transport's to abort */
    t->fin = NULL;
}
