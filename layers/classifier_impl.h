/*
 * layers/classifier_impl.h -- what the two halves of the fused classifier
 * (classifier.c for the CPU, classifier.cu for CUDA) must agree on: the
 * sizes a spec implies, the logits tile, and the byte layout of saved
 * scratch and workspace. The engine reads nothing here: it asks the kind
 * (row_argmax). Header-only (static inline) so that the C and the CUDA half
 * compile the same definitions. Must not contain math or backend calls.
 */
#ifndef BG_CLASSIFIER_IMPL_H
#define BG_CLASSIFIER_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "layers/layer.h"

/* One logits tile is at most BG_CLS_ROWS x BG_CLS_VOCAB f32 (16 MiB): big
 * enough for efficient GEMMs, small against (rows, V) logits of a large
 * vocabulary. Fixed, so every layout cuts a micro-batch the same way. */
#define BG_CLS_ROWS 1024
#define BG_CLS_VOCAB 4096
/* Every region of saved/workspace starts at a multiple of this. */
#define BG_CLS_ALIGN 256

/* Sizes of one call, derived from the spec (inference has validated it). */
typedef struct bg_cls_dims {
    int64_t rows, C, V; /* x (rows, C) after flattening, weight (V, C) */
    int64_t rc, vc;     /* tile: rc rows by vc vocabulary columns */
    bool bias;          /* bias (V) in slot 1 */
} bg_cls_dims_t;

static inline bg_cls_dims_t bg_cls_dims_of(const bg_layer_spec_t *spec)
{
    bg_cls_dims_t d;
    const bg_shape_t *x = &spec->in[0];
    d.C = x->d[x->ndim - 1];
    d.rows = d.C > 0 ? bg_shape_numel(x) / d.C : 0;
    d.V = bg_attrs_int(&spec->attrs, "out", 1);
    d.bias = bg_attrs_bool(&spec->attrs, "bias", true);
    d.rc = d.rows < BG_CLS_ROWS ? d.rows : BG_CLS_ROWS;
    d.vc = d.V < BG_CLS_VOCAB ? d.V : BG_CLS_VOCAB;
    return d;
}

/*
 * Byte offsets. saved (F..W):
 *   lse (rows) f32: per-row log-sum-exp of the logits |
 *   argmax (rows) i32: per-row class of the highest logit (lowest on ties)
 * workspace (one call):
 *   tile (rc, vc) f32: logits of one tile |
 *   dtile (rc, vc) bf16: their gradient in bf16, the GEMM operand (es = 4:
 *     unused, the tile is overwritten in place) |
 *   m (rc) f32, s (rc) f64, tl (rc) f32, am (rc) i32: running max, sum of
 *     exp, target logit, argmax of the rows of a row block |
 *   dxacc (rows, C) f32: B's bf16 runs sum dx over vocabulary tiles here
 *     (es = 4: unused, dx itself accumulates) |
 *   part (row blocks) f64: CUDA's per-row-block loss sums
 * es = bytes of the compute dtype; the sizes are those of bf16 whatever es
 * (a workspace sized in f32 passes the call checks of a bf16 call, so the
 * CPU half can refuse it itself). Everything is O(rows C + tile): no
 * (rows, V) buffer.
 */
typedef struct bg_cls_layout {
    int64_t lse, argmax, saved;
    int64_t tile, dtile, m, s, tl, am, dxacc, part, workspace;
} bg_cls_layout_t;

static inline int64_t bg_cls_align(int64_t x)
{
    return (x + BG_CLS_ALIGN - 1) / BG_CLS_ALIGN * BG_CLS_ALIGN;
}

static inline bg_cls_layout_t bg_cls_layout_of(const bg_cls_dims_t *d, int64_t es)
{
    bg_cls_layout_t l;
    int64_t tile = d->rc * d->vc;
    l.lse = 0;
    l.argmax = bg_cls_align(d->rows * 4);
    l.saved = l.argmax + d->rows * 4;
    l.tile = 0;
    /* Sized for bf16 whatever es: a call's workspace never grows with the
     * dtype, so an f32-sized one always passes the checks to the kind's
     * own dtype test. */
    l.dtile = es == 4 ? l.tile : bg_cls_align(tile * 4);
    l.m = bg_cls_align(bg_cls_align(tile * 4) + tile * 2);
    l.s = bg_cls_align(l.m + d->rc * 4);
    l.tl = bg_cls_align(l.s + d->rc * 8);
    l.am = bg_cls_align(l.tl + d->rc * 4);
    l.dxacc = bg_cls_align(l.am + d->rc * 4);
    l.part = bg_cls_align(l.dxacc + d->rows * d->C * 4);
    int64_t blocks = d->rc ? (d->rows + d->rc - 1) / d->rc : 0;
    l.workspace = d->rows ? l.part + blocks * 8 : 0; /* no rows: no call */
    return l;
}

#endif
