/*
 * engine/schedule_auto.c -- `--schedule auto`: candidates, proof, score,
 * choice.
 *
 * Candidates are every row of the schedule table valid for (p, m, chunks)
 * and a few greedy list schedules in the spirit of the Zero Bubble automatic
 * scheduler (Qi et al. 2023): B and W split, each rank at each moment
 * starting, among what is ready, an F while under the memory cap, a B whose
 * output gradient has arrived, or else a deferred W. Variants differ in
 * placement (loop, V), whether F or B goes first, which of a rank's chunks
 * goes first and whether warm-up tapers like 1F1B's. Each candidate goes
 * through the checker and the simulator (the one judge of time); the
 * fastest within the cap wins, ties to the first table row.
 *
 * Must NOT read clocks or depend on anything but its arguments: all ranks
 * must derive the same lists. Must NOT bypass the checker.
 */
#include "engine/schedule_auto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/schedule_impl.h"
#include "engine/sim.h"
#include "partition/partition.h"

bg_sched_auto_opts_t bg_sched_auto_defaults(void)
{
    bg_sched_auto_opts_t o;
    memset(&o, 0, sizeof(o));
    o.f = o.b = o.w = 1;
    return o;
}

/* ------------------------------------------------------------------ costs */

/* Layers [lo, hi) summed into one chunk's F, B, W. */
static void sum_layers(const bg_sched_auto_opts_t *o, int lo, int hi, double *f, double *b,
                       double *w)
{
    *f = *b = *w = 0;
    for (int l = lo; l < hi; l++)
        *f += o->layer_f[l], *b += o->layer_b[l], *w += o->layer_w[l];
}

/* The split of o's L layers into G chunks balanced on F + B + W, into
 * bounds[G+1]. Only running out of memory fails. */
static bg_status_t balanced_split(const bg_sched_auto_opts_t *o, int G, int *bounds)
{
    int L = o->n_layers;
    double *pre = malloc(((size_t)L + 1) * sizeof(double));
    if (!pre)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    double total = 0;
    for (int l = 0; l < L; l++)
        total += o->layer_f[l] + o->layer_b[l] + o->layer_w[l];
    /* A small share per layer keeps the prefix strictly increasing, so a
     * free layer cannot make two cuts coincide. */
    double eps = (total > 0 ? total : 1) * 1e-6 / L;
    pre[0] = 0;
    for (int l = 0; l < L; l++)
        pre[l + 1] = pre[l] + o->layer_f[l] + o->layer_b[l] + o->layer_w[l] + eps;
    bg_split_prefix(pre, L, G, bounds);
    free(pre);
    return BG_OK;
}

bg_status_t bg_sched_auto_chunk_costs(const bg_sched_auto_opts_t *o, int G, int v, double *f,
                                      double *b, double *w)
{
    if (o->n_layers <= 0) {
        for (int c = 0; c < G; c++)
            f[c] = o->f / v, b[c] = o->b / v, w[c] = o->w / v;
        return BG_OK;
    }
    int L = o->n_layers;
    if (L < G)
        return bg_errorf(BG_ERR_INVALID, "auto: %d profiled layers cannot fill %d chunks", L, G);
    int *bounds = malloc(((size_t)G + 1) * sizeof(int));
    if (!bounds)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    bg_status_t st = o->split ? o->split(o->split_ctx, G, bounds) : balanced_split(o, G, bounds);
    for (int c = 0; !st && c < G; c++) {
        if (bounds[c] < 0 || bounds[c] >= bounds[c + 1] || bounds[c + 1] > L)
            st = bg_errorf(BG_ERR_INVALID, "auto: chunk %d of the split holds layers [%d, %d) "
                                           "of %d", c, bounds[c], bounds[c + 1], L);
        else
            sum_layers(o, bounds[c], bounds[c + 1], &f[c], &b[c], &w[c]);
    }
    free(bounds);
    return st;
}

/* ---------------------------------------------------------- greedy builder */

typedef struct {
    const char *name;
    bg_sched_place_t place;
    int v;
    int bfirst;     /* a ready B goes before a ready F */
    int deep_first; /* a rank's later chunk (nearer the loss) goes first */
    int taper;      /* loop only: at most p - r micro-batches waiting for B */
} variant_t;

/* clang-format off */
static const variant_t variants[] = {
    {"greedy-f",          BG_SCHED_PLACE_LOOP, 1, 0, 0, 0},
    {"greedy-b",          BG_SCHED_PLACE_LOOP, 1, 1, 0, 0},
    {"greedy-f-taper",    BG_SCHED_PLACE_LOOP, 1, 0, 0, 1},
    {"greedy-v-f",        BG_SCHED_PLACE_V,    2, 0, 0, 0},
    {"greedy-v-f-deep",   BG_SCHED_PLACE_V,    2, 0, 1, 0},
    {"greedy-v-b",        BG_SCHED_PLACE_V,    2, 1, 0, 0},
    {"greedy-v-b-deep",   BG_SCHED_PLACE_V,    2, 1, 1, 0},
};
/* clang-format on */
#define N_VARIANTS ((int)(sizeof(variants) / sizeof(variants[0])))

/* The builder's state: the schedule being filled and its simulated clock. */
typedef struct {
    const variant_t *var;
    bg_sched_t *s;
    int p, m, v, G, capc;       /* capc: the cap in chunk activations */
    const double *f, *b, *w;    /* per chunk */
    double comm;
    double *fend, *bend;        /* [G*m]: end of F / B of (chunk, mb); INFINITY until run */
    int *nf, *nb;               /* [G]: next F / B micro-batch of each chunk */
    int *live, *stash, *left;   /* [p]: F not W; F not B; actions still to start */
    int (*wq)[2];               /* [p][m*v] FIFO of (chunk, mb) waiting for W */
    int *wq_head, *wq_len;      /* [p] */
    double *free_at;            /* [p] */
} greedy_t;

static void greedy_free(greedy_t *g)
{
    free(g->fend), free(g->bend), free(g->nf), free(g->nb), free(g->live), free(g->stash);
    free(g->left), free(g->wq), free(g->wq_head), free(g->wq_len), free(g->free_at);
}

static bg_status_t greedy_alloc(greedy_t *g)
{
    size_t gm = (size_t)g->G * (size_t)g->m, P = (size_t)g->p;
    g->fend = malloc(gm * sizeof(double));
    g->bend = malloc(gm * sizeof(double));
    g->nf = calloc((size_t)g->G, sizeof(int));
    g->nb = calloc((size_t)g->G, sizeof(int));
    g->live = calloc(P, sizeof(int));
    g->stash = calloc(P, sizeof(int));
    g->left = calloc(P, sizeof(int));
    g->wq = malloc(P * (size_t)g->m * (size_t)g->v * sizeof(*g->wq));
    g->wq_head = calloc(P, sizeof(int));
    g->wq_len = calloc(P, sizeof(int));
    g->free_at = calloc(P, sizeof(double));
    if (!g->fend || !g->bend || !g->nf || !g->nb || !g->live || !g->stash || !g->left ||
        !g->wq || !g->wq_head || !g->wq_len || !g->free_at)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    for (size_t i = 0; i < gm; i++)
        g->fend[i] = g->bend[i] = INFINITY;
    for (int r = 0; r < g->p; r++)
        g->left[r] = 3 * g->m * g->v;
    return BG_OK;
}

/* When the output of an action of chunk `from` ending at `end` is usable by
 * chunk `to`: at once on the same rank, after comm across ranks. */
static double arrive(const greedy_t *g, int from, int to, double end)
{
    return g->s->chunk_rank[from] == g->s->chunk_rank[to] ? end : end + g->comm;
}

/* Local chunk j of rank r in the variant's preference order (k-th tried). */
static int pref_chunk(const greedy_t *g, int r, int k)
{
    int j = g->var->deep_first ? g->v - 1 - k : k;
    return bg_sched_place_rank(g->var->place, g->p, j * g->p + r) == r
               ? j * g->p + r
               : j * g->p + (g->p - 1 - r); /* V: odd rounds run back up */
}

/* When F of chunk c's next micro-batch has its input (INFINITY: not yet known). */
static double f_ready(const greedy_t *g, int c)
{
    int mb = g->nf[c];
    if (mb >= g->m)
        return INFINITY;
    return c == 0 ? 0 : arrive(g, c - 1, c, g->fend[(size_t)(c - 1) * g->m + mb]);
}

/* When B of chunk c's next micro-batch has its F and output gradient. */
static double b_ready(const greedy_t *g, int c)
{
    int mb = g->nb[c];
    if (mb >= g->nf[c])
        return INFINITY;
    double t = g->fend[(size_t)c * g->m + mb];
    if (c + 1 < g->G) {
        double gr = arrive(g, c + 1, c, g->bend[(size_t)(c + 1) * g->m + mb]);
        t = gr > t ? gr : t;
    }
    return t;
}

/* Whether rank r may start another F of its local chunk index j. */
static int f_fits(const greedy_t *g, int r, int j)
{
    /* A V rank keeps room for one activation of its second chunk, so the
     * micro-batches it started going down can always come back up. */
    int need = g->var->place == BG_SCHED_PLACE_V && g->v > 1 && j == 0 ? 2 : 1;
    if (g->live[r] + need > g->capc)
        return 0;
    return !g->var->taper || g->stash[r] < g->p - r;
}

static bg_status_t start(greedy_t *g, int r, bg_act_kind_t k, int mb, int c, double t)
{
    double cost = k == BG_ACT_F ? g->f[c] : k == BG_ACT_B ? g->b[c] : g->w[c];
    size_t at = (size_t)c * g->m + mb;
    if (k == BG_ACT_F)
        g->fend[at] = t + cost, g->nf[c]++, g->live[r]++, g->stash[r]++;
    else if (k == BG_ACT_B) {
        g->bend[at] = t + cost, g->nb[c]++, g->stash[r]--;
        int *q = g->wq[(size_t)r * g->m * g->v + (size_t)(g->wq_head[r] + g->wq_len[r]++)];
        q[0] = c, q[1] = mb;
    } else
        g->live[r]--, g->wq_head[r]++, g->wq_len[r]--;
    g->left[r]--;
    g->free_at[r] = t + cost;
    return bg_sched_append(g->s, r, bg_action_compute(k, mb, c));
}

/* Start on rank r at time t what the variant prefers among what is ready:
 * F under the cap, B with its gradient, else the oldest deferred W. *started
 * tells whether anything was. */
static bg_status_t try_start(greedy_t *g, int r, double t, int *started)
{
    int fc = -1, bc = -1;
    for (int k = 0; k < g->v; k++) {
        int c = pref_chunk(g, r, k);
        if (fc < 0 && f_ready(g, c) <= t && f_fits(g, r, c / g->p))
            fc = c;
        if (bc < 0 && b_ready(g, c) <= t)
            bc = c;
    }
    *started = 1;
    if (bc >= 0 && (g->var->bfirst || fc < 0))
        return start(g, r, BG_ACT_B, g->nb[bc], bc, t);
    if (fc >= 0)
        return start(g, r, BG_ACT_F, g->nf[fc], fc, t);
    if (g->wq_len[r]) {
        const int *q = g->wq[(size_t)r * g->m * g->v + (size_t)g->wq_head[r]];
        return start(g, r, BG_ACT_W, q[1], q[0], t);
    }
    *started = 0;
    return BG_OK;
}

/* The next moment after t at which anything can change: a rank becomes free
 * or an input of an idle rank arrives. INFINITY when nothing will. */
static double next_event(const greedy_t *g, double t)
{
    double next = INFINITY;
    for (int r = 0; r < g->p; r++) {
        if (!g->left[r])
            continue;
        if (g->free_at[r] > t && g->free_at[r] < next)
            next = g->free_at[r];
        for (int k = 0; k < g->v; k++) {
            int c = pref_chunk(g, r, k);
            double a = f_ready(g, c), b = b_ready(g, c);
            if (a > t && a < next)
                next = a;
            if (b > t && b < next)
                next = b;
        }
    }
    return next;
}

/* List-schedule every rank in simulated time (event by event; at each
 * moment ranks are offered work in rank order until none starts any). */
static bg_status_t greedy_run(greedy_t *g)
{
    double t = 0;
    for (;;) {
        int progress = 1, busy_left = 0;
        while (progress) {
            progress = 0;
            for (int r = 0; r < g->p; r++) {
                int started = 0;
                bg_status_t st =
                    g->left[r] && g->free_at[r] <= t ? try_start(g, r, t, &started) : BG_OK;
                if (st)
                    return st;
                progress |= started;
            }
        }
        for (int r = 0; r < g->p; r++)
            busy_left |= g->left[r] != 0;
        if (!busy_left)
            return BG_OK;
        t = next_event(g, t);
        if (isinf(t))
            return bg_errorf(BG_ERR_INVALID, "%s: the greedy builder ran out of ready work "
                                             "(the memory cap is too tight for it)",
                             g->var->name);
    }
}

/* Build variant `var` for p, m under a cap of capc chunk activations. */
static bg_status_t greedy_build(const variant_t *var, int p, int m, int capc, const double *f,
                                const double *b, const double *w, double comm, bg_sched_t **out)
{
    int G = p * var->v;
    int *where = malloc((size_t)G * sizeof(int));
    if (!where)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    for (int c = 0; c < G; c++)
        where[c] = bg_sched_place_rank(var->place, p, c);
    greedy_t g = {.var = var, .p = p, .m = m, .v = var->v, .G = G, .capc = capc,
                  .f = f, .b = b, .w = w, .comm = comm};
    bg_status_t st = bg_sched_create(p, m, var->v, where, &g.s);
    free(where);
    if (!st)
        st = greedy_alloc(&g);
    if (!st)
        st = greedy_run(&g);
    if (!st)
        st = bg_sched_finish_(g.s);
    if (!st) {
        snprintf(g.s->name, sizeof(g.s->name), "auto:%s", var->name);
        *out = g.s;
        g.s = NULL;
    }
    bg_sched_free(g.s);
    greedy_free(&g);
    return st;
}

/* ------------------------------------------------------------- the choice */

/* Check and simulate s with o's costs; fill c's numbers and verdict. */
static bg_status_t judge(const bg_sched_t *s, const bg_sched_auto_opts_t *o, double cap,
                         const double *f, const double *b, const double *w,
                         bg_sched_auto_cand_t *c)
{
    bg_sim_costs_t costs = bg_sim_costs_uniform(0, 0, 0);
    costs.f_chunk = f, costs.b_chunk = b, costs.w_chunk = w;
    costs.latency = o->comm;
    bg_sim_t *sim = NULL;
    bg_status_t st = bg_sim_run(s, &costs, &sim); /* checks first */
    if (st)
        return st;
    c->makespan = bg_sim_makespan(sim);
    c->bubble = bg_sim_bubble(sim);
    int peak = 0;
    for (int r = 0; r < s->p; r++)
        peak = bg_sim_peak_live(sim, r) > peak ? bg_sim_peak_live(sim, r) : peak;
    c->peak_mem = (double)peak / s->v;
    bg_sim_free(sim);
    if (c->peak_mem > cap + 1e-9)
        return bg_errorf(BG_ERR_INVALID, "peak %.2f micro-batches of activations is over the cap "
                                         "of %.2f",
                         c->peak_mem, cap);
    return BG_OK;
}

/* Candidate i: a table row (i < KIND_COUNT) or a greedy variant, built into
 * *s (NULL when it could not be). */
static bg_status_t build_candidate(int i, int p, int m, int chunks, const bg_sched_auto_opts_t *o,
                                   double cap, const double *f, const double *b, const double *w,
                                   bg_sched_auto_cand_t *c, bg_sched_t **s)
{
    if (i < BG_SCHED_KIND_COUNT) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)i);
        snprintf(c->name, sizeof(c->name), "%s", d->name);
        c->fixed = 1;
        bg_status_t st = bg_sched_resolve_chunks(d, chunks, &c->v);
        if (!st)
            st = bg_sched_generate(d->kind, p, m, c->v, o->flags, s);
        /* A flush-free row trains other numbers (updates a step late): it
         * may be asked for by name, never slipped in by a choice. */
        if (!st && bg_sched_flush_free(*s)) {
            bg_sched_free(*s);
            *s = NULL;
            st = bg_errorf(BG_ERR_INVALID, "flush-free (updates one step late): "
                                           "changes the numbers, only by name");
        }
        return st;
    }
    const variant_t *var = &variants[i - BG_SCHED_KIND_COUNT];
    snprintf(c->name, sizeof(c->name), "%s", var->name);
    c->v = var->v;
    if (chunks && chunks != var->v)
        return bg_errorf(BG_ERR_INVALID, "builds %d chunks per rank, --chunks asks %d", var->v,
                         chunks);
    int capc = (int)floor(cap * var->v + 1e-9);
    if (capc < (var->place == BG_SCHED_PLACE_V ? 2 : 1))
        return bg_errorf(BG_ERR_INVALID, "the cap of %.2f holds less than one micro-batch", cap);
    return greedy_build(var, p, m, capc, f, b, w, o->comm, s);
}

/* Build, prove and score candidate i; keep its schedule in *kept when it
 * beats the best so far. Only running out of memory is an error. */
static bg_status_t try_candidate(int i, int p, int m, int chunks, const bg_sched_auto_opts_t *o,
                                 bg_sched_auto_report_t *rep, bg_sched_t **kept)
{
    bg_sched_auto_cand_t *c = &rep->cand[i];
    int v = i < BG_SCHED_KIND_COUNT ? 0 : variants[i - BG_SCHED_KIND_COUNT].v;
    if (i < BG_SCHED_KIND_COUNT &&
        bg_sched_resolve_chunks(bg_sched_desc((bg_sched_kind_t)i), chunks, &v))
        v = 1; /* build_candidate reports why */
    size_t G = (size_t)p * (size_t)(v > 0 ? v : 1);
    double *cost = malloc(3 * G * sizeof(double));
    if (!cost)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    double *f = cost, *b = cost + G, *w = cost + 2 * G;
    bg_sched_t *s = NULL;
    bg_status_t st = bg_sched_auto_chunk_costs(o, (int)G, v, f, b, w);
    if (!st)
        st = build_candidate(i, p, m, chunks, o, rep->mem_cap, f, b, w, c, &s);
    if (!st)
        st = judge(s, o, rep->mem_cap, f, b, w, c);
    free(cost);
    c->ok = !st;
    if (st == BG_ERR_NOMEM) {
        bg_sched_free(s);
        return st;
    }
    if (st)
        snprintf(c->why, sizeof(c->why), "%s", bg_last_error());
    const bg_sched_auto_cand_t *best = rep->best >= 0 ? &rep->cand[rep->best] : NULL;
    /* Strictly better only: ties stay with the earlier (table rows first). */
    if (c->ok && (!best || c->makespan < best->makespan * (1 - 1e-9))) {
        rep->best = i;
        bg_sched_free(*kept);
        *kept = s;
        s = NULL;
    }
    bg_sched_free(s);
    return BG_OK;
}

void bg_sched_auto_report_free(bg_sched_auto_report_t *r)
{
    if (!r)
        return;
    free(r->cand);
    memset(r, 0, sizeof(*r));
}

/* Every candidate's reason in one message, for when none is left. */
static bg_status_t none_fits(const bg_sched_auto_report_t *rep, int p, int m)
{
    char msg[2048];
    int at = snprintf(msg, sizeof(msg), "auto: no schedule fits p=%d m=%d under a cap of %.2f:",
                      p, m, rep->mem_cap);
    for (int i = 0; i < rep->n && at < (int)sizeof(msg); i++)
        at += snprintf(msg + at, sizeof(msg) - (size_t)at, " %s: %s;", rep->cand[i].name,
                       rep->cand[i].why);
    return bg_errorf(BG_ERR_INVALID, "%s", msg);
}

bg_status_t bg_sched_auto(int p, int m, int chunks, const bg_sched_auto_opts_t *o,
                          bg_sched_t **out, bg_sched_auto_report_t *report)
{
    if (p < 1 || m < 1 || chunks < 0)
        return bg_errorf(BG_ERR_INVALID, "auto: needs p, m >= 1 and chunks >= 0 (got p=%d m=%d "
                                         "chunks=%d)",
                         p, m, chunks);
    if (!(o->comm >= 0) || isinf(o->comm) || isnan(o->mem_cap))
        return bg_errorf(BG_ERR_INVALID, "auto: comm must be finite and >= 0");
    bg_sched_auto_report_t rep = {.n = BG_SCHED_KIND_COUNT + N_VARIANTS, .best = -1};
    rep.mem_cap = o->mem_cap > 0 ? o->mem_cap : (p < m ? p : m);
    rep.cand = calloc((size_t)rep.n, sizeof(*rep.cand));
    if (!rep.cand)
        return bg_errorf(BG_ERR_NOMEM, "auto: out of memory");
    bg_sched_t *kept = NULL;
    bg_status_t st = BG_OK;
    for (int i = 0; i < rep.n && !st; i++)
        st = try_candidate(i, p, m, chunks, o, &rep, &kept);
    if (!st && rep.best < 0)
        st = none_fits(&rep, p, m);
    if (st) {
        bg_sched_free(kept);
        bg_sched_auto_report_free(&rep);
        return st;
    }
    *out = kept;
    if (report)
        *report = rep;
    else
        bg_sched_auto_report_free(&rep);
    return BG_OK;
}
