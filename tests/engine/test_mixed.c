/*
 * tests/engine/test_mixed.c -- mixed precision and loss scaling end to end
 * through `brigade train` on the CPU backend.
 *
 * 1. bf16 and fp16 loss curves follow f32 (mlp-fashion and gpt-tiny on
 *    synthetic data, 2 stages, 6 steps): every logged training loss within
 *    2% (bf16) / 1% (fp16) relative of f32's. Why these bounds: each stored
 *    activation carries a relative rounding error up to 2^-9 (bf16) or
 *    2^-12 (fp16 with no overflow); over a few layers and steps that moves
 *    a loss near 2.3 / 5.5 by ~0.1-1% (measured: <= 0.8% bf16); a broken
 *    rounding point or a gradient lost in a cast moves it by far more.
 * 2. A power-of-two loss scale changes no bit in f32: scaling and unscaling
 *    by 2^k is exact, so `--loss-scale 1024` gives the unscaled run's
 *    checkpoint bit for bit (this is what "matches an unscaled run" means
 *    where it can be exact).
 * 3. fp16 with a scale that must overflow (dynamic:2^24): the first step is
 *    skipped and logged, and leaves the parameters exactly as they were
 *    (equal to a run with learning rate 0).
 * 4. Resume keeps the loss scale: 3 steps (skipped, scale halving) then a
 *    resume to 6 equals 6 uninterrupted steps bit for bit, the saved scale
 *    included; restarting from the initial scale would skip again.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "ckpt_same.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

#define MLP "--data synthetic:images --batch 16 --micro-batches 4 --seed 3 --eval-batches 1"
#define GPT "--data synthetic:tokens --batch 8 --micro-batches 2 --seed 3 --eval-batches 1"

/* The training losses of a metrics file, in order; returns how many. */
static int read_losses(const char *path, double *loss, int max)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    while (f && n < max && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"loss\":");
        if (p && strstr(line, "\"step_ms\""))
            loss[n++] = atof(p + 7);
    }
    if (f)
        fclose(f);
    return n;
}

/* Losses of a 6-step, 2-stage run of `model` in `dtype`. */
static int run_curve(const char *model, const char *common, const char *dtype, double *loss)
{
    char metrics[320];
    snprintf(metrics, sizeof(metrics), "%s/%s.%s.jsonl", wd, model, dtype);
    int rc = bg_test_sh("'%s' train %s/models/%s %s --stages 2 --steps 6 --log-every 1 --dtype %s "
                        "--metrics %s > %s.log 2>&1",
                        brigade, srcdir, model, common, dtype, metrics, metrics);
    CHECK_MSG(rc == 0, "%s %s run failed (see %s.log)", model, dtype, metrics);
    return rc == 0 ? read_losses(metrics, loss, 16) : 0;
}

static void test_curves(const char *model, const char *common)
{
    double ref[16], low[16];
    int n = run_curve(model, common, "f32", ref);
    CHECK_MSG(n == 6, "%s f32: %d losses logged", model, n);
    const char *dt[2] = {"bf16", "fp16"};
    const double tol[2] = {0.02, 0.01};
    for (int k = 0; k < 2; k++) {
        int m = run_curve(model, common, dt[k], low);
        CHECK_MSG(m == n, "%s %s: %d losses logged, f32 %d", model, dt[k], m, n);
        for (int i = 0; i < n && i < m; i++)
            CHECK_MSG(fabs(low[i] - ref[i]) <= tol[k] * fabs(ref[i]),
                      "%s %s step %d: loss %.5f vs f32 %.5f", model, dt[k], i + 1, low[i], ref[i]);
        printf("%s %s: %d losses within %.0f%% of f32 (last %.4f vs %.4f)\n", model, dt[k], m,
               100 * tol[k], m ? low[m - 1] : 0.0, n ? ref[n - 1] : 0.0);
    }
}

static void test_f32_scale_exact(void)
{
    char a[300], b[300];
    snprintf(a, sizeof(a), "%s/f32", wd);
    snprintf(b, sizeof(b), "%s/f32-scaled", wd);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --stages 2 --steps 4 "
                     "--clip 1 --checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, a, a) == 0);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --stages 2 --steps 4 "
                     "--clip 1 --loss-scale 1024 --checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, b, b) == 0);
    /* a (unscaled) has no loss-scale tensor: every one of its tensors is compared */
    CHECK_MSG(bg_test_same_checkpoints(a, b), "f32 with --loss-scale 1024 changed bits");
}

/* Optimizer state and the loss scale: what a skipped step may change. */
static int not_a_param(const char *name)
{
    return strstr(name, ".adam_") || !strcmp(name, BG_CKPT_LOSS_SCALE);
}

static void test_overflow_skipped(void)
{
    char a[300], b[300];
    snprintf(a, sizeof(a), "%s/overflow", wd);
    snprintf(b, sizeof(b), "%s/lr0", wd);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --steps 1 --dtype fp16 "
                     "--loss-scale dynamic:16777216 --checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, a, a) == 0);
    CHECK_MSG(bg_test_sh("grep -q 'step 1: gradients overflowed at loss scale 1.67772e+07: "
                         "update skipped (1 so far)' %s.log",
                         a) == 0,
              "the overflowed step is not logged as skipped");
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --steps 1 --dtype fp16 "
                     "--lr 0 --checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, b, b) == 0);
    CHECK_MSG(bg_test_same_checkpoints_but(a, b, not_a_param),
              "a skipped step changed the parameters");
}

static void test_resume_keeps_scale(void)
{
    char full[300], half[300];
    snprintf(full, sizeof(full), "%s/scale-full", wd);
    snprintf(half, sizeof(half), "%s/scale-half", wd);
    const char *o = "--dtype fp16 --loss-scale dynamic:16777216 --min-lr-frac 1";
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --stages 2 --steps 6 %s "
                     "--checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, o, full, full) == 0);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --stages 2 --steps 3 %s "
                     "--checkpoint-dir %s > %s.log 2>&1",
                     brigade, srcdir, o, half, half) == 0);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " MLP " --stages 2 --steps 6 %s "
                     "--resume --checkpoint-dir %s > %s.resume.log 2>&1",
                     brigade, srcdir, o, half, half) == 0);
    CHECK(bg_test_sh("grep -q 'update skipped' %s.log", half) == 0);
    CHECK_MSG(bg_test_same_checkpoints(full, half), "resume lost the loss scale");
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "mixed", &brigade, &srcdir, wd, sizeof(wd)))
        return 1;
    test_curves("mlp-fashion.graph", MLP);
    test_curves("gpt-tiny.graph", GPT);
    test_f32_scale_exact();
    test_overflow_skipped();
    test_resume_keeps_scale();
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_mixed");
}
