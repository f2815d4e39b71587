/*
 * bench/transport/tp_bench.c -- brigade transport against its references,
 * measured in one run on this machine:
 *   p2p:  tagged point-to-point bandwidth (1 KiB .. 64 MiB) and 8-byte
 *         latency between two local ranks next to ucx_perftest, interleaved
 *         per repetition; median and best of each.
 *   coll: allreduce, reduce-scatter and all-gather of 4 KiB .. 16 MiB on 2
 *         and 4 ranks, interleaved with the point-to-point bandwidth they
 *         are judged by (one link alone: rank 0 -> 1, and every ring link
 *         at once), in the same job; median and minimum times, and the
 *         ratio to the ring bound:
 *           allreduce              2 (n-1)/n * bytes / p2p bandwidth
 *           reduce-scatter, gather   (n-1)/n * bytes / p2p bandwidth
 *         Same-host groups take the direct path (process_vm_readv) from
 *         BRIGADE_TP_DIRECT_MIN bytes on; BRIGADE_TP_CMA=0 gives the ring.
 *   path: the same three collectives of 64 KiB .. 16 MiB on 2 and 4 ranks
 *         with the direct path on and off (BRIGADE_TP_CMA, every size
 *         forced onto it), interleaved: median us of each and the speedup,
 *         to choose BRIGADE_TP_DIRECT_MIN.
 *   tune: 16 MiB allreduce / reduce-scatter / all-gather on 2 and 4 ranks
 *         for each "segment:lanes" setting in TP_BENCH_TUNE (default a
 *         sweep), interleaved, to choose BRIGADE_TP_SEGMENT / _LANES.
 * Usage: tp_bench [p2p|coll|path|tune|all] [repetitions]   (default: all, 9)
 * TP_BENCH_MAX_SIZE=N stops the p2p sizes at N; TP_BENCH_ITERS=N sets every
 * size's iterations (both sides) for a longer look.
 *
 * Must NOT: pass or fail on numbers (it reports), or use fixed ports.
 * Both sides use the same UCX environment (UCX_TLS etc. are inherited).
 */
#include <sched.h>
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
#define MAXREP 64

static int iters_for(size_t n)
{
    const char *ov = getenv("TP_BENCH_ITERS"); /* profiling: a longer run */
    if (ov && atoi(ov) > 0) return atoi(ov);
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

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[MAXREP];
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

static double vmin(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

static double vmax(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* ---------------- point-to-point vs ucx_perftest ---------------- */

/* `it` messages of n bytes from rank 0 to 1, WINDOW in flight. */
static void stream_loop(bg_tp_t *tp, char *buf, size_t n, int it)
{
    int me = bg_tp_rank(tp), peer = 1 - me;
    bg_tp_req_t *q[WINDOW] = {0};
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
}

/* Rank 1 tells rank 0 it has everything. */
static void stream_ack(bg_tp_t *tp)
{
    int me = bg_tp_rank(tp), peer = 1 - me;
    char ack = 0;
    bg_tp_req_t *a;
    if (me == 0) bg_tp_recv(tp, peer, 99, &ack, 1, BG_TP_MEM_HOST, &a);
    else bg_tp_send(tp, peer, 99, &ack, 1, BG_TP_MEM_HOST, &a);
    bg_tp_wait(tp, a, 60);
}

/* Timed after the warm-up ucx_perftest runs too (its -w 10000, capped at a
 * tenth of the iterations), so both measure the steady state. */
static void p2p_stream(bg_tp_t *tp, char *buf, size_t n, int it)
{
    bg_tp_store_barrier(bg_tp_store(tp), "bench", 60);
    int warm = it / 10 < 10000 ? it / 10 : 10000;
    if (warm > 0) {
        stream_loop(tp, buf, n, warm);
        stream_ack(tp);
    }
    double t0 = bg_now_s();
    stream_loop(tp, buf, n, it);
    stream_ack(tp);
    double dt = bg_now_s() - t0;
    if (bg_tp_rank(tp) == 0) out_line("bw %.0f %.3f\n", (double)n, (double)n * it / dt / (1 << 20));
}

/* 8-byte ping-pong, one-way = round trip / 2. */
static void p2p_latency(bg_tp_t *tp, char *buf)
{
    int me = bg_tp_rank(tp), peer = 1 - me;
    for (int rep = 0; rep < 2; rep++) {
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
}

/* Pin p2p rank r to core r (and perftest's server/client likewise): left to
 * the scheduler, both sides sometimes share a core and a small-message
 * stream runs 3x faster on one cache, so ratios swung 0.5..0.8 by placement.
 * Training binds ranks to cores too. */
static int pin_cpu(int rank)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 2 && !getenv("TP_BENCH_NOPIN") ? rank % (int)n : -1;
}

static void pin_self(int rank)
{
    int c = pin_cpu(rank);
    if (c < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(c, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static int role_p2p(void)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return 1;
    pin_self(bg_tp_rank(tp));
    char *buf = aligned_alloc(4096, 64 << 20);
    memset(buf, 1, 64 << 20);
    bg_tp_mr_t *mr = NULL;
    bg_tp_mem_register(tp, buf, 64 << 20, BG_TP_MEM_HOST, &mr);
    const char *ov = getenv("TP_BENCH_SIZE");
    size_t only = ov ? (size_t)strtoull(ov, NULL, 10) : 0;
    if (only) p2p_stream(tp, buf, only, iters_for(only));
    else p2p_latency(tp, buf);
    bg_tp_mem_deregister(tp, mr);
    free(buf);
    return tph_leave(tp, "p2p");
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

/* The value of line "<want> <key> <value>" in the results file. */
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

/* Run ucx_perftest server + client; the chosen column of "Final:"
 * (bandwidth MB/s overall for tag_bw, average latency us for tag_lat). */
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
        char cpu[16];
        snprintf(cpu, sizeof(cpu), "%d", pin_cpu(1));
        if (pin_cpu(1) >= 0)
            execlp("ucx_perftest", "ucx_perftest", "-t", test, "-s", sz, "-n", it, "-p", pt, "-c",
                   cpu, (char *)NULL);
        else
            execlp("ucx_perftest", "ucx_perftest", "-t", test, "-s", sz, "-n", it, "-p", pt,
                   (char *)NULL);
        _exit(127);
    }
    usleep(300000);
    char cmd[512];
    char pin[32] = "";
    if (pin_cpu(0) >= 0) snprintf(pin, sizeof(pin), " -c %d", pin_cpu(0));
    snprintf(cmd, sizeof(cmd), "ucx_perftest 127.0.0.1 -t %s -s %s -n %s -p %s%s 2>/dev/null", test,
             sz, it, pt, pin);
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

static void run_p2p(const char *self, const char *out, int reps)
{
    static double ours[NBW][MAXREP], ref[NBW][MAXREP];
    double lat[MAXREP], plat[MAXREP];
    /* Ours and perftest back to back per size and repetition: the machine
     * is shared, and drift hurts ratios more than noise. */
    /* TP_BENCH_MAX_SIZE: stop at that size (a quick look at small messages). */
    const char *mx = getenv("TP_BENCH_MAX_SIZE");
    size_t nbw = NBW;
    while (mx && nbw > 1 && bw_sizes[nbw - 1] > strtoull(mx, NULL, 10)) nbw--;
    for (int rep = 0; rep < reps; rep++) {
        for (size_t i = 0; i < nbw; i++) {
            char env[64];
            snprintf(env, sizeof(env), "TP_BENCH_SIZE=%zu", bw_sizes[i]);
            const char *extra[] = {env, NULL};
            unlink(out);
            tph_run(self, "p2p", 2, extra, 600);
            ours[i][rep] = result(out, "bw", (double)bw_sizes[i]);
            ref[i][rep] = perftest("tag_bw", bw_sizes[i], iters_for(bw_sizes[i]));
        }
        const char *extra[] = {"TP_BENCH_SIZE=0", NULL};
        unlink(out);
        tph_run(self, "p2p", 2, extra, 600);
        lat[rep] = result(out, "lat", 8);
        plat[rep] = perftest("tag_lat", 8, 20000);
    }
    printf("\npoint-to-point, %d repetitions (MB/s: median / best)\n", reps);
    printf("%-10s %20s %20s %12s\n", "size", "brigade", "ucx_perftest", "ratio (med)");
    for (size_t i = 0; i < nbw; i++) {
        double mo = median(ours[i], reps), mp = median(ref[i], reps);
        printf("%-10zu %10.1f / %7.1f %10.1f / %7.1f %12.2f\n", bw_sizes[i], mo, vmax(ours[i], reps),
               mp, vmax(ref[i], reps), mp > 0 ? mo / mp : 0);
    }
    printf("%-10s %10.3f / %7.3f %10.3f / %7.3f  (us: median / best)\n", "lat 8 B",
           median(lat, reps), vmin(lat, reps), median(plat, reps), vmin(plat, reps));
    fflush(stdout);
}

/* ---------------- collectives vs the ring bound ---------------- */

static const size_t coll_bytes[] = {4096, 65536, 1 << 20, 16 << 20};
#define NCB (sizeof(coll_bytes) / sizeof(coll_bytes[0]))
enum { M_LINK, M_RING, M_AR, M_RS, M_AG, NM };
static const char *m_name[NM] = {"p2p 0->1", "p2p ring", "allreduce", "reduce-scatter",
                                 "all-gather"};

/* Every rank sends `bytes` to its right neighbour and receives as much from
 * its left at once (ring = 1), or rank 0 sends to rank 1 alone (ring = 0). */
static void links(bg_tp_t *tp, bg_tp_group_t *g, char *sbuf, char *rbuf, size_t bytes, int ring)
{
    int n = bg_tp_world_size(tp), me = bg_tp_rank(tp);
    bg_tp_req_t *s = NULL, *r = NULL;
    if (ring || me == 0) bg_tp_send(tp, (me + 1) % n, bench_tag(2, 0), sbuf, bytes, BG_TP_MEM_HOST, &s);
    if (ring || me == 1) bg_tp_recv(tp, (me + n - 1) % n, bench_tag(2, 0), rbuf, bytes, BG_TP_MEM_HOST, &r);
    if (s) bg_tp_wait(tp, s, 60);
    if (r) bg_tp_wait(tp, r, 60);
    if (!ring) bg_tp_barrier(g, 60); /* rank 0's send may finish before the data lands */
}

/* Seconds one measurement of method m takes on rank 0, after a barrier. */
static double measure(bg_tp_t *tp, bg_tp_group_t *g, int m, float *x, char *rbuf, size_t bytes)
{
    size_t count = bytes / 4;
    bg_tp_barrier(g, 60);
    double t0 = bg_now_s();
    if (m == M_LINK || m == M_RING) links(tp, g, (char *)x, rbuf, bytes, m == M_RING);
    else if (m == M_AR) bg_tp_allreduce(g, x, count, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 60);
    else if (m == M_RS) bg_tp_reduce_scatter(g, x, count, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_HOST, 60);
    else bg_tp_allgather(g, x, count, BG_TP_F32, BG_TP_MEM_HOST, 60);
    return bg_now_s() - t0;
}

static void coll_report(int n, int reps, double t[NCB][NM][MAXREP])
{
    printf("\n%d ranks, %d repetitions, times in us (median / min); ratio = ring bound / median "
           "time,\n  bound from the p2p 0->1 median (and, in brackets, from all ring links at once)\n",
           n, reps);
    printf("%-10s %-15s %22s %16s\n", "bytes", "what", "time us", "ratio to bound");
    for (size_t b = 0; b < NCB; b++) {
        double link = median(t[b][M_LINK], reps), ring = median(t[b][M_RING], reps);
        for (int m = 0; m < NM; m++) {
            double med = median(t[b][m], reps), mn = vmin(t[b][m], reps);
            double f = m == M_AR ? 2.0 * (n - 1) / n : (double)(n - 1) / n;
            printf("%-10zu %-15s %11.1f / %8.1f", coll_bytes[b], m_name[m], med * 1e6, mn * 1e6);
            if (m >= M_AR) printf(" %7.2f [%5.2f]", f * link / med, f * ring / med);
            else printf("   %8.1f MB/s", (double)coll_bytes[b] / med / (1 << 20));
            printf("\n");
        }
    }
    fflush(stdout);
}

/* A collective role's start: the world group, repetitions, and a buffer
 * and a receive buffer of `bytes`. NULL if joining failed. */
static bg_tp_t *bench_join(bg_tp_group_t **g, int *reps, float **x, char **rbuf, size_t bytes)
{
    bg_tp_t *tp = tph_join();
    if (!tp) return NULL;
    int world = bg_tp_world_size(tp), ranks[TPH_MAX];
    for (int i = 0; i < world; i++) ranks[i] = i;
    bg_tp_group_create(tp, ranks, world, g);
    *reps = atoi(getenv("TP_BENCH_REPS") ? getenv("TP_BENCH_REPS") : "9");
    if (*reps < 1 || *reps > MAXREP) *reps = 9;
    *x = aligned_alloc(4096, bytes);
    *rbuf = aligned_alloc(4096, bytes);
    for (size_t i = 0; i < bytes / 4; i++) (*x)[i] = 1.0f;
    memset(*rbuf, 0, bytes);
    return tp;
}

static int role_coll(void)
{
    bg_tp_group_t *g;
    int reps;
    float *x;
    char *rbuf;
    size_t maxb = coll_bytes[NCB - 1];
    bg_tp_t *tp = bench_join(&g, &reps, &x, &rbuf, maxb);
    if (!tp) return 1;
    int world = bg_tp_world_size(tp);
    static double t[NCB][NM][MAXREP];
    for (int m = 0; m < NM; m++) measure(tp, g, m, x, rbuf, maxb); /* warm up */
    /* Interleaved: every method of every size once per repetition, so
     * machine load drifts over all of them alike. */
    for (int rep = 0; rep < reps; rep++)
        for (size_t b = 0; b < NCB; b++)
            for (int m = 0; m < NM; m++) t[b][m][rep] = measure(tp, g, m, x, rbuf, coll_bytes[b]);
    if (bg_tp_rank(tp) == 0) coll_report(world, reps, t);
    bg_tp_group_destroy(g);
    free(x);
    free(rbuf);
    return tph_leave(tp, "coll");
}

/* ---------------- direct path against the ring ---------------- */

static const size_t path_bytes[] = {65536, 131072, 262144, 524288, 1 << 20, 4 << 20, 16 << 20};
#define NPB (sizeof(path_bytes) / sizeof(path_bytes[0]))

static int role_path(void)
{
    bg_tp_group_t *g;
    int reps;
    float *x;
    char *rbuf;
    bg_tp_t *tp = bench_join(&g, &reps, &x, &rbuf, path_bytes[NPB - 1]);
    if (!tp) return 1;
    static double t[NPB][2][NM][MAXREP];
    setenv("BRIGADE_TP_DIRECT_MIN", "1", 1); /* whenever BRIGADE_TP_CMA allows */
    for (int rep = 0; rep < reps; rep++)
        for (size_t b = 0; b < NPB; b++)
            for (int on = 0; on < 2; on++) {
                setenv("BRIGADE_TP_CMA", on ? "1" : "0", 1);
                for (int m = M_AR; m < NM; m++)
                    t[b][on][m][rep] = measure(tp, g, m, x, rbuf, path_bytes[b]);
            }
    if (bg_tp_rank(tp) == 0) {
        printf("\n%d ranks, %d repetitions: median us, ring / direct (speedup)\n%-10s %26s %26s "
               "%26s\n", bg_tp_world_size(tp), reps, "bytes", "allreduce", "reduce-scatter",
               "all-gather");
        for (size_t b = 0; b < NPB; b++) {
            printf("%-10zu", path_bytes[b]);
            for (int m = M_AR; m < NM; m++) {
                double r = median(t[b][0][m], reps), d = median(t[b][1][m], reps);
                printf(" %9.0f / %8.0f (%4.2f)", r * 1e6, d * 1e6, r / d);
            }
            printf("\n");
        }
        fflush(stdout);
    }
    bg_tp_group_destroy(g);
    free(x);
    free(rbuf);
    return tph_leave(tp, "path");
}

/* ---------------- tuning the ring ---------------- */

#define MAXTUNE 16

static int role_tune(void)
{
    bg_tp_group_t *g;
    int reps;
    float *x;
    char *rbuf;
    size_t bytes = 16 << 20;
    bg_tp_t *tp = bench_join(&g, &reps, &x, &rbuf, bytes);
    if (!tp) return 1;
    int world = bg_tp_world_size(tp);
    const char *list = getenv("TP_BENCH_TUNE");
    if (!list || !*list) list = "65536:8,131072:8,262144:4,262144:8,262144:16,524288:8,1048576:4,4194304:4";
    char seg[MAXTUNE][24], lanes[MAXTUNE][8];
    int nt = 0;
    for (const char *p = list; *p && nt < MAXTUNE;) {
        if (sscanf(p, "%23[0-9]:%7[0-9]", seg[nt], lanes[nt]) == 2) nt++;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    static double t[MAXTUNE][NM][MAXREP];
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < nt; k++) {
            setenv("BRIGADE_TP_SEGMENT", seg[k], 1);
            setenv("BRIGADE_TP_LANES", lanes[k], 1);
            for (int m = 0; m < NM; m++) t[k][m][rep] = measure(tp, g, m, x, rbuf, bytes);
        }
    if (bg_tp_rank(tp) == 0) {
        printf("\n%d ranks, 16 MiB, %d repetitions: median us (ratio to the bound from p2p "
               "0->1 [all links])\n%-16s %22s %22s %22s\n", world, reps, "segment:lanes",
               "allreduce", "reduce-scatter", "all-gather");
        for (int k = 0; k < nt; k++) {
            double link = median(t[k][M_LINK], reps), ring = median(t[k][M_RING], reps);
            printf("%9s:%-6s", seg[k], lanes[k]);
            for (int m = M_AR; m < NM; m++) {
                double med = median(t[k][m], reps), f = (m == M_AR ? 2.0 : 1.0) * (world - 1) / world;
                printf(" %9.0f %5.2f [%4.2f]", med * 1e6, f * link / med, f * ring / med);
            }
            printf("\n");
        }
        fflush(stdout);
    }
    bg_tp_group_destroy(g);
    free(x);
    free(rbuf);
    return tph_leave(tp, "tune");
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--rank"))
        return !strcmp(argv[2], "p2p")    ? role_p2p()
               : !strcmp(argv[2], "tune") ? role_tune()
               : !strcmp(argv[2], "path") ? role_path()
                                          : role_coll();
    const char *what = argc > 1 ? argv[1] : "all";
    int reps = argc > 2 ? atoi(argv[2]) : 9;
    if (reps < 1 || reps > MAXREP) reps = 9;
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    char out[] = "/tmp/tp_bench_XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) return 1;
    close(fd);
    setenv("TP_BENCH_OUT", out, 1);
    char rep_env[32];
    snprintf(rep_env, sizeof(rep_env), "%d", reps);
    setenv("TP_BENCH_REPS", rep_env, 1);
    printf("UCX_TLS=%s\n", getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)");
    fflush(stdout);
    if (!strcmp(what, "p2p") || !strcmp(what, "all")) run_p2p(self, out, reps);
    if (!strcmp(what, "coll") || !strcmp(what, "all")) {
        tph_run(self, "coll", 2, NULL, 600);
        tph_run(self, "coll", 4, NULL, 600);
    }
    if (!strcmp(what, "path")) {
        tph_run(self, "path", 2, NULL, 600);
        tph_run(self, "path", 4, NULL, 600);
    }
    if (!strcmp(what, "tune")) {
        tph_run(self, "tune", 2, NULL, 600);
        tph_run(self, "tune", 4, NULL, 600);
    }
    unlink(out);
    return 0;
}
