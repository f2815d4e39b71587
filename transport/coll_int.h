/*
 * transport/coll_int.h -- the collectives' private state, shared by
 * coll.c (groups, scratch, handles, driving, broadcast, barrier),
 * ring.c (reduce-scatter, all-gather, allreduce) and direct.c (their
 * same-host direct path), and by the transport tests that check the
 * scratch cache.
 *
 * Collective tag (the 44 bits callers own, in class BG_TP_CLASS_COLL):
 *   [43:32] group id (hash of the rank list)  [31:20] op sequence mod 4096
 *   [19:10] step                                [9:0] segment
 *
 *   direct.c's notices (ready / verdict / read-done): step 1023 (above any
 *   ring step), segment = the notice's round.
 *
 * Direction: ring.c calls direct.c and coll.c, direct.c calls coll.c,
 * never the reverse; coll.c drives each handle through the advance
 * function its starter registered.
 *
 * Must NOT be included outside coll.c, ring.c, direct.c and tests/transport.
 */
#ifndef BG_TP_COLL_INT_H
#define BG_TP_COLL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "transport/p2p.h"
#include "transport/reduce.h"

#define BG_TP_LANES 16       /* most ring segments in flight per collective */
#define BG_TP_MAX_SEGS 1024  /* the segment field is 10 bits */
#define BG_TP_COLL_ERRLEN 400

/* A scratch buffer: receive space for reductions, reused across collectives. */
typedef struct bg_tp_scratch {
    void *ptr;
    size_t cap;
    bg_tp_mem_t mem;
    struct bg_tp_scratch *next;
} bg_tp_scratch_t;

struct bg_tp_group {
    bg_tp_t *tp;
    int n, me;
    int *ranks;
    unsigned gid;
    unsigned seq;
    int device;                   /* the context's CUDA device (-1 none) */
    bg_tp_scratch_t *idle;        /* scratch no running collective holds */
    size_t scratch_allocs;        /* buffers ever allocated: the cache's witness */
    int live;                     /* collective handles not yet freed */
    int destroyed;                /* destroy came while live > 0: the last frees */
    int cma;                      /* direct.c: 0 not probed yet, 1 usable, -1 not,
                                     -2 the probing collective failed unsettled */
    int cma_probing;              /* direct.c: a collective probing it was started */
    long *cma_pids;               /* direct.c: members' pids as probed [n] */
#ifdef BG_HAVE_CUDA
    bg_tp_cuda_red_t *red; /* device reductions: stream + events, on first use */
#endif
};

typedef enum {
    COLL_ALLREDUCE,
    COLL_REDUCE_SCATTER,
    COLL_ALLGATHER,
    COLL_BCAST,
    COLL_BARRIER
} bg_tp_coll_kind_t;

/* One pipelined segment of a ring (or broadcast chain) moving step by step. */
typedef struct {
    int busy;
    int reducing; /* a device reduction of this step is queued (ev) */
    int received; /* this step's receive is in (and its reduction started) */
    size_t seg;
    int step;
    bg_tp_req_t *sreq, *rreq;
    void *tmp; /* this lane's part of the scratch */
#ifdef BG_HAVE_CUDA
    cudaEvent_t ev;
    int has_ev;
#endif
} bg_tp_lane_t;

/* Advance one collective; 1 if anything moved. */
typedef int (*bg_tp_coll_advance_fn)(bg_tp_coll_t *c);

struct bg_tp_coll {
    bg_tp_t *tp;
    bg_tp_coll_advance_fn advance; /* set by the starter: ring, broadcast, barrier */
    bg_tp_group_t *g;
    bg_tp_coll_kind_t kind;
    unsigned seq;
    int done;
    bg_status_t status;
    char err[BG_TP_COLL_ERRLEN];
    int waiting_on;                 /* rank last waited for, for timeout messages */
    uint64_t progress_id, abort_id; /* registrations with the p2p layer */
    char *buf;
    bg_tp_mem_t mem;
    bg_tp_scratch_t *scr; /* held scratch, back to the group when freed */
    /* ring (reduce-scatter / all-gather / allreduce) */
    size_t count, esz, seg_elems;
    bg_tp_dtype_t dt;
    bg_tp_op_t op;
    int step0, step1; /* ring steps run: [0, n-1) reduce-scatter, [n-1, 2n-2) all-gather */
    int nlanes;       /* ring lanes in use (BRIGADE_TP_LANES, <= BG_TP_LANES) */
    int direct;       /* small message: direct exchange instead of the ring */
    int phase;        /* direct: 0 exchange posted, 1 reducing, 2 gather posted */
    bg_tp_req_t **dreq; /* direct: 2 (n - 1) requests */
    int cma;            /* direct.c's same-host path runs (until it falls back) */
    void *ext;          /* direct.c's state (freed with the handle) */
    bg_tp_req_t **xreq; /* direct.c's requests, cancelled on failure */
    int nxreq;
    /* bcast */
    size_t len, seg_bytes;
    int root;
    /* shared */
    size_t nseg, next_seg, segs_done;
    int nsteps;
    char pad[8]; /* barrier tokens land here */
    bg_tp_lane_t lanes[BG_TP_LANES];
};

/* ---- coll.c, for ring.c ---- */

/* A new handle for group g (sequence number taken) that the progress loop
 * drives with `advance`; BG_ERR_NOMEM. */
bg_status_t bg_tp_coll_new(bg_tp_group_t *g, bg_tp_coll_kind_t kind, bg_tp_coll_advance_fn advance,
                           void *buf, bg_tp_mem_t mem, bg_tp_coll_t **out);
/* Wait for the handle a start just made: st is that start's status (the
 * handle is only waited on when it is BG_OK), *c its output. */
bg_status_t bg_tp_coll_start_wait(bg_status_t st, bg_tp_coll_t **c, double timeout_s);
/* Register with the p2p layer, run the first advance, hand out: on error
 * the handle is freed and the status returned. */
bg_status_t bg_tp_coll_launch(bg_tp_coll_t *c, bg_tp_coll_t **out);
/* Free a handle (requests must be finished or cancelled). */
void bg_tp_coll_free(bg_tp_coll_t *c);
/* Fail: cancel what is in flight, record the first error, mark done. */
void bg_tp_coll_fail(bg_tp_coll_t *c, bg_status_t st, const char *msg);
/* Fail with "<kind>: <last recorded error>". */
void bg_tp_coll_fail_last(bg_tp_coll_t *c, bg_status_t st);
/* The collective tag of (step, segment). */
uint64_t bg_tp_coll_tag(const bg_tp_coll_t *c, int step, size_t seg);
/* Poll *req; 1 when finished (NULL counts), 0 while running or on failure
 * (then the collective has failed). */
int bg_tp_coll_poll(bg_tp_coll_t *c, bg_tp_req_t **req);
/* Post a lane step's receive (from >= 0, rbytes > 0) and send; sizes of 0
 * post nothing (both sides compute the same sizes). Fails the collective
 * on error. */
void bg_tp_lane_post(bg_tp_coll_t *c, bg_tp_lane_t *l, uint64_t tag, int to, const void *sbuf,
                     size_t sbytes, int from, void *rbuf, size_t rbytes);
/* An idle lane takes the next segment, starting at `step`: 1 if it did
 * (busy now), 0 when all segments are taken. */
int bg_tp_lane_take(bg_tp_coll_t *c, bg_tp_lane_t *l, int step);
/* Scratch of at least `bytes` in c's memory kind for c (held until freed). */
bg_status_t bg_tp_coll_scratch(bg_tp_coll_t *c, size_t bytes, void **out);
#ifdef BG_HAVE_CUDA
/* The group's device reducer (made on first use) and an event for lane l. */
bg_status_t bg_tp_lane_event(bg_tp_coll_t *c, bg_tp_lane_t *l);
#endif

/* A size knob from the environment (must be equal on all ranks; 0 or
 * unset: def). Read at every start (a getenv is noise next to a
 * collective), so a benchmark can compare settings in one run. */
size_t bg_tp_coll_knob(const char *name, size_t def);

/* ---- direct.c, for ring.c ---- */

/* Bytes of host scratch the same-host direct path needs for c (0 when c
 * reduces nothing), or 0 with *use = 0 when c does not take the path:
 * device memory, a member on another host, BRIGADE_TP_CMA=0, fewer than
 * BRIGADE_TP_DIRECT_MIN bytes. Every member decides alike. Cannot fail. */
size_t bg_tp_cma_plan(const bg_tp_coll_t *c, int *use);
/* Start the path on c (count, dtype, op, kind set; scratch of the planned
 * size at `scratch`): posts the ready notices, sets c->cma. On error the
 * collective has failed (c->done). Cannot fail otherwise. */
void bg_tp_cma_start(bg_tp_coll_t *c, void *scratch);
/* Advance c's direct path; 1 if it moved. When the group cannot use the
 * path c->cma goes 0 and the caller runs its ring for c (every member
 * falls back on the same collectives). */
int bg_tp_cma_advance(bg_tp_coll_t *c);

/* ---- for tests ---- */

/* Scratch buffers the group has ever allocated (a working cache keeps this
 * flat across repeated collectives). */
size_t bg_tp_group_scratch_allocs(const bg_tp_group_t *g);
#ifdef BG_HAVE_CUDA
/* The group's device reducer, made now if it does not exist yet. */
bg_status_t bg_tp_group_reducer(bg_tp_group_t *g, bg_tp_cuda_red_t **out);
#endif

#endif
