/*
 * tests/transport/fuzz_store_wire.c -- libFuzzer target for the store's
 * message decoder (store_wire.h): any byte stream, cut into messages under
 * a stranger's limits and under a rank's, must decode without reading past
 * the buffer, consume exactly header + key + value per message, refuse only
 * headers that break the limits, and split every HELLO into a world, a
 * proof inside the message and a host name that fits. The handshake proofs
 * (store_auth.h) are computed over whatever a CHALLENGE carries, as the
 * client does. Built with clang -fsanitize=fuzzer,address,undefined
 * (BG_FUZZ=ON). Must not keep state between inputs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/store_auth.h"
#include "transport/store_wire.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_store_wire: %s\n", what);
    abort();
}

static void check_hello(const wire_msg_t *m)
{
    uint32_t world;
    const unsigned char *mac = NULL;
    char host[MAX_HOST];
    if (bg_tp_wire_hello_parse(m->val, m->h.vlen, &world, &mac, host) != 0)
        return;
    if (mac < (const unsigned char *)m->val ||
        mac + AUTH_MAC > (const unsigned char *)m->val + m->h.vlen)
        die("hello proof outside the message");
    if (strlen(host) >= MAX_HOST || strlen(host) != m->h.vlen - 4 - AUTH_MAC)
        die("hello host name of the wrong length");
}

/* What a client does with a CHALLENGE: check the server's proof. */
static void check_challenge(const wire_msg_t *m, const bg_tp_auth_t *a)
{
    if (m->h.vlen != AUTH_NONCE + AUTH_MAC)
        return;
    unsigned char nc[AUTH_NONCE] = {0}, want[AUTH_MAC];
    bg_tp_auth_server_mac(a, nc, (const unsigned char *)m->val, want);
    (void)bg_tp_auth_equal(want, (const unsigned char *)m->val + AUTH_NONCE);
}

/* Decode the whole stream under one pair of limits. */
static void walk(const char *buf, size_t len, uint32_t kmax, uint32_t vmax, const bg_tp_auth_t *a)
{
    size_t off = 0;
    while (off < len) {
        wire_msg_t m;
        size_t used = 0;
        int got = bg_tp_wire_next(buf + off, len - off, kmax, vmax, &m, &used);
        if (got < 0) {
            if (m.h.klen <= kmax && m.h.vlen <= vmax)
                die("refused a header within the limits");
            off += sizeof(wire_hdr_t); /* what the server does: skip the header */
            continue;
        }
        if (got == 0)
            return;
        if (used != sizeof(wire_hdr_t) + (size_t)m.h.klen + m.h.vlen || used > len - off)
            die("consumed the wrong number of bytes");
        if (m.key != buf + off + sizeof(wire_hdr_t) || m.val != m.key + m.h.klen)
            die("key or value outside the message");
        if (m.h.type == MSG_HELLO)
            check_hello(&m);
        if (m.h.type == MSG_CHALLENGE)
            check_challenge(&m, a);
        off += used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bg_tp_auth_t auth;
    static int have;
    if (!have && bg_tp_auth_from_secret("fuzzing secret, not a real one", "fuzz", &auth) == BG_OK)
        have = 1;
    /* A copy the exact size of the input: ASan catches any read past it. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    walk(buf, size, MAX_KEY_UNAUTH, MAX_VAL_UNAUTH, &auth);
    walk(buf, size, MAX_KEY, MAX_VAL, &auth);
    free(buf);
    return 0;
}
