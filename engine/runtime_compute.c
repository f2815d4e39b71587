/*
 * engine/runtime_compute.c -- the compute actions: F, B and W of one
 * micro-batch on one local chunk, on the compute stream.
 *
 * F binds received tensors, feeds graph inputs from data, runs the chunk's
 * layers and packs every outgoing edge (local edges straight into the
 * consumer's receive buffer); on the loss chunk it keeps the loss and, in
 * an evaluation, shows the loss inputs to the caller. B folds received
 * gradients in the layout-invariant order (runtime.c's header) and writes
 * input gradients into messages; W adds parameter gradients into the
 * per-use accumulators. All three can fail: a device error, out of memory,
 * or data that never arrived (a schedule without the matching receive),
 * each named with the action.
 * Must NOT talk to the transport beyond waiting on a posted receive
 * (runtime_xfer.c posts and sends), or touch the optimizer state.
 */
#include <string.h>

#include "engine/nvtx.h"
#include "engine/runtime_impl.h"

static bg_tensor_t tview(const bg_rt_t *rt, int t, void *data)
{
    bg_shape_t s = bg_graph_tensor(rt->g, t)->shape;
    if (s.dtype == BG_F32)
        s.dtype = rt->conf.dtype;
    return bg_tensor_from_shape(data, rt->dev, &s);
}

static bg_status_t dcopy(bg_rt_t *rt, void *dst, const void *src, size_t n)
{
    return bg_backend_copy(rt->conf.be, dst, src, n, BG_COPY_D2D, rt->compute);
}

/* dst += src over n compute-dtype elements, through the `add` kind so
 * both backends and both dtypes are covered by the kind's own kernels. */
static bg_status_t acc_add(bg_rt_t *rt, void *dst, const void *src, size_t n, bg_dtype_t dt)
{
    bg_layer_spec_t spec;
    memset(&spec, 0, sizeof(spec));
    spec.kind = bg_layer_kind_find("add");
    snprintf(spec.name, sizeof(spec.name), "gradient-sum");
    spec.n_in = 2;
    spec.in[0] = (bg_shape_t){BG_F32, 1, {(int64_t)n}};
    spec.in[1] = spec.in[0];
    spec.out = spec.in[0];
    int64_t d[1] = {(int64_t)n};
    bg_tensor_t a = bg_tensor_make(dst, dt, rt->dev, 1, d);
    bg_tensor_t b = bg_tensor_make((void *)src, dt, rt->dev, 1, d);
    bg_layer_call_t call;
    memset(&call, 0, sizeof(call));
    call.spec = &spec;
    call.be = rt->conf.be;
    call.stream = rt->compute;
    call.dtype = dt;
    call.in[0] = &a;
    call.in[1] = &b;
    call.out = &a;
    return bg_layer_forward(&call);
}

/* Upload one graph input from `host` (the input's own dtype) into its
 * device value; f32 inputs become the compute dtype on a bf16/fp16 run. */
static bg_status_t upload_input(bg_rt_t *rt, int t, const void *host, size_t host_bytes, void *dev)
{
    const bg_graph_tensor_t *gt = bg_graph_tensor(rt->g, t);
    if (!(gt->shape.dtype == BG_F32 && rt->conf.dtype != BG_F32))
        /* Pageable sources are staged before the call returns: the caller
         * may free `host` at once, and the stream orders the consumers. */
        return bg_backend_copy(rt->conf.be, dev, host, host_bytes, BG_COPY_H2D, rt->compute);
    int64_t n = bg_shape_numel(&gt->shape);
    uint16_t *h16 = malloc((size_t)n * 2 + 2);
    if (!h16)
        return bg_errorf(BG_ERR_NOMEM, "out of memory converting %s", gt->name);
    for (int64_t i = 0; i < n; i++)
        h16[i] = rt->conf.dtype == BG_BF16 ? bg_f32_to_bf16(((const float *)host)[i])
                                           : bg_f32_to_f16(((const float *)host)[i]);
    bg_status_t st =
        bg_backend_copy(rt->conf.be, dev, h16, (size_t)n * 2, BG_COPY_H2D, rt->compute);
    free(h16);
    return st;
}

/* Graph inputs this chunk reads: fed from data on the host, then uploaded. */
static bg_status_t feed_inputs(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int l = ch->l0; l < ch->l1; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        for (int k = 0; k < gl->spec.n_in; k++) {
            int t = gl->in[k];
            const bg_graph_tensor_t *gt = bg_graph_tensor(rt->g, t);
            if (gt->producer >= 0 || s->val[t])
                continue;
            size_t host_bytes = (size_t)bg_shape_numel(&gt->shape) * bg_dtype_size(gt->shape.dtype);
            void *host = malloc(host_bytes ? host_bytes : 1);
            if (!host)
                return bg_errorf(BG_ERR_NOMEM, "out of memory for input %s", gt->name);
            bg_status_t st = rt->feed(rt->feed_ctx, bg_rt_2bw_feed_mb_(rt, s->mb), gt->input,
                                      host, host_bytes);
            if (st == BG_OK)
                st = rt_dalloc(rt, rt_tensor_bytes(rt, t), &s->val[t]);
            if (st == BG_OK) {
                s->own[t] = 1;
                st = upload_input(rt, t, host, host_bytes, s->val[t]);
            }
            free(host);
            if (st != BG_OK)
                return st;
        }
    }
    return BG_OK;
}

/* Point this chunk's received tensors into the receive buffers. */
static bg_status_t bind_received(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int i = 0; i < ch->n_in; i++) {
        const bg_net_edge_t *e = &rt->net->edges[ch->in_edge[i]];
        if (s->act_req[i]) {
            bg_status_t st = bg_tp_wait(rt->conf.tp, s->act_req[i], rt->conf.timeout_s);
            s->act_req[i] = NULL;
            if (st != BG_OK)
                return st;
        }
        if (!s->act_recv[i] && e->act_elems)
            return bg_errorf(BG_ERR_INTERNAL,
                             "F(mb=%d, c=%d): activations from chunk %d never "
                             "arrived (schedule has no matching receive)",
                             s->mb, ch->c, e->src);
        size_t off = 0;
        for (int k = 0; k < e->n; k++) {
            int t = e->tensors[k];
            s->val[t] = (char *)s->act_recv[i] + off;
            s->own[t] = 0;
            off += rt_tensor_bytes(rt, t);
        }
    }
    return BG_OK;
}

static bg_status_t layer_call_init(bg_rt_t *rt, int l, rt_slot_t *s, int lci, bg_tensor_t *tin,
                                   bg_tensor_t *tout, bg_tensor_t *tparam, bg_tensor_t *tsaved,
                                   bg_tensor_t *tws, bg_layer_call_t *call)
{
    const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
    rt_chunk_t *ch = &rt->lc[lci];
    memset(call, 0, sizeof(*call));
    call->spec = &gl->spec;
    call->be = rt->conf.be;
    call->stream = rt->compute;
    call->dtype = rt->conf.dtype;
    for (int k = 0; k < gl->spec.n_in; k++) {
        tin[k] = tview(rt, gl->in[k], s->val[gl->in[k]]);
        call->in[k] = &tin[k];
    }
    *tout = tview(rt, gl->out, s->val[gl->out]);
    if (gl->spec.kind->out_f32)
        tout->dtype = BG_F32;
    call->out = tout;
    for (int j = 0; j < gl->n_params; j++) {
        rt_param_t *p = &rt->par[rt->param_local[gl->param[j]]];
        bg_shape_t ps = p->p >= 0 ? bg_graph_param(rt->g, p->p)->desc.shape : gl->slot[j].shape;
        ps.dtype = rt->conf.dtype;
        /* 2bw: the version this micro-batch entered with */
        tparam[j] = bg_tensor_from_shape((void *)bg_rt_2bw_param_dev_(rt, s, p), rt->dev, &ps);
        call->params[j] = &tparam[j];
    }
    bg_layer_cost_t cost;
    bg_layer_cost(&gl->spec, bg_layer_kernel_dtype(rt->conf.be, rt->conf.dtype), &cost);
    int64_t sb = cost.saved_bytes;
    if (sb) {
        int64_t d[1] = {sb};
        *tsaved = bg_tensor_make(s->saved[l - ch->l0], BG_I32, rt->dev, 1, d);
        tsaved->shape[0] = (sb + 3) / 4;
        call->saved = tsaved;
    }
    if (cost.workspace_bytes) {
        int64_t d[1] = {(cost.workspace_bytes + 3) / 4};
        *tws = bg_tensor_make(rt->workspace, BG_I32, rt->dev, 1, d);
        call->workspace = tws;
    }
    return BG_OK;
}

static size_t saved_bytes_of(bg_rt_t *rt, int l)
{
    bg_layer_cost_t cost;
    bg_layer_cost(&bg_graph_layer(rt->g, l)->spec,
                  bg_layer_kernel_dtype(rt->conf.be, rt->conf.dtype), &cost);
    return (size_t)((cost.saved_bytes + 3) / 4 * 4);
}

static bg_status_t run_layers_forward(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int l = ch->l0; l < ch->l1; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        bg_status_t st;
        size_t ob = gl->spec.kind->out_f32 ? rt_tensor_elems(rt, gl->out) * 4
                                           : rt_tensor_bytes(rt, gl->out);
        if (!s->val[gl->out]) {
            if ((st = rt_dalloc(rt, ob, &s->val[gl->out])) != BG_OK)
                return st;
            s->own[gl->out] = 1;
        }
        size_t sb = saved_bytes_of(rt, l);
        if (sb && !s->saved[l - ch->l0]) {
            if ((st = rt_dalloc(rt, sb, &s->saved[l - ch->l0])) != BG_OK)
                return st;
        }
        bg_tensor_t tin[BG_MAX_INPUTS], tout, tpar[BG_MAX_PARAMS], tsav, tws;
        bg_layer_call_t call;
        layer_call_init(rt, l, s, lci, tin, &tout, tpar, &tsav, &tws, &call);
        bg_nvtx_push_layer(gl->spec.name);
        st = bg_layer_forward(&call);
        bg_nvtx_pop();
        if (st != BG_OK)
            return st;
    }
    s->materialized = true;
    return BG_OK;
}

/* Pack each outgoing edge's tensors: remote edges into a send buffer, local
 * edges straight into the consuming chunk's receive buffer. */
static bg_status_t pack_outgoing(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int i = 0; i < ch->n_out; i++) {
        const bg_net_edge_t *e = &rt->net->edges[ch->out_edge[i]];
        size_t bytes = 0;
        for (int k = 0; k < e->n; k++)
            bytes += rt_tensor_bytes(rt, e->tensors[k]);
        void *buf = NULL;
        bg_status_t st = rt_dalloc(rt, bytes, &buf);
        if (st != BG_OK)
            return st;
        size_t off = 0;
        for (int k = 0; k < e->n && st == BG_OK; k++) {
            int t = e->tensors[k];
            st = dcopy(rt, (char *)buf + off, s->val[t], rt_tensor_bytes(rt, t));
            off += rt_tensor_bytes(rt, t);
        }
        if (st != BG_OK) {
            bg_rt_dfree_(rt, buf);
            return st;
        }
        int dl = rt_local_of(rt, e->dst);
        if (dl >= 0) {
            rt_slot_t *d;
            if ((st = bg_rt_slot_open_(rt, s->mb, dl, &d)) != BG_OK)
                return st;
            int j = rt_edge_in(&rt->lc[dl], ch->out_edge[i]);
            bg_rt_dfree_(rt, d->act_recv[j]);
            d->act_recv[j] = buf;
        } else {
            bg_rt_dfree_(rt, s->act_send[i]);
            s->act_send[i] = buf;
        }
    }
    return BG_OK;
}

/* Each row's argmax class, from a loss kind that computes its logits
 * itself (the fused classifier keeps them per row), to the host h [rows]. */
static bg_status_t fetch_argmax(bg_rt_t *rt, rt_slot_t *s, int lci, int64_t rows, int32_t *h)
{
    int l = bg_graph_loss_layer(rt->g);
    bg_tensor_t tin[BG_MAX_INPUTS], tout, tpar[BG_MAX_PARAMS], tsav, tws;
    bg_layer_call_t call;
    layer_call_init(rt, l, s, lci, tin, &tout, tpar, &tsav, &tws, &call);
    void *d = NULL;
    bg_status_t st = rt_dalloc(rt, (size_t)rows * 4 + 4, &d);
    if (st == BG_OK)
        st = bg_graph_layer(rt->g, l)->spec.kind->row_argmax(&call, d);
    if (st == BG_OK)
        st = bg_backend_copy(rt->conf.be, h, d, (size_t)rows * 4, BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    if (d)
        bg_rt_dfree_(rt, d);
    return st;
}

/* The loss layer's logits of an evaluated micro-batch (f32 whatever the
 * compute dtype), to the host h [rows, V]. */
static bg_status_t fetch_logits(bg_rt_t *rt, rt_slot_t *s, int lg, int64_t n, float *h)
{
    if (rt->conf.dtype == BG_F32)
        return bg_backend_copy(rt->conf.be, h, s->val[lg], (size_t)n * 4, BG_COPY_D2H,
                               rt->compute);
    /* bf16/fp16 widens in place, from the end, so nothing is overwritten early. */
    uint16_t *h16 = (uint16_t *)h;
    bg_status_t st =
        bg_backend_copy(rt->conf.be, h16, s->val[lg], (size_t)n * 2, BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    for (int64_t i = n - 1; st == BG_OK && i >= 0; i--)
        h[i] = rt->conf.dtype == BG_BF16 ? bg_bf16_to_f32(h16[i]) : bg_f16_to_f32(h16[i]);
    return st;
}

/* The loss layer's logits (or, for a fused classifier, its per-row argmax)
 * and targets of an evaluated micro-batch, to the host and to the caller's
 * callback (metrics are the caller's business). */
static bg_status_t emit_output(bg_rt_t *rt, rt_slot_t *s, int lci)
{
    const bg_graph_layer_t *gl = bg_graph_layer(rt->g, bg_graph_loss_layer(rt->g));
    int lg = gl->in[0], tg = gl->in[1];
    bool fused = gl->spec.kind->row_argmax != NULL;
    const bg_shape_t *ls = &bg_graph_tensor(rt->g, lg)->shape;
    int64_t rows = bg_shape_numel(&bg_graph_tensor(rt->g, tg)->shape);
    int64_t V = fused ? 0 : ls->d[ls->ndim - 1];
    float *h = fused ? NULL : malloc((size_t)(rows * V) * 4 + 4); /* [rows, V] */
    int32_t *am = fused ? malloc((size_t)rows * 4 + 4) : NULL;    /* [rows] */
    int32_t *y = malloc((size_t)rows * 4 + 4);                     /* [rows] */
    bg_status_t st = BG_OK;
    if ((!h && !am) || !y)
        st = bg_errorf(BG_ERR_NOMEM, "out of memory for the loss inputs");
    if (st == BG_OK)
        st = fused ? fetch_argmax(rt, s, lci, rows, am) : fetch_logits(rt, s, lg, rows * V, h);
    if (st == BG_OK)
        st =
            bg_backend_copy(rt->conf.be, y, s->val[tg], (size_t)rows * 4, BG_COPY_D2H, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    if (st == BG_OK) {
        bg_rt_output_t o = {s->mb, rows, V, h, y, am};
        st = rt->on_output(rt->output_ctx, &o);
    }
    free(h);
    free(am);
    free(y);
    return st;
}

/* The loss of micro-batch s->mb, if this chunk computes it. Kept on the
 * device until the step ends: one host sync per step, not one per
 * micro-batch. */
static bg_status_t keep_loss(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    if (rt->net->layer_chunk[bg_graph_loss_layer(rt->g)] != rt->lc[lci].c)
        return BG_OK;
    int lt = bg_graph_loss_tensor(rt->g);
    bg_status_t st = dcopy(rt, rt->loss_dev + s->mb, s->val[lt], 4);
    if (st != BG_OK)
        return st;
    rt->loss_have[s->mb] = 1;
    return rt->eval && rt->on_output ? emit_output(rt, s, lci) : BG_OK;
}

bg_status_t bg_rt_forward_(bg_rt_t *rt, int mb, int lci)
{
    rt_slot_t *s;
    bg_status_t st = bg_rt_slot_open_(rt, mb, lci, &s);
    if (st == BG_OK)
        st = bind_received(rt, lci, s);
    if (st == BG_OK)
        st = feed_inputs(rt, lci, s);
    if (st == BG_OK)
        st = run_layers_forward(rt, lci, s);
    if (st == BG_OK)
        st = pack_outgoing(rt, lci, s);
    if (st == BG_OK)
        st = keep_loss(rt, lci, s);
    if (st != BG_OK)
        return st;
    rt_chunk_t *ch = &rt->lc[lci];
    if (rt->conf.recompute && !rt->eval) {
        /* Keep only what arrived or came from data; redo the rest before B. */
        for (int l = ch->l0; l < ch->l1; l++) {
            bg_rt_slot_drop_value_(rt, s, bg_graph_layer(rt->g, l)->out);
            bg_rt_slot_drop_saved_(rt, lci, s, l);
        }
        s->materialized = false;
    }
    if (rt->eval)
        bg_rt_slot_release_(rt, lci, s, true);
    return BG_OK;
}

/* ---------------------------------------------------------------- backward */

/* Fold received gradient contributions for tensors produced here: the
 * latest using chunk's prefix first, then the others' single contributions,
 * later chunks first. */
static bg_status_t fold_received(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int i = 0; i < ch->n_out; i++) {
        if (s->grad_req[i]) {
            bg_status_t st = bg_tp_wait(rt->conf.tp, s->grad_req[i], rt->conf.timeout_s);
            s->grad_req[i] = NULL;
            if (st != BG_OK)
                return st;
        }
    }
    for (int t = 0; t < rt->net->n_tensors; t++) {
        if (rt->net->tensors[t].chunk != ch->c || !rt->net->tensors[t].needs_grad)
            continue;
        for (int dst = rt->net->n_chunks - 1; dst > ch->c; dst--) {
            int e = bg_net_edge_find(rt->net, ch->c, dst);
            if (e < 0)
                continue;
            int i = rt_edge_out(ch, e);
            const bg_net_edge_t *ed = &rt->net->edges[e];
            size_t off = 0;
            for (int k = 0; k < ed->n; k++) {
                size_t sz = rt_tensor_elems(rt, ed->tensors[k]) * rt_act_esize(rt);
                if (ed->tensors[k] != t) {
                    off += sz * (size_t)ed->n_contrib[k];
                    continue;
                }
                if (!s->grad_recv[i])
                    return bg_errorf(BG_ERR_INTERNAL,
                                     "B(mb=%d, c=%d): gradients from chunk %d "
                                     "never arrived",
                                     s->mb, ch->c, dst);
                for (int j = 0; j < ed->n_contrib[k]; j++) {
                    char *src = (char *)s->grad_recv[i] + off + sz * (size_t)j;
                    if (!s->gacc[t]) {
                        s->gacc[t] = src; /* alias: the receive buffer lives until W */
                        s->gown[t] = 0;
                    } else {
                        bg_status_t st =
                            acc_add(rt, s->gacc[t], src, rt_tensor_elems(rt, t), rt->conf.dtype);
                        if (st != BG_OK)
                            return st;
                    }
                }
                break;
            }
        }
    }
    return BG_OK;
}

/* Where input `slot` of layer l sends its gradient in this chunk. */
typedef struct grad_dest {
    void *direct;    /* write here (the first contribution of a fold, or a single one) */
    void *fold_into; /* otherwise: add the temporary into this */
} grad_dest_t;

static bg_status_t grad_target(bg_rt_t *rt, int lci, rt_slot_t *s, int l, int slot, grad_dest_t *d)
{
    rt_chunk_t *ch = &rt->lc[lci];
    const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
    int t = gl->in[slot];
    size_t nb = rt_tensor_elems(rt, t) * rt_act_esize(rt);
    memset(d, 0, sizeof(*d));
    if (!rt->net->tensors[t].needs_grad)
        return BG_OK;
    if (rt->net->tensors[t].chunk == ch->c) {
        if (!s->gacc[t]) {
            bg_status_t st = rt_dalloc(rt, nb, &s->gacc[t]);
            if (st != BG_OK)
                return st;
            s->gown[t] = 1;
            d->direct = s->gacc[t];
        } else {
            d->fold_into = s->gacc[t];
        }
        return BG_OK;
    }
    /* Produced in an earlier chunk: into this chunk's gradient message. */
    int e = bg_net_edge_find(rt->net, rt->net->tensors[t].chunk, ch->c);
    int i = rt_edge_in(ch, e);
    const bg_net_edge_t *ed = &rt->net->edges[e];
    if (!s->grad_send[i]) {
        bg_status_t st = rt_dalloc(rt, ed->grad_elems * rt_act_esize(rt), &s->grad_send[i]);
        if (st != BG_OK)
            return st;
    }
    size_t off = 0;
    int k = 0;
    for (; k < ed->n && ed->tensors[k] != t; k++)
        off += rt_tensor_elems(rt, ed->tensors[k]) * rt_act_esize(rt) * (size_t)ed->n_contrib[k];
    char *region = (char *)s->grad_send[i] + off;
    int j = bg_net_use_rank(rt->net, t, ch->c, l, slot);
    if (ed->n_contrib[k] == 1) {
        /* Folded prefix: the first use (the highest) writes, the others add. */
        if (j == 0)
            d->direct = region;
        else
            d->fold_into = region;
    } else {
        /* One region per use, in descending (layer, slot) order. */
        d->direct = region + nb * (size_t)j;
    }
    return BG_OK;
}

static bg_status_t ensure_dout(bg_rt_t *rt, rt_slot_t *s, int l)
{
    const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
    int t = gl->out;
    if (s->gacc[t])
        return BG_OK;
    if (t == bg_graph_loss_tensor(rt->g)) {
        s->gacc[t] = rt->dloss;
        s->gown[t] = 0;
        return BG_OK;
    }
    /* No use reached this tensor (a dead end): its gradient is zero. */
    size_t nb = gl->spec.kind->out_f32 ? rt_tensor_elems(rt, t) * 4
                                       : rt_tensor_elems(rt, t) * rt_act_esize(rt);
    bg_status_t st = rt_dalloc(rt, nb, &s->gacc[t]);
    if (st != BG_OK)
        return st;
    s->gown[t] = 1;
    return bg_backend_memset(rt->conf.be, s->gacc[t], 0, nb, rt->compute);
}

static bg_status_t run_layer_backward_input(bg_rt_t *rt, int lci, rt_slot_t *s, int l)
{
    const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
    bg_status_t st = ensure_dout(rt, s, l);
    if (st != BG_OK || !gl->spec.kind->backward_input)
        return st;
    bg_tensor_t tin[BG_MAX_INPUTS], tout, tpar[BG_MAX_PARAMS], tsav, tws, tdin[BG_MAX_INPUTS],
        tdout;
    bg_layer_call_t call;
    layer_call_init(rt, l, s, lci, tin, &tout, tpar, &tsav, &tws, &call);
    tdout = tview(rt, gl->out, s->gacc[gl->out]);
    if (gl->spec.kind->out_f32)
        tdout.dtype = BG_F32;
    call.dout = &tdout;
    grad_dest_t dest[BG_MAX_INPUTS];
    void *tmp[BG_MAX_INPUTS] = {0};
    /* Descending slots: the fold order of a layer using one tensor twice. */
    for (int k = gl->spec.n_in - 1; k >= 0; k--) {
        if ((st = grad_target(rt, lci, s, l, k, &dest[k])) != BG_OK)
            goto out;
        void *where = dest[k].direct;
        if (!where && dest[k].fold_into) {
            if ((st = rt_dalloc(rt, rt_tensor_elems(rt, gl->in[k]) * rt_act_esize(rt), &tmp[k])) !=
                BG_OK)
                goto out;
            where = tmp[k];
        }
        if (where) {
            tdin[k] = tview(rt, gl->in[k], where);
            call.din[k] = &tdin[k];
        }
    }
    bg_nvtx_push_layer(gl->spec.name);
    st = bg_layer_backward_input(&call);
    bg_nvtx_pop();
    for (int k = gl->spec.n_in - 1; st == BG_OK && k >= 0; k--)
        if (tmp[k])
            st = acc_add(rt, dest[k].fold_into, tmp[k], rt_tensor_elems(rt, gl->in[k]),
                         rt->conf.dtype);
out:
    for (int k = 0; k < BG_MAX_INPUTS; k++)
        bg_rt_dfree_(rt, tmp[k]);
    return st;
}

/*
 * After B, keep only what W still reads: inputs of layers that have a W,
 * their saved scratch and output gradients. Everything else of the
 * micro-batch goes now rather than at W, which zero-bubble schedules run
 * much later. Received buffers go once none of their tensors is needed.
 */
static void trim_after_backward_input(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int l = ch->l0; l < ch->l1; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        int out = gl->out;
        if (!ch->w_needs[out] && s->own[out])
            bg_rt_slot_drop_value_(rt, s, out);
        if (!gl->spec.kind->backward_weight) {
            bg_rt_slot_drop_saved_(rt, lci, s, l);
            if (s->gown[out])
                bg_rt_slot_drop_grad_(rt, s, out);
        }
    }
    for (int l = ch->l0; l < ch->l1; l++) { /* data read by this chunk */
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        for (int k = 0; k < gl->spec.n_in; k++) {
            int t = gl->in[k];
            if (bg_graph_tensor(rt->g, t)->producer < 0 && !ch->w_needs[t] && s->own[t])
                bg_rt_slot_drop_value_(rt, s, t);
        }
    }
    for (int i = 0; i < ch->n_in; i++) {
        const bg_net_edge_t *e = &rt->net->edges[ch->in_edge[i]];
        bool needed = false;
        for (int k = 0; k < e->n; k++)
            needed |= ch->w_needs[e->tensors[k]] != 0;
        if (needed || !s->act_recv[i])
            continue;
        for (int k = 0; k < e->n; k++)
            s->val[e->tensors[k]] = NULL;
        bg_rt_dfree_(rt, s->act_recv[i]);
        s->act_recv[i] = NULL;
    }
}

bg_status_t bg_rt_backward_input_(bg_rt_t *rt, int mb, int lci)
{
    rt_slot_t *s;
    bg_status_t st = bg_rt_slot_open_(rt, mb, lci, &s);
    if (st != BG_OK)
        return st;
    rt_chunk_t *ch = &rt->lc[lci];
    if (!s->materialized) {
        /* Recompute: chunk inputs are still here; rebuild the rest. */
        if ((st = bind_received(rt, lci, s)) != BG_OK)
            return st;
        if ((st = feed_inputs(rt, lci, s)) != BG_OK)
            return st;
        if ((st = run_layers_forward(rt, lci, s)) != BG_OK)
            return st;
    }
    if ((st = fold_received(rt, lci, s)) != BG_OK)
        return st;
    for (int l = ch->l1 - 1; l >= ch->l0; l--)
        if ((st = run_layer_backward_input(rt, lci, s, l)) != BG_OK)
            return st;
    trim_after_backward_input(rt, lci, s);
    /* Local edges: hand the gradient message to the producing chunk. */
    for (int i = 0; i < ch->n_in; i++) {
        const bg_net_edge_t *e = &rt->net->edges[ch->in_edge[i]];
        int pl = rt_local_of(rt, e->src);
        if (pl < 0 || !s->grad_send[i])
            continue;
        rt_slot_t *p;
        if ((st = bg_rt_slot_open_(rt, mb, pl, &p)) != BG_OK)
            return st;
        int j = rt_edge_out(&rt->lc[pl], ch->in_edge[i]);
        bg_rt_dfree_(rt, p->grad_recv[j]);
        p->grad_recv[j] = s->grad_send[i];
        s->grad_send[i] = NULL;
    }
    return BG_OK;
}

bg_status_t bg_rt_backward_weight_(bg_rt_t *rt, int mb, int lci)
{
    rt_chunk_t *ch = &rt->lc[lci];
    if (mb < 0 || mb >= rt->max_mb)
        return bg_errorf(BG_ERR_INTERNAL, "micro-batch %d out of range", mb);
    rt_slot_t *s = rt_slot_at(rt, mb, lci);
    if (!s->live || !s->materialized)
        return bg_errorf(BG_ERR_INTERNAL, "W(mb=%d, c=%d) before its B", mb, ch->c);
    bg_status_t st = BG_OK;
    for (int l = ch->l1 - 1; l >= ch->l0 && st == BG_OK; l--) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        if (!gl->spec.kind->backward_weight)
            continue;
        bg_tensor_t tin[BG_MAX_INPUTS], tout, tpar[BG_MAX_PARAMS], tsav, tws, tdout,
            tg[BG_MAX_PARAMS];
        bg_layer_call_t call;
        layer_call_init(rt, l, s, lci, tin, &tout, tpar, &tsav, &tws, &call);
        if ((st = ensure_dout(rt, s, l)) != BG_OK)
            break;
        tdout = tview(rt, gl->out, s->gacc[gl->out]);
        if (gl->spec.kind->out_f32)
            tdout.dtype = BG_F32;
        call.dout = &tdout;
        for (int j = 0; j < gl->n_params; j++) {
            bg_shape_t ps = gl->slot[j].shape;
            ps.dtype = BG_F32;
            tg[j] = bg_tensor_from_shape(rt->uacc_dev[l * BG_MAX_PARAMS + j], rt->dev, &ps);
            call.grads[j] = &tg[j];
        }
        bg_nvtx_push_layer(gl->spec.name);
        st = bg_layer_backward_weight(&call);
        bg_nvtx_pop();
    }
    if (st == BG_OK)
        bg_rt_slot_release_(rt, lci, s, true);
    return st;
}
