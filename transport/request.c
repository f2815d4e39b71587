/*
 * transport/request.c -- tagged point-to-point requests: a message cut into
 * chunks, each put on the wire directly or through a staging buffer, with
 * completions from UCX callbacks; test / wait / cancel; and what happens to
 * requests when a peer dies.
 *
 * Tags on the wire: the caller's 44 bits, with the transport's own bits
 * above them (traffic class, sender rank). That layout is this file's
 * business alone; everyone else passes a class and a 44-bit tag.
 *
 * bg_tp_progress lives here too: UCX, the copy queue, active requests, then
 * the progress callbacks of the layers above (collectives).
 *
 * Must NOT: interpret the bytes, call the layers above (they hook in through
 * the progress callback queue), spin without a deadline, or reuse a
 * staging buffer or slot UCX may still write to.
 */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/backoff.h"
#include "transport/p2p_int.h"
#include "transport/store_int.h"

/* ---------------- the transport's tag bits ---------------- */

/* [63:60] traffic class, [59:44] sender rank (UCX matches tags, not
 * senders, so a receive selects its peer through this field). */
#define CLASS_SHIFT 60
#define SRC_SHIFT 44
static_assert(BG_TP_TAG_BITS == SRC_SHIFT, "caller tags end where the source rank starts");

static uint64_t wire_tag(bg_tp_class_t cls, int src, uint64_t tag)
{
    /* Collectives keep the class number they always had on the wire. */
    uint64_t c = cls == BG_TP_CLASS_COLL ? 14u : 0u;
    return (c << CLASS_SHIFT) | ((uint64_t)(src & 0xffff) << SRC_SHIFT) | tag;
}

/* ---------------- lists ---------------- */

static void list_push(req_t **head, req_t *r)
{
    r->lprev = NULL;
    r->lnext = *head;
    if (*head)
        (*head)->lprev = r;
    *head = r;
}

static void list_del(req_t **head, req_t *r)
{
    if (r->lprev)
        r->lprev->lnext = r->lnext;
    else
        *head = r->lnext;
    if (r->lnext)
        r->lnext->lprev = r->lprev;
    r->lnext = r->lprev = NULL;
}

static void active_add(bg_tp_t *tp, req_t *r)
{
    if (r->on_active)
        return;
    r->on_active = 1;
    r->aprev = NULL;
    r->anext = tp->active;
    if (tp->active)
        tp->active->aprev = r;
    tp->active = r;
}

static void active_del(bg_tp_t *tp, req_t *r)
{
    if (!r->on_active)
        return;
    r->on_active = 0;
    if (r->aprev)
        r->aprev->anext = r->anext;
    else
        tp->active = r->anext;
    if (r->anext)
        r->anext->aprev = r->aprev;
    r->anext = r->aprev = NULL;
}

/* ---------------- failures ---------------- */

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
    snprintf(out, cap, "%s rank %d (tag 0x%016llx, %zu bytes)",
             r->is_send ? "send to" : "recv from", r->peer, (unsigned long long)r->tag, r->len);
}

/* Record the first failure of a request and stop it from starting chunks. */
static void req_fail(bg_tp_t *tp, req_t *r, bg_status_t st, const char *why)
{
    if (r->status != BG_OK)
        return;
    char d[160];
    describe(r, d, sizeof(d));
    r->status = st;
    snprintf(r->err, sizeof(r->err), "rank %d: %s: %.240s", tp->rank, d, why);
    req_cancel_wire(tp, r);
}

/*
 * A rank that fails because its own peer died reports the whole chain
 * ("failed: rank 2 (...): send to rank 3 (...): peer rank 3 died: <cause>"),
 * and each hop adds a prefix until the cause is cut off. Keep the verb and
 * the innermost death only: "failed because peer rank 3 died: <cause>", so
 * whoever is told names the first fault (the host that went away), not the
 * neighbour that noticed it first. Cannot fail; truncates to cap.
 */
void bg_tp_death_root_cause(const char *why, char *out, size_t cap)
{
    const char *last = NULL;
    int who = -1;
    for (const char *p = strstr(why, "peer rank "); p; p = strstr(p + 1, "peer rank ")) {
        int r, n = 0;
        if (sscanf(p, "peer rank %d died: %n", &r, &n) == 1 && n > 0) {
            last = p + n;
            who = r;
        }
    }
    size_t verb = strcspn(why, ":");
    if (!last || last - why <= (ptrdiff_t)verb) {
        snprintf(out, cap, "%s", why);
        return;
    }
    snprintf(out, cap, "%.*s because peer rank %d died: %s", (int)verb, why, who, last);
}

static void peer_fail(bg_tp_t *tp, int rank, const char *why)
{
    peer_t *p = &tp->peers[rank];
    if (p->dead)
        return;
    p->dead = 1;
    bg_tp_death_root_cause(why, p->why, sizeof(p->why));
    why = p->why;
    bg_log(BG_LOG_INFO, "transport rank %d: peer rank %d failed: %s", tp->rank, rank, why);
    char msg[BG_TP_ERRLEN];
    snprintf(msg, sizeof(msg), "peer rank %d died: %.400s", rank, why);
    for (req_t *r = tp->live; r; r = r->lnext)
        if (r->peer == rank) {
            req_fail(tp, r, BG_ERR_PEER, msg);
            r->abandoned = 1;
        }
    bg_tp_ep_force_close(tp, rank);
}

int bg_tp_failures_pending(bg_tp_t *tp)
{
    return tp->ucx_fail_pending || bg_tp_store_fail_gen(tp->rdv.store) != tp->fail_gen_seen;
}

void bg_tp_check_failures(bg_tp_t *tp)
{
    uint64_t g = bg_tp_store_fail_gen(tp->rdv.store);
    if (g != tp->fail_gen_seen) {
        tp->fail_gen_seen = g;
        char why[BG_TP_ERRLEN];
        for (int r = 0; r < tp->world; r++)
            if (r != tp->rank && !tp->peers[r].dead &&
                bg_tp_store_rank_dead(tp->rdv.store, r, why, sizeof(why)))
                peer_fail(tp, r, why);
    }
    if (tp->ucx_fail_pending) {
        tp->ucx_fail_pending = 0;
        for (int r = 0; r < tp->world; r++) {
            peer_t *p = &tp->peers[r];
            if (p->ucx_failed != UCS_OK && !p->dead) {
                char why[BG_TP_ERRLEN];
                snprintf(why, sizeof(why), "UCX reported the endpoint failed: %s",
                         ucs_status_string(p->ucx_failed));
                peer_fail(tp, r, why);
            }
        }
    }
}

/* ---------------- chunks on the wire ---------------- */

static int req_finished(const req_t *r)
{
    if (r->status != BG_OK)
        return r->inflight == 0 || r->abandoned;
    return r->ndone == r->nchunks;
}

static size_t chunk_len(const req_t *r, size_t c)
{
    size_t chunk = r->tp->chunk, off = c * chunk;
    return r->len - off < chunk ? r->len - off : chunk;
}

/* A failed chunk's status as a request failure: cancellation is our own
 * doing (keep the original cause), a truncation is a length mismatch, the
 * rest may be a peer's death seen by UCX first. */
static void chunk_fail(req_t *r, slot_t *s, ucs_status_t us)
{
    char why[160];
    if (us == UCS_ERR_MESSAGE_TRUNCATED)
        snprintf(why, sizeof(why), "message length mismatch in chunk %zu (got %zu bytes)", s->chunk,
                 (size_t)s->info.length);
    else
        snprintf(why, sizeof(why), "UCX: %s in chunk %zu", ucs_status_string(us), s->chunk);
    if (r->status == BG_OK)
        r->ucx_io = us != UCS_ERR_CANCELED && us != UCS_ERR_MESSAGE_TRUNCATED;
    req_fail(r->tp, r, us == UCS_ERR_CANCELED ? BG_ERR_CANCELED : BG_ERR_UCX, why);
}

/* Direct-path completions finish the chunk right in the callback so that a
 * single-chunk request needs no advancing; staged ones are left to advance. */
static void wire_done(slot_t *s, ucs_status_t status)
{
    req_t *r = s->req;
    s->ucx_done = 1;
    s->ucx_status = status;
    r->inflight--;
    if (r->staged)
        return;
    if (status == UCS_OK && !r->is_send && s->info.length != chunk_len(r, s->chunk))
        status = UCS_ERR_MESSAGE_TRUNCATED;
    if (status != UCS_OK)
        chunk_fail(r, s, status);
    else
        r->ndone++;
    if (s->ucx)
        ucp_request_free(s->ucx);
    s->ucx = NULL;
    s->state = SLOT_FREE;
}

static void send_cb(void *ucxreq, ucs_status_t status, void *user)
{
    (void)ucxreq;
    wire_done(user, status);
}

static void recv_cb(void *ucxreq, ucs_status_t status, const ucp_tag_recv_info_t *info, void *user)
{
    (void)ucxreq;
    slot_t *s = user;
    if (info)
        s->info = *info;
    wire_done(s, status);
}

/* Put slot s's chunk of r on the wire from/to `ptr`. */
static void post_wire(bg_tp_t *tp, req_t *r, slot_t *s, void *ptr, size_t n, ucp_mem_h memh,
                      int device)
{
    char err[BG_TP_ERRLEN];
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
        bg_status_t st = bg_tp_ep_get(tp, r->peer, &ep, err);
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

/* ---------------- staged chunks ---------------- */

static void slot_release(bg_tp_t *tp, slot_t *s)
{
    if (s->sb)
        bg_tp_stage_put(&tp->stage, s->sb);
    s->sb = NULL;
    s->state = SLOT_FREE;
}

/* A staged chunk's wire part finished: a send is done, a receive copies out. */
static int staged_wire_done(bg_tp_t *tp, req_t *r, slot_t *s)
{
    size_t n = chunk_len(r, s->chunk);
    ucs_status_t us = s->ucx_status;
    if (s->ucx)
        ucp_request_free(s->ucx);
    s->ucx = NULL;
    if (us == UCS_OK && !r->is_send && s->info.length != n)
        us = UCS_ERR_MESSAGE_TRUNCATED;
    if (us != UCS_OK) {
        chunk_fail(r, s, us);
        slot_release(tp, s);
        return 1;
    }
    if (r->is_send || r->status != BG_OK) {
        slot_release(tp, s);
        if (r->status == BG_OK)
            r->ndone++;
        return 1;
    }
    char err[BG_TP_ERRLEN] = "";
    char *user = r->len ? r->buf + s->chunk * tp->chunk : r->buf;
    bg_status_t st = bg_tp_stage_copy(&tp->stage, s->sb, user, s->sb->ptr, n, 0,
                                      r->mem == BG_TP_MEM_HOST, err, sizeof(err));
    if (st != BG_OK) {
        req_fail(tp, r, st, err);
        slot_release(tp, s);
        return 1;
    }
    s->state = SLOT_COPY_OUT;
    return 1;
}

/* Staged follow-ups after the wire or a copy finished. Returns 1 if moved. */
static int staged_step(bg_tp_t *tp, req_t *r, slot_t *s)
{
    switch (s->state) {
    case SLOT_COPY_IN:
        return 0; /* the copy queue puts it on the wire */
    case SLOT_WIRE:
        return s->ucx_done ? staged_wire_done(tp, r, s) : 0;
    case SLOT_COPY_OUT: {
        char err[BG_TP_ERRLEN] = "";
        int d = bg_tp_stage_copy_done(s->sb, err, sizeof(err));
        if (d == 0)
            return 0;
        if (d < 0)
            req_fail(tp, r, BG_ERR_CUDA, err);
        else
            r->ndone++;
        slot_release(tp, s);
        return 1;
    }
    default:
        return 0;
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
    char err[BG_TP_ERRLEN] = "";
    bg_status_t st = bg_tp_stage_get(&tp->stage, n, r->mem == BG_TP_MEM_CUDA, &s->sb);
    if (st != BG_OK) {
        req_fail(tp, r, st, bg_last_error());
        return;
    }
    if (!r->is_send) {
        post_wire(tp, r, s, s->sb->ptr, n, s->sb->memh, 0);
        if (s->state == SLOT_FREE && !s->ucx_done)
            slot_release(tp, s); /* failed to post */
        return;
    }
    st = bg_tp_stage_copy(&tp->stage, s->sb, s->sb->ptr, user, n, 1, r->mem == BG_TP_MEM_HOST, err,
                          sizeof(err));
    if (st != BG_OK) {
        req_fail(tp, r, st, err);
        slot_release(tp, s);
        return;
    }
    s->state = SLOT_COPY_IN;
    bg_tp_stage_enqueue(&tp->stage, s->sb, s);
}

/* Put finished device-to-host copies on the wire, oldest first. */
static int drain_copy_queue(bg_tp_t *tp)
{
    int moved = 0;
    for (;;) {
        char err[BG_TP_ERRLEN] = "";
        int ok = 0;
        bg_tp_stage_buf_t *b = bg_tp_stage_next_ready(&tp->stage, &ok, err, sizeof(err));
        if (!b)
            break;
        moved = 1;
        slot_t *s = b->owner;
        req_t *r = s->req;
        if (!ok)
            req_fail(tp, r, BG_ERR_CUDA, err);
        else
            post_wire(tp, r, s, b->ptr, chunk_len(r, s->chunk), b->memh, 0);
    }
    return moved;
}

/* ---------------- requests ---------------- */

/* Move a request as far as it can go now. Returns 1 if anything moved. */
static int req_advance(bg_tp_t *tp, req_t *r)
{
    int moved = 0;
    if (r->staged) {
        size_t lo = r->next_chunk > (size_t)r->nslots ? r->next_chunk - (size_t)r->nslots : 0;
        for (size_t c = lo; c < r->next_chunk; c++) {
            slot_t *s = &r->slots[c % (size_t)r->nslots];
            if (s->chunk == c)
                moved |= staged_step(tp, r, s);
        }
        /* A failed staged request still owns buffers in flight: release
         * those whose wire part is over so the request can finish. */
        if (r->status != BG_OK)
            for (int i = 0; i < r->nslots; i++)
                if (r->slots[i].sb && r->slots[i].state != SLOT_WIRE)
                    slot_release(tp, &r->slots[i]);
    }
    while (r->status == BG_OK && r->next_chunk < r->nchunks) {
        slot_t *s = &r->slots[r->next_chunk % (size_t)r->nslots];
        if (s->state != SLOT_FREE)
            break;
        start_chunk(tp, r, s, r->next_chunk);
        r->next_chunk++;
        moved = 1;
    }
    if (r->staged && r->is_send && bg_tp_stage_queued(&tp->stage))
        moved |= drain_copy_queue(tp);
    if ((r->next_chunk >= r->nchunks && !r->staged && r->status == BG_OK) || req_finished(r))
        active_del(tp, r);
    return moved;
}

static req_t *req_alloc(bg_tp_t *tp)
{
    req_t *r = tp->free_reqs;
    if (r)
        tp->free_reqs = r->lnext;
    else
        r = malloc(sizeof(*r));
    if (!r)
        return NULL;
    /* Only the header before the error text needs clearing (slots are set
     * up as chunks start, the text is written on failure): clearing the
     * 320-byte text too was the largest cost of posting a small message. */
    memset(r, 0, offsetof(req_t, err));
    r->err[0] = '\0';
    return r;
}

static void req_free_slots(bg_tp_t *tp, req_t *r)
{
    for (int i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        if (s->ucx)
            ucp_request_free(s->ucx);
        s->ucx = NULL;
        if (s->sb)
            bg_tp_stage_put(&tp->stage, s->sb);
        s->sb = NULL;
    }
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
    req_free_slots(tp, r);
    r->lnext = tp->free_reqs;
    tp->free_reqs = r;
}

static void reqs_reap(bg_tp_t *tp)
{
    for (req_t *r = tp->zombies, *nx; r; r = nx) {
        nx = r->lnext;
        if (r->inflight > 0)
            continue;
        list_del(&tp->zombies, r);
        req_free_slots(tp, r);
        r->lnext = tp->free_reqs;
        tp->free_reqs = r;
    }
}

/* Set up r's fields and slots for a message (no chunk started yet). */
static void req_init(bg_tp_t *tp, req_t *r, int is_send, int peer, uint64_t wtag, void *buf,
                     size_t len, bg_tp_mem_t mem)
{
    r->tp = tp;
    r->peer = peer;
    r->is_send = is_send;
    r->tag = wtag;
    r->buf = buf;
    r->len = len;
    r->mem = mem;
    r->staged = (mem == BG_TP_MEM_CUDA && tp->device_path == BG_TP_DEVICE_STAGED) ||
                (mem == BG_TP_MEM_HOST && tp->stage_host);
    r->nchunks = len ? (len + tp->chunk - 1) / tp->chunk : 1;
    r->nslots = r->staged ? tp->stage_depth : BG_TP_SLOTS_MAX;
    if ((size_t)r->nslots > r->nchunks)
        r->nslots = (int)r->nchunks;
    for (int i = 0; i < r->nslots; i++) {
        slot_t *s = &r->slots[i];
        s->req = r;
        s->state = SLOT_FREE;
        s->ucx = NULL;
        s->sb = NULL;
        s->chunk = (size_t)-1;
    }
    if (tp->mrs && !r->staged && len > BG_TP_EAGER_MAX) /* eager: copied, memh unused */
        r->memh = bg_tp_mr_find(tp, buf, len);
}

/* The handle of every request that finished while it was posted: test,
 * wait and cancel see it done and OK; it owns nothing and is never freed. */
static req_t req_done_;

static int is_done_handle(const req_t *r)
{
    return r == &req_done_;
}

/*
 * A small host send is put on the wire before a request is built: an eager
 * message almost always completes inside the call, and then the caller gets
 * the shared done handle and no request is touched beyond the few fields a
 * callback would read. (Building one per message queued ~30 stores behind
 * the copy into the peer's FIFO: a tenth of a 1 KiB stream's time.) The
 * free list's head lends its first slot as the callback's target; if UCX
 * keeps the send in flight, that request is adopted. Returns 1 with *out
 * set, or 0 with nothing sent (no endpoint or spare request yet, or an
 * error, which the normal path meets again and reports).
 */
static int send_in_place(bg_tp_t *tp, int peer, uint64_t wtag, void *buf, size_t len,
                         bg_tp_req_t **out)
{
    ucp_ep_h ep = tp->peers[peer].ep;
    req_t *r = tp->free_reqs;
    if (!ep || !r)
        return 0;
    slot_t *s = &r->slots[0];
    r->staged = 0;
    r->is_send = 1;
    r->inflight = 1;
    r->status = BG_OK;
    s->req = r;
    s->ucx = NULL;
    s->ucx_done = 0;
    ucp_request_param_t prm;
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = send_cb;
    prm.user_data = s;
    void *u = ucp_tag_send_nbx(ep, buf, len, wtag, &prm);
    if (u == NULL) {
        *out = &req_done_;
        return 1;
    }
    if (UCS_PTR_IS_ERR(u))
        return 0;
    if (s->ucx_done) { /* called back inside the call */
        ucs_status_t us = s->ucx_status;
        ucp_request_free(u);
        if (us != UCS_OK)
            return 0;
        *out = &req_done_;
        return 1;
    }
    r = req_alloc(tp); /* the same request: the head of the free list */
    req_init(tp, r, 1, peer, wtag, buf, len, BG_TP_MEM_HOST);
    s->chunk = 0;
    s->state = SLOT_WIRE;
    s->ucx = u;
    r->inflight = 1;
    r->next_chunk = 1;
    list_push(&tp->live, r);
    *out = r;
    return 1;
}

static bg_status_t post(bg_tp_t *tp, bg_tp_class_t cls, int is_send, int peer, uint64_t tag,
                        void *buf, size_t len, bg_tp_mem_t mem, bg_tp_req_t **out)
{
    const char *dir = is_send ? "send to" : "recv from";
    if (peer < 0 || peer >= tp->world)
        return bg_errorf(BG_ERR_INVALID, "rank %d: %s rank %d: no such rank (world size %d)",
                         tp->rank, dir, peer, tp->world);
    /* Callers own the low BG_TP_TAG_BITS; the bits above are the
     * transport's, so a wider tag is refused, not masked. */
    if (tag > BG_TP_TAG_MAX)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d: %s rank %d: tag 0x%016llx does not fit in %d bits", tp->rank,
                         dir, peer, (unsigned long long)tag, BG_TP_TAG_BITS);
#ifndef BG_HAVE_CUDA
    if (mem == BG_TP_MEM_CUDA)
        return bg_errorf(
            BG_ERR_UNSUPPORTED,
            "rank %d: device buffer to/from rank %d but brigade was built without CUDA", tp->rank,
            peer);
#endif
    if (bg_tp_failures_pending(tp))
        bg_tp_check_failures(tp);
    if (tp->peers[peer].dead)
        return bg_errorf(BG_ERR_PEER, "rank %d: %s rank %d: peer rank %d died: %s", tp->rank, dir,
                         peer, peer, tp->peers[peer].why);
    uint64_t wtag = wire_tag(cls, is_send ? tp->rank : peer, tag);
    if (is_send && mem == BG_TP_MEM_HOST && !tp->stage_host && len <= BG_TP_EAGER_MAX &&
        len <= tp->chunk && send_in_place(tp, peer, wtag, buf, len, out))
        return BG_OK;
    req_t *r = req_alloc(tp);
    if (!r)
        return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory for a request", tp->rank);
    req_init(tp, r, is_send, peer, wtag, buf, len, mem);
    list_push(&tp->live, r);
    if (r->staged || r->nchunks > (size_t)r->nslots)
        active_add(tp, r);
    req_advance(tp, r);
    *out = r;
    return BG_OK;
}

bg_status_t bg_tp_send_raw(bg_tp_t *tp, bg_tp_class_t cls, int peer, uint64_t tag, const void *buf,
                           size_t len, bg_tp_mem_t mem, bg_tp_req_t **req)
{
    return post(tp, cls, 1, peer, tag, (void *)buf, len, mem, req);
}

bg_status_t bg_tp_recv_raw(bg_tp_t *tp, bg_tp_class_t cls, int peer, uint64_t tag, void *buf,
                           size_t len, bg_tp_mem_t mem, bg_tp_req_t **req)
{
    return post(tp, cls, 0, peer, tag, buf, len, mem, req);
}

bg_status_t bg_tp_send(bg_tp_t *tp, int peer, uint64_t tag, const void *buf, size_t len,
                       bg_tp_mem_t mem, bg_tp_req_t **req)
{
    return post(tp, BG_TP_CLASS_USER, 1, peer, tag, (void *)buf, len, mem, req);
}

bg_status_t bg_tp_recv(bg_tp_t *tp, int peer, uint64_t tag, void *buf, size_t len, bg_tp_mem_t mem,
                       bg_tp_req_t **req)
{
    return post(tp, BG_TP_CLASS_USER, 0, peer, tag, buf, len, mem, req);
}

/*
 * A transport error on the shared-memory path often means the peer process
 * just died (UCX sees it first, e.g. a CMA read from a vanished pid). Give
 * the store up to a second to confirm, so the error names the death rather
 * than an I/O error. Only on this already-failing path.
 */
static void explain_transport_error(bg_tp_t *tp, req_t *r)
{
    char why[BG_TP_ERRLEN];
    r->ucx_io = 0;
    if (!bg_tp_await_death(tp, r->peer, 1.0, why, sizeof(why)))
        return;
    char root[BG_TP_ERRLEN];
    bg_tp_death_root_cause(why, root, sizeof(root));
    char d[160];
    describe(r, d, sizeof(d));
    r->status = BG_ERR_PEER;
    snprintf(r->err, sizeof(r->err), "rank %d: %s: peer rank %d died: %.220s", tp->rank, d, r->peer,
             root);
}

bg_status_t bg_tp_req_poll(bg_tp_t *tp, bg_tp_req_t *r, int *done)
{
    if (is_done_handle(r)) {
        *done = 1;
        return BG_OK;
    }
    if (r->on_active || r->staged)
        req_advance(tp, r);
    if (!req_finished(r)) {
        *done = 0;
        return BG_OK;
    }
    if (r->status == BG_ERR_UCX && r->ucx_io)
        explain_transport_error(tp, r);
    bg_status_t st = r->status;
    if (st != BG_OK)
        bg_errorf(st, "%s", r->err);
    req_release(tp, r);
    *done = 1;
    return st;
}

/* ---------------- progress ---------------- */

bg_status_t bg_tp_progress_add(bg_tp_t *tp, bg_tp_cb_fn fn, void *arg, uint64_t *id)
{
    return bg_tp_cbq_add(&tp->progress_q, fn, arg, "transport progress", id);
}

void bg_tp_progress_remove(bg_tp_t *tp, uint64_t id)
{
    bg_tp_cbq_remove(&tp->progress_q, id);
}

/* Order: failures first (so nothing advances towards a dead peer), UCX,
 * the copy queue and active requests, then the layers above, which see
 * the requests' newest state. */
int bg_tp_progress(bg_tp_t *tp)
{
    if (bg_tp_failures_pending(tp))
        bg_tp_check_failures(tp);
    int moved = ucp_worker_progress(tp->worker) != 0;
    if (bg_tp_stage_queued(&tp->stage))
        moved |= drain_copy_queue(tp);
    for (req_t *r = tp->active, *nx; r; r = nx) {
        nx = r->anext;
        moved |= req_advance(tp, r);
    }
    moved |= bg_tp_cbq_dispatch(&tp->progress_q);
    if (tp->zombies)
        reqs_reap(tp);
    return moved;
}

bg_status_t bg_tp_test(bg_tp_t *tp, bg_tp_req_t *req, int *done)
{
    bg_tp_progress(tp);
    return bg_tp_req_poll(tp, req, done);
}

bg_status_t bg_tp_wait(bg_tp_t *tp, bg_tp_req_t *req, double timeout_s)
{
    /* Fast path: a request that finished while it was posted (an eager
     * send completed in place) or during earlier progress needs no
     * progress round and no clock read; small messages live here. */
    int done;
    bg_status_t st = bg_tp_req_poll(tp, req, &done);
    if (done)
        return st;
    /* The clock is first read after 256 rounds: most waits end sooner, and
     * a clock read per wait was a visible cost of small-message streams.
     * The timeout starts that much late (microseconds). */
    double deadline = 0;
    unsigned idle = 0;
    for (unsigned it = 1;; it++) {
        int moved = bg_tp_progress(tp);
        st = bg_tp_req_poll(tp, req, &done);
        if (done)
            return st;
        idle = moved ? 0 : idle + 1;
        if ((it & 255) == 0 && deadline == 0)
            deadline = bg_tp_deadline(timeout_s);
        else if ((it & 255) == 0 && bg_now_s() >= deadline) {
            char d[160];
            describe(req, d, sizeof(d));
            return bg_errorf(BG_ERR_TIMEOUT, "rank %d: %s: no completion within %.1f s", tp->rank,
                             d, timeout_s);
        }
        bg_tp_backoff(idle);
    }
}

void bg_tp_cancel(bg_tp_t *tp, bg_tp_req_t *r)
{
    if (!r || is_done_handle(r))
        return;
    if (r->status == BG_OK)
        req_fail(tp, r, BG_ERR_CANCELED, "cancelled");
    /* Let cancelled receives report back before the slot memory is reused. */
    double dl = bg_now_s() + 0.1;
    while (r->inflight > 0 && !r->is_send && bg_now_s() < dl)
        ucp_worker_progress(tp->worker);
    req_release(tp, r);
}

void bg_tp_reqs_fini(bg_tp_t *tp)
{
    /* UCX is gone: zombies' slots hold no live UCX requests any more. */
    for (req_t *r = tp->zombies; r; r = r->lnext)
        for (int i = 0; i < r->nslots; i++) {
            r->slots[i].ucx = NULL;
            if (r->slots[i].sb)
                bg_tp_stage_put(&tp->stage, r->slots[i].sb);
            r->slots[i].sb = NULL;
        }
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
}
