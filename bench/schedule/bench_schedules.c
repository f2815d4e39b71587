/*
 * bench/schedule/bench_schedules.c -- every generator simulated with equal
 * costs: makespan, bubble next to its closed form, peak activations per rank,
 * and (with --grid) the rank/time diagrams used in docs/schedules.md.
 *
 * usage: bench_schedules [p m v] [--grid] [--trace DIR]
 * Pure simulation: must NOT time anything (the executor's bench measures).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/schedule.h"
#include "engine/sim.h"

/* The table's closed-form bubble for equal costs F = B = W = 1 per rank. */
static double theory(bg_sched_kind_t k, int p, int m, int v)
{
    bg_sched_cost_t rank = {1, 1, 1, 0, 3};
    return bg_sched_bubble(bg_sched_desc(k), p, m, v, &rank);
}

int main(int argc, char **argv)
{
    int p = 4, m = 8, v = 2, grid = 0, pos = 0;
    const char *trace_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--grid"))
            grid = 1;
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc)
            trace_dir = argv[++i];
        else if (pos < 3)
            *(pos == 0 ? &p : pos == 1 ? &m : &v) = atoi(argv[i]), pos++;
        else {
            fprintf(stderr, "usage: bench_schedules [p m v] [--grid] [--trace DIR]\n");
            return 2;
        }
    }
    printf("p=%d m=%d (v=%d where allowed), F=B=W=1 per stage (BW=2), no comm cost\n", p, m, v);
    printf("%-12s %9s %8s %8s  %s\n", "schedule", "makespan", "bubble", "theory",
           "peak live per rank (stash)");
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        /* v where the schedule allows it, else its default (1). */
        int vk;
        if (bg_sched_resolve_chunks(bg_sched_desc((bg_sched_kind_t)k), v, &vk) != BG_OK)
            bg_sched_resolve_chunks(bg_sched_desc((bg_sched_kind_t)k), 0, &vk);
        bg_sched_t *s = NULL;
        bg_sim_t *sim = NULL;
        /* Per-chunk costs are 1/v so a rank's work is the same for every v. */
        bg_sim_costs_t c = bg_sim_costs_uniform(1.0 / vk, 1.0 / vk, 1.0 / vk);
        if (bg_sched_generate((bg_sched_kind_t)k, p, m, vk, 0, &s) ||
            bg_sim_run(s, &c, &sim)) {
            printf("%-12s error: %s\n", bg_sched_kind_name(k), bg_last_error());
            bg_sched_free(s);
            continue;
        }
        printf("%-12s %9.2f %8.4f %8.4f ", bg_sched_kind_name(k), bg_sim_makespan(sim),
               bg_sim_bubble(sim), theory((bg_sched_kind_t)k, p, m, vk));
        for (int r = 0; r < p; r++)
            printf(" %d(%d)", bg_sim_peak_live(sim, r), bg_sim_peak_stash(sim, r));
        printf("\n");
        if (grid) {
            bg_sim_print_grid(sim, stdout, 1.0 / vk);
            printf("\n");
        }
        if (trace_dir) {
            char path[512];
            snprintf(path, sizeof(path), "%s/%s.json", trace_dir, bg_sched_kind_name(k));
            FILE *f = fopen(path, "w");
            if (!f || bg_sim_write_trace(sim, f, 1000.0))
                fprintf(stderr, "cannot write %s\n", path);
            if (f) fclose(f);
        }
        bg_sim_free(sim);
        bg_sched_free(s);
    }
    return 0;
}
