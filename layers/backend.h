/*
 * layers/backend.h -- compute backends behind one small table.
 *
 * A backend owns a device: memory, streams, events and GEMM. Layers call
 * these functions; each backend implements the table in backend_impl.h and
 * anything it leaves NULL gets a generic fallback here (no streams on the
 * CPU: work is synchronous and events are host timestamps). Handles are
 * opaque. Every function that can fail returns a status with the cause
 * recorded (bg_last_error), CUDA/cuBLAS status strings included.
 * Must not know about layers, graphs or transport.
 */
#ifndef BG_BACKEND_H
#define BG_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/tensor.h"

typedef struct bg_backend bg_backend_t;
typedef struct bg_stream bg_stream_t; /* NULL means the backend's default stream */
typedef struct bg_event bg_event_t;

/*
 * Open backend `dev` (device number `index` for CUDA). BG_ERR_UNSUPPORTED
 * when this build has no CUDA or no GPU is present; *out set only on success.
 */
bg_status_t bg_backend_create(bg_device_t dev, int index, bg_backend_t **out);
void bg_backend_destroy(bg_backend_t *be); /* NULL is fine */
bg_device_t bg_backend_device(const bg_backend_t *be);
const char *bg_backend_name(const bg_backend_t *be);
/* True when this build can open `dev` at all (compiled in + device present). */
bool bg_backend_available(bg_device_t dev);
/* The device number a rank with node-local rank `local_rank` opens:
 * local_rank modulo the node's device count (0 for the CPU, or when the
 * count is unknown). Cannot fail. */
int bg_backend_local_index(bg_device_t dev, int local_rank);

/* Device memory. Contents of a fresh allocation are undefined. */
bg_status_t bg_backend_alloc(bg_backend_t *be, size_t bytes, void **out);
void bg_backend_free(bg_backend_t *be, void *p);

typedef enum { BG_COPY_H2D, BG_COPY_D2H, BG_COPY_D2D } bg_copy_kind_t;
/* Asynchronous on `s` where the backend has streams; synchronous on the CPU. */
bg_status_t bg_backend_copy(bg_backend_t *be, void *dst, const void *src, size_t bytes,
                            bg_copy_kind_t kind, bg_stream_t *s);
bg_status_t bg_backend_memset(bg_backend_t *be, void *dst, int value, size_t bytes, bg_stream_t *s);
bg_status_t bg_backend_synchronize(bg_backend_t *be);

bg_status_t bg_stream_create(bg_backend_t *be, const char *name, bg_stream_t **out);
void bg_stream_destroy(bg_backend_t *be, bg_stream_t *s);
bg_status_t bg_stream_synchronize(bg_backend_t *be, bg_stream_t *s);

bg_status_t bg_event_create(bg_backend_t *be, bg_event_t **out);
void bg_event_destroy(bg_backend_t *be, bg_event_t *e);
bg_status_t bg_event_record(bg_backend_t *be, bg_event_t *e, bg_stream_t *s);
/* Make stream `s` wait for `e` without blocking the host. */
bg_status_t bg_stream_wait_event(bg_backend_t *be, bg_stream_t *s, bg_event_t *e);
bg_status_t bg_event_synchronize(bg_backend_t *be, bg_event_t *e);
/* Without blocking: *done = 1 once all work before the record has finished. */
bg_status_t bg_event_query(bg_backend_t *be, bg_event_t *e, int *done);
/* Milliseconds between two recorded events. */
bg_status_t bg_event_elapsed_ms(bg_backend_t *be, bg_event_t *start, bg_event_t *end,
                                float *out_ms);

/*
 * Row-major GEMM: C(m,n) = alpha * op(A)(m,k) @ op(B)(k,n) + beta * C.
 * lda/ldb/ldc are row strides in elements of the matrices as stored.
 * A and B share `ab` (f32, bf16 or fp16); C is f32 or `ab`; accumulation is
 * f32 (the CPU backend takes f32 only: its low-precision runs compute in f32).
 * The batched form repeats it `batch` times with element strides sa/sb/sc.
 */
typedef struct bg_gemm_args {
    bool trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const void *a;
    int64_t lda;
    const void *b;
    int64_t ldb;
    void *c;
    int64_t ldc;
    bg_dtype_t ab, c_dtype;
    int64_t batch;      /* 0 or 1: a single GEMM */
    int64_t sa, sb, sc; /* batch strides in elements */
} bg_gemm_args_t;
bg_status_t bg_gemm(bg_backend_t *be, bg_stream_t *s, const bg_gemm_args_t *g);

/* ---- the training step on flat buffers (docs/engine.md, "The step") ----
 *
 * A flat buffer holds many parameters back to back; `segs` cuts it into
 * segments [off[i], off[i+1]) (one per parameter) with a per-segment flag
 * (weight decay on). off and flag live in backend memory (the device copy
 * on CUDA), made once by the caller. Elementwise ops give the same bits on
 * every backend for the same inputs; the sums of squares use a fixed
 * chunking (BG_SUMSQ_CHUNK elements per partial, partials combined in
 * order), so their bits depend on neither thread nor block count.
 */
typedef struct bg_flat_segs {
    int n;                 /* segments */
    const int64_t *off;    /* [n + 1] element offsets, ascending, backend memory */
    const uint8_t *decay;  /* [n] 1: weight decay applies, backend memory */
    const int64_t *off_h;  /* [n + 1] the same offsets in host memory */
    const int64_t *chunk0; /* [n + 1] first sum-of-squares chunk of each segment
                              (bg_flat_chunks), backend memory */
    int64_t nchunks;       /* chunk0[n] */
} bg_flat_segs_t;

#define BG_SUMSQ_CHUNK 4096

/* chunk0[i] (host, [n + 1]) = chunks of BG_SUMSQ_CHUNK elements in the
 * segments before i (a segment's last chunk may be short); returns the
 * total. Cannot fail. */
int64_t bg_flat_chunks(const int64_t *off_h, int n, int64_t *chunk0);

typedef enum { BG_STEP_SGD = 0, BG_STEP_ADAMW = 1 } bg_step_kind_t;

/* One optimizer update; every factor is computed by the caller on the host
 * so that all backends and ranks see the same floats. */
typedef struct bg_step_args {
    bg_step_kind_t kind;
    float lr;
    float gscale;                      /* gradient multiplier: clipping times 1 / loss scale */
    float weight_decay;                /* applied where segs->decay[i] */
    float momentum;                    /* SGD */
    float beta1, beta2, eps, bc1, bc2; /* AdamW; bc = 1 - beta^(step+1) */
} bg_step_args_t;

/*
 * p -= update(g * gscale) over every segment of the flat f32 buffers p, g,
 * s0 (SGD momentum / AdamW m) and s1 (AdamW v; unused for SGD). Same
 * expression, element by element, as the reference loop in
 * tests/layers/test_step_ops.c. Enqueued on `s`; cannot fail on the CPU.
 */
bg_status_t bg_step_update(bg_backend_t *be, bg_stream_t *s, const bg_step_args_t *a,
                           const bg_flat_segs_t *segs, float *p, const float *g, float *s0,
                           float *s1);
/* out[i] (f32, backend memory) = sum of squares of segment i of x, each
 * square and sum in double, rounded to f32 once. */
bg_status_t bg_step_sumsq(bg_backend_t *be, bg_stream_t *s, const bg_flat_segs_t *segs,
                          const float *x, float *out);
/* x[0..n) *= a (f32). */
bg_status_t bg_step_scale(bg_backend_t *be, bg_stream_t *s, float *x, float a, int64_t n);
/* y[0..n) += x[0..n) (f32): folding several users' gradients, in order. */
bg_status_t bg_step_add(bg_backend_t *be, bg_stream_t *s, float *y, const float *x, int64_t n);
/* dst[i] = src[i] converted (f32 <-> bf16/f16, rounding to nearest even;
 * same dtype: a copy). Both in backend memory. */
bg_status_t bg_step_cast(bg_backend_t *be, bg_stream_t *s, void *dst, bg_dtype_t dst_dt,
                         const void *src, bg_dtype_t src_dt, int64_t n);

/*
 * Arena: a bump allocator over one backend allocation, for activations and
 * workspaces whose lifetimes nest. Not thread-safe.
 */
typedef struct bg_arena {
    bg_backend_t *be;
    char *base;
    size_t size, used, peak;
} bg_arena_t;
bg_status_t bg_arena_init(bg_arena_t *a, bg_backend_t *be, size_t bytes);
void bg_arena_destroy(bg_arena_t *a);
/* 256-byte aligned; BG_ERR_NOMEM (with sizes in the message) when full. */
bg_status_t bg_arena_alloc(bg_arena_t *a, size_t bytes, void **out);
bg_status_t bg_arena_tensor(bg_arena_t *a, const bg_shape_t *s, bg_tensor_t *out);
void bg_arena_reset(bg_arena_t *a);

#endif
