/*
 * tests/engine/test_schedule_broken.c -- the checker rejects hand-broken
 * lists, each with a message naming the rank, the action index and the
 * action: missing and duplicate work, wrong order, wrong rank or peer,
 * unmatched transfers, misplaced ALLREDUCE/OPTIMIZER, and a cycle of waits.
 * Must NOT rely on which of several problems is reported beyond "the first in
 * rank order, then index order" as documented.
 */
#include <string.h>

#include "engine/schedule.h"
#include "test_util.h"

/* Index of the first action (kind, mb, chunk) on rank, or -1. */
static long find(const bg_sched_t *s, int r, bg_act_kind_t k, int mb, int chunk)
{
    const bg_action_t *a = bg_sched_actions(s, r);
    for (size_t i = 0; i < bg_sched_len(s, r); i++)
        if (a[i].kind == k && a[i].mb == mb && a[i].chunk == chunk) return (long)i;
    return -1;
}

static bg_sched_t *gen(bg_sched_kind_t k, int p, int m, int v, unsigned flags)
{
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_generate(k, p, m, v, flags, &s));
    if (s) CHECK_OK(bg_sched_check(s, NULL));
    return s;
}

/* The checker must fail on s with a message containing every needle; s is freed. */
#define EXPECT_BROKEN(s, ...) expect_broken(__LINE__, s, (const char *[]){__VA_ARGS__, NULL})
static void expect_broken(int line, bg_sched_t *s, const char **needles)
{
    if (!s) return;
    int peak[16] = {-7};
    bg_status_t st = bg_sched_check(s, peak);
    const char *msg = bg_last_error();
    CHECK_MSG(st == BG_ERR_INVALID, "line %d: accepted", line);
    CHECK_MSG(peak[0] == -7, "line %d: output written on failure", line);
    for (const char **n = needles; *n; n++)
        CHECK_MSG(strstr(msg, *n) != NULL, "line %d: '%s' not in: %s", line, *n, msg);
    printf("  line %d rejected: %s\n", line, msg);
    bg_sched_free(s);
}

/* Move the action at `from` to `to` (index in the list after removal). */
static void move(bg_sched_t *s, int r, long from, long to)
{
    bg_action_t a = bg_sched_actions(s, r)[from];
    CHECK_OK(bg_sched_remove(s, r, (size_t)from));
    CHECK_OK(bg_sched_insert(s, r, (size_t)to, a));
}

static void missing_and_duplicate(void)
{
    bg_sched_t *s = gen(BG_SCHED_1F1B, 4, 8, 1, BG_SCHED_SPLIT_BW);
    CHECK_OK(bg_sched_remove(s, 2, (size_t)find(s, 2, BG_ACT_W, 5, 2)));
    EXPECT_BROKEN(s, "rank 2", "W(mb=6, c=2)", "expected mb=5");

    /* Missing last W, nothing after it to notice: the completeness pass. */
    s = gen(BG_SCHED_1F1B, 4, 8, 1, BG_SCHED_SPLIT_BW);
    CHECK_OK(bg_sched_remove(s, 2, bg_sched_len(s, 2) - 1));
    CHECK_OK(bg_sched_remove(s, 2, (size_t)find(s, 2, BG_ACT_ALLREDUCE, -1, 2)));
    CHECK_OK(bg_sched_remove(s, 2, (size_t)find(s, 2, BG_ACT_W, 7, 2)));
    EXPECT_BROKEN(s, "rank 2", "W(mb=7, c=2) missing");

    s = gen(BG_SCHED_GPIPE, 3, 4, 1, 0);
    long i = find(s, 1, BG_ACT_F, 2, 1);
    CHECK_OK(bg_sched_insert(s, 1, (size_t)i + 1, bg_sched_actions(s, 1)[i]));
    EXPECT_BROKEN(s, "rank 1", "F(mb=2, c=1)", "duplicate");

    /* B and BW of the same (mb, c). */
    s = gen(BG_SCHED_GPIPE, 2, 2, 1, 0);
    i = find(s, 1, BG_ACT_BW, 0, 1);
    CHECK_OK(bg_sched_insert(s, 1, (size_t)i, bg_action_compute(BG_ACT_B, 0, 1)));
    EXPECT_BROKEN(s, "rank 1", "BW(mb=0, c=1)", "duplicate");

    s = gen(BG_SCHED_ZB_H1, 4, 8, 1, 0);
    CHECK_OK(bg_sched_remove(s, 0, (size_t)find(s, 0, BG_ACT_ALLREDUCE, -1, 0)));
    EXPECT_BROKEN(s, "rank 0", "OPTIMIZER", "runs before ALLREDUCE(c=0)");

    s = gen(BG_SCHED_1F1B, 2, 2, 1, 0);
    CHECK_OK(bg_sched_remove(s, 1, bg_sched_len(s, 1) - 1));
    EXPECT_BROKEN(s, "rank 1", "OPTIMIZER missing");

    /* An empty hand-written schedule is incomplete, not accepted. */
    CHECK_OK(bg_sched_create(2, 2, 1, NULL, &s));
    EXPECT_BROKEN(s, "F(mb=0, c=0) missing");
}

static void wrong_order(void)
{
    /* B before its F. */
    bg_sched_t *s = gen(BG_SCHED_GPIPE, 1, 3, 1, 0);
    move(s, 0, find(s, 0, BG_ACT_BW, 1, 0), 0);
    EXPECT_BROKEN(s, "rank 0, action 0", "BW(mb=1, c=0)", "runs before F(mb=1, c=0)");

    /* W before its B (zb-h1 splits). */
    s = gen(BG_SCHED_ZB_H1, 2, 4, 1, 0);
    long b = find(s, 0, BG_ACT_B, 2, 0);
    move(s, 0, find(s, 0, BG_ACT_W, 2, 0), b);
    EXPECT_BROKEN(s, "rank 0", "W(mb=2, c=0)", "runs before B(mb=2, c=0)");

    /* Weight gradients out of micro-batch order (accumulation order). */
    s = gen(BG_SCHED_ZB_H1, 2, 4, 1, 0);
    move(s, 1, find(s, 1, BG_ACT_W, 3, 1), find(s, 1, BG_ACT_W, 2, 1));
    EXPECT_BROKEN(s, "rank 1", "W(mb=3, c=1)", "micro-batch order");

    /* F consumes activations received only after it. */
    s = gen(BG_SCHED_1F1B, 2, 2, 1, 0);
    long rv = find(s, 1, BG_ACT_RECV_ACT, 1, 1);
    move(s, 1, rv, rv + 1);
    EXPECT_BROKEN(s, "rank 1", "F(mb=1, c=1)", "no RECV_ACT(mb=1, 0->1) precedes it");

    /* Send before the data exists. */
    s = gen(BG_SCHED_1F1B, 2, 2, 1, 0);
    move(s, 0, find(s, 0, BG_ACT_SEND_ACT, 0, 0), 0);
    EXPECT_BROKEN(s, "rank 0, action 0", "SEND_ACT(mb=0, 0->1, peer 1)", "before F(mb=0, c=0)");

    /* OPTIMIZER not last. */
    s = gen(BG_SCHED_1F1B, 2, 2, 1, 0);
    move(s, 0, (long)bg_sched_len(s, 0) - 1, 0);
    EXPECT_BROKEN(s, "rank 0, action 0", "OPTIMIZER must be last");

    /* ALLREDUCE before the chunk's last W. */
    s = gen(BG_SCHED_INTERLEAVED, 2, 2, 2, 0);
    move(s, 1, find(s, 1, BG_ACT_ALLREDUCE, -1, 3), 0);
    EXPECT_BROKEN(s, "rank 1, action 0", "ALLREDUCE(c=3)", "runs before W(mb=0, c=3)");
}

static void wrong_place(void)
{
    /* Compute on a rank that does not own the chunk. */
    bg_sched_t *s = gen(BG_SCHED_GPIPE, 2, 1, 1, 0);
    CHECK_OK(bg_sched_insert(s, 0, 0, bg_action_compute(BG_ACT_F, 0, 1)));
    EXPECT_BROKEN(s, "rank 0, action 0", "chunk 1 lives on rank 1");

    /* Transfer with the wrong peer. */
    s = gen(BG_SCHED_1F1B, 3, 3, 1, 0);
    long i = find(s, 0, BG_ACT_SEND_ACT, 1, 0);
    CHECK_OK(bg_sched_set(s, 0, (size_t)i, bg_action_transfer(BG_ACT_SEND_ACT, 1, 0, 1, 2)));
    EXPECT_BROKEN(s, "rank 0", "SEND_ACT(mb=1, 0->1, peer 2)", "peer 1");

    /* Transfer over an edge nobody declared (a skip without add_transfer). */
    s = gen(BG_SCHED_1F1B, 3, 3, 1, 0);
    CHECK_OK(bg_sched_insert(s, 0, 1, bg_action_transfer(BG_ACT_SEND_ACT, 0, 0, 2, 2)));
    EXPECT_BROKEN(s, "rank 0, action 1", "no activation edge 0 -> 2");

    /* Out-of-range micro-batch. */
    s = gen(BG_SCHED_1F1B, 2, 2, 1, 0);
    CHECK_OK(bg_sched_insert(s, 0, 0, bg_action_compute(BG_ACT_F, 9, 0)));
    EXPECT_BROKEN(s, "rank 0, action 0", "out of range");

    /* A transfer between two chunks of one rank (v=2, p=1). */
    s = gen(BG_SCHED_INTERLEAVED, 1, 2, 2, 0);
    CHECK_OK(bg_sched_insert(s, 0, 1, bg_action_transfer(BG_ACT_SEND_ACT, 0, 0, 1, 0)));
    EXPECT_BROKEN(s, "rank 0, action 1", "hand off locally");
}

static void unmatched(void)
{
    /* A receive whose send was dropped. */
    bg_sched_t *s = gen(BG_SCHED_GPIPE, 2, 3, 1, 0);
    CHECK_OK(bg_sched_remove(s, 0, (size_t)find(s, 0, BG_ACT_SEND_ACT, 2, 0)));
    EXPECT_BROKEN(s, "rank 1", "RECV_ACT(mb=2, 0->1, peer 0)", "no matching send");

    /* A send whose receive was dropped: the consumer notices first. */
    s = gen(BG_SCHED_GPIPE, 2, 3, 1, 0);
    CHECK_OK(bg_sched_remove(s, 0, (size_t)find(s, 0, BG_ACT_RECV_GRAD, 1, 0)));
    EXPECT_BROKEN(s, "rank 0", "BW(mb=1, c=0)", "no RECV_GRAD(mb=1, 1->0) precedes it");

    /* Same send twice. */
    s = gen(BG_SCHED_GPIPE, 2, 3, 1, 0);
    long i = find(s, 0, BG_ACT_SEND_ACT, 1, 0);
    CHECK_OK(bg_sched_insert(s, 0, (size_t)i, bg_sched_actions(s, 0)[i]));
    EXPECT_BROKEN(s, "rank 0", "SEND_ACT(mb=1, 0->1, peer 1)", "duplicate");
}

static void deadlocks(void)
{
    /* Rank 0 waits for mb 0's gradient before sending mb 1; rank 1 (gpipe)
     * runs all forwards before any backward: a two-rank cycle. */
    bg_sched_t *s = gen(BG_SCHED_GPIPE, 2, 2, 1, 0);
    long sa0 = find(s, 0, BG_ACT_SEND_ACT, 0, 0);
    move(s, 0, find(s, 0, BG_ACT_RECV_GRAD, 0, 0), sa0 + 1);
    move(s, 0, find(s, 0, BG_ACT_BW, 0, 0), sa0 + 2);
    EXPECT_BROKEN(s, "deadlock", "rank 0, action 2 (RECV_GRAD(mb=0, 1->0, peer 1)) waits for rank 1",
                  "waits for rank 0", "cycle of waits: rank 0", "(back to rank 0)");

    /* Three ranks: ranks 0 and 1 both wait for mb 0's gradient before
     * forwarding mb 1, rank 2 (gpipe) forwards both first: rank 0 waits on
     * the cycle between ranks 1 and 2. */
    s = gen(BG_SCHED_GPIPE, 3, 2, 1, 0);
    for (int r = 0; r < 2; r++) {
        long at = find(s, r, BG_ACT_SEND_ACT, 0, r) + 1;
        move(s, r, find(s, r, BG_ACT_RECV_GRAD, 0, r), at++);
        move(s, r, find(s, r, BG_ACT_BW, 0, r), at++);
        if (r) move(s, r, find(s, r, BG_ACT_SEND_GRAD, 0, r), at);
    }
    EXPECT_BROKEN(s, "deadlock", "rank 0, action 2 (RECV_GRAD(mb=0, 1->0, peer 1)) waits for rank 1",
                  "rank 1, action 3 (RECV_GRAD(mb=0, 2->1, peer 2)) waits for rank 2",
                  "rank 2, action 2 (RECV_ACT(mb=1, 1->2, peer 1)) waits for rank 1",
                  /* the cycle is named as such, rank 0 as blocked on it */
                  "cycle of waits: rank 1, action 3",
                  "(back to rank 1); blocked on it: rank 0, action 2");
}

/* bg_sched_add_transfer leaves the schedule unchanged when it cannot apply. */
static void add_transfer_atomic(void)
{
    bg_sched_t *s = gen(BG_SCHED_1F1B, 4, 4, 1, 0);
    if (!s) return;
    CHECK_OK(bg_sched_remove(s, 3, (size_t)find(s, 3, BG_ACT_F, 2, 3)));
    size_t len0 = bg_sched_len(s, 0);
    int edges = bg_sched_edges(s);
    CHECK(bg_sched_add_transfer(s, 0, 3, 1) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "F(mb=2, c=3)") != NULL);
    CHECK(bg_sched_len(s, 0) == len0 && bg_sched_edges(s) == edges);
    bg_sched_free(s);
}

int main(void)
{
    missing_and_duplicate();
    wrong_order();
    wrong_place();
    unmatched();
    deadlocks();
    add_transfer_atomic();
    return bg_test_finish("test_schedule_broken");
}
