/*
 * tests/engine/test_ps.c -- parameter servers end to end through
 * `brigade train --dp-mode ps`: staleness 0 gives the allreduce's bits
 * (S in {1, 2}, D in {2, 3}, one to three servers, dedicated or colocated,
 * a weight tied across stages); --deterministic staleness replays bit for
 * bit, with a straggler and with colocated servers; stale and
 * asynchronous runs finish and report their staleness histogram; a
 * straggler held back by the staleness bound is reported once with its
 * step gap; a
 * checkpoint resumes across modes bit-identically; flags that make no
 * sense together are refused with exit 2; a server that dies is named.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_same.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

#define COMMON "--batch 24 --log-every 100 --eval-batches 1 --seed 7"

/* Train into wd/tag with extra args; 1 on exit status 0. */
static int train(const char *model, const char *data, const char *extra, const char *tag)
{
    return bg_test_sh("rm -rf %s/%s && '%s' train %s/models/%s --data %s " COMMON
                      " --checkpoint-dir %s/%s %s > %s/%s.log 2>&1",
                      wd, tag, brigade, srcdir, model, data, wd, tag, extra, wd, tag) == 0;
}

static int same(const char *a, const char *b)
{
    char pa[400], pb[400];
    snprintf(pa, sizeof(pa), "%s/%s", wd, a);
    snprintf(pb, sizeof(pb), "%s/%s", wd, b);
    return bg_test_same_checkpoints(pa, pb);
}

static void test_sync_equals_allreduce(void)
{
    static const struct {
        int S, D, K, colocate;
    } lay[] = {{1, 2, 1, 0}, {1, 3, 2, 0}, {2, 2, 2, 0}, {2, 3, 1, 0}, {2, 3, 3, 0}, {2, 3, 3, 1}};
    for (size_t i = 0; i < sizeof(lay) / sizeof(lay[0]); i++) {
        char ar[200], ps[300];
        snprintf(ar, sizeof(ar), "--stages %d --dp %d --steps 3", lay[i].S, lay[i].D);
        snprintf(ps, sizeof(ps), "%s --dp-mode ps --ps-servers %d%s", ar, lay[i].K,
                 lay[i].colocate ? " --ps-colocate" : "");
        CHECK(train("mlp-fashion.graph", "synthetic:images", ar, "ar"));
        CHECK(train("mlp-fashion.graph", "synthetic:images", ps, "ps"));
        CHECK_MSG(same("ar", "ps"), "ps at staleness 0 differs from allreduce: S=%d D=%d K=%d%s",
                  lay[i].S, lay[i].D, lay[i].K, lay[i].colocate ? " colocated" : "");
    }
    /* GPT's embedding is tied to its head across the two stages. */
    const char *g = "--stages 2 --dp 2 --micro-batches 2 --steps 2";
    char ps[300];
    snprintf(ps, sizeof(ps), "%s --dp-mode ps --ps-servers 3", g);
    CHECK(train("gpt-tiny.graph", "synthetic:tokens", g, "gar"));
    CHECK(train("gpt-tiny.graph", "synthetic:tokens", ps, "gps"));
    CHECK_MSG(same("gar", "gps"), "ps differs from allreduce with a tied weight");
    printf("staleness 0 == allreduce: checked\n");
}

static void test_stale(void)
{
    const char *a = "--stages 2 --dp 3 --steps 10 --dp-mode ps --ps-servers 2";
    char x[600];
    snprintf(x, sizeof(x), "%s --staleness 2 --deterministic --metrics %s/d1.jsonl", a, wd);
    CHECK(train("mlp-fashion.graph", "synthetic:images", x, "d1"));
    /* Replayed with a straggler and colocated servers: the same bits. */
    snprintf(x, sizeof(x), "%s --staleness 2 --deterministic --ps-colocate", a);
    CHECK(
        bg_test_sh("BRIGADE_TEST_STEP_DELAY=1:30:3 sh -c \"'%s' train %s/models/mlp-fashion.graph "
                   "--data synthetic:images " COMMON " --checkpoint-dir %s/d2 %s\" > %s/d2.log "
                   "2>&1",
                   brigade, srcdir, wd, x, wd) == 0);
    CHECK_MSG(same("d1", "d2"), "a deterministic stale run did not replay bit for bit");
    CHECK_MSG(bg_test_sh("grep -q '\"ps_staleness\":\\[6,6,48,' %s/d1.jsonl", wd) == 0,
              "deterministic staleness 2: not every later step was 2 updates stale");
    snprintf(x, sizeof(x), "%s --staleness 2", a);
    CHECK(train("mlp-fashion.graph", "synthetic:images", x, "ssp"));
    snprintf(x, sizeof(x), "%s --staleness inf", a);
    CHECK(train("mlp-fashion.graph", "synthetic:images", x, "inf"));
    CHECK(bg_test_sh("grep -q 'ps staleness' %s/inf.log", wd) == 0);
    printf("deterministic replay, ssp and asynchronous runs: checked\n");
}

/* Replica 1 (rank 1) sleeps 1.5 s a step: replica 0, held by staleness 1,
 * reports it once with a step gap above 1, and the metrics count it. */
static void test_straggler_report(void)
{
    const char *x = "--dp 2 --steps 5 --dp-mode ps --staleness 1";
    char log[300];
    long long gap = 0, s = 0;
    snprintf(log, sizeof(log), "%s/strag.log", wd);
    CHECK(bg_test_sh("BRIGADE_TEST_STEP_DELAY=1:1500 '%s' train %s/models/mlp-fashion.graph "
                     "--data synthetic:images " COMMON " %s --metrics %s/strag.jsonl > %s 2>&1",
                     brigade, srcdir, x, wd, log) == 0);
    FILE *f = fopen(log, "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "(gap ");
        if (strstr(line, "ps straggler: stage 0 dp 0") && p &&
            sscanf(p, "(gap %lld > staleness %lld)", &gap, &s) == 2)
            n++;
    }
    if (f)
        fclose(f);
    CHECK_MSG(n == 1, "%d straggler reports, not one (see %s)", n, log);
    CHECK_MSG(s == 1 && gap > s, "straggler gap %lld at staleness %lld (see %s)", gap, s, log);
    CHECK_MSG(bg_test_sh("grep -q '\"ps_stragglers\":[1-9]' %s/strag.jsonl", wd) == 0,
              "the straggler is not in the metrics file");
    printf("straggler reported with gap %lld > %lld\n", gap, s);
}

static void test_resume_across_modes(void)
{
    const char *a = "--stages 2 --dp 2 --steps 6 --checkpoint-every 3";
    char x[600];
    snprintf(x, sizeof(x), "%s --dp-mode ps --ps-servers 2", a);
    CHECK(train("mlp-fashion.graph", "synthetic:images", a, "full"));
    for (int ps_first = 0; ps_first < 2; ps_first++) {
        CHECK(train("mlp-fashion.graph", "synthetic:images", ps_first ? x : a, "half"));
        CHECK(bg_test_sh("rm -rf %s/half/step-000006 && printf step-000003 > %s/half/latest", wd,
                         wd) == 0);
        CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph --data synthetic:images " COMMON
                         " --checkpoint-dir %s/half %s --resume > %s/half.resume.log 2>&1",
                         brigade, srcdir, wd, ps_first ? a : x, wd) == 0);
        CHECK_MSG(same("full", "half"), "resume from %s into %s is not bit-identical",
                  ps_first ? "ps" : "allreduce", ps_first ? "allreduce" : "ps");
    }
    printf("resume across modes: checked\n");
}

static void test_bad_flags(void)
{
    static const char *bad[] = {"--staleness 2",
                                "--ps-servers 2",
                                "--deterministic",
                                "--dp-mode ps --ps-servers 0",
                                "--dp-mode ps --staleness -1",
                                "--dp-mode ps --staleness inf --deterministic",
                                "--dp-mode ps --ps-colocate --ps-servers 2",
                                "--dp-mode ps --schedule 2bw",
                                "--dp-mode ps --zero 1",
                                "--ps-colocate"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = bg_test_sh("'%s' train %s/models/mlp-fashion.graph --data synthetic:images %s "
                            "> %s/bad.log 2>&1",
                            brigade, srcdir, bad[i], wd);
        CHECK_MSG(rc == 2, "'%s' exited %d, not 2", bad[i], rc);
    }
    printf("bad flag combinations: exit 2\n");
}

/* Kill the server rank (rank S*D = 2) of a long run: the launcher names it. */
static void test_server_dies(void)
{
    char log[300];
    snprintf(log, sizeof(log), "%s/die.log", wd);
    int rc = bg_test_sh(
        "(BRIGADE_TEST_STEP_DELAY=0:20 '%s' train %s/models/mlp-fashion.graph --data "
        "synthetic:images --dp 2 --steps 100000 --dp-mode ps --log-every 100000 --metrics "
        "%s/die_marker > %s 2>&1 &) ; for i in $(seq 100); do sleep 0.1; for p in $(pgrep -f "
        "'[d]ie_marker'); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx "
        "BRIGADE_RANK=2 && kill -9 $p && exit 0; done; done; exit 1",
        brigade, srcdir, wd, log);
    CHECK_MSG(rc == 0, "the server rank did not start");
    CHECK(bg_test_sh("for i in $(seq 150); do pgrep -f '[d]ie_marker' >/dev/null || exit 0; "
                     "sleep 0.1; done; exit 1") == 0);
    CHECK_MSG(bg_test_sh("grep -q 'rank 2 (ps server 0)' %s", log) == 0,
              "the dead server is not named (see %s)", log);
    printf("a dead server is named\n");
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "test_ps", &brigade, &srcdir, wd, sizeof(wd)))
        return 1;
    test_bad_flags();
    test_sync_equals_allreduce();
    test_stale();
    test_straggler_report();
    test_resume_across_modes();
    test_server_dies();
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_ps");
}
