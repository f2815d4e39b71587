/*
 * transport/store_conn.c -- the store server's primitives on connections
 * and ranks (store_srv.h), beneath both of its other files: error replies,
 * rank state and marking, faults, and closing a connection.
 *
 * Direction: store_server.c and store_guard.c call this file; it calls
 * neither of them (a closed connection's waiters are dropped here because
 * the lists live in the shared state, not because the requests are ours).
 *
 * Must NOT: read or parse requests, decide who may talk to the store, or
 * declare a rank faulty on its own judgement (callers name the cause; only
 * a connection closing without goodbye is concluded here).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/store_srv.h"

/* ---------------- replies ---------------- */

void bg_tp_srv_reply_error(srv_conn_t *c, uint32_t seq, uint32_t code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bg_log(BG_LOG_INFO, "store: refused a request of rank %d: %s", c->rank, msg);
    bg_tp_wire_send(c->fd, MSG_ERROR, seq, code, NULL, msg, strlen(msg));
}

void bg_tp_srv_mark_rank(bg_tp_server_t *s, int rank, int state)
{
    pthread_mutex_lock(&s->mu);
    s->rank_state[rank] = state;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int bg_tp_srv_rank_state(bg_tp_server_t *s, int rank)
{
    pthread_mutex_lock(&s->mu);
    int st = s->rank_state[rank];
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---------------- faults ---------------- */

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
 * fail what waits on it at once. A rank already faulty, or gone with a
 * goodbye, is not news.
 */
void bg_tp_srv_fault(bg_tp_server_t *s, int r, bg_tp_fault_kind_t kind, bg_status_t status,
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

/* ---------------- connections ---------------- */

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

void bg_tp_srv_close_conn(bg_tp_server_t *s, srv_conn_t *c, int said_bye)
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
        if (bg_tp_srv_rank_state(s, c->rank) == RANK_LIVE)
            bg_tp_srv_mark_rank(s, c->rank, RANK_LEFT);
        return;
    }
    bg_tp_srv_fault(s, c->rank, BG_TP_FAULT_DIED, BG_ERR_PEER,
              "its rendezvous connection closed without goodbye (process died?)");
}
