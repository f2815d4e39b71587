/*
 * bench/schedule/bench_step_time.c -- measured step time of schedules side
 * by side: `brigade train` runs each schedule in turn, repeats interleaved
 * (1f1b, 2bw, 1f1b, 2bw, ...) so a machine's drift hits both alike, and
 * prints per schedule the median and the minimum of the logged step times
 * (each log line the mean over --log-every steps; the first line of every
 * run, the warm-up, is dropped), with the ratio of medians to the first
 * schedule.
 * usage: bench_step_time BRIGADE [MODEL DATA] [--stages P] [--micro-batches M]
 *        [--batch N] [--steps N] [--repeats R] [--schedules A,B,...]
 * Must not judge: it prints numbers; CI never runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXS 8
#define MAXV 4096

typedef struct {
    const char *brigade, *model, *data, *schedules;
    int stages, m, batch, steps, repeats;
} conf_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One run of `sched`; appends its logged step times (ms) past the first
 * line to v. Returns 0, or -1 when the run failed. */
static int run_once(const conf_t *c, const char *sched, double *v, int *n)
{
    char metrics[64], cmd[2048], line[4096];
    snprintf(metrics, sizeof(metrics), "/tmp/bench_step_time_%d.jsonl", (int)getpid());
    remove(metrics);
    snprintf(cmd, sizeof(cmd),
             "'%s' train '%s' --data %s --stages %d --micro-batches %d --batch %d --steps %d "
             "--log-every 10 --eval-batches 1 --schedule %s --metrics %s > /dev/null 2>&1",
             c->brigade, c->model, c->data, c->stages, c->m, c->batch, c->steps, sched, metrics);
    if (system(cmd) != 0) {
        fprintf(stderr, "run failed: %s\n", cmd);
        return -1;
    }
    FILE *f = fopen(metrics, "r");
    int seen = 0;
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"step_ms\":");
        if (!p || !strstr(line, "\"step\":")) continue;
        if (seen++ > 0 && *n < MAXV) v[(*n)++] = atof(p + 10);
    }
    if (f) fclose(f);
    remove(metrics);
    return 0;
}

static int parse(int argc, char **argv, conf_t *c)
{
    *c = (conf_t){argc > 1 ? argv[1] : NULL, "models/gpt-tiny.graph", "synthetic:tokens",
                  "1f1b,2bw", 2, 8, 64, 60, 5};
    int pos = 0;
    for (int i = 2; i < argc; i++) {
        int more = i + 1 < argc;
        if (!strcmp(argv[i], "--stages") && more) c->stages = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--micro-batches") && more) c->m = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && more) c->batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && more) c->steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && more) c->repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--schedules") && more) c->schedules = argv[++i];
        else if (argv[i][0] != '-' && pos < 2) *(pos++ == 0 ? &c->model : &c->data) = argv[i];
        else return -1;
    }
    return c->brigade && c->repeats > 0 && c->steps > 10 ? 0 : -1;
}

int main(int argc, char **argv)
{
    conf_t c;
    if (parse(argc, argv, &c)) {
        fprintf(stderr, "usage: bench_step_time BRIGADE [MODEL DATA] [--stages P] "
                        "[--micro-batches M] [--batch N] [--steps N] [--repeats R] "
                        "[--schedules A,B,...]\n");
        return 2;
    }
    char names[256], *name[MAXS];
    int ns = 0;
    snprintf(names, sizeof(names), "%s", c.schedules);
    for (char *t = strtok(names, ","); t && ns < MAXS; t = strtok(NULL, ",")) name[ns++] = t;
    static double v[MAXS][MAXV];
    int n[MAXS] = {0};
    for (int r = 0; r < c.repeats; r++)
        for (int s = 0; s < ns; s++)
            if (run_once(&c, name[s], v[s], &n[s])) return 1;
    printf("%s, %s: %d stages, %d micro-batches, batch %d, %d steps x %d repeats (interleaved)\n",
           c.model, c.data, c.stages, c.m, c.batch, c.steps, c.repeats);
    printf("%-10s %8s %10s %10s %8s\n", "schedule", "samples", "median ms", "min ms", "vs first");
    double first = 0;
    for (int s = 0; s < ns; s++) {
        if (!n[s]) continue;
        qsort(v[s], (size_t)n[s], sizeof(double), cmp_double);
        double med = n[s] % 2 ? v[s][n[s] / 2] : (v[s][n[s] / 2 - 1] + v[s][n[s] / 2]) / 2;
        if (s == 0) first = med;
        printf("%-10s %8d %10.3f %10.3f %8.3f\n", name[s], n[s], med, v[s][0],
               first > 0 ? med / first : 0);
    }
    return 0;
}
