/*
 * transport/reduce.h -- the arithmetic collectives need: element-wise sum
 * and division of f32 / bf16 buffers on the host (reduce.c, synchronous,
 * vectorised) or the device (reduce_cuda.cu, asynchronous on a reducer's
 * stream with event completion).
 *
 * Used by the collectives only. Must NOT: change results between runs or
 * between host and device (one IEEE operation per element, no FMA, no
 * reordering, division stays division).
 */
#ifndef BG_TP_REDUCE_H
#define BG_TP_REDUCE_H

#include <stddef.h>

#ifdef BG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "transport/transport.h"

/* dst[i] += src[i] over n host elements (bf16: summed in f32, rounded to
 * nearest even). The buffers must not overlap. Cannot fail. */
void bg_tp_reduce_sum(void *dst, const void *src, size_t n, bg_tp_dtype_t dt);
/* x[i] /= divisor over n host elements. Cannot fail. */
void bg_tp_reduce_div(void *x, size_t n, bg_tp_dtype_t dt, int divisor);

#ifdef BG_HAVE_CUDA
/*
 * A device reducer: one non-blocking stream created on `device` and a pool
 * of timing-free events, owned by one group (one driving thread). Work is
 * queued without synchronising; completion is an event the caller polls.
 * Every call makes `device` current for its duration and restores the
 * caller's device (device -1: the current device, unchanged).
 */
typedef struct bg_tp_cuda_red bg_tp_cuda_red_t;

/* BG_ERR_CUDA naming the call, BG_ERR_NOMEM. */
bg_status_t bg_tp_cuda_red_create(int device, bg_tp_cuda_red_t **out);
/* Waits for queued work, then frees stream and events. NULL is ignored. */
void bg_tp_cuda_red_destroy(bg_tp_cuda_red_t *r);
/* An event from the pool (created with cudaEventDisableTiming on first
 * need); give it back with bg_tp_cuda_red_event_put. */
bg_status_t bg_tp_cuda_red_event_get(bg_tp_cuda_red_t *r, cudaEvent_t *out);
void bg_tp_cuda_red_event_put(bg_tp_cuda_red_t *r, cudaEvent_t ev);
/* Queue dst += src, then (divisor > 1) dst /= divisor, then record ev: n
 * device elements. BG_ERR_CUDA with the kernel named. */
bg_status_t bg_tp_cuda_red_sum(bg_tp_cuda_red_t *r, void *dst, const void *src, size_t n,
                               bg_tp_dtype_t dt, int divisor, cudaEvent_t ev);
/* Queue x /= divisor and record ev. */
bg_status_t bg_tp_cuda_red_div(bg_tp_cuda_red_t *r, void *x, size_t n, bg_tp_dtype_t dt,
                               int divisor, cudaEvent_t ev);
/*
 * 1 when ev has completed, 0 while pending, -1 on a CUDA error (recorded
 * with bg_errorf naming `what`). A pending query leaves no error behind:
 * cudaEventQuery's cudaErrorNotReady is cleared from the thread's last
 * error (only that one; a real error of someone else stays).
 */
int bg_tp_cuda_event_done(cudaEvent_t ev, const char *what);
/* The reducer's stream (tests: block it, check its device). */
cudaStream_t bg_tp_cuda_red_stream(bg_tp_cuda_red_t *r);
/* cudaMalloc / cudaFree on `device` (restoring the caller's device). */
bg_status_t bg_tp_cuda_alloc(int device, size_t bytes, void **out);
void bg_tp_cuda_free(int device, void *p);
#endif

#endif
