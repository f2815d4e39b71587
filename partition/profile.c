/*
 * partition/profile.c -- reading and writing measured layer profiles
 * (format in partition/profile.h). Validation is strict: a profile that
 * silently mis-keys a layer would mis-place stages. Measures nothing.
 */
#include "partition/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/graph.h"
#include "partition/json_util.h"

bg_status_t bg_profile_alloc(int n, bg_profile_t *out)
{
    if (n < 0) return bg_errorf(BG_ERR_INVALID, "profile: negative layer count");
    bg_profile_t p = {0};
    p.n = n;
    p.micro_batch = 1;
    p.dtype = BG_F32;
    p.layer = calloc((size_t)(n ? n : 1), sizeof(*p.layer));
    if (!p.layer) return bg_errorf(BG_ERR_NOMEM, "profile: out of memory");
    *out = p;
    return BG_OK;
}

void bg_profile_free(bg_profile_t *p)
{
    if (!p) return;
    free(p->layer);
    memset(p, 0, sizeof(*p));
}

static bg_status_t profile_from_json(const cJSON *root, const char *what, bg_profile_t *out)
{
    char buf[64];
    int64_t v;
    bg_status_t st;
    if ((st = bg_json_get_str(root, "format", what, buf, sizeof(buf)))) return st;
    if (strcmp(buf, "brigade-profile"))
        return bg_errorf(BG_ERR_INVALID, "%s: format is '%s', not 'brigade-profile'", what, buf);
    if ((st = bg_json_get_int(root, "version", what, 1, 1, &v))) return st;
    const cJSON *arr;
    if ((st = bg_json_get_array(root, "layers", what, &arr))) return st;
    int n = cJSON_GetArraySize(arr);
    /* One entry per graph layer; the bound also keeps the duplicate check's
     * n^2 name comparisons small for a hostile file. */
    if (n > BG_GRAPH_MAX_LAYERS)
        return bg_errorf(BG_ERR_INVALID, "%s: %d layers, more than a graph may have (%d)", what, n,
                         BG_GRAPH_MAX_LAYERS);
    bg_profile_t p;
    if ((st = bg_profile_alloc(n, &p))) return st;
    if ((st = bg_json_get_str(root, "device", what, p.device, sizeof(p.device)))) goto err_free;
    if ((st = bg_json_get_dtype(root, "dtype", what, &p.dtype))) goto err_free;
    if ((st = bg_json_get_int(root, "micro_batch", what, 1, 1 << 24, &v))) goto err_free;
    p.micro_batch = (int)v;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        char ew[300];
        snprintf(ew, sizeof(ew), "%s: layers[%d]", what, i);
        bg_profile_layer_t *l = &p.layer[i];
        if ((st = bg_json_get_str(e, "name", ew, l->name, sizeof(l->name)))) goto err_free;
        if ((st = bg_json_get_num(e, "fwd_s", ew, 0.0, &l->f))) goto err_free;
        if ((st = bg_json_get_num(e, "bwd_input_s", ew, 0.0, &l->b))) goto err_free;
        if ((st = bg_json_get_num(e, "bwd_weight_s", ew, 0.0, &l->w))) goto err_free;
        for (int q = 0; q < i; q++)
            if (!strcmp(p.layer[q].name, l->name)) {
                st = bg_errorf(BG_ERR_INVALID, "%s: layer '%s' appears twice", ew, l->name);
                goto err_free;
            }
        i++;
    }
    *out = p;
    return BG_OK;
err_free:
    bg_profile_free(&p);
    return st;
}

bg_status_t bg_profile_parse(const char *text, size_t len, const char *what, bg_profile_t *out)
{
    cJSON *root;
    bg_status_t st = bg_json_parse(text, len, what, &root);
    if (st) return st;
    st = profile_from_json(root, what, out);
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_profile_load(const char *path, bg_profile_t *out)
{
    cJSON *root;
    bg_status_t st = bg_json_load_file(path, &root);
    if (st) return st;
    st = profile_from_json(root, path, out);
    cJSON_Delete(root);
    return st;
}

bg_status_t bg_profile_save(const char *path, const bg_profile_t *p)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "layers") : NULL;
    bg_status_t st = BG_OK;
    if (!arr) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_free;
    }
    cJSON_AddStringToObject(root, "format", "brigade-profile");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "device", p->device);
    cJSON_AddStringToObject(root, "dtype", bg_dtype_name(p->dtype));
    cJSON_AddNumberToObject(root, "micro_batch", p->micro_batch);
    for (int i = 0; i < p->n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
            goto err_free;
        }
        cJSON_AddStringToObject(e, "name", p->layer[i].name);
        cJSON_AddNumberToObject(e, "fwd_s", p->layer[i].f);
        cJSON_AddNumberToObject(e, "bwd_input_s", p->layer[i].b);
        cJSON_AddNumberToObject(e, "bwd_weight_s", p->layer[i].w);
    }
    st = bg_json_save_file(path, root);
err_free:
    cJSON_Delete(root);
    return st;
}
