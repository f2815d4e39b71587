/*
 * layers/backend_cuda.cu -- the CUDA backend: device memory, asynchronous
 * copies and memsets on streams, streams named for Nsight, timing events,
 * and row-major GEMM through cuBLAS (f32, bf16 or fp16 operands, f32 compute).
 *
 * NULL stream means the backend's own non-blocking stream, never the legacy
 * default stream (which would serialise against every other stream). Each
 * stream owns its cuBLAS workspace so that GEMMs on different streams never
 * share scratch and results are bit-reproducible run to run.
 * Every CUDA and cuBLAS status is checked and turned into a bg_status_t.
 * Must not know about layers, graphs, schedules or transport; must not exit.
 */
#include "layers/cuda_common.cuh"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<nvtx3/nvToolsExtCudaRt.h>)
#include <nvtx3/nvToolsExtCudaRt.h>
#define BG_HAVE_NVTX 1
#endif

/* cuBLAS asks for 32 MiB of workspace per stream on Hopper. */
#define BG_CUBLAS_WORKSPACE (32u << 20)

/* What a bg_stream_t handle points to on this backend. */
typedef struct bg_cuda_stream {
    cudaStream_t stream;
    void *cublas_ws; /* this stream's cuBLAS workspace */
    char name[32];
} bg_cuda_stream_t;

typedef struct bg_cuda_event {
    cudaEvent_t event;
} bg_cuda_event_t;

typedef struct bg_cuda_state {
    int device;
    int sm_count;
    bg_cuda_stream_t dflt; /* the stream NULL stands for */
    cublasHandle_t cublas;
    /* One handle serves all streams: set-stream + gemm must not interleave
     * between host threads. */
    pthread_mutex_t cublas_lock;
} bg_cuda_state_t;

static bg_cuda_state_t *cuda_state(bg_backend_t *be)
{
    return (bg_cuda_state_t *)be->impl;
}

static bg_cuda_stream_t *cuda_stream(bg_backend_t *be, bg_stream_t *s)
{
    return s ? (bg_cuda_stream_t *)s : &cuda_state(be)->dflt;
}

/* Make the backend's device current: callers may drive several devices. */
static bg_status_t cuda_enter(bg_backend_t *be)
{
    BG_CUDA_CHECK(cudaSetDevice(cuda_state(be)->device));
    return BG_OK;
}

bg_status_t bg_cuda_stream_of(bg_backend_t *be, bg_stream_t *s, cudaStream_t *out)
{
    BG_TRY_STATUS(cuda_enter(be));
    *out = cuda_stream(be, s)->stream;
    return BG_OK;
}

int bg_cuda_sm_count(bg_backend_t *be)
{
    return cuda_state(be)->sm_count;
}

/* ---- streams ---- */

/* Create a non-blocking stream with its cuBLAS workspace, named `name`. */
static bg_status_t cuda_stream_init(bg_cuda_stream_t *cs, const char *name)
{
    bg_status_t st = BG_OK;
    memset(cs, 0, sizeof(*cs));
    snprintf(cs->name, sizeof(cs->name), "%s", name ? name : "brigade");
    BG_CUDA_TRY(cudaStreamCreateWithFlags(&cs->stream, cudaStreamNonBlocking), err);
    BG_CUDA_TRY(cudaMalloc(&cs->cublas_ws, BG_CUBLAS_WORKSPACE), err_stream);
#ifdef BG_HAVE_NVTX
    nvtxNameCudaStreamA(cs->stream, cs->name);
#endif
    return BG_OK;
err_stream:
    cudaStreamDestroy(cs->stream);
    cs->stream = NULL;
err:
    return st;
}

/* Finish the stream's work, then release it. Errors here have no caller to
 * go to (destroy paths return void), so they are logged. */
static void cuda_stream_fini(bg_cuda_stream_t *cs)
{
    cudaError_t e;
    if (cs->stream && (e = cudaStreamSynchronize(cs->stream)) != cudaSuccess)
        bg_log(BG_LOG_WARN, "cuda backend: stream '%s' failed before destroy: %s", cs->name,
               cudaGetErrorString(e));
    if (cs->cublas_ws && (e = cudaFree(cs->cublas_ws)) != cudaSuccess)
        bg_log(BG_LOG_WARN, "cuda backend: cudaFree(workspace) failed: %s", cudaGetErrorString(e));
    if (cs->stream && (e = cudaStreamDestroy(cs->stream)) != cudaSuccess)
        bg_log(BG_LOG_WARN, "cuda backend: cudaStreamDestroy failed: %s", cudaGetErrorString(e));
    cs->stream = NULL;
    cs->cublas_ws = NULL;
}

static bg_status_t cuda_stream_create(bg_backend_t *be, const char *name, bg_stream_t **out)
{
    BG_TRY_STATUS(cuda_enter(be));
    bg_cuda_stream_t *cs = (bg_cuda_stream_t *)calloc(1, sizeof(*cs));
    if (!cs)
        return bg_errorf(BG_ERR_NOMEM, "cuda backend: out of memory for a stream");
    bg_status_t st = cuda_stream_init(cs, name);
    if (st != BG_OK) {
        free(cs);
        return st;
    }
    *out = (bg_stream_t *)cs;
    return BG_OK;
}

/* The cuBLAS handle keeps the stream and workspace of its last GEMM: point
 * it back at the legacy stream and cuBLAS' own workspace before they go,
 * so it never holds a destroyed stream or freed workspace. */
static void cuda_cublas_forget(bg_cuda_state_t *cs, const bg_cuda_stream_t *gone)
{
    cudaStream_t cur = NULL;
    pthread_mutex_lock(&cs->cublas_lock);
    if (cublasGetStream(cs->cublas, &cur) == CUBLAS_STATUS_SUCCESS && cur == gone->stream) {
        cublasStatus_t r = cublasSetStream(cs->cublas, 0); /* also resets the workspace */
        if (r != CUBLAS_STATUS_SUCCESS)
            bg_log(BG_LOG_WARN, "cuda backend: cublasSetStream failed: %s",
                   cublasGetStatusString(r));
    }
    pthread_mutex_unlock(&cs->cublas_lock);
}

static void cuda_stream_destroy(bg_backend_t *be, bg_stream_t *s)
{
    if (!s)
        return;
    if (cuda_enter(be) != BG_OK)
        bg_log(BG_LOG_WARN, "%s", bg_last_error());
    cuda_cublas_forget(cuda_state(be), (bg_cuda_stream_t *)s);
    cuda_stream_fini((bg_cuda_stream_t *)s);
    free(s);
}

static bg_status_t cuda_stream_synchronize(bg_backend_t *be, bg_stream_t *s)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be, s)->stream));
    return BG_OK;
}

/* ---- memory ---- */

static bg_status_t cuda_alloc(bg_backend_t *be, size_t bytes, void **out)
{
    BG_TRY_STATUS(cuda_enter(be));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out-of-memory is not sticky: clear it */
        return bg_errorf(e == cudaErrorMemoryAllocation ? BG_ERR_NOMEM : BG_ERR_CUDA,
                         "cudaMalloc(%zu bytes) on device %d failed: %s at %s:%d", bytes,
                         cuda_state(be)->device, cudaGetErrorString(e), __FILE__, __LINE__);
    }
    *out = p;
    return BG_OK;
}

static void cuda_free(bg_backend_t *be, void *p)
{
    if (cuda_enter(be) != BG_OK)
        bg_log(BG_LOG_WARN, "%s", bg_last_error());
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess)
        bg_log(BG_LOG_WARN, "cuda backend: cudaFree(%p) failed: %s", p, cudaGetErrorString(e));
}

static bg_status_t cuda_copy(bg_backend_t *be, void *dst, const void *src, size_t bytes,
                             bg_copy_kind_t kind, bg_stream_t *s)
{
    cudaMemcpyKind k = kind == BG_COPY_H2D   ? cudaMemcpyHostToDevice
                       : kind == BG_COPY_D2H ? cudaMemcpyDeviceToHost
                                             : cudaMemcpyDeviceToDevice;
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, cuda_stream(be, s)->stream));
    return BG_OK;
}

static bg_status_t cuda_memset(bg_backend_t *be, void *dst, int v, size_t bytes, bg_stream_t *s)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaMemsetAsync(dst, v, bytes, cuda_stream(be, s)->stream));
    return BG_OK;
}

static bg_status_t cuda_synchronize(bg_backend_t *be)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaDeviceSynchronize());
    return BG_OK;
}

/* ---- events ---- */

static bg_status_t cuda_event_create(bg_backend_t *be, bg_event_t **out)
{
    BG_TRY_STATUS(cuda_enter(be));
    bg_cuda_event_t *ev = (bg_cuda_event_t *)calloc(1, sizeof(*ev));
    if (!ev)
        return bg_errorf(BG_ERR_NOMEM, "cuda backend: out of memory for an event");
    cudaError_t e = cudaEventCreate(&ev->event); /* timing enabled */
    if (e != cudaSuccess) {
        free(ev);
        return bg_cuda_fail(e, "cudaEventCreate(&ev->event)", __FILE__, __LINE__);
    }
    *out = (bg_event_t *)ev;
    return BG_OK;
}

static void cuda_event_destroy(bg_backend_t *be, bg_event_t *e)
{
    if (!e)
        return;
    if (cuda_enter(be) != BG_OK)
        bg_log(BG_LOG_WARN, "%s", bg_last_error());
    cudaError_t r = cudaEventDestroy(((bg_cuda_event_t *)e)->event);
    if (r != cudaSuccess)
        bg_log(BG_LOG_WARN, "cuda backend: cudaEventDestroy failed: %s", cudaGetErrorString(r));
    free(e);
}

static bg_status_t cuda_event_record(bg_backend_t *be, bg_event_t *e, bg_stream_t *s)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaEventRecord(((bg_cuda_event_t *)e)->event, cuda_stream(be, s)->stream));
    return BG_OK;
}

static bg_status_t cuda_stream_wait_event(bg_backend_t *be, bg_stream_t *s, bg_event_t *e)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(
        cudaStreamWaitEvent(cuda_stream(be, s)->stream, ((bg_cuda_event_t *)e)->event, 0));
    return BG_OK;
}

static bg_status_t cuda_event_synchronize(bg_backend_t *be, bg_event_t *e)
{
    BG_TRY_STATUS(cuda_enter(be));
    BG_CUDA_CHECK(cudaEventSynchronize(((bg_cuda_event_t *)e)->event));
    return BG_OK;
}

static bg_status_t cuda_event_query(bg_backend_t *be, bg_event_t *e, int *done)
{
    BG_TRY_STATUS(cuda_enter(be));
    cudaError_t q = cudaEventQuery(((bg_cuda_event_t *)e)->event);
    if (q == cudaErrorNotReady) {
        (void)cudaGetLastError(); /* not-ready is an answer, not a sticky error */
        *done = 0;
        return BG_OK;
    }
    BG_CUDA_CHECK(q);
    *done = 1;
    return BG_OK;
}

static bg_status_t cuda_event_elapsed_ms(bg_backend_t *be, bg_event_t *a, bg_event_t *b, float *ms)
{
    BG_TRY_STATUS(cuda_enter(be));
    float v = 0.0f;
    BG_CUDA_CHECK(
        cudaEventElapsedTime(&v, ((bg_cuda_event_t *)a)->event, ((bg_cuda_event_t *)b)->event));
    *ms = v;
    return BG_OK;
}

/* ---- GEMM ---- */

static cudaDataType_t cuda_dtype(bg_dtype_t dt)
{
    return dt == BG_BF16 ? CUDA_R_16BF : dt == BG_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* C (m, n) *= beta (0 writes zeros): GEMM with k == 0, which cuBLAS may
 * leave alone, must still define every element like BLAS does. */
template <typename T>
__global__ void cuda_scale_kernel(T *c, int64_t m, int64_t n, int64_t ldc, int64_t batch,
                                  int64_t sc, float beta)
{
    int64_t total = m * n * batch;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t bi = i / (m * n), r = (i / n) % m, j = i % n;
        T *p = c + bi * sc + r * ldc + j;
        bg_st(p, beta == 0.0f ? 0.0f : beta * bg_ld(p));
    }
}

template <typename T> static bg_status_t cuda_gemm_k0_t(const bg_gemm_args_t *g, cudaStream_t s)
{
    int64_t batch = g->batch > 1 ? g->batch : 1;
    unsigned blocks = bg_cuda_blocks(g->m * g->n * batch, 256);
    cuda_scale_kernel<T>
        <<<blocks, 256, 0, s>>>((T *)g->c, g->m, g->n, g->ldc, batch, g->sc, g->beta);
    BG_CUDA_LAUNCH_CHECK("cuda_scale_kernel");
    return BG_OK;
}

static bg_status_t cuda_gemm_k0(const bg_gemm_args_t *g, cudaStream_t s)
{
    return BG_CUDA_DISPATCH(g->c_dtype, cuda_gemm_k0_t, g, s);
}

/* cuBLAS takes int sizes and leading dimensions. */
static bg_status_t cuda_gemm_check(const bg_gemm_args_t *g)
{
    const int64_t v[] = {g->m, g->n, g->k, g->lda, g->ldb, g->ldc};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        if (v[i] > INT_MAX)
            return bg_errorf(BG_ERR_UNSUPPORTED,
                             "cuda gemm: size or leading dimension %lld exceeds INT_MAX",
                             (long long)v[i]);
    if (g->ab != BG_F32 && g->ab != BG_BF16 && g->ab != BG_F16)
        return bg_errorf(BG_ERR_INVALID, "cuda gemm: operands must be f32, bf16 or fp16, got %s",
                         bg_dtype_name(g->ab));
    if (g->ab != BG_F32 && g->c_dtype != BG_F32 && g->c_dtype != g->ab)
        return bg_errorf(BG_ERR_UNSUPPORTED, "cuda gemm: %s operands give %s or f32, not %s",
                         bg_dtype_name(g->ab), bg_dtype_name(g->ab), bg_dtype_name(g->c_dtype));
    /* cuBLAS' f32-compute table: bf16 x bf16 -> bf16 or f32, fp16 x fp16 -> fp16 or
     * f32; f32 x f32 -> f32 only. */
    if (g->ab == BG_F32 && g->c_dtype != BG_F32)
        return bg_errorf(BG_ERR_UNSUPPORTED,
                         "cuda gemm: f32 operands need an f32 result (got %s): cuBLAS has no "
                         "f32 x f32 -> %s GEMM",
                         bg_dtype_name(g->c_dtype), bg_dtype_name(g->c_dtype));
    return BG_OK;
}

/*
 * Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS
 * gets B first, the same transpose flags, and (n, m) sizes. A row-major
 * matrix with row stride ld is a column-major one with leading dimension ld.
 */
static bg_status_t cuda_gemm_locked(bg_cuda_state_t *cs, bg_cuda_stream_t *s,
                                    const bg_gemm_args_t *g)
{
    cublasHandle_t h = cs->cublas;
    cublasOperation_t ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t ab = cuda_dtype(g->ab), ct = cuda_dtype(g->c_dtype);
    int m = (int)g->m, n = (int)g->n, k = (int)g->k;
    /* set-stream resets the workspace to cuBLAS' pool: set ours after it. */
    BG_CUBLAS_CHECK(cublasSetStream(h, s->stream));
    BG_CUBLAS_CHECK(cublasSetWorkspace(h, s->cublas_ws, BG_CUBLAS_WORKSPACE));
    if (g->batch > 1) {
        BG_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            h, tb, ta, n, m, k, &g->alpha, g->b, ab, (int)g->ldb, g->sb, g->a, ab, (int)g->lda,
            g->sa, &g->beta, g->c, ct, (int)g->ldc, g->sc, (int)g->batch, CUBLAS_COMPUTE_32F,
            CUBLAS_GEMM_DEFAULT));
    } else {
        BG_CUBLAS_CHECK(cublasGemmEx(h, tb, ta, n, m, k, &g->alpha, g->b, ab, (int)g->ldb, g->a, ab,
                                     (int)g->lda, &g->beta, g->c, ct, (int)g->ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return BG_OK;
}

static bg_status_t cuda_gemm(bg_backend_t *be, bg_stream_t *s, const bg_gemm_args_t *g)
{
    bg_cuda_state_t *cs = cuda_state(be);
    bg_cuda_stream_t *stream = cuda_stream(be, s);
    BG_TRY_STATUS(cuda_gemm_check(g));
    BG_TRY_STATUS(cuda_enter(be));
    if (g->k == 0)
        return cuda_gemm_k0(g, stream->stream);
    pthread_mutex_lock(&cs->cublas_lock);
    bg_status_t st = cuda_gemm_locked(cs, stream, g);
    pthread_mutex_unlock(&cs->cublas_lock);
    return st;
}

/* ---- lifetime ---- */

static void cuda_destroy(bg_backend_t *be)
{
    bg_cuda_state_t *cs = cuda_state(be);
    if (cs) {
        if (cuda_enter(be) != BG_OK)
            bg_log(BG_LOG_WARN, "%s", bg_last_error());
        /* Reverse order of creation (cuda_state_init): the handle, which
         * may still name a stream and its workspace, goes before them. */
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess)
            bg_log(BG_LOG_WARN, "cuda backend: device failed before destroy: %s",
                   cudaGetErrorString(e));
        pthread_mutex_destroy(&cs->cublas_lock);
        cublasStatus_t r = cublasDestroy(cs->cublas);
        if (r != CUBLAS_STATUS_SUCCESS)
            bg_log(BG_LOG_WARN, "cuda backend: cublasDestroy failed: %s", cublasGetStatusString(r));
        cuda_stream_fini(&cs->dflt);
        free(cs);
    }
    free(be);
}

static const bg_backend_ops_t cuda_ops = {
    /* .name = */ "cuda",
    /* .device = */ BG_DEV_CUDA,
    /* .destroy = */ cuda_destroy,
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .copy = */ cuda_copy,
    /* .memset = */ cuda_memset,
    /* .synchronize = */ cuda_synchronize,
    /* .stream_create = */ cuda_stream_create,
    /* .stream_destroy = */ cuda_stream_destroy,
    /* .stream_synchronize = */ cuda_stream_synchronize,
    /* .event_create = */ cuda_event_create,
    /* .event_destroy = */ cuda_event_destroy,
    /* .event_record = */ cuda_event_record,
    /* .stream_wait_event = */ cuda_stream_wait_event,
    /* .event_synchronize = */ cuda_event_synchronize,
    /* .event_elapsed_ms = */ cuda_event_elapsed_ms,
    /* .gemm = */ cuda_gemm,
    /* .event_query = */ cuda_event_query,
    /* .step_update = */ bg_cuda_step_update,
    /* .step_sumsq = */ bg_cuda_step_sumsq,
    /* .step_scale = */ bg_cuda_step_scale,
    /* .step_add = */ bg_cuda_step_add,
    /* .step_cast = */ bg_cuda_step_cast,
};
/* Every entry is given above (backend_impl.h's BG_BACKEND_OPS_ENTRIES
 * check fails the build when bg_backend_ops_t grows; positional tables
 * would otherwise fill a new entry with NULL silently). */

/*
 * Stream-ordered allocations (embedding W's sort scratch) come from the
 * device's default pool; by default it hands memory back to the driver at
 * every synchronisation, which would make each step pay cudaMalloc again.
 */
static bg_status_t cuda_keep_pool(int device)
{
    cudaMemPool_t pool;
    uint64_t keep = UINT64_MAX;
    BG_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    BG_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return BG_OK;
}

static bg_status_t cuda_state_init(bg_cuda_state_t *cs, int index)
{
    bg_status_t st = BG_OK;
    int count = 0;
    cs->device = index;
    BG_CUDA_TRY(cudaGetDeviceCount(&count), err);
    if (index < 0 || index >= count) {
        st = bg_errorf(BG_ERR_INVALID, "cuda backend: device %d requested, %d present", index,
                       count);
        goto err;
    }
    BG_CUDA_TRY(cudaSetDevice(index), err);
    BG_CUDA_TRY(cudaDeviceGetAttribute(&cs->sm_count, cudaDevAttrMultiProcessorCount, index), err);
    if ((st = cuda_keep_pool(index)) != BG_OK)
        goto err;
    /* stream (and workspace), handle, lock; cuda_destroy undoes them in
     * reverse */
    if ((st = cuda_stream_init(&cs->dflt, "brigade-default")) != BG_OK)
        goto err;
    BG_CUBLAS_TRY(cublasCreate(&cs->cublas), err_stream);
    if (pthread_mutex_init(&cs->cublas_lock, NULL) != 0) {
        st = bg_errorf(BG_ERR_INTERNAL, "cuda backend: pthread_mutex_init failed");
        goto err_cublas;
    }
    return BG_OK;
err_cublas:
    cublasDestroy(cs->cublas);
err_stream:
    cuda_stream_fini(&cs->dflt);
err:
    return st;
}

extern "C" bg_status_t bg_backend_cuda_create(int index, bg_backend_t **out)
{
    bg_status_t st;
    bg_backend_t *be = (bg_backend_t *)calloc(1, sizeof(*be));
    bg_cuda_state_t *cs = (bg_cuda_state_t *)calloc(1, sizeof(*cs));
    if (!be || !cs) {
        st = bg_errorf(BG_ERR_NOMEM, "cuda backend: out of memory");
        goto err_free;
    }
    if (!bg_backend_cuda_present()) {
        /* present() recorded why; keep it, with our context in front. */
        st = bg_error_prefix(BG_ERR_UNSUPPORTED, "cuda backend: no usable CUDA device: ");
        goto err_free;
    }
    if ((st = cuda_state_init(cs, index)) != BG_OK)
        goto err_free;
    be->ops = &cuda_ops;
    be->index = index;
    be->impl = cs;
    *out = be;
    return BG_OK;
err_free:
    free(cs);
    free(be);
    return st;
}

/* Records why not (driver missing, no device) for callers that print it. */
extern "C" bool bg_backend_cuda_present(void)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        bg_errorf(BG_ERR_UNSUPPORTED, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        cudaGetLastError();
        return false;
    }
    if (count <= 0) {
        bg_errorf(BG_ERR_UNSUPPORTED, "cudaGetDeviceCount found no device");
        return false;
    }
    return true;
}

extern "C" int bg_backend_cuda_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}
