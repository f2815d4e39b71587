/*
 * tests/transport/test_tp_fail.c -- failures never hang: a peer SIGKILLed
 * mid-transfer is reported to the survivors within 5 s naming its rank (and
 * the survivors still talk to each other and exit cleanly); the same when
 * the killed rank is rank 0 hosting the store; a rank that never arrives at
 * the rendezvous gives a timeout naming it; a store nobody hosts gives a
 * clear "not reachable".
 *
 * Must NOT: wait on fixed sleeps for correctness (sleeps only make the
 * kill land mid-transfer) or leave processes behind.
 */
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "tp_harness.h"

#define BIG (32u << 20)

/* Rank `victim` starts a big send to `victim+1` and a receive from the
 * others, then kills itself; survivors wait on it and must see BG_ERR_PEER
 * naming the victim within 5 s. */
static int role_kill(int victim)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), world = bg_tp_world_size(tp);
    int target = (victim + 1) % world;
    unsigned char *buf = malloc(BIG);
    memset(buf, me, BIG);
    uint64_t tag = tph_tag(1, 1, 0);
    bg_tp_req_t *r = NULL, *x = NULL;
    if (me == victim) {
        CHECK_OK(bg_tp_send(tp, target, tag, buf, BIG, BG_TP_MEM_HOST, &r));
        for (int i = 0; i < 50; i++) bg_tp_progress(tp);
        raise(SIGKILL);
    }
    /* Everyone else waits on something only the victim can complete. The
     * death may already be known when posting: that fails at once, fine. */
    double t0 = bg_now_s();
    bg_status_t st;
    bg_tp_req_t *big = NULL;
    if (me == target) {
        /* The big transfer may be cut or may just have finished: either is
         * fine, only a hang or a wrong error is not. */
        bg_status_t bs = bg_tp_recv(tp, victim, tag, buf, BIG, BG_TP_MEM_HOST, &big);
        if (bs == BG_OK) bs = bg_tp_wait(tp, big, 5.0);
        CHECK_MSG(bs == BG_OK || bs == BG_ERR_PEER, "big recv: %s", bg_last_error());
    }
    st = bg_tp_recv(tp, victim, tag + 1, buf, 64, BG_TP_MEM_HOST, &r);
    /* And a send the victim never receives (it may complete eagerly). */
    bg_status_t sst = bg_tp_send(tp, victim, tag + 2, buf, 1 << 20, BG_TP_MEM_HOST, &x);
    CHECK(sst == BG_OK || sst == BG_ERR_PEER);
    if (st == BG_OK) st = bg_tp_wait(tp, r, 5.0);
    double dt = bg_now_s() - t0;
    char name[32];
    snprintf(name, sizeof(name), "rank %d", victim);
    CHECK_MSG(st == BG_ERR_PEER && strstr(bg_last_error(), name),
              "rank %d: expected a peer failure naming %s, got %s: %s", me, name,
              bg_status_str(st), bg_last_error());
    CHECK_MSG(dt < 5.0, "detection took %.2f s", dt);
    fprintf(stderr, "rank %d: detected in %.3f s: %s\n", me, dt, bg_last_error());
    if (st == BG_ERR_TIMEOUT) bg_tp_cancel(tp, r);
    if (sst == BG_OK) {
        st = bg_tp_wait(tp, x, 5.0);
        CHECK_MSG(st == BG_OK || st == BG_ERR_PEER, "send to dead rank: %s", bg_last_error());
    }
    /* New operations to the dead rank fail at once. */
    CHECK(bg_tp_send(tp, victim, tag + 3, buf, 8, BG_TP_MEM_HOST, &x) == BG_ERR_PEER);
    /* Survivors still talk (the store-hosting rank may be the victim: then
     * the job is lost and only local cleanup is checked). */
    int survivors_ok = !(victim == 0 && !getenv("BRIGADE_STORE_EXTERNAL_TEST"));
    if (survivors_ok && world >= 3) {
        int a = (victim + 1) % world, b = (victim + 2) % world;
        if (me == a || me == b) {
            uint64_t v = (uint64_t)me, w = 0;
            bg_tp_req_t *s2, *r2;
            int other = me == a ? b : a;
            CHECK_OK(bg_tp_recv(tp, other, tag + 9, &w, 8, BG_TP_MEM_HOST, &r2));
            CHECK_OK(bg_tp_send(tp, other, tag + 9, &v, 8, BG_TP_MEM_HOST, &s2));
            CHECK_OK(bg_tp_wait(tp, s2, 5));
            CHECK_OK(bg_tp_wait(tp, r2, 5));
            CHECK(w == (uint64_t)other);
        }
    }
    free(buf);
    /* destroy must not hang and reports nothing new for a known death. */
    double t1 = bg_now_s();
    bg_tp_destroy(tp);
    CHECK_MSG(bg_now_s() - t1 < 5.0, "destroy took %.2f s", bg_now_s() - t1);
    return bg_test_failures ? 1 : 0;
}

/* Join must fail with a timeout naming the absent rank. */
static int role_absent(void)
{
    bg_tp_config_t cfg;
    bg_tp_t *tp = NULL;
    CHECK_OK(bg_tp_config_from_env(&cfg));
    double t0 = bg_now_s();
    bg_status_t st = bg_tp_create(&cfg, &tp);
    double dt = bg_now_s() - t0;
    const char *want = getenv("TP_EXPECT");
    CHECK_MSG(st == BG_ERR_TIMEOUT && strstr(bg_last_error(), want), "expected timeout naming '%s', got %s: %s",
              want, bg_status_str(st), bg_last_error());
    CHECK_MSG(dt < cfg.timeout_s + 3, "gave up after %.1f s", dt);
    fprintf(stderr, "rank %d: %s\n", cfg.boot.rank, bg_last_error());
    if (st == BG_OK) bg_tp_destroy(tp);
    return bg_test_failures ? 1 : 0;
}

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

/* Survivors exit 0, the victim dies by SIGKILL. */
static int check_kill_job(tph_job_t *job, int victim, const char *label)
{
    int bad = 0;
    for (int r = 0; r < job->n; r++) {
        int st = job->status[r];
        int ok = r == victim ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL
                             : WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok) {
            fprintf(stderr, "%s: rank %d ended wrongly (status 0x%x)\n", label, r, st);
            bad++;
        }
    }
    printf("  %-40s %s\n", label, bad ? "FAILED" : "ok");
    fflush(stdout);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank")) {
        if (!strncmp(argv[2], "kill", 4)) return role_kill(atoi(argv[2] + 4));
        if (!strcmp(argv[2], "absent")) return role_absent();
        return 2;
    }
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    int bad = 0;
    tph_job_t job;
    const char *timeout2[] = {"BRIGADE_TP_TIMEOUT=2", NULL};

    /* 1. Rank 2 of 3 killed mid-transfer; the launcher hosts the store. */
    {
        bg_tp_server_t *srv;
        bg_tp_server_create("127.0.0.1", 0, 3, tph_auth(), &srv);
        const char *env[] = {"BRIGADE_STORE_EXTERNAL_TEST=1", NULL};
        tph_spawn(&job, self, "kill2", 3, 3, bg_tp_server_port(srv), 1, env);
        tph_wait(&job, 30);
        bad += check_kill_job(&job, 2, "SIGKILL rank 2 of 3 (launcher store)");
        bg_status_t st = bg_tp_server_wait(srv, 1);
        CHECK_MSG(st == BG_ERR_PEER && strstr(bg_last_error(), "rank 2"), "server: %s",
                  bg_last_error());
        bg_tp_server_destroy(srv);
    }
    /* 2. Rank 0, which hosts the store, killed: the others must notice. */
    tph_spawn(&job, self, "kill0", 3, 3, free_port(), 0, NULL);
    tph_wait(&job, 30);
    bad += check_kill_job(&job, 0, "SIGKILL rank 0 of 3 (rank 0 store)");

    /* 3. Rank 2 of 3 never starts: a timeout naming it. */
    {
        bg_tp_server_t *srv;
        bg_tp_server_create("127.0.0.1", 0, 3, tph_auth(), &srv);
        const char *env[] = {"BRIGADE_TP_TIMEOUT=2", "TP_EXPECT=rank 2", NULL};
        tph_spawn(&job, self, "absent", 2, 3, bg_tp_server_port(srv), 1, env);
        int b = tph_wait(&job, 30);
        printf("  %-40s %s\n", "rank 2 of 3 never arrives", b ? "FAILED" : "ok");
        bad += b;
        bg_tp_server_destroy(srv);
    }
    /* 4. Nobody hosts the store (rank 0 absent, external store expected). */
    {
        const char *env[] = {"BRIGADE_TP_TIMEOUT=2", "TP_EXPECT=not reachable", NULL};
        tph_job_t j2;
        tph_spawn(&j2, self, "absent", 1, 2, free_port(), 1, env);
        (void)timeout2;
        int b = tph_wait(&j2, 30);
        printf("  %-40s %s\n", "store not reachable", b ? "FAILED" : "ok");
        bad += b;
    }
    bg_test_failures += bad;
    return bg_test_finish("test_tp_fail");
}
