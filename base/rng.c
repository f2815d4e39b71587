/*
 * base/rng.c -- Philox4x32-10 (Salmon et al., SC'11) and derived draws.
 * Must stay bit-identical across compilers: integer math only until the
 * final conversion, float transcendental calls done in double.
 */
#include "base/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

uint64_t bg_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

bg_rng_key_t bg_rng_key(uint64_t seed, const char *name)
{
    uint64_t h = bg_hash_str(name) ^ (seed * 0x9E3779B97F4A7C15ull);
    h ^= h >> 31;
    bg_rng_key_t k = {{(uint32_t)h, (uint32_t)(h >> 32)}};
    return k;
}

void bg_rng_block(bg_rng_key_t key, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = key.k[0], k1 = key.k[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* 24 random bits -> [0,1) exactly representable in float. */
static float u32_to_unit(uint32_t x)
{
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

float bg_rng_uniform(bg_rng_key_t key, uint64_t i)
{
    uint32_t w[4];
    bg_rng_block(key, i, w);
    return u32_to_unit(w[0]);
}

float bg_rng_normal(bg_rng_key_t key, uint64_t i)
{
    uint32_t w[4];
    bg_rng_block(key, i, w);
    /* Box-Muller on two fresh uniforms of this element's own block. */
    double u1 = ((double)(w[0] >> 8) + 1.0) / 16777217.0; /* (0,1] avoids log(0) */
    double u2 = (double)(w[1] >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
