/*
 * transport/tp_internal.h -- what the files of transport/ share privately:
 * the store's failure feed, the raw (reserved-kind) send/recv used by
 * collectives, the collective hook into progress, reductions and clocks.
 *
 * Must NOT be included from outside transport/ (no stable contract here).
 */
#ifndef BG_TP_INTERNAL_H
#define BG_TP_INTERNAL_H

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "transport/transport.h"

#define BG_TP_KIND_COLL 14u
#define BG_TP_KIND_INTERNAL 15u

static inline double bg_tp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/*
 * What a waiter does after `idle` rounds of progress that moved nothing:
 * spin first (a message is usually microseconds away), then yield, then
 * sleep a little. Ranks often outnumber cores (pipelines on a laptop, tests
 * on CI); a waiter that keeps spinning steals the core its peer needs to
 * produce the very data it waits for. Sleeps are short enough (<= 200 us)
 * to be noise next to any pipeline action.
 */
static inline void bg_tp_backoff(unsigned idle)
{
    static unsigned spin;
    if (!spin) {
        const char *e = getenv("BRIGADE_TP_SPIN");
        spin = e && atoi(e) > 0 ? (unsigned)atoi(e) : 4096;
    }
    if (idle < spin) return;
    if (idle < 2 * spin) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, idle < 4 * spin ? 50000 : 200000};
    nanosleep(&ts, NULL);
}

/* Deadline for a timeout in seconds; < 0 means none (returns +inf). */
static inline double bg_tp_deadline(double timeout_s)
{
    return timeout_s < 0 ? 1e300 : bg_tp_now() + timeout_s;
}

/* ---- store failure feed (store.c) ---- */

/* Bumped (atomically) whenever a rank is reported dead or the store is lost;
 * a cheap load lets the hot path notice failures without a syscall. */
uint64_t bg_tp_store_fail_gen(bg_tp_store_t *st);
/* Copy the cause of `rank`'s death into why (cap bytes); 0 if it is alive.
 * A lost store reports every rank dead with the loss as cause (rank 0's
 * death when rank 0 hosted it). */
int bg_tp_store_rank_dead(bg_tp_store_t *st, int rank, char *why, size_t cap);
/* 1 if any rank has died or the store is lost. */
int bg_tp_store_any_failure(bg_tp_store_t *st);
/* 1 when the store is hosted by rank 0 (tp.c tells it so, for messages). */
void bg_tp_store_set_host_rank0(bg_tp_store_t *st, int yes);

/* ---- p2p with reserved kinds (tp.c) ---- */

bg_status_t bg_tp_send_raw(bg_tp_t *tp, int peer, uint64_t tag, const void *buf, size_t len,
                           bg_tp_mem_t mem, bg_tp_req_t **req);
bg_status_t bg_tp_recv_raw(bg_tp_t *tp, int peer, uint64_t tag, void *buf, size_t len,
                           bg_tp_mem_t mem, bg_tp_req_t **req);
/* Test without progressing UCX (the caller is inside progress). */
bg_status_t bg_tp_req_poll(bg_tp_t *tp, bg_tp_req_t *req, int *done);
double bg_tp_default_timeout(const bg_tp_t *tp);

/* ---- collectives hook (coll.c, called by tp.c) ---- */

/* Link a started collective into tp's progress list / unlink it. */
void bg_tp_coll_link(bg_tp_t *tp, bg_tp_coll_t *c);
void bg_tp_coll_unlink(bg_tp_t *tp, bg_tp_coll_t *c);
/* Advance one collective; returns 1 if it moved. Defined in coll.c. */
int bg_tp_coll_advance(bg_tp_coll_t *c);
/* The most recently linked collective, NULL if none (teardown). */
bg_tp_coll_t *bg_tp_coll_last(bg_tp_t *tp);
/* Fail and free every collective still running (context teardown). */
void bg_tp_coll_abort_all(bg_tp_t *tp);

/* ---- reductions (reduce.c / reduce_cuda.cu) ---- */

/* dst[i] += src[i] over n elements; host or device memory. */
bg_status_t bg_tp_reduce_sum(void *dst, const void *src, size_t n, bg_tp_dtype_t dt,
                             bg_tp_mem_t mem);
/* x[i] /= divisor over n elements. */
bg_status_t bg_tp_reduce_div(void *x, size_t n, bg_tp_dtype_t dt, int divisor, bg_tp_mem_t mem);

#ifdef BG_HAVE_CUDA
/* Device versions; synchronous on a private stream (reduce_cuda.cu). */
bg_status_t bg_tp_cuda_reduce_sum(void *dst, const void *src, size_t n, int dt);
bg_status_t bg_tp_cuda_reduce_div(void *x, size_t n, int dt, int divisor);
#endif

#endif
