/*
 * transport/store_int.h -- what the store client offers the rest of
 * transport/ beyond transport.h: its failure feed (dead ranks, a lost
 * store), read by the point-to-point layer without a syscall on the hot
 * path, and the host-of-the-store flag the rendezvous sets for messages.
 *
 * The store sits beside the layered part (backoff -> staging -> p2p ->
 * coll): it calls none of them.
 * Must NOT be included from outside transport/.
 */
#ifndef BG_TP_STORE_INT_H
#define BG_TP_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

/* Bumped (atomically) whenever a rank is reported dead or the store is lost;
 * a cheap load lets the hot path notice failures without a syscall. */
uint64_t bg_tp_store_fail_gen(bg_tp_store_t *st);
/* Copy the cause of `rank`'s death into why (cap bytes); 0 if it is alive.
 * A lost store reports every rank dead with the loss as cause (rank 0's
 * death when rank 0 hosted it). */
int bg_tp_store_rank_dead(bg_tp_store_t *st, int rank, char *why, size_t cap);
/* 1 if any rank has died or the store is lost. */
int bg_tp_store_any_failure(bg_tp_store_t *st);
/* 1 when the store is hosted by rank 0 (the rendezvous says so, so that a
 * lost store is explained as rank 0's death). */
void bg_tp_store_set_host_rank0(bg_tp_store_t *st, int yes);

#endif
