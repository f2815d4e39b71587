/*
 * layers/backend_cpu.c -- the CPU reference backend: malloc'd memory and
 * OpenBLAS SGEMM. Everything is synchronous; streams and events use the
 * generic host fallbacks of backend.c. GEMM is f32 only: bf16/fp16 runs
 * store activations in the low-precision type and compute each layer in f32
 * (layers/cpu_mixed.c); the step's ops are backend_cpu_step.c's.
 */
#include "layers/backend_impl.h"

#include <cblas.h>
#include <stdlib.h>

static void cpu_destroy(bg_backend_t *be)
{
    free(be);
}

static bg_status_t cpu_alloc(bg_backend_t *be, size_t bytes, void **out)
{
    (void)be;
    void *p = NULL;
    /* 64-byte alignment keeps SIMD loads and OpenBLAS happy. */
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0)
        return bg_errorf(BG_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    *out = p;
    return BG_OK;
}

static void cpu_free(bg_backend_t *be, void *p)
{
    (void)be;
    free(p);
}

static bg_status_t cpu_gemm(bg_backend_t *be, bg_stream_t *s, const bg_gemm_args_t *g)
{
    (void)be, (void)s;
    if (g->ab != BG_F32 || g->c_dtype != BG_F32)
        return bg_errorf(BG_ERR_UNSUPPORTED, "cpu backend: gemm supports f32 only (got %s/%s)",
                         bg_dtype_name(g->ab), bg_dtype_name(g->c_dtype));
    int64_t batch = g->batch > 1 ? g->batch : 1;
    for (int64_t i = 0; i < batch; i++) {
        const float *a = (const float *)g->a + i * g->sa;
        const float *b = (const float *)g->b + i * g->sb;
        float *c = (float *)g->c + i * g->sc;
        if (g->k == 0) {
            /* BLAS leaves C untouched for k == 0 only when beta == 1. */
            for (int64_t r = 0; r < g->m; r++)
                for (int64_t j = 0; j < g->n; j++)
                    c[r * g->ldc + j] = g->beta == 0.0f ? 0.0f : g->beta * c[r * g->ldc + j];
            continue;
        }
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, (blasint)g->m, (blasint)g->n,
                    (blasint)g->k, g->alpha, a, (blasint)g->lda, b, (blasint)g->ldb, g->beta, c,
                    (blasint)g->ldc);
    }
    return BG_OK;
}

static const bg_backend_ops_t cpu_ops = {
    .name = "cpu",
    .device = BG_DEV_CPU,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .gemm = cpu_gemm,
    .step_update = bg_cpu_step_update,
    .step_sumsq = bg_cpu_step_sumsq,
    .step_scale = bg_cpu_step_scale,
    .step_add = bg_cpu_step_add,
    .step_cast = bg_cpu_step_cast,
};

bg_status_t bg_backend_cpu_create(bg_backend_t **out)
{
    /* OpenBLAS may block a GEMM differently for different thread counts, and
     * layouts must not change a single bit (design.md): the count is fixed,
     * 1 unless BRIGADE_BLAS_THREADS says otherwise for every rank alike. */
    const char *e = getenv("BRIGADE_BLAS_THREADS");
    int threads = e ? atoi(e) : 1;
    openblas_set_num_threads(threads > 0 ? threads : 1);
    bg_backend_t *be = calloc(1, sizeof(*be));
    if (!be)
        return bg_errorf(BG_ERR_NOMEM, "cpu backend: out of memory");
    be->ops = &cpu_ops;
    *out = be;
    return BG_OK;
}
