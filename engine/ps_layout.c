/*
 * engine/ps_layout.c -- the layout parameter servers and their clients
 * share (engine/ps_impl.h): parameter p lives on server p % K; stage s's
 * push to server k carries, for each of k's parameters in ascending order,
 * the accumulators of the users on stage s in the graph's user order; a
 * reply carries k's parameters that stage s holds, ascending (then, with
 * state, each state array in the same order). Each use also records its
 * place in its data-parallel bucket, laid out as the runtime lays it
 * (engine/runtime_params.c, runtime_grad.c): a chunk's bucket holds the
 * parameters whose one user is in it, ascending, each at a multiple of
 * RT_FLAT_ALIGN; its tied bucket the uses in it of parameters with several
 * users, ascending, each parameter's uses in user order, unpadded.
 * Must NOT allocate per step or depend on anything but the graph, the
 * chunking, the schedule's chunk map, S and K.
 */
#include <stdlib.h>

#include "engine/ps_impl.h"
#include "engine/runtime_impl.h" /* RT_FLAT_ALIGN: the buckets must match */

/* Bucket offset of every (layer, slot) use, and each chunk's bucket
 * lengths: clen[c] of its one-user bucket, tlen[c] of its tied bucket. */
static void bucket_offsets(const bg_graph_t *g, const bg_net_t *net, int64_t *off, int64_t *clen,
                           int64_t *tlen)
{
    for (int p = 0; p < net->n_params; p++) {
        const bg_net_param_t *np = &net->params[p];
        int64_t n = bg_graph_param(g, p)->numel;
        for (int u = 0; u < np->n_users; u++) {
            int c = net->layer_chunk[np->users[u]];
            int key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
            int64_t *len = np->n_users == 1 ? &clen[c] : &tlen[c];
            off[key] = *len;
            *len += np->n_users == 1 ? (n + RT_FLAT_ALIGN - 1) / RT_FLAT_ALIGN * RT_FLAT_ALIGN : n;
        }
    }
}

static bg_status_t fill_uses(const bg_graph_t *g, const bg_net_t *net, const bg_sched_t *sched,
                             const int64_t *off, const int64_t *clen, const int64_t *tlen,
                             ps_layout_t *l)
{
    for (int p = 0; p < l->np; p++) {
        const bg_net_param_t *np = &net->params[p];
        ps_par_t *pp = &l->par[p];
        pp->server = p % l->K;
        pp->n = bg_graph_param(g, p)->numel;
        pp->nu = np->n_users;
        pp->use = calloc((size_t)np->n_users + 1, sizeof(ps_use_t));
        if (!pp->use)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter-server layout");
        pp->first_holder = l->S;
        for (int u = 0; u < np->n_users; u++) {
            ps_use_t *us = &pp->use[u];
            int c = net->layer_chunk[np->users[u]];
            us->stage = bg_sched_chunk_rank(sched, c);
            us->key = np->users[u] * BG_MAX_PARAMS + np->user_slot[u];
            us->boff = off[us->key];
            us->blen = np->n_users == 1 ? clen[c] : tlen[c];
            int64_t *pn = &l->push_n[us->stage * l->K + pp->server];
            us->poff = *pn;
            *pn += pp->n;
            if (us->stage < pp->first_holder)
                pp->first_holder = us->stage;
        }
        for (int s = 0; s < l->S; s++)
            if (bg_ps_holds_(l, p, s))
                l->reply_n[s * l->K + pp->server] += pp->n;
    }
    return BG_OK;
}

bg_status_t bg_ps_layout_create_(const bg_graph_t *g, const bg_net_t *net, const bg_sched_t *sched,
                                 int S, int K, int nst, ps_layout_t *out)
{
    *out = (ps_layout_t){.S = S, .K = K, .np = net->n_params, .nst = nst};
    size_t nkeys = (size_t)net->n_layers * BG_MAX_PARAMS + 1;
    int64_t *off = calloc(nkeys, sizeof(int64_t));
    int64_t *clen = calloc((size_t)net->n_chunks + 1, sizeof(int64_t));
    int64_t *tlen = calloc((size_t)net->n_chunks + 1, sizeof(int64_t));
    out->par = calloc((size_t)out->np + 1, sizeof(ps_par_t));
    out->push_n = calloc((size_t)S * (size_t)K + 1, sizeof(int64_t));
    out->reply_n = calloc((size_t)S * (size_t)K + 1, sizeof(int64_t));
    bg_status_t st = BG_OK;
    if (!off || !clen || !tlen || !out->par || !out->push_n || !out->reply_n)
        st = bg_errorf(BG_ERR_NOMEM, "out of memory for the parameter-server layout");
    if (st == BG_OK) {
        bucket_offsets(g, net, off, clen, tlen);
        st = fill_uses(g, net, sched, off, clen, tlen, out);
    }
    free(off);
    free(clen);
    free(tlen);
    return st;
}

void bg_ps_layout_free_(ps_layout_t *l)
{
    for (int p = 0; l->par && p < l->np; p++)
        free(l->par[p].use);
    free(l->par);
    free(l->push_n);
    free(l->reply_n);
    *l = (ps_layout_t){0};
}

bool bg_ps_holds_(const ps_layout_t *l, int p, int s)
{
    for (int u = 0; u < l->par[p].nu; u++)
        if (l->par[p].use[u].stage == s)
            return true;
    return false;
}
