/*
 * tools/cmd_plan.c -- `brigade plan MODEL`: where each layer runs.
 *
 * Parses the model, prices it on the chosen device(s) (roofline or a
 * measured --profile), then either splits it for a fixed shape or searches
 * shapes (--stages/--dp/--micro-batches auto), prints a per-stage table
 * with predicted step time, bubble, throughput and memory, and with -o
 * writes the plan file `brigade train --plan` reads. All modelling lives in
 * partition/; this file only parses options and prints. Exit codes: 0 ok,
 * 1 the request is valid but cannot be planned (does not fit), 2 bad
 * input or usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "base/clock.h"
#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/partition.h"
#include "partition/plan_io.h"
#include "partition/profile.h"
#include "partition/search.h"
#include "tools/commands.h"

#define PLAN_MAX_DEVICES 1024
#define AUTO (-1)

typedef struct plan_opts {
    const char *model;
    int stages, dp, micro_batches; /* AUTO, 0 = not given, or a value */
    int64_t batch;                 /* 0 = default */
    int gpus;                      /* 0 = not given */
    int cores;                     /* -1: this machine's, for cpu devices */
    int chunks;                    /* 0 = not given */
    bg_sched_kind_t schedule;
    const char *device;            /* comma list of presets */
    int64_t device_memory;         /* 0 = preset's */
    const char *profile;
    bg_split_method_t method;
    int recompute;                 /* 1 forced on, 0 off, AUTO: search both */
    int dtype;                     /* -1 = by device */
    int top;
    const char *out;
} plan_opts_t;

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: brigade plan MODEL --stages S|auto [--dp D|auto] [--micro-batches M|auto]\n"
            "                    [--batch B] [--gpus N] [--schedule gpipe|1f1b|interleaved|zb-h1]\n"
            "                    [--chunks V] [--device cpu|cuda|h100|a100[,...]]\n"
            "                    [--device-memory 80G] [--cores N] [--profile FILE]\n"
            "                    [--method optimal|uniform|params] [--recompute]\n"
            "                    [--dtype f32|bf16] [--top K] [-o plan.json]\n"
            "  --stages S      pipeline stages, or auto (needs --gpus)\n"
            "  --dp D          data-parallel replicas (default 1, or auto with --gpus)\n"
            "  --micro-batches M  per replica per step (default: micro-batches of 1 sample)\n"
            "  --batch B       global batch in samples (default 4 x devices)\n"
            "  --gpus N        devices in all, N = S x D\n"
            "  --schedule      pipeline schedule (default 1f1b)\n"
            "  --chunks V      chunks per stage for interleaved (default 2)\n"
            "  --device        device preset, or one per stage (default cpu)\n"
            "  --device-memory capacity per device (e.g. 80G)\n"
            "  --cores N       cpu device: cores all ranks share (default: this machine's;\n"
            "                  0: one core per rank)\n"
            "  --profile FILE  measured per-layer times (brigade profile) instead of rates\n"
            "  --method        optimal split (default) or a DeepSpeed-style baseline\n"
            "  --recompute     keep only stage inputs, re-run forward before backward\n"
            "                  (with auto shapes, both are tried unless this is given)\n"
            "  --dtype         activation dtype (default bf16 on GPUs, f32 on cpu)\n"
            "  --top K         shapes listed by the search (default 5)\n"
            "  -o FILE         write the plan as JSON for brigade train --plan\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* An integer or "auto" (when allowed); 0 ok, -1 bad. */
static int parse_count(const char *s, bool allow_auto, int *out)
{
    if (allow_auto && !strcmp(s, "auto")) {
        *out = AUTO;
        return 0;
    }
    return parse_int(s, 1, 1 << 24, out);
}

/* 0 ok, 1 --help shown, 2 usage error printed. */
static int parse_opts(int argc, char **argv, plan_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->schedule = BG_SCHED_1F1B;
    o->device = "cpu";
    o->cores = -1;
    o->method = BG_SPLIT_OPTIMAL;
    o->recompute = AUTO;
    o->dtype = -1;
    o->top = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            plan_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--recompute")) {
            o->recompute = 1;
            continue;
        }
        if (a[0] != '-') {
            if (o->model) {
                fprintf(stderr, "brigade plan: more than one MODEL ('%s', '%s')\n", o->model, a);
                return 2;
            }
            o->model = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "brigade plan: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--stages")) bad = parse_count(v, true, &o->stages);
        else if (!strcmp(a, "--dp")) bad = parse_count(v, true, &o->dp);
        else if (!strcmp(a, "--micro-batches")) bad = parse_count(v, true, &o->micro_batches);
        else if (!strcmp(a, "--gpus")) bad = parse_int(v, 1, 1 << 24, &o->gpus);
        else if (!strcmp(a, "--chunks")) bad = parse_int(v, 1, 1 << 16, &o->chunks);
        else if (!strcmp(a, "--top")) bad = parse_int(v, 1, 100, &o->top);
        else if (!strcmp(a, "--cores")) bad = parse_int(v, 0, 1 << 20, &o->cores);
        else if (!strcmp(a, "--batch")) {
            int b;
            bad = parse_int(v, 1, 1 << 30, &b);
            o->batch = b;
        } else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--profile")) o->profile = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = v;
        else if (!strcmp(a, "--device-memory")) {
            if (bg_parse_bytes(v, &o->device_memory) || o->device_memory < 1) {
                fprintf(stderr, "brigade plan: --device-memory: %s\n", bg_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--schedule")) {
            if (bg_sched_kind_parse(v, &o->schedule)) {
                fprintf(stderr, "brigade plan: %s\n", bg_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--method")) {
            if (bg_split_method_parse(v, &o->method)) {
                fprintf(stderr, "brigade plan: %s\n", bg_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) o->dtype = BG_F32;
            else if (!strcmp(v, "bf16")) o->dtype = BG_BF16;
            else bad = 1;
        } else {
            fprintf(stderr, "brigade plan: unknown option '%s'\n", a);
            plan_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "brigade plan: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "brigade plan: no MODEL given\n");
        plan_usage(stderr);
        return 2;
    }
    if (!o->stages) {
        fprintf(stderr, "brigade plan: --stages S|auto is required\n");
        return 2;
    }
    if (bg_sched_resolve_chunks(bg_sched_desc(o->schedule), o->chunks, &o->chunks)) {
        fprintf(stderr, "brigade plan: %s\n", bg_last_error());
        return 2;
    }
    return 0;
}

/* ---- devices ---- */

typedef struct plan_devices {
    int n; /* 1 = homogeneous */
    bg_device_desc_t d[PLAN_MAX_DEVICES];
} plan_devices_t;

static int parse_devices(const plan_opts_t *o, plan_devices_t *pd)
{
    char buf[4096];
    if (strlen(o->device) >= sizeof(buf)) {
        fprintf(stderr, "brigade plan: --device list too long\n");
        return 2;
    }
    strcpy(buf, o->device);
    pd->n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (pd->n == PLAN_MAX_DEVICES) {
            fprintf(stderr, "brigade plan: more than %d devices listed\n", PLAN_MAX_DEVICES);
            return 2;
        }
        if (bg_device_preset(t, &pd->d[pd->n])) {
            fprintf(stderr, "brigade plan: --device: %s\n", bg_last_error());
            return 2;
        }
        if (o->device_memory) pd->d[pd->n].mem_bytes = o->device_memory;
        pd->n++;
    }
    if (!pd->n) {
        fprintf(stderr, "brigade plan: --device is empty\n");
        return 2;
    }
    return 0;
}

/* ---- printing ---- */

static const char *gib(double bytes, char *buf, size_t n)
{
    snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    return buf;
}

static const char *human_count(int64_t v, char *buf, size_t n)
{
    if (v >= 1000000000LL) snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1000000) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1000) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%lld", (long long)v);
    return buf;
}

static void print_row(const bg_chain_t *ch, const char *label, int first, int end, int64_t params,
                      int64_t mem, int64_t cap, double f, double b, double w, double comm, double t)
{
    char p[32], m[32], c[32], range[64], names[2 * BG_NAME_MAX + 8];
    snprintf(range, sizeof(range), "%d-%d", first, end - 1);
    snprintf(names, sizeof(names), "%s .. %s", ch->layer[first].name, ch->layer[end - 1].name);
    printf("%-6s %-10s %4d  %-44.44s %9s %10s %10s %8.2f %8.2f %8.2f %8.2f %9.2f%s\n", label, range,
           end - first, names, human_count(params, p, sizeof(p)), gib((double)mem, m, sizeof(m)),
           gib((double)cap, c, sizeof(c)), f * 1e3, b * 1e3, w * 1e3, comm * 1e3, t * 1e3,
           mem > cap ? "  OVER" : "");
}

static void print_plan(const bg_chain_t *ch, const bg_plan_t *pl, int64_t global_batch)
{
    const bg_part_config_t *c = &pl->cfg;
    printf("%-6s %-10s %4s  %-44s %9s %10s %10s %8s %8s %8s %8s %9s\n",
           c->chunks > 1 ? "chunk" : "stage", "layers", "#", "first .. last", "params", "memory",
           "capacity", "F ms", "B ms", "W ms", "comm ms", "total ms");
    for (int g = 0; g < pl->n_chunks; g++) {
        const bg_chunk_eval_t *e = &pl->chunk[g];
        char label[32];
        if (c->chunks > 1) snprintf(label, sizeof(label), "%d/s%d", g, e->stage);
        else snprintf(label, sizeof(label), "%d", g);
        print_row(ch, label, e->first, e->end, e->params, e->mem, e->mem_cap, e->f, e->b, e->w,
                  e->comm, e->time);
    }
    if (c->chunks > 1) {
        printf("per stage (sum of its chunks):\n");
        for (int r = 0; r < c->stages; r++) {
            const bg_stage_eval_t *s = &pl->stage[r];
            char m[32], cap[32];
            printf("  stage %d: F+B+W %.2f ms, comm %.2f ms, memory %s of %s\n", r,
                   (s->f + s->b + s->w) * 1e3, s->comm * 1e3, gib((double)s->mem, m, sizeof(m)),
                   gib((double)s->mem_cap, cap, sizeof(cap)));
        }
    }
    double tail = pl->step_s - pl->pipe_s;
    char peak[32];
    printf("predicted step: %.4f s (pipeline %.4f s + allreduce/optimizer %.4f s)\n", pl->step_s,
           pl->pipe_s, tail);
    printf("bubble: %.1f%%   throughput: %.2f samples/s   bottleneck: %.2f ms per micro-batch\n",
           100.0 * pl->bubble, (double)global_batch / pl->step_s, pl->bottleneck * 1e3);
    printf("peak memory: %s per device%s\n", gib((double)pl->peak_mem, peak, sizeof(peak)),
           pl->fits ? " (fits)" : " -- DOES NOT FIT");
}

/* Exit code of a library failure: does-not-fit is 1, bad input 2. */
static int fail(bg_status_t st)
{
    fprintf(stderr, "brigade plan: %s\n", bg_last_error());
    return st == BG_ERR_INVALID || st == BG_ERR_IO ? 2 : 1;
}

/* ---- the command ---- */

typedef struct plan_run {
    plan_opts_t o;
    plan_devices_t *dev;
    bg_graph_t *graph;
    bg_chain_t chain;
    bg_profile_t prof;
    bool have_prof;
    bg_costs_t *costs;      /* [n priced] */
    int n_costs;
    const bg_costs_t **cp;  /* [stages] */
} plan_run_t;

/* Resolve S, D, m, batch for a fixed shape or run the search; fills cfg
 * and micro-batch size. Returns an exit code (0 = go on). */
static int choose_shape(plan_run_t *r, bg_part_config_t *cfg, int *mb, int64_t *gb)
{
    plan_opts_t *o = &r->o;
    bool search = o->stages == AUTO || o->dp == AUTO || o->micro_batches == AUTO;
    int dp = o->dp ? o->dp : 1;
    int gpus = o->gpus;
    if (!search) {
        if (gpus && gpus != o->stages * dp) {
            fprintf(stderr, "brigade plan: --stages %d x --dp %d is not --gpus %d\n", o->stages, dp,
                    gpus);
            return 2;
        }
        gpus = o->stages * dp;
    } else if (!gpus) {
        if (o->stages == AUTO || o->dp == AUTO) {
            fprintf(stderr, "brigade plan: 'auto' needs --gpus N (devices in all)\n");
            return 2;
        }
        gpus = o->stages * dp; /* only the micro-batches are searched */
    }
    *gb = o->batch ? o->batch : 4LL * gpus;
    if (!search) {
        if (*gb % dp) {
            fprintf(stderr, "brigade plan: --batch %lld is not divisible by --dp %d\n",
                    (long long)*gb, dp);
            return 2;
        }
        int64_t per = *gb / dp;
        int m = o->micro_batches ? o->micro_batches : (int)per;
        if (per % m) {
            fprintf(stderr,
                    "brigade plan: %lld samples per replica do not split into %d micro-batches\n",
                    (long long)per, m);
            return 2;
        }
        *cfg = (bg_part_config_t){o->schedule, o->stages, o->chunks, m, dp, o->recompute == 1, 8, 0};
        *mb = (int)(per / m);
        return 0;
    }
    if (r->dev->n > 1) {
        fprintf(stderr, "brigade plan: a per-stage --device list needs fixed --stages\n");
        return 2;
    }
    /* with --stages auto an unspecified --dp follows from N = S x D */
    int sdp = o->dp == AUTO || (!o->dp && o->stages == AUTO) ? 0 : dp;
    bg_search_opts_t so = {gpus, o->stages == AUTO ? 0 : o->stages, sdp,
                           o->micro_batches == AUTO ? 0 : o->micro_batches, *gb,
                           o->recompute == 1 ? 1 : AUTO, o->schedule, o->chunks, 8, o->top};
    bg_search_result_t res[100];
    int n = 0;
    bg_search_stats_t stats;
    double t0 = bg_now_s();
    bg_status_t st = bg_search_shapes(&r->chain, &r->dev->d[0], r->have_prof ? &r->prof : NULL, &so,
                                      res, &n, &stats);
    double dt = bg_now_s() - t0;
    if (st) return fail(st);
    printf("shape search over %d devices, global batch %lld: %d candidates, %d split exactly, "
           "%d pruned by bound, %d do not fit (%.0f ms)\n",
           gpus, (long long)*gb, stats.candidates, stats.solved, stats.pruned, stats.no_fit,
           dt * 1e3);
    printf("  rank stages  dp  micro-batches x size  recompute   step s   bubble   samples/s   peak memory\n");
    for (int i = 0; i < n; i++) {
        char m[32];
        printf("  %4d %6d %4d %10d x %-8d %-9s %8.4f %7.1f%% %11.2f   %s\n", i + 1, res[i].cfg.stages,
               res[i].cfg.dp, res[i].cfg.micro_batches, res[i].micro_batch,
               res[i].cfg.recompute ? "on" : "off", res[i].step_s, 100 * res[i].bubble,
               res[i].samples_per_s, gib((double)res[i].peak_mem, m, sizeof(m)));
    }
    *cfg = res[0].cfg;
    *mb = res[0].micro_batch;
    return 0;
}

/* Price the chain for every stage at micro-batch size mb. */
static int price(plan_run_t *r, const bg_part_config_t *cfg, int mb)
{
    int S = cfg->stages;
    if (r->dev->n > 1 && r->dev->n != S) {
        fprintf(stderr, "brigade plan: %d devices listed for %d stages (give one, or one per stage)\n",
                r->dev->n, S);
        return 2;
    }
    r->costs = calloc((size_t)r->dev->n, sizeof(bg_costs_t));
    r->cp = malloc(sizeof(*r->cp) * (size_t)S);
    if (!r->costs || !r->cp) {
        fprintf(stderr, "brigade plan: out of memory\n");
        return 1;
    }
    for (int i = 0; i < r->dev->n; i++) {
        bg_status_t st = bg_costs_build(&r->chain, &r->dev->d[i], mb, r->have_prof ? &r->prof : NULL,
                                        &r->costs[i]);
        if (st) return fail(st);
        r->n_costs = i + 1;
    }
    for (int s = 0; s < S; s++) r->cp[s] = &r->costs[r->dev->n > 1 ? s : 0];
    return 0;
}

static int plan_body(plan_run_t *r)
{
    plan_opts_t *o = &r->o;
    double t0 = bg_now_s();
    bg_status_t st = bg_graph_parse_file(o->model, 1, &r->graph);
    if (st) return fail(st);
    bool gpu = strcmp(r->dev->d[0].name, "cpu") != 0;
    bg_dtype_t dt = o->dtype >= 0 ? (bg_dtype_t)o->dtype : gpu ? BG_BF16 : BG_F32;
    if ((st = bg_chain_from_graph(r->graph, dt, &r->chain))) return fail(st);
    if (o->profile) {
        if ((st = bg_profile_load(o->profile, &r->prof))) return fail(st);
        r->have_prof = true;
    }
    char cap[32], pc[32];
    printf("model %s: %d layers, %s parameters; device %s (%s activations), %s per device%s\n",
           o->model, r->chain.n_layers, human_count(bg_graph_totals(r->graph)->params, pc, sizeof(pc)),
           o->device, bg_dtype_name(dt), gib((double)r->dev->d[0].mem_bytes, cap, sizeof(cap)),
           r->have_prof ? ", times from profile" : "");
    bg_part_config_t cfg;
    int mb;
    int64_t gb;
    int rc = choose_shape(r, &cfg, &mb, &gb);
    if (rc) return rc;
    if ((rc = price(r, &cfg, mb))) return rc;
    /* CPU ranks of one machine share its cores (the launcher binds rank r to
     * core r % cores); GPUs are a device per rank. */
    if (!strcmp(o->device, "cpu"))
        cfg.cores = o->cores >= 0 ? o->cores : (int)sysconf(_SC_NPROCESSORS_ONLN);
    bg_part_problem_t pb = {&r->chain, r->cp, cfg};
    bg_plan_t pl;
    if ((st = bg_partition(&pb, o->method, &pl))) return fail(st);
    printf("layout: %d stage(s) x %d dp, %s%s, %d micro-batches of %d (global batch %lld), "
           "recompute %s, split %s\n",
           cfg.stages, cfg.dp, bg_sched_kind_name(cfg.schedule),
           cfg.chunks > 1 ? " (chunks per stage below)" : "", cfg.micro_batches, mb, (long long)gb,
           cfg.recompute ? "on" : "off", bg_split_method_name(o->method));
    print_plan(&r->chain, &pl, gb);
    /* the baselines next to the chosen split, for comparison */
    printf("split methods:");
    for (int m = 0; m < 3; m++) {
        bg_plan_t alt;
        bg_status_t as = m ? bg_partition(&pb, (bg_split_method_t)m, &alt) : bg_partition_try(&pb, &alt);
        if (as == BG_OK) {
            printf("  %s %.4f s%s", bg_split_method_name((bg_split_method_t)m), alt.step_s,
                   alt.fits ? "" : " (does not fit)");
            bg_plan_free(&alt);
        } else {
            printf("  %s: none fits", bg_split_method_name((bg_split_method_t)m));
        }
    }
    printf("\nplanned in %.0f ms\n", (bg_now_s() - t0) * 1e3);
    rc = 0;
    if (o->out) {
        bg_plan_meta_t meta = {o->model, bg_split_method_name(o->method), o->device};
        if ((st = bg_plan_save(o->out, &pl, &r->chain, &meta))) rc = fail(st);
        else printf("wrote %s\n", o->out);
    }
    if (!pl.fits && !rc) {
        fprintf(stderr, "brigade plan: the %s split does not fit in memory (see OVER above)\n",
                bg_split_method_name(o->method));
        rc = 1;
    }
    bg_plan_free(&pl);
    return rc;
}

int bg_cmd_plan(int argc, char **argv)
{
    plan_run_t r;
    memset(&r, 0, sizeof(r));
    int rc = parse_opts(argc, argv, &r.o);
    if (rc) return rc == 1 ? 0 : rc;
    r.dev = calloc(1, sizeof(*r.dev));
    if (!r.dev) {
        fprintf(stderr, "brigade plan: out of memory\n");
        return 1;
    }
    rc = parse_devices(&r.o, r.dev);
    if (!rc) rc = plan_body(&r);
    for (int i = 0; i < r.n_costs; i++) bg_costs_free(&r.costs[i]);
    free(r.costs);
    free(r.cp);
    if (r.have_prof) bg_profile_free(&r.prof);
    bg_chain_free(&r.chain);
    bg_graph_free(r.graph);
    free(r.dev);
    return rc;
}
