/*
 * bench/ckpt/bench_ckpt.c -- training time lost per checkpoint: one rank
 * (in this process) trains a model for N steps three ways -- without
 * checkpoints, with --async-checkpoint off and with it on, a checkpoint
 * every K steps -- and the time over the plain run, divided by the
 * checkpoints written, is what each checkpoint cost training; so is, more
 * directly, the time the run reports its checkpoints held training (the
 * save, the per-step polls, the final wait -- not the background write,
 * whose only cost to training is the CPU it takes). The final save is
 * waited for in both modes (a run is not done before its last checkpoint
 * is), so it counts. Runs are interleaved (plain, sync, async, rotated each
 * repeat) so machine load hits all alike; prints median and min. Must not
 * pass or fail on time: it reports.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "engine/train.h"

enum { PLAIN, SYNC, ASYNC, NMODES };
static const char *const mode_name[NMODES] = {"none", "sync", "async"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The run's "checkpoints held training X s" (its final line), from the
 * file its standard output went to; 0 when absent (no checkpoints). */
static double held_from(const char *out)
{
    FILE *f = fopen(out, "r");
    char line[512];
    double held = 0;
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "checkpoints held training ");
        if (p)
            held = strtod(p + strlen("checkpoints held training "), NULL);
    }
    if (f)
        fclose(f);
    return held;
}

/* Seconds bg_train_run takes for `mode` (and in *held, what it reports
 * checkpoints held training), its output sent to `out`; negative on
 * failure (the message printed). */
static double run_once(bg_train_conf_t *c, int mode, const char *dir, const char *out,
                       double *held)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return -1;
    c->checkpoint_dir = mode == PLAIN ? NULL : dir;
    c->async_checkpoint = mode == ASYNC;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved < 0 || fd < 0)
        return -1;
    dup2(fd, STDOUT_FILENO);
    double t0 = bg_now_s();
    bg_status_t st = bg_train_run(c);
    double dt = bg_now_s() - t0;
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(fd);
    if (st != BG_OK) {
        fprintf(stderr, "bench_ckpt: %s run failed: %s\n", mode_name[mode], bg_last_error());
        return -1;
    }
    *held = held_from(out);
    return dt;
}

/* Median and min of x[n] (sorted here), in ms. */
static void report(const char *what, double *x, int n)
{
    qsort(x, (size_t)n, sizeof(*x), cmp_double);
    printf("  %-46s median %7.2f ms  min %7.2f ms\n", what, 1e3 * x[n / 2], 1e3 * x[0]);
}

/* The one-rank run's settings: gpt-tiny-sized defaults, progress silent. */
static void bench_conf(bg_train_conf_t *c, const char *model, int64_t steps, int64_t every)
{
    bg_train_conf_default(c);
    c->model = model;
    c->data = "synthetic:tokens";
    c->batch = 8;
    c->micro_batches = 1;
    c->steps = steps;
    c->checkpoint_every = every;
    c->log_every = steps;
    c->eval_batches = 1;
}

/* One rank in this process: no launcher's variables may leak in. */
static void single_rank_env(void)
{
    static const char *const vars[] = {"BRIGADE_WORKER", "BRIGADE_RANK", "RANK", "SLURM_PROCID",
                                       "OMPI_COMM_WORLD_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("BRIGADE_NO_BIND", "1", 1);
}

int main(int argc, char **argv)
{
    int64_t steps = argc > 1 ? atoll(argv[1]) : 100, every = argc > 2 ? atoll(argv[2]) : 10;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    const char *model = argc > 4 ? argv[4] : BG_SOURCE_DIR "/models/gpt-tiny.graph";
    if (steps < 1 || every < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: bench_ckpt [steps >= 1] [every >= 1] [repeats 1..1000] [model]\n");
        return 2;
    }
    single_rank_env();
    char dir[256], out[300];
    snprintf(dir, sizeof(dir), "%s/bg_bench_ckpt_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    snprintf(out, sizeof(out), "%s.out", dir);
    bg_train_conf_t c;
    bench_conf(&c, model, steps, every);
    int nckpt = (int)(steps / every) + (steps % every != 0); /* every K steps, and the last */
    /* Per repeat and mode: wall time over the plain run, and held time,
     * both per checkpoint. */
    double *wall = calloc((size_t)reps * 2, sizeof(double));
    double *held = calloc((size_t)reps * 2, sizeof(double));
    double h, t[NMODES];
    if (!wall || !held || run_once(&c, PLAIN, dir, out, &h) < 0) /* warm-up */
        return 1;
    for (int r = 0; r < reps; r++) {
        double hm[NMODES] = {0};
        for (int k = 0; k < NMODES; k++) {
            int m = (k + r) % NMODES; /* rotate the order */
            if ((t[m] = run_once(&c, m, dir, out, &hm[m])) < 0)
                return 1;
        }
        for (int m = SYNC; m <= ASYNC; m++) {
            wall[(m - SYNC) * reps + r] = (t[m] - t[PLAIN]) / nckpt;
            held[(m - SYNC) * reps + r] = hm[m] / nckpt;
        }
        printf("repeat %d: none %.3f s | sync %.3f s (held %.3f s) | async %.3f s (held %.3f s)\n",
               r + 1, t[PLAIN], t[SYNC], hm[SYNC], t[ASYNC], hm[ASYNC]);
    }
    printf("%s, %lld steps, a checkpoint every %lld steps (%d a run), %d repeats, per checkpoint:\n",
           model, (long long)steps, (long long)every, nckpt, reps);
    report("sync:  run time over no checkpoints", wall, reps);
    report("async: run time over no checkpoints", wall + reps, reps);
    report("sync:  training held (save, polls, last wait)", held, reps);
    report("async: training held (save, polls, last wait)", held + reps, reps);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, out);
    int rc = system(cmd);
    free(wall), free(held);
    return rc != 0;
}
