/*
 * engine/runtime.h -- one rank's part of a pipeline: its chunks' parameters,
 * gradients and optimizer state, the activations of micro-batches in
 * flight, and the executor that runs this rank's schedule list.
 *
 * The executor only runs lists (engine/schedule.h): F, B, W, BW, the
 * transfers, ALLREDUCE and OPTIMIZER. Receives are posted ahead of the
 * action that needs them, sends complete in the background while compute
 * goes on, activations are freed as soon as the micro-batch's W has run.
 * Numerics follow the layout-invariance contract (design.md): every
 * per-layer computation and every accumulation happens in the same order
 * whatever the number of stages.
 * Must not spawn processes, parse files, or print (progress is tools'/train's).
 */
#ifndef BG_RUNTIME_H
#define BG_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/net.h"
#include "engine/optim.h"
#include "engine/ps.h"
#include "engine/schedule.h"
#include "layers/backend.h"
#include "transport/transport.h"

typedef struct bg_rt bg_rt_t;

typedef struct bg_rt_conf {
    const bg_net_t *net;
    const bg_sched_t *sched; /* the step's lists; chunk -> pipeline rank map */
    int stage, dp;           /* this rank's pipeline rank and replica */
    int stages, dps;
    bg_backend_t *be;
    bg_dtype_t dtype; /* activations/weights on the device: f32, bf16, fp16 */
    bg_tp_t *tp;      /* NULL only when stages * dps == 1 */
    bg_optim_conf_t optim;
    uint64_t seed;    /* parameter initialisation */
    bool recompute;   /* keep chunk inputs only; redo F before B */
    double timeout_s; /* longest wait for a peer */
    /* Loss scaling: gradients are of loss * scale, unscaled at the step.
     * 0: off (scale 1). A step whose gradients overflow is skipped; with
     * `scale_dynamic` the scale then halves, and doubles after
     * `scale_window` (0: 2000) good steps in a row. */
    float loss_scale;
    bool scale_dynamic;
    int64_t scale_window;
    bg_ps_conf_t ps; /* parameter servers (servers 0: off, allreduce) */
    /* ZeRO stage: 0 off; 1: each of the stage's dps replicas keeps the f32
     * masters and optimizer state of its 1/dps shard only, updates it and
     * all-gathers the compute copy (same bits as 0). No-op with dps = 1. */
    int zero;
} bg_rt_conf_t;

/*
 * Fill graph input `input` of micro-batch `mb` of the current step into
 * `dst` (host memory, `bytes` bytes, the input's dtype). Called only on
 * ranks whose chunks read that input (first stage: inputs, last: targets).
 */
typedef bg_status_t (*bg_rt_feed_fn)(void *ctx, int mb, int input, void *dst, size_t bytes);

typedef struct bg_rt_stats {
    double loss_sum;    /* sum over this rank's micro-batches' losses */
    int64_t loss_count; /* micro-batches whose loss this rank computed */
    double busy_s;      /* time spent in compute actions */
    double pipe_s;      /* step start to the optimizer: where the bubble lives */
    double step_s;      /* wall time of the step */
    double grad_norm;   /* before clipping, unscaled; 0 on a skipped step */
    float lr;
    bool skipped;     /* gradients overflowed: no update (loss scaling) */
    float loss_scale; /* the scale this step's gradients were computed with */
} bg_rt_stats_t;

/* Allocate parameters (initialised from conf->seed by global name), state
 * and buffers. Errors name the stage and dp. */
bg_status_t bg_rt_create(const bg_rt_conf_t *conf, bg_rt_t **out);
void bg_rt_free(bg_rt_t *rt);

/* The staleness of this rank's steps in ps mode (engine/runtime_ps.c):
 * hist[i] steps whose gradient was computed on parameters i updates old
 * (the last bucket: that many or more). All 0 in allreduce mode. */
void bg_rt_ps_staleness(const bg_rt_t *rt, int64_t hist[BG_PS_HIST]);
/* Straggler episodes this rank reported in ps mode and the sum of their
 * step gaps (engine/runtime_ps.c); 0 and 0 otherwise. Cannot fail. */
void bg_rt_ps_stragglers(const bg_rt_t *rt, int64_t *episodes, int64_t *gaps);

/* One training step: run the list, then allreduce and update. `step` is
 * 0-based and drives the learning-rate schedule and AdamW's bias correction. */
bg_status_t bg_rt_step(bg_rt_t *rt, int64_t step, bg_rt_feed_fn feed, void *ctx,
                       bg_rt_stats_t *out);

/*
 * A flush-free schedule (2bw) leaves the backwards of the step's last
 * micro-batches for the next step. The drain runs them and applies the
 * update they complete, so every rank holds one consistent weight version
 * (checkpoints, the end of training; bg_rt_eval drains by itself). It
 * changes no numbers: the next step then starts without carried work. A
 * no-op for other schedules and when nothing is carried. Collective over
 * the pipeline like a step; errors as bg_rt_step.
 */
bg_status_t bg_rt_drain(bg_rt_t *rt);

/*
 * What an evaluation shows its caller of one micro-batch, on the rank that
 * computes the loss: the loss layer's logits (or their per-row argmax) and
 * targets, copied to the host. Metrics
 * beyond the loss (accuracy, engine/metrics.h) are computed from this by
 * the caller. Pointers are valid during the callback only.
 */
typedef struct bg_rt_output {
    int mb;
    int64_t rows, classes;  /* the loss input's last dimension is `classes` */
    const float *logits;    /* [rows, classes] f32 whatever the compute dtype */
    const int32_t *targets; /* [rows] class ids */
    /* [rows] each row's highest-scoring class (lowest on ties) when the loss
     * is a fused classifier, which never stores logits: then logits is NULL
     * and classes 0. NULL otherwise. */
    const int32_t *argmax;
} bg_rt_output_t;
typedef bg_status_t (*bg_rt_output_fn)(void *ctx, const bg_rt_output_t *o);

/*
 * Forward only over `mb` micro-batches (any number >= 1: the slot table
 * grows), running the lists of bg_sched_generate_forward() for this
 * layout. Sums the loss into *out; calls `on_output` (may be NULL) with
 * each micro-batch's loss inputs on the rank that computes the loss.
 * An error from `on_output` stops the evaluation and is returned.
 */
bg_status_t bg_rt_eval(bg_rt_t *rt, int mb, bg_rt_feed_fn feed, void *ctx,
                       bg_rt_output_fn on_output, void *output_ctx, bg_rt_stats_t *out);

/* Parameters this rank holds (owned or tied copies), for checkpoints. */
int bg_rt_param_count(const bg_rt_t *rt);
typedef struct bg_rt_param_view {
    const char *name;
    const bg_shape_t *shape;
    int64_t numel;
    bool owned;      /* this rank holds the owner layer (writes it to checkpoints) */
    float *master;   /* f32 host copy, authoritative; NULL under ZeRO-1 */
    float *state[2]; /* optimizer states (NULL where the optimizer has fewer) */
} bg_rt_param_view_t;
void bg_rt_param_get(bg_rt_t *rt, int i, bg_rt_param_view_t *out);
/* After changing masters or state through the views (resume, --init):
 * push them to the backend's flat buffers and the compute copy. Not under
 * ZeRO-1, where there are no full views (BG_ERR_INTERNAL): the shard
 * copies below move the state there. */
bg_status_t bg_rt_params_upload(bg_rt_t *rt);
/* Before reading or writing the views (checkpoint save or load): bring
 * masters and state from the backend (a no-op on the CPU, where the views
 * are the buffers). Not under ZeRO-1 (BG_ERR_INTERNAL; bg_rt_shard_*). */
bg_status_t bg_rt_params_download(bg_rt_t *rt);

/*
 * ZeRO-1's shard of this replica, for checkpoints that save and load it
 * without gathering the stage's whole state (docs/checkpoints.md, "Sharded
 * files"). bg_rt_sharded: whether masters and optimizer state are sharded
 * (--zero 1 with D > 1); the rest is meaningful only then.
 * The shard is bg_rt_shard_numel floats per buffer (masters, then each
 * optimizer state). In update range r (0 <= r < bg_rt_shard_ranges) this
 * replica holds elements [off, off + n) of held parameter i, at element
 * `at` of the shard: bg_rt_shard_piece is false where it holds none there.
 */
bool bg_rt_sharded(const bg_rt_t *rt);
int64_t bg_rt_shard_numel(const bg_rt_t *rt);
int bg_rt_shard_ranges(const bg_rt_t *rt);
typedef struct bg_rt_piece {
    int64_t off, n; /* elements of the parameter */
    int64_t at;     /* where they are in the shard */
} bg_rt_piece_t;
bool bg_rt_shard_piece(const bg_rt_t *rt, int i, int r, bg_rt_piece_t *out);
/* The shard's masters and states into host arrays of bg_rt_shard_numel
 * floats (state[s] for each state the optimizer has). Not a collective;
 * backend errors pass through. */
bg_status_t bg_rt_shard_download(bg_rt_t *rt, float *master, float *const *state);
/* The reverse (resume): the shard from host arrays, then the compute copy
 * cast and all-gathered (a collective: every replica of the stage calls it). */
bg_status_t bg_rt_shard_upload(bg_rt_t *rt, const float *master, float *const *state);
/* The current loss scale (0 when loss scaling is off) and its good steps
 * in a row; setting both (resume). Setting fails on a scale that is not
 * positive and finite. */
float bg_rt_loss_scale(const bg_rt_t *rt, int64_t *good);
bg_status_t bg_rt_loss_scale_set(bg_rt_t *rt, float scale, int64_t good);

/* Per-action timing of the last step, for traces: kind, mb, chunk, start,
 * end (s). Sends and receives carry their peer's global rank and the
 * transfer's tag key (equal on both ends); peer is -1 otherwise. wait = 1
 * marks the optimizer's wait for one chunk's allreduce (kind ALLREDUCE),
 * a slice inside the OPTIMIZER's. */
typedef struct bg_rt_event {
    bg_act_kind_t kind;
    int mb, chunk;
    double t0, t1;
    int peer, wait;
    uint64_t tag;
} bg_rt_event_t;
const bg_rt_event_t *bg_rt_events(const bg_rt_t *rt, int *n);
/* CLOCK_MONOTONIC seconds the last step's event times are relative to. */
double bg_rt_time_origin(const bg_rt_t *rt);

#endif
