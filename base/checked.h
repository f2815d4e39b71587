/*
 * base/checked.h -- overflow-checked size arithmetic for sizes that come from
 * users or files (data specs, file headers, checkpoints, plans, profiles).
 * Every helper returns false on overflow (or a negative operand) and leaves
 * *out untouched, so callers report the cause in their own bg_errorf. Must
 * not log, record errors or clamp: a size that does not fit is refused.
 */
#ifndef BG_CHECKED_H
#define BG_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* *out = a * b as size_t; false on overflow. */
static inline bool bg_mul_size(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

/* *out = a + b as size_t; false on overflow. */
static inline bool bg_add_size(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

/* *out = a * b for non-negative int64; false on a negative operand or overflow. */
static inline bool bg_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

/* *out = a + b for non-negative int64; false on a negative operand or overflow. */
static inline bool bg_add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

/* *out = a * b * c as size_t (bytes of a rows x cols array of c-byte elements). */
static inline bool bg_mul3_size(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    return bg_mul_size(a, b, &ab) && bg_mul_size(ab, c, out);
}

#endif
