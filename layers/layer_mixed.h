/*
 * layers/layer_mixed.h -- private to layers/: running an f32 CPU kernel in
 * a bf16/fp16 call (layers/cpu_mixed.c). layer.c routes every low-precision
 * call on the CPU backend through it. Must not be included outside layers/.
 */
#ifndef BG_LAYER_MIXED_H
#define BG_LAYER_MIXED_H

#include "layers/layer.h"

typedef bg_status_t (*bg_layer_fn)(const bg_layer_call_t *c);

/* fn on an f32 twin of call c (c->dtype bf16 or fp16) in `phase` (0 F,
 * 1 B, 2 W): float tensors widened, the phase's outputs (F: out, B: din)
 * rounded once into c's. Fails on out
 * of memory, scratch sized for less than the f32 kernel, or fn's error
 * (c's outputs are then unspecified). */
bg_status_t bg_cpu_mixed_call(const bg_layer_call_t *c, int phase, bg_layer_fn fn);

#endif
