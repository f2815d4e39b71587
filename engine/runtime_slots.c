/*
 * engine/runtime_slots.c -- micro-batch slots: what one micro-batch holds
 * on one local chunk (values, saved scratch, gradient accumulators, the
 * messages in and out), and the per-micro-batch loss slots.
 *
 * Owns the slot table (mb-major, grown on demand: an evaluation may run
 * more micro-batches than a step) and the buffers a slot points at, which
 * it returns to the cache. Growing can fail (out of memory, table left as
 * it was); opening a slot fails only for a micro-batch outside the table;
 * releasing never fails.
 * Must NOT run compute or decide when a micro-batch's data may go (the
 * compute and transfer parts do).
 */
#include <string.h>

#include "base/grow.h"
#include "engine/runtime_impl.h"

static void slot_arrays_free(rt_slot_t *s)
{
    free(s->val), free(s->own), free(s->gacc), free(s->gown), free(s->saved);
    free(s->act_recv), free(s->act_req), free(s->grad_send), free(s->act_send);
    free(s->grad_recv), free(s->grad_req);
    memset(s, 0, sizeof(*s));
}

/* Per-tensor and per-edge arrays of a closed slot of chunk ch. */
static bg_status_t slot_arrays_alloc(bg_rt_t *rt, const rt_chunk_t *ch, rt_slot_t *s)
{
    size_t nt = (size_t)rt->net->n_tensors;
    memset(s, 0, sizeof(*s));
    s->val = calloc(nt + 1, sizeof(void *));
    s->own = calloc(nt + 1, 1);
    s->gacc = calloc(nt + 1, sizeof(void *));
    s->gown = calloc(nt + 1, 1);
    s->saved = calloc((size_t)(ch->l1 - ch->l0) + 1, sizeof(void *));
    s->act_recv = calloc((size_t)ch->n_in + 1, sizeof(void *));
    s->act_req = calloc((size_t)ch->n_in + 1, sizeof(void *));
    s->grad_send = calloc((size_t)ch->n_in + 1, sizeof(void *));
    s->act_send = calloc((size_t)ch->n_out + 1, sizeof(void *));
    s->grad_recv = calloc((size_t)ch->n_out + 1, sizeof(void *));
    s->grad_req = calloc((size_t)ch->n_out + 1, sizeof(void *));
    if (!s->val || !s->own || !s->gacc || !s->gown || !s->saved || !s->act_recv || !s->act_req ||
        !s->grad_send || !s->act_send || !s->grad_recv || !s->grad_req) {
        slot_arrays_free(s);
        return bg_errorf(BG_ERR_NOMEM, "out of memory for micro-batch slots");
    }
    return BG_OK;
}

/* The device loss slots for `mb` micro-batches (contents are only read for
 * micro-batches whose loss_have is set, so nothing is copied over). */
static bg_status_t loss_slots_grow(bg_rt_t *rt, int mb)
{
    void *dev = NULL;
    if (bg_grow(&rt->loss_have, &rt->caploss, (size_t)mb, 1))
        return bg_errorf(BG_ERR_NOMEM, "out of memory for %d loss slots", mb);
    memset(rt->loss_have + rt->max_mb, 0, (size_t)(mb - rt->max_mb));
    bg_status_t st = bg_rt_dalloc_(rt, sizeof(float) * (size_t)mb, false, &dev);
    if (st != BG_OK)
        return st;
    bg_rt_dfree_(rt, rt->loss_dev);
    rt->loss_dev = dev;
    return BG_OK;
}

bg_status_t bg_rt_slots_reserve_(bg_rt_t *rt, int mb)
{
    if (mb <= rt->max_mb)
        return BG_OK;
    size_t nlc = (size_t)rt->nlc, need = (size_t)mb * nlc;
    if (nlc && (size_t)mb > SIZE_MAX / nlc)
        return bg_errorf(BG_ERR_INVALID, "%d micro-batches x %zu chunks overflow", mb, nlc);
    if (bg_grow(&rt->slots, &rt->capslots, need + 1, sizeof(rt_slot_t)))
        return bg_errorf(BG_ERR_NOMEM, "out of memory for %d micro-batch slots", mb);
    size_t have = (size_t)rt->max_mb * nlc;
    for (size_t i = have; i < need; i++) {
        bg_status_t st = slot_arrays_alloc(rt, &rt->lc[i % nlc], &rt->slots[i]);
        if (st != BG_OK) {
            while (i-- > have)
                slot_arrays_free(&rt->slots[i]);
            return st;
        }
    }
    bg_status_t st = loss_slots_grow(rt, mb);
    if (st != BG_OK) {
        for (size_t i = have; i < need; i++)
            slot_arrays_free(&rt->slots[i]);
        return st;
    }
    rt->max_mb = mb;
    return BG_OK;
}

bg_status_t bg_rt_slot_open_(bg_rt_t *rt, int mb, int lci, rt_slot_t **out)
{
    if (mb < 0 || mb >= rt->max_mb)
        return bg_errorf(BG_ERR_INTERNAL, "micro-batch %d out of range", mb);
    rt_slot_t *s = rt_slot_at(rt, mb, lci);
    if (!s->live) {
        s->live = true;
        s->materialized = false;
        s->mb = mb;
    }
    *out = s;
    return BG_OK;
}

void bg_rt_slot_drop_value_(bg_rt_t *rt, rt_slot_t *s, int t)
{
    if (s->own[t])
        bg_rt_dfree_(rt, s->val[t]);
    s->val[t] = NULL;
    s->own[t] = 0;
}

static void slot_drop_grad(bg_rt_t *rt, rt_slot_t *s, int t)
{
    if (s->gown[t])
        bg_rt_dfree_(rt, s->gacc[t]);
    s->gacc[t] = NULL;
    s->gown[t] = 0;
}

void bg_rt_slot_drop_saved_(bg_rt_t *rt, int lci, rt_slot_t *s, int l)
{
    int k = l - rt->lc[lci].l0;
    bg_rt_dfree_(rt, s->saved[k]);
    s->saved[k] = NULL;
}

/* Output gradient accumulator of t, when the slot allocated it. */
void bg_rt_slot_drop_grad_(bg_rt_t *rt, rt_slot_t *s, int t)
{
    slot_drop_grad(rt, s, t);
}

/* Receives still posted are cancelled: their data will not be read. */
static void release_edges(bg_rt_t *rt, const rt_chunk_t *ch, rt_slot_t *s, bool keep_sends)
{
    for (int i = 0; i < ch->n_in; i++) {
        if (s->act_req[i])
            bg_tp_cancel(rt->conf.tp, s->act_req[i]);
        s->act_req[i] = NULL;
        bg_rt_dfree_(rt, s->act_recv[i]);
        s->act_recv[i] = NULL;
        if (!keep_sends) {
            bg_rt_dfree_(rt, s->grad_send[i]);
            s->grad_send[i] = NULL;
        }
    }
    for (int i = 0; i < ch->n_out; i++) {
        if (s->grad_req[i])
            bg_tp_cancel(rt->conf.tp, s->grad_req[i]);
        s->grad_req[i] = NULL;
        if (!keep_sends) {
            bg_rt_dfree_(rt, s->act_send[i]);
            s->act_send[i] = NULL;
        }
        bg_rt_dfree_(rt, s->grad_recv[i]);
        s->grad_recv[i] = NULL;
    }
}

void bg_rt_slot_release_(bg_rt_t *rt, int lci, rt_slot_t *s, bool keep_sends)
{
    rt_chunk_t *ch = &rt->lc[lci];
    for (int t = 0; t < rt->net->n_tensors; t++) {
        bg_rt_slot_drop_value_(rt, s, t);
        slot_drop_grad(rt, s, t);
    }
    for (int l = ch->l0; l < ch->l1; l++)
        bg_rt_slot_drop_saved_(rt, lci, s, l);
    release_edges(rt, ch, s, keep_sends);
    s->materialized = false;
    if (!keep_sends)
        s->live = false;
}

void bg_rt_slots_reset_(bg_rt_t *rt)
{
    for (int m = 0; m < rt->max_mb; m++)
        for (int i = 0; i < rt->nlc; i++) {
            rt_slot_t *s = rt_slot_at(rt, m, i);
            if (s->live)
                bg_rt_slot_release_(rt, i, s, false);
        }
}

void bg_rt_slots_free_(bg_rt_t *rt)
{
    for (size_t i = 0; rt->slots && i < (size_t)rt->max_mb * (size_t)rt->nlc; i++)
        slot_arrays_free(&rt->slots[i]);
    free(rt->slots);
    free(rt->loss_have);
    rt->slots = NULL;
    rt->loss_have = NULL;
    rt->max_mb = 0;
    rt->capslots = rt->caploss = 0;
}
