/*
 * bench/layers/bench_layers.c -- GEMM and layer microbenchmark.
 *
 * Measures the backend's peaks in the same run (a large GEMM: cuBLAS bf16
 * and f32 8192^3 on CUDA, OpenBLAS SGEMM 2048^3 on the CPU; and a large
 * device-to-device copy for memory bandwidth), then times F, B and W of
 * every layer kind at GPT-2-small sizes (C = 768, 12 heads, T = 1024,
 * B*T = 8192, vocab 50257; the CPU uses B*T = 512 so it ends in seconds;
 * the Llama kinds at the same width: rmsnorm 768, swiglu 2 x 2048;
 * --kinds picks a subset)
 * and prints time, achieved TFLOP/s (from each kind's cost FLOPs) and GB/s
 * (estimated bytes touched), each as a fraction of the measured peak.
 * Warm-up before timing; events on the backend's stream (CUDA events on a
 * GPU, host timestamps on the CPU); the best of several timed batches is
 * reported (robust to other load); inputs are random, never zeros.
 * --attention-seqs T1,T2,... instead compares the memory-efficient
 * attention kind with the materialising baseline (attention_naive.c, CPU
 * only) at those sequence lengths: F, B, W times and scratch bytes (saved +
 * workspace, the memory that grows with T), with naive/flash ratios.
 * A benchmark, not a test: it prints numbers and never passes or fails on
 * time. Must not hard-code any peak.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/backend.h"
#include "layers/layer.h"

/* ---- options ---- */

typedef struct bench_opts {
    bg_device_t dev;
    bg_dtype_t dt;
    int64_t B, T; /* rows = B * T */
    int iters;
    int64_t gemm_n;
    const char *kinds; /* comma-separated kind names to time; NULL: all */
    const char *att_seqs; /* --attention-seqs: comma-separated T list, or NULL */
} bench_opts_t;

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: bench_layers [--device cpu|cuda] [--dtype f32|bf16] [--batch B]\n"
               "                    [--seq T] [--iters N] [--gemm N] [--kinds K1,K2,...]\n"
               "                    [--attention-seqs T1,T2,...]\n"
               "defaults: cuda when a GPU is present (bf16, B=8, T=1024, 20 iters, GEMM 8192),\n"
               "          else cpu (f32, B=1, T=512, 3 iters, GEMM 2048)\n");
}

/* Parse argv; exits 2 on bad usage (this is a program, not library code). */
static bench_opts_t bench_parse(int argc, char **argv)
{
    bench_opts_t o = {0};
    const char *dev = NULL, *dt = NULL;
    int64_t B = 0, T = 0, gemm = 0;
    int iters = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "bench_layers: %s needs a value\n", a);
            bench_usage(stderr);
            exit(2);
        }
        if (!strcmp(a, "--device"))
            dev = v;
        else if (!strcmp(a, "--dtype"))
            dt = v;
        else if (!strcmp(a, "--batch"))
            B = atoll(v);
        else if (!strcmp(a, "--seq"))
            T = atoll(v);
        else if (!strcmp(a, "--iters"))
            iters = atoi(v);
        else if (!strcmp(a, "--gemm"))
            gemm = atoll(v);
        else if (!strcmp(a, "--kinds"))
            o.kinds = v;
        else if (!strcmp(a, "--attention-seqs"))
            o.att_seqs = v;
        else {
            fprintf(stderr, "bench_layers: unknown option %s\n", a);
            bench_usage(stderr);
            exit(2);
        }
        i++;
    }
    if (dev && strcmp(dev, "cpu") && strcmp(dev, "cuda")) {
        fprintf(stderr, "bench_layers: --device must be cpu or cuda, got %s\n", dev);
        exit(2);
    }
    if (dt && strcmp(dt, "f32") && strcmp(dt, "bf16")) {
        fprintf(stderr, "bench_layers: --dtype must be f32 or bf16, got %s\n", dt);
        exit(2);
    }
    o.dev = dev ? (!strcmp(dev, "cuda") ? BG_DEV_CUDA : BG_DEV_CPU)
                : (bg_backend_available(BG_DEV_CUDA) ? BG_DEV_CUDA : BG_DEV_CPU);
    bool gpu = o.dev == BG_DEV_CUDA;
    o.dt = dt ? (!strcmp(dt, "bf16") ? BG_BF16 : BG_F32) : (gpu ? BG_BF16 : BG_F32);
    o.B = B > 0 ? B : gpu ? 8 : 1;
    o.T = T > 0 ? T : gpu ? 1024 : 512;
    o.iters = iters > 0 ? iters : gpu ? 20 : 3;
    o.gemm_n = gemm > 0 ? gemm : gpu ? 8192 : 2048;
    if (o.dev == BG_DEV_CPU && o.dt == BG_BF16) {
        fprintf(stderr, "bench_layers: the cpu backend computes in f32 only\n");
        exit(2);
    }
    if (o.T > 1024 && !o.att_seqs) {
        fprintf(stderr, "bench_layers: --seq at most 1024 (GPT-2's positions)\n");
        exit(2);
    }
    return o;
}

/* ---- context ---- */

typedef struct bench {
    bench_opts_t o;
    bg_backend_t *be;
    bg_stream_t *stream;
    bg_event_t *e0, *e1;
    uint64_t rng;
    double gemm_peak; /* FLOP/s of the compute dtype's large GEMM */
    double bw_peak;   /* bytes/s of a large device copy (read + write) */
} bench_t;

/* Library calls fail with a status and a message; the bench stops there. */
static void bench_check(bg_status_t st, const char *what)
{
    if (st == BG_OK)
        return;
    fprintf(stderr, "bench_layers: %s: %s: %s\n", what, bg_status_str(st), bg_last_error());
    exit(1);
}

static uint64_t bench_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static float bench_uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((bench_next(s) >> 40) * (1.0 / 16777216.0));
}

/* A device buffer of n random values in [lo, hi) stored as `dt`. */
static void *bench_random(bench_t *b, int64_t n, bg_dtype_t dt, float lo, float hi)
{
    size_t es = bg_dtype_size(dt), bytes = (size_t)n * es;
    void *h = malloc(bytes ? bytes : 1), *d = NULL;
    if (!h)
        bench_check(BG_ERR_NOMEM, "host buffer");
    for (int64_t i = 0; i < n; i++) {
        float v = bench_uniform(&b->rng, lo, hi);
        if (dt == BG_BF16)
            ((uint16_t *)h)[i] = bg_f32_to_bf16(v);
        else
            ((float *)h)[i] = v;
    }
    bench_check(bg_backend_alloc(b->be, bytes, &d), "alloc");
    bench_check(bg_backend_copy(b->be, d, h, bytes, BG_COPY_H2D, b->stream), "upload");
    bench_check(bg_stream_synchronize(b->be, b->stream), "sync");
    free(h);
    return d;
}

/* A device buffer of n ids in [0, range). */
static void *bench_ids(bench_t *b, int64_t n, int64_t range)
{
    int32_t *h = malloc((size_t)n * 4);
    void *d = NULL;
    if (!h)
        bench_check(BG_ERR_NOMEM, "host buffer");
    for (int64_t i = 0; i < n; i++)
        h[i] = (int32_t)(bench_next(&b->rng) % (uint64_t)range);
    bench_check(bg_backend_alloc(b->be, (size_t)n * 4, &d), "alloc");
    bench_check(bg_backend_copy(b->be, d, h, (size_t)n * 4, BG_COPY_H2D, b->stream), "upload");
    bench_check(bg_stream_synchronize(b->be, b->stream), "sync");
    free(h);
    return d;
}

/* ---- timing ---- */

typedef bg_status_t (*bench_fn_t)(void *arg);

/*
 * Milliseconds per call of fn: after one warm-up call, `reps` batches of
 * `per` back-to-back calls, each batch timed by two events; the best batch
 * mean counts (other processes sharing the machine only ever slow a batch
 * down, so the minimum is the closest to the undisturbed time).
 */
static double bench_time(bench_t *b, bench_fn_t fn, void *arg, int reps, int per, const char *what)
{
    double best = INFINITY;
    bench_check(fn(arg), what); /* warm-up: cuBLAS heuristics, caches, pools */
    bench_check(bg_stream_synchronize(b->be, b->stream), what);
    for (int r = 0; r < reps; r++) {
        bench_check(bg_event_record(b->be, b->e0, b->stream), "event");
        for (int i = 0; i < per; i++)
            bench_check(fn(arg), what);
        bench_check(bg_event_record(b->be, b->e1, b->stream), "event");
        bench_check(bg_event_synchronize(b->be, b->e1), "event sync");
        float ms = 0.0f;
        bench_check(bg_event_elapsed_ms(b->be, b->e0, b->e1, &ms), "elapsed");
        if ((double)ms / per < best)
            best = (double)ms / per;
    }
    return best;
}

/* The bench's repetition scheme: on a GPU 5 batches of `iters` calls (one
 * launch queue, no host sync inside a batch); on the CPU `iters` single calls. */
static double bench_run(bench_t *b, bench_fn_t fn, void *arg, int iters, const char *what)
{
    if (b->o.dev == BG_DEV_CUDA)
        return bench_time(b, fn, arg, 5, iters, what);
    return bench_time(b, fn, arg, iters, 1, what);
}

/* ---- peaks ---- */

typedef struct gemm_run {
    bench_t *b;
    bg_gemm_args_t g;
} gemm_run_t;

static bg_status_t gemm_once(void *arg)
{
    gemm_run_t *r = arg;
    return bg_gemm(r->b->be, r->b->stream, &r->g);
}

/* FLOP/s of an n^3 GEMM with operands and result in dt. */
static double bench_gemm_peak(bench_t *b, int64_t n, bg_dtype_t dt, int iters)
{
    gemm_run_t r = {b, {0}};
    r.g.m = r.g.n = r.g.k = n;
    r.g.alpha = 1.0f;
    r.g.beta = 0.0f;
    r.g.lda = r.g.ldb = r.g.ldc = n;
    r.g.ab = r.g.c_dtype = dt;
    r.g.a = bench_random(b, n * n, dt, -1.0f, 1.0f);
    r.g.b = bench_random(b, n * n, dt, -1.0f, 1.0f);
    bench_check(bg_backend_alloc(b->be, (size_t)(n * n) * bg_dtype_size(dt), &r.g.c), "alloc");
    double ms = bench_run(b, gemm_once, &r, iters, "gemm");
    bg_backend_free(b->be, (void *)r.g.a);
    bg_backend_free(b->be, (void *)r.g.b);
    bg_backend_free(b->be, r.g.c);
    double flops = 2.0 * (double)n * n * n / (ms * 1e-3);
    printf("  GEMM %-4s %lld^3            %9.3f ms  %8.2f TFLOP/s\n", bg_dtype_name(dt),
           (long long)n, ms, flops * 1e-12);
    return flops;
}

typedef struct copy_run {
    bench_t *b;
    void *dst, *src;
    size_t bytes;
} copy_run_t;

static bg_status_t copy_once(void *arg)
{
    copy_run_t *r = arg;
    return bg_backend_copy(r->b->be, r->dst, r->src, r->bytes, BG_COPY_D2D, r->b->stream);
}

/* Bytes/s (read + write) of a large device-to-device copy. */
static double bench_copy_peak(bench_t *b, size_t bytes, int iters)
{
    copy_run_t r = {b, NULL, NULL, bytes};
    r.src = bench_random(b, (int64_t)(bytes / 4), BG_F32, -1.0f, 1.0f);
    bench_check(bg_backend_alloc(b->be, bytes, &r.dst), "alloc");
    double ms = bench_run(b, copy_once, &r, iters, "copy");
    bg_backend_free(b->be, r.src);
    bg_backend_free(b->be, r.dst);
    double bw = 2.0 * (double)bytes / (ms * 1e-3);
    printf("  copy D2D %4zu MiB           %9.3f ms  %8.1f GB/s (read + write)\n", bytes >> 20, ms,
           bw * 1e-9);
    return bw;
}

/* ---- layers ---- */

typedef struct layer_run {
    bench_t *b;
    bg_layer_spec_t spec;
    bg_layer_cost_t cost;
    int np;
    bg_param_desc_t pd[BG_MAX_PARAMS];
    bg_tensor_t in[BG_MAX_INPUTS], din[BG_MAX_INPUTS], par[BG_MAX_PARAMS], grad[BG_MAX_PARAMS];
    bg_tensor_t out, dout, saved, ws;
    bg_layer_call_t call;
    int64_t param_elems, in_float_bytes, din_bytes;
} layer_run_t;

static bg_status_t layer_f(void *arg)
{
    return bg_layer_forward(&((layer_run_t *)arg)->call);
}
static bg_status_t layer_b(void *arg)
{
    return bg_layer_backward_input(&((layer_run_t *)arg)->call);
}
static bg_status_t layer_w(void *arg)
{
    return bg_layer_backward_weight(&((layer_run_t *)arg)->call);
}

static void layer_shape(bg_shape_t *s, bg_dtype_t dt, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    memset(s, 0, sizeof(*s));
    s->dtype = dt;
    s->ndim = ndim;
    s->d[0] = d0, s->d[1] = d1, s->d[2] = d2;
}

/* Allocate and fill every tensor of a call for spec (inputs, params, out,
 * dout, din, grads, scratch), all random where they are read. */
static void layer_setup(bench_t *b, layer_run_t *L, int64_t id_range)
{
    bg_errbuf_t err = {{0}};
    bg_dtype_t dt = b->o.dt;
    bg_device_t dev = bg_backend_device(b->be);
    if (bg_layer_infer(&L->spec, &err) != BG_OK) {
        fprintf(stderr, "bench_layers: %s: %s\n", L->spec.name, err.msg);
        exit(1);
    }
    L->b = b;
    bg_layer_cost(&L->spec, dt, &L->cost);
    L->np = L->spec.kind->params ? L->spec.kind->params(&L->spec, L->pd) : 0;
    bg_layer_call_t *c = &L->call;
    memset(c, 0, sizeof(*c));
    c->spec = &L->spec, c->be = b->be, c->stream = b->stream, c->dtype = dt;
    for (int i = 0; i < L->spec.n_in; i++) {
        bg_shape_t s = L->spec.in[i];
        int64_t n = bg_shape_numel(&s);
        if (s.dtype == BG_I32) {
            L->in[i] = bg_tensor_from_shape(bench_ids(b, n, id_range), dev, &s);
        } else {
            s.dtype = dt;
            L->in[i] = bg_tensor_from_shape(bench_random(b, n, dt, -1.0f, 1.0f), dev, &s);
            void *d = NULL;
            bench_check(bg_backend_alloc(b->be, (size_t)n * bg_dtype_size(dt), &d), "alloc");
            L->din[i] = bg_tensor_from_shape(d, dev, &s);
            c->din[i] = &L->din[i];
            L->in_float_bytes += (int64_t)bg_tensor_nbytes(&L->in[i]);
            L->din_bytes += (int64_t)bg_tensor_nbytes(&L->din[i]);
        }
        c->in[i] = &L->in[i];
    }
    bg_shape_t os = L->spec.out;
    os.dtype = L->spec.kind->out_f32 ? BG_F32 : dt;
    int64_t no = bg_shape_numel(&os);
    void *d = NULL;
    bench_check(bg_backend_alloc(b->be, (size_t)no * bg_dtype_size(os.dtype), &d), "alloc");
    L->out = bg_tensor_from_shape(d, dev, &os);
    L->dout = bg_tensor_from_shape(bench_random(b, no, os.dtype, -1.0f, 1.0f), dev, &os);
    c->out = &L->out, c->dout = &L->dout;
    for (int j = 0; j < L->np; j++) {
        bg_shape_t ps = L->pd[j].shape;
        int64_t n = bg_shape_numel(&ps);
        L->param_elems += n;
        ps.dtype = dt;
        L->par[j] = bg_tensor_from_shape(bench_random(b, n, dt, -0.05f, 0.05f), dev, &ps);
        ps.dtype = BG_F32;
        L->grad[j] = bg_tensor_from_shape(bench_random(b, n, BG_F32, -0.01f, 0.01f), dev, &ps);
        c->params[j] = &L->par[j], c->grads[j] = &L->grad[j];
    }
    int64_t ns = (L->cost.saved_bytes + 3) / 4, nw = (L->cost.workspace_bytes + 3) / 4;
    d = NULL;
    bench_check(bg_backend_alloc(b->be, (size_t)ns * 4, &d), "alloc");
    L->saved = bg_tensor_make(d, BG_F32, dev, 1, &ns);
    d = NULL;
    bench_check(bg_backend_alloc(b->be, (size_t)nw * 4, &d), "alloc");
    L->ws = bg_tensor_make(d, BG_F32, dev, 1, &nw);
    c->saved = L->cost.saved_bytes ? &L->saved : NULL;
    c->workspace = L->cost.workspace_bytes ? &L->ws : NULL;
}

static void layer_free(layer_run_t *L)
{
    bg_backend_t *be = L->b->be;
    for (int i = 0; i < L->spec.n_in; i++) {
        bg_backend_free(be, L->in[i].data);
        bg_backend_free(be, L->din[i].data);
    }
    for (int j = 0; j < L->np; j++) {
        bg_backend_free(be, L->par[j].data);
        bg_backend_free(be, L->grad[j].data);
    }
    bg_backend_free(be, L->out.data);
    bg_backend_free(be, L->dout.data);
    bg_backend_free(be, L->saved.data);
    bg_backend_free(be, L->ws.data);
}

/*
 * Bytes a phase must at least move (each tensor read or written once):
 * F reads inputs + params, writes out + saved; B reads dout, inputs,
 * params, saved, writes din; W reads dout, inputs, saved and updates the
 * f32 gradients (read + write). Scratch traffic inside a phase (attention
 * scores) counts once; it is an estimate, labelled as such.
 */
static double layer_bytes(const layer_run_t *L, int phase)
{
    double es = (double)bg_dtype_size(L->b->o.dt);
    double pe = (double)L->param_elems;
    /* A gather (embedding) touches only the rows its ids pick, at most
     * one table row and one position row per output row. */
    if (!strcmp(L->spec.kind->name, "embedding"))
        pe = fmin(pe, 2.0 * (double)bg_shape_numel(&L->spec.out));
    double in = (double)L->cost.input_bytes, par = pe * es;
    double out = (double)L->cost.out_bytes, saved = (double)L->cost.saved_bytes;
    double ws = (double)L->cost.workspace_bytes;
    if (phase == 0)
        return in + par + out + saved;
    if (phase == 1)
        return out + in + par + saved + ws + (double)L->din_bytes;
    return out + in + saved + 8.0 * pe;
}

static void layer_report(bench_t *b, const char *label, const char *phase, double ms, double flops,
                         double bytes)
{
    double tf = flops / (ms * 1e-3), bw = bytes / (ms * 1e-3);
    printf("  %-22s %-2s %10.3f %9.3f %7.1f%% %9.1f %7.1f%%\n", label, phase, ms, tf * 1e-12,
           100.0 * tf / b->gemm_peak, bw * 1e-9, 100.0 * bw / b->bw_peak);
}

/* Whether --kinds selects `kind` (always, without --kinds). */
static bool bench_wants(const bench_t *b, const char *kind)
{
    if (!b->o.kinds)
        return true;
    size_t n = strlen(kind);
    for (const char *p = b->o.kinds; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, kind, n) && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* Milliseconds of F, B, W (those the kind has; -1 otherwise) of a set-up
 * layer; B before W (attention's W reads what B saved). */
static void layer_times(bench_t *b, layer_run_t *L, const char *label, double ms[3])
{
    static const char *const phase[3] = {"forward", "backward-input", "backward-weight"};
    bench_fn_t fn[3] = {layer_f, L->spec.kind->backward_input ? layer_b : NULL,
                        L->spec.kind->backward_weight ? layer_w : NULL};
    for (int p = 0; p < 3; p++) {
        char what[160];
        snprintf(what, sizeof(what), "%s %s", label, phase[p]);
        ms[p] = fn[p] ? bench_run(b, fn[p], L, b->o.iters, what) : -1.0;
    }
}

/* Time and report F, B, W of one layer. */
static void layer_bench(bench_t *b, layer_run_t *L, const char *label, int64_t id_range)
{
    double ms[3];
    if (!bench_wants(b, L->spec.kind->name))
        return;
    layer_setup(b, L, id_range);
    layer_times(b, L, label, ms);
    const double flops[3] = {L->cost.fwd_flops, L->cost.bwd_input_flops, L->cost.bwd_weight_flops};
    for (int p = 0; p < 3; p++)
        if (ms[p] >= 0)
            layer_report(b, label, (const char *[]){"F", "B", "W"}[p], ms[p], flops[p],
                         layer_bytes(L, p));
    layer_free(L);
}

/* A fresh spec of `kind` named `name`. */
static void layer_init(layer_run_t *L, const char *kind, const char *name)
{
    memset(L, 0, sizeof(*L));
    L->spec.kind = bg_layer_kind_find(kind);
    if (!L->spec.kind) {
        fprintf(stderr, "bench_layers: kind %s is not registered\n", kind);
        exit(1);
    }
    snprintf(L->spec.name, sizeof(L->spec.name), "%s", name);
}

/* The GPT-2-small layers: every kind, at the sizes a GPT-2 block uses. */
static void bench_layers_all(bench_t *b)
{
    const int64_t B = b->o.B, T = b->o.T, C = 768, H = 12, V = 50257, FF = 4 * C;
    static layer_run_t L; /* large struct: keep it off the stack */

    layer_init(&L, "embedding", "wte+wpe");
    layer_shape(&L.spec.in[0], BG_I32, 2, B, T, 0);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "vocab", V), "attrs");
    bench_check(bg_attrs_set_int(&L.spec.attrs, "dim", C), "attrs");
    bench_check(bg_attrs_set_int(&L.spec.attrs, "positions", 1024), "attrs");
    layer_bench(b, &L, "embedding 50257x768", V);

    layer_init(&L, "layernorm", "ln");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.n_in = 1;
    layer_bench(b, &L, "layernorm 768", 0);

    layer_init(&L, "rmsnorm", "rms");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.n_in = 1;
    layer_bench(b, &L, "rmsnorm 768", 0);

    layer_init(&L, "attention", "attn");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "heads", H), "attrs");
    layer_bench(b, &L, "attention 768/12h", 0);

    layer_init(&L, "add", "residual");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.in[1] = L.spec.in[0];
    L.spec.n_in = 2;
    layer_bench(b, &L, "add 768", 0);

    layer_init(&L, "linear", "fc");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "out", FF), "attrs");
    layer_bench(b, &L, "linear 768->3072", 0);

    layer_init(&L, "gelu", "gelu");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, FF);
    L.spec.n_in = 1;
    layer_bench(b, &L, "gelu 3072", 0);

    layer_init(&L, "relu", "relu");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, FF);
    L.spec.n_in = 1;
    layer_bench(b, &L, "relu 3072", 0);

    /* Llama's feed-forward at this width: hidden 8/3 C = 2048, gate | up */
    layer_init(&L, "swiglu", "swiglu");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, 2 * 2048);
    L.spec.n_in = 1;
    layer_bench(b, &L, "swiglu 2x2048", 0);

    layer_init(&L, "linear", "proj");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, FF);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "out", C), "attrs");
    layer_bench(b, &L, "linear 3072->768", 0);

    layer_init(&L, "linear", "lm_head");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, C);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "out", V), "attrs");
    bench_check(bg_attrs_set_bool(&L.spec.attrs, "bias", false), "attrs");
    layer_bench(b, &L, "linear 768->50257", 0);

    layer_init(&L, "cross_entropy", "loss");
    layer_shape(&L.spec.in[0], BG_F32, 3, B, T, V);
    layer_shape(&L.spec.in[1], BG_I32, 2, B, T, 0);
    L.spec.n_in = 2;
    layer_bench(b, &L, "cross_entropy 50257", V);
}

/* ---- attention: memory-efficient kind vs the materialising baseline ---- */

extern const bg_layer_kind_t bench_kind_attention_naive; /* attention_naive.c */

/* One GPT-2-sized attention layer (C 768, 12 heads, causal) of `kind` at
 * sequence length T: F, B, W milliseconds and scratch bytes. */
static void att_measure(bench_t *b, const bg_layer_kind_t *kind, int64_t T, double ms[3],
                        double *scratch)
{
    static layer_run_t L; /* large struct: keep it off the stack */
    layer_init(&L, "attention", kind->name);
    L.spec.kind = kind;
    layer_shape(&L.spec.in[0], BG_F32, 3, b->o.B, T, 768);
    L.spec.n_in = 1;
    bench_check(bg_attrs_set_int(&L.spec.attrs, "heads", 12), "attrs");
    layer_setup(b, &L, 0);
    layer_times(b, &L, kind->name, ms);
    *scratch = (double)(L.cost.saved_bytes + L.cost.workspace_bytes);
    layer_free(&L);
}

static void bench_attention(bench_t *b)
{
    bool naive = b->o.dev == BG_DEV_CPU; /* the baseline has no CUDA half */
    printf("attention C=768, 12 heads, causal, B=%lld, %s; ms per call, scratch = saved + "
           "workspace bytes\n%6s %-8s %10s %10s %10s %10s %12s\n",
           (long long)b->o.B, bg_dtype_name(b->o.dt), "T", "kernel", "F", "B", "W", "F+B+W",
           "scratch MiB");
    for (const char *p = b->o.att_seqs; p && *p;) {
        int64_t T = strtoll(p, (char **)&p, 10);
        if (T <= 0) {
            fprintf(stderr, "bench_layers: --attention-seqs wants positive integers\n");
            exit(2);
        }
        p += *p == ',';
        double ms[2][3], sc[2], tot[2];
        for (int k = 0; k < 1 + naive; k++) {
            att_measure(b, k ? &bench_kind_attention_naive : bg_layer_kind_find("attention"), T,
                        ms[k], &sc[k]);
            tot[k] = ms[k][0] + ms[k][1] + ms[k][2];
            printf("%6lld %-8s %10.2f %10.2f %10.2f %10.2f %12.1f\n", (long long)T,
                   k ? "naive" : "flash", ms[k][0], ms[k][1], ms[k][2], tot[k], sc[k] / 1048576.0);
        }
        if (naive)
            printf("%6lld naive/flash: time %.2fx, scratch %.1fx\n", (long long)T,
                   tot[1] / tot[0], sc[1] / sc[0]);
        else
            printf("%6lld (no naive baseline on %s)\n", (long long)T, bg_backend_name(b->be));
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    bench_t b = {0};
    b.o = bench_parse(argc, argv);
    b.rng = 0x9e3779b97f4a7c15ull;
    bench_check(bg_backend_create(b.o.dev, 0, &b.be), "backend");
    bench_check(bg_stream_create(b.be, "bench", &b.stream), "stream");
    bench_check(bg_event_create(b.be, &b.e0), "event");
    bench_check(bg_event_create(b.be, &b.e1), "event");
    bool gpu = b.o.dev == BG_DEV_CUDA;
    if (b.o.att_seqs) {
        bench_attention(&b);
        bg_event_destroy(b.be, b.e0);
        bg_event_destroy(b.be, b.e1);
        bg_stream_destroy(b.be, b.stream);
        bg_backend_destroy(b.be);
        return 0;
    }

    printf("bench_layers: device %s, compute %s, B=%lld T=%lld (B*T = %lld), C=768, 12 heads, "
           "vocab 50257\ntiming: 1 warm-up, then the best of %s%d%s\n",
           bg_backend_name(b.be), bg_dtype_name(b.o.dt), (long long)b.o.B, (long long)b.o.T,
           (long long)(b.o.B * b.o.T), gpu ? "5 batches of " : "", b.o.iters,
           gpu ? " back-to-back calls (CUDA events)" : " single calls");
    if (!gpu && b.o.B * b.o.T < 8192)
        printf("note: the CPU runs B*T = %lld instead of GPT-2's 8192 so that it ends in "
               "seconds; ratios to the peak stay comparable\n",
               (long long)(b.o.B * b.o.T));
    if (!gpu)
        printf("note: the cpu backend runs OpenBLAS with BRIGADE_BLAS_THREADS=%s thread(s) "
               "(default 1: layouts must not change bits)\n",
               getenv("BRIGADE_BLAS_THREADS") ? getenv("BRIGADE_BLAS_THREADS") : "1");
    printf("peaks measured now:\n");
    int64_t n = b.o.gemm_n;
    if (gpu) {
        double bf = bench_gemm_peak(&b, n, BG_BF16, b.o.iters);
        double f32 = bench_gemm_peak(&b, n, BG_F32, b.o.iters > 5 ? 5 : b.o.iters);
        b.gemm_peak = b.o.dt == BG_BF16 ? bf : f32;
    } else {
        b.gemm_peak = bench_gemm_peak(&b, n, BG_F32, b.o.iters);
    }
    b.bw_peak = bench_copy_peak(&b, gpu ? (size_t)1 << 30 : (size_t)256 << 20, b.o.iters);

    printf("\n  %-22s %-2s %10s %9s %8s %9s %8s\n", "layer", "", "ms", "TFLOP/s", "%gemm", "GB/s~",
           "%copy");
    bench_layers_all(&b);
    printf("\n%%gemm: achieved FLOP/s (kind cost FLOPs) / measured %s GEMM peak;"
           " GB/s~: estimated minimum bytes moved / time, %%copy of the measured copy rate.\n",
           bg_dtype_name(b.o.dt));
    if (!gpu)
        printf("On the CPU small working sets stay in cache, so %%copy (a DRAM-sized copy) can "
               "exceed 100%%.\n");

    bg_event_destroy(b.be, b.e0);
    bg_event_destroy(b.be, b.e1);
    bg_stream_destroy(b.be, b.stream);
    bg_backend_destroy(b.be);
    return 0;
}
