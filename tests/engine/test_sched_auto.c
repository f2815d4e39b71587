/*
 * tests/engine/test_sched_auto.c -- `--schedule auto` (engine/schedule_auto.c):
 *  - for p in 1..8, m in 1..16 (equal costs) the chosen lists pass the
 *    checker, their peak fits the cap, and no table row that fits the cap
 *    simulates faster;
 *  - the same against random per-layer cost profiles with latency, judged
 *    here by generating and simulating every row independently;
 *  - tighter caps are respected (or refused with every reason), and the
 *    greedy builders alone keep to a cap of one micro-batch;
 *  - the choice is deterministic and bg_sched_resolve("auto") is it.
 * Must NOT depend on wall-clock time.
 */
#include <math.h>
#include <string.h>

#include "engine/schedule_auto.h"
#include "engine/sim.h"
#include "test_util.h"

/* Makespan and peak (stage micro-batches) of s under o's chunk costs. */
static void score(const bg_sched_t *s, const bg_sched_auto_opts_t *o, double *makespan,
                  double *peak)
{
    int G = bg_sched_chunks(s), v = bg_sched_chunks_per_rank(s);
    double f[256], b[256], w[256];
    *makespan = INFINITY, *peak = INFINITY;
    if (G > 256 || bg_sched_auto_chunk_costs(o, G, v, f, b, w))
        return;
    bg_sim_costs_t c = bg_sim_costs_uniform(0, 0, 0);
    c.f_chunk = f, c.b_chunk = b, c.w_chunk = w, c.latency = o->comm;
    bg_sim_t *sim = NULL;
    CHECK_OK(bg_sim_run(s, &c, &sim));
    if (!sim)
        return;
    *makespan = bg_sim_makespan(sim);
    int pk = 0;
    for (int r = 0; r < bg_sched_ranks(s); r++)
        pk = bg_sim_peak_live(sim, r) > pk ? bg_sim_peak_live(sim, r) : pk;
    *peak = (double)pk / v;
    bg_sim_free(sim);
}

/* Auto for (p, m, o): proved, within the cap, no slower than any table row
 * that fits the cap (each generated and simulated here, not taken from
 * auto's report). */
static void check_one(int p, int m, const bg_sched_auto_opts_t *o, const char *what)
{
    bg_sched_t *s = NULL;
    bg_sched_auto_report_t rep = {0};
    CHECK_OK(bg_sched_auto(p, m, 0, o, &s, &rep));
    if (!s)
        return;
    double cap = o->mem_cap > 0 ? o->mem_cap : (p < m ? p : m);
    CHECK_MSG(rep.mem_cap == cap, "%s p=%d m=%d: cap %g, want %g", what, p, m, rep.mem_cap, cap);
    CHECK_MSG(bg_sched_check(s, NULL) == BG_OK, "%s p=%d m=%d: %s", what, p, m, bg_last_error());
    double mk, peak;
    score(s, o, &mk, &peak);
    CHECK_MSG(peak <= cap + 1e-9, "%s p=%d m=%d: %s peaks at %g over the cap %g", what, p, m,
              bg_sched_name(s), peak, cap);
    CHECK(fabs(mk - rep.cand[rep.best].makespan) <= 1e-9 * (1 + mk));
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        bg_sched_t *fx = NULL;
        if (bg_sched_check_shape(d, p, m, d->chunks_default) ||
            bg_sched_generate(d->kind, p, m, d->chunks_default, o->flags, &fx))
            continue;
        double fmk, fpeak;
        score(fx, o, &fmk, &fpeak);
        /* Flush-free rows train other numbers: auto must not pick them,
         * and they are not its competition. */
        if (bg_sched_flush_free(fx))
            CHECK_MSG(strcmp(bg_sched_name(s), d->name) != 0, "%s p=%d m=%d: auto chose %s",
                      what, p, m, d->name);
        else if (fpeak <= cap + 1e-9)
            CHECK_MSG(mk <= fmk * (1 + 1e-9), "%s p=%d m=%d: auto (%s) %g slower than %s %g",
                      what, p, m, bg_sched_name(s), mk, d->name, fmk);
        bg_sched_free(fx);
    }
    bg_sched_free(s);
    bg_sched_auto_report_free(&rep);
}

static void equal_costs_grid(void)
{
    bg_sched_auto_opts_t o = bg_sched_auto_defaults();
    for (int p = 1; p <= 8; p++)
        for (int m = 1; m <= 16; m++)
            check_one(p, m, &o, "equal");
}

/* Random uneven layers (F, B, W each in [0.2, 2]) and a random latency. */
static void random_profiles(void)
{
    uint64_t seed = 12345;
    double lf[24], lb[24], lw[24];
    for (int trial = 0; trial < 40; trial++) {
        for (int l = 0; l < 24; l++) {
            lf[l] = bg_test_uniform(&seed, 0.2f, 2.0f);
            lb[l] = bg_test_uniform(&seed, 0.2f, 2.0f);
            lw[l] = bg_test_uniform(&seed, 0.2f, 2.0f);
        }
        bg_sched_auto_opts_t o = bg_sched_auto_defaults();
        o.layer_f = lf, o.layer_b = lb, o.layer_w = lw, o.n_layers = 24;
        o.comm = bg_test_uniform(&seed, 0.0f, 1.0f);
        o.flags = trial % 2 ? BG_SCHED_SPLIT_BW : 0;
        int p = 1 + (int)(bg_test_next(&seed) % 6), m = 1 + (int)(bg_test_next(&seed) % 16);
        check_one(p, m, &o, "random");
        /* A looser cap lets more rows in: still no slower than any. */
        o.mem_cap = 1.5 * p;
        check_one(p, m, &o, "random, cap 1.5p");
    }
}

/* Caps below 1F1B's: whatever auto returns keeps to them; the greedy
 * builders make a cap of one micro-batch work for every p, where every
 * table row but gpipe at m = 1 is refused. */
static void tight_caps(void)
{
    bg_sched_auto_opts_t o = bg_sched_auto_defaults();
    for (int p = 1; p <= 8; p++)
        for (int m = 1; m <= 12; m += 3)
            for (int ci = 0; ci < 3; ci++) {
                o.mem_cap = ci == 0 ? 1 : ci == 1 ? 1.5 : 2;
                check_one(p, m, &o, "tight cap");
            }
    o.mem_cap = 0.4; /* below one micro-batch: nothing fits, each reason given */
    bg_sched_t *s = NULL;
    CHECK(bg_sched_auto(3, 4, 0, &o, &s, NULL) == BG_ERR_INVALID && !s);
    CHECK(strstr(bg_last_error(), "1f1b:") && strstr(bg_last_error(), "greedy-f:"));
}

/* Same inputs, same lists; bg_sched_resolve("auto") is auto with defaults;
 * --chunks narrows the candidates. */
static void deterministic(void)
{
    bg_sched_auto_opts_t o = bg_sched_auto_defaults();
    for (int p = 1; p <= 6; p++) {
        bg_sched_t *a = NULL, *b = NULL, *c = NULL;
        CHECK_OK(bg_sched_auto(p, 2 * p, 0, &o, &a, NULL));
        CHECK_OK(bg_sched_resolve("auto", p, 2 * p, 0, 0, &b));
        CHECK_OK(bg_sched_auto(p, 2 * p, 1, &o, &c, NULL));
        if (!a || !b || !c)
            break;
        CHECK(!strcmp(bg_sched_name(a), bg_sched_name(b)));
        CHECK(bg_sched_chunks_per_rank(c) == 1);
        for (int r = 0; r < p; r++) {
            CHECK(bg_sched_len(a, r) == bg_sched_len(b, r));
            CHECK(!memcmp(bg_sched_actions(a, r), bg_sched_actions(b, r),
                          bg_sched_len(a, r) * sizeof(bg_action_t)));
        }
        bg_sched_free(a), bg_sched_free(b), bg_sched_free(c);
    }
    /* Equal costs at p = 4, m = 8: zb-v ties the best built one and wins. */
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_resolve("auto", 4, 8, 0, 0, &s));
    CHECK(s && !strcmp(bg_sched_name(s), "zb-v"));
    bg_sched_free(s);
}

int main(void)
{
    equal_costs_grid();
    random_profiles();
    tight_caps();
    deterministic();
    return bg_test_finish("test_sched_auto");
}
