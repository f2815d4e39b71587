/*
 * tests/transport/test_tp_stray.c -- the store against strangers, and its
 * fault feed. A stray client without the secret, with a wrong one, replaying
 * a recorded handshake, saying hello as a taken rank, of another job, or
 * sending oversized and garbage messages: none reads or writes a key, takes
 * a rank's slot or records a fault, and the job's own ranks carry on. A
 * store that replays a recorded challenge is refused by the client (the
 * server proves itself too). Then the fault feed: a rank's failure report
 * reaches the others at once; a rank without heartbeats is unresponsive, a
 * rank without progress is hung, each named by its own id.
 * White-box: speaks the wire format (store_wire.h, store_auth.h) directly.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp_harness.h"
#include "transport/store_auth.h"
#include "transport/store_wire.h"

/* The store closes strangers after 2 s; this leaves room for a busy machine. */
#define AUTH_TIMEOUT_TEST 4.0

/* One message within `secs`: 0 with header, key and value (NUL-ended);
 * -1 when the connection closed or nothing came. */
static int raw_read(int fd, double secs, wire_hdr_t *h, char *key, char *val, size_t cap)
{
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(secs * 1000)) != 1 || bg_tp_wire_read(fd, h, sizeof(*h)) != 0)
        return -1;
    bg_tp_wire_decode(h);
    if (h->klen >= cap || h->vlen >= cap || bg_tp_wire_read(fd, key, h->klen) != 0 ||
        bg_tp_wire_read(fd, val, h->vlen) != 0)
        return -1;
    key[h->klen] = val[h->vlen] = '\0';
    return 0;
}

/* 1 when the peer closes fd within `secs` (whatever it says first). */
static int raw_closed(int fd, double secs)
{
    double end = bg_now_s() + secs;
    char b[4096];
    while (bg_now_s() < end) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 50) == 1) {
            ssize_t n = recv(fd, b, sizeof(b), 0);
            if (n <= 0)
                return 1;
        }
    }
    return 0;
}

/* A request answered by MSG_ERROR (never by a value or an acknowledgement). */
static void expect_refused(int fd, uint32_t type, uint32_t seq, const char *key, const char *val,
                           const char *what)
{
    wire_hdr_t h;
    char k[2048], v[2048];
    CHECK(bg_tp_wire_send(fd, type, seq, 0, key, val, val ? strlen(val) : 0) == 0);
    int got = raw_read(fd, 1.0, &h, k, v, sizeof(k));
    CHECK_MSG(got == 0 && h.type == MSG_ERROR, "%s: answered type %u (%s)", what,
              got == 0 ? h.type : 0, got == 0 ? v : "closed");
}

/* AUTH as job `job` with nonce nc; the CHALLENGE value (nonce_s | mac_s)
 * into rep. 0 ok, -1 refused or closed (text in why). */
static int raw_auth(int fd, const char *job, const unsigned char *nc, unsigned char *rep,
                    char *why, size_t cap)
{
    wire_hdr_t h;
    char k[2048], v[2048];
    if (bg_tp_wire_send(fd, MSG_AUTH, 1, 0, job, nc, AUTH_NONCE) != 0 ||
        raw_read(fd, 1.0, &h, k, v, sizeof(k)) != 0) {
        snprintf(why, cap, "closed");
        return -1;
    }
    if (h.type != MSG_CHALLENGE || h.vlen != AUTH_NONCE + AUTH_MAC) {
        snprintf(why, cap, "%.500s", v);
        return -1;
    }
    memcpy(rep, v, AUTH_NONCE + AUTH_MAC);
    return 0;
}

/* A HELLO for `rank` of `world` with proof `mac`; the answer's type and text. */
static uint32_t raw_hello(int fd, int rank, int world, const unsigned char *mac, char *text,
                          size_t cap)
{
    char hello[4 + AUTH_MAC];
    uint32_t w = htonl((uint32_t)world);
    memcpy(hello, &w, 4);
    memcpy(hello + 4, mac, AUTH_MAC);
    wire_hdr_t h;
    char k[2048], v[2048];
    if (bg_tp_wire_send(fd, MSG_HELLO, 2, (uint32_t)rank, NULL, hello, sizeof(hello)) != 0 ||
        raw_read(fd, 1.0, &h, k, v, sizeof(k)) != 0)
        return 0;
    snprintf(text, cap, "%.500s", v);
    return h.type;
}

/* What the stray tests record and reuse. */
typedef struct {
    int port;
    unsigned char nc[AUTH_NONCE], challenge[AUTH_NONCE + AUTH_MAC];
    unsigned char hello_mac[AUTH_MAC];
} stray_t;

static void stray_no_secret(stray_t *x)
{
    int fd = tph_raw_connect(x->port);
    CHECK(fd >= 0);
    expect_refused(fd, MSG_GET, 1, "secret-key", NULL, "get without hello");
    expect_refused(fd, MSG_SET, 2, "secret-key", "evil", "set without hello");
    expect_refused(fd, MSG_BARRIER, 3, "b", NULL, "barrier without hello");
    expect_refused(fd, MSG_FAIL, 4, NULL, "stop the job", "fail without hello");
    unsigned char zero[AUTH_MAC] = {0};
    char text[600] = "";
    CHECK_MSG(raw_hello(fd, 1, 2, zero, text, sizeof(text)) == MSG_ERROR, "hello without auth");
    CHECK_MSG(raw_closed(fd, 1.0), "a hello without authentication left the connection open");
    close(fd);
}

/* Wrong secret, same job id: the server refuses the proof and closes. */
static void stray_wrong_secret(stray_t *x)
{
    bg_tp_auth_t wrong;
    CHECK_OK(bg_tp_auth_from_secret("not the job secret at all", tph_auth()->job, &wrong));
    int fd = tph_raw_connect(x->port);
    unsigned char nc[AUTH_NONCE], rep[AUTH_NONCE + AUTH_MAC], mac[AUTH_MAC], want[AUTH_MAC];
    char why[600] = "";
    bg_tp_auth_nonce(nc);
    CHECK(raw_auth(fd, tph_auth()->job, nc, rep, why, sizeof(why)) == 0);
    /* The server's proof does not verify under the wrong key. */
    bg_tp_auth_server_mac(&wrong, nc, rep, want);
    CHECK(!bg_tp_auth_equal(want, rep + AUTH_NONCE));
    bg_tp_auth_client_mac(&wrong, rep, nc, 1, 2, mac);
    CHECK(raw_hello(fd, 1, 2, mac, why, sizeof(why)) == MSG_ERROR);
    CHECK_MSG(strstr(why, "authentication failed"), "wrong secret: '%s'", why);
    CHECK(raw_closed(fd, 1.0));
    close(fd);
    /* Through the real client: refused, naming the cause. */
    bg_tp_store_t *st = NULL;
    CHECK(bg_tp_store_connect("127.0.0.1", x->port, 1, 2, &wrong, 2, &st) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), "could not prove"), "%s", bg_last_error());
}

/*
 * A hello that knows the secret, as the taken rank 0: the proof passes, the
 * slot does not. Its bytes are then replayed on a fresh connection with the
 * same client nonce: the server's nonce is new, so the proof fails.
 */
static void stray_taken_and_replay(stray_t *x)
{
    const bg_tp_auth_t *a = tph_auth();
    char why[600] = "";
    int fd = tph_raw_connect(x->port);
    bg_tp_auth_nonce(x->nc);
    CHECK(raw_auth(fd, a->job, x->nc, x->challenge, why, sizeof(why)) == 0);
    bg_tp_auth_client_mac(a, x->challenge, x->nc, 0, 2, x->hello_mac);
    CHECK(raw_hello(fd, 0, 2, x->hello_mac, why, sizeof(why)) == MSG_ERROR);
    CHECK_MSG(strstr(why, "rank 0 connected twice"), "hello as a taken rank: '%s'", why);
    close(fd);
    fd = tph_raw_connect(x->port);
    unsigned char rep[AUTH_NONCE + AUTH_MAC];
    CHECK(raw_auth(fd, a->job, x->nc, rep, why, sizeof(why)) == 0);
    CHECK_MSG(memcmp(rep, x->challenge, AUTH_NONCE) != 0, "the server reused its nonce");
    CHECK(raw_hello(fd, 0, 2, x->hello_mac, why, sizeof(why)) == MSG_ERROR);
    CHECK_MSG(strstr(why, "authentication failed"), "replayed hello: '%s'", why);
    close(fd);
}

/* A rank of another job on this port: refused, both jobs named. */
static void stray_other_job(stray_t *x)
{
    bg_tp_auth_t other;
    CHECK_OK(bg_tp_auth_from_secret("the secret of some other job", NULL, &other));
    bg_tp_store_t *st = NULL;
    CHECK(bg_tp_store_connect("127.0.0.1", x->port, 1, 2, &other, 2, &st) == BG_ERR_INVALID);
    CHECK_MSG(strstr(bg_last_error(), other.job) && strstr(bg_last_error(), tph_auth()->job),
              "does not name both jobs: %s", bg_last_error());
    fprintf(stderr, "other job: %s\n", bg_last_error());
}

/* Oversized and garbage bytes: answered or closed; nothing else happens. */
static void stray_garbage(stray_t *x)
{
    int fd = tph_raw_connect(x->port);
    wire_hdr_t h = {htonl(MSG_SET), htonl(1), 0, htonl(4), htonl(MAX_VAL)};
    CHECK(send(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h));
    CHECK_MSG(raw_closed(fd, 1.0), "an oversized stranger's message left the connection open");
    close(fd);
    fd = tph_raw_connect(x->port);
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 2654435761u >> 13);
    CHECK(send(fd, junk, sizeof(junk), MSG_NOSIGNAL) > 0);
    CHECK_MSG(raw_closed(fd, AUTH_TIMEOUT_TEST), "garbage left the connection open");
    close(fd);
    /* A stranger that says nothing is turned away too. */
    fd = tph_raw_connect(x->port);
    double t0 = bg_now_s();
    CHECK_MSG(raw_closed(fd, AUTH_TIMEOUT_TEST), "an idle stranger was not closed");
    fprintf(stderr, "idle stranger closed after %.2f s\n", bg_now_s() - t0);
    close(fd);
}

/* Many strangers at once: some are turned away, and the real rank still
 * joins (it retries while the store is busy). */
static void stray_flood(stray_t *x, bg_tp_store_t **rank1)
{
    int fds[48], busy = 0;
    struct pollfd pf[48];
    for (int i = 0; i < 48; i++) {
        fds[i] = tph_raw_connect(x->port);
        pf[i] = (struct pollfd){fds[i], POLLIN, 0};
    }
    /* Those turned away are answered at once; the others hear nothing. */
    usleep(200000);
    poll(pf, 48, 0);
    for (int i = 0; i < 48; i++) {
        wire_hdr_t h;
        char k[2048], v[2048];
        if (fds[i] >= 0 && (pf[i].revents & POLLIN) && raw_read(fds[i], 0.1, &h, k, v, sizeof(k)) == 0 &&
            h.type == MSG_ERROR && h.arg == STORE_E_BUSY)
            busy++;
    }
    CHECK_MSG(busy > 0, "48 strangers at once and none turned away");
    double t0 = bg_now_s();
    CHECK_OK(bg_tp_store_connect("127.0.0.1", x->port, 1, 2, tph_auth(), 10, rank1));
    fprintf(stderr, "%d of 48 strangers turned away; rank 1 joined after %.2f s\n", busy,
            bg_now_s() - t0);
    for (int i = 0; i < 48; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* A fake store replaying a recorded challenge: the client refuses it before
 * it says hello (so it never proves itself to an impostor). */
typedef struct {
    int lfd;
    const unsigned char *challenge;
    int got_hello;
} fake_t;

static void *fake_store(void *arg)
{
    fake_t *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    wire_hdr_t h;
    char k[2048], v[2048];
    if (fd >= 0 && raw_read(fd, 2.0, &h, k, v, sizeof(k)) == 0 && h.type == MSG_AUTH) {
        bg_tp_wire_send(fd, MSG_CHALLENGE, h.seq, 0, tph_auth()->job, f->challenge,
                        AUTH_NONCE + AUTH_MAC);
        f->got_hello = raw_read(fd, 1.0, &h, k, v, sizeof(k)) == 0 && h.type == MSG_HELLO;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void stray_fake_store(stray_t *x)
{
    fake_t f = {socket(AF_INET, SOCK_STREAM, 0), x->challenge, 0};
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    CHECK(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(f.lfd, 4) == 0);
    getsockname(f.lfd, (struct sockaddr *)&sa, &sl);
    pthread_t th;
    pthread_create(&th, NULL, fake_store, &f);
    bg_tp_store_t *st = NULL;
    bg_status_t s = bg_tp_store_connect("127.0.0.1", ntohs(sa.sin_port), 1, 2, tph_auth(), 2, &st);
    pthread_join(th, NULL);
    close(f.lfd);
    CHECK_MSG(s == BG_ERR_INVALID && strstr(bg_last_error(), "could not prove"),
              "a replayed challenge was accepted: %s", bg_last_error());
    CHECK_MSG(!f.got_hello, "the client proved itself to an impostor");
}

static void test_strays(void)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), &srv));
    if (!srv)
        return;
    stray_t x = {.port = bg_tp_server_port(srv)};
    bg_tp_store_t *r0 = NULL, *r1 = NULL;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", x.port, 0, 2, tph_auth(), 5, &r0));
    if (!r0)
        return;
    CHECK_OK(bg_tp_store_set(r0, "secret-key", "v", 2));
    stray_no_secret(&x);
    stray_wrong_secret(&x);
    stray_taken_and_replay(&x);
    stray_other_job(&x);
    stray_garbage(&x);
    stray_fake_store(&x);
    stray_flood(&x, &r1);
    /* None of it reached the job: the key is intact, slot 1 was free for
     * the real rank, nobody was declared at fault, the ranks meet. */
    char v[16];
    size_t len = 0;
    CHECK_OK(bg_tp_store_get(r0, "secret-key", v, sizeof(v), 5, &len));
    CHECK(len == 2 && !strcmp(v, "v"));
    bg_tp_fault_t f;
    CHECK_MSG(!bg_tp_server_fault(srv, &f), "a stranger caused a fault: rank %d: %s", f.rank,
              f.why);
    if (r1) {
        CHECK_OK(bg_tp_store_set(r1, "from-1", "ok", 3));
        CHECK_OK(bg_tp_store_get(r0, "from-1", v, sizeof(v), 5, &len));
        bg_tp_store_close(r1);
    }
    bg_tp_store_close(r0);
    CHECK_OK(bg_tp_server_wait(srv, 5));
    bg_tp_server_destroy(srv);
}

/* A store for two ranks with liveness (hb_s, hang_s; 0: off) and both
 * ranks joined; 0 (after CHECK failures) when something did not start. */
static int two_rank_store(double hb_s, double hang_s, bg_tp_server_t **srv, bg_tp_store_t **a,
                          bg_tp_store_t **b)
{
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), srv));
    if (!*srv)
        return 0;
    if (hb_s > 0 || hang_s > 0)
        bg_tp_server_set_liveness(*srv, hb_s, hang_s);
    int port = bg_tp_server_port(*srv);
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, a));
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 1, 2, tph_auth(), 5, b));
    return *a && *b;
}

/* A rank's failure report reaches the other rank's waits at once, and the
 * store records it as the job's fault with the rank's own words. */
static void test_fail_feed(void)
{
    bg_tp_server_t *srv = NULL;
    bg_tp_store_t *a = NULL, *b = NULL;
    if (!two_rank_store(0, 0, &srv, &a, &b))
        return;
    bg_tp_store_fail(b, BG_ERR_INVALID, "rank 1: bad input in the test");
    double t0 = bg_now_s();
    char v[8];
    size_t len;
    bg_status_t st = bg_tp_store_get(a, "never-set", v, sizeof(v), 20, &len);
    double dt = bg_now_s() - t0;
    CHECK_MSG(st == BG_ERR_PEER && strstr(bg_last_error(), "rank 1") &&
                  strstr(bg_last_error(), "bad input in the test"),
              "%s: %s", bg_status_str(st), bg_last_error());
    CHECK_MSG(dt < 1.0, "the failure took %.2f s to arrive", dt);
    bg_tp_fault_t f;
    CHECK(bg_tp_server_fault(srv, &f) && f.kind == BG_TP_FAULT_FAILED && f.rank == 1 &&
          f.status == BG_ERR_INVALID && strstr(f.why, "bad input"));
    fprintf(stderr, "failure report in %.3f s: %s\n", dt, bg_last_error());
    bg_tp_store_close(b);
    bg_tp_store_close(a);
    bg_tp_server_wait(srv, 5);
    bg_tp_server_destroy(srv);
}

/* A rank that stops heartbeating is unresponsive, one whose count stops
 * moving is hung; each is named by its own id, never a neighbour's. */
static void test_liveness(int hang)
{
    bg_tp_server_t *srv = NULL;
    CHECK_OK(bg_tp_server_create("127.0.0.1", 0, 2, tph_auth(), &srv));
    /* Hung: heartbeats every 0.1 s carry rank 0's progress well within 1 s. */
    bg_tp_server_set_liveness(srv, 0.5, hang ? 1.0 : 0);
    int port = bg_tp_server_port(srv);
    bg_tp_store_t *a = NULL, *b = NULL;
    int raw = -1;
    CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 0, 2, tph_auth(), 5, &a));
    if (hang) {
        CHECK_OK(bg_tp_store_connect("127.0.0.1", port, 1, 2, tph_auth(), 5, &b));
    } else {
        /* Rank 1 joins by hand and then never heartbeats. */
        raw = tph_raw_connect(port);
        unsigned char nc[AUTH_NONCE], rep[AUTH_NONCE + AUTH_MAC], mac[AUTH_MAC];
        char why[600];
        bg_tp_auth_nonce(nc);
        CHECK(raw_auth(raw, tph_auth()->job, nc, rep, why, sizeof(why)) == 0);
        bg_tp_auth_client_mac(tph_auth(), rep, nc, 1, 2, mac);
        CHECK(raw_hello(raw, 1, 2, mac, why, sizeof(why)) == MSG_HELLO_OK);
    }
    double t0 = bg_now_s();
    bg_tp_fault_t f;
    int got = 0;
    while (!(got = bg_tp_server_fault(srv, &f)) && bg_now_s() - t0 < 5) {
        bg_tp_store_note_progress(a); /* rank 0 keeps working */
        usleep(50000);
    }
    double dt = bg_now_s() - t0;
    bg_tp_fault_kind_t want = hang ? BG_TP_FAULT_HUNG : BG_TP_FAULT_UNRESPONSIVE;
    CHECK_MSG(got && f.kind == want && f.rank == 1, "%s: got %d kind %d rank %d", 
              hang ? "hung" : "unresponsive", got, got ? (int)f.kind : -1, got ? f.rank : -1);
    CHECK_MSG(dt < 3.0, "took %.2f s", dt);
    /* Rank 0 hears of it. */
    char v[8];
    size_t len;
    CHECK(bg_tp_store_get(a, "never-set", v, sizeof(v), 2, &len) == BG_ERR_PEER &&
          strstr(bg_last_error(), "rank 1"));
    fprintf(stderr, "%s rank named after %.2f s: %s\n", hang ? "hung" : "unresponsive", dt,
            got ? f.why : "-");
    if (raw >= 0)
        close(raw);
    bg_tp_store_close(b);
    bg_tp_store_close(a);
    bg_tp_server_wait(srv, 5);
    bg_tp_server_destroy(srv);
}

typedef struct {
    bg_tp_store_t *st;
    bg_status_t rc;
} barrier_arg_t;

static void *enter_barrier(void *arg)
{
    barrier_arg_t *a = arg;
    a->rc = bg_tp_store_barrier(a->st, "the end", 6);
    return NULL;
}

/* A rank waiting in a store barrier is done, not hung, however long the
 * others work (a parameter server while the workers evaluate); when the
 * others then stall, one of them is named, not the waiting rank. */
static void test_barrier_not_hung(void)
{
    bg_tp_server_t *srv = NULL;
    bg_tp_store_t *a = NULL, *b = NULL;
    if (!two_rank_store(0.5, 1.0, &srv, &a, &b))
        return;
    barrier_arg_t arg = {b, BG_OK};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, enter_barrier, &arg) == 0);
    bg_tp_fault_t f;
    double t0 = bg_now_s();
    int got = 0;
    while (!(got = bg_tp_server_fault(srv, &f)) && bg_now_s() - t0 < 2.5) {
        bg_tp_store_note_progress(a); /* rank 0 works on, 2.5 hang timeouts */
        usleep(50000);
    }
    CHECK_MSG(!got, "rank %d named while rank 1 waited in a barrier: %s", got ? f.rank : -1,
              got ? f.why : "");
    t0 = bg_now_s();
    while (!got && !(got = bg_tp_server_fault(srv, &f)) && bg_now_s() - t0 < 5)
        usleep(50000); /* now rank 0 stalls too */
    CHECK_MSG(got && f.kind == BG_TP_FAULT_HUNG && f.rank == 0, "got %d kind %d rank %d", got,
              got ? (int)f.kind : -1, got ? f.rank : -1);
    pthread_join(th, NULL);
    CHECK_MSG(arg.rc != BG_OK, "the barrier passed without rank 0");
    fprintf(stderr, "barrier wait not hung; then %s\n", got ? f.why : "-");
    bg_tp_store_close(b);
    bg_tp_store_close(a);
    bg_tp_server_wait(srv, 5);
    bg_tp_server_destroy(srv);
}

/* Where a rank's secret comes from: the variable, else the per-user file,
 * which must be private; the job id from the scheduler or BRIGADE_JOB_ID. */
static void test_secret_sources(void)
{
    char home[128], dir[200], path[260], cmd[600];
    snprintf(home, sizeof(home), "/tmp/bg_secret_%d", (int)getpid());
    snprintf(dir, sizeof(dir), "%s/.config/brigade", home);
    snprintf(path, sizeof(path), "%s/secret", dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && printf 'per-user secret 0123456789\n' > '%s'",
             dir, path);
    CHECK(system(cmd) == 0);
    char *saved = getenv("BRIGADE_JOB_SECRET") ? strdup(getenv("BRIGADE_JOB_SECRET")) : NULL;
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    unsetenv("BRIGADE_JOB_SECRET");
    setenv("HOME", home, 1);
    bg_tp_auth_t a, b, c;
    chmod(path, 0644);
    CHECK(bg_tp_auth_from_env(&a) == BG_ERR_INVALID && strstr(bg_last_error(), "0644") &&
          strstr(bg_last_error(), "chmod 600"));
    chmod(path, 0600);
    CHECK_OK(bg_tp_auth_from_env(&a));
    CHECK_OK(bg_tp_auth_from_secret("per-user secret 0123456789", NULL, &b));
    CHECK(!strcmp(a.job, b.job) && !memcmp(a.key, b.key, sizeof(a.key)));
    /* Two scheduler jobs sharing the file: different ids and keys. */
    setenv("SLURM_JOB_ID", "41", 1);
    setenv("SLURM_STEP_ID", "0", 1);
    CHECK_OK(bg_tp_auth_from_env(&b));
    setenv("SLURM_JOB_ID", "42", 1);
    CHECK_OK(bg_tp_auth_from_env(&c));
    CHECK(!strcmp(b.job, "slurm-41.0") && !strcmp(c.job, "slurm-42.0"));
    CHECK(memcmp(b.key, c.key, sizeof(b.key)) != 0);
    setenv("BRIGADE_JOB_ID", "mine", 1);
    CHECK_OK(bg_tp_auth_from_env(&c));
    CHECK(!strcmp(c.job, "mine"));
    unsetenv("BRIGADE_JOB_ID");
    unsetenv("SLURM_JOB_ID");
    unsetenv("SLURM_STEP_ID");
    unlink(path);
    CHECK(bg_tp_auth_from_env(&a) == BG_ERR_INVALID && strstr(bg_last_error(), "no job secret") &&
          strstr(bg_last_error(), path));
    CHECK(bg_tp_auth_from_secret("short", NULL, &a) == BG_ERR_INVALID);
    if (saved_home)
        setenv("HOME", saved_home, 1);
    if (saved)
        setenv("BRIGADE_JOB_SECRET", saved, 1);
    free(saved);
    free(saved_home);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    test_secret_sources();
    test_strays();
    test_fail_feed();
    test_liveness(0);
    test_liveness(1);
    test_barrier_not_hung();
    return bg_test_finish("test_tp_stray");
}
