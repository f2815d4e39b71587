/*
 * engine/train_check.c -- what a run can check before its first step: which
 * data a model's inputs call for and whether the data fits them, whether
 * every path the run will write is writable, and how much memory each rank
 * will need. Ranks use it during setup; the launcher (tools/cmd_train.c)
 * runs the same checks once before spawning anyone, so that a person gets
 * one message and exit code 2 instead of one per rank after a long start.
 * Must not write, create or remove anything, nor start the transport.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/checked.h"
#include "engine/data.h"
#include "engine/train.h"
#include "engine/train_impl.h"
#include "layers/graph.h"
#include "partition/cost.h"
#include "partition/schedules.h"

void bg_train_data_plan_free_(bg_train_data_plan_t *dp)
{
    free(dp->spec);
    dp->spec = NULL;
}

/* The vocabulary bound of the embedding that reads graph tensor `tensor`, or 0. */
static int64_t vocab_of(const bg_graph_t *g, int tensor)
{
    for (int l = 0; l < bg_graph_n_layers(g); l++) {
        const bg_graph_layer_t *gl = bg_graph_layer(g, l);
        if (gl->in[0] == tensor && !strcmp(gl->spec.kind->name, "embedding"))
            return bg_attrs_int(&gl->spec.attrs, "vocab", 0);
    }
    return 0;
}

/*
 * A bare "synthetic[,k=v...]" takes the kind the model reads, so that
 * `--data synthetic` works for token and image models alike. *out is
 * malloc'd; NULL spec picks the model's default data.
 */
static bg_status_t pick_spec(const char *spec, bool tokens, int64_t feature_cols, char **out)
{
    const char *def = tokens ? "synthetic:tokens" : feature_cols == 784 ? "fashion-mnist"
                                                                         : "synthetic:images";
    char *s = NULL;
    if (!spec) {
        s = strdup(def);
    } else if (!strncmp(spec, "synthetic", 9) && (spec[9] == '\0' || spec[9] == ',')) {
        if (asprintf(&s, "synthetic:%s%s", tokens ? "tokens" : "images", spec + 9) < 0)
            s = NULL;
    } else {
        s = strdup(spec);
    }
    if (!s)
        return bg_errorf(BG_ERR_NOMEM, "out of memory");
    *out = s;
    return BG_OK;
}

bg_status_t bg_train_data_plan_(const bg_train_conf_t *c, const bg_graph_t *g,
                                bg_train_data_plan_t *out)
{
    bg_train_data_plan_t dp = {.target_input = -1, .feature = -1};
    /* Which graph input gets targets: the one the loss reads as its second input. */
    const bg_graph_layer_t *loss = bg_graph_layer(g, bg_graph_loss_layer(g));
    const bg_graph_tensor_t *tt = bg_graph_tensor(g, loss->in[1]);
    if (tt->producer < 0)
        dp.target_input = tt->input;
    int n_feature_inputs = 0;
    for (int i = 0; i < bg_graph_n_inputs(g); i++)
        if (i != dp.target_input)
            n_feature_inputs++, dp.feature = i;
    if (n_feature_inputs > 1)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: the data readers feed one input and the targets; "
                         "this model has %d other inputs",
                         c->model, n_feature_inputs);
    bg_data_opts_default(&dp.o);
    dp.o.batch = c->batch;
    dp.o.seed = c->seed;
    bool tokens = false;
    int64_t cols = 0;
    /* Token readers need a window length even for an image model, so that
     * a token spec opens and bg_train_data_fits_ can say what is wrong. */
    dp.o.seq_len = 1;
    if (dp.feature >= 0) {
        const bg_graph_input_t *in = bg_graph_input(g, dp.feature);
        tokens = in->shape.dtype == BG_I32;
        cols = in->shape.ndim > 1 ? in->shape.d[1] : 1;
        if (tokens) {
            dp.o.seq_len = cols;
            dp.o.vocab = vocab_of(g, in->tensor);
        }
    }
    bg_status_t st = pick_spec(c->data, tokens, cols, &dp.spec);
    if (st != BG_OK)
        return st;
    *out = dp;
    return BG_OK;
}

/* Elements per row of graph input `i` (every dimension after the batch). */
static int64_t row_elems(const bg_graph_t *g, int i)
{
    const bg_shape_t *s = &bg_graph_input(g, i)->shape;
    int64_t n = 1;
    for (int k = 1; k < s->ndim; k++)
        n *= s->d[k];
    return n;
}

bg_status_t bg_train_data_fits_(const bg_train_conf_t *c, const bg_graph_t *g,
                                const bg_train_data_plan_t *dp, const bg_data_t *ds)
{
    const bg_data_info_t *info = bg_data_info(ds);
    if (dp->feature >= 0) {
        const bg_graph_input_t *in = bg_graph_input(g, dp->feature);
        bool model_tokens = in->shape.dtype == BG_I32;
        if (model_tokens != (info->kind == BG_DATA_TOKENS))
            return bg_errorf(BG_ERR_INVALID,
                             "--data %s gives %s but %s's input '%s' reads %s (try --data %s)",
                             dp->spec, info->kind == BG_DATA_TOKENS ? "token ids" : "images",
                             c->model, in->name, model_tokens ? "token ids" : "images",
                             model_tokens ? "tokens:PREFIX or synthetic:tokens"
                                          : "fashion-mnist or synthetic:images");
        if (row_elems(g, dp->feature) != info->input_cols)
            return bg_errorf(BG_ERR_INVALID,
                             "--data %s has %" PRId64 " values per sample but %s's input '%s' "
                             "takes %" PRId64,
                             dp->spec, info->input_cols, c->model, in->name,
                             row_elems(g, dp->feature));
    }
    if (dp->target_input >= 0 && row_elems(g, dp->target_input) != info->target_cols)
        return bg_errorf(BG_ERR_INVALID,
                         "--data %s has %" PRId64 " targets per sample but %s's input '%s' "
                         "takes %" PRId64,
                         dp->spec, info->target_cols, c->model,
                         bg_graph_input(g, dp->target_input)->name,
                         row_elems(g, dp->target_input));
    return BG_OK;
}

/* ---------------------------------------------------------------- outputs */

/* The nearest existing ancestor of `path` (itself included) into buf. */
static void existing_ancestor(const char *path, char *buf, size_t n)
{
    struct stat sb;
    snprintf(buf, n, "%s", path);
    for (;;) {
        size_t len = strlen(buf);
        while (len > 1 && buf[len - 1] == '/')
            buf[--len] = '\0';
        if (stat(buf, &sb) == 0 || errno != ENOENT)
            return;
        char *slash = strrchr(buf, '/');
        if (!slash) {
            snprintf(buf, n, ".");
            return;
        }
        if (slash == buf)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
}

/* BG_OK if a directory `dir` exists and this process may create files in it. */
static bg_status_t dir_writable(const char *opt, const char *path, const char *dir)
{
    struct stat sb;
    if (stat(dir, &sb) != 0 && !strcmp(dir, path))
        return bg_errorf(BG_ERR_INVALID, "%s %s: %s", opt, path, strerror(errno));
    if (stat(dir, &sb) != 0)
        return bg_errorf(BG_ERR_INVALID, "%s %s: %s: %s", opt, path, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return bg_errorf(BG_ERR_INVALID, "%s %s: %s is not a directory", opt, path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return bg_errorf(BG_ERR_INVALID, "%s %s: cannot write in %s: %s", opt, path, dir,
                         strerror(errno));
    return BG_OK;
}

/* A file the run will create or append to (its directory must exist). */
static bg_status_t file_writable(const char *opt, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return bg_errorf(BG_ERR_INVALID, "%s %s: is a directory", opt, path);
        if (access(path, W_OK) != 0)
            return bg_errorf(BG_ERR_INVALID, "%s %s: %s", opt, path, strerror(errno));
        return BG_OK;
    }
    if (errno != ENOENT)
        return bg_errorf(BG_ERR_INVALID, "%s %s: %s", opt, path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    return dir_writable(opt, path, dir);
}

bg_status_t bg_train_check_outputs(const bg_train_conf_t *c)
{
    bg_status_t st = BG_OK;
    if (c->metrics)
        st = file_writable("--metrics", c->metrics);
    if (st == BG_OK && c->trace)
        st = file_writable("--trace", c->trace);
    if (st == BG_OK && c->checkpoint_dir && !c->eval_only) {
        /* Created with mkdir -p: the nearest existing part must take it. */
        char anc[4096];
        existing_ancestor(c->checkpoint_dir, anc, sizeof(anc));
        st = dir_writable("--checkpoint-dir", c->checkpoint_dir, anc);
    }
    return st;
}

/* ---------------------------------------------------------------- preflight */

/* Resident bytes of the data readers (IDX holds its files in memory; token
 * shards are mapped and shared through the page cache; synthetic is none). */
static int64_t data_resident(const bg_data_info_t *info)
{
    if (info->kind != BG_DATA_IMAGES || info->train_files == 0)
        return 0;
    return (info->n_train + info->n_eval) * (info->input_cols + 1);
}

/*
 * Per rank: its share of parameters as f32 master, gradient, compute copy
 * and optimizer state (master and state divided by dp under --zero 1),
 * plus the schedule's second weight version (2bw);
 * the activations of the micro-batches in flight; the
 * data reader; and the process itself (libraries, transport).
 */
static int64_t rank_bytes(const bg_train_conf_t *c, const bg_graph_t *g, int chunks,
                          const bg_data_info_t *info)
{
    const bg_graph_totals_t *tot = bg_graph_totals(g);
    int states = bg_optim_state_count(c->optim.kind);
    double sharded = (1.0 + states) / (c->zero && c->dp > 1 ? c->dp : 1);
    double params = (double)tot->params * 4.0 * (2.0 + sharded) / c->stages;
    const bg_sched_desc_t *d = NULL; /* 2bw's second version; auto and files hold one */
    bg_dtype_t dt = BG_F32;
    if (c->schedule && bg_sched_lookup(c->schedule, &d) == BG_OK &&
        bg_dtype_parse(c->dtype, &dt) == BG_OK)
        params += (double)bg_versions_bytes(dt, d->versions, tot->params) / c->stages;
    int in_flight = c->micro_batches < c->stages * chunks ? c->micro_batches : c->stages * chunks;
    double acts = (double)tot->kept_bytes * in_flight / c->stages;
    double b = params + acts + (double)data_resident(info) + BG_TRAIN_RANK_OVERHEAD;
    return b > (double)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)b;
}

bg_status_t bg_train_preflight(const bg_train_conf_t *c, const bg_graph_t *g, int chunks,
                               int64_t *rank_bytes_out)
{
    bg_data_t *ds = NULL;
    bg_train_data_plan_t dp = {0};
    bg_status_t st = bg_train_data_plan_(c, g, &dp);
    if (st == BG_OK)
        st = bg_data_open(dp.spec, &dp.o, &ds);
    if (st == BG_OK)
        st = bg_train_data_fits_(c, g, &dp, ds);
    if (st == BG_OK)
        st = bg_train_check_outputs(c);
    if (st == BG_OK && rank_bytes_out)
        *rank_bytes_out = rank_bytes(c, g, chunks, bg_data_info(ds));
    bg_data_close(ds);
    bg_train_data_plan_free_(&dp);
    return st;
}
