/*
 * tests/tools/test_cli.c -- every command's options as a user types them.
 * The option list comes from the binary itself (`brigade help --options`,
 * made from the same tables as the parser), so a new option is covered
 * without touching this file: each numeric option refuses non-numbers,
 * trailing junk, blanks, negatives and zero where its range excludes them,
 * and huge values (1e30, 2^64), with exit 2 and a message naming it; every
 * command refuses an unknown option and a missing value. Then: `-o -` writes the file to stdout,
 * `--json` output parses (cJSON) with nothing else on stdout, `brigade plot` picks the latest run
 * of a metrics file or every run, and `brigade eval` refuses incomplete requests. argv[1]: the
 * brigade binary. Models come from BRIGADE_SOURCE_DIR. Must not write outside its own temporary
 * directory.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "test_util.h"

static const char *brigade, *srcdir;
static char tmp[256], model[512], text[512], metrics[512];

/* The whole of file `path` as a string (caller frees); "" when unreadable. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int c;
    while (f && (c = fgetc(f)) != EOF) {
        if (n + 2 > cap) {
            cap = cap ? 2 * cap : 4096;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        buf[n++] = (char)c;
    }
    if (f)
        fclose(f);
    if (!buf)
        buf = calloc(1, 1);
    else
        buf[n] = 0;
    return buf;
}

/* Run `brigade ARGS` (a shell fragment); stdout and stderr go to files in
 * tmp, returned read into *out / *err (may be NULL). The exit code. */
static int run(char **out, char **err, const char *fmt, ...)
{
    char args[2048], cmd[4096], o[300], e[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(o, sizeof(o), "%s/out", tmp);
    snprintf(e, sizeof(e), "%s/err", tmp);
    snprintf(cmd, sizeof(cmd), "'%s' %s > '%s' 2> '%s' < /dev/null", brigade, args, o, e);
    int st = system(cmd);
    if (out)
        *out = slurp(o);
    if (err)
        *err = slurp(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The arguments a command needs besides the option under test. */
static const char *positional(const char *cmd)
{
    static char buf[1100];
    if (!strcmp(cmd, "data"))
        snprintf(buf, sizeof(buf), "'%s' -o '%s/shards'", text, tmp);
    else if (!strcmp(cmd, "plot"))
        snprintf(buf, sizeof(buf), "'%s'", metrics);
    else if (!strcmp(cmd, "schedule"))
        snprintf(buf, sizeof(buf), "--stages 2 --micro-batches 2");
    else
        snprintf(buf, sizeof(buf), "'%s'", model);
    return buf;
}

/* `brigade cmd ... --opt value` must exit 2 naming --opt. */
static void expect_refused(const char *cmd, const char *opt, const char *value, const char *why)
{
    char *err = NULL, want[128];
    int rc = run(NULL, &err, "%s %s --%s '%s'", cmd, positional(cmd), opt, value);
    snprintf(want, sizeof(want), "--%s", opt);
    CHECK_MSG(rc == 2, "brigade %s --%s '%s' (%s) exited %d, want 2", cmd, opt, value, why, rc);
    CHECK_MSG(strstr(err, want) != NULL, "brigade %s --%s '%s' (%s): message does not name %s: %s",
              cmd, opt, value, why, want, err);
    free(err);
}

typedef struct row {
    char cmd[32], name[64], kind[16];
    double min, max;
} row_t;

/* The bad values of the brief for one numeric option; the rarer tricks
 * (blanks, hex, nan, 1.5, --opt=value) go through the same code and are
 * tried once in test_tricks. */
static void check_numeric(const row_t *r)
{
    expect_refused(r->cmd, r->name, "abc", "not a number");
    expect_refused(r->cmd, r->name, "5x", "trailing junk");
    if (r->min >= 0)
        expect_refused(r->cmd, r->name, "-1", "negative");
    if (r->min > 0)
        expect_refused(r->cmd, r->name, "0", "zero");
    if (r->max < 1e30)
        expect_refused(r->cmd, r->name, "1e30", "huge");
    if (r->max < 18446744073709551616.0)
        expect_refused(r->cmd, r->name, "18446744073709551616", "2^64");
}

/* Whitespace and notation tricks, on an integer and a real option. */
static void test_tricks(void)
{
    static const char *const bad[] = {"",    " 5",  "5 ", "\t5", "+5", "0x10",
                                      "nan", "inf", "1e", "--5", "5-"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_refused("train", "stages", bad[i], "trick");
        expect_refused("train", "lr", bad[i], "trick");
    }
    expect_refused("train", "stages", "1.5", "not an integer");
    char *err = NULL;
    int rc = run(NULL, &err, "train '%s' --batch=abc", model);
    CHECK_MSG(rc == 2 && strstr(err, "--batch: 'abc'"), "--batch=abc exited %d: %s", rc, err);
    free(err);
}

/* Every option of every command, from the binary's own table. */
static void test_option_table(void)
{
    char *out = NULL;
    CHECK(run(&out, NULL, "help --options") == 0);
    int n = 0, numeric = 0;
    char last_cmd[32] = "", last_missing[32] = "";
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        row_t r;
        if (sscanf(line, "%31[^\t]\t%63[^\t]\t%15[^\t]\t%lf\t%lf", r.cmd, r.name, r.kind, &r.min,
                   &r.max) != 5) {
            CHECK_MSG(0, "bad option line '%s'", line);
            continue;
        }
        n++;
        if (strcmp(r.cmd, last_cmd)) { /* once per command: an unknown option */
            char *err = NULL;
            int rc = run(NULL, &err, "%s %s --no-such-option", r.cmd, positional(r.cmd));
            CHECK_MSG(rc == 2 && strstr(err, "unknown option '--no-such-option'"),
                      "brigade %s --no-such-option exited %d: %s", r.cmd, rc, err);
            free(err);
            snprintf(last_cmd, sizeof(last_cmd), "%s", r.cmd);
        }
        if (strcmp(r.kind, "flag") && strcmp(r.cmd, last_missing)) {
            /* once per command: a value-taking option at the end, its value missing */
            snprintf(last_missing, sizeof(last_missing), "%s", r.cmd);
            char *err = NULL;
            int rc = run(NULL, &err, "%s %s --%s", r.cmd, positional(r.cmd), r.name);
            CHECK_MSG(rc == 2 && strstr(err, r.name) && strstr(err, "missing value"),
                      "brigade %s --%s (no value) exited %d: %s", r.cmd, r.name, rc, err);
            free(err);
        }
        if (!strcmp(r.kind, "int") || !strcmp(r.kind, "int64") || !strcmp(r.kind, "uint64") ||
            !strcmp(r.kind, "double")) {
            check_numeric(&r);
            numeric++;
        }
    }
    free(out);
    CHECK_MSG(n >= 60 && numeric >= 30, "only %d options (%d numeric) listed", n, numeric);
    printf("options: %d rows, %d numeric, all refused bad values with exit 2\n", n, numeric);
}

/* The messages the task promises, word for word. */
static void test_messages(void)
{
    char *err = NULL;
    CHECK(run(NULL, &err, "profile '%s' --batch 16abc", model) == 2);
    CHECK_MSG(strstr(err, "brigade profile: --batch: '16abc' is not an integer"), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "profile '%s' --batch 1e30", model) == 2);
    CHECK_MSG(strstr(err, "brigade profile: --batch: 1e30 is out of range (1.."), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "schedule --stages 4294967300 --micro-batches 4") == 2);
    CHECK_MSG(strstr(err, "--stages: 4294967300 is out of range"), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "plan '%s' --stages 2 --bogus", model) == 2);
    CHECK_MSG(strstr(err, "unknown option '--bogus'"), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "train '%s' --recompute=1", model) == 2);
    CHECK_MSG(strstr(err, "--recompute takes no value"), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "train '%s' --metrics --steps 5", model) == 2);
    CHECK_MSG(strstr(err, "--metrics: missing value"), "%s", err);
    free(err);
    CHECK(run(NULL, &err, "train '%s' --device tpu", model) == 2);
    CHECK_MSG(strstr(err, "--device: 'tpu' is not one of cpu, cuda"), "%s", err);
    free(err);
}

/* stdout must hold exactly one JSON value; returns it (caller frees) or NULL. */
static cJSON *json_of(const char *what, const char *out)
{
    cJSON *j = cJSON_Parse(out);
    CHECK_MSG(j != NULL, "%s: stdout is not JSON: %.200s", what, out);
    return j;
}

static void test_json_and_stdout(void)
{
    char *out = NULL, *err = NULL;
    cJSON *j;
    CHECK(run(&out, NULL, "check '%s' --json", model) == 0);
    j = json_of("check --json", out);
    CHECK(j && cJSON_IsArray(cJSON_GetObjectItem(j, "layers")));
    cJSON_Delete(j), free(out);

    CHECK(run(&out, NULL, "check --kinds --json") == 0);
    j = json_of("check --kinds --json", out);
    CHECK(j && cJSON_GetArraySize(j) > 5);
    cJSON_Delete(j), free(out);

    CHECK(run(&out, &err, "plan '%s' --stages 2 --json", model) == 0);
    j = json_of("plan --json", out);
    CHECK(j && cJSON_GetObjectItem(j, "format") &&
          !strcmp(cJSON_GetObjectItem(j, "format")->valuestring, "brigade-plan"));
    cJSON_Delete(j), free(out), free(err);

    /* -o -: the plan on stdout, the table on stderr */
    CHECK(run(&out, &err, "plan '%s' --stages 2 -o -", model) == 0);
    j = json_of("plan -o -", out);
    CHECK(j && cJSON_GetObjectItem(j, "stages"));
    CHECK_MSG(strstr(err, "predicted step"), "plan -o -: the table should go to stderr: %s", err);
    CHECK_MSG(access("-", F_OK) != 0, "plan -o - wrote a file named '-'");
    cJSON_Delete(j), free(out), free(err);
    CHECK(run(NULL, NULL, "plan '%s' --stages 2 -o - --json", model) == 2);

    CHECK(run(&out, NULL, "profile '%s' --batch 2 --repeat 1 -o -", model) == 0);
    j = json_of("profile -o -", out);
    CHECK(j != NULL);
    cJSON_Delete(j), free(out);
    CHECK(run(&out, NULL, "profile '%s' --batch 2 --repeat 1 --json", model) == 0);
    j = json_of("profile --json", out);
    CHECK(j != NULL);
    cJSON_Delete(j), free(out);

    CHECK(run(&out, NULL, "schedule --stages 4 --micro-batches 8 --schedule zb-h1 --json") == 0);
    j = json_of("schedule --json", out);
    cJSON *mk = j ? cJSON_GetObjectItem(j, "makespan") : NULL;
    CHECK_MSG(mk && mk->valuedouble == 27, "schedule --json: makespan should be 27");
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "ranks")) == 4);
    cJSON_Delete(j), free(out);

    CHECK(run(NULL, &err, "data '%s' -o -", text) == 2);
    CHECK_MSG(strstr(err, "-o -"), "data -o -: %s", err);
    free(err);
    printf("--json and -o -: JSON on stdout, nothing else\n");
}

/* Two runs (headers as the engine writes them), then plot --json. */
static void test_plot_runs(void)
{
    FILE *f = fopen(metrics, "w");
    if (!f) {
        CHECK_MSG(0, "cannot write %s", metrics);
        return;
    }
    fprintf(f, "{\"run\":\"r1\",\"model\":\"m.graph\",\"stages\":2}\n");
    for (int i = 1; i <= 5; i++)
        fprintf(f, "{\"run\":\"r1\",\"step\":%d,\"loss\":%.2f}\n", i, 3.0 - 0.1 * i);
    fprintf(f, "{\"run\":\"r1\",\"step\":5,\"eval_loss\":2.5,\"eval_accuracy\":0.4}\n");
    fprintf(f, "{\"run\":\"r2\",\"model\":\"m.graph\",\"stages\":4}\n");
    for (int i = 1; i <= 3; i++)
        fprintf(f, "{\"run\":\"r2\",\"step\":%d,\"loss\":%.2f}\n", i, 2.0 - 0.1 * i);
    fclose(f);
    char *out = NULL;
    CHECK(run(&out, NULL, "plot '%s' --json", metrics) == 0);
    cJSON *j = json_of("plot --json", out), *runs = j ? cJSON_GetObjectItem(j, "runs") : NULL;
    cJSON *r0 = cJSON_GetArrayItem(runs, 0);
    CHECK_MSG(cJSON_GetArraySize(runs) == 1 &&
                  !strcmp(cJSON_GetObjectItem(r0, "run")->valuestring, "r2") &&
                  cJSON_GetArraySize(cJSON_GetObjectItem(r0, "train")) == 3,
              "plot should draw only the latest run (r2, 3 points): %.300s", out);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(r0, "header"), "stages")->valueint == 4);
    cJSON_Delete(j), free(out);

    CHECK(run(&out, NULL, "plot '%s' --json --all-runs", metrics) == 0);
    j = json_of("plot --all-runs", out);
    runs = j ? cJSON_GetObjectItem(j, "runs") : NULL;
    r0 = cJSON_GetArrayItem(runs, 0);
    CHECK_MSG(cJSON_GetArraySize(runs) == 2 &&
                  cJSON_GetArraySize(cJSON_GetObjectItem(r0, "train")) == 5 &&
                  cJSON_GetArraySize(cJSON_GetObjectItem(r0, "eval")) == 1,
              "--all-runs should give r1 (5 train, 1 eval) and r2: %.300s", out);
    cJSON_Delete(j), free(out);

    CHECK(run(&out, NULL, "plot '%s' --json --run r1", metrics) == 0);
    j = json_of("plot --run r1", out);
    runs = j ? cJSON_GetObjectItem(j, "runs") : NULL;
    CHECK(cJSON_GetArraySize(runs) == 1 &&
          cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 0), "train")) == 5);
    cJSON_Delete(j), free(out);
    CHECK(run(NULL, NULL, "plot '%s' --json --run nope", metrics) == 2);
    if (system("command -v gnuplot > /dev/null 2>&1") == 0) {
        CHECK(run(&out, NULL, "plot '%s' --all-runs -o '%s/all.png'", metrics, tmp) == 0);
        CHECK_MSG(strstr(out, "2 runs, 8 train points, 1 eval points"), "plot: %s", out);
        free(out);
        CHECK(run(&out, NULL, "plot '%s' -o -", metrics) == 0);
        CHECK_MSG(strlen(out) >= 4 && !strncmp(out + 1, "PNG", 3),
                  "plot -o - did not write a PNG to stdout");
        free(out);
    } else {
        printf("plot: drawing skipped (gnuplot not installed)\n");
    }

    /* A file from before runs were named is one run. */
    f = fopen(metrics, "w");
    for (int i = 1; f && i <= 4; i++)
        fprintf(f, "{\"step\":%d,\"loss\":%.2f}\n", i, 1.0 / i);
    if (f)
        fclose(f);
    CHECK(run(&out, NULL, "plot '%s' --json --all-runs", metrics) == 0);
    j = json_of("plot (no runs)", out);
    runs = j ? cJSON_GetObjectItem(j, "runs") : NULL;
    CHECK(cJSON_GetArraySize(runs) == 1 &&
          cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 0), "train")) == 4);
    cJSON_Delete(j), free(out);
    printf("plot: latest run, --all-runs and --run picked from a two-run file\n");
}

static void test_eval_usage(void)
{
    char *err = NULL;
    CHECK(run(NULL, &err, "eval '%s' --data synthetic", model) == 2);
    CHECK_MSG(strstr(err, "--init") && strstr(err, "--resume"), "eval without weights: %s", err);
    free(err);
    CHECK(run(NULL, NULL, "eval '%s' --init x.safetensors --resume --checkpoint-dir d", model) ==
          2);
    CHECK(run(NULL, &err, "eval '%s' --init x --steps 5", model) == 2);
    CHECK_MSG(strstr(err, "unknown option '--steps'"), "eval --steps: %s", err);
    free(err);
    CHECK(run(NULL, &err, "eval '%s' --resume", model) == 2);
    CHECK_MSG(strstr(err, "--checkpoint-dir"), "eval --resume alone: %s", err);
    free(err);
    char *out = NULL;
    CHECK(run(&out, NULL, "eval --help") == 0);
    CHECK_MSG(strstr(out, "--stages") && strstr(out, "--data") && !strstr(out, "--lr"),
              "eval --help should list layout and data options, not the optimizer's");
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        TEST_SKIP("usage: test_cli BRIGADE");
    brigade = argv[1];
    srcdir = getenv("BRIGADE_SOURCE_DIR");
    if (!srcdir)
        srcdir = ".";
    snprintf(tmp, sizeof(tmp), "%s/bg_cli_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp))
        TEST_SKIP("cannot make a temporary directory");
    if (chdir(tmp) != 0) /* a stray "-" file would land here, where we look for it */
        TEST_SKIP("cannot enter %s", tmp);
    snprintf(model, sizeof(model), "%s/models/mlp-fashion.graph", srcdir);
    snprintf(text, sizeof(text), "%s/in.txt", tmp);
    snprintf(metrics, sizeof(metrics), "%s/m.jsonl", tmp);
    FILE *f = fopen(text, "w");
    for (int i = 0; f && i < 100; i++)
        fprintf(f, "line %d of some text\n", i);
    if (f)
        fclose(f);
    test_plot_runs(); /* leaves a metrics file the option tests use */
    test_messages();
    test_tricks();
    test_json_and_stdout();
    test_eval_usage();
    test_option_table();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return bg_test_finish("test_cli");
}
