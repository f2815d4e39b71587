/*
 * transport/backoff.h -- how the transport waits: deadlines on the one clock
 * (base/clock.h), the spin / yield / sleep backoff of waiters that find
 * nothing to do, short pauses in retry loops, and condition variables that
 * time out on the same monotonic clock.
 *
 * The bottom of transport's private layers (backoff -> staging -> p2p ->
 * coll; store and rendezvous beside): it includes only base/ and libc.
 * Must NOT: read any other clock than bg_now_s (CLOCK_MONOTONIC), or sleep
 * longer than a caller asked for.
 */
#ifndef BG_TP_BACKOFF_H
#define BG_TP_BACKOFF_H

#include <pthread.h>

#include "base/clock.h"

/* Deadline for a timeout in seconds on bg_now_s's clock; < 0 means none
 * (+inf). Cannot fail. */
static inline double bg_tp_deadline(double timeout_s)
{
    return timeout_s < 0 ? 1e300 : bg_now_s() + timeout_s;
}

/*
 * What a waiter does after `idle` rounds of progress that moved nothing:
 * spin first (a message is usually microseconds away), then yield, then
 * sleep 50 us and later 200 us. BRIGADE_TP_SPIN sets the spin budget
 * (default 4096). Cannot fail.
 */
void bg_tp_backoff(unsigned idle);

/* Sleep about `seconds` (retry loops: reconnecting, waiting for the store to
 * confirm a death). Cannot fail; returns early on a signal. */
void bg_tp_pause(double seconds);

/* Make *cv a condition variable whose timed waits use bg_now_s's clock.
 * Returns 0, or an errno value from pthread (nothing to clean up then). */
int bg_tp_cond_init(pthread_cond_t *cv);

/* Wait on cv (mu held, initialised by bg_tp_cond_init) until signalled or
 * min(deadline, now + slice_s) passes. Spurious wakeups are the caller's
 * loop's business. */
void bg_tp_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double deadline, double slice_s);

#endif
