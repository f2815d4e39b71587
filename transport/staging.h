/*
 * transport/staging.h -- device staging for the point-to-point layer: a pool
 * of pinned host buffers (registered once with UCX), asynchronous copies
 * between them and device memory with completion events, and the ordered
 * copy queue that puts staged-send chunks on the wire in copy order.
 *
 * Layer: above backoff.h, below p2p (p2p_int.h). Knows buffers and copies,
 * not requests: a queued buffer carries an opaque `owner` for its user.
 * Must NOT: post UCX operations (only ucp_mem_map of its own buffers), or
 * reuse a buffer whose copy may still be running.
 */
#ifndef BG_TP_STAGING_H
#define BG_TP_STAGING_H

#include <stddef.h>

#include <ucp/api/ucp.h>

#ifdef BG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "base/status.h"

/* One staging buffer; p2p reads ptr, cap and memh, the rest is staging's. */
typedef struct bg_tp_stage_buf {
    void *ptr;
    size_t cap;
    ucp_mem_h memh; /* NULL when registration failed (UCX registers per op) */
    void *owner;    /* set by bg_tp_stage_enqueue */
    int cls;
    int pinned;  /* cudaHostAlloc'd (else malloc: host staging for tests) */
    int pending; /* an async copy into/out of it is in flight */
    int queued;  /* on the copy queue */
#ifdef BG_HAVE_CUDA
    cudaEvent_t ev;
    int has_ev;
#endif
    struct bg_tp_stage_buf *next;          /* pool list */
    struct bg_tp_stage_buf *qnext, *qprev; /* copy queue */
} bg_tp_stage_buf_t;

#define BG_TP_STAGE_CLASSES 64

typedef struct {
    ucp_context_h ctx;
    bg_tp_stage_buf_t *pool[BG_TP_STAGE_CLASSES]; /* free buffers by size class */
    /* Staged-send buffers whose device-to-host copy is in flight, in copy
     * order: they go on the wire strictly in this order so that same-tag
     * messages keep their posting order across requests. */
    bg_tp_stage_buf_t *q_head, *q_tail;
    int device; /* CUDA device the streams and events are created on; -1 none */
#ifdef BG_HAVE_CUDA
    cudaStream_t s_d2h, s_h2d;
    int streams_ok;
#endif
} bg_tp_stage_t;

/* Set up an empty stage for UCX context ctx (buffers are registered with
 * it) whose streams and events live on CUDA `device` (-1: none known, the
 * current device at first use). Cannot fail: pools and streams are created
 * on first use. */
void bg_tp_stage_init(bg_tp_stage_t *sg, ucp_context_h ctx, int device);
/* Free every pooled buffer and the streams. Buffers still handed out are the
 * caller's to put back first. Call before ctx is cleaned up. */
void bg_tp_stage_fini(bg_tp_stage_t *sg);

/* A buffer of at least n bytes (pinned when `device`), owned by the pool:
 * give it back with bg_tp_stage_put. BG_ERR_NOMEM / BG_ERR_CUDA /
 * BG_ERR_UNSUPPORTED (device without CUDA) with a message. */
bg_status_t bg_tp_stage_get(bg_tp_stage_t *sg, size_t n, int device, bg_tp_stage_buf_t **out);
/* Return a buffer to the pool: takes it off the copy queue and waits out a
 * copy still running on it. Cannot fail. */
void bg_tp_stage_put(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b);

/*
 * Start copying n bytes from src to dst, one of which is b's memory;
 * to_host: device -> host (else host -> device). `host`: both sides are host
 * memory (the test knob), copied synchronously. On failure fills err (cap
 * bytes) and returns BG_ERR_CUDA / BG_ERR_UNSUPPORTED; records no message.
 */
bg_status_t bg_tp_stage_copy(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b, void *dst, const void *src,
                             size_t n, int to_host, int host, char *err, size_t cap);
/* 1 when b's copy has finished, 0 while running, -1 on a CUDA error (err
 * filled). A running copy leaves no error behind (cudaEventQuery's
 * cudaErrorNotReady is cleared from the thread's last error). */
int bg_tp_stage_copy_done(bg_tp_stage_buf_t *b, char *err, size_t cap);

/* Append b (its copy just started) to the copy queue on behalf of owner. */
void bg_tp_stage_enqueue(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b, void *owner);
/*
 * The oldest queued buffer if its copy has finished, taken off the queue;
 * NULL if the queue is empty or its head is still copying. *ok = 0 when
 * that copy failed (err filled), 1 otherwise.
 */
bg_tp_stage_buf_t *bg_tp_stage_next_ready(bg_tp_stage_t *sg, int *ok, char *err, size_t cap);

static inline int bg_tp_stage_queued(const bg_tp_stage_t *sg)
{
    return sg->q_head != NULL;
}

#endif
