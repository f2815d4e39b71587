/*
 * layers/graph.h -- a parsed model: the layer graph of a `.graph` file with
 * every shape inferred, every parameter named, every cost known.
 *
 * The engine and the partitioner read this; the syntax it comes from is
 * docs/graph-format.md. A graph is immutable once parsed (but for the one
 * rewrite, bg_graph_fuse_classifier, a run applies first) and owns all its
 * memory (no tensors, no parameter values: shapes and names only, so a
 * 175B-parameter model parses in milliseconds and a few hundred KiB).
 * Must not know about schedules, ranks, stages, backends or transport.
 *
 * Ids are dense indices: layers 0..n_layers-1 in topological order (the
 * order of the file, repeats unrolled); tensors 0..n_tensors-1 and
 * parameters 0..n_params-1 in the order the file creates them (a tensor is
 * created by an `input` statement or as a layer's output).
 */
#ifndef BG_GRAPH_H
#define BG_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "layers/layer.h"

/* Limits: exceeding one is an error at the offending place, never a crash. */
#define BG_GRAPH_MAX_FILE_BYTES (4 << 20) /* source size */
#define BG_GRAPH_MAX_LINE 4096            /* characters per line */
#define BG_GRAPH_MAX_IDENT 63             /* characters per name */
#define BG_GRAPH_MAX_DEPTH 16             /* nested repeats */
#define BG_GRAPH_MAX_EXPR_DEPTH 64        /* nested parentheses / unary signs */
#define BG_GRAPH_MAX_REPEAT 100000        /* one repeat's count */
#define BG_GRAPH_MAX_LAYERS 16384         /* layers after unrolling */
#define BG_GRAPH_MAX_INPUTS 256           /* input statements */
#define BG_GRAPH_MAX_STEPS 1000000        /* statements executed (repeats unrolled) */
#define BG_GRAPH_MAX_DIM 2147483647LL     /* one dimension, also the batch */
#define BG_GRAPH_MAX_NUMEL (1LL << 42)    /* elements of one tensor or parameter */
#define BG_GRAPH_MAX_PARAMS (1LL << 44)   /* parameter elements in the model */

typedef struct bg_graph bg_graph_t; /* opaque; read through the accessors */

/* A graph input (`input x : f32[B, 784]`): fed by the data loader by name. */
typedef struct bg_graph_input {
    char name[BG_NAME_MAX];
    bg_shape_t shape; /* d[0] is the batch given at parse time */
    int tensor;       /* its tensor id */
    int line, col;    /* where it is declared */
} bg_graph_input_t;

/* One layer: the kind's spec plus where its operands come from. */
typedef struct bg_graph_layer {
    bg_layer_spec_t spec;     /* name = global path ("block.3.fc"), kind, attrs, shapes */
    int in[BG_MAX_INPUTS];    /* tensor id of spec.in[i], i < spec.n_in */
    int out;                  /* tensor id of the output */
    int n_params;             /* the kind's parameter slots, call order */
    int param[BG_MAX_PARAMS]; /* parameter id per slot: own, or another layer's (share=) */
    bg_param_desc_t slot[BG_MAX_PARAMS]; /* the kind's slot descriptors */
    bg_layer_cost_t cost;     /* bg_layer_cost(&spec, BG_F32) */
    int line, col;            /* where its statement starts */
} bg_graph_layer_t;

/*
 * A tensor: a graph input or one layer's output. A tensor may be consumed by
 * any later layers (skip connections of any length): `consumers` lists them
 * so a pipeline stage can send it straight to each consumer's stage.
 */
typedef struct bg_graph_tensor {
    char name[BG_NAME_MAX]; /* unique: the input's name or the producing layer's path */
    char var[BG_GRAPH_MAX_IDENT + 1]; /* the name it was bound to in the file ("h") */
    bg_shape_t shape;
    int producer;           /* layer id, or -1 for a graph input */
    int input;              /* input index when producer == -1, else -1 */
    int n_consumers;        /* every tensor but the loss has at least one */
    const int *consumers;   /* layer ids, ascending, each once */
} bg_graph_tensor_t;

/* A parameter, owned by the layer that created it. */
typedef struct bg_graph_param {
    char name[BG_NAME_MAX]; /* "<layer path>.<suffix>": checkpoint key */
    bg_param_desc_t desc;   /* f32 shape, init, scale; desc.shared is false */
    int64_t numel;
    int owner;              /* layer id */
    int slot;               /* its slot in the owner's params() */
    int n_users;            /* other layers that use it through share= */
    const int *users;       /* layer ids, ascending */
} bg_graph_param_t;

/* Model totals, activations in f32. */
typedef struct bg_graph_totals {
    int64_t params;            /* distinct parameter elements (shared counted once) */
    double fwd_flops;          /* F of one micro-batch of `batch` samples */
    double bwd_input_flops;    /* B */
    double bwd_weight_flops;   /* W */
    int64_t kept_bytes;        /* sum over layers of inputs + saved kept for backward */
} bg_graph_totals_t;

/*
 * Parse `text` (len bytes, need not be NUL-terminated) with the batch size
 * B bound to `batch` (1..BG_GRAPH_MAX_DIM). `name` is used in messages.
 * On success *out is a new graph (bg_graph_free it). On bad input returns
 * BG_ERR_INVALID and bg_last_error() is
 *     NAME:LINE:COL: error: MESSAGE\n<offending line>\n<caret under COL>
 * (with "did you mean 'X'?" where a near name exists); BG_ERR_NOMEM when an
 * allocation fails. *out is untouched on failure.
 */
bg_status_t bg_graph_parse_string(const char *text, size_t len, const char *name, int64_t batch,
                                  bg_graph_t **out);

/* Read `path` (at most BG_GRAPH_MAX_FILE_BYTES) and parse it; messages name
 * `path`. BG_ERR_IO when it cannot be read. */
bg_status_t bg_graph_parse_file(const char *path, int64_t batch, bg_graph_t **out);

void bg_graph_free(bg_graph_t *g); /* NULL is fine */

/* ---- accessors (ids out of range return NULL / -1) ---- */
const char *bg_graph_model_name(const bg_graph_t *g); /* "" when the file has no `model` */
const char *bg_graph_source_name(const bg_graph_t *g);
int64_t bg_graph_batch(const bg_graph_t *g);

int bg_graph_n_inputs(const bg_graph_t *g);
int bg_graph_n_layers(const bg_graph_t *g);
int bg_graph_n_tensors(const bg_graph_t *g);
int bg_graph_n_params(const bg_graph_t *g);
const bg_graph_input_t *bg_graph_input(const bg_graph_t *g, int id);
const bg_graph_layer_t *bg_graph_layer(const bg_graph_t *g, int id);
const bg_graph_tensor_t *bg_graph_tensor(const bg_graph_t *g, int id);

/* Whether training carries a gradient for tensor t: only f32 tensors some
 * layer produced do (data and integer ids do not). The one rule the engine
 * allocates by and the planner prices by. */
static inline bool bg_graph_tensor_needs_grad(const bg_graph_tensor_t *t)
{
    return t->producer >= 0 && t->shape.dtype == BG_F32;
}
const bg_graph_param_t *bg_graph_param(const bg_graph_t *g, int id);

/* Look-ups by exact name; -1 when absent. */
int bg_graph_find_input(const bg_graph_t *g, const char *name);
int bg_graph_find_layer(const bg_graph_t *g, const char *path);
int bg_graph_find_param(const bg_graph_t *g, const char *name);

/* The loss: output tensor of the last cross_entropy (or classifier), and that layer. */
int bg_graph_loss_tensor(const bg_graph_t *g);
int bg_graph_loss_layer(const bg_graph_t *g);

const bg_graph_totals_t *bg_graph_totals(const bg_graph_t *g);

/* What bg_graph_fuse_classifier did. */
typedef struct bg_graph_fusion {
    int n;               /* linear + cross_entropy pairs fused */
    int head, loss;      /* layer ids of the first pair (-1 when n = 0) */
    int64_t kept_before; /* bytes the fused pairs kept from F to W, before */
    int64_t kept_after;  /* and after (activations in the dtype asked for) */
} bg_graph_fusion_t;

/*
 * The one rewrite of a parsed graph (layers/graph_fuse.c), for runs: every
 * `linear` whose output is read only as a cross_entropy's logits, and is
 * wider than its input (V > C: otherwise nothing is saved), fuses with it -- the cross_entropy layer becomes a `classifier` (head GEMM and
 * loss in logits tiles, the linear's parameter slots, names unchanged),
 * the linear an `identity`. Layer ids, names, tensors and parameter names
 * stay, so plans and checkpoints of the graph as written apply; costs and
 * totals are recomputed. Byte accounting in `dtype`; *out (may be NULL) set
 * on success. BG_ERR_NOMEM when memory runs out (the graph is then unusable).
 */
bg_status_t bg_graph_fuse_classifier(bg_graph_t *g, bg_dtype_t dtype, bg_graph_fusion_t *out);

#endif
