/*
 * tests/engine/test_sched_2bw.c -- the flush-free 2bw schedule as data:
 *  - generated for p in 1..8, m in 1..32, fused and split, it passes the
 *    checker (unrolled run: complete, matched, deadlock-free), and every
 *    rank's step carries exactly min(p-r-1, m) backwards of the previous
 *    step, its OPTIMIZER last and its ALLREDUCE after the carried W;
 *  - peak live activations min(p-r, m+1) per rank, from the checker and
 *    from bg_sched_peaks on the step list alike;
 *  - the simulated steady step's bubble is (p-1)F / (m(F+B+W) + (p-1)F)
 *    for m >= p-1 (fused, split, unequal costs), never below it for smaller
 *    m, and below 1f1b's at every p > 1 where m >= p-1;
 *  - broken lists are refused with the reason: OPTIMIZER not last, the
 *    ALLREDUCE before the last carried W, a carried forward, a missing
 *    carried backward (by the unrolled check).
 * Must NOT depend on wall-clock time.
 */
#include <math.h>
#include <string.h>

#include "engine/schedule.h"
#include "engine/sim.h"
#include "test_util.h"

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) <= 1e-9 * (1 + fabs((double)(b))))

/* Carried compute actions on rank r (backwards of micro-batches >= m). */
static int carried(const bg_sched_t *s, int r, bg_act_kind_t kind)
{
    int n = 0, m = bg_sched_microbatches(s);
    const bg_action_t *a = bg_sched_actions(s, r);
    for (size_t i = 0; i < bg_sched_len(s, r); i++) n += a[i].kind == kind && a[i].mb >= m;
    return n;
}

static void generated_check(void)
{
    for (int p = 1; p <= 8; p++)
        for (int m = 1; m <= 32; m++)
            for (int split = 0; split < 2; split++) {
                bg_sched_t *s = NULL;
                CHECK_OK(bg_sched_generate(BG_SCHED_TWO_BW, p, m, 1, split ? BG_SCHED_SPLIT_BW : 0,
                                           &s));
                if (!s) continue;
                CHECK(bg_sched_flush_free(s));
                int live[8], peak[8];
                CHECK_OK(bg_sched_check(s, live));
                bg_sched_peaks(s, peak, NULL);
                for (int r = 0; r < p; r++) {
                    int c = p - r - 1 < m ? p - r - 1 : m, want = p - r < m + 1 ? p - r : m + 1;
                    CHECK_MSG(carried(s, r, split ? BG_ACT_B : BG_ACT_BW) == c,
                              "p=%d m=%d rank %d carries %d", p, m, r,
                              carried(s, r, split ? BG_ACT_B : BG_ACT_BW));
                    CHECK_MSG(live[r] == want && peak[r] == want, "p=%d m=%d rank %d: live %d/%d",
                              p, m, r, live[r], peak[r]);
                    size_t n = bg_sched_len(s, r);
                    CHECK(n && bg_sched_actions(s, r)[n - 1].kind == BG_ACT_OPTIMIZER);
                }
                bg_sched_free(s);
            }
}

static double bubble_of(bg_sched_kind_t k, int p, int m, unsigned flags, bg_sim_costs_t c)
{
    bg_sched_t *s = NULL;
    bg_sim_t *sim = NULL;
    double b = NAN;
    CHECK_OK(bg_sched_generate(k, p, m, 1, flags, &s));
    if (s) CHECK_OK(bg_sim_run(s, &c, &sim));
    if (sim) b = bg_sim_bubble(sim);
    bg_sim_free(sim);
    bg_sched_free(s);
    return b;
}

static void simulated_bubble(void)
{
    struct { double f, b, w; unsigned flags; } cs[] = {
        {1, 1, 1, 0}, {1, 1, 1, BG_SCHED_SPLIT_BW}, {2, 3, 1, 0}, {1, 2, 0, 0}};
    for (size_t ci = 0; ci < sizeof(cs) / sizeof(cs[0]); ci++)
        for (int p = 1; p <= 8; p++)
            for (int m = 1; m <= 32; m += (m < 12 ? 1 : 5)) {
                bg_sim_costs_t c = bg_sim_costs_uniform(cs[ci].f, cs[ci].b, cs[ci].w);
                double t = cs[ci].f + cs[ci].b + cs[ci].w, skew = (p - 1) * cs[ci].f;
                double want = skew / (m * t + skew);
                double got = bubble_of(BG_SCHED_TWO_BW, p, m, cs[ci].flags, c);
                if (m >= p - 1)
                    CHECK_MSG(NEAR(got, want), "p=%d m=%d costs %zu: bubble %.6f, want %.6f", p,
                              m, ci, got, want);
                else
                    CHECK_MSG(got >= want - 1e-12, "p=%d m=%d: bubble %.6f below %.6f", p, m,
                              got, want);
                double flush = bubble_of(BG_SCHED_1F1B, p, m, cs[ci].flags, c);
                if (p > 1 && m >= p - 1) /* below, the pipeline never fills (docs) */
                    CHECK_MSG(got < flush, "p=%d m=%d: 2bw %.4f not below 1f1b %.4f", p, m, got,
                              flush);
            }
}

/* Index of the first action of `kind` (mb -1: any) on rank r. */
static size_t find(const bg_sched_t *s, int r, bg_act_kind_t kind, int mb)
{
    const bg_action_t *a = bg_sched_actions(s, r);
    for (size_t i = 0; i < bg_sched_len(s, r); i++)
        if (a[i].kind == kind && (mb < 0 || a[i].mb == mb)) return i;
    return (size_t)-1;
}

/* `edit` applied to a fresh p = 3, m = 4 schedule must be refused naming `needle`. */
static void refused(void (*edit)(bg_sched_t *), const char *needle)
{
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_generate(BG_SCHED_TWO_BW, 3, 4, 1, 0, &s));
    if (!s) return;
    edit(s);
    CHECK(bg_sched_check(s, NULL) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), needle) != NULL, "wanted '%s' in: %s", needle,
              bg_last_error());
    bg_sched_free(s);
}

static void opt_first(bg_sched_t *s)
{
    size_t n = bg_sched_len(s, 1);
    CHECK_OK(bg_sched_remove(s, 1, n - 1));
    CHECK_OK(bg_sched_insert(s, 1, 0, bg_action_compute(BG_ACT_OPTIMIZER, -1, -1)));
}

static void ar_early(bg_sched_t *s)
{
    size_t i = find(s, 0, BG_ACT_ALLREDUCE, -1);
    CHECK_OK(bg_sched_remove(s, 0, i));
    CHECK_OK(bg_sched_insert(s, 0, 0, bg_action_compute(BG_ACT_ALLREDUCE, -1, 0)));
}

static void carried_forward(bg_sched_t *s)
{
    size_t i = find(s, 2, BG_ACT_F, 3);
    CHECK_OK(bg_sched_set(s, 2, i, bg_action_compute(BG_ACT_F, 7, 2)));
}

static void lost_backward(bg_sched_t *s)
{
    /* rank 0 carries micro-batches 2 and 3 of the previous step (6 and 7) */
    CHECK_OK(bg_sched_remove(s, 0, find(s, 0, BG_ACT_BW, 7)));
}

static void broken(void)
{
    refused(opt_first, "OPTIMIZER must be last");
    refused(ar_early, "before the last carried W");
    refused(carried_forward, "only backwards and gradients are carried");
    refused(lost_backward, "run for 3 steps and drained");
}

int main(void)
{
    generated_check();
    simulated_bubble();
    broken();
    return bg_test_finish("test_sched_2bw");
}
