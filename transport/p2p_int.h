/*
 * transport/p2p_int.h -- the point-to-point layer's own state, shared by its
 * three files and nobody else:
 *
 *   context.c   create / destroy, config, abort hooks
 *     -> request.c   requests, chunks, staging steps, peer failures,
 *                    bg_tp_progress and its callback queue
 *       -> ucx.c       UCX context and worker, endpoints, registered memory
 *
 * (an arrow: calls into). Below them staging.h and backoff.h; beside them
 * the store (store_int.h) and the rendezvous (rendezvous.h). coll.c sees
 * only p2p.h.
 *
 * Wire protocol: a message of `len` bytes travels as ceil(len / chunk) UCX
 * tagged messages of `chunk` bytes (the last one shorter; a zero-length
 * message is one empty chunk) under the same tag. UCX matches same-tag
 * messages from one endpoint in order, so chunks arrive in order whatever
 * path each side takes, and a device buffer on one side can meet a host
 * buffer on the other. All ranks must agree on `chunk` (checked at create).
 *
 * Must NOT be included from outside the point-to-point files.
 */
#ifndef BG_TP_P2P_INT_H
#define BG_TP_P2P_INT_H

#include <ucp/api/ucp.h>

#include "transport/callbackq.h"
#include "transport/p2p.h"
#include "transport/rendezvous.h"
#include "transport/staging.h"

#define BG_TP_SLOTS_MAX 16 /* chunks in flight per request */
#define BG_TP_ERRLEN 512
/* Messages up to this size go eagerly over shared memory or TCP (UCX copies
 * them; a registration buys nothing) and usually complete when posted. */
#define BG_TP_EAGER_MAX 8192

enum { SLOT_FREE = 0, SLOT_COPY_IN, SLOT_WIRE, SLOT_COPY_OUT };

struct bg_tp_req;
typedef struct slot {
    struct bg_tp_req *req;
    int state;
    size_t chunk;
    void *ucx; /* UCX request while on the wire, else NULL */
    int ucx_done;
    ucs_status_t ucx_status;
    ucp_tag_recv_info_t info;
    bg_tp_stage_buf_t *sb;
} slot_t;

struct bg_tp_req {
    bg_tp_t *tp;
    int peer;
    int is_send;
    int staged;
    int on_active;
    int abandoned; /* peer dead: finished without waiting for UCX */
    int user_released;
    uint64_t tag; /* full UCX tag, the transport's bits included */
    char *buf;
    size_t len;
    bg_tp_mem_t mem;
    ucp_mem_h memh;
    size_t nchunks, next_chunk, ndone;
    int nslots;
    int inflight; /* UCX operations not yet called back */
    bg_status_t status;
    int ucx_io; /* failed on a UCX transport error (maybe a death) */
    char err[BG_TP_ERRLEN];
    slot_t slots[BG_TP_SLOTS_MAX];
    struct bg_tp_req *lnext, *lprev; /* live or zombie list */
    struct bg_tp_req *anext, *aprev; /* active list (needs advancing) */
};
typedef struct bg_tp_req req_t;

typedef struct {
    struct bg_tp *tp;
    ucp_ep_h ep;
    int dead;
    ucs_status_t ucx_failed; /* set by UCX's error callback (remote-host eps) */
    char why[BG_TP_ERRLEN];
} peer_t;

struct bg_tp_mr {
    char *base;
    size_t len;
    ucp_mem_h memh;
    struct bg_tp_mr *next;
};

enum { ERRMODE_AUTO = 0, ERRMODE_NONE, ERRMODE_PEER };

struct bg_tp {
    int rank, world;
    double timeout_s;
    size_t chunk;
    int stage_depth;
    int stage_host; /* test knob: stage host buffers too */
    int errmode;
    bg_tp_device_path_t device_path;
    int cuda_direct_ok;
    int device; /* CUDA device for streams, events, scratch; -1 none */
    bg_tp_rdv_t rdv;         /* the store, and rank 0's server */
    bg_tp_rdv_peer_t *addrs; /* [world] published worker addresses */
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_address_t *my_addr;
    size_t my_addrlen;
    peer_t *peers;
    uint64_t fail_gen_seen;
    int ucx_fail_pending;
    req_t *live, *zombies, *free_reqs, *active;
    bg_tp_stage_t stage;
    bg_tp_mr_t *mrs;
    bg_tp_cbq_t progress_q; /* upper layers' progress (collectives) */
    bg_tp_cbq_t abort_q;    /* upper layers' teardown hooks */
};

/* ---- request.c (called by context.c) ---- */

/* Pick up failures reported by the store thread or UCX's error callback:
 * mark peers dead, fail their requests, force-close their endpoints. */
void bg_tp_check_failures(bg_tp_t *tp);
/* A death notice that is itself a chain ("failed: ...: peer rank 3 died:
 * <cause>") cut to its verb and innermost death ("failed because peer rank
 * 3 died: <cause>"); other notices are copied. Cannot fail; truncates. */
void bg_tp_death_root_cause(const char *why, char *out, size_t cap);
/* Cheap test whether bg_tp_check_failures has anything to do. */
int bg_tp_failures_pending(bg_tp_t *tp);
/* Teardown, after the worker is gone: put back zombies' staging buffers
 * and free every request. */
void bg_tp_reqs_fini(bg_tp_t *tp);

/* ---- ucx.c (called by request.c and context.c) ---- */

/* Route UCX's fatal "process vanished" CMA message to a log line (once). */
void bg_tp_ucx_install_log_filter(void);
/* UCX context and worker; tp->cuda_direct_ok from the context's memory
 * types. BG_ERR_UCX naming the call; nothing left open on failure. */
bg_status_t bg_tp_ucx_open(bg_tp_t *tp);
/* Destroy the worker (endpoints must be closed) / the context (memory
 * handles must be unmapped). */
void bg_tp_ucx_close_worker(bg_tp_t *tp);
void bg_tp_ucx_close_context(bg_tp_t *tp);
/* The endpoint to `peer`, created on first use; on failure err (BG_TP_ERRLEN)
 * says why and BG_ERR_PEER / BG_ERR_UCX is returned. */
bg_status_t bg_tp_ep_get(bg_tp_t *tp, int peer, ucp_ep_h *out, char *err);
/* Force-close the endpoint to a dead peer (waits at most 1 s). */
void bg_tp_ep_force_close(bg_tp_t *tp, int peer);
/* Close every endpoint, flushing when peers are alive (at most 5 s). */
void bg_tp_eps_close(bg_tp_t *tp, int force);
/* Wait up to `seconds` for the store to confirm `peer` dead; 1 when it
 * has (why filled, cap bytes). For errors that may be a death seen early. */
int bg_tp_await_death(bg_tp_t *tp, int peer, double seconds, char *why, size_t cap);
/* The memory handle of a registered range holding [buf, buf+len), or NULL. */
ucp_mem_h bg_tp_mr_find(bg_tp_t *tp, const void *buf, size_t len);

#endif
