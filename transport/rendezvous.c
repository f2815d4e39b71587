/*
 * transport/rendezvous.c -- joining and leaving the job through the store
 * (rendezvous.h): hosting it on rank 0, publishing and collecting worker
 * addresses, the final barrier, and rank 0 outliving the others' goodbyes.
 *
 * Must NOT: touch UCX (addresses are bytes here), or wait without the
 * context's deadline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/rendezvous.h"
#include "transport/store_int.h"

/* Address record published in the store: chunk size and host name let every
 * rank check wire compatibility and choose the endpoint's error mode. */
typedef struct {
    uint64_t chunk;
    char host[64];
} addr_hdr_t;

bg_status_t bg_tp_rdv_join(bg_tp_rdv_t *rv, const bg_tp_config_t *cfg, double timeout_s)
{
    const bg_tp_bootstrap_t *b = &cfg->boot;
    memset(rv, 0, sizeof(*rv));
    rv->rank = b->rank;
    rv->world = b->world_size;
    rv->timeout_s = timeout_s;
    const char *addr = b->master_addr;
    if (b->rank == 0 && !b->store_external) {
        /* Only the master address: the ranks reach it there, nobody needs
         * the store on any other interface. */
        bg_status_t st = bg_tp_server_create(addr, b->master_port, b->world_size, &cfg->auth,
                                             &rv->server);
        if (st != BG_OK) {
            /* A launcher may already host it there: try as a client. */
            bg_log(BG_LOG_INFO, "rank 0: not hosting the store (%s); connecting instead",
                   bg_last_error());
            rv->server = NULL;
        } else {
            bg_tp_server_set_liveness(rv->server, cfg->heartbeat_s > 0 ? cfg->heartbeat_s : 10.0,
                                      cfg->hang_s);
        }
    }
    bg_status_t st = bg_tp_store_connect(addr, b->master_port, b->rank, b->world_size, &cfg->auth,
                                         timeout_s, &rv->store);
    if (st != BG_OK) {
        if (rv->server)
            bg_tp_server_destroy(rv->server);
        rv->server = NULL;
        return st;
    }
    if (!b->store_external)
        bg_tp_store_set_host_rank0(rv->store, 1);
    return BG_OK;
}

static bg_status_t publish(bg_tp_rdv_t *rv, const void *addr, size_t addrlen, uint64_t chunk,
                           const char *host)
{
    char key[64];
    size_t reclen = sizeof(addr_hdr_t) + addrlen;
    char *rec = calloc(1, reclen);
    if (!rec)
        return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory", rv->rank);
    addr_hdr_t *h = (addr_hdr_t *)rec;
    h->chunk = chunk;
    memcpy(h->host, host, sizeof(h->host));
    memcpy(rec + sizeof(*h), addr, addrlen);
    snprintf(key, sizeof(key), "bg/tp/addr/%d", rv->rank);
    bg_status_t st = bg_tp_store_set(rv->store, key, rec, reclen);
    free(rec);
    return st;
}

/* Turn rank r's record (len bytes in buf) into out[r]. */
static bg_status_t take_record(bg_tp_rdv_t *rv, int r, const char *buf, size_t len, uint64_t chunk,
                               const char *host, bg_tp_rdv_peer_t *out)
{
    if (len < sizeof(addr_hdr_t))
        return bg_errorf(BG_ERR_INTERNAL, "rank %d: address record of rank %d is %zu bytes",
                         rv->rank, r, len);
    addr_hdr_t ph;
    memcpy(&ph, buf, sizeof(ph));
    if (ph.chunk != chunk)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d: rank %d uses wire chunk %llu bytes, this rank %llu "
                         "(BRIGADE_TP_CHUNK must be equal on all ranks)",
                         rv->rank, r, (unsigned long long)ph.chunk, (unsigned long long)chunk);
    out->addrlen = len - sizeof(ph);
    out->addr = malloc(out->addrlen ? out->addrlen : 1);
    if (!out->addr)
        return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory", rv->rank);
    memcpy(out->addr, buf + sizeof(ph), out->addrlen);
    ph.host[sizeof(ph.host) - 1] = '\0';
    out->same_host = !strcmp(ph.host, host);
    return BG_OK;
}

bg_status_t bg_tp_rdv_exchange(bg_tp_rdv_t *rv, const void *addr, size_t addrlen, uint64_t chunk,
                               bg_tp_rdv_peer_t **out)
{
    char key[64], host[64] = "";
    gethostname(host, sizeof(host) - 1);
    bg_status_t st = publish(rv, addr, addrlen, chunk, host);
    if (st != BG_OK)
        return st;
    st = bg_tp_store_barrier(rv->store, "bg/tp/init", rv->timeout_s);
    if (st != BG_OK)
        return st;
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    bg_tp_rdv_peer_t *peers = calloc((size_t)rv->world, sizeof(*peers));
    if (!buf || !peers) {
        free(buf);
        free(peers);
        return bg_errorf(BG_ERR_NOMEM, "rank %d: out of memory for %d addresses", rv->rank,
                         rv->world);
    }
    for (int r = 0; r < rv->world && st == BG_OK; r++) {
        size_t len;
        snprintf(key, sizeof(key), "bg/tp/addr/%d", r);
        st = bg_tp_store_get(rv->store, key, buf, cap, rv->timeout_s, &len);
        if (st == BG_OK)
            st = take_record(rv, r, buf, len, chunk, host, &peers[r]);
    }
    free(buf);
    if (st != BG_OK) {
        bg_tp_rdv_peers_free(peers, rv->world);
        return st;
    }
    *out = peers;
    return BG_OK;
}

void bg_tp_rdv_peers_free(bg_tp_rdv_peer_t *peers, int world)
{
    if (!peers)
        return;
    for (int r = 0; r < world; r++)
        free(peers[r].addr);
    free(peers);
}

void bg_tp_rdv_fail(bg_tp_rdv_t *rv, bg_status_t status, const char *why)
{
    if (!rv->store || rv->failed_self)
        return;
    rv->failed_self = 1;
    bg_tp_store_fail(rv->store, status, why);
}

bg_status_t bg_tp_rdv_fini_barrier(bg_tp_rdv_t *rv)
{
    return bg_tp_store_barrier(rv->store, "bg/tp/fini", rv->timeout_s);
}

bg_status_t bg_tp_rdv_leave(bg_tp_rdv_t *rv, int failed)
{
    bg_status_t first = BG_OK;
    bg_tp_store_close(rv->store);
    rv->store = NULL;
    if (rv->server) {
        bg_status_t st = bg_tp_server_wait(rv->server, rv->timeout_s);
        if (st != BG_OK && !failed)
            first = st;
        bg_tp_server_destroy(rv->server);
        rv->server = NULL;
    }
    return first;
}

void bg_tp_rdv_abandon(bg_tp_rdv_t *rv)
{
    bg_tp_store_close(rv->store);
    rv->store = NULL;
    if (rv->server)
        bg_tp_server_destroy(rv->server);
    rv->server = NULL;
}
