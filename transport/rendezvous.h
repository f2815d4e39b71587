/*
 * transport/rendezvous.h -- how a transport context joins and leaves the
 * job through the store: rank 0 hosts the store (unless a launcher does),
 * every rank publishes its UCX worker address (with its wire chunk size and
 * host name) and collects everyone's, the final barrier on leave, and rank
 * 0 serving until every rank has gone.
 *
 * Beside the layered part (it uses the store, not UCX or requests): the
 * addresses are opaque bytes here.
 * Must NOT: touch UCX, or skip the goodbye (a rank that leaves without one
 * is reported dead to the others).
 */
#ifndef BG_TP_RENDEZVOUS_H
#define BG_TP_RENDEZVOUS_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

typedef struct {
    bg_tp_store_t *store;
    bg_tp_server_t *server; /* rank 0's own store, NULL when a launcher hosts it */
    int rank, world;
    double timeout_s;
    int failed_self; /* this rank reported its own failure (bg_tp_rdv_fail) */
} bg_tp_rdv_t;

/* A peer as published: its worker address and whether it shares our host
 * (which decides the endpoint's error mode). */
typedef struct {
    void *addr;
    size_t addrlen;
    int same_host;
} bg_tp_rdv_peer_t;

/* Connect to (on rank 0: first try to host, on the master address only,
 * with the config's liveness bounds) the store, as the config's job. On
 * failure nothing is left open and the error names the address. */
bg_status_t bg_tp_rdv_join(bg_tp_rdv_t *rv, const bg_tp_config_t *cfg, double timeout_s);
/* Tell the store this rank failed (status, message); the final barrier is
 * skipped from then on. Cannot fail. */
void bg_tp_rdv_fail(bg_tp_rdv_t *rv, bg_status_t status, const char *why);
/*
 * Publish this rank's address record, meet everyone at barrier
 * "bg/tp/init" and collect every rank's record into *out (an array of
 * world entries, freed with bg_tp_rdv_peers_free). BG_ERR_INVALID when a
 * rank's chunk size differs; the store's errors otherwise (a timeout names
 * who never arrived).
 */
bg_status_t bg_tp_rdv_exchange(bg_tp_rdv_t *rv, const void *addr, size_t addrlen, uint64_t chunk,
                               bg_tp_rdv_peer_t **out);
void bg_tp_rdv_peers_free(bg_tp_rdv_peer_t *peers, int world);
/* Final barrier "bg/tp/fini": nobody tears down a worker a peer may still
 * flush to. Skip it once a peer has died. */
bg_status_t bg_tp_rdv_fini_barrier(bg_tp_rdv_t *rv);
/* Say goodbye; rank 0 then serves until every rank has left or died. The
 * server's verdict is returned only when `failed` is 0 (a known death is
 * not news). Frees what join made. */
bg_status_t bg_tp_rdv_leave(bg_tp_rdv_t *rv, int failed);
/* A join that failed half-way: goodbye (a failed join is not a death) and
 * stop rank 0's store at once. Cannot fail. */
void bg_tp_rdv_abandon(bg_tp_rdv_t *rv);

#endif
