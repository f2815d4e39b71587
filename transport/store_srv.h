/*
 * transport/store_srv.h -- the store server's state, shared by its three
 * files only: store_server.c (connections, requests, the serving thread,
 * the public calls), store_guard.c (who may talk to it -- the handshake
 * -- and what it concludes about the ranks: failure reports, heartbeats,
 * progress) and store_conn.c (the primitives both use: error replies, rank
 * state, faults, closing a connection). One direction: server -> guard ->
 * conn, server -> conn.
 *
 * Everything here runs on the serving thread unless its comment says
 * otherwise; fields under `mu` are also read by bg_tp_server_wait/_fault.
 * Must NOT be included outside those three files.
 */
#ifndef BG_TP_STORE_SRV_H
#define BG_TP_STORE_SRV_H

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- store_conn.c, for store_server.c and store_guard.c ---- */

/* Answer request `seq` with MSG_ERROR; the message reaches the client's
 * caller as "store at ADDR:PORT: <message>". Never fails silently on our
 * side: sending does not allocate; a client gone meanwhile is reaped. */
void bg_tp_srv_reply_error(srv_conn_t *c, uint32_t seq, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Set rank's state under mu and wake bg_tp_server_wait. Any thread. */
void bg_tp_srv_mark_rank(bg_tp_server_t *s, int rank, int state);
/* Rank's state, read under mu. Any thread. */
int bg_tp_srv_rank_state(bg_tp_server_t *s, int rank);
/* Close c (reaped later). A ranked connection closing without goodbye is
 * the rank's death (bg_tp_srv_fault). */
void bg_tp_srv_close_conn(bg_tp_server_t *s, srv_conn_t *c, int said_bye);
/*
 * Rank r is faulty: record it (the first fault is the job's), stop waiting
 * for it, and tell every other rank ("<verb>: <why>") so their transports
 * fail what waits on it at once. A rank already faulty, or gone with a
 * goodbye, is not news.
 */
void bg_tp_srv_fault(bg_tp_server_t *s, int r, bg_tp_fault_kind_t kind, bg_status_t status,
                     const char *why);

/* ---- store_guard.c, for store_server.c ---- */

/* A handshake refused: say why, then close once the reply is out. */
void bg_tp_srv_refuse_handshake(srv_conn_t *c, uint32_t seq, uint32_t code, const char *msg);
/* A message of a connection still in its handshake: only the next step of
 * it is served; anything else is refused (in step, until the timeout). */
void bg_tp_srv_handle_stranger(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h,
                               const char *key, const char *val);
/* HEARTBEAT of a rank: it is alive; its progress count, if it moved. */
void bg_tp_srv_heartbeat(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val);
/* FAIL of a rank: its own error; everyone else stops waiting for it. */
void bg_tp_srv_fail(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val);
/* Strangers past AUTH_TIMEOUT_S are turned away. */
void bg_tp_srv_expire_strangers(bg_tp_server_t *s, double now);
/* Whether rank r waits in a store barrier (serving thread only): it has
 * nothing to do until the others arrive, so the hang check passes it by. */
int bg_tp_srv_in_barrier(const bg_tp_server_t *s, int r);
/* The liveness checks (heartbeats, progress), every poll round. */
void bg_tp_srv_watch(bg_tp_server_t *s, double now);
/* A ping to every rank each heartbeat interval. */
void bg_tp_srv_ping(bg_tp_server_t *s, double now);

#endif
