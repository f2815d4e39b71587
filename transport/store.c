/*
 * transport/store.c -- the rendezvous store: a small TCP key/value server
 * with barriers, its client, and liveness through the clients' sockets.
 *
 * Every rank keeps its store connection open for the whole job. A rank that
 * dies closes it without a goodbye (the kernel closes a killed process's
 * sockets at once; keepalive catches vanished hosts within ~5 s), and the
 * server tells every other rank "rank r died". That is how brigade detects
 * dead peers without UCX's peer-failure mode, which would force same-host
 * endpoints off shared memory (docs/transport.md).
 *
 * Must NOT: touch UCX, exit, or block without a deadline. The wire format is
 * private to this file (a launcher uses bg_tp_server_*, not the bytes).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/tp_internal.h"

/* ---------------- wire format ---------------- */

enum {
    MSG_HELLO = 1, /* c->s arg=rank, value=u32 world */
    MSG_HELLO_OK,  /* s->c */
    MSG_SET,       /* c->s key, value */
    MSG_GET,       /* c->s key */
    MSG_VALUE,     /* s->c value */
    MSG_BARRIER,   /* c->s key=name */
    MSG_BARRIER_DONE,
    MSG_STATUS,    /* c->s key=barrier name or "" -> s->c MSG_STATUS_REPLY text */
    MSG_STATUS_REPLY,
    MSG_BYE,       /* c->s */
    MSG_DEAD,      /* s->c arg=rank, value=cause */
    MSG_ERROR,     /* s->c value=message */
};

#define MAX_KEY 1024u
#define MAX_VAL (1u << 20)

typedef struct {
    uint32_t type, seq, arg, klen, vlen;
} wire_hdr_t;

/* Write all of buf; MSG_NOSIGNAL so a dead reader gives EPIPE, not SIGPIPE. */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 1000);
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_msg(int fd, uint32_t type, uint32_t seq, uint32_t arg, const char *key,
                    const void *val, size_t vlen)
{
    size_t klen = key ? strlen(key) : 0;
    wire_hdr_t h = {htonl(type), htonl(seq), htonl(arg), htonl((uint32_t)klen),
                    htonl((uint32_t)vlen)};
    /* One buffer so a message is one send and never interleaves. */
    size_t total = sizeof(h) + klen + vlen;
    char stackbuf[512];
    char *buf = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
    if (!buf) return -1;
    memcpy(buf, &h, sizeof(h));
    if (klen) memcpy(buf + sizeof(h), key, klen);
    if (vlen) memcpy(buf + sizeof(h) + klen, val, vlen);
    int rc = write_all(fd, buf, total);
    if (buf != stackbuf) free(buf);
    return rc;
}

static void set_keepalive(int fd)
{
    /* Why: a host that vanishes (power, network) sends no FIN; keepalive
     * probes turn that into an error within idle + intvl * cnt seconds. */
    int one = 1, idle = 2, intvl = 1, cnt = 3;
    unsigned user_to = 5000;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_to, sizeof(user_to));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---------------- server ---------------- */

enum { RANK_NEVER = 0, RANK_LIVE, RANK_LEFT, RANK_DEAD };

typedef struct srv_conn {
    int fd;
    int rank; /* -1 until HELLO */
    char *in;
    size_t in_len, in_cap;
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
    char *key; /* GET: key; BARRIER: name */
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
    pthread_mutex_t mu; /* guards rank_state/why/done for bg_tp_server_wait */
    pthread_cond_t cv;
    int *rank_state;
    char (*why)[160];
    int first_dead;
    /* Only the server thread touches these. */
    srv_conn_t *conns;
    kv_t *kvs;
    waiter_t *gets;
    barrier_t *barriers;
};

static void srv_mark_rank(bg_tp_server_t *s, int rank, int state, const char *why)
{
    pthread_mutex_lock(&s->mu);
    s->rank_state[rank] = state;
    if (why) snprintf(s->why[rank], sizeof(s->why[rank]), "%s", why);
    if (state == RANK_DEAD && s->first_dead < 0) s->first_dead = rank;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static kv_t *srv_find_kv(bg_tp_server_t *s, const char *key)
{
    for (kv_t *k = s->kvs; k; k = k->next)
        if (!strcmp(k->key, key)) return k;
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
        for (b = s->barriers; b && strcmp(b->name, barrier); b = b->next) {}
    size_t n = 0;
    out[0] = '\0';
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2 && !(barrier && *barrier)) break;
        char list[512];
        size_t m = 0;
        list[0] = '\0';
        for (int r = 0; r < s->world && m < sizeof(list); r++) {
            pthread_mutex_lock(&s->mu);
            int st = s->rank_state[r];
            pthread_mutex_unlock(&s->mu);
            int hit = pass == 0 ? st == RANK_NEVER : pass == 1 ? st == RANK_DEAD
                                                               : (!b || !b->arrived[r]);
            if (hit) m += (size_t)snprintf(list + m, sizeof(list) - m, "%s%d", m ? "," : "", r);
        }
        if (m && n < cap)
            n += (size_t)snprintf(out + n, cap - n, "%s%s: rank %s", n ? "; " : "", labels[pass],
                                  list);
    }
    if (n == 0) snprintf(out, cap, "every rank is connected");
}

static void srv_close_conn(bg_tp_server_t *s, srv_conn_t *c, int said_bye)
{
    srv_drop_waiters_of(&s->gets, c);
    for (barrier_t *b = s->barriers; b; b = b->next) srv_drop_waiters_of(&b->waiters, c);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->rank < 0) return;
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
            send_msg(o->fd, MSG_DEAD, 0, (uint32_t)c->rank, NULL, why, strlen(why));
}

static void srv_handle(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                       const char *val)
{
    switch (h->type) {
    case MSG_HELLO: {
        uint32_t world = 0;
        if (h->vlen == 4) memcpy(&world, val, 4);
        world = ntohl(world);
        int r = (int)h->arg;
        char err[200] = "";
        if (c->rank >= 0) snprintf(err, sizeof(err), "second hello on one connection");
        else if ((int)world != s->world)
            snprintf(err, sizeof(err), "world size mismatch: store serves %d ranks, rank %d says %u",
                     s->world, r, world);
        else if (r < 0 || r >= s->world)
            snprintf(err, sizeof(err), "rank %d out of range 0..%d", r, s->world - 1);
        else {
            pthread_mutex_lock(&s->mu);
            int st = s->rank_state[r];
            pthread_mutex_unlock(&s->mu);
            if (st != RANK_NEVER) snprintf(err, sizeof(err), "rank %d connected twice", r);
        }
        if (*err) {
            send_msg(c->fd, MSG_ERROR, h->seq, 0, NULL, err, strlen(err));
            return;
        }
        c->rank = r;
        srv_mark_rank(s, r, RANK_LIVE, NULL);
        send_msg(c->fd, MSG_HELLO_OK, h->seq, 0, NULL, NULL, 0);
        return;
    }
    case MSG_SET: {
        kv_t *k = srv_find_kv(s, key);
        char *v = malloc(h->vlen ? h->vlen : 1);
        if (!v) return;
        memcpy(v, val, h->vlen);
        if (!k) {
            k = calloc(1, sizeof(*k));
            if (!k || !(k->key = strdup(key))) {
                free(k);
                free(v);
                return;
            }
            k->next = s->kvs;
            s->kvs = k;
        }
        free(k->val);
        k->val = v;
        k->len = h->vlen;
        for (waiter_t **w = &s->gets; *w;) {
            if (!strcmp((*w)->key, key)) {
                waiter_t *d = *w;
                send_msg(d->conn->fd, MSG_VALUE, d->seq, 0, NULL, k->val, k->len);
                *w = d->next;
                free(d->key);
                free(d);
            } else {
                w = &(*w)->next;
            }
        }
        return;
    }
    case MSG_GET: {
        kv_t *k = srv_find_kv(s, key);
        if (k) {
            send_msg(c->fd, MSG_VALUE, h->seq, 0, NULL, k->val, k->len);
            return;
        }
        waiter_t *w = calloc(1, sizeof(*w));
        if (!w || !(w->key = strdup(key))) {
            free(w);
            return;
        }
        w->conn = c;
        w->seq = h->seq;
        w->next = s->gets;
        s->gets = w;
        return;
    }
    case MSG_BARRIER: {
        if (c->rank < 0) return;
        barrier_t *b;
        for (b = s->barriers; b && strcmp(b->name, key); b = b->next) {}
        if (!b) {
            b = calloc(1, sizeof(*b));
            if (!b) return;
            b->name = strdup(key);
            b->arrived = calloc((size_t)s->world, 1);
            if (!b->name || !b->arrived) {
                free(b->name);
                free(b->arrived);
                free(b);
                return;
            }
            b->next = s->barriers;
            s->barriers = b;
        }
        waiter_t *w = calloc(1, sizeof(*w));
        if (!w) return;
        w->conn = c;
        w->seq = h->seq;
        w->next = b->waiters;
        b->waiters = w;
        if (!b->arrived[c->rank]) {
            b->arrived[c->rank] = 1;
            b->count++;
        }
        if (b->count < s->world) return;
        for (waiter_t *x = b->waiters; x;) {
            waiter_t *nx = x->next;
            send_msg(x->conn->fd, MSG_BARRIER_DONE, x->seq, 0, NULL, NULL, 0);
            free(x->key);
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
        return;
    }
    case MSG_STATUS: {
        char text[1024];
        srv_status_text(s, key, text, sizeof(text));
        send_msg(c->fd, MSG_STATUS_REPLY, h->seq, 0, NULL, text, strlen(text));
        return;
    }
    default: return;
    }
}

/* Parse every complete message in c->in. Returns -1 on BYE or protocol error. */
static int srv_parse(bg_tp_server_t *s, srv_conn_t *c, int *bye)
{
    size_t off = 0;
    while (c->in_len - off >= sizeof(wire_hdr_t)) {
        wire_hdr_t h;
        memcpy(&h, c->in + off, sizeof(h));
        h.type = ntohl(h.type), h.seq = ntohl(h.seq), h.arg = ntohl(h.arg);
        h.klen = ntohl(h.klen), h.vlen = ntohl(h.vlen);
        if (h.klen > MAX_KEY || h.vlen > MAX_VAL) return -1;
        size_t need = sizeof(h) + h.klen + h.vlen;
        if (c->in_len - off < need) break;
        char key[MAX_KEY + 1];
        memcpy(key, c->in + off + sizeof(h), h.klen);
        key[h.klen] = '\0';
        const char *val = c->in + off + sizeof(h) + h.klen;
        if (h.type == MSG_BYE) {
            *bye = 1;
            return -1;
        }
        srv_handle(s, c, &h, key, val);
        off += need;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return 0;
}

static void srv_read(bg_tp_server_t *s, srv_conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 131072;
            if (cap > 4 * (size_t)MAX_VAL) cap = 4 * (size_t)MAX_VAL;
            if (cap <= c->in_len) break; /* over the limit: protocol abuse */
            char *p = realloc(c->in, cap);
            if (!p) break;
            c->in = p;
            c->in_cap = cap;
        }
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
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        srv_close_conn(s, c, 0); /* EOF or reset: no goodbye */
        return;
    }
    srv_close_conn(s, c, 0);
}

static void *srv_main(void *arg)
{
    bg_tp_server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        int n = 1;
        for (srv_conn_t *c = s->conns; c; c = c->next) n += c->fd >= 0;
        struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
        srv_conn_t **pc = calloc((size_t)n, sizeof(*pc));
        if (!pf || !pc) {
            free(pf);
            free(pc);
            usleep(10000);
            continue;
        }
        pf[0].fd = s->lfd;
        pf[0].events = POLLIN;
        int i = 1;
        for (srv_conn_t *c = s->conns; c; c = c->next)
            if (c->fd >= 0) {
                pf[i].fd = c->fd;
                pf[i].events = POLLIN;
                pc[i++] = c;
            }
        /* 100 ms: how long destroy may wait for the thread to notice stop. */
        int r = poll(pf, (nfds_t)n, 100);
        if (r > 0) {
            if (pf[0].revents & POLLIN) {
                int fd = accept(s->lfd, NULL, NULL);
                srv_conn_t *c = fd >= 0 ? calloc(1, sizeof(*c)) : NULL;
                if (c) {
                    set_keepalive(fd);
                    c->fd = fd;
                    c->rank = -1;
                    c->next = s->conns;
                    s->conns = c;
                } else if (fd >= 0) {
                    close(fd);
                }
            }
            for (int k = 1; k < n; k++)
                if (pf[k].revents) srv_read(s, pc[k]);
        }
        free(pf);
        free(pc);
        /* Reap closed connections. */
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
    return NULL;
}

bg_status_t bg_tp_server_create(const char *bind_addr, int port, int world_size,
                                bg_tp_server_t **out)
{
    if (world_size < 1 || port < 0 || port > 65535)
        return bg_errorf(BG_ERR_INVALID, "store server: bad world size %d or port %d", world_size,
                         port);
    bg_tp_server_t *s = calloc(1, sizeof(*s));
    if (!s) return bg_errorf(BG_ERR_NOMEM, "store server: out of memory");
    s->world = world_size;
    s->first_dead = -1;
    s->rank_state = calloc((size_t)world_size, sizeof(int));
    s->why = calloc((size_t)world_size, sizeof(*s->why));
    if (!s->rank_state || !s->why) {
        bg_errorf(BG_ERR_NOMEM, "store server: out of memory for %d ranks", world_size);
        goto err_free;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);

    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) {
        bg_errorf(BG_ERR_IO, "store server: socket: %s", strerror(errno));
        goto err_sync;
    }
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind_addr && *bind_addr && inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        bg_errorf(BG_ERR_INVALID, "store server: bind address '%s' is not an IPv4 address",
                  bind_addr);
        goto err_sock;
    }
    if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        bg_errorf(BG_ERR_IO, "store server: bind %s:%d: %s", bind_addr ? bind_addr : "*", port,
                  strerror(errno));
        goto err_sock;
    }
    if (listen(s->lfd, 1024) < 0) {
        bg_errorf(BG_ERR_IO, "store server: listen: %s", strerror(errno));
        goto err_sock;
    }
    socklen_t sl = sizeof(sa);
    getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
    s->port = ntohs(sa.sin_port);
    if (pthread_create(&s->thread, NULL, srv_main, s) != 0) {
        bg_errorf(BG_ERR_NOMEM, "store server: cannot start its thread");
        goto err_sock;
    }
    *out = s;
    return BG_OK;

err_sock:
    close(s->lfd);
err_sync:
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
err_free:
    free(s->why);
    free(s->rank_state);
    free(s);
    return BG_ERR_IO;
}

int bg_tp_server_port(const bg_tp_server_t *srv)
{
    return srv->port;
}

bg_status_t bg_tp_server_wait(bg_tp_server_t *s, double timeout_s)
{
    double deadline = bg_tp_deadline(timeout_s);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int open = 0;
        for (int r = 0; r < s->world; r++)
            open += s->rank_state[r] == RANK_NEVER || s->rank_state[r] == RANK_LIVE;
        if (!open) break;
        if (bg_tp_now() >= deadline) {
            char list[512];
            size_t n = 0;
            list[0] = '\0';
            for (int r = 0; r < s->world && n < sizeof(list); r++)
                if (s->rank_state[r] == RANK_NEVER || s->rank_state[r] == RANK_LIVE)
                    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%d%s", n ? "," : "", r,
                                          s->rank_state[r] == RANK_NEVER ? "(never came)" : "");
            pthread_mutex_unlock(&s->mu);
            return bg_errorf(BG_ERR_TIMEOUT, "store server: ranks %s still in the job after %.1f s",
                             list, timeout_s);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    int dead = s->first_dead;
    bg_status_t st = BG_OK;
    if (dead >= 0) st = bg_errorf(BG_ERR_PEER, "rank %d died: %s", dead, s->why[dead]);
    pthread_mutex_unlock(&s->mu);
    return st;
}

void bg_tp_server_destroy(bg_tp_server_t *s)
{
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    while (s->conns) {
        srv_conn_t *c = s->conns;
        s->conns = c->next;
        if (c->fd >= 0) close(c->fd);
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
    while (s->gets) {
        waiter_t *w = s->gets;
        s->gets = w->next;
        free(w->key);
        free(w);
    }
    while (s->barriers) {
        barrier_t *b = s->barriers;
        s->barriers = b->next;
        while (b->waiters) {
            waiter_t *w = b->waiters;
            b->waiters = w->next;
            free(w);
        }
        free(b->name);
        free(b->arrived);
        free(b);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->why);
    free(s->rank_state);
    free(s);
}

/* ---------------- client ---------------- */

struct bg_tp_store {
    int fd;
    int rank, world;
    char addr[256];
    int port;
    int host_rank0;
    pthread_t reader;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    uint32_t seq;       /* of the request in flight */
    int have_reply;
    uint32_t reply_type;
    char *reply;
    size_t reply_len;
    char (*dead)[160];  /* [world], "" while alive */
    int lost;
    char lost_why[200];
    int closing;
    atomic_uint_fast64_t fail_gen;
};

static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The reader thread: replies go to the waiting caller, DEAD notices to the
 * failure feed. It never calls into UCX or the user's code. */
static void *store_reader(void *arg)
{
    bg_tp_store_t *st = arg;
    for (;;) {
        wire_hdr_t h;
        char *key = NULL, *val = NULL;
        int bad = read_full(st->fd, &h, sizeof(h)) < 0;
        if (!bad) {
            h.type = ntohl(h.type), h.seq = ntohl(h.seq), h.arg = ntohl(h.arg);
            h.klen = ntohl(h.klen), h.vlen = ntohl(h.vlen);
            bad = h.klen > MAX_KEY || h.vlen > MAX_VAL;
        }
        if (!bad) {
            key = malloc(h.klen + 1);
            val = malloc(h.vlen + 1);
            bad = !key || !val || read_full(st->fd, key, h.klen) < 0 ||
                  read_full(st->fd, val, h.vlen) < 0;
        }
        pthread_mutex_lock(&st->mu);
        if (bad) {
            if (!st->closing) {
                st->lost = 1;
                snprintf(st->lost_why, sizeof(st->lost_why),
                         "lost the rendezvous store at %.64s:%d%s", st->addr, st->port,
                         st->host_rank0 ? " (hosted by rank 0: rank 0 died?)" : "");
                atomic_fetch_add(&st->fail_gen, 1);
            }
            pthread_cond_broadcast(&st->cv);
            pthread_mutex_unlock(&st->mu);
            free(key);
            free(val);
            return NULL;
        }
        val[h.vlen] = '\0';
        if (h.type == MSG_DEAD) {
            if ((int)h.arg >= 0 && (int)h.arg < st->world && !st->dead[h.arg][0]) {
                snprintf(st->dead[h.arg], sizeof(st->dead[h.arg]), "%s", val[0] ? val : "died");
                atomic_fetch_add(&st->fail_gen, 1);
            }
            free(val);
        } else if (h.seq == st->seq && !st->have_reply) {
            st->have_reply = 1;
            st->reply_type = h.type;
            free(st->reply);
            st->reply = val;
            st->reply_len = h.vlen;
        } else {
            free(val); /* stale reply to a request that timed out */
        }
        free(key);
        pthread_cond_broadcast(&st->cv);
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
    set_keepalive(fd);
    *fd_out = fd;
    return 0;
}

/* Wait for the reply to request `seq`, a failure, or the deadline.
 * Called with st->mu held. 0 = reply, 1 = timeout, 2 = failure. */
static int store_wait_reply(bg_tp_store_t *st, double deadline, int fail_on_death)
{
    uint64_t gen0 = atomic_load(&st->fail_gen);
    while (!st->have_reply) {
        if (st->lost) return 2;
        if (fail_on_death && atomic_load(&st->fail_gen) != gen0) return 2;
        if (bg_tp_now() >= deadline) return 1;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    }
    return 0;
}

/* Describe the first failure (dead rank or lost store) into the error. */
static bg_status_t store_failure(bg_tp_store_t *st, const char *what)
{
    if (st->lost) return bg_errorf(BG_ERR_PEER, "%s: %s", what, st->lost_why);
    for (int r = 0; r < st->world; r++)
        if (st->dead[r][0])
            return bg_errorf(BG_ERR_PEER, "%s: rank %d died: %s", what, r, st->dead[r]);
    return bg_errorf(BG_ERR_PEER, "%s: a rank died", what);
}

/* Ask the server who is missing (after a timeout); best effort. */
static void store_status(bg_tp_store_t *st, const char *barrier, char *out, size_t cap)
{
    snprintf(out, cap, "store did not answer a status query");
    st->seq++;
    st->have_reply = 0;
    if (send_msg(st->fd, MSG_STATUS, st->seq, 0, barrier, NULL, 0) < 0) return;
    if (store_wait_reply(st, bg_tp_now() + 2.0, 0) == 0 && st->reply_type == MSG_STATUS_REPLY)
        snprintf(out, cap, "%s", st->reply);
}

bg_status_t bg_tp_store_connect(const char *addr, int port, int rank, int world_size,
                                double timeout_s, bg_tp_store_t **out)
{
    if (rank < 0 || rank >= world_size)
        return bg_errorf(BG_ERR_INVALID, "store: rank %d not in 0..%d", rank, world_size - 1);
    double deadline = bg_tp_deadline(timeout_s);
    int fd = -1;
    char err[256] = "";
    for (;;) {
        if (connect_once(addr, port, &fd, err, sizeof(err)) == 0) break;
        if (bg_tp_now() >= deadline)
            return bg_errorf(BG_ERR_TIMEOUT,
                             "rank %d: rendezvous store %s:%d not reachable within %.1f s: %s%s",
                             rank, addr, port, timeout_s, err,
                             " (is rank 0 or the launcher up? BRIGADE_MASTER_ADDR/PORT)");
        usleep(50000);
    }
    /* Handshake synchronously, before the reader thread owns the socket. */
    uint32_t w = htonl((uint32_t)world_size);
    wire_hdr_t h;
    struct pollfd pf = {fd, POLLIN, 0};
    double left = deadline - bg_tp_now();
    int ms = left > 1e6 ? -1 : (int)(left * 1000) + 1;
    if (send_msg(fd, MSG_HELLO, 1, (uint32_t)rank, NULL, &w, 4) < 0 || poll(&pf, 1, ms) <= 0 ||
        read_full(fd, &h, sizeof(h)) < 0) {
        close(fd);
        return bg_errorf(BG_ERR_IO, "rank %d: rendezvous store %s:%d: handshake failed", rank,
                         addr, port);
    }
    h.type = ntohl(h.type);
    h.klen = ntohl(h.klen);
    h.vlen = ntohl(h.vlen);
    if (h.type != MSG_HELLO_OK) {
        char msg[300] = "";
        size_t n = h.vlen < sizeof(msg) - 1 ? h.vlen : sizeof(msg) - 1;
        if (h.klen == 0 && read_full(fd, msg, n) == 0) msg[n] = '\0';
        close(fd);
        return bg_errorf(BG_ERR_INVALID, "rank %d: rendezvous store %s:%d refused: %s", rank, addr,
                         port, msg);
    }
    bg_tp_store_t *st = calloc(1, sizeof(*st));
    if (!st) {
        close(fd);
        return bg_errorf(BG_ERR_NOMEM, "store: out of memory");
    }
    st->dead = calloc((size_t)world_size, sizeof(*st->dead));
    if (!st->dead) {
        bg_errorf(BG_ERR_NOMEM, "store: out of memory");
        goto err_st;
    }
    st->fd = fd;
    st->rank = rank;
    st->world = world_size;
    st->port = port;
    snprintf(st->addr, sizeof(st->addr), "%s", addr);
    st->seq = 1;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    if (pthread_create(&st->reader, NULL, store_reader, st) != 0) {
        bg_errorf(BG_ERR_NOMEM, "store: cannot start reader thread");
        goto err_sync;
    }
    *out = st;
    return BG_OK;

err_sync:
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st->dead);
err_st:
    free(st);
    close(fd);
    return BG_ERR_NOMEM;
}

bg_status_t bg_tp_store_set(bg_tp_store_t *st, const char *key, const void *val, size_t len)
{
    if (strlen(key) > MAX_KEY || len > MAX_VAL)
        return bg_errorf(BG_ERR_INVALID, "store set '%s': key or value too large (%zu bytes)", key,
                         len);
    pthread_mutex_lock(&st->mu);
    int rc = send_msg(st->fd, MSG_SET, 0, 0, key, val, len);
    int lost = st->lost;
    pthread_mutex_unlock(&st->mu);
    if (rc < 0 || lost)
        return bg_errorf(BG_ERR_PEER, "rank %d: store set '%s': %s", st->rank, key,
                         lost ? st->lost_why : strerror(errno));
    return BG_OK;
}

bg_status_t bg_tp_store_get(bg_tp_store_t *st, const char *key, void *buf, size_t cap,
                            double timeout_s, size_t *len)
{
    char what[MAX_KEY + 64];
    snprintf(what, sizeof(what), "rank %d: store get '%s'", st->rank, key);
    pthread_mutex_lock(&st->mu);
    st->seq++;
    st->have_reply = 0;
    if (send_msg(st->fd, MSG_GET, st->seq, 0, key, NULL, 0) < 0) {
        bg_status_t s = store_failure(st, what);
        pthread_mutex_unlock(&st->mu);
        return s;
    }
    int w = store_wait_reply(st, bg_tp_deadline(timeout_s), 1);
    bg_status_t s = BG_OK;
    if (w == 2) {
        s = store_failure(st, what);
    } else if (w == 1) {
        char text[1024];
        store_status(st, NULL, text, sizeof(text));
        s = bg_errorf(BG_ERR_TIMEOUT, "%s: not published within %.1f s (%s)", what, timeout_s,
                      text);
    } else if (st->reply_len > cap) {
        s = bg_errorf(BG_ERR_INVALID, "%s: value of %zu bytes exceeds buffer of %zu", what,
                      st->reply_len, cap);
    } else {
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
    st->seq++;
    st->have_reply = 0;
    if (send_msg(st->fd, MSG_BARRIER, st->seq, 0, name, NULL, 0) < 0) {
        bg_status_t s = store_failure(st, what);
        pthread_mutex_unlock(&st->mu);
        return s;
    }
    int w = store_wait_reply(st, bg_tp_deadline(timeout_s), 1);
    bg_status_t s = BG_OK;
    if (w == 2) {
        s = store_failure(st, what);
    } else if (w == 1) {
        char text[1024];
        store_status(st, name, text, sizeof(text));
        s = bg_errorf(BG_ERR_TIMEOUT, "%s timed out after %.1f s: %s", what, timeout_s, text);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

void bg_tp_store_close(bg_tp_store_t *st)
{
    if (!st) return;
    pthread_mutex_lock(&st->mu);
    st->closing = 1;
    if (!st->lost) send_msg(st->fd, MSG_BYE, 0, 0, NULL, NULL, 0);
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
        if (why) snprintf(why, cap, "%s", st->dead[rank]);
    } else if (st->lost) {
        dead = 1;
        if (why) snprintf(why, cap, "%s", st->lost_why);
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
