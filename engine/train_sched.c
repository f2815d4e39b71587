/*
 * engine/train_sched.c -- the schedule a training run uses: a name resolved
 * by bg_sched_resolve, or `auto` from measured per-layer F, B, W (a
 * profile's, or a traced run's) summed over the chunks this run cuts the
 * model into, under a per-rank memory cap and a transfer latency. The launcher calls it to check and size the job, every rank to run
 * it; both pass the same conf and the same graph, so all derive one
 * schedule. Must NOT measure time, touch devices or the transport, or
 * print: the account of the choice goes back to the caller as text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/net.h"
#include "engine/schedule.h"
#include "engine/schedule_auto.h"
#include "engine/train.h"
#include "layers/graph.h"
#include "partition/profile.h"
#include "partition/trace_profile.h"

bg_status_t bg_train_graph_parse(const bg_train_conf_t *c, bg_graph_t **out)
{
    if (c->batch % (c->dp * c->micro_batches))
        return bg_errorf(BG_ERR_INVALID,
                         "--batch %d is not divisible by dp (%d) x micro-batches (%d)", c->batch,
                         c->dp, c->micro_batches);
    return bg_graph_parse_file(c->model, c->batch / (c->dp * c->micro_batches), out);
}

bg_status_t bg_train_graph_open(const bg_train_conf_t *c, bg_graph_t **out)
{
    bg_graph_t *g = NULL;
    bg_status_t st = bg_train_graph_parse(c, &g);
    if (st == BG_OK) /* a linear feeding the loss: logits in tiles, never stored */
        st = bg_graph_fuse_classifier(g, BG_F32, NULL);
    if (st != BG_OK) {
        bg_graph_free(g);
        return st;
    }
    *out = g;
    return BG_OK;
}

/* auto's split hook: the cut every rank makes (engine/train.c). */
static bg_status_t run_split(void *ctx, int G, int *first)
{
    return bg_net_split_even((const bg_graph_t *)ctx, G, first);
}

/*
 * g's layers' F, B, W looked up by name in prof, times rows/prof's
 * micro-batch (times grow about linearly with rows; the partitioner scales
 * the same way), into one malloc'd block *buf of 3 x L: f, then b, then w.
 * BG_ERR_INVALID naming the first layer the profile lacks.
 */
static bg_status_t layer_costs(const bg_profile_t *prof, const char *path, const bg_graph_t *g,
                               int64_t rows, double **buf)
{
    int L = bg_graph_n_layers(g);
    double *x = malloc(3 * (size_t)L * sizeof(double));
    if (!x)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for %d layers' costs", L);
    double scale = (double)rows / prof->micro_batch;
    for (int l = 0; l < L; l++) {
        const char *name = bg_graph_layer(g, l)->spec.name;
        int i = l < prof->n && !strcmp(prof->layer[l].name, name) ? l : -1;
        for (int k = 0; i < 0 && k < prof->n; k++)
            i = strcmp(prof->layer[k].name, name) ? -1 : k;
        if (i < 0) {
            free(x);
            return bg_errorf(BG_ERR_INVALID,
                             "--profile %s has no layer '%s' of the model (a profile of another "
                             "model? make one with `brigade profile MODEL`)",
                             path, name);
        }
        x[l] = prof->layer[i].f * scale;
        x[L + l] = prof->layer[i].b * scale;
        x[2 * L + l] = prof->layer[i].w * scale;
    }
    *buf = x;
    return BG_OK;
}

/* One line: the chunks' F + B + W of the chosen schedule (all of them up
 * to 8 chunks, else the range), appended to why at *at. */
static void append_chunk_costs(const bg_sched_auto_opts_t *o, const bg_sched_t *s, char *why,
                               size_t len, size_t *at)
{
    int G = bg_sched_chunks(s);
    double *x = malloc(3 * (size_t)G * sizeof(double));
    if (!x || bg_sched_auto_chunk_costs(o, G, bg_sched_chunks_per_rank(s), x, x + G, x + 2 * G)) {
        free(x);
        return; /* the account is shorter; the schedule stands */
    }
    double lo = 0, hi = 0;
    for (int c = 0; c < G; c++) {
        double t = x[c] + x[G + c] + x[2 * G + c];
        lo = !c || t < lo ? t : lo;
        hi = !c || t > hi ? t : hi;
        if (G <= 8 && *at < len)
            *at += (size_t)snprintf(why + *at, len - *at, "%s%.3g", c ? " " : "", t * 1e3);
    }
    if (G > 8 && *at < len)
        *at += (size_t)snprintf(why + *at, len - *at, "%.3g..%.3g", lo * 1e3, hi * 1e3);
    free(x);
}

/* The account of auto's choice; the profile's costs are in o. */
static void describe(const bg_train_conf_t *c, const bg_profile_t *prof, int64_t rows,
                     const bg_sched_auto_opts_t *o, const bg_sched_t *s,
                     const bg_sched_auto_report_t *rep, char *why, size_t len)
{
    const bg_sched_auto_cand_t *best = &rep->cand[rep->best];
    size_t at = (size_t)snprintf(why, len, "schedule auto: chose %s (v=%d, simulated step %.4g%s",
                                 best->name, best->v, prof ? best->makespan * 1e3 : best->makespan,
                                 prof ? " ms" : "");
    if (prof && at < len) {
        at += (size_t)snprintf(why + at, len - at, ", bubble %.1f%%) from %s %s",
                               100 * best->bubble, c->profile ? "--profile" : "--from-trace",
                               c->profile ? c->profile : c->from_trace);
        if (prof->micro_batch != rows && at < len)
            at += (size_t)snprintf(why + at, len - at, " (timed at micro-batch %d, scaled to %lld)",
                                   prof->micro_batch, (long long)rows);
        if (at < len)
            at += (size_t)snprintf(why + at, len - at, ", chunk F+B+W ms: ");
        append_chunk_costs(o, s, why, len, &at);
    } else if (at < len) {
        at += (size_t)snprintf(why + at, len - at,
                               ", bubble %.1f%%) from equal costs (F = B = W = 1 per stage)",
                               100 * best->bubble);
    }
    if (o->comm > 0 && at < len)
        at += (size_t)snprintf(why + at, len - at, "; transfer latency %.3g ms", o->comm * 1e3);
    if (at < len)
        snprintf(why + at, len - at, "; cap %.2f micro-batches of a stage per rank", rep->mem_cap);
}

/* auto for c, with measured costs (a profile's or a trace's) over g's split. */
static bg_status_t resolve_auto(const bg_train_conf_t *c, const bg_graph_t *g, bg_sched_t **out,
                                char *why, size_t len)
{
    bg_sched_auto_opts_t o = bg_sched_auto_defaults();
    o.flags = c->split_bw ? BG_SCHED_SPLIT_BW : 0;
    o.mem_cap = c->sched_mem_cap;
    bg_profile_t prof = {0};
    double *x = NULL;
    int64_t rows = c->batch / (c->dp * c->micro_batches);
    bg_status_t st = BG_OK;
    const char *src = c->profile ? c->profile : c->from_trace; /* measured times */
    if (src) {
        if (!g)
            return bg_errorf(BG_ERR_INVALID, "%s: no model to look its layers up in", src);
        st = c->profile ? bg_profile_load(c->profile, &prof)
                        : bg_profile_from_traced_run(c->from_trace, c->traced_plan, &prof);
        if (st != BG_OK)
            bg_error_prefix(st, c->profile ? "--profile: " : "--from-trace: ");
        if (st == BG_OK)
            st = layer_costs(&prof, src, g, rows, &x);
        if (st != BG_OK)
            goto err_prof;
        int L = bg_graph_n_layers(g);
        o.layer_f = x, o.layer_b = x + L, o.layer_w = x + 2 * L;
        o.n_layers = L;
        o.split = run_split;
        o.split_ctx = (void *)g;
        o.comm = c->sched_latency_ms * 1e-3; /* the profile's unit, seconds */
    }
    bg_sched_auto_report_t rep = {0};
    bg_sched_t *s = NULL;
    st = bg_sched_auto(c->stages, c->micro_batches, c->chunks, &o, &s, &rep);
    if (st == BG_OK) {
        if (why && len)
            describe(c, src ? &prof : NULL, rows, &o, s, &rep, why, len);
        bg_sched_auto_report_free(&rep);
        *out = s;
    }
    free(x);
err_prof:
    bg_profile_free(&prof);
    return st;
}

bg_status_t bg_train_sched_resolve(const bg_train_conf_t *c, const bg_graph_t *g, bg_sched_t **out,
                                   char *why, size_t len)
{
    bool is_auto = c->schedule && !strcmp(c->schedule, "auto");
    if (why && len)
        why[0] = '\0';
    const char *opt = c->profile              ? "--profile"
                      : c->from_trace           ? "--from-trace"
                      : c->traced_plan          ? "--traced-plan"
                      : c->sched_mem_cap > 0    ? "--schedule-mem-cap"
                      : c->sched_latency_ms > 0 ? "--schedule-latency"
                                                : NULL;
    if (!is_auto && opt)
        return bg_errorf(BG_ERR_INVALID,
                         "%s is for --schedule auto (it picks a schedule from those costs); "
                         "this run's schedule is %s",
                         opt, c->schedule ? c->schedule : "1f1b");
    if (!c->from_trace != !c->traced_plan)
        return bg_errorf(BG_ERR_INVALID, "--from-trace and --traced-plan go together (the "
                                         "trace's times and the split that made them)");
    if (c->from_trace && c->profile)
        return bg_errorf(BG_ERR_INVALID, "--profile and --from-trace both give times: use one");
    if (c->sched_latency_ms > 0 && !c->profile && !c->from_trace) /* equal costs: no unit */
        return bg_errorf(BG_ERR_INVALID, "--schedule-latency needs --profile or --from-trace: "
                                         "the latency is weighed against measured times");
    if (is_auto)
        return resolve_auto(c, g, out, why, len);
    return bg_sched_resolve(c->schedule, c->stages, c->micro_batches, c->chunks,
                            c->split_bw ? BG_SCHED_SPLIT_BW : 0, out);
}
