/*
 * transport/staging.c -- pinned staging buffers, their copies and the
 * ordered copy queue (staging.h). The staged device path: each chunk goes
 * device -> pinned buffer -> wire on the sender and wire -> pinned buffer
 * -> device on the receiver, copies on two private non-blocking streams, so
 * the copy of chunk k+1 overlaps the wire of chunk k.
 *
 * Must NOT: know requests or tags, post UCX operations, or block except to
 * settle a copy whose buffer is being given back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/staging.h"

void bg_tp_stage_init(bg_tp_stage_t *sg, ucp_context_h ctx, int device)
{
    memset(sg, 0, sizeof(*sg));
    sg->ctx = ctx;
    sg->device = device;
}

#ifdef BG_HAVE_CUDA
/* Make the stage's device current (streams and events belong to the device
 * current when they are created); *prev gets the caller's, -1 if unchanged. */
static cudaError_t device_enter(const bg_tp_stage_t *sg, int *prev)
{
    *prev = -1;
    if (sg->device < 0)
        return cudaSuccess;
    int cur;
    cudaError_t ce = cudaGetDevice(&cur);
    if (ce == cudaSuccess && cur != sg->device) {
        ce = cudaSetDevice(sg->device);
        if (ce == cudaSuccess)
            *prev = cur;
    }
    return ce;
}

static void device_leave(int prev)
{
    if (prev >= 0)
        cudaSetDevice(prev);
}
#endif

static int size_class(size_t n)
{
    int c = 12; /* 4 KiB minimum: tiny pinned allocations are wasteful */
    while (((size_t)1 << c) < n)
        c++;
    return c;
}

/* Wait out a copy before its buffer is reused (teardown, failures). */
static void settle(bg_tp_stage_buf_t *b)
{
#ifdef BG_HAVE_CUDA
    if (b->pending)
        cudaEventSynchronize(b->ev);
#endif
    b->pending = 0;
}

static void dequeue(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b)
{
    if (!b->queued)
        return;
    b->queued = 0;
    if (b->qprev)
        b->qprev->qnext = b->qnext;
    else
        sg->q_head = b->qnext;
    if (b->qnext)
        b->qnext->qprev = b->qprev;
    else
        sg->q_tail = b->qprev;
    b->qnext = b->qprev = NULL;
}

/* Pinned memory and its event (timing off: it only orders; made once per
 * pooled buffer and reused by every copy through it), on the stage's
 * device, or an error naming the CUDA call. */
static bg_status_t alloc_pinned(const bg_tp_stage_t *sg, bg_tp_stage_buf_t *b)
{
#ifdef BG_HAVE_CUDA
    int prev;
    cudaError_t ce = device_enter(sg, &prev);
    if (ce != cudaSuccess)
        return bg_errorf(BG_ERR_CUDA, "staging: cudaSetDevice(%d): %s", sg->device,
                         cudaGetErrorString(ce));
    ce = cudaHostAlloc(&b->ptr, b->cap, cudaHostAllocPortable);
    if (ce != cudaSuccess) {
        device_leave(prev);
        return bg_errorf(BG_ERR_CUDA, "staging: cudaHostAlloc(%zu): %s", b->cap,
                         cudaGetErrorString(ce));
    }
    ce = cudaEventCreateWithFlags(&b->ev, cudaEventDisableTiming);
    device_leave(prev);
    if (ce != cudaSuccess) {
        cudaFreeHost(b->ptr);
        return bg_errorf(BG_ERR_CUDA, "staging: cudaEventCreate: %s", cudaGetErrorString(ce));
    }
    b->has_ev = 1;
    b->pinned = 1;
    return BG_OK;
#else
    (void)sg, (void)b;
    return bg_errorf(BG_ERR_UNSUPPORTED, "staging: device buffer but built without CUDA");
#endif
}

bg_status_t bg_tp_stage_get(bg_tp_stage_t *sg, size_t n, int device, bg_tp_stage_buf_t **out)
{
    int cls = size_class(n);
    if (cls >= BG_TP_STAGE_CLASSES)
        return bg_errorf(BG_ERR_NOMEM, "staging: no buffer class holds %zu bytes", n);
    for (bg_tp_stage_buf_t **p = &sg->pool[cls]; *p; p = &(*p)->next) {
        if ((*p)->pinned == device) {
            bg_tp_stage_buf_t *b = *p;
            *p = b->next;
            b->next = NULL;
            *out = b;
            return BG_OK;
        }
    }
    bg_tp_stage_buf_t *b = calloc(1, sizeof(*b));
    if (!b)
        return bg_errorf(BG_ERR_NOMEM, "staging: out of memory");
    b->cap = (size_t)1 << cls;
    b->cls = cls;
    if (device) {
        bg_status_t st = alloc_pinned(sg, b);
        if (st != BG_OK) {
            free(b);
            return st;
        }
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
    if (ucp_mem_map(sg->ctx, &mp, &b->memh) != UCS_OK)
        b->memh = NULL;
    *out = b;
    return BG_OK;
}

void bg_tp_stage_put(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b)
{
    dequeue(sg, b);
    settle(b);
    b->owner = NULL;
    b->next = sg->pool[b->cls];
    sg->pool[b->cls] = b;
}

static void buf_free(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b)
{
    if (b->memh)
        ucp_mem_unmap(sg->ctx, b->memh);
#ifdef BG_HAVE_CUDA
    if (b->has_ev)
        cudaEventDestroy(b->ev);
    if (b->pinned) {
        cudaFreeHost(b->ptr);
        free(b);
        return;
    }
#endif
    free(b->ptr);
    free(b);
}

void bg_tp_stage_fini(bg_tp_stage_t *sg)
{
    for (int i = 0; i < BG_TP_STAGE_CLASSES; i++)
        while (sg->pool[i]) {
            bg_tp_stage_buf_t *b = sg->pool[i];
            sg->pool[i] = b->next;
            buf_free(sg, b);
        }
#ifdef BG_HAVE_CUDA
    if (sg->streams_ok) {
        cudaStreamDestroy(sg->s_d2h);
        cudaStreamDestroy(sg->s_h2d);
        sg->streams_ok = 0;
    }
#endif
}

#ifdef BG_HAVE_CUDA
static bg_status_t ensure_streams(bg_tp_stage_t *sg, char *err, size_t cap)
{
    if (sg->streams_ok)
        return BG_OK;
    int prev;
    cudaError_t ce = device_enter(sg, &prev);
    if (ce != cudaSuccess) {
        snprintf(err, cap, "staging: cudaSetDevice(%d): %s", sg->device, cudaGetErrorString(ce));
        return BG_ERR_CUDA;
    }
    ce = cudaStreamCreateWithFlags(&sg->s_d2h, cudaStreamNonBlocking);
    if (ce == cudaSuccess) {
        ce = cudaStreamCreateWithFlags(&sg->s_h2d, cudaStreamNonBlocking);
        if (ce != cudaSuccess)
            cudaStreamDestroy(sg->s_d2h);
    }
    device_leave(prev);
    if (ce != cudaSuccess) {
        snprintf(err, cap, "staging: cudaStreamCreate: %s", cudaGetErrorString(ce));
        return BG_ERR_CUDA;
    }
    sg->streams_ok = 1;
    return BG_OK;
}
#endif

bg_status_t bg_tp_stage_copy(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b, void *dst, const void *src,
                             size_t n, int to_host, int host, char *err, size_t cap)
{
    if (host) {
        memcpy(dst, src, n);
        b->pending = 0;
        return BG_OK;
    }
#ifdef BG_HAVE_CUDA
    bg_status_t st = ensure_streams(sg, err, cap);
    if (st != BG_OK)
        return st;
    cudaStream_t s = to_host ? sg->s_d2h : sg->s_h2d;
    cudaError_t ce =
        cudaMemcpyAsync(dst, src, n, to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, s);
    if (ce == cudaSuccess)
        ce = cudaEventRecord(b->ev, s);
    if (ce != cudaSuccess) {
        snprintf(err, cap, "staging copy of %zu bytes: %s", n, cudaGetErrorString(ce));
        return BG_ERR_CUDA;
    }
    b->pending = 1;
    return BG_OK;
#else
    (void)sg, (void)b, (void)dst, (void)src, (void)n, (void)to_host;
    snprintf(err, cap, "device buffer but built without CUDA");
    return BG_ERR_UNSUPPORTED;
#endif
}

int bg_tp_stage_copy_done(bg_tp_stage_buf_t *b, char *err, size_t cap)
{
    if (!b->pending)
        return 1;
#ifdef BG_HAVE_CUDA
    cudaError_t ce = cudaEventQuery(b->ev);
    if (ce == cudaErrorNotReady) {
        /* Why: NotReady is also left as the thread's last error, and the
         * next launch check (the engine's or ours) would report it as a
         * failure. Clear only that one, never someone else's real error. */
        if (cudaPeekAtLastError() == cudaErrorNotReady)
            cudaGetLastError();
        return 0;
    }
    b->pending = 0;
    if (ce != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, cap, "staging copy: %s", cudaGetErrorString(ce));
        return -1;
    }
#else
    (void)err, (void)cap;
    b->pending = 0;
#endif
    return 1;
}

void bg_tp_stage_enqueue(bg_tp_stage_t *sg, bg_tp_stage_buf_t *b, void *owner)
{
    b->owner = owner;
    b->queued = 1;
    b->qnext = NULL;
    b->qprev = sg->q_tail;
    if (sg->q_tail)
        sg->q_tail->qnext = b;
    else
        sg->q_head = b;
    sg->q_tail = b;
}

bg_tp_stage_buf_t *bg_tp_stage_next_ready(bg_tp_stage_t *sg, int *ok, char *err, size_t cap)
{
    bg_tp_stage_buf_t *b = sg->q_head;
    if (!b)
        return NULL;
    int d = bg_tp_stage_copy_done(b, err, cap);
    if (d == 0)
        return NULL;
    dequeue(sg, b);
    *ok = d > 0;
    return b;
}
