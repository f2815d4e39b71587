/*
 * tests/transport/test_tp_direct.c -- the same-host direct path of
 * reduce-scatter / all-gather / allreduce (process_vm_readv) against the
 * ring, over 2, 3 and 4 local ranks:
 *   - bit for bit equal to the ring (forced with BRIGADE_TP_CMA=0) for f32
 *     and bf16, SUM and AVG, counts not divisible by n and below n, and
 *     sizes on both sides of BRIGADE_TP_DIRECT_MIN; reduce-scatter then
 *     all-gather equals allreduce;
 *   - several direct collectives of one group in flight, waited out of order;
 *   - a member's buffer is reusable the moment its wait returns: the first
 *     member scribbles over it at once while the others progress slowly,
 *     and their results must still be the ring's;
 *   - a group whose probe fails (BRIGADE_TP_CMA_DENY) falls back to the
 *     ring on every member with the same bits;
 *   - a member killed mid-collective fails the survivors naming it, fast;
 *   - a collective waiting for a probe that failed fails with it, fast.
 * Knobs are switched with setenv between collectives, in the same order on
 * every rank (they are read at every start and must agree).
 *
 * Must NOT: compare with a tolerance (the chain order makes bits exact), or
 * pass without the direct path having run (the group's probe is checked).
 */
#include <signal.h>

#include "tp_harness.h"
#include "transport/coll_int.h" /* the group's probe verdict */

static const size_t counts[] = {1, 2, 3, 5, 7, 4095, 4096, 4097, 100003, 262145, 1000003};
#define NCOUNTS (sizeof(counts) / sizeof(counts[0]))

static float input(int rank, size_t i, int salt)
{
    uint64_t s = (uint64_t)rank * 7000003u + i * 104729u + (uint64_t)salt * 31u + 11;
    return bg_test_uniform(&s, -1.0f, 1.0f) * (1.0f + (float)(i % 5));
}

static void fill(void *buf, int bf16, int rank, size_t count, int salt)
{
    for (size_t i = 0; i < count; i++) {
        if (bf16) ((uint16_t *)buf)[i] = tph_to_bf16(input(rank, i, salt));
        else ((float *)buf)[i] = input(rank, i, salt);
    }
}

/* direct 1: every size takes the direct path; 0: the ring (or small
 * exchange); -1: the default threshold with the path allowed. */
static void path(int direct, const char *min)
{
    setenv("BRIGADE_TP_CMA", direct ? "1" : "0", 1);
    if (direct > 0) setenv("BRIGADE_TP_DIRECT_MIN", "1", 1);
    else if (min) setenv("BRIGADE_TP_DIRECT_MIN", min, 1);
    else unsetenv("BRIGADE_TP_DIRECT_MIN");
}

/* The ring's allreduce and reduce-scatter of this rank's input. */
static void reference(bg_tp_group_t *g, int bf16, bg_tp_op_t op, size_t cnt, int salt, char *ar,
                      char *rs)
{
    bg_tp_dtype_t dt = bf16 ? BG_TP_BF16 : BG_TP_F32;
    int me = bg_tp_rank(g->tp);
    path(0, NULL);
    fill(ar, bf16, me, cnt, salt);
    fill(rs, bf16, me, cnt, salt);
    CHECK_OK(bg_tp_allreduce(g, ar, cnt, dt, op, BG_TP_MEM_HOST, 30));
    CHECK_OK(bg_tp_reduce_scatter(g, rs, cnt, dt, op, BG_TP_MEM_HOST, 30));
}

/* One (dtype, op, count) on the direct path (or the threshold `min`)
 * against the ring: allreduce, reduce-scatter, all-gather. */
static void one_case(bg_tp_group_t *g, int bf16, bg_tp_op_t op, size_t cnt, const char *min)
{
    int n = g->n, me = g->me;
    bg_tp_dtype_t dt = bf16 ? BG_TP_BF16 : BG_TP_F32;
    size_t esz = bf16 ? 2 : 4, lo = bg_tp_shard_offset(cnt, n, me) * esz;
    size_t mine = bg_tp_shard_offset(cnt, n, me + 1) * esz - lo;
    char *ar0 = malloc(cnt * esz), *rs0 = malloc(cnt * esz);
    char *ar = malloc(cnt * esz), *rs = malloc(cnt * esz);
    reference(g, bf16, op, cnt, 0, ar0, rs0);
    path(min ? -1 : 1, min);
    fill(ar, bf16, bg_tp_rank(g->tp), cnt, 0);
    fill(rs, bf16, bg_tp_rank(g->tp), cnt, 0);
    CHECK_OK(bg_tp_allreduce(g, ar, cnt, dt, op, BG_TP_MEM_HOST, 30));
    CHECK_MSG(!memcmp(ar, ar0, cnt * esz), "allreduce %s op %d count %zu (min %s): not the ring's bits",
              bf16 ? "bf16" : "f32", (int)op, cnt, min ? min : "1");
    CHECK_OK(bg_tp_reduce_scatter(g, rs, cnt, dt, op, BG_TP_MEM_HOST, 30));
    CHECK_MSG(!memcmp(rs + lo, rs0 + lo, mine), "reduce-scatter %s op %d count %zu: not the ring's",
              bf16 ? "bf16" : "f32", (int)op, cnt);
    memset(rs, 0x7f, lo); /* not mine: the all-gather must overwrite it */
    CHECK_OK(bg_tp_allgather(g, rs, cnt, dt, BG_TP_MEM_HOST, 30));
    CHECK_MSG(!memcmp(rs, ar0, cnt * esz), "reduce-scatter + all-gather %s op %d count %zu: not "
              "the ring allreduce's bits", bf16 ? "bf16" : "f32", (int)op, cnt);
    free(ar0), free(rs0), free(ar), free(rs);
}

/* Several direct collectives in flight at once, waited newest first. */
static void concurrent(bg_tp_group_t *g)
{
    enum { K = 4 };
    static const size_t cnt[K] = {300001, 77777, 262147, 5};
    static const bg_tp_coll_kind_t kind[K] = {COLL_ALLREDUCE, COLL_REDUCE_SCATTER, COLL_ALLGATHER,
                                              COLL_ALLREDUCE};
    char *want[K], *rs[K], *buf[K];
    bg_tp_coll_t *c[K];
    for (int k = 0; k < K; k++) {
        want[k] = malloc(cnt[k] * 4), rs[k] = malloc(cnt[k] * 4), buf[k] = malloc(cnt[k] * 4);
        reference(g, 0, BG_TP_SUM, cnt[k], k + 1, want[k], rs[k]);
    }
    path(1, NULL);
    for (int k = 0; k < K; k++) {
        bg_tp_coll_kind_t kd = kind[k];
        if (kd == COLL_ALLGATHER) memcpy(buf[k], rs[k], cnt[k] * 4);
        else fill(buf[k], 0, bg_tp_rank(g->tp), cnt[k], k + 1);
        CHECK_OK(kd == COLL_ALLREDUCE
                     ? bg_tp_allreduce_start(g, buf[k], cnt[k], BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c[k])
                 : kd == COLL_REDUCE_SCATTER
                     ? bg_tp_reduce_scatter_start(g, buf[k], cnt[k], BG_TP_F32, BG_TP_SUM,
                                                  BG_TP_MEM_HOST, &c[k])
                     : bg_tp_allgather_start(g, buf[k], cnt[k], BG_TP_F32, BG_TP_MEM_HOST, &c[k]));
    }
    for (int k = K - 1; k >= 0; k--) {
        CHECK_OK(bg_tp_coll_wait(c[k], 30));
        size_t lo = bg_tp_shard_offset(cnt[k], g->n, g->me) * 4;
        size_t len = kind[k] == COLL_REDUCE_SCATTER
                         ? bg_tp_shard_offset(cnt[k], g->n, g->me + 1) * 4 - lo
                         : cnt[k] * 4;
        if (kind[k] != COLL_REDUCE_SCATTER) lo = 0;
        CHECK_MSG(!memcmp(buf[k] + lo, want[k] + lo, len), "concurrent collective %d (count %zu) "
                  "differs from the ring", k, cnt[k]);
        free(want[k]), free(rs[k]), free(buf[k]);
    }
}

/* Member 0 scribbles over its buffer the moment its wait returns; the
 * others drive their collective slowly, so any read of member 0's buffer
 * after its return would fetch the scribble. */
static void reuse_at_once(bg_tp_group_t *g)
{
    size_t cnt = 1 << 20;
    char *want = malloc(cnt * 4), *rs = malloc(cnt * 4), *buf = malloc(cnt * 4);
    for (int kind = 0; kind < 3; kind++) {
        reference(g, 0, BG_TP_AVG, cnt, 7 + kind, want, rs);
        path(1, NULL);
        bg_tp_coll_t *c = NULL;
        if (kind == 2) memcpy(buf, rs, cnt * 4);
        else fill(buf, 0, bg_tp_rank(g->tp), cnt, 7 + kind);
        CHECK_OK(kind == 0   ? bg_tp_allreduce_start(g, buf, cnt, BG_TP_F32, BG_TP_AVG, BG_TP_MEM_HOST, &c)
                 : kind == 1 ? bg_tp_reduce_scatter_start(g, buf, cnt, BG_TP_F32, BG_TP_AVG,
                                                          BG_TP_MEM_HOST, &c)
                             : bg_tp_allgather_start(g, buf, cnt, BG_TP_F32, BG_TP_MEM_HOST, &c));
        if (g->me == 0) {
            CHECK_OK(bg_tp_coll_wait(c, 30));
            memset(buf, 0xff, cnt * 4); /* NaNs wherever a late reader looks */
        } else {
            int done = 0;
            double end = bg_now_s() + 30;
            while (!done && bg_now_s() < end) {
                CHECK_OK(bg_tp_coll_test(c, &done));
                if (!done) usleep(300);
            }
            CHECK_MSG(done, "slow member: collective %d never finished", kind);
            size_t lo = kind == 1 ? bg_tp_shard_offset(cnt, g->n, g->me) * 4 : 0;
            size_t len = kind == 1 ? bg_tp_shard_offset(cnt, g->n, g->me + 1) * 4 - lo : cnt * 4;
            CHECK_MSG(!memcmp(buf + lo, want + lo, len), "kind %d: member %d read member 0's "
                      "buffer after member 0 had it back", kind, g->me);
        }
        CHECK_OK(bg_tp_barrier(g, 30));
    }
    free(want), free(rs), free(buf);
}

static bg_tp_group_t *world_group(bg_tp_t *tp)
{
    int world = bg_tp_world_size(tp), ranks[TPH_MAX];
    for (int i = 0; i < world; i++) ranks[i] = i;
    bg_tp_group_t *g = NULL;
    CHECK_OK(bg_tp_group_create(tp, ranks, world, &g));
    return g;
}

static int role_direct(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    bg_tp_group_t *g = world_group(tp);
    if (!g) return 1;
    int denied = getenv("BRIGADE_TP_CMA_DENY") != NULL;
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int op = 0; op < 2; op++)
            for (size_t k = 0; k < NCOUNTS; k++)
                if (!denied || k % 4 == 0) one_case(g, bf16, (bg_tp_op_t)op, counts[k], NULL);
    CHECK_MSG(g->cma == (denied ? -1 : 1), "group's direct path verdict %d", g->cma);
    /* Around a threshold: 16 KiB = 4096 f32 / 8192 bf16 elements. */
    for (size_t cnt = 4095; cnt <= 4097; cnt++) one_case(g, 0, BG_TP_SUM, cnt, "16384");
    for (size_t cnt = 8191; cnt <= 8193; cnt++) one_case(g, 1, BG_TP_AVG, cnt, "16384");
    concurrent(g);
    reuse_at_once(g);
    /* A second group probes on its own (and its first collectives overlap). */
    bg_tp_group_t *g2 = world_group(tp);
    concurrent(g2);
    CHECK_MSG(g2->cma == (denied ? -1 : 1), "second group's verdict %d", g2->cma);
    bg_tp_group_destroy(g2);
    CHECK_OK(bg_tp_barrier(g, 30));
    bg_tp_group_destroy(g);
    return tph_leave(tp, "direct");
}

/* The last rank dies right after starting a direct allreduce; survivors
 * must fail naming it within 5 s, and leave without hanging. */
static int role_death(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    bg_tp_group_t *g = world_group(tp);
    int world = bg_tp_world_size(tp), victim = world - 1;
    size_t cnt = 4 << 20;
    float *x = malloc(cnt * 4);
    fill(x, 0, bg_tp_rank(tp), cnt, 3);
    path(1, NULL);
    CHECK_OK(bg_tp_allreduce(g, x, 16, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 30)); /* probed */
    /* Nobody may still wait for the victim's last notices of that one. */
    CHECK_OK(bg_tp_barrier(g, 30));
    bg_tp_coll_t *c = NULL;
    CHECK_OK(bg_tp_allreduce_start(g, x, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c));
    if (bg_tp_rank(tp) == victim) {
        for (int i = 0; i < 20; i++) bg_tp_progress(tp);
        raise(SIGKILL);
    }
    double t0 = bg_now_s();
    bg_status_t st = bg_tp_coll_wait(c, 10);
    char name[32];
    snprintf(name, sizeof(name), "rank %d", victim);
    /* Either the victim is named, or a survivor that gave up on it first:
     * it said so, or its buffer went back (a read of it fails: EFAULT). */
    const char *e = bg_last_error();
    CHECK_MSG((st == BG_ERR_PEER || st == BG_ERR_IO) &&
                  (strstr(e, name) || strstr(e, "reading") || strstr(e, "failed its part")),
              "rank %d: expected a failure naming %s, got %s: %s", bg_tp_rank(tp), name,
              bg_status_str(st), bg_last_error());
    CHECK_MSG(bg_now_s() - t0 < 5.0, "detection took %.2f s", bg_now_s() - t0);
    fprintf(stderr, "rank %d: detected in %.3f s: %s\n", bg_tp_rank(tp), bg_now_s() - t0,
            bg_last_error());
    free(x);
    bg_tp_group_destroy(g);
    double t1 = bg_now_s();
    bg_tp_destroy(tp);
    CHECK_MSG(bg_now_s() - t1 < 5.0, "destroy took %.2f s", bg_now_s() - t1);
    return bg_test_failures ? 1 : 0;
}

/* The group's first direct collective fails before its probe settles
 * (member 0 starts an allreduce, the others a reduce-scatter): a second
 * collective started alongside it, which waits for that probe, must fail
 * at once too, not at its deadline. */
static int role_probefail(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    bg_tp_group_t *g = world_group(tp);
    if (!g) return 1;
    size_t cnt = 1 << 18;
    float *a = calloc(cnt, 4), *b = calloc(cnt, 4);
    bg_tp_coll_t *c1 = NULL, *c2 = NULL;
    path(1, NULL);
    if (g->me == 0)
        CHECK_OK(bg_tp_allreduce_start(g, a, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c1));
    else
        CHECK_OK(bg_tp_reduce_scatter_start(g, a, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c1));
    CHECK_OK(bg_tp_allreduce_start(g, b, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, &c2));
    double t0 = bg_now_s();
    bg_status_t s1 = c1 ? bg_tp_coll_wait(c1, 20) : BG_OK;
    CHECK_MSG(s1 == BG_ERR_INVALID && strstr(bg_last_error(), "another collective kind"),
              "rank %d: the mismatched first collective: %s: %s", bg_tp_rank(tp),
              bg_status_str(s1), bg_last_error());
    bg_status_t s2 = c2 ? bg_tp_coll_wait(c2, 20) : BG_OK;
    CHECK_MSG(s2 != BG_OK && strstr(bg_last_error(), "first same-host collective"),
              "rank %d: the collective alongside it: %s: %s", bg_tp_rank(tp), bg_status_str(s2),
              bg_last_error());
    CHECK_MSG(bg_now_s() - t0 < 5.0, "rank %d: failing took %.2f s", bg_tp_rank(tp),
              bg_now_s() - t0);
    free(a), free(b);
    bg_tp_group_destroy(g);
    bg_tp_destroy(tp);
    return bg_test_failures ? 1 : 0;
}

/* Survivors exit 0, the victim dies by SIGKILL. */
static int death_case(const char *self, int n)
{
    bg_tp_server_t *srv;
    if (bg_tp_server_create("127.0.0.1", 0, n, tph_auth(), &srv) != BG_OK) return 1;
    tph_job_t job;
    tph_spawn(&job, self, "death", n, n, bg_tp_server_port(srv), 1, NULL);
    tph_wait(&job, 60);
    int bad = 0;
    for (int r = 0; r < n; r++) {
        int st = job.status[r];
        int ok = r == n - 1 ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL
                            : WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok) fprintf(stderr, "death: rank %d ended wrongly (status 0x%x)\n", r, st);
        bad += !ok;
    }
    bg_tp_server_destroy(srv);
    printf("  %-28s %d ranks: %s\n", "member killed mid-collective", n, bad ? "FAILED" : "ok");
    fflush(stdout);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank"))
        return !strcmp(argv[2], "death")       ? role_death()
               : !strcmp(argv[2], "probefail") ? role_probefail()
                                                : role_direct();
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    const char *deny[] = {"BRIGADE_TP_CMA_DENY=1", NULL};
    int bad = 0;
    for (int n = 2; n <= 4; n++) bad += tph_run(self, "direct", n, NULL, 120);
    bad += tph_run(self, "direct", 3, deny, 120);
    bad += death_case(self, 3);
    bad += tph_run(self, "probefail", 3, NULL, 60);
    bg_test_failures += bad;
    return bg_test_finish("test_tp_direct");
}
