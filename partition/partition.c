/*
 * partition/partition.c -- chunk costs, plan evaluation, the exact split
 * (dynamic programming) and the DeepSpeed-style baselines.
 *
 * Every number a plan reports goes through span_time/span_mem, and the
 * dynamic programmes call the very same functions, so "optimal" is exact
 * for the objective as evaluated (bit for bit, which the brute-force tests
 * check). Must not depend on the engine's schedule code or on transport.
 */
#include "partition/partition.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"

/* ---- names ---- */

static const char *method_names[] = {"optimal", "uniform", "params"};

const char *bg_split_method_name(bg_split_method_t m)
{
    return (unsigned)m < 3 ? method_names[m] : "?";
}

bg_status_t bg_split_method_parse(const char *s, bg_split_method_t *out)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, method_names[i])) {
            *out = (bg_split_method_t)i;
            return BG_OK;
        }
    if (!strcmp(s, "parameters")) {
        *out = BG_SPLIT_PARAMS;
        return BG_OK;
    }
    return bg_errorf(BG_ERR_INVALID, "unknown method '%s' (known: optimal, uniform, params)", s);
}

bg_status_t bg_part_config_check(const bg_part_config_t *cfg, int n_layers)
{
    if (cfg->stages < 1) return bg_errorf(BG_ERR_INVALID, "stages must be >= 1 (got %d)", cfg->stages);
    if (cfg->chunks < 1) return bg_errorf(BG_ERR_INVALID, "chunks must be >= 1 (got %d)", cfg->chunks);
    if (cfg->micro_batches < 1)
        return bg_errorf(BG_ERR_INVALID, "micro-batches must be >= 1 (got %d)", cfg->micro_batches);
    if (cfg->dp < 1) return bg_errorf(BG_ERR_INVALID, "dp must be >= 1 (got %d)", cfg->dp);
    if (cfg->opt_state_bytes < 0) return bg_errorf(BG_ERR_INVALID, "negative optimizer state");
    if (cfg->zero < 0 || cfg->zero > 1)
        return bg_errorf(BG_ERR_INVALID, "ZeRO stage %d: only 0 and 1 exist", cfg->zero);
    const bg_sched_desc_t *sd = bg_sched_desc(cfg->schedule);
    if (!sd) return bg_errorf(BG_ERR_INVALID, "bad schedule %d", (int)cfg->schedule);
    bg_status_t st = bg_sched_check_shape(sd, cfg->stages, cfg->micro_batches, cfg->chunks);
    if (st) return st;
    long g = (long)cfg->stages * cfg->chunks;
    if (g > n_layers)
        return bg_errorf(BG_ERR_INVALID,
                         "%ld chunks (%d stages x %d) but the model has only %d layers", g,
                         cfg->stages, cfg->chunks, n_layers);
    return BG_OK;
}

/* ---- in-flight micro-batches ---- */

int bg_in_flight(const bg_part_config_t *cfg, int g)
{
    return bg_sched_in_flight(bg_sched_desc(cfg->schedule), cfg->stages, cfg->micro_batches,
                              cfg->chunks, g);
}

/* ---- chunk costs ---- */

typedef struct span_ctx {
    const bg_part_problem_t *pb;
    const bg_chain_t *ch;
    int p, v, G, L, mb;
    int64_t *cap;    /* [G] per-chunk memory cap */
    int *k;          /* [G] in-flight */
    int *rank;       /* [G] rank of chunk g: the schedule's placement */
    int64_t *pext;   /* [L+1] prefix sums of ext_bytes */
} span_ctx_t;

static void ctx_free(span_ctx_t *c)
{
    free(c->cap);
    free(c->k);
    free(c->rank);
    free(c->pext);
    memset(c, 0, sizeof(*c));
}

static bg_status_t ctx_init(const bg_part_problem_t *pb, span_ctx_t *out)
{
    const bg_part_config_t *cfg = &pb->cfg;
    bg_status_t st = bg_part_config_check(cfg, pb->chain->n_layers);
    if (st) return st;
    span_ctx_t c = {0};
    c.pb = pb;
    c.ch = pb->chain;
    c.p = cfg->stages;
    c.v = cfg->chunks;
    c.G = c.p * c.v;
    c.L = c.ch->n_layers;
    c.mb = pb->costs[0]->micro_batch;
    for (int r = 0; r < c.p; r++) {
        const bg_costs_t *co = pb->costs[r];
        if (!co || co->chain != c.ch || co->micro_batch != c.mb)
            return bg_errorf(BG_ERR_INVALID,
                             "stage %d: costs missing or priced for another chain/micro-batch", r);
    }
    c.cap = malloc(sizeof(int64_t) * (size_t)c.G);
    c.k = malloc(sizeof(int) * (size_t)c.G);
    c.rank = malloc(sizeof(int) * (size_t)c.G);
    c.pext = malloc(sizeof(int64_t) * ((size_t)c.L + 1));
    if (!c.cap || !c.k || !c.rank || !c.pext) {
        ctx_free(&c);
        return bg_errorf(BG_ERR_NOMEM, "partition: out of memory");
    }
    for (int g = 0; g < c.G; g++) {
        c.rank[g] = bg_sched_chunk_rank_of(bg_sched_desc(cfg->schedule), c.p, g);
        c.cap[g] = pb->costs[c.rank[g]]->dev.mem_bytes / c.v;
        c.k[g] = bg_in_flight(cfg, g);
    }
    c.pext[0] = 0;
    for (int i = 0; i < c.L; i++) c.pext[i + 1] = c.pext[i] + c.ch->ext_bytes[i];
    *out = c;
    return BG_OK;
}

typedef struct span_time {
    double f, b, w, comm;
    double comp; /* f + b + w: monotone in the range, the DPs prune on it */
    double time; /* comp + comm */
} span_time_t;

/* Point-to-point seconds of one message of `bytes` on rank r's link. */
static double p2p(const bg_costs_t *c, int64_t bytes)
{
    return c->dev.link_lat + (double)bytes / c->dev.link_bw;
}

/* Per-micro-batch time of chunk g over layers [i, j). The forward send of
 * the cut at j and the backward send of the cut at i are charged to the
 * chunk that sends them; both use the link from chunk g to g+1's rank. A cut
 * between two chunks on the same rank (the turn of a V) is free. */
static span_time_t span_time(const span_ctx_t *c, int g, int i, int j)
{
    const bg_costs_t *co = c->pb->costs[c->rank[g]];
    span_time_t t;
    t.f = co->pf[j] - co->pf[i];
    t.b = co->pb[j] - co->pb[i];
    t.w = co->pw[j] - co->pw[i];
    if (c->pb->cfg.recompute) t.b = t.b + t.f;
    t.comp = t.f + t.b + t.w;
    t.comm = 0.0;
    if (c->p > 1) {
        int prev = c->rank[(g + c->G - 1) % c->G], next = c->rank[(g + 1) % c->G];
        if (j < c->L && next != c->rank[g]) t.comm += p2p(co, (int64_t)c->mb * c->ch->cut_bytes[j]);
        if (i > 0 && prev != c->rank[g])
            t.comm += p2p(c->pb->costs[prev], (int64_t)c->mb * c->ch->cut_bytes[i]);
    }
    t.time = t.comp + t.comm;
    return t;
}

typedef struct span_mem {
    int64_t lb;     /* monotone lower bound: grows with the range */
    int64_t stat;   /* parameter bytes (bg_param_bytes) + workspace + comm buffers */
    int64_t act;
    int64_t total;
    int64_t params;
} span_mem_t;

/* Memory of chunk g over [i, j) given its per-sample distinct activation
 * bytes `act_ps` (bg_chain_act_bytes) and largest per-sample workspace. */
static span_mem_t span_mem(const span_ctx_t *c, int g, int i, int j, int64_t act_ps, int64_t ws_ps)
{
    const bg_costs_t *co = c->pb->costs[c->rank[g]];
    int64_t mb = c->mb, k = c->k[g];
    span_mem_t m;
    m.params = co->pparams[j] - co->pparams[i];
    int64_t shared = co->pshared[j] - co->pshared[i];
    const bg_part_config_t *cf = &c->pb->cfg;
    int64_t base = bg_param_bytes(c->ch->dtype, cf->opt_state_bytes, cf->zero, cf->dp, m.params) +
                   bg_param_bytes(c->ch->dtype, 0, cf->zero, cf->dp, shared) + mb * ws_ps +
                   bg_versions_bytes(c->ch->dtype, bg_sched_desc(cf->schedule)->versions, m.params);
    int64_t bufs = mb * (c->ch->cut_bytes[i] + c->ch->cut_bytes[j]);
    if (c->pb->cfg.recompute) {
        int64_t keep = c->ch->cut_bytes[i] + (c->pext[j] - c->pext[i]);
        m.lb = base + mb * act_ps;
        m.act = mb * act_ps + k * mb * keep;
    } else {
        m.lb = base + k * mb * act_ps;
        m.act = k * mb * act_ps;
    }
    m.stat = base + bufs;
    m.total = m.stat + m.act;
    return m;
}

static int64_t range_ws(const bg_chain_t *ch, int i, int j)
{
    int64_t w = 0;
    for (int l = i; l < j; l++)
        if (ch->layer[l].workspace_bytes > w) w = ch->layer[l].workspace_bytes;
    return w;
}

/* Adding layer i at the front of [i+1, j): per-sample bytes it adds. */
static int64_t act_front(const bg_chain_t *ch, int i, int j)
{
    const bg_chain_layer_t *y = &ch->layer[i];
    int64_t a = y->saved_bytes;
    for (int k = 0; k < y->n_in; k++)
        if (ch->next_use[i * BG_MAX_INPUTS + k] >= j) a += ch->tensor[y->in_tensor[k]].bytes;
    return a;
}

/* Adding layer j at the back of [i, j): per-sample bytes it adds. */
static int64_t act_back(const bg_chain_t *ch, int i, int j)
{
    const bg_chain_layer_t *y = &ch->layer[j];
    int64_t a = y->saved_bytes;
    for (int k = 0; k < y->n_in; k++)
        if (ch->prev_use[j * BG_MAX_INPUTS + k] < i) a += ch->tensor[y->in_tensor[k]].bytes;
    return a;
}

/* ---- evaluation ---- */

void bg_plan_free(bg_plan_t *p)
{
    if (!p) return;
    free(p->bounds);
    free(p->chunk);
    free(p->stage);
    memset(p, 0, sizeof(*p));
}

/* Step-time closed forms from per-rank times (docs/partition.md). */
static void plan_times(const span_ctx_t *c, bg_plan_t *pl)
{
    const bg_part_config_t *cfg = &c->pb->cfg;
    const bg_sched_desc_t *sd = bg_sched_desc(cfg->schedule);
    int p = c->p;
    double m = cfg->micro_batches;
    double tmax = 0, tsum = 0, dmax = 0, dsum = 0, tail = 0;
    for (int r = 0; r < p; r++) {
        const bg_stage_eval_t *s = &pl->stage[r];
        bg_sched_cost_t cost = {s->f, s->b, s->w, s->comm, s->time};
        double d = bg_sched_fill(sd, &cost, cfg->micro_batches, cfg->chunks);
        if (s->time > tmax) tmax = s->time;
        tsum += s->time;
        if (d > dmax) dmax = d;
        dsum += d;
        if (s->allreduce + s->optim > tail) tail = s->allreduce + s->optim;
    }
    pl->pipe_s = m * tmax + (dsum - dmax);
    int ranks = p * (cfg->dp > 0 ? cfg->dp : 1);
    if (cfg->cores > 0 && ranks > cfg->cores) {
        /* Ranks sharing a core: the step is also at least the busiest
         * core's work (its ranks' m micro-batches plus their optimizer
         * steps), whatever the schedule overlaps. Max of the dependency
         * bound and this throughput bound, like a roofline. */
        double core_pipe = 0, core_tail = 0;
        for (int core = 0; core < cfg->cores; core++) {
            double work = 0, opt = 0;
            for (int rk = core; rk < ranks; rk += cfg->cores) {
                const bg_stage_eval_t *s = &pl->stage[rk % p];
                work += m * s->time;
                opt += s->allreduce + s->optim;
            }
            if (work > core_pipe) core_pipe = work;
            if (opt > core_tail) core_tail = opt;
        }
        if (core_pipe > pl->pipe_s) pl->pipe_s = core_pipe;
        if (core_tail > tail) tail = core_tail;
    }
    pl->step_s = pl->pipe_s + tail;
    pl->bubble = pl->pipe_s > 0 ? 1.0 - m * tsum / ((double)p * pl->pipe_s) : 0.0;
    if (pl->bubble < 0) pl->bubble = 0;
}

static void stage_extras(const span_ctx_t *c, int r, bg_stage_eval_t *s)
{
    const bg_costs_t *co = c->pb->costs[r];
    int D = c->pb->cfg.dp;
    const bg_part_config_t *cf = &c->pb->cfg;
    double grad_bytes = 4.0 * (double)s->params;
    s->allreduce = D > 1 ? 2.0 * (D - 1) / D * grad_bytes / co->dev.dp_bw + 2.0 * (D - 1) * co->dev.dp_lat
                         : 0.0;
    if (cf->zero && D > 1) /* reduce-scatter of the gradient + all-gather of the compute copy */
        s->allreduce = (double)(D - 1) / D * (grad_bytes + (double)s->params * bg_dtype_size(c->ch->dtype)) /
                           co->dev.dp_bw + 2.0 * (D - 1) * co->dev.dp_lat;
    /* the optimizer reads and writes every per-parameter byte once */
    s->optim = 2.0 * (double)bg_param_bytes(c->ch->dtype, cf->opt_state_bytes, cf->zero, D, s->params) /
               co->dev.mem_bw;
}

static bg_status_t plan_build(const span_ctx_t *c, const int *bounds, bg_plan_t *out)
{
    bg_plan_t pl = {0};
    pl.cfg = c->pb->cfg;
    pl.micro_batch = c->mb;
    pl.n_layers = c->L;
    pl.n_chunks = c->G;
    pl.bounds = malloc(sizeof(int) * ((size_t)c->G + 1));
    pl.chunk = calloc((size_t)c->G, sizeof(bg_chunk_eval_t));
    pl.stage = calloc((size_t)c->p, sizeof(bg_stage_eval_t));
    if (!pl.bounds || !pl.chunk || !pl.stage) {
        bg_plan_free(&pl);
        return bg_errorf(BG_ERR_NOMEM, "plan: out of memory");
    }
    memcpy(pl.bounds, bounds, sizeof(int) * ((size_t)c->G + 1));
    pl.fits = true;
    for (int r = 0; r < c->p; r++) {
        pl.stage[r].first_layer = c->L;
        pl.stage[r].end_layer = 0;
    }
    for (int g = 0; g < c->G; g++) {
        int i = bounds[g], j = bounds[g + 1], r = c->rank[g];
        span_time_t t = span_time(c, g, i, j);
        span_mem_t m = span_mem(c, g, i, j, bg_chain_act_bytes(c->ch, i, j), range_ws(c->ch, i, j));
        bg_chunk_eval_t *e = &pl.chunk[g];
        e->first = i;
        e->end = j;
        e->stage = r;
        e->in_flight = c->k[g];
        e->f = t.f;
        e->b = t.b;
        e->w = t.w;
        e->comm = t.comm;
        e->time = t.time;
        e->params = m.params;
        e->mem_static = m.stat;
        e->mem_act = m.act;
        e->mem = m.total;
        e->mem_cap = c->cap[g];
        if (m.total > c->cap[g]) pl.fits = false;
        if (g == 0 || t.time > pl.bottleneck) pl.bottleneck = t.time;
        pl.total += t.time;
        bg_stage_eval_t *s = &pl.stage[r];
        s->f += t.f;
        s->b += t.b;
        s->w += t.w;
        s->comm += t.comm;
        s->time += t.time;
        s->params += m.params;
        s->mem += m.total;
        s->mem_cap += c->cap[g];
        if (i < s->first_layer) s->first_layer = i;
        if (j > s->end_layer) s->end_layer = j;
    }
    for (int r = 0; r < c->p; r++) {
        stage_extras(c, r, &pl.stage[r]);
        if (pl.stage[r].mem > pl.peak_mem) pl.peak_mem = pl.stage[r].mem;
    }
    plan_times(c, &pl);
    *out = pl;
    return BG_OK;
}

static bg_status_t bounds_check(const span_ctx_t *c, const int *b)
{
    if (b[0] != 0 || b[c->G] != c->L)
        return bg_errorf(BG_ERR_INVALID, "split must start at layer 0 and end at %d", c->L);
    for (int g = 0; g < c->G; g++)
        if (b[g + 1] <= b[g])
            return bg_errorf(BG_ERR_INVALID, "chunk %d of the split is empty or reversed", g);
    return BG_OK;
}

bg_status_t bg_plan_evaluate(const bg_part_problem_t *pb, const int *bounds, bg_plan_t *out)
{
    span_ctx_t c;
    bg_status_t st = ctx_init(pb, &c);
    if (st) return st;
    st = bounds_check(&c, bounds);
    if (!st) st = plan_build(&c, bounds, out);
    ctx_free(&c);
    return st;
}

/* ---- baselines ---- */

static void split_uniform(int L, int G, int *b)
{
    for (int g = 0; g <= G; g++) b[g] = (int)(((int64_t)g * L) / G);
}

void bg_split_prefix(const double *pre, int L, int G, int *b)
{
    double tot = pre[L];
    b[0] = 0;
    int j = 0;
    for (int g = 1; g < G; g++) {
        double target = tot * g / G;
        while (j < L && pre[j] < target) j++;
        int lo = b[g - 1] + 1, hi = L - (G - g);
        b[g] = j < lo ? lo : j > hi ? hi : j;
        j = b[g];
    }
    b[G] = L;
}

/* Min-max of parameter counts (DeepSpeed's partition_balanced), exact by
 * DP; ties keep the earliest cut. */
static bg_status_t split_params_balanced(const int64_t *pp, int L, int G, int *b)
{
    int64_t *best = malloc(sizeof(int64_t) * (size_t)G * (L + 1));
    int *from = malloc(sizeof(int) * (size_t)G * (L + 1));
    if (!best || !from) {
        free(best);
        free(from);
        return bg_errorf(BG_ERR_NOMEM, "partition: out of memory");
    }
    for (int g = 0; g < G; g++)
        for (int j = 0; j <= L; j++) {
            int64_t bv = INT64_MAX;
            int bi = -1;
            if (j >= g + 1 && j <= L - (G - 1 - g)) {
                if (g == 0) {
                    bv = pp[j];
                    bi = 0;
                } else {
                    for (int i = g; i < j; i++) {
                        int64_t prev = best[(size_t)(g - 1) * (L + 1) + i];
                        if (prev == INT64_MAX) continue;
                        int64_t cand = pp[j] - pp[i];
                        if (prev > cand) cand = prev;
                        if (cand < bv) {
                            bv = cand;
                            bi = i;
                        }
                    }
                }
            }
            best[(size_t)g * (L + 1) + j] = bv;
            from[(size_t)g * (L + 1) + j] = bi;
        }
    b[G] = L;
    for (int g = G - 1; g >= 0; g--) b[g] = from[(size_t)g * (L + 1) + b[g + 1]];
    free(best);
    free(from);
    return BG_OK;
}

/* A one-pass heuristic split: fills b[0..G] (G + 1 boundaries) for the
 * problem, or fails with its own message. */
typedef bg_status_t (*split_fn_t)(const bg_part_problem_t *pb, int L, int G, int *b);

static bg_status_t split_uniform_fn(const bg_part_problem_t *pb, int L, int G, int *b)
{
    (void)pb;
    split_uniform(L, G, b);
    return BG_OK;
}

static bg_status_t split_params_fn(const bg_part_problem_t *pb, int L, int G, int *b)
{
    return split_params_balanced(pb->costs[0]->pparams, L, G, b);
}

/* The plan of the boundaries `split` chooses; out is set only on success. */
static bg_status_t partition_heuristic(const bg_part_problem_t *pb, split_fn_t split,
                                       bg_plan_t *out)
{
    span_ctx_t c;
    bg_status_t st = ctx_init(pb, &c);
    if (st) return st;
    int *b = malloc(sizeof(int) * ((size_t)c.G + 1));
    if (!b) {
        st = bg_errorf(BG_ERR_NOMEM, "partition: out of memory");
        goto err_ctx;
    }
    st = split(pb, c.L, c.G, b);
    if (!st) st = plan_build(&c, b, out);
    free(b);
err_ctx:
    ctx_free(&c);
    return st;
}

bg_status_t bg_partition_uniform(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_heuristic(pb, split_uniform_fn, out);
}

bg_status_t bg_partition_params(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_heuristic(pb, split_params_fn, out);
}

/* ---- the exact split ---- */

/* Upper bound on the optimal bottleneck from cheap feasible splits (uniform
 * count, compute-balanced); INFINITY when neither fits. Only prunes: the
 * DP stays exact because the optimum is <= any feasible split's value. */
static double upper_bound(const span_ctx_t *c, int *b)
{
    double ub = INFINITY;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) {
            split_uniform(c->L, c->G, b);
        } else {
            const bg_costs_t *co = c->pb->costs[0];
            double *pre = malloc(sizeof(double) * ((size_t)c->L + 1));
            if (!pre) break;
            for (int l = 0; l <= c->L; l++) pre[l] = co->pf[l] + co->pb[l] + co->pw[l];
            bg_split_prefix(pre, c->L, c->G, b);
            free(pre);
        }
        double bott = 0;
        bool fits = true;
        for (int g = 0; g < c->G && fits; g++) {
            span_time_t t = span_time(c, g, b[g], b[g + 1]);
            span_mem_t m = span_mem(c, g, b[g], b[g + 1], bg_chain_act_bytes(c->ch, b[g], b[g + 1]),
                                    range_ws(c->ch, b[g], b[g + 1]));
            fits = m.total <= c->cap[g];
            if (t.time > bott) bott = t.time;
        }
        if (fits && bott < ub) ub = bott;
    }
    return ub;
}

#define IDX(g, j) ((size_t)(g) * (size_t)(c->L + 1) + (size_t)(j))

/*
 * Necessary condition for any fitting split, in O(L): greedily give each
 * chunk as many layers as its memory lower bound allows, letting a chunk
 * stay empty (a relaxation: caps and in-flight counts differ per chunk, so
 * a forced non-empty chunk could break the argument). The bound only grows
 * with the range, so no split reaches further after g chunks than the
 * greedy one; if the greedy split cannot cover the chain, nothing can.
 */
static bool greedy_may_fit(const span_ctx_t *c)
{
    int i = 0;
    for (int g = 0; g < c->G && i < c->L; g++) {
        int j = i;
        int64_t act = 0, ws = 0;
        while (j < c->L) {
            int64_t a = act + act_back(c->ch, i, j);
            int64_t w = c->ch->layer[j].workspace_bytes > ws ? c->ch->layer[j].workspace_bytes : ws;
            if (span_mem(c, g, i, j + 1, a, w).lb > c->cap[g]) break;
            act = a;
            ws = w;
            j++;
        }
        i = j;
    }
    return i == c->L;
}

/*
 * One DP pass over chunks g = 0..G-1 and chunk ends j:
 *   bottleneck mode: val[g][j] = min_i max(val[g-1][i], t(g, i, j));
 *   total mode:      val[g][j] = min_i val[g-1][i] + t(g, i, j), only
 *                    chunks with t <= bound (the optimal bottleneck),
 *                    summed in chunk order as the evaluation does (fl(a+t)
 *                    is monotone in a, so this is exact in floating point).
 * Only chunks that fit (mem <= cap) and have t <= bound count. Scanning i
 * downwards the compute time and the memory lower bound only grow, so:
 * the scan stops once either exceeds the bound/cap, and such a stop at i
 * rules out every i' <= i for all later j too ("floor"); in bottleneck
 * mode it also stops once compute alone reaches the best value so far.
 * from[] (total mode) records the argmin for the backtrack.
 */
static void dp_pass(const span_ctx_t *c, bool total_mode, double bound, double *val, int *from)
{
    int L = c->L, G = c->G;
    int plo = 0, phi = 0; /* finite entries of row g-1 lie in [plo, phi] */
    for (int g = 0; g < G; g++) {
        for (int j = 0; j <= L; j++) {
            val[IDX(g, j)] = INFINITY;
            if (from) from[IDX(g, j)] = -1;
        }
        int jlo = g + 1, jhi = L - (G - 1 - g);
        int nlo = L + 1, nhi = -1;
        if (g == 0) {
            /* the first chunk starts at layer 0: grow it from the back */
            int64_t act = 0, ws = 0;
            for (int j = jlo; j <= jhi; j++) {
                act += act_back(c->ch, 0, j - 1);
                if (c->ch->layer[j - 1].workspace_bytes > ws) ws = c->ch->layer[j - 1].workspace_bytes;
                span_time_t t = span_time(c, 0, 0, j);
                span_mem_t m = span_mem(c, 0, 0, j, act, ws);
                if (t.comp > bound || m.lb > c->cap[0]) break;
                if (t.time > bound || m.total > c->cap[0]) continue;
                val[IDX(0, j)] = total_mode ? 0.0 + t.time : t.time;
                if (from) from[IDX(0, j)] = 0;
                if (j < nlo) nlo = j;
                nhi = j;
            }
        } else {
            int floor = plo - 1;
            for (int j = jlo > plo + 1 ? jlo : plo + 1; j <= jhi && floor < phi; j++) {
                double bv = INFINITY;
                int bi = -1;
                int64_t act = 0, ws = 0;
                for (int i = j - 1; i > floor && i >= g; i--) {
                    act += act_front(c->ch, i, j);
                    if (c->ch->layer[i].workspace_bytes > ws) ws = c->ch->layer[i].workspace_bytes;
                    span_time_t t = span_time(c, g, i, j);
                    if (t.comp > bound) {
                        floor = i;
                        break;
                    }
                    if (!total_mode && t.comp >= bv) break;
                    span_mem_t m = span_mem(c, g, i, j, act, ws);
                    if (m.lb > c->cap[g]) {
                        floor = i;
                        break;
                    }
                    if (i > phi) continue;
                    double prev = val[IDX(g - 1, i)];
                    if (prev == INFINITY || m.total > c->cap[g] || t.time > bound) continue;
                    double cand = total_mode ? prev + t.time : (prev > t.time ? prev : t.time);
                    if (cand < bv) {
                        bv = cand;
                        bi = i;
                    }
                }
                val[IDX(g, j)] = bv;
                if (from) from[IDX(g, j)] = bi;
                if (bv < INFINITY) {
                    if (j < nlo) nlo = j;
                    nhi = j;
                }
            }
        }
        if (nhi < 0) { /* nothing reachable: every later row is infinite */
            for (size_t x = IDX(g + 1, 0); x < IDX(G, 0); x++) {
                val[x] = INFINITY;
                if (from) from[x] = -1;
            }
            return;
        }
        plo = nlo;
        phi = nhi;
    }
}

/* Pass for diagnostics: min over splits of max_g mem_g / cap_g. */
static void dp_min_peak(const span_ctx_t *c, double *best, int64_t *need, int64_t *capb)
{
    int L = c->L, G = c->G;
    /* carried along the argmin so that the message can quote bytes */
    int64_t *bn = calloc((size_t)G * (L + 1), sizeof(int64_t));
    int64_t *bc = calloc((size_t)G * (L + 1), sizeof(int64_t));
    for (int g = 0; g < G; g++) {
        for (int j = 0; j <= L; j++) best[IDX(g, j)] = INFINITY;
        int jlo = g + 1, jhi = L - (G - 1 - g);
        int64_t act0 = 0, ws0 = 0;
        for (int j = jlo; j <= jhi; j++) {
            double bv = INFINITY;
            int64_t bneed = 0, bcap = 0;
            int64_t act = 0, ws = 0;
            if (g == 0) {
                act0 += act_back(c->ch, 0, j - 1);
                if (c->ch->layer[j - 1].workspace_bytes > ws0) ws0 = c->ch->layer[j - 1].workspace_bytes;
                span_mem_t m = span_mem(c, 0, 0, j, act0, ws0);
                best[IDX(g, j)] = (double)m.total / (double)(c->cap[0] > 0 ? c->cap[0] : 1);
                if (bn) {
                    bn[IDX(g, j)] = m.total;
                    bc[IDX(g, j)] = c->cap[0];
                }
                continue;
            }
            for (int i = j - 1; i >= g; i--) {
                act += act_front(c->ch, i, j);
                if (c->ch->layer[i].workspace_bytes > ws) ws = c->ch->layer[i].workspace_bytes;
                span_mem_t m = span_mem(c, g, i, j, act, ws);
                double cap = (double)(c->cap[g] > 0 ? c->cap[g] : 1);
                if ((double)m.lb / cap >= bv) break;
                double prev = g == 0 ? (i == 0 ? 0.0 : INFINITY) : best[IDX(g - 1, i)];
                if (prev == INFINITY) continue;
                double mine = (double)m.total / cap;
                double cand = prev > mine ? prev : mine;
                if (cand < bv) {
                    bv = cand;
                    if (prev > mine && bn && g > 0) {
                        bneed = bn[IDX(g - 1, i)];
                        bcap = bc[IDX(g - 1, i)];
                    } else {
                        bneed = m.total;
                        bcap = c->cap[g];
                    }
                }
            }
            best[IDX(g, j)] = bv;
            if (bn) {
                bn[IDX(g, j)] = bneed;
                bc[IDX(g, j)] = bcap;
            }
        }
    }
    *need = bn ? bn[IDX(G - 1, L)] : 0;
    *capb = bc ? bc[IDX(G - 1, L)] : 0;
    free(bn);
    free(bc);
}

bg_status_t bg_partition_min_peak(const bg_part_problem_t *pb, double *ratio_out,
                                  int64_t *need_bytes_out, int64_t *cap_bytes_out)
{
    span_ctx_t c;
    bg_status_t st = ctx_init(pb, &c);
    if (st) return st;
    double *best = malloc(sizeof(double) * (size_t)c.G * (c.L + 1));
    if (!best) {
        ctx_free(&c);
        return bg_errorf(BG_ERR_NOMEM, "partition: out of memory");
    }
    int64_t need = 0, cap = 0;
    dp_min_peak(&c, best, &need, &cap);
    *ratio_out = best[(size_t)(c.G - 1) * (c.L + 1) + c.L];
    if (need_bytes_out) *need_bytes_out = need;
    if (cap_bytes_out) *cap_bytes_out = cap;
    free(best);
    ctx_free(&c);
    return BG_OK;
}

/* Peak ratio of `pb` with one knob changed; NAN when it cannot be tried. */
static double try_peak(const bg_part_problem_t *pb, const bg_part_config_t *cfg,
                       const bg_costs_t *const *costs)
{
    bg_part_problem_t q = *pb;
    q.cfg = *cfg;
    q.costs = costs;
    double r;
    if (bg_part_config_check(cfg, pb->chain->n_layers) != BG_OK) return NAN;
    if (bg_partition_min_peak(&q, &r, NULL, NULL) != BG_OK) return NAN;
    return r;
}

static void fmt_gib(char *buf, size_t n, double bytes)
{
    snprintf(buf, n, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
}

/* Append one "what would help" clause for a changed configuration. */
static void help_clause(char *msg, size_t n, const char *what, double ratio)
{
    size_t len = strlen(msg);
    if (isnan(ratio) || len + 8 >= n) return;
    snprintf(msg + len, n - len, "%s%s (peak %.0f%% of memory%s)", len ? "; " : "", what,
             100.0 * ratio, ratio <= 1.0 ? ": fits" : "");
}

/* "--stages N" (with or without recompute) that would fit: the first
 * doubling of the stage count that does, on a homogeneous pipeline. */
static void help_more_stages(const bg_part_problem_t *pb, char *help, size_t n)
{
    const bg_part_config_t *cfg = &pb->cfg;
    bool homo = true;
    for (int r = 1; r < cfg->stages; r++) homo &= pb->costs[r] == pb->costs[0];
    int smax = pb->chain->n_layers / cfg->chunks;
    const bg_costs_t **cs = homo ? malloc(sizeof(*cs) * (size_t)smax) : NULL;
    for (int rc = cfg->recompute; cs && rc <= 1; rc++) {
        for (int r = 0; r < smax; r++) cs[r] = pb->costs[0];
        double ratio = NAN;
        int s2 = cfg->stages;
        while (s2 < smax) {
            s2 = 2 * s2 < smax ? 2 * s2 : smax;
            bg_part_config_t k = *cfg;
            k.stages = s2;
            k.recompute = rc;
            int m2 = bg_sched_round_m(bg_sched_desc(k.schedule), s2, k.micro_batches);
            if (m2 < 0) {
                ratio = NAN;
                break;
            }
            k.micro_batches = m2;
            ratio = try_peak(pb, &k, cs);
            if (ratio <= 1.0) break;
        }
        if (s2 > cfg->stages) {
            char what[64];
            snprintf(what, sizeof(what), "--stages %d%s", s2,
                     rc && !cfg->recompute ? " with --recompute" : "");
            help_clause(help, n, what, ratio);
        }
    }
    free(cs);
}

/* A micro-batch half the size (activations scale with it), priced again. */
static void help_smaller_mb(const bg_part_problem_t *pb, char *help, size_t n)
{
    const bg_part_config_t *cfg = &pb->cfg;
    int mb2 = pb->costs[0]->micro_batch / 2;
    if (mb2 < 1) return;
    bg_costs_t *nc = calloc((size_t)cfg->stages, sizeof(bg_costs_t));
    const bg_costs_t **cs = malloc(sizeof(*cs) * (size_t)cfg->stages);
    bool ok = nc && cs;
    int built = 0;
    for (int r = 0; ok && r < cfg->stages; r++) {
        int same = -1;
        for (int q = 0; q < r; q++)
            if (pb->costs[q] == pb->costs[r]) same = q;
        if (same >= 0) {
            cs[r] = cs[same];
            continue;
        }
        ok = bg_costs_build(pb->chain, &pb->costs[r]->dev, mb2, pb->costs[r]->prof, &nc[r]) == BG_OK;
        if (ok) {
            cs[r] = &nc[r];
            built = r + 1;
        }
    }
    if (ok) {
        bg_part_config_t k = *cfg;
        k.micro_batches = cfg->micro_batches * 2;
        char what[96];
        snprintf(what, sizeof(what), "micro-batch size %d (--micro-batches %d)", mb2,
                 k.micro_batches);
        help_clause(help, n, what, try_peak(pb, &k, cs));
    }
    for (int r = 0; nc && r < built; r++) bg_costs_free(&nc[r]);
    free(nc);
    free(cs);
}

/* Build the "does not fit" error: by how much, and what would help. */
static bg_status_t infeasible_error(const bg_part_problem_t *pb)
{
    const bg_part_config_t *cfg = &pb->cfg;
    double ratio = NAN;
    int64_t need = 0, cap = 0;
    bg_status_t st = bg_partition_min_peak(pb, &ratio, &need, &cap);
    if (st) return st;
    char help[768] = "";
    if (!cfg->recompute) {
        bg_part_config_t k = *cfg;
        k.recompute = true;
        help_clause(help, sizeof(help), "--recompute", try_peak(pb, &k, pb->costs));
    }
    help_more_stages(pb, help, sizeof(help));
    help_smaller_mb(pb, help, sizeof(help));
    int mb = pb->costs[0]->micro_batch;
    char needs[32], caps[32], over[32];
    fmt_gib(needs, sizeof(needs), (double)need);
    fmt_gib(caps, sizeof(caps), (double)cap);
    fmt_gib(over, sizeof(over), (double)(need - cap));
    if (isinf(ratio))
        return bg_errorf(BG_ERR_NOMEM, "does not fit: no split of %d layers into %d chunk(s) exists",
                         pb->chain->n_layers, cfg->stages * cfg->chunks);
    return bg_errorf(BG_ERR_NOMEM,
                     "does not fit: %d stage(s) x %d chunk(s), %s, %d micro-batches of %d%s: the "
                     "split with the lowest peak needs %s where a chunk may use %s (%s over, "
                     "%.0f%%); would help: %s",
                     cfg->stages, cfg->chunks, bg_sched_kind_name(cfg->schedule),
                     cfg->micro_batches, mb, cfg->recompute ? ", recompute" : "", needs, caps, over,
                     100.0 * ratio, help[0] ? help : "nothing this tool can change (tensor parallelism)");
}

/* The lexicographic (bottleneck, total) split into b [G+1]; *bott_out is
 * its bottleneck. `best`/`from` are [G*(L+1)] scratch. BG_ERR_NOMEM (with
 * the diagnosis when asked) when nothing fits. */
static bg_status_t split_bottleneck(const span_ctx_t *c, bool diagnose, double *best, int *from,
                                    int *b, double *bott_out)
{
    double bott = INFINITY;
    if (greedy_may_fit(c)) {
        dp_pass(c, false, upper_bound(c, b), best, NULL);
        bott = best[IDX(c->G - 1, c->L)];
    }
    if (bott == INFINITY)
        return diagnose ? infeasible_error(c->pb)
                        : bg_errorf(BG_ERR_NOMEM, "does not fit in %s memory", c->pb->costs[0]->dev.name);
    dp_pass(c, true, bott, best, from);
    if (from[IDX(c->G - 1, c->L)] < 0)
        return bg_errorf(BG_ERR_INTERNAL, "partition: second pass lost the optimum");
    b[c->G] = c->L;
    for (int g = c->G - 1; g >= 0; g--) b[g] = from[IDX(g, b[g + 1])];
    *bott_out = bott;
    return BG_OK;
}

/* Bottleneck thresholds tried by the step search: at most this many,
 * spread evenly over the distinct chunk times in range (a search budget:
 * the shape search calls the planner for every shape). */
#define STEP_THRESHOLDS 16
/* ...and the scan over them stops after this many in a row that do not
 * improve the best step (the step is mostly unimodal in the threshold:
 * more cap buys a smaller total and fill, and costs m * T). */
#define STEP_PATIENCE 2
/* ...and never runs more than this many threshold DPs (planning time: the
 * shape search splits dozens of shapes of 100+ layers). */
#define STEP_PASSES 4
/* Predicted steps within this fraction of the best are a tie, settled
 * towards the split closest to uniform (profile noise must not flip it). */
#define STEP_TIE 0.005

typedef struct step_cands {
    int G, n, cap;
    int *b;       /* [cap][G+1] */
    double *step; /* [cap] */
} step_cands_t;

/* Evaluate split b and record it when it fits; its step in *step_out
 * (INFINITY when it does not fit). Fails only for lack of memory. */
static bg_status_t cand_add(const span_ctx_t *c, step_cands_t *cs, const int *b, double *step_out)
{
    bg_plan_t pl;
    bg_status_t st = plan_build(c, b, &pl);
    if (st) return st;
    *step_out = pl.fits ? pl.step_s : INFINITY;
    if (pl.fits && cs->n < cs->cap) {
        memcpy(cs->b + (size_t)cs->n * (cs->G + 1), b, sizeof(int) * ((size_t)cs->G + 1));
        cs->step[cs->n++] = pl.step_s;
    }
    bg_plan_free(&pl);
    return BG_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Distinct chunk times in (lo, hi), ascending, subsampled evenly to at
 * most STEP_THRESHOLDS into th (caller frees *th). Chunk compute only grows
 * with the span, so each scan stops past hi. */
static bg_status_t step_thresholds(const span_ctx_t *c, double lo, double hi, double **th, int *n)
{
    double *v = NULL;
    size_t cap = 0, len = 0;
    for (int g = 0; g < c->G; g++)
        for (int i = g; i <= c->L - (c->G - g); i++)
            for (int j = i + 1; j <= c->L - (c->G - 1 - g); j++) {
                span_time_t t = span_time(c, g, i, j);
                if (t.comp >= hi) break;
                if (t.time <= lo || t.time >= hi) continue;
                if (bg_grow(&v, &cap, len + 1, sizeof(double))) {
                    free(v);
                    return bg_errorf(BG_ERR_NOMEM, "partition: out of memory for thresholds");
                }
                v[len++] = t.time;
            }
    if (len) qsort(v, len, sizeof(double), cmp_double);
    size_t d = 0;
    for (size_t k = 0; k < len; k++)
        if (!d || v[k] != v[d - 1]) v[d++] = v[k];
    size_t keep = d < STEP_THRESHOLDS ? d : STEP_THRESHOLDS;
    for (size_t k = 0; k < keep; k++) v[k] = v[keep == d ? k : k * (d - 1) / (keep - 1)];
    *th = v;
    *n = (int)keep;
    return BG_OK;
}

/* L1 distance of split b from the uniform count split u. */
static long split_dist(const int *b, const int *u, int G)
{
    long d = 0;
    for (int g = 0; g <= G; g++) d += labs((long)b[g] - u[g]);
    return d;
}

/* Pick among the candidates: those within STEP_TIE of the best and no
 * worse than the best baseline (`cap_step`) tie; the one closest to the
 * uniform split u wins, then the lower step. Returns its index. */
static int cand_pick(const step_cands_t *cs, double cap_step, const int *u, double *lim_out)
{
    int best = 0;
    for (int k = 1; k < cs->n; k++)
        if (cs->step[k] < cs->step[best]) best = k;
    double lim = cs->step[best] * (1.0 + STEP_TIE);
    if (lim > cap_step) lim = cap_step;
    *lim_out = lim;
    int pick = best;
    long pd = split_dist(cs->b + (size_t)best * (cs->G + 1), u, cs->G);
    for (int k = 0; k < cs->n; k++) {
        if (cs->step[k] > lim) continue;
        long d = split_dist(cs->b + (size_t)k * (cs->G + 1), u, cs->G);
        if (d < pd || (d == pd && cs->step[k] < cs->step[pick])) {
            pick = k;
            pd = d;
        }
    }
    return pick;
}

/* Move the cuts of b [G+1] one layer at a time towards the uniform split
 * u while the step stays <= lim and the split fits: near-ties settle on the
 * split closest to uniform, not on whichever one noise made the DP find.
 * Each accepted move shortens the distance to u, so it ends. */
static bg_status_t walk_to_uniform(const span_ctx_t *c, int *b, const int *u, double lim)
{
    for (bool moved = true; moved;) {
        moved = false;
        for (int g = 1; g < c->G; g++) {
            int old = b[g], nb = old + (u[g] > old) - (u[g] < old);
            if (nb == old || nb <= b[g - 1] || nb >= b[g + 1]) continue;
            b[g] = nb;
            bg_plan_t pl;
            bg_status_t st = plan_build(c, b, &pl);
            if (st) {
                b[g] = old;
                return st;
            }
            if (pl.fits && pl.step_s <= lim) moved = true;
            else b[g] = old;
            bg_plan_free(&pl);
        }
    }
    return BG_OK;
}

/*
 * The split minimising the predicted step (docs/partition.md): candidates
 * are the lexicographic (bottleneck, total) split, the two baselines, and
 * for each bottleneck threshold T above the optimal bottleneck (while
 * m*T, a lower bound of any such step, can still beat the best) the
 * min-total split under cap T; each is evaluated in full by plan_build and
 * cand_pick chooses. Never worse than a fitting baseline by construction.
 */
static bg_status_t split_step(const span_ctx_t *c, double bott, double *best, int *from,
                              step_cands_t *cs, int *u, int *b)
{
    double s_lex, s_uni, s_par, *th = NULL;
    int nth = 0;
    size_t g1 = (size_t)c->G + 1;
    bg_status_t st = cand_add(c, cs, b, &s_lex);
    if (!st) st = split_params_balanced(c->pb->costs[0]->pparams, c->L, c->G, b);
    if (!st) st = cand_add(c, cs, b, &s_par);
    split_uniform(c->L, c->G, u);
    if (!st) st = cand_add(c, cs, u, &s_uni);
    if (st) return st;
    double base = s_uni < s_par ? s_uni : s_par;
    double top = s_lex < base ? s_lex : base, m = c->pb->cfg.micro_batches;
    st = step_thresholds(c, bott, top / m, &th, &nth);
    for (int k = 0, idle = 0; !st && k < nth && k < STEP_PASSES && idle < STEP_PATIENCE; k++) {
        double s;
        if (m * th[k] >= top) break;
        dp_pass(c, true, th[k], best, from);
        if (from[IDX(c->G - 1, c->L)] < 0) continue;
        b[c->G] = c->L;
        for (int g = c->G - 1; g >= 0; g--) b[g] = from[IDX(g, b[g + 1])];
        /* a threshold that returns the last split again tells nothing new */
        if (cs->n && !memcmp(b, cs->b + (size_t)(cs->n - 1) * (c->G + 1), sizeof(int) * g1))
            continue;
        idle++;
        st = cand_add(c, cs, b, &s);
        if (!st && s < top) {
            top = s;
            idle = 0;
        }
    }
    free(th);
    if (st) return st;
    double lim;
    int k = cand_pick(cs, base, u, &lim);
    memcpy(b, cs->b + (size_t)k * (c->G + 1), sizeof(int) * ((size_t)c->G + 1));
    return walk_to_uniform(c, b, u, lim);
}

static bg_status_t partition_optimal(const bg_part_problem_t *pb, bool diagnose, bool by_step,
                                     bg_plan_t *out);

bg_status_t bg_partition_optimal(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_optimal(pb, true, true, out);
}

bg_status_t bg_partition_try(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_optimal(pb, false, true, out);
}

bg_status_t bg_partition_try_bottleneck(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_optimal(pb, false, false, out);
}

bg_status_t bg_partition_bottleneck(const bg_part_problem_t *pb, bg_plan_t *out)
{
    return partition_optimal(pb, true, false, out);
}

static bg_status_t partition_optimal(const bg_part_problem_t *pb, bool diagnose, bool by_step,
                                     bg_plan_t *out)
{
    span_ctx_t cc;
    bg_status_t st = ctx_init(pb, &cc);
    if (st) return st;
    const span_ctx_t *c = &cc;
    size_t n = (size_t)c->G * (size_t)(c->L + 1), g1 = (size_t)c->G + 1;
    step_cands_t cs = {.G = c->G, .cap = STEP_THRESHOLDS + 3};
    double *best = malloc(sizeof(double) * n);
    int *from = malloc(sizeof(int) * n);
    int *b = malloc(sizeof(int) * g1);
    int *u = malloc(sizeof(int) * g1);
    cs.b = malloc(sizeof(int) * g1 * (size_t)cs.cap);
    cs.step = malloc(sizeof(double) * (size_t)cs.cap);
    if (!best || !from || !b || !u || !cs.b || !cs.step) {
        st = bg_errorf(BG_ERR_NOMEM, "partition: out of memory for %d chunks x %d layers", c->G,
                       c->L);
        goto err_free;
    }
    double bott = INFINITY;
    st = split_bottleneck(c, diagnose, best, from, b, &bott);
    if (!st && by_step) st = split_step(c, bott, best, from, &cs, u, b);
    if (!st) st = plan_build(c, b, out);
err_free:
    free(cs.step);
    free(cs.b);
    free(u);
    free(best);
    free(from);
    free(b);
    ctx_free(&cc);
    return st;
}

bg_status_t bg_partition(const bg_part_problem_t *pb, bg_split_method_t m, bg_plan_t *out)
{
    switch (m) {
    case BG_SPLIT_OPTIMAL: return bg_partition_optimal(pb, out);
    case BG_SPLIT_UNIFORM: return bg_partition_uniform(pb, out);
    case BG_SPLIT_PARAMS: return bg_partition_params(pb, out);
    }
    return bg_errorf(BG_ERR_INVALID, "unknown split method %d", (int)m);
}
