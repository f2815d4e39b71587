/*
 * tests/engine/test_layout_equiv.c -- the layout-invariance contract,
 * end to end through `brigade train`: for the same global batch and
 * micro-batch split, every pipeline layout and schedule must end with
 * parameters (and optimizer state) bit-identical to one stage on the CPU;
 * data-parallel layouts must repeat bit for bit and stay within 1e-6
 * relative of one rank. llama-tiny runs every schedule of the schedule
 * table at S = 1, 2, 3. Checkpoints are the witness: they hold every
 * parameter by its global name whatever the layout.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "engine/schedule.h"
#include "partition/schedules.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char workdir[256];

/* Train `model` with extra args into a fresh checkpoint dir; returns its path. */
static int train(const char *model, const char *data, const char *extra, const char *tag,
                 char *ckpt, size_t len)
{
    snprintf(ckpt, len, "%s/%s", workdir, tag);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s' && '%s' train '%s/models/%s' --data %s --batch 16 --steps 3 "
             "--log-every 3 --eval-batches 1 --seed 7 --checkpoint-dir '%s' %s > '%s.log' 2>&1",
             ckpt, brigade, srcdir, model, data, ckpt, extra, ckpt);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "run failed (%d): %s\n", rc, cmd);
        char cat[600];
        snprintf(cat, sizeof(cat), "tail -5 '%s.log' >&2", ckpt);
        if (system(cat)) {
        }
        return 0;
    }
    return 1;
}

typedef struct params {
    int n;
    char **name;
    float **val;
    int64_t *numel;
} params_t;

static void params_free(params_t *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->name[i]), free(p->val[i]);
    free(p->name), free(p->val), free(p->numel);
    memset(p, 0, sizeof(*p));
}

/* Every f32 tensor of every stage file of DIR's latest checkpoint. */
static int load(const char *dir, params_t *out)
{
    memset(out, 0, sizeof(*out));
    char *step = NULL;
    bg_ckpt_t *ck = NULL;
    if (bg_ckpt_dir_latest(dir, &step) != BG_OK || !step || bg_ckpt_open(step, &ck) != BG_OK) {
        fprintf(stderr, "cannot open checkpoint in %s: %s\n", dir, bg_last_error());
        free(step);
        return 0;
    }
    for (int f = 0; f < bg_ckpt_file_count(ck); f++) {
        const bg_st_file_t *sf = bg_ckpt_file(ck, f);
        for (size_t i = 0; i < bg_st_count(sf); i++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(sf, i);
            bool dup = false;
            for (int k = 0; k < out->n; k++)
                dup |= !strcmp(out->name[k], t->name);
            if (dup || t->dtype != BG_ST_F32)
                continue;
            out->name = realloc(out->name, sizeof(char *) * (size_t)(out->n + 1));
            out->val = realloc(out->val, sizeof(float *) * (size_t)(out->n + 1));
            out->numel = realloc(out->numel, sizeof(int64_t) * (size_t)(out->n + 1));
            out->name[out->n] = strdup(t->name);
            out->val[out->n] = malloc((size_t)t->numel * 4 + 4);
            out->numel[out->n] = t->numel;
            memcpy(out->val[out->n], t->data, (size_t)t->numel * 4);
            out->n++;
        }
    }
    bg_ckpt_close(ck);
    free(step);
    return 1;
}

/* rtol 0: bitwise. Returns 1 when every tensor of a matches b. */
static int compare(const params_t *a, const params_t *b, double rtol, const char *what)
{
    int ok = a->n == b->n && a->n > 0;
    if (!ok)
        fprintf(stderr, "%s: %d vs %d tensors\n", what, a->n, b->n);
    for (int i = 0; ok && i < a->n; i++) {
        int j = 0;
        while (j < b->n && strcmp(a->name[i], b->name[j]))
            j++;
        if (j == b->n || a->numel[i] != b->numel[j]) {
            fprintf(stderr, "%s: %s missing or resized\n", what, a->name[i]);
            return 0;
        }
        /* Bitwise, or normwise relative per tensor: max |a - b| / max |b|.
         * Elementwise ratios would blow up where a sum of many terms nearly
         * cancels, which says nothing about the layout. */
        double worst = 0, diff = 0, scale = 0;
        for (int64_t e = 0; e < a->numel[i]; e++) {
            double x = a->val[i][e], y = b->val[j][e];
            if (rtol == 0) {
                if (memcmp(&a->val[i][e], &b->val[j][e], 4))
                    worst = 1;
            } else {
                if (fabs(x - y) > diff)
                    diff = fabs(x - y);
                if (fabs(y) > scale)
                    scale = fabs(y);
            }
        }
        if (rtol > 0)
            worst = scale > 0 ? diff / scale : diff;
        if (worst > rtol) {
            fprintf(stderr, "%s: %s differs (%s %.3g)\n", what, a->name[i],
                    rtol == 0 ? "bitwise" : "relative", worst);
            ok = 0;
        }
    }
    return ok;
}

/* Every layout against one stage run with `ref_args` (the same global batch
 * and micro-batch split as the layouts). */
static void check_layouts_vs(const char *model, const char *data, const char *ref_args,
                             const char *const *layouts, int n)
{
    char ref[512], got[512];
    params_t r, g;
    if (!train(model, data, ref_args, "ref", ref, sizeof(ref)) || !load(ref, &r)) {
        CHECK_MSG(0, "%s: reference run failed", model);
        return;
    }
    for (int i = 0; i < n; i++) {
        char tag[64];
        snprintf(tag, sizeof(tag), "layout%d", i);
        int ok = train(model, data, layouts[i], tag, got, sizeof(got)) && load(got, &g);
        char what[256];
        snprintf(what, sizeof(what), "%s [%s]", model, layouts[i]);
        CHECK_MSG(ok && compare(&g, &r, 0, what), "%s: not bit-identical to one stage", what);
        if (ok)
            params_free(&g);
        printf("%s: %s\n", what, ok ? "ran" : "failed");
    }
    params_free(&r);
}

static void check_layouts(const char *model, const char *data, const char *const *layouts, int n)
{
    check_layouts_vs(model, data, "--stages 1 --micro-batches 4", layouts, n);
}

/*
 * With AdamW the comparison would measure Adam, not us: its update
 * m / sqrt(v) is scale-free, so for an element whose gradient is ~0 a
 * last-bit difference in the sum order moves the step by a visible
 * fraction of lr. SGD passes gradient differences through linearly.
 */
static void check_dp(const char *model, const char *data)
{
    char ref[512], a[512], b[512];
    params_t r, pa, pb;
    if (!train(model, data, "--stages 1 --micro-batches 4 --optimizer sgd --lr 0.05", "dpref", ref,
               sizeof(ref)) ||
        !load(ref, &r)) {
        CHECK_MSG(0, "dp reference failed");
        return;
    }
    const char *dps[] = {"--stages 1 --dp 2 --micro-batches 2 --optimizer sgd --lr 0.05",
                         "--stages 2 --dp 2 --micro-batches 2 --optimizer sgd --lr 0.05"};
    for (int i = 0; i < 2; i++) {
        int ok = train(model, data, dps[i], "dpa", a, sizeof(a)) && load(a, &pa);
        ok = ok && train(model, data, dps[i], "dpb", b, sizeof(b)) && load(b, &pb);
        CHECK_MSG(ok, "%s: dp run failed", dps[i]);
        if (!ok)
            continue;
        char what[256];
        snprintf(what, sizeof(what), "%s [%s] run to run", model, dps[i]);
        CHECK_MSG(compare(&pa, &pb, 0, what), "%s: not deterministic", what);
        snprintf(what, sizeof(what), "%s [%s] vs one rank", model, dps[i]);
        CHECK_MSG(compare(&pa, &r, 1e-6, what), "%s: beyond 1e-6", what);
        printf("%s: ok\n", what);
        params_free(&pa);
        params_free(&pb);
    }
    params_free(&r);
}

/* Other micro-batch counts, each against one stage with the same split:
 * interleaved with m not a multiple of S (a round of 2 and a short one of
 * 1), and dualpipev, which needs m >= 2S, at S = 3 and 4. */
static void check_other_m(void)
{
    static const struct {
        const char *ref, *layout;
    } other_m[] = {
        {"--stages 1 --micro-batches 3 --batch 12",
         "--stages 2 --schedule interleaved --chunks 2 --micro-batches 3 --batch 12"},
        {"--stages 1 --micro-batches 6 --batch 12",
         "--stages 3 --schedule dualpipev --micro-batches 6 --batch 12"},
        {"--stages 1 --micro-batches 8", "--stages 4 --schedule dualpipev --micro-batches 8"},
    };
    for (size_t i = 0; i < sizeof(other_m) / sizeof(other_m[0]); i++) {
        check_layouts_vs("mlp-fashion.graph", "synthetic:images", other_m[i].ref,
                         &other_m[i].layout, 1);
        check_layouts_vs("gpt-tiny.graph", "synthetic:tokens", other_m[i].ref, &other_m[i].layout,
                         1);
    }
}

/*
 * 2bw beyond the table's S = 1..3, against itself on one stage: S = 4 (the
 * first rank carries three backwards over each step boundary) and split
 * B/W, with a head tied across the first and last stage (gpt-tiny) and a
 * skip connection (skip-mlp). Its first update is the flushing schedules'
 * (W(1) = W(0) - lr g_0, computed on W(-1) = W(0)): one step of 2bw at
 * S = 3 equals one step of 1f1b on one stage.
 */
static void check_2bw(void)
{
    static const char *const layouts[] = {
        "--stages 4 --schedule 2bw --micro-batches 4",
        "--stages 3 --schedule 2bw --micro-batches 4 --split-bw",
    };
    const char *ref = "--stages 1 --schedule 2bw --micro-batches 4";
    check_layouts_vs("gpt-tiny.graph", "synthetic:tokens", ref, layouts, 2);
    check_layouts_vs("skip-mlp.graph", "synthetic:images", ref, layouts, 2);
    static const char *const one[] = {"--stages 3 --schedule 2bw --micro-batches 4 --steps 1"};
    check_layouts_vs("mlp-fashion.graph", "synthetic:images", "--stages 1 --micro-batches 4 --steps 1",
                     one, 1);
}

#define TABLE_MAX_LAYOUTS 64

/* Whether row d's schedule never flushes (2bw): its updates are delayed by
 * a step, so its reference is itself on one stage, not the flushing one. */
static const char *semantics_of(const bg_sched_desc_t *d)
{
    bg_sched_t *s = NULL;
    int ff = bg_sched_generate(d->kind, 1, 4, d->chunks_default, 0, &s) == BG_OK &&
             bg_sched_flush_free(s);
    bg_sched_free(s);
    return ff ? d->name : "";
}

/*
 * Every schedule the table lists (at its default chunks) at S = 1, 2, 3,
 * plus recompute: m = 4 unless the schedule's rule asks for more (the
 * smallest m it allows), micro-batches of 4 samples; layouts sharing an m
 * (and the update semantics: flush-free rows against themselves on one
 * stage) share one reference run.
 */
static void check_table_layouts(const char *model, const char *data)
{
    static char text[TABLE_MAX_LAYOUTS][128];
    int ms[TABLE_MAX_LAYOUTS], n = 0;
    const char *sem[TABLE_MAX_LAYOUTS];
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        for (int S = 1; d && S <= 3 && n < TABLE_MAX_LAYOUTS - 1; S++) {
            sem[n] = semantics_of(d);
            ms[n] = bg_sched_round_m(d, S, 4);
            CHECK_MSG(ms[n] > 0, "%s: no micro-batch count for %d stages", d->name, S);
            snprintf(text[n], sizeof(text[n]),
                     "--stages %d --schedule %s --micro-batches %d --batch %d", S, d->name, ms[n],
                     4 * ms[n]);
            n += ms[n] > 0;
        }
    }
    CHECK_MSG(n < TABLE_MAX_LAYOUTS - 1, "more schedules than this test has room for");
    ms[n] = 4, sem[n] = "";
    snprintf(text[n++], sizeof(text[0]),
             "--stages 3 --schedule 1f1b --micro-batches 4 --recompute");
    for (int i = 0; i < n; i++) {
        bool first = true;
        for (int j = 0; j < i; j++) first &= ms[j] != ms[i] || strcmp(sem[j], sem[i]);
        if (!first) continue;
        const char *group[TABLE_MAX_LAYOUTS];
        char ref[96];
        int g = 0;
        for (int j = i; j < n; j++)
            if (ms[j] == ms[i] && !strcmp(sem[j], sem[i])) group[g++] = text[j];
        snprintf(ref, sizeof(ref), "--stages 1 --micro-batches %d --batch %d%s%s", ms[i],
                 4 * ms[i], *sem[i] ? " --schedule " : "", sem[i]);
        check_layouts_vs(model, data, ref, group, g);
    }
}

/* A schedule from a file (--schedule file:PATH): a hand-made order, rank 0
 * splitting B and W, rank 1 fusing them. */
static void check_file_schedule(void)
{
    char path[300], file_layout[400];
    snprintf(path, sizeof(path), "%s/two.schedule", workdir);
    FILE *sf = fopen(path, "w");
    CHECK(sf != NULL);
    if (sf) {
        fputs("brigade-schedule 1\nranks 2\nmicro-batches 4\nrank 0\n"
              "F 0 0\nF 1 0\nB 0 0\nF 2 0\nW 0 0\nB 1 0\nF 3 0\nW 1 0\nB 2 0\nW 2 0\nB 3 0\nW 3 0\n"
              "rank 1\nF 0 1\nBW 0 1\nF 1 1\nBW 1 1\nF 2 1\nB 2 1\nW 2 1\nF 3 1\nBW 3 1\n",
              sf);
        fclose(sf);
        snprintf(file_layout, sizeof(file_layout),
                 "--stages 2 --schedule file:%s --micro-batches 4", path);
        const char *const from_file[] = {file_layout};
        check_layouts("mlp-fashion.graph", "synthetic:images", from_file, 1);
        check_layouts("gpt-tiny.graph", "synthetic:tokens", from_file, 1);
    }
}

/* --schedule auto against 1f1b at the same stages: auto is only another
 * valid order, so the result must not move by a bit. At p = 4, m = 4 it
 * picks a built (greedy) V schedule, at p = 2 and 3 a table row. */
static void check_auto(void)
{
    static const struct {
        const char *ref, *layout;
    } pairs[] = {
        {"--stages 2 --schedule 1f1b --micro-batches 4", "--stages 2 --schedule auto --micro-batches 4"},
        {"--stages 3 --schedule 1f1b --micro-batches 4", "--stages 3 --schedule auto --micro-batches 4"},
        {"--stages 4 --schedule 1f1b --micro-batches 4", "--stages 4 --schedule auto --micro-batches 4"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        check_layouts_vs("mlp-fashion.graph", "synthetic:images", pairs[i].ref, &pairs[i].layout,
                         1);
        check_layouts_vs("gpt-tiny.graph", "synthetic:tokens", pairs[i].ref, &pairs[i].layout, 1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        TEST_SKIP("usage: test_layout_equiv BRIGADE");
    brigade = argv[1];
    srcdir = getenv("BRIGADE_SOURCE_DIR");
    if (!srcdir)
        srcdir = ".";
    snprintf(workdir, sizeof(workdir), "/tmp/bg_equiv_%d", (int)getpid());
    char mk[300];
    snprintf(mk, sizeof(mk), "mkdir -p %s", workdir);
    if (system(mk))
        return 1;

    /* Every schedule at S = 2, 3, 4 (interleaved at 3 runs m = 4 as a round
     * of 3 and a short round of 1), plus recompute. */
    static const char *const layouts[] = {
        "--stages 2 --schedule gpipe --micro-batches 4",
        "--stages 3 --schedule gpipe --micro-batches 4",
        "--stages 4 --schedule gpipe --micro-batches 4",
        "--stages 2 --schedule 1f1b --micro-batches 4",
        "--stages 3 --schedule 1f1b --micro-batches 4",
        "--stages 4 --schedule 1f1b --micro-batches 4",
        "--stages 2 --schedule zb-h1 --micro-batches 4",
        "--stages 3 --schedule zb-h1 --micro-batches 4",
        "--stages 4 --schedule zb-h1 --micro-batches 4",
        "--stages 2 --schedule zb-v --micro-batches 4",
        "--stages 3 --schedule zb-v --micro-batches 4",
        "--stages 4 --schedule zb-v --micro-batches 4",
        "--stages 2 --schedule dualpipev --micro-batches 4",
        "--stages 2 --schedule interleaved --chunks 2 --micro-batches 4",
        "--stages 4 --schedule interleaved --chunks 2 --micro-batches 4",
        "--stages 3 --schedule interleaved --chunks 2 --micro-batches 4",
        "--stages 2 --schedule 1f1b --micro-batches 4 --recompute",
    };
    int nl = (int)(sizeof(layouts) / sizeof(layouts[0]));
    check_layouts("mlp-fashion.graph", "synthetic:images", layouts, nl);
    /* gpt-tiny: attention, layernorm, residual adds, and a head tied to the
     * embedding across the first and last stage. */
    check_layouts("gpt-tiny.graph", "synthetic:tokens", layouts, nl);
    /* A skip connection from the first stage to the last: sent directly. */
    static const char *const skip[] = {
        "--stages 4 --schedule 1f1b --micro-batches 4",
        "--stages 3 --schedule zb-h1 --micro-batches 4",
        "--stages 3 --schedule zb-v --micro-batches 4",
        "--stages 2 --schedule dualpipev --micro-batches 4",
    };
    check_layouts("skip-mlp.graph", "synthetic:images", skip, 4);
    /* llama-tiny: grouped-query attention with rope, rmsnorm, swiglu, no
     * biases, an untied head (a fused classifier); every schedule of the
     * table at S = 1, 2, 3. */
    check_table_layouts("llama-tiny.graph", "synthetic:tokens");
    check_other_m();
    check_2bw();
    check_file_schedule();
    check_auto();
    check_dp("mlp-fashion.graph", "synthetic:images");
    check_dp("gpt-tiny.graph", "synthetic:tokens");
    snprintf(mk, sizeof(mk), "rm -rf %s", workdir);
    if (system(mk)) {
    }
    return bg_test_finish("test_layout_equiv");
}
