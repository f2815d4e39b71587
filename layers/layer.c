/*
 * layers/layer.c -- attributes, the kind registry, parameter init, and the
 * checked F/B/W entry points that validate a call before a kind runs it.
 * Must not contain any kind's math: that lives in layers/<kind>.c.
 */
#include "layers/layer.h"
#include "layers/layer_mixed.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/rng.h"

extern const bg_layer_kind_t bg_kind_linear, bg_kind_embedding, bg_kind_layernorm, bg_kind_gelu,
    bg_kind_relu, bg_kind_add, bg_kind_attention, bg_kind_cross_entropy;
extern const bg_layer_kind_t bg_kind_rmsnorm, bg_kind_swiglu; /* Llama family */
extern const bg_layer_kind_t bg_kind_classifier, bg_kind_identity; /* graph_fuse.c's */

static const bg_layer_kind_t *const all_kinds[] = {
    &bg_kind_linear, &bg_kind_embedding, &bg_kind_layernorm, &bg_kind_gelu,
    &bg_kind_relu,   &bg_kind_add,       &bg_kind_attention, &bg_kind_cross_entropy,
    &bg_kind_rmsnorm, &bg_kind_swiglu,  &bg_kind_classifier, &bg_kind_identity,
};

const bg_layer_kind_t *const *bg_layer_kinds(int *n)
{
    *n = (int)(sizeof(all_kinds) / sizeof(all_kinds[0]));
    return all_kinds;
}

const bg_layer_kind_t *bg_layer_kind_find(const char *name)
{
    int n;
    const bg_layer_kind_t *const *k = bg_layer_kinds(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(k[i]->name, name))
            return k[i];
    return NULL;
}

/* ---- attributes ---- */

const bg_attr_t *bg_attrs_find(const bg_attrs_t *a, const char *key)
{
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->v[i].key, key))
            return &a->v[i];
    return NULL;
}

int64_t bg_attrs_int(const bg_attrs_t *a, const char *key, int64_t dflt)
{
    const bg_attr_t *v = bg_attrs_find(a, key);
    return v && (v->type == BG_ATTR_INT || v->type == BG_ATTR_BOOL) ? v->i : dflt;
}

double bg_attrs_float(const bg_attrs_t *a, const char *key, double dflt)
{
    const bg_attr_t *v = bg_attrs_find(a, key);
    return v && (v->type == BG_ATTR_FLOAT || v->type == BG_ATTR_INT) ? v->f : dflt;
}

bool bg_attrs_bool(const bg_attrs_t *a, const char *key, bool dflt)
{
    const bg_attr_t *v = bg_attrs_find(a, key);
    return v && v->type == BG_ATTR_BOOL ? v->i != 0 : dflt;
}

const char *bg_attrs_ref(const bg_attrs_t *a, const char *key)
{
    const bg_attr_t *v = bg_attrs_find(a, key);
    return v && v->type == BG_ATTR_REF ? v->ref : NULL;
}

static bg_status_t attrs_slot(bg_attrs_t *a, const char *key, bg_attr_t **out)
{
    if (strlen(key) >= sizeof(a->v[0].key))
        return bg_errorf(BG_ERR_INVALID, "attribute key '%s' is too long", key);
    bg_attr_t *v = (bg_attr_t *)bg_attrs_find(a, key);
    if (!v) {
        if (a->n >= BG_MAX_ATTRS)
            return bg_errorf(BG_ERR_INVALID, "more than %d attributes", BG_MAX_ATTRS);
        v = &a->v[a->n++];
    }
    memset(v, 0, sizeof(*v));
    strcpy(v->key, key);
    *out = v;
    return BG_OK;
}

bg_status_t bg_attrs_set_int(bg_attrs_t *a, const char *key, int64_t x)
{
    bg_attr_t *v;
    bg_status_t st = attrs_slot(a, key, &v);
    if (st != BG_OK)
        return st;
    v->type = BG_ATTR_INT;
    v->i = x;
    v->f = (double)x;
    return BG_OK;
}

bg_status_t bg_attrs_set_float(bg_attrs_t *a, const char *key, double x)
{
    bg_attr_t *v;
    bg_status_t st = attrs_slot(a, key, &v);
    if (st != BG_OK)
        return st;
    v->type = BG_ATTR_FLOAT;
    v->f = x;
    return BG_OK;
}

bg_status_t bg_attrs_set_bool(bg_attrs_t *a, const char *key, bool x)
{
    bg_attr_t *v;
    bg_status_t st = attrs_slot(a, key, &v);
    if (st != BG_OK)
        return st;
    v->type = BG_ATTR_BOOL;
    v->i = x;
    return BG_OK;
}

bg_status_t bg_attrs_set_ref(bg_attrs_t *a, const char *key, const char *ref)
{
    if (strlen(ref) >= BG_NAME_MAX)
        return bg_errorf(BG_ERR_INVALID, "parameter reference '%.40s...' is too long", ref);
    bg_attr_t *v;
    bg_status_t st = attrs_slot(a, key, &v);
    if (st != BG_OK)
        return st;
    v->type = BG_ATTR_REF;
    strcpy(v->ref, ref);
    return BG_OK;
}

/* ---- parameters ---- */

void bg_param_slot(bg_param_desc_t *out, int *n, const char *suffix, int ndim, const int64_t *dims,
                   bg_init_t init, float scale, bool shared)
{
    bg_param_desc_t *p = &out[(*n)++];
    memset(p, 0, sizeof(*p));
    snprintf(p->suffix, sizeof(p->suffix), "%s", suffix);
    p->shape.dtype = BG_F32;
    p->shape.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        p->shape.d[i] = dims[i];
    p->init = init;
    p->scale = scale;
    p->shared = shared;
}

void bg_param_init_host(const bg_param_desc_t *p, const char *global_name, uint64_t seed,
                        float *dst)
{
    int64_t n = bg_shape_numel(&p->shape);
    bg_rng_key_t key = bg_rng_key(seed, global_name);
    for (int64_t i = 0; i < n; i++) {
        switch (p->init) {
        case BG_INIT_ZEROS:
            dst[i] = 0.0f;
            break;
        case BG_INIT_ONES:
            dst[i] = 1.0f;
            break;
        case BG_INIT_NORMAL:
            dst[i] = p->scale * bg_rng_normal(key, (uint64_t)i);
            break;
        case BG_INIT_UNIFORM:
            dst[i] = p->scale * (2.0f * bg_rng_uniform(key, (uint64_t)i) - 1.0f);
            break;
        }
    }
}

int64_t bg_spec_dtype_bytes(bg_dtype_t logical, bg_dtype_t compute)
{
    return logical == BG_I32 ? 4 : (int64_t)bg_dtype_size(compute);
}

/* ---- inference and cost ---- */

bg_status_t bg_errbuf_set(bg_errbuf_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return BG_ERR_INVALID;
}

bg_status_t bg_layer_infer(bg_layer_spec_t *spec, bg_errbuf_t *err)
{
    const bg_layer_kind_t *k = spec->kind;
    if (spec->n_in < k->min_inputs || spec->n_in > k->max_inputs) {
        if (k->min_inputs == k->max_inputs)
            return bg_errbuf_set(err, "%s takes %d input%s, got %d", k->name, k->min_inputs,
                                 k->min_inputs == 1 ? "" : "s", spec->n_in);
        return bg_errbuf_set(err, "%s takes %d to %d inputs, got %d", k->name, k->min_inputs,
                             k->max_inputs, spec->n_in);
    }
    for (int i = 0; i < spec->n_in; i++)
        if (spec->in[i].ndim < 1 || spec->in[i].ndim > BG_MAX_DIMS)
            return bg_errbuf_set(err, "%s: input %d has %d dimensions (1 to %d supported)", k->name,
                                 i + 1, spec->in[i].ndim, BG_MAX_DIMS);
    return k->infer(spec, err);
}

void bg_layer_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *out)
{
    memset(out, 0, sizeof(*out));
    spec->kind->cost(spec, dtype, out);
    int64_t in_bytes = 0;
    for (int i = 0; i < spec->n_in; i++)
        in_bytes += bg_shape_numel(&spec->in[i]) * bg_spec_dtype_bytes(spec->in[i].dtype, dtype);
    out->input_bytes = in_bytes;
    out->out_bytes = bg_shape_numel(&spec->out) * bg_spec_dtype_bytes(spec->out.dtype, dtype);
    bg_param_desc_t p[BG_MAX_PARAMS];
    int np = spec->kind->params ? spec->kind->params(spec, p) : 0;
    out->params = 0;
    for (int i = 0; i < np; i++)
        if (!p[i].shared)
            out->params += bg_shape_numel(&p[i].shape);
}

/* ---- checked calls ---- */

/* f32_exact: the tensor keeps its logical dtype whatever the compute dtype
 * (parameters' masters are converted by their owner; losses stay f32). */
static bg_status_t check_tensor(const bg_layer_call_t *c, const bg_tensor_t *t,
                                const bg_shape_t *want, const char *what, int idx, bool f32_exact)
{
    const bg_layer_spec_t *s = c->spec;
    bg_device_t dev = bg_backend_device(c->be);
    if (!t || !t->data)
        return bg_errorf(BG_ERR_INVALID, "layer %s (%s): %s %d missing", s->name, s->kind->name,
                         what, idx);
    bg_dtype_t dt = want->dtype == BG_I32 ? BG_I32 : c->dtype;
    if (f32_exact)
        dt = want->dtype;
    bg_shape_t have = bg_tensor_shape(t);
    bg_shape_t w = *want;
    w.dtype = dt;
    if (!bg_shape_eq(&have, &w) || t->device != dev || !bg_tensor_is_contiguous(t)) {
        char a[96], b[96];
        return bg_errorf(BG_ERR_INVALID, "layer %s (%s): %s %d is %s on %s, expected %s on %s%s",
                         s->name, s->kind->name, what, idx, bg_shape_str(&have, a, sizeof(a)),
                         bg_device_name(t->device), bg_shape_str(&w, b, sizeof(b)),
                         bg_device_name(dev),
                         bg_tensor_is_contiguous(t) ? "" : " (not contiguous)");
    }
    return BG_OK;
}

static bg_status_t check_call(const bg_layer_call_t *c, int phase)
{
    const bg_layer_spec_t *s = c->spec;
    bg_status_t st;
    if (!bg_dtype_is_float(c->dtype))
        return bg_errorf(BG_ERR_INVALID, "layer %s: compute dtype must be f32, bf16 or fp16",
                         s->name);
    for (int i = 0; i < s->n_in; i++)
        if ((st = check_tensor(c, c->in[i], &s->in[i], "input", i, false)) != BG_OK)
            return st;
    if (phase == 0 &&
        (st = check_tensor(c, c->out, &s->out, "output", 0, s->kind->out_f32)) != BG_OK)
        return st;
    if (phase > 0) {
        st = check_tensor(c, c->dout, &s->out, "output gradient", 0, s->kind->out_f32);
        if (st != BG_OK)
            return st;
    }
    if (phase == 1)
        for (int i = 0; i < s->n_in; i++)
            if (c->din[i] &&
                (st = check_tensor(c, c->din[i], &s->in[i], "input gradient", i, false)))
                return st;
    bg_param_desc_t p[BG_MAX_PARAMS];
    int np = s->kind->params ? s->kind->params(s, p) : 0;
    for (int j = 0; j < np; j++) {
        bg_shape_t ps = p[j].shape;
        if ((st = check_tensor(c, c->params[j], &ps, "parameter", j, false)) != BG_OK)
            return st;
        if (phase == 2 && c->grads[j]) {
            bg_shape_t want = p[j].shape, g = bg_tensor_shape(c->grads[j]);
            want.dtype = BG_F32;
            if (!bg_shape_eq(&want, &g) || c->grads[j]->device != bg_backend_device(c->be))
                return bg_errorf(BG_ERR_INVALID,
                                 "layer %s: gradient of %s must be f32 with the parameter's "
                                 "shape, on the backend's device",
                                 s->name, p[j].suffix);
        }
    }
    bg_layer_cost_t cost;
    bg_layer_cost(s, c->dtype, &cost);
    if (cost.saved_bytes && (!c->saved || (int64_t)bg_tensor_nbytes(c->saved) < cost.saved_bytes))
        return bg_errorf(BG_ERR_INVALID, "layer %s: saved scratch of %lld bytes missing or short",
                         s->name, (long long)cost.saved_bytes);
    if (cost.workspace_bytes &&
        (!c->workspace || (int64_t)bg_tensor_nbytes(c->workspace) < cost.workspace_bytes))
        return bg_errorf(BG_ERR_INVALID, "layer %s: workspace of %lld bytes missing or short",
                         s->name, (long long)cost.workspace_bytes);
    return BG_OK;
}

bg_dtype_t bg_layer_kernel_dtype(const bg_backend_t *be, bg_dtype_t dtype)
{
    return bg_backend_device(be) == BG_DEV_CPU ? BG_F32 : dtype;
}

/* The kind's function, through an f32 twin of the call where the backend
 * computes low precision in f32 (layers/cpu_mixed.c). */
static bg_status_t run_call(const bg_layer_call_t *c, int phase, bg_layer_fn fn)
{
    if (c->dtype != BG_F32 && bg_layer_kernel_dtype(c->be, c->dtype) == BG_F32)
        return bg_cpu_mixed_call(c, phase, fn);
    return fn(c);
}

bg_status_t bg_layer_forward(const bg_layer_call_t *c)
{
    bg_status_t st = check_call(c, 0);
    return st != BG_OK ? st : run_call(c, 0, c->spec->kind->forward);
}

bg_status_t bg_layer_backward_input(const bg_layer_call_t *c)
{
    if (!c->spec->kind->backward_input)
        return BG_OK;
    bg_status_t st = check_call(c, 1);
    return st != BG_OK ? st : run_call(c, 1, c->spec->kind->backward_input);
}

bg_status_t bg_layer_backward_weight(const bg_layer_call_t *c)
{
    if (!c->spec->kind->backward_weight)
        return BG_OK;
    bg_status_t st = check_call(c, 2);
    return st != BG_OK ? st : run_call(c, 2, c->spec->kind->backward_weight);
}
