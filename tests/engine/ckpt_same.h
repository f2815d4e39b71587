/*
 * tests/engine/ckpt_same.h -- the end-to-end tests' verdict on two runs:
 * their latest checkpoints hold the same tensors, bit for bit, at the same
 * step, whatever stage file holds each. Header-only; tests only.
 * Must NOT modify the checkpoints it reads.
 */
#ifndef BG_TEST_CKPT_SAME_H
#define BG_TEST_CKPT_SAME_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"

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
    for (int f = 0; ok && f < bg_ckpt_file_count(ca); f++) {
        const bg_st_file_t *sf = bg_ckpt_file(ca, f);
        for (size_t i = 0; ok && i < bg_st_count(sf); i++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(sf, i);
            if (skip && skip(t->name))
                continue;
            const bg_st_tensor_t *u = bg_ckpt_find(cb, t->name, NULL);
            ok = u && u->nbytes == t->nbytes && !memcmp(u->data, t->data, t->nbytes);
            if (!ok)
                fprintf(stderr, "%s: %s differs from %s\n", t->name, a, b);
            n++;
        }
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
