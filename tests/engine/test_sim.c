/*
 * tests/engine/test_sim.c -- the simulator against closed forms: bubble
 * (p-1)/(m+p-1) for gpipe and 1f1b, (p-1)/(v*m+p-1) for interleaved,
 * idle (p-1)(F+B-W) per rank for zb-h1 and makespan 6mc + (p-1)c for zb-v
 * and dualpipev (equal costs c per chunk); a hand-timed case with
 * per-chunk costs, latency, send, allreduce and optimizer costs; the trace
 * JSON parses; the text grid is what docs/schedules.md shows.
 * Must NOT depend on wall-clock time.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "engine/schedule.h"
#include "engine/sim.h"
#include "test_util.h"

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) <= 1e-9 * (1 + fabs((double)(b))))

static bg_sim_t *simulate(bg_sched_kind_t kind, int p, int m, int v, unsigned flags,
                          const bg_sim_costs_t *c)
{
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    CHECK_OK(bg_sched_generate(kind, p, m, v, flags, &s));
    if (s) CHECK_OK(bg_sim_run(s, c, &sim));
    bg_sched_free(s);
    return sim;
}

/* gpipe and 1f1b: (p-1)/(m+p-1) with F=B (W=0 or fused BW), for any ratio F:BW too. */
static void fill_drain_and_1f1b(void)
{
    struct { double f, b, w; unsigned flags; } cs[] = {
        {1, 1, 0, 0}, {1, 1, 0, BG_SCHED_SPLIT_BW}, {1, 1, 1, 0}, {2, 3, 1, 0}};
    for (int kind = BG_SCHED_GPIPE; kind <= BG_SCHED_1F1B; kind++)
        for (size_t ci = 0; ci < sizeof(cs) / sizeof(cs[0]); ci++)
            for (int p = 1; p <= 8; p++)
                for (int m = 1; m <= 32; m += (m < 10 ? 1 : 7)) {
                    bg_sim_costs_t c = bg_sim_costs_uniform(cs[ci].f, cs[ci].b, cs[ci].w);
                    bg_sim_t *sim = simulate((bg_sched_kind_t)kind, p, m, 1, cs[ci].flags, &c);
                    if (!sim) continue;
                    double want = (double)(p - 1) / (m + p - 1);
                    double step = cs[ci].f + cs[ci].b + cs[ci].w;
                    CHECK_MSG(NEAR(bg_sim_bubble(sim), want), "%s p=%d m=%d costs %zu: bubble "
                              "%g want %g", bg_sched_kind_name(kind), p, m, ci,
                              bg_sim_bubble(sim), want);
                    CHECK(NEAR(bg_sim_makespan(sim), (m + p - 1) * step));
                    for (int r = 0; r < p; r++)
                        CHECK(bg_sim_peak_live(sim, r) == (kind == BG_SCHED_GPIPE
                                                               ? m
                                                               : (p - r < m ? p - r : m)));
                    bg_sim_free(sim);
                }
}

/* Megatron interleaved: per-stage F = B = 1, so each chunk costs 1/v. */
static void interleaved(void)
{
    for (int v = 1; v <= 4; v++)
        for (int p = 1; p <= 8; p++)
            for (int m = p; m <= 32; m += p) {
                for (int wk = 0; wk < 2; wk++) {
                    bg_sim_costs_t c = bg_sim_costs_uniform(1.0 / v, 1.0 / v, wk ? 1.0 / v : 0);
                    bg_sim_t *sim = simulate(BG_SCHED_INTERLEAVED, p, m, v, 0, &c);
                    if (!sim) continue;
                    double want = (double)(p - 1) / (v * m + p - 1);
                    CHECK_MSG(NEAR(bg_sim_bubble(sim), want),
                              "interleaved p=%d m=%d v=%d w=%d: bubble %g want %g", p, m, v, wk,
                              bg_sim_bubble(sim), want);
                    bg_sim_free(sim);
                }
            }
}

/* ZB-H1 with F = B = W: idle (p-1)(F+B-W) on every rank, about 1/3 of 1f1b's. */
static void zero_bubble_h1(void)
{
    double units[] = {1, 2.5};
    for (size_t u = 0; u < 2; u++)
        for (int p = 1; p <= 8; p++)
            for (int m = p; m <= 32; m++) {
                double t = units[u];
                bg_sim_costs_t c = bg_sim_costs_uniform(t, t, t);
                bg_sim_t *zb = simulate(BG_SCHED_ZB_H1, p, m, 1, 0, &c);
                bg_sim_t *ff = simulate(BG_SCHED_1F1B, p, m, 1, 0, &c);
                if (!zb || !ff) goto next;
                for (int r = 0; r < p; r++)
                    CHECK_MSG(NEAR(bg_sim_idle(zb, r), (p - 1) * (t + t - t)),
                              "zb-h1 p=%d m=%d rank %d: idle %g want %g", p, m, r,
                              bg_sim_idle(zb, r), (p - 1) * t);
                CHECK(NEAR(bg_sim_makespan(zb), 3 * m * t + (p - 1) * t));
                /* Idle time exactly 1/3 of 1f1b's (p-1)(F+B+W); the bubble
                 * fraction ratio tends to 1/3 as m grows. */
                for (int r = 0; r < p; r++)
                    CHECK(NEAR(3 * bg_sim_idle(zb, r), bg_sim_idle(ff, r)));
                CHECK(bg_sim_bubble(zb) <= bg_sim_bubble(ff));
            next:
                bg_sim_free(zb);
                bg_sim_free(ff);
            }
}

/*
 * ZB-V with F = B = W = c per chunk (2c per stage): makespan 6mc + (p-1)c,
 * the table's closed form m(F+B+W) + (p-1)F/2 per stage, once m >= 2p-1
 * fills the V; every rank idles (p-1)c, against zb-h1's (p-1)F = 2(p-1)c.
 */
static void v_shaped(bg_sched_kind_t kind, int m_min_per_p, int m_min_less, int stash)
{
    const bg_sched_desc_t *d = bg_sched_desc(kind);
    for (int p = 1; p <= 8; p++)
        for (int m = m_min_per_p * p - m_min_less; m <= 32; m++) {
            double c = 0.5;
            bg_sim_costs_t cs = bg_sim_costs_uniform(c, c, c);
            bg_sim_t *zv = simulate(kind, p, m, 2, 0, &cs);
            if (!zv) continue;
            double want = 6 * m * c + (p - 1) * c;
            CHECK_MSG(NEAR(bg_sim_makespan(zv), want), "%s p=%d m=%d: makespan %g want %g",
                      d->name, p, m, bg_sim_makespan(zv), want);
            bg_sched_cost_t rank = {2 * c, 2 * c, 2 * c, 0, 6 * c};
            double fill = bg_sched_fill(d, &rank, m, 2);
            CHECK(NEAR(m * rank.t + (p - 1) * fill, want));
            for (int r = 0; r < p; r++) {
                CHECK(NEAR(bg_sim_idle(zv, r), (p - 1) * c));
                CHECK_MSG(bg_sim_peak_stash(zv, r) == 2 * p + stash,
                          "%s p=%d m=%d rank %d: stash %d", d->name, p, m, r,
                          bg_sim_peak_stash(zv, r));
            }
            bg_sim_free(zv);
        }
}

static void zero_bubble_v(void)
{
    /* 1F1B's rank-0 peak (p stage activations) on every rank. */
    v_shaped(BG_SCHED_ZB_V, 2, 1, 0);
    /* DualPipeV from m = 2p: the same makespan in this sequential model
     * (its F + B overlap is adjacency here), half a stage more stash. */
    v_shaped(BG_SCHED_DUALPIPEV, 2, 0, 1);
}

/* p=2, m=1 gpipe timed by hand: F [1,3], BW [2,5], send s, latency L,
 * allreduce 0.5, optimizer 1. */
static void hand_timed(void)
{
    double f[2] = {1, 3}, b[2] = {2, 5}, w[2] = {0, 0};
    bg_sim_costs_t c = bg_sim_costs_uniform(0, 0, 0);
    c.f_chunk = f, c.b_chunk = b, c.w_chunk = w;
    c.send = 0.25, c.latency = 0.75, c.allreduce = 0.5, c.optimizer = 1;
    bg_sim_t *sim = simulate(BG_SCHED_GPIPE, 2, 1, 1, 0, &c);
    if (!sim) return;
    double s = c.send, L = c.latency;
    CHECK_MSG(NEAR(bg_sim_makespan(sim), 12.5 + 2 * s + 2 * L), "makespan %g",
              bg_sim_makespan(sim));
    CHECK(NEAR(bg_sim_busy(sim, 0), 1 + 2 + 1) && NEAR(bg_sim_busy(sim, 1), 3 + 5 + 1));
    CHECK(NEAR(bg_sim_wait(sim, 1), 1 + s + L));              /* waiting for F's data */
    CHECK(NEAR(bg_sim_wait(sim, 0), (9 + 2 * s + 2 * L) - (1 + s))); /* for the gradient */
    /* rank 1: RECV_ACT F SEND... let the API say where F started. */
    const bg_action_t *a = bg_sched_actions(bg_sim_sched(sim), 1);
    double t0, t1;
    CHECK(a[1].kind == BG_ACT_F);
    CHECK_OK(bg_sim_action_time(sim, 1, 1, &t0, &t1));
    CHECK(NEAR(t0, 1 + s + L) && NEAR(t1, 4 + s + L));
    CHECK(bg_sim_action_time(sim, 1, 99, &t0, &t1) == BG_ERR_INVALID);
    bg_sim_free(sim);

    /* Bad costs are refused. */
    bg_sched_t *sc = NULL;
    CHECK_OK(bg_sched_generate(BG_SCHED_GPIPE, 2, 2, 1, 0, &sc));
    c = bg_sim_costs_uniform(1, -1, 0);
    sim = NULL;
    CHECK(bg_sim_run(sc, &c, &sim) == BG_ERR_INVALID && sim == NULL);
    c = bg_sim_costs_uniform(1, NAN, 0);
    CHECK(bg_sim_run(sc, &c, &sim) == BG_ERR_INVALID);
    /* A broken schedule is refused with the checker's message. */
    CHECK_OK(bg_sched_remove(sc, 1, 1));
    c = bg_sim_costs_uniform(1, 1, 0);
    CHECK(bg_sim_run(sc, &c, &sim) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "schedule check") != NULL);
    bg_sched_free(sc);
}

static void trace_json(void)
{
    bg_sim_costs_t c = bg_sim_costs_uniform(1, 1, 1);
    c.latency = 0.1, c.allreduce = 2;
    bg_sim_t *sim = simulate(BG_SCHED_ZB_H1, 3, 4, 1, 0, &c);
    if (!sim) return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(bg_sim_write_trace(sim, f, 1000));
    fclose(f);
    cJSON *root = cJSON_Parse(buf);
    CHECK_MSG(root != NULL, "trace is not JSON");
    cJSON *ev = cJSON_GetObjectItem(root, "traceEvents");
    int n_x = 0, n_s = 0, n_f = 0, n_total = 0;
    const bg_sched_t *s = bg_sim_sched(sim);
    for (int r = 0; r < 3; r++) n_total += (int)bg_sched_len(s, r);
    cJSON *e;
    cJSON_ArrayForEach(e, ev)
    {
        const char *ph = cJSON_GetStringValue(cJSON_GetObjectItem(e, "ph"));
        n_x += ph && !strcmp(ph, "X");
        n_s += ph && !strcmp(ph, "s");
        n_f += ph && !strcmp(ph, "f");
    }
    CHECK(n_x == n_total);
    CHECK(n_s == 2 * 2 * 4 && n_f == n_s); /* 2 edges, 2 directions, 4 micro-batches */
    cJSON_Delete(root);
    free(buf);
    f = fopen("/dev/null", "w");
    CHECK(bg_sim_write_trace(sim, f, 0) == BG_ERR_INVALID);
    fclose(f);
    bg_sim_free(sim);
}

static void grid(void)
{
    bg_sim_costs_t c = bg_sim_costs_uniform(1, 1, 1);
    bg_sim_t *sim = simulate(BG_SCHED_1F1B, 2, 3, 1, 0, &c);
    if (!sim) return;
    char buf[2048];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    CHECK_OK(bg_sim_print_grid(sim, f, 1));
    fclose(f);
    const char *want = "rank 0 |  F0  F1   .   . BW0   -  F2 BW1   -   . BW2   -\n"
                       "rank 1 |   .  F0 BW0   -  F1 BW1   -  F2 BW2   -   .   .\n";
    CHECK_MSG(!strcmp(buf, want), "got:\n%s", buf);
    CHECK(bg_sim_print_grid(sim, stdout, 1e-6) == BG_ERR_INVALID);
    bg_sim_free(sim);
}

/* bg_bubble on hand-built timelines with known answers. */
static void bubble_known(void)
{
    /* Two ranks over one global span 0..10: busy 10 and 5 -> idle 0 and 0.5. */
    bg_bubble_rank_t a[] = {{0, 10, 10}, {2, 8, 5}};
    CHECK(NEAR(bg_bubble(a, 2), 0.25));
    /* The span is global, not each rank's own: rank 1 is busy its whole own
     * span (4..8) but idle 60% of the step's (0..10). */
    bg_bubble_rank_t b[] = {{0, 10, 10}, {4, 8, 4}};
    CHECK(NEAR(bg_bubble(b, 2), 0.3));
    /* Clocks need not start at 0; a shift changes nothing. */
    bg_bubble_rank_t c[] = {{1000, 1003, 1}, {1001, 1004, 2}, {1002, 1004, 2}};
    CHECK(NEAR(bg_bubble(c, 3), 1.0 - 5.0 / 12));
    bg_bubble_rank_t z[] = {{5, 5, 0}};
    CHECK(bg_bubble(z, 1) == 0 && bg_bubble(z, 0) == 0);
}

/* The simulator's bubble is bg_bubble over its own per-rank timelines. */
static void bubble_sim_same(void)
{
    bg_sim_costs_t c = bg_sim_costs_uniform(1, 2, 1);
    c.allreduce = 0.5, c.optimizer = 0.25, c.latency = 0.1;
    for (int kind = BG_SCHED_GPIPE; kind <= BG_SCHED_1F1B; kind++) {
        bg_sim_t *sim = simulate((bg_sched_kind_t)kind, 4, 6, 1, BG_SCHED_SPLIT_BW, &c);
        if (!sim) continue;
        bg_bubble_rank_t r[4];
        for (int k = 0; k < 4; k++) {
            r[k] = (bg_bubble_rank_t){INFINITY, -INFINITY, bg_sim_busy(sim, k)};
            for (size_t i = 0; i < bg_sched_len(bg_sim_sched(sim), k); i++) {
                double t0, t1;
                CHECK_OK(bg_sim_action_time(sim, k, i, &t0, &t1));
                r[k].t0 = fmin(r[k].t0, t0), r[k].t1 = fmax(r[k].t1, t1);
            }
        }
        CHECK_MSG(NEAR(bg_sim_bubble(sim), bg_bubble(r, 4)), "sim %g vs bg_bubble %g",
                  bg_sim_bubble(sim), bg_bubble(r, 4));
        bg_sim_free(sim);
    }
}

int main(void)
{
    bubble_known();
    bubble_sim_same();
    fill_drain_and_1f1b();
    interleaved();
    zero_bubble_h1();
    zero_bubble_v();
    hand_timed();
    trace_json();
    grid();
    return bg_test_finish("test_sim");
}
