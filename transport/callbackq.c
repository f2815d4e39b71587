/*
 * transport/callbackq.c -- the ordered callback queue of callbackq.h.
 *
 * Entries are kept in adding order, so ids ascend and remove() finds one by
 * binary search. Removal only clears the entry; the array is compacted when
 * no dispatch is running, so a callback may remove itself or others while
 * the dispatch loop walks the array by index.
 *
 * Must NOT: call a removed callback, or let an entry added during a
 * dispatch run in that same dispatch (it sees a half-built state).
 */
#include <string.h>

#include "base/grow.h"
#include "transport/callbackq.h"

void bg_tp_cbq_init(bg_tp_cbq_t *q)
{
    memset(q, 0, sizeof(*q));
}

void bg_tp_cbq_fini(bg_tp_cbq_t *q)
{
    free(q->cb);
    memset(q, 0, sizeof(*q));
}

static void compact(bg_tp_cbq_t *q)
{
    if (q->depth || !q->removed)
        return;
    size_t k = 0;
    for (size_t i = 0; i < q->n; i++)
        if (q->cb[i].fn)
            q->cb[k++] = q->cb[i];
    q->n = k;
    q->removed = 0;
}

bg_status_t bg_tp_cbq_add(bg_tp_cbq_t *q, bg_tp_cb_fn fn, void *arg, const char *what, uint64_t *id)
{
    compact(q);
    if (bg_grow(&q->cb, &q->cap, q->n + 1, sizeof(*q->cb)) != 0)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory registering a callback (%zu registered)",
                         what, q->n);
    bg_tp_cb_t *c = &q->cb[q->n++];
    c->fn = fn;
    c->arg = arg;
    c->id = ++q->next_id;
    *id = c->id;
    return BG_OK;
}

void bg_tp_cbq_remove(bg_tp_cbq_t *q, uint64_t id)
{
    size_t lo = 0, hi = q->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (q->cb[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!id || lo == q->n || q->cb[lo].id != id || !q->cb[lo].fn)
        return;
    q->cb[lo].fn = NULL;
    q->removed++;
    compact(q);
}

int bg_tp_cbq_dispatch(bg_tp_cbq_t *q)
{
    if (q->n == q->removed)
        return 0;
    int moved = 0;
    size_t n = q->n; /* entries added meanwhile wait for the next round */
    q->depth++;
    for (size_t i = 0; i < n; i++) {
        /* Re-read every time: a callback may have cleared this entry. */
        bg_tp_cb_fn fn = q->cb[i].fn;
        if (fn)
            moved |= fn(q->cb[i].arg) != 0;
    }
    q->depth--;
    compact(q);
    return moved;
}

size_t bg_tp_cbq_count(const bg_tp_cbq_t *q)
{
    return q->n - q->removed;
}
