/*
 * bench/pipeline/bench_pipeline.c -- measured pipelines next to their
 * predictions: for each schedule, train a few steps of a model through
 * `brigade train --trace`, take the last step's timeline, and print
 *   - the measured pipeline span next to the simulator's makespan for the
 *     same lists with the per-action costs measured in that very run,
 *   - the measured bubble next to the simulator's and the closed form, all
 *     three the one bubble of docs/schedules.md (bg_bubble: the step's
 *     global span, from the first action's start to the last's end).
 * Every schedule of the table and `auto`, or only --schedule NAME (so that a
 * script can interleave and repeat runs: bench/schedule/bench_measured.sh).
 * usage: bench_pipeline BRIGADE [MODEL] [--stages P] [--micro-batches M] [--batch N]
 *                       [--schedule NAME]
 * Must not judge: it prints ratios; CI never runs it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/schedule.h"
#include "engine/sim.h"

#define MAXR 16
#define MAXC 64

typedef struct measured {
    double span_s, bubble, busy_s;
    double f[MAXC], b[MAXC], w[MAXC], bw[MAXC];
    int nf[MAXC], nb[MAXC], nw[MAXC], nbw[MAXC];
    double send_s, opt_s;
    int nsend, nopt;
} measured_t;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    return s;
}

static int parse_trace(const char *path, int p, measured_t *m)
{
    memset(m, 0, sizeof(*m));
    char *text = slurp(path);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *ev = root ? cJSON_GetObjectItem(root, "traceEvents") : NULL;
    if (!cJSON_IsArray(ev)) {
        fprintf(stderr, "bench_pipeline: cannot read trace %s\n", path);
        cJSON_Delete(root);
        return 0;
    }
    bg_bubble_rank_t rk[MAXR];
    double busy = 0;
    for (int r = 0; r < MAXR; r++)
        rk[r] = (bg_bubble_rank_t){INFINITY, -INFINITY, 0};
    cJSON *e;
    cJSON_ArrayForEach(e, ev)
    {
        cJSON *ph = cJSON_GetObjectItem(e, "ph"), *cat = cJSON_GetObjectItem(e, "cat");
        if (!cJSON_IsString(ph) || strcmp(ph->valuestring, "X") || !cJSON_IsString(cat))
            continue;
        int r = cJSON_GetObjectItem(e, "pid")->valueint;
        double ts = cJSON_GetObjectItem(e, "ts")->valuedouble * 1e-6;
        double dur = cJSON_GetObjectItem(e, "dur")->valuedouble * 1e-6;
        int c = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "args"), "chunk")->valueint;
        if (r < 0 || r >= MAXR || c >= MAXC)
            continue;
        if (ts < rk[r].t0)
            rk[r].t0 = ts;
        if (ts + dur > rk[r].t1)
            rk[r].t1 = ts + dur;
        const char *k = cat->valuestring;
        if (!strcmp(k, "OPTIMIZER"))
            rk[r].busy += dur, m->opt_s += dur, m->nopt++;
        else if (!strcmp(k, "ALLREDUCE_WAIT")) /* inside the OPTIMIZER's slice */
            rk[r].busy -= dur;
        else if (!strcmp(k, "F"))
            m->f[c] += dur, m->nf[c]++, rk[r].busy += dur;
        else if (!strcmp(k, "B"))
            m->b[c] += dur, m->nb[c]++, rk[r].busy += dur;
        else if (!strcmp(k, "W"))
            m->w[c] += dur, m->nw[c]++, rk[r].busy += dur;
        else if (!strcmp(k, "BW"))
            m->bw[c] += dur, m->nbw[c]++, rk[r].busy += dur;
        else if (!strncmp(k, "SEND", 4))
            m->send_s += dur, m->nsend++;
    }
    /* The one bubble (docs/schedules.md): the step's global span over ranks. */
    double start = INFINITY, end = -INFINITY;
    for (int r = 0; r < p; r++) {
        start = rk[r].t0 < start ? rk[r].t0 : start;
        end = rk[r].t1 > end ? rk[r].t1 : end;
        busy += rk[r].busy;
    }
    m->span_s = end - start;
    m->busy_s = busy;
    m->bubble = bg_bubble(rk, p);
    for (int c = 0; c < MAXC; c++) {
        if (m->nf[c])
            m->f[c] /= m->nf[c];
        if (m->nb[c])
            m->b[c] /= m->nb[c];
        if (m->nw[c])
            m->w[c] /= m->nw[c];
        if (m->nbw[c])
            m->bw[c] /= m->nbw[c];
    }
    if (m->nsend)
        m->send_s /= m->nsend;
    if (m->nopt)
        m->opt_s /= m->nopt;
    cJSON_Delete(root);
    return 1;
}

/* The table's closed-form bubble for p ranks with the measured mean
 * per-rank costs (each rank's chunks summed). */
static double theory(bg_sched_kind_t k, int p, int m, int v, const double *f, const double *b,
                     const double *w)
{
    bg_sched_cost_t rank = {0, 0, 0, 0, 0};
    for (int c = 0; c < p * v && c < MAXC; c++) {
        rank.f += f[c] / p;
        rank.b += b[c] / p;
        rank.w += w[c] / p;
    }
    rank.t = rank.f + rank.b + rank.w;
    return rank.t > 0 ? bg_sched_bubble(bg_sched_desc(k), p, m, v, &rank) : -1;
}

/* Train schedule `name` with --trace and print its measured step next to
 * the simulator's for the same lists (bg_sched_resolve, as train builds
 * them) with the costs measured in that run. Returns the measured bubble,
 * -1 when the run failed. */
static double bench_one(const char *brigade, const char *model, const char *name, int p, int m,
                        int batch)
{
    char trace[256], cmd[2048];
    snprintf(trace, sizeof(trace), "/tmp/bench_pipeline_%d_%s.json", (int)getpid(), name);
    snprintf(cmd, sizeof(cmd),
             "'%s' train %s --stages %d --micro-batches %d --batch %d --schedule %s "
             "--steps 8 --data synthetic:images --log-every 100 --eval-batches 1 "
             "--trace %s > /dev/null 2>&1",
             brigade, model, p, m, batch, name, trace);
    if (system(cmd) != 0) {
        printf("%-12s run failed: %s\n", name, cmd);
        return -1;
    }
    measured_t me;
    if (!parse_trace(trace, p, &me))
        return -1;
    remove(trace);
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    if (bg_sched_resolve(name, p, m, 0, 0, &s) != BG_OK)
        return -1;
    int v = bg_sched_chunks_per_rank(s);
    double f[MAXC], b[MAXC], w[MAXC];
    for (int c = 0; c < p * v && c < MAXC; c++) {
        f[c] = me.f[c];
        /* Fused BW: its whole time is charged as B, as the schedule runs it. */
        b[c] = me.nbw[c] ? me.bw[c] : me.b[c];
        w[c] = me.nbw[c] ? 0 : me.w[c];
    }
    bg_sim_costs_t costs = bg_sim_costs_uniform(0, 0, 0);
    costs.f_chunk = f;
    costs.b_chunk = b;
    costs.w_chunk = w;
    costs.send = me.send_s;
    costs.optimizer = me.opt_s;
    if (bg_sim_run(s, &costs, &sim) != BG_OK) {
        bg_sched_free(s);
        return -1;
    }
    bg_sched_kind_t k;
    double th = bg_sched_kind_parse(bg_sched_name(s), &k) == BG_OK ? theory(k, p, m, v, f, b, w) : -1;
    char ths[16];
    if (th >= 0)
        snprintf(ths, sizeof(ths), "%.1f%%", 100 * th);
    else
        snprintf(ths, sizeof(ths), "n/a");
    printf("%-12s %10.2f %10.2f %7.3f %8.1f%% %8.1f%% %9s  %s\n", name, me.span_s * 1e3,
           bg_sim_makespan(sim) * 1e3, me.span_s / bg_sim_makespan(sim), 100 * me.bubble,
           100 * bg_sim_bubble(sim), ths, bg_sched_name(s));
    bg_sim_free(sim);
    bg_sched_free(s);
    return me.bubble;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_pipeline BRIGADE [MODEL] [--stages P] [--micro-batches M] "
                        "[--batch N] [--schedule NAME]\n");
        return 2;
    }
    const char *brigade = argv[1], *model = "models/uniform-mlp.graph", *only = NULL;
    int p = 4, m = 8, batch = 512;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--stages") && i + 1 < argc)
            p = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--micro-batches") && i + 1 < argc)
            m = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--schedule") && i + 1 < argc)
            only = argv[++i];
        else
            model = argv[i];
    }
    printf("model %s, p=%d stages, m=%d micro-batches, batch %d, CPU backend\n", model, p, m,
           batch);
    printf("%-12s %10s %10s %7s %9s %9s %9s  %s\n", "schedule", "meas ms", "sim ms", "ratio",
           "bubble", "sim bub", "theory", "ran");
    if (only)
        return bench_one(brigade, model, only, p, m, batch) < 0;
    double bub_1f1b = -1, bub_zb = -1;
    for (int k = 0; k <= BG_SCHED_KIND_COUNT; k++) {
        const char *name = k < BG_SCHED_KIND_COUNT ? bg_sched_kind_name(k) : "auto";
        double bub = bench_one(brigade, model, name, p, m, batch);
        if (k == BG_SCHED_1F1B)
            bub_1f1b = bub;
        if (k == BG_SCHED_ZB_H1)
            bub_zb = bub;
    }
    if (bub_1f1b >= 0 && bub_zb >= 0)
        printf("measured bubble: zb-h1 %.1f%% vs 1f1b %.1f%% (ratio %.2f)\n", 100 * bub_zb,
               100 * bub_1f1b, bub_zb / bub_1f1b);
    return 0;
}
