/*
 * layers/graph_impl.h -- internals shared by layers/graph*.c: the graph
 * struct behind the opaque bg_graph_t, the builder calls the parser uses,
 * a string map, and edit distance for "did you mean".
 * Must not be included outside layers/graph*.c: consumers use graph.h.
 */
#ifndef BG_GRAPH_IMPL_H
#define BG_GRAPH_IMPL_H

#include "layers/graph.h"

/* ---- string -> int64 map (open addressing, owns copies of its keys) ---- */
typedef struct bg_strmap_entry {
    char *key; /* NULL: empty */
    uint64_t hash;
    int64_t val;
} bg_strmap_entry_t;

typedef struct bg_strmap {
    bg_strmap_entry_t *e;
    size_t cap, n; /* cap is 0 or a power of two */
} bg_strmap_t;

/* Value of `key`, or NULL. */
int64_t *bg_strmap_get(const bg_strmap_t *m, const char *key);
/* Insert or overwrite. BG_ERR_NOMEM (message set) when memory runs out. */
bg_status_t bg_strmap_put(bg_strmap_t *m, const char *key, int64_t val);
void bg_strmap_free(bg_strmap_t *m);

/*
 * Levenshtein distance between a and b if it is <= max, else max + 1.
 * O(len * max) time, no allocation beyond a small stack row; names longer
 * than BG_NAME_MAX never match.
 */
int bg_edit_distance(const char *a, const char *b, int max);
/* The largest distance at which `name` counts as a misspelling. */
int bg_typo_budget(const char *name);

/* ---- the graph ---- */
struct bg_graph {
    char model[BG_NAME_MAX];
    char source[BG_NAME_MAX];
    int64_t batch;

    bg_graph_input_t *inputs;
    int n_inputs, cap_inputs;
    bg_graph_layer_t *layers;
    int n_layers, cap_layers;
    bg_graph_tensor_t *tensors;
    int n_tensors, cap_tensors;
    bg_graph_param_t *params;
    int n_params, cap_params;

    int *pool; /* consumers and users lists, filled by bg_graph_finish */
    int loss_tensor, loss_layer;
    bg_graph_totals_t totals;

    bg_strmap_t layer_ids, param_ids, input_ids; /* name -> id */
};

bg_status_t bg_graph_new(const char *source, int64_t batch, bg_graph_t **out);
/* Append an element; *id set on success. BG_ERR_NOMEM on allocation failure. */
bg_status_t bg_graph_add_tensor(bg_graph_t *g, const char *name, const char *var,
                                const bg_shape_t *shape, int producer, int input, int *id);
bg_status_t bg_graph_add_input(bg_graph_t *g, const bg_graph_input_t *in, int *id);
bg_status_t bg_graph_add_layer(bg_graph_t *g, const bg_graph_layer_t *l, int *id);
bg_status_t bg_graph_add_param(bg_graph_t *g, const bg_graph_param_t *p, int *id);
/* Consumer/user lists, costs, totals. The loss and unused-tensor checks are
 * the parser's (they need source positions). */
bg_status_t bg_graph_finish(bg_graph_t *g);

#endif
