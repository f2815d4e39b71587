/*
 * tools/cmd_plan.c -- `brigade plan MODEL`: where each layer runs.
 *
 * Parses the model, prices it on the chosen device(s) (roofline or a
 * measured --profile), then either splits it for a fixed shape or searches
 * shapes (--stages/--dp/--micro-batches auto), prints a per-stage table
 * with predicted step time, bubble, throughput and memory, and with -o
 * writes the plan file `brigade train --plan` reads. All modelling lives in
 * partition/; this file only parses options and prints. Exit codes: 0 ok,
 * 1 the request is valid but cannot be planned (does not fit), 2 bad
 * input or usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "base/clock.h"
#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/partition.h"
#include "partition/plan_io.h"
#include "partition/profile.h"
#include "partition/search.h"
#include "partition/trace_profile.h"
#include "tools/commands.h"
#include "tools/output.h"

#define PLAN_MAX_DEVICES 1024
#define AUTO (-1)

typedef struct plan_opts {
    const char *model;
    int stages, dp, micro_batches; /* AUTO, 0 = not given, or a value */
    int64_t batch;                 /* 0 = default */
    int gpus;                      /* 0 = not given */
    int cores;                     /* -1: this machine's, for cpu devices */
    int chunks;                    /* 0 = not given */
    const char *schedule_name;     /* looked up in the schedule table */
    bg_sched_kind_t schedule;
    const char *device;            /* comma list of presets */
    int64_t device_memory;         /* 0 = preset's */
    const char *profile;
    const char *from_trace;        /* brigade train --trace output */
    const char *traced_plan;       /* the plan that traced run used */
    bg_split_method_t method;
    bool recompute_flag;
    int recompute;                 /* 1 forced on, 0 off, AUTO: search both */
    const char *dtype_name;        /* NULL = by device */
    int dtype;                     /* -1 = by device */
    int top;
    int zero;                      /* ZeRO stage the run will use (train --zero) */
    const char *out;
    bool json;
} plan_opts_t;

static bg_status_t parse_memory(const char *s, void *dst)
{
    int64_t v;
    bg_status_t st = bg_parse_bytes(s, &v);
    if (st == BG_OK && v < 1)
        st = bg_errorf(BG_ERR_INVALID, "'%s' is not a positive size", s);
    if (st == BG_OK)
        *(int64_t *)dst = v;
    return st;
}

static bg_status_t parse_method(const char *s, void *dst)
{
    return bg_split_method_parse(s, (bg_split_method_t *)dst);
}

static const char *const dtypes[] = {"f32", "bf16", "fp16", NULL};

#define COUNT_ROW(n, field, what, d)                                                             \
    {.name = n, .kind = BG_OPT_INT, .metavar = "N|auto", .help = what, .def = d,                 \
     .off = offsetof(plan_opts_t, field), .min = 1, .max = 1 << 24, .word = "auto",             \
     .word_value = AUTO}

/* clang-format off */
static const bg_opt_t plan_opts[] = {
    COUNT_ROW("stages", stages, "pipeline stages, or auto (needs --gpus); required", NULL),
    COUNT_ROW("dp", dp, "data-parallel replicas, or auto with --gpus", "1"),
    COUNT_ROW("micro-batches", micro_batches, "per replica per step, or auto",
              "micro-batches of 1 sample"),
    {.name = "batch", .kind = BG_OPT_I64, .metavar = "B", .help = "global batch in samples",
     .def = "4 x devices", .off = offsetof(plan_opts_t, batch), .min = 1, .max = 1 << 30},
    {.name = "gpus", .kind = BG_OPT_INT, .metavar = "N", .help = "devices in all, N = S x D",
     .off = offsetof(plan_opts_t, gpus), .min = 1, .max = 1 << 24},
    {.name = "schedule", .kind = BG_OPT_STRING, .metavar = "NAME",
     .help = BG_SCHED_NAMES, .def = "1f1b",
     .off = offsetof(plan_opts_t, schedule_name)},
    {.name = "chunks", .kind = BG_OPT_INT, .metavar = "V",
     .help = "chunks per stage (schedules with more than one)",
     .def = "2", .off = offsetof(plan_opts_t, chunks), .min = 1, .max = 1 << 16},
    {.name = "device", .kind = BG_OPT_STRING, .metavar = "D[,D...]",
     .help = "device preset (cpu, cuda, h100, a100, ...), or one per stage", .def = "cpu",
     .off = offsetof(plan_opts_t, device)},
    {.name = "device-memory", .kind = BG_OPT_CUSTOM, .metavar = "SIZE",
     .help = "capacity per device (e.g. 80G)", .off = offsetof(plan_opts_t, device_memory),
     .parse = parse_memory},
    {.name = "cores", .kind = BG_OPT_INT, .metavar = "N",
     .help = "cpu device: cores all ranks share (0: one core per rank)", .def = "this machine's",
     .off = offsetof(plan_opts_t, cores), .min = 0, .max = 1 << 20},
    {.name = "profile", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "measured per-layer times (brigade profile) instead of rates",
     .off = offsetof(plan_opts_t, profile)},
    {.name = "from-trace", .kind = BG_OPT_PATH, .metavar = "TRACE",
     .help = "re-split from the per-chunk times a brigade train --trace run measured "
             "(needs --traced-plan)",
     .off = offsetof(plan_opts_t, from_trace)},
    {.name = "traced-plan", .kind = BG_OPT_PATH, .metavar = "PLAN",
     .help = "the plan file the traced run trained with (its split and micro-batch size)",
     .off = offsetof(plan_opts_t, traced_plan)},
    {.name = "method", .kind = BG_OPT_CUSTOM, .metavar = "optimal|uniform|params",
     .help = "optimal split or a DeepSpeed-style baseline", .def = "optimal",
     .off = offsetof(plan_opts_t, method), .parse = parse_method},
    {.name = "recompute", .kind = BG_OPT_FLAG,
     .help = "keep only stage inputs, re-run forward before backward (auto shapes try both "
             "unless given)",
     .off = offsetof(plan_opts_t, recompute_flag)},
    {.name = "dtype", .kind = BG_OPT_CHOICE, .choices = dtypes, .help = "activation dtype",
     .def = "bf16 on GPUs, f32 on cpu", .off = offsetof(plan_opts_t, dtype_name)},
    {.name = "zero", .kind = BG_OPT_INT, .metavar = "0|1",
     .help = "the run's `train --zero`: 1 splits f32 masters and optimizer state over the dp "
             "replicas (memory) and adds the weights' all-gather (time)",
     .def = "0", .off = offsetof(plan_opts_t, zero), .min = 0, .max = 1},
    {.name = "top", .kind = BG_OPT_INT, .metavar = "K", .help = "shapes listed by the search",
     .def = "5", .off = offsetof(plan_opts_t, top), .min = 1, .max = 100},
    {.name = "output", .short_name = 'o', .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "write the plan as JSON for brigade train --plan; - for standard output",
     .off = offsetof(plan_opts_t, out)},
    {.name = "json", .kind = BG_OPT_FLAG,
     .help = "print the plan as JSON on standard output instead of the table",
     .off = offsetof(plan_opts_t, json)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const plan_tables[] = {plan_opts, NULL};

const bg_cmd_spec_t bg_plan_spec = {
    .name = "plan",
    .args = "MODEL --stages S|auto [options]",
    .summary = "split it into pipeline stages; predicted step and memory",
    .about = "Prices MODEL on the chosen device(s) (roofline or a measured --profile), splits "
             "it for a fixed shape or searches shapes (auto), and prints a per-stage table with "
             "predicted step time, bubble, throughput and memory.",
    .tables = plan_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "MODEL",
    .run = bg_cmd_plan,
};

/* 0 ok, 1 --help shown, 2 usage error printed. */
static int parse_opts(int argc, char **argv, plan_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->schedule_name = "1f1b";
    o->device = "cpu";
    o->cores = -1;
    o->method = BG_SPLIT_OPTIMAL;
    o->top = 5;
    char *pos[1];
    int npos, rc = bg_opt_parse(&bg_plan_spec, argc, argv, o, pos, &npos);
    if (rc)
        return rc;
    o->model = pos[0];
    o->recompute = o->recompute_flag ? 1 : AUTO;
    bg_dtype_t dt = BG_F32;
    o->dtype = !o->dtype_name || bg_dtype_parse(o->dtype_name, &dt) ? -1 : (int)dt;
    const bg_sched_desc_t *sd;
    if (bg_sched_lookup(o->schedule_name, &sd))
        return bg_opt_usage_error(&bg_plan_spec, "%s", bg_last_error());
    o->schedule = sd->kind;
    if (!o->stages)
        return bg_opt_usage_error(&bg_plan_spec, "--stages S|auto is required");
    if (o->json && bg_out_is_stdout(o->out))
        return bg_opt_usage_error(&bg_plan_spec, "--json and -o - both write to standard output");
    if (bg_sched_resolve_chunks(sd, o->chunks, &o->chunks))
        return bg_opt_usage_error(&bg_plan_spec, "%s", bg_last_error());
    if (!o->from_trace != !o->traced_plan)
        return bg_opt_usage_error(&bg_plan_spec, "--from-trace and --traced-plan go together");
    if (o->from_trace && o->profile)
        return bg_opt_usage_error(&bg_plan_spec, "--from-trace and --profile both give times");
    return 0;
}

/* ---- devices ---- */

typedef struct plan_devices {
    int n; /* 1 = homogeneous */
    bg_device_desc_t d[PLAN_MAX_DEVICES];
} plan_devices_t;

static int parse_devices(const plan_opts_t *o, plan_devices_t *pd)
{
    char buf[4096];
    if (strlen(o->device) >= sizeof(buf)) {
        fprintf(stderr, "brigade plan: --device list too long\n");
        return 2;
    }
    strcpy(buf, o->device);
    pd->n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (pd->n == PLAN_MAX_DEVICES) {
            fprintf(stderr, "brigade plan: more than %d devices listed\n", PLAN_MAX_DEVICES);
            return 2;
        }
        if (bg_device_preset(t, &pd->d[pd->n])) {
            fprintf(stderr, "brigade plan: --device: %s\n", bg_last_error());
            return 2;
        }
        if (o->device_memory) pd->d[pd->n].mem_bytes = o->device_memory;
        pd->n++;
    }
    if (!pd->n) {
        fprintf(stderr, "brigade plan: --device is empty\n");
        return 2;
    }
    return 0;
}

/* ---- printing ---- */

static const char *gib(double bytes, char *buf, size_t n)
{
    snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    return buf;
}

static const char *human_count(int64_t v, char *buf, size_t n)
{
    if (v >= 1000000000LL) snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1000000) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1000) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%lld", (long long)v);
    return buf;
}

static void print_row(FILE *out, const bg_chain_t *ch, const char *label, int first, int end,
                      int64_t params, int64_t mem, int64_t cap, double f, double b, double w,
                      double comm, double t)
{
    char p[32], m[32], c[32], range[64], names[2 * BG_NAME_MAX + 8];
    snprintf(range, sizeof(range), "%d-%d", first, end - 1);
    snprintf(names, sizeof(names), "%s .. %s", ch->layer[first].name, ch->layer[end - 1].name);
    fprintf(out, "%-6s %-10s %4d  %-44.44s %9s %10s %10s %8.2f %8.2f %8.2f %8.2f %9.2f%s\n", label,
            range, end - first, names, human_count(params, p, sizeof(p)),
            gib((double)mem, m, sizeof(m)), gib((double)cap, c, sizeof(c)), f * 1e3, b * 1e3,
            w * 1e3, comm * 1e3, t * 1e3, mem > cap ? "  OVER" : "");
}

static void print_plan(FILE *f, const bg_chain_t *ch, const bg_plan_t *pl, int64_t global_batch)
{
    const bg_part_config_t *c = &pl->cfg;
    fprintf(f, "%-6s %-10s %4s  %-44s %9s %10s %10s %8s %8s %8s %8s %9s\n",
            c->chunks > 1 ? "chunk" : "stage", "layers", "#", "first .. last", "params", "memory",
            "capacity", "F ms", "B ms", "W ms", "comm ms", "total ms");
    for (int g = 0; g < pl->n_chunks; g++) {
        const bg_chunk_eval_t *e = &pl->chunk[g];
        char label[32];
        if (c->chunks > 1)
            snprintf(label, sizeof(label), "%d/s%d", g, e->stage);
        else
            snprintf(label, sizeof(label), "%d", g);
        print_row(f, ch, label, e->first, e->end, e->params, e->mem, e->mem_cap, e->f, e->b, e->w,
                  e->comm, e->time);
    }
    if (c->chunks > 1) {
        fprintf(f, "per stage (sum of its chunks):\n");
        for (int r = 0; r < c->stages; r++) {
            const bg_stage_eval_t *s = &pl->stage[r];
            char m[32], cap[32];
            fprintf(f, "  stage %d: F+B+W %.2f ms, comm %.2f ms, memory %s of %s\n", r,
                    (s->f + s->b + s->w) * 1e3, s->comm * 1e3, gib((double)s->mem, m, sizeof(m)),
                    gib((double)s->mem_cap, cap, sizeof(cap)));
        }
    }
    double tail = pl->step_s - pl->pipe_s;
    char peak[32];
    fprintf(f, "predicted step: %.4f s (pipeline %.4f s + allreduce/optimizer %.4f s)\n",
            pl->step_s, pl->pipe_s, tail);
    fprintf(f,
            "bubble: %.1f%%   throughput: %.2f samples/s   bottleneck: %.2f ms per micro-batch\n",
            100.0 * pl->bubble, (double)global_batch / pl->step_s, pl->bottleneck * 1e3);
    fprintf(f, "peak memory: %s per device%s\n", gib((double)pl->peak_mem, peak, sizeof(peak)),
            pl->fits ? " (fits)" : " -- DOES NOT FIT");
}

/* Exit code of a library failure: does-not-fit is 1, bad input 2. */
static int fail(bg_status_t st)
{
    fprintf(stderr, "brigade plan: %s\n", bg_last_error());
    return st == BG_ERR_INVALID || st == BG_ERR_IO ? 2 : 1;
}

/* ---- the command ---- */

typedef struct plan_run {
    plan_opts_t o;
    plan_devices_t *dev;
    bg_graph_t *graph;
    bg_chain_t chain;
    bg_profile_t prof;
    bool have_prof;
    bg_costs_t *costs;      /* [n priced] */
    int n_costs;
    const bg_costs_t **cp;  /* [stages] */
    FILE *txt;              /* the tables: stdout, or elsewhere when stdout carries JSON */
} plan_run_t;

/* Resolve S, D, m, batch for a fixed shape or run the search; fills cfg
 * and micro-batch size. Returns an exit code (0 = go on). */
static int choose_shape(plan_run_t *r, bg_part_config_t *cfg, int *mb, int64_t *gb)
{
    plan_opts_t *o = &r->o;
    bool search = o->stages == AUTO || o->dp == AUTO || o->micro_batches == AUTO;
    int dp = o->dp ? o->dp : 1;
    int gpus = o->gpus;
    if (!search) {
        if (gpus && gpus != o->stages * dp) {
            fprintf(stderr, "brigade plan: --stages %d x --dp %d is not --gpus %d\n", o->stages, dp,
                    gpus);
            return 2;
        }
        gpus = o->stages * dp;
    } else if (!gpus) {
        if (o->stages == AUTO || o->dp == AUTO) {
            fprintf(stderr, "brigade plan: 'auto' needs --gpus N (devices in all)\n");
            return 2;
        }
        gpus = o->stages * dp; /* only the micro-batches are searched */
    }
    *gb = o->batch ? o->batch : 4LL * gpus;
    if (!search) {
        if (*gb % dp) {
            fprintf(stderr, "brigade plan: --batch %lld is not divisible by --dp %d\n",
                    (long long)*gb, dp);
            return 2;
        }
        int64_t per = *gb / dp;
        int m = o->micro_batches ? o->micro_batches : (int)per;
        if (per % m) {
            fprintf(stderr,
                    "brigade plan: %lld samples per replica do not split into %d micro-batches\n",
                    (long long)per, m);
            return 2;
        }
        *cfg = (bg_part_config_t){o->schedule, o->stages,         o->chunks, m, dp,
                                  o->recompute == 1, 8, 0, o->zero};
        *mb = (int)(per / m);
        return 0;
    }
    if (r->dev->n > 1) {
        fprintf(stderr, "brigade plan: a per-stage --device list needs fixed --stages\n");
        return 2;
    }
    /* with --stages auto an unspecified --dp follows from N = S x D */
    int sdp = o->dp == AUTO || (!o->dp && o->stages == AUTO) ? 0 : dp;
    bg_search_opts_t so = {gpus, o->stages == AUTO ? 0 : o->stages, sdp,
                           o->micro_batches == AUTO ? 0 : o->micro_batches, *gb,
                           o->recompute == 1 ? 1 : AUTO, o->schedule, o->chunks, 8, o->top,
                           o->zero};
    bg_search_result_t res[100];
    int n = 0;
    bg_search_stats_t stats;
    double t0 = bg_now_s();
    bg_status_t st = bg_search_shapes(&r->chain, &r->dev->d[0], r->have_prof ? &r->prof : NULL, &so,
                                      res, &n, &stats);
    double dt = bg_now_s() - t0;
    if (st)
        return fail(st);
    fprintf(r->txt,
            "shape search over %d devices, global batch %lld: %d candidates, %d split exactly, "
            "%d pruned by bound, %d do not fit (%.0f ms)\n",
            gpus, (long long)*gb, stats.candidates, stats.solved, stats.pruned, stats.no_fit,
            dt * 1e3);
    fprintf(r->txt, "  rank stages  dp  micro-batches x size  recompute   step s   bubble   "
                    "samples/s   peak memory\n");
    for (int i = 0; i < n; i++) {
        char m[32];
        fprintf(r->txt, "  %4d %6d %4d %10d x %-8d %-9s %8.4f %7.1f%% %11.2f   %s\n", i + 1,
                res[i].cfg.stages, res[i].cfg.dp, res[i].cfg.micro_batches, res[i].micro_batch,
                res[i].cfg.recompute ? "on" : "off", res[i].step_s, 100 * res[i].bubble,
                res[i].samples_per_s, gib((double)res[i].peak_mem, m, sizeof(m)));
    }
    *cfg = res[0].cfg;
    *mb = res[0].micro_batch;
    return 0;
}

/* Price the chain for every stage at micro-batch size mb. */
static int price(plan_run_t *r, const bg_part_config_t *cfg, int mb)
{
    int S = cfg->stages;
    if (r->dev->n > 1 && r->dev->n != S) {
        fprintf(stderr, "brigade plan: %d devices listed for %d stages (give one, or one per stage)\n",
                r->dev->n, S);
        return 2;
    }
    r->costs = calloc((size_t)r->dev->n, sizeof(bg_costs_t));
    r->cp = malloc(sizeof(*r->cp) * (size_t)S);
    if (!r->costs || !r->cp) {
        fprintf(stderr, "brigade plan: out of memory\n");
        return 1;
    }
    for (int i = 0; i < r->dev->n; i++) {
        bg_status_t st = bg_costs_build(&r->chain, &r->dev->d[i], mb,
                                        r->have_prof ? &r->prof : NULL, &r->costs[i]);
        if (st)
            return fail(st);
        r->n_costs = i + 1;
    }
    for (int s = 0; s < S; s++)
        r->cp[s] = &r->costs[r->dev->n > 1 ? s : 0];
    return 0;
}

/* The baselines next to the chosen split, for comparison. */
static void print_baselines(FILE *f, const bg_part_problem_t *pb)
{
    fprintf(f, "split methods:");
    for (int m = 0; m < 3; m++) {
        bg_plan_t alt;
        bg_status_t as =
            m ? bg_partition(pb, (bg_split_method_t)m, &alt) : bg_partition_try(pb, &alt);
        if (as == BG_OK) {
            fprintf(f, "  %s %.4f s%s", bg_split_method_name((bg_split_method_t)m), alt.step_s,
                    alt.fits ? "" : " (does not fit)");
            bg_plan_free(&alt);
        } else {
            fprintf(f, "  %s: none fits", bg_split_method_name((bg_split_method_t)m));
        }
    }
    fprintf(f, "\n");
}

/* The plan file to -o FILE, and to stdout under -o - or --json; an exit code. */
static int plan_write(plan_run_t *r, const bg_plan_t *pl)
{
    plan_opts_t *o = &r->o;
    bg_plan_meta_t meta = {o->model, bg_split_method_name(o->method), o->device};
    bg_status_t st;
    char tmp[512];
    if (o->out && !bg_out_is_stdout(o->out)) {
        if ((st = bg_plan_save(o->out, pl, &r->chain, &meta))) return fail(st);
        fprintf(r->txt, "wrote %s\n", o->out);
    }
    if (!o->json && !bg_out_is_stdout(o->out)) return 0;
    if (bg_out_tmp("plan", tmp, sizeof(tmp))) return 1;
    if ((st = bg_plan_save(tmp, pl, &r->chain, &meta))) {
        unlink(tmp);
        return fail(st);
    }
    return bg_out_cat("plan", tmp);
}

/* Times measured by a traced training run (docs/partition.md, closed
 * loop): its chunks' medians spread over their layers by roofline shares,
 * priced at the traced micro-batch size. Fills r->prof on success. */
static bg_status_t profile_from_trace(plan_run_t *r)
{
    return bg_profile_from_traced_plan(r->o.from_trace, r->o.traced_plan, &r->chain,
                                       &r->dev->d[0], &r->prof);
}

static int plan_body(plan_run_t *r)
{
    plan_opts_t *o = &r->o;
    double t0 = bg_now_s();
    bg_status_t st = bg_graph_parse_file(o->model, 1, &r->graph);
    if (st) return fail(st);
    bool gpu = strcmp(r->dev->d[0].name, "cpu") != 0;
    bg_dtype_t dt = o->dtype >= 0 ? (bg_dtype_t)o->dtype : gpu ? BG_BF16 : BG_F32;
    if ((st = bg_chain_from_graph(r->graph, dt, &r->chain))) return fail(st);
    if (o->profile) {
        if ((st = bg_profile_load(o->profile, &r->prof)))
            return fail(st);
        r->have_prof = true;
    }
    if (o->from_trace) {
        if ((st = profile_from_trace(r)))
            return fail(st);
        r->have_prof = true;
    }
    char cap[32], pc[32];
    fprintf(
        r->txt, "model %s: %d layers, %s parameters; device %s (%s activations), %s per device%s\n",
        o->model, r->chain.n_layers, human_count(bg_graph_totals(r->graph)->params, pc, sizeof(pc)),
        o->device, bg_dtype_name(dt), gib((double)r->dev->d[0].mem_bytes, cap, sizeof(cap)),
        o->from_trace ? ", times from trace" : r->have_prof ? ", times from profile" : "");
    bg_part_config_t cfg;
    int mb;
    int64_t gb;
    int rc = choose_shape(r, &cfg, &mb, &gb);
    if (rc)
        return rc;
    if ((rc = price(r, &cfg, mb)))
        return rc;
    /* CPU ranks of one machine share its cores (the launcher binds rank r to
     * core r % cores); GPUs are a device per rank. */
    if (!strcmp(o->device, "cpu"))
        cfg.cores = o->cores >= 0 ? o->cores : (int)sysconf(_SC_NPROCESSORS_ONLN);
    bg_part_problem_t pb = {&r->chain, r->cp, cfg};
    bg_plan_t pl;
    if ((st = bg_partition(&pb, o->method, &pl)))
        return fail(st);
    fprintf(r->txt,
            "layout: %d stage(s) x %d dp%s, %s%s, %d micro-batches of %d (global batch %lld), "
            "recompute %s, split %s\n",
            cfg.stages, cfg.dp, cfg.zero && cfg.dp > 1 ? " (ZeRO-1)" : "",
            bg_sched_kind_name(cfg.schedule),
            cfg.chunks > 1 ? " (chunks per stage below)" : "", cfg.micro_batches, mb, (long long)gb,
            cfg.recompute ? "on" : "off", bg_split_method_name(o->method));
    print_plan(r->txt, &r->chain, &pl, gb);
    print_baselines(r->txt, &pb);
    fprintf(r->txt, "planned in %.0f ms\n", (bg_now_s() - t0) * 1e3);
    rc = plan_write(r, &pl);
    if (!pl.fits && !rc) {
        fprintf(stderr, "brigade plan: the %s split does not fit in memory (see OVER above)\n",
                bg_split_method_name(o->method));
        rc = 1;
    }
    bg_plan_free(&pl);
    return rc;
}

int bg_cmd_plan(int argc, char **argv)
{
    plan_run_t r;
    memset(&r, 0, sizeof(r));
    int rc = parse_opts(argc, argv, &r.o);
    if (rc) return rc == 1 ? 0 : rc;
    r.dev = calloc(1, sizeof(*r.dev));
    if (!r.dev) {
        fprintf(stderr, "brigade plan: out of memory\n");
        return 1;
    }
    /* Standard output carries the plan under --json and -o -: the tables go elsewhere. */
    r.txt = r.o.json ? bg_out_null() : bg_out_is_stdout(r.o.out) ? stderr : stdout;
    rc = parse_devices(&r.o, r.dev);
    if (!rc) rc = plan_body(&r);
    bg_out_close(r.txt);
    for (int i = 0; i < r.n_costs; i++) bg_costs_free(&r.costs[i]);
    free(r.costs);
    free(r.cp);
    if (r.have_prof) bg_profile_free(&r.prof);
    bg_chain_free(&r.chain);
    bg_graph_free(r.graph);
    free(r.dev);
    return rc;
}
