/*
 * transport/store_server.c -- the rendezvous store's server: a TCP
 * key/value store with barriers, served on its own thread, that also
 * watches every rank's connection.
 *
 * Liveness: every rank keeps its store connection open for the whole job.
 * A rank that dies closes it without a goodbye (the kernel closes a killed
 * process's sockets at once; keepalive catches vanished hosts within ~5 s),
 * and the server tells every other rank "rank r died". That is how brigade
 * detects dead peers without UCX's peer-failure mode, which would force
 * same-host endpoints off shared memory (docs/transport.md).
 *
 * Every request gets an answer: a value, an acknowledgement or MSG_ERROR
 * naming what went wrong (out of memory, over the memory budget, oversized
 * or malformed request). Only a GET of a key not yet set, and a barrier not
 * yet full, wait -- and the client bounds those with its deadline.
 *
 * Who may talk to it (the handshake) and what it concludes about the ranks
 * (failure reports, heartbeats, progress) is store_guard.c's; the
 * primitives both use (error replies, rank state, faults, closing a
 * connection) are store_conn.c's; the state all three share is store_srv.h.
 * Direction: server -> guard -> conn and server -> conn; neither of the
 * others calls this file.
 *
 * Must NOT: touch UCX, exit, block the serving thread on one client, drop a
 * request without a reply, serve anything to a connection before it proved
 * the secret, or declare a rank faulty for anything but the four causes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/grow.h"
#include "transport/backoff.h"
#include "transport/store_srv.h"

static kv_t *srv_find_kv(bg_tp_server_t *s, const char *key)
{
    for (kv_t *k = s->kvs; k; k = k->next)
        if (!strcmp(k->key, key))
            return k;
    return NULL;
}

/* Text listing who is missing, for timeout messages on the client side:
 * "never connected: 2,3; not at barrier: 2". */
static void srv_status_text(bg_tp_server_t *s, const char *barrier, char *out, size_t cap)
{
    static const char *labels[] = {"never connected", "dead", "not at barrier"};
    barrier_t *b = NULL;
    if (barrier && *barrier)
        for (b = s->barriers; b && strcmp(b->name, barrier); b = b->next) {
        }
    size_t n = 0;
    out[0] = '\0';
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2 && !(barrier && *barrier))
            break;
        char list[512];
        size_t m = 0;
        list[0] = '\0';
        for (int r = 0; r < s->world && m < sizeof(list); r++) {
            int st = bg_tp_srv_rank_state(s, r);
            int hit = pass == 0   ? st == RANK_NEVER
                      : pass == 1 ? st == RANK_GONE
                                  : (!b || !b->arrived[r]);
            if (hit)
                m += (size_t)snprintf(list + m, sizeof(list) - m, "%s%d", m ? "," : "", r);
        }
        if (m && n < cap)
            n += (size_t)snprintf(out + n, cap - n, "%s%s: rank %s", n ? "; " : "", labels[pass],
                                  list);
    }
    if (n == 0)
        snprintf(out, cap, "every rank is connected");
}

/* ---------------- requests ---------------- */

/* Store key = val, or say why not (budget, memory). */
static void srv_set(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                    const char *val)
{
    kv_t *k = srv_find_kv(s, key);
    size_t old = k ? k->len : 0, add = k ? 0 : h->klen;
    size_t limit = atomic_load(&s->limit);
    size_t after = s->used - old + add + h->vlen;
    if (!k && s->nkeys >= MAX_KEYS) {
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM,
                        "store is full: key '%.200s' would be key %d, past its limit of %d keys",
                        key, MAX_KEYS + 1, MAX_KEYS);
        return;
    }
    if (limit && after > limit && after > s->used) {
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM,
                        "store is full: key '%.200s' (%u bytes) would take it past its budget of "
                        "%zu bytes (%zu in use)",
                        key, h->vlen, limit, s->used);
        return;
    }
    char *v = malloc(h->vlen ? h->vlen : 1);
    kv_t *nk = k ? NULL : calloc(1, sizeof(*nk));
    char *nkey = k ? NULL : strdup(key);
    if (!v || (!k && (!nk || !nkey))) {
        free(v);
        free(nk);
        free(nkey);
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory storing key '%.200s' (%u bytes)",
                        key, h->vlen);
        return;
    }
    memcpy(v, val, h->vlen);
    if (!k) {
        k = nk;
        k->key = nkey;
        k->next = s->kvs;
        s->kvs = k;
        s->nkeys++;
    }
    free(k->val);
    k->val = v;
    k->len = h->vlen;
    s->used = after;
    bg_tp_wire_send(c->fd, MSG_SET_OK, h->seq, 0, NULL, NULL, 0);
    for (waiter_t **w = &s->gets; *w;) {
        if (!strcmp((*w)->key, key)) {
            waiter_t *d = *w;
            bg_tp_wire_send(d->conn->fd, MSG_VALUE, d->seq, 0, NULL, k->val, k->len);
            *w = d->next;
            free(d->key);
            free(d);
        } else {
            w = &(*w)->next;
        }
    }
}

static void srv_get(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key)
{
    kv_t *k = srv_find_kv(s, key);
    if (k) {
        bg_tp_wire_send(c->fd, MSG_VALUE, h->seq, 0, NULL, k->val, k->len);
        return;
    }
    waiter_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->key = strdup(key))) {
        free(w);
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory waiting for key '%.200s'", key);
        return;
    }
    w->conn = c;
    w->seq = h->seq;
    w->next = s->gets;
    s->gets = w;
}

static barrier_t *srv_barrier_new(bg_tp_server_t *s, const char *name)
{
    barrier_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->name = strdup(name);
    b->arrived = calloc((size_t)s->world, 1);
    if (!b->name || !b->arrived) {
        free(b->name);
        free(b->arrived);
        free(b);
        return NULL;
    }
    b->next = s->barriers;
    s->barriers = b;
    return b;
}

int bg_tp_srv_in_barrier(const bg_tp_server_t *s, int r)
{
    for (const barrier_t *b = s->barriers; b; b = b->next)
        if (b->arrived[r])
            return 1;
    return 0;
}

static void srv_barrier_release(bg_tp_server_t *s, barrier_t *b)
{
    /* Those who waited resume now: their hang clock restarts here, not at
     * their last action before the wait (bg_tp_srv_watch). */
    double now = bg_now_s();
    for (int r = 0; r < s->world; r++)
        if (b->arrived[r])
            s->ranks[r].progress_t = now;
    for (waiter_t *x = b->waiters; x;) {
        waiter_t *nx = x->next;
        bg_tp_wire_send(x->conn->fd, MSG_BARRIER_DONE, x->seq, 0, NULL, NULL, 0);
        free(x);
        x = nx;
    }
    for (barrier_t **p = &s->barriers; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    free(b->name);
    free(b->arrived);
    free(b);
}

static void srv_barrier(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *name)
{
    barrier_t *b;
    for (b = s->barriers; b && strcmp(b->name, name); b = b->next) {
    }
    if (!b)
        b = srv_barrier_new(s, name);
    waiter_t *w = b ? calloc(1, sizeof(*w)) : NULL;
    if (!w) {
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory entering barrier '%.200s'", name);
        return;
    }
    w->conn = c;
    w->seq = h->seq;
    w->next = b->waiters;
    b->waiters = w;
    if (!b->arrived[c->rank]) {
        b->arrived[c->rank] = 1;
        b->count++;
    }
    if (b->count == s->world)
        srv_barrier_release(s, b);
}

/* One complete request. Everything but BYE, FAIL and HEARTBEAT is answered
 * here or later. */
static void srv_handle(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                       const char *val)
{
    if (memchr(key, '\0', h->klen)) {
        bg_tp_srv_reply_error(c, h->seq, STORE_E_INVALID, "key of %u bytes contains a NUL byte", h->klen);
        return;
    }
    if (c->state != CONN_RANK) {
        bg_tp_srv_handle_stranger(s, c, h, key, val);
        return;
    }
    switch (h->type) {
    case MSG_HELLO:
    case MSG_AUTH:
        bg_tp_srv_reply_error(c, h->seq, STORE_E_INVALID, "second hello on one connection");
        return;
    case MSG_HEARTBEAT:
        bg_tp_srv_heartbeat(s, c, h, val);
        return;
    case MSG_FAIL:
        bg_tp_srv_fail(s, c, h, val);
        return;
    case MSG_SET:
        srv_set(s, c, h, key, val);
        return;
    case MSG_GET:
        srv_get(s, c, h, key);
        return;
    case MSG_BARRIER:
        srv_barrier(s, c, h, key);
        return;
    case MSG_STATUS: {
        char text[1024];
        srv_status_text(s, key, text, sizeof(text));
        bg_tp_wire_send(c->fd, MSG_STATUS_REPLY, h->seq, 0, NULL, text, strlen(text));
        return;
    }
    default:
        bg_tp_srv_reply_error(c, h->seq, STORE_E_INVALID, "unknown request type %u", h->type);
        return;
    }
}

/* A request the server will not read: answer it, then discard its payload
 * as it arrives, so the connection stays in step. */
static void srv_refuse(srv_conn_t *c, const wire_hdr_t *h)
{
    if (h->klen > MAX_KEY || h->vlen > MAX_VAL)
        bg_tp_srv_reply_error(c, h->seq, STORE_E_INVALID,
                        "request too large: key of %u bytes (limit %u), value of %u bytes "
                        "(limit %u)",
                        h->klen, MAX_KEY, h->vlen, MAX_VAL);
    else
        bg_tp_srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory receiving a request of %zu bytes",
                        (size_t)h->klen + h->vlen);
    c->skip = (size_t)h->klen + h->vlen;
}

/*
 * Serve every complete request in c->in; refused ones (oversized, no memory
 * for their payload) are answered and skipped -- or, from a stranger,
 * answered and the connection closed. Returns -1 to close (*bye = 1 for a
 * goodbye of a rank), else 0.
 */
static int srv_parse(bg_tp_server_t *s, srv_conn_t *c, int *bye)
{
    size_t off = 0;
    int ranked = c->state == CONN_RANK;
    uint32_t kmax = ranked ? MAX_KEY : MAX_KEY_UNAUTH, vmax = ranked ? MAX_VAL : MAX_VAL_UNAUTH;
    while (!c->close_after) {
        size_t avail = c->in_len - off;
        if (c->skip) {
            size_t d = c->skip < avail ? c->skip : avail;
            off += d;
            c->skip -= d;
            if (c->skip)
                break;
            continue;
        }
        wire_msg_t m = {0};
        size_t used = 0;
        int got = bg_tp_wire_next(c->in + off, avail, kmax, vmax, &m, &used);
        if (avail >= sizeof(wire_hdr_t) && m.h.type == MSG_BYE) {
            *bye = ranked;
            return -1;
        }
        size_t need = sizeof(wire_hdr_t) + (size_t)m.h.klen + m.h.vlen;
        if (got < 0 && !ranked) {
            bg_tp_srv_refuse_handshake(c, m.h.seq, STORE_E_AUTH,
                                 "handshake message too large (authenticate first)");
            break;
        }
        if (got < 0 ||
            (got == 0 && avail >= sizeof(wire_hdr_t) && need > c->in_cap - off &&
             bg_grow(&c->in, &c->in_cap, off + need, 1) != 0)) {
            srv_refuse(c, &m.h);
            off += sizeof(wire_hdr_t);
            continue;
        }
        if (got == 0)
            break;
        char key[MAX_KEY + 1];
        memcpy(key, m.key, m.h.klen);
        key[m.h.klen] = '\0';
        srv_handle(s, c, &m.h, key, m.val);
        off += used;
        if (!ranked && c->state == CONN_RANK)
            break; /* limits change with trust: parse the rest next round */
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return c->close_after ? -1 : 0;
}

static void srv_read(bg_tp_server_t *s, srv_conn_t *c)
{
    for (;;) {
        /* srv_parse leaves room: a pending request's payload fits (it grew
         * the buffer) or is being skipped. */
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            int bye = 0;
            /* Twice: a handshake that completed may have left requests behind. */
            for (int round = 0; round < 2; round++)
                if (srv_parse(s, c, &bye) < 0) {
                    bg_tp_srv_close_conn(s, c, bye);
                    return;
                }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        bg_tp_srv_close_conn(s, c, 0); /* EOF or reset: no goodbye */
        return;
    }
}

/* ---------------- serving thread ---------------- */

static void srv_accept(bg_tp_server_t *s)
{
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (s->n_unauth >= MAX_UNAUTH) {
        /* The client reads this as the answer to its first message and retries. */
        static const char msg[] = "too many connections in their handshake; try again";
        bg_tp_wire_send(fd, MSG_ERROR, 1, STORE_E_BUSY, NULL, msg, sizeof(msg) - 1);
        close(fd);
        return;
    }
    bg_tp_wire_keepalive(fd);
    srv_conn_t *c = calloc(1, sizeof(*c));
    size_t cap = 65536;
    char *in = c ? malloc(cap) : NULL;
    if (!in) {
        static const char msg[] = "store out of memory accepting a connection";
        bg_tp_wire_send(fd, MSG_ERROR, 1, STORE_E_NOMEM, NULL, msg, sizeof(msg) - 1);
        close(fd);
        free(c);
        return;
    }
    c->fd = fd;
    c->rank = -1;
    c->born = bg_now_s();
    c->in = in;
    c->in_cap = cap;
    c->next = s->conns;
    s->conns = c;
    s->n_unauth++;
}

static void srv_reap(bg_tp_server_t *s)
{
    for (srv_conn_t **c = &s->conns; *c;) {
        if ((*c)->fd < 0) {
            srv_conn_t *d = *c;
            *c = d->next;
            free(d->in);
            free(d);
        } else {
            c = &(*c)->next;
        }
    }
}

/* One poll round over the listening socket and every connection. */
static void srv_poll_once(bg_tp_server_t *s)
{
    size_t n = 1;
    for (srv_conn_t *c = s->conns; c; c = c->next)
        n += c->fd >= 0;
    if (bg_grow(&s->pf, &s->pf_cap, n, sizeof(*s->pf)) != 0 ||
        bg_grow(&s->pc, &s->pc_cap, n, sizeof(*s->pc)) != 0) {
        bg_tp_pause(0.01); /* requests wait in the sockets meanwhile */
        return;
    }
    s->pf[0] = (struct pollfd){s->lfd, POLLIN, 0};
    size_t i = 1;
    for (srv_conn_t *c = s->conns; c; c = c->next)
        if (c->fd >= 0) {
            s->pf[i] = (struct pollfd){c->fd, POLLIN, 0};
            s->pc[i++] = c;
        }
    /* 100 ms: how long destroy may wait for the thread to notice stop. */
    if (poll(s->pf, (nfds_t)n, 100) > 0) {
        if (s->pf[0].revents & POLLIN)
            srv_accept(s);
        for (size_t k = 1; k < n; k++)
            if (s->pf[k].revents && s->pc[k]->fd >= 0)
                srv_read(s, s->pc[k]);
    }
    double now = bg_now_s();
    bg_tp_srv_expire_strangers(s, now);
    bg_tp_srv_watch(s, now);
    bg_tp_srv_ping(s, now);
    srv_reap(s);
}

static void *srv_main(void *arg)
{
    bg_tp_server_t *s = arg;
    while (!atomic_load(&s->stop))
        srv_poll_once(s);
    return NULL;
}

/* ---------------- public ---------------- */

/* The IPv4 address of `name` to listen on; the wildcard is refused, since a
 * store on every interface invites every host in. */
static bg_status_t srv_resolve(const char *name, struct in_addr *out)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc)
        return bg_errorf(BG_ERR_INVALID, "store server: cannot resolve bind address '%s': %s", name,
                         gai_strerror(rc));
    *out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    if (out->s_addr == htonl(INADDR_ANY))
        return bg_errorf(BG_ERR_INVALID,
                         "store server: will not listen on every interface ('%s'); give the "
                         "address of this host that the ranks reach",
                         name);
    return BG_OK;
}

static bg_status_t srv_listen(bg_tp_server_t *s, const char *bind_addr, int port)
{
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0)
        return bg_errorf(BG_ERR_IO, "store server: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bg_status_t st = BG_OK;
    if (bind_addr && *bind_addr)
        st = srv_resolve(bind_addr, &sa.sin_addr);
    if (st != BG_OK)
        ;
    else if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        st = bg_errorf(BG_ERR_IO, "store server: bind %s:%d: %s", bind_addr ? bind_addr : "*", port,
                       strerror(errno));
    else if (listen(s->lfd, 1024) < 0)
        st = bg_errorf(BG_ERR_IO, "store server: listen: %s", strerror(errno));
    if (st != BG_OK) {
        close(s->lfd);
        return st;
    }
    socklen_t sl = sizeof(sa);
    getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
    s->port = ntohs(sa.sin_port);
    return BG_OK;
}

bg_status_t bg_tp_server_create(const char *bind_addr, int port, int world_size,
                                const bg_tp_auth_t *auth, bg_tp_server_t **out)
{
    if (world_size < 1 || port < 0 || port > 65535)
        return bg_errorf(BG_ERR_INVALID, "store server: bad world size %d or port %d", world_size,
                         port);
    bg_tp_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return bg_errorf(BG_ERR_NOMEM, "store server: out of memory");
    bg_status_t st;
    s->world = world_size;
    s->auth = *auth;
    s->hb_s = 10.0;
    atomic_store(&s->limit, DEFAULT_BUDGET);
    s->rank_state = calloc((size_t)world_size, sizeof(int));
    s->why = calloc((size_t)world_size, sizeof(*s->why));
    s->ranks = calloc((size_t)world_size, sizeof(*s->ranks));
    if (!s->rank_state || !s->why || !s->ranks) {
        st = bg_errorf(BG_ERR_NOMEM, "store server: out of memory for %d ranks", world_size);
        goto err_free;
    }
    pthread_mutex_init(&s->mu, NULL);
    if (bg_tp_cond_init(&s->cv) != 0) {
        st = bg_errorf(BG_ERR_NOMEM, "store server: cannot create a condition variable");
        goto err_mu;
    }
    st = srv_listen(s, bind_addr, port);
    if (st != BG_OK)
        goto err_cv;
    if (pthread_create(&s->thread, NULL, srv_main, s) != 0) {
        st = bg_errorf(BG_ERR_NOMEM, "store server: cannot start its thread");
        goto err_sock;
    }
    *out = s;
    return BG_OK;

err_sock:
    close(s->lfd);
err_cv:
    pthread_cond_destroy(&s->cv);
err_mu:
    pthread_mutex_destroy(&s->mu);
err_free:
    free(s->ranks);
    free(s->why);
    free(s->rank_state);
    free(s);
    return st;
}

int bg_tp_server_port(const bg_tp_server_t *srv)
{
    return srv->port;
}

void bg_tp_server_set_limit(bg_tp_server_t *srv, size_t bytes)
{
    atomic_store(&srv->limit, bytes);
}

/* "2,3(never came)": ranks still in the job, for the timeout message. */
static void srv_open_ranks(bg_tp_server_t *s, char *list, size_t cap)
{
    size_t n = 0;
    list[0] = '\0';
    for (int r = 0; r < s->world && n < cap; r++)
        if (s->rank_state[r] == RANK_NEVER || s->rank_state[r] == RANK_LIVE)
            n += (size_t)snprintf(list + n, cap - n, "%s%d%s", n ? "," : "", r,
                                  s->rank_state[r] == RANK_NEVER ? "(never came)" : "");
}

bg_status_t bg_tp_server_wait(bg_tp_server_t *s, double timeout_s)
{
    double deadline = bg_tp_deadline(timeout_s);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int open = 0;
        for (int r = 0; r < s->world; r++)
            open += s->rank_state[r] == RANK_NEVER || s->rank_state[r] == RANK_LIVE;
        if (!open)
            break;
        if (bg_now_s() >= deadline) {
            char list[512];
            srv_open_ranks(s, list, sizeof(list));
            pthread_mutex_unlock(&s->mu);
            return bg_errorf(BG_ERR_TIMEOUT, "store server: ranks %s still in the job after %.1f s",
                             list, timeout_s);
        }
        bg_tp_cond_wait(&s->cv, &s->mu, deadline, 0.05);
    }
    int dead = s->fault.kind != BG_TP_FAULT_NONE ? s->fault.rank : -1;
    bg_status_t st = BG_OK;
    if (dead >= 0)
        st = bg_errorf(BG_ERR_PEER, "rank %d %s", dead, s->why[dead]);
    pthread_mutex_unlock(&s->mu);
    return st;
}

static void free_waiters(waiter_t *w)
{
    while (w) {
        waiter_t *nx = w->next;
        free(w->key);
        free(w);
        w = nx;
    }
}

void bg_tp_server_destroy(bg_tp_server_t *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    while (s->conns) {
        srv_conn_t *c = s->conns;
        s->conns = c->next;
        if (c->fd >= 0)
            close(c->fd);
        free(c->in);
        free(c);
    }
    while (s->kvs) {
        kv_t *k = s->kvs;
        s->kvs = k->next;
        free(k->key);
        free(k->val);
        free(k);
    }
    free_waiters(s->gets);
    while (s->barriers) {
        barrier_t *b = s->barriers;
        s->barriers = b->next;
        free_waiters(b->waiters);
        free(b->name);
        free(b->arrived);
        free(b);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->pf);
    free(s->pc);
    free(s->ranks);
    free(s->why);
    free(s->rank_state);
    free(s);
}
