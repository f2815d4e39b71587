/*
 * transport/reduce.c -- the host arithmetic of the collectives: f32 and
 * bf16 sums and the division of averages.
 *
 * Speed: these loops run once per received segment, so they must keep up
 * with the wire. They are written branch-free over restrict pointers so
 * that -O3 (set for this file in CMakeLists.txt) vectorises them; each
 * element is still exactly one IEEE operation (bf16: one f32 add, one
 * rounding), so the vector code gives the scalar code's bits.
 *
 * Must NOT: reassociate or fuse (no -ffast-math, no FMA, no reciprocal
 * for the division), or touch anything but the given elements.
 */
#include <stdint.h>
#include <string.h>

#include "base/bf16.h"
#include "transport/reduce.h"

static void sum_f32(float *restrict d, const float *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] += s[i];
}

static void sum_bf16(uint16_t *restrict d, const uint16_t *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = bg_f32_to_bf16(bg_bf16_to_f32(d[i]) + bg_bf16_to_f32(s[i]));
}

void bg_tp_reduce_sum(void *dst, const void *src, size_t n, bg_tp_dtype_t dt)
{
    if (dt == BG_TP_F32)
        sum_f32(dst, src, n);
    else
        sum_bf16(dst, src, n);
}

void bg_tp_reduce_div(void *x, size_t n, bg_tp_dtype_t dt, int divisor)
{
    float dv = (float)divisor;
    if (dt == BG_TP_F32) {
        float *restrict p = x;
        for (size_t i = 0; i < n; i++)
            p[i] /= dv;
    } else {
        uint16_t *restrict p = x;
        for (size_t i = 0; i < n; i++)
            p[i] = bg_f32_to_bf16(bg_bf16_to_f32(p[i]) / dv);
    }
}
