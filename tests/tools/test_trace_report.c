/*
 * tests/tools/test_trace_report.c -- a training trace and its report, as a
 * user makes them: `brigade train --trace --metrics` with 2 stages x 2
 * replicas, then checks that
 *  - every send's flow event ("s") pairs with exactly one receive's ("f");
 *  - ranks and threads are named, allreduce waits have their own slices,
 *    each rank has a summary;
 *  - `brigade trace report --json` finds 4 ranks, a slowest rank, and a
 *    bubble that agrees with the one train logged for that (only) step.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 * Must not depend on timing beyond the bubble's tolerance.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "test_util.h"

static char wd[256];

static cJSON *load_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    return cJSON_Parse(buf);
}

/* Flow ids seen as starts and as finishes: each must pair exactly once. */
static void check_trace(cJSON *root)
{
    cJSON *ev = cJSON_GetObjectItem(root, "traceEvents"), *e, *g;
    CHECK(cJSON_IsArray(ev));
    int starts = 0, finishes = 0, waits = 0, summaries = 0, threads = 0, unpaired = 0;
    cJSON_ArrayForEach(e, ev)
    {
        const char *ph = cJSON_GetStringValue(cJSON_GetObjectItem(e, "ph"));
        const char *cat = cJSON_GetStringValue(cJSON_GetObjectItem(e, "cat"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(e, "name"));
        if (!ph)
            continue;
        threads += !strcmp(ph, "M") && name && !strcmp(name, "thread_name");
        summaries += !strcmp(ph, "i") && name && !strcmp(name, "summary");
        waits += cat && !strcmp(cat, "ALLREDUCE_WAIT");
        if (strcmp(ph, "s"))
            continue;
        starts++;
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(e, "id"));
        int n = 0;
        cJSON_ArrayForEach(g, ev)
        {
            const char *gph = cJSON_GetStringValue(cJSON_GetObjectItem(g, "ph"));
            const char *gid = cJSON_GetStringValue(cJSON_GetObjectItem(g, "id"));
            n += gph && gid && id && !strcmp(gph, "f") && !strcmp(gid, id) &&
                 cJSON_GetObjectItem(g, "pid")->valueint != cJSON_GetObjectItem(e, "pid")->valueint;
        }
        unpaired += n != 1;
    }
    cJSON_ArrayForEach(e, ev)
    {
        const char *ph = cJSON_GetStringValue(cJSON_GetObjectItem(e, "ph"));
        finishes += ph && !strcmp(ph, "f");
    }
    CHECK_MSG(starts > 0 && starts == finishes && !unpaired,
              "flows: %d starts, %d finishes, %d without exactly one partner", starts, finishes,
              unpaired);
    CHECK_MSG(threads == 8, "thread names: %d (want 2 per rank)", threads);
    CHECK_MSG(summaries == 4, "summaries: %d (want one per rank)", summaries);
    CHECK_MSG(waits >= 4, "allreduce wait slices: %d (want at least one per rank)", waits);
}

/* The bubble train logged in its metrics file for its last step. */
static double logged_bubble(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/m.jsonl", wd);
    FILE *f = fopen(path, "r");
    double b = NAN;
    char line[4096];
    while (f && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, "\"bubble\":");
        if (p)
            b = atof(p + 9);
    }
    if (f)
        fclose(f);
    return b;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_trace_report BRIGADE\n");
        return 2;
    }
    const char *brigade = argv[1], *src = getenv("BRIGADE_SOURCE_DIR");
    snprintf(wd, sizeof(wd), "/tmp/bg_trace_report_%d", (int)getpid());
    CHECK(bg_test_sh("rm -rf %s && mkdir -p %s", wd, wd) == 0);
    CHECK(bg_test_sh("cd %s && '%s' train %s/models/mlp-fashion.graph --data synthetic:images "
                     "--batch 32 --micro-batches 4 --stages 2 --dp 2 --steps 1 --log-every 1 "
                     "--metrics m.jsonl --trace t.json > log 2>&1",
                     wd, brigade, src ? src : ".") == 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/t.json", wd);
    cJSON *trace = load_json(path);
    CHECK_MSG(trace != NULL, "no trace at %s", path);
    if (trace)
        check_trace(trace);
    cJSON_Delete(trace);
    CHECK(bg_test_sh("cd %s && '%s' trace report t.json > report.txt 2>&1 && "
                     "grep -q 'slowest rank' report.txt && "
                     "'%s' trace report t.json --json > report.json",
                     wd, brigade, brigade) == 0);
    CHECK(bg_test_sh("cd %s && '%s' trace nothing t.json > /dev/null 2>&1", wd, brigade) == 2);
    CHECK(bg_test_sh("cd %s && echo '{\"x\":1' > bad.json && '%s' trace report bad.json "
                     "> /dev/null 2>&1", wd, brigade) == 2);
    CHECK(bg_test_sh("cd %s && '%s' trace report missing.json > /dev/null 2>&1", wd, brigade) == 1);
    snprintf(path, sizeof(path), "%s/report.json", wd);
    cJSON *rep = load_json(path);
    CHECK_MSG(rep != NULL, "no report at %s", path);
    if (rep) {
        double got = cJSON_GetNumberValue(cJSON_GetObjectItem(rep, "bubble"));
        double want = logged_bubble();
        CHECK_MSG(fabs(got - want) < 0.01, "report bubble %g, train logged %g", got, want);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(rep, "ranks")) == 4);
        CHECK(cJSON_GetObjectItem(rep, "slowest") != NULL);
    }
    cJSON_Delete(rep);
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_trace_report");
}
