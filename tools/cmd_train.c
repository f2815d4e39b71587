/*
 * tools/cmd_train.c -- `brigade train`: options, then either the launcher
 * (run by a person: spawn stages x dp local ranks) or one worker (run by
 * the launcher, srun or mpirun: rank variables in the environment). The
 * steps (parse, apply --plan, validate, start) are shared with `brigade
 * eval` through train_cli.h; the option rows eval accepts too live here.
 * Decides exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/grow.h"
#include "engine/ps.h"
#include "engine/schedule.h"
#include "layers/backend.h"
#include "layers/graph.h"
#include "partition/plan_io.h"
#include "partition/schedules.h"
#include "tools/commands.h"
#include "tools/launch.h"
#include "tools/launch_restart.h"
#include "tools/train_cli.h"

#define ARG(field) offsetof(bg_train_args_t, field)
#define STEPS_MAX (INT64_MAX / 2)

static const char *const devices[] = {"cpu", "cuda", NULL};
static const char *const dtypes[] = {"f32", "bf16", "fp16", NULL};

static bg_status_t parse_optimizer(const char *s, void *dst)
{
    return bg_optim_kind_parse(s, (bg_optim_kind_t *)dst);
}

/* "on" | "off" into a bool. */
static bg_status_t parse_on_off(const char *s, void *dst)
{
    if (strcmp(s, "on") && strcmp(s, "off"))
        return bg_errorf(BG_ERR_INVALID, "expected 'on' or 'off', got '%s'", s);
    *(bool *)dst = !strcmp(s, "on");
    return BG_OK;
}

/* clang-format off */
const bg_opt_t bg_train_layout_opts[] = {
    {.name = "stages", .kind = BG_OPT_INT, .metavar = "S", .help = "pipeline stages", .def = "1",
     .off = ARG(c.stages), .min = 1, .max = 256, .group = "Layout and schedule"},
    {.name = "dp", .kind = BG_OPT_INT, .metavar = "D", .help = "data-parallel replicas per stage",
     .def = "1", .off = ARG(c.dp), .min = 1, .max = 256},
    {.name = "schedule", .kind = BG_OPT_STRING, .metavar = "NAME",
     .help = BG_SCHEDULE_HELP, .def = "1f1b", .off = ARG(c.schedule)},
    {.name = "chunks", .kind = BG_OPT_INT, .metavar = "V",
     .help = "model chunks per rank (schedules with more than one)", .def = "the schedule's", .off = ARG(c.chunks),
     .min = 1, .max = 64},
    {.name = "micro-batches", .kind = BG_OPT_INT, .metavar = "M",
     .help = "micro-batches per step per replica", .def = "stages",
     .off = ARG(c.micro_batches), .min = 1, .max = 65536},
    {.name = "batch", .kind = BG_OPT_INT, .metavar = "N",
     .help = "global batch: samples or sequences per step", .def = "64", .off = ARG(c.batch),
     .min = 1, .max = 1 << 24},
    {.name = "plan", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "stage split from `brigade plan -o FILE`", .off = ARG(c.plan)},
    {.name = "recompute", .kind = BG_OPT_FLAG,
     .help = "keep only chunk inputs; recompute activations in backward", .off = ARG(c.recompute)},
    {.name = "split-bw", .kind = BG_OPT_FLAG, .help = "run B and W as separate actions",
     .off = ARG(c.split_bw)},
    {0},
};
/* clang-format on */

/* clang-format off */
static const bg_opt_t train_run_opts[] = {
    {.name = "steps", .kind = BG_OPT_I64, .metavar = "N", .help = "optimizer steps",
     .def = "from --epochs, else 100", .off = ARG(c.steps), .min = 1, .max = STEPS_MAX,
     .group = "Run length"},
    {.name = "epochs", .kind = BG_OPT_DOUBLE, .metavar = "E",
     .help = "passes over the training split", .off = ARG(c.epochs), .dmin = 1e-6, .dmax = 1e6},
    {.name = "eval-every", .kind = BG_OPT_I64, .metavar = "N",
     .help = "evaluate on the held-out split every N steps (0: at end)",
     .off = ARG(c.eval_every), .min = 0, .max = STEPS_MAX},
    {.name = "log-every", .kind = BG_OPT_I64, .metavar = "N", .help = "progress line every N steps",
     .def = "10", .off = ARG(c.log_every), .min = 1, .max = STEPS_MAX},
    {0},
};
/* clang-format on */

/* clang-format off */
const bg_opt_t bg_train_data_opts[] = {
    {.name = "data", .kind = BG_OPT_STRING, .metavar = "SPEC",
     .help = "fashion-mnist[:DIR] | tokens:PREFIX | synthetic[:...]", .off = ARG(c.data),
     .group = "Data"},
    {.name = "eval-batches", .kind = BG_OPT_I64, .metavar = "N",
     .help = "batches per evaluation (0: the whole split)",
     .off = ARG(c.eval_batches), .min = 0, .max = STEPS_MAX},
    {.name = "metrics", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "append one JSON object per log line", .off = ARG(c.metrics)},
    {.name = "seed", .kind = BG_OPT_U64, .metavar = "N",
     .help = "initialisation and shuffling seed",
     .def = "1", .off = ARG(c.seed), .min = 0, .max = INT64_MAX},
    {0},
};
/* clang-format on */

/* clang-format off */
static const bg_opt_t train_optim_opts[] = {
    {.name = "optimizer", .kind = BG_OPT_CUSTOM, .metavar = "adamw|sgd", .help = "optimizer",
     .def = "adamw", .off = ARG(c.optim.kind), .parse = parse_optimizer, .group = "Optimizer"},
    {.name = "lr", .kind = BG_OPT_FLOAT, .metavar = "X", .help = "peak learning rate",
     .def = "1e-3", .off = ARG(c.optim.lr), .dmin = 0, .dmax = 1e3},
    {.name = "warmup", .kind = BG_OPT_I64, .metavar = "N", .help = "linear warmup steps",
     .def = "0", .off = ARG(c.optim.warmup), .min = 0, .max = STEPS_MAX},
    {.name = "min-lr-frac", .kind = BG_OPT_FLOAT, .metavar = "X", .help = "cosine decays to lr*X",
     .def = "0.1", .off = ARG(c.optim.min_lr_frac), .dmin = 0, .dmax = 1},
    {.name = "weight-decay", .kind = BG_OPT_FLOAT, .metavar = "X",
     .help = "decoupled weight decay for matrices", .def = "0", .off = ARG(c.optim.weight_decay),
     .dmin = 0, .dmax = 1e3},
    {.name = "momentum", .kind = BG_OPT_FLOAT, .metavar = "X", .help = "SGD momentum",
     .def = "0.9", .off = ARG(c.optim.momentum), .dmin = 0, .dmax = 1},
    {.name = "clip", .kind = BG_OPT_FLOAT, .metavar = "X",
     .help = "clip gradients to global norm X", .def = "off", .off = ARG(c.optim.clip),
     .dmin = 0, .dmax = 1e9},
    {.name = "zero", .kind = BG_OPT_INT, .metavar = "0|1",
     .help = "1 (ZeRO-1): gradients are reduce-scattered, each of a stage's D replicas keeps "
             "f32 masters and optimizer state for its 1/D shard only and all-gathers the "
             "weights after the update (same bits as 0; accepted and a no-op with --dp 1)",
     .def = "0", .off = ARG(c.zero), .min = 0, .max = 1},
    {0},
};
/* clang-format on */

/* clang-format off */
const bg_opt_t bg_train_device_opts[] = {
    {.name = "device", .kind = BG_OPT_CHOICE, .choices = devices, .help = "backend",
     .def = "cpu", .off = ARG(c.device), .group = "Device"},
    {.name = "dtype", .kind = BG_OPT_CHOICE, .choices = dtypes,
     .help = "compute dtype (f32 master weights)", .def = "f32",
     .off = ARG(c.dtype)},
    {.name = "loss-scale", .kind = BG_OPT_STRING, .metavar = "dynamic[:N]|N",
     .help = "scale the loss; skip steps whose gradients overflow", .def = "off (fp16: dynamic)",
     .off = ARG(c.loss_scale)},
    {0},
};
/* clang-format on */

/* clang-format off */
const bg_opt_t bg_train_load_opts[] = {
    {.name = "checkpoint-dir", .kind = BG_OPT_PATH, .metavar = "DIR",
     .help = "checkpoints live under DIR", .off = ARG(c.checkpoint_dir),
     .group = "Checkpoints and profiling"},
    {.name = "resume", .kind = BG_OPT_FLAG, .help = "continue from DIR/latest (any earlier layout)",
     .off = ARG(c.resume)},
    {.name = "init", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "load weights by name from a safetensors file", .off = ARG(c.init)},
    {.name = "trace", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "Chrome-trace/Perfetto JSON of every rank's actions", .off = ARG(c.trace)},
    {0},
};
/* clang-format on */

/* clang-format off */
static const bg_opt_t train_save_opts[] = {
    {.name = "checkpoint-every", .kind = BG_OPT_I64, .metavar = "N",
     .help = "write a checkpoint every N steps", .def = "only at the end",
     .off = ARG(c.checkpoint_every), .min = 1, .max = STEPS_MAX},
    {.name = "async-checkpoint", .kind = BG_OPT_CUSTOM, .metavar = "on|off",
     .help = "write checkpoints on a background thread while training goes on", .def = "on",
     .off = ARG(c.async_checkpoint), .parse = parse_on_off},
    {0},
};
/* clang-format on */

/* clang-format off */
const bg_opt_t bg_train_launch_opts[] = {
    {.name = "hosts", .kind = BG_OPT_STRING, .metavar = "H1[:N],H2[:N]",
     .help = "run ranks on these hosts over ssh", .off = ARG(hosts), .group = "Launching"},
    {.name = "hostfile", .kind = BG_OPT_PATH, .metavar = "FILE", .help = "one HOST[:N] per line",
     .off = ARG(hostfile)},
    {.name = "force", .kind = BG_OPT_FLAG,
     .help = "start local ranks even when their memory estimate exceeds MemAvailable",
     .off = ARG(force)},
    {.name = "heartbeat-timeout", .kind = BG_OPT_DOUBLE, .metavar = "S",
     .help = "stop the job when a rank sends no heartbeat for S seconds", .def = "10",
     .off = ARG(c.heartbeat_timeout), .dmin = 0.1, .dmax = 86400},
    {.name = "hang-timeout", .kind = BG_OPT_DOUBLE, .metavar = "S",
     .help = "stop the job when a rank finishes no action for S seconds (0: never)",
     .def = "300", .off = ARG(c.hang_timeout), .dmin = 0, .dmax = 1e7},
    {0},
};
/* clang-format on */

/* clang-format off */
static const bg_opt_t train_restart_opts[] = {
    {.name = "max-restarts", .kind = BG_OPT_INT, .metavar = "N",
     .help = "after a runtime failure, restart every rank from DIR/latest, up to N times",
     .def = "0", .off = ARG(max_restarts), .min = 0, .max = 100000, .group = "Fault tolerance"},
    {.name = "restart-backoff", .kind = BG_OPT_DOUBLE, .metavar = "S",
     .help = "wait before a restart; doubles after each failure before a step (at most 30)",
     .def = "1", .off = ARG(restart_backoff), .dmin = 0, .dmax = BG_RESTART_BACKOFF_MAX_S},
    {.name = "elastic", .kind = BG_OPT_FLAG,
     .help = "when a rank cannot come back, re-plan for the ranks that remain (same batch)",
     .off = ARG(elastic)},
    {0},
};
/* clang-format on */

static const char *const dp_modes[] = {"allreduce", "ps", NULL};

/* clang-format off */
static const bg_opt_t train_dp_opts[] = {
    {.name = "dp-mode", .kind = BG_OPT_CHOICE, .choices = dp_modes,
     .help = "replicas sum gradients by allreduce, or through parameter servers",
     .def = "allreduce", .off = ARG(c.dp_mode), .group = "Data parallelism"},
    {.name = "ps-servers", .kind = BG_OPT_INT, .metavar = "K",
     .help = "ps: server ranks holding the parameters' shards", .def = "1",
     .off = ARG(c.ps_servers), .min = 1, .max = 256},
    {.name = "staleness", .kind = BG_OPT_STRING, .metavar = "S|inf",
     .help = "ps: a replica may be S steps ahead of the slowest (0: synchronous)", .def = "0",
     .off = ARG(c.staleness)},
    {.name = "ps-colocate", .kind = BG_OPT_FLAG,
     .help = "ps: run server k inside worker rank k instead of extra ranks",
     .off = ARG(c.ps_colocate)},
    {.name = "deterministic", .kind = BG_OPT_FLAG,
     .help = "ps: step t uses exactly the parameters of step t - S (replayable)",
     .off = ARG(c.deterministic)},
    {0},
};
/* clang-format on */

/* clang-format off */
static const bg_opt_t train_auto_opts[] = {
    {.name = "profile", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "--schedule auto: choose from these per-layer F, B, W times (brigade profile), "
             "summed over this run's chunks", .def = "equal costs", .off = ARG(c.profile)},
    {.name = "schedule-mem-cap", .kind = BG_OPT_DOUBLE, .metavar = "N",
     .help = "--schedule auto: per-rank peak of live activations, in micro-batches of a stage",
     .def = "1f1b's, min(S, M)", .off = ARG(c.sched_mem_cap), .dmin = 0, .dmax = 1e9},
    {.name = "from-trace", .kind = BG_OPT_PATH, .metavar = "TRACE",
     .help = "--schedule auto: per-layer times from a brigade train --trace run instead of "
             "--profile (needs --traced-plan)", .off = ARG(c.from_trace)},
    {.name = "traced-plan", .kind = BG_OPT_PATH, .metavar = "PLAN",
     .help = "the plan file (brigade plan -o) the traced run trained with",
     .off = ARG(c.traced_plan)},
    {.name = "schedule-latency", .kind = BG_OPT_DOUBLE, .metavar = "MS",
     .help = "--schedule auto with measured times: a transfer's latency between stages, in ms "
             "(from its send until the next stage can use it)",
     .def = "0", .off = ARG(c.sched_latency_ms), .dmin = 0, .dmax = 1e6},
    {0},
};
/* clang-format on */

static const bg_opt_t *const train_tables[] = {
    bg_train_layout_opts, train_auto_opts,      train_run_opts,       bg_train_data_opts,
    train_optim_opts,     bg_train_device_opts, bg_train_load_opts,
    train_save_opts,      train_dp_opts,        bg_train_launch_opts, train_restart_opts,
    NULL,
};

const bg_cmd_spec_t bg_train_spec = {
    .name = "train",
    .args = "MODEL [options]",
    .summary = "train it: pipeline stages x data-parallel ranks",
    .about = "Run by a person it spawns stages x dp local ranks (or remote ones with --hosts); "
             "under srun or mpirun (rank variables present) each process is one rank.",
    .tables = train_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "MODEL",
    .run = bg_cmd_train,
};

int bg_train_cli_parse(const bg_cmd_spec_t *cmd, int argc, char **argv, bg_train_args_t *a)
{
    memset(a, 0, sizeof(*a));
    bg_train_conf_default(&a->c);
    a->restart_backoff = 1.0;
    char *pos[1];
    int npos, rc = bg_opt_parse(cmd, argc, argv, a, pos, &npos);
    if (rc == 0)
        a->c.model = pos[0];
    return rc;
}

int bg_train_cli_apply_plan(const bg_cmd_spec_t *cmd, int argc, char **argv, bg_train_args_t *a)
{
    bg_train_conf_t *c = &a->c;
    int mb_set = bg_opt_given(argc, argv, "micro-batches");
    if (!c->plan) {
        if (!mb_set)
            c->micro_batches = c->stages; /* the least that fills the pipeline */
        return 0;
    }
    static const char *const layout[] = {"stages", "dp", "chunks", "schedule", "micro-batches"};
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++)
        if (bg_opt_given(argc, argv, layout[i]))
            return bg_opt_usage_error(cmd,
                                      "--plan %s fixes --stages/--dp/--chunks/--schedule/"
                                      "--micro-batches; drop them or drop --plan",
                                      c->plan);
    bg_plan_file_t pf;
    if (bg_plan_load(c->plan, &pf) != BG_OK)
        return bg_opt_usage_error(cmd, "%s", bg_last_error());
    /* A flag the plan also fixes must agree with it: silently preferring
     * either one would run something the user did not ask for. */
    if (bg_opt_given(argc, argv, "batch") && c->batch != pf.global_batch) {
        int64_t pb = pf.global_batch;
        bg_plan_file_free(&pf);
        return bg_opt_usage_error(cmd,
                                  "--batch %d disagrees with --plan %s, made for global batch "
                                  "%lld; drop --batch or make a plan for it",
                                  c->batch, c->plan, (long long)pb);
    }
    if (bg_opt_given(argc, argv, "recompute") && !pf.cfg.recompute) {
        bg_plan_file_free(&pf);
        return bg_opt_usage_error(cmd,
                                  "--recompute disagrees with --plan %s, made without "
                                  "recomputation; drop --recompute or make a plan with it",
                                  c->plan);
    }
    if (bg_opt_given(argc, argv, "zero") && c->zero != pf.cfg.zero) {
        int pz = pf.cfg.zero;
        bg_plan_file_free(&pf);
        return bg_opt_usage_error(cmd,
                                  "--zero %d disagrees with --plan %s, made for --zero %d (its "
                                  "memory table depends on it); drop --zero or make a plan for it",
                                  c->zero, c->plan, pz);
    }
    if (pf.global_batch < 1 || pf.global_batch > (1 << 24)) {
        bg_plan_file_free(&pf);
        return bg_opt_usage_error(cmd, "--plan %s: global batch %lld out of range (1..%d)",
                                  c->plan, (long long)pf.global_batch, 1 << 24);
    }
    c->stages = pf.cfg.stages;
    c->dp = pf.cfg.dp;
    c->chunks = pf.cfg.chunks;
    c->micro_batches = pf.cfg.micro_batches;
    c->batch = (int)pf.global_batch;
    c->recompute = pf.cfg.recompute;
    c->zero = pf.cfg.zero;
    snprintf(a->plan_sched, sizeof(a->plan_sched), "%s", bg_sched_kind_name(pf.cfg.schedule));
    c->schedule = a->plan_sched;
    bg_plan_file_free(&pf);
    return 0;
}

/* Worker when a launcher (ours, srun, mpirun, torchrun) gave us a rank. */
static int is_worker(void)
{
    static const char *vars[] = {"BRIGADE_WORKER", "BRIGADE_RANK",         "RANK",
                                 "SLURM_PROCID",   "OMPI_COMM_WORLD_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

/* A plan made for another model (or an edited one) is bad input. */
static bg_status_t check_plan_layers(const char *plan, const bg_graph_t *g)
{
    bg_plan_file_t pf;
    int L = bg_graph_n_layers(g);
    const char **names = malloc(sizeof(char *) * (size_t)L + 1);
    bg_status_t st = names ? bg_plan_load(plan, &pf) : bg_errorf(BG_ERR_NOMEM, "out of memory");
    for (int l = 0; st == BG_OK && l < L; l++)
        names[l] = bg_graph_layer(g, l)->spec.name;
    if (st == BG_OK) {
        st = bg_plan_file_check_layers(&pf, names, L);
        bg_plan_file_free(&pf);
    }
    free(names);
    return st;
}

/* MemAvailable of /proc/meminfo in bytes, or -1 when unknown. */
static int64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : (int64_t)kb * 1024;
}

/*
 * Local ranks share this host's memory: refuse a job whose estimate
 * (bg_train_preflight) exceeds what is available, unless --force.
 */
static int check_local_memory(const bg_cmd_spec_t *cmd, const bg_train_args_t *a,
                              int64_t rank_bytes)
{
    int64_t avail = mem_available();
    int nranks = a->c.stages * a->c.dp;
    double need = (double)rank_bytes * nranks;
    if (a->hosts || a->hostfile || a->force || avail < 0 || need <= (double)avail)
        return 0;
    return bg_opt_usage_error(cmd,
                              "%d local ranks need about %.1f GiB (%.1f MiB each: parameters, "
                              "optimizer state, activations, data, process) but %.1f GiB is "
                              "available; use fewer ranks, --hosts, or --force",
                              nranks, need / (1 << 30), (double)rank_bytes / (1 << 20),
                              (double)avail / (1 << 30));
}

/*
 * Catch bad input before spawning ranks: a malformed model, a batch that
 * does not split, a schedule that cannot be built, data that does not fit
 * the model, outputs that cannot be written, more ranks than memory. Each
 * rank re-checks, but a person should get one message and exit code 2, not
 * S*D of them.
 */
static int preflight(const bg_cmd_spec_t *cmd, const bg_train_args_t *a)
{
    const bg_train_conf_t *c = &a->c;
    bg_sched_t *s = NULL;
    bg_graph_t *g = NULL;
    int v = 1;
    int64_t rank_bytes = 0;
    /* As the ranks resolve it (auto may choose by the flags and a profile
     * of the run's split), so the chunks below are the run's. */
    bg_status_t st = c->profile || c->from_trace ? bg_train_graph_open(c, &g) : BG_OK;
    if (st == BG_OK)
        st = bg_train_sched_resolve(c, g, &s, NULL, 0);
    bg_graph_free(g);
    g = NULL;
    if (st == BG_OK)
        v = bg_sched_chunks_per_rank(s);
    if (st == BG_OK)
        st = bg_train_graph_parse(c, &g);
    if (st == BG_OK)
        st = bg_train_preflight(c, g, v, &rank_bytes);
    if (st == BG_OK && c->plan)
        st = check_plan_layers(c->plan, g);
    if (st == BG_OK && bg_graph_n_layers(g) < c->stages * v)
        st = bg_errorf(BG_ERR_INVALID,
                       "%s has %d layers, fewer than the %d chunks of %d stages x %d", c->model,
                       bg_graph_n_layers(g), c->stages * v, c->stages, v);
    bg_graph_free(g);
    bg_sched_free(s);
    if (st != BG_OK)
        return bg_opt_usage_error(cmd, "%s", bg_last_error());
    return check_local_memory(cmd, a, rank_bytes);
}

/* Parameter-server flags only mean something together. 0 or 2. */
static int check_dp_mode(const bg_cmd_spec_t *cmd, const bg_train_conf_t *c)
{
    int64_t s = 0;
    bool ps = bg_train_ps_on(c);
    const char *alone = c->staleness      ? "--staleness"
                        : c->ps_servers   ? "--ps-servers"
                        : c->deterministic ? "--deterministic"
                        : c->ps_colocate   ? "--ps-colocate"
                                           : NULL;
    if (!ps && alone)
        return bg_opt_usage_error(cmd, "%s needs --dp-mode ps", alone);
    if (bg_train_staleness_parse(c->staleness, &s) != BG_OK)
        return bg_opt_usage_error(cmd, "%s", bg_last_error());
    if (c->ps_colocate && bg_train_ps_servers(c) > c->stages * c->dp)
        return bg_opt_usage_error(cmd, "--ps-colocate: --ps-servers %d needs as many workers "
                                       "(stages x dp = %d)",
                                  bg_train_ps_servers(c), c->stages * c->dp);
    if (c->ps_colocate && s == BG_PS_STALE_INF && bg_train_ps_servers(c) > 1)
        return bg_opt_usage_error(cmd, "--ps-colocate --staleness inf needs --ps-servers 1 "
                                       "(colocated servers update together, when their workers "
                                       "reach the staleness bound: use dedicated servers)");
    if (ps && c->zero)
        return bg_opt_usage_error(cmd, "--dp-mode ps with --zero 1: the servers already hold "
                                       "the masters and optimizer state; use one of them");
    const bg_sched_desc_t *d = NULL;
    if (ps && c->schedule && bg_sched_lookup(c->schedule, &d) == BG_OK &&
        d->kind == BG_SCHED_TWO_BW)
        return bg_opt_usage_error(cmd, "--dp-mode ps with --schedule 2bw: 2bw delays its own "
                                       "updates by a step on two weight versions, the servers "
                                       "by their staleness; use one of them");
    if (c->deterministic && s == BG_PS_STALE_INF)
        return bg_opt_usage_error(cmd, "--deterministic needs a finite --staleness (an "
                                       "asynchronous run has no fixed order to replay)");
    return 0;
}

int bg_train_cli_validate(const bg_cmd_spec_t *cmd, const bg_train_args_t *a)
{
    const bg_train_conf_t *c = &a->c;
    float scale;
    bool dynamic;
    bg_dtype_t dt = BG_F32;
    if (bg_dtype_parse(c->dtype, &dt) != BG_OK ||
        bg_train_loss_scale(c, dt, &scale, &dynamic) != BG_OK)
        return bg_opt_usage_error(cmd, "%s", bg_last_error());
    if (c->resume && !c->checkpoint_dir)
        return bg_opt_usage_error(cmd, "--resume needs --checkpoint-dir");
    if ((a->max_restarts > 0 || a->elastic) && !c->checkpoint_dir)
        return bg_opt_usage_error(cmd, "--max-restarts and --elastic resume from checkpoints: "
                                       "they need --checkpoint-dir");
    if (a->elastic && a->max_restarts == 0)
        return bg_opt_usage_error(cmd, "--elastic re-plans when the job restarts: give "
                                       "--max-restarts N too");
    if (check_dp_mode(cmd, c) != 0)
        return 2;
    if (access(c->model, R_OK) != 0)
        return bg_opt_usage_error(cmd, "cannot read %s: %s", c->model, strerror(errno));
    if (is_worker())
        return 0; /* each rank checks the rest itself */
    if (preflight(cmd, a) != 0)
        return 2;
    if (!strcmp(c->device, "cuda") && !bg_backend_available(BG_DEV_CUDA)) {
        bg_backend_t *be = NULL;
        bg_status_t st = bg_backend_create(BG_DEV_CUDA, 0, &be); /* for the reason */
        bg_backend_destroy(be);
        fprintf(stderr, "brigade %s: --device cuda: %s\n", cmd->name,
                st != BG_OK ? bg_last_error() : "no CUDA device");
        return 1;
    }
    return 0;
}

/* ---- hosts ---- */

typedef struct hosts {
    char **name;
    int *slots; /* 0 until shared out: the host gave no count */
    size_t n, cap_name, cap_slots;
} hosts_t;

static void hosts_free(hosts_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->name[i]);
    free(h->name);
    free(h->slots);
}

/* Append one "HOST[:SLOTS]" (tok is modified); 0 or 2 (printed). */
static int host_add(const char *cmd, hosts_t *h, char *tok)
{
    char *colon = strchr(tok, ':');
    int sl = 0;
    if (colon) {
        *colon = 0;
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || v < 1 || v > 4096) {
            fprintf(stderr, "brigade %s: bad slot count in host '%s:%s' (1..4096)\n", cmd, tok,
                    colon + 1);
            return 2;
        }
        sl = (int)v;
    }
    if (!*tok) {
        fprintf(stderr, "brigade %s: empty host name in --hosts\n", cmd);
        return 2;
    }
    char *name = strdup(tok);
    if (!name || bg_grow(&h->name, &h->cap_name, h->n + 1, sizeof(char *)) ||
        bg_grow(&h->slots, &h->cap_slots, h->n + 1, sizeof(int))) {
        free(name);
        fprintf(stderr, "brigade %s: out of memory\n", cmd);
        return 1;
    }
    h->name[h->n] = name;
    h->slots[h->n++] = sl;
    return 0;
}

/* Comma-separated entries of list; 0 or an exit code. */
static int hosts_from_list(const char *cmd, hosts_t *h, const char *list)
{
    char *buf = strdup(list);
    int rc = buf ? 0 : 1;
    for (char *save = NULL, *tok = buf ? strtok_r(buf, ",", &save) : NULL; tok && !rc;
         tok = strtok_r(NULL, ",", &save))
        rc = host_add(cmd, h, tok);
    free(buf);
    return rc;
}

/* The first word of each line of file (# starts a comment); 0 or an exit code. */
static int hosts_from_file(const char *cmd, hosts_t *h, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "brigade %s: cannot read --hostfile %s: %s\n", cmd, file, strerror(errno));
        return 2;
    }
    char *line = NULL, *save = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!rc && getline(&line, &cap, f) > 0) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *tok = strtok_r(line, " \t\r\n", &save);
        if (tok)
            rc = host_add(cmd, h, tok);
    }
    free(line);
    fclose(f);
    return rc;
}

/*
 * --hosts "h1:2,h2" and/or --hostfile into names and slot counts. Hosts
 * without a count share the ranks the counted ones leave, evenly. Fewer
 * slots than ranks is a usage error.
 */
static int parse_hosts(const char *cmd, const bg_train_args_t *a, int nranks, hosts_t *h)
{
    int rc = a->hosts ? hosts_from_list(cmd, h, a->hosts) : 0;
    if (!rc && a->hostfile)
        rc = hosts_from_file(cmd, h, a->hostfile);
    if (rc)
        return rc;
    if (!h->n) {
        fprintf(stderr, "brigade %s: --hosts/--hostfile names no host\n", cmd);
        return 2;
    }
    long known = 0, unknown = 0, total = 0;
    for (size_t i = 0; i < h->n; i++)
        known += h->slots[i], unknown += !h->slots[i];
    long left = nranks - known, share = unknown ? (left + unknown - 1) / unknown : 0;
    for (size_t i = 0; i < h->n; i++) {
        if (!h->slots[i])
            h->slots[i] = share > 0 ? (int)share : 1;
        total += h->slots[i];
    }
    if (total < nranks) {
        fprintf(stderr, "brigade %s: %ld host slots for %d ranks\n", cmd, total, nranks);
        return 2;
    }
    return 0;
}

/* ---- start ---- */

/*
 * Test-only (docs/fault-tolerance.md): BRIGADE_TEST_FAIL_RANK=R[@K] makes
 * rank R exit 1 at start, in every run of the job from restart K on (0:
 * every run), as a slot that cannot come back would. 1 when this rank is
 * the one.
 */
static int test_fail_rank(void)
{
    const char *v = getenv("BRIGADE_TEST_FAIL_RANK"), *rank = getenv("BRIGADE_RANK");
    const char *restart = getenv("BRIGADE_RESTART");
    long r = -1, from = 0;
    if (!v || !rank || sscanf(v, "%ld@%ld", &r, &from) < 1)
        return 0;
    if (atol(rank) != r || (restart ? atol(restart) : 0) < from)
        return 0;
    fprintf(stderr, "brigade: rank %ld fails at start (BRIGADE_TEST_FAIL_RANK, test only)\n", r);
    return 1;
}

/* BRIGADE_RETRY_EXIT (3..125, e.g. 75) when set and valid, else 1. */
static int retry_exit_code(void)
{
    const char *v = getenv("BRIGADE_RETRY_EXIT");
    char *end = NULL;
    long code = v ? strtol(v, &end, 10) : 1;
    return v && *end == 0 && code >= 3 && code <= 125 ? (int)code : 1;
}

/* This process is one rank: run it; the exit code. */
static int run_rank(const bg_train_conf_t *c)
{
    if (test_fail_rank())
        return 1;
    bg_status_t st = bg_train_run(c);
    if (st == BG_OK)
        return 0;
    fprintf(stderr, "brigade: %s\n", bg_last_error());
    if (st == BG_ERR_INVALID)
        return 2;
    /* A scheduler's script learns from a code of its choice that requeueing
     * makes sense; without BRIGADE_RETRY_EXIT runtime failures stay 1. */
    int retry = st == BG_ERR_PEER || st == BG_ERR_TIMEOUT || st == BG_ERR_UCX ||
                st == BG_ERR_IO || st == BG_ERR_CUDA;
    return retry ? retry_exit_code() : 1;
}

/* The workers' command line: ours without --hosts/--hostfile (and their
 * values); NULL-terminated, freed by the caller. NULL when out of memory. */
static char **worker_argv(const bg_cmd_spec_t *cmd, int argc, char **argv)
{
    char **w = calloc((size_t)argc + 3, sizeof(char *));
    int n = 0;
    if (!w)
        return NULL;
    w[n++] = "brigade";
    w[n++] = (char *)cmd->name;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            while (i < argc)
                w[n++] = argv[i++];
            break;
        }
        int sep = !strcmp(argv[i], "--hosts") || !strcmp(argv[i], "--hostfile");
        if (sep || !strncmp(argv[i], "--hosts=", 8) || !strncmp(argv[i], "--hostfile=", 11)) {
            i += sep;
            continue;
        }
        w[n++] = argv[i];
    }
    return w;
}

/* Where remote ranks reach the store, and this binary's path for them. */
static void remote_setup(const hosts_t *h, bg_launch_conf_t *lc, char *exe, size_t exe_n,
                         char *master, size_t master_n)
{
    ssize_t k = readlink("/proc/self/exe", exe, exe_n - 1);
    exe[k > 0 ? k : 0] = 0;
    size_t first = h->n; /* the first host that is not this one */
    for (size_t i = h->n; i-- > 0;)
        if (strcmp(h->name[i], "127.0.0.1") && strcmp(h->name[i], "localhost"))
            first = i;
    /* Remote ranks reach the store (which listens there only) at the address
     * this machine routes to them from, unless told otherwise. */
    const char *ma = getenv("BRIGADE_MASTER_ADDR");
    if (ma)
        snprintf(master, master_n, "%s", ma);
    else if (first == h->n || bg_launch_route_addr(h->name[first], master, master_n) != 0)
        snprintf(master, master_n, "127.0.0.1");
    lc->hosts = (const char *const *)h->name;
    lc->slots = h->slots;
    lc->nhosts = (int)h->n;
    lc->master_addr = master;
    lc->remote_exe = exe;
}

int bg_train_cli_start(const bg_cmd_spec_t *cmd, int argc, char **argv, const bg_train_args_t *a)
{
    if (is_worker())
        return run_rank(&a->c);
    int nranks = a->c.stages * a->c.dp + bg_train_ps_ranks(&a->c), rc = 0;
    hosts_t h = {0};
    if ((a->hosts || a->hostfile) && (rc = parse_hosts(cmd->name, a, nranks, &h)) != 0) {
        hosts_free(&h);
        return rc;
    }
    char **wargv = worker_argv(cmd, argc, argv);
    bg_launch_conf_t lc = {
        .nranks = nranks,
        .stages = a->c.stages,
        .workers = a->c.stages * a->c.dp,
        .heartbeat_s = a->c.heartbeat_timeout,
        .hang_s = a->c.hang_timeout,
        .argv = wargv,
        .exe = "/proc/self/exe",
        .tty = isatty(STDOUT_FILENO),
    };
    char self_exe[4096], master[256];
    if (h.n)
        remote_setup(&h, &lc, self_exe, sizeof(self_exe), master, sizeof(master));
    if (!wargv)
        fprintf(stderr, "brigade %s: out of memory\n", cmd->name);
    bg_restart_conf_t rs = {a->max_restarts, a->restart_backoff, a->elastic, &a->c};
    if (!wargv)
        rc = 1;
    else if (a->max_restarts > 0)
        rc = bg_launch_restart_run(&lc, &rs);
    else
        rc = bg_launch_run(&lc);
    free(wargv);
    hosts_free(&h);
    return rc;
}

int bg_cmd_train(int argc, char **argv)
{
    bg_train_args_t a;
    int rc = bg_train_cli_parse(&bg_train_spec, argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    if ((rc = bg_train_cli_apply_plan(&bg_train_spec, argc, argv, &a)) != 0 ||
        (rc = bg_train_cli_validate(&bg_train_spec, &a)) != 0)
        return rc;
    return bg_train_cli_start(&bg_train_spec, argc, argv, &a);
}
