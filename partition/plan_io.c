/*
 * partition/plan_io.c -- writing and loading plan files (partition/plan_io.h).
 * A loaded plan is checked for structure here; whether it fits the model
 * the engine parsed is bg_plan_file_check_layers. Runs nothing.
 */
#include "partition/plan_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "partition/json_util.h"

void bg_plan_file_free(bg_plan_file_t *pf)
{
    if (!pf) return;
    free(pf->bounds);
    free(pf->layer);
    memset(pf, 0, sizeof(*pf));
}

static cJSON *chunk_json(const bg_plan_t *plan, const bg_chain_t *chain, int g)
{
    const bg_chunk_eval_t *e = &plan->chunk[g];
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "chunk", g);
    cJSON_AddNumberToObject(o, "stage", e->stage);
    cJSON_AddNumberToObject(o, "first", e->first);
    cJSON_AddNumberToObject(o, "end", e->end);
    cJSON *names = cJSON_AddArrayToObject(o, "layers");
    for (int l = e->first; names && l < e->end; l++)
        cJSON_AddItemToArray(names, cJSON_CreateString(chain->layer[l].name));
    cJSON_AddNumberToObject(o, "in_flight", e->in_flight);
    cJSON_AddNumberToObject(o, "fwd_s", e->f);
    cJSON_AddNumberToObject(o, "bwd_input_s", e->b);
    cJSON_AddNumberToObject(o, "bwd_weight_s", e->w);
    cJSON_AddNumberToObject(o, "comm_s", e->comm);
    cJSON_AddNumberToObject(o, "params", (double)e->params);
    cJSON_AddNumberToObject(o, "memory_bytes", (double)e->mem);
    return o;
}

bg_status_t bg_plan_save(const char *path, const bg_plan_t *plan, const bg_chain_t *chain,
                         const bg_plan_meta_t *meta)
{
    if (chain->n_layers != plan->n_layers)
        return bg_errorf(BG_ERR_INVALID, "plan has %d layers, chain %d", plan->n_layers,
                         chain->n_layers);
    cJSON *root = cJSON_CreateObject();
    if (!root) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    const bg_part_config_t *c = &plan->cfg;
    int64_t gb = (int64_t)plan->micro_batch * c->micro_batches * c->dp;
    cJSON_AddStringToObject(root, "format", "brigade-plan");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "model", meta && meta->model ? meta->model : "");
    cJSON_AddStringToObject(root, "method", meta && meta->method ? meta->method : "optimal");
    cJSON_AddStringToObject(root, "device", meta && meta->device ? meta->device : "");
    cJSON_AddStringToObject(root, "dtype", bg_dtype_name(chain->dtype));
    cJSON_AddStringToObject(root, "schedule", bg_sched_kind_name(c->schedule));
    cJSON_AddNumberToObject(root, "stages", c->stages);
    cJSON_AddNumberToObject(root, "chunks_per_stage", c->chunks);
    cJSON_AddNumberToObject(root, "dp", c->dp);
    cJSON_AddNumberToObject(root, "micro_batches", c->micro_batches);
    cJSON_AddNumberToObject(root, "micro_batch_size", plan->micro_batch);
    cJSON_AddNumberToObject(root, "global_batch", (double)gb);
    cJSON_AddBoolToObject(root, "recompute", c->recompute);
    cJSON_AddNumberToObject(root, "zero", c->zero);
    cJSON_AddNumberToObject(root, "optimizer_state_bytes", c->opt_state_bytes);
    cJSON_AddNumberToObject(root, "n_layers", plan->n_layers);
    cJSON *chunks = cJSON_AddArrayToObject(root, "chunks");
    bg_status_t st = BG_OK;
    for (int g = 0; chunks && g < plan->n_chunks; g++) {
        cJSON *o = chunk_json(plan, chain, g);
        if (!o || !cJSON_AddItemToArray(chunks, o)) {
            cJSON_Delete(o);
            st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
            goto err_free;
        }
    }
    cJSON *pred = cJSON_AddObjectToObject(root, "predicted");
    if (!chunks || !pred) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_free;
    }
    cJSON_AddNumberToObject(pred, "step_s", plan->step_s);
    cJSON_AddNumberToObject(pred, "pipeline_s", plan->pipe_s);
    cJSON_AddNumberToObject(pred, "bubble", plan->bubble);
    cJSON_AddNumberToObject(pred, "samples_per_s", plan->step_s > 0 ? (double)gb / plan->step_s : 0.0);
    cJSON_AddNumberToObject(pred, "bottleneck_s", plan->bottleneck);
    cJSON_AddNumberToObject(pred, "peak_memory_bytes", (double)plan->peak_mem);
    cJSON_AddBoolToObject(pred, "fits", plan->fits);
    st = bg_json_save_file(path, root);
err_free:
    cJSON_Delete(root);
    return st;
}

static bg_status_t parse_header(const cJSON *r, const char *what, bg_plan_file_t *pf)
{
    char buf[64];
    int64_t v;
    bg_status_t st;
    if ((st = bg_json_get_str(r, "format", what, buf, sizeof(buf)))) return st;
    if (strcmp(buf, "brigade-plan"))
        return bg_errorf(BG_ERR_INVALID, "%s: format is '%s', not 'brigade-plan'", what, buf);
    if ((st = bg_json_get_int(r, "version", what, 1, 1, &v))) return st;
    if ((st = bg_json_get_str(r, "model", what, pf->model, sizeof(pf->model)))) return st;
    if ((st = bg_json_get_str(r, "method", what, pf->method, sizeof(pf->method)))) return st;
    if ((st = bg_json_get_str(r, "device", what, pf->device, sizeof(pf->device)))) return st;
    if ((st = bg_json_get_dtype(r, "dtype", what, &pf->dtype))) return st;
    if ((st = bg_json_get_str(r, "schedule", what, buf, sizeof(buf)))) return st;
    if ((st = bg_sched_kind_parse(buf, &pf->cfg.schedule))) return bg_error_prefix(st, "%s: ", what);
    const int64_t big = 1 << 24;
    if ((st = bg_json_get_int(r, "stages", what, 1, big, &v))) return st;
    pf->cfg.stages = (int)v;
    if ((st = bg_json_get_int(r, "chunks_per_stage", what, 1, big, &v))) return st;
    pf->cfg.chunks = (int)v;
    if ((st = bg_json_get_int(r, "dp", what, 1, big, &v))) return st;
    pf->cfg.dp = (int)v;
    if ((st = bg_json_get_int(r, "micro_batches", what, 1, big, &v))) return st;
    pf->cfg.micro_batches = (int)v;
    if ((st = bg_json_get_int(r, "micro_batch_size", what, 1, big, &v))) return st;
    pf->micro_batch = (int)v;
    if ((st = bg_json_get_int(r, "global_batch", what, 1, INT64_C(1) << 50, &pf->global_batch)))
        return st;
    int64_t mm = 0, gb = -1; /* each factor < 2^24: a file may still make the product wrap */
    if (!bg_mul_i64(pf->micro_batch, pf->cfg.micro_batches, &mm) || !bg_mul_i64(mm, pf->cfg.dp, &gb))
        gb = -1;
    if (pf->global_batch != gb)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: global_batch %lld is not micro_batch_size x micro_batches x dp", what,
                         (long long)pf->global_batch);
    if ((st = bg_json_get_bool(r, "recompute", what, &pf->cfg.recompute))) return st;
    /* Optional: plans written before ZeRO-1 existed were all zero 0. */
    pf->cfg.zero = 0;
    if (cJSON_GetObjectItemCaseSensitive(r, "zero")) {
        if ((st = bg_json_get_int(r, "zero", what, 0, 1, &v))) return st;
        pf->cfg.zero = (int)v;
    }
    if ((st = bg_json_get_int(r, "optimizer_state_bytes", what, 0, 64, &v))) return st;
    pf->cfg.opt_state_bytes = (int)v;
    if ((st = bg_json_get_int(r, "n_layers", what, 1, 1 << 24, &v))) return st;
    pf->n_layers = (int)v;
    if ((st = bg_part_config_check(&pf->cfg, pf->n_layers))) return bg_error_prefix(st, "%s: ", what);
    return BG_OK;
}

/* One chunk: its position, rank, and names; contiguity is checked here. */
static bg_status_t parse_chunk(const cJSON *o, const char *what, int g, bg_plan_file_t *pf)
{
    char w[600];
    snprintf(w, sizeof(w), "%s: chunks[%d]", what, g);
    int64_t v, first, end;
    bg_status_t st;
    if ((st = bg_json_get_int(o, "chunk", w, g, g, &v))) return st;
    const bg_sched_desc_t *d = bg_sched_desc(pf->cfg.schedule);
    int rank = bg_sched_chunk_rank_of(d, pf->cfg.stages, g);
    if ((st = bg_json_get_int(o, "stage", w, rank, rank, &v)))
        return bg_error_prefix(st, d->place == BG_SCHED_PLACE_V
                                       ? "%s places chunk g on rank g or 2*stages-1-g (a V): "
                                       : "%s: chunk g runs on rank g %% stages: ",
                               d->name);
    if ((st = bg_json_get_int(o, "first", w, pf->bounds[g], pf->bounds[g], &first)))
        return bg_error_prefix(st, "chunks must be contiguous: ");
    if ((st = bg_json_get_int(o, "end", w, first + 1, pf->n_layers, &end))) return st;
    pf->bounds[g + 1] = (int)end;
    const cJSON *names;
    if ((st = bg_json_get_array(o, "layers", w, &names))) return st;
    if (cJSON_GetArraySize(names) != end - first)
        return bg_errorf(BG_ERR_INVALID, "%s: %d layer names for layers [%lld, %lld)", w,
                         cJSON_GetArraySize(names), (long long)first, (long long)end);
    int l = (int)first;
    const cJSON *e;
    cJSON_ArrayForEach(e, names)
    {
        if (!cJSON_IsString(e) || strlen(e->valuestring) >= BG_NAME_MAX || !e->valuestring[0])
            return bg_errorf(BG_ERR_INVALID, "%s: layers[%d] must be a layer name", w,
                             l - (int)first);
        strcpy(pf->layer[l++], e->valuestring);
    }
    return BG_OK;
}

static bg_status_t plan_from_json(const cJSON *r, const char *what, bg_plan_file_t *out)
{
    bg_plan_file_t pf;
    memset(&pf, 0, sizeof(pf));
    bg_status_t st = parse_header(r, what, &pf);
    if (st) return st;
    const cJSON *chunks, *pred;
    if ((st = bg_json_get_array(r, "chunks", what, &chunks))) return st;
    pf.n_chunks = pf.cfg.stages * pf.cfg.chunks;
    if (cJSON_GetArraySize(chunks) != pf.n_chunks)
        return bg_errorf(BG_ERR_INVALID, "%s: %d chunks listed, stages x chunks_per_stage = %d", what,
                         cJSON_GetArraySize(chunks), pf.n_chunks);
    pf.bounds = calloc((size_t)pf.n_chunks + 1, sizeof(int));
    pf.layer = calloc((size_t)pf.n_layers, sizeof(*pf.layer));
    if (!pf.bounds || !pf.layer) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", what);
        goto err_free;
    }
    int g = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, chunks)
    {
        if ((st = parse_chunk(o, what, g, &pf))) goto err_free;
        g++;
    }
    if (pf.bounds[pf.n_chunks] != pf.n_layers) {
        st = bg_errorf(BG_ERR_INVALID, "%s: chunks end at layer %d but n_layers is %d", what,
                       pf.bounds[pf.n_chunks], pf.n_layers);
        goto err_free;
    }
    if (!cJSON_IsObject(pred = cJSON_GetObjectItemCaseSensitive(r, "predicted"))) {
        st = bg_errorf(BG_ERR_INVALID, "%s: key 'predicted' missing or not an object", what);
        goto err_free;
    }
    char pw[600];
    snprintf(pw, sizeof(pw), "%s: predicted", what);
    double peak;
    if ((st = bg_json_get_num(pred, "step_s", pw, 0, &pf.step_s)) ||
        (st = bg_json_get_num(pred, "pipeline_s", pw, 0, &pf.pipe_s)) ||
        (st = bg_json_get_num(pred, "bubble", pw, 0, &pf.bubble)) ||
        (st = bg_json_get_num(pred, "samples_per_s", pw, 0, &pf.samples_per_s)) ||
        (st = bg_json_get_num(pred, "bottleneck_s", pw, 0, &pf.bottleneck_s)) ||
        (st = bg_json_get_num(pred, "peak_memory_bytes", pw, 0, &peak)))
        goto err_free;
    if (!(peak < 0x1p63)) { /* the int64_t it becomes */
        st = bg_errorf(BG_ERR_INVALID, "%s: peak_memory_bytes %g is out of range", pw, peak);
        goto err_free;
    }
    pf.peak_mem = (int64_t)peak;
    *out = pf;
    return BG_OK;
err_free:
    bg_plan_file_free(&pf);
    return st;
}

bg_status_t bg_plan_parse(const char *text, size_t len, const char *what, bg_plan_file_t *out)
{
    cJSON *root;
    bg_status_t st = bg_json_parse(text, len, what, &root);
    if (st) return st;
    st = plan_from_json(root, what, out);
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_plan_load(const char *path, bg_plan_file_t *out)
{
    cJSON *root;
    bg_status_t st = bg_json_load_file(path, &root);
    if (st) return st;
    st = plan_from_json(root, path, out);
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_plan_file_check_layers(const bg_plan_file_t *pf, const char *const *names, int n)
{
    if (n != pf->n_layers)
        return bg_errorf(BG_ERR_INVALID, "plan for '%s' has %d layers but the model has %d",
                         pf->model, pf->n_layers, n);
    for (int i = 0; i < n; i++)
        if (strcmp(pf->layer[i], names[i]))
            return bg_errorf(BG_ERR_INVALID,
                             "plan for '%s' does not match the model: layer %d is '%s' in the "
                             "plan but '%s' in the model",
                             pf->model, i, pf->layer[i], names[i]);
    return BG_OK;
}
