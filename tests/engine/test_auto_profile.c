/*
 * tests/engine/test_auto_profile.c -- `--schedule auto` from a profile of
 * the run's own split (engine/train_sched.c): the same conf and model give
 * the same action lists however often they are derived (what every rank
 * relies on); a profile whose first stage is far heavier moves the choice
 * from what equal costs pick to 1f1b, and says so; a transfer latency
 * (--schedule-latency) far above the layers' times moves it from two chunks
 * per rank to one; the 1f1b run is bit for bit
 * the run of --schedule 1f1b; and bad profiles are named. Profiles are
 * written here (fixed times), so the choice does not depend on this
 * machine. argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_same.h"
#include "engine/schedule.h"
#include "engine/train.h"
#include "layers/graph.h"
#include "test_util.h"

static const char *brigade;
static char workdir[256], model[512];

/* A profile of g's layers: F = B = W = 1 ms each, `heavy` (may be NULL)
 * 50 ms, `skip` (may be NULL) left out. */
static void write_profile(const bg_graph_t *g, const char *path, const char *heavy,
                          const char *skip)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "{\"format\": \"brigade-profile\", \"version\": 1, \"device\": \"cpu\", "
               "\"dtype\": \"f32\", \"micro_batch\": 2, \"layers\": [");
    const char *sep = "";
    for (int l = 0; l < bg_graph_n_layers(g); l++) {
        const char *name = bg_graph_layer(g, l)->spec.name;
        if (skip && !strcmp(name, skip))
            continue;
        double t = heavy && !strcmp(name, heavy) ? 50e-3 : 1e-3;
        fprintf(f, "%s{\"name\": \"%s\", \"fwd_s\": %g, \"bwd_input_s\": %g, \"bwd_weight_s\": %g}",
                sep, name, t, t, t);
        sep = ", ";
    }
    fprintf(f, "]}\n");
    fclose(f);
}

/* Every rank's list of a and b, action for action. */
static int same_lists(const bg_sched_t *a, const bg_sched_t *b)
{
    if (strcmp(bg_sched_name(a), bg_sched_name(b)) || bg_sched_ranks(a) != bg_sched_ranks(b) ||
        bg_sched_chunks(a) != bg_sched_chunks(b))
        return 0;
    for (int r = 0; r < bg_sched_ranks(a); r++) {
        if (bg_sched_len(a, r) != bg_sched_len(b, r))
            return 0;
        const bg_action_t *x = bg_sched_actions(a, r), *y = bg_sched_actions(b, r);
        for (size_t i = 0; i < bg_sched_len(a, r); i++) {
            char sx[96], sy[96];
            if (strcmp(bg_action_str(&x[i], sx, sizeof(sx)), bg_action_str(&y[i], sy, sizeof(sy))))
                return 0;
        }
    }
    return 1;
}

static void conf(bg_train_conf_t *c, const char *schedule, const char *profile)
{
    bg_train_conf_default(c);
    c->model = model;
    c->stages = 2;
    c->micro_batches = 4;
    c->batch = 16;
    c->schedule = schedule;
    c->profile = profile;
}

/* The choice as each rank makes it: twice, each from its own parse of the
 * model, same lists; a heavy first stage picks 1f1b where equal costs do
 * not, and the account says which profile. */
static void check_resolve(const char *heavy, const char *even)
{
    bg_train_conf_t c;
    bg_graph_t *g1 = NULL, *g2 = NULL;
    bg_sched_t *s1 = NULL, *s2 = NULL, *s0 = NULL;
    char why[512], why2[512];
    conf(&c, "auto", heavy);
    CHECK_OK(bg_train_graph_open(&c, &g1));
    CHECK_OK(bg_train_graph_open(&c, &g2));
    if (!g1 || !g2)
        goto out;
    CHECK_OK(bg_train_sched_resolve(&c, g1, &s1, why, sizeof(why)));
    CHECK_OK(bg_train_sched_resolve(&c, g2, &s2, why2, sizeof(why2)));
    if (!s1 || !s2)
        goto out;
    CHECK_MSG(same_lists(s1, s2), "two derivations of one auto choice differ");
    CHECK(!strcmp(why, why2));
    CHECK_MSG(!strcmp(bg_sched_name(s1), "1f1b"), "a heavy first stage chose %s: %s",
              bg_sched_name(s1), why);
    CHECK_MSG(strstr(why, "chose 1f1b") && strstr(why, heavy), "account: %s", why);
    conf(&c, "auto", NULL);
    CHECK_OK(bg_train_sched_resolve(&c, NULL, &s0, why, sizeof(why)));
    CHECK_MSG(s0 && strcmp(bg_sched_name(s0), "1f1b"), "equal costs chose 1f1b too: %s", why);
    CHECK_MSG(strstr(why, "equal costs"), "account: %s", why);
    bg_sched_free(s0);
    s0 = NULL;
    /* Equal per-layer times still weigh the run's chunks by what they hold. */
    conf(&c, "auto", even);
    CHECK_OK(bg_train_sched_resolve(&c, g1, &s0, why, sizeof(why)));
    CHECK_MSG(s0 && strstr(why, even) && strstr(why, "chunk F+B+W ms"), "account: %s", why);
    /* A transfer latency far above a layer's time moves the choice from two
     * chunks per rank (twice the transfers) to one, and is said. */
    CHECK_MSG(s0 && bg_sched_chunks_per_rank(s0) == 2, "even costs without latency: %s", why);
    bg_sched_free(s0);
    s0 = NULL;
    c.sched_latency_ms = 100;
    CHECK_OK(bg_train_sched_resolve(&c, g1, &s0, why, sizeof(why)));
    CHECK_MSG(s0 && bg_sched_chunks_per_rank(s0) == 1 && strstr(why, "transfer latency 100 ms"),
              "a 100 ms latency: %s", why);
    /* A profile with a fixed schedule is refused, naming the option. */
    conf(&c, "zb-h1", heavy);
    bg_sched_t *s3 = NULL;
    CHECK(bg_train_sched_resolve(&c, g1, &s3, NULL, 0) == BG_ERR_INVALID && !s3);
    CHECK(strstr(bg_last_error(), "--profile") != NULL);
out:
    bg_sched_free(s0), bg_sched_free(s1), bg_sched_free(s2);
    bg_graph_free(g1), bg_graph_free(g2);
}

/* Train 3 steps into workdir/tag with extra args; 1 when it exited 0. */
static int train(const char *tag, const char *extra)
{
    int rc = bg_test_sh("rm -rf '%s/%s' && '%s' train '%s' --data synthetic:images --stages 2 "
                        "--micro-batches 4 --batch 16 --steps 3 --log-every 3 --eval-batches 1 "
                        "--seed 7 --checkpoint-dir '%s/%s' %s > '%s/%s.log' 2>&1",
                        workdir, tag, brigade, model, workdir, tag, extra, workdir, tag);
    if (rc != 0)
        bg_test_sh("tail -5 '%s/%s.log' >&2", workdir, tag);
    return rc == 0;
}

/* The log of workdir/tag holds `what`. */
static int log_has(const char *tag, const char *what)
{
    return bg_test_sh("grep -qF -- '%s' '%s/%s.log'", what, workdir, tag) == 0;
}

/* End to end: auto from the heavy profile trains exactly what 1f1b does. */
static void check_train(const char *heavy)
{
    char extra[600], a[300], b[300];
    snprintf(extra, sizeof(extra), "--schedule auto --profile '%s'", heavy);
    CHECK(train("auto", extra));
    CHECK(train("fixed", "--schedule 1f1b"));
    CHECK_MSG(log_has("auto", "schedule auto: chose 1f1b"), "no account of the choice");
    CHECK_MSG(log_has("auto", heavy), "the account does not name the profile");
    CHECK_MSG(log_has("auto", "(timed at micro-batch 2, scaled to 4)"),
              "the micro-batch rescaling is not said");
    snprintf(a, sizeof(a), "%s/auto", workdir);
    snprintf(b, sizeof(b), "%s/fixed", workdir);
    CHECK_MSG(bg_test_same_checkpoints(a, b), "auto's 1f1b differs from 1f1b");
}

/* Bad input: exit 2 before any rank starts, naming the cause. */
static void check_refusals(const char *heavy, const char *lacking)
{
    const struct {
        const char *args, *says;
    } cases[] = {
        {"--schedule auto --profile /nonexistent/p.json", "/nonexistent/p.json"},
        {"--schedule auto --profile LACKING", "'head'"},
        {"--schedule 1f1b --profile HEAVY", "--profile is for --schedule auto"},
        {"--profile HEAVY", "--profile is for --schedule auto"},
        {"--schedule-mem-cap 2", "--schedule-mem-cap is for --schedule auto"},
        {"--schedule auto --schedule-mem-cap 0.5", "no schedule fits"},
        {"--schedule-latency 5", "--schedule-latency is for --schedule auto"},
        {"--schedule auto --schedule-latency 5", "--schedule-latency needs --profile"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char args[600];
        const char *s = cases[i].args, *h = strstr(s, "HEAVY"), *l = strstr(s, "LACKING");
        if (h)
            snprintf(args, sizeof(args), "%.*s'%s'", (int)(h - s), s, heavy);
        else if (l)
            snprintf(args, sizeof(args), "%.*s'%s'", (int)(l - s), s, lacking);
        else
            snprintf(args, sizeof(args), "%s", s);
        int rc = bg_test_sh("'%s' train '%s' --data synthetic:images --stages 2 --micro-batches 4 "
                            "--batch 16 --steps 1 %s > '%s/bad.log' 2>&1",
                            brigade, model, args, workdir);
        CHECK_MSG(rc == 2, "%s: exit %d, want 2", args, rc);
        CHECK_MSG(bg_test_sh("grep -qF -- \"%s\" '%s/bad.log'", cases[i].says, workdir) == 0,
                  "%s: the message does not say %s", args, cases[i].says);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        TEST_SKIP("usage: test_auto_profile BRIGADE");
    brigade = argv[1];
    const char *src = getenv("BRIGADE_SOURCE_DIR");
    snprintf(model, sizeof(model), "%s/models/uniform-mlp.graph", src ? src : ".");
    if (access(model, R_OK) != 0)
        TEST_SKIP("%s missing", model);
    snprintf(workdir, sizeof(workdir), "/tmp/bg_auto_profile_%d", (int)getpid());
    bg_test_sh("mkdir -p '%s'", workdir);
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(model, 4, &g));
    if (!g)
        return bg_test_finish("test_auto_profile");
    char heavy[300], even[300], lacking[300];
    snprintf(heavy, sizeof(heavy), "%s/heavy-stem.json", workdir);
    snprintf(even, sizeof(even), "%s/even.json", workdir);
    snprintf(lacking, sizeof(lacking), "%s/lacking.json", workdir);
    write_profile(g, heavy, "stem", NULL);
    write_profile(g, even, NULL, NULL);
    write_profile(g, lacking, NULL, "head");
    bg_graph_free(g);
    check_resolve(heavy, even);
    check_train(heavy);
    check_refusals(heavy, lacking);
    if (!bg_test_failures)
        bg_test_sh("rm -rf '%s'", workdir);
    return bg_test_finish("test_auto_profile");
}
