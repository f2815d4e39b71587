/*
 * partition/placement.h -- where ranks run on a node: hwloc topology
 * (cores, NUMA nodes, GPUs, NICs), rank -> (node, GPU, cpuset, NIC), and
 * binding the calling process to its cpuset.
 *
 * Ranks are numbered rank = dp * stages + stage, so pipeline neighbours are
 * consecutive and land on one node when ranks are packed node by node;
 * data-parallel replicas of a stage then sit across nodes (the remaining
 * dimension). Every node is assumed to look like the one we can see.
 * GPUs: Debian's hwloc has no CUDA plugin, so CUDA builds ask cudart for
 * each device's PCI locality (hwloc/cudart.h); without CUDA there are none.
 * Must not launch processes or talk to other ranks (the engine does).
 */
#ifndef BG_PARTITION_PLACEMENT_H
#define BG_PARTITION_PLACEMENT_H

#include <stdbool.h>

#include "base/status.h"

#define BG_CPUSET_STR 256

typedef struct bg_topo bg_topo_t;

typedef struct bg_topo_summary {
    int cores, pus, numa_nodes, gpus, nics;
} bg_topo_summary_t;

/* This machine's topology, with I/O devices. BG_ERR_UNSUPPORTED if hwloc
 * cannot load it. */
bg_status_t bg_topo_load(bg_topo_t **out);
/* A synthetic topology for tests ("numa:2 core:4 pu:2"); no devices. */
bg_status_t bg_topo_load_synthetic(const char *desc, bg_topo_t **out);
void bg_topo_free(bg_topo_t *t);

void bg_topo_summary(const bg_topo_t *t, bg_topo_summary_t *out);
const char *bg_topo_gpu_name(const bg_topo_t *t, int i); /* "cuda0"; NULL if out of range */
const char *bg_topo_nic_name(const bg_topo_t *t, int i); /* "mlx5_0", "eth0" */

typedef struct bg_rank_place {
    int rank, stage, dp;
    int node;        /* node index (ranks packed node by node) */
    int local;       /* index among the node's ranks */
    int gpu;         /* local GPU index, -1 for a CPU rank */
    int numa;        /* NUMA node (logical index) of its first core, -1 unknown */
    int n_cores;     /* cores in its cpuset */
    bool shared;     /* more ranks than cores: shares its core */
    char cpuset[BG_CPUSET_STR]; /* hwloc list format, "0-3,8-11" */
    char nic[32];    /* nearest NIC, "" if none */
} bg_rank_place_t;

typedef struct bg_place_opts {
    int stages, dp;
    int nodes;       /* >= 1; ranks are packed ceil(stages*dp/nodes) per node */
    bool use_gpus;   /* one GPU per rank when the node has them */
} bg_place_opts_t;

/*
 * Place all stages*dp ranks into out[rank]. On a CPU run the node's cores
 * are split into equal contiguous (so NUMA-local) groups, distinct when
 * cores >= ranks per node; on a GPU run rank l of a node gets GPU
 * l % gpus and an equal share of the cores near that GPU.
 * BG_ERR_INVALID on a bad shape.
 */
bg_status_t bg_place_ranks(const bg_topo_t *t, const bg_place_opts_t *o, bg_rank_place_t *out);

/* Bind the calling process to `cpuset` (list format). BG_ERR_INVALID on a
 * malformed set, BG_ERR_UNSUPPORTED when the OS refuses binding. */
bg_status_t bg_place_bind(const bg_topo_t *t, const char *cpuset);

#endif
