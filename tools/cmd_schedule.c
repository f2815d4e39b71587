/*
 * tools/cmd_schedule.c -- `brigade schedule`: generate a schedule, prove it
 * (checker), print every rank's action list, and simulate it with given
 * per-action costs: makespan, bubble, peak activations, optionally a time
 * grid, a Chrome trace, or all of it as JSON. Nothing runs: this is for
 * reading schedules. The schedule name goes to the engine's parser as
 * given (tools/ keeps no list of schedules); `auto` also prints every
 * candidate it weighed, with the costs of --profile, of a training trace
 * (--from-trace with --traced-plan) or --f --b --w, --latency and --mem-cap.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/schedule.h"
#include "engine/schedule_auto.h"
#include "engine/sim.h"
#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/plan_io.h"
#include "partition/profile.h"
#include "partition/trace_profile.h"
#include "tools/commands.h"

typedef struct schedule_args {
    int p, m, v;
    bool split, comm, grid, json;
    double f, b, w, latency, mem_cap;
    double unit; /* one cell of --grid */
    const char *kind_name, *trace, *profile;
    const char *from_trace, *traced_plan; /* times a `brigade train --trace` run measured */
    const char *times;                    /* where per-layer times came from, or NULL */
} schedule_args_t;

#define COST_ROW(n, field, what)                                                                   \
    {                                                                                              \
        .name = n, .kind = BG_OPT_DOUBLE, .metavar = "T", .help = "cost of one " what " action",   \
        .def = "1", .off = offsetof(schedule_args_t, field), .dmin = 0, .dmax = 1e9                \
    }

/* clang-format off */
static const bg_opt_t schedule_opts[] = {
    {.name = "stages", .kind = BG_OPT_INT, .metavar = "P", .help = "pipeline stages (ranks)",
     .off = offsetof(schedule_args_t, p), .min = 1, .max = 1024},
    {.name = "micro-batches", .kind = BG_OPT_INT, .metavar = "M", .help = "micro-batches per step",
     .off = offsetof(schedule_args_t, m), .min = 1, .max = 65536},
    {.name = "schedule", .kind = BG_OPT_STRING, .metavar = "NAME",
     .help = BG_SCHEDULE_HELP, .def = "1f1b",
     .off = offsetof(schedule_args_t, kind_name)},
    {.name = "chunks", .kind = BG_OPT_INT, .metavar = "V", .help = "model chunks per rank",
     .def = "the schedule's", .off = offsetof(schedule_args_t, v), .min = 1, .max = 64},
    {.name = "split-bw", .kind = BG_OPT_FLAG, .help = "B and W as separate actions",
     .off = offsetof(schedule_args_t, split)},
    {.name = "comm", .kind = BG_OPT_FLAG, .help = "list sends and receives too",
     .off = offsetof(schedule_args_t, comm)},
    {.name = "grid", .kind = BG_OPT_FLAG, .help = "draw the simulated time line",
     .off = offsetof(schedule_args_t, grid)},
    COST_ROW("f", f, "F"),
    COST_ROW("b", b, "B"),
    COST_ROW("w", w, "W"),
    {.name = "latency", .kind = BG_OPT_DOUBLE, .metavar = "T",
     .help = "time from a send's end until its data is usable on the other rank",
     .def = "0", .off = offsetof(schedule_args_t, latency), .dmin = 0, .dmax = 1e9},
    {.name = "profile", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "per-layer F, B, W times (brigade profile) split over the chunks, instead of "
             "--f --b --w", .off = offsetof(schedule_args_t, profile)},
    {.name = "from-trace", .kind = BG_OPT_PATH, .metavar = "TRACE",
     .help = "per-layer times from a brigade train --trace run instead (needs --traced-plan)",
     .off = offsetof(schedule_args_t, from_trace)},
    {.name = "traced-plan", .kind = BG_OPT_PATH, .metavar = "PLAN",
     .help = "the plan file the traced run trained with (its split, micro-batch size, model)",
     .off = offsetof(schedule_args_t, traced_plan)},
    {.name = "mem-cap", .kind = BG_OPT_DOUBLE, .metavar = "N",
     .help = "auto: per-rank peak of live activations, in micro-batches of a stage",
     .def = "1f1b's, min(P, M)", .off = offsetof(schedule_args_t, mem_cap), .dmin = 0,
     .dmax = 1e9},
    {.name = "trace", .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "write the simulated time line as Chrome-trace JSON",
     .off = offsetof(schedule_args_t, trace)},
    {.name = "json", .kind = BG_OPT_FLAG,
     .help = "print lists and simulation as JSON on standard output instead",
     .off = offsetof(schedule_args_t, json)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const schedule_tables[] = {schedule_opts, NULL};

const bg_cmd_spec_t bg_schedule_spec = {
    .name = "schedule",
    .args = "--stages P --micro-batches M [options]",
    .summary = "print and simulate a pipeline schedule",
    .about = "Prints each rank's action list (checked deadlock-free and complete), then the "
             "simulated makespan, bubble and peak activations with per-action costs F, B, W.",
    .tables = schedule_tables,
    .run = bg_cmd_schedule,
};

static void add_auto_json(cJSON *root, const bg_sched_auto_report_t *rep);

/* The schedule and its simulation as one JSON document on stdout. */
static bg_status_t print_json(const bg_sched_t *s, const bg_sim_t *sim, const schedule_args_t *a,
                              const bg_sched_auto_report_t *rep)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schedule", bg_sched_name(s));
    cJSON_AddNumberToObject(root, "stages", a->p);
    cJSON_AddNumberToObject(root, "micro_batches", a->m);
    cJSON_AddNumberToObject(root, "chunks", a->v);
    cJSON *costs = cJSON_AddObjectToObject(root, "costs");
    cJSON_AddNumberToObject(costs, "f", a->f);
    cJSON_AddNumberToObject(costs, "b", a->b);
    cJSON_AddNumberToObject(costs, "w", a->w);
    cJSON_AddNumberToObject(root, "makespan", bg_sim_makespan(sim));
    cJSON_AddNumberToObject(root, "bubble", bg_sim_bubble(sim));
    if (rep)
        add_auto_json(root, rep);
    cJSON *ranks = cJSON_AddArrayToObject(root, "ranks");
    for (int r = 0; r < a->p; r++) {
        cJSON *rank = cJSON_CreateObject(), *acts = cJSON_AddArrayToObject(rank, "actions");
        cJSON_AddNumberToObject(rank, "peak_live", bg_sim_peak_live(sim, r));
        const bg_action_t *act = bg_sched_actions(s, r);
        for (size_t i = 0; i < bg_sched_len(s, r); i++) {
            char buf[96];
            if (a->comm || (!bg_act_is_send(act[i].kind) && !bg_act_is_recv(act[i].kind)))
                cJSON_AddItemToArray(acts,
                                     cJSON_CreateString(bg_action_str(&act[i], buf, sizeof(buf))));
        }
        cJSON_AddItemToArray(ranks, rank);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    printf("%s\n", text);
    free(text);
    return BG_OK;
}

/* The text report: lists, summary line, optional grid. */
static bg_status_t print_text(const bg_sched_t *s, const bg_sim_t *sim, const schedule_args_t *a)
{
    bg_status_t st = bg_sched_print(s, stdout, a->comm ? BG_PRINT_COMM : 0);
    if (st != BG_OK)
        return st;
    if (a->times)
        printf("%s, p=%d m=%d v=%d, costs of %s: makespan %g, bubble %.1f%%, peak live:",
               bg_sched_name(s), a->p, a->m, a->v, a->times, bg_sim_makespan(sim),
               100 * bg_sim_bubble(sim));
    else
        printf("%s, p=%d m=%d v=%d, F=%g B=%g W=%g: makespan %g, bubble %.1f%%, peak live:",
               bg_sched_name(s), a->p, a->m, a->v, a->f, a->b, a->w, bg_sim_makespan(sim),
               100 * bg_sim_bubble(sim));
    for (int r = 0; r < a->p; r++)
        printf(" %d", bg_sim_peak_live(sim, r));
    printf("\n");
    if (!a->grid)
        return BG_OK;
    return bg_sim_print_grid(sim, stdout, a->unit);
}

static bg_status_t write_trace(const bg_sim_t *sim, const char *path)
{
    FILE *tf = fopen(path, "w");
    bg_status_t st =
        tf ? bg_sim_write_trace(sim, tf, 1000.0) : bg_errorf(BG_ERR_IO, "cannot write %s", path);
    if (tf && fclose(tf) != 0 && st == BG_OK)
        st = bg_errorf(BG_ERR_IO, "writing %s failed", path);
    return st;
}

/* The candidates auto weighed, the chosen one first in words. */
static void print_auto(const bg_sched_auto_report_t *rep)
{
    const bg_sched_auto_cand_t *best = &rep->cand[rep->best];
    printf("auto: %s (v=%d): the smallest simulated makespan whose peak activations fit the "
           "cap of %.2f micro-batches of a stage per rank; ties go to the table row\n",
           best->name, best->v, rep->mem_cap);
    printf("  %-18s %2s %12s %8s %9s  %s\n", "candidate", "v", "makespan", "bubble", "peak mem",
           "verdict");
    for (int i = 0; i < rep->n; i++) {
        const bg_sched_auto_cand_t *c = &rep->cand[i];
        if (c->makespan > 0 || c->ok)
            printf("  %-18s %2d %12.6g %7.1f%% %9.2f  %s%s\n", c->name, c->v, c->makespan,
                   100 * c->bubble, c->peak_mem, i == rep->best ? "chosen" : c->ok ? "ok" : "",
                   c->ok ? "" : c->why);
        else
            printf("  %-18s %2d %12s %8s %9s  %s\n", c->name, c->v, "-", "-", "-", c->why);
    }
}

/* The candidates as a JSON array on root. */
static void add_auto_json(cJSON *root, const bg_sched_auto_report_t *rep)
{
    cJSON *arr = cJSON_AddArrayToObject(root, "auto_candidates");
    cJSON_AddNumberToObject(root, "auto_mem_cap", rep->mem_cap);
    for (int i = 0; i < rep->n; i++) {
        const bg_sched_auto_cand_t *c = &rep->cand[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddNumberToObject(o, "chunks", c->v);
        cJSON_AddBoolToObject(o, "ok", c->ok);
        cJSON_AddBoolToObject(o, "chosen", i == rep->best);
        cJSON_AddNumberToObject(o, "makespan", c->makespan);
        cJSON_AddNumberToObject(o, "bubble", c->bubble);
        cJSON_AddNumberToObject(o, "peak_mem", c->peak_mem);
        if (!c->ok)
            cJSON_AddStringToObject(o, "why", c->why);
        cJSON_AddItemToArray(arr, o);
    }
}

/* Auto's costs from the arguments: per-layer times in model order (a
 * profile's or a trace's), or F, B, W per stage. *buf owns the layer
 * arrays (NULL without per-layer times). */
static bg_status_t auto_opts(const schedule_args_t *a, bg_sched_auto_opts_t *o, double **buf)
{
    *o = bg_sched_auto_defaults();
    o->f = a->f, o->b = a->b, o->w = a->w;
    o->comm = a->latency;
    o->mem_cap = a->mem_cap;
    o->flags = a->split ? BG_SCHED_SPLIT_BW : 0;
    *buf = NULL;
    if (!a->times)
        return BG_OK;
    bg_profile_t prof;
    bg_status_t st = a->profile ? bg_profile_load(a->profile, &prof)
                                 : bg_profile_from_traced_run(a->from_trace, a->traced_plan, &prof);
    if (st)
        return st;
    double *x = malloc(3 * (size_t)prof.n * sizeof(double));
    if (!x) {
        bg_profile_free(&prof);
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < prof.n; l++)
        x[l] = prof.layer[l].f, x[prof.n + l] = prof.layer[l].b, x[2 * prof.n + l] = prof.layer[l].w;
    o->layer_f = x, o->layer_b = x + prof.n, o->layer_w = x + 2 * prof.n;
    o->n_layers = prof.n;
    bg_profile_free(&prof);
    *buf = x;
    return BG_OK;
}

/* Simulate s: auto's chunk costs when auto chose it or a profile is given,
 * else F, B, W per action. */
static bg_status_t simulate(const bg_sched_t *s, const schedule_args_t *a,
                            const bg_sched_auto_opts_t *o, int per_chunk, bg_sim_t **sim)
{
    bg_sim_costs_t costs = bg_sim_costs_uniform(a->f, a->b, a->w);
    costs.latency = a->latency;
    if (!per_chunk)
        return bg_sim_run(s, &costs, sim);
    int G = bg_sched_chunks(s);
    double *x = malloc(3 * (size_t)G * sizeof(double));
    if (!x)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    bg_status_t st = bg_sched_auto_chunk_costs(o, G, a->v, x, x + G, x + 2 * G);
    costs.f_chunk = x, costs.b_chunk = x + G, costs.w_chunk = x + 2 * G;
    if (!st)
        st = bg_sim_run(s, &costs, sim);
    free(x);
    return st;
}

/* "auto" with the arguments' costs, or what a run would resolve. */
static bg_status_t resolve(schedule_args_t *a, const bg_sched_auto_opts_t *o, bg_sched_t **s,
                           bg_sched_auto_report_t *rep)
{
    bg_status_t st =
        !strcmp(a->kind_name, "auto")
            ? bg_sched_auto(a->p, a->m, a->v, o, s, rep)
            : bg_sched_resolve(a->kind_name, a->p, a->m, a->v, a->split ? BG_SCHED_SPLIT_BW : 0, s);
    if (!st)
        a->v = bg_sched_chunks_per_rank(*s);
    return st;
}

int bg_cmd_schedule(int argc, char **argv)
{
    schedule_args_t a = {.v = 0, .f = 1, .b = 1, .w = 1, .kind_name = "1f1b"};
    int npos, rc = bg_opt_parse(&bg_schedule_spec, argc, argv, &a, NULL, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!a.p || !a.m)
        return bg_opt_usage_error(&bg_schedule_spec, "--stages and --micro-batches are required");
    if (!a.from_trace != !a.traced_plan)
        return bg_opt_usage_error(&bg_schedule_spec, "--from-trace and --traced-plan go together");
    if (a.from_trace && a.profile)
        return bg_opt_usage_error(&bg_schedule_spec, "--from-trace and --profile both give times");
    a.times = a.profile ? a.profile : a.from_trace;
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    bg_sched_auto_opts_t o;
    bg_sched_auto_report_t rep = {0};
    double *layers = NULL;
    /* A table row, auto or file:PATH, exactly as `brigade train` resolves it
     * (auto with this command's costs). */
    bg_status_t st = auto_opts(&a, &o, &layers);
    if (st == BG_OK)
        st = resolve(&a, &o, &s, &rep);
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        free(layers);
        return 2;
    }
    if (rep.cand && !a.json)
        print_auto(&rep);
    int per_chunk = rep.cand || a.times;
    st = simulate(s, &a, &o, per_chunk, &sim);
    /* One grid cell: the shorter of F and B, per chunk where costs are; a
     * profile's chunks differ, so a 200th of the step there. */
    a.unit = a.f < a.b ? (a.f > 0 ? a.f : 1) : (a.b > 0 ? a.b : 1);
    if (per_chunk)
        a.unit = a.times && sim ? bg_sim_makespan(sim) / 200 : a.unit / a.v;
    if (!(a.unit > 0))
        a.unit = 1;
    if (st == BG_OK)
        st = a.json ? print_json(s, sim, &a, rep.cand ? &rep : NULL) : print_text(s, sim, &a);
    if (st == BG_OK && a.trace)
        st = write_trace(sim, a.trace);
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        rc = 1;
    }
    bg_sim_free(sim);
    bg_sched_free(s);
    bg_sched_auto_report_free(&rep);
    free(layers);
    return rc;
}
