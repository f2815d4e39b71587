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
 * Must NOT: touch UCX, exit, block the serving thread on one client, drop a
 * request without a reply, or declare a rank dead for anything but its
 * connection closing without goodbye.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/grow.h"
#include "transport/backoff.h"
#include "transport/store_wire.h"
#include "transport/transport.h"

enum { RANK_NEVER = 0, RANK_LIVE, RANK_LEFT, RANK_DEAD };

typedef struct srv_conn {
    int fd;
    int rank; /* -1 until HELLO */
    char *in;
    size_t in_len, in_cap;
    size_t skip; /* bytes of a refused request's payload still to discard */
    struct srv_conn *next;
} srv_conn_t;

typedef struct kv {
    char *key;
    char *val;
    size_t len;
    struct kv *next;
} kv_t;

typedef struct waiter {
    srv_conn_t *conn;
    uint32_t seq;
    char *key; /* GET: key; BARRIER: NULL */
    struct waiter *next;
} waiter_t;

typedef struct barrier {
    char *name;
    char *arrived; /* [world] */
    int count;
    waiter_t *waiters;
    struct barrier *next;
} barrier_t;

struct bg_tp_server {
    int lfd;
    int port;
    int world;
    pthread_t thread;
    atomic_int stop;
    atomic_size_t limit; /* budget for keys + values in bytes; 0: none */
    pthread_mutex_t mu;  /* guards rank_state/why/first_dead for bg_tp_server_wait */
    pthread_cond_t cv;
    int *rank_state;
    char (*why)[160];
    int first_dead;
    /* Only the server thread touches these. */
    srv_conn_t *conns;
    kv_t *kvs;
    size_t used; /* key + value bytes held in kvs */
    waiter_t *gets;
    barrier_t *barriers;
    struct pollfd *pf;
    srv_conn_t **pc;
    size_t pf_cap, pc_cap;
};

/* ---------------- replies ---------------- */

/* Answer request `seq` with MSG_ERROR; the message reaches the client's
 * caller as "store at ADDR:PORT: <message>". Never fails silently on our
 * side: sending does not allocate; a client gone meanwhile is reaped. */
static void srv_reply_error(srv_conn_t *c, uint32_t seq, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void srv_reply_error(srv_conn_t *c, uint32_t seq, uint32_t code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bg_log(BG_LOG_INFO, "store: refused a request of rank %d: %s", c->rank, msg);
    bg_tp_wire_send(c->fd, MSG_ERROR, seq, code, NULL, msg, strlen(msg));
}

static void srv_mark_rank(bg_tp_server_t *s, int rank, int state, const char *why)
{
    pthread_mutex_lock(&s->mu);
    s->rank_state[rank] = state;
    if (why)
        snprintf(s->why[rank], sizeof(s->why[rank]), "%s", why);
    if (state == RANK_DEAD && s->first_dead < 0)
        s->first_dead = rank;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int srv_rank_state(bg_tp_server_t *s, int rank)
{
    pthread_mutex_lock(&s->mu);
    int st = s->rank_state[rank];
    pthread_mutex_unlock(&s->mu);
    return st;
}

static kv_t *srv_find_kv(bg_tp_server_t *s, const char *key)
{
    for (kv_t *k = s->kvs; k; k = k->next)
        if (!strcmp(k->key, key))
            return k;
    return NULL;
}

static void srv_drop_waiters_of(waiter_t **list, srv_conn_t *c)
{
    for (waiter_t **w = list; *w;) {
        if ((*w)->conn == c) {
            waiter_t *d = *w;
            *w = d->next;
            free(d->key);
            free(d);
        } else {
            w = &(*w)->next;
        }
    }
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
            int st = srv_rank_state(s, r);
            int hit = pass == 0   ? st == RANK_NEVER
                      : pass == 1 ? st == RANK_DEAD
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

static void srv_close_conn(bg_tp_server_t *s, srv_conn_t *c, int said_bye)
{
    srv_drop_waiters_of(&s->gets, c);
    for (barrier_t *b = s->barriers; b; b = b->next)
        srv_drop_waiters_of(&b->waiters, c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->rank < 0)
        return;
    if (said_bye) {
        srv_mark_rank(s, c->rank, RANK_LEFT, NULL);
        return;
    }
    char why[160];
    snprintf(why, sizeof(why), "its rendezvous connection closed without goodbye (process died?)");
    srv_mark_rank(s, c->rank, RANK_DEAD, why);
    bg_log(BG_LOG_INFO, "store: rank %d died", c->rank);
    for (srv_conn_t *o = s->conns; o; o = o->next)
        if (o->fd >= 0 && o->rank >= 0)
            bg_tp_wire_send(o->fd, MSG_DEAD, 0, (uint32_t)c->rank, NULL, why, strlen(why));
}

/* ---------------- requests ---------------- */

static void srv_hello(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
{
    uint32_t world = 0;
    if (h->vlen == 4)
        memcpy(&world, val, 4);
    world = ntohl(world);
    int r = (int)h->arg;
    if (c->rank >= 0)
        srv_reply_error(c, h->seq, STORE_E_INVALID, "second hello on one connection");
    else if ((int)world != s->world)
        srv_reply_error(c, h->seq, STORE_E_INVALID,
                        "world size mismatch: store serves %d ranks, rank %d says %u", s->world, r,
                        world);
    else if (r < 0 || r >= s->world)
        srv_reply_error(c, h->seq, STORE_E_INVALID, "rank %d out of range 0..%d", r, s->world - 1);
    else if (srv_rank_state(s, r) != RANK_NEVER)
        srv_reply_error(c, h->seq, STORE_E_INVALID, "rank %d connected twice", r);
    else {
        c->rank = r;
        srv_mark_rank(s, r, RANK_LIVE, NULL);
        bg_tp_wire_send(c->fd, MSG_HELLO_OK, h->seq, 0, NULL, NULL, 0);
    }
}

/* Store key = val, or say why not (budget, memory). */
static void srv_set(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                    const char *val)
{
    kv_t *k = srv_find_kv(s, key);
    size_t old = k ? k->len : 0, add = k ? 0 : h->klen;
    size_t limit = atomic_load(&s->limit);
    size_t after = s->used - old + add + h->vlen;
    if (limit && after > limit && after > s->used) {
        srv_reply_error(c, h->seq, STORE_E_NOMEM,
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
        srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory storing key '%.200s' (%u bytes)",
                        key, h->vlen);
        return;
    }
    memcpy(v, val, h->vlen);
    if (!k) {
        k = nk;
        k->key = nkey;
        k->next = s->kvs;
        s->kvs = k;
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
        srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory waiting for key '%.200s'", key);
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

static void srv_barrier_release(bg_tp_server_t *s, barrier_t *b)
{
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
        srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory entering barrier '%.200s'", name);
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

/* One complete request. Everything but BYE is answered here or later. */
static void srv_handle(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                       const char *val)
{
    if (h->type != MSG_HELLO && c->rank < 0) {
        srv_reply_error(c, h->seq, STORE_E_INVALID, "request of type %u before hello", h->type);
        return;
    }
    if (memchr(key, '\0', h->klen)) {
        srv_reply_error(c, h->seq, STORE_E_INVALID, "key of %u bytes contains a NUL byte", h->klen);
        return;
    }
    switch (h->type) {
    case MSG_HELLO:
        srv_hello(s, c, h, val);
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
        srv_reply_error(c, h->seq, STORE_E_INVALID, "unknown request type %u", h->type);
        return;
    }
}

/* A request the server will not read: answer it, then discard its payload
 * as it arrives, so the connection stays in step. */
static void srv_refuse(srv_conn_t *c, const wire_hdr_t *h)
{
    if (h->klen > MAX_KEY || h->vlen > MAX_VAL)
        srv_reply_error(c, h->seq, STORE_E_INVALID,
                        "request too large: key of %u bytes (limit %u), value of %u bytes "
                        "(limit %u)",
                        h->klen, MAX_KEY, h->vlen, MAX_VAL);
    else
        srv_reply_error(c, h->seq, STORE_E_NOMEM, "out of memory receiving a request of %zu bytes",
                        (size_t)h->klen + h->vlen);
    c->skip = (size_t)h->klen + h->vlen;
}

/*
 * Serve every complete request in c->in; refused ones (oversized, no memory
 * for their payload) are answered and skipped. Returns -1 on BYE (*bye = 1),
 * else 0.
 */
static int srv_parse(bg_tp_server_t *s, srv_conn_t *c, int *bye)
{
    size_t off = 0;
    for (;;) {
        size_t avail = c->in_len - off;
        if (c->skip) {
            size_t d = c->skip < avail ? c->skip : avail;
            off += d;
            c->skip -= d;
            if (c->skip)
                break;
            continue;
        }
        if (avail < sizeof(wire_hdr_t))
            break;
        wire_hdr_t h;
        memcpy(&h, c->in + off, sizeof(h));
        bg_tp_wire_decode(&h);
        if (h.type == MSG_BYE) {
            *bye = 1;
            return -1;
        }
        size_t need = sizeof(h) + h.klen + h.vlen;
        int big = h.klen > MAX_KEY || h.vlen > MAX_VAL;
        if (big || (need > c->in_cap - off && bg_grow(&c->in, &c->in_cap, off + need, 1) != 0)) {
            srv_refuse(c, &h);
            off += sizeof(h);
            continue;
        }
        if (avail < need)
            break;
        char key[MAX_KEY + 1];
        memcpy(key, c->in + off + sizeof(h), h.klen);
        key[h.klen] = '\0';
        srv_handle(s, c, &h, key, c->in + off + sizeof(h) + h.klen);
        off += need;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
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
            if (srv_parse(s, c, &bye) < 0) {
                srv_close_conn(s, c, bye);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        srv_close_conn(s, c, 0); /* EOF or reset: no goodbye */
        return;
    }
}

/* ---------------- serving thread ---------------- */

static void srv_accept(bg_tp_server_t *s)
{
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return;
    bg_tp_wire_keepalive(fd);
    srv_conn_t *c = calloc(1, sizeof(*c));
    size_t cap = 65536;
    char *in = c ? malloc(cap) : NULL;
    if (!in) {
        /* The client reads this as the answer to its hello. */
        static const char msg[] = "store out of memory accepting a connection";
        bg_tp_wire_send(fd, MSG_ERROR, 1, STORE_E_NOMEM, NULL, msg, sizeof(msg) - 1);
        close(fd);
        free(c);
        return;
    }
    c->fd = fd;
    c->rank = -1;
    c->in = in;
    c->in_cap = cap;
    c->next = s->conns;
    s->conns = c;
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
            if (s->pf[k].revents)
                srv_read(s, s->pc[k]);
    }
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
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    bg_status_t st = BG_OK;
    if (bind_addr && *bind_addr && inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1)
        st = bg_errorf(BG_ERR_INVALID, "store server: bind address '%s' is not an IPv4 address",
                       bind_addr);
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
                                bg_tp_server_t **out)
{
    if (world_size < 1 || port < 0 || port > 65535)
        return bg_errorf(BG_ERR_INVALID, "store server: bad world size %d or port %d", world_size,
                         port);
    bg_tp_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return bg_errorf(BG_ERR_NOMEM, "store server: out of memory");
    bg_status_t st;
    s->world = world_size;
    s->first_dead = -1;
    s->rank_state = calloc((size_t)world_size, sizeof(int));
    s->why = calloc((size_t)world_size, sizeof(*s->why));
    if (!s->rank_state || !s->why) {
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
    int dead = s->first_dead;
    bg_status_t st = BG_OK;
    if (dead >= 0)
        st = bg_errorf(BG_ERR_PEER, "rank %d died: %s", dead, s->why[dead]);
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
    free(s->why);
    free(s->rank_state);
    free(s);
}
