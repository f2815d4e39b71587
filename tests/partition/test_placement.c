/*
 * tests/partition/test_placement.c -- hwloc placement: this machine's
 * topology loads and reports (no GPU here is fine: none reported); ranks
 * get distinct cpusets when cores allow; pipeline neighbours share a node;
 * synthetic topologies check NUMA-aware splitting and oversubscription;
 * binding the test process to a rank's cpuset works.
 */
#include <string.h>

#include <hwloc.h>

#include "partition/placement.h"
#include "test_util.h"

/* Sets given as hwloc lists must not overlap. */
static bool disjoint(const char *a, const char *b)
{
    hwloc_bitmap_t x = hwloc_bitmap_alloc(), y = hwloc_bitmap_alloc();
    hwloc_bitmap_list_sscanf(x, a);
    hwloc_bitmap_list_sscanf(y, b);
    bool r = !hwloc_bitmap_intersects(x, y);
    hwloc_bitmap_free(x);
    hwloc_bitmap_free(y);
    return r;
}

static void test_this_machine(void)
{
    bg_topo_t *t = NULL;
    CHECK_OK(bg_topo_load(&t));
    if (!t) return;
    bg_topo_summary_t s;
    bg_topo_summary(t, &s);
    printf("this machine: %d cores, %d PUs, %d NUMA nodes, %d GPUs, %d NICs\n", s.cores, s.pus,
           s.numa_nodes, s.gpus, s.nics);
    for (int i = 0; i < s.gpus; i++) printf("  gpu %d: %s\n", i, bg_topo_gpu_name(t, i));
    for (int i = 0; i < s.nics; i++) printf("  nic %d: %s\n", i, bg_topo_nic_name(t, i));
    CHECK(s.cores >= 1 && s.pus >= s.cores);
    CHECK(bg_topo_gpu_name(t, s.gpus) == NULL);
    int S = s.cores >= 2 ? 2 : 1;
    bg_rank_place_t r[2];
    bg_place_opts_t o = {S, 1, 1, true};
    CHECK_OK(bg_place_ranks(t, &o, r));
    for (int i = 0; i < S; i++) {
        printf("  rank %d: stage %d dp %d node %d gpu %d numa %d cpus %s nic '%s'\n", r[i].rank,
               r[i].stage, r[i].dp, r[i].node, r[i].gpu, r[i].numa, r[i].cpuset, r[i].nic);
        CHECK(r[i].cpuset[0] != 0 && r[i].n_cores >= 1 && !r[i].shared);
        if (s.gpus == 0) CHECK(r[i].gpu == -1);
    }
    if (S == 2 && s.gpus == 0) CHECK_MSG(disjoint(r[0].cpuset, r[1].cpuset), "%s vs %s", r[0].cpuset, r[1].cpuset);
    /* bind ourselves to rank 0's cpuset */
    bg_status_t st = bg_place_bind(t, r[0].cpuset);
    CHECK_MSG(st == BG_OK || st == BG_ERR_UNSUPPORTED, "bind: %s", bg_last_error());
    CHECK(bg_place_bind(t, "not-a-list") == BG_ERR_INVALID);
    bg_topo_free(t);
}

static void test_synthetic(void)
{
    bg_topo_t *t = NULL;
    CHECK_OK(bg_topo_load_synthetic("pack:1 numa:2 core:4 pu:2", &t));
    if (!t) return;
    bg_topo_summary_t s;
    bg_topo_summary(t, &s);
    CHECK(s.cores == 8 && s.pus == 16 && s.numa_nodes == 2 && s.gpus == 0);
    /* 4 ranks on 8 cores: 2 cores each, NUMA-local, disjoint */
    bg_rank_place_t r[64];
    bg_place_opts_t o = {4, 1, 1, false};
    CHECK_OK(bg_place_ranks(t, &o, r));
    for (int i = 0; i < 4; i++) {
        CHECK(r[i].n_cores == 2 && !r[i].shared);
        CHECK_MSG(r[i].numa == i / 2, "rank %d on numa %d", i, r[i].numa);
        for (int j = 0; j < i; j++) CHECK(disjoint(r[i].cpuset, r[j].cpuset));
    }
    CHECK(!strcmp(r[0].cpuset, "0-3"));
    /* 2 stages x 4 dp over 2 nodes: ranks 0..3 on node 0; pipeline
     * neighbours (same dp, stages 0 and 1) always share a node */
    bg_place_opts_t o2 = {2, 4, 2, false};
    CHECK_OK(bg_place_ranks(t, &o2, r));
    for (int i = 0; i < 8; i++) {
        CHECK(r[i].stage == i % 2 && r[i].dp == i / 2 && r[i].node == i / 4 && r[i].local == i % 4);
        if (r[i].stage == 1) CHECK(r[i].node == r[i - 1].node);
    }
    /* oversubscribed: 12 ranks on 8 cores share, one core each */
    bg_place_opts_t o3 = {12, 1, 1, false};
    CHECK_OK(bg_place_ranks(t, &o3, r));
    for (int i = 0; i < 12; i++) CHECK(r[i].shared && r[i].n_cores == 1);
    CHECK(!strcmp(r[0].cpuset, r[8].cpuset));
    bg_place_opts_t bad = {0, 1, 1, false};
    CHECK(bg_place_ranks(t, &bad, r) == BG_ERR_INVALID);
    bg_place_opts_t bad2 = {2, 1, 3, false};
    CHECK(bg_place_ranks(t, &bad2, r) == BG_ERR_INVALID);
    bg_topo_free(t);
    CHECK(bg_topo_load_synthetic("core:banana", &t) == BG_ERR_INVALID);
}

int main(void)
{
    test_this_machine();
    test_synthetic();
    return bg_test_finish("test_placement");
}
