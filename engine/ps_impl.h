/*
 * engine/ps_impl.h -- what parameter servers and their clients
 * (engine/ps_server.c, engine/runtime_ps.c) agree on: which server holds a
 * parameter, the wire layout of pushes and replies, and where each
 * gradient sits in its chunk's allreduce bucket (the ring's summation order
 * depends on it). Must NOT be included anywhere else.
 */
#ifndef BG_PS_IMPL_H
#define BG_PS_IMPL_H

#include "engine/ps.h"

/* One use of a parameter: a (layer, slot) accumulator on one stage. */
typedef struct ps_use {
    int stage;
    int key;      /* layer * BG_MAX_PARAMS + slot */
    int64_t boff; /* first element in its chunk's bucket */
    int64_t blen; /* the bucket's length */
    int64_t poff; /* first float in its stage's push to the parameter's server */
} ps_use_t;

typedef struct ps_par {
    int server;
    int64_t n;
    int nu;
    ps_use_t *use;    /* [nu]: the graph's user order (ascending layers) */
    int first_holder; /* lowest stage holding it: sends it at start */
} ps_par_t;

typedef struct ps_layout {
    int S, K, np, nst; /* nst: optimizer state arrays */
    ps_par_t *par;     /* [np] */
    int64_t *push_n;   /* [S * K] gradient floats stage s pushes to server k */
    int64_t *reply_n;  /* [S * K] parameter floats server k sends stage s */
} ps_layout_t;

/* The header of every message, both ways (then f32 payload). */
typedef struct ps_head {
    int64_t step;  /* push: the step; reply: the version (updates applied) */
    int64_t used;  /* push: the version the gradient was computed on */
    double norm;   /* reply: the step's global norm (scaled) */
    float scale;   /* push: loss scale; reply: learning rate */
    int32_t flags; /* PS_F_* */
} ps_head_t;

enum { PS_F_SCALING = 1, PS_F_OVERFLOW = 2, PS_F_STATE = 4 };

/* Message kinds inside the engine's PS tag (engine/tag.h). */
enum { PS_PUSH = 1, PS_REPLY = 2, PS_INIT = 3 };

/* Build the layout for this graph, chunking and schedule: S stages, K
 * servers, `nst` optimizer state arrays. BG_ERR_NOMEM; free with
 * ps_layout_free (also after a failure). */
bg_status_t bg_ps_layout_create_(const bg_graph_t *g, const bg_net_t *net, const bg_sched_t *sched,
                                 int S, int K, int nst, ps_layout_t *out);
void bg_ps_layout_free_(ps_layout_t *l);

/* Does stage s hold parameter p (run one of its users)? */
bool bg_ps_holds_(const ps_layout_t *l, int p, int s);

/* Does stage s exchange messages with server k? (It pushes gradients to
 * it, or k is 0, which every stage talks to so a stage without parameters
 * still learns each step's norm and overflow.) */
static inline bool ps_talks(const ps_layout_t *l, int s, int k)
{
    return k == 0 || l->push_n[s * l->K + k] > 0;
}

/* Floats of a reply of server k to stage s (with state: parameters and
 * every state array). */
static inline int64_t ps_reply_floats(const ps_layout_t *l, int s, int k, bool state)
{
    return l->reply_n[s * l->K + k] * (state ? 1 + l->nst : 1);
}

/* ------------------------------------------------ engine/ps_server.c */

/* A server's state: dedicated (bg_ps_serve runs it to the end) or colocated
 * inside a worker (engine/runtime_ps.c drives it at each OPTIMIZER). */
typedef struct srv srv_t;

/* Layout, buffers, the server group, then the starting parameters and
 * state from the workers (blocking). Errors name the server. */
bg_status_t bg_ps_srv_create_(const bg_ps_serve_conf_t *c, srv_t **out);
/* Serve the next updates up to `upto`: waiting for the pushes of those up
 * to `block_upto`, the later ones only if their pushes are all here. */
bg_status_t bg_ps_srv_serve_(srv_t *v, int64_t upto, int64_t block_upto);
/* Wait until every reply sent has been taken. */
bg_status_t bg_ps_srv_finish_(srv_t *v);
void bg_ps_srv_free_(srv_t *v); /* NULL is fine */

#endif
