/*
 * base/bf16.h -- bfloat16 <-> f32 on the host: round to nearest even, NaN
 * kept NaN (a carry could otherwise make it Inf). One definition for the
 * rooms that store bf16 (layers) and the ones that reduce it (transport).
 * Inline and branch-free (a select), so the loops around it vectorise.
 * Must not depend on anything of the project.
 */
#ifndef BG_BF16_H
#define BG_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t bg_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

static inline float bg_bf16_to_f32(uint16_t x)
{
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
