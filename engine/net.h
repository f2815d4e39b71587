/*
 * engine/net.h -- the engine's flat view of a parsed model, and where each
 * piece of it runs.
 *
 * Built once per rank from a graph (layers/graph.h) and a split of its
 * layers into chunks. It answers the questions the executor asks on the
 * hot path without searching: which tensors cross from chunk a to chunk b
 * (sent directly, however far apart), in what order gradient contributions
 * to a tensor are folded, which graph inputs a chunk reads from data, which
 * parameters a rank holds and who else holds a copy.
 * Must not allocate device memory or communicate.
 */
#ifndef BG_NET_H
#define BG_NET_H

#include <stdbool.h>

#include "layers/graph.h"
#include "layers/layer.h"

/* A use of a tensor: input `slot` of `layer`. */
typedef struct bg_net_use {
    int layer, slot;
} bg_net_use_t;

/* What the graph does not say directly, per tensor. */
typedef struct bg_net_tensor {
    int chunk; /* chunk of the producer; -1 for graph inputs */
    int n_uses;
    bg_net_use_t *uses; /* ascending (layer, slot); a layer using t twice appears twice */
    bool needs_grad;    /* float and produced by a layer */
} bg_net_tensor_t;

/* Every layer using a parameter, the owner included, ascending. */
typedef struct bg_net_param {
    int n_users;
    int *users;
    int *user_slot;
} bg_net_param_t;

/* Tensors carried over one chunk edge src -> dst for one micro-batch. */
typedef struct bg_net_edge {
    int src, dst;
    int n;
    int *tensors;      /* ascending tensor ids produced in src, used in dst */
    int *n_contrib;    /* per tensor: gradient contributions sent back */
    size_t act_elems;  /* sum of tensor sizes (elements) */
    size_t grad_elems; /* sum of n_contrib[i] * size */
    size_t cap;        /* room in tensors and n_contrib (engine/net.c's) */
} bg_net_edge_t;

typedef struct bg_net {
    const bg_graph_t *graph;
    int n_layers, n_tensors, n_params, n_inputs, n_chunks;
    int *layer_chunk;
    bg_net_tensor_t *tensors;
    bg_net_param_t *params;
    int *chunk_first; /* chunk c = layers [chunk_first[c], chunk_first[c+1]) */
    int n_edges;
    bg_net_edge_t *edges; /* every (src, dst) pair with tensors, src < dst */
    size_t cap_edges;     /* room in edges (engine/net.c's) */
} bg_net_t;

/*
 * Build the view of `g` cut at `chunk_first` (n_chunks + 1 ascending layer
 * indices, first 0, last n_layers, every chunk non-empty). The graph must
 * outlive the net. BG_ERR_INVALID for a bad split.
 */
bg_status_t bg_net_create(const bg_graph_t *g, int n_chunks, const int *chunk_first,
                          bg_net_t **out);
void bg_net_free(bg_net_t *n);

/*
 * Split into n_chunks contiguous chunks balancing forward+backward FLOPs
 * (partition's bg_split_prefix: cuts at running-cost quantiles, each chunk
 * non-empty); fills chunk_first (n_chunks + 1 entries). BG_ERR_INVALID if
 * there are fewer layers than chunks, BG_ERR_NOMEM.
 */
bg_status_t bg_net_split_even(const bg_graph_t *g, int n_chunks, int *chunk_first);

/* Edge index for (src, dst), or -1. */
int bg_net_edge_find(const bg_net_t *n, int src, int dst);

/*
 * Where chunk `c`'s share of tensor t's gradient goes: the chunks using t
 * after its producer, latest first, fold into one sum in descending (layer,
 * slot) order. The latest using chunk sends its folded prefix; every other
 * using chunk sends each contribution on its own, so that the producer can
 * continue the fold in exactly the order a single chunk would have used.
 * This is what makes S stages bit-identical to one. Returns true when `c`
 * is the latest chunk using t.
 */
bool bg_net_is_latest_user(const bg_net_t *n, int t, int c);
/* Number of uses of t inside chunk c. */
int bg_net_uses_in_chunk(const bg_net_t *n, int t, int c);
/* Position of use (layer, slot) of t among t's uses in chunk c, counted in
 * fold order (descending layer, slot): 0 for the chunk's first contribution. */
int bg_net_use_rank(const bg_net_t *n, int t, int c, int layer, int slot);

#endif
