/*
 * partition/plan_io.h -- the plan file: what `brigade plan -o` writes and
 * `brigade train --plan` reads (format in docs/partition.md).
 *
 * The file records the layout (schedule, stages, chunks, dp, micro-batches,
 * recompute, zero) and, per chunk, its rank and the names of its layers in order,
 * plus the predictions for comparison with measurements. The loader
 * validates structure (contiguous chunks covering every layer once, chunk
 * g on the rank its schedule places it on); bg_plan_file_check_layers then checks the names
 * against the model the engine parsed. Must not know how the engine runs it.
 */
#ifndef BG_PARTITION_PLAN_IO_H
#define BG_PARTITION_PLAN_IO_H

#include "partition/partition.h"

typedef struct bg_plan_file {
    char model[512];
    char method[16];
    char device[32];
    bg_dtype_t dtype;
    bg_part_config_t cfg;   /* schedule, stages, chunks, dp, micro_batches, recompute, zero */
    int micro_batch;        /* samples per micro-batch */
    int64_t global_batch;   /* = micro_batch * micro_batches * dp */
    int n_layers;
    int n_chunks;
    int *bounds;            /* [n_chunks+1] */
    char (*layer)[BG_NAME_MAX]; /* [n_layers] names, in chain order */
    /* predictions */
    double step_s, pipe_s, bubble, samples_per_s, bottleneck_s;
    int64_t peak_mem;
} bg_plan_file_t;

/* What the writer needs beyond the plan: names come from the chain. */
typedef struct bg_plan_meta {
    const char *model;  /* path as given */
    const char *method; /* "optimal" | "uniform" | "params" */
    const char *device; /* device name(s) */
} bg_plan_meta_t;

/* Write `plan` for `chain` to `path` (pretty JSON). BG_ERR_IO on failure. */
bg_status_t bg_plan_save(const char *path, const bg_plan_t *plan, const bg_chain_t *chain,
                         const bg_plan_meta_t *meta);
/* Load and validate; BG_ERR_IO or BG_ERR_INVALID "FILE: ..." on bad input. */
bg_status_t bg_plan_load(const char *path, bg_plan_file_t *out);
bg_status_t bg_plan_parse(const char *text, size_t len, const char *what, bg_plan_file_t *out);
void bg_plan_file_free(bg_plan_file_t *pf);

/* The plan's layer names must equal `names` [n] in order; BG_ERR_INVALID
 * naming the first difference (a plan made for another model). */
bg_status_t bg_plan_file_check_layers(const bg_plan_file_t *pf, const char *const *names, int n);

#endif
