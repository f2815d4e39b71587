/*
 * tests/transport/test_tp_coll.c -- collectives over 2, 3, 4 and 5 local
 * ranks: ring allreduce (f32 and bf16, sum and average, odd sizes including
 * fewer elements than ranks, several buckets in flight) checked against a
 * double-precision reference, bitwise identical on every rank and across
 * repeats; broadcast from every root; barrier; a sub-group.
 *
 * Must NOT: compare floats for equality with a reference computed in a
 * different order (tolerance), but MUST compare ranks' results bit for bit.
 */
#include "tp_harness.h"

static const size_t counts[] = {1, 2, 3, 5, 1000, 65537, (1 << 20) + 3};
#define NCOUNTS (sizeof(counts) / sizeof(counts[0]))

static float input(int rank, size_t i, int round)
{
    uint64_t s = (uint64_t)rank * 1000003u + i * 7919u + (uint64_t)round * 104729u + 1;
    return bg_test_uniform(&s, -1.0f, 1.0f) * (1.0f + (float)(i % 7));
}

/* Every rank publishes the hash of its result; all must be equal. */
static void check_same_everywhere(bg_tp_t *tp, const char *what, uint64_t h, int round)
{
    bg_tp_store_t *st = bg_tp_store(tp);
    char key[128];
    snprintf(key, sizeof(key), "test/%s/%d/%d", what, round, bg_tp_rank(tp));
    CHECK_OK(bg_tp_store_set(st, key, &h, 8));
    for (int r = 0; r < bg_tp_world_size(tp); r++) {
        uint64_t o = 0;
        size_t len;
        snprintf(key, sizeof(key), "test/%s/%d/%d", what, round, r);
        CHECK_OK(bg_tp_store_get(st, key, &o, 8, 20, &len));
        CHECK_MSG(o == h, "%s: rank %d's bits differ from rank %d's", what, r, bg_tp_rank(tp));
    }
}

static void allreduce_f32(bg_tp_t *tp, bg_tp_group_t *g, bg_tp_op_t op, uint64_t *hashes)
{
    int n = bg_tp_group_size(g), me = bg_tp_rank(tp);
    for (size_t k = 0; k < NCOUNTS; k++) {
        size_t cnt = counts[k];
        float *x = malloc(cnt * sizeof(float));
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < cnt; i++) x[i] = input(me, i, 0);
            CHECK_OK(bg_tp_allreduce(g, x, cnt, BG_TP_F32, op, BG_TP_MEM_HOST, 30));
            double worst = 0;
            for (size_t i = 0; i < cnt; i++) {
                double want = 0;
                for (int r = 0; r < bg_tp_world_size(tp); r++) want += input(r, i, 0);
                if (op == BG_TP_AVG) want /= n;
                double e = fabs(x[i] - want) / (1e-5 + 1e-5 * fabs(want));
                if (e > worst) worst = e;
            }
            CHECK_MSG(worst <= 1, "allreduce f32 count %zu: error %.3g of tolerance", cnt, worst);
            uint64_t h = tph_fnv(x, cnt * sizeof(float));
            if (round == 0) hashes[k] = h;
            else CHECK_MSG(h == hashes[k], "allreduce count %zu not repeatable", cnt);
        }
        char what[64];
        snprintf(what, sizeof(what), "ar%d_%zu", (int)op, cnt);
        check_same_everywhere(tp, what, hashes[k], 0);
        free(x);
    }
}

static int role_coll(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), world = bg_tp_world_size(tp);
    int ranks[TPH_MAX];
    for (int i = 0; i < world; i++) ranks[i] = i;
    bg_tp_group_t *g = NULL;
    CHECK_OK(bg_tp_group_create(tp, ranks, world, &g));
    uint64_t hashes[NCOUNTS];

    allreduce_f32(tp, g, BG_TP_SUM, hashes);
    allreduce_f32(tp, g, BG_TP_AVG, hashes);

    /* bf16 average: sum of bf16-rounded inputs, within bf16 precision. */
    size_t cnt = 4099;
    uint16_t *hb = malloc(cnt * 2);
    for (size_t i = 0; i < cnt; i++) hb[i] = tph_to_bf16(input(me, i, 1));
    CHECK_OK(bg_tp_allreduce(g, hb, cnt, BG_TP_BF16, BG_TP_AVG, BG_TP_MEM_HOST, 30));
    for (size_t i = 0; i < cnt; i++) {
        double want = 0;
        for (int r = 0; r < world; r++) want += tph_from_bf16(tph_to_bf16(input(r, i, 1)));
        want /= world;
        CHECK_MSG(fabs(tph_from_bf16(hb[i]) - want) <= 0.02 * (1 + fabs(want)), "bf16 %zu: %g vs %g",
                  i, tph_from_bf16(hb[i]), want);
    }
    check_same_everywhere(tp, "bf16", tph_fnv(hb, cnt * 2), 0);
    free(hb);

    /* Buckets: several allreduces in flight at once, waited out of order. */
    enum { NB = 5 };
    float *bk[NB];
    bg_tp_coll_t *c[NB];
    for (int b = 0; b < NB; b++) {
        size_t m = 3000 + 777 * (size_t)b;
        bk[b] = malloc(m * sizeof(float));
        for (size_t i = 0; i < m; i++) bk[b][i] = (float)(me + 1) * (float)(b + 1);
        CHECK_OK(bg_tp_allreduce_start(g, bk[b], m, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c[b]));
    }
    for (int b = NB - 1; b >= 0; b--) {
        CHECK_OK(bg_tp_coll_wait(c[b], 30));
        float want = (float)(world * (world + 1) / 2) * (float)(b + 1);
        size_t m = 3000 + 777 * (size_t)b, badi = 0;
        for (size_t i = 0; i < m; i++) badi += bk[b][i] != want;
        CHECK_MSG(badi == 0, "bucket %d: %zu wrong elements", b, badi);
        free(bk[b]);
    }

    /* Broadcast from every root, sizes that split into segments. */
    for (int root = 0; root < world; root++) {
        size_t len = root % 2 ? 3 * (1 << 20) + 17 : 1001;
        unsigned char *buf = malloc(len), *want = malloc(len);
        tph_fill(want, len, 500 + (uint64_t)root);
        if (me == root) memcpy(buf, want, len);
        else memset(buf, 0, len);
        CHECK_OK(bg_tp_bcast(g, buf, len, root, BG_TP_MEM_HOST, 30));
        CHECK_MSG(!memcmp(buf, want, len), "broadcast from %d corrupted", root);
        free(buf), free(want);
    }
    CHECK_OK(bg_tp_barrier(g, 30));

    /* A sub-group in a rotated ring order (not every rank is a member). */
    if (world >= 3) {
        int sub[3] = {world - 1, 0, 1}, in = me == world - 1 || me <= 1;
        if (in) {
            bg_tp_group_t *sg = NULL;
            CHECK_OK(bg_tp_group_create(tp, sub, 3, &sg));
            float v[7];
            for (int i = 0; i < 7; i++) v[i] = (float)me + 0.25f * (float)i;
            CHECK_OK(bg_tp_allreduce(sg, v, 7, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 30));
            for (int i = 0; i < 7; i++)
                CHECK(v[i] == (float)(world - 1 + 0 + 1) + 0.75f * (float)i);
            CHECK_OK(bg_tp_barrier(sg, 30));
            bg_tp_group_destroy(sg);
        }
        if (!in) {
            bg_tp_group_t *sg = NULL;
            CHECK(bg_tp_group_create(tp, sub, 3, &sg) == BG_ERR_INVALID);
        }
    }
    CHECK_OK(bg_tp_barrier(g, 30));
    bg_tp_group_destroy(g);
    return tph_leave(tp, "coll");
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank")) return role_coll();
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    int bad = 0;
    for (int n = 2; n <= 5; n++) bad += tph_run(self, "coll", n, NULL, 90);
    bg_test_failures += bad;
    return bg_test_finish("test_tp_coll");
}
