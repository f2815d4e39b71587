/*
 * layers/attention_impl.h -- what the two halves of the attention kind
 * (attention.c for the CPU, attention.cu for CUDA) must agree on: the
 * sizes a spec implies and the byte layout of saved scratch and workspace.
 * Tests include it to look into saved scratch. Header-only (static inline)
 * so that the C and the CUDA half compile the same definitions.
 * Must not contain math or backend calls.
 */
#ifndef BG_ATTENTION_IMPL_H
#define BG_ATTENTION_IMPL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "layers/layer.h"

/* CPU tile edge (query rows and key columns of one score tile). */
#define BG_ATT_CPU_TILE 64
/* Every region of saved/workspace starts at a multiple of this (vector loads). */
#define BG_ATT_ALIGN 256

/* Sizes of one call, derived from the spec (inference has validated it). */
typedef struct bg_att_dims {
    int64_t B, T, C;   /* x is (B, T, C) */
    int64_t H, KV, G;  /* query heads, key/value heads, G = H / KV queries per kv head */
    int64_t hs, N;     /* head size C / H; N = B * T rows */
    int64_t Wq;        /* qkv row width: C + 2 * KV * hs */
    int64_t ko, vo;    /* column of k and of v in a qkv row: C and C + KV * hs */
    bool causal, rope;
    bool bias;         /* bias=false: no qkv.bias / proj.bias slots (Llama) */
    int pqw, pqb;      /* parameter slots of qkv.weight, qkv.bias (-1: none) */
    int ppw, ppb;      /* parameter slots of proj.weight, proj.bias (-1: none) */
    double theta;      /* rope base */
    float scale;       /* 1 / sqrt(hs) */
} bg_att_dims_t;

static inline bg_att_dims_t bg_att_dims_of(const bg_layer_spec_t *spec)
{
    bg_att_dims_t d;
    d.B = spec->in[0].d[0];
    d.T = spec->in[0].d[1];
    d.C = spec->in[0].d[2];
    d.H = bg_attrs_int(&spec->attrs, "heads", 1);
    d.KV = bg_attrs_int(&spec->attrs, "kv_heads", d.H);
    d.G = d.H / d.KV;
    d.hs = d.C / d.H;
    d.N = d.B * d.T;
    d.Wq = d.C + 2 * d.KV * d.hs;
    d.ko = d.C;
    d.vo = d.C + d.KV * d.hs;
    d.causal = bg_attrs_bool(&spec->attrs, "causal", true);
    d.rope = bg_attrs_bool(&spec->attrs, "rope", false);
    d.bias = bg_attrs_bool(&spec->attrs, "bias", true);
    /* Slot order: qkv.weight, [qkv.bias], proj.weight, [proj.bias]. */
    d.pqw = 0;
    d.pqb = d.bias ? 1 : -1;
    d.ppw = d.bias ? 2 : 1;
    d.ppb = d.bias ? 3 : -1;
    d.theta = bg_attrs_float(&spec->attrs, "rope_theta", 10000.0);
    d.scale = 1.0f / sqrtf((float)d.hs);
    return d;
}

/*
 * Byte offsets. saved (F..W):
 *   qkv (N, Wq) es [q, k rotated when rope] | y (N, C) es | dqkv (N, Wq) es |
 *   lse (B, H, T) f32 (per-row log-sum-exp of the scaled, masked scores)
 * workspace (one call):
 *   dy (N, C) es (B) | dsum (B, H, T) f32 (B: rowsum(dy * y) per head) |
 *   tiles: 2 * TILE^2 + 2 * TILE f32 (CPU: score tile, its gradient, row max/sum)
 * es = bytes of the compute dtype. Everything is O(B T C): no (T, T) buffer.
 */
typedef struct bg_att_layout {
    int64_t qkv, y, dqkv, lse, saved;
    int64_t dy, dsum, tiles, workspace;
} bg_att_layout_t;

static inline int64_t bg_att_align(int64_t x)
{
    return (x + BG_ATT_ALIGN - 1) / BG_ATT_ALIGN * BG_ATT_ALIGN;
}

static inline bg_att_layout_t bg_att_layout_of(const bg_att_dims_t *d, int64_t es)
{
    bg_att_layout_t l;
    const int64_t tile = BG_ATT_CPU_TILE;
    l.qkv = 0;
    l.y = bg_att_align(l.qkv + d->N * d->Wq * es);
    l.dqkv = bg_att_align(l.y + d->N * d->C * es);
    l.lse = bg_att_align(l.dqkv + d->N * d->Wq * es);
    l.saved = l.lse + d->B * d->H * d->T * 4;
    l.dy = 0;
    l.dsum = bg_att_align(l.dy + d->N * d->C * es);
    l.tiles = bg_att_align(l.dsum + d->B * d->H * d->T * 4);
    l.workspace = d->N ? l.tiles + (2 * tile * tile + 2 * tile) * 4 : 0; /* no rows: no call */
    return l;
}

#endif
