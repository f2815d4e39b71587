/*
 * layers/tensor.h -- tensors are views: (dtype, shape, strides, device, data).
 *
 * A tensor never owns memory. Memory comes from a backend allocation
 * (bg_backend_alloc) or from an arena carved out of one (bg_arena_t), and the
 * owner frees it. Shapes are row-major, outermost first: (B, T, C).
 * Must not know about layers, graphs or transport.
 */
#ifndef BG_TENSOR_H
#define BG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/bf16.h"
#include "base/status.h"

#define BG_MAX_DIMS 4

typedef enum { BG_F32 = 0, BG_BF16 = 1, BG_I32 = 2, BG_F16 = 3 } bg_dtype_t;
typedef enum { BG_DEV_CPU = 0, BG_DEV_CUDA = 1 } bg_device_t;
#define BG_DEV_COUNT 2

typedef struct bg_tensor {
    bg_dtype_t dtype;
    bg_device_t device;
    int ndim;
    int64_t shape[BG_MAX_DIMS];
    int64_t stride[BG_MAX_DIMS]; /* in elements */
    void *data;
} bg_tensor_t;

/* A shape with a dtype: what shape inference talks about (no memory). */
typedef struct bg_shape {
    bg_dtype_t dtype;
    int ndim;
    int64_t d[BG_MAX_DIMS];
} bg_shape_t;

size_t bg_dtype_size(bg_dtype_t dt);
const char *bg_dtype_name(bg_dtype_t dt);
const char *bg_device_name(bg_device_t dev);

int64_t bg_shape_numel(const bg_shape_t *s);
bool bg_shape_eq(const bg_shape_t *a, const bg_shape_t *b); /* dims and dtype */
/* "f32[4, 128, 768]" into buf; returns buf. */
char *bg_shape_str(const bg_shape_t *s, char *buf, size_t len);

/* A contiguous view over `data`. Cannot fail (ndim is clamped by the caller). */
bg_tensor_t bg_tensor_make(void *data, bg_dtype_t dt, bg_device_t dev, int ndim,
                           const int64_t *shape);
bg_tensor_t bg_tensor_from_shape(void *data, bg_device_t dev, const bg_shape_t *s);
bg_shape_t bg_tensor_shape(const bg_tensor_t *t);
int64_t bg_tensor_numel(const bg_tensor_t *t);
size_t bg_tensor_nbytes(const bg_tensor_t *t);
bool bg_tensor_is_contiguous(const bg_tensor_t *t);
/* Size of the last dimension and the product of the others: (N, C) view. */
int64_t bg_tensor_rows(const bg_tensor_t *t);
int64_t bg_tensor_cols(const bg_tensor_t *t);

/* bf16 <-> f32 on the host: base/bf16.h. IEEE
 * half <-> f32: to half rounds to nearest even (overflow gives inf, like
 * CUDA's __float2half_rn); to f32 is exact (subnormals, inf, NaN). Inline:
 * the casts of whole flat buffers vectorise around them. */
/* Round-to-nearest-even into half: the mantissa is cut at the half's
 * precision for its exponent (fewer bits for subnormals). */
static inline uint16_t bg_f32_to_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* quiet NaN */
    if (a >= 0x477ff000u)                                         /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal half: exponent >= -14 */
        uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | (((r >> 13) - (112u << 10)) & 0x7fffu));
    }
    if (a < 0x33000000u) /* below half the smallest subnormal: zero */
        return sign;
    /* subnormal: value = m * 2^-24 with m = round(a_value * 2^24) */
    uint32_t e = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 bits dropped */
    uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1u);
    uint32_t m = man >> shift;
    if (rest > half || (rest == half && (m & 1u)))
        m++;
    return (uint16_t)(sign | m);
}

static inline float bg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / NaN */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal: renormalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* "f32" | "bf16" | "fp16" (also "f16"); BG_ERR_INVALID names the choices. */
bg_status_t bg_dtype_parse(const char *s, bg_dtype_t *out);
/* A compute dtype of float activations: f32, bf16 or f16. */
static inline bool bg_dtype_is_float(bg_dtype_t dt)
{
    return dt == BG_F32 || dt == BG_BF16 || dt == BG_F16;
}

#endif
