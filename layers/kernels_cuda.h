/*
 * layers/kernels_cuda.h -- C entry points of the CUDA kernels in
 * layers/<kind>.cu, one group per kind. Launchers take the backend and a
 * stream (NULL = default), enqueue work without host synchronisation, and
 * return a status (launch errors checked with cudaGetLastError). `dt` is the
 * activation dtype (BG_F32 or BG_BF16); parameters are in `dt` too, gradient
 * accumulators are always f32. Only compiled when BG_HAVE_CUDA is defined.
 */
#ifndef BG_KERNELS_CUDA_H
#define BG_KERNELS_CUDA_H

#ifdef BG_HAVE_CUDA

#include <stdint.h>

#include "layers/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* relu: y = max(x, 0); dx = dy * (x > 0) */
bg_status_t bg_cuda_relu_forward(bg_backend_t *be, bg_stream_t *s, bg_dtype_t dt, const void *x,
                                 void *y, int64_t n);
bg_status_t bg_cuda_relu_backward(bg_backend_t *be, bg_stream_t *s, bg_dtype_t dt,
                                  const void *x, const void *dy, void *dx, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* BG_HAVE_CUDA */
#endif
