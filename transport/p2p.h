/*
 * transport/p2p.h -- what the point-to-point layer offers the layers above
 * it inside transport/ (the collectives): sends and receives in a traffic
 * class of their own, polling a request from inside progress, and the two
 * callback queues through which bg_tp_progress and bg_tp_destroy drive
 * those layers without naming them.
 *
 * Layer: backoff -> staging -> p2p -> coll. coll.c includes this header,
 * never p2p_int.h; p2p never calls coll.c.
 * Must NOT be included from outside transport/.
 */
#ifndef BG_TP_P2P_H
#define BG_TP_P2P_H

#include <stdint.h>

#include "transport/callbackq.h"
#include "transport/transport.h"

/* Who a message belongs to; messages of different classes never match,
 * whatever their tags. How a class is encoded on the wire is private to
 * the point-to-point layer. */
typedef enum {
    BG_TP_CLASS_USER = 0, /* bg_tp_send / bg_tp_recv */
    BG_TP_CLASS_COLL,     /* collectives */
} bg_tp_class_t;

/* Like bg_tp_send / bg_tp_recv in traffic class `cls` (tags up to
 * BG_TP_TAG_MAX, wider ones refused with BG_ERR_INVALID). */
bg_status_t bg_tp_send_raw(bg_tp_t *tp, bg_tp_class_t cls, int peer, uint64_t tag, const void *buf,
                           size_t len, bg_tp_mem_t mem, bg_tp_req_t **req);
bg_status_t bg_tp_recv_raw(bg_tp_t *tp, bg_tp_class_t cls, int peer, uint64_t tag, void *buf,
                           size_t len, bg_tp_mem_t mem, bg_tp_req_t **req);
/* 1 when `rank` said at the rendezvous it runs on this rank's host (the
 * host name it published equals ours; this rank itself counts), else 0. */
int bg_tp_peer_same_host(const bg_tp_t *tp, int rank);
/* bg_tp_test without progressing UCX: for callers inside progress. */
bg_status_t bg_tp_req_poll(bg_tp_t *tp, bg_tp_req_t *req, int *done);

/*
 * Progress callbacks: fn(arg) runs on every bg_tp_progress, after UCX and
 * the requests have moved, in the order added, until removed (removing
 * from inside any callback is safe). Add while work is in flight, remove
 * when done. BG_ERR_NOMEM when the queue cannot grow.
 */
bg_status_t bg_tp_progress_add(bg_tp_t *tp, bg_tp_cb_fn fn, void *arg, uint64_t *id);
void bg_tp_progress_remove(bg_tp_t *tp, uint64_t id);

/*
 * Abort hooks: run once each, in order, when the context is destroyed,
 * before outstanding requests are cancelled. A hook fails and frees what
 * it owns (and removes its own callbacks). BG_ERR_NOMEM when the queue
 * cannot grow.
 */
bg_status_t bg_tp_abort_hook_add(bg_tp_t *tp, bg_tp_cb_fn fn, void *arg, uint64_t *id);
void bg_tp_abort_hook_remove(bg_tp_t *tp, uint64_t id);

#endif
