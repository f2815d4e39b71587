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
    /* 2bw: the lists are one step of a pipeline that never flushes; an
     * action on mb >= m is micro-batch mb - m of the previous step, carried
     * over (engine/schedule_2bw.c). 0 for every other schedule. */
    int flush_free;
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

/* ------------------------------------------------ 2bw (engine/schedule_2bw.c) */

/* The 2bw generator: whole lists (compute, transfers, ALLREDUCE,
 * OPTIMIZER), marks s flush-free. */
bg_status_t bg_sched_gen_2bw_(bg_sched_t *s, int split);

/*
 * A flush-free schedule run for `steps` steps then drained, as one plain
 * schedule of steps * m micro-batches (step t's micro-batch k is t*m + k):
 * the first step without carried actions, the drain holding only them.
 * keep_updates: ALLREDUCE and OPTIMIZER stay where they are, dropped where
 * no W ran since the previous one (as the executor does); otherwise they are
 * dropped and one ALLREDUCE per chunk and OPTIMIZER end each rank (the form
 * bg_sched_check accepts). When `starts` is not NULL, starts[r] receives the
 * index in the unrolled list of rank r where step `mark` (0 < mark < steps)
 * begins. BG_ERR_NOMEM / BG_ERR_INVALID (too many micro-batches).
 */
bg_status_t bg_sched_unroll_(const bg_sched_t *s, int steps, int keep_updates, int mark,
                             size_t *starts, bg_sched_t **out);

/* bg_sched_check of a flush-free schedule (its checker). */
bg_status_t bg_sched_check_2bw_(const bg_sched_t *s, int *peak_live);

#endif
