/*
 * transport/store_wire.h -- the rendezvous store's wire format, shared by
 * its server (store_server.c) and client (store_client.c) and by nothing
 * else: a launcher uses bg_tp_server_*, never these bytes.
 *
 * A message is a header of five big-endian u32 (type, seq, arg, key length,
 * value length) followed by the key and value bytes. Requests that expect a
 * reply carry a sequence number the reply repeats. Every request the server
 * cannot serve gets MSG_ERROR (arg = a STORE_E_* code, value = the reason),
 * never silence.
 *
 * Must NOT: grow a second framing (a future authenticated handshake goes in
 * front of MSG_HELLO and keeps this header), or allocate when sending.
 */
#ifndef BG_TP_STORE_WIRE_H
#define BG_TP_STORE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
    MSG_HELLO = 1, /* c->s arg=rank, value=u32 world */
    MSG_HELLO_OK,  /* s->c */
    MSG_SET,       /* c->s key, value -> MSG_SET_OK or MSG_ERROR */
    MSG_GET,       /* c->s key -> MSG_VALUE (when set) or MSG_ERROR */
    MSG_VALUE,     /* s->c value */
    MSG_BARRIER,   /* c->s key=name -> MSG_BARRIER_DONE or MSG_ERROR */
    MSG_BARRIER_DONE,
    MSG_STATUS, /* c->s key=barrier name or "" -> MSG_STATUS_REPLY text */
    MSG_STATUS_REPLY,
    MSG_BYE,    /* c->s */
    MSG_DEAD,   /* s->c arg=rank, value=cause */
    MSG_ERROR,  /* s->c arg=STORE_E_*, value=message */
    MSG_SET_OK, /* s->c */
};

/* Error classes of MSG_ERROR; the client maps them to bg_status_t. */
enum { STORE_E_INVALID = 1, STORE_E_NOMEM = 2, STORE_E_INTERNAL = 3 };

#define MAX_KEY 1024u
#define MAX_VAL (1u << 20)

typedef struct {
    uint32_t type, seq, arg, klen, vlen;
} wire_hdr_t;

/* Send one message (key may be NULL). Never allocates, so an error reply
 * can always be sent; MSG_NOSIGNAL turns a dead reader into -1, not
 * SIGPIPE. Returns 0 or -1 (errno set). */
int bg_tp_wire_send(int fd, uint32_t type, uint32_t seq, uint32_t arg, const char *key,
                    const void *val, size_t vlen);
/* Read exactly len bytes; -1 on EOF or error. */
int bg_tp_wire_read(int fd, void *buf, size_t len);
/* Decode a header read off the wire (in place). */
void bg_tp_wire_decode(wire_hdr_t *h);
/* Keepalive and no-delay on a store socket: a vanished host is an error
 * within about 5 s instead of never. */
void bg_tp_wire_keepalive(int fd);
/* The status a client reports for a MSG_ERROR code. */
bg_status_t bg_tp_wire_status(uint32_t code);

#endif
