/*
 * tests/engine/test_schedule_fwd.c -- the forward-only generator (the lists
 * an evaluation runs) and the checker's forward-only mode: generated lists
 * pass for every schedule kind, skip edges and more micro-batches than the
 * training schedule; hand-broken ones are rejected with a message naming
 * the problem; the training checker refuses forward-only lists.
 * Must NOT depend on the order of actions beyond what schedule.h promises.
 */
#include <string.h>

#include "engine/schedule.h"
#include "test_util.h"

static long find(const bg_sched_t *s, int r, bg_act_kind_t k, int mb, int src, int dst)
{
    const bg_action_t *a = bg_sched_actions(s, r);
    for (size_t i = 0; i < bg_sched_len(s, r); i++) {
        if (a[i].kind != k || a[i].mb != mb)
            continue;
        if (bg_act_is_compute(k) ? a[i].chunk == src : a[i].src == src && a[i].dst == dst)
            return (long)i;
    }
    return -1;
}

/* The forward lists of a generated training schedule, checked. */
static bg_sched_t *fwd_of(bg_sched_kind_t k, int p, int m, int v, int fm, int skip_dst)
{
    bg_sched_t *t = NULL, *f = NULL;
    CHECK_OK(bg_sched_generate(k, p, m, v, 0, &t));
    if (!t)
        return NULL;
    if (skip_dst > 0)
        CHECK_OK(bg_sched_add_transfer(t, 0, skip_dst, 1));
    CHECK_OK(bg_sched_generate_forward(t, fm, &f));
    if (f) {
        CHECK_OK(bg_sched_check_forward(f));
        CHECK(bg_sched_ranks(f) == p && bg_sched_chunks(f) == p * v);
        CHECK(bg_sched_microbatches(f) == fm);
        CHECK(bg_sched_edges(f) == bg_sched_edges(t));
        for (int c = 0; c < p * v; c++)
            CHECK(bg_sched_chunk_rank(f, c) == bg_sched_chunk_rank(t, c));
        CHECK(!strcmp(bg_sched_name(f), "forward"));
    }
    bg_sched_free(t);
    return f;
}

/* Only F and activation transfers; every (mb, chunk) F once on its rank. */
static void check_shape(const bg_sched_t *f)
{
    int p = bg_sched_ranks(f), m = bg_sched_microbatches(f), nc = bg_sched_chunks(f);
    int fcount = 0, sends = 0, recvs = 0;
    for (int r = 0; r < p; r++) {
        const bg_action_t *a = bg_sched_actions(f, r);
        for (size_t i = 0; i < bg_sched_len(f, r); i++) {
            CHECK(a[i].kind == BG_ACT_F || a[i].kind == BG_ACT_SEND_ACT ||
                  a[i].kind == BG_ACT_RECV_ACT);
            fcount += a[i].kind == BG_ACT_F;
            sends += a[i].kind == BG_ACT_SEND_ACT;
            recvs += a[i].kind == BG_ACT_RECV_ACT;
            if (a[i].kind == BG_ACT_F)
                CHECK(bg_sched_chunk_rank(f, a[i].chunk) == r);
        }
    }
    CHECK(fcount == m * nc);
    CHECK(sends == recvs);
}

static void generated(void)
{
    struct {
        bg_sched_kind_t k;
        int p, m, v, fm, skip;
    } cases[] = {
        {BG_SCHED_1F1B, 4, 8, 1, 8, 0},        {BG_SCHED_GPIPE, 3, 2, 1, 5, 0},
        {BG_SCHED_INTERLEAVED, 2, 4, 2, 3, 0}, {BG_SCHED_ZB_H1, 4, 4, 1, 70, 0},
        {BG_SCHED_1F1B, 4, 4, 1, 4, 3},        {BG_SCHED_INTERLEAVED, 2, 2, 2, 2, 3},
        {BG_SCHED_1F1B, 1, 1, 1, 3, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bg_sched_t *f =
            fwd_of(cases[i].k, cases[i].p, cases[i].m, cases[i].v, cases[i].fm, cases[i].skip);
        if (!f)
            continue;
        check_shape(f);
        /* Not a training schedule: the full checker wants backward work. */
        CHECK(bg_sched_check(f, NULL) == BG_ERR_INVALID);
        bg_sched_free(f);
    }
    /* A skip edge between ranks carries its own transfers. */
    bg_sched_t *f = fwd_of(BG_SCHED_1F1B, 4, 4, 1, 2, 3);
    if (f) {
        CHECK(find(f, 0, BG_ACT_SEND_ACT, 1, 0, 3) >= 0);
        CHECK(find(f, 3, BG_ACT_RECV_ACT, 1, 0, 3) >= 0);
        bg_sched_free(f);
    }
    bg_sched_t *t = NULL, *bad = NULL;
    CHECK_OK(bg_sched_generate(BG_SCHED_1F1B, 2, 2, 1, 0, &t));
    CHECK(bg_sched_generate_forward(t, 0, &bad) == BG_ERR_INVALID && !bad);
    bg_sched_free(t);
}

#define EXPECT_BROKEN(s, ...) expect_broken(__LINE__, s, (const char *[]){__VA_ARGS__, NULL})
static void expect_broken(int line, bg_sched_t *s, const char **needles)
{
    if (!s)
        return;
    bg_status_t st = bg_sched_check_forward(s);
    const char *msg = bg_last_error();
    CHECK_MSG(st == BG_ERR_INVALID, "line %d: accepted", line);
    for (const char **n = needles; *n; n++)
        CHECK_MSG(strstr(msg, *n) != NULL, "line %d: '%s' not in: %s", line, *n, msg);
    printf("  line %d rejected: %s\n", line, msg);
    bg_sched_free(s);
}

static void broken(void)
{
    /* interleaved, p=2 v=2: chunks 0 and 2 on rank 0, 1 and 3 on rank 1 */
    bg_sched_t *s = fwd_of(BG_SCHED_INTERLEAVED, 2, 4, 2, 3, 0);
    if (s)
        CHECK_OK(bg_sched_remove(s, 1, (size_t)find(s, 1, BG_ACT_F, 2, 3, -1)));
    EXPECT_BROKEN(s, "F(mb=2, c=3) missing");

    s = fwd_of(BG_SCHED_INTERLEAVED, 2, 4, 2, 3, 0);
    if (s) { /* the receive after the F that needs it */
        long rv = find(s, 1, BG_ACT_RECV_ACT, 1, 0, 1);
        bg_action_t a = bg_sched_actions(s, 1)[rv];
        CHECK_OK(bg_sched_remove(s, 1, (size_t)rv));
        CHECK_OK(bg_sched_insert(s, 1, (size_t)find(s, 1, BG_ACT_F, 1, 1, -1) + 1, a));
    }
    EXPECT_BROKEN(s, "rank 1", "F(mb=1, c=1)", "no RECV_ACT(mb=1, 0->1) precedes it");

    s = fwd_of(BG_SCHED_INTERLEAVED, 2, 4, 2, 3, 0);
    if (s)
        CHECK_OK(bg_sched_remove(s, 0, (size_t)find(s, 0, BG_ACT_SEND_ACT, 2, 2, 3)));
    EXPECT_BROKEN(s, "RECV_ACT(mb=2, 2->3", "no matching send");

    s = fwd_of(BG_SCHED_1F1B, 2, 2, 1, 2, 0);
    if (s)
        CHECK_OK(bg_sched_append(s, 1, bg_action_compute(BG_ACT_B, 0, 1)));
    EXPECT_BROKEN(s, "rank 1", "B(mb=0, c=1)", "forward-only");

    s = fwd_of(BG_SCHED_1F1B, 2, 2, 1, 2, 0);
    if (s)
        CHECK_OK(bg_sched_append(s, 0, bg_action_compute(BG_ACT_OPTIMIZER, -1, -1)));
    EXPECT_BROKEN(s, "rank 0", "OPTIMIZER", "forward-only");

    s = fwd_of(BG_SCHED_INTERLEAVED, 2, 4, 2, 1, 0);
    if (s) { /* rank 1 waits for 2->3 before sending 1->2, which rank 0 needs first */
        long sd = find(s, 1, BG_ACT_SEND_ACT, 0, 1, 2);
        bg_action_t a = bg_sched_actions(s, 1)[sd];
        CHECK_OK(bg_sched_remove(s, 1, (size_t)sd));
        CHECK_OK(bg_sched_insert(s, 1, (size_t)find(s, 1, BG_ACT_RECV_ACT, 0, 2, 3) + 1, a));
    }
    EXPECT_BROKEN(s, "deadlock", "RECV_ACT(mb=0, 2->3, peer 0)");
}

int main(void)
{
    generated();
    broken();
    return bg_test_finish("test_schedule_fwd");
}
