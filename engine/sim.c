/*
 * engine/sim.c -- the simulator: times a checked schedule under given costs.
 *
 * Runs the lists the way the checker's deadlock pass does (round-robin over
 * ranks, a rank stops at a receive whose send has not been timed), but with
 * clocks. Because each action's times depend only on its rank's clock and its
 * matching send, the order ranks are visited in cannot change the result.
 * Must NOT reorder actions or accept a schedule the checker rejects.
 */
#include "engine/sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/schedule_impl.h"

struct bg_sim {
    bg_sched_t *s;
    double **t0, **t1; /* per rank, per action: start and end */
    double *busy, *wait;
    int *peak, *stash;
    double makespan;
};

bg_sim_costs_t bg_sim_costs_uniform(double f, double b, double w)
{
    bg_sim_costs_t c;
    memset(&c, 0, sizeof(c));
    c.f = f, c.b = b, c.w = w;
    return c;
}

/* Everything sim owns but sim itself. */
static void sim_free_parts(bg_sim_t *sim)
{
    if (sim->s && sim->t0)
        for (int r = 0; r < sim->s->p; r++) free(sim->t0[r]), free(sim->t1[r]);
    free(sim->t0), free(sim->t1), free(sim->busy), free(sim->wait), free(sim->peak);
    free(sim->stash);
    bg_sched_free(sim->s);
}

void bg_sim_free(bg_sim_t *sim)
{
    if (!sim) return;
    sim_free_parts(sim);
    free(sim);
}

static int bad_cost(double x) { return !(x >= 0) || isinf(x); }

static bg_status_t check_costs(const bg_sim_costs_t *c, int nchunks)
{
    const double *arr[3] = {c->f_chunk, c->b_chunk, c->w_chunk};
    if (bad_cost(c->f) || bad_cost(c->b) || bad_cost(c->w) || bad_cost(c->send) ||
        bad_cost(c->latency) || bad_cost(c->allreduce) || bad_cost(c->optimizer))
        return bg_errorf(BG_ERR_INVALID, "simulator: costs must be finite and >= 0");
    for (int k = 0; k < 3; k++)
        for (int i = 0; arr[k] && i < nchunks; i++)
            if (bad_cost(arr[k][i]))
                return bg_errorf(BG_ERR_INVALID, "simulator: cost of chunk %d must be finite "
                                 "and >= 0", i);
    return BG_OK;
}

/* Compute time of action a (0 for non-compute). */
static double cost_of(const bg_sim_costs_t *c, const bg_action_t *a)
{
    if (a->kind == BG_ACT_OPTIMIZER) return c->optimizer;
    if (!bg_act_is_compute(a->kind)) return 0;
    int k = a->chunk; /* checked: in range for compute actions */
    double f = c->f_chunk ? c->f_chunk[k] : c->f;
    double b = c->b_chunk ? c->b_chunk[k] : c->b;
    double w = c->w_chunk ? c->w_chunk[k] : c->w;
    switch (a->kind) {
    case BG_ACT_F: return f;
    case BG_ACT_B: return b;
    case BG_ACT_W: return w;
    default: return b + w; /* BW */
    }
}

static bg_status_t sim_alloc(bg_sim_t *sim)
{
    int p = sim->s->p;
    sim->t0 = calloc((size_t)p, sizeof(double *));
    sim->t1 = calloc((size_t)p, sizeof(double *));
    sim->busy = calloc((size_t)p, sizeof(double));
    sim->wait = calloc((size_t)p, sizeof(double));
    sim->peak = calloc((size_t)p, sizeof(int));
    sim->stash = calloc((size_t)p, sizeof(int));
    if (!sim->t0 || !sim->t1 || !sim->busy || !sim->wait || !sim->peak || !sim->stash) goto err;
    for (int r = 0; r < p; r++) {
        size_t n = sim->s->lists[r].len ? sim->s->lists[r].len : 1;
        sim->t0[r] = malloc(n * sizeof(double));
        sim->t1[r] = malloc(n * sizeof(double));
        if (!sim->t0[r] || !sim->t1[r]) goto err;
    }
    return BG_OK;
err:
    return bg_errorf(BG_ERR_NOMEM, "simulator: out of memory");
}

/*
 * OPTIMIZER as a barrier over the pipeline (flush-free runs: the executor's
 * optimizer sums the gradient norm over all stages, so each rank's k-th
 * update waits for every rank's k-th): all ranks start it at the latest
 * arrival. Only one barrier can be open: none passes k+1 before all passed k.
 */
typedef struct {
    double *arr; /* [p] arrival at the next barrier, NAN when not waiting */
    int *n;      /* [p] barriers passed */
    int rel_k;   /* the barrier released last (-1 none) and its start */
    double rel_t;
} barrier_t;

/* Whether rank r, free at t0, passes its next barrier now; *start then. */
static int opt_barrier(barrier_t *b, int p, int r, double t0, double *start)
{
    int k = b->n[r];
    if (b->rel_k != k) {
        b->arr[r] = t0;
        double hi = t0;
        for (int q = 0; q < p; q++) {
            if (isnan(b->arr[q]) || b->n[q] != k) return 0;
            if (b->arr[q] > hi) hi = b->arr[q];
        }
        b->rel_k = k, b->rel_t = hi;
    }
    b->arr[r] = NAN;
    b->n[r]++;
    *start = b->rel_t;
    return 1;
}

/* Time every action. The schedule is checked, so this always finishes.
 * barrier: OPTIMIZERs synchronise the ranks (opt_barrier). */
static bg_status_t sim_time(bg_sim_t *sim, const bg_sim_costs_t *c, int barrier)
{
    const bg_sched_t *s = sim->s;
    int p = s->p;
    size_t nx = 2 * (size_t)s->nedges * s->m;
    bg_status_t st = BG_OK;
    double *arrive = malloc((nx ? nx : 1) * sizeof(double));
    double *clock = calloc((size_t)p, sizeof(double)), *ar_free = calloc((size_t)p, sizeof(double));
    size_t *pc = calloc((size_t)p, sizeof(size_t));
    barrier_t bar = {malloc((size_t)p * sizeof(double)), calloc((size_t)p, sizeof(int)), -1, 0};
    if (!arrive || !clock || !ar_free || !pc || !bar.arr || !bar.n) {
        st = bg_errorf(BG_ERR_NOMEM, "simulator: out of memory");
        goto out;
    }
    for (size_t x = 0; x < nx; x++) arrive[x] = NAN;
    for (int r = 0; r < p; r++) bar.arr[r] = NAN;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int r = 0; r < p; r++) {
            const bg_sched_list_t *l = &s->lists[r];
            for (; pc[r] < l->len; pc[r]++, progress = 1) {
                const bg_action_t *a = &l->a[pc[r]];
                double t0 = clock[r], t1;
                if (bg_act_is_recv(a->kind)) {
                    double in = arrive[bg_sched_xfer_index_(s, a)];
                    if (isnan(in)) break; /* its send has not been timed yet */
                    t1 = in > t0 ? in : t0;
                    sim->wait[r] += t1 - t0;
                } else if (bg_act_is_send(a->kind)) {
                    t1 = t0 + c->send;
                    arrive[bg_sched_xfer_index_(s, a)] = t1 + c->latency;
                } else if (a->kind == BG_ACT_ALLREDUCE) {
                    /* Off the compute stream: the rank's clock does not move. */
                    double a0 = ar_free[r] > t0 ? ar_free[r] : t0;
                    ar_free[r] = a0 + c->allreduce;
                    sim->t0[r][pc[r]] = a0;
                    sim->t1[r][pc[r]] = ar_free[r];
                    continue;
                } else {
                    if (a->kind == BG_ACT_OPTIMIZER && ar_free[r] > t0) t0 = ar_free[r];
                    if (a->kind == BG_ACT_OPTIMIZER && barrier && !opt_barrier(&bar, p, r, t0, &t0))
                        break;
                    t1 = t0 + cost_of(c, a);
                    sim->busy[r] += t1 - t0;
                }
                sim->t0[r][pc[r]] = t0;
                sim->t1[r][pc[r]] = clock[r] = t1;
            }
        }
    }
    sim->makespan = 0;
    for (int r = 0; r < p; r++) {
        if (pc[r] != s->lists[r].len) {
            st = bg_errorf(BG_ERR_INTERNAL, "simulator: rank %d stuck at action %zu of a "
                           "checked schedule", r, pc[r]);
            goto out;
        }
        if (clock[r] > sim->makespan) sim->makespan = clock[r];
        if (ar_free[r] > sim->makespan) sim->makespan = ar_free[r];
    }
out:
    free(arrive), free(clock), free(ar_free), free(pc), free(bar.arr), free(bar.n);
    return st;
}

/* Steps a flush-free schedule is run for, and the one reported: far enough
 * from the first step's fill and the drain to be steady. */
#define FF_STEPS 4
#define FF_MARK 2

/*
 * A flush-free schedule (2bw) has no flush to stop at: run it unrolled and
 * report step FF_MARK, with times shifted so that step's first action
 * starts at 0. Its span then runs from rank 0's first forward to the last
 * rank's end, as train measures a step (docs/schedules.md, "Bubble"). The
 * OPTIMIZERs, last on every rank, are timed as the barrier they are.
 */
static bg_status_t sim_time_steady(bg_sim_t *sim, const bg_sim_costs_t *c)
{
    const bg_sched_t *s = sim->s;
    size_t *start = calloc((size_t)s->p, sizeof(size_t));
    bg_sim_t u = {0};
    bg_status_t st = start ? BG_OK : bg_errorf(BG_ERR_NOMEM, "simulator: out of memory");
    if (!st) st = bg_sched_unroll_(s, FF_STEPS, 1, FF_MARK, start, &u.s);
    if (!st) st = sim_alloc(&u);
    if (!st) st = sim_time(&u, c, 1);
    double lo = INFINITY;
    for (int r = 0; r < s->p && !st; r++)
        if (s->lists[r].len && u.t0[r][start[r]] < lo) lo = u.t0[r][start[r]];
    sim->makespan = 0;
    for (int r = 0; r < s->p && !st; r++) {
        sim->busy[r] = sim->wait[r] = 0;
        for (size_t i = 0; i < s->lists[r].len; i++) {
            const bg_action_t *a = &s->lists[r].a[i];
            double t0 = u.t0[r][start[r] + i] - lo, t1 = u.t1[r][start[r] + i] - lo;
            sim->t0[r][i] = t0, sim->t1[r][i] = t1;
            if (bg_act_is_recv(a->kind)) sim->wait[r] += t1 - t0;
            else if (bg_act_is_compute(a->kind) || a->kind == BG_ACT_OPTIMIZER)
                sim->busy[r] += t1 - t0;
            if (t1 > sim->makespan) sim->makespan = t1;
        }
    }
    free(start);
    sim_free_parts(&u);
    return st;
}

bg_status_t bg_sim_run(const bg_sched_t *s, const bg_sim_costs_t *costs, bg_sim_t **out)
{
    bg_status_t st = check_costs(costs, s->nchunks);
    if (st) return st;
    bg_sim_t *sim = calloc(1, sizeof(*sim));
    if (!sim) return bg_errorf(BG_ERR_NOMEM, "simulator: out of memory");
    if ((st = bg_sched_clone(s, &sim->s))) goto err;
    if ((st = sim_alloc(sim))) goto err;
    if ((st = bg_sched_check(sim->s, sim->peak))) goto err;
    bg_sched_peaks(sim->s, NULL, sim->stash);
    if ((st = s->flush_free ? sim_time_steady(sim, costs) : sim_time(sim, costs, 0))) goto err;
    *out = sim;
    return BG_OK;
err:
    bg_sim_free(sim);
    return st;
}

const bg_sched_t *bg_sim_sched(const bg_sim_t *sim) { return sim->s; }
double bg_sim_makespan(const bg_sim_t *sim) { return sim->makespan; }

static int rank_ok(const bg_sim_t *sim, int r) { return r >= 0 && r < sim->s->p; }

double bg_sim_busy(const bg_sim_t *sim, int r) { return rank_ok(sim, r) ? sim->busy[r] : 0; }
double bg_sim_wait(const bg_sim_t *sim, int r) { return rank_ok(sim, r) ? sim->wait[r] : 0; }
int bg_sim_peak_live(const bg_sim_t *sim, int r) { return rank_ok(sim, r) ? sim->peak[r] : 0; }
int bg_sim_peak_stash(const bg_sim_t *sim, int r) { return rank_ok(sim, r) ? sim->stash[r] : 0; }

double bg_sim_idle(const bg_sim_t *sim, int r)
{
    return rank_ok(sim, r) ? sim->makespan - sim->busy[r] : 0;
}

double bg_bubble(const bg_bubble_rank_t *r, int n)
{
    if (n < 1) return 0;
    double lo = r[0].t0, hi = r[0].t1, idle = 0;
    for (int i = 1; i < n; i++) {
        if (r[i].t0 < lo) lo = r[i].t0;
        if (r[i].t1 > hi) hi = r[i].t1;
    }
    double span = hi - lo;
    if (!(span > 0)) return 0;
    for (int i = 0; i < n; i++) idle += 1.0 - r[i].busy / span;
    return idle / n;
}

/* Each rank from its first action's start to its last's end: the global
 * span is then the makespan, as the first actions start at 0. */
double bg_sim_bubble(const bg_sim_t *sim)
{
    int p = sim->s->p;
    bg_bubble_rank_t *rk = calloc((size_t)p, sizeof(*rk));
    if (!rk || !(sim->makespan > 0)) {
        free(rk);
        return 0;
    }
    for (int r = 0; r < p; r++) {
        rk[r] = (bg_bubble_rank_t){0, 0, sim->busy[r]};
        size_t n = sim->s->lists[r].len;
        if (n) rk[r].t0 = sim->t0[r][0];
        for (size_t i = 0; i < n; i++)
            if (sim->t1[r][i] > rk[r].t1) rk[r].t1 = sim->t1[r][i];
    }
    double b = bg_bubble(rk, p);
    free(rk);
    return b;
}

bg_status_t bg_sim_action_time(const bg_sim_t *sim, int r, size_t i, double *start, double *end)
{
    if (!rank_ok(sim, r) || i >= sim->s->lists[r].len)
        return bg_errorf(BG_ERR_INVALID, "simulator: no action %zu on rank %d", i, r);
    *start = sim->t0[r][i];
    *end = sim->t1[r][i];
    return BG_OK;
}

/* ------------------------------------------------------------------ output */

/* Event name in the NVTX style: "F mb3 c1", "SEND_ACT mb3 1->2", "ALLREDUCE c1". */
static void event_name(const bg_action_t *a, char *buf, size_t len)
{
    const char *n = bg_act_kind_name(a->kind);
    if (bg_act_is_compute(a->kind))
        snprintf(buf, len, "%s mb%d c%d", n, a->mb, a->chunk);
    else if (bg_act_is_send(a->kind) || bg_act_is_recv(a->kind))
        snprintf(buf, len, "%s mb%d %d->%d", n, a->mb, a->src, a->dst);
    else if (a->kind == BG_ACT_ALLREDUCE)
        snprintf(buf, len, "%s c%d", n, a->chunk);
    else
        snprintf(buf, len, "%s", n);
}

bg_status_t bg_sim_write_trace(const bg_sim_t *sim, FILE *f, double us_per_unit)
{
    const bg_sched_t *s = sim->s;
    char name[96];
    if (!(us_per_unit > 0) || isinf(us_per_unit))
        return bg_errorf(BG_ERR_INVALID, "simulator trace: us_per_unit must be > 0");
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
               "\"args\":{\"name\":\"%s (simulated)\"}}", s->name);
    for (int r = 0; r < s->p; r++) {
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
                   "\"args\":{\"name\":\"rank %d\"}}", r, r);
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
                   "\"args\":{\"name\":\"rank %d allreduce\"}}", s->p + r, r);
    }
    for (int r = 0; r < s->p; r++) {
        const bg_sched_list_t *l = &s->lists[r];
        for (size_t i = 0; i < l->len; i++) {
            const bg_action_t *a = &l->a[i];
            double ts = sim->t0[r][i] * us_per_unit, dur = (sim->t1[r][i] - sim->t0[r][i]) * us_per_unit;
            int tid = a->kind == BG_ACT_ALLREDUCE ? s->p + r : r;
            event_name(a, name, sizeof(name));
            fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":0,\"tid\":%d,"
                       "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"mb\":%d,\"chunk\":%d,\"index\":%zu}}",
                    name, bg_act_kind_name(a->kind), tid, ts, dur, a->mb, a->chunk, i);
            /* Flow arrow: starts inside the SEND slice, ends inside the RECV's. */
            long x = bg_sched_xfer_index_(s, a);
            if (x < 0) continue;
            if (bg_act_is_send(a->kind))
                fprintf(f, ",\n{\"name\":\"xfer\",\"cat\":\"flow\",\"ph\":\"s\",\"pid\":0,"
                           "\"tid\":%d,\"ts\":%.3f,\"id\":%ld}", r, ts, x);
            else
                fprintf(f, ",\n{\"name\":\"xfer\",\"cat\":\"flow\",\"ph\":\"f\",\"bp\":\"e\","
                           "\"pid\":0,\"tid\":%d,\"ts\":%.3f,\"id\":%ld}", r, ts + dur, x);
        }
    }
    /* Per-rank summary, as the training trace's: busy, receive wait, idle. */
    for (int r = 0; r < s->p; r++)
        fprintf(f, ",\n{\"name\":\"summary\",\"cat\":\"summary\",\"ph\":\"i\",\"s\":\"t\","
                   "\"pid\":0,\"tid\":%d,\"ts\":%.3f,\"args\":{\"busy\":%g,\"comm_wait\":%g,"
                   "\"idle\":%g,\"bubble\":%g}}", r, sim->makespan * us_per_unit, sim->busy[r],
                sim->wait[r], sim->makespan - sim->busy[r], bg_sim_bubble(sim));
    fprintf(f, "\n]}\n");
    if (ferror(f)) return bg_errorf(BG_ERR_IO, "simulator trace: write failed");
    return BG_OK;
}

/* Short compute label for the grid: "F3", "BW3"; with v > 1 the local chunk
 * as a letter, "F3a" for the rank's first chunk, to keep columns narrow
 * (under either table placement chunk c is its rank's (c / p)-th). */
static void grid_label(const bg_sched_t *s, const bg_action_t *a, char *buf, size_t len)
{
    int j = a->chunk / s->p;
    if (s->v == 1)
        snprintf(buf, len, "%s%d", bg_act_kind_name(a->kind), a->mb);
    else if (s->v <= 26 && (s->chunk_rank[a->chunk] ==
                                bg_sched_place_rank(BG_SCHED_PLACE_LOOP, s->p, a->chunk) ||
                            s->chunk_rank[a->chunk] ==
                                bg_sched_place_rank(BG_SCHED_PLACE_V, s->p, a->chunk)))
        snprintf(buf, len, "%s%d%c", bg_act_kind_name(a->kind), a->mb, 'a' + j);
    else
        snprintf(buf, len, "%s%dc%d", bg_act_kind_name(a->kind), a->mb, a->chunk);
}

bg_status_t bg_sim_print_grid(const bg_sim_t *sim, FILE *f, double unit)
{
    const bg_sched_t *s = sim->s;
    char lab[64];
    if (!(unit > 0) || isinf(unit))
        return bg_errorf(BG_ERR_INVALID, "simulator grid: unit must be > 0");
    double cells_d = ceil(sim->makespan / unit - 1e-9);
    if (cells_d > 4096)
        return bg_errorf(BG_ERR_INVALID, "simulator grid: %.0f cells per row (max 4096); use a "
                         "larger unit", cells_d);
    long cells = (long)cells_d;
    int width = 1; /* widest label, so columns line up */
    for (int r = 0; r < s->p; r++)
        for (size_t i = 0; i < s->lists[r].len; i++)
            if (bg_act_is_compute(s->lists[r].a[i].kind)) {
                grid_label(s, &s->lists[r].a[i], lab, sizeof(lab));
                if ((int)strlen(lab) > width) width = (int)strlen(lab);
            }
    for (int r = 0; r < s->p; r++) {
        const bg_sched_list_t *l = &s->lists[r];
        long prev = -1;
        fprintf(f, "rank %d |", r);
        for (long k = 0; k < cells; k++) {
            double mid = (k + 0.5) * unit;
            long hit = -1;
            /* Naive scan: grids are small, and ALLREDUCE times are off the
             * compute stream so the list is not sorted by time. */
            for (size_t j = 0; j < l->len && hit < 0; j++)
                if ((bg_act_is_compute(l->a[j].kind) || l->a[j].kind == BG_ACT_OPTIMIZER) &&
                    sim->t0[r][j] <= mid && sim->t1[r][j] > mid)
                    hit = (long)j;
            if (hit < 0)
                snprintf(lab, sizeof(lab), ".");
            else if (hit == prev)
                snprintf(lab, sizeof(lab), "-");
            else if (l->a[hit].kind == BG_ACT_OPTIMIZER)
                snprintf(lab, sizeof(lab), "OPT");
            else
                grid_label(s, &l->a[hit], lab, sizeof(lab));
            prev = hit;
            fprintf(f, " %*s", width, lab);
        }
        fputc('\n', f);
    }
    if (ferror(f)) return bg_errorf(BG_ERR_IO, "simulator grid: write failed");
    return BG_OK;
}
