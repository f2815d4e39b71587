/*
 * transport/store_guard.c -- the store server's judgement (store_srv.h):
 * who may talk to it and what it concludes about the ranks.
 *
 * Trust: a connection is a stranger until it has proved the job secret
 * (store_auth.h) and named this store's job; a stranger's messages are
 * small, it may not read, write or take a rank's slot, it is closed after a
 * failed proof or AUTH_TIMEOUT_S, and at most MAX_UNAUTH are held at once.
 * Faults: besides a connection closing without goodbye (store_conn.c), a
 * rank's own failure report (MSG_FAIL), missing heartbeats and a progress
 * count that stops moving make the store tell every other rank, the first
 * fault recorded for the launcher (bg_tp_server_fault).
 *
 * Must NOT: serve a key, a barrier or a rank's slot to a connection before
 * it proved the secret, echo a stranger's bytes unprintable, or declare a
 * rank faulty for anything but those causes, or call store_server.c (its
 * primitives are store_conn.c's, beneath both).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "transport/store_srv.h"

/* A handshake refused: say why, then close once the reply is out. */
void bg_tp_srv_refuse_handshake(srv_conn_t *c, uint32_t seq, uint32_t code, const char *msg)
{
    bg_tp_srv_reply_error(c, seq, code, "%s", msg);
    c->close_after = 1;
}

/* AUTH: the client's job and nonce; answer with ours and our proof. */
static void srv_auth(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *key,
                     const char *val)
{
    char msg[300];
    if (h->vlen != AUTH_NONCE) {
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_AUTH, "malformed authentication request");
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
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_AUTH, msg);
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
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_AUTH, "malformed hello");
        return;
    }
    bg_tp_auth_client_mac(&s->auth, c->nonce_s, c->nonce_c, h->arg, world, want);
    if (!bg_tp_auth_equal(mac, want)) {
        snprintf(msg, sizeof(msg), "authentication failed for job '%s' (wrong job secret?)",
                 s->auth.job);
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_AUTH, msg);
        return;
    }
    if ((int)world != s->world)
        snprintf(msg, sizeof(msg), "world size mismatch: store serves %d ranks, rank %d says %u",
                 s->world, r, world);
    else if (r < 0 || r >= s->world)
        snprintf(msg, sizeof(msg), "rank %d out of range 0..%d", r, s->world - 1);
    else if (bg_tp_srv_rank_state(s, r) != RANK_NEVER)
        snprintf(msg, sizeof(msg), "rank %d connected twice", r);
    else
        msg[0] = '\0';
    if (msg[0]) {
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_INVALID, msg);
        return;
    }
    c->rank = r;
    c->state = CONN_RANK;
    s->n_unauth--;
    srv_rank_t *sr = &s->ranks[r];
    sr->last_hb = sr->progress_t = bg_now_s();
    memcpy(sr->host, host, sizeof(sr->host));
    bg_tp_srv_mark_rank(s, r, RANK_LIVE);
    bg_tp_wire_send(c->fd, MSG_HELLO_OK, h->seq, srv_hb_ms(s), NULL, NULL, 0);
}

/* HEARTBEAT: the rank is alive; its progress count, if it moved. */
void bg_tp_srv_heartbeat(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
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
void bg_tp_srv_fail(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h, const char *val)
{
    char why[WHY_LEN];
    size_t n = h->vlen < sizeof(why) - 1 ? h->vlen : sizeof(why) - 1;
    memcpy(why, val, n);
    why[n] = '\0';
    bg_status_t st = h->arg && h->arg <= 64 ? -(bg_status_t)h->arg : BG_ERR_INTERNAL;
    bg_tp_srv_fault(s, c->rank, BG_TP_FAULT_FAILED, st, n ? why : "no reason given");
}

/* A message of a connection still in its handshake: only the next step
 * of it is served; anything else is refused (in step, until the timeout). */
void bg_tp_srv_handle_stranger(bg_tp_server_t *s, srv_conn_t *c, const wire_hdr_t *h,
                                const char *key, const char *val)
{
    if (h->type == MSG_AUTH && c->state == CONN_NEW)
        srv_auth(s, c, h, key, val);
    else if (h->type == MSG_HELLO && c->state == CONN_CHALLENGED)
        srv_hello(s, c, h, val);
    else if (h->type == MSG_HELLO)
        bg_tp_srv_refuse_handshake(c, h->seq, STORE_E_AUTH,
                             "hello before authentication (this store needs the job secret)");
    else
        bg_tp_srv_reply_error(c, h->seq, STORE_E_INVALID,
                        "request of type %u before hello (authenticate first)", h->type);
}

/* Strangers past AUTH_TIMEOUT_S are turned away. */
void bg_tp_srv_expire_strangers(bg_tp_server_t *s, double now)
{
    for (srv_conn_t *c = s->conns; c; c = c->next)
        if (c->fd >= 0 && c->state != CONN_RANK && now - c->born > AUTH_TIMEOUT_S) {
            static const char msg[] = "authentication not completed in time";
            bg_tp_wire_send(c->fd, MSG_ERROR, 0, STORE_E_AUTH, NULL, msg, sizeof(msg) - 1);
            bg_tp_srv_close_conn(s, c, 0);
        }
}

/* Every heartbeat interval, a word to every rank: a client whose store is
 * hosted by rank 0 learns from the silence that rank 0 stopped. */
void bg_tp_srv_ping(bg_tp_server_t *s, double now)
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
            bg_tp_srv_close_conn(s, c, 1); /* already marked: no second notice */
}

/* "host H (ranks 1, 3)": every rank that said hello from the host of rank
 * r, since a lost host takes all its ranks and the user should see them
 * together. A list too long for buf ends in "...". */
static void host_ranks(bg_tp_server_t *s, int r, char *buf, size_t cap)
{
    const char *host = s->ranks[r].host;
    if (!*host) {
        snprintf(buf, cap, "its host");
        return;
    }
    int count = 0;
    for (int i = 0; i < s->world; i++)
        count += !strcmp(s->ranks[i].host, host);
    size_t n = (size_t)snprintf(buf, cap, "host %s (rank%s", host, count > 1 ? "s" : "");
    const char *sep = " ";
    for (int i = 0; i < s->world && n + 8 < cap; i++) {
        if (strcmp(s->ranks[i].host, host))
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", sep, i);
        sep = ", ";
    }
    if (n + 8 >= cap)
        snprintf(buf + cap - 5, 5, "...)");
    else
        snprintf(buf + n, cap - n, ")");
}

/*
 * The liveness checks, every poll round: a live rank without a heartbeat for
 * hb_s is unresponsive; when some live rank's progress count has not moved
 * for hang_s, the one stalled longest is hung (its peers stall after it).
 * A rank waiting in a store barrier is not judged: it is done until the
 * others arrive (a parameter server at the job's end, while the workers
 * still evaluate), and a hang among those others still names one of them.
 */
void bg_tp_srv_watch(bg_tp_server_t *s, double now)
{
    pthread_mutex_lock(&s->mu);
    double hb_s = s->hb_s, hang_s = s->hang_s;
    pthread_mutex_unlock(&s->mu);
    int stale = -1;
    for (int r = 0; r < s->world; r++) {
        if (bg_tp_srv_rank_state(s, r) != RANK_LIVE)
            continue;
        srv_rank_t *sr = &s->ranks[r];
        if (hb_s > 0 && now - sr->last_hb > hb_s) {
            char why[320], on[160];
            host_ranks(s, r, on, sizeof(on));
            /* Host first: callers keep only the first ~150 characters. */
            snprintf(why, sizeof(why),
                     "no heartbeat for %.1f s from %s (--heartbeat-timeout %.1f s; stopped, "
                     "swapping, or the host unreachable?)",
                     now - sr->last_hb, on, hb_s);
            bg_tp_srv_fault(s, r, BG_TP_FAULT_UNRESPONSIVE, BG_ERR_PEER, why);
            srv_drop_rank(s, r);
            return;
        }
        if (bg_tp_srv_in_barrier(s, r)) /* done, waiting for the rest: not hung */
            continue;
        if (stale < 0 || sr->progress_t < s->ranks[stale].progress_t)
            stale = r;
    }
    if (stale >= 0 && hang_s > 0 && now - s->ranks[stale].progress_t > hang_s) {
        char why[200];
        snprintf(why, sizeof(why),
                 "alive but no action finished for %.1f s (--hang-timeout %.1f s; deadlock or a "
                 "stuck device?)",
                 now - s->ranks[stale].progress_t, hang_s);
        bg_tp_srv_fault(s, stale, BG_TP_FAULT_HUNG, BG_ERR_TIMEOUT, why);
        srv_drop_rank(s, stale);
    }
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
