/*
 * partition/placement.c -- hwloc topology discovery and rank placement
 * (partition/placement.h). Reads the machine; changes nothing but the
 * calling process's binding when bg_place_bind is asked to. Must not
 * launch or contact other ranks.
 */
#include "partition/placement.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(BG_HAVE_CUDA) && defined(__has_include)
#if __has_include(<hwloc/cudart.h>)
#include <cuda_runtime_api.h>
#include <hwloc/cudart.h>
#define BG_PLACE_CUDART 1
#endif
#endif

#define BG_TOPO_MAX_DEV 64

struct bg_topo {
    hwloc_topology_t topo;
    int n_gpus, n_nics;
    char gpu_name[BG_TOPO_MAX_DEV][32];
    hwloc_bitmap_t gpu_set[BG_TOPO_MAX_DEV]; /* cores near each GPU */
    char nic_name[BG_TOPO_MAX_DEV][32];
    hwloc_bitmap_t nic_set[BG_TOPO_MAX_DEV];
    bool nic_fabric[BG_TOPO_MAX_DEV];         /* InfiniBand/RoCE verbs device */
};

void bg_topo_free(bg_topo_t *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_gpus; i++) hwloc_bitmap_free(t->gpu_set[i]);
    for (int i = 0; i < t->n_nics; i++) hwloc_bitmap_free(t->nic_set[i]);
    if (t->topo) hwloc_topology_destroy(t->topo);
    free(t);
}

/* cpuset of the closest non-I/O ancestor: the cores "near" a device */
static hwloc_bitmap_t near_set(hwloc_topology_t topo, hwloc_obj_t o)
{
    hwloc_obj_t a = hwloc_get_non_io_ancestor_obj(topo, o);
    return hwloc_bitmap_dup(a && a->cpuset ? a->cpuset : hwloc_topology_get_topology_cpuset(topo));
}

static void find_nics(bg_topo_t *t)
{
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_osdev(t->topo, o)) && t->n_nics < BG_TOPO_MAX_DEV) {
        if (o->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK &&
            o->attr->osdev.type != HWLOC_OBJ_OSDEV_OPENFABRICS)
            continue;
        int i = t->n_nics++;
        snprintf(t->nic_name[i], sizeof(t->nic_name[i]), "%s", o->name ? o->name : "nic");
        t->nic_set[i] = near_set(t->topo, o);
        t->nic_fabric[i] = o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS;
    }
}

/* GPUs through cudart (the Debian hwloc has no CUDA plugin). A machine
 * without a driver or device reports none; that is not an error. */
static void find_gpus(bg_topo_t *t)
{
#ifdef BG_PLACE_CUDART
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    for (int d = 0; d < n && t->n_gpus < BG_TOPO_MAX_DEV; d++) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (!set) return;
        if (hwloc_cudart_get_device_cpuset(t->topo, d, set) != 0 || hwloc_bitmap_iszero(set))
            hwloc_bitmap_copy(set, hwloc_topology_get_topology_cpuset(t->topo));
        /* locality beyond the machine (sysfs says "all") is clamped to it */
        hwloc_bitmap_and(set, set, hwloc_topology_get_topology_cpuset(t->topo));
        int i = t->n_gpus++;
        snprintf(t->gpu_name[i], sizeof(t->gpu_name[i]), "cuda%d", d);
        t->gpu_set[i] = set;
    }
#else
    (void)t;
#endif
}

static bg_status_t topo_finish(bg_topo_t *t, bool devices, bg_topo_t **out)
{
    if (hwloc_topology_load(t->topo) != 0) {
        int e = errno;
        bg_topo_free(t);
        return bg_errorf(BG_ERR_UNSUPPORTED, "hwloc cannot load the topology: %s", strerror(e));
    }
    if (devices) {
        find_gpus(t);
        find_nics(t);
    }
    *out = t;
    return BG_OK;
}

bg_status_t bg_topo_load(bg_topo_t **out)
{
    bg_topo_t *t = calloc(1, sizeof(*t));
    if (!t) return bg_errorf(BG_ERR_NOMEM, "topology: out of memory");
    if (hwloc_topology_init(&t->topo) != 0) {
        free(t);
        return bg_errorf(BG_ERR_UNSUPPORTED, "hwloc_topology_init failed");
    }
    hwloc_topology_set_io_types_filter(t->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    return topo_finish(t, true, out);
}

bg_status_t bg_topo_load_synthetic(const char *desc, bg_topo_t **out)
{
    bg_topo_t *t = calloc(1, sizeof(*t));
    if (!t) return bg_errorf(BG_ERR_NOMEM, "topology: out of memory");
    if (hwloc_topology_init(&t->topo) != 0) {
        free(t);
        return bg_errorf(BG_ERR_UNSUPPORTED, "hwloc_topology_init failed");
    }
    if (hwloc_topology_set_synthetic(t->topo, desc) != 0) {
        bg_topo_free(t);
        return bg_errorf(BG_ERR_INVALID, "bad synthetic topology '%s'", desc);
    }
    return topo_finish(t, false, out);
}

void bg_topo_summary(const bg_topo_t *t, bg_topo_summary_t *out)
{
    out->cores = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_CORE);
    out->pus = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_PU);
    out->numa_nodes = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_NUMANODE);
    out->gpus = t->n_gpus;
    out->nics = t->n_nics;
    if (out->cores <= 0) out->cores = out->pus; /* some VMs expose PUs only */
}

const char *bg_topo_gpu_name(const bg_topo_t *t, int i)
{
    return i >= 0 && i < t->n_gpus ? t->gpu_name[i] : NULL;
}

const char *bg_topo_nic_name(const bg_topo_t *t, int i)
{
    return i >= 0 && i < t->n_nics ? t->nic_name[i] : NULL;
}

/* The cores (or PUs when no cores are reported) inside `set`, in logical
 * order; returns how many were stored (at most cap). */
static int cores_in(hwloc_topology_t topo, hwloc_const_bitmap_t set, hwloc_obj_t *v, int cap)
{
    hwloc_obj_type_t ty = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                                            : HWLOC_OBJ_PU;
    int n = 0;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(topo, ty, o)) && n < cap)
        if (o->cpuset && hwloc_bitmap_isincluded(o->cpuset, set)) v[n++] = o;
    return n;
}

/* Give member k of n an equal contiguous share of `set`'s cores. */
static void share_of(const bg_topo_t *t, hwloc_const_bitmap_t set, int k, int n, bg_rank_place_t *r)
{
    hwloc_obj_t cores[1024];
    int c = cores_in(t->topo, set, cores, 1024);
    hwloc_bitmap_t mine = hwloc_bitmap_alloc();
    r->n_cores = 0;
    r->shared = false;
    if (c == 0) {
        hwloc_bitmap_copy(mine, set);
    } else if (n <= c) {
        int lo = (int)((long)k * c / n), hi = (int)((long)(k + 1) * c / n);
        for (int i = lo; i < hi; i++) hwloc_bitmap_or(mine, mine, cores[i]->cpuset);
        r->n_cores = hi - lo;
    } else {
        hwloc_bitmap_or(mine, mine, cores[k % c]->cpuset);
        r->n_cores = 1;
        r->shared = true;
    }
    hwloc_bitmap_list_snprintf(r->cpuset, sizeof(r->cpuset), mine);
    hwloc_obj_t numa = hwloc_get_next_obj_covering_cpuset_by_type(t->topo, mine, HWLOC_OBJ_NUMANODE, NULL);
    if (!numa) {
        int first = hwloc_bitmap_first(mine);
        hwloc_obj_t pu = first >= 0 ? hwloc_get_pu_obj_by_os_index(t->topo, (unsigned)first) : NULL;
        hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
        if (pu && nodes) {
            hwloc_cpuset_to_nodeset(t->topo, pu->cpuset, nodes);
            int ni = hwloc_bitmap_first(nodes);
            numa = ni >= 0 ? hwloc_get_numanode_obj_by_os_index(t->topo, (unsigned)ni) : NULL;
        }
        hwloc_bitmap_free(nodes);
    }
    r->numa = numa ? (int)numa->logical_index : -1;
    /* nearest NIC: a fabric device near these cores, else any near one, else the first */
    int best = -1, score = -1;
    for (int i = 0; i < t->n_nics; i++) {
        int s = (hwloc_bitmap_intersects(t->nic_set[i], mine) ? 2 : 0) + (t->nic_fabric[i] ? 1 : 0);
        if (s > score) {
            score = s;
            best = i;
        }
    }
    snprintf(r->nic, sizeof(r->nic), "%s", best >= 0 ? t->nic_name[best] : "");
    hwloc_bitmap_free(mine);
}

bg_status_t bg_place_ranks(const bg_topo_t *t, const bg_place_opts_t *o, bg_rank_place_t *out)
{
    if (o->stages < 1 || o->dp < 1 || o->nodes < 1)
        return bg_errorf(BG_ERR_INVALID, "placement: stages, dp and nodes must be >= 1");
    int n = o->stages * o->dp;
    if (o->nodes > n)
        return bg_errorf(BG_ERR_INVALID, "placement: %d nodes for %d ranks", o->nodes, n);
    int per = (n + o->nodes - 1) / o->nodes;
    bool gpus = o->use_gpus && t->n_gpus > 0;
    hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(t->topo);
    for (int rank = 0; rank < n; rank++) {
        bg_rank_place_t *r = &out[rank];
        memset(r, 0, sizeof(*r));
        r->rank = rank;
        r->stage = rank % o->stages;
        r->dp = rank / o->stages;
        r->node = rank / per;
        r->local = rank % per;
        int on_node = rank / per == n / per ? n - (n / per) * per : per;
        if (gpus) {
            r->gpu = r->local % t->n_gpus;
            /* ranks of this node that share this GPU's locality set */
            int k = 0, m = 0;
            for (int l = 0; l < on_node; l++) {
                if (!hwloc_bitmap_isequal(t->gpu_set[l % t->n_gpus], t->gpu_set[r->gpu])) continue;
                if (l < r->local) k++;
                m++;
            }
            share_of(t, t->gpu_set[r->gpu], k, m, r);
        } else {
            r->gpu = -1;
            share_of(t, all, r->local, on_node, r);
        }
    }
    return BG_OK;
}

bg_status_t bg_place_bind(const bg_topo_t *t, const char *cpuset)
{
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) return bg_errorf(BG_ERR_NOMEM, "bind: out of memory");
    bg_status_t st = BG_OK;
    if (hwloc_bitmap_list_sscanf(set, cpuset) != 0 || hwloc_bitmap_iszero(set)) {
        st = bg_errorf(BG_ERR_INVALID, "bind: '%s' is not a cpu list", cpuset);
        goto err_free;
    }
    if (hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_PROCESS) != 0)
        st = bg_errorf(BG_ERR_UNSUPPORTED, "bind to cpus %s: %s", cpuset, strerror(errno));
err_free:
    hwloc_bitmap_free(set);
    return st;
}
