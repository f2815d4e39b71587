/*
 * tools/cmd_plot.c -- `brigade plot METRICS.jsonl [-o loss.png]`: draw the
 * training loss (and eval loss when present) of the latest run in a
 * metrics file, or of every run (--all-runs), to a PNG with gnuplot; or
 * print the points as JSON (--json, no gnuplot needed).
 *
 * A metrics file (what `brigade train --metrics` appends) holds one JSON
 * object per line. A run starts with a header line carrying "run" and no
 * "step"; later lines carry "step" and the same "run". Lines before any
 * header and without "run" (files written before runs were named) form
 * one unnamed run. The file is read here and handed to gnuplot as plain
 * columns, so gnuplot never parses JSON.
 * Exit codes: 0 ok, 1 gnuplot missing or failed, 2 bad usage or input.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/grow.h"
#include "tools/commands.h"
#include "tools/output.h"

typedef struct plot_args {
    const char *out, *run;
    bool all_runs, json;
} plot_args_t;

/* clang-format off */
static const bg_opt_t plot_opts[] = {
    {.name = "output", .short_name = 'o', .kind = BG_OPT_PATH, .metavar = "PNG",
     .help = "the picture; - for standard output", .def = "loss.png",
     .off = offsetof(plot_args_t, out)},
    {.name = "all-runs", .kind = BG_OPT_FLAG,
     .help = "one curve per run in the file, not only the latest",
     .off = offsetof(plot_args_t, all_runs)},
    {.name = "run", .kind = BG_OPT_STRING, .metavar = "ID", .help = "draw the run named ID",
     .off = offsetof(plot_args_t, run)},
    {.name = "json", .kind = BG_OPT_FLAG,
     .help = "print the chosen runs' points as JSON instead of drawing (no gnuplot needed)",
     .off = offsetof(plot_args_t, json)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const plot_tables[] = {plot_opts, NULL};

const bg_cmd_spec_t bg_plot_spec = {
    .name = "plot",
    .args = "METRICS.jsonl [options]",
    .summary = "draw the loss curves of a --metrics file (gnuplot)",
    .about = "Draws training (and eval) loss of the latest run in a `brigade train --metrics` "
             "file; --all-runs draws every run.",
    .tables = plot_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "METRICS",
    .run = bg_cmd_plot,
};

typedef struct point {
    double step, loss, acc;
} point_t;

typedef struct run {
    char *id;      /* "" for the unnamed run */
    cJSON *header; /* the run's header line, or NULL */
    point_t *train, *eval;
    size_t ntrain, neval, cap_train, cap_eval;
} run_t;

typedef struct runs {
    run_t *r;
    size_t n, cap;
} runs_t;

static void runs_free(runs_t *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].id);
        cJSON_Delete(rs->r[i].header);
        free(rs->r[i].train);
        free(rs->r[i].eval);
    }
    free(rs->r);
}

/* The run named id, made at the end when new; NULL when out of memory. */
static run_t *run_get(runs_t *rs, const char *id)
{
    for (size_t i = rs->n; i-- > 0;)
        if (!strcmp(rs->r[i].id, id))
            return &rs->r[i];
    char *copy = strdup(id);
    if (!copy || bg_grow(&rs->r, &rs->cap, rs->n + 1, sizeof(run_t))) {
        free(copy);
        return NULL;
    }
    rs->r[rs->n] = (run_t){.id = copy};
    return &rs->r[rs->n++];
}

static int add_point(point_t **a, size_t *n, size_t *cap, point_t p)
{
    if (bg_grow(a, cap, *n + 1, sizeof(point_t)))
        return -1;
    (*a)[(*n)++] = p;
    return 0;
}

/* One parsed line into its run: 0 ok, -1 out of memory, -2 not a metrics line. */
static int take_line(runs_t *rs, const char **current, cJSON *o)
{
    cJSON *step = cJSON_GetObjectItem(o, "step"), *id = cJSON_GetObjectItem(o, "run");
    if (cJSON_IsString(id) && !step) {
        run_t *r = run_get(rs, id->valuestring);
        if (!r)
            return -1;
        cJSON_Delete(r->header);
        r->header = cJSON_Duplicate(o, 1);
        *current = r->id;
        return 0;
    }
    if (!cJSON_IsNumber(step))
        return -2;
    run_t *r = run_get(rs, cJSON_IsString(id) ? id->valuestring : *current);
    if (!r)
        return -1;
    cJSON *loss = cJSON_GetObjectItem(o, "loss"), *el = cJSON_GetObjectItem(o, "eval_loss");
    cJSON *ea = cJSON_GetObjectItem(o, "eval_accuracy");
    if (cJSON_IsNumber(loss) && add_point(&r->train, &r->ntrain, &r->cap_train,
                                          (point_t){step->valuedouble, loss->valuedouble, 0}))
        return -1;
    if (cJSON_IsNumber(el) && add_point(&r->eval, &r->neval, &r->cap_eval,
                                        (point_t){step->valuedouble, el->valuedouble,
                                                  cJSON_IsNumber(ea) ? ea->valuedouble : 0.0}))
        return -1;
    return 0;
}

/* Read METRICS into runs, in the order they first appear; an exit code. */
static int read_metrics(const char *in, runs_t *rs)
{
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "brigade plot: cannot read %s: %s\n", in, strerror(errno));
        return 2;
    }
    char *line = NULL;
    size_t cap = 0;
    const char *current = "";
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        if (line[0] == '\n')
            continue;
        cJSON *o = cJSON_Parse(line);
        int r = o ? take_line(rs, &current, o) : -2;
        cJSON_Delete(o);
        if (r == -2)
            fprintf(stderr,
                    "brigade plot: %s:%d: not a metrics line (JSON object with \"step\", or a "
                    "run header with \"run\")\n",
                    in, lineno);
        else if (r == -1)
            fprintf(stderr, "brigade plot: %s: out of memory\n", in);
        rc = r == -2 ? 2 : r == -1 ? 1 : 0;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Which runs to draw: [first, end) of rs; an exit code. */
static int choose_runs(const runs_t *rs, const plot_args_t *a, const char *in, size_t *first,
                       size_t *end)
{
    *first = 0;
    *end = rs->n;
    if (a->run) {
        for (size_t i = 0; i < rs->n; i++)
            if (!strcmp(rs->r[i].id, a->run)) {
                *first = i, *end = i + 1;
                return 0;
            }
        fprintf(stderr, "brigade plot: %s has no run '%s'\n", in, a->run);
        return 2;
    }
    if (!a->all_runs && rs->n)
        *first = rs->n - 1;
    size_t nt = 0;
    for (size_t i = *first; i < *end; i++)
        nt += rs->r[i].ntrain;
    if (!nt) {
        fprintf(stderr, "brigade plot: %s has no training loss lines%s\n", in,
                rs->n > 1 && !a->all_runs ? " in its latest run" : "");
        return 2;
    }
    return 0;
}

static cJSON *points_json(const point_t *p, size_t n, bool acc)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        double v[3] = {p[i].step, p[i].loss, p[i].acc};
        cJSON_AddItemToArray(arr, cJSON_CreateDoubleArray(v, acc ? 3 : 2));
    }
    return arr;
}

/* {"file":..., "runs":[{"run","header","train":[[step,loss]],"eval":[[step,loss,acc]]}]} */
static int print_json(const runs_t *rs, size_t first, size_t end, const char *in)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "file", in);
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (size_t i = first; i < end; i++) {
        const run_t *r = &rs->r[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "run", r->id);
        if (r->header)
            cJSON_AddItemToObject(o, "header", cJSON_Duplicate(r->header, 1));
        cJSON_AddItemToObject(o, "train", points_json(r->train, r->ntrain, false));
        cJSON_AddItemToObject(o, "eval", points_json(r->eval, r->neval, true));
        cJSON_AddItemToArray(runs, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "brigade plot: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* The gnuplot script: one train (and eval) curve per chosen run, each run a
 * data block of its own (gnuplot's `index`). Points go to the files tdat/edat. */
static void write_script(FILE *g, FILE *t, FILE *e, const runs_t *rs, size_t first, size_t end,
                         const plot_args_t *a, const char *in, const char *tdat, const char *edat)
{
    fprintf(g, "set terminal pngcairo size 900,500 noenhanced\n");
    if (!bg_out_is_stdout(a->out))
        fprintf(g, "set output '%s'\n", a->out);
    fprintf(g,
            "set title '%s'\nset xlabel 'step'\nset ylabel 'loss'\nset grid\n"
            "set key top right\nplot ",
            in);
    int ti = 0, ei = 0;
    for (size_t i = first; i < end; i++) {
        const run_t *r = &rs->r[i];
        char name[160] = "";
        if (end - first > 1 || r->id[0])
            snprintf(name, sizeof(name), " (%s)", r->id[0] ? r->id : "unnamed run");
        if (r->ntrain) {
            for (size_t k = 0; k < r->ntrain; k++)
                fprintf(t, "%g %g\n", r->train[k].step, r->train[k].loss);
            fprintf(t, "\n\n");
            fprintf(g, "%s'%s' index %d using 1:2 with lines title 'train loss%s'",
                    ti + ei ? ", " : "", tdat, ti, name);
            ti++;
        }
        if (r->neval) {
            for (size_t k = 0; k < r->neval; k++)
                fprintf(e, "%g %g %g\n", r->eval[k].step, r->eval[k].loss, r->eval[k].acc);
            fprintf(e, "\n\n");
            fprintf(g, "%s'%s' index %d using 1:2 with linespoints title 'eval loss%s'",
                    ti + ei ? ", " : "", edat, ei, name);
            ei++;
        }
    }
    fprintf(g, "\n");
}

/* Draw with gnuplot; an exit code. */
static int draw(const runs_t *rs, size_t first, size_t end, const plot_args_t *a, const char *in)
{
    if (system("command -v gnuplot > /dev/null 2>&1") != 0) {
        fprintf(stderr, "brigade plot: gnuplot is not installed (apt-get install gnuplot-nox)\n");
        return 1;
    }
    char tdat[] = "/tmp/bg_plot_train_XXXXXX", edat[] = "/tmp/bg_plot_eval_XXXXXX";
    int tf = mkstemp(tdat), ef = mkstemp(edat);
    FILE *t = tf >= 0 ? fdopen(tf, "w") : NULL, *e = ef >= 0 ? fdopen(ef, "w") : NULL;
    FILE *g = t && e ? popen("gnuplot", "w") : NULL;
    int rc = 1;
    if (g) {
        write_script(g, t, e, rs, first, end, a, in, tdat, edat);
        fclose(t), fclose(e);
        t = e = NULL;
        fflush(stdout); /* gnuplot may write the PNG to our stdout */
        rc = pclose(g) == 0 ? 0 : 1;
    }
    if (t)
        fclose(t);
    if (e)
        fclose(e);
    size_t nt = 0, ne = 0;
    for (size_t i = first; i < end; i++)
        nt += rs->r[i].ntrain, ne += rs->r[i].neval;
    if (rc)
        fprintf(stderr, "brigade plot: gnuplot failed\n");
    else
        fprintf(bg_out_is_stdout(a->out) ? stderr : stdout,
                "wrote %s (%zu run%s, %zu train points, %zu eval points)\n", a->out, end - first,
                end - first == 1 ? "" : "s", nt, ne);
    unlink(tdat);
    unlink(edat);
    return rc;
}

int bg_cmd_plot(int argc, char **argv)
{
    plot_args_t a = {.out = "loss.png"};
    char *pos[1];
    int npos, rc = bg_opt_parse(&bg_plot_spec, argc, argv, &a, pos, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (a.run && a.all_runs)
        return bg_opt_usage_error(&bg_plot_spec, "--run and --all-runs exclude each other");
    runs_t rs = {0};
    size_t first, end;
    rc = read_metrics(pos[0], &rs);
    if (rc == 0)
        rc = choose_runs(&rs, &a, pos[0], &first, &end);
    if (rc == 0)
        rc = a.json ? print_json(&rs, first, end, pos[0]) : draw(&rs, first, end, &a, pos[0]);
    runs_free(&rs);
    return rc;
}
