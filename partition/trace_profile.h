/*
 * partition/trace_profile.h -- per-layer F/B/W times recovered from a
 * `brigade train --trace` Chrome-trace file, for re-planning (closed loop).
 *
 * The trace times whole chunks: events named by kind (cat "F", "B", "W",
 * "BW") with args {"mb", "chunk"} and "dur" in microseconds. Each chunk's
 * median F/B/W over its micro-batches and replicas is spread over its
 * layers by the roofline shares of the priced chain; a fused BW is split
 * into B and W the same way. Must not read the engine's structures: the
 * file is the only interface, and only fields that exist today are used.
 */
#ifndef BG_PARTITION_TRACE_PROFILE_H
#define BG_PARTITION_TRACE_PROFILE_H

#include "partition/cost.h"

/*
 * Read `path` and build a profile of `roof->chain`'s layers at
 * roof->micro_batch (the traced run's micro-batch size). `bounds`
 * [n_chunks+1] is the split the traced run used. BG_ERR_IO (unreadable),
 * BG_ERR_INVALID naming the file and what is wrong (no F or B event for a
 * chunk, a chunk outside the split). On success *out is owned by the
 * caller (bg_profile_free).
 */
bg_status_t bg_profile_from_trace(const char *path, const bg_costs_t *roof, const int *bounds,
                                  int n_chunks, bg_profile_t *out);

/*
 * The same from a traced run's plan file `plan` (bg_plan_load: the split
 * and micro-batch size it trained with): `chain` must hold the plan's
 * layers, `dev` prices the roofline shares. BG_ERR_INVALID naming the plan
 * when its layer count is not the chain's; otherwise as above.
 */
bg_status_t bg_profile_from_traced_plan(const char *trace, const char *plan,
                                        const bg_chain_t *chain, const bg_device_desc_t *dev,
                                        bg_profile_t *out);

/*
 * The same with the chain and device the plan names: its model file parsed
 * at the plan's dtype, its (first) device's preset pricing the roofline
 * shares. What `brigade schedule` and `brigade train --schedule auto` take
 * from a trace. Errors as above, and the model's parse error prefixed with
 * the plan that names it.
 */
bg_status_t bg_profile_from_traced_run(const char *trace, const char *plan, bg_profile_t *out);

#endif
