/*
 * engine/runtime_ps.c -- the OPTIMIZER action of a worker in ps mode
 * (--dp-mode ps): push this rank's gradient accumulators to the parameter
 * servers, pull the versions of the parameters the staleness rule asks for
 * and install them (masters, and the optimizer state on full-sync steps,
 * for checkpoints), then recast the compute copy. The servers do the sum
 * over replicas, the norm and the update (engine/ps_server.c).
 *
 * Versions: version v is the parameters after updates 0..v-1; server k
 * sends every version to every worker it talks to, in order, and the worker
 * installs them in order. Before step t + 1 a worker holds
 *   staleness 0 or a full-sync step: exactly version t + 1;
 *   --deterministic S: exactly version t + 1 - S (replayable bit for bit);
 *   S: at least t + 1 - S, and whatever newer has arrived;
 *   inf: whatever has arrived.
 * The staleness of step t's gradient (t minus the version it was computed
 * on) is counted in a histogram. On the first call replica 0 of each stage
 * sends the servers the starting parameters and state it is the lowest
 * holder of (from the seed, --init or a checkpoint of any mode).
 * With --ps-colocate, worker rank k < K hosts server k (engine/ps_server.c)
 * and serves it here, before pulling: updates up to the version it needs,
 * waiting for their pushes, then (one server only) any later one already
 * complete. Every
 * rank pushes before it serves or pulls, and servers serve in update
 * order, so no rank waits on a rank that waits on it.
 * Must NOT sum, clip or update anything itself.
 */
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/grow.h"
#include "engine/ps_impl.h"
#include "engine/runtime_impl.h"
#include "engine/tag.h"

typedef struct ps_send {
    bg_tp_req_t *req;
    void *buf;
} ps_send_t;

struct rt_ps {
    ps_layout_t L;
    int K, s;
    int64_t *have;      /* [K] newest version installed from server k */
    void **rbuf;        /* [K] reply buffers (room for the state) */
    bg_tp_req_t **rreq; /* [K] receive of version have[k] + 1, or NULL */
    ps_send_t *sends;   /* pushes in flight */
    size_t nsends, capsends;
    ps_head_t last; /* the newest reply installed */
    bool installed; /* something was installed in this call */
    bool state;     /* ... with optimizer state */
    bool warned;    /* in a straggler episode, already reported */
    int64_t episodes, gaps; /* straggler episodes reported, their gaps' sum */
    srv_t *srv;     /* the server this rank hosts (--ps-colocate), or NULL */
    float *grad_host; /* off the CPU: the flat gradient's host copy */
    int64_t hist[BG_PS_HIST];
};

static bool talks(const bg_rt_t *rt, int k)
{
    return ps_talks(&rt->ps->L, rt->conf.stage, k);
}

static int server_rank(const bg_rt_t *rt, int k)
{
    return rt->conf.ps.first_rank + k;
}

/* Send `len` bytes of `buf` (ownership passes) to server k under `tag`. */
static bg_status_t ps_send(bg_rt_t *rt, int k, uint64_t tag, void *buf, size_t len)
{
    struct rt_ps *c = rt->ps;
    if (bg_grow(&c->sends, &c->capsends, c->nsends + 1, sizeof(ps_send_t))) {
        free(buf);
        return bg_errorf(BG_ERR_NOMEM, "out of memory pushing to the parameter servers");
    }
    ps_send_t *x = &c->sends[c->nsends];
    x->buf = buf;
    bg_status_t st =
        bg_tp_send(rt->conf.tp, server_rank(rt, k), tag, buf, len, BG_TP_MEM_HOST, &x->req);
    if (st != BG_OK)
        free(buf);
    else
        c->nsends++;
    return st;
}

/* Complete finished pushes; `wait`: all of them. */
static bg_status_t sends_progress(bg_rt_t *rt, bool wait)
{
    struct rt_ps *c = rt->ps;
    bg_status_t st = BG_OK;
    size_t keep = 0;
    for (size_t i = 0; i < c->nsends; i++) {
        int done = 1;
        bg_status_t s2 = BG_OK;
        if (st != BG_OK)
            bg_tp_cancel(rt->conf.tp, c->sends[i].req);
        else if (wait)
            s2 = bg_tp_wait(rt->conf.tp, c->sends[i].req, rt->conf.timeout_s);
        else
            s2 = bg_tp_test(rt->conf.tp, c->sends[i].req, &done);
        if (s2 != BG_OK)
            st = s2, done = 1;
        if (done)
            free(c->sends[i].buf);
        else
            c->sends[keep++] = c->sends[i];
    }
    c->nsends = keep;
    return st;
}

/* Post the receive of version have[k] + 1 from server k (none past the
 * run's last version). */
static bg_status_t post_reply(bg_rt_t *rt, int k)
{
    struct rt_ps *c = rt->ps;
    int64_t v = c->have[k] + 1;
    if (v > rt->conf.ps.steps)
        return BG_OK;
    bool state = bg_ps_sync_step(&rt->conf.ps, v - 1);
    size_t b = sizeof(ps_head_t) + (size_t)ps_reply_floats(&c->L, c->s, k, state) * 4;
    uint64_t tag = 0;
    bg_status_t st = bg_tag_ps(PS_REPLY, v, &tag);
    return st == BG_OK ? bg_tp_recv(rt->conf.tp, server_rank(rt, k), tag, c->rbuf[k], b,
                                    BG_TP_MEM_HOST, &c->rreq[k])
                       : st;
}

/* Copy parameter p's master (and state) between its host views and *at,
 * which moves on; `in`: from *at into the views. */
static void entry(bg_rt_t *rt, int p, bool state, bool in, float **at)
{
    const rt_param_t *rp = &rt->par[rt->param_local[p]];
    float *v[3] = {rp->master, rp->state[0], rp->state[1]};
    int n = state ? 1 + rt->ps->L.nst : 1;
    for (int a = 0; a < n; a++) {
        if (in)
            memcpy(v[a], *at, (size_t)rp->n * 4);
        else
            memcpy(*at, v[a], (size_t)rp->n * 4);
        *at += rp->n;
    }
}

/* Replica 0 of each stage: the starting parameters and state it is the
 * lowest holder of, to their servers. */
static bg_status_t send_initial(bg_rt_t *rt, int64_t step)
{
    struct rt_ps *c = rt->ps;
    bg_status_t st = BG_OK;
    for (int k = 0; k < c->K && st == BG_OK && rt->conf.dp == 0; k++) {
        int64_t fl = 0;
        for (int p = 0; p < c->L.np; p++)
            if (c->L.par[p].server == k && c->L.par[p].first_holder == c->s)
                fl += c->L.par[p].n * (1 + c->L.nst);
        if (!fl)
            continue;
        float *buf = malloc((size_t)fl * 4), *at = buf;
        if (!buf)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter servers");
        for (int p = 0; p < c->L.np; p++)
            if (c->L.par[p].server == k && c->L.par[p].first_holder == c->s)
                entry(rt, p, true, false, &at);
        uint64_t tag = 0;
        if ((st = bg_tag_ps(PS_INIT, step, &tag)) != BG_OK)
            free(buf);
        else
            st = ps_send(rt, k, tag, buf, (size_t)fl * 4);
    }
    return st;
}

/* Layout, buffers, the initial send and the first receives. */
static bg_status_t ps_start(bg_rt_t *rt, int64_t step)
{
    struct rt_ps *c = calloc(1, sizeof(*c));
    if (!c)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter servers");
    rt->ps = c;
    c->K = rt->conf.ps.servers;
    c->s = rt->conf.stage;
    c->have = calloc((size_t)c->K, sizeof(int64_t));
    c->rbuf = calloc((size_t)c->K, sizeof(void *));
    c->rreq = calloc((size_t)c->K, sizeof(bg_tp_req_t *));
    if (!c->have || !c->rbuf || !c->rreq)
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter servers");
    bg_status_t st = bg_ps_layout_create_(rt->g, rt->net, rt->conf.sched, rt->conf.stages, c->K,
                                          bg_optim_state_count(rt->conf.optim.kind), &c->L);
    for (int k = 0; k < c->K && st == BG_OK; k++) {
        c->have[k] = step;
        if (!talks(rt, k))
            continue;
        size_t b = sizeof(ps_head_t) + (size_t)ps_reply_floats(&c->L, c->s, k, true) * 4;
        if (!(c->rbuf[k] = malloc(b)))
            return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter servers");
        st = post_reply(rt, k);
    }
    if (st == BG_OK)
        st = send_initial(rt, step);
    int me = rt_peer_rank(rt, c->s);
    if (st != BG_OK || !rt->conf.ps.colocate || me >= c->K)
        return st;
    bg_ps_serve_conf_t sc = {.ps = rt->conf.ps,
                             .index = me,
                             .stages = rt->conf.stages,
                             .dps = rt->conf.dps,
                             .tp = rt->conf.tp,
                             .be = rt->conf.be,
                             .g = rt->g,
                             .net = rt->net,
                             .sched = rt->conf.sched,
                             .optim = rt->conf.optim,
                             .start_step = step,
                             .timeout_s = rt->conf.timeout_s};
    return bg_ps_srv_create_(&sc, &c->srv);
}

/* Where the host reads use `key`'s accumulator: a tied use has its own; a
 * one-user parameter's lies in the flat gradient (off the CPU, in its host
 * copy). */
static const float *acc_host(const bg_rt_t *rt, int key)
{
    if (rt->uacc_host[key])
        return rt->uacc_host[key];
    const float *base = rt->dev == BG_DEV_CPU ? rt->flat.grad : rt->ps->grad_host;
    return base + (rt->uacc_dev[key] - rt->flat.grad);
}

/* Step t's gradients: this stage's uses of server k's parameters. */
static bg_status_t push(bg_rt_t *rt, int k, int64_t t, int64_t used)
{
    struct rt_ps *c = rt->ps;
    size_t b = sizeof(ps_head_t) + (size_t)c->L.push_n[c->s * c->K + k] * 4;
    char *buf = malloc(b);
    if (!buf)
        return bg_errorf(BG_ERR_NOMEM, "out of memory pushing to the parameter servers");
    bool scaling = rt->conf.loss_scale > 0;
    ps_head_t h = {t, used, 0.0, rt->loss_scale, scaling ? PS_F_SCALING : 0};
    memcpy(buf, &h, sizeof(h));
    float *g = (float *)(buf + sizeof(h));
    for (int p = 0; p < c->L.np; p++) {
        const ps_par_t *pp = &c->L.par[p];
        for (int u = 0; pp->server == k && u < pp->nu; u++)
            if (pp->use[u].stage == c->s)
                memcpy(g + pp->use[u].poff, acc_host(rt, pp->use[u].key), (size_t)pp->n * 4);
    }
    uint64_t tag = 0;
    bg_status_t st = bg_tag_ps(PS_PUSH, t, &tag);
    if (st != BG_OK) {
        free(buf);
        return st;
    }
    return ps_send(rt, k, tag, buf, b);
}

/* Server k's reply has arrived: install it and ask for the next. */
static bg_status_t install(bg_rt_t *rt, int k)
{
    struct rt_ps *c = rt->ps;
    ps_head_t h;
    memcpy(&h, c->rbuf[k], sizeof(h));
    bool state = h.flags & PS_F_STATE;
    float *at = (float *)((char *)c->rbuf[k] + sizeof(h));
    for (int p = 0; p < c->L.np; p++)
        if (c->L.par[p].server == k && bg_ps_holds_(&c->L, p, c->s))
            entry(rt, p, state, true, &at);
    c->have[k] = h.step;
    c->last = h;
    c->installed = true;
    c->state |= state;
    return post_reply(rt, k);
}

/* Report a straggler once per episode: an episode starts when a pull is
 * held over a second by the staleness bound and ends at the first pull
 * that needs no wait. Version v is out once every replica pushed steps
 * 1..v: when this one had finished t + 1 steps it held version `had`, so
 * some replica's push of step had + 1 was missing (or in flight). A gap of
 * S or less is no straggler. Only the servers know which replica is slow;
 * they name it. */
static void straggler_note(bg_rt_t *rt, int64_t t, int64_t need, int64_t had, double waited)
{
    struct rt_ps *c = rt->ps;
    int64_t S = rt->conf.ps.staleness, at = t + 1, gap = at - had;
    c->warned &= had < need;
    if (waited <= 1.0 || S <= 0 || S == BG_PS_STALE_INF || gap <= S || c->warned)
        return;
    printf("ps straggler: stage %d dp %d finished step %lld and was held %.1f s: it held "
           "parameter version %lld (gap %lld > staleness %lld); the ps server names the replica "
           "it waits for\n",
           c->s, rt->conf.dp, (long long)at, waited, (long long)had, (long long)gap,
           (long long)S);
    fflush(stdout);
    c->warned = true;
    c->episodes++;
    c->gaps += gap;
}

/* Before step t + 1: install server k's versions up to `need` (waiting for them), then, unless
 * `exact`, any newer one that has already arrived. */
static bg_status_t pull(bg_rt_t *rt, int k, int64_t t, int64_t need, bool exact)
{
    struct rt_ps *c = rt->ps;
    bg_status_t st = BG_OK;
    double t0 = bg_now_s();
    int64_t had = c->have[k]; /* every replica had finished this many steps */
    while (st == BG_OK && c->have[k] < need && c->rreq[k]) {
        bg_tp_req_t *r = c->rreq[k];
        c->rreq[k] = NULL;
        if ((st = bg_tp_wait(rt->conf.tp, r, rt->conf.timeout_s)) == BG_OK)
            st = install(rt, k);
    }
    straggler_note(rt, t, need, had, bg_now_s() - t0);
    while (st == BG_OK && !exact && c->rreq[k]) {
        int done = 0;
        if ((st = bg_tp_test(rt->conf.tp, c->rreq[k], &done)) != BG_OK || !done)
            break;
        c->rreq[k] = NULL;
        st = install(rt, k);
    }
    return st;
}

/* The installed host views to the backend and the compute copy. */
static bg_status_t refresh(bg_rt_t *rt)
{
    rt_flat_t *f = &rt->flat;
    bg_status_t st = BG_OK;
    size_t bytes = (size_t)f->n * 4;
    if (rt->dev != BG_DEV_CPU) {
        st = bg_backend_copy(rt->conf.be, f->master, f->host_master, bytes, BG_COPY_H2D,
                             rt->compute);
        for (int s = 0; s < rt->ps->L.nst && rt->ps->state && st == BG_OK; s++)
            st = bg_backend_copy(rt->conf.be, f->state[s], f->host_state[s], bytes, BG_COPY_H2D,
                                 rt->compute);
    }
    return st == BG_OK ? bg_rt_params_cast_(rt) : st;
}

/* The version step t + 1 needs, and whether exactly that one. */
static int64_t version_needed(const bg_rt_t *rt, int64_t t, bool *exact)
{
    const bg_ps_conf_t *ps = &rt->conf.ps;
    *exact = ps->staleness == 0 || ps->deterministic || bg_ps_sync_step(ps, t);
    if (ps->staleness == 0 || bg_ps_sync_step(ps, t))
        return t + 1;
    if (ps->staleness == BG_PS_STALE_INF)
        return 0;
    return t + 1 - ps->staleness;
}

/* Every accumulator where the host can read them: the flat gradient and
 * the tied users' buckets. */
static bg_status_t grads_to_host(bg_rt_t *rt)
{
    if (rt->dev == BG_DEV_CPU)
        return BG_OK;
    struct rt_ps *c = rt->ps;
    size_t bytes = (size_t)rt->flat.n * 4;
    if (!c->grad_host && !(c->grad_host = malloc(bytes + 4)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory for the gradients' host copy");
    bg_status_t st = bg_backend_copy(rt->conf.be, c->grad_host, rt->flat.grad, bytes,
                                     BG_COPY_D2H, rt->compute);
    for (int i = 0; i < rt->nlc && st == BG_OK; i++)
        if (rt->lc[i].tied_len)
            st = bg_backend_copy(rt->conf.be, rt->lc[i].tied_host, rt->lc[i].tied_dev,
                                 rt->lc[i].tied_len * 4, BG_COPY_D2H, rt->compute);
    return st == BG_OK ? bg_stream_synchronize(rt->conf.be, rt->compute) : st;
}

bg_status_t bg_rt_ps_step_(bg_rt_t *rt, int64_t t, bool *overflow)
{
    bg_status_t st = rt->ps ? BG_OK : ps_start(rt, t);
    struct rt_ps *c = rt->ps;
    if (st != BG_OK)
        return st;
    int64_t used = INT64_MAX;
    for (int k = 0; k < c->K; k++)
        if (talks(rt, k) && c->have[k] < used)
            used = c->have[k];
    c->hist[t - used < BG_PS_HIST - 1 ? t - used : BG_PS_HIST - 1]++;
    st = grads_to_host(rt);
    for (int k = 0; k < c->K && st == BG_OK; k++)
        if (talks(rt, k))
            st = push(rt, k, t, used);
    bool exact;
    int64_t need = version_needed(rt, t, &exact);
    c->installed = c->state = false;
    /* A hosted server serves what this rank is about to need (waiting),
     * before the pull waits for it; alone, also whatever else is complete.
     * With more servers an update ends in their norm allreduce, which may
     * only start where every host starts it (the same bound). */
    if (st == BG_OK && c->srv)
        st = bg_ps_srv_serve_(c->srv, c->K == 1 ? t : need - 1, need - 1);
    for (int k = 0; k < c->K && st == BG_OK; k++)
        if (talks(rt, k))
            st = pull(rt, k, t, need, exact);
    if (st == BG_OK) /* after the last push, every push has been taken */
        st = sends_progress(rt, t + 1 == rt->conf.ps.steps);
    if (st == BG_OK && c->srv && t + 1 == rt->conf.ps.steps)
        st = bg_ps_srv_finish_(c->srv);
    if (st == BG_OK && c->installed)
        st = refresh(rt);
    if (st != BG_OK)
        return st;
    *overflow = c->installed && (c->last.flags & PS_F_OVERFLOW);
    rt->stats->lr = c->last.scale;
    rt->stats->loss_scale = rt->loss_scale;
    rt->stats->skipped = *overflow;
    rt->stats->grad_norm = *overflow ? 0.0 : c->last.norm / rt->loss_scale;
    return BG_OK;
}

void bg_rt_ps_free_(bg_rt_t *rt)
{
    struct rt_ps *c = rt->ps;
    if (!c)
        return;
    for (size_t i = 0; i < c->nsends; i++)
        bg_tp_cancel(rt->conf.tp, c->sends[i].req), free(c->sends[i].buf);
    for (int k = 0; k < c->K; k++) {
        if (c->rreq && c->rreq[k])
            bg_tp_cancel(rt->conf.tp, c->rreq[k]);
        if (c->rbuf)
            free(c->rbuf[k]);
    }
    bg_ps_srv_free_(c->srv);
    free(c->sends), free(c->have), free(c->rbuf), free(c->rreq), free(c->grad_host);
    bg_ps_layout_free_(&c->L);
    free(c);
    rt->ps = NULL;
}

void bg_rt_ps_staleness(const bg_rt_t *rt, int64_t hist[BG_PS_HIST])
{
    for (int i = 0; i < BG_PS_HIST; i++)
        hist[i] = rt->ps ? rt->ps->hist[i] : 0;
}

void bg_rt_ps_stragglers(const bg_rt_t *rt, int64_t *episodes, int64_t *gaps)
{
    *episodes = rt->ps ? rt->ps->episodes : 0;
    *gaps = rt->ps ? rt->ps->gaps : 0;
}
