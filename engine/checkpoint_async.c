/*
 * engine/checkpoint_async.c -- the background job runner of
 * engine/checkpoint_async.h: one pthread per job, joined when collected.
 * A thread per job (a save every N steps) costs microseconds and leaves no
 * idle thread or queue to shut down. Must NOT run two jobs at once or let
 * a job's error message get lost between threads.
 */
#include "engine/checkpoint_async.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

struct bg_ckpt_async {
    pthread_t th;
    bool running; /* a thread was started and not yet joined */
    atomic_bool done;
    bg_ckpt_job_fn fn;
    void *ctx;
    bg_status_t st;
    char msg[1024]; /* the job thread's message, copied before it ends */
};

bg_status_t bg_ckpt_async_new(bg_ckpt_async_t **out)
{
    bg_ckpt_async_t *a = calloc(1, sizeof(*a));
    if (!a)
        return bg_errorf(BG_ERR_NOMEM, "checkpoint writer: out of memory");
    atomic_init(&a->done, false);
    *out = a;
    return BG_OK;
}

static void *job_main(void *arg)
{
    bg_ckpt_async_t *a = arg;
    bg_clear_error();
    a->st = a->fn(a->ctx);
    snprintf(a->msg, sizeof(a->msg), "%s", a->st != BG_OK ? bg_last_error() : "");
    atomic_store_explicit(&a->done, true, memory_order_release);
    return NULL;
}

bg_status_t bg_ckpt_async_start(bg_ckpt_async_t *a, bg_ckpt_job_fn fn, void *ctx)
{
    if (a->running)
        return bg_errorf(BG_ERR_INVALID, "checkpoint writer: a job is still in flight");
    a->fn = fn;
    a->ctx = ctx;
    a->st = BG_OK;
    a->msg[0] = '\0';
    atomic_store(&a->done, false);
    int e = pthread_create(&a->th, NULL, job_main, a);
    if (e != 0)
        return bg_errorf(BG_ERR_IO, "checkpoint writer: cannot start a thread: %s", strerror(e));
    a->running = true;
    return BG_OK;
}

bool bg_ckpt_async_pending(const bg_ckpt_async_t *a)
{
    return a && a->running;
}

/* Join the finished (or about to finish) thread; its status, message here. */
static bg_status_t collect(bg_ckpt_async_t *a)
{
    pthread_join(a->th, NULL);
    a->running = false;
    if (a->st != BG_OK)
        return bg_errorf(a->st, "%s", a->msg);
    return BG_OK;
}

bg_status_t bg_ckpt_async_poll(bg_ckpt_async_t *a, bool *busy)
{
    *busy = false;
    if (!a->running)
        return BG_OK;
    if (!atomic_load_explicit(&a->done, memory_order_acquire)) {
        *busy = true;
        return BG_OK;
    }
    return collect(a);
}

bg_status_t bg_ckpt_async_wait(bg_ckpt_async_t *a, double *waited_s)
{
    double t0 = bg_now_s();
    bool was_done = !a->running || atomic_load_explicit(&a->done, memory_order_acquire);
    bg_status_t st = a->running ? collect(a) : BG_OK;
    if (waited_s)
        *waited_s = was_done ? 0.0 : bg_now_s() - t0;
    return st;
}

void bg_ckpt_async_free(bg_ckpt_async_t *a)
{
    if (!a)
        return;
    if (a->running) {
        pthread_join(a->th, NULL);
        a->running = false;
    }
    free(a);
}
