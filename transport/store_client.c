/*
 * transport/store_client.c -- a rank's connection to the rendezvous store:
 * set / get / barrier with deadlines, and a reader thread that turns the
 * server's "rank r died" notices and a lost connection into the failure
 * feed (store_int.h) the point-to-point layer polls.
 *
 * Every request waits for its reply; a MSG_ERROR reply becomes the
 * caller's error at once ("store at ADDR:PORT: <server's reason>"), so a
 * server-side failure is never mistaken for a slow peer.
 *
 * Joining is a mutual proof of the job secret (store_auth.h): the store
 * must prove it first, so a rank never publishes its address to an
 * impostor. Once joined, a heartbeat thread sends the progress count at
 * the interval the store asked for, whatever the caller's thread is doing.
 *
 * Must NOT: touch UCX, exit, block without a deadline, send the secret, or
 * let the reader and heartbeat threads call anything but this file's
 * bookkeeping.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/backoff.h"
#include "transport/store_auth.h"
#include "transport/store_int.h"
#include "transport/store_wire.h"

#define DEAD_LEN 400

struct bg_tp_store {
    int fd;
    int rank, world;
    char addr[256];
    int port;
    double timeout_s; /* for requests without their own deadline (set) */
    double hb_s;      /* heartbeat interval the store asked for */
    double last_rx;   /* when the store last said anything */
    int host_rank0;
    pthread_t reader, beater;
    atomic_uint_fast64_t progress;
    pthread_mutex_t mu; /* guards everything below, and writes to fd */
    pthread_cond_t cv;
    uint32_t seq; /* of the request in flight */
    int have_reply;
    uint32_t reply_type, reply_arg;
    char *reply;
    size_t reply_len;
    char (*dead)[DEAD_LEN]; /* [world], "" while alive */
    int lost;
    char lost_why[200];
    int closing;
    atomic_uint_fast64_t fail_gen;
};

/* The reader lost the connection: every waiter learns it. mu held. */
static void reader_lost(bg_tp_store_t *st)
{
    if (!st->closing) {
        st->lost = 1;
        snprintf(st->lost_why, sizeof(st->lost_why), "lost the rendezvous store at %.64s:%d%s",
                 st->addr, st->port, st->host_rank0 ? " (hosted by rank 0: rank 0 died?)" : "");
        atomic_fetch_add(&st->fail_gen, 1);
    }
    pthread_cond_broadcast(&st->cv);
}

/* A message from the server: a death notice, or the reply to the request in
 * flight (val is kept as the reply, else freed). mu held. */
static void reader_deliver(bg_tp_store_t *st, const wire_hdr_t *h, char *val)
{
    st->last_rx = bg_now_s();
    if (h->type == MSG_PING) {
        free(val);
    } else if (h->type == MSG_DEAD) {
        if ((int)h->arg >= 0 && (int)h->arg < st->world && !st->dead[h->arg][0]) {
            snprintf(st->dead[h->arg], sizeof(st->dead[h->arg]), "%s", val[0] ? val : "died");
            atomic_fetch_add(&st->fail_gen, 1);
        }
        free(val);
    } else if (h->seq == st->seq && !st->have_reply) {
        st->have_reply = 1;
        st->reply_type = h->type;
        st->reply_arg = h->arg;
        free(st->reply);
        st->reply = val;
        st->reply_len = h->vlen;
    } else {
        free(val); /* stale reply to a request that timed out */
    }
    pthread_cond_broadcast(&st->cv);
}

/* The reader thread: replies go to the waiting caller, DEAD notices to the
 * failure feed. It never calls into UCX or the user's code. */
static void *store_reader(void *arg)
{
    bg_tp_store_t *st = arg;
    for (;;) {
        wire_hdr_t h;
        char *key = NULL, *val = NULL;
        int bad = bg_tp_wire_read(st->fd, &h, sizeof(h)) < 0;
        if (!bad) {
            bg_tp_wire_decode(&h);
            bad = h.klen > MAX_KEY || h.vlen > MAX_VAL;
        }
        if (!bad) {
            key = malloc(h.klen + 1);
            val = malloc(h.vlen + 1);
            bad = !key || !val || bg_tp_wire_read(st->fd, key, h.klen) < 0 ||
                  bg_tp_wire_read(st->fd, val, h.vlen) < 0;
        }
        free(key);
        pthread_mutex_lock(&st->mu);
        if (bad) {
            reader_lost(st);
            pthread_mutex_unlock(&st->mu);
            free(val);
            return NULL;
        }
        val[h.vlen] = '\0';
        reader_deliver(st, &h, val);
        pthread_mutex_unlock(&st->mu);
    }
}

static int connect_once(const char *addr, int port, int *fd_out, char *err, size_t cap)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    int rc = getaddrinfo(addr, ps, &hints, &res);
    if (rc) {
        snprintf(err, cap, "cannot resolve '%s': %s", addr, gai_strerror(rc));
        return -2; /* not worth retrying forever, but DNS may be late: caller retries */
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        snprintf(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        snprintf(err, cap, "%s", strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    bg_tp_wire_keepalive(fd);
    *fd_out = fd;
    return 0;
}

/* Wait for the reply to request `seq`, a failure, or the deadline. With
 * fail_on_death any fault known, before or during the wait, ends it: a
 * rank that failed or died will not arrive. Called with st->mu held.
 * 0 = reply, 1 = timeout, 2 = failure. */
static int store_wait_reply(bg_tp_store_t *st, double deadline, int fail_on_death)
{
    while (!st->have_reply) {
        if (st->lost)
            return 2;
        if (fail_on_death && atomic_load(&st->fail_gen) != 0)
            return 2;
        if (bg_now_s() >= deadline)
            return 1;
        bg_tp_cond_wait(&st->cv, &st->mu, deadline, 0.02);
    }
    return 0;
}

/* Describe the first failure (dead rank or lost store) into the error. */
static bg_status_t store_failure(bg_tp_store_t *st, const char *what)
{
    if (st->lost)
        return bg_errorf(BG_ERR_PEER, "%s: %s", what, st->lost_why);
    for (int r = 0; r < st->world; r++)
        if (st->dead[r][0])
            return bg_errorf(BG_ERR_PEER, "%s: rank %d died: %s", what, r, st->dead[r]);
    return bg_errorf(BG_ERR_PEER, "%s: a rank died", what);
}

/* The server refused the request (MSG_ERROR): its reason, where the store
 * is, and what was asked. mu held. */
static bg_status_t store_refused(bg_tp_store_t *st, const char *what)
{
    return bg_errorf(bg_tp_wire_status(st->reply_arg), "%s: store at %s:%d: %s", what, st->addr,
                     st->port, st->reply ? st->reply : "refused");
}

/* Ask the server who is missing (after a timeout); best effort. mu held. */
static void store_status(bg_tp_store_t *st, const char *barrier, char *out, size_t cap)
{
    snprintf(out, cap, "store did not answer a status query");
    st->seq++;
    st->have_reply = 0;
    if (bg_tp_wire_send(st->fd, MSG_STATUS, st->seq, 0, barrier, NULL, 0) < 0)
        return;
    if (store_wait_reply(st, bg_now_s() + 2.0, 0) == 0 && st->reply_type == MSG_STATUS_REPLY)
        snprintf(out, cap, "%s", st->reply);
}

/*
 * Send one request and wait for its answer. BG_OK: a reply of type `want`
 * is in st->reply. Otherwise the error is recorded: the server's refusal,
 * a death / lost store (BG_ERR_PEER), or BG_ERR_TIMEOUT with the server's
 * account of who is missing (`barrier` names the barrier waited on).
 * mu held.
 */
static bg_status_t store_request(bg_tp_store_t *st, const char *what, uint32_t type,
                                 const char *key, const void *val, size_t vlen, uint32_t want,
                                 double timeout_s, const char *barrier)
{
    st->seq++;
    st->have_reply = 0;
    if (bg_tp_wire_send(st->fd, type, st->seq, 0, key, val, vlen) < 0)
        return store_failure(st, what);
    int w = store_wait_reply(st, bg_tp_deadline(timeout_s), type != MSG_SET);
    if (w == 2)
        return store_failure(st, what);
    if (w == 1) {
        char text[1024];
        store_status(st, barrier, text, sizeof(text));
        if (type == MSG_BARRIER)
            return bg_errorf(BG_ERR_TIMEOUT, "%s timed out after %.1f s: %s", what, timeout_s,
                             text);
        return bg_errorf(BG_ERR_TIMEOUT, "%s: %s within %.1f s (%s)", what,
                         type == MSG_GET ? "not published" : "no answer", timeout_s, text);
    }
    if (st->reply_type == MSG_ERROR)
        return store_refused(st, what);
    if (st->reply_type != want)
        return bg_errorf(BG_ERR_INTERNAL, "%s: store at %s:%d answered with message type %u", what,
                         st->addr, st->port, st->reply_type);
    return BG_OK;
}

/* Read one message of at most vcap value bytes before `deadline`, with
 * its key (kcap bytes, NUL-ended) and value into the buffers. 0 or -1. */
static int hs_read(int fd, double deadline, wire_hdr_t *h, char *key, size_t kcap, char *val,
                   size_t vcap)
{
    struct pollfd pf = {fd, POLLIN, 0};
    double left = deadline - bg_now_s();
    int ms = left <= 0 ? 0 : left > 1e6 ? -1 : (int)(left * 1000) + 1;
    if (poll(&pf, 1, ms) <= 0 || bg_tp_wire_read(fd, h, sizeof(*h)) < 0)
        return -1;
    bg_tp_wire_decode(h);
    if (h->klen >= kcap || h->vlen > vcap || bg_tp_wire_read(fd, key, h->klen) < 0 ||
        bg_tp_wire_read(fd, val, h->vlen) < 0)
        return -1;
    key[h->klen] = '\0';
    return 0;
}

/* A refusal (MSG_ERROR) as the caller's error; BUSY is retried by the caller. */
static bg_status_t hs_refused(const wire_hdr_t *h, char *val, int rank, const char *addr,
                              int port)
{
    val[h->vlen] = '\0';
    return bg_errorf(h->arg == STORE_E_NOMEM ? BG_ERR_NOMEM
                     : h->arg == STORE_E_BUSY ? BG_ERR_IO
                                              : BG_ERR_INVALID,
                     "rank %d: rendezvous store %s:%d refused: %s", rank, addr, port, val);
}

/*
 * The handshake on a fresh connection: AUTH with our nonce, check the
 * store's proof over it, HELLO with ours. BG_OK and the heartbeat interval
 * in *hb_ms; BG_ERR_IO (retry) when the store is busy or the link broke.
 */
static bg_status_t hs_prove(int fd, int rank, int world, const bg_tp_auth_t *auth,
                            const char *addr, int port, double deadline, uint32_t *hb_ms)
{
    unsigned char nc[AUTH_NONCE], want[AUTH_MAC];
    char key[MAX_KEY_UNAUTH + 1], val[1024];
    wire_hdr_t h;
    bg_tp_auth_nonce(nc);
    if (bg_tp_wire_send(fd, MSG_AUTH, 1, 0, auth->job, nc, sizeof(nc)) < 0 ||
        hs_read(fd, deadline, &h, key, sizeof(key), val, sizeof(val) - 1) < 0)
        return bg_errorf(BG_ERR_IO, "rank %d: rendezvous store %s:%d: handshake failed", rank,
                         addr, port);
    if (h.type == MSG_ERROR)
        return hs_refused(&h, val, rank, addr, port);
    if (h.type != MSG_CHALLENGE || h.vlen != AUTH_NONCE + AUTH_MAC)
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d: %s:%d is not a brigade store of this version (answered type "
                         "%u)",
                         rank, addr, port, h.type);
    bg_tp_auth_server_mac(auth, nc, (unsigned char *)val, want);
    if (strcmp(key, auth->job) || !bg_tp_auth_equal(want, (unsigned char *)val + AUTH_NONCE))
        return bg_errorf(BG_ERR_INVALID,
                         "rank %d: the store at %s:%d serves job '%.64s' and could not prove "
                         "the secret of job '%s' (two jobs on one port, or a stranger's port?)",
                         rank, addr, port, key, auth->job);
    char hello[4 + AUTH_MAC + MAX_HOST], host[MAX_HOST] = "";
    gethostname(host, sizeof(host) - 1);
    uint32_t w = htonl((uint32_t)world);
    size_t hl = strlen(host);
    memcpy(hello, &w, 4);
    bg_tp_auth_client_mac(auth, (unsigned char *)val, nc, (uint32_t)rank, (uint32_t)world,
                          (unsigned char *)hello + 4);
    memcpy(hello + 4 + AUTH_MAC, host, hl);
    if (bg_tp_wire_send(fd, MSG_HELLO, 2, (uint32_t)rank, NULL, hello, 4 + AUTH_MAC + hl) < 0 ||
        hs_read(fd, deadline, &h, key, sizeof(key), val, sizeof(val) - 1) < 0)
        return bg_errorf(BG_ERR_IO, "rank %d: rendezvous store %s:%d: handshake failed", rank,
                         addr, port);
    if (h.type != MSG_HELLO_OK)
        return hs_refused(&h, val, rank, addr, port);
    *hb_ms = h.arg;
    return BG_OK;
}

/* Connect and prove ourselves synchronously, before the reader thread owns
 * the socket; retried (a store that starts late, or is busy) until the
 * deadline. On success *fd_out is the connection. */
static bg_status_t store_handshake(const char *addr, int port, int rank, int world_size,
                                   const bg_tp_auth_t *auth, double timeout_s, int *fd_out,
                                   uint32_t *hb_ms)
{
    double deadline = bg_tp_deadline(timeout_s);
    char err[256] = "";
    for (;;) {
        int fd = -1;
        if (connect_once(addr, port, &fd, err, sizeof(err)) == 0) {
            bg_status_t st = hs_prove(fd, rank, world_size, auth, addr, port, deadline, hb_ms);
            if (st == BG_OK) {
                *fd_out = fd;
                return BG_OK;
            }
            close(fd);
            if (st != BG_ERR_IO || bg_now_s() >= deadline)
                return st;
            snprintf(err, sizeof(err), "%s", bg_last_error());
        }
        if (bg_now_s() >= deadline)
            return bg_errorf(BG_ERR_TIMEOUT,
                             "rank %d: rendezvous store %s:%d not reachable within %.1f s: %s%s",
                             rank, addr, port, timeout_s, err,
                             " (is rank 0 or the launcher up? BRIGADE_MASTER_ADDR/PORT)");
        bg_tp_pause(0.05);
    }
}

/* A store hosted by rank 0 that has said nothing for five intervals (the
 * store's heartbeat timeout): rank 0 is stopped or gone. mu held. */
static void store_silent(bg_tp_store_t *st)
{
    double quiet = bg_now_s() - st->last_rx;
    if (!st->host_rank0 || st->lost || quiet <= 5 * st->hb_s)
        return;
    st->lost = 1;
    snprintf(st->lost_why, sizeof(st->lost_why),
             "rank 0, which hosts the rendezvous store at %.64s:%d, is unresponsive: it sent "
             "nothing for %.1f s (stopped?)",
             st->addr, st->port, quiet);
    atomic_fetch_add(&st->fail_gen, 1);
    pthread_cond_broadcast(&st->cv);
}

/* The heartbeat thread: the progress count every hb_s until closing, and
 * the check that a store hosted by rank 0 still speaks. It only sends; a
 * broken link is the reader's to report. */
static void *store_beater(void *arg)
{
    bg_tp_store_t *st = arg;
    pthread_mutex_lock(&st->mu);
    while (!st->closing) {
        /* The cv also wakes for replies: wait out the whole interval. */
        double next = bg_now_s() + st->hb_s;
        while (!st->closing && bg_now_s() < next)
            bg_tp_cond_wait(&st->cv, &st->mu, next, st->hb_s);
        store_silent(st);
        if (st->closing || st->lost)
            continue;
        uint64_t p = atomic_load(&st->progress);
        unsigned char b[8];
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(p >> (56 - 8 * i));
        bg_tp_wire_send(st->fd, MSG_HEARTBEAT, 0, 0, NULL, b, sizeof(b));
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

bg_status_t bg_tp_store_connect(const char *addr, int port, int rank, int world_size,
                                const bg_tp_auth_t *auth, double timeout_s, bg_tp_store_t **out)
{
    if (rank < 0 || rank >= world_size)
        return bg_errorf(BG_ERR_INVALID, "store: rank %d not in 0..%d", rank, world_size - 1);
    int fd = -1;
    uint32_t hb_ms = 1000;
    bg_status_t s = store_handshake(addr, port, rank, world_size, auth, timeout_s, &fd, &hb_ms);
    if (s != BG_OK)
        return s;
    bg_tp_store_t *st = calloc(1, sizeof(*st));
    if (!st) {
        close(fd);
        return bg_errorf(BG_ERR_NOMEM, "store: out of memory");
    }
    st->dead = calloc((size_t)world_size, sizeof(*st->dead));
    if (!st->dead) {
        s = bg_errorf(BG_ERR_NOMEM, "store: out of memory");
        goto err_st;
    }
    st->fd = fd;
    st->rank = rank;
    st->world = world_size;
    st->port = port;
    st->timeout_s = timeout_s;
    st->hb_s = (hb_ms ? hb_ms : 1000) / 1000.0;
    st->last_rx = bg_now_s();
    snprintf(st->addr, sizeof(st->addr), "%s", addr);
    st->seq = 1;
    pthread_mutex_init(&st->mu, NULL);
    if (bg_tp_cond_init(&st->cv) != 0) {
        s = bg_errorf(BG_ERR_NOMEM, "store: cannot create a condition variable");
        goto err_mu;
    }
    if (pthread_create(&st->reader, NULL, store_reader, st) != 0) {
        s = bg_errorf(BG_ERR_NOMEM, "store: cannot start reader thread");
        goto err_cv;
    }
    if (pthread_create(&st->beater, NULL, store_beater, st) != 0) {
        s = bg_errorf(BG_ERR_NOMEM, "store: cannot start heartbeat thread");
        goto err_reader;
    }
    *out = st;
    return BG_OK;

err_reader:
    shutdown(fd, SHUT_RDWR); /* the store sees a close without goodbye: not joined yet */
    pthread_join(st->reader, NULL);
err_cv:
    pthread_cond_destroy(&st->cv);
err_mu:
    pthread_mutex_destroy(&st->mu);
    free(st->dead);
err_st:
    free(st);
    close(fd);
    return s;
}

bg_status_t bg_tp_store_set(bg_tp_store_t *st, const char *key, const void *val, size_t len)
{
    if (strlen(key) > MAX_KEY || len > MAX_VAL)
        return bg_errorf(BG_ERR_INVALID, "store set '%.200s': key or value too large (%zu bytes)",
                         key, len);
    char what[MAX_KEY + 64];
    snprintf(what, sizeof(what), "rank %d: store set '%s'", st->rank, key);
    pthread_mutex_lock(&st->mu);
    bg_status_t s =
        store_request(st, what, MSG_SET, key, val, len, MSG_SET_OK, st->timeout_s, NULL);
    pthread_mutex_unlock(&st->mu);
    return s;
}

bg_status_t bg_tp_store_get(bg_tp_store_t *st, const char *key, void *buf, size_t cap,
                            double timeout_s, size_t *len)
{
    char what[MAX_KEY + 64];
    snprintf(what, sizeof(what), "rank %d: store get '%s'", st->rank, key);
    pthread_mutex_lock(&st->mu);
    bg_status_t s = store_request(st, what, MSG_GET, key, NULL, 0, MSG_VALUE, timeout_s, NULL);
    if (s == BG_OK && st->reply_len > cap) {
        s = bg_errorf(BG_ERR_INVALID, "%s: value of %zu bytes exceeds buffer of %zu", what,
                      st->reply_len, cap);
    } else if (s == BG_OK) {
        memcpy(buf, st->reply, st->reply_len);
        *len = st->reply_len;
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

bg_status_t bg_tp_store_barrier(bg_tp_store_t *st, const char *name, double timeout_s)
{
    char what[MAX_KEY + 64];
    snprintf(what, sizeof(what), "rank %d: rendezvous barrier '%s'", st->rank, name);
    pthread_mutex_lock(&st->mu);
    bg_status_t s =
        store_request(st, what, MSG_BARRIER, name, NULL, 0, MSG_BARRIER_DONE, timeout_s, name);
    pthread_mutex_unlock(&st->mu);
    return s;
}

void bg_tp_store_close(bg_tp_store_t *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->closing = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->beater, NULL);
    pthread_mutex_lock(&st->mu);
    if (!st->lost)
        bg_tp_wire_send(st->fd, MSG_BYE, 0, 0, NULL, NULL, 0);
    pthread_mutex_unlock(&st->mu);
    /* Wakes the reader's blocking recv with EOF. */
    shutdown(st->fd, SHUT_RDWR);
    pthread_join(st->reader, NULL);
    close(st->fd);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st->reply);
    free(st->dead);
    free(st);
}

void bg_tp_store_fail(bg_tp_store_t *st, bg_status_t status, const char *why)
{
    size_t n = strlen(why);
    pthread_mutex_lock(&st->mu);
    if (!st->lost)
        bg_tp_wire_send(st->fd, MSG_FAIL, 0, (uint32_t)-status, NULL, why,
                        n < MAX_FAIL_TEXT ? n : MAX_FAIL_TEXT);
    pthread_mutex_unlock(&st->mu);
}

void bg_tp_store_note_progress(bg_tp_store_t *st)
{
    atomic_fetch_add_explicit(&st->progress, 1, memory_order_relaxed);
}

uint64_t bg_tp_store_fail_gen(bg_tp_store_t *st)
{
    return atomic_load_explicit(&st->fail_gen, memory_order_acquire);
}

int bg_tp_store_rank_dead(bg_tp_store_t *st, int rank, char *why, size_t cap)
{
    int dead = 0;
    pthread_mutex_lock(&st->mu);
    if (rank >= 0 && rank < st->world && st->dead[rank][0]) {
        dead = 1;
        if (why)
            snprintf(why, cap, "%s", st->dead[rank]);
    } else if (st->lost) {
        dead = 1;
        if (why)
            snprintf(why, cap, "%s", st->lost_why);
    }
    pthread_mutex_unlock(&st->mu);
    return dead;
}

int bg_tp_store_any_failure(bg_tp_store_t *st)
{
    return atomic_load(&st->fail_gen) != 0;
}

void bg_tp_store_set_host_rank0(bg_tp_store_t *st, int yes)
{
    pthread_mutex_lock(&st->mu);
    st->host_rank0 = yes;
    pthread_mutex_unlock(&st->mu);
}
