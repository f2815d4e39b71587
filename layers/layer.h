/*
 * layers/layer.h -- what a layer kind is: the contract every kind keeps.
 *
 * A kind (linear, attention, ...) is a table of functions in its own file
 * layers/<kind>.c (+ layers/<kind>.cu for its CUDA kernels):
 *   - shape inference from input shapes and attributes,
 *   - parameter slots with stable suffixes ("weight", "qkv.bias") and inits,
 *   - cost (FLOPs of F, B, W; bytes kept for backward),
 *   - forward (F), backward-input (B) and backward-weight (W) as separate
 *     functions: zero-bubble schedules run W later than B.
 * F writes `out` and the kind's `saved` scratch. B reads dout (+ inputs,
 * params, saved) and OVERWRITES din[i] for every non-NULL din[i]; it may
 * also write `saved` (e.g. attention keeps d(qkv) there for W). W ADDS into
 * grads[j] for every non-NULL grads[j] (gradient accumulation over
 * micro-batches is the caller's ordering). The caller keeps inputs and
 * saved alive from F until W has run, and may free them afterwards.
 * A kind keeps no mutable state of its own between calls: everything lives
 * in the call's tensors, so one spec serves every micro-batch.
 * Must not know about graphs files, schedules, ranks or transport.
 */
#ifndef BG_LAYER_H
#define BG_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "layers/backend.h"
#include "layers/tensor.h"

#define BG_MAX_INPUTS 4
#define BG_MAX_PARAMS 4
#define BG_MAX_ATTRS 8
#define BG_NAME_MAX 128

/* ---- attributes: KEY=VALUE of a layer statement ---- */
typedef enum { BG_ATTR_INT, BG_ATTR_FLOAT, BG_ATTR_BOOL, BG_ATTR_REF } bg_attr_type_t;

typedef struct bg_attr {
    char key[32];
    bg_attr_type_t type;
    int64_t i;             /* BG_ATTR_INT (also set for BOOL: 0/1) */
    double f;              /* BG_ATTR_FLOAT (also set for INT) */
    char ref[BG_NAME_MAX]; /* BG_ATTR_REF: a parameter's global name */
} bg_attr_t;

typedef struct bg_attrs {
    int n;
    bg_attr_t v[BG_MAX_ATTRS];
} bg_attrs_t;

/* Which keys a kind accepts; the graph parser rejects others ("did you mean"). */
typedef struct bg_key_desc {
    const char *key;
    bg_attr_type_t type; /* FLOAT keys also accept integers */
    bool required;
} bg_key_desc_t;

const bg_attr_t *bg_attrs_find(const bg_attrs_t *a, const char *key);
int64_t bg_attrs_int(const bg_attrs_t *a, const char *key, int64_t dflt);
double bg_attrs_float(const bg_attrs_t *a, const char *key, double dflt);
bool bg_attrs_bool(const bg_attrs_t *a, const char *key, bool dflt);
const char *bg_attrs_ref(const bg_attrs_t *a, const char *key); /* NULL if absent */
/* Add or replace; BG_ERR_INVALID when full or the key is too long. */
bg_status_t bg_attrs_set_int(bg_attrs_t *a, const char *key, int64_t v);
bg_status_t bg_attrs_set_float(bg_attrs_t *a, const char *key, double v);
bg_status_t bg_attrs_set_bool(bg_attrs_t *a, const char *key, bool v);
bg_status_t bg_attrs_set_ref(bg_attrs_t *a, const char *key, const char *ref);

typedef struct bg_layer_kind bg_layer_kind_t;

/* ---- one layer instance as the graph describes it (no memory) ---- */
typedef struct bg_layer_spec {
    const bg_layer_kind_t *kind;
    char name[BG_NAME_MAX]; /* global layer path, e.g. "block.3.mlp.fc" */
    bg_attrs_t attrs;
    int n_in;
    bg_shape_t in[BG_MAX_INPUTS]; /* logical dtypes: f32 or i32 */
    bg_shape_t out;               /* filled by inference */
} bg_layer_spec_t;

/* ---- parameters ---- */
typedef enum {
    BG_INIT_ZEROS,
    BG_INIT_ONES,
    BG_INIT_NORMAL,  /* N(0, scale^2) */
    BG_INIT_UNIFORM, /* U(-scale, scale) */
} bg_init_t;

typedef struct bg_param_desc {
    char suffix[32];  /* "weight", "qkv.weight"; global name = "<layer>.<suffix>" */
    bg_shape_t shape; /* always f32 (master copy) */
    bg_init_t init;
    float scale;
    bool shared; /* slot filled by another layer's parameter (attrs "share") */
} bg_param_desc_t;

/*
 * Fill `dst` (numel f32 on the host) with the initial values of the
 * parameter `global_name` under `seed`. Value i depends only on
 * (seed, global_name, i): the same on every backend, process and layout.
 */
void bg_param_init_host(const bg_param_desc_t *p, const char *global_name, uint64_t seed,
                        float *dst);

/* ---- cost ---- */
typedef struct bg_layer_cost {
    double fwd_flops;        /* F */
    double bwd_input_flops;  /* B */
    double bwd_weight_flops; /* W */
    int64_t params;          /* parameters this layer owns (shared slots excluded) */
    int64_t saved_bytes;     /* kind scratch kept from F to W (beyond the inputs) */
    int64_t input_bytes;     /* inputs the caller keeps for backward */
    int64_t out_bytes;       /* size of the output activation */
    int64_t workspace_bytes; /* temporary per call */
} bg_layer_cost_t;

/* ---- one call of F, B or W ---- */
typedef struct bg_layer_call {
    const bg_layer_spec_t *spec;
    bg_backend_t *be;
    bg_stream_t *stream;
    bg_dtype_t dtype;                         /* compute dtype of float activations */
    const bg_tensor_t *in[BG_MAX_INPUTS];     /* F inputs, kept until W */
    bg_tensor_t *out;                         /* F output */
    bg_tensor_t *saved;                       /* u8 scratch of saved_bytes, F..W; NULL if 0 */
    bg_tensor_t *workspace;                   /* u8 scratch of workspace_bytes, this call */
    const bg_tensor_t *params[BG_MAX_PARAMS]; /* in compute dtype, slot order of params() */
    bg_tensor_t *grads[BG_MAX_PARAMS];        /* f32 accumulators; NULL = not wanted */
    const bg_tensor_t *dout;                  /* gradient of out (B, W) */
    bg_tensor_t *din[BG_MAX_INPUTS];          /* B writes; NULL = not wanted */
} bg_layer_call_t;

/* Message buffer for inference errors; the graph adds file:line:col. */
typedef struct bg_errbuf {
    char msg[256];
} bg_errbuf_t;

struct bg_layer_kind {
    const char *name;
    int min_inputs, max_inputs;
    const bg_key_desc_t *keys;
    int n_keys;
    const char *doc; /* one line for `brigade check --kinds` and docs */
    bool out_f32;    /* output stays f32 in bf16/fp16 runs (losses) */

    /* spec->in and attrs are set; write spec->out. BG_ERR_INVALID + err. */
    bg_status_t (*infer)(bg_layer_spec_t *spec, bg_errbuf_t *err);
    /* Parameter slots in call order; returns how many (<= BG_MAX_PARAMS). */
    int (*params)(const bg_layer_spec_t *spec, bg_param_desc_t *out);
    /* FLOPs and bytes when activations are `dtype` (f32 or bf16). */
    void (*cost)(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *out);

    bg_status_t (*forward)(const bg_layer_call_t *c);
    bg_status_t (*backward_input)(const bg_layer_call_t *c);  /* NULL: no input needs grad */
    bg_status_t (*backward_weight)(const bg_layer_call_t *c); /* NULL: no parameters */
    /* Losses whose first input is not the logits (the fused classifier): after F,
     * each row's highest-scoring class (lowest on ties), i32 (rows), to `out` on
     * the call's device, on its stream. NULL: the first input is the logits. */
    bg_status_t (*row_argmax)(const bg_layer_call_t *c, int32_t *out);
};

/* The registry of kinds. NULL when unknown. */
const bg_layer_kind_t *bg_layer_kind_find(const char *name);
/* All kinds, in documentation order; *n set to the count. */
const bg_layer_kind_t *const *bg_layer_kinds(int *n);

/* Run inference and check input count/dtypes; on failure err says why. */
bg_status_t bg_layer_infer(bg_layer_spec_t *spec, bg_errbuf_t *err);
void bg_layer_cost(const bg_layer_spec_t *spec, bg_dtype_t dtype, bg_layer_cost_t *out);

/* Checked entry points: validate the call against the spec, then run. */
bg_status_t bg_layer_forward(const bg_layer_call_t *c);
bg_status_t bg_layer_backward_input(const bg_layer_call_t *c);
bg_status_t bg_layer_backward_weight(const bg_layer_call_t *c);

/* Helpers for kinds. */
bg_status_t bg_errbuf_set(bg_errbuf_t *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Add a parameter slot to out[*n]. */
void bg_param_slot(bg_param_desc_t *out, int *n, const char *suffix, int ndim, const int64_t *dims,
                   bg_init_t init, float scale, bool shared);
int64_t bg_spec_dtype_bytes(bg_dtype_t logical, bg_dtype_t compute);
/* The dtype a backend's kernels compute a `dtype` run in, which sizes the
 * saved scratch and workspace (bg_layer_cost with it): the CPU computes
 * bf16/fp16 runs in f32 (layers/cpu_mixed.c), CUDA in the dtype itself. */
bg_dtype_t bg_layer_kernel_dtype(const bg_backend_t *be, bg_dtype_t dtype);
/* Inference of a mean loss over class ids (cross_entropy, classifier): in[0]
 * float (..., K) named `input` in messages ("logits"), in[1] i32 targets
 * with its shape without the last dimension; out f32 [1]. */
bg_status_t bg_loss_infer(bg_layer_spec_t *spec, const char *input, bg_errbuf_t *err);

#endif
