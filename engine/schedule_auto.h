/*
 * engine/schedule_auto.h -- `--schedule auto`: pick the schedule the
 * simulator predicts fastest for given per-chunk costs and a per-rank memory
 * cap, among every valid row of the schedule table and a few greedy
 * zero-bubble-style list schedules (engine/schedule_auto.c).
 *
 * Pure and deterministic: the choice is a function of (p, m, chunks, the
 * options) only, so every rank derives the same lists. Must NOT measure
 * time, touch devices or transport, or accept a candidate the checker has
 * not proved. docs/schedules.md, "auto", has the rules.
 */
#ifndef BG_SCHEDULE_AUTO_H
#define BG_SCHEDULE_AUTO_H

#include "engine/schedule.h"

/*
 * What auto optimises for. Costs: with n_layers > 0, per-layer F, B, W
 * (model order, seconds or any unit) that each candidate's p*v chunks sum
 * over a split balanced on F + B + W; otherwise a rank's share of the model
 * costs f, b, w per micro-batch (each of v chunks 1/v of it). comm: from a
 * send's end until its data is usable on the other rank (the simulator's
 * latency). mem_cap: per-rank peak of live activations (F ran, W not), in
 * stage micro-batches (a chunk counts 1/v); <= 0 means 1F1B's, min(p, m).
 * flags: generator flags for the table rows (BG_SCHED_SPLIT_BW).
 * split (may be NULL): the split a run of G chunks would use, first[G+1]
 * layer bounds, in place of the one balanced on F + B + W (a training run
 * sums each chunk over the layers it really holds); it must be a pure
 * function of G, and its failure rejects the candidate with its message.
 */
typedef struct {
    const double *layer_f, *layer_b, *layer_w;
    int n_layers;
    double f, b, w;
    double comm;
    double mem_cap;
    unsigned flags;
    bg_status_t (*split)(void *ctx, int G, int *first);
    void *split_ctx;
} bg_sched_auto_opts_t;

/* Equal costs (f = b = w = 1), no communication cost, 1F1B's memory. */
bg_sched_auto_opts_t bg_sched_auto_defaults(void);

/* One candidate as judged: ok = proved, simulated and within the cap. */
typedef struct {
    char name[40];  /* table name, or "greedy-..." for a built one */
    int fixed;      /* 1: a row of the table */
    int v;          /* chunks per rank */
    int ok;
    double makespan, bubble;
    double peak_mem; /* max over ranks of peak live, stage micro-batches */
    char why[200];   /* why it was rejected ("" when ok) */
} bg_sched_auto_cand_t;

typedef struct {
    bg_sched_auto_cand_t *cand;
    int n;
    int best;       /* index of the chosen one */
    double mem_cap; /* the cap applied (the default resolved) */
} bg_sched_auto_report_t;

/*
 * Build every candidate for p ranks, m micro-batches and `chunks` per rank
 * (0: each candidate's own), prove each with the checker, simulate it with
 * o's costs, and return the one with the smallest makespan whose peak fits
 * o->mem_cap; ties (within 1e-9 relative) go to the table row that comes
 * first, then to a table row over a built one. The result is named after
 * the winner. BG_ERR_INVALID (every candidate rejected, each reason in the
 * message) or BG_ERR_NOMEM. *out set only on success; report (may be NULL)
 * is filled on success and owned by the caller (bg_sched_auto_report_free).
 */
bg_status_t bg_sched_auto(int p, int m, int chunks, const bg_sched_auto_opts_t *o,
                          bg_sched_t **out, bg_sched_auto_report_t *report);
void bg_sched_auto_report_free(bg_sched_auto_report_t *r); /* NULL is fine */

/*
 * Per-chunk costs auto uses for a schedule of G = p*v chunks (o->split's
 * split of o's layers, else a balanced one, or o->f/v etc.): f, b, w get G
 * entries each. BG_ERR_INVALID when there are layers but fewer than G, or
 * o->split's error.
 */
bg_status_t bg_sched_auto_chunk_costs(const bg_sched_auto_opts_t *o, int G, int v, double *f,
                                      double *b, double *w);

#endif
