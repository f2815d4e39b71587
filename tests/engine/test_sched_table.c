/*
 * tests/engine/test_sched_table.c -- the schedule table
 * (partition/schedules.def) is complete and true, row by row, for every row
 * present (a new row is covered without editing this file):
 *  - lookup by name and by every alias gives the row; names never collide;
 *    an unknown name lists every canonical name;
 *  - the generator runs and its lists pass bg_sched_check for p in 1..4, every
 *    m in 1..12 the rule allows, and chunks from the row's minimum to 3;
 *  - the closed-form in-flight count, summed over a rank's chunks, equals
 *    bg_sched_peaks' peak stash (F ran, B not) on every generated schedule;
 *  - the closed-form bubble equals engine/sim.c's with F = B = W per rank
 *    (each chunk 1/v), no communication, to 1e-9 relative, wherever the
 *    row's EXACT column says it is exact, and bounds it from below elsewhere;
 *  - the fill floor really bounds fill / t from below (random costs);
 *  - rule errors name the schedule and the constraint.
 * Must NOT hard-code which rows exist, except to pin the known closed forms.
 */
#include <math.h>
#include <string.h>

#include "engine/schedule.h"
#include "engine/sim.h"
#include "test_util.h"

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) <= 1e-9 * (1 + fabs((double)(b))))

/* Largest chunk count this test generates for a row. */
static int max_v(const bg_sched_desc_t *d)
{
    return d->chunks_max < 3 ? d->chunks_max : 3;
}

static void lookup(void)
{
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k), *got = NULL;
        CHECK(d && (int)d->kind == k && d->name && d->name[0]);
        if (!d)
            continue;
        CHECK(!strcmp(bg_sched_kind_name(d->kind), d->name));
        CHECK_OK(bg_sched_lookup(d->name, &got));
        CHECK(got == d);
        CHECK(d->chunks_min >= 1 && d->chunks_min <= d->chunks_default &&
              d->chunks_default <= d->chunks_max);
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", d->aliases);
        for (char *a = strtok(buf, " "); a; a = strtok(NULL, " ")) {
            got = NULL;
            CHECK_OK(bg_sched_lookup(a, &got));
            CHECK_MSG(got == d, "alias '%s' of %s", a, d->name);
        }
        /* No other row's name is this row's name. */
        for (int j = 0; j < k; j++)
            CHECK(strcmp(bg_sched_kind_name((bg_sched_kind_t)j), d->name) != 0);
    }
    CHECK(bg_sched_desc(BG_SCHED_KIND_COUNT) == NULL);
    CHECK(!strcmp(bg_sched_kind_name(BG_SCHED_KIND_COUNT), "?"));
    const bg_sched_desc_t *got = NULL;
    CHECK(bg_sched_lookup("no-such-schedule", &got) == BG_ERR_INVALID && got == NULL);
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++)
        CHECK(strstr(bg_last_error(), bg_sched_kind_name((bg_sched_kind_t)k)) != NULL);
    CHECK(bg_sched_lookup(NULL, &got) == BG_ERR_INVALID);
}

/* Peak stash per rank against the closed form, summed over the rank's chunks. */
static void check_in_flight(const bg_sched_desc_t *d, const bg_sched_t *s, int p, int m, int v)
{
    int stash[4];
    bg_sched_peaks(s, NULL, stash);
    for (int r = 0; r < p; r++) {
        int want = 0;
        for (int g = 0; g < p * v; g++)
            if (bg_sched_chunk_rank_of(d, p, g) == r)
                want += bg_sched_in_flight(d, p, m, v, g);
        CHECK_MSG(stash[r] == want, "%s p=%d m=%d v=%d rank %d: peak stash %d, closed form %d",
                  d->name, p, m, v, r, stash[r], want);
    }
}

/* Simulated bubble with F = B = W = 1 per rank against the closed form. */
static void check_bubble(const bg_sched_desc_t *d, const bg_sched_t *s, int p, int m, int v)
{
    bg_sim_costs_t c = bg_sim_costs_uniform(1.0 / v, 1.0 / v, 1.0 / v);
    bg_sim_t *sim = NULL;
    CHECK_OK(bg_sim_run(s, &c, &sim));
    if (!sim)
        return;
    bg_sched_cost_t rank = {1, 1, 1, 0, 3};
    double want = bg_sched_bubble(d, p, m, v, &rank), got = bg_sim_bubble(sim);
    int exact = d->exact(p, m, v);
    CHECK_MSG(exact ? NEAR(got, want) : got >= want - 1e-9,
              "%s p=%d m=%d v=%d: simulated bubble %.12g, closed form %.12g (%s)", d->name, p, m,
              v, got, want, exact ? "exact" : "a lower bound");
    bg_sim_free(sim);
}

/* Every row's generator over the shapes its rules allow. */
static void generators(void)
{
    int made = 0;
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        for (int p = 1; p <= 4; p++)
            for (int m = 1; m <= 12; m++)
                for (int v = d->chunks_min; v <= max_v(d); v++)
                    for (int split = 0; split <= 1; split++) {
                        if (!d->m_ok(p, m))
                            continue;
                        bg_sched_t *s = NULL;
                        CHECK_OK(
                            bg_sched_generate(d->kind, p, m, v, split ? BG_SCHED_SPLIT_BW : 0, &s));
                        if (!s)
                            continue;
                        made++;
                        CHECK(!strcmp(bg_sched_name(s), d->name));
                        for (int g = 0; g < p * v; g++)
                            CHECK(bg_sched_chunk_rank(s, g) == bg_sched_chunk_rank_of(d, p, g));
                        CHECK_OK(bg_sched_check(s, NULL));
                        check_in_flight(d, s, p, m, v);
                        if (!split)
                            check_bubble(d, s, p, m, v);
                        bg_sched_free(s);
                    }
    }
    CHECK(made > 0);
    printf("checked %d generated schedules against the table\n", made);
}

/* The known rows' closed forms, pinned (equal F, B, W). */
static void known_bubbles(void)
{
    bg_sched_cost_t c = {1, 1, 1, 0, 3};
    int p = 4, m = 8, v = 2;
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_GPIPE), p, m, 1, &c), 3.0 / 11));
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_1F1B), p, m, 1, &c), 3.0 / 11));
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_INTERLEAVED), p, m, v, &c), 3.0 / 19));
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_ZB_H1), p, m, 1, &c), 3.0 / 27));
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_ZB_V), p, m, 2, &c), 1.5 / 25.5));
    CHECK(NEAR(bg_sched_bubble(bg_sched_desc(BG_SCHED_DUALPIPEV), p, m, 2, &c), 1.5 / 25.5));
    CHECK(NEAR(bg_sched_fill_floor(bg_sched_desc(BG_SCHED_GPIPE), m, 1), 1));
    CHECK(NEAR(bg_sched_fill_floor(bg_sched_desc(BG_SCHED_INTERLEAVED), m, v), 0.5));
    CHECK(NEAR(bg_sched_fill_floor(bg_sched_desc(BG_SCHED_ZB_H1), m, 1), 0));
}

/* fill(c) >= floor * t for random non-negative costs. */
static void fill_floor(void)
{
    uint64_t x = 12345;
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        for (int i = 0; i < 2000; i++) {
            double u[4];
            for (int j = 0; j < 4; j++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                u[j] = (double)(x >> 11) / 9007199254740992.0 * (j == i % 4 ? 0.01 : 1);
            }
            bg_sched_cost_t c = {u[0], u[1], u[2], u[3], u[0] + u[1] + u[2] + u[3]};
            int m = 1 + i % 9, v = d->chunks_min + i % (max_v(d) - d->chunks_min + 1);
            double k0 = bg_sched_fill_floor(d, m, v), fill = bg_sched_fill(d, &c, m, v);
            CHECK_MSG(k0 >= 0 && k0 <= m && fill >= k0 * c.t - 1e-12,
                      "%s m=%d v=%d: fill %g below floor %g x t %g", d->name, m, v, fill, k0, c.t);
        }
    }
}

/* Rule errors name the schedule and what it demands. */
static void rule_errors(void)
{
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)k);
        int v = -1;
        CHECK_OK(bg_sched_resolve_chunks(d, 0, &v));
        CHECK(v == d->chunks_default);
        if (d->chunks_max != BG_SCHED_V_UNBOUNDED) {
            v = -1;
            CHECK(bg_sched_resolve_chunks(d, d->chunks_max + 1, &v) == BG_ERR_INVALID && v == -1);
            CHECK(strstr(bg_last_error(), d->name) && strstr(bg_last_error(), "chunk"));
            /* Points at a schedule that allows more, when one exists. */
            for (int j = 0; j < BG_SCHED_KIND_COUNT; j++)
                if (bg_sched_desc((bg_sched_kind_t)j)->chunks_max > d->chunks_max)
                    CHECK(strstr(bg_last_error(), bg_sched_kind_name((bg_sched_kind_t)j)));
        }
        CHECK(bg_sched_check_shape(d, 0, 1, 1) == BG_ERR_INVALID);
        CHECK(strstr(bg_last_error(), d->name) != NULL);
        for (int p = 1; p <= 4; p++)
            for (int m = 1; m <= 12; m++) {
                if (d->m_ok(p, m)) {
                    CHECK_OK(bg_sched_check_m(d, p, m));
                    CHECK(bg_sched_round_m(d, p, m) == m);
                    continue;
                }
                CHECK(d->m_rule[0] != '\0');
                CHECK(bg_sched_check_m(d, p, m) == BG_ERR_INVALID);
                CHECK_MSG(strstr(bg_last_error(), d->name) && strstr(bg_last_error(), d->m_rule),
                          "%s p=%d m=%d: '%s'", d->name, p, m, bg_last_error());
                bg_sched_t *s = NULL;
                CHECK(bg_sched_generate(d->kind, p, m, d->chunks_default, 0, &s) ==
                          BG_ERR_INVALID &&
                      !s);
                int m2 = bg_sched_round_m(d, p, m);
                CHECK(m2 > m && d->m_ok(p, m2));
            }
    }
    /* Interleaved takes any m (rounds of p, the last one shorter); DualPipeV
     * needs two micro-batches per stage, in words the tools' users know. */
    CHECK_OK(bg_sched_check_m(bg_sched_desc(BG_SCHED_INTERLEAVED), 4, 6));
    CHECK(bg_sched_check_m(bg_sched_desc(BG_SCHED_DUALPIPEV), 4, 7) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "2 x stages") && strstr(bg_last_error(), "got 7"));
    CHECK_OK(bg_sched_check_m(bg_sched_desc(BG_SCHED_DUALPIPEV), 4, 8));
    int v = 0;
    CHECK(bg_sched_resolve_chunks(bg_sched_desc(BG_SCHED_1F1B), 2, &v) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "needs --schedule interleaved") != NULL);
    CHECK_OK(bg_sched_resolve_chunks(bg_sched_desc(BG_SCHED_INTERLEAVED), 0, &v));
    CHECK(v == 2);
}

int main(void)
{
    lookup();
    generators();
    known_bubbles();
    fill_floor();
    rule_errors();
    return bg_test_finish("test_sched_table");
}
