/*
 * engine/schedule.h -- pipeline schedules as data.
 *
 * A schedule is, for each pipeline rank, an ordered list of actions: compute
 * (F, B, W or fused BW of one micro-batch on one model chunk), point-to-point
 * transfers of activations and gradients between chunks, a data-parallel
 * allreduce per chunk, and one optimizer step. Generators build lists for the
 * classic schedules; the checker proves a list set complete and deadlock-free;
 * engine/sim.h turns lists plus costs into a predicted timeline. The executor
 * only runs lists, so a new schedule is a new generator, never a new executor.
 *
 * This header and its .c files are pure: they must NOT touch tensors, devices,
 * transport or time, and must not exit. The full semantics (what each action
 * needs, what blocks, what "deadlock-free" means) is in docs/schedules.md.
 *
 * Vocabulary
 *   p   pipeline ranks (stages). DP replicas of a rank run the identical list.
 *   m   micro-batches per step, numbered 0..m-1.
 *   v   chunks per rank; the model is cut into p*v chunks numbered 0..p*v-1
 *       in model order. Chunk c lives on bg_sched_chunk_rank(s, c): for a
 *       generated schedule, its table row's placement (partition/schedules.h:
 *       c % p, Megatron's interleaving, or the V of zb-v); for
 *       bg_sched_create without a map, c % p. Code outside the generators
 *       asks bg_sched_chunk_rank, never computes c % p.
 *   edge  a (src chunk -> dst chunk) pair, src < dst, over which activations
 *       flow forward (and, if the edge carries gradients, gradients flow
 *       back). Every schedule has the adjacent edges c -> c+1; skip
 *       connections add longer ones with bg_sched_add_transfer().
 */
#ifndef BG_SCHEDULE_H
#define BG_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"
#include "partition/schedules.h"

/* ------------------------------------------------------------------ actions */

typedef enum {
    BG_ACT_F = 0,      /* forward of (mb, chunk) */
    BG_ACT_B,          /* backward-input: gradient w.r.t. the chunk's inputs */
    BG_ACT_W,          /* backward-weight: parameter gradients, accumulated */
    BG_ACT_BW,         /* B then W as one action (schedules that do not split) */
    BG_ACT_SEND_ACT,   /* send activations of mb over edge src -> dst */
    BG_ACT_RECV_ACT,   /* the matching receive; placed where the data is needed */
    BG_ACT_SEND_GRAD,  /* send gradients of mb from consumer src back to producer dst */
    BG_ACT_RECV_GRAD,  /* the matching receive; placed where the data is needed */
    BG_ACT_ALLREDUCE,  /* start the DP allreduce of chunk's gradients (non-blocking) */
    BG_ACT_OPTIMIZER,  /* wait for this rank's allreduces, then step all its chunks */
    BG_ACT_COUNT
} bg_act_kind_t;

/*
 * One action. Fields that do not apply are -1.
 *   F/B/W/BW     mb, chunk.
 *   transfers    mb; src, dst = chunks the bytes leave and arrive at (for
 *                gradients src > dst: they flow against the edge); chunk =
 *                the endpoint on this rank (src for SEND, dst for RECV);
 *                peer = the rank at the other end.
 *   ALLREDUCE    chunk.
 *   OPTIMIZER    nothing.
 * A SEND and a RECV match when kind direction, mb, src and dst are equal;
 * bg_action_tag() turns that key into one integer (e.g. a UCX tag).
 */
typedef struct {
    bg_act_kind_t kind;
    int32_t mb;
    int32_t chunk;
    int32_t src;
    int32_t dst;
    int32_t peer;
} bg_action_t;

static inline int bg_act_is_compute(bg_act_kind_t k)
{
    return k == BG_ACT_F || k == BG_ACT_B || k == BG_ACT_W || k == BG_ACT_BW;
}
static inline int bg_act_is_send(bg_act_kind_t k)
{
    return k == BG_ACT_SEND_ACT || k == BG_ACT_SEND_GRAD;
}
static inline int bg_act_is_recv(bg_act_kind_t k)
{
    return k == BG_ACT_RECV_ACT || k == BG_ACT_RECV_GRAD;
}

/* A compute action (F/B/W/BW) or ALLREDUCE (mb ignored) or OPTIMIZER. */
bg_action_t bg_action_compute(bg_act_kind_t kind, int mb, int chunk);
/* A transfer; `chunk` is derived from kind (src for sends, dst for receives). */
bg_action_t bg_action_transfer(bg_act_kind_t kind, int mb, int src, int dst, int peer);

/*
 * Matching key of a transfer: equal for a SEND and its RECV, distinct for
 * distinct (direction, mb, src, dst). Bit layout: direction (1 bit, 1 =
 * gradient), mb (23 bits), src (20 bits), dst (20 bits). 0 for non-transfers.
 */
uint64_t bg_action_tag(const bg_action_t *a);

/* Short kind name: "F", "B", "W", "BW", "SEND_ACT", ..., "OPTIMIZER". */
const char *bg_act_kind_name(bg_act_kind_t k);

/*
 * Human-readable action into buf (always NUL-terminated), e.g.
 * "F(mb=3, c=1)", "RECV_GRAD(mb=3, 2->1, peer 2)", "ALLREDUCE(c=1)".
 * Returns buf.
 */
char *bg_action_str(const bg_action_t *a, char *buf, size_t len);

/* ---------------------------------------------------------------- schedules */

/* bg_sched_kind_t, names, chunk and micro-batch rules: partition/schedules.h
 * (the one schedule table, partition/schedules.def). */

/* Opaque: p lists of actions plus the chunk -> rank map and the edge set. */
typedef struct bg_sched bg_sched_t;

/* Generator flags. */
enum {
    /* gpipe/1f1b/interleaved: emit B immediately followed by W instead of BW.
     * (zb-h1 always splits.) */
    BG_SCHED_SPLIT_BW = 1u << 0,
};

/*
 * Generate schedule `kind` for p ranks, m micro-batches, v chunks per rank.
 * Valid: what bg_sched_check_shape() accepts (p, m >= 1; v in the kind's
 * chunk range; the kind's rule on m). Anything else is BG_ERR_INVALID with a
 * message saying why. The lists contain the transfers for adjacent chunk
 * edges, one ALLREDUCE per chunk right after that chunk's last W (or BW), and
 * OPTIMIZER last. Every generated schedule passes bg_sched_check().
 */
bg_status_t bg_sched_generate(bg_sched_kind_t kind, int p, int m, int v, unsigned flags,
                              bg_sched_t **out);

/*
 * A schedule by name, where a run asks for one: "file:PATH" loads a
 * schedule file (bg_sched_load_file) and refuses one whose ranks,
 * micro-batches or (when chunks != 0) chunks per rank differ from p, m,
 * chunks; "auto" is bg_sched_auto (engine/schedule_auto.h) with equal
 * costs, 1F1B's memory cap and flags; any other name is a table row (bg_sched_lookup), generated with
 * chunks resolved by bg_sched_resolve_chunks (0: the row's default) and
 * flags. flags do not apply to files (a file says B and W itself).
 * BG_ERR_INVALID / BG_ERR_IO with the reason; *out set only on success.
 */
bg_status_t bg_sched_resolve(const char *name, int p, int m, int chunks, unsigned flags,
                             bg_sched_t **out);

/*
 * A schedule from a file (format in docs/schedules.md, "Schedule files"):
 * a header (ranks, micro-batches, chunks per rank, placement) and, per rank,
 * its compute actions in order, one per line. Transfers, ALLREDUCE and
 * OPTIMIZER are placed as for generated schedules; the result has passed
 * bg_sched_check. A refusal names the file, the line of the first bad action
 * and why (for a deadlock, the cycle of waits). BG_ERR_IO if unreadable.
 */
bg_status_t bg_sched_load_file(const char *path, bg_sched_t **out);
/* The same from text in memory; `what` names it in messages. */
bg_status_t bg_sched_parse_file_text(const char *text, size_t len, const char *what,
                                     bg_sched_t **out);

/*
 * The forward-only lists of an evaluation (engine/schedule_fwd.c): the
 * ranks, chunk map and edges of `like`, with m micro-batches; on each rank,
 * micro-batches ascending and the rank's chunks in model order, each F
 * between the RECV_ACTs and SEND_ACTs of its cross-rank edges. No B, W,
 * gradient transfers, ALLREDUCE or OPTIMIZER. BG_ERR_INVALID for m < 1 or
 * too large; the result passes bg_sched_check_forward().
 */
bg_status_t bg_sched_generate_forward(const bg_sched_t *like, int m, bg_sched_t **out);

/*
 * An empty schedule (no actions) with adjacent edges c -> c+1 (carrying
 * gradients) and chunk c on rank chunk_rank[c], or on c % p when chunk_rank
 * is NULL. For hand-written schedules and tests; fill with the edit calls.
 */
bg_status_t bg_sched_create(int p, int m, int v, const int *chunk_rank, bg_sched_t **out);
bg_status_t bg_sched_clone(const bg_sched_t *s, bg_sched_t **out);
void bg_sched_free(bg_sched_t *s); /* NULL is fine */

int bg_sched_ranks(const bg_sched_t *s);          /* p */
int bg_sched_microbatches(const bg_sched_t *s);   /* m */
int bg_sched_chunks_per_rank(const bg_sched_t *s); /* v */
int bg_sched_chunks(const bg_sched_t *s);         /* p * v */
int bg_sched_chunk_rank(const bg_sched_t *s, int chunk); /* -1 if out of range */
/*
 * 1 for a schedule whose lists are one step of a pipeline that never
 * flushes (2bw): an action on micro-batch mb >= m belongs to micro-batch
 * mb - m of the previous step, carried over the step boundary, and the
 * OPTIMIZER may stand mid-list (docs/schedules.md, "2bw"). 0 otherwise.
 */
int bg_sched_flush_free(const bg_sched_t *s);
/* Name given by the generator ("1f1b", ...), "custom" for bg_sched_create. */
const char *bg_sched_name(const bg_sched_t *s);

/* Rank's list: `len` actions at the returned pointer, valid until the next
 * edit of s. Rank out of range: 0 and NULL. */
size_t bg_sched_len(const bg_sched_t *s, int rank);
const bg_action_t *bg_sched_actions(const bg_sched_t *s, int rank);

/* Editing (hand-written schedules, tests). Index == len appends. */
bg_status_t bg_sched_append(bg_sched_t *s, int rank, bg_action_t a);
bg_status_t bg_sched_insert(bg_sched_t *s, int rank, size_t index, bg_action_t a);
bg_status_t bg_sched_remove(bg_sched_t *s, int rank, size_t index);
bg_status_t bg_sched_set(bg_sched_t *s, int rank, size_t index, bg_action_t a);

/* Edges, adjacent ones included: i in 0..bg_sched_edges(s)-1. */
int bg_sched_edges(const bg_sched_t *s);
bg_status_t bg_sched_edge(const bg_sched_t *s, int i, int *src, int *dst, int *with_grad);

/*
 * Declare edge src -> dst (src < dst, not yet an edge) and insert its
 * transfers for every micro-batch into an already filled schedule:
 * SEND_ACT right after F(mb, src), RECV_ACT right before F(mb, dst), and when
 * with_grad, SEND_GRAD right after B/BW(mb, dst) and RECV_GRAD right before
 * B/BW(mb, src). Chunks on the same rank hand off locally: the edge is
 * recorded, no actions are added. This is how the engine routes a skip
 * connection straight from producer to consumer. On error s is unchanged.
 */
bg_status_t bg_sched_add_transfer(bg_sched_t *s, int src, int dst, int with_grad);

/* ------------------------------------------------------------------ checker */

/*
 * Prove s complete and deadlock-free (docs/schedules.md, "Checker"):
 *  - every action well-formed: ranges, compute on the chunk's own rank,
 *    transfers only over declared cross-rank edges with the right peer;
 *  - every F(mb, c) once; B and W once each, or BW once; ALLREDUCE once per
 *    chunk after all its W; OPTIMIZER once, last;
 *  - on each rank, in list order: F(mb, c) after its inputs (local F or a
 *    RECV_ACT), B after F and after its output gradients (local B or a
 *    RECV_GRAD), W after B, SEND after the action producing its data, and a
 *    chunk's W (or BW) in micro-batch order (gradient accumulation order is
 *    part of the numerics contract);
 *  - every SEND matched by exactly one RECV and vice versa;
 *  - running the lists with buffered, non-blocking sends and blocking
 *    receives reaches the end on every rank (no cycle of waits).
 * On the first problem: BG_ERR_INVALID, message naming rank, index, action.
 * On success, if peak_live is not NULL, peak_live[r] (p entries) receives
 * rank r's peak count of live activations: (mb, chunk) pairs whose F ran and
 * whose W (or BW) has not; for v = 1 that is micro-batches in flight.
 */
bg_status_t bg_sched_check(const bg_sched_t *s, int *peak_live);

/*
 * Prove a forward-only list set complete and deadlock-free: every action
 * well-formed as above; every F(mb, c) exactly once and after its inputs;
 * only F and activation transfers (anything else is refused); every SEND
 * matched by exactly one RECV; no cycle of waits. Errors as bg_sched_check.
 */
bg_status_t bg_sched_check_forward(const bg_sched_t *s);

/*
 * Activation counts per rank in list order, without checking: peak_live[r]
 * as above (F ran, W not), peak_stash[r] the peak of (mb, chunk) pairs whose
 * F ran and whose B (or BW) has not -- the full stash backward needs; after B
 * only what W reads stays. Either array may be NULL (else p entries).
 * Cannot fail.
 */
void bg_sched_peaks(const bg_sched_t *s, int *peak_live, int *peak_stash);

/* ------------------------------------------------------------------ printer */

enum {
    BG_PRINT_COMM = 1u << 0, /* also print transfers, ALLREDUCE, OPTIMIZER */
};

/*
 * One line per rank: "rank 0: F0 F1 F2 F3 B0 F4 ...". Compute actions are
 * "F<mb>" when v == 1 and "F<mb>c<chunk>" otherwise; with BG_PRINT_COMM,
 * transfers print as "sa0>1"/"ra0>1" (activations) and "sg1>0"/"rg1>0"
 * (gradients) with the micro-batch appended as ":<mb>", "AR<c>" and "OPT".
 * BG_ERR_IO if writing fails.
 */
bg_status_t bg_sched_print(const bg_sched_t *s, FILE *f, unsigned flags);

#endif
