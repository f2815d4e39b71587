/*
 * tests/engine/test_schedule.c -- every generator, over a grid of (p, m, v),
 * produces schedules the checker accepts, with the documented structure and
 * peak activation memory; invalid requests fail with a message.
 * Must NOT depend on timing (engine/sim has its own test).
 */
#include <string.h>

#include "engine/schedule.h"
#include "test_util.h"

/* Count actions of `kind` on rank r. */
static int count_kind(const bg_sched_t *s, int r, bg_act_kind_t kind)
{
    int n = 0;
    const bg_action_t *a = bg_sched_actions(s, r);
    for (size_t i = 0; i < bg_sched_len(s, r); i++) n += a[i].kind == kind;
    return n;
}

static int min_i(int a, int b) { return a < b ? a : b; }

/* Expected peak of live activations (F ran, W not) on rank r
 * (docs/schedules.md, "Memory"). */
static int expected_peak(bg_sched_kind_t kind, int p, int m, int v, int r)
{
    switch (kind) {
    case BG_SCHED_GPIPE: return m;
    case BG_SCHED_1F1B: return min_i(p - r, m);
    case BG_SCHED_ZB_H1: return min_i(p, m); /* W deferred: 1F1B's rank-0 peak everywhere */
    case BG_SCHED_INTERLEAVED: {
        if (m % p) { /* a short last round: the table's closed form, summed */
            int n = 0;
            for (int j = 0; j < v; j++)
                n += bg_sched_in_flight(bg_sched_desc(kind), p, m, v, j * p + r);
            return n;
        }
        int total = m * v, warm = m == p ? total : (p - r - 1) * 2 + (v - 1) * p;
        return warm >= total ? total : warm + 1;
    }
    default: return -1; /* not pinned here: test_sched_table checks every row */
    }
}

/* Schedules whose W always runs apart from B (W fills the bubble). */
static int always_split(bg_sched_kind_t kind)
{
    return kind == BG_SCHED_ZB_H1 || kind == BG_SCHED_ZB_V;
}

static void sweep(void)
{
    int checked = 0;
    for (int kind = 0; kind < BG_SCHED_KIND_COUNT; kind++)
        for (int split = 0; split < 2; split++)
            for (int p = 1; p <= 8; p++)
                for (int m = 1; m <= 32; m++)
                    for (int v = 1; v <= 4; v++) {
                        const bg_sched_desc_t *d = bg_sched_desc((bg_sched_kind_t)kind);
                        int valid = v >= d->chunks_min && v <= d->chunks_max && d->m_ok(p, m);
                        if (always_split((bg_sched_kind_t)kind) && split) continue;
                        bg_sched_t *s = NULL;
                        bg_status_t st = bg_sched_generate((bg_sched_kind_t)kind, p, m, v,
                                                           split ? BG_SCHED_SPLIT_BW : 0, &s);
                        if (!valid) {
                            CHECK_MSG(st == BG_ERR_INVALID && s == NULL && *bg_last_error(),
                                      "%s p=%d m=%d v=%d accepted", bg_sched_kind_name(kind), p,
                                      m, v);
                            continue;
                        }
                        if (st != BG_OK) {
                            CHECK_MSG(0, "%s p=%d m=%d v=%d: %s", bg_sched_kind_name(kind), p, m,
                                      v, bg_last_error());
                            continue;
                        }
                        int peak[8], live[8], stash[8];
                        st = bg_sched_check(s, peak);
                        bg_sched_peaks(s, live, stash);
                        CHECK_MSG(st == BG_OK, "%s%s p=%d m=%d v=%d: %s",
                                  bg_sched_kind_name(kind), split ? "/split" : "", p, m, v,
                                  bg_last_error());
                        checked++;
                        for (int r = 0; st == BG_OK && r < p; r++) {
                            int want = expected_peak((bg_sched_kind_t)kind, p, m, v, r);
                            CHECK_MSG(want < 0 || peak[r] == want, "%s p=%d m=%d v=%d rank %d: peak %d want %d",
                                      bg_sched_kind_name(kind), p, m, v, r, peak[r], want);
                            CHECK(live[r] == peak[r]);
                            /* Full stash (F ran, B not): zb-h1 keeps 1F1B's p - r. */
                            if (kind == BG_SCHED_ZB_H1 || kind == BG_SCHED_1F1B)
                                CHECK_MSG(stash[r] == min_i(p - r, m), "%s p=%d m=%d r=%d stash %d",
                                          bg_sched_kind_name(kind), p, m, r, stash[r]);
                            int split_here = split || always_split((bg_sched_kind_t)kind);
                            CHECK(count_kind(s, r, BG_ACT_F) == m * v);
                            if (kind == BG_SCHED_DUALPIPEV && !split) {
                                /* fused backwards, then B-only ones whose W fill the drain */
                                CHECK(count_kind(s, r, BG_ACT_W) + count_kind(s, r, BG_ACT_BW) ==
                                      m * v);
                                continue;
                            }
                            CHECK(count_kind(s, r, split_here ? BG_ACT_W : BG_ACT_BW) == m * v);
                            CHECK(count_kind(s, r, split_here ? BG_ACT_BW : BG_ACT_W) == 0);
                        }
                        bg_sched_free(s);
                    }
    printf("checked %d generated schedules\n", checked);
}

/* The printed compute lists of a generated schedule start with `want`. */
static void expect_printed(bg_sched_kind_t kind, int p, int m, int v, const char *want)
{
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_generate(kind, p, m, v, 0, &s));
    if (!s) return;
    char buf[8192];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    CHECK_OK(bg_sched_print(s, f, 0));
    fclose(f);
    CHECK_MSG(!strncmp(buf, want, strlen(want)), "%s p=%d m=%d v=%d got:\n%s",
              bg_sched_kind_name(kind), p, m, v, buf);
    bg_sched_free(s);
}

/* The exact lists for p=4, m=8 rank 0 (compute only) match the literature. */
static void known_orders(void)
{
    static const char *want[] = {
        /* gpipe */ "rank 0: F0 F1 F2 F3 F4 F5 F6 F7 BW0 BW1 BW2 BW3 BW4 BW5 BW6 BW7\n",
        /* 1f1b */ "rank 0: F0 F1 F2 F3 BW0 F4 BW1 F5 BW2 F6 BW3 F7 BW4 BW5 BW6 BW7\n",
    };
    for (int k = 0; k < 2; k++) {
        bg_sched_t *s = NULL;
        CHECK_OK(bg_sched_generate((bg_sched_kind_t)k, 4, 8, 1, 0, &s));
        if (!s) continue;
        char buf[4096];
        FILE *f = fmemopen(buf, sizeof(buf), "w");
        CHECK_OK(bg_sched_print(s, f, 0));
        fclose(f);
        CHECK_MSG(!strncmp(buf, want[k], strlen(want[k])), "got:\n%s", buf);
        bg_sched_free(s);
    }
    /* 1f1b last rank: strict alternation, no warm-up; the gradient leaves
     * right after B, before W runs. */
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_generate(BG_SCHED_1F1B, 4, 8, 1, BG_SCHED_SPLIT_BW, &s));
    if (s) {
        const bg_action_t *a = bg_sched_actions(s, 3);
        CHECK(a[0].kind == BG_ACT_RECV_ACT && a[1].kind == BG_ACT_F && a[2].kind == BG_ACT_B &&
              a[3].kind == BG_ACT_SEND_GRAD && a[4].kind == BG_ACT_W);
        bg_sched_free(s);
    }
    /* interleaved p=2 m=4 v=2 rank 0, Megatron order: warm-up (2-0-1)*2+(2-1)*2 = 4. */
    expect_printed(BG_SCHED_INTERLEAVED, 2, 4, 2,
                   "rank 0: F0c0 F1c0 F0c2 F1c2 F2c0 BW0c2 F3c0 BW1c2 F2c2 BW0c0 F3c2 "
                   "BW1c0 BW2c2 BW3c2 BW2c0 BW3c0\n");
    /* m = 3 on p = 2: the order of m = 4 with micro-batch 3 left out (a
     * short last round). */
    expect_printed(BG_SCHED_INTERLEAVED, 2, 3, 2,
                   "rank 0: F0c0 F1c0 F0c2 F1c2 F2c0 BW0c2 BW1c2 F2c2 BW0c0 BW1c0 BW2c2 "
                   "BW2c0\n");
    /* zb-v p=2 m=3 (one padding micro-batch fills the V): rank 0 holds chunks
     * 0 and 3, rank 1 chunks 1 and 2 (docs/schedules.md). */
    expect_printed(BG_SCHED_ZB_V, 2, 3, 2,
                   "rank 0: F0c0 F1c0 F2c0 F0c3 B0c3 W0c3 F1c3 B1c3 W1c3 B0c0 W0c0 F2c3 B2c3 "
                   "W2c3 B1c0 W1c0 B2c0 W2c0\n"
                   "rank 1: F0c1 F0c2 F1c1 F1c2 B0c2 W0c2 F2c1 B0c1 W0c1 F2c2 B1c2 W1c2 B1c1 "
                   "B2c2 B2c1 W1c1 W2c2 W2c1\n");
    /* dualpipev p=2 m=4: the overlapped pairs are "F3c0 BW1c3", "F2c3 BW0c0",
     * ...; B-only backwards with deferred W at both ends. */
    expect_printed(BG_SCHED_DUALPIPEV, 2, 4, 2,
                   "rank 0: F0c0 F1c0 F2c0 F0c3 B0c3 W0c3 F1c3 F3c0 BW1c3 F2c3 BW0c0 BW2c3 "
                   "F3c3 BW1c0 BW3c3 B2c0 W2c0 B3c0 W3c0\n"
                   "rank 1: F0c1 F0c2 F1c1 F1c2 F2c1 BW0c2 F2c2 BW0c1 F3c1 BW1c2 F3c2 BW1c1 "
                   "BW2c2 BW2c1 B3c2 B3c1 W3c2 W3c1\n");
}

/* Transfers carry (mb, src, dst) and every SEND's tag equals its RECV's. */
static void transfers_and_tags(void)
{
    bg_sched_t *s = NULL;
    CHECK_OK(bg_sched_generate(BG_SCHED_INTERLEAVED, 4, 8, 2, 0, &s));
    if (!s) return;
    int sends = 0, matched = 0;
    for (int r = 0; r < 4; r++) {
        const bg_action_t *a = bg_sched_actions(s, r);
        for (size_t i = 0; i < bg_sched_len(s, r); i++) {
            if (!bg_act_is_send(a[i].kind)) continue;
            sends++;
            CHECK(a[i].chunk == a[i].src && bg_sched_chunk_rank(s, a[i].src) == r);
            const bg_action_t *b = bg_sched_actions(s, a[i].peer);
            for (size_t j = 0; j < bg_sched_len(s, a[i].peer); j++)
                if (bg_act_is_recv(b[j].kind) && bg_action_tag(&b[j]) == bg_action_tag(&a[i])) {
                    matched++;
                    CHECK(b[j].peer == r && b[j].chunk == b[j].dst);
                }
        }
    }
    /* 8 chunks -> 7 edges, all cross-rank, 2 directions, 8 micro-batches. */
    CHECK(sends == 7 * 2 * 8);
    CHECK(matched == sends);
    /* RECVs sit right before the action that needs them. */
    const bg_action_t *a = bg_sched_actions(s, 1);
    for (size_t i = 0; i < bg_sched_len(s, 1); i++)
        if (bg_act_is_recv(a[i].kind)) {
            size_t j = i + 1;
            while (bg_act_is_recv(a[j].kind)) j++;
            CHECK(a[j].mb == a[i].mb && a[j].chunk == a[i].dst &&
                  a[j].kind == (a[i].kind == BG_ACT_RECV_ACT ? BG_ACT_F : BG_ACT_BW));
        }
    bg_sched_free(s);
}

/* A skip connection 0 -> 3 over four ranks: direct transfers, still valid. */
static void skip_transfer(void)
{
    for (int kind = 0; kind < BG_SCHED_KIND_COUNT; kind++) {
        bg_sched_t *s = NULL;
        int v = bg_sched_desc((bg_sched_kind_t)kind)->chunks_default; /* interleaved: 2 */
        CHECK_OK(bg_sched_generate((bg_sched_kind_t)kind, 4, 8, v, 0, &s));
        if (!s) continue;
        size_t before0 = bg_sched_len(s, 0), before3 = bg_sched_len(s, 3);
        CHECK_OK(bg_sched_add_transfer(s, 0, 3, 1));
        CHECK(bg_sched_len(s, 0) == before0 + 16 && bg_sched_len(s, 3) == before3 + 16);
        CHECK_OK(bg_sched_check(s, NULL));
        /* Same rank (interleaved: chunk 0 and 4 both on rank 0; V: 0 and 7):
         * recorded only. */
        if (v == 2) {
            size_t n0 = bg_sched_len(s, 0);
            int other = 4;
            while (bg_sched_chunk_rank(s, other) != 0) other++;
            CHECK_OK(bg_sched_add_transfer(s, 0, other, 1));
            CHECK(bg_sched_len(s, 0) == n0);
            CHECK_OK(bg_sched_check(s, NULL));
        }
        /* Without gradient; then duplicates and backwards edges are refused. */
        CHECK_OK(bg_sched_add_transfer(s, 1, 3, 0));
        CHECK(bg_sched_len(s, 1) > 0);
        CHECK_OK(bg_sched_check(s, NULL));
        int n = bg_sched_edges(s);
        size_t len0 = bg_sched_len(s, 0);
        CHECK(bg_sched_add_transfer(s, 0, 3, 1) == BG_ERR_INVALID);
        CHECK(bg_sched_add_transfer(s, 3, 1, 1) == BG_ERR_INVALID);
        CHECK(bg_sched_edges(s) == n && bg_sched_len(s, 0) == len0);
        bg_sched_free(s);
    }
}

static void invalid_requests(void)
{
    bg_sched_t *s = NULL;
    /* Interleaved takes any m: 6 micro-batches on 4 stages. */
    CHECK_OK(bg_sched_generate(BG_SCHED_INTERLEAVED, 4, 6, 2, 0, &s));
    if (s) CHECK_OK(bg_sched_check(s, NULL));
    bg_sched_free(s);
    s = NULL;
    CHECK(bg_sched_generate(BG_SCHED_1F1B, 4, 8, 2, 0, &s) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "interleaved") != NULL);
    CHECK(bg_sched_generate(BG_SCHED_GPIPE, 0, 8, 1, 0, &s) == BG_ERR_INVALID);
    CHECK(bg_sched_generate(BG_SCHED_GPIPE, 2, 0, 1, 0, &s) == BG_ERR_INVALID);
    CHECK(bg_sched_generate(BG_SCHED_GPIPE, 2, 2, 1, 0x80, &s) == BG_ERR_INVALID);
    CHECK(s == NULL);
    bg_sched_kind_t k;
    CHECK(bg_sched_kind_parse("zb-h1", &k) == BG_OK && k == BG_SCHED_ZB_H1);
    /* "zbh1" is zb-h1's alias in the schedule table (partition and engine
     * used to disagree on it); an unknown name lists the choices. */
    CHECK(bg_sched_kind_parse("zbh1", &k) == BG_OK && k == BG_SCHED_ZB_H1);
    CHECK(bg_sched_kind_parse("zb-h2", &k) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "zb-h1") != NULL);
}

int main(void)
{
    sweep();
    known_orders();
    transfers_and_tags();
    skip_transfer();
    invalid_requests();
    return bg_test_finish("test_schedule");
}
