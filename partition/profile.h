/*
 * partition/profile.h -- measured per-layer F/B/W times as a JSON file.
 *
 * `brigade profile MODEL` (the engine's tool) times each layer and writes
 * this file; the cost model (bg_costs_build) uses it instead of the
 * roofline. Format (docs/partition.md):
 *   {"format": "brigade-profile", "version": 1, "device": "cpu",
 *    "dtype": "f32", "micro_batch": 4,
 *    "layers": [{"name": "block.0.attn", "fwd_s": 1.2e-3,
 *                "bwd_input_s": 2.0e-3, "bwd_weight_s": 1.1e-3}, ...]}
 * Layers are keyed by name; order does not matter. Must not time anything
 * itself (that needs the engine's backends).
 */
#ifndef BG_PARTITION_PROFILE_H
#define BG_PARTITION_PROFILE_H

#include "partition/cost.h"

/* Load and validate; BG_ERR_IO (unreadable) or BG_ERR_INVALID with
 * "FILE: ..." naming the key or layer that is wrong. */
bg_status_t bg_profile_load(const char *path, bg_profile_t *out);
/* Same from memory; `what` names the text in messages. */
bg_status_t bg_profile_parse(const char *text, size_t len, const char *what, bg_profile_t *out);
bg_status_t bg_profile_save(const char *path, const bg_profile_t *p);
/* Allocate an empty profile of n layers for the caller to fill. */
bg_status_t bg_profile_alloc(int n, bg_profile_t *out);
void bg_profile_free(bg_profile_t *p);

#endif
