/*
 * tools/cmd_schedule.c -- `brigade schedule`: generate a schedule, prove it
 * (checker), print every rank's action list, and simulate it with given
 * per-action costs: makespan, bubble, peak activations, optionally a time
 * grid, a Chrome trace, or all of it as JSON. Nothing runs: this is for
 * reading schedules. The schedule name goes to the engine's parser as
 * given (tools/ keeps no list of schedules).
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/schedule.h"
#include "engine/sim.h"
#include "tools/commands.h"

typedef struct schedule_args {
    int p, m, v;
    bool split, comm, grid, json;
    double f, b, w;
    const char *kind_name, *trace;
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

/* The schedule and its simulation as one JSON document on stdout. */
static bg_status_t print_json(const bg_sched_t *s, const bg_sim_t *sim, const schedule_args_t *a)
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
    printf("%s, p=%d m=%d v=%d, F=%g B=%g W=%g: makespan %g, bubble %.1f%%, peak live:",
           bg_sched_name(s), a->p, a->m, a->v, a->f, a->b, a->w, bg_sim_makespan(sim),
           100 * bg_sim_bubble(sim));
    for (int r = 0; r < a->p; r++)
        printf(" %d", bg_sim_peak_live(sim, r));
    printf("\n");
    if (!a->grid)
        return BG_OK;
    double f = a->f, b = a->b;
    return bg_sim_print_grid(sim, stdout, f < b ? (f > 0 ? f : 1) : (b > 0 ? b : 1));
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

int bg_cmd_schedule(int argc, char **argv)
{
    schedule_args_t a = {.v = 0, .f = 1, .b = 1, .w = 1, .kind_name = "1f1b"};
    int npos, rc = bg_opt_parse(&bg_schedule_spec, argc, argv, &a, NULL, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!a.p || !a.m)
        return bg_opt_usage_error(&bg_schedule_spec, "--stages and --micro-batches are required");
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    /* A table row or file:PATH, exactly as `brigade train` resolves it. */
    bg_status_t st =
        bg_sched_resolve(a.kind_name, a.p, a.m, a.v, a.split ? BG_SCHED_SPLIT_BW : 0, &s);
    if (st == BG_OK)
        a.v = bg_sched_chunks_per_rank(s);
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        return 2;
    }
    st = bg_sched_check(s, NULL);
    bg_sim_costs_t costs = bg_sim_costs_uniform(a.f, a.b, a.w);
    if (st == BG_OK)
        st = bg_sim_run(s, &costs, &sim);
    if (st == BG_OK)
        st = a.json ? print_json(s, sim, &a) : print_text(s, sim, &a);
    if (st == BG_OK && a.trace)
        st = write_trace(sim, a.trace);
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        rc = 1;
    }
    bg_sim_free(sim);
    bg_sched_free(s);
    return rc;
}
