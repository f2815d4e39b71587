/*
 * base/clock.h -- one monotonic clock for the whole project: timings,
 * deadlines, trace timestamps. CLOCK_MONOTONIC is shared by every process
 * on a machine, so local ranks' timestamps line up in one trace.
 * Must not depend on anything of the project.
 */
#ifndef BG_CLOCK_H
#define BG_CLOCK_H

#include <time.h>

/* Seconds since an arbitrary fixed point; cannot fail. */
static inline double bg_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
