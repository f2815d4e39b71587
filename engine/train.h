/*
 * engine/train.h -- one rank's training run: the loop that turns a graph,
 * a layout (stages x dp), a schedule and data into steps, evaluations,
 * checkpoints and progress lines.
 * Must not spawn processes or decide exit codes (tools/ does), and must not
 * print anything but progress and results (errors go back as statuses).
 */
#ifndef BG_TRAIN_H
#define BG_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/optim.h"
#include "layers/tensor.h"

typedef struct bg_train_conf {
    const char *model;      /* graph file */
    int stages, dp, chunks; /* chunks: per rank; 0 = the schedule's default */
    const char *schedule;   /* a name or alias from partition/schedules.def */
    const char *profile;    /* auto: per-layer F, B, W of `brigade profile`; NULL: equal */
    double sched_mem_cap;   /* auto: per-rank activations cap, stage micro-batches; 0: 1F1B's */
    double sched_latency_ms; /* auto with a profile: one transfer's latency, ms; 0: none */
    const char *from_trace;  /* auto: per-layer times of a `train --trace` run ... */
    const char *traced_plan; /* ... that trained this plan file (both or neither) */
    int micro_batches;      /* per step, per DP replica */
    int batch;              /* global batch (samples/sequences per step) */
    int64_t steps;          /* 0: from epochs */
    double epochs;
    uint64_t seed;
    const char *device;   /* cpu | cuda */
    const char *dtype;    /* f32 | bf16 | fp16 */
    const char *loss_scale;    /* NULL (fp16: dynamic) | "dynamic" | "dynamic:N" | N */
    int64_t loss_scale_window; /* dynamic: good steps before the scale doubles; 0: 2000 */
    const char *data;     /* data spec (see engine/data.h) */
    int64_t eval_every;   /* steps; 0: only at the end */
    int64_t eval_batches; /* 0: the whole held-out split */
    int64_t log_every;
    const char *checkpoint_dir;
    int64_t checkpoint_every;
    bool resume;
    bool async_checkpoint; /* write checkpoints on a background thread */
    const char *init;    /* safetensors to load weights from */
    const char *trace;   /* Chrome-trace JSON output (per rank suffix) */
    const char *metrics; /* JSONL metrics file */
    const char *plan;    /* plan JSON from `brigade plan -o` */
    bool recompute;
    bool split_bw; /* run B and W as separate actions in every schedule */
    int zero;      /* ZeRO stage, 0 or 1 (bg_rt_conf_t.zero) */
    bg_optim_conf_t optim;
    int eval_only; /* 1: evaluate once (no step, no checkpoint), then exit */
    double heartbeat_timeout; /* s without a heartbeat before a rank is unresponsive */
    double hang_timeout;      /* s without a finished action before a rank is hung; 0: off */
    /* Data parallelism (docs/engine.md, "Parameter servers"). */
    const char *dp_mode;   /* NULL or "allreduce" | "ps" */
    int ps_servers;        /* ps: server ranks after the workers; 0: 1 */
    const char *staleness; /* ps: "N" or "inf"; NULL: 0 (bulk-synchronous) */
    bool deterministic;    /* ps: step t uses exactly the parameters of step t - staleness */
    bool ps_colocate;      /* ps: server k runs inside worker rank k (no extra ranks) */
} bg_train_conf_t;

void bg_train_conf_default(bg_train_conf_t *c);

/* --dp-mode ps asked for; the servers (0 without it); the ranks they add
 * to stages x dp (0 when colocated). Pure. */
bool bg_train_ps_on(const bg_train_conf_t *c);
int bg_train_ps_servers(const bg_train_conf_t *c);
int bg_train_ps_ranks(const bg_train_conf_t *c);
/* --staleness: NULL is 0, "inf" is BG_PS_STALE_INF (engine/ps.h), else a
 * step count; BG_ERR_INVALID names the bad value. */
bg_status_t bg_train_staleness_parse(const char *s, int64_t *out);

/* Bytes every rank process needs besides model and data (libraries,
 * transport buffers, allocator slack): a measured floor for estimates. */
#define BG_TRAIN_RANK_OVERHEAD ((int64_t)40 << 20)

/*
 * BG_ERR_INVALID naming the option and path when --metrics, --trace or
 * --checkpoint-dir could not be written (a directory where a file goes, a
 * file where a directory goes, no permission). Writes nothing.
 */
bg_status_t bg_train_check_outputs(const bg_train_conf_t *c);

struct bg_graph;

/*
 * What a launcher checks before starting ranks once the model has parsed
 * (g: bg_train_graph_parse, borrowed): the data spec and whether the data
 * fits the model's inputs (with a hint), and the outputs
 * (bg_train_check_outputs). `chunks`
 * is the resolved chunks per rank. On success *rank_bytes (if non-NULL) is
 * an estimate of one rank's memory: parameters, gradients and optimizer
 * state of its share, activations in flight, the data reader and
 * BG_TRAIN_RANK_OVERHEAD. Opens the data (reads IDX files), writes nothing.
 */
bg_status_t bg_train_preflight(const bg_train_conf_t *c, const struct bg_graph *g, int chunks,
                               int64_t *rank_bytes);

/* The runtime's loss-scale settings from --loss-scale (c->loss_scale):
 * NULL is off (*scale 0), except fp16 where it is dynamic from 65536;
 * "dynamic" (from 65536), "dynamic:N" (from N), or a fixed N in (0, 2^24].
 * BG_ERR_INVALID names the bad value. */
bg_status_t bg_train_loss_scale(const bg_train_conf_t *c, bg_dtype_t dtype, float *scale,
                                bool *dynamic);

/*
 * The model a run trains: c->model parsed at the run's micro-batch rows
 * (batch / (dp x micro-batches), BG_ERR_INVALID when that does not divide)
 * with the classifier fused, exactly as every rank splits it. *out is the
 * caller's (bg_graph_free), set only on success.
 */
bg_status_t bg_train_graph_open(const bg_train_conf_t *c, struct bg_graph **out);

/* c->model parsed at the run's micro-batch rows as written (no fusion: the
 * layers a plan file names); the same refusal and ownership. */
bg_status_t bg_train_graph_parse(const bg_train_conf_t *c, struct bg_graph **out);

/*
 * The schedule a run of c uses for S = c->stages, M = c->micro_batches:
 * bg_sched_resolve of c->schedule, or for "auto" with c->profile (or the
 * times of c->from_trace, a run of c->traced_plan) and c->sched_mem_cap
 * (and c->sched_latency_ms, the simulator's latency of a transfer) the
 * choice of bg_sched_auto on per-chunk costs summed over the split the run
 * makes of g (bg_net_split_even), the measured times scaled linearly to
 * the run's micro-batch rows. g (the run's graph, bg_train_graph_open) may
 * be NULL when neither c->profile nor c->from_trace is. Pure: the same conf
 * and graph give the same schedule on every rank. why[len] gets one line
 * saying what auto chose and from what costs ("" for a named schedule).
 * BG_ERR_INVALID naming the cause (a profile or mem cap without auto, a
 * layer the profile lacks, no candidate fits), BG_ERR_IO (unreadable
 * profile). *out is the caller's, set only on success.
 */
struct bg_sched;
bg_status_t bg_train_sched_resolve(const bg_train_conf_t *c, const struct bg_graph *g,
                                   struct bg_sched **out, char *why, size_t len);

/*
 * Run this process's rank of the job described by `c`, joining the others
 * through the transport's bootstrap (environment). Returns BG_OK when the
 * run finished; on failure the message names the rank, stage and dp.
 */
bg_status_t bg_train_run(const bg_train_conf_t *c);

#endif
