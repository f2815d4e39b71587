/*
 * tests/engine/test_zero.c -- ZeRO-1 end to end through `brigade train`:
 * --zero 1 ends bit-identical to --zero 0 in the same layout (every
 * schedule of the table at S = 1, 2 and D = 2, 3 on mlp-fashion; the tied
 * weights of gpt-tiny across stages, with clipping and bf16), and
 * checkpoints move between the two modes and across D: a resume under
 * either mode from either mode's checkpoint gives the bits of the run that
 * never stopped (same layout) or of the other mode's resume (new D).
 * A --zero 1 save writes one file per stage and replica, each about 1/D of
 * the stage's state, and neither it nor a resume stages more than a shard
 * on the host (the checkpoint code logs its host copy at debug level: every
 * copy must stay within 1/D of the --zero 0 stage file), with background
 * writes on and off (the same bytes).
 * Must NOT compare across D bit for bit: the layout contract gives D
 * repeatability, not equality (test_layout_equiv checks the tolerance).
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_same.h"
#include "partition/schedules.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

/* Constant learning rate (min-lr-frac 1) so a resumed run matches one that
 * never stopped. */
#define COMMON "--log-every 100 --eval-batches 1 --seed 5 --min-lr-frac 1"

/* Train `model` into wd/TAG (a fresh directory unless `resume`); 1 on
 * success, and only when the banner says ZeRO-1 exactly when it is on. */
static int train(const char *tag, const char *model, const char *data, int zero, int dp,
                 const char *extra, bool resume)
{
    if (!resume)
        bg_test_sh("rm -rf %s/%s", wd, tag);
    int rc = bg_test_sh("'%s' train %s/models/%s --data %s " COMMON
                        " --dp %d --zero %d %s %s --checkpoint-dir %s/%s > %s/%s.log 2>&1",
                        brigade, srcdir, model, data, dp, zero, extra, resume ? "--resume" : "",
                        wd, tag, wd, tag);
    if (rc != 0) {
        fprintf(stderr, "train %s (%s --dp %d --zero %d) failed with %d:\n", tag, extra, dp, zero,
                rc);
        bg_test_sh("tail -5 %s/%s.log >&2", wd, tag);
        return 0;
    }
    bool on = zero && dp > 1;
    if (bg_test_sh("grep -q 'dp (ZeRO-1)' %s/%s.log", wd, tag) != (on ? 0 : 1)) {
        fprintf(stderr, "%s: the banner does not say ZeRO-1 is %s\n", tag, on ? "on" : "off");
        return 0;
    }
    return 1;
}

static void dir_of(const char *tag, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", wd, tag);
}

/* --zero 1 against --zero 0 in one layout: the same bits. */
static void check_same(const char *model, const char *data, int dp, const char *layout)
{
    char a[300], b[300];
    dir_of("z0", a, sizeof(a));
    dir_of("z1", b, sizeof(b));
    int ok = train("z0", model, data, 0, dp, layout, false) &&
             train("z1", model, data, 1, dp, layout, false);
    CHECK_MSG(ok && bg_test_same_checkpoints(a, b), "%s %s --dp %d: --zero 1 differs from --zero 0",
              model, layout, dp);
}

/* Every schedule of the table at S = 1, 2 and D = 2, 3: two steps of
 * mlp-fashion (the second forward reads the all-gathered weights), clipped
 * (the norm, whose parameters straddling shard boundaries travel to their
 * norm owner, decides every update). */
static void check_schedules(void)
{
    int n = 0;
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        for (int S = 1; d && S <= 2; S++) {
            int m = bg_sched_round_m(d, S, 2);
            CHECK_MSG(m > 0, "%s: no micro-batch count for %d stages", d->name, S);
            for (int D = 2; m > 0 && D <= 3; D++) {
                char layout[160];
                snprintf(layout, sizeof(layout),
                         "--stages %d --schedule %s --micro-batches %d --batch %d --steps 2 "
                         "--clip 0.05",
                         S,
                         d->name, m, 2 * m * D);
                check_same("mlp-fashion.graph", "synthetic:images", D, layout);
                n++;
            }
        }
    }
    printf("zero 1 = zero 0: %d layouts of mlp-fashion checked\n", n);
}

/* A weight tied across stages (GPT's embedding and head), with clipping
 * (the global norm) and a bf16 compute copy (a 2-byte all-gather). */
static void check_tied(void)
{
    check_same("gpt-tiny.graph", "synthetic:tokens", 2,
               "--stages 2 --micro-batches 2 --batch 8 --steps 2 --clip 0.05");
    check_same("gpt-tiny.graph", "synthetic:tokens", 3,
               "--stages 2 --micro-batches 2 --batch 12 --steps 2 --dtype bf16 --optimizer sgd "
               "--clip 0.05");
    printf("zero 1 = zero 0: tied weights, clipping, bf16 checked\n");
}

#define RLAYOUT "--stages 2 --micro-batches 2 --batch 12"

/* Same layout: 2 steps under one mode, resumed to 4 under the other,
 * equals 4 steps that never stopped. */
static void check_resume_mode(int first, int then)
{
    char full[300], half[300];
    dir_of("full", full, sizeof(full));
    dir_of("half", half, sizeof(half));
    int ok = train("full", "mlp-fashion.graph", "synthetic:images", then, 2,
                   RLAYOUT " --steps 4", false) &&
             train("half", "mlp-fashion.graph", "synthetic:images", first, 2,
                   RLAYOUT " --steps 2", false) &&
             train("half", "mlp-fashion.graph", "synthetic:images", then, 2,
                   RLAYOUT " --steps 4", true);
    CHECK(ok && bg_test_sh("grep -q 'resumed from .*step 2' %s.log", half) == 0);
    CHECK_MSG(ok && bg_test_same_checkpoints(full, half),
              "written under --zero %d, resumed under --zero %d: not the bits of one run", first,
              then);
}

/* Another D: one checkpoint (written under `zero` at D = 3) resumed at
 * D = 2 under --zero 0 and under --zero 1: the same bits. */
static void check_resume_dp(int zero)
{
    char a[300], b[300];
    dir_of("ra", a, sizeof(a));
    dir_of("rb", b, sizeof(b));
    int ok = train("ra", "mlp-fashion.graph", "synthetic:images", zero, 3, RLAYOUT " --steps 2",
                   false);
    ok = ok && bg_test_sh("rm -rf %s && cp -r %s %s", b, a, b) == 0;
    ok = ok && train("ra", "mlp-fashion.graph", "synthetic:images", 0, 2, RLAYOUT " --steps 4",
                     true) &&
         train("rb", "mlp-fashion.graph", "synthetic:images", 1, 2, RLAYOUT " --steps 4", true);
    CHECK_MSG(ok && bg_test_same_checkpoints(a, b),
              "a D = 3 checkpoint (--zero %d) resumed at D = 2: --zero 1 differs from --zero 0",
              zero);
}

static long long file_bytes(const char *fmt, const char *d, int s, int k)
{
    char p[400];
    struct stat sb;
    snprintf(p, sizeof(p), fmt, d, s, k);
    return stat(p, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* In the run logged as TAG (BRIGADE_LOG=debug), every checkpoint host copy
 * (save or resume) of a stage s rank at most a third of whole[s] (the
 * --zero 0 stage file: masters and state) plus a header's slack, and at
 * least one logged per stage. */
static int no_gather(const char *tag, const long long whole[2])
{
    int ok = 1;
    for (int s = 0; s < 2; s++) {
        long long limit = whole[s] / 3 + 8192;
        int r = bg_test_sh("awk '/ stage %d: / && match($0, /host copy of [0-9]+ bytes/) {"
                           " n = substr($0, RSTART + 13, RLENGTH - 19) + 0; seen = 1;"
                           " if (n > %lld) { print \"too large: \" $0; bad = 1 } }"
                           " END { exit !seen || bad }' %s/%s.log",
                           s, limit, wd, tag);
        CHECK_MSG(r == 0, "%s: stage %d staged more than a shard (%lld bytes) or logged none",
                  tag, s, limit);
        ok = ok && r == 0;
    }
    return ok;
}

/* A D = 3 --zero 1 save (async `mode`): stage x replica files, each at
 * most about a third of the --zero 0 stage file, no gather on save or on
 * resume at D = 3, the same bytes with background writes on and off; then
 * the sharded checkpoint resumed at D = 1 gives the bits of the --zero 0
 * checkpoint resumed at D = 1. */
static void check_shard_files(void)
{
    char a[300], b[300], c[300];
    dir_of("sa", a, sizeof(a));
    dir_of("sb", b, sizeof(b));
    dir_of("sc", c, sizeof(c));
    int ok = train("sb", "mlp-fashion.graph", "synthetic:images", 0, 3, RLAYOUT " --steps 2",
                   false);
    long long whole[2];
    for (int s = 0; s < 2; s++)
        whole[s] = file_bytes("%s/step-000002/stage-%d.safetensors", b, s, 0);
    setenv("BRIGADE_LOG", "debug", 1);
    ok = ok &&
         train("sa", "mlp-fashion.graph", "synthetic:images", 1, 3,
               RLAYOUT " --steps 2 --async-checkpoint on", false) &&
         train("sc", "mlp-fashion.graph", "synthetic:images", 1, 3,
               RLAYOUT " --steps 2 --async-checkpoint off", false) &&
         no_gather("sa", whole) && no_gather("sc", whole);
    unsetenv("BRIGADE_LOG");
    for (int s = 0; ok && s < 2; s++) {
        CHECK_MSG(file_bytes("%s/step-000002/stage-%d.safetensors", a, s, 0) < 0,
                  "stage %d: a whole stage file under --zero 1", s);
        for (int k = 0; k < 3; k++) {
            const char *f = "%s/step-000002/stage-%d.dp-%d.safetensors";
            long long n = file_bytes(f, a, s, k);
            printf("stage %d replica %d: %lld bytes (the --zero 0 stage file: %lld)\n", s, k, n,
                   whole[s]);
            CHECK_MSG(n > 0 && 3 * n < whole[s] + whole[s] / 50 + 3 * 8192,
                      "stage %d replica %d: %lld bytes, not about a third of %lld", s, k, n,
                      whole[s]);
            CHECK_MSG(bg_test_sh("cmp -s %s/step-000002/stage-%d.dp-%d.safetensors "
                                 "%s/step-000002/stage-%d.dp-%d.safetensors",
                                 a, s, k, c, s, k) == 0,
                      "stage %d replica %d: background and inline writes differ", s, k);
        }
    }
    CHECK_MSG(ok && bg_test_same_checkpoints(a, b), "--zero 1 (sharded) differs from --zero 0");
    /* resume at D = 3 (async off): ranges only, no gather */
    setenv("BRIGADE_LOG", "debug", 1);
    ok = ok && train("sc", "mlp-fashion.graph", "synthetic:images", 1, 3,
                     RLAYOUT " --steps 3 --async-checkpoint off", true) &&
         no_gather("sc", whole);
    unsetenv("BRIGADE_LOG");
    /* at D = 1: the sharded and the whole checkpoint resume to the same bits */
    ok = ok && train("sa", "mlp-fashion.graph", "synthetic:images", 0, 1,
                     RLAYOUT " --steps 4", true) &&
         train("sb", "mlp-fashion.graph", "synthetic:images", 1, 1, RLAYOUT " --steps 4", true);
    CHECK_MSG(ok && bg_test_same_checkpoints(a, b),
              "a D = 3 sharded checkpoint resumed at D = 1 differs from the unsharded one");
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "zero", &brigade, &srcdir, wd, sizeof(wd)))
        return 1;
    check_tied();
    check_resume_mode(1, 0);
    check_resume_mode(0, 1);
    check_resume_dp(1);
    check_resume_dp(0);
    check_shard_files();
    printf("resume across --zero and --dp: checked\n");
    check_schedules();
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_zero");
}
