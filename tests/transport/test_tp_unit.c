/*
 * tests/transport/test_tp_unit.c -- single-process checks: bootstrap from
 * each launcher's variables (and its errors), the store (set/get/barrier,
 * timeouts naming missing ranks, refused hellos), the store's error replies
 * (a memory budget, malformed requests: always a prompt, clear answer, and
 * other clients unaffected), the progress callback queue, and how a chain
 * of death notices is cut to its first fault.
 *
 * Must NOT: start UCX or other processes (the integration tests do).
 * White-box parts use transport's private headers (the store's wire format
 * to send what no brigade client would, the callback queue).
 */
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "test_util.h"
#include "transport/callbackq.h"
#include "transport/p2p_int.h"
#include "transport/store_auth.h"
#include "transport/store_wire.h"
#include "tp_harness.h"
#include "transport/transport.h"

static void clear_env(void)
{
    const char *v[] = {"BRIGADE_RANK",
                       "BRIGADE_WORLD_SIZE",
                       "BRIGADE_LOCAL_RANK",
                       "BRIGADE_MASTER_ADDR",
                       "BRIGADE_MASTER_PORT",
                       "BRIGADE_STORE",
                       "RANK",
                       "WORLD_SIZE",
                       "LOCAL_RANK",
                       "MASTER_ADDR",
                       "MASTER_PORT",
                       "SLURM_PROCID",
                       "SLURM_NTASKS",
                       "SLURM_LOCALID",
                       "OMPI_COMM_WORLD_RANK",
                       "OMPI_COMM_WORLD_SIZE",
                       "OMPI_COMM_WORLD_LOCAL_RANK",
                       "PMI_RANK",
                       "PMI_SIZE",
                       NULL};
    for (int i = 0; v[i]; i++)
        unsetenv(v[i]);
}

static void test_bootstrap(void)
{
    bg_tp_bootstrap_t b;
    clear_env();
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 0 && b.world_size == 1 && !strcmp(b.source, "single"));
    CHECK(!strcmp(b.master_addr, "127.0.0.1") && b.master_port == 29500);

    setenv("SLURM_PROCID", "3", 1), setenv("SLURM_NTASKS", "8", 1), setenv("SLURM_LOCALID", "1", 1);
    setenv("OMPI_COMM_WORLD_RANK", "5", 1), setenv("OMPI_COMM_WORLD_SIZE", "6", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 3 && b.world_size == 8 && b.local_rank == 1 && !strcmp(b.source, "slurm"));
    setenv("RANK", "2", 1), setenv("WORLD_SIZE", "4", 1), setenv("MASTER_ADDR", "node7", 1);
    setenv("MASTER_PORT", "1234", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 2 && b.world_size == 4 && !strcmp(b.source, "torchrun"));
    CHECK(!strcmp(b.master_addr, "node7") && b.master_port == 1234);
    setenv("BRIGADE_RANK", "1", 1), setenv("BRIGADE_WORLD_SIZE", "2", 1);
    setenv("BRIGADE_MASTER_PORT", "4321", 1), setenv("BRIGADE_STORE", "external", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.rank == 1 && b.world_size == 2 && b.master_port == 4321 && b.store_external);
    CHECK(!strcmp(b.source, "brigade"));

    clear_env();
    setenv("PMI_RANK", "0", 1), setenv("PMI_SIZE", "3", 1);
    CHECK_OK(bg_tp_bootstrap_from_env(&b));
    CHECK(b.world_size == 3 && !strcmp(b.source, "pmi"));
    /* Errors name the variable. */
    setenv("PMI_RANK", "5", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "PMI_RANK"));
    setenv("PMI_RANK", "x1", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "PMI_RANK"));
    clear_env();
    setenv("RANK", "0", 1);
    CHECK(bg_tp_bootstrap_from_env(&b) == BG_ERR_INVALID && strstr(bg_last_error(), "WORLD_SIZE"));
    clear_env();
}

static void test_store(void)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), &srv));
    if (!srv)
        return;
    int port = bg_tp_server_port(srv);
    CHECK(port > 0);
    bg_tp_store_t *a = NULL, *bad = NULL;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, &a));
    /* Refused: wrong world size, duplicate rank. */
    CHECK(bg_tp_store_connect("127.0.0.1", port, 1, 3, tph_auth(), 5, &bad) != BG_OK);
    CHECK(strstr(bg_last_error(), "world size mismatch") != NULL);
    CHECK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, &bad) != BG_OK);
    CHECK(strstr(bg_last_error(), "connected twice") != NULL);
    if (!a)
        return;
    char v[64];
    size_t len = 0;
    CHECK_OK(bg_tp_store_set(a, "k", "hello", 6));
    CHECK_OK(bg_tp_store_get(a, "k", v, sizeof(v), 5, &len));
    CHECK(len == 6 && !strcmp(v, "hello"));
    CHECK(bg_tp_store_get(a, "k", v, 2, 5, &len) == BG_ERR_INVALID);
    /* Rank 1 never connects: a get and a barrier time out naming it. */
    CHECK(bg_tp_store_get(a, "never", v, sizeof(v), 0.2, &len) == BG_ERR_TIMEOUT);
    CHECK(strstr(bg_last_error(), "never connected: rank 1") != NULL);
    CHECK(bg_tp_store_barrier(a, "b0", 0.2) == BG_ERR_TIMEOUT);
    CHECK(strstr(bg_last_error(), "not at barrier: rank 1") != NULL);
    CHECK(bg_tp_server_wait(srv, 0.1) == BG_ERR_TIMEOUT);
    bg_tp_store_close(a);
    bg_tp_server_destroy(srv);
}

/* A budget the store will not grow past: the set that would cross it is
 * refused at once with a clear message; the store and its other clients
 * keep working, and raising the budget lets the set through. */
static void test_store_budget(void)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), &srv));
    if (!srv)
        return;
    int port = bg_tp_server_port(srv);
    bg_tp_server_set_limit(srv, 4096);
    bg_tp_store_t *a = NULL, *b = NULL;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, &a));
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 1, 2, tph_auth(), 5, &b));
    if (!a || !b)
        return;
    static char big[3000], got[4096];
    memset(big, 'x', sizeof(big));
    CHECK_OK(bg_tp_store_set(a, "x", big, sizeof(big)));
    double t0 = bg_now_s();
    bg_status_t st = bg_tp_store_set(a, "y", big, 2000);
    double dt = bg_now_s() - t0;
    char where[64];
    snprintf(where, sizeof(where), "store at 127.0.0.1:%d", port);
    CHECK_MSG(st == BG_ERR_NOMEM && strstr(bg_last_error(), "store is full") &&
                  strstr(bg_last_error(), where) && strstr(bg_last_error(), "'y'"),
              "%s: %s", bg_status_str(st), bg_last_error());
    CHECK_MSG(dt < 1.0, "refusal took %.2f s", dt);
    fprintf(stderr, "budget refusal in %.3f s: %s\n", dt, bg_last_error());
    /* The refused client and the other one carry on. */
    size_t len = 0;
    CHECK_OK(bg_tp_store_get(a, "x", got, sizeof(got), 5, &len));
    CHECK(len == sizeof(big) && !memcmp(got, big, len));
    CHECK_OK(bg_tp_store_set(b, "b", "ok", 3));
    CHECK_OK(bg_tp_store_get(b, "x", got, sizeof(got), 5, &len));
    CHECK(len == sizeof(big));
    CHECK_OK(bg_tp_store_get(a, "b", got, sizeof(got), 5, &len));
    CHECK(len == 3 && !strcmp(got, "ok"));
    /* A get of the refused key is not served a value. */
    CHECK(bg_tp_store_get(b, "y", got, sizeof(got), 0.1, &len) == BG_ERR_TIMEOUT);
    /* Replacing a key counts the difference only; more room, more data. */
    CHECK_OK(bg_tp_store_set(a, "x", big, 1000));
    CHECK_OK(bg_tp_store_set(a, "y", big, 2000));
    CHECK(bg_tp_store_set(a, "z", big, 2000) == BG_ERR_NOMEM);
    bg_tp_server_set_limit(srv, 0);
    CHECK_OK(bg_tp_store_set(a, "z", big, 2000));
    bg_tp_store_close(a);
    bg_tp_store_close(b);
    CHECK_OK(bg_tp_server_wait(srv, 5));
    bg_tp_server_destroy(srv);
}

/* Send one raw request and expect its answer of type `want` within 1 s;
 * for MSG_ERROR also its code and a phrase of its text. */
static void raw_expect(int fd, uint32_t seq, uint32_t want, uint32_t code, const char *phrase)
{
    struct pollfd pf = {fd, POLLIN, 0};
    double t0 = bg_now_s();
    CHECK_MSG(poll(&pf, 1, 1000) == 1, "no answer to request %u within 1 s", seq);
    wire_hdr_t h;
    if (bg_tp_wire_read(fd, &h, sizeof(h)) != 0) {
        CHECK_MSG(0, "connection closed instead of answering request %u", seq);
        return;
    }
    bg_tp_wire_decode(&h);
    char text[600] = "";
    size_t n = h.vlen < sizeof(text) - 1 ? h.vlen : sizeof(text) - 1;
    CHECK(h.klen == 0 && h.vlen < sizeof(text) && bg_tp_wire_read(fd, text, n) == 0);
    text[n] = '\0';
    CHECK_MSG(h.seq == seq && h.type == want, "request %u: answer %u of type %u (want %u): %s", seq,
              h.seq, h.type, want, text);
    if (want == MSG_ERROR)
        CHECK_MSG(h.arg == code && strstr(text, phrase), "request %u: code %u, '%s'", seq, h.arg,
                  text);
    CHECK(bg_now_s() - t0 < 1.0);
}

/* The handshake of a raw connection up to its HELLO (request `seq`, as
 * `rank` of `world`): AUTH, the store's CHALLENGE, our proof. */
static void raw_hello(int fd, uint32_t seq, int rank, int world)
{
    const bg_tp_auth_t *a = tph_auth();
    unsigned char nc[AUTH_NONCE], rep[AUTH_NONCE + AUTH_MAC + 1];
    char key[MAX_KEY_UNAUTH + 1], hello[4 + AUTH_MAC];
    bg_tp_auth_nonce(nc);
    CHECK(bg_tp_wire_send(fd, MSG_AUTH, 100, 0, a->job, nc, sizeof(nc)) == 0);
    wire_hdr_t h;
    CHECK(bg_tp_wire_read(fd, &h, sizeof(h)) == 0);
    bg_tp_wire_decode(&h);
    CHECK_MSG(h.type == MSG_CHALLENGE && h.klen <= MAX_KEY_UNAUTH &&
                  h.vlen == AUTH_NONCE + AUTH_MAC,
              "answer to AUTH: type %u", h.type);
    if (h.klen > MAX_KEY_UNAUTH || h.vlen > sizeof(rep))
        return;
    CHECK(bg_tp_wire_read(fd, key, h.klen) == 0 && bg_tp_wire_read(fd, rep, h.vlen) == 0);
    uint32_t w = htonl((uint32_t)world);
    memcpy(hello, &w, 4);
    bg_tp_auth_client_mac(a, rep, nc, (uint32_t)rank, (uint32_t)world,
                          (unsigned char *)hello + 4);
    CHECK(bg_tp_wire_send(fd, MSG_HELLO, seq, (uint32_t)rank, NULL, hello, sizeof(hello)) == 0);
}

/* Requests no brigade client sends: each gets an error reply at once and
 * the connection stays in step (an oversized value is skipped, not read). */
static void test_store_malformed(void)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), &srv));
    if (!srv)
        return;
    int port = bg_tp_server_port(srv);
    bg_tp_store_t *a = NULL;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, &a));
    int fd = tph_raw_connect(port);
    CHECK(fd >= 0);
    if (!a || fd < 0)
        return;
    CHECK(bg_tp_wire_send(fd, MSG_GET, 1, 0, "k", NULL, 0) == 0);
    raw_expect(fd, 1, MSG_ERROR, STORE_E_INVALID, "before hello");
    raw_hello(fd, 2, 1, 2);
    raw_expect(fd, 2, MSG_HELLO_OK, 0, NULL);
    CHECK(bg_tp_wire_send(fd, 99, 3, 0, "k", NULL, 0) == 0);
    raw_expect(fd, 3, MSG_ERROR, STORE_E_INVALID, "unknown request type 99");
    /* A value over the limit, really sent: refused, skipped, in step after. */
    size_t over = MAX_VAL + 1;
    char *junk = calloc(1, over);
    CHECK(junk && bg_tp_wire_send(fd, MSG_SET, 4, 0, "huge", junk, over) == 0);
    free(junk);
    raw_expect(fd, 4, MSG_ERROR, STORE_E_INVALID, "too large");
    char nulkey[3] = {'a', 0, 'b'};
    wire_hdr_t h = {htonl(MSG_GET), htonl(5), 0, htonl(3), 0};
    CHECK(send(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) && send(fd, nulkey, 3, 0) == 3);
    raw_expect(fd, 5, MSG_ERROR, STORE_E_INVALID, "NUL");
    CHECK_OK(bg_tp_store_set(a, "k", "v", 2));
    CHECK(bg_tp_wire_send(fd, MSG_GET, 6, 0, "k", NULL, 0) == 0);
    raw_expect(fd, 6, MSG_VALUE, 0, NULL);
    /* The well-behaved client never noticed. */
    char v[8];
    size_t len = 0;
    CHECK_OK(bg_tp_store_get(a, "k", v, sizeof(v), 5, &len));
    CHECK(len == 2 && !strcmp(v, "v"));
    CHECK(bg_tp_wire_send(fd, MSG_BYE, 0, 0, NULL, NULL, 0) == 0);
    close(fd);
    bg_tp_store_close(a);
    CHECK_OK(bg_tp_server_wait(srv, 5));
    bg_tp_server_destroy(srv);
}

/* ---- the progress callback queue ---- */

typedef struct {
    bg_tp_cbq_t *q;
    int calls;
    int order[16], norder;
    uint64_t id_self, id_other, added;
} cbq_probe_t;

static cbq_probe_t probe;

static int cb_record(void *arg)
{
    probe.order[probe.norder++ % 16] = (int)(intptr_t)arg;
    return 1;
}

static int cb_remove_self(void *arg)
{
    cb_record(arg);
    bg_tp_cbq_remove(probe.q, probe.id_self);
    return 0;
}

static int cb_remove_other_add(void *arg)
{
    cb_record(arg);
    bg_tp_cbq_remove(probe.q, probe.id_other);
    if (!probe.added)
        CHECK_OK(bg_tp_cbq_add(probe.q, cb_record, (void *)9, "test", &probe.added));
    return 0;
}

static void test_callbackq(void)
{
    bg_tp_cbq_t q;
    bg_tp_cbq_init(&q);
    memset(&probe, 0, sizeof(probe));
    probe.q = &q;
    uint64_t id1 = 0, id4 = 0, idx = 0;
    CHECK(bg_tp_cbq_dispatch(&q) == 0);
    CHECK_OK(bg_tp_cbq_add(&q, cb_record, (void *)1, "test", &id1));
    CHECK_OK(bg_tp_cbq_add(&q, cb_remove_self, (void *)2, "test", &probe.id_self));
    CHECK_OK(bg_tp_cbq_add(&q, cb_remove_other_add, (void *)3, "test", &idx));
    CHECK_OK(bg_tp_cbq_add(&q, cb_record, (void *)4, "test", &probe.id_other));
    id4 = probe.id_other;
    CHECK(id1 && probe.id_self && idx && id4 && id1 != probe.id_self && idx != id4);
    CHECK(bg_tp_cbq_count(&q) == 4);
    /* Round 1: 1, 2 (removes itself), 3 (removes 4, adds 9): 4 never runs,
     * 9 waits for the next round. */
    CHECK(bg_tp_cbq_dispatch(&q) == 1);
    CHECK(probe.norder == 3 && probe.order[0] == 1 && probe.order[1] == 2 && probe.order[2] == 3);
    CHECK(bg_tp_cbq_count(&q) == 3);
    /* Round 2: 1, 3, 9 in the order added. */
    probe.norder = 0;
    bg_tp_cbq_dispatch(&q);
    CHECK(probe.norder == 3 && probe.order[0] == 1 && probe.order[1] == 3 && probe.order[2] == 9);
    /* Unknown, removed and zero ids are ignored. */
    bg_tp_cbq_remove(&q, id4);
    bg_tp_cbq_remove(&q, 0);
    bg_tp_cbq_remove(&q, 12345);
    CHECK(bg_tp_cbq_count(&q) == 3);
    bg_tp_cbq_remove(&q, id1);
    bg_tp_cbq_remove(&q, idx);
    bg_tp_cbq_remove(&q, probe.added);
    CHECK(bg_tp_cbq_count(&q) == 0 && bg_tp_cbq_dispatch(&q) == 0);
    /* Many: ids stay sorted across compactions, removal finds each. */
    uint64_t ids[100];
    for (int i = 0; i < 100; i++)
        CHECK_OK(bg_tp_cbq_add(&q, cb_record, (void *)0, "t", &ids[i]));
    for (int i = 0; i < 100; i += 2)
        bg_tp_cbq_remove(&q, ids[i]);
    CHECK(bg_tp_cbq_count(&q) == 50);
    for (int i = 1; i < 100; i += 2)
        bg_tp_cbq_remove(&q, ids[i]);
    CHECK(bg_tp_cbq_count(&q) == 0);
    bg_tp_cbq_fini(&q);
}

/* A rank that failed because its peer died must be reported with that
 * peer's cause (the host that went away), whatever the hops in between. */
static void test_death_root_cause(void)
{
    char out[BG_TP_ERRLEN];
    const char *chain = "failed: rank 2 (stage 0, dp 1): rank 2: send to rank 3 (tag 0x24, 65536 "
                        "bytes): peer rank 3 died: is unresponsive: no heartbeat for 2.1 s from "
                        "host hostB (ranks 1, 3) (--heartbeat-timeout 2.0 s)";
    bg_tp_death_root_cause(chain, out, sizeof(out));
    CHECK(!strcmp(out, "failed because peer rank 3 died: is unresponsive: no heartbeat for 2.1 s "
                       "from host hostB (ranks 1, 3) (--heartbeat-timeout 2.0 s)"));
    /* Two hops: the innermost death wins. */
    bg_tp_death_root_cause("failed: rank 4: recv from rank 2: peer rank 2 died: failed because "
                           "peer rank 3 died: died: killed by signal 9",
                           out, sizeof(out));
    CHECK(!strcmp(out, "failed because peer rank 3 died: died: killed by signal 9"));
    /* A first-hand notice is left alone. */
    const char *plain = "is unresponsive: no heartbeat for 2.1 s from host hostB (ranks 1, 3)";
    bg_tp_death_root_cause(plain, out, sizeof(out));
    CHECK(!strcmp(out, plain));
    bg_tp_death_root_cause("died: exit status 1", out, 8);
    CHECK(!strcmp(out, "died: e"));
}

int main(void)
{
    test_bootstrap();
    test_store();
    test_store_budget();
    test_store_malformed();
    test_callbackq();
    test_death_root_cause();
    return bg_test_finish("test_tp_unit");
}
