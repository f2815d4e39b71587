/*
 * tools/cmd_schedule.c -- `brigade schedule`: generate a schedule, prove it
 * (checker), print every rank's action list, and simulate it with given
 * per-action costs: makespan, bubble, peak activations, optionally a time
 * grid or a Chrome trace. Nothing runs: this is for reading schedules.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/schedule.h"
#include "engine/sim.h"
#include "tools/commands.h"

static void schedule_usage(FILE *f)
{
    fprintf(f,
            "usage: brigade schedule --stages P --micro-batches M [--schedule NAME] [--chunks V]\n"
            "                        [--split-bw] [--comm] [--grid] [--f T --b T --w T]\n"
            "                        [--trace FILE]\n"
            "Prints each rank's action list (checked deadlock-free and complete), then the\n"
            "simulated makespan, bubble and peak activations with per-action costs\n"
            "F, B, W (default 1 each); --grid draws the time line, --trace writes it as\n"
            "Chrome-trace JSON.\n");
}

int bg_cmd_schedule(int argc, char **argv)
{
    static const struct option opts[] = {{"stages", 1, 0, 's'},
                                         {"micro-batches", 1, 0, 'm'},
                                         {"schedule", 1, 0, 'k'},
                                         {"chunks", 1, 0, 'v'},
                                         {"split-bw", 0, 0, 'x'},
                                         {"comm", 0, 0, 'c'},
                                         {"grid", 0, 0, 'g'},
                                         {"f", 1, 0, 'F'},
                                         {"b", 1, 0, 'B'},
                                         {"w", 1, 0, 'W'},
                                         {"trace", 1, 0, 't'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int p = 0, m = 0, v = 0, split = 0, comm = 0, grid = 0; /* v = 0: the schedule's default */
    double f = 1, b = 1, w = 1;
    const char *kind_name = "1f1b", *trace = NULL;
    optind = 1;
    opterr = 0;
    for (int o; (o = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (o) {
        case 's':
            p = (int)strtol(optarg, &end, 10);
            break;
        case 'm':
            m = (int)strtol(optarg, &end, 10);
            break;
        case 'v':
            v = (int)strtol(optarg, &end, 10);
            break;
        case 'k':
            kind_name = optarg;
            break;
        case 'x':
            split = 1;
            break;
        case 'c':
            comm = 1;
            break;
        case 'g':
            grid = 1;
            break;
        case 'F':
            f = strtod(optarg, &end);
            break;
        case 'B':
            b = strtod(optarg, &end);
            break;
        case 'W':
            w = strtod(optarg, &end);
            break;
        case 't':
            trace = optarg;
            break;
        case 'h':
            schedule_usage(stdout);
            return 0;
        default:
            fprintf(stderr, "brigade schedule: bad option '%s'\n", argv[optind - 1]);
            schedule_usage(stderr);
            return 2;
        }
        if (end && *end) {
            fprintf(stderr, "brigade schedule: '%s' is not a number\n", optarg);
            return 2;
        }
    }
    if (p < 1 || m < 1 || v < 0 || f < 0 || b < 0 || w < 0 || optind != argc) {
        schedule_usage(stderr);
        return 2;
    }
    const bg_sched_desc_t *sd = NULL;
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    bg_status_t st = bg_sched_lookup(kind_name, &sd);
    if (st == BG_OK)
        st = bg_sched_resolve_chunks(sd, v, &v);
    if (st == BG_OK)
        st = bg_sched_generate(sd->kind, p, m, v, split ? BG_SCHED_SPLIT_BW : 0, &s);
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        return 2;
    }
    int rc = 0;
    st = bg_sched_check(s, NULL);
    if (st == BG_OK)
        st = bg_sched_print(s, stdout, comm ? BG_PRINT_COMM : 0);
    bg_sim_costs_t costs = bg_sim_costs_uniform(f, b, w);
    if (st == BG_OK)
        st = bg_sim_run(s, &costs, &sim);
    if (st == BG_OK) {
        printf("%s, p=%d m=%d v=%d, F=%g B=%g W=%g: makespan %g, bubble %.1f%%, peak live:",
               bg_sched_name(s), p, m, v, f, b, w, bg_sim_makespan(sim), 100 * bg_sim_bubble(sim));
        for (int r = 0; r < p; r++)
            printf(" %d", bg_sim_peak_live(sim, r));
        printf("\n");
        if (grid)
            st = bg_sim_print_grid(sim, stdout, f < b ? (f > 0 ? f : 1) : (b > 0 ? b : 1));
    }
    if (st == BG_OK && trace) {
        FILE *tf = fopen(trace, "w");
        st = tf ? bg_sim_write_trace(sim, tf, 1000.0)
                : bg_errorf(BG_ERR_IO, "cannot write %s", trace);
        if (tf && fclose(tf) != 0 && st == BG_OK)
            st = bg_errorf(BG_ERR_IO, "writing %s failed", trace);
    }
    if (st != BG_OK) {
        fprintf(stderr, "brigade schedule: %s\n", bg_last_error());
        rc = 1;
    }
    bg_sim_free(sim);
    bg_sched_free(s);
    return rc;
}
