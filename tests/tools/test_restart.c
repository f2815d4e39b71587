/*
 * tests/tools/test_restart.c -- `brigade train --max-restarts` through the
 * real command, with faults from this driver:
 *   kill N:  a random rank SIGKILLed N times at random moments (seeded and
 *            printed) ends with parameters bit-identical to an
 *            uninterrupted run's;
 *   stop:    a SIGSTOPped rank is found unresponsive, the job restarts and
 *            finishes, again bit-identical;
 *   elastic: a 2 stages x 2 dp job that loses a replica for good
 *            (BRIGADE_TEST_FAIL_RANK) finishes as 2 x 1 with the same global
 *            batch, its loss curve going on from the checkpoint;
 *   hosts:   with --hosts, a host that stops answering ssh takes its
 *            slots away: the job re-plans the same way;
 *   exit:    BRIGADE_RETRY_EXIT gives a worker's retryable failure its code.
 * argv[1]: the brigade binary; argv[2]: the mode; argv[3]: kills (kill).
 * Must not be run with the others' working directories: it works in /tmp.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "engine/ckpt_same.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

/* Tiny and fast; constant lr so nothing depends on where a run started. */
#define COMMON                                                                                     \
    "--data synthetic:images --batch 16 --log-every 10 --eval-batches 1 --seed 5 "                 \
    "--min-lr-frac 1 --restart-backoff 0.05"

/* Children of `pid` (the launcher's ranks) into out; how many. */
static int children(pid_t pid, pid_t *out, int cap)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "pgrep -P %d", (int)pid);
    FILE *p = popen(cmd, "r");
    int n = 0;
    long v;
    while (p && n < cap && fscanf(p, "%ld", &v) == 1)
        out[n++] = (pid_t)v;
    if (p)
        pclose(p);
    return n;
}

/* The step of dir/latest, or -1 when there is none yet. */
static long latest_step(const char *dir)
{
    char path[512], buf[64] = {0};
    snprintf(path, sizeof(path), "%s/latest", dir);
    FILE *f = fopen(path, "r");
    long s = -1;
    if (f && fgets(buf, sizeof(buf), f))
        sscanf(buf, "step-%ld", &s);
    if (f)
        fclose(f);
    return s;
}

/* Start `brigade train MODEL COMMON <args>` in the background; stderr to log. */
static pid_t start(const char *args, const char *log, const char *env)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "exec env %s '%s' train %s/models/mlp-fashion.graph " COMMON " %s >%s.out 2>%s",
             env ? env : "", brigade, srcdir, args, log, log);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Whether the job has ended (left for finish() to reap). */
static int ended(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

static int finish(pid_t pid)
{
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Lines of `log` that start with `start` and contain `what`. */
static int count_lines(const char *log, const char *start, const char *what)
{
    FILE *f = fopen(log, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += !strncmp(line, start, strlen(start)) && strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return n;
}

/* Wait until the job runs `want` ranks that are not in old[0..nold); 0, or
 * -1 when the launcher ended first. Fills now[]. */
static int wait_new_ranks(pid_t job, const pid_t *old, int nold, pid_t *now, int want)
{
    for (double t0 = bg_now_s(); bg_now_s() - t0 < 60;) {
        int n = children(job, now, 16), fresh = n == want;
        for (int i = 0; i < n && fresh; i++)
            for (int j = 0; j < nold; j++)
                fresh &= now[i] != old[j];
        if (fresh)
            return 0;
        if (ended(job))
            return -1;
        usleep(2000);
    }
    return -1;
}

/*
 * SIGKILL a random rank `kills` times: the first during start-up, before
 * any checkpoint; the others at a random step target (past the last one,
 * well before the end) plus a random delay, so kills land in steps,
 * checkpoints and start-up alike. The final checkpoint must equal an
 * uninterrupted run's.
 */
static void test_kills(int kills, uint64_t seed)
{
    const char *layout = "--stages 2 --micro-batches 4 --checkpoint-every 4";
    int steps = 40 + 24 * kills;
    char ref[300], dir[300], log[300], args[1024];
    snprintf(ref, sizeof(ref), "%s/ref", wd);
    snprintf(dir, sizeof(dir), "%s/kill", wd);
    snprintf(log, sizeof(log), "%s/kill.log", wd);
    printf("kills %d, seed %llu, %d steps\n", kills, (unsigned long long)seed, steps);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " COMMON
                     " %s --steps %d --checkpoint-dir %s > %s/ref.log 2>&1",
                     brigade, srcdir, layout, steps, ref, wd) == 0);
    snprintf(args, sizeof(args), "%s --steps %d --checkpoint-dir %s --max-restarts %d", layout,
             steps, dir, kills);
    pid_t job = start(args, log, NULL), ranks[16], old[16];
    int nold = 0, done = 0;
    for (int k = 0; k < kills; k++) {
        if (wait_new_ranks(job, old, nold, ranks, 2) != 0)
            break;
        nold = 2;
        memcpy(old, ranks, sizeof(old));
        /* The first kill comes before any checkpoint: the restart starts afresh. */
        long target = k == 0 ? -1 : 24 * k + (long)(bg_test_next(&seed) % 16);
        while (latest_step(dir) < target && !ended(job))
            usleep(1000);
        useconds_t delay = (useconds_t)(bg_test_next(&seed) % 30000);
        int victim = (int)(bg_test_next(&seed) % 2);
        usleep(delay);
        printf("kill %d: rank pid %d (slot %d) after checkpoint step >= %ld + %u us\n", k + 1,
               (int)ranks[victim], victim, target, (unsigned)delay);
        fflush(stdout);
        CHECK(kill(ranks[victim], SIGKILL) == 0);
        done++;
    }
    CHECK_MSG(done == kills, "only %d of %d kills landed before the job ended", done, kills);
    CHECK_MSG(finish(job) == 0, "see %s", log);
    CHECK(count_lines(log, "brigade: rank", "died: killed by signal 9") == kills);
    CHECK(count_lines(log, "brigade: restart ", "time lost") >= kills);
    char out[320];
    snprintf(out, sizeof(out), "%s.out", log);
    CHECK(count_lines(out, "[r0] no checkpoint in", "starting from step 0") == 1);
    CHECK(bg_test_same_checkpoints(ref, dir));
}

/* A stopped rank stops heartbeating: unresponsive, killed, restarted. */
static void test_stop(void)
{
    char ref[300], dir[300], log[300], args[1024];
    snprintf(ref, sizeof(ref), "%s/ref-stop", wd);
    snprintf(dir, sizeof(dir), "%s/stop", wd);
    snprintf(log, sizeof(log), "%s/stop.log", wd);
    const char *layout = "--stages 2 --micro-batches 4 --checkpoint-every 4 --steps 60";
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " COMMON
                     " %s --checkpoint-dir %s > %s/ref-stop.log 2>&1",
                     brigade, srcdir, layout, ref, wd) == 0);
    snprintf(args, sizeof(args),
             "%s --checkpoint-dir %s --max-restarts 3 --heartbeat-timeout 1.5 --hang-timeout 0",
             layout, dir);
    pid_t job = start(args, log, NULL), ranks[16];
    CHECK(wait_new_ranks(job, NULL, 0, ranks, 2) == 0);
    while (latest_step(dir) < 8 && !ended(job))
        usleep(1000);
    CHECK(kill(ranks[1], SIGSTOP) == 0);
    double t0 = bg_now_s();
    CHECK_MSG(finish(job) == 0, "see %s", log);
    printf("stopped rank: job finished %.1f s later\n", bg_now_s() - t0);
    CHECK(count_lines(log, "brigade: rank", "is unresponsive") >= 1);
    CHECK(count_lines(log, "brigade: restart ", "resumed from step") >= 1);
    CHECK(bg_test_same_checkpoints(ref, dir));
}

/* The metrics lines of `path` as JSON objects, in order (caller frees). */
static cJSON *read_metrics(const char *path)
{
    cJSON *all = cJSON_CreateArray();
    FILE *f = fopen(path, "r");
    char line[8192];
    while (f && fgets(line, sizeof(line), f)) {
        cJSON *o = cJSON_Parse(line);
        if (o)
            cJSON_AddItemToArray(all, o);
    }
    if (f)
        fclose(f);
    return all;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/*
 * 2 x 2 loses rank 3 for good after a kill: it re-plans to 2 x 1 with 8
 * micro-batches (same global batch 16) and resumes from the checkpoint; the
 * resumed run's first loss point follows that checkpoint's step and equals
 * an uninterrupted 2 x 2 run's there (to summation order).
 */
static void test_elastic(void)
{
    char dir[300], log[300], metrics[300], args[1024];
    snprintf(dir, sizeof(dir), "%s/elastic", wd);
    snprintf(log, sizeof(log), "%s/elastic.log", wd);
    snprintf(metrics, sizeof(metrics), "%s/elastic.jsonl", wd);
    snprintf(args, sizeof(args),
             "--stages 2 --dp 2 --micro-batches 4 --steps 60 --checkpoint-every 10 "
             "--checkpoint-dir %s --max-restarts 3 --elastic --metrics %s",
             dir, metrics);
    pid_t job = start(args, log, "BRIGADE_TEST_FAIL_RANK=3@1"), ranks[16];
    CHECK(wait_new_ranks(job, NULL, 0, ranks, 4) == 0);
    while (latest_step(dir) < 20 && !ended(job))
        usleep(1000);
    CHECK(kill(ranks[1], SIGKILL) == 0);
    CHECK_MSG(finish(job) == 0, "see %s", log);
    CHECK(count_lines(log, "brigade: elastic", "rank 3 failed again before a step") == 1);
    CHECK(count_lines(log, "brigade: elastic", "-> 2 stages x 1 dp, 8 micro-batches") == 1);
    cJSON *m = read_metrics(metrics), *o, *rec = NULL, *hdr = NULL, *after = NULL;
    cJSON_ArrayForEach(o, m)
    {
        const cJSON *ev = cJSON_GetObjectItem(o, "event");
        if (cJSON_IsString(ev) && !strcmp(ev->valuestring, "restart"))
            rec = o;
        else if (cJSON_GetObjectItem(o, "resume_step") && num(o, "dp") == 1)
            hdr = o, after = NULL;
        else if (hdr && !after && cJSON_GetObjectItem(o, "loss"))
            after = o;
    }
    CHECK(rec && num(rec, "dp") == 1 && num(rec, "stages") == 2 && num(rec, "micro_batches") == 8 &&
          num(rec, "lost_s") > 0);
    CHECK(rec && cJSON_GetObjectItem(rec, "replanned_from") != NULL);
    CHECK(hdr && num(hdr, "batch") == 16 && num(hdr, "micro_batches") == 8);
    /* The curve goes on from the checkpoint: the first point after it is its next log point. */
    double from = hdr ? num(hdr, "resume_step") : -1;
    CHECK(from >= 20 && rec && num(rec, "resumed_from") == from);
    CHECK(after && num(after, "step") == from + 10 && num(after, "loss") >= 0);
    CHECK(latest_step(dir) == 60);
    CHECK(bg_test_sh("'%s' plot %s --json > /dev/null", brigade, metrics) == 0);
    /* The curve itself: an uninterrupted 2 x 2 run's loss at that point is
     * the same up to summation order (same global batch and micro-batch). */
    char ref[300];
    snprintf(ref, sizeof(ref), "%s/ref-elastic", wd);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " COMMON
                     " --stages 2 --dp 2 --micro-batches 4 --steps 60 --metrics %s.jsonl "
                     "> %s.log 2>&1",
                     brigade, srcdir, ref, ref) == 0);
    strcat(ref, ".jsonl");
    cJSON *r = read_metrics(ref);
    double want = -1, got = after ? num(after, "loss") : -2;
    cJSON_ArrayForEach(o, r)
    {
        if (cJSON_GetObjectItem(o, "loss") && num(o, "step") == from + 10)
            want = num(o, "loss");
    }
    printf("elastic: loss at step %.0f: %.6f resumed as 2 x 1, %.6f uninterrupted 2 x 2\n",
           from + 10, got, want);
    CHECK(want >= 0 && fabs(got - want) <= 1e-4 + 1e-3 * want);
    cJSON_Delete(r);
    cJSON_Delete(m);
}

/*
 * --hosts 127.0.0.1:2,localhost:2 through an `ssh` stand-in (first on
 * PATH) that runs the command here, until `down` exists: then host
 * localhost no longer answers. A 2 x 2 job whose replica on localhost is
 * killed after the host went down re-plans to 2 x 1 on 127.0.0.1.
 */
static void test_hosts(void)
{
    char bin[300], dir[300], log[300], down[300], args[1024], env[1024];
    snprintf(bin, sizeof(bin), "%s/bin", wd);
    snprintf(dir, sizeof(dir), "%s/hosts", wd);
    snprintf(log, sizeof(log), "%s/hosts.log", wd);
    snprintf(down, sizeof(down), "%s/down", wd);
    CHECK(bg_test_sh("mkdir -p %s && printf '%%s\\n' '#!/bin/sh' "
                     "'for a; do host=$last; last=$a; done' "
                     "'[ \"$host\" = localhost ] && [ -e %s ] && exit 255' "
                     "'exec sh -c \"$last\"' > %s/ssh && chmod 700 %s/ssh",
                     bin, down, bin, bin) == 0);
    snprintf(env, sizeof(env), "PATH=%s:%s", bin,
             getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    snprintf(args, sizeof(args),
             "--stages 2 --dp 2 --micro-batches 4 --steps 60 --checkpoint-every 10 "
             "--checkpoint-dir %s --max-restarts 2 --elastic --hosts 127.0.0.1:2,localhost:2",
             dir);
    pid_t job = start(args, log, env), ranks[16];
    CHECK(wait_new_ranks(job, NULL, 0, ranks, 4) == 0);
    while (latest_step(dir) < 20 && !ended(job))
        usleep(1000);
    CHECK(bg_test_sh("touch %s", down) == 0);
    CHECK(kill(ranks[3], SIGKILL) == 0); /* rank 3's ssh: stage 1, dp 1, on localhost */
    CHECK_MSG(finish(job) == 0, "see %s", log);
    CHECK(count_lines(log, "brigade: host localhost", "does not answer ssh") == 1);
    CHECK(count_lines(log, "brigade: elastic", "-> 2 stages x 1 dp, 8 micro-batches") == 1);
    CHECK(latest_step(dir) == 60);
}

/*
 * A worker under a scheduler (rank variables, no launcher) whose store
 * never comes: a retryable failure, so BRIGADE_RETRY_EXIT=75 makes it exit
 * 75; without the variable it exits 1 as always.
 */
static void test_exit_code(void)
{
    const char *env = "BRIGADE_JOB_SECRET=0123456789abcdef0123 BRIGADE_RANK=1 "
                      "BRIGADE_WORLD_SIZE=2 BRIGADE_MASTER_ADDR=127.0.0.1 BRIGADE_MASTER_PORT=1 "
                      "BRIGADE_TP_TIMEOUT=1";
    for (int with = 0; with < 2; with++) {
        int rc = bg_test_sh("env %s %s '%s' train %s/models/mlp-fashion.graph --stages 2 --steps 1 "
                            "--data synthetic:images > %s/exit.log 2>&1",
                            env, with ? "BRIGADE_RETRY_EXIT=75" : "", brigade, srcdir, wd);
        CHECK_MSG(rc == (with ? 75 : 1), "exit %d with%s BRIGADE_RETRY_EXIT", rc,
                  with ? "" : "out");
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s BRIGADE kill N [SEED] | stop | elastic | hosts | exit\n",
                argv[0]);
        return 2;
    }
    brigade = argv[1];
    srcdir = getenv("BRIGADE_SOURCE_DIR");
    if (!srcdir)
        srcdir = ".";
    snprintf(wd, sizeof(wd), "/tmp/bg_restart_%d", (int)getpid());
    CHECK(bg_test_sh("rm -rf %s && mkdir -p %s", wd, wd) == 0);
    if (!strcmp(argv[2], "kill")) {
        uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : (uint64_t)time(NULL);
        test_kills(argc > 3 ? atoi(argv[3]) : 5, seed);
    } else if (!strcmp(argv[2], "stop")) {
        test_stop();
    } else if (!strcmp(argv[2], "elastic")) {
        test_elastic();
    } else if (!strcmp(argv[2], "hosts")) {
        test_hosts();
    } else if (!strcmp(argv[2], "exit")) {
        test_exit_code();
    }
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_restart");
}
