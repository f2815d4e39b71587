/*
 * tools/cmd_trace.c -- `brigade trace report TRACE.json`: reads a training
 * trace (`brigade train --trace`) and prints each rank's busy, idle and
 * communication time, the step's bubble (bg_bubble, the one definition in
 * docs/schedules.md) and the slowest rank with the action kind that
 * dominates it; --json for the same as one JSON document.
 * Must NOT write anything but standard output, or define the bubble again.
 * Exit codes: 0 ok, 1 unreadable trace, 2 bad usage or a file that is no
 * training trace.
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/grow.h"
#include "engine/sim.h"
#include "tools/commands.h"

typedef struct trace_args {
    bool json;
} trace_args_t;

/* clang-format off */
static const bg_opt_t trace_opts[] = {
    {.name = "json", .kind = BG_OPT_FLAG, .help = "print the report as JSON",
     .off = offsetof(trace_args_t, json)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const trace_tables[] = {trace_opts, NULL};

const bg_cmd_spec_t bg_trace_spec = {
    .name = "trace",
    .args = "report TRACE.json [--json]",
    .summary = "report busy, idle and communication time of a training trace",
    .about = "Reads a `brigade train --trace` file and prints per rank busy, idle and "
             "communication-wait time, the step's bubble, and the slowest rank with the action "
             "kind that dominates it.",
    .tables = trace_tables,
    .min_pos = 2,
    .max_pos = 2,
    .pos_name = "report TRACE",
    .run = bg_cmd_trace,
};

/* Action kinds a trace's slices carry (their "cat"), for the dominant one. */
static const char *const kinds[] = {"F",         "B",         "W",         "BW",
                                    "OPTIMIZER", "SEND_ACT",  "SEND_GRAD", "RECV_ACT",
                                    "RECV_GRAD", "ALLREDUCE", "ALLREDUCE_WAIT"};
#define NKINDS (int)(sizeof(kinds) / sizeof(kinds[0]))

typedef struct rank_stat {
    bool seen;
    int stage, dp;
    double t0, t1, busy, comm; /* seconds */
    double kind_s[NKINDS];
} rank_stat_t;

typedef struct report {
    rank_stat_t *r;
    size_t n, cap;
} report_t;

static int kind_index(const char *k)
{
    for (int i = 0; i < NKINDS; i++)
        if (!strcmp(kinds[i], k))
            return i;
    return -1;
}

/* Rank `pid`'s entry, grown into existence; NULL for a bad pid or no memory. */
static rank_stat_t *rank_at(report_t *rep, int pid)
{
    if (pid < 0 || pid > (1 << 20))
        return NULL;
    size_t old = rep->cap;
    if (bg_grow(&rep->r, &rep->cap, (size_t)pid + 1, sizeof(*rep->r)))
        return NULL;
    if (rep->cap > old)
        memset(rep->r + old, 0, (rep->cap - old) * sizeof(*rep->r));
    if ((size_t)pid >= rep->n)
        rep->n = (size_t)pid + 1;
    return &rep->r[pid];
}

/* One "X" slice into its rank: span, busy (compute and OPTIMIZER less the
 * allreduce waits inside it), communication wait and per-kind time. */
static void add_slice(rank_stat_t *s, const char *cat, double ts, double dur)
{
    if (!s->seen || ts < s->t0)
        s->t0 = ts;
    if (!s->seen || ts + dur > s->t1)
        s->t1 = ts + dur;
    s->seen = true;
    int k = kind_index(cat);
    if (k < 0)
        return;
    s->kind_s[k] += dur;
    if (k <= 4)
        s->busy += dur;
    else if (k == NKINDS - 1)
        s->busy -= dur, s->comm += dur, s->kind_s[4] -= dur;
    else if (k != 9) /* ALLREDUCE starts are not waits: their wait is its own slice */
        s->comm += dur;
}

/* The process_name metadata's stage and dp, when the trace has them. */
static void add_names(rank_stat_t *s, const cJSON *e)
{
    const cJSON *args = cJSON_GetObjectItem(e, "args");
    const cJSON *st = cJSON_GetObjectItem(args, "stage"), *dp = cJSON_GetObjectItem(args, "dp");
    if (cJSON_IsNumber(st))
        s->stage = st->valueint;
    if (cJSON_IsNumber(dp))
        s->dp = dp->valueint;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *s = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (s = malloc((size_t)n + 1)) != NULL) {
        if (fread(s, 1, (size_t)n, f) != (size_t)n) {
            free(s);
            s = NULL;
        } else {
            s[n] = 0;
        }
    }
    fclose(f);
    return s;
}

/* The trace at path into rep; BG_ERR_IO or BG_ERR_INVALID naming the file. */
static bg_status_t read_trace(const char *path, report_t *rep)
{
    char *text = slurp(path);
    if (!text)
        return bg_errorf(BG_ERR_IO, "cannot read %s", path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *ev = cJSON_GetObjectItem(root, "traceEvents"), *e;
    if (!cJSON_IsArray(ev)) {
        cJSON_Delete(root);
        return bg_errorf(BG_ERR_INVALID, "%s is not a Chrome trace (no traceEvents)", path);
    }
    bg_status_t st = BG_OK;
    cJSON_ArrayForEach(e, ev)
    {
        const cJSON *ph = cJSON_GetObjectItem(e, "ph"), *pid = cJSON_GetObjectItem(e, "pid");
        const cJSON *name = cJSON_GetObjectItem(e, "name"), *cat = cJSON_GetObjectItem(e, "cat");
        if (!cJSON_IsString(ph) || !cJSON_IsNumber(pid))
            continue;
        bool x = !strcmp(ph->valuestring, "X") && cJSON_IsString(cat);
        bool m = !strcmp(ph->valuestring, "M") && cJSON_IsString(name) &&
                 !strcmp(name->valuestring, "process_name");
        if (!x && !m)
            continue;
        rank_stat_t *s = rank_at(rep, pid->valueint);
        if (!s) {
            st = bg_errorf(BG_ERR_INVALID, "%s: process id %d is out of range (or no memory)", path,
                           pid->valueint);
            break;
        }
        if (m) {
            add_names(s, e);
            continue;
        }
        const cJSON *ts = cJSON_GetObjectItem(e, "ts"), *dur = cJSON_GetObjectItem(e, "dur");
        if (cJSON_IsNumber(ts) && cJSON_IsNumber(dur))
            add_slice(s, cat->valuestring, ts->valuedouble * 1e-6, dur->valuedouble * 1e-6);
    }
    cJSON_Delete(root);
    return st;
}

/* Global span of replica d's ranks (their pipeline), 0 when it has none. */
static double pipeline_span(const report_t *rep, int d)
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < rep->n; i++)
        if (rep->r[i].seen && rep->r[i].dp == d) {
            lo = fmin(lo, rep->r[i].t0);
            hi = fmax(hi, rep->r[i].t1);
        }
    return hi > lo ? hi - lo : 0;
}

/* bg_bubble per pipeline, averaged over pipelines. Cannot fail but for
 * memory (then NaN). */
static double report_bubble(const report_t *rep)
{
    bg_bubble_rank_t *rk = calloc(rep->n + 1, sizeof(*rk));
    double total = 0;
    int count = 0;
    for (int d = 0; rk && d <= (int)rep->n; d++) {
        int k = 0;
        for (size_t i = 0; i < rep->n; i++)
            if (rep->r[i].seen && rep->r[i].dp == d)
                rk[k++] = (bg_bubble_rank_t){rep->r[i].t0, rep->r[i].t1, rep->r[i].busy};
        if (k)
            total += bg_bubble(rk, k), count++;
    }
    free(rk);
    return !rk ? NAN : count ? total / count : 0;
}

/* The rank with the most busy time (the one the others wait for), or -1;
 * *kind its largest kind. */
static int slowest(const report_t *rep, int *kind)
{
    int best = -1;
    for (size_t i = 0; i < rep->n; i++)
        if (rep->r[i].seen && (best < 0 || rep->r[i].busy > rep->r[best].busy))
            best = (int)i;
    *kind = 0;
    for (int k = 1; best >= 0 && k < NKINDS; k++)
        if (rep->r[best].kind_s[k] > rep->r[best].kind_s[*kind])
            *kind = k;
    return best;
}

static void print_text(const report_t *rep, const char *path)
{
    printf("%s\n%5s %5s %4s %10s %10s %10s %7s\n", path, "rank", "stage", "dp", "busy ms",
           "comm ms", "idle ms", "idle %");
    for (size_t i = 0; i < rep->n; i++) {
        const rank_stat_t *s = &rep->r[i];
        if (!s->seen)
            continue;
        double span = pipeline_span(rep, s->dp), idle = span - s->busy;
        printf("%5zu %5d %4d %10.3f %10.3f %10.3f %6.1f%%\n", i, s->stage, s->dp, s->busy * 1e3,
               s->comm * 1e3, idle * 1e3, span > 0 ? 100 * idle / span : 0.0);
    }
    printf("bubble %.1f%%\n", 100 * report_bubble(rep));
    int k, r = slowest(rep, &k);
    if (r >= 0)
        printf("slowest rank: %d (busy %.3f ms), dominated by %s (%.3f ms)\n", r,
               rep->r[r].busy * 1e3, kinds[k], rep->r[r].kind_s[k] * 1e3);
}

static bg_status_t print_json(const report_t *rep)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "bubble", report_bubble(rep));
    cJSON *ranks = cJSON_AddArrayToObject(root, "ranks");
    for (size_t i = 0; i < rep->n; i++) {
        const rank_stat_t *s = &rep->r[i];
        if (!s->seen)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rank", (double)i);
        cJSON_AddNumberToObject(o, "stage", s->stage);
        cJSON_AddNumberToObject(o, "dp", s->dp);
        cJSON_AddNumberToObject(o, "busy_ms", s->busy * 1e3);
        cJSON_AddNumberToObject(o, "comm_ms", s->comm * 1e3);
        cJSON_AddNumberToObject(o, "idle_ms", (pipeline_span(rep, s->dp) - s->busy) * 1e3);
        cJSON_AddItemToArray(ranks, o);
    }
    int k, r = slowest(rep, &k);
    if (r >= 0) {
        cJSON *o = cJSON_AddObjectToObject(root, "slowest");
        cJSON_AddNumberToObject(o, "rank", r);
        cJSON_AddStringToObject(o, "kind", kinds[k]);
        cJSON_AddNumberToObject(o, "kind_ms", rep->r[r].kind_s[k] * 1e3);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    printf("%s\n", text);
    free(text);
    return BG_OK;
}

int bg_cmd_trace(int argc, char **argv)
{
    trace_args_t a = {0};
    char *pos[2];
    int npos, rc = bg_opt_parse(&bg_trace_spec, argc, argv, &a, pos, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (strcmp(pos[0], "report"))
        return bg_opt_usage_error(&bg_trace_spec, "unknown trace action (only 'report')");
    report_t rep = {0};
    bg_status_t st = read_trace(pos[1], &rep);
    if (st == BG_OK && !rep.n)
        st = bg_errorf(BG_ERR_INVALID, "%s has no ranks' slices", pos[1]);
    if (st == BG_OK) {
        if (a.json)
            st = print_json(&rep);
        else
            print_text(&rep, pos[1]);
    }
    free(rep.r);
    if (st != BG_OK) {
        fprintf(stderr, "brigade trace: %s\n", bg_last_error());
        return st == BG_ERR_INVALID ? 2 : 1;
    }
    return 0;
}
