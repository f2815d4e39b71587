/*
 * layers/tensor.c -- shape and view arithmetic for tensors.
 * Pure functions on small structs: no allocation, no device access.
 */
#include "layers/tensor.h"

#include <stdio.h>
#include <string.h>

size_t bg_dtype_size(bg_dtype_t dt)
{
    switch (dt) {
    case BG_F32:
        return 4;
    case BG_BF16:
    case BG_F16:
        return 2;
    case BG_I32:
        return 4;
    }
    return 0;
}

const char *bg_dtype_name(bg_dtype_t dt)
{
    switch (dt) {
    case BG_F32:
        return "f32";
    case BG_BF16:
        return "bf16";
    case BG_F16:
        return "fp16";
    case BG_I32:
        return "i32";
    }
    return "?";
}

const char *bg_device_name(bg_device_t dev)
{
    return dev == BG_DEV_CUDA ? "cuda" : "cpu";
}

int64_t bg_shape_numel(const bg_shape_t *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->d[i];
    return n;
}

bool bg_shape_eq(const bg_shape_t *a, const bg_shape_t *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i])
            return false;
    return true;
}

char *bg_shape_str(const bg_shape_t *s, char *buf, size_t len)
{
    size_t off = 0;
    int n = snprintf(buf, len, "%s[", bg_dtype_name(s->dtype));
    off = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < s->ndim && off < len; i++) {
        n = snprintf(buf + off, len - off, "%s%lld", i ? ", " : "", (long long)s->d[i]);
        off += n > 0 ? (size_t)n : 0;
    }
    if (off < len)
        snprintf(buf + off, len - off, "]");
    return buf;
}

bg_tensor_t bg_tensor_make(void *data, bg_dtype_t dt, bg_device_t dev, int ndim,
                           const int64_t *shape)
{
    bg_tensor_t t;
    memset(&t, 0, sizeof(t));
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    t.data = data;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.stride[i] = stride;
        stride *= shape[i];
    }
    return t;
}

bg_tensor_t bg_tensor_from_shape(void *data, bg_device_t dev, const bg_shape_t *s)
{
    return bg_tensor_make(data, s->dtype, dev, s->ndim, s->d);
}

bg_shape_t bg_tensor_shape(const bg_tensor_t *t)
{
    bg_shape_t s;
    memset(&s, 0, sizeof(s));
    s.dtype = t->dtype;
    s.ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++)
        s.d[i] = t->shape[i];
    return s;
}

int64_t bg_tensor_numel(const bg_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t bg_tensor_nbytes(const bg_tensor_t *t)
{
    return (size_t)bg_tensor_numel(t) * bg_dtype_size(t->dtype);
}

bool bg_tensor_is_contiguous(const bg_tensor_t *t)
{
    int64_t stride = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != stride)
            return false;
        stride *= t->shape[i];
    }
    return true;
}

int64_t bg_tensor_cols(const bg_tensor_t *t)
{
    return t->ndim ? t->shape[t->ndim - 1] : 1;
}

int64_t bg_tensor_rows(const bg_tensor_t *t)
{
    int64_t c = bg_tensor_cols(t);
    return c ? bg_tensor_numel(t) / c : 0;
}

uint16_t bg_f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bg_bf16_to_f32(uint16_t x)
{
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round-to-nearest-even into half: the mantissa is cut at the half's
 * precision for its exponent (fewer bits for subnormals). */
uint16_t bg_f32_to_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* quiet NaN */
    if (a >= 0x477ff000u) /* rounds to >= 65520: inf */
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

float bg_f16_to_f32(uint16_t h)
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

bg_status_t bg_dtype_parse(const char *s, bg_dtype_t *out)
{
    if (!strcmp(s, "f32"))
        *out = BG_F32;
    else if (!strcmp(s, "bf16"))
        *out = BG_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "f16"))
        *out = BG_F16;
    else
        return bg_errorf(BG_ERR_INVALID, "unknown dtype '%s' (choose f32, bf16 or fp16)", s);
    return BG_OK;
}
