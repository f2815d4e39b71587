/*
 * transport/reduce.c -- the arithmetic of allreduce on host buffers (f32
 * and bf16 sum, division for averages), and dispatch to the CUDA kernels
 * for device buffers.
 *
 * Must NOT: reorder or vectorise in a way that changes results between runs
 * (each element is one IEEE operation, so any compiler vectorisation is
 * bit-identical), or touch anything but the given elements.
 */
#include <string.h>

#include "transport/reduce.h"

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, keeping NaNs NaN (a carry could make them Inf). */
static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

bg_status_t bg_tp_reduce_sum(void *dst, const void *src, size_t n, bg_tp_dtype_t dt,
                             bg_tp_mem_t mem)
{
    if (mem == BG_TP_MEM_CUDA) {
#ifdef BG_HAVE_CUDA
        return bg_tp_cuda_reduce_sum(dst, src, n, (int)dt);
#else
        return bg_errorf(BG_ERR_UNSUPPORTED, "reduce: device buffer but built without CUDA");
#endif
    }
    if (dt == BG_TP_F32) {
        float *d = dst;
        const float *s = src;
        for (size_t i = 0; i < n; i++) d[i] += s[i];
    } else {
        uint16_t *d = dst;
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(bf16_to_f32(d[i]) + bf16_to_f32(s[i]));
    }
    return BG_OK;
}

bg_status_t bg_tp_reduce_div(void *x, size_t n, bg_tp_dtype_t dt, int divisor, bg_tp_mem_t mem)
{
    if (mem == BG_TP_MEM_CUDA) {
#ifdef BG_HAVE_CUDA
        return bg_tp_cuda_reduce_div(x, n, (int)dt, divisor);
#else
        return bg_errorf(BG_ERR_UNSUPPORTED, "reduce: device buffer but built without CUDA");
#endif
    }
    float dv = (float)divisor;
    if (dt == BG_TP_F32) {
        float *p = x;
        for (size_t i = 0; i < n; i++) p[i] /= dv;
    } else {
        uint16_t *p = x;
        for (size_t i = 0; i < n; i++) p[i] = f32_to_bf16(bf16_to_f32(p[i]) / dv);
    }
    return BG_OK;
}
