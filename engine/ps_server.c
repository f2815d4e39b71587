/*
 * engine/ps_server.c -- one parameter server rank (--dp-mode ps): holds the
 * f32 masters and optimizer state of its shard (parameter p lives on server
 * p % K) in a flat buffer laid out as the workers' (each parameter at a
 * multiple of 64 elements), and runs one update per step:
 *
 *   1. receive every talking worker's push of step u (engine/ps_impl.h);
 *   2. sum the D replicas of each use along the ring allreduce's chain
 *      (element e of a bucket in shard b: x[b+1] + x[b+2] + ... + x[b]),
 *      then fold a parameter's uses in the graph's order: the bits the
 *      allreduce and the runtime's fold give (engine/runtime_grad.c);
 *   3. per-parameter sums of squares on the backend, gathered over the
 *      servers in global parameter order and summed in double: the
 *      runtime's global norm;
 *   4. skip on overflow (loss scaling), else the fused update on the
 *      backend with the factors the runtime would use;
 *   5. send every worker version u + 1 of the parameters it holds (with the
 *      optimizer state on full-sync steps, for checkpoints).
 *
 * Updates are applied in step order, each summing all D replicas of that
 * step; staleness is the workers' business (engine/runtime_ps.c): which
 * version each gradient was computed on. Must NOT reorder any sum, and must
 * NOT read a checkpoint itself: the workers send the starting parameters
 * and state (from the seed or their checkpoint), so every resume path of
 * the workers serves the servers too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "engine/ps_impl.h"
#include "engine/tag.h"

/* A reply in flight and the buffer it reads. */
typedef struct srv_send {
    bg_tp_req_t *req;
    void *buf;
} srv_send_t;

struct srv {
    bg_ps_serve_conf_t conf; /* a copy: a colocated server outlives its caller's */
    const bg_ps_serve_conf_t *c;
    int64_t next; /* the next update to serve */
    bool named;   /* a straggler was named in this episode of waits */
    bool posted;  /* its pushes' receives are posted */
    ps_layout_t L;
    int S, D, K, k, nst;
    bool cpu;
    int nmine;
    int *mine;      /* [nmine] global parameter ids, ascending */
    int64_t *off_h; /* [nmine + 1] flat offsets */
    uint8_t *decay_h;
    void *segs_dev;
    bg_flat_segs_t segs;
    int64_t n;
    float *master, *state[2], *grad, *ssq;         /* backend memory */
    float *h_master, *h_state[2], *h_grad, *h_ssq; /* host (aliases on the CPU) */
    float *tmp;                                    /* one use's replica sum */
    float **x;                                     /* [D] one use's replica gradients */
    bg_stream_t *stream;
    void **push;        /* [S * D] receive buffers; NULL: that worker does not talk to us */
    bg_tp_req_t **preq; /* [S * D] */
    srv_send_t *sends;
    size_t nsends, capsends;
    bg_tp_group_t *group; /* all servers, K > 1 */
    float *ss;            /* [np] sums of squares in global parameter order */
};

static int worker_rank(const srv_t *v, int s, int d)
{
    return d * v->S + s;
}

static bg_status_t be_buf(srv_t *v, int64_t floats, float **dev, float **host)
{
    size_t bytes = (size_t)floats * 4 + 4;
    bg_status_t st = bg_backend_alloc(v->c->be, bytes, (void **)dev);
    if (st == BG_OK)
        st = bg_backend_memset(v->c->be, *dev, 0, bytes, v->stream);
    if (st != BG_OK)
        return st;
    *host = v->cpu ? *dev : calloc(bytes, 1);
    return *host ? BG_OK : bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
}

/* This server's parameters, their flat offsets and decay flags, the
 * backend's segment table. */
static bg_status_t srv_layout(srv_t *v)
{
    v->mine = calloc((size_t)v->L.np + 1, sizeof(int));
    v->off_h = calloc((size_t)v->L.np + 2, sizeof(int64_t));
    v->decay_h = calloc((size_t)v->L.np + 1, 1);
    int64_t *chunk0 = calloc((size_t)v->L.np + 2, sizeof(int64_t));
    bg_status_t st = BG_OK;
    if (!v->mine || !v->off_h || !v->decay_h || !chunk0)
        st = bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
    for (int p = 0; st == BG_OK && p < v->L.np; p++) {
        if (v->L.par[p].server != v->k)
            continue;
        v->off_h[v->nmine] = v->n;
        v->decay_h[v->nmine] = bg_graph_param(v->c->g, p)->desc.shape.ndim >= 2;
        v->mine[v->nmine++] = p;
        v->n += (v->L.par[p].n + 63) / 64 * 64; /* RT_FLAT_ALIGN, as the workers */
    }
    size_t ob = sizeof(int64_t) * ((size_t)v->nmine + 1);
    if (st == BG_OK) {
        v->off_h[v->nmine] = v->n;
        int64_t nch = bg_flat_chunks(v->off_h, v->nmine, chunk0);
        st = bg_backend_alloc(v->c->be, 2 * ob + (size_t)v->nmine + 1, &v->segs_dev);
        char *d = v->segs_dev;
        if (st == BG_OK)
            st = bg_backend_copy(v->c->be, d, v->off_h, ob, BG_COPY_H2D, v->stream);
        if (st == BG_OK)
            st = bg_backend_copy(v->c->be, d + ob, chunk0, ob, BG_COPY_H2D, v->stream);
        if (st == BG_OK)
            st = bg_backend_copy(v->c->be, d + 2 * ob, v->decay_h, (size_t)v->nmine + 1,
                                 BG_COPY_H2D, v->stream);
        if (st == BG_OK)
            st = bg_stream_synchronize(v->c->be, v->stream);
        v->segs =
            (bg_flat_segs_t){v->nmine, (const int64_t *)d,        (const uint8_t *)(d + 2 * ob),
                             v->off_h, (const int64_t *)(d + ob), nch};
    }
    free(chunk0);
    return st;
}

static bg_status_t srv_buffers(srv_t *v)
{
    bg_status_t st = be_buf(v, v->n, &v->master, &v->h_master);
    for (int s = 0; s < v->nst && st == BG_OK; s++)
        st = be_buf(v, v->n, &v->state[s], &v->h_state[s]);
    if (st == BG_OK)
        st = be_buf(v, v->n, &v->grad, &v->h_grad);
    if (st == BG_OK)
        st = be_buf(v, v->nmine, &v->ssq, &v->h_ssq);
    int64_t most = 1;
    for (int i = 0; i < v->nmine; i++)
        most = v->L.par[v->mine[i]].n > most ? v->L.par[v->mine[i]].n : most;
    v->tmp = malloc((size_t)most * 4);
    v->x = calloc((size_t)v->D + 1, sizeof(float *));
    v->ss = calloc((size_t)v->L.np + 1, sizeof(float));
    size_t nw = (size_t)v->S * (size_t)v->D + 1;
    v->push = calloc(nw, sizeof(void *));
    v->preq = calloc(nw, sizeof(bg_tp_req_t *));
    if (st == BG_OK && (!v->tmp || !v->x || !v->ss || !v->push || !v->preq))
        st = bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
    for (int s = 0; s < v->S && st == BG_OK; s++)
        for (int d = 0; d < v->D && st == BG_OK && ps_talks(&v->L, s, v->k); d++) {
            size_t b = sizeof(ps_head_t) + (size_t)v->L.push_n[s * v->K + v->k] * 4;
            if (!(v->push[worker_rank(v, s, d)] = malloc(b)))
                st = bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
        }
    return st;
}

/* Pack (or, `in`, unpack) parameter p's master and, with `state`, its
 * state arrays at *at, which moves past them. Host memory only. */
static void srv_entry(srv_t *v, int i, bool state, bool in, float **at)
{
    int64_t n = v->L.par[v->mine[i]].n, off = v->off_h[i];
    float *src[3] = {v->h_master + off, v->nst > 0 ? v->h_state[0] + off : NULL,
                     v->nst > 1 ? v->h_state[1] + off : NULL};
    for (int a = 0; a < (state ? 1 + v->nst : 1); a++) {
        if (in)
            memcpy(src[a], *at, (size_t)n * 4);
        else
            memcpy(*at, src[a], (size_t)n * 4);
        *at += n;
    }
}

/* The starting parameters and state: from each stage's replica 0, the
 * parameters it is the lowest holder of. */
static bg_status_t srv_receive_initial(srv_t *v)
{
    bg_status_t st = BG_OK;
    for (int s = 0; s < v->S && st == BG_OK; s++) {
        int64_t fl = 0;
        for (int i = 0; i < v->nmine; i++)
            fl +=
                v->L.par[v->mine[i]].first_holder == s ? v->L.par[v->mine[i]].n * (1 + v->nst) : 0;
        if (!fl)
            continue;
        float *buf = malloc((size_t)fl * 4), *at = buf;
        uint64_t tag = 0;
        bg_tp_req_t *r = NULL;
        if (!buf)
            return bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
        if ((st = bg_tag_ps(PS_INIT, v->c->start_step, &tag)) == BG_OK &&
            (st = bg_tp_recv(v->c->tp, worker_rank(v, s, 0), tag, buf, (size_t)fl * 4,
                             BG_TP_MEM_HOST, &r)) == BG_OK)
            st = bg_tp_wait(v->c->tp, r, v->c->timeout_s);
        for (int i = 0; i < v->nmine && st == BG_OK; i++)
            if (v->L.par[v->mine[i]].first_holder == s)
                srv_entry(v, i, true, true, &at);
        free(buf);
    }
    if (st == BG_OK && !v->cpu) {
        st = bg_backend_copy(v->c->be, v->master, v->h_master, (size_t)v->n * 4, BG_COPY_H2D,
                             v->stream);
        for (int s = 0; s < v->nst && st == BG_OK; s++)
            st = bg_backend_copy(v->c->be, v->state[s], v->h_state[s], (size_t)v->n * 4,
                                 BG_COPY_H2D, v->stream);
    }
    return st == BG_OK ? bg_stream_synchronize(v->c->be, v->stream) : st;
}

/* Complete finished replies; `wait`: all of them. */
static bg_status_t srv_sends_progress(srv_t *v, bool wait)
{
    bg_status_t st = BG_OK;
    size_t keep = 0;
    for (size_t i = 0; i < v->nsends; i++) {
        int done = 0;
        bg_status_t s2 = st != BG_OK ? BG_OK
                         : wait ? (done = 1, bg_tp_wait(v->c->tp, v->sends[i].req, v->c->timeout_s))
                                : bg_tp_test(v->c->tp, v->sends[i].req, &done);
        if (st == BG_OK && s2 != BG_OK)
            st = s2, done = 1;
        if (done)
            free(v->sends[i].buf);
        else
            v->sends[keep++] = v->sends[i];
    }
    v->nsends = keep;
    return st;
}

/* Post every talking worker's push of step u. */
static bg_status_t srv_post_pushes(srv_t *v, int64_t u)
{
    uint64_t tag = 0;
    bg_status_t st = bg_tag_ps(PS_PUSH, u, &tag);
    for (int s = 0; s < v->S && st == BG_OK; s++)
        for (int d = 0; d < v->D && st == BG_OK && ps_talks(&v->L, s, v->k); d++) {
            int w = worker_rank(v, s, d);
            size_t b = sizeof(ps_head_t) + (size_t)v->L.push_n[s * v->K + v->k] * 4;
            st = bg_tp_recv(v->c->tp, w, tag, v->push[w], b, BG_TP_MEM_HOST, &v->preq[w]);
        }
    return st;
}

/* Look once at every posted push of step u; *left: a worker still
 * missing, or -1. */
static bg_status_t srv_test_pushes(srv_t *v, int *left)
{
    *left = -1;
    for (size_t w = 0; w < (size_t)v->S * (size_t)v->D; w++) {
        int done = 0;
        if (!v->preq[w])
            continue;
        bg_status_t st = bg_tp_test(v->c->tp, v->preq[w], &done);
        if (done)
            v->preq[w] = NULL;
        if (st != BG_OK)
            return st;
        if (!done)
            *left = (int)w;
    }
    return BG_OK;
}

/* Wait (`block`; else only look once) for the pushes of step u, naming a
 * straggler once per episode of updates it holds up for a second (the
 * episode ends at an update not held up), and failing after
 * the run's wait bound. Waits in the transport's own wait (it backs off to
 * sleeping), so a waiting server leaves the cores to the workers. */
static bg_status_t srv_wait_pushes(srv_t *v, int64_t u, bool block, bool *ready)
{
    double t0 = bg_now_s();
    bool timed = false;
    int left;
    bg_status_t st = srv_test_pushes(v, &left);
    while (st == BG_OK && left >= 0 && block) {
        st = bg_tp_wait(v->c->tp, v->preq[left], 1.0);
        if (st == BG_OK) {
            v->preq[left] = NULL;
            st = srv_test_pushes(v, &left);
            continue;
        }
        if (st != BG_ERR_TIMEOUT)
            return st;
        st = BG_OK;
        /* Waiting on workers is not a hang of ours: a stalled worker stays
         * the longest stalled rank and is the one named. */
        bg_tp_note_progress(v->c->tp);
        double dt = bg_now_s() - t0;
        timed = true;
        if (!v->named && v->k == 0) {
            printf("ps server %d: step %lld waits for stage %d dp %d (rank %d), which pushed "
                   "step %lld: a straggler\n",
                   v->k, (long long)u + 1, left % v->S, left / v->S, left, (long long)u);
            fflush(stdout);
            v->named = true;
        }
        if (v->c->timeout_s >= 0 && dt > v->c->timeout_s)
            return bg_errorf(BG_ERR_TIMEOUT,
                             "ps server %d: no gradients of step %lld from replica %d (stage %d) "
                             "in %.0f s",
                             v->k, (long long)u + 1, left / v->S, left % v->S, dt);
    }
    if (st != BG_OK)
        return st;
    *ready = left < 0;
    v->named &= !*ready || timed; /* an update not held up ends the episode */
    return srv_sends_progress(v, false);
}

/* out[i] = the D replicas' gradients of one use summed along the ring's
 * chain for the shard element boff + i lies in. */
static void ring_sum(float *out, float *const *x, int D, int64_t boff, int64_t n, int64_t blen)
{
    for (int b = 0; b < D; b++) {
        int64_t lo = (int64_t)bg_tp_shard_offset((size_t)blen, D, b) - boff;
        int64_t hi = (int64_t)bg_tp_shard_offset((size_t)blen, D, b + 1) - boff;
        lo = lo < 0 ? 0 : lo;
        hi = hi > n ? n : hi;
        for (int64_t i = lo; i < hi; i++) {
            float a = x[(b + 1) % D][i];
            for (int j = 2; j <= D; j++)
                a += x[(b + j) % D][i];
            out[i] = a;
        }
    }
}

/* Every parameter's gradient into h_grad: replicas summed, uses folded. */
static void srv_fold(srv_t *v)
{
    float **x = v->x;
    for (int i = 0; i < v->nmine; i++) {
        const ps_par_t *pp = &v->L.par[v->mine[i]];
        float *g = v->h_grad + v->off_h[i];
        for (int u = 0; u < pp->nu; u++) {
            const ps_use_t *us = &pp->use[u];
            for (int d = 0; d < v->D; d++)
                x[d] =
                    (float *)((char *)v->push[worker_rank(v, us->stage, d)] + sizeof(ps_head_t)) +
                    us->poff;
            ring_sum(u == 0 ? g : v->tmp, x, v->D, us->boff, pp->n, us->blen);
            for (int64_t e = 0; u > 0 && e < pp->n; e++)
                g[e] += v->tmp[e];
        }
    }
}

/* The global norm of the (scaled) gradients, as the runtime computes it:
 * per-parameter sums of squares on the backend, gathered over the servers
 * in global parameter order, summed in double. */
static bg_status_t srv_norm(srv_t *v, double *out)
{
    bg_backend_t *be = v->c->be;
    bg_status_t st = BG_OK;
    if (!v->cpu)
        st = bg_backend_copy(be, v->grad, v->h_grad, (size_t)v->n * 4, BG_COPY_H2D, v->stream);
    if (st == BG_OK && v->nmine)
        st = bg_step_sumsq(be, v->stream, &v->segs, v->grad, v->ssq);
    if (st == BG_OK && !v->cpu)
        st = bg_backend_copy(be, v->h_ssq, v->ssq, (size_t)v->nmine * 4, BG_COPY_D2H, v->stream);
    if (st == BG_OK)
        st = bg_stream_synchronize(be, v->stream);
    if (st != BG_OK)
        return st;
    memset(v->ss, 0, sizeof(float) * (size_t)v->L.np);
    for (int i = 0; i < v->nmine; i++)
        v->ss[v->mine[i]] = v->h_ssq[i];
    if (v->group)
        st = bg_tp_allreduce(v->group, v->ss, (size_t)v->L.np, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST,
                             v->c->timeout_s);
    double tot = 0;
    for (int p = 0; p < v->L.np; p++)
        tot += v->ss[p];
    if (st == BG_OK)
        *out = sqrt(tot);
    return st;
}

/* Update u on the backend (skipped on overflow), then the masters (and on
 * full-sync steps the state) back to the host for the replies. */
static bg_status_t srv_update(srv_t *v, int64_t u, const ps_head_t *in, ps_head_t *out)
{
    double norm = 0;
    bg_status_t st = srv_norm(v, &norm);
    if (st != BG_OK)
        return st;
    bool scaling = in->flags & PS_F_SCALING, overflow = scaling && !isfinite(norm);
    float scale = scaling ? in->scale : 1.0f, lr = bg_optim_lr(&v->c->optim, u);
    bool state = bg_ps_sync_step(&v->c->ps, u);
    *out =
        (ps_head_t){u + 1, u, norm, lr, (overflow ? PS_F_OVERFLOW : 0) | (state ? PS_F_STATE : 0)};
    if (!overflow && v->nmine) {
        bg_step_args_t a;
        float gs = bg_optim_clip_scale(&v->c->optim, norm / scale) / scale;
        bg_optim_step_args(&v->c->optim, u, lr, gs, &a);
        st = bg_step_update(v->c->be, v->stream, &a, &v->segs, v->master, v->grad, v->state[0],
                            v->state[1]);
        if (st == BG_OK && !v->cpu)
            st = bg_backend_copy(v->c->be, v->h_master, v->master, (size_t)v->n * 4, BG_COPY_D2H,
                                 v->stream);
    }
    for (int s = 0; s < v->nst && state && st == BG_OK && !v->cpu; s++)
        st = bg_backend_copy(v->c->be, v->h_state[s], v->state[s], (size_t)v->n * 4, BG_COPY_D2H,
                             v->stream);
    return st == BG_OK ? bg_stream_synchronize(v->c->be, v->stream) : st;
}

/* Version u + 1 to every talking worker: the parameters its stage holds. */
static bg_status_t srv_reply(srv_t *v, const ps_head_t *h)
{
    uint64_t tag = 0;
    bool state = h->flags & PS_F_STATE;
    bg_status_t st = bg_tag_ps(PS_REPLY, h->step, &tag);
    for (int s = 0; s < v->S && st == BG_OK; s++) {
        if (!ps_talks(&v->L, s, v->k))
            continue;
        size_t b = sizeof(ps_head_t) + (size_t)ps_reply_floats(&v->L, s, v->k, state) * 4;
        for (int d = 0; d < v->D && st == BG_OK; d++) {
            if (bg_grow(&v->sends, &v->capsends, v->nsends + 1, sizeof(srv_send_t)))
                return bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
            char *buf = malloc(b);
            if (!buf)
                return bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
            memcpy(buf, h, sizeof(*h));
            float *at = (float *)(buf + sizeof(*h));
            for (int i = 0; i < v->nmine; i++)
                if (bg_ps_holds_(&v->L, v->mine[i], s))
                    srv_entry(v, i, state, false, &at);
            srv_send_t *x = &v->sends[v->nsends];
            x->buf = buf;
            st = bg_tp_send(v->c->tp, worker_rank(v, s, d), tag, buf, b, BG_TP_MEM_HOST, &x->req);
            if (st == BG_OK)
                v->nsends++;
            else
                free(buf);
        }
    }
    return st;
}

/* The server group (K > 1): every server, in server order. */
static bg_status_t srv_group(srv_t *v)
{
    if (v->K < 2)
        return BG_OK;
    int *r = malloc(sizeof(int) * (size_t)v->K);
    if (!r)
        return bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", v->k);
    for (int i = 0; i < v->K; i++)
        r[i] = v->c->ps.first_rank + i;
    bg_status_t st = bg_tp_group_create(v->c->tp, r, v->K, &v->group);
    free(r);
    return st;
}

/* The loss scale comes with any push (all replicas scale alike); a server
 * nobody pushes to holds nothing to scale. */
static const ps_head_t *srv_head(const srv_t *v)
{
    static const ps_head_t none = {0};
    for (int s = 0; s < v->S; s++)
        if (ps_talks(&v->L, s, v->k))
            return (const ps_head_t *)v->push[worker_rank(v, s, 0)];
    return &none;
}

bg_status_t bg_ps_srv_serve_(srv_t *v, int64_t upto, int64_t block_upto)
{
    bg_status_t st = BG_OK;
    for (; v->next <= upto && v->next < v->c->ps.steps && st == BG_OK; v->next++) {
        bool ready = false;
        if (!v->posted && (st = srv_post_pushes(v, v->next)) != BG_OK)
            break;
        v->posted = true;
        if ((st = srv_wait_pushes(v, v->next, v->next <= block_upto, &ready)) != BG_OK || !ready)
            break;
        ps_head_t out;
        v->posted = false;
        srv_fold(v);
        if ((st = srv_update(v, v->next, srv_head(v), &out)) == BG_OK)
            st = srv_reply(v, &out);
        bg_tp_note_progress(v->c->tp);
    }
    return st;
}

bg_status_t bg_ps_srv_finish_(srv_t *v)
{
    return srv_sends_progress(v, true);
}

void bg_ps_srv_free_(srv_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nsends; i++)
        bg_tp_cancel(v->c->tp, v->sends[i].req), free(v->sends[i].buf);
    size_t nw = (size_t)v->S * (size_t)v->D;
    for (size_t w = 0; v->push && w < nw; w++) {
        if (v->preq && v->preq[w])
            bg_tp_cancel(v->c->tp, v->preq[w]);
        free(v->push[w]);
    }
    if (v->group)
        bg_tp_group_destroy(v->group);
    float *dev[] = {v->master, v->state[0], v->state[1], v->grad, v->ssq};
    float *host[] = {v->h_master, v->h_state[0], v->h_state[1], v->h_grad, v->h_ssq};
    for (int i = 0; i < 5; i++) {
        if (!v->cpu)
            free(host[i]);
        bg_backend_free(v->c->be, dev[i]);
    }
    bg_backend_free(v->c->be, v->segs_dev);
    if (v->stream)
        bg_stream_destroy(v->c->be, v->stream);
    free(v->sends), free(v->push), free(v->preq), free(v->ss), free(v->tmp), free(v->x);
    free(v->mine), free(v->off_h), free(v->decay_h);
    bg_ps_layout_free_(&v->L);
    free(v);
}

bg_status_t bg_ps_srv_create_(const bg_ps_serve_conf_t *c, srv_t **out)
{
    srv_t *v = calloc(1, sizeof(*v));
    if (!v)
        return bg_errorf(BG_ERR_NOMEM, "out of memory on parameter server %d", c->index);
    v->conf = *c;
    v->c = &v->conf;
    v->S = c->stages, v->D = c->dps, v->K = c->ps.servers, v->k = c->index;
    v->next = c->start_step;
    v->nst = bg_optim_state_count(c->optim.kind);
    v->cpu = bg_backend_device(c->be) == BG_DEV_CPU;
    bg_status_t st = bg_stream_create(c->be, "ps", &v->stream);
    if (st == BG_OK)
        st = bg_ps_layout_create_(c->g, c->net, c->sched, v->S, v->K, v->nst, &v->L);
    if (st == BG_OK)
        st = srv_layout(v);
    if (st == BG_OK)
        st = srv_buffers(v);
    if (st == BG_OK)
        st = srv_group(v);
    if (st == BG_OK)
        st = srv_receive_initial(v);
    if (st != BG_OK) {
        bg_ps_srv_free_(v);
        return bg_error_prefix(st, "ps server %d (rank %d): ", c->index,
                               c->ps.first_rank + c->index);
    }
    *out = v;
    return BG_OK;
}

bg_status_t bg_ps_serve(const bg_ps_serve_conf_t *c)
{
    if (c->start_step >= c->ps.steps)
        return BG_OK; /* the workers never push: nothing to serve */
    srv_t *v = NULL;
    bg_status_t st = bg_ps_srv_create_(c, &v);
    if (st == BG_OK)
        st = bg_ps_srv_serve_(v, c->ps.steps - 1, c->ps.steps - 1);
    if (st == BG_OK)
        st = bg_ps_srv_finish_(v);
    bg_ps_srv_free_(v);
    return st == BG_OK || strstr(bg_last_error(), "ps server")
               ? st
               : bg_error_prefix(st, "ps server %d (rank %d): ", c->index,
                                 c->ps.first_rank + c->index);
}
