/*
 * bench/ckpt/bench_ckpt.c -- training time lost per checkpoint: one rank
 * (in this process) trains a model for N steps three ways -- without
 * checkpoints, with --async-checkpoint off and with it on, a checkpoint
 * every K steps -- and the time over the plain run, divided by the
 * checkpoints written, is what each checkpoint cost training. The final
 * save is waited for in both modes (a run is not done before its last
 * checkpoint is), so it counts. Runs are interleaved (plain, sync, async,
 * rotated each repeat) so machine load hits all alike; prints median and
 * min. Must not pass or fail on time: it reports.
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

/* Seconds bg_train_run takes for `mode`, its progress lines silenced;
 * negative on failure (the message printed). */
static double run_once(bg_train_conf_t *c, int mode, const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return -1;
    c->checkpoint_dir = mode == PLAIN ? NULL : dir;
    c->async_checkpoint = mode == ASYNC;
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    double t0 = bg_now_s();
    bg_status_t st = bg_train_run(c);
    double dt = bg_now_s() - t0;
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(null);
    if (st != BG_OK) {
        fprintf(stderr, "bench_ckpt: %s run failed: %s\n", mode_name[mode], bg_last_error());
        return -1;
    }
    return dt;
}

static void report(const char *what, double *x, int n, int nckpt)
{
    qsort(x, (size_t)n, sizeof(*x), cmp_double);
    printf("  %-6s lost per checkpoint: median %7.2f ms  min %7.2f ms  (%d checkpoints a run)\n",
           what, 1e3 * x[n / 2], 1e3 * x[0], nckpt);
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
    /* One rank in this process: no launcher's variables may leak in. */
    static const char *const vars[] = {"BRIGADE_WORKER", "BRIGADE_RANK", "RANK", "SLURM_PROCID",
                                       "OMPI_COMM_WORLD_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("BRIGADE_NO_BIND", "1", 1);
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/bg_bench_ckpt_%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    bg_train_conf_t c;
    bg_train_conf_default(&c);
    c.model = model;
    c.data = "synthetic:tokens";
    c.batch = 8;
    c.micro_batches = 1;
    c.steps = steps;
    c.checkpoint_every = every;
    c.log_every = steps;
    c.eval_batches = 1;
    int nckpt = (int)((steps - 1) / every) + 1; /* every K steps, and the last */
    double *t = calloc((size_t)reps * NMODES, sizeof(double));
    double *lost[2] = {calloc((size_t)reps, sizeof(double)), calloc((size_t)reps, sizeof(double))};
    if (!t || !lost[0] || !lost[1])
        return 1;
    if (run_once(&c, PLAIN, dir) < 0) /* warm-up: page cache, allocator */
        return 1;
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < NMODES; k++) {
            int m = (k + r) % NMODES;
            if ((t[r * NMODES + m] = run_once(&c, m, dir)) < 0)
                return 1;
        }
        for (int m = SYNC; m <= ASYNC; m++)
            lost[m - SYNC][r] = (t[r * NMODES + m] - t[r * NMODES + PLAIN]) / nckpt;
        printf("repeat %d: none %.3f s  sync %.3f s  async %.3f s\n", r + 1, t[r * NMODES + PLAIN],
               t[r * NMODES + SYNC], t[r * NMODES + ASYNC]);
    }
    printf("%s, %lld steps, a checkpoint every %lld steps, %d repeats:\n", model,
           (long long)steps, (long long)every, reps);
    report("sync", lost[0], reps, nckpt);
    report("async", lost[1], reps, nckpt);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    int rc = system(cmd);
    free(t), free(lost[0]), free(lost[1]);
    return rc != 0;
}
