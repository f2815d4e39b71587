/*
 * tests/transport/tp_harness.h -- run a test as several local ranks: the
 * parent hosts the rendezvous store on a free port (bind to port 0, as a
 * launcher would), fork/execs itself once per rank with BRIGADE_* set, and
 * collects exit codes with a deadline. Ranks exit 0 on success.
 *
 * Must NOT: pick fixed ports (tests run in parallel), leave children behind
 * (a deadline kills them), or be used outside tests.
 */
#ifndef BG_TP_HARNESS_H
#define BG_TP_HARNESS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "test_util.h"
#include "transport/transport.h"

#define TPH_MAX 16

/* The test job's credentials: a fresh secret in BRIGADE_JOB_SECRET (set once
 * in this process, so every rank forked later inherits it). */
static inline const bg_tp_auth_t *tph_auth(void)
{
    static bg_tp_auth_t auth;
    static int have;
    if (!have) {
        char secret[72];
        if (!getenv("BRIGADE_JOB_SECRET")) {
            if (bg_tp_auth_generate(secret, sizeof(secret)) != BG_OK) abort();
            setenv("BRIGADE_JOB_SECRET", secret, 1);
        }
        if (bg_tp_auth_from_env(&auth) != BG_OK) {
            fprintf(stderr, "harness: %s\n", bg_last_error());
            abort();
        }
        have = 1;
    }
    return &auth;
}

typedef struct {
    int n;
    pid_t pid[TPH_MAX];
    int status[TPH_MAX]; /* waitpid status */
    double end[TPH_MAX]; /* seconds since start when it ended */
    double start;
} tph_job_t;

/* A plain TCP connection to 127.0.0.1:port, as a stranger would open it;
 * -1 on failure. */
static inline int tph_raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A test tag: the transport treats tags as opaque, so any distinct values
 * below BG_TP_TAG_MAX will do; kind/index/sub keep tests readable. */
static inline uint64_t tph_tag(unsigned kind, unsigned index, unsigned sub)
{
    return ((uint64_t)kind << 40) | ((uint64_t)index << 8) | (uint64_t)(sub & 0xffu);
}

/*
 * Start ranks 0..n-1 of a job of `world` ranks (n < world leaves some out on
 * purpose) running `role`. port > 0: store at that port (external when
 * `external`, else hosted by rank 0). extra: "K=V" strings or NULL.
 */
static inline int tph_spawn(tph_job_t *job, const char *exe, const char *role, int n, int world,
                            int port, int external, const char **extra)
{
    tph_auth();
    memset(job, 0, sizeof(*job));
    job->n = n;
    job->start = bg_now_s();
    for (int r = 0; r < n; r++) {
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%d", r);
            setenv("BRIGADE_RANK", buf, 1);
            snprintf(buf, sizeof(buf), "%d", world);
            setenv("BRIGADE_WORLD_SIZE", buf, 1);
            snprintf(buf, sizeof(buf), "%d", r);
            setenv("BRIGADE_LOCAL_RANK", buf, 1);
            setenv("BRIGADE_MASTER_ADDR", "127.0.0.1", 1);
            snprintf(buf, sizeof(buf), "%d", port);
            setenv("BRIGADE_MASTER_PORT", buf, 1);
            setenv("BRIGADE_STORE", external ? "external" : "rank0", 1);
            const char *src = getenv("BRIGADE_SOURCE_DIR");
            if (src && !getenv("LSAN_OPTIONS")) {
                char supp[4200];
                snprintf(supp, sizeof(supp), "suppressions=%s/tests/transport/lsan.supp", src);
                setenv("LSAN_OPTIONS", supp, 1);
            }
            for (int i = 0; extra && extra[i]; i++) putenv((char *)extra[i]);
            execl(exe, exe, "--rank", role, (char *)NULL);
            _exit(127);
        }
        job->pid[r] = pid;
    }
    return 0;
}

/* Wait for all ranks, killing those alive after timeout_s. Returns the
 * number of ranks that did not exit 0 (killed-by-signal counts). */
static inline int tph_wait(tph_job_t *job, double timeout_s)
{
    int left = job->n, bad = 0;
    int done[TPH_MAX] = {0};
    while (left) {
        for (int r = 0; r < job->n; r++) {
            if (done[r]) continue;
            int st;
            pid_t p = waitpid(job->pid[r], &st, WNOHANG);
            if (p == job->pid[r]) {
                done[r] = 1;
                left--;
                job->status[r] = st;
                job->end[r] = bg_now_s() - job->start;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
            }
        }
        if (left && bg_now_s() - job->start > timeout_s) {
            for (int r = 0; r < job->n; r++)
                if (!done[r]) {
                    fprintf(stderr, "harness: rank %d still running after %.0f s: killing\n", r,
                            timeout_s);
                    kill(job->pid[r], SIGKILL);
                }
            timeout_s = 1e9;
        }
        if (left) usleep(2000);
    }
    return bad;
}

/* The common case: n ranks, store hosted by the harness, all must pass. */
static inline int tph_run(const char *exe, const char *role, int n, const char **extra,
                          double timeout_s)
{
    bg_tp_server_t *srv;
    if (bg_tp_server_create("127.0.0.1", 0, n, tph_auth(), &srv) != BG_OK) {
        fprintf(stderr, "harness: %s\n", bg_last_error());
        return 1;
    }
    tph_job_t job;
    double t0 = bg_now_s();
    tph_spawn(&job, exe, role, n, n, bg_tp_server_port(srv), 1, extra);
    int bad = tph_wait(&job, timeout_s);
    bg_status_t st = bg_tp_server_wait(srv, 5.0);
    if (st != BG_OK && !bad) {
        fprintf(stderr, "harness: store: %s\n", bg_last_error());
        bad = 1;
    }
    bg_tp_server_destroy(srv);
    printf("  %-28s %d ranks: %s (%.2f s)\n", role, n, bad ? "FAILED" : "ok", bg_now_s() - t0);
    fflush(stdout);
    return bad;
}

/* Rank side: join with defaults from the environment. */
static inline bg_tp_t *tph_join(void)
{
    bg_tp_config_t cfg;
    bg_tp_t *tp = NULL;
    if (bg_tp_config_from_env(&cfg) != BG_OK || bg_tp_create(&cfg, &tp) != BG_OK) {
        fprintf(stderr, "rank ?: join failed: %s\n", bg_last_error());
        return NULL;
    }
    return tp;
}

/* Rank side: leave and turn the test's failure count into an exit code. */
static inline int tph_leave(bg_tp_t *tp, const char *name)
{
    int rank = bg_tp_rank(tp);
    if (bg_tp_destroy(tp) != BG_OK) {
        fprintf(stderr, "rank %d: destroy: %s\n", rank, bg_last_error());
        bg_test_failures++;
    }
    if (bg_test_failures) {
        fprintf(stderr, "rank %d: %s: %d check(s) failed\n", rank, name, bg_test_failures);
        return 1;
    }
    return 0;
}

/* Deterministic test bytes for (seed, offset): receivers regenerate them. */
static inline void tph_fill(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = bg_test_next(&s);
        memcpy(p + i, &v, 8);
    }
    if (i < n) {
        uint64_t v = bg_test_next(&s);
        memcpy(p + i, &v, n - i);
    }
}

/* bf16 <-> f32 for test references (round to nearest even; finite values). */
static inline uint16_t tph_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float tph_from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint64_t tph_fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#endif
