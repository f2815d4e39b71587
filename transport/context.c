/*
 * transport/context.c -- the transport context: configuration, joining
 * (store, UCX, address exchange) and leaving, and the abort hooks through
 * which the layers above point-to-point are failed at teardown without
 * this layer naming them (their progress callbacks: request.c).
 *
 * Must NOT: call coll.c (collectives register callbacks), interpret bytes,
 * exit, or leave without the goodbye that tells the store this rank did not
 * die.
 */
#include <stdlib.h>
#include <string.h>

#ifdef BG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "transport/p2p_int.h"
#include "transport/store_int.h"

static const char *env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

int bg_tp_rank(const bg_tp_t *tp)
{
    return tp->rank;
}
double bg_tp_timeout(const bg_tp_t *tp)
{
    return tp->timeout_s;
}
int bg_tp_world_size(const bg_tp_t *tp)
{
    return tp->world;
}
bg_tp_store_t *bg_tp_store(bg_tp_t *tp)
{
    return tp->rdv.store;
}
int bg_tp_cuda_direct_supported(const bg_tp_t *tp)
{
    return tp->cuda_direct_ok;
}
bg_tp_device_path_t bg_tp_device_path(const bg_tp_t *tp)
{
    return tp->device_path;
}
int bg_tp_cuda_device(const bg_tp_t *tp)
{
    return tp->device;
}

int bg_tp_peer_same_host(const bg_tp_t *tp, int rank)
{
    if (rank == tp->rank)
        return 1;
    return rank >= 0 && rank < tp->world && tp->addrs && tp->addrs[rank].same_host;
}

int bg_tp_peer_dead(const bg_tp_t *tp, int rank, const char **why)
{
    if (rank < 0 || rank >= tp->world || !tp->peers[rank].dead)
        return 0;
    if (why)
        *why = tp->peers[rank].why;
    return 1;
}

bg_status_t bg_tp_config_from_env(bg_tp_config_t *out)
{
    bg_tp_config_t c;
    memset(&c, 0, sizeof(c));
    bg_status_t st = bg_tp_bootstrap_from_env(&c.boot);
    if (st != BG_OK)
        return st;
    c.timeout_s = atof(env_str("BRIGADE_TP_TIMEOUT", "60"));
    const char *p = env_str("BRIGADE_TP_DEVICE_PATH", "auto");
    if (!strcmp(p, "auto"))
        c.device_path = BG_TP_DEVICE_AUTO;
    else if (!strcmp(p, "direct"))
        c.device_path = BG_TP_DEVICE_DIRECT;
    else if (!strcmp(p, "staged"))
        c.device_path = BG_TP_DEVICE_STAGED;
    else
        return bg_errorf(BG_ERR_INVALID,
                         "BRIGADE_TP_DEVICE_PATH='%s' (expected auto, direct or staged)", p);
    c.chunk_bytes = (size_t)strtoull(env_str("BRIGADE_TP_CHUNK", "0"), NULL, 10);
    c.stage_depth = atoi(env_str("BRIGADE_TP_STAGE_DEPTH", "0"));
    c.device = -1;
    if (c.boot.world_size > 1 && (st = bg_tp_auth_from_env(&c.auth)) != BG_OK)
        return bg_error_prefix(st, "rank %d: ", c.boot.rank);
    *out = c;
    return BG_OK;
}

void bg_tp_fail(bg_tp_t *tp, bg_status_t status, const char *why)
{
    bg_tp_rdv_fail(&tp->rdv, status, why);
}

void bg_tp_note_progress(bg_tp_t *tp)
{
    bg_tp_store_note_progress(tp->rdv.store);
}

/* ---------------- teardown hooks of the layers above ---------------- */

bg_status_t bg_tp_abort_hook_add(bg_tp_t *tp, bg_tp_cb_fn fn, void *arg, uint64_t *id)
{
    return bg_tp_cbq_add(&tp->abort_q, fn, arg, "transport teardown", id);
}

void bg_tp_abort_hook_remove(bg_tp_t *tp, uint64_t id)
{
    bg_tp_cbq_remove(&tp->abort_q, id);
}

/* ---------------- create / destroy ---------------- */

/* The fields of a new context from the config and BRIGADE_TP_* knobs. */
static void apply_config(bg_tp_t *tp, const bg_tp_config_t *cfg)
{
    tp->rank = cfg->boot.rank;
    tp->world = cfg->boot.world_size;
    tp->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 60;
    tp->chunk = cfg->chunk_bytes ? cfg->chunk_bytes : (size_t)4 << 20;
    tp->stage_depth = cfg->stage_depth > 0 ? cfg->stage_depth : 4;
    if (tp->stage_depth > BG_TP_SLOTS_MAX)
        tp->stage_depth = BG_TP_SLOTS_MAX;
    tp->stage_host = atoi(env_str("BRIGADE_TP_STAGE_HOST", "0")) != 0;
    const char *em = env_str("BRIGADE_TP_ERR_MODE", "auto");
    tp->errmode = !strcmp(em, "none")   ? ERRMODE_NONE
                  : !strcmp(em, "peer") ? ERRMODE_PEER
                                        : ERRMODE_AUTO;
    tp->device_path = cfg->device_path;
    tp->device = cfg->device;
#ifdef BG_HAVE_CUDA
    /* -1: the device current now, so streams made later (on first use, from
     * whatever device is current then) still land where this rank works.
     * Without a usable GPU it stays -1 and the failed query's error is
     * cleared (it is ours, and would otherwise fail the next launch check). */
    if (tp->device < 0 && cudaGetDevice(&tp->device) != cudaSuccess) {
        tp->device = -1;
        cudaGetLastError();
    }
#else
    tp->device = -1;
#endif
}

/* After UCX told what it can move: AUTO becomes a concrete path. */
static bg_status_t choose_device_path(bg_tp_t *tp)
{
    if (tp->device_path == BG_TP_DEVICE_AUTO)
        tp->device_path = tp->cuda_direct_ok ? BG_TP_DEVICE_DIRECT : BG_TP_DEVICE_STAGED;
    if (tp->device_path == BG_TP_DEVICE_DIRECT && !tp->cuda_direct_ok)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "rank %d: direct device path forced but this UCX cannot move CUDA memory "
                         "(ucp_context_query memory types lack CUDA); use "
                         "BRIGADE_TP_DEVICE_PATH=staged",
                         tp->rank);
    return BG_OK;
}

bg_status_t bg_tp_create(const bg_tp_config_t *cfg, bg_tp_t **out)
{
    const bg_tp_bootstrap_t *b = &cfg->boot;
    if (b->world_size < 1 || b->rank < 0 || b->rank >= b->world_size || b->world_size > 65535)
        return bg_errorf(BG_ERR_INVALID, "transport: rank %d / world size %d out of range", b->rank,
                         b->world_size);
    bg_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return bg_errorf(BG_ERR_NOMEM, "transport: out of memory");
    apply_config(tp, cfg);
    bg_status_t st;
    tp->peers = calloc((size_t)tp->world, sizeof(*tp->peers));
    if (!tp->peers) {
        st = bg_errorf(BG_ERR_NOMEM, "transport: out of memory for %d peers", tp->world);
        goto err_tp;
    }
    for (int r = 0; r < tp->world; r++)
        tp->peers[r].tp = tp;
    st = bg_tp_rdv_join(&tp->rdv, cfg, tp->timeout_s);
    if (st != BG_OK)
        goto err_peers;
    bg_tp_ucx_install_log_filter();
    st = bg_tp_ucx_open(tp);
    if (st != BG_OK)
        goto err_rdv;
    bg_tp_stage_init(&tp->stage, tp->ctx, tp->device);
    st = choose_device_path(tp);
    if (st != BG_OK)
        goto err_ucx;
    st = bg_tp_rdv_exchange(&tp->rdv, tp->my_addr, tp->my_addrlen, tp->chunk, &tp->addrs);
    if (st != BG_OK)
        goto err_ucx;
    *out = tp;
    return BG_OK;

err_ucx:
    bg_tp_ucx_close_worker(tp);
    bg_tp_ucx_close_context(tp);
err_rdv:
    bg_tp_rdv_abandon(&tp->rdv);
err_peers:
    free(tp->peers);
err_tp:
    free(tp);
    return st;
}

bg_status_t bg_tp_destroy(bg_tp_t *tp)
{
    if (!tp)
        return BG_OK;
    bg_status_t first = BG_OK;
    bg_tp_check_failures(tp);
    /* 1. The layers above fail and free what they still run (collectives). */
    bg_tp_cbq_dispatch(&tp->abort_q);
    /* 2. Requests: cancel what the user left behind. */
    while (tp->live)
        bg_tp_cancel(tp, tp->live);
    int failed = tp->rdv.failed_self || bg_tp_store_any_failure(tp->rdv.store);
    /* 3. Endpoints, with progress. */
    bg_tp_eps_close(tp, failed);
    /* 4. Barrier: nobody tears down a worker a peer may still flush to. */
    if (!failed)
        first = bg_tp_rdv_fini_barrier(&tp->rdv);
    /* 5. Worker, then memory handles and context (handles belong to it). */
    bg_tp_ucx_close_worker(tp);
    bg_tp_reqs_fini(tp);
    bg_tp_stage_fini(&tp->stage);
    while (tp->mrs)
        bg_tp_mem_deregister(tp, tp->mrs);
    bg_tp_ucx_close_context(tp);
    /* 6. The store: goodbye, and rank 0 serves until everyone has left. */
    bg_status_t st = bg_tp_rdv_leave(&tp->rdv, failed);
    if (first == BG_OK)
        first = st;
    bg_tp_rdv_peers_free(tp->addrs, tp->world);
    bg_tp_cbq_fini(&tp->progress_q);
    bg_tp_cbq_fini(&tp->abort_q);
    free(tp->peers);
    free(tp);
    return first;
}
