/*
 * tests/engine/ckpt_same.h -- the end-to-end tests' verdict on two runs:
 * their latest checkpoints hold the same tensors, bit for bit, at the same
 * step, whatever stage file holds each, whole or in pieces. Header-only; tests only.
 * Must NOT modify the checkpoints it reads.
 */
#ifndef BG_TEST_CKPT_SAME_H
#define BG_TEST_CKPT_SAME_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"

/* Tensor t of checkpoint ca equals the one of cb with its name, bit for
 * bit, whether each is whole or in pieces (sharded saves). */
static inline int bg_test_same_tensor(const bg_ckpt_t *ca, const bg_ckpt_t *cb,
                                      const bg_ckpt_tensor_info_t *t)
{
    bg_ckpt_tensor_info_t u;
    if (!bg_ckpt_tensor_info(cb, t->name, &u) || u.numel != t->numel || u.dtype != t->dtype)
        return 0;
    if (t->dtype != BG_ST_F32) { /* whole only: compare the bytes */
        const bg_st_tensor_t *x = bg_ckpt_find(ca, t->name, NULL);
        const bg_st_tensor_t *y = bg_ckpt_find(cb, t->name, NULL);
        return x && y && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
    }
    size_t bytes = (size_t)t->numel * sizeof(float) + 1;
    float *x = malloc(bytes), *y = malloc(bytes);
    int ok = x && y && bg_ckpt_read_f32(ca, t->name, t->ndim, t->shape, t->numel, x) == BG_OK &&
             bg_ckpt_read_f32(cb, t->name, t->ndim, t->shape, t->numel, y) == BG_OK &&
             !memcmp(x, y, bytes - 1);
    free(x), free(y);
    return ok;
}

/* Every tensor of a's latest checkpoint (except those `skip` names, when
 * given) equals b's, bit for bit, whatever stage file holds it. */
static inline int bg_test_same_checkpoints_but(const char *a, const char *b,
                                               int (*skip)(const char *name))
{
    char *pa = NULL, *pb = NULL;
    bg_ckpt_t *ca = NULL, *cb = NULL;
    int ok = bg_ckpt_dir_latest(a, &pa) == BG_OK && pa && bg_ckpt_open(pa, &ca) == BG_OK &&
             bg_ckpt_dir_latest(b, &pb) == BG_OK && pb && bg_ckpt_open(pb, &cb) == BG_OK;
    if (!ok)
        fprintf(stderr, "cannot open %s or %s: %s\n", a, b, bg_last_error());
    int n = 0;
    for (size_t i = 0; ok && i < bg_ckpt_tensor_count(ca); i++) {
        bg_ckpt_tensor_info_t t;
        bg_ckpt_tensor_at(ca, i, &t);
        if (skip && skip(t.name))
            continue;
        ok = bg_test_same_tensor(ca, cb, &t);
        if (!ok)
            fprintf(stderr, "%s: %s differs from %s\n", t.name, a, b);
        n++;
    }
    ok = ok && n > 0 && bg_ckpt_manifest(ca)->step == bg_ckpt_manifest(cb)->step;
    bg_ckpt_close(ca), bg_ckpt_close(cb);
    free(pa), free(pb);
    return ok;
}

static inline int bg_test_same_checkpoints(const char *a, const char *b)
{
    return bg_test_same_checkpoints_but(a, b, NULL);
}

#endif
