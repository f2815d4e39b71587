/*
 * layers/graph.c -- the graph container: construction calls used by the
 * parser, the derived lists (consumers, sharing users), totals, accessors,
 * and the small string map / edit distance the parser needs.
 * Must not parse text (layers/graph_parse.c does) nor print anything.
 */
#include "layers/graph_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- string map ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int64_t *bg_strmap_get(const bg_strmap_t *m, const char *key)
{
    if (!m->cap) return NULL;
    uint64_t h = hash_str(key);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        bg_strmap_entry_t *e = &m->e[i];
        if (!e->key) return NULL;
        if (e->hash == h && !strcmp(e->key, key)) return &e->val;
    }
}

/* Place an entry whose key is already owned; the table has a free slot. */
static void strmap_place(bg_strmap_t *m, bg_strmap_entry_t ent)
{
    size_t i = ent.hash & (m->cap - 1);
    while (m->e[i].key) i = (i + 1) & (m->cap - 1);
    m->e[i] = ent;
}

static bg_status_t strmap_grow(bg_strmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    bg_strmap_entry_t *old = m->e, *e = calloc(cap, sizeof(*e));
    if (!e) return bg_errorf(BG_ERR_NOMEM, "out of memory growing a name table");
    size_t oldcap = m->cap;
    m->e = e;
    m->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) strmap_place(m, old[i]);
    free(old);
    return BG_OK;
}

bg_status_t bg_strmap_put(bg_strmap_t *m, const char *key, int64_t val)
{
    int64_t *v = bg_strmap_get(m, key);
    if (v) {
        *v = val;
        return BG_OK;
    }
    /* Keep the load under 1/2 so probes stay short. */
    if ((m->n + 1) * 2 > m->cap) {
        bg_status_t st = strmap_grow(m);
        if (st != BG_OK) return st;
    }
    bg_strmap_entry_t ent = {.key = strdup(key), .hash = hash_str(key), .val = val};
    if (!ent.key) return bg_errorf(BG_ERR_NOMEM, "out of memory storing a name");
    strmap_place(m, ent);
    m->n++;
    return BG_OK;
}

void bg_strmap_free(bg_strmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->e[i].key);
    free(m->e);
    memset(m, 0, sizeof(*m));
}

/* ---- edit distance ---- */

int bg_edit_distance(const char *a, const char *b, int max)
{
    /* Optimal string alignment: Levenshtein plus adjacent transpositions
     * ("widht" -> "width" is one typo, not two). Three rolling rows. */
    size_t la = strlen(a), lb = strlen(b);
    if (la > BG_NAME_MAX || lb > BG_NAME_MAX) return max + 1;
    if ((la > lb ? la - lb : lb - la) > (size_t)max) return max + 1;
    int r0[BG_NAME_MAX + 1], r1[BG_NAME_MAX + 1], r2[BG_NAME_MAX + 1];
    int *pp = r0, *prev = r1, *row = r2; /* rows i-2, i-1, i */
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        row[0] = (int)i;
        int best = row[0];
        for (size_t j = 1; j <= lb; j++) {
            int v = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < v) v = prev[j] + 1;
            if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < v)
                v = pp[j - 2] + 1;
            row[j] = v;
            if (v < best) best = v;
        }
        /* A transposition can lower the next row by reaching back two rows,
         * so only stop when both of the last rows are over budget. */
        int prev_best = prev[0];
        for (size_t j = 1; j <= lb; j++)
            if (prev[j] < prev_best) prev_best = prev[j];
        if (best > max && prev_best > max) return max + 1;
        int *t = pp;
        pp = prev;
        prev = row;
        row = t;
    }
    return prev[lb] <= max ? prev[lb] : max + 1;
}

int bg_typo_budget(const char *name)
{
    size_t n = strlen(name);
    /* One letter names ("h" vs "x") are never typos of each other. */
    return n <= 1 ? 0 : n <= 5 ? 1 : n <= 10 ? 2 : 3;
}

/* ---- construction ---- */

bg_status_t bg_graph_new(const char *source, int64_t batch, bg_graph_t **out)
{
    bg_graph_t *g = calloc(1, sizeof(*g));
    if (!g) return bg_errorf(BG_ERR_NOMEM, "out of memory allocating a graph");
    snprintf(g->source, sizeof(g->source), "%s", source ? source : "");
    g->batch = batch;
    g->loss_tensor = g->loss_layer = -1;
    *out = g;
    return BG_OK;
}

/* Make room for one more element of `size` bytes in *arr (count n, capacity *cap). */
static bg_status_t grow(void **arr, int n, int *cap, size_t size)
{
    if (n < *cap) return BG_OK;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * size);
    if (!p) return bg_errorf(BG_ERR_NOMEM, "out of memory growing the graph");
    *arr = p;
    *cap = nc;
    return BG_OK;
}

bg_status_t bg_graph_add_tensor(bg_graph_t *g, const char *name, const char *var,
                                const bg_shape_t *shape, int producer, int input, int *id)
{
    bg_status_t st = grow((void **)&g->tensors, g->n_tensors, &g->cap_tensors, sizeof(*g->tensors));
    if (st != BG_OK) return st;
    bg_graph_tensor_t *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->var, sizeof(t->var), "%s", var);
    t->shape = *shape;
    t->producer = producer;
    t->input = input;
    *id = g->n_tensors++;
    return BG_OK;
}

bg_status_t bg_graph_add_input(bg_graph_t *g, const bg_graph_input_t *in, int *id)
{
    bg_status_t st = grow((void **)&g->inputs, g->n_inputs, &g->cap_inputs, sizeof(*g->inputs));
    if (st == BG_OK) st = bg_strmap_put(&g->input_ids, in->name, g->n_inputs);
    if (st != BG_OK) return st;
    g->inputs[g->n_inputs] = *in;
    *id = g->n_inputs++;
    return BG_OK;
}

bg_status_t bg_graph_add_layer(bg_graph_t *g, const bg_graph_layer_t *l, int *id)
{
    bg_status_t st = grow((void **)&g->layers, g->n_layers, &g->cap_layers, sizeof(*g->layers));
    if (st == BG_OK) st = bg_strmap_put(&g->layer_ids, l->spec.name, g->n_layers);
    if (st != BG_OK) return st;
    g->layers[g->n_layers] = *l;
    *id = g->n_layers++;
    return BG_OK;
}

bg_status_t bg_graph_add_param(bg_graph_t *g, const bg_graph_param_t *p, int *id)
{
    bg_status_t st = grow((void **)&g->params, g->n_params, &g->cap_params, sizeof(*g->params));
    if (st == BG_OK) st = bg_strmap_put(&g->param_ids, p->name, g->n_params);
    if (st != BG_OK) return st;
    g->params[g->n_params] = *p;
    *id = g->n_params++;
    return BG_OK;
}

/* Does list[0..n) already end with x? Layers are visited in ascending order,
 * so a duplicate (add(x, x)) can only be the last entry. */
static int ends_with(const int *list, int n, int x)
{
    return n > 0 && list[n - 1] == x;
}

bg_status_t bg_graph_finish(bg_graph_t *g)
{
    /* One pool for all lists: consumers (<= BG_MAX_INPUTS per layer) and
     * sharing users (<= BG_MAX_PARAMS per layer). */
    size_t need = (size_t)g->n_layers * (BG_MAX_INPUTS + BG_MAX_PARAMS) + 1;
    int *pool = malloc(need * sizeof(int));
    if (!pool) return bg_errorf(BG_ERR_NOMEM, "out of memory finishing the graph");
    int *cnt = calloc((size_t)g->n_tensors + (size_t)g->n_params + 1, sizeof(int));
    if (!cnt) {
        free(pool);
        return bg_errorf(BG_ERR_NOMEM, "out of memory finishing the graph");
    }
    int *pcnt = cnt + g->n_tensors;
    /* Count first so each list gets a contiguous slice. */
    for (int l = 0; l < g->n_layers; l++) {
        const bg_graph_layer_t *L = &g->layers[l];
        for (int i = 0; i < L->spec.n_in; i++) cnt[L->in[i]]++;
        for (int j = 0; j < L->n_params; j++)
            if (g->params[L->param[j]].owner != l) pcnt[L->param[j]]++;
    }
    size_t off = 0;
    for (int t = 0; t < g->n_tensors; t++) {
        g->tensors[t].consumers = pool + off;
        g->tensors[t].n_consumers = 0;
        off += (size_t)cnt[t];
    }
    for (int p = 0; p < g->n_params; p++) {
        g->params[p].users = pool + off;
        g->params[p].n_users = 0;
        off += (size_t)pcnt[p];
    }
    free(cnt);
    memset(&g->totals, 0, sizeof(g->totals));
    for (int l = 0; l < g->n_layers; l++) {
        bg_graph_layer_t *L = &g->layers[l];
        for (int i = 0; i < L->spec.n_in; i++) {
            bg_graph_tensor_t *t = &g->tensors[L->in[i]];
            int *list = (int *)t->consumers;
            if (!ends_with(list, t->n_consumers, l)) list[t->n_consumers++] = l;
        }
        for (int j = 0; j < L->n_params; j++) {
            bg_graph_param_t *p = &g->params[L->param[j]];
            int *list = (int *)p->users;
            if (p->owner != l && !ends_with(list, p->n_users, l)) list[p->n_users++] = l;
        }
        bg_layer_cost(&L->spec, BG_F32, &L->cost);
        g->totals.params += L->cost.params;
        g->totals.fwd_flops += L->cost.fwd_flops;
        g->totals.bwd_input_flops += L->cost.bwd_input_flops;
        g->totals.bwd_weight_flops += L->cost.bwd_weight_flops;
        g->totals.kept_bytes += L->cost.input_bytes + L->cost.saved_bytes;
    }
    free(g->pool);
    g->pool = pool;
    return BG_OK;
}

void bg_graph_free(bg_graph_t *g)
{
    if (!g) return;
    free(g->inputs);
    free(g->layers);
    free(g->tensors);
    free(g->params);
    free(g->pool);
    bg_strmap_free(&g->layer_ids);
    bg_strmap_free(&g->param_ids);
    bg_strmap_free(&g->input_ids);
    free(g);
}

/* ---- accessors ---- */

const char *bg_graph_model_name(const bg_graph_t *g) { return g->model; }
const char *bg_graph_source_name(const bg_graph_t *g) { return g->source; }
int64_t bg_graph_batch(const bg_graph_t *g) { return g->batch; }
int bg_graph_n_inputs(const bg_graph_t *g) { return g->n_inputs; }
int bg_graph_n_layers(const bg_graph_t *g) { return g->n_layers; }
int bg_graph_n_tensors(const bg_graph_t *g) { return g->n_tensors; }
int bg_graph_n_params(const bg_graph_t *g) { return g->n_params; }

const bg_graph_input_t *bg_graph_input(const bg_graph_t *g, int id)
{
    return id >= 0 && id < g->n_inputs ? &g->inputs[id] : NULL;
}

const bg_graph_layer_t *bg_graph_layer(const bg_graph_t *g, int id)
{
    return id >= 0 && id < g->n_layers ? &g->layers[id] : NULL;
}

const bg_graph_tensor_t *bg_graph_tensor(const bg_graph_t *g, int id)
{
    return id >= 0 && id < g->n_tensors ? &g->tensors[id] : NULL;
}

const bg_graph_param_t *bg_graph_param(const bg_graph_t *g, int id)
{
    return id >= 0 && id < g->n_params ? &g->params[id] : NULL;
}

static int find_id(const bg_strmap_t *m, const char *name)
{
    const int64_t *v = bg_strmap_get(m, name);
    return v ? (int)*v : -1;
}

int bg_graph_find_input(const bg_graph_t *g, const char *name) { return find_id(&g->input_ids, name); }
int bg_graph_find_layer(const bg_graph_t *g, const char *path) { return find_id(&g->layer_ids, path); }
int bg_graph_find_param(const bg_graph_t *g, const char *name) { return find_id(&g->param_ids, name); }
int bg_graph_loss_tensor(const bg_graph_t *g) { return g->loss_tensor; }
int bg_graph_loss_layer(const bg_graph_t *g) { return g->loss_layer; }
const bg_graph_totals_t *bg_graph_totals(const bg_graph_t *g) { return &g->totals; }
