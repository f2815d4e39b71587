/*
 * engine/runtime.c -- the executor: runs one rank's schedule list over its
 * chunks, with parameters, gradient accumulators and micro-batch slots.
 * This file ties the parts together (engine/runtime_impl.h lists them):
 * create/free, the action loop, a training step and an evaluation. It is
 * the top: it calls the parts, and no part calls it (their shared helpers
 * live in the part that owns them, or inline in runtime_impl.h).
 *
 * Layout invariance is kept here, in three rules:
 *  1. every layer call sees the same shapes and inputs whatever the split;
 *  2. a tensor's gradient is one left fold over its uses in descending
 *     (layer, slot) order; stages forward either their folded prefix (the
 *     latest using chunk) or their single contributions (bg_net_edge_t), so
 *     the producer continues exactly the fold one stage would have done
 *     (runtime_compute.c);
 *  3. each (layer, slot) using a parameter has its own accumulator, W adds
 *     into it in micro-batch order, and the parameter's gradient is the fold
 *     of its users in ascending layer order, computed identically by every
 *     holder of a tied weight (runtime_grad.c).
 * Must not parse, print or decide policy (what to train, when to evaluate,
 * which metrics to compute from an evaluation's outputs).
 */
#include "engine/runtime.h"

#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "engine/nvtx.h"
#include "engine/runtime_impl.h"

/* ---------------------------------------------------------------- the loop */

static bg_status_t run_action(bg_rt_t *rt, const bg_action_t *a, int64_t step)
{
    int lci = rt_local_of(rt, a->chunk);
    bg_status_t st = bg_act_is_compute(a->kind) ? bg_rt_zero_ready_(rt, lci) : BG_OK;
    if (st != BG_OK)
        return st;
    switch (a->kind) {
    case BG_ACT_F:
        return bg_rt_forward_(rt, a->mb, lci);
    case BG_ACT_B:
        return bg_rt_backward_input_(rt, a->mb, lci);
    case BG_ACT_W:
        return bg_rt_backward_weight_(rt, a->mb, lci);
    case BG_ACT_BW:
        st = bg_rt_backward_input_(rt, a->mb, lci);
        return st == BG_OK ? bg_rt_backward_weight_(rt, a->mb, lci) : st;
    case BG_ACT_SEND_ACT:
    case BG_ACT_SEND_GRAD:
        return bg_rt_send_(rt, a);
    case BG_ACT_RECV_ACT:
    case BG_ACT_RECV_GRAD:
        return bg_rt_recv_wait_(rt, a);
    case BG_ACT_ALLREDUCE:
        return bg_rt_allreduce_start_(rt, lci);
    case BG_ACT_OPTIMIZER: /* every queued sync handed over first */
        st = bg_rt_defer_progress_(rt, true);
        return st == BG_OK ? bg_rt_2bw_optimizer_(rt, step) : st;
    default:
        return bg_errorf(BG_ERR_INTERNAL, "unknown action kind %d", (int)a->kind);
    }
}

/* The run's losses, read once, summed in micro-batch order. */
static bg_status_t collect_losses(bg_rt_t *rt)
{
    int any = 0;
    for (int m = 0; m < rt->max_mb; m++)
        any |= rt->loss_have[m];
    if (!any)
        return BG_OK;
    float *h = malloc(sizeof(float) * (size_t)rt->max_mb);
    if (!h)
        return bg_errorf(BG_ERR_NOMEM, "out of memory reading losses");
    bg_status_t st = bg_backend_copy(rt->conf.be, h, rt->loss_dev,
                                     sizeof(float) * (size_t)rt->max_mb, BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    for (int m = 0; st == BG_OK && m < rt->max_mb; m++) {
        if (!rt->loss_have[m])
            continue;
        rt->stats->loss_sum += h[m];
        rt->stats->loss_count++;
        rt->loss_have[m] = 0;
    }
    free(h);
    return st;
}

/* One action with its timing, then the transport's progress. Training
 * steps are timed (events and marks); evaluations are not. */
static bg_status_t run_one(bg_rt_t *rt, const bg_action_t *a, int64_t step)
{
    bg_action_t slot_a; /* a with its micro-batch as a slot id (2bw; else a itself) */
    if (!bg_rt_2bw_admit_(rt, a, &slot_a))
        return BG_OK;
    double t0 = bg_now_s();
    if (a->kind == BG_ACT_OPTIMIZER && !rt->eval)
        rt->stats->pipe_s = t0 - rt->t_origin;
    char name[64];
    bg_action_str(a, name, sizeof(name));
    int mark = bg_act_is_compute(a->kind) && !rt->eval ? bg_rt_mark_begin_(rt) : -1;
    bg_nvtx_push_action(name, (int)a->kind, a->mb);
    bg_status_t st = run_action(rt, &slot_a, step);
    bg_nvtx_pop();
    if (st == BG_OK)
        bg_rt_2bw_ran_(rt, &slot_a);
    if (mark >= 0 && st == BG_OK)
        st = bg_rt_mark_end_(rt, mark);
    double t1 = bg_now_s();
    if (bg_act_is_compute(a->kind))
        rt->stats->busy_s += t1 - t0;
    if (!rt->eval)
        bg_rt_event_add_(rt, a, t0, t1, mark); /* traces show training steps */
    if (st == BG_OK && rt->conf.tp) {
        bg_tp_note_progress(rt->conf.tp); /* the store's hang check counts actions */
        st = bg_rt_defer_progress_(rt, false);
        bg_tp_progress(rt->conf.tp);
        if (st == BG_OK)
            st = bg_rt_pend_progress_(rt, false);
    }
    if (st != BG_OK)
        bg_error_prefix(st, "%s: ", name);
    return st;
}

static bg_status_t run_list(bg_rt_t *rt, const bg_action_t *acts, size_t n, int64_t step)
{
    bg_status_t st = BG_OK;
    for (size_t i = 0; i < n && st == BG_OK; i++) {
        /* Post receives early so data lands while we compute. */
        for (size_t j = i; j < n && j <= i + RT_LOOKAHEAD && st == BG_OK; j++) {
            bg_action_t r;
            if (bg_act_is_recv(acts[j].kind) && bg_rt_2bw_admit_(rt, &acts[j], &r))
                st = bg_rt_recv_post_(rt, &r);
        }
        if (st == BG_OK)
            st = run_one(rt, &acts[i], step);
    }
    if (rt->conf.tp) {
        bg_status_t s2 = st == BG_OK ? bg_rt_defer_progress_(rt, true) : BG_OK;
        if (st == BG_OK)
            st = s2;
        /* 2bw: a carried gradient's send completes when its receiver posts
         * it, in that rank's next step; waiting here could deadlock */
        s2 = bg_rt_pend_progress_(rt, !bg_rt_2bw_sends_cross_(rt));
        if (st == BG_OK)
            st = s2;
    }
    if (st == BG_OK)
        st = collect_losses(rt);
    return st;
}

/* Run this rank's list as step `step` (drain: only what the last step
 * carried over) into *stats. */
static bg_status_t run_step(bg_rt_t *rt, int64_t step, bool drain, bg_rt_stats_t *stats)
{
    memset(stats, 0, sizeof(*stats));
    rt->on_output = NULL;
    rt->stats = stats;
    rt->eval = false;
    rt->nev = 0;
    rt->t_origin = bg_now_s();
    size_t n = bg_sched_len(rt->conf.sched, rt->conf.stage);
    const bg_action_t *acts = bg_sched_actions(rt->conf.sched, rt->conf.stage);
    rt->nmark = 0;
    bg_status_t st = bg_rt_2bw_begin_(rt, step, drain);
    if (st == BG_OK && !rt->evorigin)
        st = bg_event_create(rt->conf.be, &rt->evorigin);
    if (st == BG_OK)
        st = bg_event_record(rt->conf.be, rt->evorigin, rt->compute);
    if (st == BG_OK)
        st = run_list(rt, acts, n, step);
    if (st == BG_OK)
        st = bg_rt_marks_resolve_(rt);
    stats->step_s = bg_now_s() - rt->t_origin;
    if (!stats->pipe_s)
        stats->pipe_s = stats->step_s;
    return bg_rt_2bw_end_(rt, st); /* closes the slots (2bw: all but carried ones) */
}

bg_status_t bg_rt_step(bg_rt_t *rt, int64_t step, bg_rt_feed_fn feed, void *ctx, bg_rt_stats_t *out)
{
    bg_rt_stats_t stats;
    rt->feed = feed;
    rt->feed_ctx = ctx;
    rt->last_step = step;
    bg_status_t st = run_step(rt, step, false, &stats);
    if (st != BG_OK)
        return bg_rt_err_(rt, st);
    *out = stats;
    return BG_OK;
}

bg_status_t bg_rt_drain(bg_rt_t *rt)
{
    if (!bg_rt_2bw_carrying_(rt))
        return BG_OK;
    bg_rt_stats_t stats;
    bg_status_t st = run_step(rt, rt->last_step + 1, true, &stats);
    return st == BG_OK ? BG_OK : bg_rt_err_(rt, st);
}

/* The forward-only lists for `mb` micro-batches of this layout, made by
 * the generator and proved by the checker once per size. */
static bg_status_t eval_lists(bg_rt_t *rt, int mb)
{
    if (rt->eval_sched && bg_sched_microbatches(rt->eval_sched) == mb)
        return BG_OK;
    bg_sched_t *s = NULL;
    bg_status_t st = bg_sched_generate_forward(rt->conf.sched, mb, &s);
    if (st == BG_OK)
        st = bg_sched_check_forward(s);
    if (st == BG_OK)
        st = bg_rt_slots_reserve_(rt, mb);
    if (st != BG_OK) {
        bg_sched_free(s);
        return st;
    }
    bg_sched_free(rt->eval_sched);
    rt->eval_sched = s;
    return BG_OK;
}

bg_status_t bg_rt_eval(bg_rt_t *rt, int mb, bg_rt_feed_fn feed, void *ctx,
                       bg_rt_output_fn on_output, void *output_ctx, bg_rt_stats_t *out)
{
    if (mb < 1)
        return bg_rt_err_(rt, bg_errorf(BG_ERR_INVALID, "evaluation with %d micro-batches", mb));
    bg_status_t st = bg_rt_drain(rt); /* evaluate one consistent version */
    if (st != BG_OK)
        return st;
    st = eval_lists(rt, mb);
    if (st != BG_OK)
        return bg_rt_err_(rt, st);
    bg_rt_stats_t stats;
    memset(&stats, 0, sizeof(stats));
    rt->feed = feed;
    rt->feed_ctx = ctx;
    rt->on_output = on_output;
    rt->output_ctx = output_ctx;
    rt->stats = &stats;
    rt->eval = true;
    double t_start = bg_now_s(); /* the last step's events and origin stay for traces */
    st = run_list(rt, bg_sched_actions(rt->eval_sched, rt->conf.stage),
                  bg_sched_len(rt->eval_sched, rt->conf.stage), 0);
    stats.step_s = bg_now_s() - t_start;
    bg_rt_slots_reset_(rt);
    rt->eval = false;
    rt->on_output = NULL;
    if (st != BG_OK)
        return bg_rt_err_(rt, st);
    *out = stats;
    return BG_OK;
}

/* ---------------------------------------------------------------- setup */

/* Edges ending and starting at local chunk ch, and what its Ws read. */
static bg_status_t chunk_edges(bg_rt_t *rt, rt_chunk_t *ch)
{
    const bg_net_t *n = rt->net;
    ch->in_edge = calloc((size_t)n->n_edges + 1, sizeof(int));
    ch->out_edge = calloc((size_t)n->n_edges + 1, sizeof(int));
    ch->w_needs = calloc((size_t)n->n_tensors + 1, 1);
    if (!ch->in_edge || !ch->out_edge || !ch->w_needs)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for chunk %d", ch->c);
    for (int l = ch->l0; l < ch->l1; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        if (!gl->spec.kind->backward_weight)
            continue;
        for (int k = 0; k < gl->spec.n_in; k++)
            ch->w_needs[gl->in[k]] = 1;
    }
    for (int e = 0; e < n->n_edges; e++) {
        if (n->edges[e].dst == ch->c)
            ch->in_edge[ch->n_in++] = e;
        if (n->edges[e].src == ch->c)
            ch->out_edge[ch->n_out++] = e;
    }
    return BG_OK;
}

static bg_status_t setup_chunks(bg_rt_t *rt)
{
    const bg_net_t *n = rt->net;
    rt->chunk_local = malloc(sizeof(int) * (size_t)n->n_chunks);
    if (!rt->chunk_local)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    for (int c = 0; c < n->n_chunks; c++) {
        rt->chunk_local[c] = -1;
        if (bg_sched_chunk_rank(rt->conf.sched, c) == rt->conf.stage)
            rt->nlc++;
    }
    rt->lc = calloc((size_t)rt->nlc + 1, sizeof(rt_chunk_t));
    if (!rt->lc)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int c = 0; c < n->n_chunks; c++) {
        if (bg_sched_chunk_rank(rt->conf.sched, c) != rt->conf.stage)
            continue;
        rt_chunk_t *ch = &rt->lc[k];
        rt->chunk_local[c] = k++;
        ch->c = c;
        ch->l0 = n->chunk_first[c];
        ch->l1 = n->chunk_first[c + 1];
        bg_status_t st = chunk_edges(rt, ch);
        if (st != BG_OK)
            return st;
    }
    return BG_OK;
}

/* Slots for a step, the shared layer workspace and d(loss). */
static bg_status_t setup_buffers(bg_rt_t *rt)
{
    bg_status_t st = bg_rt_slots_reserve_(rt, bg_sched_microbatches(rt->conf.sched) *
                                                  bg_rt_2bw_slot_factor_(rt));
    if (st != BG_OK)
        return st;
    size_t ws = 0;
    for (int i = 0; i < rt->nlc; i++)
        for (int l = rt->lc[i].l0; l < rt->lc[i].l1; l++) {
            bg_layer_cost_t cost;
            bg_layer_cost(&bg_graph_layer(rt->g, l)->spec,
                          bg_layer_kernel_dtype(rt->conf.be, rt->conf.dtype), &cost);
            if ((size_t)cost.workspace_bytes > ws)
                ws = (size_t)cost.workspace_bytes;
        }
    rt->workspace_bytes = ws;
    if ((st = rt_dalloc(rt, ws + 4, &rt->workspace)) != BG_OK)
        return st;
    if ((st = rt_dalloc(rt, 4, (void **)&rt->dloss)) != BG_OK)
        return st;
    return bg_rt_dloss_upload_(rt);
}

static bg_status_t setup_groups(bg_rt_t *rt)
{
    if (!rt->conf.tp)
        return BG_OK;
    int S = rt->conf.stages, D = rt->conf.dps;
    int *r = malloc(sizeof(int) * (size_t)(S > D ? S : D));
    if (!r)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    bg_status_t st = BG_OK;
    if (D > 1) {
        for (int d = 0; d < D; d++)
            r[d] = rt_global_rank(rt, d, rt->conf.stage);
        st = bg_tp_group_create(rt->conf.tp, r, D, &rt->dp_group);
    }
    if (st == BG_OK && S > 1) {
        for (int s = 0; s < S; s++)
            r[s] = rt_peer_rank(rt, s);
        st = bg_tp_group_create(rt->conf.tp, r, S, &rt->pp_group);
    }
    free(r);
    return st;
}

bg_status_t bg_rt_create(const bg_rt_conf_t *conf, bg_rt_t **out)
{
    bg_rt_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    rt->conf = *conf;
    if (rt->conf.timeout_s <= 0)
        rt->conf.timeout_s = 60;
    rt->net = conf->net;
    rt->g = conf->net->graph;
    rt->dev = bg_backend_device(conf->be);
    rt->mem = rt->dev == BG_DEV_CUDA ? BG_TP_MEM_CUDA : BG_TP_MEM_HOST;
    rt->loss_scale = conf->loss_scale > 0 ? conf->loss_scale : 1.0f;
    bg_status_t st = BG_OK;
    if ((conf->stages * conf->dps > 1) && !conf->tp)
        st = bg_errorf(BG_ERR_INVALID, "a multi-rank layout needs a transport");
    if (st == BG_OK)
        st = bg_stream_create(conf->be, "brigade compute", &rt->compute);
    if (st == BG_OK)
        st = setup_chunks(rt);
    if (st == BG_OK)
        st = setup_groups(rt); /* before the parameters: ZeRO-1 all-gathers them */
    if (st == BG_OK)
        st = bg_rt_params_setup_(rt);
    if (st == BG_OK)
        st = bg_rt_buckets_setup_(rt);
    if (st == BG_OK)
        st = bg_rt_2bw_setup_(rt);
    if (st == BG_OK)
        st = setup_buffers(rt);
    if (st != BG_OK) {
        bg_rt_err_(rt, st);
        bg_rt_free(rt);
        return st;
    }
    *out = rt;
    return BG_OK;
}

void bg_rt_free(bg_rt_t *rt)
{
    if (!rt)
        return;
    if (rt->slots)
        bg_rt_slots_reset_(rt);
    if (rt->conf.tp)
        bg_rt_pend_progress_(rt, true);
    bg_rt_slots_free_(rt);
    bg_rt_2bw_free_(rt);
    bg_rt_ps_free_(rt);
    bg_rt_params_free_(rt);
    for (int i = 0; rt->lc && i < rt->nlc; i++) {
        if (rt->lc[i].tied_host != rt->lc[i].tied_dev)
            free(rt->lc[i].tied_host);
        free(rt->lc[i].in_edge), free(rt->lc[i].out_edge), free(rt->lc[i].w_needs);
    }
    if (rt->dp_group)
        bg_tp_group_destroy(rt->dp_group);
    if (rt->pp_group)
        bg_tp_group_destroy(rt->pp_group);
    bg_rt_xfer_free_(rt);
    if (rt->compute)
        bg_stream_synchronize(rt->conf.be, rt->compute);
    bg_rt_cache_release_(rt); /* every device buffer, workspace and loss slots included */
    bg_stream_destroy(rt->conf.be, rt->compute);
    bg_rt_timing_free_(rt);
    bg_sched_free(rt->eval_sched);
    free(rt->lc), free(rt->chunk_local);
    free(rt);
}
