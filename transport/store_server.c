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
 * Trust: a connection is a stranger until it has proved the job secret
 * (store_auth.h) and named this store's job; a stranger's messages are
 * small, it may not read, write or take a rank's slot, it is closed after a
 * failed proof or AUTH_TIMEOUT_S, and at most MAX_UNAUTH are held at once.
 * Faults: besides a connection closing without goodbye, a rank's own
 * failure report (MSG_FAIL), missing heartbeats and a progress count that
 * stops moving make the store tell every other rank, first fault recorded
 * for the launcher (bg_tp_server_fault).
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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/grow.h"
#include "transport/backoff.h"
#include "transport/store_auth.h"
#include "transport/store_wire.h"
#include "transport/transport.h"

/* RANK_GONE: faulty (failed, unresponsive, hung, died); not waited for. */
enum { RANK_NEVER = 0, RANK_LIVE, RANK_LEFT, RANK_GONE };
enum { CONN_NEW = 0, CONN_CHALLENGED, CONN_RANK };

#define AUTH_TIMEOUT_S 2.0  /* a stranger has this long to prove the secret */
#define MAX_UNAUTH 32       /* strangers held at once; more are turned away */
#define MAX_KEYS 65536      /* keys the store holds */
#define DEFAULT_BUDGET ((size_t)256 << 20)
#define WHY_LEN 512

typedef struct srv_conn {
    int fd;
    int rank;  /* -1 until HELLO */
    int state; /* CONN_* */
    int close_after; /* a refused handshake: close once the reply is sent */
    double born;     /* accept time, for AUTH_TIMEOUT_S */
    unsigned char nonce_c[AUTH_NONCE], nonce_s[AUTH_NONCE];
    char *in;
    size_t in_len, in_cap;
    size_t skip; /* bytes of a refused request's payload still to discard */
    struct srv_conn *next;
} srv_conn_t;

/* What the store knows of one rank's health. */
typedef struct {
    double last_hb;     /* last heartbeat (or hello) */
    uint64_t progress;  /* last count heard */
    double progress_t;  /* when the count last moved */
    char host[MAX_HOST];
} srv_rank_t;

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
    bg_tp_auth_t auth;
    pthread_t thread;
    atomic_int stop;
    atomic_size_t limit; /* budget for keys + values in bytes; 0: none */
    double hb_s, hang_s; /* liveness bounds; <= 0: off (set before serving) */
    pthread_mutex_t mu;  /* guards rank_state/why/fault for wait and fault */
    pthread_cond_t cv;
    int *rank_state;
    char (*why)[WHY_LEN];
    bg_tp_fault_t fault; /* the first; kind NONE until one */
    /* Only the server thread touches these. */
    srv_rank_t *ranks;
    srv_conn_t *conns;
    int n_unauth;
    double last_ping; /* when the ranks last heard from us */
    kv_t *kvs;
    size_t used;  /* key + value bytes held in kvs */
    size_t nkeys; /* entries in kvs */
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

static void srv_mark_rank(bg_tp_server_t *s, int rank, int state)
{
    pthread_mutex_lock(&s->mu);
    s->rank_state[rank] = state;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static const char *fault_verb(bg_tp_fault_kind_t k)
{
    switch (k) {
    case BG_TP_FAULT_FAILED:
        return "failed";
    case BG_TP_FAULT_UNRESPONSIVE:
        return "is unresponsive";
    case BG_TP_FAULT_HUNG:
        return "is hung";
    default:
        return "died";
    }
}

/*
 * Rank r is faulty: record it (the first fault is the job's), stop waiting
 * for it, and tell every other rank ("<verb>: <why>") so their transports
 * fail what waits on it at once. A rank already gone or gone is not news.
 */
static void srv_fault(bg_tp_server_t *s, int r, bg_tp_fault_kind_t kind, bg_status_t status,
                      const char *why)
{
    pthread_mutex_lock(&s->mu);
    int was = s->rank_state[r];
    if (was == RANK_GONE || was == RANK_LEFT) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->rank_state[r] = RANK_GONE;
    snprintf(s->why[r], sizeof(s->why[r]), "%s: %s", fault_verb(kind), why);
    if (s->fault.kind == BG_TP_FAULT_NONE) {
        s->fault.rank = r;
        s->fault.kind = kind;
        s->fault.status = status;
        snprintf(s->fault.host, sizeof(s->fault.host), "%s", s->ranks[r].host);
        snprintf(s->fault.why, sizeof(s->fault.why), "%s", why);
    }
    char note[WHY_LEN];
    snprintf(note, sizeof(note), "%s", s->why[r]);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    bg_log(BG_LOG_INFO, "store: rank %d %s", r, note);
    for (srv_conn_t *o = s->conns; o; o = o->next)
        if (o->fd >= 0 && o->rank >= 0 && o->rank != r)
            bg_tp_wire_send(o->fd, MSG_DEAD, 0, (uint32_t)r, NULL, note, strlen(note));
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

static void srv_close_conn(bg_tp_server_t *s, srv_conn_t *c, int said_bye)
{
    srv_drop_waiters_of(&s->gets, c);
    for (barrier_t *b = s->barriers; b; b = b->next)
        srv_drop_waiters_of(&b->waiters, c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state != CONN_RANK)
        s->n_unauth--;
    if (c->rank < 0)
        return;
    if (said_bye) {
        if (srv_rank_state(s, c->rank) == RANK_LIVE)
            srv_mark_rank(s, c->rank, RANK_LEFT);
        return;
    }
    srv_fault(s, c->rank, BG_TP_FAULT_DIED, BG_ERR_PEER,
              "its rendezvous connection closed without goodbye (process died?)");
}

/* A handshake refused: say why, then close once the reply is out. */
static void srv_refuse_handshake(srv_conn_t *c, uint32_t seq, uint32_t code, const char *msg)
{
    srv_reply_error(c, seq, code, "%s", msg);
    c->close_after = 1;
}

/* ---------------- requests ---------------- */

/* AUTH: the client's job and nonce; answer with ours and our proof. */
static void srv_auth(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                     const char *val)
{
    char msg[300];
    if (h->vlen != AUTH_NONCE) {
        srv_refuse_handshake(c, h->seq, STORE_E_AUTH, "malformed authentication request");
        return;
    }
    if (strcmp(key, s->auth.job)) {
        /* A stranger's bytes go into our log and its reply: printable only. */
        char job[MAX_KEY_UNAUTH + 1];
        size_t i = 0;
        for (; key[i] && i < sizeof(job) - 1; i++)
            job[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
        job[i] = '\0';
        snprintf(msg, sizeof(msg),
                 "this store serves job '%s', not job '%.64s' (two jobs on one port? give each "
                 "its own BRIGADE_MASTER_PORT)",
                 s->auth.job, job);
        srv_refuse_handshake(c, h->seq, STORE_E_AUTH, msg);
        return;
    }
    memcpy(c->nonce_c, val, AUTH_NONCE);
    bg_tp_auth_nonce(c->nonce_s);
    unsigned char reply[AUTH_NONCE + AUTH_MAC];
    memcpy(reply, c->nonce_s, AUTH_NONCE);
    bg_tp_auth_server_mac(&s->auth, c->nonce_c, c->nonce_s, reply + AUTH_NONCE);
    c->state = CONN_CHALLENGED;
    bg_tp_wire_send(c->fd, MSG_CHALLENGE, h->seq, 0, s->auth.job, reply, sizeof(reply));
}

/* Milliseconds between a client's heartbeats: five per timeout, 20..1000. */
static uint32_t srv_hb_ms(bg_tp_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    double hb = s->hb_s;
    pthread_mutex_unlock(&s->mu);
    double ms = hb > 0 ? hb * 1000.0 / 5.0 : 1000.0;
    return ms < 20 ? 20 : ms > 1000 ? 1000 : (uint32_t)ms;
}

/* HELLO: the client's proof, then the rank's slot. */
static void srv_hello(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
{
    uint32_t world = 0;
    const unsigned char *mac = NULL;
    char host[MAX_HOST], msg[300];
    unsigned char want[AUTH_MAC];
    int r = (int)h->arg;
    if (bg_tp_wire_hello_parse(val, h->vlen, &world, &mac, host) != 0) {
        srv_refuse_handshake(c, h->seq, STORE_E_AUTH, "malformed hello");
        return;
    }
    bg_tp_auth_client_mac(&s->auth, c->nonce_s, c->nonce_c, h->arg, world, want);
    if (!bg_tp_auth_equal(mac, want)) {
        snprintf(msg, sizeof(msg), "authentication failed for job '%s' (wrong job secret?)",
                 s->auth.job);
        srv_refuse_handshake(c, h->seq, STORE_E_AUTH, msg);
        return;
    }
    if ((int)world != s->world)
        snprintf(msg, sizeof(msg), "world size mismatch: store serves %d ranks, rank %d says %u",
                 s->world, r, world);
    else if (r < 0 || r >= s->world)
        snprintf(msg, sizeof(msg), "rank %d out of range 0..%d", r, s->world - 1);
    else if (srv_rank_state(s, r) != RANK_NEVER)
        snprintf(msg, sizeof(msg), "rank %d connected twice", r);
    else
        msg[0] = '\0';
    if (msg[0]) {
        srv_refuse_handshake(c, h->seq, STORE_E_INVALID, msg);
        return;
    }
    c->rank = r;
    c->state = CONN_RANK;
    s->n_unauth--;
    srv_rank_t *sr = &s->ranks[r];
    sr->last_hb = sr->progress_t = bg_now_s();
    memcpy(sr->host, host, sizeof(sr->host));
    srv_mark_rank(s, r, RANK_LIVE);
    bg_tp_wire_send(c->fd, MSG_HELLO_OK, h->seq, srv_hb_ms(s), NULL, NULL, 0);
}

/* HEARTBEAT: the rank is alive; its progress count, if it moved. */
static void srv_heartbeat(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
{
    srv_rank_t *sr = &s->ranks[c->rank];
    sr->last_hb = bg_now_s();
    if (h->vlen == 8) {
        uint64_t p = 0;
        for (int i = 0; i < 8; i++)
            p = p << 8 | (unsigned char)val[i];
        if (p != sr->progress) {
            sr->progress = p;
            sr->progress_t = sr->last_hb;
        }
    }
}

/* FAIL: the rank's own error; everyone else stops waiting for it. */
static void srv_fail(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
{
    char why[WHY_LEN];
    size_t n = h->vlen < sizeof(why) - 1 ? h->vlen : sizeof(why) - 1;
    memcpy(why, val, n);
    why[n] = '\0';
    bg_status_t st = h->arg && h->arg <= 64 ? -(bg_status_t)h->arg : BG_ERR_INTERNAL;
    srv_fault(s, c->rank, BG_TP_FAULT_FAILED, st, n ? why : "no reason given");
}

/* Store key = val, or say why not (budget, memory). */
static void srv_set(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                    const char *val)
{
    kv_t *k = srv_find_kv(s, key);
    size_t old = k ? k->len : 0, add = k ? 0 : h->klen;
    size_t limit = atomic_load(&s->limit);
    size_t after = s->used - old + add + h->vlen;
    if (!k && s->nkeys >= MAX_KEYS) {
        srv_reply_error(c, h->seq, STORE_E_NOMEM,
                        "store is full: key '%.200s' would be key %d, past its limit of %d keys",
                        key, MAX_KEYS + 1, MAX_KEYS);
        return;
    }
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

/* A message of a connection still in its handshake: only the next step
 * of it is served; anything else is refused (in step, until the timeout). */
static void srv_handle_stranger(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h,
                                const char *key, const char *val)
{
    if (h->type == MSG_AUTH && c->state == CONN_NEW)
        srv_auth(s, c, h, key, val);
    else if (h->type == MSG_HELLO && c->state == CONN_CHALLENGED)
        srv_hello(s, c, h, val);
    else if (h->type == MSG_HELLO)
        srv_refuse_handshake(c, h->seq, STORE_E_AUTH,
                             "hello before authentication (this store needs the job secret)");
    else
        srv_reply_error(c, h->seq, STORE_E_INVALID,
                        "request of type %u before hello (authenticate first)", h->type);
}

/* One complete request. Everything but BYE, FAIL and HEARTBEAT is answered
 * here or later. */
static void srv_handle(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                       const char *val)
{
    if (memchr(key, '\0', h->klen)) {
        srv_reply_error(c, h->seq, STORE_E_INVALID, "key of %u bytes contains a NUL byte", h->klen);
        return;
    }
    if (c->state != CONN_RANK) {
        srv_handle_stranger(s, c, h, key, val);
        return;
    }
    switch (h->type) {
    case MSG_HELLO:
    case MSG_AUTH:
        srv_reply_error(c, h->seq, STORE_E_INVALID, "second hello on one connection");
        return;
    case MSG_HEARTBEAT:
        srv_heartbeat(s, c, h, val);
        return;
    case MSG_FAIL:
        srv_fail(s, c, h, val);
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
            srv_refuse_handshake(c, m.h.seq, STORE_E_AUTH,
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

/* Strangers past AUTH_TIMEOUT_S are turned away. */
static void srv_expire_strangers(bg_tp_server_t *s, double now)
{
    for (srv_conn_t *c = s->conns; c; c = c->next)
        if (c->fd >= 0 && c->state != CONN_RANK && now - c->born > AUTH_TIMEOUT_S) {
            static const char msg[] = "authentication not completed in time";
            bg_tp_wire_send(c->fd, MSG_ERROR, 0, STORE_E_AUTH, NULL, msg, sizeof(msg) - 1);
            srv_close_conn(s, c, 0);
        }
}

/* Every heartbeat interval, a word to every rank: a client whose store is
 * hosted by rank 0 learns from the silence that rank 0 stopped. */
static void srv_ping(bg_tp_server_t *s, double now)
{
    if (now - s->last_ping < srv_hb_ms(s) / 1000.0)
        return;
    s->last_ping = now;
    for (srv_conn_t *c = s->conns; c; c = c->next)
        if (c->fd >= 0 && c->state == CONN_RANK)
            bg_tp_wire_send(c->fd, MSG_PING, 0, 0, NULL, NULL, 0);
}

/* Close rank r's connection (it was declared faulty while connected). */
static void srv_drop_rank(bg_tp_server_t *s, int r)
{
    for (srv_conn_t *c = s->conns; c; c = c->next)
        if (c->fd >= 0 && c->rank == r)
            srv_close_conn(s, c, 1); /* already marked: no second notice */
}

/*
 * The liveness checks, every poll round: a live rank without a heartbeat for
 * hb_s is unresponsive; when some live rank's progress count has not moved
 * for hang_s, the one stalled longest is hung (its peers stall after it).
 */
static void srv_watch(bg_tp_server_t *s, double now)
{
    pthread_mutex_lock(&s->mu);
    double hb_s = s->hb_s, hang_s = s->hang_s;
    pthread_mutex_unlock(&s->mu);
    int stale = -1;
    for (int r = 0; r < s->world; r++) {
        if (srv_rank_state(s, r) != RANK_LIVE)
            continue;
        srv_rank_t *sr = &s->ranks[r];
        if (hb_s > 0 && now - sr->last_hb > hb_s) {
            char why[200];
            snprintf(why, sizeof(why),
                     "no heartbeat for %.1f s (--heartbeat-timeout %.1f s; stopped, swapping, or "
                     "its host unreachable?)",
                     now - sr->last_hb, hb_s);
            srv_fault(s, r, BG_TP_FAULT_UNRESPONSIVE, BG_ERR_PEER, why);
            srv_drop_rank(s, r);
            return;
        }
        if (stale < 0 || sr->progress_t < s->ranks[stale].progress_t)
            stale = r;
    }
    if (stale >= 0 && hang_s > 0 && now - s->ranks[stale].progress_t > hang_s) {
        char why[200];
        snprintf(why, sizeof(why),
                 "alive but no action finished for %.1f s (--hang-timeout %.1f s; deadlock or a "
                 "stuck device?)",
                 now - s->ranks[stale].progress_t, hang_s);
        srv_fault(s, stale, BG_TP_FAULT_HUNG, BG_ERR_TIMEOUT, why);
        srv_drop_rank(s, stale);
    }
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
    srv_expire_strangers(s, now);
    srv_watch(s, now);
    srv_ping(s, now);
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

void bg_tp_server_set_liveness(bg_tp_server_t *srv, double heartbeat_s, double hang_s)
{
    /* Read by the serving thread every round; a double store is not atomic
     * in C11, so the thread sees it under mu. */
    pthread_mutex_lock(&srv->mu);
    srv->hb_s = heartbeat_s;
    srv->hang_s = hang_s;
    pthread_mutex_unlock(&srv->mu);
}

int bg_tp_server_fault(bg_tp_server_t *srv, bg_tp_fault_t *out)
{
    pthread_mutex_lock(&srv->mu);
    int any = srv->fault.kind != BG_TP_FAULT_NONE;
    if (any)
        *out = srv->fault;
    pthread_mutex_unlock(&srv->mu);
    return any;
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
