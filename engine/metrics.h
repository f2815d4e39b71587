/*
 * engine/metrics.h -- metrics computed from what an evaluation shows its
 * caller (bg_rt_output_t), on the rank that computes the loss.
 * Must NOT run compute or communicate: sums over ranks are the training
 * loop's job.
 */
#ifndef BG_METRICS_H
#define BG_METRICS_H

#include <stdint.h>

#include "engine/runtime.h"

/* Argmax accuracy: rows whose highest logit is the target class. */
typedef struct bg_accuracy {
    int64_t correct, rows;
} bg_accuracy_t;

/*
 * A bg_rt_output_fn: adds one micro-batch's argmax hits (from the logits, or
 * the per-row argmax a fused classifier reports) and rows into the
 * bg_accuracy_t at `ctx`. Ties go to the lowest class. Cannot fail.
 */
bg_status_t bg_accuracy_add(void *ctx, const bg_rt_output_t *o);

#endif
