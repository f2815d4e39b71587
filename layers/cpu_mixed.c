/*
 * layers/cpu_mixed.c -- bf16/fp16 runs on the CPU backend: every float
 * tensor of a call is stored in the low-precision type, the kind's f32
 * kernel computes, and each output is rounded once.
 *
 * That mirrors the CUDA kernels' rounding points: they load bf16 into f32
 * registers (exact), compute in f32 and store each output once, rounding to
 * nearest even; f32 gradient accumulators and losses stay f32 on both.
 * Inputs, parameters and the output gradient are widened into f32 copies,
 * outputs and input gradients are computed into f32 copies and rounded
 * (bg_f32_to_bf16 / bg_f32_to_f16, the host twins of the device stores).
 * Saved scratch and workspace are the f32 kernel's (bg_layer_kernel_dtype).
 * Must NOT change any f32 run (it is never entered there) or know a kind.
 */
#include <stdlib.h>
#include <string.h>

#include "layers/backend.h"
#include "layers/layer_mixed.h"

typedef struct mixed {
    bg_layer_call_t f; /* the f32 call */
    bg_tensor_t t[2 * BG_MAX_INPUTS + BG_MAX_PARAMS + 2];
    void *buf[2 * BG_MAX_INPUTS + BG_MAX_PARAMS + 2];
    bg_tensor_t *round_to[BG_MAX_INPUTS + 1]; /* low-precision destinations */
    int nt, nround;
} mixed_t;

static void widen(bg_dtype_t dt, const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = dt == BG_BF16 ? bg_bf16_to_f32(h[i]) : bg_f16_to_f32(h[i]);
}

static void narrow(bg_dtype_t dt, const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = dt == BG_BF16 ? bg_f32_to_bf16(src[i]) : bg_f32_to_f16(src[i]);
}

/* An f32 twin of low-precision tensor t (widened when `load`); t itself
 * when it is not low precision (ids, losses, f32 accumulators). */
static bg_status_t twin(mixed_t *m, const bg_tensor_t *t, bool load, bg_tensor_t **out)
{
    if (!t || (t->dtype != BG_BF16 && t->dtype != BG_F16)) {
        *out = (bg_tensor_t *)t;
        return BG_OK;
    }
    int64_t n = bg_tensor_numel(t);
    float *b = malloc((size_t)n * sizeof(float) + 4);
    if (!b)
        return bg_errorf(BG_ERR_NOMEM,
                         "cpu %s call: out of memory for an f32 copy of %lld "
                         "elements",
                         bg_dtype_name(t->dtype), (long long)n);
    if (load)
        widen(t->dtype, t->data, b, n);
    bg_tensor_t *w = &m->t[m->nt];
    m->buf[m->nt++] = b;
    *w = bg_tensor_make(b, BG_F32, t->device, t->ndim, t->shape);
    *out = w;
    return BG_OK;
}

/* An f32 twin written by the kernel, rounded into t afterwards. */
static bg_status_t twin_out(mixed_t *m, bg_tensor_t *t, bg_tensor_t **out)
{
    bg_status_t st = twin(m, t, false, out);
    if (st == BG_OK && *out != t)
        m->round_to[m->nround++] = t;
    return st;
}

/* phase: 0 F (writes out), 1 B (writes din), 2 W (writes f32 grads only). */
static bg_status_t mixed_prepare(mixed_t *m, const bg_layer_call_t *c, int phase)
{
    bg_status_t st = BG_OK;
    bg_tensor_t *w;
    m->f = *c;
    m->f.dtype = BG_F32;
    for (int i = 0; i < c->spec->n_in && st == BG_OK; i++)
        if ((st = twin(m, c->in[i], true, &w)) == BG_OK)
            m->f.in[i] = w;
    for (int j = 0; j < BG_MAX_PARAMS && st == BG_OK; j++)
        if ((st = twin(m, c->params[j], true, &w)) == BG_OK)
            m->f.params[j] = w;
    if (st == BG_OK && phase > 0 && (st = twin(m, c->dout, true, &w)) == BG_OK)
        m->f.dout = w;
    /* outputs last: round_to holds their order of creation */
    if (st == BG_OK && phase == 0 && (st = twin_out(m, c->out, &w)) == BG_OK)
        m->f.out = w;
    for (int i = 0; phase == 1 && i < c->spec->n_in && st == BG_OK; i++)
        if ((st = twin_out(m, c->din[i], &w)) == BG_OK)
            m->f.din[i] = w;
    return st;
}

/* The f32 kernel's saved scratch and workspace must fit what the caller
 * sized (bg_layer_kernel_dtype tells callers to size them for f32). */
static bg_status_t mixed_check_scratch(const bg_layer_call_t *c)
{
    bg_layer_cost_t cost;
    bg_layer_cost(c->spec, BG_F32, &cost);
    if (cost.saved_bytes && (!c->saved || (int64_t)bg_tensor_nbytes(c->saved) < cost.saved_bytes))
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s: saved scratch must hold the f32 kernel's %lld bytes on the "
                         "cpu backend",
                         c->spec->name, (long long)cost.saved_bytes);
    if (cost.workspace_bytes &&
        (!c->workspace || (int64_t)bg_tensor_nbytes(c->workspace) < cost.workspace_bytes))
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s: workspace must hold the f32 kernel's %lld bytes on the cpu "
                         "backend",
                         c->spec->name, (long long)cost.workspace_bytes);
    return BG_OK;
}

bg_status_t bg_cpu_mixed_call(const bg_layer_call_t *c, int phase, bg_layer_fn fn)
{
    mixed_t m;
    memset(&m, 0, sizeof(m));
    bg_status_t st = mixed_check_scratch(c);
    if (st == BG_OK)
        st = mixed_prepare(&m, c, phase);
    if (st == BG_OK)
        st = fn(&m.f);
    for (int r = 0; r < m.nround && st == BG_OK; r++) {
        /* the twins of round_to[r] are the last nround tensors, in order */
        const bg_tensor_t *src = &m.t[m.nt - m.nround + r];
        narrow(m.round_to[r]->dtype, src->data, m.round_to[r]->data, bg_tensor_numel(src));
    }
    for (int i = 0; i < m.nt; i++)
        free(m.buf[i]);
    return st;
}
