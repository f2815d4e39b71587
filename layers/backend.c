/*
 * layers/backend.c -- dispatch through the backend table, generic fallbacks
 * for what a backend leaves out, and the arena allocator.
 * Must not contain device-specific code: that lives in backend_<name>.c/.cu.
 */
#include "layers/backend_impl.h"

#include "base/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

bool bg_backend_available(bg_device_t dev)
{
    if (dev == BG_DEV_CPU)
        return true;
#ifdef BG_HAVE_CUDA
    return bg_backend_cuda_present();
#else
    return false;
#endif
}

int bg_backend_local_index(bg_device_t dev, int local_rank)
{
    if (dev == BG_DEV_CPU || local_rank < 0)
        return 0;
#ifdef BG_HAVE_CUDA
    int n = bg_backend_cuda_count();
    return n > 0 ? local_rank % n : 0;
#else
    return 0;
#endif
}

bg_status_t bg_backend_create(bg_device_t dev, int index, bg_backend_t **out)
{
    if (dev == BG_DEV_CPU)
        return bg_backend_cpu_create(out);
#ifdef BG_HAVE_CUDA
    return bg_backend_cuda_create(index, out);
#else
    (void)index;
    return bg_errorf(BG_ERR_UNSUPPORTED, "this build of brigade has no CUDA backend "
                                         "(configure with nvcc available or -DBG_CUDA=ON)");
#endif
}

void bg_backend_destroy(bg_backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}

bg_device_t bg_backend_device(const bg_backend_t *be)
{
    return be->ops->device;
}

const char *bg_backend_name(const bg_backend_t *be)
{
    return be->ops->name;
}

bg_status_t bg_backend_alloc(bg_backend_t *be, size_t bytes, void **out)
{
    return be->ops->alloc(be, bytes ? bytes : 1, out);
}

void bg_backend_free(bg_backend_t *be, void *p)
{
    if (p)
        be->ops->free(be, p);
}

bg_status_t bg_backend_copy(bg_backend_t *be, void *dst, const void *src, size_t bytes,
                            bg_copy_kind_t kind, bg_stream_t *s)
{
    if (!bytes)
        return BG_OK;
    if (be->ops->copy)
        return be->ops->copy(be, dst, src, bytes, kind, s);
    memmove(dst, src, bytes); /* host memory on both sides */
    return BG_OK;
}

bg_status_t bg_backend_memset(bg_backend_t *be, void *dst, int value, size_t bytes, bg_stream_t *s)
{
    if (!bytes)
        return BG_OK;
    if (be->ops->memset)
        return be->ops->memset(be, dst, value, bytes, s);
    memset(dst, value, bytes);
    return BG_OK;
}

bg_status_t bg_backend_synchronize(bg_backend_t *be)
{
    return be->ops->synchronize ? be->ops->synchronize(be) : BG_OK;
}

/* Without streams there is one in-order queue: a stream is a name only. */
struct bg_stream {
    char name[32];
};

bg_status_t bg_stream_create(bg_backend_t *be, const char *name, bg_stream_t **out)
{
    if (be->ops->stream_create)
        return be->ops->stream_create(be, name, out);
    bg_stream_t *s = calloc(1, sizeof(*s));
    if (!s)
        return bg_errorf(BG_ERR_NOMEM, "stream: out of memory");
    if (name)
        strncpy(s->name, name, sizeof(s->name) - 1);
    *out = s;
    return BG_OK;
}

void bg_stream_destroy(bg_backend_t *be, bg_stream_t *s)
{
    if (!s)
        return;
    if (be->ops->stream_destroy)
        be->ops->stream_destroy(be, s);
    else
        free(s);
}

bg_status_t bg_stream_synchronize(bg_backend_t *be, bg_stream_t *s)
{
    return be->ops->stream_synchronize ? be->ops->stream_synchronize(be, s) : BG_OK;
}

/* Host events: work is synchronous, so "recorded" means "now". */
struct bg_event {
    double t_ms;
};

bg_status_t bg_event_create(bg_backend_t *be, bg_event_t **out)
{
    if (be->ops->event_create)
        return be->ops->event_create(be, out);
    bg_event_t *e = calloc(1, sizeof(*e));
    if (!e)
        return bg_errorf(BG_ERR_NOMEM, "event: out of memory");
    *out = e;
    return BG_OK;
}

void bg_event_destroy(bg_backend_t *be, bg_event_t *e)
{
    if (!e)
        return;
    if (be->ops->event_destroy)
        be->ops->event_destroy(be, e);
    else
        free(e);
}

bg_status_t bg_event_record(bg_backend_t *be, bg_event_t *e, bg_stream_t *s)
{
    if (be->ops->event_record)
        return be->ops->event_record(be, e, s);
    e->t_ms = bg_now_s() * 1e3;
    return BG_OK;
}

bg_status_t bg_stream_wait_event(bg_backend_t *be, bg_stream_t *s, bg_event_t *e)
{
    return be->ops->stream_wait_event ? be->ops->stream_wait_event(be, s, e) : BG_OK;
}

bg_status_t bg_event_synchronize(bg_backend_t *be, bg_event_t *e)
{
    return be->ops->event_synchronize ? be->ops->event_synchronize(be, e) : BG_OK;
}

bg_status_t bg_event_query(bg_backend_t *be, bg_event_t *e, int *done)
{
    if (be->ops->event_query)
        return be->ops->event_query(be, e, done);
    *done = 1; /* synchronous backends finish work before record returns */
    return BG_OK;
}

bg_status_t bg_event_elapsed_ms(bg_backend_t *be, bg_event_t *a, bg_event_t *b, float *out_ms)
{
    if (be->ops->event_elapsed_ms)
        return be->ops->event_elapsed_ms(be, a, b, out_ms);
    *out_ms = (float)(b->t_ms - a->t_ms);
    return BG_OK;
}

bg_status_t bg_gemm(bg_backend_t *be, bg_stream_t *s, const bg_gemm_args_t *g)
{
    if (g->m < 0 || g->n < 0 || g->k < 0 || g->batch < 0)
        return bg_errorf(BG_ERR_INVALID, "gemm: negative size m=%lld n=%lld k=%lld batch=%lld",
                         (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch);
    if (g->ab == BG_I32 || g->c_dtype == BG_I32)
        return bg_errorf(BG_ERR_INVALID, "gemm: integer operands are not supported");
    if (!g->m || !g->n)
        return BG_OK;
    return be->ops->gemm(be, s, g);
}

/* ---- the training step ---- */

int64_t bg_flat_chunks(const int64_t *off_h, int n, int64_t *chunk0)
{
    int64_t c = 0;
    for (int i = 0; i < n; i++) {
        chunk0[i] = c;
        c += (off_h[i + 1] - off_h[i] + BG_SUMSQ_CHUNK - 1) / BG_SUMSQ_CHUNK;
    }
    chunk0[n] = c;
    return c;
}

static bg_status_t step_missing(const bg_backend_t *be, const char *op)
{
    return bg_errorf(BG_ERR_UNSUPPORTED, "backend %s: no %s (the training step needs it)",
                     be->ops->name, op);
}

bg_status_t bg_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                           const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                           float *s1)
{
    if (a->kind == BG_STEP_ADAMW && !s1)
        return bg_errorf(BG_ERR_INVALID, "step update: AdamW needs a second state buffer");
    return be->ops->step_update ? be->ops->step_update(be, s, a, segs, p, g, s0, s1)
                                : step_missing(be, "fused optimizer update");
}

bg_status_t bg_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                          const float *x, float *out)
{
    return be->ops->step_sumsq ? be->ops->step_sumsq(be, s, segs, x, out)
                               : step_missing(be, "sum of squares");
}

bg_status_t bg_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n)
{
    if (n <= 0)
        return BG_OK;
    return be->ops->step_scale ? be->ops->step_scale(be, s, x, a, n) : step_missing(be, "scale");
}

bg_status_t bg_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return BG_OK;
    return be->ops->step_add ? be->ops->step_add(be, s, y, x, n) : step_missing(be, "add");
}

bg_status_t bg_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                         const void *src, bg_dtype_t src_dt, int64_t n)
{
    if (!bg_dtype_is_float(dst_dt) || !bg_dtype_is_float(src_dt) ||
        (dst_dt != src_dt && dst_dt != BG_F32 && src_dt != BG_F32))
        return bg_errorf(BG_ERR_INVALID, "step cast: %s to %s is not supported",
                         bg_dtype_name(src_dt), bg_dtype_name(dst_dt));
    if (n <= 0)
        return BG_OK;
    return be->ops->step_cast ? be->ops->step_cast(be, s, dst, dst_dt, src, src_dt, n)
                              : step_missing(be, "cast");
}

bg_status_t bg_arena_init(bg_arena_t *a, bg_backend_t *be, size_t bytes)
{
    void *p = NULL;
    bg_status_t st = bg_backend_alloc(be, bytes, &p);
    if (st != BG_OK)
        return st;
    a->be = be;
    a->base = p;
    a->size = bytes;
    a->used = a->peak = 0;
    return BG_OK;
}

void bg_arena_destroy(bg_arena_t *a)
{
    if (a->base)
        bg_backend_free(a->be, a->base);
    memset(a, 0, sizeof(*a));
}

bg_status_t bg_arena_alloc(bg_arena_t *a, size_t bytes, void **out)
{
    size_t start = (a->used + 255) & ~(size_t)255;
    if (start > a->size || bytes > a->size - start)
        return bg_errorf(BG_ERR_NOMEM, "arena full: need %zu bytes, %zu of %zu used", bytes,
                         a->used, a->size);
    a->used = start + bytes;
    if (a->used > a->peak)
        a->peak = a->used;
    *out = a->base + start;
    return BG_OK;
}

bg_status_t bg_arena_tensor(bg_arena_t *a, const bg_shape_t *s, bg_tensor_t *out)
{
    void *p = NULL;
    bg_status_t st = bg_arena_alloc(a, (size_t)bg_shape_numel(s) * bg_dtype_size(s->dtype), &p);
    if (st != BG_OK)
        return st;
    *out = bg_tensor_from_shape(p, bg_backend_device(a->be), s);
    return BG_OK;
}

void bg_arena_reset(bg_arena_t *a)
{
    a->used = 0;
}
