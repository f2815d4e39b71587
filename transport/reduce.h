/*
 * transport/reduce.h -- the arithmetic collectives need: element-wise sum
 * and division of f32 / bf16 buffers on the host (reduce.c) or the device
 * (reduce_cuda.cu).
 *
 * Used by coll.c only. Must NOT: change results between runs (one IEEE
 * operation per element, no FMA, no reordering).
 */
#ifndef BG_TP_REDUCE_H
#define BG_TP_REDUCE_H

#include <stddef.h>

#include "transport/transport.h"

/* dst[i] += src[i] over n elements; host or device memory. */
bg_status_t bg_tp_reduce_sum(void *dst, const void *src, size_t n, bg_tp_dtype_t dt,
                             bg_tp_mem_t mem);
/* x[i] /= divisor over n elements. */
bg_status_t bg_tp_reduce_div(void *x, size_t n, bg_tp_dtype_t dt, int divisor, bg_tp_mem_t mem);

#ifdef BG_HAVE_CUDA
/* Device versions; synchronous on a private stream (reduce_cuda.cu). */
bg_status_t bg_tp_cuda_reduce_sum(void *dst, const void *src, size_t n, int dt);
bg_status_t bg_tp_cuda_reduce_div(void *x, size_t n, int dt, int divisor);
#endif

#endif
