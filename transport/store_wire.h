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
 * A connection starts with the handshake (docs/transport.md): AUTH (job id,
 * client nonce) -> CHALLENGE (server nonce, server's proof) -> HELLO (rank,
 * world, client's proof, host) -> HELLO_OK (heartbeat interval). Nothing
 * else is served before HELLO_OK, and before it messages are small.
 *
 * Must NOT: grow a second framing, or allocate when sending or decoding.
 */
#ifndef BG_TP_STORE_WIRE_H
#define BG_TP_STORE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

enum {
    MSG_HELLO = 1, /* c->s arg=rank, value=u32 world | client MAC | host name */
    MSG_HELLO_OK,  /* s->c arg=heartbeat interval in ms */
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
    MSG_AUTH,      /* c->s key=job id, value=client nonce -> MSG_CHALLENGE or MSG_ERROR */
    MSG_CHALLENGE, /* s->c key=the store's job id, value=server nonce | server MAC */
    MSG_FAIL,      /* c->s arg=-bg_status_t, value=the rank's error; no reply */
    MSG_HEARTBEAT, /* c->s value=u64 progress count; no reply */
    MSG_PING,      /* s->c at the heartbeat interval: the store is alive */
};

/* Error classes of MSG_ERROR; the client maps them to bg_status_t. AUTH:
 * the handshake failed (wrong secret, other job), the connection is closed
 * after the reply. BUSY: too many connections mid-handshake; retry. */
enum {
    STORE_E_INVALID = 1,
    STORE_E_NOMEM = 2,
    STORE_E_INTERNAL = 3,
    STORE_E_AUTH = 4,
    STORE_E_BUSY = 5
};

#define MAX_KEY 1024u
#define MAX_VAL (1u << 20)
/* Before HELLO_OK: no message carries more (job id, nonce, proof, host). */
#define MAX_KEY_UNAUTH 64u
#define MAX_VAL_UNAUTH 160u
#define MAX_HOST 64u
/* A rank's failure report: enough for its message, bounded for the store. */
#define MAX_FAIL_TEXT 480u

typedef struct {
    uint32_t type, seq, arg, klen, vlen;
} wire_hdr_t;

/* One message found in a buffer: header decoded, key and value point into
 * the buffer (key is not NUL-terminated). */
typedef struct {
    wire_hdr_t h;
    const char *key, *val;
} wire_msg_t;

/*
 * The decoder: look at buf[0..len) for the next message under the limits
 * kmax / vmax. 1: a complete message in *m, *used bytes long. 0: not
 * complete yet (*m->h decoded when the header is there). -1: its header
 * breaks the limits (*m->h set, nothing consumed). Pure: no allocation, no
 * I/O; it reads nothing past buf + len.
 */
int bg_tp_wire_next(const char *buf, size_t len, uint32_t kmax, uint32_t vmax, wire_msg_t *m,
                    size_t *used);
/* A HELLO's value: world, client MAC (points into val), host (NUL-ended
 * copy, at most MAX_HOST - 1 bytes). 0, or -1 when malformed. */
int bg_tp_wire_hello_parse(const char *val, size_t vlen, uint32_t *world,
                           const unsigned char **mac, char *host);

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
