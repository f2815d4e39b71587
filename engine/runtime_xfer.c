/*
 * engine/runtime_xfer.c -- transfers: the SEND/RECV actions of a list, and
 * the two queues behind them.
 *
 * A receive is posted into a cached buffer of its slot (ahead of time by
 * the loop's lookahead) and waited for by its RECV action. A SEND queues
 * its packed message in `defer` behind the compute producing it (an event,
 * no host sync); once the event has passed it goes to the transport and
 * waits in `pend` until complete, when its buffer returns to the cache.
 * Chunk allreduces share the deferred queue so that replicas start them in
 * the same order. Messages are tagged with engine/tag.h's layout. Every
 * function can fail (transport errors, timeouts, a tag that does not fit,
 * a schedule whose SEND has nothing to send), with the message recorded.
 * Must NOT run compute or decide what a message holds (runtime_compute.c
 * packs it).
 */
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

/* Where a transfer action's message lives on this rank. */
typedef struct xfer {
    const bg_net_edge_t *ed; /* NULL: nothing crosses this adjacent edge (empty message) */
    rt_slot_t *s;
    int lci;
    void **buf;        /* the slot's buffer for this message */
    bg_tp_req_t **req; /* receives: the slot's request */
    size_t bytes;
    int peer; /* global rank at the other end */
    uint64_t tag;
} xfer_t;

/*
 * The one map from a transfer action to its edge and slot buffer.
 * Activations flow over edge src -> dst; gradients flow back from consumer
 * src to producer dst, over edge dst -> src. Which of the chunk's edge
 * lists holds the edge depends on the side: activations arrive on an
 * incoming edge and leave on an outgoing one, gradients the other way.
 */
static bg_status_t xfer_locate(bg_rt_t *rt, const bg_action_t *a, xfer_t *x)
{
    memset(x, 0, sizeof(*x));
    bool act = a->kind == BG_ACT_SEND_ACT || a->kind == BG_ACT_RECV_ACT;
    bool recv = bg_act_is_recv(a->kind);
    x->lci = rt_local_of(rt, a->chunk);
    if (x->lci < 0)
        return bg_errorf(BG_ERR_INTERNAL, "%s for chunk %d not on this rank",
                         bg_act_kind_name(a->kind), a->chunk);
    bg_status_t st = bg_tag_edge(act ? BG_TAG_ACT : BG_TAG_GRAD, a->mb, a->src, a->dst, &x->tag);
    if (st == BG_OK)
        st = bg_rt_slot_open_(rt, a->mb, x->lci, &x->s);
    if (st != BG_OK)
        return st;
    x->peer = rt_peer_rank(rt, a->peer);
    int e =
        act ? bg_net_edge_find(rt->net, a->src, a->dst) : bg_net_edge_find(rt->net, a->dst, a->src);
    if (e < 0)
        return BG_OK;
    x->ed = &rt->net->edges[e];
    const rt_chunk_t *ch = &rt->lc[x->lci];
    int i = act == recv ? rt_edge_in(ch, e) : rt_edge_out(ch, e);
    if (i < 0)
        return bg_errorf(BG_ERR_INTERNAL, "edge %d -> %d does not touch chunk %d", x->ed->src,
                         x->ed->dst, ch->c);
    if (recv) {
        x->buf = act ? &x->s->act_recv[i] : &x->s->grad_recv[i];
        x->req = act ? &x->s->act_req[i] : &x->s->grad_req[i];
    } else {
        x->buf = act ? &x->s->act_send[i] : &x->s->grad_send[i];
    }
    if (act)
        for (int k = 0; k < x->ed->n; k++)
            x->bytes += rt_tensor_bytes(rt, x->ed->tensors[k]);
    else
        x->bytes = x->ed->grad_elems * rt_act_esize(rt);
    return BG_OK;
}

/* Post x's receive unless it is empty or already posted. */
static bg_status_t post(bg_rt_t *rt, xfer_t *x)
{
    if (!x->ed || *x->buf)
        return BG_OK;
    /* The transport writes it: only a buffer no queued compute reads. */
    bg_status_t st = bg_rt_dalloc_(rt, x->bytes, true, x->buf);
    if (st != BG_OK)
        return st;
    return bg_tp_recv(rt->conf.tp, x->peer, x->tag, *x->buf, x->bytes, rt->mem, x->req);
}

bg_status_t bg_rt_recv_post_(bg_rt_t *rt, const bg_action_t *a)
{
    xfer_t x;
    bg_status_t st = xfer_locate(rt, a, &x);
    return st == BG_OK ? post(rt, &x) : st;
}

bg_status_t bg_rt_recv_wait_(bg_rt_t *rt, const bg_action_t *a)
{
    xfer_t x;
    bg_status_t st = xfer_locate(rt, a, &x);
    if (st == BG_OK)
        st = post(rt, &x);
    if (st != BG_OK)
        return st;
    if (!x.ed) {
        /* Keep the pairing with the peer's empty send. */
        char dummy;
        bg_tp_req_t *r;
        st = bg_tp_recv(rt->conf.tp, x.peer, x.tag, &dummy, 0, BG_TP_MEM_HOST, &r);
        return st == BG_OK ? bg_tp_wait(rt->conf.tp, r, rt->conf.timeout_s) : st;
    }
    if (!*x.req)
        return BG_OK;
    st = bg_tp_wait(rt->conf.tp, *x.req, rt->conf.timeout_s);
    *x.req = NULL;
    return st;
}

/* ------------------------------------------------------------- the queues */

static bg_status_t pend_add(bg_rt_t *rt, bg_tp_req_t *req, void *buf)
{
    if (bg_grow(&rt->pend, &rt->cappend, rt->npend + 1, sizeof(*rt->pend)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory tracking sends");
    rt->pend[rt->npend++] = (rt_pending_t){req, buf};
    return BG_OK;
}

bg_status_t bg_rt_pend_progress_(bg_rt_t *rt, bool wait)
{
    bg_status_t first = BG_OK;
    size_t k = 0;
    for (size_t i = 0; i < rt->npend; i++) {
        rt_pending_t *p = &rt->pend[i];
        bg_status_t st;
        int done = 0;
        if (wait) {
            st = bg_tp_wait(rt->conf.tp, p->req, rt->conf.timeout_s);
            done = st != BG_ERR_TIMEOUT;
            if (!done)
                bg_tp_cancel(rt->conf.tp, p->req), done = 1;
        } else {
            st = bg_tp_test(rt->conf.tp, p->req, &done);
        }
        if (done) {
            bg_rt_dfree_(rt, p->buf);
            if (st != BG_OK && first == BG_OK)
                first = st;
        } else {
            rt->pend[k++] = *p;
        }
    }
    rt->npend = k;
    return first;
}

/* Queue a transfer or allreduce behind the compute queued so far. */
static bg_status_t defer_add(bg_rt_t *rt, rt_deferred_t d)
{
    if (bg_grow(&rt->defer, &rt->capdefer, rt->ndefer + 1, sizeof(*rt->defer)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory queueing transfers");
    bg_status_t st = bg_event_create(rt->conf.be, &d.ready);
    if (st == BG_OK)
        st = bg_event_record(rt->conf.be, d.ready, rt->compute);
    if (st != BG_OK) {
        bg_event_destroy(rt->conf.be, d.ready);
        return st;
    }
    rt->defer[rt->ndefer++] = d;
    return BG_OK;
}

/* Start one deferred entry whose event has passed. */
static bg_status_t defer_start(bg_rt_t *rt, rt_deferred_t *d)
{
    if (d->allreduce)
        return bg_rt_dp_sync_start_(rt, d->lci, d->buf, d->tied);
    bg_tp_req_t *req;
    bg_status_t st = bg_tp_send(rt->conf.tp, d->peer, d->tag, d->buf, d->bytes, rt->mem, &req);
    if (st == BG_OK)
        return pend_add(rt, req, d->buf);
    bg_rt_dfree_(rt, d->buf);
    return st;
}

/*
 * Hand queued transfers to the transport once the compute producing their
 * data has finished: event queries, no host synchronisation (`wait` blocks,
 * for the end of a step). Strictly in order: data-parallel replicas must
 * start their allreduces in the same order.
 */
bg_status_t bg_rt_defer_progress_(bg_rt_t *rt, bool wait)
{
    size_t k = 0;
    bg_status_t st = BG_OK;
    for (; k < rt->ndefer && st == BG_OK; k++) {
        rt_deferred_t *d = &rt->defer[k];
        int done = 1;
        st = wait ? bg_event_synchronize(rt->conf.be, d->ready)
                  : bg_event_query(rt->conf.be, d->ready, &done);
        if (st != BG_OK || !done)
            break;
        st = defer_start(rt, d);
        bg_event_destroy(rt->conf.be, d->ready);
    }
    if (k)
        memmove(rt->defer, rt->defer + k, sizeof(*rt->defer) * (rt->ndefer - k));
    rt->ndefer -= k;
    return st;
}

bg_status_t bg_rt_send_(bg_rt_t *rt, const bg_action_t *a)
{
    xfer_t x;
    bg_status_t st = xfer_locate(rt, a, &x);
    if (st != BG_OK)
        return st;
    if (!x.ed) {
        static char empty;
        bg_tp_req_t *req;
        st = bg_tp_send(rt->conf.tp, x.peer, x.tag, &empty, 0, BG_TP_MEM_HOST, &req);
        return st == BG_OK ? pend_add(rt, req, NULL) : st;
    }
    if (!*x.buf && x.bytes)
        return bg_errorf(BG_ERR_INTERNAL,
                         "%s(mb=%d, %d->%d): nothing to send (compute did not run)",
                         bg_act_kind_name(a->kind), a->mb, a->src, a->dst);
    st = defer_add(rt, (rt_deferred_t){NULL, false, x.lci, x.peer, x.tag, *x.buf, x.bytes, NULL});
    if (st == BG_OK)
        *x.buf = NULL; /* the send (then the pending list) owns it now */
    return st;
}

bg_status_t bg_rt_allreduce_start_(bg_rt_t *rt, int lci)
{
    /* Starts once the chunk's last W has run on the device. */
    rt_chunk_t *ch = &rt->lc[lci];
    if (rt->conf.dps > 1 && (ch->grad_len || ch->tied_len) && !rt->conf.ps.servers) /* ps: servers sum */
        /* the buckets as of now: 2bw switches gradient sets before this starts */
        return defer_add(rt, (rt_deferred_t){NULL, true, lci, -1, 0, ch->grad_dev, 0, ch->tied_dev});
    return BG_OK;
}

void bg_rt_xfer_free_(bg_rt_t *rt)
{
    for (size_t i = 0; i < rt->ndefer; i++)
        bg_event_destroy(rt->conf.be, rt->defer[i].ready);
    free(rt->defer);
    free(rt->pend);
    rt->defer = NULL;
    rt->pend = NULL;
    rt->ndefer = rt->npend = 0;
}
