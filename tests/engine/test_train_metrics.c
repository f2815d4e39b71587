/*
 * tests/engine/test_train_metrics.c -- what a run leaves for the user:
 * the --metrics file opens with one header line per run (layout, schedule,
 * start, no "step") and every line carries the run's id; eval lines never
 * share a terminal line with the progress bar; evaluation-only mode
 * (bg_train_conf_t.eval_only) evaluates a checkpoint once, gives the loss
 * the training run measured at that step, and leaves the checkpoints alone;
 * without held-out data it is refused.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 * Must NOT depend on timing or on the metrics' numeric values beyond
 * equality between the two runs.
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/train.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256], model[512];

/* Lines of a metrics file, parsed; *n set. NULL entries for bad JSON. */
static cJSON **read_lines(const char *path, int *n)
{
    static cJSON *lines[256];
    char buf[4096];
    *n = 0;
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "no metrics file %s", path);
    while (f && *n < 256 && fgets(buf, sizeof(buf), f))
        lines[(*n)++] = cJSON_Parse(buf);
    if (f)
        fclose(f);
    return lines;
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1e300;
}

/* The header line of a run: every documented key, no "step". */
static void check_header(const cJSON *h, int stages, const char *resume)
{
    CHECK_MSG(h && str_of(h, "run") && strlen(str_of(h, "run")) > 0, "header has no run id");
    if (!h)
        return;
    CHECK(!cJSON_GetObjectItem(h, "step"));
    CHECK(str_of(h, "model") && !strcmp(str_of(h, "model"), model));
    CHECK(num_of(h, "stages") == stages && num_of(h, "dp") == 1 && num_of(h, "chunks") == 1);
    CHECK(str_of(h, "schedule") && !strcmp(str_of(h, "schedule"), "1f1b"));
    CHECK(num_of(h, "micro_batches") == 2 && num_of(h, "batch") == 16);
    const cJSON *rs = cJSON_GetObjectItem(h, "resume_step");
    if (resume)
        CHECK_MSG(cJSON_IsNumber(rs) && rs->valuedouble == atof(resume), "resume_step");
    else
        CHECK_MSG(cJSON_IsNull(rs), "resume_step is not null");
    const char *st = str_of(h, "started");
    CHECK_MSG(st && strlen(st) == 20 && st[4] == '-' && st[10] == 'T' && st[19] == 'Z',
              "started '%s' is not ISO-8601 UTC", st ? st : "(none)");
}

/* A 2-stage training run with a progress bar, evaluations and checkpoints. */
static double train_run(void)
{
    CHECK(bg_test_sh("cd %s && BRIGADE_TTY=1 '%s' train %s --data synthetic:images --batch 16 "
                     "--micro-batches 2 --stages 2 --steps 4 --eval-every 2 --eval-batches 1 "
                     "--log-every 1 --metrics m.jsonl --checkpoint-dir ck > log 2>&1",
                     wd, brigade, model) == 0);
    /* Eval lines start their own line (after the launcher's rank prefix
     * when it relays several ranks): the \r bar is ended first. */
    CHECK_MSG(bg_test_sh("cd %s && grep -a 'eval  step' log | grep -qavE '^(\\[r0\\] )?eval  step'",
                         wd) == 1,
              "an eval line shares a line with the progress bar (see %s/log)", wd);
    CHECK(bg_test_sh("cd %s && grep -qE '^(\\[r0\\] )?eval  step 2 ' log && "
                     "grep -qE '^(\\[r0\\] )?eval  step 4 ' log",
                     wd) == 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/m.jsonl", wd);
    int n;
    cJSON **l = read_lines(path, &n);
    CHECK_MSG(n >= 6, "%d metrics lines", n);
    check_header(l[0], 2, NULL);
    const char *id = l[0] ? str_of(l[0], "run") : NULL;
    double last_eval = -1;
    int evals = 0;
    for (int i = 1; i < n && id; i++) {
        CHECK_MSG(l[i] && str_of(l[i], "run") && !strcmp(str_of(l[i], "run"), id),
                  "metrics line %d lacks \"run\":\"%s\"", i + 1, id);
        CHECK(l[i] && cJSON_GetObjectItem(l[i], "step"));
        if (l[i] && cJSON_GetObjectItem(l[i], "eval_loss")) {
            evals++;
            if (num_of(l[i], "step") == 4)
                last_eval = num_of(l[i], "eval_loss");
        }
    }
    CHECK(evals == 2);
    for (int i = 0; i < n; i++)
        cJSON_Delete(l[i]);
    return last_eval;
}

static void eval_conf(bg_train_conf_t *c, const char *data, const char *ckdir, const char *metrics)
{
    bg_train_conf_default(c);
    c->model = model;
    c->micro_batches = 2;
    c->batch = 16;
    c->data = data;
    c->eval_batches = 1;
    c->checkpoint_dir = ckdir;
    c->resume = true;
    c->metrics = metrics;
    c->eval_only = 1;
}

/* Evaluate the checkpoint at step 4 on one stage: the training run's
 * step-4 eval loss, and the checkpoint directory is untouched. */
static void eval_only(double want)
{
    char ck[512], m2[512], before[600], after[600];
    snprintf(ck, sizeof(ck), "%s/ck", wd);
    snprintf(m2, sizeof(m2), "%s/m2.jsonl", wd);
    CHECK(bg_test_sh("cd %s && (cat ck/latest; ls -R ck) > ck.before", wd) == 0);
    bg_train_conf_t c;
    eval_conf(&c, "synthetic:images", ck, m2);
    fflush(stdout);
    CHECK_MSG(bg_train_run(&c) == BG_OK, "eval_only: %s", bg_last_error());
    snprintf(before, sizeof(before), "%s/ck.before", wd);
    snprintf(after, sizeof(after), "%s/ck.after", wd);
    CHECK(bg_test_sh("cd %s && (cat ck/latest; ls -R ck) > ck.after && cmp -s ck.before ck.after",
                     wd) == 0);
    int n;
    cJSON **l = read_lines(m2, &n);
    CHECK_MSG(n == 2, "eval-only wrote %d metrics lines, want header + eval", n);
    if (n == 2) {
        check_header(l[0], 1, "4");
        CHECK(l[1] && num_of(l[1], "step") == 4);
        CHECK_MSG(l[1] && num_of(l[1], "eval_loss") == want, "eval_loss %g, training run had %g",
                  l[1] ? num_of(l[1], "eval_loss") : -1, want);
        CHECK(l[0] && l[1] && !strcmp(str_of(l[0], "run"), str_of(l[1], "run")));
    }
    for (int i = 0; i < n; i++)
        cJSON_Delete(l[i]);
    /* No held-out split: refused, naming the data. */
    eval_conf(&c, "synthetic:images,eval=0", ck, NULL);
    CHECK(bg_train_run(&c) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "no held-out") != NULL, "message: %s", bg_last_error());
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_train_metrics BRIGADE\n");
        return 2;
    }
    brigade = argv[1];
    srcdir = getenv("BRIGADE_SOURCE_DIR");
    if (!srcdir)
        srcdir = ".";
    snprintf(model, sizeof(model), "%s/models/mlp-fashion.graph", srcdir);
    snprintf(wd, sizeof(wd), "/tmp/bg_metrics_%d", (int)getpid());
    CHECK(bg_test_sh("rm -rf %s && mkdir -p %s", wd, wd) == 0);
    double want = train_run();
    eval_only(want);
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_train_metrics");
}
