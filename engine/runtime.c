/*
 * engine/runtime.c -- the executor: runs one rank's schedule list over its
 * chunks, with parameters, gradient accumulators and micro-batch slots.
 *
 * Layout invariance is kept here, in three rules:
 *  1. every layer call sees the same shapes and inputs whatever the split;
 *  2. a tensor's gradient is one left fold over its uses in descending
 *     (layer, slot) order; stages forward either their folded prefix (the
 *     latest using chunk) or their single contributions (bg_net_edge_t), so
 *     the producer continues exactly the fold one stage would have done;
 *  3. each (layer, slot) using a parameter has its own accumulator, W adds
 *     into it in micro-batch order, and the parameter's gradient is the fold
 *     of its users in ascending layer order, computed identically by every
 *     holder of a tied weight.
 * Must not parse, print or decide policy (what to train, when to evaluate).
 */
#include "engine/runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "engine/nvtx.h"
#include "engine/tag.h"

#define RT_LOOKAHEAD 8

typedef struct rt_slot {
    bool live, materialized;
    int mb;
    void **val;         /* [n_tensors] device values present in this chunk */
    unsigned char *own; /* [n_tensors] val[t] allocated by this slot */
    void **saved;       /* [chunk layers] */
    void **gacc;        /* [n_tensors] gradient accumulators */
    unsigned char *gown;
    void **act_recv; /* [in edges] */
    bg_tp_req_t **act_req;
    void **act_send;  /* [out edges] packed at F */
    void **grad_recv; /* [out edges] */
    bg_tp_req_t **grad_req;
    void **grad_send; /* [in edges] built during B */
} rt_slot_t;

typedef struct rt_chunk {
    int c; /* global chunk id */
    int l0, l1;
    int n_in, n_out; /* edges (net indices) ending / starting here */
    int *in_edge, *out_edge;
    float *grad_dev;  /* this chunk's accumulators, contiguous (allreduce bucket) */
    float *grad_host; /* host mirror (alias on the CPU) */
    size_t grad_len;
    bg_tp_coll_t *ar;       /* allreduce in flight */
    unsigned char *w_needs; /* [n_tensors]: some layer's W here reads this value */
} rt_chunk_t;

typedef struct rt_param {
    int p; /* graph param id */
    int64_t n;
    bool owned;
    float *master, *state[2]; /* host */
    void *dev;                /* compute copy (alias of master on a CPU f32 run) */
    float *grad;              /* host: the fold of several users' accumulators */
    const float *gview;       /* the step's gradient: grad, or the only user's accumulator */
    int n_remote;             /* pipeline ranks holding other users */
    int remote_rank[8];
} rt_param_t;

typedef struct rt_pending {
    bg_tp_req_t *req;
    void *buf;
} rt_pending_t;

/* A device buffer of the runtime's cache: freed buffers are kept by size
 * and reused, so steady-state steps never call cudaMalloc/cudaFree (the
 * latter synchronises the whole device). `freed` marks, on the compute
 * stream, the point after the buffer's last use. */
typedef struct rt_buf {
    void *p;
    size_t bytes;
    bg_event_t *freed;
    bool in_use;
} rt_buf_t;

/* A transfer or allreduce waiting for the compute that produces its data:
 * it is handed to the transport once `ready` has passed, with no host sync. */
typedef struct rt_deferred {
    bg_event_t *ready;
    bool allreduce;
    int lci; /* allreduce: local chunk */
    int peer;
    uint64_t tag;
    void *buf;
    size_t bytes;
} rt_deferred_t;

struct bg_rt {
    bg_rt_conf_t conf;
    const bg_net_t *net;
    const bg_graph_t *g;
    bg_device_t dev;
    bg_tp_mem_t mem;
    int nlc; /* local chunks */
    rt_chunk_t *lc;
    int *chunk_local; /* global chunk -> local index or -1 */
    int nparam;
    rt_param_t *par;
    int *param_local; /* graph param -> local index or -1 */
    float **uacc_dev; /* [layer * BG_MAX_PARAMS + slot] accumulator (device), local layers */
    float **uacc_host;
    int max_mb;
    rt_slot_t *slots; /* [max_mb * nlc] */
    void *workspace;
    size_t workspace_bytes;
    float *dloss; /* device scalar: d(objective)/d(loss of one micro-batch) */
    rt_pending_t *pend;
    int npend, cappend;
    bg_tp_group_t *dp_group, *pp_group;
    bg_rt_event_t *ev;
    int nev, capev;
    bg_event_t **evmark; /* [2 * capmark]: compute-stream events around each compute action */
    int capmark, nmark;
    int *ev_mark;         /* [capev]: event i's mark pair, or -1 (host-timed) */
    bg_event_t *evorigin; /* recorded at the start of the step */
    bg_stream_t *compute; /* every layer call, packing copy and accumulation */
    rt_buf_t *bufs;
    int nbufs, capbufs;
    rt_deferred_t *defer;
    int ndefer, capdefer;
    float *loss_dev; /* [max_mb] losses of the step's micro-batches (device) */
    unsigned char *loss_have;
    bg_rt_feed_fn feed;
    void *feed_ctx;
    bg_rt_stats_t *stats;
    bool eval;
    double t_origin;
};

/* ---------------------------------------------------------------- helpers */

static bg_status_t rt_err(const bg_rt_t *rt, bg_status_t st)
{
    return bg_error_prefix(
        st, "rank %d (stage %d, dp %d): ", rt->conf.dp * rt->conf.stages + rt->conf.stage,
        rt->conf.stage, rt->conf.dp);
}

static size_t tensor_bytes(const bg_rt_t *rt, int t)
{
    const bg_shape_t *s = &bg_graph_tensor(rt->g, t)->shape;
    return (size_t)bg_shape_numel(s) * (size_t)bg_spec_dtype_bytes(s->dtype, rt->conf.dtype);
}

static size_t tensor_elems(const bg_rt_t *rt, int t)
{
    return (size_t)bg_shape_numel(&bg_graph_tensor(rt->g, t)->shape);
}

/* Compute-dtype element size of gradient buffers for activations. */
static size_t act_esize(const bg_rt_t *rt)
{
    return bg_dtype_size(rt->conf.dtype);
}

static bg_tensor_t tview(const bg_rt_t *rt, int t, void *data)
{
    bg_shape_t s = bg_graph_tensor(rt->g, t)->shape;
    if (s.dtype == BG_F32)
        s.dtype = rt->conf.dtype;
    return bg_tensor_from_shape(data, rt->dev, &s);
}

/*
 * Device memory from the runtime's cache. A buffer the transport will write
 * (`for_transport`) must not still be read by queued compute: only cached
 * buffers whose `freed` event has passed qualify. Compute-only buffers are
 * reused at once: the compute stream orders their old and new uses.
 */
static bg_status_t dalloc_for(bg_rt_t *rt, size_t bytes, bool for_transport, void **out)
{
    if (!bytes)
        bytes = 1;
    for (int i = 0; i < rt->nbufs; i++) {
        rt_buf_t *b = &rt->bufs[i];
        if (b->in_use || b->bytes != bytes)
            continue;
        if (for_transport && b->freed) {
            int done = 0;
            bg_status_t st = bg_event_query(rt->conf.be, b->freed, &done);
            if (st != BG_OK)
                return st;
            if (!done)
                continue;
        }
        b->in_use = true;
        *out = b->p;
        return BG_OK;
    }
    if (rt->nbufs == rt->capbufs) {
        int cap = rt->capbufs ? 2 * rt->capbufs : 256;
        rt_buf_t *nb = realloc(rt->bufs, sizeof(*nb) * (size_t)cap);
        if (!nb)
            return bg_errorf(BG_ERR_NOMEM, "out of memory tracking device buffers");
        rt->bufs = nb;
        rt->capbufs = cap;
    }
    void *p = NULL;
    bg_status_t st = bg_backend_alloc(rt->conf.be, bytes, &p);
    if (st != BG_OK)
        return st;
    rt->bufs[rt->nbufs++] = (rt_buf_t){p, bytes, NULL, true};
    *out = p;
    return BG_OK;
}

static bg_status_t dalloc(bg_rt_t *rt, size_t bytes, void **out)
{
    return dalloc_for(rt, bytes, false, out);
}

/* Back to the cache. Cannot fail: if the event cannot be recorded the
 * buffer is simply never reused. */
static void dfree(bg_rt_t *rt, void *p)
{
    if (!p)
        return;
    for (int i = rt->nbufs - 1; i >= 0; i--) {
        rt_buf_t *b = &rt->bufs[i];
        if (b->p != p)
            continue;
        if (!b->freed && bg_event_create(rt->conf.be, &b->freed) != BG_OK)
            return;
        if (bg_event_record(rt->conf.be, b->freed, rt->compute) != BG_OK)
            return;
        b->in_use = false;
        return;
    }
}

static void cache_release(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nbufs; i++) {
        bg_event_destroy(rt->conf.be, rt->bufs[i].freed);
        bg_backend_free(rt->conf.be, rt->bufs[i].p);
    }
    free(rt->bufs);
    rt->bufs = NULL;
    rt->nbufs = rt->capbufs = 0;
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

static rt_slot_t *slot_at(bg_rt_t *rt, int mb, int lci)
{
    return &rt->slots[(size_t)mb * (size_t)rt->nlc + (size_t)lci];
}

static int local_of(const bg_rt_t *rt, int chunk)
{
    return chunk >= 0 && chunk < rt->net->n_chunks ? rt->chunk_local[chunk] : -1;
}

static int rank_of_chunk(const bg_rt_t *rt, int chunk)
{
    return rt->conf.dp * rt->conf.stages + bg_sched_chunk_rank(rt->conf.sched, chunk);
}

static int edge_index_in(const rt_chunk_t *ch, int e)
{
    for (int i = 0; i < ch->n_in; i++)
        if (ch->in_edge[i] == e)
            return i;
    return -1;
}

static int edge_index_out(const rt_chunk_t *ch, int e)
{
    for (int i = 0; i < ch->n_out; i++)
        if (ch->out_edge[i] == e)
            return i;
    return -1;
}

/* ---------------------------------------------------------------- slots */

static bg_status_t slot_open(bg_rt_t *rt, int mb, int lci, rt_slot_t **out)
{
    if (mb < 0 || mb >= rt->max_mb)
        return bg_errorf(BG_ERR_INTERNAL, "micro-batch %d out of range", mb);
    rt_slot_t *s = slot_at(rt, mb, lci);
    if (!s->live) {
        s->live = true;
        s->materialized = false;
        s->mb = mb;
    }
    *out = s;
    return BG_OK;
}

static void slot_drop_value(bg_rt_t *rt, rt_slot_t *s, int t)
{
    if (s->own[t])
        dfree(rt, s->val[t]);
    s->val[t] = NULL;
    s->own[t] = 0;
}

static void slot_drop_grad(bg_rt_t *rt, rt_slot_t *s, int t)
{
    if (s->gown[t])
        dfree(rt, s->gacc[t]);
    s->gacc[t] = NULL;
    s->gown[t] = 0;
}

static void slot_release(bg_rt_t *rt, int lci, rt_slot_t *s, bool keep_sends);

static void slot_close(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    slot_release(rt, lci, s, false);
}

/* keep_sends: free a micro-batch's activations while its packed messages
 * still wait for their SEND actions (after W; after F in an evaluation). */
static void slot_release(bg_rt_t *rt, int lci, rt_slot_t *s, bool keep_sends)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int t = 0; t < rt->net->n_tensors; t++) {
        slot_drop_value(rt, s, t);
        slot_drop_grad(rt, s, t);
    }
    for (int l = 0; l < ch->l1 - ch->l0; l++) {
        dfree(rt, s->saved[l]);
        s->saved[l] = NULL;
    }
    for (int i = 0; i < ch->n_in; i++) {
        if (s->act_req[i])
            bg_tp_cancel(rt->conf.tp, s->act_req[i]);
        s->act_req[i] = NULL;
        dfree(rt, s->act_recv[i]);
        s->act_recv[i] = NULL;
        if (!keep_sends) {
            dfree(rt, s->grad_send[i]);
            s->grad_send[i] = NULL;
        }
    }
    for (int i = 0; i < ch->n_out; i++) {
        if (s->grad_req[i])
            bg_tp_cancel(rt->conf.tp, s->grad_req[i]);
        s->grad_req[i] = NULL;
        if (!keep_sends) {
            dfree(rt, s->act_send[i]);
            s->act_send[i] = NULL;
        }
        dfree(rt, s->grad_recv[i]);
        s->grad_recv[i] = NULL;
    }
    s->materialized = false;
    if (keep_sends)
        return; /* packed messages wait for their SEND actions */
    s->live = false;
    s->materialized = false;
}

/* ---------------------------------------------------------------- events */

static void rt_event(bg_rt_t *rt, const bg_action_t *a, double t0, double t1, int mark)
{
    if (rt->nev == rt->capev) {
        int cap = rt->capev ? 2 * rt->capev : 256;
        bg_rt_event_t *e = realloc(rt->ev, sizeof(*e) * (size_t)cap);
        if (e)
            rt->ev = e;
        int *m = realloc(rt->ev_mark, sizeof(int) * (size_t)cap);
        if (m)
            rt->ev_mark = m;
        if (!e || !m)
            return; /* tracing is best effort: losing events never fails a step */
        rt->capev = cap;
    }
    rt->ev_mark[rt->nev] = mark;
    rt->ev[rt->nev++] =
        (bg_rt_event_t){a->kind, a->mb, a->chunk, t0 - rt->t_origin, t1 - rt->t_origin};
}

/* A free pair of compute-stream events for one action; -1 if none (then the
 * action is timed on the host). Events are made once and reused by steps. */
static int mark_begin(bg_rt_t *rt)
{
    if (rt->nmark == rt->capmark) {
        int cap = rt->capmark ? 2 * rt->capmark : 128;
        bg_event_t **m = realloc(rt->evmark, sizeof(*m) * 2 * (size_t)cap);
        if (!m)
            return -1;
        for (int i = 2 * rt->capmark; i < 2 * cap; i++)
            m[i] = NULL;
        rt->evmark = m;
        rt->capmark = cap;
    }
    int j = rt->nmark;
    for (int k = 0; k < 2; k++)
        if (!rt->evmark[2 * j + k] && bg_event_create(rt->conf.be, &rt->evmark[2 * j + k]) != BG_OK)
            return -1;
    if (bg_event_record(rt->conf.be, rt->evmark[2 * j], rt->compute) != BG_OK)
        return -1;
    rt->nmark++;
    return j;
}

/*
 * Device time of the step's compute actions: once the stream has drained,
 * each action's events give when it really ran (host clocks only see when
 * work was queued). On the CPU the events are host clocks and nothing moves.
 */
static bg_status_t resolve_marks(bg_rt_t *rt)
{
    if (!rt->nmark)
        return BG_OK;
    bg_status_t st = bg_stream_synchronize(rt->conf.be, rt->compute);
    rt->stats->busy_s = 0;
    for (int i = 0; st == BG_OK && i < rt->nev; i++) {
        int j = rt->ev_mark[i];
        if (j < 0)
            continue;
        float a = 0, b = 0;
        st = bg_event_elapsed_ms(rt->conf.be, rt->evorigin, rt->evmark[2 * j], &a);
        if (st == BG_OK)
            st = bg_event_elapsed_ms(rt->conf.be, rt->evorigin, rt->evmark[2 * j + 1], &b);
        rt->ev[i].t0 = a * 1e-3;
        rt->ev[i].t1 = b * 1e-3;
        rt->stats->busy_s += (b - a) * 1e-3;
    }
    rt->nmark = 0;
    return st;
}

const bg_rt_event_t *bg_rt_events(const bg_rt_t *rt, int *n)
{
    *n = rt->nev;
    return rt->ev;
}

double bg_rt_time_origin(const bg_rt_t *rt)
{
    return rt->t_origin;
}

/* ---------------------------------------------------------------- sends */

static bg_status_t pend_add(bg_rt_t *rt, bg_tp_req_t *req, void *buf)
{
    if (rt->npend == rt->cappend) {
        int cap = rt->cappend ? 2 * rt->cappend : 64;
        rt_pending_t *p = realloc(rt->pend, sizeof(*p) * (size_t)cap);
        if (!p)
            return bg_errorf(BG_ERR_NOMEM, "out of memory tracking sends");
        rt->pend = p;
        rt->cappend = cap;
    }
    rt->pend[rt->npend++] = (rt_pending_t){req, buf};
    return BG_OK;
}

/* Complete finished sends and free their buffers; `wait` drains them all. */
static bg_status_t pend_progress(bg_rt_t *rt, bool wait)
{
    bg_status_t first = BG_OK;
    int k = 0;
    for (int i = 0; i < rt->npend; i++) {
        rt_pending_t *p = &rt->pend[i];
        bg_status_t st;
        int done = 0;
        if (wait) {
            st = bg_tp_wait(rt->conf.tp, p->req, rt->conf.timeout_s);
            done = st != BG_ERR_TIMEOUT;
            if (!done)
                bg_tp_cancel(rt->conf.tp, p->req), done = 1;
        } else {
            st = bg_tp_test(rt->conf.tp, p->req, &done);
        }
        if (done) {
            dfree(rt, p->buf);
            if (st != BG_OK && first == BG_OK)
                first = st;
        } else {
            rt->pend[k++] = *p;
        }
    }
    rt->npend = k;
    return first;
}

/* Queue a transfer or allreduce behind the compute queued so far. */
static bg_status_t defer_add(bg_rt_t *rt, rt_deferred_t d)
{
    if (rt->ndefer == rt->capdefer) {
        int cap = rt->capdefer ? 2 * rt->capdefer : 64;
        rt_deferred_t *n = realloc(rt->defer, sizeof(*n) * (size_t)cap);
        if (!n)
            return bg_errorf(BG_ERR_NOMEM, "out of memory queueing transfers");
        rt->defer = n;
        rt->capdefer = cap;
    }
    bg_status_t st = bg_event_create(rt->conf.be, &d.ready);
    if (st == BG_OK)
        st = bg_event_record(rt->conf.be, d.ready, rt->compute);
    if (st != BG_OK) {
        bg_event_destroy(rt->conf.be, d.ready);
        return st;
    }
    rt->defer[rt->ndefer++] = d;
    return BG_OK;
}

/*
 * Hand queued transfers to the transport once the compute producing their
 * data has finished: event queries, no host synchronisation (`wait` blocks,
 * for the end of a step). Strictly in order: data-parallel replicas must
 * start their allreduces in the same order.
 */
static bg_status_t defer_progress(bg_rt_t *rt, bool wait)
{
    int k = 0;
    bg_status_t st = BG_OK;
    for (; k < rt->ndefer && st == BG_OK; k++) {
        rt_deferred_t *d = &rt->defer[k];
        int done = 1;
        st = wait ? bg_event_synchronize(rt->conf.be, d->ready)
                  : bg_event_query(rt->conf.be, d->ready, &done);
        if (st != BG_OK || !done)
            break;
        if (d->allreduce) {
            rt_chunk_t *ch = &rt->lc[d->lci];
            st = bg_tp_allreduce_start(rt->dp_group, ch->grad_dev, ch->grad_len, BG_TP_F32,
                                       BG_TP_SUM, rt->mem, &ch->ar);
        } else {
            bg_tp_req_t *req;
            st = bg_tp_send(rt->conf.tp, d->peer, d->tag, d->buf, d->bytes, rt->mem, &req);
            if (st == BG_OK)
                st = pend_add(rt, req, d->buf);
            else
                dfree(rt, d->buf);
        }
        bg_event_destroy(rt->conf.be, d->ready);
    }
    if (k)
        memmove(rt->defer, rt->defer + k, sizeof(*rt->defer) * (size_t)(rt->ndefer - k));
    rt->ndefer -= k;
    return st;
}

/* ---------------------------------------------------------------- forward */

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
            bg_status_t st = rt->feed(rt->feed_ctx, s->mb, gt->input, host, host_bytes);
            if (st == BG_OK)
                st = dalloc(rt, tensor_bytes(rt, t), &s->val[t]);
            if (st == BG_OK) {
                s->own[t] = 1;
                if (gt->shape.dtype == BG_F32 && rt->conf.dtype == BG_BF16) {
                    /* Inputs arrive as f32; the device computes in bf16. */
                    int64_t n = bg_shape_numel(&gt->shape);
                    uint16_t *h16 = malloc((size_t)n * 2 + 2);
                    if (!h16)
                        st = bg_errorf(BG_ERR_NOMEM, "out of memory converting %s", gt->name);
                    for (int64_t i = 0; h16 && i < n; i++)
                        h16[i] = bg_f32_to_bf16(((float *)host)[i]);
                    if (h16)
                        st = bg_backend_copy(rt->conf.be, s->val[t], h16, (size_t)n * 2,
                                             BG_COPY_H2D, rt->compute);
                    free(h16);
                } else {
                    /* Pageable sources are staged before the call returns: freeing
                     * `host` below is safe, and the stream orders the consumers. */
                    st = bg_backend_copy(rt->conf.be, s->val[t], host, host_bytes, BG_COPY_H2D,
                                         rt->compute);
                }
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
            off += tensor_bytes(rt, t);
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
        tparam[j] = bg_tensor_from_shape(p->dev, rt->dev, &ps);
        call->params[j] = &tparam[j];
    }
    int64_t sb = gl->spec.kind->cost ? 0 : 0;
    bg_layer_cost_t cost;
    bg_layer_cost(&gl->spec, rt->conf.dtype, &cost);
    sb = cost.saved_bytes;
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
    bg_layer_cost(&bg_graph_layer(rt->g, l)->spec, rt->conf.dtype, &cost);
    return (size_t)((cost.saved_bytes + 3) / 4 * 4);
}

static bg_status_t run_layers_forward(bg_rt_t *rt, int lci, rt_slot_t *s)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int l = ch->l0; l < ch->l1; l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        bg_status_t st;
        size_t ob =
            gl->spec.kind->out_f32 ? tensor_elems(rt, gl->out) * 4 : tensor_bytes(rt, gl->out);
        if (!s->val[gl->out]) {
            if ((st = dalloc(rt, ob, &s->val[gl->out])) != BG_OK)
                return st;
            s->own[gl->out] = 1;
        }
        size_t sb = saved_bytes_of(rt, l);
        if (sb && !s->saved[l - ch->l0]) {
            if ((st = dalloc(rt, sb, &s->saved[l - ch->l0])) != BG_OK)
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
            bytes += tensor_bytes(rt, e->tensors[k]);
        void *buf = NULL;
        bg_status_t st = dalloc(rt, bytes, &buf);
        if (st != BG_OK)
            return st;
        size_t off = 0;
        for (int k = 0; k < e->n && st == BG_OK; k++) {
            int t = e->tensors[k];
            st = dcopy(rt, (char *)buf + off, s->val[t], tensor_bytes(rt, t));
            off += tensor_bytes(rt, t);
        }
        if (st != BG_OK) {
            dfree(rt, buf);
            return st;
        }
        int dl = local_of(rt, e->dst);
        if (dl >= 0) {
            rt_slot_t *d;
            if ((st = slot_open(rt, s->mb, dl, &d)) != BG_OK)
                return st;
            int j = edge_index_in(&rt->lc[dl], ch->out_edge[i]);
            dfree(rt, d->act_recv[j]);
            d->act_recv[j] = buf;
        } else {
            dfree(rt, s->act_send[i]);
            s->act_send[i] = buf;
        }
    }
    return BG_OK;
}

static bg_status_t do_forward(bg_rt_t *rt, int mb, int lci)
{
    rt_slot_t *s;
    bg_status_t st = slot_open(rt, mb, lci, &s);
    if (st == BG_OK)
        st = bind_received(rt, lci, s);
    if (st == BG_OK)
        st = feed_inputs(rt, lci, s);
    if (st == BG_OK)
        st = run_layers_forward(rt, lci, s);
    if (st == BG_OK)
        st = pack_outgoing(rt, lci, s);
    if (st != BG_OK)
        return st;
    rt_chunk_t *ch = &rt->lc[lci];
    int ll = rt->net->layer_chunk[bg_graph_loss_layer(rt->g)];
    if (ll == ch->c) {
        /* Kept on the device until the step ends: one host sync per step, not
         * one per micro-batch. */
        int lt = bg_graph_loss_tensor(rt->g);
        st = dcopy(rt, rt->loss_dev + s->mb, s->val[lt], 4);
        if (st != BG_OK)
            return st;
        rt->loss_have[s->mb] = 1;
        if (rt->eval) {
            /* Argmax accuracy of the loss layer's logits, for classifiers. */
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, bg_graph_loss_layer(rt->g));
            int lg = gl->in[0], tg = gl->in[1];
            const bg_shape_t *ls = &bg_graph_tensor(rt->g, lg)->shape;
            int64_t V = ls->d[ls->ndim - 1], rows = bg_shape_numel(ls) / V;
            float *h = malloc((size_t)(rows * V) * 4 + 4);
            int32_t *y = malloc((size_t)rows * 4 + 4);
            if (!h || !y)
                st = bg_errorf(BG_ERR_NOMEM, "out of memory for accuracy");
            if (st == BG_OK && rt->conf.dtype == BG_F32)
                st = bg_backend_copy(rt->conf.be, h, s->val[lg], (size_t)(rows * V) * 4,
                                     BG_COPY_D2H, rt->compute);
            else if (st == BG_OK) {
                uint16_t *h16 = (uint16_t *)h;
                st = bg_backend_copy(rt->conf.be, h16, s->val[lg], (size_t)(rows * V) * 2,
                                     BG_COPY_D2H, rt->compute);
                if (st == BG_OK)
                    st = bg_stream_synchronize(rt->conf.be, rt->compute);
                for (int64_t i = rows * V - 1; st == BG_OK && i >= 0; i--)
                    h[i] = bg_bf16_to_f32(h16[i]);
            }
            if (st == BG_OK)
                st = bg_backend_copy(rt->conf.be, y, s->val[tg], (size_t)rows * 4, BG_COPY_D2H,
                                     rt->compute);
            if (st == BG_OK)
                st = bg_stream_synchronize(rt->conf.be, rt->compute);
            for (int64_t r = 0; st == BG_OK && r < rows; r++) {
                int64_t best = 0;
                for (int64_t v = 1; v < V; v++)
                    if (h[r * V + v] > h[r * V + best])
                        best = v;
                rt->stats->correct += best == y[r];
                rt->stats->rows++;
            }
            free(h);
            free(y);
            if (st != BG_OK)
                return st;
        }
    }
    if (rt->conf.recompute && !rt->eval) {
        /* Keep only what arrived or came from data; redo the rest before B. */
        for (int l = ch->l0; l < ch->l1; l++) {
            slot_drop_value(rt, s, bg_graph_layer(rt->g, l)->out);
            dfree(rt, s->saved[l - ch->l0]);
            s->saved[l - ch->l0] = NULL;
        }
        s->materialized = false;
    }
    if (rt->eval)
        slot_release(rt, lci, s, true);
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
            int i = edge_index_out(ch, e);
            const bg_net_edge_t *ed = &rt->net->edges[e];
            size_t off = 0;
            for (int k = 0; k < ed->n; k++) {
                size_t sz = tensor_elems(rt, ed->tensors[k]) * act_esize(rt);
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
                            acc_add(rt, s->gacc[t], src, tensor_elems(rt, t), rt->conf.dtype);
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
    size_t nb = tensor_elems(rt, t) * act_esize(rt);
    memset(d, 0, sizeof(*d));
    if (!rt->net->tensors[t].needs_grad)
        return BG_OK;
    if (rt->net->tensors[t].chunk == ch->c) {
        if (!s->gacc[t]) {
            bg_status_t st = dalloc(rt, nb, &s->gacc[t]);
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
    int i = edge_index_in(ch, e);
    const bg_net_edge_t *ed = &rt->net->edges[e];
    if (!s->grad_send[i]) {
        bg_status_t st = dalloc(rt, ed->grad_elems * act_esize(rt), &s->grad_send[i]);
        if (st != BG_OK)
            return st;
    }
    size_t off = 0;
    int k = 0;
    for (; k < ed->n && ed->tensors[k] != t; k++)
        off += tensor_elems(rt, ed->tensors[k]) * act_esize(rt) * (size_t)ed->n_contrib[k];
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
    size_t nb =
        gl->spec.kind->out_f32 ? tensor_elems(rt, t) * 4 : tensor_elems(rt, t) * act_esize(rt);
    bg_status_t st = dalloc(rt, nb, &s->gacc[t]);
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
            if ((st = dalloc(rt, tensor_elems(rt, gl->in[k]) * act_esize(rt), &tmp[k])) != BG_OK)
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
            st =
                acc_add(rt, dest[k].fold_into, tmp[k], tensor_elems(rt, gl->in[k]), rt->conf.dtype);
out:
    for (int k = 0; k < BG_MAX_INPUTS; k++)
        dfree(rt, tmp[k]);
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
            slot_drop_value(rt, s, out);
        if (!gl->spec.kind->backward_weight) {
            dfree(rt, s->saved[l - ch->l0]);
            s->saved[l - ch->l0] = NULL;
            if (s->gown[out])
                slot_drop_grad(rt, s, out);
        }
    }
    for (int l = ch->l0; l < ch->l1; l++) { /* data read by this chunk */
        const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
        for (int k = 0; k < gl->spec.n_in; k++) {
            int t = gl->in[k];
            if (bg_graph_tensor(rt->g, t)->producer < 0 && !ch->w_needs[t] && s->own[t])
                slot_drop_value(rt, s, t);
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
        dfree(rt, s->act_recv[i]);
        s->act_recv[i] = NULL;
    }
}

static bg_status_t do_backward_input(bg_rt_t *rt, int mb, int lci)
{
    rt_slot_t *s;
    bg_status_t st = slot_open(rt, mb, lci, &s);
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
        int pl = local_of(rt, e->src);
        if (pl < 0 || !s->grad_send[i])
            continue;
        rt_slot_t *p;
        if ((st = slot_open(rt, mb, pl, &p)) != BG_OK)
            return st;
        int j = edge_index_out(&rt->lc[pl], ch->in_edge[i]);
        dfree(rt, p->grad_recv[j]);
        p->grad_recv[j] = s->grad_send[i];
        s->grad_send[i] = NULL;
    }
    return BG_OK;
}

static bg_status_t do_backward_weight(bg_rt_t *rt, int mb, int lci)
{
    rt_slot_t *s = slot_at(rt, mb, lci);
    rt_chunk_t *ch = &rt->lc[lci];
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
        slot_release(rt, lci, s, true);
    return st;
}

/* ---------------------------------------------------------------- transfers */

static bg_status_t post_recv(bg_rt_t *rt, const bg_action_t *a)
{
    int lci = local_of(rt, a->chunk);
    if (lci < 0)
        return bg_errorf(BG_ERR_INTERNAL, "receive for chunk %d not on this rank", a->chunk);
    rt_slot_t *s;
    bg_status_t st = slot_open(rt, a->mb, lci, &s);
    if (st != BG_OK)
        return st;
    rt_chunk_t *ch = &rt->lc[lci];
    bool act = a->kind == BG_ACT_RECV_ACT;
    /* Activations: edge src -> dst(here). Gradients: from consumer src to producer dst(here). */
    int e =
        act ? bg_net_edge_find(rt->net, a->src, a->dst) : bg_net_edge_find(rt->net, a->dst, a->src);
    if (e < 0)
        return BG_OK; /* nothing crosses this adjacent edge: an empty message */
    int i = act ? edge_index_in(ch, e) : edge_index_out(ch, e);
    void **buf = act ? &s->act_recv[i] : &s->grad_recv[i];
    bg_tp_req_t **req = act ? &s->act_req[i] : &s->grad_req[i];
    if (*buf)
        return BG_OK; /* already posted */
    const bg_net_edge_t *ed = &rt->net->edges[e];
    size_t bytes = act ? 0 : ed->grad_elems * act_esize(rt);
    if (act)
        for (int k = 0; k < ed->n; k++)
            bytes += tensor_bytes(rt, ed->tensors[k]);
    if ((st = dalloc_for(rt, bytes, true, buf)) != BG_OK)
        return st; /* the transport writes it */
    uint64_t tag;
    if ((st = bg_tag_edge(act ? BG_TAG_ACT : BG_TAG_GRAD, a->mb, a->src, a->dst, &tag)) != BG_OK)
        return st;
    return bg_tp_recv(rt->conf.tp, rt->conf.dp * rt->conf.stages + a->peer, tag, *buf, bytes,
                      rt->mem, req);
}

static bg_status_t wait_recv(bg_rt_t *rt, const bg_action_t *a)
{
    bg_status_t st = post_recv(rt, a);
    if (st != BG_OK)
        return st;
    rt_slot_t *s = slot_at(rt, a->mb, local_of(rt, a->chunk));
    rt_chunk_t *ch = &rt->lc[local_of(rt, a->chunk)];
    bool act = a->kind == BG_ACT_RECV_ACT;
    int e =
        act ? bg_net_edge_find(rt->net, a->src, a->dst) : bg_net_edge_find(rt->net, a->dst, a->src);
    if (e < 0) {
        /* Keep the pairing with the peer's empty send. */
        char dummy;
        bg_tp_req_t *r;
        uint64_t tag;
        if ((st = bg_tag_edge(act ? BG_TAG_ACT : BG_TAG_GRAD, a->mb, a->src, a->dst, &tag)) != BG_OK)
            return st;
        st = bg_tp_recv(rt->conf.tp, rt->conf.dp * rt->conf.stages + a->peer, tag, &dummy, 0,
                        BG_TP_MEM_HOST, &r);
        return st == BG_OK ? bg_tp_wait(rt->conf.tp, r, rt->conf.timeout_s) : st;
    }
    int i = act ? edge_index_in(ch, e) : edge_index_out(ch, e);
    bg_tp_req_t **req = act ? &s->act_req[i] : &s->grad_req[i];
    if (!*req)
        return BG_OK;
    st = bg_tp_wait(rt->conf.tp, *req, rt->conf.timeout_s);
    *req = NULL;
    return st;
}

static bg_status_t do_send(bg_rt_t *rt, const bg_action_t *a)
{
    int lci = local_of(rt, a->chunk);
    if (lci < 0)
        return bg_errorf(BG_ERR_INTERNAL, "send from chunk %d not on this rank", a->chunk);
    rt_slot_t *s = slot_at(rt, a->mb, lci);
    rt_chunk_t *ch = &rt->lc[lci];
    bool act = a->kind == BG_ACT_SEND_ACT;
    int e =
        act ? bg_net_edge_find(rt->net, a->src, a->dst) : bg_net_edge_find(rt->net, a->dst, a->src);
    int peer = rt->conf.dp * rt->conf.stages + a->peer;
    uint64_t tag;
    bg_status_t tst = bg_tag_edge(act ? BG_TAG_ACT : BG_TAG_GRAD, a->mb, a->src, a->dst, &tag);
    if (tst != BG_OK)
        return tst;
    bg_tp_req_t *req;
    if (e < 0) {
        static char empty;
        bg_status_t st = bg_tp_send(rt->conf.tp, peer, tag, &empty, 0, BG_TP_MEM_HOST, &req);
        return st == BG_OK ? pend_add(rt, req, NULL) : st;
    }
    int i = act ? edge_index_out(ch, e) : edge_index_in(ch, e);
    void **buf = act ? &s->act_send[i] : &s->grad_send[i];
    const bg_net_edge_t *ed = &rt->net->edges[e];
    size_t bytes = act ? 0 : ed->grad_elems * act_esize(rt);
    if (act)
        for (int k = 0; k < ed->n; k++)
            bytes += tensor_bytes(rt, ed->tensors[k]);
    if (!*buf && bytes)
        return bg_errorf(BG_ERR_INTERNAL,
                         "%s(mb=%d, %d->%d): nothing to send (compute did not run)",
                         act ? "SEND_ACT" : "SEND_GRAD", a->mb, a->src, a->dst);
    rt_deferred_t d = {NULL, false, lci, peer, tag, *buf, bytes};
    bg_status_t st = defer_add(rt, d);
    if (st == BG_OK)
        *buf = NULL; /* the send (then the pending list) owns it now */
    return st;
}

/* ---------------------------------------------------------------- optimizer */

static bg_status_t grads_to_host(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        if (ch->ar) {
            bg_status_t st = bg_tp_coll_wait(ch->ar, rt->conf.timeout_s);
            ch->ar = NULL;
            if (st != BG_OK)
                return st;
        }
        if (ch->grad_host != ch->grad_dev && ch->grad_len) {
            bg_status_t st = bg_backend_copy(rt->conf.be, ch->grad_host, ch->grad_dev,
                                             ch->grad_len * 4, BG_COPY_D2H, rt->compute);
            if (st == BG_OK)
                st = bg_stream_synchronize(rt->conf.be, rt->compute);
            if (st != BG_OK)
                return st;
        }
    }
    return BG_OK;
}

/* Fold every held parameter's users into its gradient, exchanging
 * accumulators with the other pipeline ranks that hold a tied copy. */
static bg_status_t fold_param_grads(bg_rt_t *rt)
{
    const bg_net_t *n = rt->net;
    bg_status_t st = BG_OK;
    float **remote = calloc((size_t)n->n_layers * BG_MAX_PARAMS + 1, sizeof(float *));
    bg_tp_req_t **reqs = calloc((size_t)rt->nparam * 16 + 1, sizeof(*reqs));
    int nreq = 0;
    if (!remote || !reqs) {
        st = bg_errorf(BG_ERR_NOMEM, "out of memory folding gradients");
        goto out;
    }
    /* Exchange: every local user accumulator of a tied parameter goes to the
     * other holders; their accumulators come here. */
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        rt_param_t *p = &rt->par[i];
        if (!p->n_remote)
            continue;
        const bg_net_param_t *np = &n->params[p->p];
        for (int u = 0; u < np->n_users && st == BG_OK; u++) {
            int l = np->users[u], slot = np->user_slot[u];
            int r = rank_of_chunk(rt, n->layer_chunk[l]);
            uint64_t tag;
            if ((st = bg_tag_param(u, p->p, &tag)) != BG_OK)
                break;
            if (local_of(rt, n->layer_chunk[l]) >= 0) {
                for (int k = 0; k < p->n_remote && st == BG_OK; k++)
                    st = bg_tp_send(rt->conf.tp, p->remote_rank[k], tag,
                                    rt->uacc_host[l * BG_MAX_PARAMS + slot], (size_t)p->n * 4,
                                    BG_TP_MEM_HOST, &reqs[nreq++]);
            } else {
                float *buf = malloc((size_t)p->n * 4);
                if (!buf) {
                    st = bg_errorf(BG_ERR_NOMEM, "out of memory for tied gradients");
                    break;
                }
                remote[l * BG_MAX_PARAMS + slot] = buf;
                st = bg_tp_recv(rt->conf.tp, r, tag, buf, (size_t)p->n * 4, BG_TP_MEM_HOST,
                                &reqs[nreq++]);
            }
        }
    }
    for (int k = 0; k < nreq; k++) {
        if (!reqs[k])
            continue;
        bg_status_t s2 = st == BG_OK ? bg_tp_wait(rt->conf.tp, reqs[k], rt->conf.timeout_s)
                                     : (bg_tp_cancel(rt->conf.tp, reqs[k]), BG_OK);
        if (st == BG_OK)
            st = s2;
    }
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        rt_param_t *p = &rt->par[i];
        const bg_net_param_t *np = &n->params[p->p];
        if (np->n_users == 1) { /* the common case: no copy */
            p->gview = rt->uacc_host[np->users[0] * BG_MAX_PARAMS + np->user_slot[0]];
            continue;
        }
        for (int u = 0; u < np->n_users; u++) {
            int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
            const float *acc = remote[key] ? remote[key] : rt->uacc_host[key];
            if (u == 0)
                memcpy(p->grad, acc, (size_t)p->n * 4);
            else
                for (int64_t e = 0; e < p->n; e++)
                    p->grad[e] += acc[e];
        }
        p->gview = p->grad;
    }
out:
    for (int k = 0; remote && k < n->n_layers * BG_MAX_PARAMS; k++)
        free(remote[k]);
    free(remote);
    free(reqs);
    return st;
}

/* Global gradient norm: each parameter's sum of squares (double, then f32)
 * from its owner, summed over the pipeline in global parameter order. */
static bg_status_t global_norm(bg_rt_t *rt, double *out)
{
    int np = rt->net->n_params;
    float *ss = calloc((size_t)np + 1, sizeof(float));
    if (!ss)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the gradient norm");
    for (int i = 0; i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        if (!p->owned)
            continue;
        double s = 0;
        for (int64_t e = 0; e < p->n; e++)
            s += (double)p->gview[e] * (double)p->gview[e];
        ss[p->p] = (float)s;
    }
    bg_status_t st = BG_OK;
    if (rt->pp_group && rt->conf.stages > 1)
        st = bg_tp_allreduce(rt->pp_group, ss, (size_t)np, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                             rt->conf.timeout_s);
    double tot = 0;
    for (int p = 0; p < np; p++)
        tot += ss[p];
    free(ss);
    if (st == BG_OK)
        *out = sqrt(tot);
    return st;
}

static bg_status_t upload_param(bg_rt_t *rt, rt_param_t *p)
{
    if (p->dev == (void *)p->master)
        return BG_OK;
    if (rt->conf.dtype == BG_F32)
        return bg_backend_copy(rt->conf.be, p->dev, p->master, (size_t)p->n * 4, BG_COPY_H2D,
                               rt->compute);
    uint16_t *h = malloc((size_t)p->n * 2 + 2);
    if (!h)
        return bg_errorf(BG_ERR_NOMEM, "out of memory converting parameters");
    for (int64_t e = 0; e < p->n; e++)
        h[e] = bg_f32_to_bf16(p->master[e]);
    bg_status_t st =
        bg_backend_copy(rt->conf.be, p->dev, h, (size_t)p->n * 2, BG_COPY_H2D, rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    free(h);
    return st;
}

bg_status_t bg_rt_params_upload(bg_rt_t *rt)
{
    for (int i = 0; i < rt->nparam; i++) {
        bg_status_t st = upload_param(rt, &rt->par[i]);
        if (st != BG_OK)
            return rt_err(rt, st);
    }
    return rt_err(rt, bg_stream_synchronize(rt->conf.be, rt->compute));
}

static bg_status_t do_optimizer(bg_rt_t *rt, int64_t step)
{
    bg_status_t st = defer_progress(rt, true);
    if (st == BG_OK)
        st = grads_to_host(rt);
    if (st == BG_OK)
        st = fold_param_grads(rt);
    double norm = 0;
    if (st == BG_OK)
        st = global_norm(rt, &norm);
    if (st != BG_OK)
        return st;
    const bg_optim_conf_t *oc = &rt->conf.optim;
    float lr = bg_optim_lr(oc, step), scale = bg_optim_clip_scale(oc, norm);
    rt->stats->grad_norm = norm;
    rt->stats->lr = lr;
    for (int i = 0; i < rt->nparam && st == BG_OK; i++) {
        rt_param_t *p = &rt->par[i];
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
        bg_optim_update_host(oc, step, lr, scale, gp->desc.shape.ndim >= 2, p->master, p->gview,
                             p->state[0], p->state[1], p->n);
        st = upload_param(rt, p);
    }
    for (int i = 0; i < rt->nlc && st == BG_OK; i++)
        st = bg_backend_memset(rt->conf.be, rt->lc[i].grad_dev, 0, rt->lc[i].grad_len * 4,
                               rt->compute);
    if (st == BG_OK)
        st = bg_stream_synchronize(rt->conf.be, rt->compute);
    return st;
}

/* ---------------------------------------------------------------- the loop */

static bg_status_t run_action(bg_rt_t *rt, const bg_action_t *a, int64_t step)
{
    int lci = local_of(rt, a->chunk);
    bg_status_t st;
    switch (a->kind) {
    case BG_ACT_F:
        return do_forward(rt, a->mb, lci);
    case BG_ACT_B:
        return do_backward_input(rt, a->mb, lci);
    case BG_ACT_W:
        return do_backward_weight(rt, a->mb, lci);
    case BG_ACT_BW:
        st = do_backward_input(rt, a->mb, lci);
        return st == BG_OK ? do_backward_weight(rt, a->mb, lci) : st;
    case BG_ACT_SEND_ACT:
    case BG_ACT_SEND_GRAD:
        return do_send(rt, a);
    case BG_ACT_RECV_ACT:
    case BG_ACT_RECV_GRAD:
        return wait_recv(rt, a);
    case BG_ACT_ALLREDUCE:
        /* Starts once the chunk's last W has run on the device. */
        if (rt->conf.dps > 1 && rt->lc[lci].grad_len)
            return defer_add(rt, (rt_deferred_t){NULL, true, lci, -1, 0, NULL, 0});
        return BG_OK;
    case BG_ACT_OPTIMIZER:
        return do_optimizer(rt, step);
    default:
        return bg_errorf(BG_ERR_INTERNAL, "unknown action kind %d", (int)a->kind);
    }
}

/* The step's losses, read once, summed in micro-batch order. */
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

static bg_status_t run_list(bg_rt_t *rt, const bg_action_t *acts, size_t n, int64_t step)
{
    bg_status_t st = BG_OK;
    for (size_t i = 0; i < n && st == BG_OK; i++) {
        /* Post receives early so data lands while we compute. */
        for (size_t j = i; j < n && j <= i + RT_LOOKAHEAD && st == BG_OK; j++)
            if (bg_act_is_recv(acts[j].kind))
                st = post_recv(rt, &acts[j]);
        if (st != BG_OK)
            break;
        double t0 = bg_now_s();
        if (acts[i].kind == BG_ACT_OPTIMIZER && !rt->eval)
            rt->stats->pipe_s = t0 - rt->t_origin;
        char name[64];
        bg_action_str(&acts[i], name, sizeof(name));
        int mark = bg_act_is_compute(acts[i].kind) && !rt->eval ? mark_begin(rt) : -1;
        bg_nvtx_push_action(name, (int)acts[i].kind, acts[i].mb);
        st = run_action(rt, &acts[i], step);
        bg_nvtx_pop();
        if (mark >= 0 && st == BG_OK)
            st = bg_event_record(rt->conf.be, rt->evmark[2 * mark + 1], rt->compute);
        double t1 = bg_now_s();
        if (bg_act_is_compute(acts[i].kind))
            rt->stats->busy_s += t1 - t0;
        if (!rt->eval)
            rt_event(rt, &acts[i], t0, t1, mark); /* traces show training steps */
        if (st == BG_OK && rt->conf.tp) {
            st = defer_progress(rt, false);
            bg_tp_progress(rt->conf.tp);
            if (st == BG_OK)
                st = pend_progress(rt, false);
        }
        if (st != BG_OK) {
            char what[96];
            bg_action_str(&acts[i], what, sizeof(what));
            bg_error_prefix(st, "%s: ", what);
        }
    }
    if (rt->conf.tp) {
        bg_status_t s2 = st == BG_OK ? defer_progress(rt, true) : BG_OK;
        if (st == BG_OK)
            st = s2;
        s2 = pend_progress(rt, true);
        if (st == BG_OK)
            st = s2;
    }
    if (st == BG_OK)
        st = collect_losses(rt);
    return st;
}

static void reset_slots(bg_rt_t *rt)
{
    for (int m = 0; m < rt->max_mb; m++)
        for (int i = 0; i < rt->nlc; i++) {
            rt_slot_t *s = slot_at(rt, m, i);
            if (s->live)
                slot_close(rt, i, s);
        }
}

bg_status_t bg_rt_step(bg_rt_t *rt, int64_t step, bg_rt_feed_fn feed, void *ctx, bg_rt_stats_t *out)
{
    bg_rt_stats_t stats;
    memset(&stats, 0, sizeof(stats));
    rt->feed = feed;
    rt->feed_ctx = ctx;
    rt->stats = &stats;
    rt->eval = false;
    rt->nev = 0;
    rt->t_origin = bg_now_s();
    size_t n = bg_sched_len(rt->conf.sched, rt->conf.stage);
    const bg_action_t *acts = bg_sched_actions(rt->conf.sched, rt->conf.stage);
    rt->nmark = 0;
    bg_status_t st = BG_OK;
    if (!rt->evorigin)
        st = bg_event_create(rt->conf.be, &rt->evorigin);
    if (st == BG_OK)
        st = bg_event_record(rt->conf.be, rt->evorigin, rt->compute);
    if (st == BG_OK)
        st = run_list(rt, acts, n, step);
    if (st == BG_OK)
        st = resolve_marks(rt);
    stats.step_s = bg_now_s() - rt->t_origin;
    if (!stats.pipe_s)
        stats.pipe_s = stats.step_s;
    reset_slots(rt);
    if (st != BG_OK)
        return rt_err(rt, st);
    *out = stats;
    return BG_OK;
}

bg_status_t bg_rt_eval(bg_rt_t *rt, int mb, bg_rt_feed_fn feed, void *ctx, bg_rt_stats_t *out)
{
    if (mb > rt->max_mb)
        return rt_err(rt, bg_errorf(BG_ERR_INVALID, "evaluation with %d micro-batches, at most %d",
                                    mb, rt->max_mb));
    bg_rt_stats_t stats;
    memset(&stats, 0, sizeof(stats));
    rt->feed = feed;
    rt->feed_ctx = ctx;
    rt->stats = &stats;
    rt->eval = true;
    double t_start = bg_now_s(); /* the last step's events and origin stay for traces */
    /* Forward only, micro-batch by micro-batch, chunks in model order: every
     * wait is on a lower (mb, chunk) pair, so it cannot deadlock. */
    size_t cap = (size_t)mb * (size_t)rt->nlc * 16 + 1, n = 0;
    bg_action_t *acts = malloc(cap * sizeof(*acts));
    if (!acts)
        return rt_err(rt, bg_errorf(BG_ERR_NOMEM, "out of memory for the eval list"));
    const bg_sched_t *sc = rt->conf.sched;
    for (int m = 0; m < mb; m++)
        for (int i = 0; i < rt->nlc; i++) {
            int c = rt->lc[i].c;
            for (int k = 0; k < bg_sched_edges(sc); k++) {
                int src, dst, wg;
                bg_sched_edge(sc, k, &src, &dst, &wg);
                int pr = bg_sched_chunk_rank(sc, src);
                if (dst == c && pr != rt->conf.stage && n < cap)
                    acts[n++] = bg_action_transfer(BG_ACT_RECV_ACT, m, src, dst, pr);
            }
            if (n < cap)
                acts[n++] = bg_action_compute(BG_ACT_F, m, c);
            for (int k = 0; k < bg_sched_edges(sc); k++) {
                int src, dst, wg;
                bg_sched_edge(sc, k, &src, &dst, &wg);
                int pr = bg_sched_chunk_rank(sc, dst);
                if (src == c && pr != rt->conf.stage && n < cap)
                    acts[n++] = bg_action_transfer(BG_ACT_SEND_ACT, m, src, dst, pr);
            }
        }
    bg_status_t st = run_list(rt, acts, n, 0);
    free(acts);
    stats.step_s = bg_now_s() - t_start;
    reset_slots(rt);
    rt->eval = false;
    if (st != BG_OK)
        return rt_err(rt, st);
    *out = stats;
    return BG_OK;
}

/* ---------------------------------------------------------------- setup */

int bg_rt_param_count(const bg_rt_t *rt)
{
    return rt->nparam;
}

void bg_rt_param_get(bg_rt_t *rt, int i, bg_rt_param_view_t *out)
{
    rt_param_t *p = &rt->par[i];
    const bg_graph_param_t *gp = bg_graph_param(rt->g, p->p);
    out->name = gp->name;
    out->shape = &gp->desc.shape;
    out->numel = p->n;
    out->owned = p->owned;
    out->master = p->master;
    out->state[0] = p->state[0];
    out->state[1] = p->state[1];
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
        ch->in_edge = calloc((size_t)n->n_edges + 1, sizeof(int));
        ch->out_edge = calloc((size_t)n->n_edges + 1, sizeof(int));
        ch->w_needs = calloc((size_t)n->n_tensors + 1, 1);
        if (!ch->w_needs)
            return bg_errorf(BG_ERR_NOMEM, "out of memory");
        for (int l = ch->l0; l < ch->l1; l++) {
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
            if (!gl->spec.kind->backward_weight)
                continue;
            for (int k = 0; k < gl->spec.n_in; k++)
                ch->w_needs[gl->in[k]] = 1;
        }
        if (!ch->in_edge || !ch->out_edge)
            return bg_errorf(BG_ERR_NOMEM, "out of memory");
        for (int e = 0; e < n->n_edges; e++) {
            if (n->edges[e].dst == c)
                ch->in_edge[ch->n_in++] = e;
            if (n->edges[e].src == c)
                ch->out_edge[ch->n_out++] = e;
        }
    }
    return BG_OK;
}

static bg_status_t setup_params(bg_rt_t *rt)
{
    const bg_net_t *n = rt->net;
    bool cpu32 = rt->dev == BG_DEV_CPU && rt->conf.dtype == BG_F32;
    rt->param_local = malloc(sizeof(int) * ((size_t)n->n_params + 1));
    rt->par = calloc((size_t)n->n_params + 1, sizeof(rt_param_t));
    rt->uacc_dev = calloc((size_t)n->n_layers * BG_MAX_PARAMS + 1, sizeof(float *));
    rt->uacc_host = calloc((size_t)n->n_layers * BG_MAX_PARAMS + 1, sizeof(float *));
    if (!rt->param_local || !rt->par || !rt->uacc_dev || !rt->uacc_host)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    bg_status_t st;
    for (int p = 0; p < n->n_params; p++) {
        rt->param_local[p] = -1;
        const bg_net_param_t *np = &n->params[p];
        bool here = false;
        for (int u = 0; u < np->n_users; u++)
            here |= local_of(rt, n->layer_chunk[np->users[u]]) >= 0;
        if (!here)
            continue;
        const bg_graph_param_t *gp = bg_graph_param(rt->g, p);
        rt_param_t *rp = &rt->par[rt->nparam];
        rt->param_local[p] = rt->nparam++;
        rp->p = p;
        rp->n = gp->numel;
        rp->owned = local_of(rt, n->layer_chunk[gp->owner]) >= 0;
        for (int u = 0; u < np->n_users; u++) {
            int r = rank_of_chunk(rt, n->layer_chunk[np->users[u]]);
            bool known = r == rt->conf.dp * rt->conf.stages + rt->conf.stage;
            for (int k = 0; k < rp->n_remote; k++)
                known |= rp->remote_rank[k] == r;
            if (!known && rp->n_remote < 8)
                rp->remote_rank[rp->n_remote++] = r;
        }
        size_t bytes = (size_t)rp->n * 4;
        rp->master = malloc(bytes + 4);
        /* A parameter with one user is its accumulator: no fold buffer. */
        rp->grad = np->n_users > 1 ? malloc(bytes + 4) : NULL;
        for (int s = 0; s < bg_optim_state_count(rt->conf.optim.kind); s++)
            rp->state[s] = calloc((size_t)rp->n + 1, 4);
        if (!rp->master || (np->n_users > 1 && !rp->grad) || !rp->state[0])
            return bg_errorf(BG_ERR_NOMEM, "out of memory for parameter %s (%lld elements)",
                             gp->name, (long long)rp->n);
        bg_param_init_host(&gp->desc, gp->name, rt->conf.seed, rp->master);
        if (cpu32) {
            rp->dev = rp->master;
        } else {
            if ((st = dalloc(rt, (size_t)rp->n * bg_dtype_size(rt->conf.dtype), &rp->dev)) != BG_OK)
                return st;
            if ((st = upload_param(rt, rp)) != BG_OK)
                return st;
        }
    }
    /* One contiguous accumulator region per chunk: the allreduce bucket. */
    for (int i = 0; i < rt->nlc; i++) {
        rt_chunk_t *ch = &rt->lc[i];
        for (int l = ch->l0; l < ch->l1; l++) {
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
            for (int j = 0; j < gl->n_params; j++)
                ch->grad_len += (size_t)bg_shape_numel(&gl->slot[j].shape);
        }
        if ((st = dalloc(rt, ch->grad_len * 4 + 4, (void **)&ch->grad_dev)) != BG_OK)
            return st;
        if ((st = bg_backend_memset(rt->conf.be, ch->grad_dev, 0, ch->grad_len * 4, rt->compute)) !=
            BG_OK)
            return st;
        ch->grad_host = rt->dev == BG_DEV_CPU ? ch->grad_dev : malloc(ch->grad_len * 4 + 4);
        if (!ch->grad_host)
            return bg_errorf(BG_ERR_NOMEM, "out of memory");
        size_t off = 0;
        for (int l = ch->l0; l < ch->l1; l++) {
            const bg_graph_layer_t *gl = bg_graph_layer(rt->g, l);
            for (int j = 0; j < gl->n_params; j++) {
                rt->uacc_dev[l * BG_MAX_PARAMS + j] = ch->grad_dev + off;
                rt->uacc_host[l * BG_MAX_PARAMS + j] = ch->grad_host + off;
                off += (size_t)bg_shape_numel(&gl->slot[j].shape);
            }
        }
    }
    return BG_OK;
}

static bg_status_t setup_buffers(bg_rt_t *rt)
{
    rt->max_mb = bg_sched_microbatches(rt->conf.sched);
    if (rt->max_mb < BG_RT_EVAL_MAX_MB)
        rt->max_mb = BG_RT_EVAL_MAX_MB; /* evaluation may use more micro-batches */
    rt->slots = calloc((size_t)rt->max_mb * (size_t)rt->nlc + 1, sizeof(rt_slot_t));
    if (!rt->slots)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    int nt = rt->net->n_tensors;
    for (int m = 0; m < rt->max_mb; m++)
        for (int i = 0; i < rt->nlc; i++) {
            rt_slot_t *s = slot_at(rt, m, i);
            rt_chunk_t *ch = &rt->lc[i];
            s->val = calloc((size_t)nt, sizeof(void *));
            s->own = calloc((size_t)nt, 1);
            s->gacc = calloc((size_t)nt, sizeof(void *));
            s->gown = calloc((size_t)nt, 1);
            s->saved = calloc((size_t)(ch->l1 - ch->l0), sizeof(void *));
            s->act_recv = calloc((size_t)ch->n_in + 1, sizeof(void *));
            s->act_req = calloc((size_t)ch->n_in + 1, sizeof(void *));
            s->grad_send = calloc((size_t)ch->n_in + 1, sizeof(void *));
            s->act_send = calloc((size_t)ch->n_out + 1, sizeof(void *));
            s->grad_recv = calloc((size_t)ch->n_out + 1, sizeof(void *));
            s->grad_req = calloc((size_t)ch->n_out + 1, sizeof(void *));
            if (!s->val || !s->own || !s->gacc || !s->gown || !s->saved || !s->act_recv ||
                !s->act_req || !s->grad_send || !s->act_send || !s->grad_recv || !s->grad_req)
                return bg_errorf(BG_ERR_NOMEM, "out of memory");
        }
    size_t ws = 0;
    for (int i = 0; i < rt->nlc; i++)
        for (int l = rt->lc[i].l0; l < rt->lc[i].l1; l++) {
            bg_layer_cost_t cost;
            bg_layer_cost(&bg_graph_layer(rt->g, l)->spec, rt->conf.dtype, &cost);
            if ((size_t)cost.workspace_bytes > ws)
                ws = (size_t)cost.workspace_bytes;
        }
    rt->workspace_bytes = ws;
    bg_status_t st = dalloc(rt, ws + 4, &rt->workspace);
    if (st != BG_OK)
        return st;
    /* d(objective)/d(loss of one micro-batch): the mean over all of the
     * step's micro-batches, on every replica. */
    if ((st = dalloc(rt, sizeof(float) * (size_t)rt->max_mb, (void **)&rt->loss_dev)) != BG_OK)
        return st;
    rt->loss_have = calloc((size_t)rt->max_mb, 1);
    if (!rt->loss_have)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    float dl = 1.0f / (float)(bg_sched_microbatches(rt->conf.sched) * rt->conf.dps);
    if ((st = dalloc(rt, 4, (void **)&rt->dloss)) != BG_OK)
        return st;
    st = bg_backend_copy(rt->conf.be, rt->dloss, &dl, 4, BG_COPY_H2D, rt->compute);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
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
            r[d] = d * S + rt->conf.stage;
        st = bg_tp_group_create(rt->conf.tp, r, D, &rt->dp_group);
    }
    if (st == BG_OK && S > 1) {
        for (int s = 0; s < S; s++)
            r[s] = rt->conf.dp * S + s;
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
    bg_status_t st = BG_OK;
    if ((conf->stages * conf->dps > 1) && !conf->tp)
        st = bg_errorf(BG_ERR_INVALID, "a multi-rank layout needs a transport");
    if (st == BG_OK)
        st = bg_stream_create(conf->be, "brigade compute", &rt->compute);
    if (st == BG_OK)
        st = setup_chunks(rt);
    if (st == BG_OK)
        st = setup_params(rt);
    if (st == BG_OK)
        st = setup_buffers(rt);
    if (st == BG_OK)
        st = setup_groups(rt);
    if (st != BG_OK) {
        rt_err(rt, st);
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
    if (rt->slots) {
        reset_slots(rt);
        for (int m = 0; m < rt->max_mb; m++)
            for (int i = 0; i < rt->nlc; i++) {
                rt_slot_t *s = slot_at(rt, m, i);
                free(s->val), free(s->own), free(s->gacc), free(s->gown), free(s->saved);
                free(s->act_recv), free(s->act_req), free(s->grad_send), free(s->act_send);
                free(s->grad_recv), free(s->grad_req);
            }
    }
    if (rt->conf.tp)
        pend_progress(rt, true);
    free(rt->slots);
    for (int i = 0; rt->par && i < rt->nparam; i++) {
        rt_param_t *p = &rt->par[i];
        free(p->master), free(p->grad), free(p->state[0]), free(p->state[1]);
    }
    for (int i = 0; rt->lc && i < rt->nlc; i++) {
        if (rt->lc[i].grad_host != rt->lc[i].grad_dev)
            free(rt->lc[i].grad_host);
        free(rt->lc[i].in_edge), free(rt->lc[i].out_edge), free(rt->lc[i].w_needs);
    }
    if (rt->dp_group)
        bg_tp_group_destroy(rt->dp_group);
    if (rt->pp_group)
        bg_tp_group_destroy(rt->pp_group);
    for (int i = 0; i < rt->ndefer; i++)
        bg_event_destroy(rt->conf.be, rt->defer[i].ready);
    free(rt->defer);
    if (rt->compute)
        bg_stream_synchronize(rt->conf.be, rt->compute);
    cache_release(rt); /* every device buffer, workspace and loss slots included */
    bg_stream_destroy(rt->conf.be, rt->compute);
    free(rt->loss_have);
    free(rt->lc), free(rt->chunk_local), free(rt->par), free(rt->param_local);
    for (int i = 0; i < 2 * rt->capmark; i++)
        bg_event_destroy(rt->conf.be, rt->evmark[i]);
    bg_event_destroy(rt->conf.be, rt->evorigin);
    free(rt->evmark), free(rt->ev_mark);
    free(rt->uacc_dev), free(rt->uacc_host), free(rt->pend), free(rt->ev);
    free(rt);
}
