/*
 * tools/cmd_profile.c -- `brigade profile MODEL`: time every layer's
 * forward, backward-input and backward-weight on the chosen backend at one
 * micro-batch size and write the JSON profile `brigade plan --profile`
 * prices stages with. Inputs are random (never zeros), ids in range.
 * Decides exit codes: 0 ok, 1 runtime failure, 2 bad usage or model.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/rng.h"
#include "layers/backend.h"
#include "layers/graph.h"
#include "partition/profile.h"
#include "tools/commands.h"
#include "tools/output.h"

/* A device tensor of `s` (compute dtype for floats) filled from the host. */
static bg_status_t make_tensor(bg_backend_t *be, const bg_shape_t *s, bg_dtype_t dt, int64_t id_max,
                               uint64_t seed, bg_tensor_t *out, void **mem)
{
    bg_shape_t d = *s;
    if (d.dtype == BG_F32)
        d.dtype = dt;
    int64_t n = bg_shape_numel(&d);
    size_t bytes = (size_t)n * bg_dtype_size(d.dtype);
    void *host = malloc(bytes + 4);
    if (!host)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    bg_rng_key_t key = bg_rng_key(seed, "profile");
    for (int64_t i = 0; i < n; i++) {
        float u = bg_rng_uniform(key, (uint64_t)i);
        if (d.dtype == BG_I32)
            ((int32_t *)host)[i] = (int32_t)(u * (float)id_max) % (int32_t)id_max;
        else if (d.dtype == BG_BF16)
            ((uint16_t *)host)[i] = bg_f32_to_bf16(u - 0.5f);
        else if (d.dtype == BG_F16)
            ((uint16_t *)host)[i] = bg_f32_to_f16(u - 0.5f);
        else
            ((float *)host)[i] = u - 0.5f;
    }
    bg_status_t st = bg_backend_alloc(be, bytes, mem);
    if (st == BG_OK)
        st = bg_backend_copy(be, *mem, host, bytes, BG_COPY_H2D, NULL);
    if (st == BG_OK)
        st = bg_backend_synchronize(be);
    free(host);
    if (st == BG_OK)
        *out = bg_tensor_from_shape(*mem, bg_backend_device(be), &d);
    return st;
}

/* Largest id a layer's i32 input may hold: vocab for embeddings, classes for losses. */
static int64_t id_bound(const bg_graph_layer_t *gl)
{
    if (!strcmp(gl->spec.kind->name, "embedding"))
        return bg_attrs_int(&gl->spec.attrs, "vocab", 1);
    const bg_shape_t *lg = &gl->spec.in[0];
    return lg->d[lg->ndim - 1];
}

/* The tensors of one layer call: device memory in mem[] (*nm entries). */
typedef struct layer_bufs {
    void *mem[4 * BG_MAX_INPUTS + 3 * BG_MAX_PARAMS + 4];
    int nm;
    bg_tensor_t in[BG_MAX_INPUTS], din[BG_MAX_INPUTS], par[BG_MAX_PARAMS], gr[BG_MAX_PARAMS], o,
        dout, saved, ws;
} layer_bufs_t;

/* Fill c with random tensors of gl's shapes from b; the caller frees b->mem
 * whatever this returns. */
static bg_status_t make_call(bg_backend_t *be, bg_dtype_t dt, const bg_graph_layer_t *gl,
                             layer_bufs_t *b, bg_layer_call_t *c)
{
    bg_status_t st = BG_OK;
    for (int i = 0; st == BG_OK && i < gl->spec.n_in; i++) {
        st = make_tensor(be, &gl->spec.in[i], dt, id_bound(gl), 1 + (uint64_t)i, &b->in[i],
                         &b->mem[b->nm++]);
        c->in[i] = &b->in[i];
        if (st == BG_OK && gl->spec.in[i].dtype == BG_F32) {
            st = make_tensor(be, &gl->spec.in[i], dt, 1, 11 + (uint64_t)i, &b->din[i],
                             &b->mem[b->nm++]);
            c->din[i] = &b->din[i];
        }
    }
    bg_shape_t os = gl->spec.out;
    bg_dtype_t odt = gl->spec.kind->out_f32 ? BG_F32 : dt;
    if (st == BG_OK)
        st = make_tensor(be, &os, odt, 1, 21, &b->o, &b->mem[b->nm++]);
    if (st == BG_OK)
        st = make_tensor(be, &os, odt, 1, 22, &b->dout, &b->mem[b->nm++]);
    c->out = &b->o;
    c->dout = &b->dout;
    for (int j = 0; st == BG_OK && j < gl->n_params; j++) {
        st = make_tensor(be, &gl->slot[j].shape, dt, 1, 31 + (uint64_t)j, &b->par[j],
                         &b->mem[b->nm++]);
        if (st == BG_OK)
            st = make_tensor(be, &gl->slot[j].shape, BG_F32, 1, 41 + (uint64_t)j, &b->gr[j],
                             &b->mem[b->nm++]);
        c->params[j] = &b->par[j];
        c->grads[j] = &b->gr[j];
    }
    bg_layer_cost_t cost;
    bg_layer_cost(&gl->spec, dt, &cost);
    bg_shape_t raw = {BG_I32, 1, {0}};
    if (st == BG_OK && cost.saved_bytes) {
        raw.d[0] = (cost.saved_bytes + 3) / 4;
        st = make_tensor(be, &raw, dt, 1, 51, &b->saved, &b->mem[b->nm++]);
        b->saved.dtype = BG_I32;
        c->saved = &b->saved;
    }
    if (st == BG_OK && cost.workspace_bytes) {
        raw.d[0] = (cost.workspace_bytes + 3) / 4;
        st = make_tensor(be, &raw, dt, 1, 52, &b->ws, &b->mem[b->nm++]);
        b->ws.dtype = BG_I32;
        c->workspace = &b->ws;
    }
    return st;
}

/* One warm-up round, then `repeat` timed ones of F, B, W in order (attention's
 * W needs its B: the order a schedule uses); round r's seconds into
 * t[3*(r-1) .. 3*(r-1)+2] (t holds 3*repeat). */
static bg_status_t time_fbw(bg_backend_t *be, const bg_layer_call_t *c, int repeat, double *t)
{
    bg_status_t st = BG_OK;
    for (int r = 0; st == BG_OK && r <= repeat; r++) {
        double t0 = bg_now_s();
        st = bg_layer_forward(c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t1 = bg_now_s();
        if (st == BG_OK)
            st = bg_layer_backward_input(c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t2 = bg_now_s();
        if (st == BG_OK)
            st = bg_layer_backward_weight(c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t3 = bg_now_s();
        if (r)
            t[3 * (r - 1)] = t1 - t0, t[3 * (r - 1) + 1] = t2 - t1, t[3 * (r - 1) + 2] = t3 - t2;
    }
    return st;
}

static int cmp_seconds(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of column k of the [repeat][3] rounds in t (reorders scratch):
 * the planner's split must not follow one slow round (docs/partition.md). */
static double median_col(const double *t, int repeat, int k, double *scratch)
{
    for (int r = 0; r < repeat; r++) scratch[r] = t[3 * r + k];
    qsort(scratch, (size_t)repeat, sizeof(double), cmp_seconds);
    return repeat % 2 ? scratch[repeat / 2] : 0.5 * (scratch[repeat / 2 - 1] + scratch[repeat / 2]);
}

static bg_status_t time_layer(bg_backend_t *be, bg_dtype_t dt, const bg_graph_layer_t *gl,
                              int repeat, bg_profile_layer_t *out)
{
    layer_bufs_t *b = calloc(1, sizeof(*b));
    if (!b)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    bg_layer_call_t c;
    memset(&c, 0, sizeof(c));
    c.spec = &gl->spec;
    c.be = be;
    c.dtype = dt;
    double *t = calloc((size_t)repeat * 4, sizeof(double)); /* [repeat][3] + scratch */
    bg_status_t st = t ? make_call(be, dt, gl, b, &c) : bg_errorf(BG_ERR_NOMEM, "out of memory");
    if (st == BG_OK)
        st = time_fbw(be, &c, repeat, t);
    for (int i = 0; i < b->nm; i++)
        bg_backend_free(be, b->mem[i]);
    free(b);
    if (st != BG_OK) {
        free(t);
        return bg_error_prefix(st, "layer %s: ", gl->spec.name);
    }
    snprintf(out->name, sizeof(out->name), "%s", gl->spec.name);
    double *scratch = t + 3 * (size_t)repeat;
    out->f = median_col(t, repeat, 0, scratch);
    out->b = gl->spec.kind->backward_input ? median_col(t, repeat, 1, scratch) : 0;
    out->w = gl->spec.kind->backward_weight ? median_col(t, repeat, 2, scratch) : 0;
    free(t);
    return BG_OK;
}

typedef struct profile_args {
    int batch, repeat;
    const char *device, *dtype, *out;
    bool json;
} profile_args_t;

static const char *const devices[] = {"cpu", "cuda", NULL};
static const char *const dtypes[] = {"f32", "bf16", "fp16", NULL};

/* clang-format off */
static const bg_opt_t profile_opts[] = {
    {.name = "batch", .kind = BG_OPT_INT, .metavar = "N", .help = "micro-batch size to time at",
     .def = "16", .off = offsetof(profile_args_t, batch), .min = 1, .max = 1 << 24},
    {.name = "device", .kind = BG_OPT_CHOICE, .choices = devices, .help = "backend",
     .def = "cpu", .off = offsetof(profile_args_t, device)},
    {.name = "dtype", .kind = BG_OPT_CHOICE, .choices = dtypes, .help = "compute dtype",
     .def = "f32", .off = offsetof(profile_args_t, dtype)},
    {.name = "repeat", .kind = BG_OPT_INT, .metavar = "R", .help = "timed rounds after a warm-up",
     .def = "5", .off = offsetof(profile_args_t, repeat), .min = 1, .max = 1000000},
    {.name = "output", .short_name = 'o', .kind = BG_OPT_PATH, .metavar = "FILE",
     .help = "write the profile (JSON) to FILE; - for standard output",
     .off = offsetof(profile_args_t, out)},
    {.name = "json", .kind = BG_OPT_FLAG,
     .help = "print the profile as JSON on standard output instead of the table",
     .off = offsetof(profile_args_t, json)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const profile_tables[] = {profile_opts, NULL};

const bg_cmd_spec_t bg_profile_spec = {
    .name = "profile",
    .args = "MODEL [options]",
    .summary = "time every layer's F, B, W; JSON profile for plan",
    .about = "Times every layer's forward, backward-input and backward-weight at one "
             "micro-batch size and writes the profile `brigade plan --profile` reads.",
    .tables = profile_tables,
    .min_pos = 1,
    .max_pos = 1,
    .pos_name = "MODEL",
    .run = bg_cmd_profile,
};

/* Time every layer of g into prof, printing a table row each to txt. */
static bg_status_t profile_layers(const bg_graph_t *g, const profile_args_t *a, FILE *txt,
                                  bg_profile_t *prof)
{
    bg_backend_t *be = NULL;
    bg_dtype_t dt = BG_F32;
    bg_dtype_parse(a->dtype, &dt); /* one of the listed choices */
    bg_device_t dev = strcmp(a->device, "cuda") ? BG_DEV_CPU : BG_DEV_CUDA;
    const char *local = getenv("BRIGADE_LOCAL_RANK");
    bg_status_t st =
        bg_backend_create(dev, bg_backend_local_index(dev, local ? atoi(local) : 0), &be);
    if (st == BG_OK)
        st = bg_profile_alloc(bg_graph_n_layers(g), prof);
    if (st == BG_OK) {
        snprintf(prof->device, sizeof(prof->device), "%s", a->device);
        prof->dtype = dt;
        prof->micro_batch = a->batch;
        fprintf(txt, "%-28s %-14s %10s %10s %10s\n", "layer", "kind", "F ms", "B ms", "W ms");
    }
    for (int l = 0; st == BG_OK && l < bg_graph_n_layers(g); l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(g, l);
        st = time_layer(be, dt, gl, a->repeat, &prof->layer[l]);
        if (st == BG_OK)
            fprintf(txt, "%-28s %-14s %10.3f %10.3f %10.3f\n", gl->spec.name, gl->spec.kind->name,
                    prof->layer[l].f * 1e3, prof->layer[l].b * 1e3, prof->layer[l].w * 1e3);
    }
    bg_backend_destroy(be);
    return st;
}

/* Write the profile where -o and --json say; an exit code. */
static int profile_write(const bg_profile_t *prof, const profile_args_t *a, FILE *txt)
{
    char tmp[512];
    int to_stdout = a->json || bg_out_is_stdout(a->out);
    if (a->out && !bg_out_is_stdout(a->out)) {
        if (bg_profile_save(a->out, prof) != BG_OK) {
            fprintf(stderr, "brigade profile: %s\n", bg_last_error());
            return 1;
        }
        fprintf(txt, "wrote %s\n", a->out);
    }
    if (!to_stdout)
        return 0;
    if (bg_out_tmp("profile", tmp, sizeof(tmp)))
        return 1;
    if (bg_profile_save(tmp, prof) != BG_OK) {
        fprintf(stderr, "brigade profile: %s\n", bg_last_error());
        unlink(tmp);
        return 1;
    }
    return bg_out_cat("profile", tmp);
}

int bg_cmd_profile(int argc, char **argv)
{
    profile_args_t a = {16, 5, "cpu", "f32", NULL, false};
    char *pos[1];
    int npos, rc = bg_opt_parse(&bg_profile_spec, argc, argv, &a, pos, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (a.json && bg_out_is_stdout(a.out))
        return bg_opt_usage_error(&bg_profile_spec,
                                  "--json and -o - both write to standard output");
    bg_graph_t *g = NULL;
    if (bg_graph_parse_file(pos[0], a.batch, &g) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        return 2;
    }
    /* Standard output carries the JSON under --json and -o -: the table goes elsewhere. */
    FILE *txt = a.json ? bg_out_null() : bg_out_is_stdout(a.out) ? stderr : stdout;
    bg_profile_t prof;
    memset(&prof, 0, sizeof(prof));
    bg_status_t st = profile_layers(g, &a, txt, &prof);
    if (st != BG_OK) {
        fprintf(stderr, "brigade profile: %s\n", bg_last_error());
        rc = st == BG_ERR_INVALID ? 2 : 1;
    } else {
        rc = profile_write(&prof, &a, txt);
    }
    bg_out_close(txt);
    bg_profile_free(&prof);
    bg_graph_free(g);
    return rc;
}
