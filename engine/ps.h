/*
 * engine/ps.h -- parameter servers (--dp-mode ps): what the training loop
 * and the runtime need to know of them. In ps mode every stage's parameters
 * are sharded over K server ranks (global ranks S*D .. S*D+K-1, after the
 * workers, or inside workers 0 .. K-1 with --ps-colocate; parameter p lives
 * on server p % K). Workers push the gradients
 * of each server's parameters after their step and pull the updated masters
 * back; servers sum the D replicas in the ring allreduce's order, compute
 * the same global norm and run the same fused optimizer step, so staleness
 * 0 is bit-identical to allreduce (docs/engine.md, "Parameter servers").
 * Must NOT decide exit codes or print anything but straggler notices.
 */
#ifndef BG_PS_H
#define BG_PS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/net.h"
#include "engine/optim.h"
#include "engine/schedule.h"
#include "layers/backend.h"
#include "layers/graph.h"
#include "transport/transport.h"

/* Staleness meaning "asynchronous": no bound at all. */
#define BG_PS_STALE_INF (-1)

typedef struct bg_ps_conf {
    int servers;        /* K; 0: parameter servers off (allreduce) */
    int first_rank;     /* global rank of server 0: S * D, or 0 when colocated */
    bool colocate;      /* server k runs inside worker rank k (runtime_ps.c drives it) */
    int64_t staleness;  /* S >= 0, or BG_PS_STALE_INF */
    bool deterministic; /* every step t uses exactly version max(start, t - S) */
    int64_t sync_every; /* checkpoint period in steps (0: none): full-sync steps */
    int64_t steps;      /* the run's last step + 1 (a full-sync step) */
} bg_ps_conf_t;

/* True after step `step` (0-based) workers wait for the update of that very
 * step and the servers send the optimizer state with it: checkpoint steps
 * and the last step, so checkpoints and the final evaluation see version
 * step + 1 whatever the staleness. Pure. */
static inline bool bg_ps_sync_step(const bg_ps_conf_t *c, int64_t step)
{
    return step + 1 == c->steps || (c->sync_every > 0 && (step + 1) % c->sync_every == 0);
}

/* Buckets of the staleness histogram: 0 .. BG_PS_HIST - 2 and the last one
 * for everything larger (counted, not dropped). */
#define BG_PS_HIST 17

/* One server rank's job. */
typedef struct bg_ps_serve_conf {
    bg_ps_conf_t ps;
    int index;       /* this server, 0 .. K-1 */
    int stages, dps; /* the workers' layout */
    bg_tp_t *tp;
    bg_backend_t *be; /* where the optimizer runs */
    const bg_graph_t *g;
    const bg_net_t *net;
    const bg_sched_t *sched;
    bg_optim_conf_t optim; /* total steps set */
    int64_t start_step;
    double timeout_s;
} bg_ps_serve_conf_t;

/*
 * Serve until the run's last step: receive the workers' initial parameters
 * and optimizer state (which came from the seed or a checkpoint), then for
 * each step sum the pushed gradients, update, and send every worker its
 * parameters. Fails on transport errors (a dead worker is named by the
 * transport), device errors or out of memory.
 */
bg_status_t bg_ps_serve(const bg_ps_serve_conf_t *c);

#endif
