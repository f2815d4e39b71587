/*
 * layers/cpu_util.h -- small CPU loops more than one kind needs: the f32
 * guard of every CPU half, bias add, and the bias-gradient column sum.
 * Fixed loop orders only (results must not depend on threads or layout).
 * Must not hold state or know any kind.
 */
#ifndef BG_CPU_UTIL_H
#define BG_CPU_UTIL_H

#include <stdint.h>

#include "layers/layer.h"

/* BG_OK for f32 calls; BG_ERR_UNSUPPORTED naming layer, kind and phase
 * otherwise: bf16 compute is the CUDA backend's business. */
bg_status_t bg_cpu_require_f32(const bg_layer_call_t *c, const char *phase);

/* y (rows, cols) += b per row. */
void bg_cpu_add_bias(float *y, const float *b, int64_t rows, int64_t cols);

/* g[j] += sum over rows of d[r, j], d (rows, cols): blocks of columns with
 * double accumulators, rows read contiguously, summed in row order. */
void bg_cpu_colsum_add(const float *d, int64_t rows, int64_t cols, float *g);

#endif
