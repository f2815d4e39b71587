/*
 * transport/ucx.c -- the point-to-point layer's UCX side: context and
 * worker, lazily created endpoints with the error mode each peer needs,
 * closing them, registered memory, and the log filter that keeps UCX from
 * aborting on a peer that died mid-copy.
 *
 * Must NOT: use UCX's peer error mode on same-host endpoints (it forces
 * them from shared memory onto TCP; liveness comes from the store instead),
 * know requests, or wait without a deadline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ucs/debug/log_def.h>

#include "transport/backoff.h"
#include "transport/p2p_int.h"
#include "transport/store_int.h"

/*
 * Why this exists: same-host endpoints run in error mode NONE to keep
 * shared memory, and UCX 1.13 then treats a CMA copy from a process that
 * has died (process_vm_readv: ESRCH) as fatal and aborts the survivor. The
 * death itself is detected and reported through the store, so exactly that
 * message is demoted; every other UCX message goes to UCX's own handlers.
 */
static ucs_log_func_rc_t ucx_log_filter(const char *file, unsigned line, const char *function,
                                        ucs_log_level_t level,
                                        const ucs_log_component_config_t *comp, const char *message,
                                        va_list ap)
{
    (void)line, (void)function, (void)comp;
    if (level != UCS_LOG_LEVEL_FATAL || !file || !strstr(file, "cma"))
        return UCS_LOG_FUNC_RC_CONTINUE;
    char text[512];
    va_list aq;
    va_copy(aq, ap);
    vsnprintf(text, sizeof(text), message, aq);
    va_end(aq);
    if (!strstr(text, "No such process"))
        return UCS_LOG_FUNC_RC_CONTINUE;
    bg_log(BG_LOG_INFO, "transport: UCX reported a dead peer process (handled): %s", text);
    return UCS_LOG_FUNC_RC_STOP;
}

void bg_tp_ucx_install_log_filter(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    ucs_log_push_handler(ucx_log_filter);
}

bg_status_t bg_tp_ucx_open(bg_tp_t *tp)
{
    ucp_config_t *cfg;
    ucs_status_t us = ucp_config_read(NULL, NULL, &cfg);
    if (us != UCS_OK)
        return bg_errorf(BG_ERR_UCX, "rank %d: ucp_config_read: %s", tp->rank,
                         ucs_status_string(us));
    ucp_params_t p = {0};
    p.field_mask =
        UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS | UCP_PARAM_FIELD_NAME;
    p.features = UCP_FEATURE_TAG;
    p.estimated_num_eps = (size_t)tp->world;
    p.name = "brigade";
    us = ucp_init(&p, cfg, &tp->ctx);
    ucp_config_release(cfg);
    if (us != UCS_OK)
        return bg_errorf(BG_ERR_UCX, "rank %d: ucp_init: %s", tp->rank, ucs_status_string(us));
    ucp_worker_params_t wp = {0};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    us = ucp_worker_create(tp->ctx, &wp, &tp->worker);
    if (us != UCS_OK) {
        bg_errorf(BG_ERR_UCX, "rank %d: ucp_worker_create: %s", tp->rank, ucs_status_string(us));
        goto err_ctx;
    }
    us = ucp_worker_get_address(tp->worker, &tp->my_addr, &tp->my_addrlen);
    if (us != UCS_OK) {
        bg_errorf(BG_ERR_UCX, "rank %d: ucp_worker_get_address: %s", tp->rank,
                  ucs_status_string(us));
        goto err_worker;
    }
    ucp_context_attr_t ca = {0};
    ca.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    if (ucp_context_query(tp->ctx, &ca) == UCS_OK)
        tp->cuda_direct_ok = (ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
    return BG_OK;

err_worker:
    ucp_worker_destroy(tp->worker);
    tp->worker = NULL;
err_ctx:
    ucp_cleanup(tp->ctx);
    tp->ctx = NULL;
    return BG_ERR_UCX;
}

void bg_tp_ucx_close_worker(bg_tp_t *tp)
{
    if (!tp->worker)
        return;
    ucp_worker_release_address(tp->worker, tp->my_addr);
    ucp_worker_destroy(tp->worker);
    tp->worker = NULL;
}

void bg_tp_ucx_close_context(bg_tp_t *tp)
{
    if (tp->ctx)
        ucp_cleanup(tp->ctx);
    tp->ctx = NULL;
}

/* ---------------- endpoints ---------------- */

static void ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)ep;
    peer_t *p = arg;
    /* Deferred: closing endpoints inside UCX's callback is fragile. */
    if (p->ucx_failed == UCS_OK)
        p->ucx_failed = status;
    p->tp->ucx_fail_pending = 1;
}

int bg_tp_await_death(bg_tp_t *tp, int peer, double seconds, char *why, size_t cap)
{
    double dl = bg_now_s() + seconds;
    for (;;) {
        if (bg_tp_store_rank_dead(tp->rdv.store, peer, why, cap))
            return 1;
        if (bg_now_s() >= dl)
            return 0;
        bg_tp_pause(0.002);
    }
}

bg_status_t bg_tp_ep_get(bg_tp_t *tp, int peer, ucp_ep_h *out, char *err)
{
    peer_t *p = &tp->peers[peer];
    if (p->dead) {
        snprintf(err, BG_TP_ERRLEN, "peer rank %d is dead: %.250s", peer, p->why);
        return BG_ERR_PEER;
    }
    if (p->ep) {
        *out = p->ep;
        return BG_OK;
    }
    ucp_ep_params_t ep = {0};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = tp->addrs[peer].addr;
    /* Same host: no peer error mode, so shared memory stays (store liveness
     * covers failures). Other hosts ride TCP/IB anyway: let UCX watch them. */
    int peer_mode = tp->errmode == ERRMODE_PEER ||
                    (tp->errmode == ERRMODE_AUTO && !tp->addrs[peer].same_host && peer != tp->rank);
    ep.err_mode = peer_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    if (peer_mode) {
        ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.err_handler.cb = ep_err_cb;
        ep.err_handler.arg = p;
    }
    ucs_status_t us = ucp_ep_create(tp->worker, &ep, &p->ep);
    if (us == UCS_OK) {
        *out = p->ep;
        return BG_OK;
    }
    p->ep = NULL;
    /* Connecting to a rank that just died fails in UCX first (e.g. an
     * endpoint timeout on its shared memory); give the store a moment to
     * confirm, so the error names the death, not a UCX status. */
    char why[200];
    if (bg_tp_await_death(tp, peer, 1.0, why, sizeof(why))) {
        snprintf(err, BG_TP_ERRLEN, "connecting to rank %d: peer rank %d died: %s", peer, peer,
                 why);
        return BG_ERR_PEER;
    }
    snprintf(err, BG_TP_ERRLEN, "connecting to rank %d: ucp_ep_create: %s", peer,
             ucs_status_string(us));
    return BG_ERR_UCX;
}

/* Progress until close request cr finishes or the deadline passes; frees
 * it. 0 when it finished in time. */
static int close_wait(bg_tp_t *tp, void *cr, double deadline)
{
    while (ucp_request_check_status(cr) == UCS_INPROGRESS && bg_now_s() < deadline)
        ucp_worker_progress(tp->worker);
    int late = ucp_request_check_status(cr) == UCS_INPROGRESS;
    ucp_request_free(cr);
    return late;
}

void bg_tp_ep_force_close(bg_tp_t *tp, int peer)
{
    peer_t *p = &tp->peers[peer];
    if (!p->ep)
        return;
    /* Force: the peer cannot take part in a flush. Completes what is still
     * queued on the endpoint with UCS_ERR_CANCELED. */
    ucp_request_param_t cp = {0};
    cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void *cr = ucp_ep_close_nbx(p->ep, &cp);
    if (UCS_PTR_IS_PTR(cr))
        close_wait(tp, cr, bg_now_s() + 1.0);
    p->ep = NULL;
}

void bg_tp_eps_close(bg_tp_t *tp, int force)
{
    void **pending = calloc((size_t)tp->world, sizeof(void *));
    for (int r = 0; r < tp->world; r++) {
        peer_t *p = &tp->peers[r];
        if (!p->ep)
            continue;
        ucp_request_param_t cp = {0};
        if (force || p->dead) {
            cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
            cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
        }
        void *cr = ucp_ep_close_nbx(p->ep, &cp);
        p->ep = NULL;
        if (!UCS_PTR_IS_PTR(cr))
            continue;
        /* Without memory for the list, close one at a time. */
        if (pending)
            pending[r] = cr;
        else
            close_wait(tp, cr, bg_now_s() + 5.0);
    }
    if (!pending)
        return;
    /* All at once: peers flush to each other in any order. */
    double dl = bg_now_s() + 5.0;
    for (;;) {
        int left = 0;
        for (int r = 0; r < tp->world; r++) {
            if (!pending[r])
                continue;
            if (ucp_request_check_status(pending[r]) != UCS_INPROGRESS) {
                ucp_request_free(pending[r]);
                pending[r] = NULL;
            } else {
                left++;
            }
        }
        if (!left || bg_now_s() >= dl)
            break;
        ucp_worker_progress(tp->worker);
    }
    for (int r = 0; r < tp->world; r++)
        if (pending[r]) {
            bg_log(BG_LOG_WARN, "rank %d: closing endpoint to rank %d did not finish in 5 s",
                   tp->rank, r);
            ucp_request_free(pending[r]);
        }
    free(pending);
}

/* ---------------- registered memory ---------------- */

ucp_mem_h bg_tp_mr_find(bg_tp_t *tp, const void *buf, size_t len)
{
    for (bg_tp_mr_t *m = tp->mrs; m; m = m->next)
        if ((const char *)buf >= m->base && (const char *)buf + len <= m->base + m->len)
            return m->memh;
    return NULL;
}

bg_status_t bg_tp_mem_register(bg_tp_t *tp, void *buf, size_t len, bg_tp_mem_t mem,
                               bg_tp_mr_t **out)
{
    bg_tp_mr_t *m = calloc(1, sizeof(*m));
    if (!m)
        return bg_errorf(BG_ERR_NOMEM, "mem_register: out of memory");
    ucp_mem_map_params_t mp = {0};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                    UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.address = buf;
    mp.length = len;
    mp.memory_type = mem == BG_TP_MEM_CUDA ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    ucs_status_t us = ucp_mem_map(tp->ctx, &mp, &m->memh);
    if (us != UCS_OK) {
        free(m);
        return bg_errorf(BG_ERR_UCX, "rank %d: ucp_mem_map of %zu bytes (%s memory): %s", tp->rank,
                         len, mem == BG_TP_MEM_CUDA ? "CUDA" : "host", ucs_status_string(us));
    }
    m->base = buf;
    m->len = len;
    m->next = tp->mrs;
    tp->mrs = m;
    *out = m;
    return BG_OK;
}

void bg_tp_mem_deregister(bg_tp_t *tp, bg_tp_mr_t *mr)
{
    if (!mr)
        return;
    for (bg_tp_mr_t **p = &tp->mrs; *p; p = &(*p)->next)
        if (*p == mr) {
            *p = mr->next;
            break;
        }
    ucp_mem_unmap(tp->ctx, mr->memh);
    free(mr);
}
