/*
 * partition/search.c -- shape search over (S, D, m, recompute) for N
 * devices (partition/search.h). Exactness comes from bg_partition_try per
 * candidate; speed from pricing each micro-batch size once and from two
 * lower bounds that skip candidates which cannot enter the top list.
 * Deterministic: candidates are visited in a fixed order.
 */
#include "partition/search.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BG_SEARCH_MAX_PRICES 256

typedef struct price_cache {
    int n;
    bg_costs_t c[BG_SEARCH_MAX_PRICES];
} price_cache_t;

static void cache_free(price_cache_t *pc)
{
    for (int i = 0; i < pc->n; i++) bg_costs_free(&pc->c[i]);
    pc->n = 0;
}

/* The chain priced at micro-batch size mb, built on first use. */
static bg_status_t cache_get(price_cache_t *pc, const bg_chain_t *ch, const bg_device_desc_t *dev,
                             const bg_profile_t *prof, int mb, const bg_costs_t **out)
{
    for (int i = 0; i < pc->n; i++)
        if (pc->c[i].micro_batch == mb) {
            *out = &pc->c[i];
            return BG_OK;
        }
    if (pc->n == BG_SEARCH_MAX_PRICES) {
        bg_costs_free(&pc->c[0]); /* evict the oldest; order of visits keeps this rare */
        memmove(&pc->c[0], &pc->c[1], sizeof(pc->c[0]) * (BG_SEARCH_MAX_PRICES - 1));
        pc->n--;
    }
    bg_status_t st = bg_costs_build(ch, dev, mb, prof, &pc->c[pc->n]);
    if (st) return st;
    *out = &pc->c[pc->n++];
    return BG_OK;
}

/* a before b? faster, then fewer stages, fewer micro-batches, no recompute */
static int result_before(const bg_search_result_t *a, const bg_search_result_t *b)
{
    if (a->step_s != b->step_s) return a->step_s < b->step_s;
    if (a->cfg.stages != b->cfg.stages) return a->cfg.stages < b->cfg.stages;
    if (a->cfg.micro_batches != b->cfg.micro_batches) return a->cfg.micro_batches < b->cfg.micro_batches;
    return !a->cfg.recompute && b->cfg.recompute;
}

static void insert_result(bg_search_result_t *res, int *n, int cap, const bg_search_result_t *r)
{
    int pos = *n;
    while (pos > 0 && result_before(r, &res[pos - 1])) pos--;
    if (pos >= cap) return;
    int last = *n < cap ? *n : cap - 1;
    memmove(&res[pos + 1], &res[pos], sizeof(*res) * (size_t)(last - pos));
    res[pos] = *r;
    if (*n < cap) (*n)++;
}

static bg_status_t opts_check(const bg_search_opts_t *o, int L)
{
    if (o->gpus < 1) return bg_errorf(BG_ERR_INVALID, "--gpus must be >= 1 (got %d)", o->gpus);
    if (o->global_batch < 1)
        return bg_errorf(BG_ERR_INVALID, "--batch must be >= 1 (got %lld)", (long long)o->global_batch);
    if (o->top < 1) return bg_errorf(BG_ERR_INVALID, "search needs room for one result");
    if (o->chunks < 1) return bg_errorf(BG_ERR_INVALID, "--chunks must be >= 1");
    const bg_sched_desc_t *sd = bg_sched_desc(o->schedule);
    if (!sd) return bg_errorf(BG_ERR_INVALID, "bad schedule %d", (int)o->schedule);
    int v;
    bg_status_t st = bg_sched_resolve_chunks(sd, o->chunks, &v);
    if (st) return st;
    if (o->stages < 0 || o->dp < 0 || o->micro_batches < 0)
        return bg_errorf(BG_ERR_INVALID, "negative stages, dp or micro-batches");
    if (o->stages && o->dp && (int64_t)o->stages * o->dp != o->gpus)
        return bg_errorf(BG_ERR_INVALID, "--stages %d x --dp %d is not --gpus %d", o->stages, o->dp,
                         o->gpus);
    if (o->stages && (int64_t)o->stages * o->chunks > L)
        return bg_errorf(BG_ERR_INVALID, "%d stages x %d chunks but the model has %d layers",
                         o->stages, o->chunks, L);
    return BG_OK;
}

typedef struct search_ctx {
    const bg_chain_t *ch;
    const bg_device_desc_t *dev;
    const bg_profile_t *prof;
    const bg_search_opts_t *o;
    price_cache_t *pc;
    const bg_costs_t **cp; /* [gpus] */
    bg_search_result_t *res;
    int *n_res;
    bg_search_stats_t st;
    int64_t total_params, total_shared;
    int shapes; /* (S, D) pairs that divide the batch */
} search_ctx_t;

typedef struct cand {
    int S, D, m, mb;
    bool rc;
    double lb; /* lower bound on its step time */
} cand_t;

/*
 * A lower bound on the predicted step of a shape from totals alone: the
 * stage times sum to at least the total compute T, the slowest is at least
 * T/S, and the tail (allreduce + optimizer) is at least its mean over
 * stages. With every rank's fill/drain term at least k times its time
 * (k = bg_sched_fill_floor; docs/partition.md):
 *   m*max + (sum d - max d) >= (m - k) max + k T >= (m - k) T / S + k T
 * e.g. k = 1 for gpipe and 1f1b, 1/v for interleaved, 0 for zb-h1.
 */
static double step_lower_bound(const search_ctx_t *s, const bg_costs_t *co, const cand_t *c)
{
    int L = s->ch->n_layers;
    const bg_search_opts_t *o = s->o;
    double T = co->pf[L] + co->pb[L] + co->pw[L] + (c->rc ? co->pf[L] : 0.0);
    double m = c->m, S = c->S;
    double k = bg_sched_fill_floor(bg_sched_desc(o->schedule), c->m, o->chunks);
    double pipe = (m - k) * T / S + k * T;
    double P = (double)s->total_params, D = c->D;
    double tail = 2.0 * (double)bg_param_bytes(s->ch->dtype, o->opt_state_bytes, o->zero, c->D,
                                               s->total_params) / s->dev->mem_bw / S;
    if (c->D > 1 && o->zero) /* stage_extras': reduce-scatter + all-gather of the compute copy */
        tail += (D - 1) / D * (4.0 + (double)bg_dtype_size(s->ch->dtype)) * P / s->dev->dp_bw / S +
                2.0 * (D - 1) * s->dev->dp_lat;
    else if (c->D > 1)
        tail += 2.0 * (D - 1) / D * 4.0 * P / s->dev->dp_bw / S + 2.0 * (D - 1) * s->dev->dp_lat;
    return (pipe + tail) * (1.0 - 1e-9); /* margin for summation order */
}

/*
 * Split one candidate and keep it if it is among the best. Shapes are
 * ranked with the fast bottleneck split (whose predicted step bounds the
 * step-minimising split's from above, so pruning stays sound); the kept
 * few are re-split by predicted step at the end (resplit_top).
 */
static bg_status_t solve_candidate(search_ctx_t *s, const cand_t *c)
{
    const bg_search_opts_t *o = s->o;
    const bg_costs_t *co;
    bg_status_t st = cache_get(s->pc, s->ch, s->dev, s->prof, c->mb, &co);
    if (st) return st;
    for (int r = 0; r < c->S; r++) s->cp[r] = co;
    bg_part_problem_t pb = {s->ch, s->cp,
                            {o->schedule, c->S, o->chunks, c->m, c->D, c->rc, o->opt_state_bytes, 0,
                             o->zero}};
    bg_plan_t pl;
    s->st.solved++;
    st = bg_partition_try_bottleneck(&pb, &pl);
    if (st == BG_ERR_NOMEM) {
        s->st.no_fit++;
        bg_clear_error();
        return BG_OK;
    }
    if (st) return st;
    bg_search_result_t r = {pb.cfg, c->mb, pl.step_s, pl.pipe_s, pl.bubble,
                            (double)o->global_batch / pl.step_s, pl.peak_mem};
    insert_result(s->res, s->n_res, o->top, &r);
    bg_plan_free(&pl);
    return BG_OK;
}

/* The kept results, split by predicted step (bg_partition_try) and sorted
 * again: what `brigade plan` will then print for the chosen shape. */
static bg_status_t resplit_top(search_ctx_t *s, int n)
{
    bg_search_result_t *tmp = malloc(sizeof(*tmp) * (size_t)n + 1);
    if (!tmp) return bg_errorf(BG_ERR_NOMEM, "search: out of memory");
    int m = 0;
    bg_status_t st = BG_OK;
    for (int i = 0; i < n && !st; i++) {
        const bg_costs_t *co;
        bg_search_result_t r = s->res[i];
        if ((st = cache_get(s->pc, s->ch, s->dev, s->prof, r.micro_batch, &co))) break;
        for (int k = 0; k < r.cfg.stages; k++) s->cp[k] = co;
        bg_part_problem_t pb = {s->ch, s->cp, r.cfg};
        bg_plan_t pl;
        if ((st = bg_partition_try(&pb, &pl))) break;
        r.step_s = pl.step_s, r.pipe_s = pl.pipe_s, r.bubble = pl.bubble;
        r.samples_per_s = (double)s->o->global_batch / pl.step_s, r.peak_mem = pl.peak_mem;
        bg_plan_free(&pl);
        insert_result(tmp, &m, n, &r);
    }
    if (!st) memcpy(s->res, tmp, sizeof(*tmp) * (size_t)m);
    free(tmp);
    return st;
}

typedef struct cand_list {
    int n, cap;
    cand_t *v;
} cand_list_t;

static bg_status_t cand_push(cand_list_t *l, const cand_t *c)
{
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 256;
        cand_t *nv = realloc(l->v, sizeof(*nv) * (size_t)nc);
        if (!nv) return bg_errorf(BG_ERR_NOMEM, "search: out of memory");
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = *c;
    return BG_OK;
}

/* Parameters, gradients and optimizer state of n parameters on one
 * replica of D (every weight version the schedule holds). */
static int64_t state_bytes(bg_dtype_t dtype, const bg_search_opts_t *o, int D, int64_t n)
{
    return bg_param_bytes(dtype, o->opt_state_bytes, o->zero, D, n) +
           bg_versions_bytes(dtype, bg_sched_desc(o->schedule)->versions, n);
}

/* Every (m, recompute) for one (S, D), with its lower bound. */
static bg_status_t collect_shape(search_ctx_t *s, int S, int D, cand_list_t *out)
{
    const bg_search_opts_t *o = s->o;
    if (o->global_batch % D) return BG_OK;
    int64_t per = o->global_batch / D;
    s->shapes++;
    /* parameters, gradients and optimizer state alone: max stage >= mean */
    if (state_bytes(s->ch->dtype, o, D, s->total_params) / S > s->dev->mem_bytes) {
        s->st.no_fit++;
        return BG_OK;
    }
    for (int64_t m = 1; m <= per && m <= (1 << 20); m++) {
        if (per % m) continue;
        if (o->micro_batches && m != o->micro_batches) continue;
        if (!bg_sched_desc(o->schedule)->m_ok(S, (int)m)) continue;
        if (per / m > (1 << 30)) continue;
        for (int rc = 0; rc <= 1; rc++) {
            if (o->recompute >= 0 && rc != o->recompute) continue;
            cand_t c = {S, D, (int)m, (int)(per / m), rc, 0.0};
            const bg_costs_t *co;
            bg_status_t st = cache_get(s->pc, s->ch, s->dev, s->prof, c.mb, &co);
            if (st) return st;
            c.lb = step_lower_bound(s, co, &c);
            if ((st = cand_push(out, &c))) return st;
            s->st.candidates++;
        }
    }
    return BG_OK;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->lb != y->lb) return x->lb < y->lb ? -1 : 1;
    /* a total order keeps the visit (and so the result) deterministic */
    if (x->S != y->S) return x->S - y->S;
    if (x->m != y->m) return x->m - y->m;
    return (int)x->rc - (int)y->rc;
}

/* Best first: once a bound cannot beat the kept results, neither can any
 * later candidate. */
static bg_status_t solve_all(search_ctx_t *s, cand_list_t *l)
{
    if (l->n) qsort(l->v, (size_t)l->n, sizeof(*l->v), cand_cmp); /* v is NULL when empty */
    for (int i = 0; i < l->n; i++) {
        if (*s->n_res == s->o->top && l->v[i].lb >= s->res[s->o->top - 1].step_s) {
            s->st.pruned += l->n - i;
            break;
        }
        bg_status_t st = solve_candidate(s, &l->v[i]);
        if (st) return st;
    }
    return BG_OK;
}

bg_status_t bg_search_shapes(const bg_chain_t *chain, const bg_device_desc_t *dev,
                             const bg_profile_t *prof, const bg_search_opts_t *opts,
                             bg_search_result_t *res, int *n_out, bg_search_stats_t *stats)
{
    int L = chain->n_layers;
    bg_status_t st = opts_check(opts, L);
    if (st) return st;
    price_cache_t *pc = calloc(1, sizeof(*pc));
    const bg_costs_t **cp = malloc(sizeof(*cp) * (size_t)opts->gpus);
    if (!pc || !cp) {
        st = bg_errorf(BG_ERR_NOMEM, "search: out of memory");
        goto err_free;
    }
    search_ctx_t s = {chain, dev, prof, opts, pc, cp, res, NULL, {0}, 0, 0, 0};
    int n = 0;
    s.n_res = &n;
    for (int l = 0; l < L; l++) s.total_params += chain->layer[l].params;
    cand_list_t cl = {0, 0, NULL};
    for (int S = 1; S <= opts->gpus; S++) {
        if (opts->gpus % S || (int64_t)S * opts->chunks > L) continue;
        if (opts->stages && S != opts->stages) continue;
        int D = opts->gpus / S;
        if (opts->dp && D != opts->dp) continue;
        if ((st = collect_shape(&s, S, D, &cl))) break;
    }
    if (!st) st = solve_all(&s, &cl);
    if (!st && n) st = resplit_top(&s, n);
    free(cl.v);
    if (st) goto err_cache;
    if (stats) *stats = s.st;
    if (!s.shapes) {
        st = bg_errorf(BG_ERR_INVALID,
                       "no layout of %d devices (stages x dp) divides the batch of %lld samples "
                       "with at most %d stages",
                       opts->gpus, (long long)opts->global_batch, L / opts->chunks);
        goto err_cache;
    }
    if (!n) {
        int smax = L / opts->chunks < opts->gpus ? L / opts->chunks : opts->gpus;
        int64_t pb = state_bytes(chain->dtype, opts, opts->gpus / smax, s.total_params);
        double gib = (double)pb / smax / (1024.0 * 1024 * 1024);
        st = bg_errorf(BG_ERR_NOMEM,
                       "no shape of %d devices fits in %.1f GiB each (%d candidates tried; "
                       "parameters, gradients and optimizer state alone are %.1f GiB per stage "
                       "even at %d stages); would help: more devices, --recompute, a smaller "
                       "--batch, or --device-memory if the device has more",
                       opts->gpus, (double)dev->mem_bytes / (1024.0 * 1024 * 1024),
                       s.st.candidates, gib, smax);
        goto err_cache;
    }
    *n_out = n;
    st = BG_OK;
err_cache:
    cache_free(pc);
err_free:
    free(pc);
    free(cp);
    return st;
}
