/*
 * layers/backend_impl.h -- the function table a backend implements.
 *
 * Private to layers/: backend.c dispatches through it and supplies generic
 * fallbacks for NULL entries (streams/events become synchronous no-ops,
 * D2D copy of host memory becomes memcpy). A new backend is one table and a
 * constructor, not changes to callers.
 */
#ifndef BG_BACKEND_IMPL_H
#define BG_BACKEND_IMPL_H

#include "layers/backend.h"

typedef struct bg_backend_ops {
    const char *name;
    bg_device_t device;
    void (*destroy)(bg_backend_t *be);
    bg_status_t (*alloc)(bg_backend_t *be, size_t bytes, void **out);
    void (*free)(bg_backend_t *be, void *p);
    bg_status_t (*copy)(bg_backend_t *be, void *dst, const void *src, size_t bytes,
                        bg_copy_kind_t kind, bg_stream_t *s);
    bg_status_t (*memset)(bg_backend_t *be, void *dst, int v, size_t bytes, bg_stream_t *s);
    bg_status_t (*synchronize)(bg_backend_t *be);
    bg_status_t (*stream_create)(bg_backend_t *be, const char *name, bg_stream_t **out);
    void (*stream_destroy)(bg_backend_t *be, bg_stream_t *s);
    bg_status_t (*stream_synchronize)(bg_backend_t *be, bg_stream_t *s);
    bg_status_t (*event_create)(bg_backend_t *be, bg_event_t **out);
    void (*event_destroy)(bg_backend_t *be, bg_event_t *e);
    bg_status_t (*event_record)(bg_backend_t *be, bg_event_t *e, bg_stream_t *s);
    bg_status_t (*stream_wait_event)(bg_backend_t *be, bg_stream_t *s, bg_event_t *e);
    bg_status_t (*event_synchronize)(bg_backend_t *be, bg_event_t *e);
    bg_status_t (*event_elapsed_ms)(bg_backend_t *be, bg_event_t *a, bg_event_t *b, float *ms);
    bg_status_t (*gemm)(bg_backend_t *be, bg_stream_t *s, const bg_gemm_args_t *g);
    /* Appended, so positional initialisers (C++ in .cu files) keep their
     * order; backend_cuda.cu counts the entries at compile time. */
    bg_status_t (*event_query)(bg_backend_t *be, bg_event_t *e, int *done);
    /* The training step (backend.h); no generic fallback: a backend that
     * trains implements all five. */
    bg_status_t (*step_update)(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                               const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                               float *s1);
    bg_status_t (*step_sumsq)(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                              const float *x, float *out);
    bg_status_t (*step_scale)(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n);
    bg_status_t (*step_add)(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n);
    bg_status_t (*step_cast)(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                             const void *src, bg_dtype_t src_dt, int64_t n);
} bg_backend_ops_t;

/* Entries of bg_backend_ops_t: a positional table checks its count against
 * this, so a new entry cannot be left out silently. */
#define BG_BACKEND_OPS_ENTRIES 24
#ifdef __cplusplus
static_assert
#else
_Static_assert
#endif
    (sizeof(bg_backend_ops_t) == BG_BACKEND_OPS_ENTRIES * sizeof(void *),
     "bg_backend_ops_t changed: update BG_BACKEND_OPS_ENTRIES and every table");

struct bg_backend {
    const bg_backend_ops_t *ops;
    int index;  /* device number */
    void *impl; /* backend-private state */
};

bg_status_t bg_backend_cpu_create(bg_backend_t **out);

/* The CPU backend's step ops (backend_cpu_step.c): also the generic
 * implementation for any backend whose memory is host memory. */
bg_status_t bg_cpu_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                               const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                               float *s1);
bg_status_t bg_cpu_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                              const float *x, float *out);
bg_status_t bg_cpu_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n);
bg_status_t bg_cpu_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n);
bg_status_t bg_cpu_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                             const void *src, bg_dtype_t src_dt, int64_t n);
#ifdef BG_HAVE_CUDA
bg_status_t bg_backend_cuda_create(int index, bg_backend_t **out);
bool bg_backend_cuda_present(void);
int bg_backend_cuda_count(void); /* devices visible; 0 when none or no driver */
#endif

#endif
