/*
 * tests/transport/test_tp_shard.c -- reduce-scatter and all-gather over
 * 2, 3 and 4 local ranks, and their contract with allreduce:
 *   - shard boundaries are floor(count * i / n), cover the buffer, sizes
 *     differ by at most one, and do not overflow for huge counts;
 *   - every element is reduced along the documented chain b+1, ..., b:
 *     each rank recomputes all ranks' inputs and the expected bits in that
 *     order (f32 and bf16, SUM and AVG) and compares bit for bit;
 *   - reduce-scatter then all-gather gives exactly allreduce's bits;
 *   - all-gather alone copies each owner's shard to all;
 *   - reduce-scatter and all-gather in flight together, waited out of order;
 *   - the scratch cache allocates nothing for repeated collectives, and a
 *     group destroyed with a collective still out lives until it finishes.
 * Each group size runs three times: default thresholds, every size forced
 * onto the ring (BRIGADE_TP_SMALL=1) and every size forced onto the direct
 * exchange, with small segments so rings have many segments and lanes.
 *
 * Must NOT: compare with a tolerance where the order is documented (the
 * chain order makes the bits exact), or use counts divisible by every n only.
 */
#include "tp_harness.h"
#include "transport/coll_int.h" /* the scratch cache counter */

static const size_t counts[] = {1, 2, 3, 5, 7, 1000, 4099, 65537, 300001};
#define NCOUNTS (sizeof(counts) / sizeof(counts[0]))

static float input(int rank, size_t i)
{
    uint64_t s = (uint64_t)rank * 7000003u + i * 104729u + 11;
    return bg_test_uniform(&s, -1.0f, 1.0f) * (1.0f + (float)(i % 5));
}

/* One element's value as this dtype stores it (bf16: rounded input). */
static float stored(int bf16, int rank, size_t i)
{
    return bf16 ? tph_from_bf16(tph_to_bf16(input(rank, i))) : input(rank, i);
}

static float round_to(int bf16, float v)
{
    return bf16 ? tph_from_bf16(tph_to_bf16(v)) : v;
}

/* The documented result for element i of shard b: chain b+1, ..., b. */
static float expected(int bf16, int n, int b, size_t i, bg_tp_op_t op)
{
    float acc = stored(bf16, (b + 1) % n, i);
    for (int k = 2; k < n; k++) acc = round_to(bf16, acc + stored(bf16, (b + k) % n, i));
    acc = round_to(bf16, stored(bf16, b, i) + acc);
    if (op == BG_TP_AVG) acc = round_to(bf16, acc / (float)n);
    return acc;
}

static void fill(void *buf, int bf16, int rank, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (bf16) ((uint16_t *)buf)[i] = tph_to_bf16(input(rank, i));
        else ((float *)buf)[i] = input(rank, i);
    }
}

static float get(const void *buf, int bf16, size_t i)
{
    return bf16 ? tph_from_bf16(((const uint16_t *)buf)[i]) : ((const float *)buf)[i];
}

/* Elements [lo, hi) of buf against the documented bits; count of misses. */
static size_t check_range(const void *buf, int bf16, int n, size_t count, size_t lo, size_t hi,
                          bg_tp_op_t op)
{
    size_t bad = 0;
    for (int b = 0; b < n; b++) {
        size_t s = bg_tp_shard_offset(count, n, b), e = bg_tp_shard_offset(count, n, b + 1);
        for (size_t i = s < lo ? lo : s; i < e && i < hi; i++) {
            float want = expected(bf16, n, b, i, op), got = get(buf, bf16, i);
            bad += memcmp(&want, &got, 4) != 0;
        }
    }
    return bad;
}

static void check_shards(void)
{
    for (int n = 1; n <= 9; n++)
        for (size_t k = 0; k < NCOUNTS; k++) {
            size_t c = counts[k], prev = 0, lo = (size_t)-1, hi = 0;
            CHECK(bg_tp_shard_offset(c, n, 0) == 0 && bg_tp_shard_offset(c, n, n) == c);
            for (int i = 1; i <= n; i++) {
                size_t o = bg_tp_shard_offset(c, n, i), sz = o - prev;
                CHECK(o >= prev && o == c * (size_t)i / (size_t)n);
                if (sz < lo) lo = sz;
                if (sz > hi) hi = sz;
                prev = o;
            }
            CHECK_MSG(hi - lo <= 1, "count %zu over %d: shard sizes %zu..%zu", c, n, lo, hi);
        }
    size_t big = SIZE_MAX / 2;
    CHECK(bg_tp_shard_offset(big, 3, 2) == (size_t)((unsigned __int128)big * 2 / 3));
    CHECK(bg_tp_shard_offset(10, 4, -1) == 0 && bg_tp_shard_offset(10, 4, 9) == 10);
}

/* One (dtype, op, count): allreduce, reduce-scatter, all-gather, compared. */
static void one_case(bg_tp_group_t *g, int bf16, bg_tp_op_t op, size_t cnt)
{
    int n = bg_tp_group_size(g), me = bg_tp_group_index(g);
    bg_tp_dtype_t dt = bf16 ? BG_TP_BF16 : BG_TP_F32;
    size_t esz = bf16 ? 2 : 4, lo = bg_tp_shard_offset(cnt, n, me);
    size_t hi = bg_tp_shard_offset(cnt, n, me + 1);
    char *ar = malloc(cnt * esz), *rs = malloc(cnt * esz);
    fill(ar, bf16, me, cnt);
    fill(rs, bf16, me, cnt);
    CHECK_OK(bg_tp_allreduce(g, ar, cnt, dt, op, BG_TP_MEM_HOST, 30));
    size_t bad = check_range(ar, bf16, n, cnt, 0, cnt, op);
    CHECK_MSG(bad == 0, "allreduce %s op %d count %zu: %zu elements off the chain's bits",
              bf16 ? "bf16" : "f32", (int)op, cnt, bad);
    CHECK_OK(bg_tp_reduce_scatter(g, rs, cnt, dt, op, BG_TP_MEM_HOST, 30));
    bad = check_range(rs, bf16, n, cnt, lo, hi, op);
    CHECK_MSG(bad == 0, "reduce-scatter %s op %d count %zu: %zu of shard [%zu, %zu) wrong",
              bf16 ? "bf16" : "f32", (int)op, cnt, bad, lo, hi);
    CHECK_OK(bg_tp_allgather(g, rs, cnt, dt, BG_TP_MEM_HOST, 30));
    CHECK_MSG(!memcmp(rs, ar, cnt * esz),
              "reduce-scatter + all-gather differs from allreduce (%s, op %d, count %zu)",
              bf16 ? "bf16" : "f32", (int)op, cnt);
    free(ar);
    free(rs);
}

/* All-gather alone, and a reduce-scatter overlapping an all-gather. */
static void gather_and_overlap(bg_tp_group_t *g, size_t cnt)
{
    int n = bg_tp_group_size(g), me = bg_tp_group_index(g);
    float *a = malloc(cnt * 4), *b = malloc(cnt * 4);
    for (size_t i = 0; i < cnt; i++) a[i] = -1.0f; /* not mine: must be overwritten */
    for (size_t i = bg_tp_shard_offset(cnt, n, me); i < bg_tp_shard_offset(cnt, n, me + 1); i++)
        a[i] = (float)(me * 100000) + (float)i;
    fill(b, 0, me, cnt);
    bg_tp_coll_t *ca = NULL, *cb = NULL;
    CHECK_OK(bg_tp_reduce_scatter_start(g, b, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &cb));
    CHECK_OK(bg_tp_allgather_start(g, a, cnt, BG_TP_F32, BG_TP_MEM_HOST, &ca));
    CHECK_OK(bg_tp_coll_wait(ca, 30));
    CHECK_OK(bg_tp_coll_wait(cb, 30));
    size_t bad = 0;
    for (int r = 0; r < n; r++)
        for (size_t i = bg_tp_shard_offset(cnt, n, r); i < bg_tp_shard_offset(cnt, n, r + 1); i++)
            bad += a[i] != (float)(r * 100000) + (float)i;
    CHECK_MSG(bad == 0, "all-gather count %zu: %zu elements not the owner's", cnt, bad);
    size_t lo = bg_tp_shard_offset(cnt, n, me), hi = bg_tp_shard_offset(cnt, n, me + 1);
    CHECK_MSG(check_range(b, 0, n, cnt, lo, hi, BG_TP_SUM) == 0,
              "reduce-scatter overlapping an all-gather (count %zu) is wrong", cnt);
    free(a);
    free(b);
}

static int role_shard(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int world = bg_tp_world_size(tp), ranks[TPH_MAX];
    for (int i = 0; i < world; i++) ranks[i] = i;
    bg_tp_group_t *g = NULL;
    CHECK_OK(bg_tp_group_create(tp, ranks, world, &g));
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int op = 0; op < 2; op++)
            for (size_t k = 0; k < NCOUNTS; k++) one_case(g, bf16, (bg_tp_op_t)op, counts[k]);
    gather_and_overlap(g, 3);
    gather_and_overlap(g, 100003);
    /* A group of one: nothing moves, AVG divides by one. */
    bg_tp_group_t *self = NULL;
    int mine = bg_tp_rank(tp);
    CHECK_OK(bg_tp_group_create(tp, &mine, 1, &self));
    float v[3] = {1.5f, -2.0f, 3.25f};
    CHECK_OK(bg_tp_reduce_scatter(self, v, 3, BG_TP_F32, BG_TP_AVG, BG_TP_MEM_HOST, 5));
    CHECK_OK(bg_tp_allgather(self, v, 3, BG_TP_F32, BG_TP_MEM_HOST, 5));
    CHECK(v[0] == 1.5f && v[1] == -2.0f && v[2] == 3.25f);
    bg_tp_group_destroy(self);
    /* The scratch cache: repeating the same collectives allocates nothing. */
    size_t before = bg_tp_group_scratch_allocs(g);
    one_case(g, 0, BG_TP_SUM, 300001);
    one_case(g, 0, BG_TP_SUM, 1000);
    CHECK_MSG(bg_tp_group_scratch_allocs(g) == before,
              "scratch allocated again for repeated collectives (%zu -> %zu)", before,
              bg_tp_group_scratch_allocs(g));
    /* Destroying a group with a collective still out keeps the group alive
     * until the handle is finished (ASan watches the order). */
    bg_tp_group_t *g2 = NULL;
    CHECK_OK(bg_tp_group_create(tp, ranks, world, &g2));
    float *w = malloc(100003 * sizeof(float));
    fill(w, 0, bg_tp_rank(tp), 100003);
    bg_tp_coll_t *late = NULL;
    CHECK_OK(bg_tp_reduce_scatter_start(g2, w, 100003, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &late));
    bg_tp_group_destroy(g2);
    CHECK_OK(bg_tp_coll_wait(late, 30));
    free(w);
    CHECK_OK(bg_tp_barrier(g, 30));
    bg_tp_group_destroy(g);
    return tph_leave(tp, "shard");
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank")) return role_shard();
    check_shards();
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    const char *ring[] = {"BRIGADE_TP_SMALL=1", "BRIGADE_TP_SEGMENT=4096", NULL};
    const char *direct[] = {"BRIGADE_TP_SMALL=100000000", NULL};
    int bad = 0;
    for (int n = 2; n <= 4; n++) {
        bad += tph_run(self, "shard", n, NULL, 90);
        bad += tph_run(self, "shard", n, ring, 90);
        bad += tph_run(self, "shard", n, direct, 90);
    }
    bg_test_failures += bad;
    return bg_test_finish("test_tp_shard");
}
