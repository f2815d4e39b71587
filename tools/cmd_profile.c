/*
 * tools/cmd_profile.c -- `brigade profile MODEL`: time every layer's
 * forward, backward-input and backward-weight on the chosen backend at one
 * micro-batch size and write the JSON profile `brigade plan --profile`
 * prices stages with. Inputs are random (never zeros), ids in range.
 * Decides exit codes: 0 ok, 1 runtime failure, 2 bad usage or model.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/rng.h"
#include "layers/backend.h"
#include "layers/graph.h"
#include "partition/profile.h"
#include "tools/commands.h"

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

static bg_status_t time_layer(bg_backend_t *be, bg_dtype_t dt, const bg_graph_layer_t *gl,
                              int repeat, bg_profile_layer_t *out)
{
    void *mem[4 * BG_MAX_INPUTS + 3 * BG_MAX_PARAMS + 4] = {0};
    int nm = 0;
    bg_tensor_t in[BG_MAX_INPUTS], din[BG_MAX_INPUTS], par[BG_MAX_PARAMS], gr[BG_MAX_PARAMS], o,
        dout, saved, ws;
    bg_layer_call_t c;
    memset(&c, 0, sizeof(c));
    c.spec = &gl->spec;
    c.be = be;
    c.dtype = dt;
    bg_status_t st = BG_OK;
    for (int i = 0; st == BG_OK && i < gl->spec.n_in; i++) {
        st =
            make_tensor(be, &gl->spec.in[i], dt, id_bound(gl), 1 + (uint64_t)i, &in[i], &mem[nm++]);
        c.in[i] = &in[i];
        if (st == BG_OK && gl->spec.in[i].dtype == BG_F32) {
            st = make_tensor(be, &gl->spec.in[i], dt, 1, 11 + (uint64_t)i, &din[i], &mem[nm++]);
            c.din[i] = &din[i];
        }
    }
    bg_shape_t os = gl->spec.out;
    bg_dtype_t odt = gl->spec.kind->out_f32 ? BG_F32 : dt;
    if (st == BG_OK)
        st = make_tensor(be, &os, odt, 1, 21, &o, &mem[nm++]);
    if (st == BG_OK)
        st = make_tensor(be, &os, odt, 1, 22, &dout, &mem[nm++]);
    c.out = &o;
    c.dout = &dout;
    for (int j = 0; st == BG_OK && j < gl->n_params; j++) {
        st = make_tensor(be, &gl->slot[j].shape, dt, 1, 31 + (uint64_t)j, &par[j], &mem[nm++]);
        if (st == BG_OK)
            st = make_tensor(be, &gl->slot[j].shape, BG_F32, 1, 41 + (uint64_t)j, &gr[j],
                             &mem[nm++]);
        c.params[j] = &par[j];
        c.grads[j] = &gr[j];
    }
    bg_layer_cost_t cost;
    bg_layer_cost(&gl->spec, dt, &cost);
    bg_shape_t raw = {BG_I32, 1, {0}};
    if (st == BG_OK && cost.saved_bytes) {
        raw.d[0] = (cost.saved_bytes + 3) / 4;
        st = make_tensor(be, &raw, dt, 1, 51, &saved, &mem[nm++]);
        saved.dtype = BG_I32;
        c.saved = &saved;
    }
    if (st == BG_OK && cost.workspace_bytes) {
        raw.d[0] = (cost.workspace_bytes + 3) / 4;
        st = make_tensor(be, &raw, dt, 1, 52, &ws, &mem[nm++]);
        ws.dtype = BG_I32;
        c.workspace = &ws;
    }
    double t[3] = {0, 0, 0};
    /* One warm-up round, then `repeat` timed ones of F, B, W in order
     * (attention's W needs its B: the order a schedule uses). */
    for (int r = 0; st == BG_OK && r <= repeat; r++) {
        double t0 = bg_now_s();
        st = bg_layer_forward(&c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t1 = bg_now_s();
        if (st == BG_OK)
            st = bg_layer_backward_input(&c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t2 = bg_now_s();
        if (st == BG_OK)
            st = bg_layer_backward_weight(&c);
        if (st == BG_OK)
            st = bg_backend_synchronize(be);
        double t3 = bg_now_s();
        if (r)
            t[0] += t1 - t0, t[1] += t2 - t1, t[2] += t3 - t2;
    }
    for (int i = 0; i < nm; i++)
        bg_backend_free(be, mem[i]);
    if (st != BG_OK)
        return bg_error_prefix(st, "layer %s: ", gl->spec.name);
    snprintf(out->name, sizeof(out->name), "%s", gl->spec.name);
    out->f = t[0] / repeat;
    out->b = gl->spec.kind->backward_input ? t[1] / repeat : 0;
    out->w = gl->spec.kind->backward_weight ? t[2] / repeat : 0;
    return BG_OK;
}

int bg_cmd_profile(int argc, char **argv)
{
    static const struct option opts[] = {
        {"batch", 1, 0, 'b'},  {"device", 1, 0, 'd'}, {"dtype", 1, 0, 't'}, {"repeat", 1, 0, 'r'},
        {"output", 1, 0, 'o'}, {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int batch = 16, repeat = 5;
    const char *device = "cpu", *dtype = "f32", *outp = NULL;
    optind = 1;
    opterr = 0;
    for (int o; (o = getopt_long(argc, argv, "o:h", opts, NULL)) != -1;) {
        switch (o) {
        case 'b':
            batch = atoi(optarg);
            break;
        case 'd':
            device = optarg;
            break;
        case 't':
            dtype = optarg;
            break;
        case 'r':
            repeat = atoi(optarg);
            break;
        case 'o':
            outp = optarg;
            break;
        case 'h':
            printf(
                "usage: brigade profile MODEL [--batch N] [--device cpu|cuda] [--dtype f32|bf16]\n"
                "                        [--repeat R] [-o profile.json]\n"
                "Times every layer's F, B and W at micro-batch N (default 16), R timed rounds\n"
                "after a warm-up (default 5); writes the profile `brigade plan --profile` "
                "reads.\n");
            return 0;
        default:
            fprintf(stderr, "brigade profile: bad option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1 || batch < 1 || repeat < 1 ||
        (strcmp(device, "cpu") && strcmp(device, "cuda")) ||
        (strcmp(dtype, "f32") && strcmp(dtype, "bf16"))) {
        fprintf(stderr, "usage: brigade profile MODEL [--batch N>0] [--device cpu|cuda] "
                        "[--dtype f32|bf16] [--repeat R>0] [-o FILE]\n");
        return 2;
    }
    bg_graph_t *g = NULL;
    if (bg_graph_parse_file(argv[optind], batch, &g) != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        return 2;
    }
    bg_backend_t *be = NULL;
    bg_dtype_t dt = strcmp(dtype, "bf16") ? BG_F32 : BG_BF16;
    bg_profile_t prof;
    memset(&prof, 0, sizeof(prof));
    int rc = 0;
    bg_status_t st = bg_backend_create(strcmp(device, "cuda") ? BG_DEV_CPU : BG_DEV_CUDA, 0, &be);
    if (st == BG_OK)
        st = bg_profile_alloc(bg_graph_n_layers(g), &prof);
    if (st == BG_OK) {
        snprintf(prof.device, sizeof(prof.device), "%s", device);
        prof.dtype = dt;
        prof.micro_batch = batch;
        printf("%-28s %-14s %10s %10s %10s\n", "layer", "kind", "F ms", "B ms", "W ms");
    }
    for (int l = 0; st == BG_OK && l < bg_graph_n_layers(g); l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(g, l);
        st = time_layer(be, dt, gl, repeat, &prof.layer[l]);
        if (st == BG_OK)
            printf("%-28s %-14s %10.3f %10.3f %10.3f\n", gl->spec.name, gl->spec.kind->name,
                   prof.layer[l].f * 1e3, prof.layer[l].b * 1e3, prof.layer[l].w * 1e3);
    }
    if (st == BG_OK && outp) {
        st = bg_profile_save(outp, &prof);
        if (st == BG_OK)
            printf("wrote %s\n", outp);
    }
    if (st != BG_OK) {
        fprintf(stderr, "brigade profile: %s\n", bg_last_error());
        rc = st == BG_ERR_INVALID ? 2 : 1;
    }
    bg_profile_free(&prof);
    bg_backend_destroy(be);
    bg_graph_free(g);
    return rc;
}
