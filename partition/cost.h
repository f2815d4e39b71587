/*
 * partition/cost.h -- the cost model: what a layer costs on a device.
 *
 * Three layers of description, each pure data:
 *   bg_device_desc_t  a device's rates and capacity (GEMM FLOP/s, memory
 *                     bytes/s and capacity, link and data-parallel network);
 *   bg_chain_t        the model as a topologically ordered chain of layers,
 *                     device independent and *per sample* (FLOPs and bytes
 *                     at micro-batch size 1), with the tensors between
 *                     layers so that a cut can be priced including skip
 *                     connections;
 *   bg_costs_t        one chain priced for one device at one micro-batch
 *                     size: per-layer F/B/W seconds and bytes, as prefix
 *                     sums so that any contiguous range costs O(1).
 * Times come either from a roofline over the device rates or from a measured
 * profile (partition/profile.h). Everything is deterministic: no clocks, no
 * devices are touched. Must not know about schedules' action lists, ranks or
 * transport (the engine's business); depends on layers/ only.
 */
#ifndef BG_PARTITION_COST_H
#define BG_PARTITION_COST_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "layers/layer.h"
#include "layers/tensor.h"

/* ---- devices ---- */
typedef struct bg_device_desc {
    char name[32];
    double flops;     /* achievable dense GEMM FLOP/s in the compute dtype */
    double mem_bw;    /* achievable memory bytes/s (bound for elementwise work) */
    int64_t mem_bytes;/* capacity available to one rank */
    double link_bw;   /* bytes/s to the next pipeline stage (point to point) */
    double link_lat;  /* seconds per point-to-point message */
    double dp_bw;     /* bytes/s per rank for the data-parallel allreduce */
    double dp_lat;    /* seconds per allreduce step */
} bg_device_desc_t;

/*
 * Fill `out` with a named preset: "h100" (alias "cuda"), "a100", "cpu".
 * The numbers are documented assumptions (docs/partition.md), not
 * measurements; a measured profile replaces the compute part.
 * BG_ERR_INVALID naming the known presets when `name` is unknown.
 */
bg_status_t bg_device_preset(const char *name, bg_device_desc_t *out);

/* "80G", "512M", "1.5T", "1024" (bytes) -> bytes. BG_ERR_INVALID on junk. */
bg_status_t bg_parse_bytes(const char *s, int64_t *out);

/* ---- the chain: per-sample work of each layer ---- */
typedef struct bg_chain_layer {
    char name[BG_NAME_MAX];
    char kind[32];
    /* per sample (micro-batch size 1) */
    double fwd_flops, bwd_input_flops, bwd_weight_flops;
    int64_t saved_bytes;     /* kind scratch kept from F to W */
    int64_t workspace_bytes; /* temporary, one call at a time */
    int64_t out_bytes;       /* the layer's output activation */
    /* independent of the batch */
    int64_t params; /* owned parameters (shared slots excluded) */
    int64_t shared_params; /* parameters used through share= (tied weights):
                              the stage holds a copy and its gradient */
    int n_in;
    int in_tensor[BG_MAX_INPUTS]; /* index into chain tensors */
    bool no_input_grad; /* no input carries a gradient (all are data): training
                           skips B's dX, so B costs nothing (docs/partition.md) */
} bg_chain_layer_t;

typedef struct bg_chain_tensor {
    int producer;      /* layer index, or -1 for a graph input (data) */
    int64_t bytes;     /* per sample */
} bg_chain_tensor_t;

typedef struct bg_chain {
    int n_layers;
    int n_tensors;
    bg_chain_layer_t *layer;
    bg_chain_tensor_t *tensor;
    bg_dtype_t dtype; /* activation dtype the bytes were computed for */
    /* derived by bg_chain_finalize */
    int64_t *cut_bytes;  /* [n_layers+1]: per sample, tensors produced by a
                            layer < k and consumed by a layer >= k */
    int64_t *ext_bytes;  /* [n_layers]: graph inputs (data) layer i reads */
    int *next_use;       /* [n_layers*BG_MAX_INPUTS]: next layer > i reading
                            the same tensor, or n_layers; -1 for a repeated
                            input slot of the same layer */
    int *prev_use;       /* [n_layers*BG_MAX_INPUTS]: previous layer < i
                            reading the same tensor, or -1; n_layers for a
                            repeated input slot of the same layer */
} bg_chain_t;

/*
 * Allocate a chain of n_layers layers and n_tensors tensors, zeroed, for the
 * caller to fill; then call bg_chain_finalize. BG_ERR_NOMEM / BG_ERR_INVALID.
 */
bg_status_t bg_chain_alloc(int n_layers, int n_tensors, bg_dtype_t dtype, bg_chain_t *out);
/*
 * Check the chain is topologically ordered (every input produced by an
 * earlier layer or a graph input) and derive cut_bytes, ext_bytes and
 * next_use. BG_ERR_INVALID naming the offending layer.
 */
bg_status_t bg_chain_finalize(bg_chain_t *c);
void bg_chain_free(bg_chain_t *c);

/*
 * Activation bytes per sample kept from F until W by layers [i, j): every
 * layer's saved scratch plus each distinct tensor read by the range once
 * (a tensor read by two layers of one stage is stored once). Monotone:
 * growing the range never lowers it.
 */
int64_t bg_chain_act_bytes(const bg_chain_t *c, int i, int j);

/* ---- a measured profile (partition/profile.c) ---- */
typedef struct bg_profile_layer {
    char name[BG_NAME_MAX];
    double f, b, w; /* seconds per micro-batch at the profile's batch */
} bg_profile_layer_t;

typedef struct bg_profile {
    char device[32];
    bg_dtype_t dtype;
    int micro_batch; /* micro-batch size the times were measured at */
    int n;
    bg_profile_layer_t *layer;
} bg_profile_t;

/* ---- a chain priced on one device at one micro-batch size ---- */
typedef struct bg_costs {
    int n;
    int micro_batch;
    bg_device_desc_t dev;
    /* per layer, seconds per micro-batch */
    double *f, *b, *w;
    /* prefix sums [n+1] over layers: pf[j]-pf[i] is the range's sum */
    double *pf, *pb, *pw;
    int64_t *pparams, *pshared;
    const bg_chain_t *chain;   /* borrowed: must outlive the costs */
    const bg_profile_t *prof;  /* borrowed, may be NULL: re-pricing at another
                                  micro-batch size uses it again */
} bg_costs_t;

/*
 * Price `chain` on `dev` at `micro_batch` samples per micro-batch.
 * Without a profile each of F, B, W takes max(FLOPs / dev.flops,
 * bytes moved / dev.mem_bw) (a roofline; bytes moved = inputs + output +
 * parameters in the compute dtype). With `prof` (may be NULL) each layer's
 * times are looked up by name and scaled linearly from the profile's
 * micro-batch size; a layer missing from the profile is BG_ERR_INVALID.
 */
bg_status_t bg_costs_build(const bg_chain_t *chain, const bg_device_desc_t *dev, int micro_batch,
                           const bg_profile_t *prof, bg_costs_t *out);
void bg_costs_free(bg_costs_t *c);

/* Bytes per parameter for weights + gradients + optimizer state: f32 runs
 * keep weights and grads in f32; bf16 runs add a bf16 working copy to the
 * f32 master. opt_state_bytes is 8 for AdamW (two f32 moments), 0 for SGD. */
int64_t bg_bytes_per_param(bg_dtype_t dtype, int opt_state_bytes);

/* Bytes one replica holds for `n` parameters: n * bg_bytes_per_param
 * without ZeRO (zero 0 or dp <= 1). Under ZeRO-1 (engine --zero 1) the
 * compute copy (its dtype's size; f32 runs then keep it apart from the
 * master) and the gradient stay whole, and the f32 master and optimizer
 * state are split over the dp replicas (rounded up). Cannot fail. */
int64_t bg_param_bytes(bg_dtype_t dtype, int opt_state_bytes, int zero, int dp, int64_t n);

/* What `versions` weight versions (bg_sched_desc_t.versions) add to `n`
 * parameters beyond the first: per extra version a copy of the weights in
 * the compute dtype and an f32 gradient set (the engine's 2bw stash and
 * second accumulators), whole under ZeRO-1 too. 0 for one version.
 * Cannot fail. */
int64_t bg_versions_bytes(bg_dtype_t dtype, int versions, int64_t n);

#endif
