/*
 * engine/schedule_fwd.c -- the forward-only generator: the lists an
 * evaluation runs. Every micro-batch's F on every chunk, with the
 * activation transfers between ranks; no B, W, gradient transfers,
 * ALLREDUCE or OPTIMIZER.
 *
 * Order on each rank: micro-batches ascending, and within one the rank's
 * chunks in model order, each F preceded by the receives of its incoming
 * edges and followed by the sends of its outgoing ones. Every receive then
 * waits on a send of the same micro-batch from a lower chunk, or of a lower
 * micro-batch, so the lists cannot deadlock (bg_sched_check_forward
 * proves it).
 * Must NOT touch tensors, devices, transport or time.
 */
#include "engine/schedule_impl.h"

#include <stdlib.h>

/* Receives (incoming = 1) or sends of chunk c's cross-rank edges for mb. */
static bg_status_t add_edges(bg_sched_t *s, int r, int mb, int c, int incoming)
{
    for (int e = 0; e < s->nedges; e++) {
        const bg_sched_edge_t *ed = &s->edges[e];
        int other = incoming ? ed->src : ed->dst;
        if ((incoming ? ed->dst : ed->src) != c || s->chunk_rank[other] == r)
            continue; /* not this chunk's, or a local handoff */
        bg_action_t a =
            incoming ? bg_action_transfer(BG_ACT_RECV_ACT, mb, ed->src, c, s->chunk_rank[ed->src])
                     : bg_action_transfer(BG_ACT_SEND_ACT, mb, c, ed->dst, s->chunk_rank[ed->dst]);
        bg_status_t st = bg_sched_append(s, r, a);
        if (st != BG_OK)
            return st;
    }
    return BG_OK;
}

static bg_status_t fill_rank(bg_sched_t *s, int r)
{
    bg_status_t st = BG_OK;
    for (int mb = 0; mb < s->m && st == BG_OK; mb++)
        for (int c = 0; c < s->nchunks && st == BG_OK; c++) {
            if (s->chunk_rank[c] != r)
                continue;
            st = add_edges(s, r, mb, c, 1);
            if (st == BG_OK)
                st = bg_sched_append(s, r, bg_action_compute(BG_ACT_F, mb, c));
            if (st == BG_OK)
                st = add_edges(s, r, mb, c, 0);
        }
    return st;
}

bg_status_t bg_sched_generate_forward(const bg_sched_t *like, int m, bg_sched_t **out)
{
    if (m < 1 || m >= BG_SCHED_MAX_MB)
        return bg_errorf(BG_ERR_INVALID, "forward schedule: %d micro-batches (need 1..%d)", m,
                         BG_SCHED_MAX_MB - 1);
    bg_sched_t *s = NULL;
    bg_status_t st = bg_sched_clone(like, &s);
    if (st != BG_OK)
        return st;
    /* Same ranks, chunk map and edges; new lists. */
    for (int r = 0; r < s->p; r++)
        s->lists[r].len = 0;
    s->m = m;
    snprintf(s->name, sizeof(s->name), "forward");
    for (int r = 0; r < s->p && st == BG_OK; r++)
        st = fill_rank(s, r);
    if (st != BG_OK) {
        bg_sched_free(s);
        return st;
    }
    *out = s;
    return BG_OK;
}
