/*
 * engine/ps_train.c -- the training loop's side of parameter servers
 * (--dp-mode ps): the flags turned into a bg_ps_conf_t, a server rank's
 * whole run (it joins like a worker, then serves instead of stepping), and
 * the staleness histogram every worker contributes to, printed and written
 * to the metrics file by rank 0.
 * BRIGADE_TEST_STEP_DELAY=RANK:MS[:EVERY[:AT]][,...] (tests and benchmarks
 * only) makes rank RANK sleep MS ms before each step with step % EVERY ==
 * AT (default every step): stragglers on demand, in any --dp-mode.
 * Must NOT touch the runtime's inside (engine/runtime_ps.c is the client)
 * or print on any rank but 0 (servers print only straggler notices).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/ps.h"
#include "engine/train_impl.h"

bg_status_t bg_train_staleness_parse(const char *s, int64_t *out)
{
    if (!s) {
        *out = 0;
        return BG_OK;
    }
    if (!strcmp(s, "inf")) {
        *out = BG_PS_STALE_INF;
        return BG_OK;
    }
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < 0 || v > (1LL << 30))
        return bg_errorf(BG_ERR_INVALID, "--staleness %s: expected a step count 0..%d or 'inf'", s,
                         1 << 30);
    *out = v;
    return BG_OK;
}

bool bg_train_ps_on(const bg_train_conf_t *c)
{
    return c->dp_mode && !strcmp(c->dp_mode, "ps");
}

int bg_train_ps_servers(const bg_train_conf_t *c)
{
    return !bg_train_ps_on(c) ? 0 : c->ps_servers > 0 ? c->ps_servers : 1;
}

int bg_train_ps_ranks(const bg_train_conf_t *c)
{
    return c->ps_colocate ? 0 : bg_train_ps_servers(c);
}

bg_status_t bg_train_ps_setup_(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    memset(&t->ps, 0, sizeof(t->ps));
    t->ps.servers = bg_train_ps_servers(c);
    if (!t->ps.servers)
        return BG_OK;
    t->ps.colocate = c->ps_colocate;
    t->ps.first_rank = c->ps_colocate ? 0 : c->stages * c->dp;
    if (c->ps_colocate && t->ps.servers > c->stages * c->dp)
        return bg_errorf(BG_ERR_INVALID,
                         "--ps-colocate: %d servers need as many workers, the "
                         "job has %d",
                         t->ps.servers, c->stages * c->dp);
    t->ps.deterministic = c->deterministic;
    t->ps.sync_every = c->checkpoint_dir ? c->checkpoint_every : 0;
    return bg_train_staleness_parse(c->staleness, &t->ps.staleness);
}

/* The step a resumed run starts at (its servers read only that much of the
 * checkpoint: the workers send them the parameters). */
static bg_status_t resume_step(const bg_train_conf_t *c, int64_t *out)
{
    *out = 0;
    char *path = NULL;
    bg_status_t st = c->resume ? bg_ckpt_dir_latest(c->checkpoint_dir, &path) : BG_OK;
    bg_ckpt_t *ck = NULL;
    if (st == BG_OK && path && (st = bg_ckpt_open(path, &ck)) == BG_OK)
        *out = bg_ckpt_manifest(ck)->step;
    bg_ckpt_close(ck);
    free(path);
    return st;
}

bg_status_t bg_train_serve_(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    bg_ps_serve_conf_t sc = {.ps = t->ps,
                             .index = t->rank - t->ps.first_rank,
                             .stages = t->S,
                             .dps = t->D,
                             .tp = t->tp,
                             .g = t->g,
                             .net = t->net,
                             .sched = t->sched,
                             .optim = c->optim,
                             .timeout_s = wait_bound(t)};
    sc.optim.total = t->steps;
    sc.ps.steps = c->eval_only ? 0 : t->steps; /* evaluation only: nothing to serve */
    bg_device_t dev = strcmp(c->device, "cuda") ? BG_DEV_CPU : BG_DEV_CUDA;
    const char *local = getenv("BRIGADE_LOCAL_RANK");
    bg_status_t st = resume_step(c, &sc.start_step);
    if (st == BG_OK)
        st = bg_backend_create(dev, bg_backend_local_index(dev, local ? atoi(local) : t->rank),
                               &t->be);
    sc.be = t->be;
    return st == BG_OK ? bg_ps_serve(&sc) : st;
}

bg_status_t bg_train_ps_report_(train_t *t)
{
    if (!t->ps.servers)
        return BG_OK;
    int64_t h[BG_PS_HIST], e, g;
    float v[BG_PS_HIST + 2]; /* the histogram, straggler episodes, their gaps' sum */
    bg_rt_ps_staleness(t->rt, h);
    bg_rt_ps_stragglers(t->rt, &e, &g);
    for (int i = 0; i < BG_PS_HIST; i++)
        v[i] = (float)h[i]; /* exact below 2^24 steps x ranks */
    v[BG_PS_HIST] = (float)e, v[BG_PS_HIST + 1] = (float)g;
    bg_status_t st = t->world_group ? bg_tp_allreduce(t->world_group, v, BG_PS_HIST + 2, BG_TP_F32,
                                                      BG_TP_SUM, BG_TP_MEM_HOST, wait_bound(t))
                                    : BG_OK;
    if (st != BG_OK || t->rank != 0)
        return st;
    printf("ps staleness (worker steps by updates missed):");
    for (int i = 0; i < BG_PS_HIST; i++)
        if (v[i] > 0)
            printf(" %d%s:%.0f", i, i == BG_PS_HIST - 1 ? "+" : "", (double)v[i]);
    printf("\n");
    if (t->metrics) {
        fprintf(t->metrics, "{\"run\":\"%s\",\"ps_staleness\":[", t->run_id);
        for (int i = 0; i < BG_PS_HIST; i++)
            fprintf(t->metrics, "%s%.0f", i ? "," : "", (double)v[i]);
        fprintf(t->metrics, "]}\n");
        if (v[BG_PS_HIST] > 0) /* episodes over all ranks, the mean step gap */
            fprintf(t->metrics, "{\"run\":\"%s\",\"ps_stragglers\":%.0f,\"ps_gap\":%.1f}\n",
                    t->run_id, (double)v[BG_PS_HIST], (double)(v[BG_PS_HIST + 1] / v[BG_PS_HIST]));
        fflush(t->metrics);
    }
    return BG_OK;
}

void bg_train_test_delay_(const train_t *t, int64_t step)
{
    const char *v = getenv("BRIGADE_TEST_STEP_DELAY");
    /* RANK:MS[:EVERY[:AT]] entries, comma-separated: the first naming
     * this rank on this step (step % EVERY == AT) sleeps. */
    for (; v && *v; v = strchr(v, ',') ? strchr(v, ',') + 1 : NULL) {
        int r = -1, ms = 0, every = 1, at = 0;
        if (sscanf(v, "%d:%d:%d:%d", &r, &ms, &every, &at) < 2 || r != t->rank || ms <= 0 ||
            every < 1 || step % every != at)
            continue;
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
}
