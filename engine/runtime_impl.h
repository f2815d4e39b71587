/*
 * engine/runtime_impl.h -- the inside of bg_rt_t, shared by the executor's
 * parts (engine/runtime*.c) and nothing else:
 *
 *   runtime.c          create/free, the action loop, step and eval: the
 *                      top, which calls the parts; no part calls it
 *   runtime_cache.c    device buffer cache
 *   runtime_slots.c    micro-batch slots and the per-micro-batch loss slots
 *   runtime_timing.c   per-action events and their device times
 *   runtime_compute.c  F, B and W of one micro-batch on one chunk
 *   runtime_xfer.c     transfers, the send queues (pending, deferred)
 *   runtime_grad.c     gradient sync (allreduce, tied weights) and the
 *                      optimizer step on the backend, loss scaling
 *   runtime_params.c   parameters: flat buffers, views, upload, tied-weight
 *                      holders, the loss scale and its device dloss
 *   runtime_2bw.c      a flush-free schedule's (2bw) weight versions,
 *                      gradient sets, carried micro-batches and drain
 *   runtime_zero.c     the update ranges and the masters' cast to the
 *                      compute copy; ZeRO-1: this replica's shards, the
 *                      compute copy's all-gather, the norm's pieces, the
 *                      shard's host copies a checkpoint reads and writes
 *
 * Shared functions end in '_' (private to the engine). Must NOT be included
 * outside engine/runtime*.c: everyone else uses engine/runtime.h.
 */
#ifndef BG_RUNTIME_IMPL_H
#define BG_RUNTIME_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine/runtime.h"

/* Receives are posted this many actions ahead of the one that needs them. */
#define RT_LOOKAHEAD 8

/* One micro-batch on one local chunk. */
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
    /* The data-parallel bucket: the range [f0, f0 + grad_len) of the flat
     * gradient buffer that holds the parameters only this chunk uses (their
     * accumulators are their gradients: no copy). */
    float *grad_dev;
    int64_t f0;
    size_t grad_len;
    /* Accumulators of this chunk's uses of parameters with several users
     * (tied), contiguous, and their host mirror for the tied-weight
     * exchange (an alias on the CPU); folded into the flat buffer at the
     * step. */
    float *tied_dev, *tied_host;
    size_t tied_len;
    bg_tp_coll_t *ar, *ar_tied; /* data-parallel sync in flight */
    unsigned char *w_needs; /* [n_tensors]: some layer's W here reads this value */
} rt_chunk_t;

typedef struct rt_param {
    int p; /* graph param id */
    int64_t n;
    int64_t off; /* first element in the flat buffers (rt_flat_t) */
    bool owned;
    float *master, *state[2]; /* host views into the flat buffers or their host mirrors */
    void *dev;                /* compute copy: a view into rt->flat.dev */
    int n_remote;             /* pipeline ranks holding other users */
    int *remote_rank;         /* [n_remote] global ranks */
} rt_param_t;

/*
 * One range of the flat buffer the update works on: the group range
 * [g0, g0 + glen) (a chunk's bucket, or the tied parameters' region) and
 * the part of it this replica updates, [s0, s0 + slen), whose masters and
 * state sit at [c0, c0 + slen) of the compact buffers. Without ZeRO one
 * range covers everything (g = s, c0 = 0); under ZeRO-1 s is the replica's
 * transport shard of g (bg_tp_shard_offset over glen).
 */
typedef struct rt_zrange {
    int64_t g0, glen, s0, slen, c0;
    bg_flat_segs_t segs; /* the held parameters' cuts of [s0, s0 + slen), rebased to s0 */
    void *segs_dev;
    int64_t *off_h;
    uint8_t *decay_h;
} rt_zrange_t;

/*
 * Everything the step touches, as flat buffers over the held parameters
 * (each parameter's range starts at a multiple of RT_FLAT_ALIGN elements;
 * the gaps are zeros and stay zeros) in a fixed order: for each local chunk
 * the parameters only it uses (global order; the chunk's bucket), then the
 * parameters with several users (global order). Backend memory: grad (f32,
 * all n) and dev (compute dtype, all n; master itself on a CPU f32 run
 * without ZeRO); master and state (f32) hold the update ranges' parts only
 * (zn elements, compact: everything without ZeRO, this replica's shards
 * under ZeRO-1, runtime_zero.c). Host mirrors of master and state (all n)
 * back the checkpoint views: on a device backend always without ZeRO,
 * under ZeRO-1 only between a gather and its release; on the CPU without
 * ZeRO they are the buffers themselves.
 */
#define RT_FLAT_ALIGN 64
typedef struct rt_flat {
    int64_t n; /* elements, gaps included */
    float *master, *state[2], *grad;
    void *dev;
    float *host_master, *host_state[2];
    int64_t *off_h;         /* [nparam + 1] segment k's first element, flat order */
    uint8_t *decay_h;       /* [nparam] */
    int *seg_par;           /* [nparam] segment k is parameter par[seg_par[k]] */
    int64_t t0;             /* first element of the tied parameters' region */
    void *segs_dev;         /* offsets then decay flags, backend memory */
    bg_flat_segs_t segs;    /* one segment per held parameter, flat order */
    float *ssq_dev, *ssq_h; /* [nparam] sums of squares of the gradient, per segment */
    bool zero;              /* ZeRO-1: master and state are this replica's shards */
    bool host_own;          /* host_master/host_state are allocations of their own */
    int nz;                 /* update ranges */
    rt_zrange_t *zr;        /* [nz] */
    bg_tp_coll_t **ag;      /* [nz] ZeRO-1: range r's all-gather still in flight, else NULL */
    int64_t zn;             /* elements of master and state: sum of the slen */
} rt_flat_t;

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
    void *buf; /* the message (owned); allreduce: the bucket as of the issue */
    size_t bytes;
    float *tied; /* allreduce: the tied users' bucket as of the issue */
} rt_deferred_t;

/* Compute-stream events around one compute action, made once and reused. */
typedef struct rt_mark {
    bg_event_t *begin, *end;
} rt_mark_t;

typedef struct rt_2bw rt_2bw_t; /* runtime_2bw.c */

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
    rt_flat_t flat;
    float loss_scale;   /* gradients are of loss * loss_scale (1: off) */
    int64_t scale_good; /* good steps since the last change of the scale */
    float **uacc_dev; /* [layer * BG_MAX_PARAMS + slot] accumulator (device), local layers */
    float **uacc_host;
    /* micro-batch slots (runtime_slots.c) */
    int max_mb;       /* micro-batches the slot table holds */
    rt_slot_t *slots; /* [max_mb * nlc], mb-major */
    size_t capslots;
    float *loss_dev;          /* [max_mb] losses of the step's micro-batches (device) */
    unsigned char *loss_have; /* [max_mb]: this run computed micro-batch m's loss */
    size_t caploss;
    void *workspace;
    size_t workspace_bytes;
    float *dloss; /* device scalar: d(objective)/d(loss of one micro-batch) */
    /* send queues (runtime_xfer.c) */
    rt_pending_t *pend;
    size_t npend, cappend;
    rt_deferred_t *defer;
    size_t ndefer, capdefer;
    bg_tp_group_t *dp_group, *pp_group;
    /* timing (runtime_timing.c) */
    bg_rt_event_t *ev;
    size_t nev, capev;
    int *ev_mark;     /* [capev]: event i's mark pair, or -1 (host-timed) */
    size_t capevmark; /* capacity of ev_mark */
    rt_mark_t *marks; /* compute-stream events around each compute action */
    size_t nmark, capmark;
    bg_event_t *evorigin; /* recorded at the start of the step */
    double t_origin;
    bg_stream_t *compute; /* every layer call, packing copy and accumulation */
    /* device buffer cache (runtime_cache.c) */
    rt_buf_t *bufs;
    size_t nbufs, capbufs;
    /* the run in progress */
    bg_rt_feed_fn feed;
    void *feed_ctx;
    bg_rt_output_fn on_output; /* eval only; NULL: nobody asked */
    void *output_ctx;
    bg_rt_stats_t *stats;
    bool eval;
    bg_sched_t *eval_sched; /* forward-only lists of the last evaluation's size */
    rt_2bw_t *tbw;          /* flush-free schedule (2bw) state; NULL otherwise */
    int64_t last_step;      /* the last training step run (the drain follows it) */
    unsigned weights_set;   /* bumped when the weights are set from outside (upload) */
    struct rt_ps *ps;       /* parameter-server client (runtime_ps.c), made at the first step */
};

/* ------------------------------------------------------- small shared helpers */

/* Global rank of pipeline stage `stage` in replica `dp`: the one place the
 * stage-major rank numbering (docs/engine.md) is spelled out. */
static inline int rt_global_rank(const bg_rt_t *rt, int dp, int stage)
{
    return dp * rt->conf.stages + stage;
}

/* Global rank of pipeline stage `stage` in this rank's replica. */
static inline int rt_peer_rank(const bg_rt_t *rt, int stage)
{
    return rt_global_rank(rt, rt->conf.dp, stage);
}

static inline int rt_local_of(const bg_rt_t *rt, int chunk)
{
    return chunk >= 0 && chunk < rt->net->n_chunks ? rt->chunk_local[chunk] : -1;
}

static inline int rt_rank_of_chunk(const bg_rt_t *rt, int chunk)
{
    return rt_peer_rank(rt, bg_sched_chunk_rank(rt->conf.sched, chunk));
}

static inline rt_slot_t *rt_slot_at(bg_rt_t *rt, int mb, int lci)
{
    return &rt->slots[(size_t)mb * (size_t)rt->nlc + (size_t)lci];
}

/* Device bytes of tensor t (float tensors in the compute dtype). */
static inline size_t rt_tensor_bytes(const bg_rt_t *rt, int t)
{
    const bg_shape_t *s = &bg_graph_tensor(rt->g, t)->shape;
    return (size_t)bg_shape_numel(s) * (size_t)bg_spec_dtype_bytes(s->dtype, rt->conf.dtype);
}

static inline size_t rt_tensor_elems(const bg_rt_t *rt, int t)
{
    return (size_t)bg_shape_numel(&bg_graph_tensor(rt->g, t)->shape);
}

/* Compute-dtype element size of gradient buffers for activations. */
static inline size_t rt_act_esize(const bg_rt_t *rt)
{
    return bg_dtype_size(rt->conf.dtype);
}

/* Position of net edge e among chunk ch's incoming / outgoing edges, or -1. */
static inline int rt_edge_in(const rt_chunk_t *ch, int e)
{
    for (int i = 0; i < ch->n_in; i++)
        if (ch->in_edge[i] == e)
            return i;
    return -1;
}

static inline int rt_edge_out(const rt_chunk_t *ch, int e)
{
    for (int i = 0; i < ch->n_out; i++)
        if (ch->out_edge[i] == e)
            return i;
    return -1;
}

/* Prefix the recorded message with this rank's identity; returns st. */
static inline bg_status_t bg_rt_err_(const bg_rt_t *rt, bg_status_t st)
{
    return bg_error_prefix(st, "rank %d (stage %d, dp %d): ", rt_peer_rank(rt, rt->conf.stage),
                           rt->conf.stage, rt->conf.dp);
}

/* ------------------------------------------------------------- runtime_cache.c */

/* Device memory of `bytes` from the cache, or newly allocated. A buffer the
 * transport will write (`for_transport`) is only reused once the compute
 * that last read it has passed. Fails on device out-of-memory (message
 * recorded); *out set only on BG_OK. */
bg_status_t bg_rt_dalloc_(bg_rt_t *rt, size_t bytes, bool for_transport, void **out);
/* A buffer only compute uses (reused at once: the stream orders uses). */
static inline bg_status_t rt_dalloc(bg_rt_t *rt, size_t bytes, void **out)
{
    return bg_rt_dalloc_(rt, bytes, false, out);
}
/* Back to the cache (NULL is fine). Cannot fail: a buffer whose event
 * cannot be recorded is simply never reused. */
void bg_rt_dfree_(bg_rt_t *rt, void *p);
/* Free every cached buffer; the device must be idle. */
void bg_rt_cache_release_(bg_rt_t *rt);

/* ------------------------------------------------------------- runtime_slots.c */

/* Make the slot table and the loss slots hold `mb` micro-batches (grows,
 * never shrinks; slots must all be closed). BG_ERR_NOMEM on failure, with
 * the table unchanged. */
bg_status_t bg_rt_slots_reserve_(bg_rt_t *rt, int mb);
/* The slot of (mb, local chunk), opened if closed. BG_ERR_INTERNAL for an
 * mb outside the table. */
bg_status_t bg_rt_slot_open_(bg_rt_t *rt, int mb, int lci, rt_slot_t **out);
void bg_rt_slot_drop_value_(bg_rt_t *rt, rt_slot_t *s, int t);
void bg_rt_slot_drop_grad_(bg_rt_t *rt, rt_slot_t *s, int t);
void bg_rt_slot_drop_saved_(bg_rt_t *rt, int lci, rt_slot_t *s, int l);
/* Free the slot's buffers and cancel its receives. keep_sends: packed
 * messages stay for their SEND actions (after W; after F in an evaluation)
 * and the slot stays open. Cannot fail. */
void bg_rt_slot_release_(bg_rt_t *rt, int lci, rt_slot_t *s, bool keep_sends);
/* Close every open slot (end of a step or evaluation). Cannot fail. */
void bg_rt_slots_reset_(bg_rt_t *rt);
/* Free the slot table itself (after bg_rt_slots_reset_). */
void bg_rt_slots_free_(bg_rt_t *rt);

/* ------------------------------------------------------------ runtime_timing.c */

/* Record action `a`'s host times and its event pair `mark` (-1: none).
 * Best effort: out of memory drops the event, never fails the step. */
void bg_rt_event_add_(bg_rt_t *rt, const bg_action_t *a, double t0, double t1, int mark);
/* The optimizer's wait (t0..t1, bg_now_s) for global chunk c's allreduce;
 * best effort like bg_rt_event_add_. */
void bg_rt_event_wait_(bg_rt_t *rt, int c, double t0, double t1);
/* Record the opening event of a compute action; returns the pair's index,
 * or -1 (then the action is timed on the host). Cannot fail. */
int bg_rt_mark_begin_(bg_rt_t *rt);
bg_status_t bg_rt_mark_end_(bg_rt_t *rt, int mark);
/* After the list: replace compute actions' host times by device times and
 * sum busy time. Synchronises the compute stream. */
bg_status_t bg_rt_marks_resolve_(bg_rt_t *rt);
void bg_rt_timing_free_(bg_rt_t *rt);

/* ----------------------------------------------------------- runtime_compute.c */

/* F, B and W of micro-batch mb on local chunk lci. Errors name the action's
 * missing input where one never arrived; device errors pass through. */
bg_status_t bg_rt_forward_(bg_rt_t *rt, int mb, int lci);
bg_status_t bg_rt_backward_input_(bg_rt_t *rt, int mb, int lci);
bg_status_t bg_rt_backward_weight_(bg_rt_t *rt, int mb, int lci);

/* -------------------------------------------------------------- runtime_xfer.c */

/* Post the receive of a RECV action early (idempotent). */
bg_status_t bg_rt_recv_post_(bg_rt_t *rt, const bg_action_t *a);
/* The RECV action itself: post if needed, then wait for the data. */
bg_status_t bg_rt_recv_wait_(bg_rt_t *rt, const bg_action_t *a);
/* The SEND action: queue the packed message behind the compute producing it. */
bg_status_t bg_rt_send_(bg_rt_t *rt, const bg_action_t *a);
/* Queue chunk lci's gradient allreduce behind the compute queued so far. */
bg_status_t bg_rt_allreduce_start_(bg_rt_t *rt, int lci);
/* Hand ready transfers to the transport; `wait` blocks until all are. */
bg_status_t bg_rt_defer_progress_(bg_rt_t *rt, bool wait);
/* Complete finished sends; `wait` drains them all (timeouts cancel). */
bg_status_t bg_rt_pend_progress_(bg_rt_t *rt, bool wait);
/* Free queued transfers (teardown). */
void bg_rt_xfer_free_(bg_rt_t *rt);

/* -------------------------------------------------------------- runtime_grad.c */

/* OPTIMIZER (once every deferred sync has started: bg_rt_defer_progress_
 * with wait): wait for the data-parallel sync, fold tied gradients, clip,
 * update, zero the accumulators. Fills rt->stats' grad_norm and lr. */
bg_status_t bg_rt_optimizer_(bg_rt_t *rt, int64_t step);
/* Start chunk lci's data-parallel sync (its ready event has passed): the
 * bucket's allreduce (zero 0) or reduce-scatter (ZeRO-1), and the tied
 * accumulators' allreduce. One function per mode behind this entry. */
bg_status_t bg_rt_dp_sync_start_(bg_rt_t *rt, int lci, float *grad, float *tied);
/* Every local chunk's gradient bucket and the per-use accumulators in it
 * (rt->uacc_*, allocated by bg_rt_params_setup_). */
bg_status_t bg_rt_buckets_setup_(bg_rt_t *rt);

/* ---------------------------------------------------------------- runtime_ps.c */

/* OPTIMIZER in ps mode: push the accumulators, install the versions the
 * staleness rule asks for; *overflow: the newest installed update was
 * skipped. Fills rt->stats like bg_rt_optimizer_. Transport errors (a dead
 * server is named by the transport), out of memory. */
bg_status_t bg_rt_ps_step_(bg_rt_t *rt, int64_t step, bool *overflow);
void bg_rt_ps_free_(bg_rt_t *rt);

/* ------------------------------------------------------------ runtime_params.c */

/* Parameters this rank holds (initialised from conf.seed by global name),
 * their optimizer state, device copies and tied-weight holders. Errors name
 * the parameter; partial state is freed by bg_rt_params_free_. */
bg_status_t bg_rt_params_setup_(bg_rt_t *rt);
void bg_rt_params_free_(bg_rt_t *rt);

/* -------------------------------------------------------------- runtime_zero.c */

/* Masters (f32) to the compute copy: one cast per update range, on the
 * compute stream; under ZeRO-1 then the all-gather of the compute copy
 * over the replicas (host sync, collective). */
bg_status_t bg_rt_params_cast_(bg_rt_t *rt);
/* The same after an update: under ZeRO-1 the all-gathers are left in
 * flight for the next step's actions to wait for, range by range (not
 * under 2bw, whose stash reads the copy at once). */
bg_status_t bg_rt_params_cast_next_(bg_rt_t *rt);
/* Before local chunk lci's compute: its range's all-gather and the shared
 * range's have landed (no-op when none is in flight). Transport errors. */
bg_status_t bg_rt_zero_ready_(bg_rt_t *rt, int lci);
/* Every all-gather still in flight has landed: before anything reads or
 * rewrites the compute copy outside the actions. Transport errors. */
bg_status_t bg_rt_zero_settle_(bg_rt_t *rt);
/* Offsets and decay flags (host, [n + 1] and [n]) to backend memory and
 * a segment table over them; *dev is the allocation (rt's cache). */
bg_status_t bg_rt_segs_make_(bg_rt_t *rt, int n, const int64_t *off_h, const uint8_t *decay_h,
                             void **dev, bg_flat_segs_t *out);
/* Point every parameter's views into the host mirrors (NULL when none). */
void bg_rt_views_point_(bg_rt_t *rt);

/* The update ranges (f->n, the layout and the chunks' buckets known):
 * without ZeRO (or with one replica) one over everything; under ZeRO-1 this
 * replica's shard of each chunk's bucket and of the tied region. Fails on
 * out of memory or a device error. */
bg_status_t bg_rt_zero_setup_(bg_rt_t *rt);
/* Under ZeRO-1, after the buckets' reduce-scatters: every parameter's sum
 * of squares is computed by one replica, its norm owner (the one whose
 * shard holds its first element), which first receives the other
 * replicas' reduced pieces of it; keep[k] says whether segment k's sum is
 * this replica's to contribute. Without ZeRO keep[k] = 1 and nothing
 * moves. Transport errors and timeouts pass through. */
bg_status_t bg_rt_zero_norm_pieces_(bg_rt_t *rt, unsigned char *keep);
/* ZeRO-1's parameter initialisation: each held parameter's initial value
 * (from the seed and its global name) into a buffer of its size, its
 * parts in this replica's shards into the masters, then the compute
 * copy's cast and all-gather: no full copy of the parameters is ever
 * made (the state shards start zeroed). Fails on out of memory, device
 * and transport errors. */
bg_status_t bg_rt_zero_init_(bg_rt_t *rt);
/* Settles the all-gathers in flight, frees the update ranges. */
void bg_rt_zero_free_(bg_rt_t *rt);
/* rt->dloss = 1 / (micro-batches * replicas) * loss scale (the loss scale
 * is this file's). Synchronises the compute stream; fails on a device
 * error. */
bg_status_t bg_rt_dloss_upload_(bg_rt_t *rt);

/* --------------------------------------------------------------- runtime_2bw.c */

/* Each is a no-op (or the identity) unless the schedule is flush-free. */

/* After the parameters: the stash (previous weight version) and the
 * bookkeeping. Fails on out-of-memory. */
bg_status_t bg_rt_2bw_setup_(bg_rt_t *rt);
void bg_rt_2bw_free_(bg_rt_t *rt);
/* Slot table size in units of m: 2 for a flush-free schedule, else 1. */
int bg_rt_2bw_slot_factor_(const bg_rt_t *rt);
/* Start running `step`'s list (drain: the carried actions only); after
 * weights were set from outside, the stash restarts from them (W(-1) =
 * W(0)). Device errors pass through. */
bg_status_t bg_rt_2bw_begin_(bg_rt_t *rt, int64_t step, bool drain);
/* Whether action a runs now (0: skipped), with its micro-batch turned into
 * a slot id in *out. Cannot fail. */
int bg_rt_2bw_admit_(bg_rt_t *rt, const bg_action_t *a, bg_action_t *out);
/* Bookkeeping after admitted action a (slot ids) ran. */
void bg_rt_2bw_ran_(bg_rt_t *rt, const bg_action_t *a);
/* The compute copy of parameter p for the version slot s's micro-batch
 * entered with. Cannot fail (a missing version is reported at the end). */
const void *bg_rt_2bw_param_dev_(bg_rt_t *rt, const rt_slot_t *s, const rt_param_t *p);
/* OPTIMIZER: stash the newest version, then step on the delayed gradient. */
bg_status_t bg_rt_2bw_optimizer_(bg_rt_t *rt, int64_t step);
/* The data loader's micro-batch of slot id slot_mb. */
int bg_rt_2bw_feed_mb_(const bg_rt_t *rt, int slot_mb);
/* Whether sends may stay in flight past the end of this list (a 2bw
 * training step, not its drain nor an evaluation). */
bool bg_rt_2bw_sends_cross_(const bg_rt_t *rt);
/* Whether carried micro-batches are open (a drain has work). */
bool bg_rt_2bw_carrying_(const bg_rt_t *rt);
/* End of a list: close slots (keeping carried ones after a good step);
 * returns st, or an internal error when a version was missing. */
bg_status_t bg_rt_2bw_end_(bg_rt_t *rt, bg_status_t st);

#endif
