/*
 * base/rng.h -- counter-based random numbers (Philox4x32-10).
 *
 * Value i of a stream depends only on (key, i): no hidden state, so every
 * process, backend and layout draws the same numbers for the same parameter
 * name. Streams are keyed by a seed plus a string (a parameter's global name,
 * "data.shuffle", ...). Not for cryptography.
 */
#ifndef BG_RNG_H
#define BG_RNG_H

#include <stdint.h>

typedef struct {
    uint32_t k[2];
} bg_rng_key_t;

/* Key for the stream named `name` under `seed`. Cannot fail. */
bg_rng_key_t bg_rng_key(uint64_t seed, const char *name);

/* Four independent 32-bit words for block `counter` of the stream. */
void bg_rng_block(bg_rng_key_t key, uint64_t counter, uint32_t out[4]);

/* Element i of the stream as uniform [0,1), and as a standard normal. */
float bg_rng_uniform(bg_rng_key_t key, uint64_t i);
float bg_rng_normal(bg_rng_key_t key, uint64_t i);

/* 64-bit FNV-1a of a string; stable across platforms. */
uint64_t bg_hash_str(const char *s);

#endif
