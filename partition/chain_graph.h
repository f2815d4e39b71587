/*
 * partition/chain_graph.h -- the cost chain of a parsed model.
 * Turns a layers/graph.h graph (layers in topological order, tensors with
 * producers and consumers) into the per-sample bg_chain_t the partitioner
 * prices. Reads the graph only; must not parse files or run layers.
 */
#ifndef BG_PARTITION_CHAIN_GRAPH_H
#define BG_PARTITION_CHAIN_GRAPH_H

#include "layers/graph.h"
#include "partition/cost.h"

/*
 * Build the chain of `g` with activations in `dtype` (f32 or bf16). Costs
 * are divided by the graph's batch to get per-sample values, which assumes
 * they are linear in the batch (true of every kind in layers/); a byte
 * count that does not divide evenly is BG_ERR_INVALID naming the layer.
 */
bg_status_t bg_chain_from_graph(const bg_graph_t *g, bg_dtype_t dtype, bg_chain_t *out);

#endif
