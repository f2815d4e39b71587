/*
 * transport/tp.c -- the transport context: UCX context and worker, lazy
 * endpoints, tagged point-to-point requests (direct or staged through pinned
 * host buffers), registered memory, progress, and peer-failure handling.
 *
 * Wire protocol: a message of `len` bytes travels as ceil(len / chunk) UCX
 * tagged messages of `chunk` bytes (the last one shorter; a zero-length
 * message is one empty chunk) under the same tag. UCX matches same-tag
 * messages from one endpoint in order, so chunks arrive in order whatever
 * path each side takes, and a device buffer on one side can meet a host
 * buffer on the other. All ranks must agree on `chunk` (checked at create).
 *
 * Must NOT: interpret the bytes, call into layers/engine, exit, spin without
 * a deadline, or use UCX's peer error mode on same-host endpoints (it forces
 * them from shared memory onto TCP; liveness comes from the store instead).
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ucp/api/ucp.h>
#include <ucs/debug/log_def.h>

#ifdef BG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "transport/tp_internal.h"

#define SLOTS_MAX 16   /* chunks in flight per direct request */
#define ERRLEN 320

enum { SLOT_FREE = 0, SLOT_COPY_IN, SLOT_WIRE, SLOT_COPY_OUT };

typedef struct stage_buf {
    void *ptr;
    size_t cap;
    int cls;
    int pinned;   /* cudaHostAlloc'd (else malloc: host staging for tests) */
    int pending;  /* an async copy into/out of it is in flight */
    ucp_mem_h memh;
#ifdef BG_HAVE_CUDA
    cudaEvent_t ev;
    int has_ev;
#endif
    struct stage_buf *next;
} stage_buf_t;

struct bg_tp_req;
typedef struct slot {
    struct bg_tp_req *req;
    int state;
    size_t chunk;
    void *ucx;              /* UCX request while on the wire, else NULL */
    int ucx_done;
    ucs_status_t ucx_status;
    ucp_tag_recv_info_t info;
    stage_buf_t *sb;
    int queued;                  /* on tp's copy queue */
    struct slot *qnext, *qprev;
} slot_t;

struct bg_tp_req {
    bg_tp_t *tp;
    int peer;
    int is_send;
    int staged;
    int on_active;
    int abandoned;          /* peer dead: finished without waiting for UCX */
    int user_released;
    uint64_t tag;
    char *buf;
    size_t len;
    bg_tp_mem_t mem;
    ucp_mem_h memh;
    size_t nchunks, next_chunk, ndone;
    int nslots;
    int inflight;           /* UCX operations not yet called back */
    bg_status_t status;
    int ucx_io;             /* failed on a UCX transport error (maybe a death) */
    char err[ERRLEN];
    slot_t slots[SLOTS_MAX];
    struct bg_tp_req *lnext, *lprev; /* live or zombie list */
    struct bg_tp_req *anext, *aprev; /* active list (needs advancing) */
};
typedef struct bg_tp_req req_t;

typedef struct {
    struct bg_tp *tp;
    ucp_ep_h ep;
    void *addr;
    size_t addrlen;
    int same_host;
    int dead;
    ucs_status_t ucx_failed; /* set by UCX's error callback (remote-host eps) */
    char why[ERRLEN];
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
    int stage_host;            /* test knob: stage host buffers too */
    int errmode;
    bg_tp_device_path_t device_path;
    int cuda_direct_ok;
    bg_tp_store_t *store;
    bg_tp_server_t *server;
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_address_t *my_addr;
    size_t my_addrlen;
    peer_t *peers;
    uint64_t fail_gen_seen;
    int ucx_fail_pending;
    req_t *live, *zombies, *free_reqs, *active;
    /* Staged-send chunks whose device-to-host copy is in flight, in copy
     * order: they go on the wire strictly in this order so that same-tag
     * messages keep their posting order across requests. */
    slot_t *cq_head, *cq_tail;
    stage_buf_t *pool[64];
    bg_tp_mr_t *mrs;
    bg_tp_coll_t **colls;
    int ncolls, colls_cap;
#ifdef BG_HAVE_CUDA
    cudaStream_t s_d2h, s_h2d;
    int streams_ok;
#endif
};

/* ---------------- small helpers ---------------- */

static void list_push(req_t **head, req_t *r)
{
    r->lprev = NULL;
    r->lnext = *head;
    if (*head) (*head)->lprev = r;
    *head = r;
}

static void list_del(req_t **head, req_t *r)
{
    if (r->lprev) r->lprev->lnext = r->lnext;
    else *head = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    r->lnext = r->lprev = NULL;
}

static void active_add(bg_tp_t *tp, req_t *r)
{
    if (r->on_active) return;
    r->on_active = 1;
    r->aprev = NULL;
    r->anext = tp->active;
    if (tp->active) tp->active->aprev = r;
    tp->active = r;
}

static void active_del(bg_tp_t *tp, req_t *r)
{
    if (!r->on_active) return;
    r->on_active = 0;
    if (r->aprev) r->aprev->anext = r->anext;
    else tp->active = r->anext;
    if (r->anext) r->anext->aprev = r->aprev;
    r->anext = r->aprev = NULL;
}

static void cq_push(bg_tp_t *tp, slot_t *s)
{
    s->queued = 1;
    s->qnext = NULL;
    s->qprev = tp->cq_tail;
    if (tp->cq_tail) tp->cq_tail->qnext = s;
    else tp->cq_head = s;
    tp->cq_tail = s;
}

static void cq_del(bg_tp_t *tp, slot_t *s)
{
    if (!s->queued) return;
    s->queued = 0;
    if (s->qprev) s->qprev->qnext = s->qnext;
    else tp->cq_head = s->qnext;
    if (s->qnext) s->qnext->qprev = s->qprev;
    else tp->cq_tail = s->qprev;
    s->qnext = s->qprev = NULL;
}

static const char *env_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

double bg_tp_default_timeout(const bg_tp_t *tp)
{
    return tp->timeout_s;
}

int bg_tp_rank(const bg_tp_t *tp) { return tp->rank; }
int bg_tp_world_size(const bg_tp_t *tp) { return tp->world; }
bg_tp_store_t *bg_tp_store(bg_tp_t *tp) { return tp->store; }
int bg_tp_cuda_direct_supported(const bg_tp_t *tp) { return tp->cuda_direct_ok; }
bg_tp_device_path_t bg_tp_device_path(const bg_tp_t *tp) { return tp->device_path; }

int bg_tp_peer_dead(const bg_tp_t *tp, int rank, const char **why)
{
    if (rank < 0 || rank >= tp->world || !tp->peers[rank].dead) return 0;
    if (why) *why = tp->peers[rank].why;
    return 1;
}

/* ---------------- config ---------------- */

bg_status_t bg_tp_config_from_env(bg_tp_config_t *out)
{
    bg_tp_config_t c;
    memset(&c, 0, sizeof(c));
    bg_status_t st = bg_tp_bootstrap_from_env(&c.boot);
    if (st != BG_OK) return st;
    c.timeout_s = atof(env_str("BRIGADE_TP_TIMEOUT", "60"));
    const char *p = env_str("BRIGADE_TP_DEVICE_PATH", "auto");
    if (!strcmp(p, "auto")) c.device_path = BG_TP_DEVICE_AUTO;
    else if (!strcmp(p, "direct")) c.device_path = BG_TP_DEVICE_DIRECT;
    else if (!strcmp(p, "staged")) c.device_path = BG_TP_DEVICE_STAGED;
    else
        return bg_errorf(BG_ERR_INVALID,
                         "BRIGADE_TP_DEVICE_PATH='%s' (expected auto, direct or staged)", p);
    c.chunk_bytes = (size_t)strtoull(env_str("BRIGADE_TP_CHUNK", "0"), NULL, 10);
    c.stage_depth = atoi(env_str("BRIGADE_TP_STAGE_DEPTH", "0"));
    *out = c;
    return BG_OK;
}

/* ---------------- staging buffers and copies ---------------- */

static int size_class(size_t n)
{
    int c = 12; /* 4 KiB minimum: tiny pinned allocations are wasteful */
    while (((size_t)1 << c) < n) c++;
    return c;
}

/* A staging buffer of at least n bytes, pinned for device requests.
 * Owned by the pool; give it back with sb_put. */
static bg_status_t sb_get(bg_tp_t *tp, size_t n, int device, stage_buf_t **out)
{
    int cls = size_class(n);
    for (stage_buf_t **p = &tp->pool[cls]; *p; p = &(*p)->next) {
        if ((*p)->pinned == device) {
            stage_buf_t *b = *p;
            *p = b->next;
            b->next = NULL;
            *out = b;
            return BG_OK;
        }
    }
    stage_buf_t *b = calloc(1, sizeof(*b));
    if (!b) return bg_errorf(BG_ERR_NOMEM, "staging: out of memory");
    b->cap = (size_t)1 << cls;
    b->cls = cls;
    if (device) {
#ifdef BG_HAVE_CUDA
        cudaError_t ce = cudaHostAlloc(&b->ptr, b->cap, cudaHostAllocDefault);
        if (ce != cudaSuccess) {
            free(b);
            return bg_errorf(BG_ERR_CUDA, "staging: cudaHostAlloc(%zu): %s", (size_t)1 << cls,
                             cudaGetErrorString(ce));
        }
        ce = cudaEventCreateWithFlags(&b->ev, cudaEventDisableTiming);
        if (ce != cudaSuccess) {
            cudaFreeHost(b->ptr);
            free(b);
            return bg_errorf(BG_ERR_CUDA, "staging: cudaEventCreate: %s", cudaGetErrorString(ce));
        }
        b->has_ev = 1;
        b->pinned = 1;
#else
        free(b);
        return bg_errorf(BG_ERR_UNSUPPORTED, "staging: device buffer but built without CUDA");
#endif
    } else {
        b->ptr = aligned_alloc(4096, b->cap);
        if (!b->ptr) {
            size_t cap = b->cap;
            free(b);
            return bg_errorf(BG_ERR_NOMEM, "staging: cannot allocate %zu bytes", cap);
        }
    }
    /* Registered once, reused forever: the point of a pool. */
    ucp_mem_map_params_t mp = {0};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = b->ptr;
    mp.length = b->cap;
    if (ucp_mem_map(tp->ctx, &mp, &b->memh) != UCS_OK) b->memh = NULL;
    *out = b;
    return BG_OK;
}

static void sb_put(bg_tp_t *tp, stage_buf_t *b)
{
    b->next = tp->pool[b->cls];
    tp->pool[b->cls] = b;
}

static void sb_free(bg_tp_t *tp, stage_buf_t *b)
{
    if (b->memh) ucp_mem_unmap(tp->ctx, b->memh);
#ifdef BG_HAVE_CUDA
    if (b->has_ev) cudaEventDestroy(b->ev);
    if (b->pinned) {
        cudaFreeHost(b->ptr);
        free(b);
        return;
    }
#endif
    free(b->ptr);
    free(b);
}

#ifdef BG_HAVE_CUDA
static bg_status_t ensure_streams(bg_tp_t *tp)
{
    if (tp->streams_ok) return BG_OK;
    cudaError_t ce = cudaStreamCreateWithFlags(&tp->s_d2h, cudaStreamNonBlocking);
    if (ce == cudaSuccess) {
        ce = cudaStreamCreateWithFlags(&tp->s_h2d, cudaStreamNonBlocking);
        if (ce != cudaSuccess) cudaStreamDestroy(tp->s_d2h);
    }
    if (ce != cudaSuccess)
        return bg_errorf(BG_ERR_CUDA, "staging: cudaStreamCreate: %s", cudaGetErrorString(ce));
    tp->streams_ok = 1;
    return BG_OK;
}
#endif

/* Start copying n bytes for a staged chunk; d2h: device -> staging buffer.
 * Host requests (test knob) copy synchronously. */
static bg_status_t copy_start(bg_tp_t *tp, req_t *r, stage_buf_t *b, void *dst, const void *src,
                              size_t n, int d2h, char *err)
{
    if (r->mem == BG_TP_MEM_HOST) {
        memcpy(dst, src, n);
        b->pending = 0;
        return BG_OK;
    }
#ifdef BG_HAVE_CUDA
    bg_status_t st = ensure_streams(tp);
    if (st != BG_OK) {
        snprintf(err, ERRLEN, "%s", bg_last_error());
        return st;
    }
    cudaStream_t s = d2h ? tp->s_d2h : tp->s_h2d;
    cudaError_t ce = cudaMemcpyAsync(dst, src, n, d2h ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyHostToDevice, s);
    if (ce == cudaSuccess) ce = cudaEventRecord(b->ev, s);
    if (ce != cudaSuccess) {
        snprintf(err, ERRLEN, "staging copy of %zu bytes: %s", n, cudaGetErrorString(ce));
        return BG_ERR_CUDA;
    }
    b->pending = 1;
    return BG_OK;
#else
    (void)tp, (void)dst, (void)src, (void)n, (void)d2h;
    snprintf(err, ERRLEN, "device buffer but built without CUDA");
    return BG_ERR_UNSUPPORTED;
#endif
}

/* 1 when the buffer's copy has finished; -1 on a CUDA error (err filled). */
static int copy_done(stage_buf_t *b, char *err)
{
    if (!b->pending) return 1;
#ifdef BG_HAVE_CUDA
    cudaError_t ce = cudaEventQuery(b->ev);
    if (ce == cudaErrorNotReady) return 0;
    b->pending = 0;
    if (ce != cudaSuccess) {
        snprintf(err, ERRLEN, "staging copy: %s", cudaGetErrorString(ce));
        return -1;
    }
#else
    (void)err;
    b->pending = 0;
#endif
    return 1;
}

/* Wait out a copy before its buffer is reused (teardown, failures). */
static void copy_settle(stage_buf_t *b)
{
#ifdef BG_HAVE_CUDA
    if (b->pending) cudaEventSynchronize(b->ev);
#endif
    b->pending = 0;
}

/* ---------------- endpoints and failures ---------------- */

/*
 * Why this exists: same-host endpoints run in error mode NONE to keep
 * shared memory, and UCX 1.13 then treats a CMA copy from a process that
 * has died (process_vm_readv: ESRCH) as fatal and aborts the survivor. The
 * death itself is detected and reported through the store, so exactly that
 * message is demoted; every other UCX message goes to UCX's own handlers.
 */
static ucs_log_func_rc_t ucx_log_filter(const char *file, unsigned line, const char *function,
                                        ucs_log_level_t level,
                                        const ucs_log_component_config_t *comp,
                                        const char *message, va_list ap)
{
    (void)line, (void)function, (void)comp;
    if (level != UCS_LOG_LEVEL_FATAL || !file || !strstr(file, "cma")) return UCS_LOG_FUNC_RC_CONTINUE;
    char text[512];
    va_list aq;
    va_copy(aq, ap);
    vsnprintf(text, sizeof(text), message, aq);
    va_end(aq);
    if (!strstr(text, "No such process")) return UCS_LOG_FUNC_RC_CONTINUE;
    bg_log(BG_LOG_INFO, "transport: UCX reported a dead peer process (handled): %s", text);
    return UCS_LOG_FUNC_RC_STOP;
}

static void install_log_filter(void)
{
    static int done;
    if (done) return;
    done = 1;
    ucs_log_push_handler(ucx_log_filter);
}

static void ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)ep;
    peer_t *p = arg;
    /* Deferred: closing endpoints inside UCX's callback is fragile. */
    if (p->ucx_failed == UCS_OK) p->ucx_failed = status;
    p->tp->ucx_fail_pending = 1;
}

static void check_failures(bg_tp_t *tp);

/* The endpoint to `peer`, created on first use. */
static bg_status_t get_ep(bg_tp_t *tp, int peer, ucp_ep_h *out, char *err)
{
    peer_t *p = &tp->peers[peer];
    if (p->dead) {
        snprintf(err, ERRLEN, "peer rank %d is dead: %.250s", peer, p->why);
        return BG_ERR_PEER;
    }
    if (p->ep) {
        *out = p->ep;
        return BG_OK;
    }
    ucp_ep_params_t ep = {0};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = p->addr;
    /* Same host: no peer error mode, so shared memory stays (store liveness
     * covers failures). Other hosts ride TCP/IB anyway: let UCX watch them. */
    int peer_mode = tp->errmode == ERRMODE_PEER ||
                    (tp->errmode == ERRMODE_AUTO && !p->same_host && peer != tp->rank);
    ep.err_mode = peer_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    if (peer_mode) {
        ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.err_handler.cb = ep_err_cb;
        ep.err_handler.arg = p;
    }
    ucs_status_t us = ucp_ep_create(tp->worker, &ep, &p->ep);
    if (us != UCS_OK) {
        p->ep = NULL;
        /* Connecting to a rank that just died fails in UCX first (e.g. an
         * endpoint timeout on its shared memory); give the store a moment
         * to confirm, so the error names the death, not a UCX status. */
        double dl = bg_tp_now() + 1.0;
        while (!p->dead && bg_tp_now() < dl) {
            if (bg_tp_store_fail_gen(tp->store) != tp->fail_gen_seen) check_failures(tp);
            if (!p->dead) usleep(2000);
        }
        if (p->dead) {
            snprintf(err, ERRLEN, "connecting to rank %d: peer rank %d died: %.200s", peer, peer,
                     p->why);
            return BG_ERR_PEER;
        }
        snprintf(err, ERRLEN, "connecting to rank %d: ucp_ep_create: %s", peer,
                 ucs_status_string(us));
        return BG_ERR_UCX;
    }
    *out = p->ep;
    return BG_OK;
}

static void req_cancel_wire(bg_tp_t *tp, req_t *r)
{
    for (int i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        if (s->state == SLOT_WIRE && s->ucx && !s->ucx_done && !r->is_send)
            ucp_request_cancel(tp->worker, s->ucx);
    }
}

static void describe(const req_t *r, char *out, size_t cap)
{
    snprintf(out, cap, "%s rank %d (tag 0x%016llx, %zu bytes)", r->is_send ? "send to" : "recv from",
             r->peer, (unsigned long long)r->tag, r->len);
}

/* Record the first failure of a request and stop it from starting chunks. */
static void req_fail(bg_tp_t *tp, req_t *r, bg_status_t st, const char *why)
{
    if (r->status != BG_OK) return;
    char d[160];
    describe(r, d, sizeof(d));
    r->status = st;
    snprintf(r->err, sizeof(r->err), "rank %d: %s: %.150s", tp->rank, d, why);
    req_cancel_wire(tp, r);
}

static void peer_fail(bg_tp_t *tp, int rank, const char *why)
{
    peer_t *p = &tp->peers[rank];
    if (p->dead) return;
    p->dead = 1;
    snprintf(p->why, sizeof(p->why), "%s", why);
    bg_log(BG_LOG_INFO, "transport rank %d: peer rank %d failed: %s", tp->rank, rank, why);
    char msg[ERRLEN];
    snprintf(msg, sizeof(msg), "peer rank %d died: %s", rank, why);
    for (req_t *r = tp->live; r; r = r->lnext)
        if (r->peer == rank) {
            req_fail(tp, r, BG_ERR_PEER, msg);
            r->abandoned = 1;
        }
    if (p->ep) {
        /* Force: the peer cannot take part in a flush. Completes what is
         * still queued on the endpoint with UCS_ERR_CANCELED. */
        ucp_request_param_t cp = {0};
        cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
        void *cr = ucp_ep_close_nbx(p->ep, &cp);
        if (UCS_PTR_IS_PTR(cr)) {
            double dl = bg_tp_now() + 1.0;
            while (ucp_request_check_status(cr) == UCS_INPROGRESS && bg_tp_now() < dl)
                ucp_worker_progress(tp->worker);
            ucp_request_free(cr);
        }
        p->ep = NULL;
    }
}

/* Pick up failures reported by the store thread or UCX's error callback. */
static void check_failures(bg_tp_t *tp)
{
    uint64_t g = bg_tp_store_fail_gen(tp->store);
    if (g != tp->fail_gen_seen) {
        tp->fail_gen_seen = g;
        char why[ERRLEN];
        for (int r = 0; r < tp->world; r++)
            if (r != tp->rank && !tp->peers[r].dead &&
                bg_tp_store_rank_dead(tp->store, r, why, sizeof(why)))
                peer_fail(tp, r, why);
    }
    if (tp->ucx_fail_pending) {
        tp->ucx_fail_pending = 0;
        for (int r = 0; r < tp->world; r++) {
            peer_t *p = &tp->peers[r];
            if (p->ucx_failed != UCS_OK && !p->dead) {
                char why[ERRLEN];
                snprintf(why, sizeof(why), "UCX reported the endpoint failed: %s",
                         ucs_status_string(p->ucx_failed));
                peer_fail(tp, r, why);
            }
        }
    }
}

/* ---------------- requests ---------------- */

static int req_finished(const req_t *r)
{
    if (r->status != BG_OK) return r->inflight == 0 || r->abandoned;
    return r->ndone == r->nchunks;
}

static size_t chunk_len(const req_t *r, size_t c)
{
    size_t chunk = r->tp->chunk, off = c * chunk;
    return r->len - off < chunk ? r->len - off : chunk;
}

/* Direct-path completions finish the chunk right in the callback so that a
 * single-chunk request needs no advancing; staged ones are left to advance. */
static void wire_done(slot_t *s, ucs_status_t status)
{
    req_t *r = s->req;
    s->ucx_done = 1;
    s->ucx_status = status;
    r->inflight--;
    if (r->staged) return;
    if (status == UCS_OK && !r->is_send && s->info.length != chunk_len(r, s->chunk))
        status = UCS_ERR_MESSAGE_TRUNCATED;
    if (status != UCS_OK) {
        char why[160];
        if (status == UCS_ERR_MESSAGE_TRUNCATED)
            snprintf(why, sizeof(why), "message length mismatch in chunk %zu (got %zu bytes)",
                     s->chunk, (size_t)s->info.length);
        else
            snprintf(why, sizeof(why), "UCX: %s", ucs_status_string(status));
        /* Cancellation is our own doing: keep the original cause. */
        if (r->status == BG_OK) {
            req_fail(r->tp, r, status == UCS_ERR_CANCELED ? BG_ERR_CANCELED : BG_ERR_UCX, why);
            r->ucx_io = status != UCS_ERR_CANCELED && status != UCS_ERR_MESSAGE_TRUNCATED;
        }
    } else {
        r->ndone++;
    }
    if (s->ucx) ucp_request_free(s->ucx);
    s->ucx = NULL;
    s->state = SLOT_FREE;
}

static void send_cb(void *ucxreq, ucs_status_t status, void *user)
{
    (void)ucxreq;
    wire_done(user, status);
}

static void recv_cb(void *ucxreq, ucs_status_t status, const ucp_tag_recv_info_t *info,
                    void *user)
{
    (void)ucxreq;
    slot_t *s = user;
    if (info) s->info = *info;
    wire_done(s, status);
}

/* Put chunk c of r on the wire from/to `ptr`. */
static void post_wire(bg_tp_t *tp, req_t *r, slot_t *s, void *ptr, size_t n, ucp_mem_h memh,
                      int device)
{
    char err[ERRLEN];
    ucp_ep_h ep = NULL;
    ucp_request_param_t prm;
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.user_data = s;
    if (memh) {
        prm.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        prm.memh = memh;
    }
    if (device) {
        prm.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        prm.memory_type = UCS_MEMORY_TYPE_CUDA;
    }
    s->state = SLOT_WIRE;
    s->ucx_done = 0;
    s->ucx = NULL;
    void *u;
    if (r->is_send) {
        bg_status_t st = get_ep(tp, r->peer, &ep, err);
        if (st != BG_OK) {
            s->state = SLOT_FREE;
            req_fail(tp, r, st, err);
            return;
        }
        prm.cb.send = send_cb;
        r->inflight++; /* before the call: the callback may run inside it */
        u = ucp_tag_send_nbx(ep, ptr, n, r->tag, &prm);
    } else {
        /* Why NO_IMM_CMPL: UCX 1.13 does not fill recv_info when a receive
         * completes in place, and the length check needs it; with this
         * flag the callback reports it (possibly inside the call). */
        prm.op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        prm.cb.recv = recv_cb;
        r->inflight++;
        u = ucp_tag_recv_nbx(tp->worker, ptr, n, r->tag, ~(ucp_tag_t)0, &prm);
    }
    if (UCS_PTR_IS_ERR(u)) {
        r->inflight--;
        s->state = SLOT_FREE;
        snprintf(err, sizeof(err), "UCX: %s", ucs_status_string(UCS_PTR_STATUS(u)));
        req_fail(tp, r, BG_ERR_UCX, err);
        return;
    }
    if (u == NULL) {
        wire_done(s, UCS_OK); /* completed in place: no callback will come */
        return;
    }
    if (s->ucx_done && !r->staged) {
        ucp_request_free(u); /* the callback already ran inside the call */
        return;
    }
    s->ucx = u;
}

/* Staged follow-ups after the wire or a copy finished. Returns 1 if moved. */
static int staged_step(bg_tp_t *tp, req_t *r, slot_t *s)
{
    char err[ERRLEN] = "";
    size_t n = chunk_len(r, s->chunk);
    char *user = r->len ? r->buf + s->chunk * tp->chunk : r->buf;
    switch (s->state) {
    case SLOT_COPY_IN: return 0; /* the copy queue puts it on the wire */
    case SLOT_WIRE: {
        if (!s->ucx_done) return 0;
        ucs_status_t us = s->ucx_status;
        if (s->ucx) ucp_request_free(s->ucx);
        s->ucx = NULL;
        if (us == UCS_OK && !r->is_send && s->info.length != n) us = UCS_ERR_MESSAGE_TRUNCATED;
        if (us != UCS_OK) {
            snprintf(err, sizeof(err), "%s in chunk %zu",
                     us == UCS_ERR_MESSAGE_TRUNCATED ? "message length mismatch"
                                                     : ucs_status_string(us),
                     s->chunk);
            if (r->status == BG_OK)
                r->ucx_io = us != UCS_ERR_CANCELED && us != UCS_ERR_MESSAGE_TRUNCATED;
            req_fail(tp, r, us == UCS_ERR_CANCELED ? BG_ERR_CANCELED : BG_ERR_UCX, err);
            sb_put(tp, s->sb);
            s->sb = NULL;
            s->state = SLOT_FREE;
            return 1;
        }
        if (r->is_send || r->status != BG_OK) {
            sb_put(tp, s->sb);
            s->sb = NULL;
            s->state = SLOT_FREE;
            if (r->status == BG_OK) r->ndone++;
            return 1;
        }
        bg_status_t st = copy_start(tp, r, s->sb, user, s->sb->ptr, n, 0, err);
        if (st != BG_OK) {
            req_fail(tp, r, st, err);
            sb_put(tp, s->sb);
            s->sb = NULL;
            s->state = SLOT_FREE;
            return 1;
        }
        s->state = SLOT_COPY_OUT;
        return 1;
    }
    case SLOT_COPY_OUT: {
        int d = copy_done(s->sb, err);
        if (d == 0) return 0;
        if (d < 0) req_fail(tp, r, BG_ERR_CUDA, err);
        else r->ndone++;
        sb_put(tp, s->sb);
        s->sb = NULL;
        s->state = SLOT_FREE;
        return 1;
    }
    default: return 0;
    }
}

static void start_chunk(bg_tp_t *tp, req_t *r, slot_t *s, size_t c)
{
    size_t n = chunk_len(r, c);
    char *user = r->len ? r->buf + c * tp->chunk : r->buf;
    s->chunk = c;
    s->info.length = 0;
    if (!r->staged) {
        post_wire(tp, r, s, user, n, r->memh, r->mem == BG_TP_MEM_CUDA);
        return;
    }
    char err[ERRLEN] = "";
    bg_status_t st = sb_get(tp, n, r->mem == BG_TP_MEM_CUDA, &s->sb);
    if (st != BG_OK) {
        req_fail(tp, r, st, bg_last_error());
        return;
    }
    if (!r->is_send) {
        post_wire(tp, r, s, s->sb->ptr, n, s->sb->memh, 0);
        if (s->state == SLOT_FREE && !s->ucx_done) { /* failed to post */
            sb_put(tp, s->sb);
            s->sb = NULL;
        }
        return;
    }
    st = copy_start(tp, r, s->sb, s->sb->ptr, user, n, 1, err);
    if (st != BG_OK) {
        req_fail(tp, r, st, err);
        sb_put(tp, s->sb);
        s->sb = NULL;
        return;
    }
    s->state = SLOT_COPY_IN;
    cq_push(tp, s);
}

/* Put finished device-to-host copies on the wire, oldest first. */
static int drain_copy_queue(bg_tp_t *tp)
{
    int moved = 0;
    while (tp->cq_head) {
        slot_t *s = tp->cq_head;
        char err[ERRLEN] = "";
        int d = copy_done(s->sb, err);
        if (d == 0) break;
        cq_del(tp, s);
        moved = 1;
        req_t *r = s->req;
        if (d < 0) {
            req_fail(tp, r, BG_ERR_CUDA, err);
            continue;
        }
        post_wire(tp, r, s, s->sb->ptr, chunk_len(r, s->chunk), s->sb->memh, 0);
    }
    return moved;
}

/* Move a request as far as it can go now. Returns 1 if anything moved. */
static int req_advance(bg_tp_t *tp, req_t *r)
{
    int moved = 0;
    if (r->staged) {
        size_t lo = r->next_chunk > (size_t)r->nslots ? r->next_chunk - (size_t)r->nslots : 0;
        for (size_t c = lo; c < r->next_chunk; c++) {
            slot_t *s = &r->slots[c % (size_t)r->nslots];
            if (s->chunk == c) moved |= staged_step(tp, r, s);
        }
        /* A failed staged request still owns buffers in flight: release
         * those whose wire part is over so the request can finish. */
        if (r->status != BG_OK)
            for (int i = 0; i < r->nslots; i++) {
                slot_t *s = &r->slots[i];
                if (s->sb && s->state != SLOT_WIRE) {
                    cq_del(tp, s);
                    copy_settle(s->sb);
                    sb_put(tp, s->sb);
                    s->sb = NULL;
                    s->state = SLOT_FREE;
                }
            }
    }
    while (r->status == BG_OK && r->next_chunk < r->nchunks) {
        slot_t *s = &r->slots[r->next_chunk % (size_t)r->nslots];
        if (s->state != SLOT_FREE) break;
        start_chunk(tp, r, s, r->next_chunk);
        r->next_chunk++;
        moved = 1;
    }
    if (r->staged && r->is_send && tp->cq_head) moved |= drain_copy_queue(tp);
    if ((r->next_chunk >= r->nchunks && !r->staged && r->status == BG_OK) || req_finished(r))
        active_del(tp, r);
    return moved;
}

static req_t *req_alloc(bg_tp_t *tp)
{
    req_t *r = tp->free_reqs;
    if (r) tp->free_reqs = r->lnext;
    else r = malloc(sizeof(*r));
    if (!r) return NULL;
    /* Only the header needs clearing: slots are set up as chunks start. */
    memset(r, 0, offsetof(req_t, slots));
    return r;
}

/* Give back a request the user is done with; one still referenced by UCX
 * (failure or cancel) waits as a zombie until its callbacks have come. */
static void req_release(bg_tp_t *tp, req_t *r)
{
    active_del(tp, r);
    list_del(&tp->live, r);
    r->user_released = 1;
    if (r->inflight > 0) {
        list_push(&tp->zombies, r);
        return;
    }
    for (int i = 0; i < r->nslots; i++)
        if (r->slots[i].sb) {
            cq_del(tp, &r->slots[i]);
            copy_settle(r->slots[i].sb);
            sb_put(tp, r->slots[i].sb);
            r->slots[i].sb = NULL;
        }
    r->lnext = tp->free_reqs;
    tp->free_reqs = r;
}

static void reap_zombies(bg_tp_t *tp)
{
    for (req_t *r = tp->zombies, *nx; r; r = nx) {
        nx = r->lnext;
        if (r->inflight > 0) continue;
        list_del(&tp->zombies, r);
        for (int i = 0; i < r->nslots; i++) {
            slot_t *s = &r->slots[i];
            if (s->ucx) ucp_request_free(s->ucx);
            s->ucx = NULL;
            if (s->sb) {
                copy_settle(s->sb);
                sb_put(tp, s->sb);
                s->sb = NULL;
            }
        }
        r->lnext = tp->free_reqs;
        tp->free_reqs = r;
    }
}

static ucp_mem_h find_memh(bg_tp_t *tp, const void *buf, size_t len)
{
    for (bg_tp_mr_t *m = tp->mrs; m; m = m->next)
        if ((const char *)buf >= m->base && (const char *)buf + len <= m->base + m->len)
            return m->memh;
    return NULL;
}

static bg_status_t post(bg_tp_t *tp, int is_send, int peer, uint64_t tag, void *buf, size_t len,
                        bg_tp_mem_t mem, bg_tp_req_t **out)
{
    if (peer < 0 || peer >= tp->world)
        return bg_errorf(BG_ERR_INVALID, "rank %d: %s rank %d: no such rank (world size %d)",
                         tp->rank, is_send ? "send to" : "recv from", peer, tp->world);
    if (mem == BG_TP_MEM_CUDA) {
#ifndef BG_HAVE_CUDA
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "rank %d: device buffer to/from rank %d but brigade was built without CUDA",
                         tp->rank, peer);
#endif
    }
    if (tp->ucx_fail_pending || bg_tp_store_fail_gen(tp->store) != tp->fail_gen_seen)
        check_failures(tp);
    if (tp->peers[peer].dead)
        return bg_errorf(BG_ERR_PEER, "rank %d: %s rank %d: peer rank %d died: %s", tp->rank,
                         is_send ? "send to" : "recv from", peer, peer, tp->peers[peer].why);
    req_t *r = req_alloc(tp);
    if (!r) return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory for a request", tp->rank);
    r->tp = tp;
    r->peer = peer;
    r->is_send = is_send;
    /* Source field: the sender's rank, so a receive selects its peer. */
    int src = is_send ? tp->rank : peer;
    r->tag = (tag & ~((uint64_t)0xffff << 44)) | ((uint64_t)(src & 0xffff) << 44);
    r->buf = buf;
    r->len = len;
    r->mem = mem;
    r->staged = (mem == BG_TP_MEM_CUDA && tp->device_path == BG_TP_DEVICE_STAGED) ||
                (mem == BG_TP_MEM_HOST && tp->stage_host);
    r->nchunks = len ? (len + tp->chunk - 1) / tp->chunk : 1;
    r->nslots = r->staged ? tp->stage_depth : SLOTS_MAX;
    if ((size_t)r->nslots > r->nchunks) r->nslots = (int)r->nchunks;
    for (int i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        s->req = r;
        s->state = SLOT_FREE;
        s->ucx = NULL;
        s->sb = NULL;
        s->queued = 0;
        s->chunk = (size_t)-1;
    }
    if (tp->mrs && !r->staged) r->memh = find_memh(tp, buf, len);
    list_push(&tp->live, r);
    if (r->staged || r->nchunks > (size_t)r->nslots) active_add(tp, r);
    req_advance(tp, r);
    *out = r;
    return BG_OK;
}

bg_status_t bg_tp_send_raw(bg_tp_t *tp, int peer, uint64_t tag, const void *buf, size_t len,
                           bg_tp_mem_t mem, bg_tp_req_t **req)
{
    return post(tp, 1, peer, tag, (void *)buf, len, mem, req);
}

bg_status_t bg_tp_recv_raw(bg_tp_t *tp, int peer, uint64_t tag, void *buf, size_t len,
                           bg_tp_mem_t mem, bg_tp_req_t **req)
{
    return post(tp, 0, peer, tag, buf, len, mem, req);
}

/* Callers own the low BG_TP_TAG_BITS; the bits above are the transport's
 * (traffic class and source rank), so a wider tag is refused, not masked. */
static bg_status_t check_tag(bg_tp_t *tp, int is_send, int peer, uint64_t tag)
{
    if (tag > BG_TP_TAG_MAX)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d: %s rank %d: tag 0x%016llx does not fit in %d bits", tp->rank,
                         is_send ? "send to" : "recv from", peer, (unsigned long long)tag,
                         BG_TP_TAG_BITS);
    return BG_OK;
}

bg_status_t bg_tp_send(bg_tp_t *tp, int peer, uint64_t tag, const void *buf, size_t len,
                       bg_tp_mem_t mem, bg_tp_req_t **req)
{
    bg_status_t st = check_tag(tp, 1, peer, tag);
    if (st != BG_OK) return st;
    return post(tp, 1, peer, tag, (void *)buf, len, mem, req);
}

bg_status_t bg_tp_recv(bg_tp_t *tp, int peer, uint64_t tag, void *buf, size_t len,
                       bg_tp_mem_t mem, bg_tp_req_t **req)
{
    bg_status_t st = check_tag(tp, 0, peer, tag);
    if (st != BG_OK) return st;
    return post(tp, 0, peer, tag, buf, len, mem, req);
}

/*
 * A transport error on the shared-memory path often means the peer process
 * just died (UCX sees it first, e.g. a CMA read from a vanished pid). Give
 * the store up to a second to confirm, so the error names the death rather
 * than an I/O error. Only on this already-failing path.
 */
static void explain_transport_error(bg_tp_t *tp, req_t *r)
{
    peer_t *p = &tp->peers[r->peer];
    double dl = bg_tp_now() + 1.0;
    while (!p->dead && bg_tp_now() < dl) {
        if (bg_tp_store_fail_gen(tp->store) != tp->fail_gen_seen) check_failures(tp);
        if (!p->dead) usleep(2000);
    }
    r->ucx_io = 0;
    if (!p->dead) return;
    char d[160];
    describe(r, d, sizeof(d));
    r->status = BG_ERR_PEER;
    snprintf(r->err, sizeof(r->err), "rank %d: %s: peer rank %d died: %.120s", tp->rank, d,
             r->peer, p->why);
}

bg_status_t bg_tp_req_poll(bg_tp_t *tp, bg_tp_req_t *r, int *done)
{
    if (r->on_active || r->staged) req_advance(tp, r);
    if (!req_finished(r)) {
        *done = 0;
        return BG_OK;
    }
    if (r->status == BG_ERR_UCX && r->ucx_io) explain_transport_error(tp, r);
    bg_status_t st = r->status;
    if (st != BG_OK) bg_errorf(st, "%s", r->err);
    req_release(tp, r);
    *done = 1;
    return st;
}

int bg_tp_progress(bg_tp_t *tp)
{
    if (tp->ucx_fail_pending || bg_tp_store_fail_gen(tp->store) != tp->fail_gen_seen)
        check_failures(tp);
    int moved = ucp_worker_progress(tp->worker) != 0;
    if (tp->cq_head) moved |= drain_copy_queue(tp);
    for (req_t *r = tp->active, *nx; r; r = nx) {
        nx = r->anext;
        moved |= req_advance(tp, r);
    }
    for (int i = 0; i < tp->ncolls; i++) moved |= bg_tp_coll_advance(tp->colls[i]);
    if (tp->zombies) reap_zombies(tp);
    return moved;
}

bg_status_t bg_tp_test(bg_tp_t *tp, bg_tp_req_t *req, int *done)
{
    bg_tp_progress(tp);
    return bg_tp_req_poll(tp, req, done);
}

bg_status_t bg_tp_wait(bg_tp_t *tp, bg_tp_req_t *req, double timeout_s)
{
    double deadline = bg_tp_deadline(timeout_s);
    unsigned idle = 0;
    for (unsigned it = 1;; it++) {
        int moved = bg_tp_progress(tp);
        int done;
        bg_status_t st = bg_tp_req_poll(tp, req, &done);
        if (done) return st;
        idle = moved ? 0 : idle + 1;
        if ((it & 255) == 0 && bg_tp_now() >= deadline) {
            char d[160];
            describe(req, d, sizeof(d));
            return bg_errorf(BG_ERR_TIMEOUT, "rank %d: %s: no completion within %.1f s",
                             tp->rank, d, timeout_s);
        }
        bg_tp_backoff(idle);
    }
}

void bg_tp_cancel(bg_tp_t *tp, bg_tp_req_t *r)
{
    if (!r) return;
    if (r->status == BG_OK) req_fail(tp, r, BG_ERR_CANCELED, "cancelled");
    /* Let cancelled receives report back before the slot memory is reused. */
    double dl = bg_tp_now() + 0.1;
    while (r->inflight > 0 && !r->is_send && bg_tp_now() < dl) ucp_worker_progress(tp->worker);
    req_release(tp, r);
}

/* ---------------- registered memory ---------------- */

bg_status_t bg_tp_mem_register(bg_tp_t *tp, void *buf, size_t len, bg_tp_mem_t mem,
                               bg_tp_mr_t **out)
{
    bg_tp_mr_t *m = calloc(1, sizeof(*m));
    if (!m) return bg_errorf(BG_ERR_NOMEM, "mem_register: out of memory");
    ucp_mem_map_params_t mp = {0};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                    UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.address = buf;
    mp.length = len;
    mp.memory_type = mem == BG_TP_MEM_CUDA ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    ucs_status_t us = ucp_mem_map(tp->ctx, &mp, &m->memh);
    if (us != UCS_OK) {
        free(m);
        return bg_errorf(BG_ERR_UCX, "rank %d: ucp_mem_map of %zu bytes (%s memory): %s",
                         tp->rank, len, mem == BG_TP_MEM_CUDA ? "CUDA" : "host",
                         ucs_status_string(us));
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
    if (!mr) return;
    for (bg_tp_mr_t **p = &tp->mrs; *p; p = &(*p)->next)
        if (*p == mr) {
            *p = mr->next;
            break;
        }
    ucp_mem_unmap(tp->ctx, mr->memh);
    free(mr);
}

/* ---------------- collectives list ---------------- */

void bg_tp_coll_link(bg_tp_t *tp, bg_tp_coll_t *c)
{
    if (tp->ncolls == tp->colls_cap) {
        int cap = tp->colls_cap ? tp->colls_cap * 2 : 16;
        bg_tp_coll_t **p = realloc(tp->colls, (size_t)cap * sizeof(*p));
        if (!p) return; /* the collective still advances when tested */
        tp->colls = p;
        tp->colls_cap = cap;
    }
    tp->colls[tp->ncolls++] = c;
}

bg_tp_coll_t *bg_tp_coll_last(bg_tp_t *tp)
{
    return tp->ncolls ? tp->colls[tp->ncolls - 1] : NULL;
}

void bg_tp_coll_unlink(bg_tp_t *tp, bg_tp_coll_t *c)
{
    for (int i = 0; i < tp->ncolls; i++)
        if (tp->colls[i] == c) {
            memmove(&tp->colls[i], &tp->colls[i + 1], (size_t)(tp->ncolls - i - 1) * sizeof(c));
            tp->ncolls--;
            return;
        }
}

/* ---------------- create / destroy ---------------- */

/* Address record published in the store: chunk size and host name let every
 * rank check wire compatibility and choose the endpoint's error mode. */
typedef struct {
    uint64_t chunk;
    char host[64];
} addr_hdr_t;

static bg_status_t ucx_init(bg_tp_t *tp)
{
    ucp_config_t *cfg;
    ucs_status_t us = ucp_config_read(NULL, NULL, &cfg);
    if (us != UCS_OK)
        return bg_errorf(BG_ERR_UCX, "rank %d: ucp_config_read: %s", tp->rank,
                         ucs_status_string(us));
    ucp_params_t p = {0};
    p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS |
                   UCP_PARAM_FIELD_NAME;
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

static bg_status_t join_store(bg_tp_t *tp, const bg_tp_bootstrap_t *b, double timeout)
{
    const char *addr = b->master_addr;
    if (b->rank == 0 && !b->store_external) {
        bg_status_t st = bg_tp_server_create(NULL, b->master_port, b->world_size, &tp->server);
        if (st != BG_OK) {
            /* A launcher may already host it there: try as a client. */
            bg_log(BG_LOG_INFO, "rank 0: not hosting the store (%s); connecting instead",
                   bg_last_error());
            tp->server = NULL;
        } else {
            addr = "127.0.0.1";
        }
    }
    bg_status_t st = bg_tp_store_connect(addr, b->master_port, b->rank, b->world_size, timeout,
                                         &tp->store);
    if (st != BG_OK) return st;
    if (!b->store_external) bg_tp_store_set_host_rank0(tp->store, 1);
    return BG_OK;
}

static bg_status_t exchange_addresses(bg_tp_t *tp)
{
    char key[64], host[64] = "";
    gethostname(host, sizeof(host) - 1);
    size_t reclen = sizeof(addr_hdr_t) + tp->my_addrlen;
    char *rec = calloc(1, reclen);
    if (!rec) return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory", tp->rank);
    addr_hdr_t *h = (addr_hdr_t *)rec;
    h->chunk = tp->chunk;
    memcpy(h->host, host, sizeof(h->host));
    memcpy(rec + sizeof(*h), tp->my_addr, tp->my_addrlen);
    snprintf(key, sizeof(key), "bg/tp/addr/%d", tp->rank);
    bg_status_t st = bg_tp_store_set(tp->store, key, rec, reclen);
    free(rec);
    if (st != BG_OK) return st;
    st = bg_tp_store_barrier(tp->store, "bg/tp/init", tp->timeout_s);
    if (st != BG_OK) return st;
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    if (!buf) return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory", tp->rank);
    for (int r = 0; r < tp->world; r++) {
        size_t len;
        snprintf(key, sizeof(key), "bg/tp/addr/%d", r);
        st = bg_tp_store_get(tp->store, key, buf, cap, tp->timeout_s, &len);
        if (st != BG_OK) break;
        if (len < sizeof(addr_hdr_t)) {
            st = bg_errorf(BG_ERR_INTERNAL, "rank %d: address record of rank %d is %zu bytes",
                           tp->rank, r, len);
            break;
        }
        addr_hdr_t ph;
        memcpy(&ph, buf, sizeof(ph));
        if (ph.chunk != tp->chunk) {
            st = bg_errorf(BG_ERR_INVALID,
                           "rank %d: rank %d uses wire chunk %llu bytes, this rank %zu "
                           "(BRIGADE_TP_CHUNK must be equal on all ranks)",
                           tp->rank, r, (unsigned long long)ph.chunk, tp->chunk);
            break;
        }
        peer_t *p = &tp->peers[r];
        p->addrlen = len - sizeof(ph);
        p->addr = malloc(p->addrlen);
        if (!p->addr) {
            st = bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory", tp->rank);
            break;
        }
        memcpy(p->addr, buf + sizeof(ph), p->addrlen);
        ph.host[sizeof(ph.host) - 1] = '\0';
        p->same_host = !strcmp(ph.host, host);
    }
    free(buf);
    return st;
}

bg_status_t bg_tp_create(const bg_tp_config_t *cfg, bg_tp_t **out)
{
    const bg_tp_bootstrap_t *b = &cfg->boot;
    if (b->world_size < 1 || b->rank < 0 || b->rank >= b->world_size || b->world_size > 65535)
        return bg_errorf(BG_ERR_INVALID, "transport: rank %d / world size %d out of range",
                         b->rank, b->world_size);
    bg_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp) return bg_errorf(BG_ERR_NOMEM, "transport: out of memory");
    tp->rank = b->rank;
    tp->world = b->world_size;
    tp->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 60;
    tp->chunk = cfg->chunk_bytes ? cfg->chunk_bytes : (size_t)4 << 20;
    tp->stage_depth = cfg->stage_depth > 0 ? cfg->stage_depth : 4;
    if (tp->stage_depth > SLOTS_MAX) tp->stage_depth = SLOTS_MAX;
    tp->stage_host = atoi(env_str("BRIGADE_TP_STAGE_HOST", "0")) != 0;
    const char *em = env_str("BRIGADE_TP_ERR_MODE", "auto");
    tp->errmode = !strcmp(em, "none") ? ERRMODE_NONE : !strcmp(em, "peer") ? ERRMODE_PEER
                                                                           : ERRMODE_AUTO;
    bg_status_t st;
    tp->peers = calloc((size_t)tp->world, sizeof(*tp->peers));
    if (!tp->peers) {
        st = bg_errorf(BG_ERR_NOMEM, "transport: out of memory for %d peers", tp->world);
        goto err_tp;
    }
    for (int r = 0; r < tp->world; r++) tp->peers[r].tp = tp;
    st = join_store(tp, b, tp->timeout_s);
    if (st != BG_OK) goto err_server;
    install_log_filter();
    st = ucx_init(tp);
    if (st != BG_OK) goto err_store;
    tp->device_path = cfg->device_path;
    if (tp->device_path == BG_TP_DEVICE_AUTO)
        tp->device_path = tp->cuda_direct_ok ? BG_TP_DEVICE_DIRECT : BG_TP_DEVICE_STAGED;
    if (tp->device_path == BG_TP_DEVICE_DIRECT && !tp->cuda_direct_ok) {
        st = bg_errorf(BG_ERR_UNSUPPORTED,
                       "rank %d: direct device path forced but this UCX cannot move CUDA memory "
                       "(ucp_context_query memory types lack CUDA); use BRIGADE_TP_DEVICE_PATH=staged",
                       tp->rank);
        goto err_ucx;
    }
    st = exchange_addresses(tp);
    if (st != BG_OK) goto err_ucx;
    tp->fail_gen_seen = 0;
    *out = tp;
    return BG_OK;

err_ucx:
    for (int r = 0; r < tp->world; r++) free(tp->peers[r].addr);
    ucp_worker_release_address(tp->worker, tp->my_addr);
    ucp_worker_destroy(tp->worker);
    ucp_cleanup(tp->ctx);
err_store:
    /* A failed join is not a death: leave with a goodbye. */
    bg_tp_store_close(tp->store);
err_server:
    if (tp->server) bg_tp_server_destroy(tp->server);
    free(tp->peers);
err_tp:
    free(tp);
    return st;
}

/* Close every endpoint, flushing when peers are alive. */
static void close_endpoints(bg_tp_t *tp, int force)
{
    void **pending = calloc((size_t)tp->world, sizeof(void *));
    for (int r = 0; r < tp->world; r++) {
        peer_t *p = &tp->peers[r];
        if (!p->ep) continue;
        ucp_request_param_t cp = {0};
        if (force || p->dead) {
            cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
            cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
        }
        void *cr = ucp_ep_close_nbx(p->ep, &cp);
        p->ep = NULL;
        if (UCS_PTR_IS_PTR(cr)) {
            if (pending) pending[r] = cr;
            else {
                while (ucp_request_check_status(cr) == UCS_INPROGRESS)
                    ucp_worker_progress(tp->worker);
                ucp_request_free(cr);
            }
        }
    }
    if (!pending) return;
    double dl = bg_tp_now() + 5.0;
    for (;;) {
        int left = 0;
        for (int r = 0; r < tp->world; r++) {
            if (!pending[r]) continue;
            if (ucp_request_check_status(pending[r]) != UCS_INPROGRESS) {
                ucp_request_free(pending[r]);
                pending[r] = NULL;
            } else {
                left++;
            }
        }
        if (!left || bg_tp_now() >= dl) break;
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

bg_status_t bg_tp_destroy(bg_tp_t *tp)
{
    if (!tp) return BG_OK;
    bg_status_t first = BG_OK;
    check_failures(tp);
    bg_tp_coll_abort_all(tp);
    /* 1. Requests: cancel what the user left behind. */
    while (tp->live) bg_tp_cancel(tp, tp->live);
    int failed = bg_tp_store_any_failure(tp->store);
    /* 2. Endpoints, with progress. */
    close_endpoints(tp, failed);
    /* 3. Barrier: nobody tears down a worker a peer may still flush to. */
    if (!failed) {
        bg_status_t st = bg_tp_store_barrier(tp->store, "bg/tp/fini", tp->timeout_s);
        if (st != BG_OK) first = st;
    }
    /* 4. Worker, then memory handles and context (handles belong to it). */
    ucp_worker_release_address(tp->worker, tp->my_addr);
    ucp_worker_destroy(tp->worker);
    for (req_t *r = tp->zombies; r; r = r->lnext)
        for (int i = 0; i < r->nslots; i++)
            if (r->slots[i].sb) {
                copy_settle(r->slots[i].sb);
                sb_free(tp, r->slots[i].sb);
                r->slots[i].sb = NULL;
            }
    for (int i = 0; i < 64; i++)
        while (tp->pool[i]) {
            stage_buf_t *b = tp->pool[i];
            tp->pool[i] = b->next;
            sb_free(tp, b);
        }
    while (tp->mrs) bg_tp_mem_deregister(tp, tp->mrs);
    ucp_cleanup(tp->ctx);
    /* 5. The store: goodbye, and rank 0 serves until everyone has left. */
    bg_tp_store_close(tp->store);
    if (tp->server) {
        bg_status_t st = bg_tp_server_wait(tp->server, tp->timeout_s);
        if (st != BG_OK && first == BG_OK && !failed) first = st;
        bg_tp_server_destroy(tp->server);
    }
#ifdef BG_HAVE_CUDA
    if (tp->streams_ok) {
        cudaStreamDestroy(tp->s_d2h);
        cudaStreamDestroy(tp->s_h2d);
    }
#endif
    while (tp->zombies) {
        req_t *r = tp->zombies;
        tp->zombies = r->lnext;
        free(r);
    }
    while (tp->free_reqs) {
        req_t *r = tp->free_reqs;
        tp->free_reqs = r->lnext;
        free(r);
    }
    for (int r = 0; r < tp->world; r++) free(tp->peers[r].addr);
    free(tp->peers);
    free(tp->colls);
    free(tp);
    return first;
}
