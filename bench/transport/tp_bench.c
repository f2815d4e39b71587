/*
 * bench/transport/tp_bench.c -- brigade transport vs ucx_perftest on this
 * machine, in one run: tagged point-to-point bandwidth (1 KiB .. 64 MiB) and
 * 8-byte latency between two local ranks, with ratios, then ring allreduce
 * bus bandwidth for 2 and 4 ranks.
 *
 * Must NOT: pass or fail on numbers (it reports), or use fixed ports.
 * Both sides use the same UCX environment (UCX_TLS etc. are inherited).
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include "tp_harness.h"

/* Any tag below BG_TP_TAG_MAX will do: the transport treats them as opaque. */
static uint64_t bench_tag(unsigned kind, unsigned index)
{
    return ((uint64_t)kind << 40) | (uint64_t)index;
}

static const size_t bw_sizes[] = {1024, 16384, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
#define NBW (sizeof(bw_sizes) / sizeof(bw_sizes[0]))
#define WINDOW 16

static int iters_for(size_t n)
{
    size_t it = ((size_t)1 << 30) / n;
    if (it > 20000) it = 20000;
    if (it < 16) it = 16;
    return (int)it;
}

static void out_line(const char *fmt, double a, double b)
{
    const char *path = getenv("TP_BENCH_OUT");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f) return;
    fprintf(f, fmt, a, b);
    fclose(f);
}

static int role_p2p(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int me = bg_tp_rank(tp), peer = 1 - me;
    char *buf = aligned_alloc(4096, 64 << 20);
    memset(buf, 1, 64 << 20);
    bg_tp_mr_t *mr = NULL;
    bg_tp_mem_register(tp, buf, 64 << 20, BG_TP_MEM_HOST, &mr);
    char ack = 0;
    const char *ov = getenv("TP_BENCH_SIZE");
    size_t only = ov ? (size_t)strtoull(ov, NULL, 10) : 0;
    for (size_t k = 0; k < NBW && only; k++) {
        size_t n = bw_sizes[k];
        if (n != only) continue;
        int it = iters_for(n);
        bg_tp_req_t *q[WINDOW] = {0};
        bg_tp_store_barrier(bg_tp_store(tp), "bench", 60);
        double t0 = bg_now_s();
        for (int i = 0; i < it; i++) {
            bg_tp_req_t **slot = &q[i % WINDOW];
            if (*slot) bg_tp_wait(tp, *slot, 60);
            /* Distinct tags per window slot: multi-chunk messages must not
             * share a tag while in flight. */
            uint64_t tag = bench_tag(1, (unsigned)(i % WINDOW));
            if (me == 0) bg_tp_send(tp, peer, tag, buf, n, BG_TP_MEM_HOST, slot);
            else bg_tp_recv(tp, peer, tag, buf, n, BG_TP_MEM_HOST, slot);
        }
        for (int i = 0; i < WINDOW; i++)
            if (q[i]) bg_tp_wait(tp, q[i], 60);
        bg_tp_req_t *a;
        if (me == 0) bg_tp_recv(tp, peer, 99, &ack, 1, BG_TP_MEM_HOST, &a);
        else bg_tp_send(tp, peer, 99, &ack, 1, BG_TP_MEM_HOST, &a);
        bg_tp_wait(tp, a, 60);
        double dt = bg_now_s() - t0;
        if (me == 0) out_line("bw %.0f %.3f\n", (double)n, (double)n * it / dt / (1 << 20));
    }
    /* Latency: 8-byte ping-pong, one-way = round trip / 2. */
    for (int rep = 0; rep < 2 && !only; rep++) {
        int it = rep ? 20000 : 2000;
        double t0 = bg_now_s();
        for (int i = 0; i < it; i++) {
            bg_tp_req_t *s, *r;
            if (me == 0) {
                bg_tp_send(tp, peer, 7, buf, 8, BG_TP_MEM_HOST, &s);
                bg_tp_wait(tp, s, 60);
                bg_tp_recv(tp, peer, 8, buf, 8, BG_TP_MEM_HOST, &r);
                bg_tp_wait(tp, r, 60);
            } else {
                bg_tp_recv(tp, peer, 7, buf, 8, BG_TP_MEM_HOST, &r);
                bg_tp_wait(tp, r, 60);
                bg_tp_send(tp, peer, 8, buf, 8, BG_TP_MEM_HOST, &s);
                bg_tp_wait(tp, s, 60);
            }
        }
        double dt = bg_now_s() - t0;
        if (rep && me == 0) out_line("lat %.0f %.4f\n", 8.0, dt / it / 2 * 1e6);
    }
    bg_tp_mem_deregister(tp, mr);
    free(buf);
    return tph_leave(tp, "p2p");
}

static int role_allreduce(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    int world = bg_tp_world_size(tp), ranks[TPH_MAX];
    for (int i = 0; i < world; i++) ranks[i] = i;
    bg_tp_group_t *g;
    bg_tp_group_create(tp, ranks, world, &g);
    size_t count = 4 << 20; /* 16 MiB of f32 */
    float *x = malloc(count * 4);
    for (size_t i = 0; i < count; i++) x[i] = 1.0f;
    bg_tp_allreduce(g, x, count, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 60);
    bg_tp_barrier(g, 60);
    int it = 5;
    double t0 = bg_now_s();
    for (int i = 0; i < it; i++) bg_tp_allreduce(g, x, count, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 60);
    double dt = (bg_now_s() - t0) / it;
    double bytes = (double)count * 4;
    if (bg_tp_rank(tp) == 0)
        out_line("ar %.0f %.3f\n", (double)world, bytes / dt * 2.0 * (world - 1) / world / (1 << 20));
    bg_tp_group_destroy(g);
    free(x);
    return tph_leave(tp, "allreduce");
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

/* Run ucx_perftest server + client; return the chosen column of "Final:"
 * (bandwidth MB/s overall for tag_bw, average latency us for tag_lat). */
static double result(const char *path, const char *want, double key)
{
    FILE *f = fopen(path, "r");
    char kind[8];
    double a, b, v = 0;
    while (f && fscanf(f, "%7s %lf %lf", kind, &a, &b) == 3)
        if (!strcmp(kind, want) && a == key) v = b;
    if (f) fclose(f);
    return v;
}

static double perftest(const char *test, size_t size, int iters)
{
    int port = free_port();
    char sz[32], it[32], pt[32];
    snprintf(sz, sizeof(sz), "%zu", size);
    snprintf(it, sizeof(it), "%d", iters);
    snprintf(pt, sizeof(pt), "%d", port);
    fflush(stdout);
    pid_t srv = fork();
    if (srv == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("ucx_perftest", "ucx_perftest", "-t", test, "-s", sz, "-n", it, "-p", pt, (char *)NULL);
        _exit(127);
    }
    usleep(300000);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ucx_perftest 127.0.0.1 -t %s -s %s -n %s -p %s 2>/dev/null", test,
             sz, it, pt);
    double v = -1;
    for (int attempt = 0; attempt < 3 && v < 0; attempt++) {
        FILE *p = popen(cmd, "r");
        char line[512];
        while (p && fgets(line, sizeof(line), p)) {
            double f[7];
            long n;
            if (sscanf(line, " Final: %ld %lf %lf %lf %lf %lf %lf %lf", &n, &f[0], &f[1], &f[2], &f[3],
                       &f[4], &f[5], &f[6]) == 8)
                v = !strcmp(test, "tag_bw") ? f[4] : f[1];
        }
        if (p) pclose(p);
        if (v < 0) usleep(300000);
    }
    int st;
    kill(srv, SIGTERM);
    waitpid(srv, &st, 0);
    return v;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank"))
        return !strcmp(argv[2], "p2p") ? role_p2p() : role_allreduce();
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    char out[] = "/tmp/tp_bench_XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) return 1;
    close(fd);
    setenv("TP_BENCH_OUT", out, 1);
    printf("UCX_TLS=%s\n", getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)");
    fflush(stdout);
    /* Ours and perftest back to back per size, best of two each: the
     * machine may be shared, and drift hurts ratios more than noise. */
    printf("\n%-10s %14s %14s %7s\n", "size", "brigade MB/s", "perftest MB/s", "ratio");
    for (size_t i = 0; i < NBW; i++) {
        char env[64];
        snprintf(env, sizeof(env), "TP_BENCH_SIZE=%zu", bw_sizes[i]);
        const char *extra[] = {env, NULL};
        double ours = 0, p = 0;
        for (int rep = 0; rep < 2; rep++) {
            unlink(out);
            tph_run(self, "p2p", 2, extra, 600);
            double o = result(out, "bw", (double)bw_sizes[i]);
            double q = perftest("tag_bw", bw_sizes[i], iters_for(bw_sizes[i]));
            if (o > ours) ours = o;
            if (q > p) p = q;
        }
        printf("%-10zu %14.1f %14.1f %7.2f\n", bw_sizes[i], ours, p, p > 0 ? ours / p : 0);
        fflush(stdout);
    }
    double lat = 1e9, pl = 1e9;
    for (int rep = 0; rep < 2; rep++) {
        const char *extra[] = {"TP_BENCH_SIZE=0", NULL};
        unlink(out);
        tph_run(self, "p2p", 2, extra, 600);
        double o = result(out, "lat", 8);
        double q = perftest("tag_lat", 8, 20000);
        if (o > 0 && o < lat) lat = o;
        if (q > 0 && q < pl) pl = q;
    }
    printf("\n%-10s %14s %14s %7s\n", "latency", "brigade us", "perftest us", "diff");
    printf("%-10s %14.3f %14.3f %+7.3f\n", "8 B", lat, pl, lat - pl);
    unlink(out);
    tph_run(self, "allreduce", 2, NULL, 600);
    tph_run(self, "allreduce", 4, NULL, 600);
    printf("\nallreduce 16 MiB f32 bus bandwidth: 2 ranks %.1f MB/s, 4 ranks %.1f MB/s\n",
           result(out, "ar", 2), result(out, "ar", 4));
    unlink(out);
    return 0;
}
