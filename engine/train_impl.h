/*
 * engine/train_impl.h -- the state of one rank's training run, shared by
 * engine/train.c (the loop) and engine/train_report.c (what it prints and
 * writes to --metrics). Must NOT be included elsewhere.
 */
#ifndef BG_TRAIN_IMPL_H
#define BG_TRAIN_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/data.h"
#include "engine/net.h"
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
    bg_net_t *net;
    bg_backend_t *be;
    bg_data_t *ds;
    bg_rt_t *rt;
    int target_input; /* graph input fed with targets; -1 if none */
    int64_t steps, start_step;
    FILE *metrics;
    char run_id[48]; /* tags every metrics line of this run */
    bool resumed;    /* parameters and step came from a checkpoint */
    int64_t skipped; /* steps skipped for overflowed gradients (loss scaling) */
    float saved_scale[2]; /* the checkpoint's loss scale, alive until it is written */
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
 * ranks: loss, count, busy, pipeline, step time; the window's bubble) and its metrics line. */
void bg_train_log_step_(train_t *t, int64_t step, const float *sums, int64_t window, double bubble,
                        double t_elapsed, int64_t steps_done, const bg_rt_stats_t *s);
/* The eval line of `step` and its metrics line. */
void bg_train_log_eval_(train_t *t, int64_t step, double loss, double acc, int64_t samples);
/* Rank 0 with --metrics: open the file and write the run's header line
 * (makes the run id). BG_ERR_IO naming the file on failure. */
bg_status_t bg_train_metrics_open_(train_t *t);
/* The one-line summary of the run before it starts. */
void bg_train_banner_(train_t *t);

#endif
