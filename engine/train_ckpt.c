/*
 * engine/train_ckpt.c -- the training run's checkpoints: writing a step's
 * stage files, manifest and `latest`; loading --init weights and --resume
 * state into the runtime, refusing non-finite values and records that
 * disagree. Must NOT decide when to save (the loop does) nor print
 * progress; errors name the file and tensor.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/runtime.h"
#include "engine/train_impl.h"


static const char *state_suffix(bg_optim_kind_t k, int i)
{
    if (k == BG_OPT_SGD)
        return BG_CKPT_MOMENTUM;
    return i == 0 ? BG_CKPT_ADAM_M : BG_CKPT_ADAM_V;
}

/* The loss scale and its good steps: one copy (every rank has the same,
 * stage 0 writes it), and only when loss scaling is on. The writer keeps
 * a pointer to the data until it writes: it lives in t. */
static bg_status_t write_loss_scale(train_t *t, bg_st_writer_t *w)
{
    int64_t n = 2, good;
    t->saved_scale[0] = bg_rt_loss_scale(t->rt, &good);
    t->saved_scale[1] = (float)good;
    if (t->stage != 0 || t->saved_scale[0] == 0.0f)
        return BG_OK;
    return bg_st_writer_add(w, BG_CKPT_LOSS_SCALE, BG_ST_F32, 1, &n, t->saved_scale);
}

bg_status_t bg_train_save_(train_t *t, int64_t step)
{
    const bg_train_conf_t *c = t->c;
    char *step_path = NULL, *file = NULL;
    bg_st_writer_t *w = NULL;
    bg_status_t st = BG_OK;
    if (t->rank == 0)
        st = bg_ckpt_begin(c->checkpoint_dir, step, &step_path);
    if (st == BG_OK)
        st = world_barrier(t);
    if (st == BG_OK && !step_path)
        st = bg_ckpt_step_path(c->checkpoint_dir, step, &step_path);
    if (st == BG_OK)
        st = bg_rt_params_download(t->rt);
    if (st == BG_OK && t->dp == 0) {
        st = bg_ckpt_stage_path(step_path, t->stage, &file);
        if (st == BG_OK)
            st = bg_st_writer_new(&w);
        if (st == BG_OK)
            st = write_loss_scale(t, w);
        int ns = bg_optim_state_count(c->optim.kind);
        for (int i = 0; st == BG_OK && i < bg_rt_param_count(t->rt); i++) {
            bg_rt_param_view_t v;
            bg_rt_param_get(t->rt, i, &v);
            if (!v.owned)
                continue;
            st = bg_st_writer_add(w, v.name, BG_ST_F32, v.shape->ndim, v.shape->d, v.master);
            for (int s = 0; st == BG_OK && s < ns; s++) {
                char key[BG_NAME_MAX + 16];
                snprintf(key, sizeof(key), "%s%s", v.name, state_suffix(c->optim.kind, s));
                st = bg_st_writer_add(w, key, BG_ST_F32, v.shape->ndim, v.shape->d, v.state[s]);
            }
        }
        char buf[256];
        bg_data_state_t ds = bg_data_state_at(t->ds, step);
        if (st == BG_OK)
            st = bg_data_state_format(&ds, buf, sizeof(buf));
        if (st == BG_OK)
            st = bg_st_writer_meta(w, "data_state", buf);
        snprintf(buf, sizeof(buf), "%lld", (long long)step);
        if (st == BG_OK)
            st = bg_st_writer_meta(w, "step", buf);
        if (st == BG_OK)
            st = bg_st_writer_meta(w, "optimizer", bg_optim_kind_name(c->optim.kind));
        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)c->seed);
        if (st == BG_OK)
            st = bg_st_writer_meta(w, "seed", buf);
        if (st == BG_OK)
            st = bg_st_writer_write(w, file);
    }
    /* Every stage's file is complete before `latest` moves. */
    bg_status_t s2 = world_barrier(t);
    if (st == BG_OK)
        st = s2;
    if (st == BG_OK && t->rank == 0)
        st = bg_ckpt_publish(c->checkpoint_dir, step, t->S, t->D, bg_sched_name(t->sched),
                             bg_graph_model_name(t->g));
    s2 = world_barrier(t);
    if (st == BG_OK)
        st = s2;
    bg_st_writer_free(w);
    bg_rt_params_release(t->rt); /* ZeRO-1: the gathered full views */
    free(file);
    free(step_path);
    return st;
}

/* Index of the first element of x[n] that is NaN or infinite (or, with
 * `nonneg`, negative), or -1 when every one is valid. */

/* BG_ERR_INVALID naming `file` and `name` when x[n] holds a value no
 * training state can have: NaN/Inf anywhere, a negative second moment. */
static bg_status_t check_loaded(const char *file, const char *name, const float *x, int64_t n,
                                bool nonneg)
{
    int64_t i = first_invalid(x, n, nonneg);
    if (i < 0)
        return BG_OK;
    return bg_errorf(BG_ERR_INVALID,
                     "%s: tensor '%s' holds %g at element %lld (%s); refusing to load it", file,
                     name, (double)x[i], (long long)i,
                     isfinite(x[i]) ? "a second moment cannot be negative"
                                    : "not finite, or too large for f32");
}

/* The file of checkpoint `ck` (or `f`) that holds `name`, for messages. */
static const char *holder(const bg_ckpt_t *ck, const bg_st_file_t *f, const char *name)
{
    if (ck)
        bg_ckpt_find(ck, name, &f);
    return f ? bg_st_path(f) : "checkpoint";
}

/* Load every parameter this rank holds by name (and optimizer state when
 * `with_state`); names missing from the file are an error listing the first,
 * and so are values training cannot start from (check_loaded). */
bg_status_t bg_train_load_params_(train_t *t, bg_ckpt_t *ck, bg_st_file_t *f, bool with_state)
{
    int ns = bg_optim_state_count(t->c->optim.kind);
    bg_status_t st0 = bg_rt_params_download(t->rt); /* ZeRO-1: full views to load into */
    if (st0 != BG_OK)
        return st0;
    for (int i = 0; i < bg_rt_param_count(t->rt); i++) {
        bg_rt_param_view_t v;
        bg_rt_param_get(t->rt, i, &v);
        bg_status_t st =
            ck ? bg_ckpt_read_f32(ck, v.name, v.shape->ndim, v.shape->d, v.numel, v.master)
               : bg_st_read_f32(f, v.name, v.shape->ndim, v.shape->d, v.numel, v.master);
        if (st == BG_OK)
            st = check_loaded(holder(ck, f, v.name), v.name, v.master, v.numel, false);
        if (st != BG_OK)
            return st;
        for (int s = 0; with_state && s < ns; s++) {
            char key[BG_NAME_MAX + 16];
            const char *suffix = state_suffix(t->c->optim.kind, s);
            snprintf(key, sizeof(key), "%s%s", v.name, suffix);
            if (!bg_ckpt_find(ck, key, NULL))
                return bg_errorf(BG_ERR_INVALID,
                                 "checkpoint has no optimizer state '%s' (saved "
                                 "with another optimizer?)",
                                 key);
            if ((st = bg_ckpt_read_f32(ck, key, v.shape->ndim, v.shape->d, v.numel, v.state[s])) ||
                (st = check_loaded(holder(ck, NULL, key), key, v.state[s], v.numel,
                                   !strcmp(suffix, BG_CKPT_ADAM_V))))
                return st;
        }
    }
    return bg_rt_params_upload(t->rt);
}

/*
 * The checkpoint's three records of where training stands -- the manifest's
 * step, every stage file's optimizer step and its data state -- must agree,
 * the data state must reproduce this run's order, and the run must not end
 * before the checkpoint's step (that would train nothing and look done).
 */
static bg_status_t check_resume_step(train_t *t, const char *step_path, const bg_ckpt_t *ck)
{
    int64_t step = bg_ckpt_manifest(ck)->step;
    for (int i = 0; i < bg_ckpt_file_count(ck); i++) {
        const bg_st_file_t *f = bg_ckpt_file(ck, i);
        const char *v = bg_st_meta(f, "step");
        char *end = NULL;
        long long fs = v ? strtoll(v, &end, 10) : -1;
        if (!v || *end || fs != step)
            return bg_errorf(BG_ERR_INVALID,
                             "%s: optimizer step '%s' disagrees with the manifest's step %lld "
                             "(corrupt or edited checkpoint)",
                             bg_st_path(f), v ? v : "(missing)", (long long)step);
    }
    const char *ds = bg_ckpt_meta(ck, "data_state");
    bg_data_state_t state;
    if (!ds)
        return bg_errorf(BG_ERR_INVALID, "%s: no data_state in the checkpoint", step_path);
    bg_status_t st = bg_data_state_parse(ds, &state);
    if (st == BG_OK && state.step != step)
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: data state is at step %lld but the manifest says step %lld "
                       "(corrupt or edited checkpoint)",
                       step_path, (long long)state.step, (long long)step);
    if (st == BG_OK)
        st = bg_data_state_check(t->ds, &state);
    if (st == BG_OK && t->steps < step)
        st = bg_errorf(BG_ERR_INVALID,
                       "%s is at step %lld, past this run's last step %lld: ask for more "
                       "steps (--steps or --epochs), or start afresh without --resume",
                       step_path, (long long)step, (long long)t->steps);
    return st;
}

/* The loss scale and its good-step count, where the checkpoint has them
 * (older ones, or runs without scaling, do not: the starting scale stays)
 * and this run scales the loss. */
static bg_status_t load_loss_scale(train_t *t, bg_ckpt_t *ck)
{
    int64_t n = 2, good;
    float ls[2];
    if (!bg_ckpt_find(ck, BG_CKPT_LOSS_SCALE, NULL) || bg_rt_loss_scale(t->rt, &good) == 0.0f)
        return BG_OK;
    bg_status_t st = bg_ckpt_read_f32(ck, BG_CKPT_LOSS_SCALE, 1, &n, 2, ls);
    return st == BG_OK ? bg_rt_loss_scale_set(t->rt, ls[0], (int64_t)ls[1]) : st;
}

bg_status_t bg_train_resume_(train_t *t)
{
    const bg_train_conf_t *c = t->c;
    bg_status_t st = BG_OK;
    if (c->init) {
        bg_st_file_t *f = NULL;
        st = bg_st_open(c->init, &f);
        if (st == BG_OK)
            st = bg_train_load_params_(t, NULL, f, false);
        bg_st_close(f);
        if (st != BG_OK)
            return bg_error_prefix(st, "--init %s: ", c->init);
    }
    if (!c->resume)
        return BG_OK;
    char *step_path = NULL;
    if ((st = bg_ckpt_dir_latest(c->checkpoint_dir, &step_path)) != BG_OK)
        return st;
    if (!step_path) {
        if (t->rank == 0)
            printf("no checkpoint in %s: starting from step 0\n", c->checkpoint_dir);
        return BG_OK;
    }
    bg_ckpt_t *ck = NULL;
    st = bg_ckpt_open(step_path, &ck);
    if (st == BG_OK)
        st = bg_train_load_params_(t, ck, NULL, true);
    if (st == BG_OK)
        st = check_resume_step(t, step_path, ck);
    if (st == BG_OK)
        st = load_loss_scale(t, ck);
    if (st == BG_OK) {
        t->start_step = bg_ckpt_manifest(ck)->step;
        t->resumed = true;
    }
    if (st == BG_OK && t->rank == 0)
        printf("resumed from %s (step %lld, written by %d stages x %d dp)\n", step_path,
               (long long)t->start_step, bg_ckpt_manifest(ck)->stages, bg_ckpt_manifest(ck)->dp);
    bg_ckpt_close(ck);
    free(step_path);
    return st;
}

/* ---------------------------------------------------------------- the loop */
