/*
 * engine/tag.h -- what the engine's transport tags mean. The transport
 * moves opaque tags of BG_TP_TAG_BITS bits; the engine lays its own fields
 * out inside them here, and nowhere else.
 *
 *   [43:42] kind   1 activations (forward), 2 gradients (backward),
 *                  3 tied-parameter gradient exchange, 0 parameter servers
 *   ACT/GRAD: [41:24] micro-batch  [23:12] destination chunk  [11:0] source chunk
 *   PARAM:    [41:24] user index   [23:0]  parameter id
 *   PS:       [41:40] message (push, reply, initial state)  [39:0] step
 *             (user index BG_TAG_ZERO_PIECE + d: replica d's reduced piece
 *             of a gradient, sent to the parameter's norm owner, ZeRO-1;
 *             between replicas of one stage, never between stages)
 *
 * Must NOT mask: a value that does not fit its field is BG_ERR_INVALID
 * naming the field and its limit (runs that large need a wider layout,
 * not a silently aliased tag).
 */
#ifndef BG_ENGINE_TAG_H
#define BG_ENGINE_TAG_H

#include <stdint.h>

#include "base/status.h"
#include "transport/transport.h"

enum { BG_TAG_PS = 0, BG_TAG_ACT = 1, BG_TAG_GRAD = 2, BG_TAG_PARAM = 3 };

#define BG_TAG_MB_MAX ((1 << 18) - 1)
#define BG_TAG_CHUNK_MAX ((1 << 12) - 1)
#define BG_TAG_PARAM_MAX ((1 << 24) - 1)
#define BG_TAG_STEP_MAX ((INT64_C(1) << 40) - 1)
#define BG_TAG_ZERO_PIECE (1 << 17) /* + replica: above any real user index */

_Static_assert(BG_TP_TAG_BITS >= 44, "engine tag layout needs 44 bits");

static inline bg_status_t bg_tag_field(const char *what, long v, long max)
{
    if (v < 0 || v > max)
        return bg_errorf(BG_ERR_INVALID, "transport tag: %s %ld outside 0..%ld", what, v, max);
    return BG_OK;
}

/* Tag of a transfer of micro-batch mb over edge src -> dst (chunks);
 * kind BG_TAG_ACT or BG_TAG_GRAD. *out set only on BG_OK. */
static inline bg_status_t bg_tag_edge(unsigned kind, int mb, int src, int dst, uint64_t *out)
{
    bg_status_t st;
    if ((st = bg_tag_field("micro-batch", mb, BG_TAG_MB_MAX)) != BG_OK ||
        (st = bg_tag_field("source chunk", src, BG_TAG_CHUNK_MAX)) != BG_OK ||
        (st = bg_tag_field("destination chunk", dst, BG_TAG_CHUNK_MAX)) != BG_OK)
        return st;
    *out = ((uint64_t)kind << 42) | ((uint64_t)mb << 24) | ((uint64_t)dst << 12) | (uint64_t)src;
    return BG_OK;
}

/* Tag of user `u`'s gradient of tied parameter `param`. */
static inline bg_status_t bg_tag_param(int u, int param, uint64_t *out)
{
    bg_status_t st;
    if ((st = bg_tag_field("parameter user", u, BG_TAG_MB_MAX)) != BG_OK ||
        (st = bg_tag_field("parameter id", param, BG_TAG_PARAM_MAX)) != BG_OK)
        return st;
    *out = ((uint64_t)BG_TAG_PARAM << 42) | ((uint64_t)u << 24) | (uint64_t)param;
    return BG_OK;
}

/* Tag of parameter-server message `msg` (1..3) of step `step`. */
static inline bg_status_t bg_tag_ps(int msg, int64_t step, uint64_t *out)
{
    bg_status_t st;
    if ((st = bg_tag_field("ps message", msg, 3)) != BG_OK)
        return st;
    if (step < 0 || step > BG_TAG_STEP_MAX)
        return bg_errorf(BG_ERR_INVALID, "transport tag: step %lld outside 0..%lld",
                         (long long)step, (long long)BG_TAG_STEP_MAX);
    *out = ((uint64_t)BG_TAG_PS << 42) | ((uint64_t)msg << 40) | (uint64_t)step;
    return BG_OK;
}

#endif
