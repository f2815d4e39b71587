/*
 * tests/flat_util.h -- a flat parameter layout for the step-operation tests
 * (CPU and GPU): segments of the lengths a test chooses, every other one
 * weight-decayed, each starting at a multiple of 64 elements as the runtime
 * lays them out, and the chunk table the step kernels read.
 * Must NOT allocate: everything lives in the caller's struct.
 */
#ifndef BG_TESTS_FLAT_UTIL_H
#define BG_TESTS_FLAT_UTIL_H

#include <stdint.h>

#include "layers/backend.h"

#define BG_TEST_FLAT_MAX 16

typedef struct bg_test_flat {
    int nseg;
    int64_t off[BG_TEST_FLAT_MAX + 1], chunk0[BG_TEST_FLAT_MAX + 1], n, nch;
    uint8_t decay[BG_TEST_FLAT_MAX];
    bg_flat_segs_t segs; /* host view of the above */
} bg_test_flat_t;

/* Lay out nseg (<= BG_TEST_FLAT_MAX) segments of len[i] elements into *f. */
static inline void bg_test_flat_make(bg_test_flat_t *f, const int64_t *len, int nseg)
{
    int64_t o = 0;
    f->nseg = nseg;
    for (int i = 0; i < nseg; i++) {
        f->off[i] = o;
        f->decay[i] = (uint8_t)(i % 2);
        o += (len[i] + 63) / 64 * 64; /* gaps, as the runtime lays them out */
    }
    f->off[nseg] = f->n = o;
    f->nch = bg_flat_chunks(f->off, nseg, f->chunk0);
    f->segs = (bg_flat_segs_t){nseg, f->off, f->decay, f->off, f->chunk0, f->nch};
}

#endif
