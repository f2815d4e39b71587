/*
 * layers/cpu_util.h -- small CPU loops more than one kind needs: the f32
 * guard of every CPU half, the class-id check of the losses, bias add, the bias-gradient column sum, and
 * row sums in BG_CPU_LANES interleaved double lanes (so that -O3 can
 * vectorise them without reassociating anything).
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

/*
 * Every target tg[0..rows) (the call's input 1) must be a class id in
 * [0, V). BG_ERR_INVALID naming the layer, its kind, the position as a
 * multi-index of the targets' shape and the value otherwise.
 */
bg_status_t bg_cpu_check_targets(const bg_layer_call_t *c, const int32_t *tg, int64_t rows,
                                 int64_t V);

/* y (rows, cols) += b per row. */
void bg_cpu_add_bias(float *y, const float *b, int64_t rows, int64_t cols);

/* g[j] += sum over rows of d[r, j], d (rows, cols): blocks of columns with
 * double accumulators, rows read contiguously, summed in row order. */
void bg_cpu_colsum_add(const float *d, int64_t rows, int64_t cols, float *g);

/*
 * Row reductions: element j goes to lane j % BG_CPU_LANES (the tail of a
 * row included), lanes are combined by bg_cpu_lanes_sum in a fixed tree.
 * The order is a function of the row length only, so a row's result is
 * the same in every layout and on every call.
 */
#define BG_CPU_LANES 8

/* acc[0] + ... + acc[7] as ((0+4)+(2+6)) + ((1+5)+(3+7)). */
double bg_cpu_lanes_sum(const double *acc);

/* sum_j x[j], in double lanes. */
double bg_cpu_sum(const float *x, int64_t n);

/* sum_j (x[j] - m)^2, in double lanes. */
double bg_cpu_sum_sqdev(const float *x, int64_t n, double m);

/*
 * The normalisations over the last dim (layernorm, rmsnorm), x (rows, C).
 * `mean` NULL means rmsnorm: no centring (m = 0), rstd from the mean of
 * squares, no bias. The saved arrays are f32 per row.
 */
/* y = (x - m) rstd w (+ b when b); writes mean (if non-NULL) and rstd. */
void bg_cpu_norm_forward(const float *x, const float *w, const float *b, int64_t rows, int64_t C,
                         double eps, float *y, float *mean, float *rstd);
/* g = dy w, xhat = (x - m) rstd: dx = rstd (g - mean(g) - xhat mean(g xhat)),
 * without the mean(g) term for rmsnorm. Overwrites dx. */
void bg_cpu_norm_backward_input(const float *x, const float *w, const float *dy,
                                const float *mean, const float *rstd, int64_t rows, int64_t C,
                                float *dx);
/* gw[j] += sum_r dy xhat, gb[j] += sum_r dy (either may be NULL); rows in
 * order r = 0, 1, ... per column, double accumulators. */
void bg_cpu_norm_backward_weight(const float *x, const float *dy, const float *mean,
                                 const float *rstd, int64_t rows, int64_t C, float *gw,
                                 float *gb);

#endif
