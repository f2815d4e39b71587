/*
 * engine/sim.h -- the schedule simulator: lists + per-action costs -> a
 * predicted timeline, makespan, bubble fraction and peak activation memory,
 * exportable as Chrome-trace JSON or printed as a text diagram.
 *
 * Pure arithmetic over a schedule: must NOT measure, sleep, touch devices or
 * transport. Time is in whatever unit the costs are in. Semantics (what a
 * SEND, RECV, ALLREDUCE costs and blocks) are in docs/schedules.md,
 * "Simulator"; they match the checker's: sends are buffered and never block,
 * receives block until the data has arrived.
 */
#ifndef BG_SIM_H
#define BG_SIM_H

#include <stddef.h>
#include <stdio.h>

#include "base/status.h"
#include "engine/schedule.h"

/*
 * Costs. f, b, w are per-chunk times used for every chunk unless the
 * matching *_chunk array (bg_sched_chunks() entries) is given; a fused BW
 * costs b + w. All values must be finite and >= 0.
 */
typedef struct {
    double f, b, w;
    const double *f_chunk, *b_chunk, *w_chunk;
    double send;      /* time a SEND holds its rank (issue/copy-out); 0 = fully async */
    double latency;   /* from the end of a SEND until the data is usable by its RECV */
    double allreduce; /* per ALLREDUCE, on a per-rank channel beside compute, FIFO */
    double optimizer; /* the OPTIMIZER action, after this rank's allreduces finish */
} bg_sim_costs_t;

/* F = f, B = b, W = w, everything else 0. */
bg_sim_costs_t bg_sim_costs_uniform(double f, double b, double w);

/* A finished simulation; owns a copy of the schedule. */
typedef struct bg_sim bg_sim_t;

/*
 * Check s (bg_sched_check; its error is passed on unchanged), then time it:
 * every action starts when its rank is free (OPTIMIZER: also when the rank's
 * allreduces are done) and a RECV ends when its rank is free and its data has
 * arrived. BG_ERR_INVALID for bad costs.
 */
bg_status_t bg_sim_run(const bg_sched_t *s, const bg_sim_costs_t *costs, bg_sim_t **out);
void bg_sim_free(bg_sim_t *sim); /* NULL is fine */

const bg_sched_t *bg_sim_sched(const bg_sim_t *sim);
double bg_sim_makespan(const bg_sim_t *sim);
/* Compute time of rank: F, B, W, BW and OPTIMIZER. */
double bg_sim_busy(const bg_sim_t *sim, int rank);
/* makespan - busy: everything that is not compute (waiting, send time). */
double bg_sim_idle(const bg_sim_t *sim, int rank);
/* Part of idle spent blocked in RECV. */
double bg_sim_wait(const bg_sim_t *sim, int rank);
/* Bubble fraction of the simulated step: bg_bubble over its ranks. */
double bg_sim_bubble(const bg_sim_t *sim);

/*
 * One rank's part of one step, for the bubble: when its first action started
 * (t0), when its last ended (t1, allreduces and the optimizer included) and
 * how long it computed (busy: F, B, W, BW and OPTIMIZER), on a clock shared
 * by the ranks passed together.
 */
typedef struct {
    double t0, t1, busy;
} bg_bubble_rank_t;

/*
 * The one bubble (docs/schedules.md, "Bubble") of one pipeline's step: the
 * step's global span is min t0 to max t1 over the n ranks; each rank's idle
 * fraction is 1 - busy / span; the bubble is their plain mean (every rank
 * weighs the same). 0 when n < 1 or the span is not > 0. Cannot fail.
 */
double bg_bubble(const bg_bubble_rank_t *r, int n);
/* Peak live activations of rank ((mb, chunk) pairs with F done, W not). */
int bg_sim_peak_live(const bg_sim_t *sim, int rank);
/* Peak full stash of rank ((mb, chunk) pairs with F done, B not). */
int bg_sim_peak_stash(const bg_sim_t *sim, int rank);

/*
 * Start and end of action i of rank. For ALLREDUCE these are on the rank's
 * allreduce channel (its compute stream spends no time on it).
 */
bg_status_t bg_sim_action_time(const bg_sim_t *sim, int rank, size_t i, double *start,
                               double *end);

/*
 * Chrome-trace / Perfetto JSON: one track per rank (compute, sends and
 * receives), one per rank for allreduces, flow arrows from each SEND to its
 * RECV, a "summary" instant per rank (busy, comm_wait, idle, bubble).
 * Event names follow the NVTX names ("F mb3 c1"). us_per_unit scales cost
 * units to the trace's microseconds (> 0). BG_ERR_IO if writing fails.
 */
bg_status_t bg_sim_write_trace(const bg_sim_t *sim, FILE *f, double us_per_unit);

/*
 * Text diagram, one row per rank, one cell per `unit` of time (> 0): the
 * compute action running at the cell's middle ("F3", "B3", "W3", "BW3"; with
 * v > 1 the rank's local chunk is appended as a letter, "F3a" for its first
 * chunk, "F3b" for its second; "F3c5" (global chunk) for maps other than the table's loop and V
 * placements),
 * "-" continuing it, "." idle.
 * Refuses more than 4096 cells per row (BG_ERR_INVALID).
 */
bg_status_t bg_sim_print_grid(const bg_sim_t *sim, FILE *f, double unit);

#endif
