/*
 * tests/engine/test_sched_scale.c -- schedules at the sizes users ask for:
 * 64 stages x 16000 micro-batches (about six million actions) is generated
 * and checked within a generous time bound (it used to take minutes: one
 * search and memmove per inserted transfer), and a size whose action count
 * exceeds the schedule bound is refused before anything is allocated.
 */
#include "base/clock.h"
#include "engine/schedule.h"
#include "test_util.h"

/* Generous: about 3 s on an idle 2-core machine, 374 s before the fix. */
#define BOUND_S 60.0

int main(void)
{
    bg_sched_t *s = NULL;
    double t0 = bg_now_s();
    CHECK_OK(bg_sched_generate(BG_SCHED_1F1B, 64, 16000, 1, 0, &s));
    if (s)
        CHECK_OK(bg_sched_check(s, NULL));
    double dt = bg_now_s() - t0;
    CHECK_MSG(dt < BOUND_S, "64 x 16000 1f1b took %.1f s (bound %.0f s)", dt, BOUND_S);
    CHECK(s && bg_sched_len(s, 0) > 4 * 16000);
    bg_sched_free(s);

    s = NULL;
    CHECK(bg_sched_generate(BG_SCHED_1F1B, 100000, 100000, 1, 0, &s) == BG_ERR_INVALID);
    CHECK(s == NULL);
    CHECK(strstr(bg_last_error(), "actions, more than") != NULL);
    return bg_test_finish("test_sched_scale");
}
