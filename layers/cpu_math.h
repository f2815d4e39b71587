/*
 * layers/cpu_math.h -- branch-free f32 exp for the CPU halves of the
 * activations (gelu, swiglu): libm's expf/tanhf are calls the compiler
 * cannot vectorise, this is plain arithmetic it can (layers/ builds at -O3).
 * Only IEEE f32 operations in a fixed order and integer bit moves: no
 * -ffast-math needed, the same bits on every run, thread and layout.
 * Must not hold state, call libm, or know any kind.
 */
#ifndef BG_CPU_MATH_H
#define BG_CPU_MATH_H

#include <stdint.h>
#include <string.h>

/*
 * On x86-64 GCC, elementwise loops also get an AVX2 clone picked at load
 * time (ifunc): 8 lanes instead of SSE2's 4. Each element still goes
 * through the same IEEE operations in the same order (no FMA: -std=c11
 * keeps contraction off, and avx2 does not enable fma), so both clones
 * give the same bits. Only for loops whose elements are independent.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define BG_CPU_WIDE __attribute__((target_clones("avx2", "default")))
#else
#define BG_CPU_WIDE
#endif

/*
 * x limited to [lo, hi] by bit masks: a `?:` on floats becomes a branch
 * the compiler will not vectorise, and fminf/fmaxf have no SSE2 vector
 * form. NaN compares false both ways and stays NaN.
 */
static inline float bg_cpu_clampf(float x, float lo, float hi)
{
    uint32_t xb, lb, hb;
    memcpy(&xb, &x, 4);
    memcpy(&lb, &lo, 4);
    memcpy(&hb, &hi, 4);
    uint32_t ml = -(uint32_t)(x < lo), mh = -(uint32_t)(x > hi);
    xb = (xb & ~ml) | (lb & ml);
    xb = (xb & ~mh) | (hb & mh);
    memcpy(&x, &xb, 4);
    return x;
}

/*
 * exp(x) with x clamped to [-87, 88] (so 2^n stays a normal float; below
 * -87 the result is exp(-87) ~ 1.6e-38, above 88 it is exp(88) ~ 1.7e38).
 * Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, with ln2 split so that
 * n * LN2_HI is exact, then Cephes' degree-6 polynomial for e^r and 2^n
 * from the exponent bits. Relative error within [-87, 88] is below 2 ulp
 * (tests/layers/test_layers_fast.c sweeps it against double exp). NaN in,
 * NaN out.
 */
static inline float bg_cpu_expf(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = bg_cpu_clampf(x, -87.0f, 88.0f);
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    uint32_t tb, mb;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    float r = x - n * 0.693359375f; /* LN2_HI: 9 significant bits, exact product */
    r = r - n * -2.12194440e-4f;    /* LN2_LO */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* 2^n: n sits in t's low mantissa bits; unsigned, so NaN's garbage
     * bits cannot overflow a signed int */
    uint32_t sb = (tb - mb + 127u) << 23;
    float scale;
    memcpy(&scale, &sb, 4);
    return p * scale;
}

#endif
