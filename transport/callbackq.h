/*
 * transport/callbackq.h -- an ordered queue of callbacks (UCX's
 * ucs_callbackq is the model): add(fn, arg) gives an id, remove(id) takes
 * it out, dispatch calls the live ones in the order they were added.
 *
 * This is how the layers above point-to-point get driven without the
 * point-to-point layer naming them: collectives register their progress
 * function while they have work in flight, and a hook to fail themselves
 * when the context is torn down.
 *
 * Removing any callback (the running one included) from inside a callback
 * is safe; callbacks added during a dispatch run from the next one.
 * Must NOT: know what the callbacks do, or allocate while dispatching.
 */
#ifndef BG_TP_CALLBACKQ_H
#define BG_TP_CALLBACKQ_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* A callback; returns 1 if it moved anything (dispatch ORs the results). */
typedef int (*bg_tp_cb_fn)(void *arg);

typedef struct {
    bg_tp_cb_fn fn; /* NULL once removed, until the queue is compacted */
    void *arg;
    uint64_t id;
} bg_tp_cb_t;

typedef struct {
    bg_tp_cb_t *cb; /* ascending ids: the order of adding */
    size_t n, cap;
    size_t removed; /* entries with fn == NULL */
    uint64_t next_id;
    int depth; /* dispatches running (callbacks may progress again) */
} bg_tp_cbq_t;

/* An empty queue; zeroed memory is one too. */
void bg_tp_cbq_init(bg_tp_cbq_t *q);
void bg_tp_cbq_fini(bg_tp_cbq_t *q);

/* Append fn(arg); *id (never 0) removes it. BG_ERR_NOMEM with a message
 * naming `what` when the queue cannot grow (nothing added then). */
bg_status_t bg_tp_cbq_add(bg_tp_cbq_t *q, bg_tp_cb_fn fn, void *arg, const char *what,
                          uint64_t *id);
/* Take out callback `id`; unknown ids and 0 are ignored. Cannot fail. */
void bg_tp_cbq_remove(bg_tp_cbq_t *q, uint64_t id);
/* Call every live callback once, in order. Returns 1 if any moved. */
int bg_tp_cbq_dispatch(bg_tp_cbq_t *q);
/* Live callbacks. */
size_t bg_tp_cbq_count(const bg_tp_cbq_t *q);

#endif
