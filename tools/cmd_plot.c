/*
 * tools/cmd_plot.c -- `brigade plot METRICS.jsonl [-o loss.png]`: draw the
 * training loss (and eval loss/accuracy when present) to a PNG with
 * gnuplot. The metrics file is read here (one JSON object per line, the
 * format `brigade train --metrics` writes) and handed to gnuplot as plain
 * columns, so gnuplot never parses JSON.
 * Exit codes: 0 ok, 1 gnuplot missing or failed, 2 bad usage or input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/commands.h"

/* Split METRICS into train (step loss) and eval (step loss accuracy) columns. */
static int split_metrics(const char *in, FILE *train, FILE *eval, int *ntrain, int *neval)
{
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "brigade plot: cannot read %s: %s\n", in, strerror(errno));
        return 2;
    }
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (line[0] == '\n')
            continue;
        cJSON *o = cJSON_Parse(line);
        cJSON *step = o ? cJSON_GetObjectItem(o, "step") : NULL;
        if (o && !step && cJSON_IsString(cJSON_GetObjectItem(o, "run"))) {
            cJSON_Delete(o); /* a run's header line: nothing to plot */
            continue;
        }
        if (!cJSON_IsNumber(step)) {
            fprintf(stderr, "brigade plot: %s:%d: not a metrics line (JSON object with \"step\")\n",
                    in, lineno);
            cJSON_Delete(o);
            fclose(f);
            return 2;
        }
        cJSON *loss = cJSON_GetObjectItem(o, "loss"), *el = cJSON_GetObjectItem(o, "eval_loss");
        cJSON *ea = cJSON_GetObjectItem(o, "eval_accuracy");
        if (cJSON_IsNumber(loss)) {
            fprintf(train, "%g %g\n", step->valuedouble, loss->valuedouble);
            (*ntrain)++;
        }
        if (cJSON_IsNumber(el)) {
            fprintf(eval, "%g %g %g\n", step->valuedouble, el->valuedouble,
                    cJSON_IsNumber(ea) ? ea->valuedouble : 0.0);
            (*neval)++;
        }
        cJSON_Delete(o);
    }
    fclose(f);
    return 0;
}

int bg_cmd_plot(int argc, char **argv)
{
    const char *in = NULL, *out = "loss.png";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: brigade plot METRICS.jsonl [-o loss.png]\n"
                   "Draws training (and eval) loss from `brigade train --metrics` with gnuplot.\n");
            return 0;
        } else if (argv[i][0] == '-' || in) {
            fprintf(stderr, "usage: brigade plot METRICS.jsonl [-o loss.png]\n");
            return 2;
        } else
            in = argv[i];
    }
    if (!in) {
        fprintf(stderr, "usage: brigade plot METRICS.jsonl [-o loss.png]\n");
        return 2;
    }
    if (system("command -v gnuplot > /dev/null 2>&1") != 0) {
        fprintf(stderr, "brigade plot: gnuplot is not installed (apt-get install gnuplot-nox)\n");
        return 1;
    }
    char tdat[] = "/tmp/bg_plot_train_XXXXXX", edat[] = "/tmp/bg_plot_eval_XXXXXX";
    int tf = mkstemp(tdat), ef = mkstemp(edat);
    FILE *t = tf >= 0 ? fdopen(tf, "w") : NULL, *e = ef >= 0 ? fdopen(ef, "w") : NULL;
    int nt = 0, ne = 0, rc = t && e ? split_metrics(in, t, e, &nt, &ne) : 1;
    if (t)
        fclose(t);
    if (e)
        fclose(e);
    if (rc == 0 && !nt) {
        fprintf(stderr, "brigade plot: %s has no training loss lines\n", in);
        rc = 2;
    }
    if (rc == 0) {
        FILE *g = popen("gnuplot", "w");
        if (!g)
            rc = 1;
        else {
            fprintf(g,
                    "set terminal pngcairo size 900,500 noenhanced\n"
                    "set output '%s'\nset title '%s'\nset xlabel 'step'\nset ylabel 'loss'\n"
                    "set grid\nset key top right\n",
                    out, in);
            if (ne)
                fprintf(g,
                        "plot '%s' using 1:2 with lines title 'train loss', '%s' using 1:2 "
                        "with linespoints title 'eval loss'\n",
                        tdat, edat);
            else
                fprintf(g, "plot '%s' using 1:2 with lines title 'train loss'\n", tdat);
            rc = pclose(g) == 0 ? 0 : 1;
            if (rc)
                fprintf(stderr, "brigade plot: gnuplot failed\n");
            else
                printf("wrote %s (%d train points, %d eval points)\n", out, nt, ne);
        }
    }
    unlink(tdat);
    unlink(edat);
    return rc;
}
