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

#include "transport/reduce.h"

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, keeping NaNs NaN (a carry could make them Inf);
 * a select, not a branch, so the loops around it vectorise. */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

static void sum_f32(float *restrict d, const float *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] += s[i];
}

static void sum_bf16(uint16_t *restrict d, const uint16_t *restrict s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_bf16(bf16_to_f32(d[i]) + bf16_to_f32(s[i]));
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
            p[i] = f32_to_bf16(bf16_to_f32(p[i]) / dv);
    }
}
