/*
 * partition/trace_profile.c -- per-layer times from a training trace
 * (partition/trace_profile.h). Medians, not means: one slow micro-batch
 * must not move the split. Measures nothing itself.
 */
#include "partition/trace_profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/json_util.h"
#include "partition/plan_io.h"
#include "partition/profile.h"

enum { K_F, K_B, K_W, K_BW, K_N };

typedef struct trace_ev {
    int chunk, kind;
    double dur; /* seconds */
} trace_ev_t;

static int kind_of(const char *cat)
{
    static const char *names[K_N] = {"F", "B", "W", "BW"};
    for (int k = 0; k < K_N; k++)
        if (!strcmp(cat, names[k])) return k;
    return -1;
}

/* The F, B, W and BW events of the trace into *ev, *n (caller frees *ev). */
static bg_status_t collect(const cJSON *root, const char *what, int n_chunks, trace_ev_t **ev,
                           size_t *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "traceEvents");
    if (!cJSON_IsArray(arr)) return bg_errorf(BG_ERR_INVALID, "%s: no \"traceEvents\" array", what);
    trace_ev_t *v = NULL;
    size_t cap = 0, len = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *cat = cJSON_GetObjectItemCaseSensitive(e, "cat");
        const cJSON *dur = cJSON_GetObjectItemCaseSensitive(e, "dur");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(e, "args");
        const cJSON *ch = args ? cJSON_GetObjectItemCaseSensitive(args, "chunk") : NULL;
        int k = cJSON_IsString(cat) ? kind_of(cat->valuestring) : -1;
        if (k < 0) continue; /* sends, allreduce, optimizer, metadata */
        if (!cJSON_IsNumber(dur) || !cJSON_IsNumber(ch) || dur->valuedouble < 0) {
            free(v);
            return bg_errorf(BG_ERR_INVALID, "%s: a %s event without a duration or chunk", what,
                             cat->valuestring);
        }
        if (ch->valueint < 0 || ch->valueint >= n_chunks) {
            free(v);
            return bg_errorf(BG_ERR_INVALID,
                             "%s: an event of chunk %d, but the traced plan has %d chunk(s)", what,
                             ch->valueint, n_chunks);
        }
        if (bg_grow(&v, &cap, len + 1, sizeof(*v))) {
            free(v);
            return bg_errorf(BG_ERR_NOMEM, "%s: out of memory for events", what);
        }
        v[len++] = (trace_ev_t){ch->valueint, k, dur->valuedouble * 1e-6};
    }
    *ev = v;
    *n = len;
    return BG_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median duration of chunk g's events of kind k; -1 when there are none.
 * scratch holds n doubles. */
static double median_of(const trace_ev_t *ev, size_t n, int g, int k, double *scratch)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (ev[i].chunk == g && ev[i].kind == k) scratch[c++] = ev[i].dur;
    if (!c) return -1;
    qsort(scratch, c, sizeof(double), cmp_double);
    return c % 2 ? scratch[c / 2] : 0.5 * (scratch[c / 2 - 1] + scratch[c / 2]);
}

/* Spread `total` over layers [i, j) in proportion to x (evenly when x sums
 * to 0) into y. */
static void spread(double total, const double *x, int i, int j, double *y, size_t stride)
{
    double s = 0;
    for (int l = i; l < j; l++) s += x[l];
    for (int l = i; l < j; l++)
        *(double *)((char *)y + (size_t)l * stride) = s > 0 ? total * x[l] / s : total / (j - i);
}

/* Chunk g's F, B, W medians into t[3] (BW split by the roofline B:W). */
static bg_status_t chunk_times(const trace_ev_t *ev, size_t n, const bg_costs_t *roof, int g,
                               int i, int j, const char *what, double *scratch, double *t)
{
    double m[K_N];
    for (int k = 0; k < K_N; k++) m[k] = median_of(ev, n, g, k, scratch);
    if (m[K_F] < 0 || (m[K_B] < 0 && m[K_BW] < 0))
        return bg_errorf(BG_ERR_INVALID, "%s: no %s event for chunk %d (layers %d..%d)", what,
                         m[K_F] < 0 ? "F" : "B or BW", g, i, j - 1);
    t[0] = m[K_F];
    if (m[K_B] >= 0) {
        t[1] = m[K_B];
        t[2] = m[K_W] > 0 ? m[K_W] : 0;
    } else {
        double rb = roof->pb[j] - roof->pb[i], rw = roof->pw[j] - roof->pw[i];
        double share = rb + rw > 0 ? rb / (rb + rw) : 1.0;
        t[1] = m[K_BW] * share;
        t[2] = m[K_BW] - t[1];
    }
    return BG_OK;
}

bg_status_t bg_profile_from_trace(const char *path, const bg_costs_t *roof, const int *bounds,
                                  int n_chunks, bg_profile_t *out)
{
    const bg_chain_t *ch = roof->chain;
    if (n_chunks < 1 || bounds[0] != 0 || bounds[n_chunks] != ch->n_layers)
        return bg_errorf(BG_ERR_INVALID, "%s: the traced plan's split does not cover the %d layers",
                         path, ch->n_layers);
    cJSON *root = NULL;
    bg_status_t st = bg_json_load_file(path, &root);
    if (st) return st;
    trace_ev_t *ev = NULL;
    size_t n = 0;
    double *scratch = NULL;
    bg_profile_t p = {0};
    if ((st = collect(root, path, n_chunks, &ev, &n))) goto err_json;
    scratch = malloc(sizeof(double) * (n ? n : 1));
    if (!scratch) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_ev;
    }
    if ((st = bg_profile_alloc(ch->n_layers, &p))) goto err_ev;
    snprintf(p.device, sizeof(p.device), "trace");
    p.dtype = ch->dtype;
    p.micro_batch = roof->micro_batch;
    for (int g = 0; g < n_chunks && !st; g++) {
        int i = bounds[g], j = bounds[g + 1];
        double t[3] = {0, 0, 0};
        if (j <= i) {
            st = bg_errorf(BG_ERR_INVALID, "%s: chunk %d of the traced plan is empty", path, g);
            break;
        }
        if ((st = chunk_times(ev, n, roof, g, i, j, path, scratch, t))) break;
        spread(t[0], roof->f, i, j, &p.layer[0].f, sizeof(p.layer[0]));
        spread(t[1], roof->b, i, j, &p.layer[0].b, sizeof(p.layer[0]));
        spread(t[2], roof->w, i, j, &p.layer[0].w, sizeof(p.layer[0]));
    }
    for (int l = 0; l < ch->n_layers; l++)
        snprintf(p.layer[l].name, sizeof(p.layer[l].name), "%s", ch->layer[l].name);
    if (st) {
        bg_profile_free(&p);
        goto err_ev;
    }
    *out = p;
err_ev:
    free(scratch);
    free(ev);
err_json:
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_profile_from_traced_plan(const char *trace, const char *plan,
                                        const bg_chain_t *chain, const bg_device_desc_t *dev,
                                        bg_profile_t *out)
{
    bg_plan_file_t pf;
    bg_status_t st = bg_plan_load(plan, &pf);
    if (st) return st;
    bg_costs_t roof;
    if (pf.n_layers != chain->n_layers) {
        st = bg_errorf(BG_ERR_INVALID, "%s: a plan of %d layers, but the model has %d", plan,
                       pf.n_layers, chain->n_layers);
        goto err_pf;
    }
    if ((st = bg_costs_build(chain, dev, pf.micro_batch, NULL, &roof))) goto err_pf;
    st = bg_profile_from_trace(trace, &roof, pf.bounds, pf.n_chunks, out);
    bg_costs_free(&roof);
err_pf:
    bg_plan_file_free(&pf);
    return st;
}

bg_status_t bg_profile_from_traced_run(const char *trace, const char *plan, bg_profile_t *out)
{
    bg_plan_file_t pf;
    bg_graph_t *g = NULL;
    bg_chain_t chain = {0};
    bg_device_desc_t dev;
    bg_status_t st = bg_plan_load(plan, &pf);
    if (st)
        return st;
    pf.device[strcspn(pf.device, ",")] = '\0'; /* a plan over several: the first prices */
    st = bg_graph_parse_file(pf.model, 1, &g);
    if (st)
        bg_error_prefix(st, "%s names model %s: ", plan, pf.model);
    if (!st)
        st = bg_chain_from_graph(g, pf.dtype, &chain);
    if (!st)
        st = bg_device_preset(pf.device[0] ? pf.device : "cpu", &dev);
    if (!st)
        st = bg_profile_from_traced_plan(trace, plan, &chain, &dev, out);
    bg_chain_free(&chain);
    bg_graph_free(g);
    bg_plan_file_free(&pf);
    return st;
}
