/*
 * tests/transport/test_tp_gpu.c -- the transport's CUDA paths on a real
 * GPU, one check for each defect they once had:
 *   1. a pending copy or reduction leaves no error behind (cudaEventQuery's
 *      cudaErrorNotReady used to stay as the thread's last error, and the
 *      next launch check reported a failure that never happened);
 *   2. device collectives reuse the group's scratch (each allreduce did
 *      4 cudaMalloc + 4 cudaFree, and cudaFree synchronises the device);
 *   3. device reductions complete through events on the group's own
 *      stream: with that stream held back, collective progress calls still
 *      return at once (a cudaStreamSynchronize per segment on one global
 *      stream blocked them);
 *   4. events are timing-free and reused (staging buffers, reducer);
 *   5. streams live on the configured device (bg_tp_config_t.device), and
 *      the caller's current device is left alone;
 * and device results equal the host path's bit for bit (allreduce,
 * reduce-scatter + all-gather, f32 and bf16).
 * Skips (exit 0, "SKIP: <reason>") without CUDA in the build or a device.
 * Must NOT: depend on timing except the generous bound of check 3.
 */
#include "tp_harness.h"

#ifdef BG_HAVE_CUDA
#include <pthread.h>
#include <stdatomic.h>

#include <cuda_runtime_api.h>

#include "transport/coll_int.h"
#include "transport/staging.h"

static atomic_int g_release;

/* Runs on the stream: holds it until the test releases it. */
static void CUDART_CB hold(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_release)) usleep(1000);
}

/* Releases the held streams after 2 s even if the test thread is stuck in
 * a synchronise (the defect of check 3), so a failure cannot hang. */
static void *release_later(void *arg)
{
    (void)arg;
    usleep(2000000);
    atomic_store(&g_release, 1);
    return NULL;
}

static int g_dev; /* the device the transport is told to use */

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    int prev;
    cudaGetDevice(&prev);
    cudaSetDevice(g_dev);
    CHECK(cudaMalloc(&p, bytes) == cudaSuccess);
    cudaSetDevice(prev);
    return p;
}

/* Checks 1 and 4 on the staging layer: a held copy polls as pending
 * without leaving an error, its event has no timing, buffers are reused. */
static void check_staging(void)
{
    ucp_params_t p = {0};
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features = UCP_FEATURE_TAG;
    ucp_config_t *cfg;
    ucp_context_h ctx;
    CHECK(ucp_config_read(NULL, NULL, &cfg) == UCS_OK);
    CHECK(ucp_init(&p, cfg, &ctx) == UCS_OK);
    ucp_config_release(cfg);
    bg_tp_stage_t sg;
    bg_tp_stage_init(&sg, ctx, g_dev);
    size_t n = 8 << 20;
    void *src = dev_alloc(n);
    bg_tp_stage_buf_t *b = NULL;
    char err[256] = "";
    CHECK_OK(bg_tp_stage_get(&sg, n, 1, &b));
    CHECK_OK(bg_tp_stage_copy(&sg, b, b->ptr, src, 1, 1, 0, err, sizeof(err))); /* makes the streams */
    while (bg_tp_stage_copy_done(b, err, sizeof(err)) == 0) usleep(100);
    atomic_store(&g_release, 0);
    CHECK(cudaLaunchHostFunc(sg.s_d2h, hold, NULL) == cudaSuccess);
    CHECK_OK(bg_tp_stage_copy(&sg, b, b->ptr, src, n, 1, 0, err, sizeof(err)));
    CHECK_MSG(bg_tp_stage_copy_done(b, err, sizeof(err)) == 0, "held copy reported done");
    CHECK_MSG(cudaPeekAtLastError() == cudaSuccess,
              "a pending staging copy left an error behind: %s",
              cudaGetErrorString(cudaPeekAtLastError()));
    atomic_store(&g_release, 1);
    int d;
    while ((d = bg_tp_stage_copy_done(b, err, sizeof(err))) == 0) usleep(100);
    CHECK_MSG(d == 1, "staging copy failed: %s", err);
    float ms;
    CHECK_MSG(cudaEventElapsedTime(&ms, b->ev, b->ev) != cudaSuccess,
              "staging events must be created without timing");
    cudaGetLastError();
    cudaEvent_t ev = b->ev;
    void *ptr = b->ptr;
    bg_tp_stage_put(&sg, b);
    CHECK_OK(bg_tp_stage_get(&sg, n, 1, &b));
    CHECK_MSG(b->ptr == ptr && b->ev == ev, "staging buffer and event not reused");
    bg_tp_stage_put(&sg, b);
    bg_tp_stage_fini(&sg);
    cudaFree(src);
    ucp_cleanup(ctx);
}

/* Device allreduce / reduce-scatter + all-gather against the host path. */
static void check_device_bits(bg_tp_group_t *g, int bf16, bg_tp_op_t op, size_t cnt)
{
    int me = bg_tp_rank(g->tp);
    size_t esz = bf16 ? 2 : 4, bytes = cnt * esz;
    bg_tp_dtype_t dt = bf16 ? BG_TP_BF16 : BG_TP_F32;
    char *h = malloc(bytes), *ref = malloc(bytes), *back = malloc(bytes);
    tph_fill((unsigned char *)h, bytes, 77 + (uint64_t)me);
    /* Finite values only: random bits would include NaNs. */
    for (size_t i = 0; i < cnt; i++) {
        if (bf16) ((uint16_t *)h)[i] &= 0xbfffu;
        else ((uint32_t *)h)[i] &= 0xbfffffffu;
    }
    memcpy(ref, h, bytes);
    CHECK_OK(bg_tp_allreduce(g, ref, cnt, dt, op, BG_TP_MEM_HOST, 60));
    char *d = dev_alloc(bytes);
    for (int rs = 0; rs < 2; rs++) {
        CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) == cudaSuccess);
        if (rs) {
            CHECK_OK(bg_tp_reduce_scatter(g, d, cnt, dt, op, BG_TP_MEM_CUDA, 60));
            CHECK_OK(bg_tp_allgather(g, d, cnt, dt, BG_TP_MEM_CUDA, 60));
        } else {
            CHECK_OK(bg_tp_allreduce(g, d, cnt, dt, op, BG_TP_MEM_CUDA, 60));
        }
        CHECK(cudaMemcpy(back, d, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
        CHECK_MSG(!memcmp(back, ref, bytes), "device %s (%s, op %d, %zu elements) != host bits",
                  rs ? "reduce-scatter + all-gather" : "allreduce", bf16 ? "bf16" : "f32",
                  (int)op, cnt);
    }
    cudaFree(d);
    free(h), free(ref), free(back);
}

/* Check 3: the group's stream held back, progress calls must not block. */
static void check_no_blocking(bg_tp_group_t *g)
{
    bg_tp_cuda_red_t *red = NULL;
    CHECK_OK(bg_tp_group_reducer(g, &red));
    int sdev = -1;
    CHECK(cudaStreamGetDevice(bg_tp_cuda_red_stream(red), &sdev) == cudaSuccess);
    CHECK_MSG(sdev == g_dev, "reduction stream on device %d, configured %d", sdev, g_dev);
    size_t cnt = (size_t)1 << 20;
    float *d = dev_alloc(cnt * 4);
    CHECK(cudaMemset(d, 0, cnt * 4) == cudaSuccess);
    atomic_store(&g_release, 0);
    pthread_t th;
    pthread_create(&th, NULL, release_later, NULL);
    CHECK(cudaLaunchHostFunc(bg_tp_cuda_red_stream(red), hold, NULL) == cudaSuccess);
    bg_tp_coll_t *c = NULL;
    CHECK_OK(bg_tp_allreduce_start(g, d, cnt, BG_TP_F32, BG_TP_SUM, BG_TP_MEM_CUDA, &c));
    double worst = 0, until = bg_now_s() + 0.5;
    int done = 0;
    while (!done && bg_now_s() < until) {
        double t0 = bg_now_s();
        CHECK_OK(bg_tp_coll_test(c, &done));
        double dt = bg_now_s() - t0;
        worst = dt > worst ? dt : worst;
        CHECK_MSG(cudaPeekAtLastError() == cudaSuccess, "pending reduction left an error: %s",
                  cudaGetErrorString(cudaPeekAtLastError()));
    }
    CHECK_MSG(!done, "allreduce finished while its reduction stream was held");
    CHECK_MSG(worst < 0.2, "a progress call blocked %.3f s on the reduction stream", worst);
    atomic_store(&g_release, 1);
    if (!done) CHECK_OK(bg_tp_coll_wait(c, 60));
    pthread_join(th, NULL);
    cudaFree(d);
    /* Check 4 on the reducer: timing-free events, reused. */
    cudaEvent_t ev, ev2;
    CHECK_OK(bg_tp_cuda_red_event_get(red, &ev));
    CHECK(cudaEventRecord(ev, bg_tp_cuda_red_stream(red)) == cudaSuccess);
    CHECK(cudaEventSynchronize(ev) == cudaSuccess);
    float ms;
    CHECK_MSG(cudaEventElapsedTime(&ms, ev, ev) != cudaSuccess,
              "reduction events must be created without timing");
    cudaGetLastError();
    bg_tp_cuda_red_event_put(red, ev);
    CHECK_OK(bg_tp_cuda_red_event_get(red, &ev2));
    CHECK_MSG(ev2 == ev, "reduction event not reused");
    bg_tp_cuda_red_event_put(red, ev2);
}

static int role_gpu(void)
{
    int ndev = 0;
    cudaGetDeviceCount(&ndev);
    g_dev = ndev - 1; /* not 0 where there are several: catches streams made on the current one */
    cudaSetDevice(0);
    bg_tp_config_t cfg;
    bg_tp_t *tp = NULL;
    if (bg_tp_config_from_env(&cfg) != BG_OK) return 1;
    cfg.device = g_dev;
    if (bg_tp_create(&cfg, &tp) != BG_OK) {
        fprintf(stderr, "join: %s\n", bg_last_error());
        return 1;
    }
    CHECK(bg_tp_cuda_device(tp) == g_dev);
    if (bg_tp_rank(tp) == 0) check_staging();
    int ranks[2] = {0, 1};
    bg_tp_group_t *g = NULL;
    CHECK_OK(bg_tp_group_create(tp, ranks, 2, &g));
    check_device_bits(g, 0, BG_TP_AVG, ((size_t)1 << 20) + 7);
    size_t allocs = bg_tp_group_scratch_allocs(g);
    check_device_bits(g, 0, BG_TP_AVG, ((size_t)1 << 20) + 7);
    CHECK_MSG(bg_tp_group_scratch_allocs(g) == allocs,
              "device scratch allocated again (%zu -> %zu buffers)", allocs,
              bg_tp_group_scratch_allocs(g));
    check_device_bits(g, 1, BG_TP_SUM, 300001);
    check_device_bits(g, 1, BG_TP_AVG, 1001); /* the direct path */
    check_no_blocking(g);
    int cur = -1;
    cudaGetDevice(&cur);
    CHECK_MSG(cur == 0, "the transport changed the current device to %d", cur);
    CHECK_MSG(cudaPeekAtLastError() == cudaSuccess, "error left behind: %s",
              cudaGetErrorString(cudaPeekAtLastError()));
    bg_tp_group_destroy(g);
    return tph_leave(tp, "gpu");
}
#endif

int main(int argc, char **argv)
{
#ifndef BG_HAVE_CUDA
    (void)argc, (void)argv;
    printf("SKIP: test_tp_gpu: brigade was built without CUDA\n");
    return 0;
#else
    if (argc == 3 && !strcmp(argv[1], "--rank")) return role_gpu();
    int ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev < 1) {
        printf("SKIP: test_tp_gpu: no CUDA device (%s)\n",
               ce != cudaSuccess ? cudaGetErrorString(ce) : "device count 0");
        return 0;
    }
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) return 1;
    self[k] = '\0';
    const char *staged[] = {"BRIGADE_TP_DEVICE_PATH=staged", NULL};
    bg_test_failures += tph_run(self, "gpu", 2, NULL, 120);
    bg_test_failures += tph_run(self, "gpu", 2, staged, 120);
    return bg_test_finish("test_tp_gpu");
#endif
}
