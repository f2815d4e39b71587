/*
 * partition/partition.h -- splitting a layer chain into pipeline stages.
 *
 * A problem is a chain priced per pipeline rank (heterogeneous devices
 * allowed) plus a configuration (schedule, p stages, v chunks per stage,
 * m micro-batches, data-parallel degree, recompute). A split cuts the
 * chain into G = p*v contiguous chunks; chunk g runs on the rank the
 * schedule's placement gives it (bg_sched_chunk_rank_of: g % p for the loop
 * placement, v = 1 being the plain pipeline; a zig-zag for the V schedules).
 *
 * The schedules are modelled in closed form (fill/drain and in-flight
 * micro-batches, docs/partition.md) by the schedule table
 * (partition/schedules.h); partition/ never includes the engine's schedule
 * generators. Everything is pure and deterministic.
 *
 * Objective of the split (bg_partition_optimal): the predicted step
 * (plan->step_s: pipeline with the schedule's fill/drain, point-to-point,
 * allreduce, optimizer) over splits whose chunks all fit their memory cap,
 * searched over bottleneck thresholds and never worse than a baseline.
 * bg_partition_bottleneck is the exact lexicographic minimum of
 * (bottleneck, total) = (max_g t_g, sum_g t_g), t_g being chunk g's
 * per-micro-batch time including its point-to-point sends. Must not depend
 * on engine/ or transport/.
 */
#ifndef BG_PARTITION_H
#define BG_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include "partition/cost.h"
#include "partition/schedules.h"

typedef enum { BG_SPLIT_OPTIMAL = 0, BG_SPLIT_UNIFORM, BG_SPLIT_PARAMS } bg_split_method_t;
const char *bg_split_method_name(bg_split_method_t m);
bg_status_t bg_split_method_parse(const char *s, bg_split_method_t *out);

typedef struct bg_part_config {
    bg_sched_kind_t schedule;
    int stages;          /* p: pipeline ranks */
    int chunks;          /* v: chunks per rank, within the schedule's range */
    int micro_batches;   /* m per step per data-parallel replica */
    int dp;              /* D: data-parallel replicas (allreduce cost only) */
    bool recompute;      /* keep only chunk inputs; re-run F before B */
    int opt_state_bytes; /* per parameter: 8 for AdamW, 0 for SGD */
    int cores;           /* CPU runs: cores the stages*dp ranks share on one machine
                            (rank r on core r % cores, as placement binds them);
                            0: a device per rank */
    int zero;            /* ZeRO stage (0 or 1): 1 splits masters and optimizer
                            state over dp (bg_param_bytes) and adds the weights'
                            all-gather to the data-parallel time */
} bg_part_config_t;

typedef struct bg_part_problem {
    const bg_chain_t *chain;
    /* [cfg.stages]: rank r's pricing; all at the same micro-batch size.
     * The same pointer may repeat (homogeneous). Borrowed. */
    const bg_costs_t *const *costs;
    bg_part_config_t cfg;
} bg_part_problem_t;

typedef struct bg_chunk_eval {
    int first, end;  /* layers [first, end) */
    int stage;       /* its rank: bg_sched_chunk_rank_of(schedule, p, g) */
    int in_flight;   /* micro-batches whose activations it holds at peak */
    double f, b, w;  /* seconds per micro-batch; b includes recompute F */
    double comm;     /* point-to-point seconds per micro-batch it sends */
    double time;     /* f + b + w + comm */
    int64_t params;
    int64_t mem_static; /* params*bytes_per_param + workspace + comm buffers */
    int64_t mem_act;    /* activations at peak */
    int64_t mem;        /* mem_static + mem_act */
    int64_t mem_cap;    /* its share of the rank's memory (cap / v) */
} bg_chunk_eval_t;

typedef struct bg_stage_eval {
    double f, b, w, comm, time; /* sums over the rank's chunks */
    double allreduce;  /* gradient ring allreduce over dp replicas */
    double optim;      /* optimizer step (memory bound) */
    int64_t params, mem, mem_cap;
    int first_layer, end_layer; /* span of its first .. last chunk */
} bg_stage_eval_t;

typedef struct bg_plan {
    bg_part_config_t cfg;
    int micro_batch;   /* samples per micro-batch */
    int n_layers;
    int n_chunks;      /* G = p*v */
    int *bounds;       /* [G+1]: chunk g is layers [bounds[g], bounds[g+1]) */
    bg_chunk_eval_t *chunk; /* [G] */
    bg_stage_eval_t *stage; /* [p] */
    double bottleneck; /* max_g chunk time */
    double total;      /* sum_g chunk time (in chunk order) */
    double pipe_s;     /* pipeline part of a step (fill + steady + drain) */
    double step_s;     /* pipe_s + slowest (allreduce + optimizer) */
    double bubble;     /* idle fraction of the pipeline part */
    bool fits;         /* every chunk within its memory cap */
    int64_t peak_mem;  /* max over ranks */
} bg_plan_t;

void bg_plan_free(bg_plan_t *p);

/* In-flight micro-batches (activation sets) chunk g holds at peak: the
 * table's closed form (partition/schedules.def, docs/partition.md). */
int bg_in_flight(const bg_part_config_t *cfg, int g);

/*
 * Cut L layers into G contiguous non-empty chunks where the monotone prefix
 * sum `pre` [L+1] (pre[0] = 0) crosses g/G of pre[L]: bounds [G+1]. Needs
 * 1 <= G <= L; cannot fail.
 */
void bg_split_prefix(const double *pre, int L, int G, int *bounds);

/*
 * Evaluate an explicit split `bounds` [G+1] (0 = bounds[0] < ... <
 * bounds[G] = n_layers) into a plan. Infeasible memory is reported in
 * plan->fits, not as an error. BG_ERR_INVALID on malformed bounds/config.
 */
bg_status_t bg_plan_evaluate(const bg_part_problem_t *pb, const int *bounds, bg_plan_t *out);

/*
 * The split with the lowest predicted step_s over fitting splits: the best
 * of the lexicographic split, the baselines and the min-total split under
 * a few bottleneck thresholds (docs/partition.md). Never worse than a
 * fitting baseline; steps within 0.5% of the best tie, the one closest to
 * the uniform split wins and then walks towards it inside that band. BG_ERR_NOMEM with a message saying by
 * how much the best split misses and what would help when no split fits;
 * BG_ERR_INVALID on bad config.
 */
bg_status_t bg_partition_optimal(const bg_part_problem_t *pb, bg_plan_t *out);
/* The exact lexicographic minimum of (bottleneck, total) over all splits
 * that fit memory (two dynamic programmes); errors as above. */
bg_status_t bg_partition_bottleneck(const bg_part_problem_t *pb, bg_plan_t *out);
/* The same split without the diagnosis (for searches that try many
 * shapes): BG_ERR_NOMEM with a short message when nothing fits. */
bg_status_t bg_partition_try(const bg_part_problem_t *pb, bg_plan_t *out);
/* The lexicographic (bottleneck, total) split without the diagnosis: one
 * pass of two dynamic programmes, for ranking many shapes quickly (its
 * predicted step bounds bg_partition_try's from above). */
bg_status_t bg_partition_try_bottleneck(const bg_part_problem_t *pb, bg_plan_t *out);

/* Baselines (DeepSpeed's `uniform` and `parameters`): they ignore times
 * and memory when cutting; the plan reports whether they fit. */
bg_status_t bg_partition_uniform(const bg_part_problem_t *pb, bg_plan_t *out);
bg_status_t bg_partition_params(const bg_part_problem_t *pb, bg_plan_t *out);
bg_status_t bg_partition(const bg_part_problem_t *pb, bg_split_method_t m, bg_plan_t *out);

/*
 * The smallest achievable max over chunks of mem/cap (exact DP); <= 1 iff
 * some split fits. Used to say by how much a configuration misses.
 */
bg_status_t bg_partition_min_peak(const bg_part_problem_t *pb, double *ratio_out,
                                  int64_t *need_bytes_out, int64_t *cap_bytes_out);

/* Check a config against a chain length; BG_ERR_INVALID with the reason. */
bg_status_t bg_part_config_check(const bg_part_config_t *cfg, int n_layers);

#endif
