/*
 * engine/optim.c -- SGD/AdamW updates and the warmup+cosine schedule.
 * Plain loops in a fixed order: every replica computes identical bits.
 * Must not communicate, allocate or keep state outside the caller's arrays.
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

void bg_optim_update_host(const bg_optim_conf_t *c, int64_t step, float lr, float gscale,
                          bool decay, float *p, const float *g, float *s0, float *s1, int64_t n)
{
    float wd = decay ? c->weight_decay : 0.0f;
    if (c->kind == BG_OPT_SGD) {
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] * gscale + wd * p[i];
            s0[i] = c->momentum * s0[i] + gi;
            p[i] -= lr * s0[i];
        }
        return;
    }
    float b1 = c->beta1, b2 = c->beta2;
    float bc1 = 1.0f - powf(b1, (float)(step + 1));
    float bc2 = 1.0f - powf(b2, (float)(step + 1));
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        s0[i] = b1 * s0[i] + (1.0f - b1) * gi;
        s1[i] = b2 * s1[i] + (1.0f - b2) * gi * gi;
        float mhat = s0[i] / bc1, vhat = s1[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + c->eps) + wd * p[i]);
    }
}
