/*
 * tools/cmd_check.c -- `brigade check MODEL`: parse a model graph and show
 * per layer its inputs, output shape, parameters, FLOPs (F, B+W) and the
 * activation bytes kept for backward, then totals; or the same as JSON.
 * Parse errors go to stderr as FILE:LINE:COL messages with exit code 2.
 * Must not compute shapes or costs itself: everything comes from the graph
 * (layers/graph.h) and the kinds' cost functions.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/graph.h"
#include "tools/commands.h"

typedef struct check_opts {
    const char *path;
    int64_t batch;
    const char *dtype_name; /* f32 | bf16 */
    bg_dtype_t dtype;
    bool json;
    bool kinds;
} check_opts_t;

static const char *const dtypes[] = {"f32", "bf16", "fp16", NULL};

/* clang-format off */
static const bg_opt_t check_opts[] = {
    {.name = "batch", .kind = BG_OPT_I64, .metavar = "N", .help = "micro-batch size bound to B",
     .def = "1", .off = offsetof(check_opts_t, batch), .min = 1, .max = BG_GRAPH_MAX_DIM},
    {.name = "dtype", .kind = BG_OPT_CHOICE, .choices = dtypes,
     .help = "activation dtype for bytes kept", .def = "f32",
     .off = offsetof(check_opts_t, dtype_name)},
    {.name = "json", .kind = BG_OPT_FLAG,
     .help = "print JSON on standard output instead of the table",
     .off = offsetof(check_opts_t, json)},
    {.name = "kinds", .kind = BG_OPT_FLAG, .help = "list the layer kinds and their keys",
     .off = offsetof(check_opts_t, kinds)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const check_tables[] = {check_opts, NULL};

const bg_cmd_spec_t bg_check_spec = {
    .name = "check",
    .args = "MODEL [options] | --kinds",
    .summary = "validate a model graph; table of layers, shapes, costs",
    .about = "Parses MODEL and prints per layer its inputs, output shape, parameters, FLOPs "
             "and the activation bytes kept for backward, then totals.",
    .tables = check_tables,
    .min_pos = 0,
    .max_pos = 1,
    .pos_name = "MODEL",
    .run = bg_cmd_check,
};

/* Fill o from argv; 0 ok, 2 usage error (printed), 1 when --help was shown. */
static int parse_opts(int argc, char **argv, check_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->batch = 1;
    o->dtype_name = "f32";
    char *pos[1];
    int npos = 0;
    int rc = bg_opt_parse(&bg_check_spec, argc, argv, o, pos, &npos);
    if (rc)
        return rc;
    o->path = npos ? pos[0] : NULL;
    o->dtype = BG_F32;
    bg_dtype_parse(o->dtype_name, &o->dtype); /* one of the listed choices */
    if (!o->path && !o->kinds)
        return bg_opt_usage_error(&bg_check_spec, "no model given (see brigade check --help)");
    return 0;
}

/* ---- number formatting ---- */

/* 124439808 -> "124,439,808" */
static const char *fmt_int(int64_t v, char *buf, size_t n)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof(tmp), "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < n) buf[o++] = '-';
    for (int i = 0; i < len && o + 1 < n; i++) {
        if (i && (len - i) % 3 == 0 && o + 1 < n) buf[o++] = ',';
        if (o + 1 < n) buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

/* 1.23e9 -> "1.23 G" (decimal prefixes, for FLOPs) */
static const char *fmt_si(double v, char *buf, size_t n)
{
    static const char *const pre[] = {"", "K", "M", "G", "T", "P", "E"};
    int k = 0;
    while (v >= 999.5 && k < 6) {
        v /= 1000.0;
        k++;
    }
    if (k == 0) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.3g %s", v, pre[k]);
    return buf;
}

/* bytes -> "3.00 MiB" */
static const char *fmt_bytes(double v, char *buf, size_t n)
{
    static const char *const pre[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int k = 0;
    while (v >= 1023.5 && k < 5) {
        v /= 1024.0;
        k++;
    }
    if (k == 0) snprintf(buf, n, "%.0f B", v);
    else snprintf(buf, n, "%.3g %s", v, pre[k]);
    return buf;
}

/* "a, b" -- the unique names of a layer's input tensors. */
static const char *fmt_inputs(const bg_graph_t *g, const bg_graph_layer_t *L, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < L->spec.n_in && o < n; i++) {
        int w = snprintf(buf + o, n - o, "%s%s", i ? ", " : "", bg_graph_tensor(g, L->in[i])->name);
        o += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

/* ---- table ---- */

enum { C_IDX, C_NAME, C_KIND, C_IN, C_OUT, C_PARAMS, C_FWD, C_BWD, C_KEPT, C_N };

typedef struct row {
    char c[C_N][256];
} row_t;

static void fill_row(const bg_graph_t *g, int l, bg_dtype_t dt, row_t *r)
{
    const bg_graph_layer_t *L = bg_graph_layer(g, l);
    bg_layer_cost_t c;
    bg_layer_cost(&L->spec, dt, &c);
    snprintf(r->c[C_IDX], sizeof(r->c[0]), "%d", l);
    snprintf(r->c[C_NAME], sizeof(r->c[0]), "%s", L->spec.name);
    snprintf(r->c[C_KIND], sizeof(r->c[0]), "%s", L->spec.kind->name);
    fmt_inputs(g, L, r->c[C_IN], sizeof(r->c[0]));
    bg_shape_str(&L->spec.out, r->c[C_OUT], sizeof(r->c[0]));
    fmt_int(c.params, r->c[C_PARAMS], sizeof(r->c[0]));
    fmt_si(c.fwd_flops, r->c[C_FWD], sizeof(r->c[0]));
    fmt_si(c.bwd_input_flops + c.bwd_weight_flops, r->c[C_BWD], sizeof(r->c[0]));
    fmt_bytes((double)(c.input_bytes + c.saved_bytes), r->c[C_KEPT], sizeof(r->c[0]));
}

static void print_row(const row_t *r, const int *w)
{
    /* Text columns left-aligned, numbers right-aligned. */
    static const int right[C_N] = {1, 0, 0, 0, 0, 1, 1, 1, 1};
    for (int k = 0; k < C_N; k++)
        printf("%s%*s", k ? "  " : "", right[k] ? w[k] : -w[k], r->c[k]);
    printf("\n");
}

static int print_table(const bg_graph_t *g, const check_opts_t *o)
{
    int n = bg_graph_n_layers(g);
    row_t *rows = malloc(((size_t)n + 1) * sizeof(row_t));
    if (!rows) {
        fprintf(stderr, "brigade check: out of memory\n");
        return 1;
    }
    static const char *const head[C_N] = {"#",         "layer",     "kind",      "inputs",
                                          "output",    "params",    "fwd FLOPs", "bwd FLOPs (B+W)",
                                          "kept bytes"};
    int w[C_N];
    for (int k = 0; k < C_N; k++) {
        snprintf(rows[0].c[k], sizeof(rows[0].c[k]), "%s", head[k]);
        w[k] = (int)strlen(head[k]);
    }
    double fwd = 0, bwdi = 0, bwdw = 0, kept = 0;
    for (int l = 0; l < n; l++) {
        fill_row(g, l, o->dtype, &rows[l + 1]);
        for (int k = 0; k < C_N; k++) {
            int len = (int)strlen(rows[l + 1].c[k]);
            if (len > w[k]) w[k] = len;
        }
        bg_layer_cost_t c;
        bg_layer_cost(&bg_graph_layer(g, l)->spec, o->dtype, &c);
        fwd += c.fwd_flops;
        bwdi += c.bwd_input_flops;
        bwdw += c.bwd_weight_flops;
        kept += (double)(c.input_bytes + c.saved_bytes);
    }
    const char *model = bg_graph_model_name(g);
    printf("model %s (%s): %d layers, batch %lld, activations %s\n\n", model[0] ? model : "(unnamed)",
           bg_graph_source_name(g), n, (long long)bg_graph_batch(g), bg_dtype_name(o->dtype));
    for (int l = 0; l <= n; l++) print_row(&rows[l], w);
    free(rows);

    char a[64], b[64], c[64], d[64], e[64];
    printf("\n");
    for (int i = 0; i < bg_graph_n_inputs(g); i++) {
        const bg_graph_input_t *in = bg_graph_input(g, i);
        printf("input %s : %s\n", in->name, bg_shape_str(&in->shape, a, sizeof(a)));
    }
    for (int p = 0; p < bg_graph_n_params(g); p++) {
        const bg_graph_param_t *P = bg_graph_param(g, p);
        for (int u = 0; u < P->n_users; u++)
            printf("shared: %s uses %s %s\n", bg_graph_layer(g, P->users[u])->spec.name, P->name,
                   bg_shape_str(&P->desc.shape, a, sizeof(a)));
    }
    const bg_graph_totals_t *t = bg_graph_totals(g);
    printf("loss: %s\n", bg_graph_tensor(g, bg_graph_loss_tensor(g))->name);
    printf("parameters: %s (%s tensors)\n", fmt_int(t->params, a, sizeof(a)),
           fmt_int(bg_graph_n_params(g), b, sizeof(b)));
    printf("FLOPs per micro-batch: forward %sFLOP, backward %sFLOP (B %s, W %s)\n",
           fmt_si(fwd, a, sizeof(a)), fmt_si(bwdi + bwdw, b, sizeof(b)),
           fmt_si(bwdi, c, sizeof(c)), fmt_si(bwdw, d, sizeof(d)));
    printf("activations kept for backward: %s\n", fmt_bytes(kept, e, sizeof(e)));
    return 0;
}

/* ---- JSON ---- */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void json_shape(const bg_shape_t *s)
{
    printf("{\"dtype\": \"%s\", \"dims\": [", bg_dtype_name(s->dtype));
    for (int i = 0; i < s->ndim; i++) printf("%s%lld", i ? ", " : "", (long long)s->d[i]);
    printf("]}");
}

static int print_json(const bg_graph_t *g, const check_opts_t *o)
{
    printf("{\"model\": ");
    json_str(bg_graph_model_name(g));
    printf(", \"source\": ");
    json_str(bg_graph_source_name(g));
    printf(", \"batch\": %lld, \"dtype\": \"%s\",\n \"inputs\": [", (long long)bg_graph_batch(g),
           bg_dtype_name(o->dtype));
    for (int i = 0; i < bg_graph_n_inputs(g); i++) {
        const bg_graph_input_t *in = bg_graph_input(g, i);
        printf("%s\n  {\"name\": ", i ? "," : "");
        json_str(in->name);
        printf(", \"shape\": ");
        json_shape(&in->shape);
        printf("}");
    }
    printf("],\n \"layers\": [");
    double fwd = 0, bwdi = 0, bwdw = 0, kept = 0;
    for (int l = 0; l < bg_graph_n_layers(g); l++) {
        const bg_graph_layer_t *L = bg_graph_layer(g, l);
        bg_layer_cost_t c;
        bg_layer_cost(&L->spec, o->dtype, &c);
        fwd += c.fwd_flops;
        bwdi += c.bwd_input_flops;
        bwdw += c.bwd_weight_flops;
        kept += (double)(c.input_bytes + c.saved_bytes);
        printf("%s\n  {\"name\": ", l ? "," : "");
        json_str(L->spec.name);
        printf(", \"kind\": \"%s\", \"inputs\": [", L->spec.kind->name);
        for (int i = 0; i < L->spec.n_in; i++) {
            printf("%s", i ? ", " : "");
            json_str(bg_graph_tensor(g, L->in[i])->name);
        }
        printf("], \"output\": ");
        json_shape(&L->spec.out);
        printf(", \"params\": [");
        for (int j = 0; j < L->n_params; j++) {
            printf("%s", j ? ", " : "");
            json_str(bg_graph_param(g, L->param[j])->name);
        }
        printf("], \"param_count\": %lld, \"fwd_flops\": %.17g, \"bwd_input_flops\": %.17g, "
               "\"bwd_weight_flops\": %.17g, \"kept_bytes\": %lld, \"saved_bytes\": %lld, "
               "\"out_bytes\": %lld, \"workspace_bytes\": %lld}",
               (long long)c.params, c.fwd_flops, c.bwd_input_flops, c.bwd_weight_flops,
               (long long)(c.input_bytes + c.saved_bytes), (long long)c.saved_bytes,
               (long long)c.out_bytes, (long long)c.workspace_bytes);
    }
    printf("],\n \"parameters\": [");
    for (int p = 0; p < bg_graph_n_params(g); p++) {
        const bg_graph_param_t *P = bg_graph_param(g, p);
        printf("%s\n  {\"name\": ", p ? "," : "");
        json_str(P->name);
        printf(", \"shape\": ");
        json_shape(&P->desc.shape);
        printf(", \"owner\": ");
        json_str(bg_graph_layer(g, P->owner)->spec.name);
        printf(", \"shared_by\": [");
        for (int u = 0; u < P->n_users; u++) {
            printf("%s", u ? ", " : "");
            json_str(bg_graph_layer(g, P->users[u])->spec.name);
        }
        printf("]}");
    }
    const bg_graph_totals_t *t = bg_graph_totals(g);
    printf("],\n \"loss\": ");
    json_str(bg_graph_tensor(g, bg_graph_loss_tensor(g))->name);
    printf(",\n \"totals\": {\"params\": %lld, \"fwd_flops\": %.17g, \"bwd_input_flops\": %.17g, "
           "\"bwd_weight_flops\": %.17g, \"kept_bytes\": %.17g}}\n",
           (long long)t->params, fwd, bwdi, bwdw, kept);
    return 0;
}

/* What a run does to the head (layers/graph_fuse.c): the bytes the fused
 * classifier saves. Rewrites g, so it comes last. */
static int print_fusion(bg_graph_t *g, bg_dtype_t dt)
{
    bg_graph_fusion_t f;
    if (bg_graph_fuse_classifier(g, dt, &f) != BG_OK) {
        fprintf(stderr, "brigade check: %s\n", bg_last_error());
        return 1;
    }
    if (!f.n) return 0;
    char a[64], b[64], c[64];
    printf("fused classifier: %s + %s run as one kind, logits never stored: kept %s -> %s, "
           "%s less per micro-batch\n",
           bg_graph_layer(g, f.head)->spec.name, bg_graph_layer(g, f.loss)->spec.name,
           fmt_bytes((double)f.kept_before, a, sizeof(a)),
           fmt_bytes((double)f.kept_after, b, sizeof(b)),
           fmt_bytes((double)(f.kept_before - f.kept_after), c, sizeof(c)));
    return 0;
}

static void print_kinds(bool json)
{
    int n;
    const bg_layer_kind_t *const *k = bg_layer_kinds(&n);
    if (!json) {
        for (int i = 0; i < n; i++) printf("%-14s %s\n", k[i]->name, k[i]->doc ? k[i]->doc : "");
        return;
    }
    printf("[");
    for (int i = 0; i < n; i++) {
        printf("%s\n {\"name\": ", i ? "," : "");
        json_str(k[i]->name);
        printf(", \"doc\": ");
        json_str(k[i]->doc ? k[i]->doc : "");
        printf("}");
    }
    printf("]\n");
}

int bg_cmd_check(int argc, char **argv)
{
    check_opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (o.kinds && !o.path) {
        print_kinds(o.json);
        return 0;
    }
    bg_graph_t *g = NULL;
    bg_status_t st = bg_graph_parse_file(o.path, o.batch, &g);
    if (st != BG_OK) {
        fprintf(stderr, "%s\n", bg_last_error());
        /* A file we cannot read or parse is the user's input: exit 2. */
        return st == BG_ERR_INVALID || st == BG_ERR_IO ? 2 : 1;
    }
    if (o.kinds && !o.json) print_kinds(false); /* --json: stdout holds one JSON value */
    rc = o.json ? print_json(g, &o) : print_table(g, &o);
    if (!o.json && rc == 0) rc = print_fusion(g, o.dtype);
    bg_graph_free(g);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "brigade check: cannot write output: %s\n", strerror(errno));
        return 1;
    }
    return rc;
}
