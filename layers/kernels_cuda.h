/*
 * layers/kernels_cuda.h -- CUDA halves of the layer kinds.
 *
 * For each kind, layers/<kind>.cu implements the kind's F, B and W for
 * calls whose backend is CUDA, with the same contract as layer.h (B
 * overwrites din, W adds into f32 grads) and the same saved/workspace
 * layout as the CPU half in layers/<kind>.c documents. Activations and
 * parameters are c->dtype (f32, bf16 or fp16), accumulation is f32, gradient
 * accumulators are f32. Work is enqueued on c->stream without host
 * synchronisation; launch errors are checked and turned into statuses.
 * Only compiled when BG_HAVE_CUDA is defined.
 */
#ifndef BG_KERNELS_CUDA_H
#define BG_KERNELS_CUDA_H

#ifdef BG_HAVE_CUDA

#include "layers/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BG_CUDA_KIND(k)                                                                          \
    bg_status_t bg_cuda_##k##_forward(const bg_layer_call_t *c);                                 \
    bg_status_t bg_cuda_##k##_backward_input(const bg_layer_call_t *c);                          \
    bg_status_t bg_cuda_##k##_backward_weight(const bg_layer_call_t *c);

BG_CUDA_KIND(linear)
BG_CUDA_KIND(embedding)
BG_CUDA_KIND(layernorm)
BG_CUDA_KIND(gelu)
BG_CUDA_KIND(relu)
BG_CUDA_KIND(add)
BG_CUDA_KIND(attention)
BG_CUDA_KIND(cross_entropy)
BG_CUDA_KIND(rmsnorm)
BG_CUDA_KIND(swiglu)
BG_CUDA_KIND(classifier)
#undef BG_CUDA_KIND

#ifdef __cplusplus
}
#endif

#endif /* BG_HAVE_CUDA */
#endif
