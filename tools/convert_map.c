/*
 * tools/convert_map.c -- brigade parameters <-> Hugging Face tensor names
 * (convert_map.h). Pure: walks the graph, fills a table.
 * Must not read or write files.
 */
#include "tools/convert_map.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bg_hf_family_t bg_hf_family_of(const bg_graph_t *g)
{
    for (int l = 0; l < bg_graph_n_layers(g); l++) {
        const char *k = bg_graph_layer(g, l)->spec.kind->name;
        if (!strcmp(k, "rmsnorm") || !strcmp(k, "swiglu"))
            return BG_HF_LLAMA;
    }
    return BG_HF_GPT2;
}

/* The block of a layer path: its first all-digit component, or -1. */
static int block_of(const char *path)
{
    for (const char *p = path; *p;) {
        const char *e = strchr(p, '.');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool digits = n > 0 && n < 9;
        for (size_t i = 0; digits && i < n; i++)
            digits = isdigit((unsigned char)p[i]);
        if (digits)
            return atoi(p);
        p += n + (e != NULL);
    }
    return -1;
}

/* Where the walk is: the block and how many norms and linears it has had. */
typedef struct walk {
    int block, norms, linears;
} walk_t;

/* HF base name (before ".weight"/".bias") of a layer, "" when the family
 * has none for it; *conv1d when its weight is stored transposed. */
static void hf_base(bg_hf_family_t fam, const char *kind, int b, walk_t *w, char *out, size_t n,
                    bool *conv1d)
{
    bool gpt = fam == BG_HF_GPT2, norm = strstr(kind, "norm") != NULL;
    int k = norm ? w->norms++ : !strcmp(kind, "linear") ? w->linears++ : 0;
    *conv1d = gpt && b >= 0 && strcmp(kind, "attention") && !norm;
    out[0] = 0;
    if (b < 0 && norm)
        snprintf(out, n, "%s", gpt ? "ln_f" : "model.norm");
    else if (b < 0 && !strcmp(kind, "linear"))
        snprintf(out, n, "lm_head");
    else if (b < 0 && !strcmp(kind, "embedding"))
        snprintf(out, n, "%s", gpt ? "" : "model.embed_tokens");
    else if (b >= 0 && norm && k < 2)
        snprintf(out, n, gpt ? "h.%d.%s" : "model.layers.%d.%s", b,
                 gpt ? (k ? "ln_2" : "ln_1")
                     : (k ? "post_attention_layernorm" : "input_layernorm"));
    else if (b >= 0 && !strcmp(kind, "attention"))
        snprintf(out, n, gpt ? "h.%d.attn" : "model.layers.%d.self_attn", b);
    else if (b >= 0 && !strcmp(kind, "linear") && k < 2)
        snprintf(out, n, gpt ? "h.%d.mlp.%s" : "model.layers.%d.mlp.%s", b,
                 gpt ? (k ? "c_proj" : "c_fc") : (k ? "down_proj" : "gate_up_proj"));
}

/* Piece i of entry e: HF `name`, rows [r0, r0 + rows). */
static void piece(bg_hf_entry_t *e, const char *name, int64_t r0, int64_t rows, bool t)
{
    bg_hf_piece_t *p = &e->piece[e->n++];
    size_t n = strlen(name) < sizeof(p->name) ? strlen(name) : sizeof(p->name) - 1;
    memcpy(p->name, name, n); /* names are short: the family's words and a block number */
    p->name[n] = 0;
    p->r0 = r0;
    p->rows = rows;
    p->transposed = t;
}

/*
 * The pieces of parameter `suffix` (R rows) of a layer with HF base `base`.
 * Stacked parameters split into their HF parts unless merged: attention's
 * qkv (q: C rows, k and v: (R - C) / 2 each) and Llama's w13 (gate, up).
 */
static void map_param(bg_hf_family_t fam, bool merged, const char *base, const char *kind,
                      const char *suffix, int64_t R, int64_t C, bool conv1d, bg_hf_entry_t *e)
{
    char nm[BG_HF_NAME_MAX + 64];
    const char *wb = strrchr(suffix, '.') ? strrchr(suffix, '.') + 1 : suffix; /* weight|bias */
    bool llama = fam == BG_HF_LLAMA, att = !strcmp(kind, "attention");
    bool split =
        llama && !merged && (att ? !strncmp(suffix, "qkv.", 4) : strstr(base, "gate_up") != NULL);
    if (!strcmp(kind, "embedding")) {
        snprintf(nm, sizeof(nm), "%s%s.weight", base,
                 llama                       ? ""
                 : !strcmp(suffix, "tokens") ? "wte"
                                             : "wpe");
        piece(e, nm, 0, R, false);
    } else if (split && att) {
        const char *q[3] = {"q_proj", "k_proj", "v_proj"};
        int64_t r0[3] = {0, C, C + (R - C) / 2}, rows[3] = {C, (R - C) / 2, (R - C) / 2};
        for (int i = 0; i < 3; i++) {
            snprintf(nm, sizeof(nm), "%s.%s.%s", base, q[i], wb);
            piece(e, nm, r0[i], rows[i], false);
        }
    } else if (split) {
        int64_t F = R / 2;
        snprintf(nm, sizeof(nm), "%.*sgate_proj.%s", (int)(strlen(base) - 12), base, wb);
        piece(e, nm, 0, F, false);
        snprintf(nm, sizeof(nm), "%.*sup_proj.%s", (int)(strlen(base) - 12), base, wb);
        piece(e, nm, F, F, false);
    } else if (att) {
        bool qkv = !strncmp(suffix, "qkv.", 4);
        snprintf(nm, sizeof(nm), "%s.%s.%s", base,
                 llama ? (qkv ? "qkv_proj" : "o_proj") : (qkv ? "c_attn" : "c_proj"), wb);
        piece(e, nm, 0, R, !llama && !strcmp(wb, "weight"));
    } else {
        snprintf(nm, sizeof(nm), "%s.%s", base, wb);
        piece(e, nm, 0, R, conv1d && !strcmp(wb, "weight"));
    }
}

/* Entries for the parameters layer l owns. */
static bg_status_t map_layer(const bg_graph_t *g, int l, bg_hf_family_t fam, bool merged, walk_t *w,
                             bg_hf_map_t *m)
{
    const bg_graph_layer_t *L = bg_graph_layer(g, l);
    int b = block_of(L->spec.name);
    if (b != w->block)
        *w = (walk_t){b, 0, 0};
    char base[BG_HF_NAME_MAX];
    bool conv1d;
    hf_base(fam, L->spec.kind->name, b, w, base, sizeof(base), &conv1d);
    bool owns = false;
    for (int j = 0; j < L->n_params; j++)
        owns |= bg_graph_param(g, L->param[j])->owner == l;
    if (!owns)
        return BG_OK;
    if (!base[0] && strcmp(L->spec.kind->name, "embedding"))
        return bg_errorf(BG_ERR_INVALID,
                         "layer %s (%s) has no place in a %s block: cannot name its parameters",
                         L->spec.name, L->spec.kind->name, fam == BG_HF_GPT2 ? "GPT-2" : "Llama");
    for (int j = 0; j < L->n_params; j++) {
        const bg_graph_param_t *P = bg_graph_param(g, L->param[j]);
        if (P->owner != l)
            continue;
        bg_hf_entry_t *e = &m->e[m->n++];
        memset(e, 0, sizeof(*e));
        e->param = L->param[j];
        map_param(fam, merged, base, L->spec.kind->name, L->slot[j].suffix, P->desc.shape.d[0],
                  L->spec.in[0].d[L->spec.in[0].ndim - 1], conv1d, e);
    }
    return BG_OK;
}

bg_status_t bg_hf_map_build(const bg_graph_t *g, bg_hf_family_t fam, bool merged, bg_hf_map_t *out)
{
    bg_hf_map_t m = {fam, 0, calloc((size_t)bg_graph_n_params(g) + 1, sizeof(bg_hf_entry_t))};
    if (!m.e)
        return bg_errorf(BG_ERR_NOMEM, "out of memory mapping parameter names");
    walk_t w = {-2, 0, 0};
    for (int l = 0; l < bg_graph_n_layers(g); l++) {
        bg_status_t st = map_layer(g, l, fam, merged, &w, &m);
        if (st != BG_OK) {
            free(m.e);
            return st;
        }
    }
    *out = m;
    return BG_OK;
}

void bg_hf_map_free(bg_hf_map_t *m)
{
    free(m->e);
    memset(m, 0, sizeof(*m));
}

void bg_hf_alt_name(bg_hf_family_t fam, const char *name, char *out, size_t n)
{
    out[0] = 0;
    if (fam == BG_HF_GPT2)
        snprintf(out, n, "transformer.%s", name);
    else if (!strncmp(name, "model.", 6))
        snprintf(out, n, "%s", name + 6);
}

bool bg_hf_is_buffer(const char *name)
{
    size_t n = strlen(name);
    static const char *const ends[] = {".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"};
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
        size_t k = strlen(ends[i]);
        if (n >= k && !strcmp(name + n - k, ends[i]))
            return true;
    }
    return false;
}
