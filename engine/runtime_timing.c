/*
 * engine/runtime_timing.c -- when each action of the last training step
 * ran, for traces and the bubble: host times for every action, and for
 * compute actions a pair of compute-stream events resolved into device
 * times once the step has drained.
 *
 * Owns the event list and the reusable stream events. Recording is best
 * effort: running out of memory or events loses timing, never a step.
 * Resolving can fail (a device error while synchronising).
 * Must NOT time evaluations (traces show training steps) or decide what
 * the times mean (train.c does).
 */
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

/* Room for one more event, or 0 when there is none (best effort). */
static bg_rt_event_t *event_slot(bg_rt_t *rt, int mark)
{
    if (bg_grow(&rt->ev, &rt->capev, rt->nev + 1, sizeof(*rt->ev)) ||
        bg_grow(&rt->ev_mark, &rt->capevmark, rt->nev + 1, sizeof(*rt->ev_mark)))
        return NULL; /* tracing is best effort: losing events never fails a step */
    rt->ev_mark[rt->nev] = mark;
    return &rt->ev[rt->nev++];
}

void bg_rt_event_add_(bg_rt_t *rt, const bg_action_t *a, double t0, double t1, int mark)
{
    bg_rt_event_t *e = event_slot(rt, mark);
    if (!e)
        return;
    *e = (bg_rt_event_t){a->kind, a->mb, a->chunk, t0 - rt->t_origin, t1 - rt->t_origin, -1, 0, 0};
    if (bg_act_is_send(a->kind) || bg_act_is_recv(a->kind)) {
        int act = a->kind == BG_ACT_SEND_ACT || a->kind == BG_ACT_RECV_ACT;
        e->peer = rt_peer_rank(rt, a->peer);
        if (bg_tag_edge(act ? BG_TAG_ACT : BG_TAG_GRAD, a->mb, a->src, a->dst, &e->tag) != BG_OK)
            e->tag = 0; /* the transfer itself reported it */
    }
}

void bg_rt_event_wait_(bg_rt_t *rt, int c, double t0, double t1)
{
    bg_rt_event_t *e = event_slot(rt, -1);
    if (e)
        *e = (bg_rt_event_t){BG_ACT_ALLREDUCE, -1, c, t0 - rt->t_origin, t1 - rt->t_origin, -1, 1, 0};
}

/* Events are made once and reused by later steps. */
int bg_rt_mark_begin_(bg_rt_t *rt)
{
    size_t old = rt->capmark;
    if (bg_grow(&rt->marks, &rt->capmark, rt->nmark + 1, sizeof(*rt->marks)))
        return -1;
    if (rt->capmark > old)
        memset(rt->marks + old, 0, sizeof(*rt->marks) * (rt->capmark - old));
    rt_mark_t *m = &rt->marks[rt->nmark];
    if (!m->begin && bg_event_create(rt->conf.be, &m->begin) != BG_OK)
        return -1;
    if (!m->end && bg_event_create(rt->conf.be, &m->end) != BG_OK)
        return -1;
    if (bg_event_record(rt->conf.be, m->begin, rt->compute) != BG_OK)
        return -1;
    return (int)rt->nmark++;
}

bg_status_t bg_rt_mark_end_(bg_rt_t *rt, int mark)
{
    return bg_event_record(rt->conf.be, rt->marks[mark].end, rt->compute);
}

/*
 * Device time of the step's compute actions: once the stream has drained,
 * each action's events give when it really ran (host clocks only see when
 * work was queued). On the CPU the events are host clocks and nothing moves.
 */
bg_status_t bg_rt_marks_resolve_(bg_rt_t *rt)
{
    if (!rt->nmark)
        return BG_OK;
    bg_status_t st = bg_stream_synchronize(rt->conf.be, rt->compute);
    rt->stats->busy_s = 0;
    for (size_t i = 0; st == BG_OK && i < rt->nev; i++) {
        int j = rt->ev_mark[i];
        if (j < 0)
            continue;
        float a = 0, b = 0;
        st = bg_event_elapsed_ms(rt->conf.be, rt->evorigin, rt->marks[j].begin, &a);
        if (st == BG_OK)
            st = bg_event_elapsed_ms(rt->conf.be, rt->evorigin, rt->marks[j].end, &b);
        rt->ev[i].t0 = a * 1e-3;
        rt->ev[i].t1 = b * 1e-3;
        rt->stats->busy_s += (b - a) * 1e-3;
    }
    rt->nmark = 0;
    return st;
}

void bg_rt_timing_free_(bg_rt_t *rt)
{
    for (size_t i = 0; i < rt->capmark; i++) {
        bg_event_destroy(rt->conf.be, rt->marks[i].begin);
        bg_event_destroy(rt->conf.be, rt->marks[i].end);
    }
    bg_event_destroy(rt->conf.be, rt->evorigin);
    free(rt->marks), free(rt->ev_mark), free(rt->ev);
}

const bg_rt_event_t *bg_rt_events(const bg_rt_t *rt, int *n)
{
    *n = (int)rt->nev;
    return rt->ev;
}

double bg_rt_time_origin(const bg_rt_t *rt)
{
    return rt->t_origin;
}
