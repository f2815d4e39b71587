/*
 * tests/engine/test_2bw_train.c -- 2bw trains, through `brigade train`:
 *  - the loss falls over 60 steps on two stages (mlp-fashion, synthetic);
 *  - step t runs on W(t-1): the second step's loss (batch 1 on W(0)) is the
 *    one 1f1b measures on batch 1 when nothing moves the weights (--lr 0);
 *  - evaluations (each after a drain) change no loss; a dynamic loss
 *    scale is refused;
 *  - resuming is refused with the reason, both a 2bw run and a 2bw
 *    checkpoint under another schedule (checkpoints hold one version).
 * Bit-identity across layouts is test_layout_equiv's. argv[1]: the brigade
 * binary. Models come from BRIGADE_SOURCE_DIR.
 * Must NOT depend on timing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

/* Run brigade train on mlp-fashion with `args` in wd, output to `log`;
 * returns the exit status (-1 if it did not exit). */
static int run(const char *args, const char *log)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && '%s' train '%s/models/mlp-fashion.graph' --data synthetic:images "
             "--seed 7 --micro-batches 4 %s > '%s' 2>&1",
             wd, brigade, srcdir, args, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The "loss" of every line of metrics file `name` in wd that has a
 * "step", in order, into out (at most cap); returns how many. */
static int losses(const char *name, double *out, int cap)
{
    char path[512], line[4096];
    snprintf(path, sizeof(path), "%s/%s", wd, name);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "no metrics file %s", path);
    int n = 0;
    while (f && n < cap && fgets(line, sizeof(line), f)) {
        const char *l = strstr(line, "\"loss\":");
        if (strstr(line, "\"step\":") && l) out[n++] = atof(l + 7);
    }
    if (f) fclose(f);
    return n;
}

/* Whether log file `name` in wd contains `needle`. */
static int log_has(const char *name, const char *needle)
{
    char cmd[768];
    snprintf(cmd, sizeof(cmd), "grep -q -- '%s' '%s/%s'", needle, wd, name);
    return system(cmd) == 0;
}

static void loss_falls(void)
{
    CHECK(run("--stages 2 --schedule 2bw --batch 32 --steps 60 --log-every 10 --metrics fall.jsonl",
              "fall.log") == 0);
    double l[8];
    int n = losses("fall.jsonl", l, 8);
    CHECK_MSG(n == 6, "%d loss lines", n);
    if (n == 6) CHECK_MSG(l[5] < 0.8 * l[0], "loss %.4f -> %.4f does not fall", l[0], l[5]);
}

/* Runs `a` and `b` (each with --log-every 1 and a metrics file) log the
 * same `steps` losses, bit for bit as printed; `what` names the check. */
static void same_losses(const char *a, const char *b, int steps, const char *what)
{
    char args[512];
    snprintf(args, sizeof(args), "%s/a.jsonl", wd);
    remove(args); /* metrics files are appended to */
    snprintf(args, sizeof(args), "%s/b.jsonl", wd);
    remove(args);
    snprintf(args, sizeof(args), "%s --log-every 1 --metrics a.jsonl", a);
    CHECK(run(args, "a.log") == 0);
    snprintf(args, sizeof(args), "%s --log-every 1 --metrics b.jsonl", b);
    CHECK(run(args, "b.log") == 0);
    double la[16], lb[16];
    int na = losses("a.jsonl", la, 16), nb = losses("b.jsonl", lb, 16);
    CHECK_MSG(na == steps && nb == steps, "%s: %d and %d loss lines", what, na, nb);
    for (int i = 0; i < na && i < nb; i++)
        CHECK_MSG(la[i] == lb[i], "%s, step %d: %.6f against %.6f", what, i + 1, la[i], lb[i]);
}

static void runs_on_previous_version(void)
{
    same_losses("--stages 2 --schedule 2bw --batch 16 --steps 2 --checkpoint-dir ck",
                "--stages 1 --schedule 1f1b --batch 16 --steps 2 --lr 0", 2,
                "2bw against 1f1b on W(0)");
}

/* The drain before an evaluation changes no number: the same losses with
 * an evaluation after every step as without; a dynamic loss scale is
 * refused. */
static void drain_changes_nothing(void)
{
    same_losses("--stages 3 --schedule 2bw --batch 16 --steps 4",
                "--stages 3 --schedule 2bw --batch 16 --steps 4 --eval-every 1 --eval-batches 1",
                4, "2bw without and with evaluations");
    /* ...and the evaluation itself runs: on W(0) (--lr 0) it reports what
     * 1f1b's does, samples included (it once ran no action at all). */
    CHECK(run("--stages 2 --schedule 2bw --batch 16 --steps 2 --lr 0 --eval-batches 2",
              "e1.log") == 0);
    CHECK(run("--stages 2 --schedule 1f1b --batch 16 --steps 2 --lr 0 --eval-batches 2",
              "e2.log") == 0);
    char cmp[1024];
    snprintf(cmp, sizeof(cmp),
             "cd '%s' && grep -q 'eval .*(32 samples)' e1.log && "
             "[ \"$(grep 'eval ' e1.log)\" = \"$(grep 'eval ' e2.log)\" ]", wd);
    CHECK_MSG(system(cmp) == 0, "2bw's evaluation differs from 1f1b's on W(0) (see %s/e1.log)", wd);
    CHECK(run("--stages 2 --schedule 2bw --batch 16 --steps 2 --loss-scale dynamic", "s.log") == 2);
    CHECK(log_has("s.log", "dynamic loss scale"));
}

static void resume_refused(void)
{
    CHECK(run("--stages 2 --schedule 2bw --batch 16 --steps 3 --checkpoint-dir ck --resume",
              "r1.log") == 2);
    CHECK(log_has("r1.log", "cannot resume a 2bw run"));
    CHECK(run("--stages 2 --schedule 1f1b --batch 16 --steps 3 --checkpoint-dir ck --resume",
              "r2.log") == 2);
    CHECK(log_has("r2.log", "under another schedule"));
    CHECK(log_has("r2.log", "--init"));
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "2bw", &brigade, &srcdir, wd, sizeof(wd)))
        return 1;
    loss_falls();
    runs_on_previous_version();
    drain_changes_nothing();
    resume_refused();
    bg_test_sh("rm -rf '%s'", wd);
    return bg_test_finish("test_2bw_train");
}
