/*
 * tests/transport/test_tp_p2p.c -- point-to-point between local ranks:
 * data integrity 1 B .. 64 MiB both ways (checksummed random bytes), the
 * staged pipeline (forced onto host buffers, since this machine has no GPU),
 * out-of-order posting, thousands of outstanding requests, same-tag order,
 * registered memory, length mismatches, deadlines, and a store hosted by
 * rank 0 instead of the harness.
 *
 * Must NOT: depend on timing for correctness or use fixed ports.
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include "tp_harness.h"

#define CHECK_ST(expr, want)                                                                     \
    do {                                                                                         \
        bg_status_t s_ = (expr);                                                                 \
        CHECK_MSG(s_ == (want), "%s -> %s (%s)", #expr, bg_status_str(s_), bg_last_error());     \
    } while (0)

static const size_t sizes[] = {1, 7, 8, 4096, 65537, 1 << 20, (4 << 20) + 5, 64 << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Both ranks send every size to each other at once and check what came. */
static int role_integrity(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), peer = 1 - me;
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i];
        unsigned char *out = malloc(n), *in = malloc(n), *want = malloc(n);
        tph_fill(out, n, 1000 * (uint64_t)me + i);
        tph_fill(want, n, 1000 * (uint64_t)peer + i);
        memset(in, 0xA5, n);
        bg_tp_req_t *rr, *sr;
        uint64_t tag = tph_tag(1, (unsigned)i, 3);
        CHECK_OK(bg_tp_recv(tp, peer, tag, in, n, BG_TP_MEM_HOST, &rr));
        CHECK_OK(bg_tp_send(tp, peer, tag, out, n, BG_TP_MEM_HOST, &sr));
        CHECK_OK(bg_tp_wait(tp, sr, 20));
        CHECK_OK(bg_tp_wait(tp, rr, 20));
        CHECK_MSG(tph_fnv(in, n) == tph_fnv(want, n) && !memcmp(in, want, n),
                  "rank %d: %zu bytes from rank %d differ", me, n, peer);
        free(out), free(in), free(want);
    }
    return tph_leave(tp, "integrity");
}

/* Receives posted in reverse order and waited in a shuffled order; then a
 * flood of small messages all outstanding at once; then same-tag order. */
static int role_order(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), peer = 1 - me;
    enum { M = 64, FLOOD = 2000 };
    size_t len[M];
    unsigned char *buf[M];
    bg_tp_req_t *req[M];
    for (int i = 0; i < M; i++) len[i] = (size_t)(i * 37 + 1) * (i % 8 == 0 ? 4099 : 13);
    if (me == 0) {
        for (int i = 0; i < M; i++) {
            buf[i] = malloc(len[i]);
            tph_fill(buf[i], len[i], (uint64_t)i);
            CHECK_OK(bg_tp_send(tp, peer, tph_tag(2, (unsigned)i, 0),
                                buf[i], len[i], BG_TP_MEM_HOST, &req[i]));
        }
        for (int i = 0; i < M; i++) CHECK_OK(bg_tp_wait(tp, req[i], 20));
    } else {
        for (int i = M - 1; i >= 0; i--) {
            buf[i] = calloc(1, len[i]);
            CHECK_OK(bg_tp_recv(tp, peer, tph_tag(2, (unsigned)i, 0), buf[i],
                                len[i], BG_TP_MEM_HOST, &req[i]));
        }
        for (int k = 0; k < M; k++) {
            int i = (k * 29) % M; /* 29 is coprime with 64: a permutation */
            CHECK_OK(bg_tp_wait(tp, req[i], 20));
            unsigned char *want = malloc(len[i]);
            tph_fill(want, len[i], (uint64_t)i);
            CHECK_MSG(!memcmp(want, buf[i], len[i]), "message %d corrupted", i);
            free(want);
        }
    }
    for (int i = 0; i < M; i++) free(buf[i]);

    /* Flood: FLOOD sends and FLOOD receives in flight in both directions. */
    uint32_t *sv = malloc(FLOOD * sizeof(uint32_t)), *rv = malloc(FLOOD * sizeof(uint32_t));
    bg_tp_req_t **sq = malloc(FLOOD * sizeof(*sq)), **rq = malloc(FLOOD * sizeof(*rq));
    for (int i = 0; i < FLOOD; i++) {
        sv[i] = (uint32_t)(me * 100000 + i);
        rv[i] = 0;
        uint64_t tag = tph_tag(4, (unsigned)i, 1);
        CHECK_OK(bg_tp_recv(tp, peer, tag, &rv[i], 4, BG_TP_MEM_HOST, &rq[i]));
        CHECK_OK(bg_tp_send(tp, peer, tag, &sv[i], 4, BG_TP_MEM_HOST, &sq[i]));
    }
    for (int i = FLOOD - 1; i >= 0; i--) {
        CHECK_OK(bg_tp_wait(tp, rq[i], 20));
        CHECK_OK(bg_tp_wait(tp, sq[i], 20));
        CHECK(rv[i] == (uint32_t)(peer * 100000 + i));
    }
    free(sv), free(rv), free(sq), free(rq);

    /* Same tag, three messages: they match in posting order. */
    uint64_t tag = tph_tag(3, 5, 5);
    uint64_t a[3] = {11, 22, 33}, b[3] = {0, 0, 0};
    bg_tp_req_t *q[3];
    if (me == 0)
        for (int i = 0; i < 3; i++) CHECK_OK(bg_tp_send(tp, 1, tag, &a[i], 8, BG_TP_MEM_HOST, &q[i]));
    else
        for (int i = 0; i < 3; i++) CHECK_OK(bg_tp_recv(tp, 0, tag, &b[i], 8, BG_TP_MEM_HOST, &q[i]));
    for (int i = 0; i < 3; i++) CHECK_OK(bg_tp_wait(tp, q[i], 20));
    if (me == 1) CHECK(b[0] == 11 && b[1] == 22 && b[2] == 33);
    return tph_leave(tp, "order");
}

/* Registered buffers, errors that must be reported, deadlines, cancel. */
static int role_errors(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), peer = 1 - me;
    bg_tp_req_t *r = NULL;

    /* Registered memory on the hot path. */
    size_t n = 3 << 20;
    unsigned char *reg = malloc(n), *want = malloc(n);
    bg_tp_mr_t *mr = NULL;
    CHECK_OK(bg_tp_mem_register(tp, reg, n, BG_TP_MEM_HOST, &mr));
    tph_fill(want, n, 77);
    if (me == 0) {
        memcpy(reg, want, n);
        CHECK_OK(bg_tp_send(tp, 1, tph_tag(1, 1, 0), reg, n, BG_TP_MEM_HOST, &r));
    } else {
        memset(reg, 0, n);
        CHECK_OK(bg_tp_recv(tp, 0, tph_tag(1, 1, 0), reg, n, BG_TP_MEM_HOST, &r));
    }
    CHECK_OK(bg_tp_wait(tp, r, 20));
    if (me == 1) CHECK(!memcmp(reg, want, n));
    bg_tp_mem_deregister(tp, mr);
    free(reg), free(want);

    /* Argument errors fail at once. */
    char x[16] = {0};
    CHECK_ST(bg_tp_send(tp, 9, 0, x, 1, BG_TP_MEM_HOST, &r), BG_ERR_INVALID);
    CHECK_ST(bg_tp_send(tp, peer, (uint64_t)14 << 60, x, 1, BG_TP_MEM_HOST, &r), BG_ERR_INVALID);
    /* The bits above BG_TP_TAG_BITS are the transport's: refused, not masked. */
    CHECK_ST(bg_tp_send(tp, peer, BG_TP_TAG_MAX + 1, x, 1, BG_TP_MEM_HOST, &r), BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "does not fit in 44 bits") != NULL);
    CHECK_ST(bg_tp_recv(tp, peer, (uint64_t)1 << 63, x, 1, BG_TP_MEM_HOST, &r), BG_ERR_INVALID);
#ifndef BG_HAVE_CUDA
    CHECK_ST(bg_tp_send(tp, peer, 0, x, 1, BG_TP_MEM_CUDA, &r), BG_ERR_UNSUPPORTED);
#endif

    /* Length mismatches: longer and shorter than the receive. */
    uint64_t t1 = tph_tag(4, 1, 0), t2 = tph_tag(4, 2, 0);
    if (me == 0) {
        CHECK_OK(bg_tp_send(tp, 1, t1, x, 16, BG_TP_MEM_HOST, &r));
        bg_tp_wait(tp, r, 5); /* outcome depends on protocol: either is fine */
        CHECK_OK(bg_tp_send(tp, 1, t2, x, 4, BG_TP_MEM_HOST, &r));
        CHECK_OK(bg_tp_wait(tp, r, 5));
    } else {
        CHECK_OK(bg_tp_recv(tp, 0, t1, x, 8, BG_TP_MEM_HOST, &r));
        bg_status_t st = bg_tp_wait(tp, r, 5);
        CHECK_MSG(st == BG_ERR_UCX && strstr(bg_last_error(), "rank 0"), "truncation: %s: %s",
                  bg_status_str(st), bg_last_error());
        CHECK_OK(bg_tp_recv(tp, 0, t2, x, 8, BG_TP_MEM_HOST, &r));
        st = bg_tp_wait(tp, r, 5);
        CHECK_MSG(st == BG_ERR_UCX && strstr(bg_last_error(), "length mismatch"), "short: %s: %s",
                  bg_status_str(st), bg_last_error());
    }

    /* A receive nobody answers: deadline, request still alive, cancel. */
    double t0 = bg_now_s();
    CHECK_OK(bg_tp_recv(tp, peer, tph_tag(4, 99, 0), x, 8, BG_TP_MEM_HOST, &r));
    bg_status_t st = bg_tp_wait(tp, r, 0.2);
    char rankname[32];
    snprintf(rankname, sizeof(rankname), "rank %d", peer);
    CHECK_MSG(st == BG_ERR_TIMEOUT && strstr(bg_last_error(), rankname), "deadline: %s",
              bg_last_error());
    CHECK(bg_now_s() - t0 < 2.0);
    bg_tp_cancel(tp, r);
    return tph_leave(tp, "errors");
}

static int role_single(void)
{
    /* A job of one needs no launcher variables and can talk to itself. */
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    char a[100] = "self", b[100] = {0};
    bg_tp_req_t *r, *s;
    CHECK_OK(bg_tp_recv(tp, 0, 1, b, 100, BG_TP_MEM_HOST, &r));
    CHECK_OK(bg_tp_send(tp, 0, 1, a, 100, BG_TP_MEM_HOST, &s));
    CHECK_OK(bg_tp_wait(tp, s, 5));
    CHECK_OK(bg_tp_wait(tp, r, 5));
    CHECK(!strcmp(b, "self"));
    return tph_leave(tp, "single");
}

/* A free port for a rank-0-hosted store: bind 0, read it, close. The
 * window until rank 0 binds it is small; a clash fails loudly, not wrongly. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank")) {
        if (!strcmp(argv[2], "integrity")) return role_integrity();
        if (!strcmp(argv[2], "order")) return role_order();
        if (!strcmp(argv[2], "errors")) return role_errors();
        if (!strcmp(argv[2], "single")) return role_single();
        return 2;
    }
    const char *exe = "/proc/self/exe";
    char self[4096];
    ssize_t k = readlink(exe, self, sizeof(self) - 1);
    if (k > 0) self[k] = '\0', exe = self;
    int bad = 0;
    bad += tph_run(exe, "integrity", 2, NULL, 60);
    const char *staged[] = {"BRIGADE_TP_STAGE_HOST=1", "BRIGADE_TP_CHUNK=262144",
                            "BRIGADE_TP_STAGE_DEPTH=3", NULL};
    bad += tph_run(exe, "integrity", 2, staged, 60);
    bad += tph_run(exe, "order", 2, NULL, 60);
    bad += tph_run(exe, "order", 2, staged, 60);
    bad += tph_run(exe, "errors", 2, NULL, 60);

    /* Store hosted by rank 0 (no launcher). */
    tph_job_t job;
    tph_spawn(&job, exe, "order", 2, 2, free_port(), 0, NULL);
    int b = tph_wait(&job, 60);
    printf("  %-28s 2 ranks: %s\n", "order (rank 0 hosts store)", b ? "FAILED" : "ok");
    bad += b;

    /* No launcher at all: a job of one. */
    pid_t pid = fork();
    if (pid == 0) {
        const char *vars[] = {"BRIGADE_RANK", "BRIGADE_WORLD_SIZE", "RANK", "WORLD_SIZE",
                              "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", NULL};
        for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
        char port[16];
        snprintf(port, sizeof(port), "%d", free_port());
        setenv("BRIGADE_MASTER_PORT", port, 1);
        execl(exe, exe, "--rank", "single", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    b = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    printf("  %-28s 1 rank: %s\n", "single (no launcher)", b ? "FAILED" : "ok");
    bad += b;

    bg_test_failures += bad;
    return bg_test_finish("test_tp_p2p");
}
