/*
 * transport/backoff.c -- the waiting policy of backoff.h: spin, yield, then
 * short sleeps; pauses and condition-variable timeouts on the one clock.
 *
 * Why the backoff exists: ranks often outnumber cores (pipelines on a
 * laptop, tests on CI); a waiter that keeps spinning steals the core its
 * peer needs to produce the very data it waits for. Sleeps are short enough
 * (<= 200 us) to be noise next to any pipeline action.
 *
 * Must NOT: depend on anything of transport/ (it is the bottom layer).
 */
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "transport/backoff.h"

static struct timespec to_timespec(double t)
{
    struct timespec ts;
    /* t >= 0 always (monotonic seconds or a duration): truncation floors. */
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

void bg_tp_backoff(unsigned idle)
{
    static unsigned spin;
    if (!spin) {
        const char *e = getenv("BRIGADE_TP_SPIN");
        spin = e && atoi(e) > 0 ? (unsigned)atoi(e) : 4096;
    }
    if (idle < spin)
        return;
    if (idle < 2 * spin) {
        sched_yield();
        return;
    }
    bg_tp_pause(idle < 4 * spin ? 50e-6 : 200e-6);
}

void bg_tp_pause(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = to_timespec(seconds);
    nanosleep(&ts, NULL);
}

int bg_tp_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    /* base/clock.h's clock, so deadlines computed with bg_now_s apply as is. */
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

void bg_tp_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, double deadline, double slice_s)
{
    double until = bg_now_s() + slice_s;
    if (deadline < until)
        until = deadline;
    struct timespec ts = to_timespec(until);
    pthread_cond_timedwait(cv, mu, &ts);
}
