/*
 * transport/store_auth.h -- the store's handshake proofs, shared by its
 * server and client only: HMAC-SHA256 (libsodium) of both sides' nonces
 * under the job key, so each side proves it knows the job secret without
 * sending it, and a replayed handshake fails (the other side's nonce is
 * fresh every time).
 *
 * Must NOT: send anything (store_wire does), keep the secret itself (only
 * the derived key, bg_tp_auth_t), or compare proofs in variable time.
 */
#ifndef BG_TP_STORE_AUTH_H
#define BG_TP_STORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

#define AUTH_NONCE 32u
#define AUTH_MAC 32u

/* Fill n with fresh random bytes (libsodium randombytes). Cannot fail once
 * bg_tp_auth_* made the key (sodium_init ran). */
void bg_tp_auth_nonce(unsigned char n[AUTH_NONCE]);
/* The server's proof: HMAC(key, "brigade-s" | job | nonce_c | nonce_s). */
void bg_tp_auth_server_mac(const bg_tp_auth_t *a, const unsigned char *nonce_c,
                           const unsigned char *nonce_s, unsigned char mac[AUTH_MAC]);
/* The client's proof for `rank` of `world`:
 * HMAC(key, "brigade-c" | job | nonce_s | nonce_c | rank | world). */
void bg_tp_auth_client_mac(const bg_tp_auth_t *a, const unsigned char *nonce_s,
                           const unsigned char *nonce_c, uint32_t rank, uint32_t world,
                           unsigned char mac[AUTH_MAC]);
/* 1 when the two MACs are equal (constant time). */
int bg_tp_auth_equal(const unsigned char *x, const unsigned char *y);

#endif
