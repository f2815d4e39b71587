/*
 * engine/train_impl.h -- the state of one rank's training run, shared by
 * engine/train.c (the loop), engine/train_report.c (what it prints and
 * writes to --metrics) and the loop's other parts (train_ckpt.c,
 * train_finite.c, ps_train.c, train_check.c). Must NOT be included
 * elsewhere.
 */
#ifndef BG_TRAIN_IMPL_H
#define BG_TRAIN_IMPL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/net.h"
#include "engine/ps.h"
#include "engine/runtime.h"
#include "engine/schedule.h"
#include "engine/sim.h"
#include "engine/train.h"
#include "layers/graph.h"
#include "transport/transport.h"

typedef struct train {
    const bg_train_conf_t *c;
    int rank, world, stage, dp, S, D, M, V;
    int64_t mb_rows; /* rows per micro-batch */
    bg_tp_t *tp;
    bg_tp_group_t *world_group;
    bg_graph_t *g;
    bg_sched_t *sched;
    char sched_why[512]; /* auto: what it chose and from what costs ("" otherwise) */
    bg_net_t *net;
    bg_backend_t *be;
    bg_data_t *ds;
    bg_rt_t *rt;
    bg_ps_conf_t ps; /* parameter servers (servers 0: off); ranks >= world serve */
    int target_input; /* graph input fed with targets; -1 if none */
    int64_t steps, start_step;
    FILE *metrics;
    char run_id[48]; /* tags every metrics line of this run */
    bool resumed;    /* parameters and step came from a checkpoint */
    int64_t skipped; /* steps skipped for overflowed gradients (loss scaling) */
    struct train_ckpt *ckpt; /* checkpoint writer state (train_ckpt.c); NULL until a save */
    struct train_fin *fin;   /* the per-step non-finite checks (train_finite.c) */
    bool tty;
    bg_bubble_rank_t *bub; /* this rank's steps since the last log point */
    size_t nbub, capbub;
    bool bar_open; /* a \r progress bar is on the terminal's last line */
    /* feed state */
    bg_split_t split;
    int64_t data_step;
} train_t;

/* What a model's inputs ask of the data: see engine/train_check.c. */
typedef struct bg_train_data_plan {
    int target_input; /* graph input fed with targets; -1 if none */
    int feature;      /* the other graph input; -1 if none */
    bg_data_opts_t o; /* batch, seed, sequence length and vocabulary */
    char *spec;       /* the spec to open (malloc'd): --data, adapted or defaulted */
} bg_train_data_plan_t;

/* Fill *out for model g and conf c; BG_ERR_INVALID when the model has more
 * than one non-target input. Free with bg_train_data_plan_free_. */
bg_status_t bg_train_data_plan_(const bg_train_conf_t *c, const bg_graph_t *g,
                                bg_train_data_plan_t *out);
void bg_train_data_plan_free_(bg_train_data_plan_t *dp);
/* BG_ERR_INVALID with a hint when the opened data does not fit the model's
 * inputs (images for a token model, column counts). */
bg_status_t bg_train_data_fits_(const bg_train_conf_t *c, const bg_graph_t *g,
                                const bg_train_data_plan_t *dp, const bg_data_t *ds);

/* End the progress bar's line, if one is open, so the next line starts
 * clean. Rank 0; cannot fail. */
void bg_train_bar_end_(train_t *t);
/* Note this rank's part of the step just run (bg_rt_events) for the bubble;
 * out of memory only loses the note (the bubble then counts fewer steps). */
void bg_train_bubble_note_(train_t *t);
/* The noted steps packed for a world sum: *n floats in a new *out (caller
 * frees), this rank's slots filled, the others 0. BG_ERR_NOMEM. */
bg_status_t bg_train_bubble_pack_(train_t *t, float **out, size_t *n);
/* The window's bubble from the summed pack: per step and pipeline bg_bubble,
 * averaged over pipelines and steps; clears the notes. Cannot fail. */
double bg_train_bubble_unpack_(train_t *t, const float *sum);
/* The progress line of `window` logged steps ending at `step` (sums over
 * ranks: loss sum, losses, step time; the window's bubble) and its metrics line. */
void bg_train_log_step_(train_t *t, int64_t step, const float *sums, int64_t window, double bubble,
                        double t_elapsed, int64_t steps_done, const bg_rt_stats_t *s);
/* The eval line of `step` and its metrics line. */
void bg_train_log_eval_(train_t *t, int64_t step, double loss, double acc, int64_t samples);
/* Rank 0 with --metrics: open the file and write the run's header line
 * (makes the run id). BG_ERR_IO naming the file on failure. */
bg_status_t bg_train_metrics_open_(train_t *t);
/* The one-line summary of the run before it starts. */
void bg_train_banner_(train_t *t);
/* With --metrics: every rank's peak resident memory (getrusage's maxrss,
 * i.e. VmHWM) summed over the world, and rank 0 writes one record
 * {"run","step","peak_rss_mib":[per global rank]}. Collective: every rank
 * calls it; transport errors and out of memory pass through. */
bg_status_t bg_train_report_rss_(train_t *t, int64_t step);

/* ---- engine/train_ckpt.c: checkpoints of the run ---- */

/* Save step `step` (every rank, at the step boundary): the state is
 * snapshotted, then each stage file is written -- by a background thread
 * with --async-checkpoint on, else here -- and rank 0 publishes the
 * manifest and `latest` once all are written. A save still in flight is
 * first waited for (the wait is logged). An error names the file. */
bg_status_t bg_train_save_(train_t *t, int64_t step);
/* Every rank, after every step: surface a background write's error (naming
 * the file) and publish a save once every stage file is written. */
bg_status_t bg_train_ckpt_poll_(train_t *t);
/* Every rank, before the run ends: wait until the last save is published. */
bg_status_t bg_train_ckpt_finish_(train_t *t);
/* Seconds this rank's training waited on checkpoints so far: saves, polls
 * and the final wait (not the background writes themselves). Cannot fail. */
double bg_train_ckpt_held_s_(const train_t *t);
/* Wait for a write in flight (outcome dropped) and free the writer state. */
void bg_train_ckpt_free_(train_t *t);
/* --resume: load the latest checkpoint (any layout) and check that its
 * records of the step agree; starting afresh when there is none. */
bg_status_t bg_train_resume_(train_t *t);

/* engine/ps_train.c: t->ps from the flags (BG_ERR_INVALID for a bad
 * --staleness); a server rank's whole run after setup; rank 0 prints and
 * writes the staleness histogram summed over the workers (a no-op without
 * servers; the others join the sum). */
bg_status_t bg_train_ps_setup_(train_t *t);
bg_status_t bg_train_serve_(train_t *t);
bg_status_t bg_train_ps_report_(train_t *t);
/* engine/train_finite.c: the non-finite check after each step, agreed by
 * every rank (BG_ERR_CANCELED naming who found what); under parameter
 * servers with staleness > 0 its verdicts are read that many steps late,
 * and settle_ reads every pending one (before a log point, evaluation,
 * checkpoint or the end; `now` is the step just run). setup_ after the
 * world group exists; free_ any time. */
bg_status_t bg_train_finite_setup_(train_t *t);
bg_status_t bg_train_finite_step_(train_t *t, int64_t step, const bg_rt_stats_t *s);
bg_status_t bg_train_finite_settle_(train_t *t, int64_t now);
void bg_train_finite_free_(train_t *t);
/* The test-only straggler (BRIGADE_TEST_STEP_DELAY, engine/ps_train.c):
 * sleeps before step `step` when it names this rank. Cannot fail. */
void bg_train_test_delay_(const train_t *t, int64_t step);
/* Parameters (and, with_state, optimizer state) of this rank from ck, or
 * from the single file f (--init); refuses non-finite values naming the
 * file and tensor. */
bg_status_t bg_train_load_params_(train_t *t, bg_ckpt_t *ck, bg_st_file_t *f, bool with_state);

/* ---- small helpers every part of the run uses ---- */

/* The bound of every wait for a peer: past the hang and heartbeat
 * timeouts, so the store's verdict, which names the rank at fault, always
 * comes first; BRIGADE_TP_TIMEOUT when hang detection is off. */
static inline double wait_bound(const train_t *t)
{
    const bg_train_conf_t *c = t->c;
    if (c->hang_timeout > 0)
        return c->hang_timeout + c->heartbeat_timeout + 1.0;
    return t->tp ? bg_tp_timeout(t->tp) : 60.0;
}

/* Sum `n` floats over every rank (stats, losses). */
static inline bg_status_t world_sum(train_t *t, float *v, int n)
{
    if (!t->world_group)
        return BG_OK;
    return bg_tp_allreduce(t->world_group, v, (size_t)n, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                           wait_bound(t));
}

static inline bg_status_t world_barrier(train_t *t)
{
    return t->world_group ? bg_tp_barrier(t->world_group, wait_bound(t)) : BG_OK;
}


/* Index of the first value that is not finite (or negative, with nonneg)
 * in x[n]; -1 when none. */
static inline int64_t first_invalid(const float *x, int64_t n, bool nonneg)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || (nonneg && x[i] < 0))
            return i;
    return -1;
}

#endif
