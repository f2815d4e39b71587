/*
 * engine/runtime_cache.c -- the executor's device buffer cache.
 *
 * Owns every device buffer the runtime allocates (activations, messages,
 * gradient buckets, parameters' device copies, workspace): freed buffers
 * are kept by size and reused, so steady-state steps never call
 * cudaMalloc/cudaFree. Allocation can fail (device out of memory, message
 * recorded); returning a buffer cannot.
 * Must NOT decide what a buffer is for, or free memory while the device
 * may still read it (only bg_rt_cache_release_, at teardown, frees).
 */
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"

/* A cached buffer of exactly `bytes` that may be handed out now, or NULL.
 * A buffer the transport will write must not still be read by queued
 * compute: only buffers whose `freed` event has passed qualify. Compute-only
 * buffers are reused at once: the compute stream orders old and new uses. */
static bg_status_t cache_find(bg_rt_t *rt, size_t bytes, bool for_transport, rt_buf_t **out)
{
    *out = NULL;
    for (size_t i = 0; i < rt->nbufs; i++) {
        rt_buf_t *b = &rt->bufs[i];
        if (b->in_use || b->bytes != bytes)
            continue;
        if (for_transport && b->freed) {
            int done = 0;
            bg_status_t st = bg_event_query(rt->conf.be, b->freed, &done);
            if (st != BG_OK)
                return st;
            if (!done)
                continue;
        }
        *out = b;
        return BG_OK;
    }
    return BG_OK;
}

bg_status_t bg_rt_dalloc_(bg_rt_t *rt, size_t bytes, bool for_transport, void **out)
{
    if (!bytes)
        bytes = 1;
    rt_buf_t *b;
    bg_status_t st = cache_find(rt, bytes, for_transport, &b);
    if (st != BG_OK)
        return st;
    if (b) {
        b->in_use = true;
        *out = b->p;
        return BG_OK;
    }
    if (bg_grow(&rt->bufs, &rt->capbufs, rt->nbufs + 1, sizeof(*rt->bufs)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory tracking device buffers");
    void *p = NULL;
    if ((st = bg_backend_alloc(rt->conf.be, bytes, &p)) != BG_OK)
        return st;
    rt->bufs[rt->nbufs++] = (rt_buf_t){p, bytes, NULL, true};
    *out = p;
    return BG_OK;
}

void bg_rt_dfree_(bg_rt_t *rt, void *p)
{
    if (!p)
        return;
    for (size_t i = rt->nbufs; i-- > 0;) {
        rt_buf_t *b = &rt->bufs[i];
        if (b->p != p)
            continue;
        if (!b->freed && bg_event_create(rt->conf.be, &b->freed) != BG_OK)
            return;
        if (bg_event_record(rt->conf.be, b->freed, rt->compute) != BG_OK)
            return;
        b->in_use = false;
        return;
    }
}

void bg_rt_cache_release_(bg_rt_t *rt)
{
    for (size_t i = 0; i < rt->nbufs; i++) {
        bg_event_destroy(rt->conf.be, rt->bufs[i].freed);
        bg_backend_free(rt->conf.be, rt->bufs[i].p);
    }
    free(rt->bufs);
    rt->bufs = NULL;
    rt->nbufs = rt->capbufs = 0;
}
