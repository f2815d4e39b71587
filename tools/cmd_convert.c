/*
 * tools/cmd_convert.c -- `brigade convert MODEL IN.safetensors -o OUT`:
 * Hugging Face weights (GPT-2 or Llama naming) to a file of brigade
 * parameter names that `--init` loads, and back. Which tensors make which
 * parameter is tools/convert_map.c's; this file reads, checks, reshapes and
 * writes. Every tensor's shape is checked against the graph before
 * anything is written: a mismatch or a missing tensor is bad input (exit 2)
 * naming the tensor. Output is f32 whatever the input dtype (F32, BF16,
 * F16, F64 are read). Must not call exit().
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"
#include "layers/graph.h"
#include "tools/commands.h"
#include "tools/convert_map.h"
#include "tools/output.h"

typedef struct convert_args {
    const char *out, *to, *family;
    bool merged;
} convert_args_t;

static const char *const to_choices[] = {"auto", "brigade", "hf", NULL};
static const char *const family_choices[] = {"auto", "gpt2", "llama", NULL};

/* clang-format off */
static const bg_opt_t convert_opts[] = {
    {.name = "output", .short_name = 'o', .kind = BG_OPT_PATH, .metavar = "OUT",
     .help = "safetensors file to write", .off = offsetof(convert_args_t, out)},
    {.name = "to", .kind = BG_OPT_CHOICE, .metavar = "WHAT", .choices = to_choices,
     .help = "brigade names or Hugging Face names (auto: the other of what IN holds)",
     .def = "auto", .off = offsetof(convert_args_t, to)},
    {.name = "family", .kind = BG_OPT_CHOICE, .metavar = "NAMES", .choices = family_choices,
     .help = "Hugging Face naming (auto: llama when MODEL has rmsnorm/swiglu, else gpt2)",
     .def = "auto", .off = offsetof(convert_args_t, family)},
    {.name = "merged", .kind = BG_OPT_FLAG,
     .help = "--to hf, llama: write q/k/v as qkv_proj and gate/up as gate_up_proj",
     .off = offsetof(convert_args_t, merged)},
    {0},
};
/* clang-format on */

static const bg_opt_t *const convert_tables[] = {convert_opts, NULL};

const bg_cmd_spec_t bg_convert_spec = {
    .name = "convert",
    .args = "MODEL IN.safetensors -o OUT.safetensors [options]",
    .summary = "Hugging Face weights to brigade parameter names and back",
    .about = "Reads IN (GPT-2 naming: Conv1D weights transposed, merged c_attn; or Llama "
             "naming: q/k/v and gate/up separate or merged) and writes OUT with MODEL's "
             "parameter names for `train --init` / `eval --init`, or the reverse. Refuses "
             "a file whose shapes do not match MODEL, naming the tensor.",
    .tables = convert_tables,
    .min_pos = 2,
    .max_pos = 2,
    .pos_name = "MODEL IN.safetensors",
    .run = bg_cmd_convert,
};

/* Everything one conversion holds; buffers live until the file is written. */
typedef struct conv {
    const bg_graph_t *g;
    const bg_st_file_t *in;
    bg_hf_map_t map;
    bg_hf_map_t merged; /* to brigade: the same parameters as qkv_proj / gate_up_proj */
    bool *used;         /* per input tensor: consumed */
    float **bufs;       /* one per written tensor */
    int nbufs;
    bg_st_writer_t *w;
} conv_t;

static float *conv_buf(conv_t *c, int64_t numel)
{
    float *b = malloc((size_t)(numel > 0 ? numel : 1) * sizeof(float));
    if (b)
        c->bufs[c->nbufs++] = b;
    return b;
}

static void mark_used(conv_t *c, const bg_st_tensor_t *t)
{
    for (size_t i = 0; i < bg_st_count(c->in); i++)
        if (bg_st_tensor_at(c->in, i) == t)
            c->used[i] = true;
}

/* The input tensor named `name` (or its family spelling); NULL when absent. */
static const bg_st_tensor_t *find_hf(conv_t *c, const char *name)
{
    const bg_st_tensor_t *t = bg_st_find(c->in, name);
    char alt[BG_HF_NAME_MAX + 16];
    bg_hf_alt_name(c->map.family, name, alt, sizeof(alt));
    if (!t && alt[0])
        t = bg_st_find(c->in, alt);
    return t;
}

/* Shape text "[a, b]" of (ndim, d). */
static const char *shape_txt(int ndim, const int64_t *d, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

/* Expected shape of piece p of parameter P: (rows, C), (C, rows) when transposed, (rows). */
static int piece_shape(const bg_graph_param_t *P, const bg_hf_piece_t *p, int64_t *d)
{
    if (P->desc.shape.ndim == 1) {
        d[0] = p->rows;
        return 1;
    }
    d[0] = p->transposed ? P->desc.shape.d[1] : p->rows;
    d[1] = p->transposed ? p->rows : P->desc.shape.d[1];
    return 2;
}

/* Piece p of P from the input into dst (P's f32 rows), checked. */
static bg_status_t read_piece(conv_t *c, const bg_graph_param_t *P, const bg_hf_piece_t *p,
                              const bg_st_tensor_t *t, float *dst)
{
    int64_t d[2];
    int nd = piece_shape(P, p, d);
    char a[64], b[64];
    bool ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++)
        ok = t->shape[i] == d[i];
    if (!ok)
        return bg_errorf(BG_ERR_INVALID, "%s: %s is %s, but %s of this model needs %s there",
                         bg_st_path(c->in), t->name, shape_txt(t->ndim, t->shape, a, sizeof(a)),
                         P->name, shape_txt(nd, d, b, sizeof(b)));
    int64_t cols = nd == 2 ? P->desc.shape.d[1] : 1;
    float *tmp = malloc((size_t)(p->rows * cols) * sizeof(float) + 4);
    if (!tmp)
        return bg_errorf(BG_ERR_NOMEM, "out of memory reading %s", t->name);
    bg_status_t st = bg_st_read_f32(c->in, t->name, nd, d, p->rows * cols, tmp);
    for (int64_t r = 0; st == BG_OK && r < p->rows; r++)
        for (int64_t k = 0; k < cols; k++)
            dst[(p->r0 + r) * cols + k] = p->transposed ? tmp[k * p->rows + r] : tmp[r * cols + k];
    free(tmp);
    mark_used(c, t);
    return st;
}

/* Rows pieces missing from the file but allowed: an untied Llama head of
 * a file that ties it (tie_word_embeddings: no lm_head) reads the embedding. */
static const bg_st_tensor_t *find_or_tied(conv_t *c, const bg_hf_piece_t *p)
{
    const bg_st_tensor_t *t = find_hf(c, p->name);
    if (!t && !strcmp(p->name, "lm_head.weight")) {
        t = find_hf(c, c->map.family == BG_HF_LLAMA ? "model.embed_tokens.weight" : "wte.weight");
        if (t)
            fprintf(stderr, "brigade convert: no lm_head.weight: the head is the tied embedding\n");
    }
    return t;
}

/* HF -> brigade: every parameter from its pieces. */
static bg_status_t to_brigade(conv_t *c)
{
    for (int i = 0; i < c->map.n; i++) {
        const bg_hf_entry_t *e = &c->map.e[i];
        if (e->n > 1 && !find_hf(c, e->piece[0].name) && find_hf(c, c->merged.e[i].piece[0].name))
            e = &c->merged.e[i]; /* q/k/v or gate/up stored merged */
        const bg_graph_param_t *P = bg_graph_param(c->g, e->param);
        float *dst = conv_buf(c, P->numel);
        if (!dst)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for %s", P->name);
        for (int k = 0; k < e->n; k++) {
            const bg_st_tensor_t *t = find_or_tied(c, &e->piece[k]);
            if (!t)
                return bg_errorf(BG_ERR_INVALID, "%s: no tensor %s (for %s of this model)",
                                 bg_st_path(c->in), e->piece[k].name, P->name);
            bg_status_t st = read_piece(c, P, &e->piece[k], t, dst);
            if (st != BG_OK)
                return st;
        }
        bg_status_t st =
            bg_st_writer_add(c->w, P->name, BG_ST_F32, P->desc.shape.ndim, P->desc.shape.d, dst);
        if (st != BG_OK)
            return st;
    }
    return BG_OK;
}

/* brigade -> HF: every parameter cut into its pieces. */
static bg_status_t to_hf(conv_t *c)
{
    for (int i = 0; i < c->map.n; i++) {
        const bg_hf_entry_t *e = &c->map.e[i];
        const bg_graph_param_t *P = bg_graph_param(c->g, e->param);
        const bg_st_tensor_t *t = bg_st_find(c->in, P->name);
        float *src = conv_buf(c, P->numel);
        if (!src)
            return bg_errorf(BG_ERR_NOMEM, "out of memory for %s", P->name);
        if (!t)
            return bg_errorf(BG_ERR_INVALID, "%s: no tensor %s", bg_st_path(c->in), P->name);
        bg_status_t st =
            bg_st_read_f32(c->in, P->name, P->desc.shape.ndim, P->desc.shape.d, P->numel, src);
        mark_used(c, t);
        int64_t cols = P->desc.shape.ndim == 2 ? P->desc.shape.d[1] : 1;
        for (int k = 0; st == BG_OK && k < e->n; k++) {
            const bg_hf_piece_t *p = &e->piece[k];
            float *dst = conv_buf(c, p->rows * cols);
            if (!dst)
                return bg_errorf(BG_ERR_NOMEM, "out of memory for %s", p->name);
            for (int64_t r = 0; r < p->rows; r++)
                for (int64_t q = 0; q < cols; q++)
                    dst[p->transposed ? q * p->rows + r : r * cols + q] =
                        src[(p->r0 + r) * cols + q];
            int64_t d[2];
            int nd = piece_shape(P, p, d);
            st = bg_st_writer_add(c->w, p->name, BG_ST_F32, nd, d, dst);
        }
        if (st != BG_OK)
            return st;
    }
    return BG_OK;
}

/* Input tensors nothing consumed (mask buffers aside): named on stderr. */
static void report_unused(const conv_t *c)
{
    int n = 0;
    for (size_t i = 0; i < bg_st_count(c->in); i++) {
        const char *name = bg_st_tensor_at(c->in, i)->name;
        if (c->used[i] || bg_hf_is_buffer(name))
            continue;
        if (n++ < 5)
            fprintf(stderr, "brigade convert: ignored %s (no parameter of the model)\n", name);
    }
    if (n > 5)
        fprintf(stderr, "brigade convert: ... and %d more ignored\n", n - 5);
}

/* Does IN hold brigade names (the graph's first own parameter)? */
static bool holds_brigade_names(const bg_graph_t *g, const bg_st_file_t *in)
{
    return bg_graph_n_params(g) > 0 && bg_st_find(in, bg_graph_param(g, 0)->name) != NULL;
}

/* The conversion proper, after parsing; returns the exit code. */
static int convert(const convert_args_t *a, const bg_graph_t *g, const bg_st_file_t *in)
{
    conv_t c = {g, in, {0}, {0}, NULL, NULL, 0, NULL};
    bool hf = !strcmp(a->to, "hf") || (!strcmp(a->to, "auto") && holds_brigade_names(g, in));
    bg_hf_family_t fam = !strcmp(a->family, "auto")    ? bg_hf_family_of(g)
                         : !strcmp(a->family, "llama") ? BG_HF_LLAMA
                                                       : BG_HF_GPT2;
    bg_status_t st = bg_hf_map_build(g, fam, hf && a->merged, &c.map);
    if (st == BG_OK && !hf)
        st = bg_hf_map_build(g, fam, true, &c.merged);
    size_t nb = (size_t)bg_graph_n_params(g) * 4 + 1;
    if (st == BG_OK) {
        c.used = calloc(bg_st_count(in) + 1, sizeof(bool));
        c.bufs = calloc(nb, sizeof(float *));
        st = c.used && c.bufs ? bg_st_writer_new(&c.w) : bg_errorf(BG_ERR_NOMEM, "out of memory");
    }
    if (st == BG_OK)
        st = hf ? to_hf(&c) : to_brigade(&c);
    if (st == BG_OK)
        st = bg_st_writer_meta(c.w, "format", "pt");
    char tmp[512];
    bool cat = bg_out_is_stdout(a->out); /* -o -: through a temporary file */
    if (cat && bg_out_tmp("convert", tmp, sizeof(tmp)))
        st = BG_ERR_IO;
    if (st == BG_OK)
        st = bg_st_writer_write(c.w, cat ? tmp : a->out);
    if (st == BG_OK) {
        report_unused(&c);
        fprintf(cat ? stderr : stdout, "%s -> %s: %d parameters as %s names (%s)\n", bg_st_path(in),
                a->out, c.map.n, hf ? "Hugging Face" : "brigade",
                fam == BG_HF_LLAMA ? "llama" : "gpt2");
        if (cat && bg_out_cat("convert", tmp))
            st = BG_ERR_IO;
    } else if (st != BG_ERR_IO || !cat) {
        fprintf(stderr, "brigade convert: %s\n", bg_last_error());
    }
    for (int i = 0; i < c.nbufs; i++)
        free(c.bufs[i]);
    free(c.bufs);
    free(c.used);
    bg_st_writer_free(c.w);
    bg_hf_map_free(&c.map);
    bg_hf_map_free(&c.merged);
    return st == BG_OK ? 0 : st == BG_ERR_INVALID || st == BG_ERR_IO ? 2 : 1;
}

int bg_cmd_convert(int argc, char **argv)
{
    convert_args_t a = {NULL, "auto", "auto", false};
    char *pos[2];
    int npos, rc = bg_opt_parse(&bg_convert_spec, argc, argv, &a, pos, &npos);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!a.out)
        return bg_opt_usage_error(&bg_convert_spec, "missing -o OUT.safetensors");
    bg_graph_t *g = NULL;
    bg_st_file_t *in = NULL;
    bg_status_t st = bg_graph_parse_file(pos[0], 1, &g);
    if (st == BG_OK)
        st = bg_st_open(pos[1], &in);
    if (st == BG_OK)
        rc = convert(&a, g, in);
    else {
        fprintf(stderr, "brigade convert: %s\n", bg_last_error());
        rc = st == BG_ERR_INVALID || st == BG_ERR_IO ? 2 : 1;
    }
    bg_st_close(in);
    bg_graph_free(g);
    return rc;
}
