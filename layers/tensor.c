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
