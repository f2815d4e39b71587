/*
 * partition/cost.c -- device presets, the per-sample layer chain, and its
 * pricing on a device (roofline or measured profile).
 * Pure: no clocks, no devices, no files (profiles are loaded elsewhere).
 * Must not depend on the engine or transport.
 */
#include "partition/cost.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- devices ---- */

typedef struct {
    const char *name;
    bg_device_desc_t d;
} preset_t;

/* Assumed achievable rates, not peaks: ~45% of H100 SXM's 989 dense bf16
 * TFLOP/s is what large GEMM-bound training sees; links are one 400 Gb/s
 * NIC per GPU for pipeline and data-parallel traffic. The CPU preset is one
 * rank on a couple of AVX2 cores with shared-memory UCX. */
static const preset_t presets[] = {
    {"h100", {"h100", 450e12, 3.0e12, 80LL << 30, 50e9, 10e-6, 40e9, 20e-6}},
    {"a100", {"a100", 200e12, 1.6e12, 80LL << 30, 25e9, 10e-6, 20e9, 20e-6}},
    {"cpu", {"cpu", 50e9, 10e9, 16LL << 30, 5e9, 5e-6, 5e9, 5e-6}},
};

bg_status_t bg_device_preset(const char *name, bg_device_desc_t *out)
{
    const char *key = !strcmp(name, "cuda") ? "h100" : name;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (!strcmp(presets[i].name, key)) {
            *out = presets[i].d;
            return BG_OK;
        }
    return bg_errorf(BG_ERR_INVALID, "unknown device '%s' (known: cpu, cuda, h100, a100)", name);
}

bg_status_t bg_parse_bytes(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return bg_errorf(BG_ERR_INVALID, "'%s' is not a size (e.g. 80G, 512M)", s);
    double mul = 1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1024.0 * 1024; break;
        case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        default: return bg_errorf(BG_ERR_INVALID, "'%s' is not a size (e.g. 80G, 512M)", s);
        }
        end++;
        if (toupper((unsigned char)*end) == 'I') end++;
        if (toupper((unsigned char)*end) == 'B') end++;
        if (*end) return bg_errorf(BG_ERR_INVALID, "'%s' is not a size (e.g. 80G, 512M)", s);
    }
    double b = v * mul;
    if (b > 9.0e18) return bg_errorf(BG_ERR_INVALID, "size '%s' is too large", s);
    *out = (int64_t)b;
    return BG_OK;
}

int64_t bg_bytes_per_param(bg_dtype_t dtype, int opt_state_bytes)
{
    /* weights f32 + grads f32 (accumulators are f32 in both modes);
     * bf16/fp16 runs also hold the 16-bit working copy of the weights. */
    return 4 + 4 + (dtype != BG_F32 ? 2 : 0) + opt_state_bytes;
}

int64_t bg_param_bytes(bg_dtype_t dtype, int opt_state_bytes, int zero, int dp, int64_t n)
{
    if (!zero || dp <= 1)
        return n * bg_bytes_per_param(dtype, opt_state_bytes);
    int64_t copy = dtype != BG_F32 ? 2 : 4, shard = 4 + opt_state_bytes;
    return n * (copy + 4) + (n * shard + dp - 1) / dp;
}

int64_t bg_versions_bytes(bg_dtype_t dtype, int versions, int64_t n)
{
    return versions > 1 ? (int64_t)(versions - 1) * n * (int64_t)(bg_dtype_size(dtype) + 4) : 0;
}

/* ---- chain ---- */

bg_status_t bg_chain_alloc(int n_layers, int n_tensors, bg_dtype_t dtype, bg_chain_t *out)
{
    if (n_layers < 1 || n_tensors < 0)
        return bg_errorf(BG_ERR_INVALID, "chain needs at least one layer (got %d)", n_layers);
    bg_chain_t c = {0};
    c.n_layers = n_layers;
    c.n_tensors = n_tensors;
    c.dtype = dtype;
    c.layer = calloc((size_t)n_layers, sizeof(*c.layer));
    c.tensor = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof(*c.tensor));
    c.cut_bytes = calloc((size_t)n_layers + 1, sizeof(*c.cut_bytes));
    c.ext_bytes = calloc((size_t)n_layers, sizeof(*c.ext_bytes));
    c.next_use = calloc((size_t)n_layers * BG_MAX_INPUTS, sizeof(*c.next_use));
    c.prev_use = calloc((size_t)n_layers * BG_MAX_INPUTS, sizeof(*c.prev_use));
    if (!c.layer || !c.tensor || !c.cut_bytes || !c.ext_bytes || !c.next_use || !c.prev_use) {
        bg_chain_free(&c);
        return bg_errorf(BG_ERR_NOMEM, "chain of %d layers: out of memory", n_layers);
    }
    *out = c;
    return BG_OK;
}

void bg_chain_free(bg_chain_t *c)
{
    if (!c) return;
    free(c->layer);
    free(c->tensor);
    free(c->cut_bytes);
    free(c->ext_bytes);
    free(c->next_use);
    free(c->prev_use);
    memset(c, 0, sizeof(*c));
}

/* Validate producers and input references; first error wins. */
static bg_status_t chain_check(const bg_chain_t *c)
{
    for (int t = 0; t < c->n_tensors; t++) {
        const bg_chain_tensor_t *x = &c->tensor[t];
        if (x->producer < -1 || x->producer >= c->n_layers || x->bytes < 0)
            return bg_errorf(BG_ERR_INVALID, "chain tensor %d: bad producer %d or size", t,
                             x->producer);
    }
    for (int i = 0; i < c->n_layers; i++) {
        const bg_chain_layer_t *l = &c->layer[i];
        if (l->n_in < 0 || l->n_in > BG_MAX_INPUTS)
            return bg_errorf(BG_ERR_INVALID, "layer %d (%s): %d inputs", i, l->name, l->n_in);
        if (l->params < 0 || l->shared_params < 0 || l->saved_bytes < 0 || l->workspace_bytes < 0 || l->out_bytes < 0 ||
            !(l->fwd_flops >= 0) || !(l->bwd_input_flops >= 0) || !(l->bwd_weight_flops >= 0))
            return bg_errorf(BG_ERR_INVALID, "layer %d (%s): negative cost", i, l->name);
        for (int k = 0; k < l->n_in; k++) {
            int t = l->in_tensor[k];
            if (t < 0 || t >= c->n_tensors)
                return bg_errorf(BG_ERR_INVALID, "layer %d (%s): input %d names no tensor", i,
                                 l->name, k);
            if (c->tensor[t].producer >= i)
                return bg_errorf(BG_ERR_INVALID,
                                 "layer %d (%s) reads a tensor produced by layer %d: the chain "
                                 "is not in topological order",
                                 i, l->name, c->tensor[t].producer);
        }
    }
    return BG_OK;
}

bg_status_t bg_chain_finalize(bg_chain_t *c)
{
    bg_status_t st = chain_check(c);
    if (st) return st;
    int L = c->n_layers;
    int *last = malloc(sizeof(int) * (size_t)(c->n_tensors ? c->n_tensors : 1));
    int64_t *diff = calloc((size_t)L + 2, sizeof(int64_t));
    if (!last || !diff) {
        st = bg_errorf(BG_ERR_NOMEM, "chain: out of memory");
        goto err_free;
    }
    /* last consumer of each tensor; cuts between producer+1..last pay for it */
    for (int t = 0; t < c->n_tensors; t++) last[t] = -1;
    for (int i = 0; i < L; i++)
        for (int k = 0; k < c->layer[i].n_in; k++) last[c->layer[i].in_tensor[k]] = i;
    for (int t = 0; t < c->n_tensors; t++) {
        int p = c->tensor[t].producer;
        if (p < 0 || last[t] <= p) continue;
        diff[p + 1] += c->tensor[t].bytes;
        diff[last[t] + 1] -= c->tensor[t].bytes;
    }
    int64_t run = 0;
    for (int k = 0; k <= L; k++) {
        run += diff[k];
        c->cut_bytes[k] = run;
    }
    c->cut_bytes[0] = 0;
    c->cut_bytes[L] = 0;
    /* next_use, scanning backwards: for each slot, the next later reader */
    for (int t = 0; t < c->n_tensors; t++) last[t] = L;
    for (int i = L - 1; i >= 0; i--) {
        const bg_chain_layer_t *l = &c->layer[i];
        c->ext_bytes[i] = 0;
        for (int k = 0; k < BG_MAX_INPUTS; k++) c->next_use[i * BG_MAX_INPUTS + k] = -1;
        for (int k = 0; k < l->n_in; k++) {
            int t = l->in_tensor[k], dup = 0;
            for (int q = 0; q < k; q++) dup |= l->in_tensor[q] == t;
            if (dup) continue; /* add(x, x) keeps x once */
            c->next_use[i * BG_MAX_INPUTS + k] = last[t];
            if (c->tensor[t].producer < 0) c->ext_bytes[i] += c->tensor[t].bytes;
        }
        for (int k = 0; k < l->n_in; k++) last[l->in_tensor[k]] = i;
    }
    /* prev_use, scanning forwards */
    for (int t = 0; t < c->n_tensors; t++) last[t] = -1;
    for (int i = 0; i < L; i++) {
        const bg_chain_layer_t *l = &c->layer[i];
        for (int k = 0; k < BG_MAX_INPUTS; k++) c->prev_use[i * BG_MAX_INPUTS + k] = L;
        for (int k = 0; k < l->n_in; k++) {
            int t = l->in_tensor[k], dup = 0;
            for (int q = 0; q < k; q++) dup |= l->in_tensor[q] == t;
            if (!dup) c->prev_use[i * BG_MAX_INPUTS + k] = last[t];
        }
        for (int k = 0; k < l->n_in; k++) last[l->in_tensor[k]] = i;
    }
    st = BG_OK;
err_free:
    free(last);
    free(diff);
    return st;
}

int64_t bg_chain_act_bytes(const bg_chain_t *c, int i, int j)
{
    /* A tensor slot of layer l counts iff no later layer of the range reads
     * the same tensor: each distinct tensor is then charged exactly once. */
    int64_t a = 0;
    for (int l = j - 1; l >= i; l--) {
        const bg_chain_layer_t *y = &c->layer[l];
        a += y->saved_bytes;
        for (int k = 0; k < y->n_in; k++) {
            int nu = c->next_use[l * BG_MAX_INPUTS + k];
            if (nu >= j) a += c->tensor[y->in_tensor[k]].bytes;
        }
    }
    return a;
}

/* ---- pricing ---- */

void bg_costs_free(bg_costs_t *c)
{
    if (!c) return;
    free(c->f);
    free(c->b);
    free(c->w);
    free(c->pf);
    free(c->pb);
    free(c->pw);
    free(c->pparams);
    free(c->pshared);
    memset(c, 0, sizeof(*c));
}

/* Roofline time of one phase; phases without FLOPs other than F are free
 * (B of an embedding, W of a parameterless layer). */
static double roofline(double flops, double bytes, const bg_device_desc_t *d, bool is_fwd)
{
    if (flops <= 0 && !is_fwd) return 0.0;
    double tc = flops / d->flops, tm = bytes / d->mem_bw;
    return tc > tm ? tc : tm;
}

static const bg_profile_layer_t *profile_find(const bg_profile_t *p, const char *name, int hint)
{
    if (hint >= 0 && hint < p->n && !strcmp(p->layer[hint].name, name)) return &p->layer[hint];
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->layer[i].name, name)) return &p->layer[i];
    return NULL;
}

bg_status_t bg_costs_build(const bg_chain_t *chain, const bg_device_desc_t *dev, int micro_batch,
                           const bg_profile_t *prof, bg_costs_t *out)
{
    if (micro_batch < 1)
        return bg_errorf(BG_ERR_INVALID, "micro-batch size must be >= 1 (got %d)", micro_batch);
    if (!(dev->flops > 0) || !(dev->mem_bw > 0) || !(dev->link_bw > 0) || !(dev->dp_bw > 0))
        return bg_errorf(BG_ERR_INVALID, "device '%s': rates must be positive", dev->name);
    if (prof && prof->micro_batch < 1)
        return bg_errorf(BG_ERR_INVALID, "profile: micro-batch size must be >= 1");
    int L = chain->n_layers;
    bg_costs_t c = {0};
    bg_status_t st;
    c.n = L;
    c.micro_batch = micro_batch;
    c.dev = *dev;
    c.chain = chain;
    c.prof = prof;
    c.f = calloc((size_t)L, sizeof(double));
    c.b = calloc((size_t)L, sizeof(double));
    c.w = calloc((size_t)L, sizeof(double));
    c.pf = calloc((size_t)L + 1, sizeof(double));
    c.pb = calloc((size_t)L + 1, sizeof(double));
    c.pw = calloc((size_t)L + 1, sizeof(double));
    c.pparams = calloc((size_t)L + 1, sizeof(int64_t));
    c.pshared = calloc((size_t)L + 1, sizeof(int64_t));
    if (!c.f || !c.b || !c.w || !c.pf || !c.pb || !c.pw || !c.pparams || !c.pshared) {
        st = bg_errorf(BG_ERR_NOMEM, "costs: out of memory");
        goto err_free;
    }
    double mb = (double)micro_batch, es = (double)bg_dtype_size(chain->dtype);
    for (int i = 0; i < L; i++) {
        const bg_chain_layer_t *l = &chain->layer[i];
        if (prof) {
            const bg_profile_layer_t *p = profile_find(prof, l->name, i);
            if (!p) {
                st = bg_errorf(BG_ERR_INVALID, "profile has no entry for layer '%s'", l->name);
                goto err_free;
            }
            double s = mb / (double)prof->micro_batch;
            c.f[i] = p->f * s;
            c.b[i] = p->b * s;
            c.w[i] = p->w * s;
        } else {
            int64_t in = 0;
            for (int k = 0; k < l->n_in; k++) in += chain->tensor[l->in_tensor[k]].bytes;
            double bytes = mb * (double)(in + l->out_bytes) + es * (double)l->params;
            c.f[i] = roofline(mb * l->fwd_flops, bytes, dev, true);
            c.b[i] = roofline(mb * l->bwd_input_flops, bytes, dev, false);
            c.w[i] = roofline(mb * l->bwd_weight_flops, bytes, dev, false);
        }
        if (l->no_input_grad) c.b[i] = 0; /* the profile timed a dX training skips */
        c.pf[i + 1] = c.pf[i] + c.f[i];
        c.pb[i + 1] = c.pb[i] + c.b[i];
        c.pw[i + 1] = c.pw[i] + c.w[i];
        c.pparams[i + 1] = c.pparams[i] + l->params;
        c.pshared[i + 1] = c.pshared[i] + l->shared_params;
    }
    *out = c;
    return BG_OK;
err_free:
    bg_costs_free(&c);
    return st;
}
