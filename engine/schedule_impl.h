/*
 * engine/schedule_impl.h -- the inside of bg_sched_t, shared by
 * engine/schedule*.c and engine/sim.c only.
 *
 * Must NOT be included outside engine/schedule*.c and engine/sim*.c: the
 * executor and tools use the accessors of engine/schedule.h.
 */
#ifndef BG_SCHEDULE_IMPL_H
#define BG_SCHEDULE_IMPL_H

#include "engine/schedule.h"

/* Limits implied by bg_action_tag's bit layout. */
#define BG_SCHED_MAX_MB (1 << 23)
#define BG_SCHED_MAX_CHUNKS (1 << 20)

typedef struct {
    int src, dst, grad;
} bg_sched_edge_t;

typedef struct {
    bg_action_t *a;
    size_t len, cap;
} bg_sched_list_t;

struct bg_sched {
    int p, m, v, nchunks;
    int *chunk_rank;        /* nchunks entries */
    bg_sched_list_t *lists; /* p lists */
    bg_sched_edge_t *edges;
    int nedges;
    size_t cap_edges;
    char name[32];
};

/* Index of edge src -> dst, or -1. */
int bg_sched_find_edge_(const bg_sched_t *s, int src, int dst);

/* Index of the first action on `rank` equal in kind, mb and chunk, or -1. */
long bg_sched_find_(const bg_sched_t *s, int rank, bg_act_kind_t kind, int mb, int chunk);

/*
 * Dense index of a transfer's matching key in [0, 2 * nedges * m): equal for a
 * SEND and its RECV. -1 if `a` is not a transfer over a declared edge or its
 * micro-batch is out of range.
 */
long bg_sched_xfer_index_(const bg_sched_t *s, const bg_action_t *a);

/*
 * bg_sched_check, also telling where: on failure *bad_rank / *bad_index name
 * the action the message names first (for a deadlock, the first wait of the
 * cycle), or -1 / -1 when the problem is not one action (something missing).
 * Both set either way (-1 on success).
 */
bg_status_t bg_sched_check_at_(const bg_sched_t *s, int *bad_rank, long *bad_index);

/*
 * Turn compute-only lists into a full schedule the way every generator does:
 * transfers of every declared edge, ALLREDUCE(c) after chunk c's last W (past
 * the gradient sends that follow it), OPTIMIZER last on every rank. Fails
 * when an F or backward a transfer attaches to, or a chunk's W, is missing;
 * leaves s partly edited then.
 */
bg_status_t bg_sched_finish_(bg_sched_t *s);

/* Insert the transfers of every declared edge into compute-only lists
 * (generators). Leaves s partly edited on failure. */
bg_status_t bg_sched_insert_all_transfers_(bg_sched_t *s);

#endif
