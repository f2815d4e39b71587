/*
 * engine/optim.h -- optimizers and the learning-rate schedule.
 *
 * SGD with momentum and AdamW (configuration; the update itself runs on
 * the rank's backend over flat buffers, layers/backend.h), linear warmup
 * then cosine decay, and the scale factor for clipping by global norm. The
 * same inputs give the same bits on every rank: replicas of a parameter
 * (data-parallel copies, tied weights on two stages) stay equal without
 * being re-broadcast. Must not communicate or know about layouts.
 */
#ifndef BG_OPTIM_H
#define BG_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "layers/backend.h"

typedef enum { BG_OPT_SGD = 0, BG_OPT_ADAMW = 1 } bg_optim_kind_t;

typedef struct bg_optim_conf {
    bg_optim_kind_t kind;
    float lr;                /* peak learning rate */
    float min_lr_frac;       /* cosine decays to lr * min_lr_frac */
    int64_t warmup;          /* steps of linear warmup from lr/warmup */
    int64_t total;           /* steps of the run (cosine horizon); 0: constant after warmup */
    float momentum;          /* SGD */
    float beta1, beta2, eps; /* AdamW */
    float weight_decay;      /* decoupled; applied to parameters with >= 2 dims only */
    float clip;              /* max global gradient norm; 0: off */
} bg_optim_conf_t;

/* Defaults: AdamW, lr 1e-3, betas (0.9, 0.95), eps 1e-8, wd 0, no clip. */
void bg_optim_conf_default(bg_optim_conf_t *c);
bg_status_t bg_optim_kind_parse(const char *s, bg_optim_kind_t *out);
const char *bg_optim_kind_name(bg_optim_kind_t k);
/* State arrays per parameter element: SGD 1 (momentum), AdamW 2 (m, v). */
int bg_optim_state_count(bg_optim_kind_t k);

/* Learning rate for 0-based `step`. Pure. */
float bg_optim_lr(const bg_optim_conf_t *c, int64_t step);

/* Multiplier for gradients given the global norm: min(1, clip / norm). */
float bg_optim_clip_scale(const bg_optim_conf_t *c, double global_norm);

/*
 * The factors of the update for 0-based `step` (AdamW bias correction uses
 * step + 1) with learning rate `lr` and gradient multiplier `gscale`
 * (clipping, loss scale), for bg_step_update: weight decay applies where
 * the flat buffer's segment flag says (parameters with >= 2 dims). Pure.
 */
void bg_optim_step_args(const bg_optim_conf_t *c, int64_t step, float lr, float gscale,
                        bg_step_args_t *out);

#endif
