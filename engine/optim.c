/*
 * engine/optim.c -- optimizer configuration, the warmup+cosine schedule,
 * clipping, and the factors of one update (bias corrections) for the
 * backend's fused update (layers/backend.h, bg_step_update), computed once
 * on the host so every backend and replica applies the same floats.
 * Must not communicate, allocate or touch parameters.
 */
#include "engine/optim.h"

#include <math.h>
#include <string.h>

void bg_optim_conf_default(bg_optim_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->kind = BG_OPT_ADAMW;
    c->lr = 1e-3f;
    c->min_lr_frac = 0.1f;
    c->momentum = 0.9f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->eps = 1e-8f;
}

bg_status_t bg_optim_kind_parse(const char *s, bg_optim_kind_t *out)
{
    if (!strcmp(s, "sgd"))
        *out = BG_OPT_SGD;
    else if (!strcmp(s, "adamw") || !strcmp(s, "adam"))
        *out = BG_OPT_ADAMW;
    else
        return bg_errorf(BG_ERR_INVALID, "unknown optimizer '%s' (choose sgd or adamw)", s);
    return BG_OK;
}

const char *bg_optim_kind_name(bg_optim_kind_t k)
{
    return k == BG_OPT_SGD ? "sgd" : "adamw";
}

int bg_optim_state_count(bg_optim_kind_t k)
{
    return k == BG_OPT_SGD ? 1 : 2;
}

float bg_optim_lr(const bg_optim_conf_t *c, int64_t step)
{
    if (c->warmup > 0 && step < c->warmup)
        return c->lr * (float)(step + 1) / (float)c->warmup;
    if (c->total <= c->warmup)
        return c->lr;
    double t = (double)(step - c->warmup) / (double)(c->total - c->warmup);
    if (t > 1.0)
        t = 1.0;
    double min_lr = (double)c->lr * c->min_lr_frac;
    return (float)(min_lr + 0.5 * ((double)c->lr - min_lr) * (1.0 + cos(M_PI * t)));
}

float bg_optim_clip_scale(const bg_optim_conf_t *c, double global_norm)
{
    if (c->clip <= 0.0f || !(global_norm > c->clip))
        return 1.0f;
    return (float)(c->clip / global_norm);
}

void bg_optim_step_args(const bg_optim_conf_t *c, int64_t step, float lr, float gscale,
                        bg_step_args_t *out)
{
    bg_step_args_t a = {0};
    a.kind = c->kind == BG_OPT_SGD ? BG_STEP_SGD : BG_STEP_ADAMW;
    a.lr = lr;
    a.gscale = gscale;
    a.weight_decay = c->weight_decay;
    a.momentum = c->momentum;
    a.beta1 = c->beta1;
    a.beta2 = c->beta2;
    a.eps = c->eps;
    a.bc1 = 1.0f - powf(c->beta1, (float)(step + 1));
    a.bc2 = 1.0f - powf(c->beta2, (float)(step + 1));
    *out = a;
}
