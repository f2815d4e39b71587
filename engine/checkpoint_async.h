/*
 * engine/checkpoint_async.h -- one background job at a time on its own
 * thread, for checkpoint writes that overlap training.
 *
 * The caller hands over a function and its context; the job runs on a
 * fresh pthread while the caller's thread keeps training, and its status
 * (with its message, since messages are per thread) comes back through a
 * non-blocking poll or a blocking wait. Must NOT touch the transport
 * (its contexts are single-threaded), know what the job writes, or run two
 * jobs at once: a second start before the first is collected is refused.
 */
#ifndef BG_CHECKPOINT_ASYNC_H
#define BG_CHECKPOINT_ASYNC_H

#include <stdbool.h>

#include "base/status.h"

typedef struct bg_ckpt_async bg_ckpt_async_t;

/* The job: runs on the background thread; records its message with
 * bg_errorf (that thread's) and returns its status. */
typedef bg_status_t (*bg_ckpt_job_fn)(void *ctx);

/* An idle runner (no thread yet). BG_ERR_NOMEM. */
bg_status_t bg_ckpt_async_new(bg_ckpt_async_t **out);
/* Wait for a job in flight (its outcome is dropped), then free. NULL is fine. */
void bg_ckpt_async_free(bg_ckpt_async_t *a);

/*
 * Start fn(ctx) on a new thread. `ctx` must stay valid until the job is
 * collected (poll says done, or wait returns). BG_ERR_INVALID when a job
 * is still uncollected; BG_ERR_IO when no thread could be made (the job
 * did not run).
 */
bg_status_t bg_ckpt_async_start(bg_ckpt_async_t *a, bg_ckpt_job_fn fn, void *ctx);

/* True while a job has been started and not yet collected. */
bool bg_ckpt_async_pending(const bg_ckpt_async_t *a);

/*
 * Non-blocking: when the job has finished, collect it and return its
 * status, its message recorded on the calling thread (*busy = false); while
 * it runs, BG_OK with *busy = true. Nothing pending: BG_OK, *busy = false.
 */
bg_status_t bg_ckpt_async_poll(bg_ckpt_async_t *a, bool *busy);

/*
 * Block until the job finishes, collect it and return its status (message
 * recorded on the calling thread). *waited_s (if non-NULL) gets the seconds
 * spent blocked here: 0 when it had already finished or nothing was pending.
 */
bg_status_t bg_ckpt_async_wait(bg_ckpt_async_t *a, double *waited_s);

#endif
