/*
 * partition/search.h -- choosing the shape: for N devices, which
 * (stages S, data-parallel D, micro-batches m, recompute) gives the
 * shortest predicted step that fits memory. `brigade plan --stages auto`.
 *
 * Each candidate is split exactly (bg_partition_try); candidates that
 * cannot beat the current best few by a lower bound, or cannot fit by a
 * memory lower bound, are skipped without a DP. Devices are homogeneous
 * here (a heterogeneous list fixes S already). Pure and deterministic.
 * Must not depend on the engine.
 */
#ifndef BG_PARTITION_SEARCH_H
#define BG_PARTITION_SEARCH_H

#include "partition/partition.h"

typedef struct bg_search_opts {
    int gpus;              /* N = S * D */
    int stages;            /* 0 = auto */
    int dp;                /* 0 = auto */
    int micro_batches;     /* 0 = auto: every divisor of the per-replica batch */
    int64_t global_batch;  /* samples per step, over all replicas */
    int recompute;         /* -1 = try both, 0 = off, 1 = on */
    bg_sched_kind_t schedule;
    int chunks;            /* v, within the schedule's range */
    int opt_state_bytes;   /* 8 = AdamW */
    int top;               /* results to keep (>= 1) */
    int zero;              /* ZeRO stage (bg_part_config_t.zero) */
} bg_search_opts_t;

typedef struct bg_search_result {
    bg_part_config_t cfg;
    int micro_batch;       /* samples per micro-batch */
    double step_s, pipe_s, bubble, samples_per_s;
    int64_t peak_mem;
} bg_search_result_t;

typedef struct bg_search_stats {
    int candidates;        /* shapes considered */
    int solved;            /* exact splits computed */
    int pruned;            /* skipped by a time lower bound */
    int no_fit;            /* could not fit (bound or DP) */
} bg_search_stats_t;

/*
 * Fill res[0..*n_out) (capacity opts->top) with the best shapes, fastest
 * first (ties: fewer stages, then fewer micro-batches, then no recompute).
 * BG_ERR_INVALID for impossible requests (no S, D with S*D = N divides
 * the batch); BG_ERR_NOMEM with a message when no shape fits.
 */
bg_status_t bg_search_shapes(const bg_chain_t *chain, const bg_device_desc_t *dev,
                             const bg_profile_t *prof, const bg_search_opts_t *opts,
                             bg_search_result_t *res, int *n_out, bg_search_stats_t *stats);

#endif
