/*
 * engine/train_ckpt.c -- the training run's checkpoints: a step's state
 * snapshotted at the step boundary, its stage files written (on a
 * background thread with --async-checkpoint on, the default), then the
 * manifest and `latest` published once every stage file is complete;
 * loading --init weights and --resume state into the runtime, refusing
 * non-finite values and records that disagree. Must NOT decide when to
 * save (the loop does), print progress, or use the transport from the
 * writer thread (collectives stay on the training thread); errors name the
 * file and tensor.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/clock.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_async.h"
#include "engine/data.h"
#include "engine/runtime.h"
#include "engine/train_impl.h"


/* One rank's checkpointing: the snapshot of the save in flight, the
 * thread that writes it, and what publishing it needs. */
typedef struct train_ckpt {
    bg_ckpt_async_t *bg;
    float *arena; /* snapshot copies (async), kept between saves */
    size_t cap;   /* floats in arena */
    float scale[2];        /* the loss scale and its good steps, as saved */
    bg_st_writer_t *w;     /* the snapshot; NULL on dp > 0 or once written */
    char *file;            /* this rank's stage file of the save */
    int64_t step;          /* of the last save */
    int64_t pending;       /* a save whose stage files are still being written; -1 */
    const char *dir, *sched, *model;
    int S, D;
    bool sharded;          /* ZeRO-1: every replica writes its shard's file */
    double held_s; /* training time spent in saves, polls and the final wait */
} train_ckpt_t;

static const char *state_suffix(bg_optim_kind_t k, int i)
{
    if (k == BG_OPT_SGD)
        return BG_CKPT_MOMENTUM;
    return i == 0 ? BG_CKPT_ADAM_M : BG_CKPT_ADAM_V;
}

/* ------------------------------------------------------------- snapshot */

/* The floats one save copies: every owned parameter and its optimizer
 * state, plus the loss scale pair. BG_ERR_INVALID on overflow. */
static bg_status_t snapshot_floats(train_t *t, int ns, size_t *out)
{
    size_t n = 2;
    for (int i = 0; i < bg_rt_param_count(t->rt); i++) {
        bg_rt_param_view_t v;
        bg_rt_param_get(t->rt, i, &v);
        size_t k;
        if (v.owned && (!bg_mul_size((size_t)v.numel, (size_t)ns + 1, &k) ||
                        !bg_add_size(n, k, &n)))
            return bg_errorf(BG_ERR_INVALID, "checkpoint: state of '%s' overflows size_t", v.name);
    }
    *out = n;
    return BG_OK;
}

/* `n` floats of host memory for the copy (async): the arena is kept from
 * save to save, since the layout never changes within a run. */
static bg_status_t snapshot_room(train_ckpt_t *k, size_t n, float **out)
{
    if (n > k->cap) {
        float *p = n <= SIZE_MAX / sizeof(float) ? malloc(n * sizeof(float)) : NULL;
        if (!p)
            return bg_errorf(BG_ERR_NOMEM, "checkpoint: no host memory for a %zu MiB snapshot",
                             n * sizeof(float) >> 20);
        free(k->arena);
        k->arena = p;
        k->cap = n;
    }
    *out = k->arena;
    return BG_OK;
}

/* x[n] floats for the writer: copied into the arena at *at (async), or the
 * live buffer itself (sync: written before training touches it again). */
static const float *snap_data(const float *x, int64_t n, float *arena, size_t *at)
{
    if (!arena)
        return x;
    float *dst = arena + *at;
    memcpy(dst, x, (size_t)n * sizeof(float));
    *at += (size_t)n;
    return dst;
}

/* The metadata strings of step `step`'s stage file. */
static bg_status_t snapshot_meta(train_t *t, int64_t step, bg_st_writer_t *w)
{
    char buf[256];
    bg_data_state_t ds = bg_data_state_at(t->ds, step);
    bg_status_t st = bg_data_state_format(&ds, buf, sizeof(buf));
    if (st == BG_OK)
        st = bg_st_writer_meta(w, "data_state", buf);
    snprintf(buf, sizeof(buf), "%lld", (long long)step);
    if (st == BG_OK)
        st = bg_st_writer_meta(w, "step", buf);
    if (st == BG_OK)
        st = bg_st_writer_meta(w, "optimizer", bg_optim_kind_name(t->c->optim.kind));
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)t->c->seed);
    if (st == BG_OK)
        st = bg_st_writer_meta(w, "seed", buf);
    if (st == BG_OK)
        st = bg_st_writer_meta(w, "schedule", bg_sched_name(t->sched));
    return st;
}

/* The loss scale pair (stage 0's first file, when scaling is on). */
static bg_status_t snapshot_scale(train_t *t, train_ckpt_t *k, bg_st_writer_t *w, float *arena,
                                  size_t *at)
{
    int64_t good, two = 2;
    k->scale[0] = bg_rt_loss_scale(t->rt, &good);
    k->scale[1] = (float)good;
    if (t->stage != 0 || t->dp != 0 || k->scale[0] == 0.0f)
        return BG_OK;
    return bg_st_writer_add(w, BG_CKPT_LOSS_SCALE, BG_ST_F32, 1, &two,
                            snap_data(k->scale, 2, arena, at));
}

/* Tensor `name`'s piece p, data at x, into w as "<name>@<off>", and the
 * whole shape under "<name>@shape". */
static bg_status_t snapshot_piece(bg_st_writer_t *w, const char *name, const bg_shape_t *shape,
                                  const bg_rt_piece_t *p, const float *x)
{
    char key[BG_NAME_MAX + 48], val[BG_ST_MAX_DIMS * 24 + 4];
    bg_st_shape_text(shape->ndim, shape->d, val, sizeof(val));
    snprintf(key, sizeof(key), "%s%s", name, BG_CKPT_SHAPE_KEY);
    bg_status_t st = bg_st_writer_meta(w, key, val);
    snprintf(key, sizeof(key), "%s%c%lld", name, BG_CKPT_PIECE_SEP, (long long)p->off);
    return st == BG_OK ? bg_st_writer_add(w, key, BG_ST_F32, 1, &p->n, x) : st;
}

/* The pieces of every owned parameter (and its optimizer state) in this
 * replica's shard; buf holds the shard's masters then states, zn each. */
static bg_status_t snapshot_pieces(train_t *t, bg_st_writer_t *w, const float *buf, int64_t zn)
{
    bg_optim_kind_t kind = t->c->optim.kind;
    int ns = bg_optim_state_count(kind);
    bg_status_t st = BG_OK;
    for (int i = 0; st == BG_OK && i < bg_rt_param_count(t->rt); i++) {
        bg_rt_param_view_t v;
        bg_rt_piece_t p;
        bg_rt_param_get(t->rt, i, &v);
        for (int r = 0; v.owned && st == BG_OK && r < bg_rt_shard_ranges(t->rt); r++) {
            if (!bg_rt_shard_piece(t->rt, i, r, &p))
                continue;
            st = snapshot_piece(w, v.name, v.shape, &p, buf + p.at);
            for (int s = 0; st == BG_OK && s < ns; s++) {
                char key[BG_NAME_MAX + 16];
                snprintf(key, sizeof(key), "%s%s", v.name, state_suffix(kind, s));
                st = snapshot_piece(w, key, v.shape, &p, buf + (s + 1) * zn + p.at);
            }
        }
    }
    return st;
}

/*
 * snapshot_take under ZeRO-1: this replica's shard of the masters and
 * optimizer state, copied to the host (the arena, kept from save to save:
 * 1/D of the stage's state), as pieces of the global tensors, plus the
 * stage metadata and the shard's place ("k/D"). No gather: every replica
 * writes its own file (bg_ckpt_shard_path).
 */
static bg_status_t snapshot_shard(train_t *t, train_ckpt_t *k, int64_t step,
                                  bg_st_writer_t **out)
{
    int ns = bg_optim_state_count(t->c->optim.kind);
    int64_t zn = bg_rt_shard_numel(t->rt);
    size_t nf = 0, at = 0;
    float *arena = NULL;
    bg_st_writer_t *w = NULL;
    bg_status_t st = BG_OK;
    if (!bg_mul_size((size_t)zn, (size_t)ns + 1, &nf) || !bg_add_size(nf, 2, &nf))
        return bg_errorf(BG_ERR_INVALID, "checkpoint: a shard of %lld elements overflows size_t",
                         (long long)zn);
    if ((st = snapshot_room(k, nf, &arena)) != BG_OK)
        return st;
    float *state[2] = {arena + zn, arena + (ns > 1 ? 2 * zn : zn)};
    if ((st = bg_rt_shard_download(t->rt, arena, state)) != BG_OK ||
        (st = bg_st_writer_new(&w)) != BG_OK)
        return st;
    at = (size_t)zn * ((size_t)ns + 1);
    char shard[32];
    snprintf(shard, sizeof(shard), "%d/%d", t->dp, t->D);
    st = snapshot_scale(t, k, w, arena, &at);
    if (st == BG_OK)
        st = snapshot_pieces(t, w, arena, zn);
    if (st == BG_OK)
        st = snapshot_meta(t, step, w);
    if (st == BG_OK)
        st = bg_st_writer_meta(w, BG_CKPT_SHARD_KEY, shard);
    if (st != BG_OK) {
        bg_st_writer_free(w);
        return st;
    }
    *out = w;
    return BG_OK;
}

/*
 * THE snapshot: everything step `step`'s stage file holds -- parameters,
 * optimizer state, loss scale (stage 0, when scaling is on), data state --
 * into a new writer *out, at the step boundary. With `copy` the tensors
 * are copied into host memory of k's (training may then go on while a
 * thread writes); without, the writer points at the live state. Every rank
 * calls it; only dp rank 0 gets a writer (*out stays NULL elsewhere),
 * except under ZeRO-1, where every replica writes its shard (snapshot_shard).
 */
static bg_status_t snapshot_take(train_t *t, train_ckpt_t *k, int64_t step, bool copy,
                                 bg_st_writer_t **out)
{
    const bg_train_conf_t *c = t->c;
    int ns = bg_optim_state_count(c->optim.kind);
    if (bg_rt_sharded(t->rt))
        return snapshot_shard(t, k, step, out);
    bg_status_t st = bg_rt_params_download(t->rt);
    if (st != BG_OK || t->dp != 0)
        return st;
    size_t nf = 0, at = 0;
    float *arena = NULL;
    bg_st_writer_t *w = NULL;
    if (copy && ((st = snapshot_floats(t, ns, &nf)) != BG_OK ||
                 (st = snapshot_room(k, nf, &arena)) != BG_OK))
        return st;
    if ((st = bg_st_writer_new(&w)) != BG_OK)
        return st;
    st = snapshot_scale(t, k, w, arena, &at);
    for (int i = 0; st == BG_OK && i < bg_rt_param_count(t->rt); i++) {
        bg_rt_param_view_t v;
        bg_rt_param_get(t->rt, i, &v);
        if (!v.owned)
            continue;
        st = bg_st_writer_add(w, v.name, BG_ST_F32, v.shape->ndim, v.shape->d,
                              snap_data(v.master, v.numel, arena, &at));
        for (int s = 0; st == BG_OK && s < ns; s++) {
            char key[BG_NAME_MAX + 16];
            snprintf(key, sizeof(key), "%s%s", v.name, state_suffix(c->optim.kind, s));
            st = bg_st_writer_add(w, key, BG_ST_F32, v.shape->ndim, v.shape->d,
                                  snap_data(v.state[s], v.numel, arena, &at));
        }
    }
    if (st == BG_OK)
        st = snapshot_meta(t, step, w);
    if (st != BG_OK) {
        bg_st_writer_free(w);
        return st;
    }
    *out = w;
    return BG_OK;
}

/* ----------------------------------------------------- background writer */

/* Test-only fault injection: BRIGADE_TEST_CKPT_FAIL_STEP=N makes the
 * stage-file write of step N fail, so tests can watch the error surface
 * and `latest` stay on the previous checkpoint. */
static bool inject_failure(int64_t step)
{
    const char *v = getenv("BRIGADE_TEST_CKPT_FAIL_STEP");
    return v && *v && strtoll(v, NULL, 10) == step;
}

/* Job: write this rank's stage file (k->w to k->file); then the writer is
 * done with the snapshot. Runs on the writer thread (or inline). */
static bg_status_t job_write(void *ctx)
{
    train_ckpt_t *k = ctx;
    bg_status_t st = inject_failure(k->step)
                         ? bg_errorf(BG_ERR_IO, "%s: write failed: injected by "
                                                "BRIGADE_TEST_CKPT_FAIL_STEP", k->file)
                         : bg_st_writer_write(k->w, k->file);
    if (st != BG_OK)
        bg_error_prefix(st, "checkpoint step %lld: ", (long long)k->step);
    return st;
}

/* Job (rank 0): the manifest and `latest`, once every stage file is written. */
static bg_status_t job_publish(void *ctx)
{
    train_ckpt_t *k = ctx;
    return k->sharded ? bg_ckpt_publish_sharded(k->dir, k->step, k->S, k->D, k->sched, k->model)
                      : bg_ckpt_publish(k->dir, k->step, k->S, k->D, k->sched, k->model);
}

/* Forget the written snapshot's writer and file name (the arena stays). */
static void snapshot_release(train_ckpt_t *k)
{
    bg_st_writer_free(k->w);
    free(k->file);
    k->w = NULL;
    k->file = NULL;
}

static bg_status_t ckpt_state(train_t *t, train_ckpt_t **out)
{
    if (!t->ckpt) {
        train_ckpt_t *k = calloc(1, sizeof(*k));
        if (!k)
            return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
        bg_status_t st = bg_ckpt_async_new(&k->bg);
        if (st != BG_OK) {
            free(k);
            return st;
        }
        k->pending = -1;
        k->dir = t->c->checkpoint_dir;
        k->S = t->S, k->D = t->D;
        k->sched = bg_sched_name(t->sched);
        k->model = bg_graph_model_name(t->g);
        k->sharded = bg_rt_sharded(t->rt);
        t->ckpt = k;
    }
    *out = t->ckpt;
    return BG_OK;
}

/*
 * The pending save (stage files being written) is published once every
 * rank's write has finished: a world sum of the writers still busy (every
 * rank calls this at the same step boundaries while a save is pending).
 * `block`: wait for this rank's writer first, so the save completes now.
 */
static bg_status_t settle_pending(train_t *t, train_ckpt_t *k, bool block, double *waited)
{
    bool busy = false;
    bg_status_t st = block ? bg_ckpt_async_wait(k->bg, waited) : bg_ckpt_async_poll(k->bg, &busy);
    if (!busy)
        snapshot_release(k);
    /* A failed write takes part in the sum (as not done), so no peer waits
     * on this rank and none publishes; bg_tp_fail then stops them. */
    float n[1] = {busy || st != BG_OK ? 1.0f : 0.0f};
    bg_status_t s2 = world_sum(t, n, 1);
    if (st != BG_OK || (st = s2) != BG_OK)
        return st;
    if (n[0] != 0)
        return block ? bg_errorf(BG_ERR_PEER,
                                 "checkpoint step %lld: %d rank(s) could not write their stage "
                                 "file (their own errors say why)",
                                 (long long)k->pending, (int)n[0])
                     : BG_OK;
    k->pending = -1;
    if (t->rank == 0)
        st = bg_ckpt_async_start(k->bg, job_publish, k);
    return st;
}

bg_status_t bg_train_ckpt_poll_(train_t *t)
{
    train_ckpt_t *k = t->ckpt;
    if (!k)
        return BG_OK;
    double t0 = bg_now_s();
    bool busy; /* rank 0 publishing: only its outcome matters here */
    bg_status_t st = k->pending >= 0 ? settle_pending(t, k, false, NULL)
                                     : bg_ckpt_async_poll(k->bg, &busy);
    k->held_s += bg_now_s() - t0;
    return st;
}

double bg_train_ckpt_held_s_(const train_t *t)
{
    return t->ckpt ? t->ckpt->held_s : 0.0;
}

/*
 * Before a new save: the previous one must be written and published (its
 * `latest` first, and the snapshot memory is reused). Time spent waiting is
 * training lost, so it is logged.
 */
static bg_status_t finish_previous(train_t *t, train_ckpt_t *k, int64_t step)
{
    double w1 = 0, w2 = 0, t0 = bg_now_s();
    int64_t prev = k->pending >= 0 ? k->pending : k->step;
    bool was = k->pending >= 0 || bg_ckpt_async_pending(k->bg);
    bg_status_t st = k->pending >= 0 ? settle_pending(t, k, true, &w1) : BG_OK;
    if (st == BG_OK)
        st = bg_ckpt_async_wait(k->bg, &w2); /* rank 0: the publish */
    if (st == BG_OK && was && w1 + w2 > 0)
        bg_log(BG_LOG_WARN,
               "rank %d: checkpoint of step %lld still being written when step %lld's save was "
               "due: waited %.3f s (%.3f s in all)",
               t->rank, (long long)prev, (long long)step, w1 + w2, bg_now_s() - t0);
    return st;
}

/* Every rank: rank 0 makes step `step`'s directory (moving `latest` off it
 * if it names it), the others wait for that; *step_path its path. */
static bg_status_t begin_step(train_t *t, int64_t step, char **step_path)
{
    bg_status_t st = BG_OK;
    char *sp = NULL;
    if (t->rank == 0)
        st = bg_ckpt_begin(t->c->checkpoint_dir, step, &sp);
    bg_status_t s2 = world_barrier(t);
    if (st == BG_OK)
        st = s2;
    if (st == BG_OK && !sp)
        st = bg_ckpt_step_path(t->c->checkpoint_dir, step, &sp);
    if (st != BG_OK) {
        free(sp);
        return st;
    }
    *step_path = sp;
    return BG_OK;
}

/* --async-checkpoint off: write, barrier, publish, barrier, all here. */
static bg_status_t save_sync(train_t *t, train_ckpt_t *k)
{
    bg_status_t st = k->w ? job_write(k) : BG_OK;
    snapshot_release(k);
    /* Every stage's file is complete before `latest` moves. */
    bg_status_t s2 = world_barrier(t);
    if (st == BG_OK)
        st = s2;
    if (st == BG_OK && t->rank == 0)
        st = job_publish(k);
    s2 = world_barrier(t);
    return st == BG_OK ? s2 : st;
}

/* bg_train_save_ without the timing. */
static bg_status_t save_step(train_t *t, int64_t step)
{
    train_ckpt_t *k = NULL;
    char *step_path = NULL;
    bg_status_t st = ckpt_state(t, &k);
    if (st != BG_OK)
        return st;
    st = finish_previous(t, k, step);
    if (st == BG_OK)
        st = begin_step(t, step, &step_path);
    k->step = step;
    if (st == BG_OK)
        st = snapshot_take(t, k, step, t->c->async_checkpoint, &k->w);
    if (st == BG_OK && k->w)
        st = k->sharded ? bg_ckpt_shard_path(step_path, t->stage, t->dp, &k->file)
                        : bg_ckpt_stage_path(step_path, t->stage, &k->file);
    free(step_path);
    if (st != BG_OK || !t->c->async_checkpoint)
        return st == BG_OK ? save_sync(t, k) : st;
    k->pending = step;
    return k->w ? bg_ckpt_async_start(k->bg, job_write, k) : BG_OK;
}

bg_status_t bg_train_save_(train_t *t, int64_t step)
{
    double t0 = bg_now_s();
    bg_status_t st = save_step(t, step);
    double dt = bg_now_s() - t0;
    if (t->ckpt)
        t->ckpt->held_s += dt;
    /* The host copy's size is what shows that a ZeRO-1 save stayed within
     * its shard (the tests read it). */
    bg_log(BG_LOG_DEBUG,
           "rank %d stage %d: checkpoint of step %lld held training for %.2f ms (%s; host copy of "
           "%zu bytes)",
           t->rank, t->stage, (long long)step, 1e3 * dt,
           t->c->async_checkpoint ? "snapshot; written in the background" : "written",
           t->ckpt ? t->ckpt->cap * sizeof(float) : (size_t)0);
    return st;
}

bg_status_t bg_train_ckpt_finish_(train_t *t)
{
    train_ckpt_t *k = t->ckpt;
    if (!k)
        return BG_OK;
    double t0 = bg_now_s();
    bg_status_t st = k->pending >= 0 ? settle_pending(t, k, true, NULL) : BG_OK;
    bg_status_t s2 = bg_ckpt_async_wait(k->bg, NULL);
    k->held_s += bg_now_s() - t0;
    return st == BG_OK ? s2 : st;
}

void bg_train_ckpt_free_(train_t *t)
{
    train_ckpt_t *k = t->ckpt;
    if (!k)
        return;
    bg_ckpt_async_free(k->bg); /* a write in flight completes (or fails) first */
    snapshot_release(k);
    free(k->arena);
    free(k);
    t->ckpt = NULL;
}

/* BG_ERR_INVALID naming `file` and `name` when x[n] (elements [base,
 * base + n) of the tensor) holds a value no
 * training state can have: NaN/Inf anywhere, a negative second moment. */
static bg_status_t check_loaded_at(const char *file, const char *name, const float *x,
                                   int64_t base, int64_t n, bool nonneg)
{
    int64_t i = first_invalid(x, n, nonneg);
    if (i < 0)
        return BG_OK;
    return bg_errorf(BG_ERR_INVALID,
                     "%s: tensor '%s' holds %g at element %lld (%s); refusing to load it", file,
                     name, (double)x[i], (long long)(base + i),
                     isfinite(x[i]) ? "a second moment cannot be negative"
                                    : "not finite, or too large for f32");
}

static bg_status_t check_loaded(const char *file, const char *name, const float *x, int64_t n,
                                bool nonneg)
{
    return check_loaded_at(file, name, x, 0, n, nonneg);
}

/* The file of checkpoint `ck` (or `f`) that holds `name`, for messages
 * (a tensor in pieces names the first file). */
static const char *holder(const bg_ckpt_t *ck, const bg_st_file_t *f, const char *name)
{
    if (ck && !bg_ckpt_find(ck, name, &f)) {
        char key[BG_NAME_MAX + 24];
        snprintf(key, sizeof(key), "%s%c0", name, BG_CKPT_PIECE_SEP);
        bg_ckpt_find(ck, key, &f);
    }
    return f ? bg_st_path(f) : "checkpoint";
}

/* No optimizer state `key` in ck: BG_ERR_INVALID. */
static bg_status_t state_missing(const char *key)
{
    return bg_errorf(BG_ERR_INVALID,
                     "checkpoint has no optimizer state '%s' (saved with another optimizer?)",
                     key);
}

/* Elements [p->off, +p->n) of tensor `name` (shaped as v) from ck or f
 * into dst, checked as check_loaded does. */
static bg_status_t load_piece(bg_ckpt_t *ck, bg_st_file_t *f, const char *name,
                              const bg_rt_param_view_t *v, const bg_rt_piece_t *p, bool nonneg,
                              float *dst)
{
    int nd = v->shape->ndim;
    const int64_t *d = v->shape->d;
    bg_status_t st =
        ck ? bg_ckpt_read_f32_range(ck, name, nd, d, v->numel, p->off, p->n, dst)
           : bg_st_check_shape(f, name, nd, d, v->numel);
    if (st == BG_OK && !ck)
        st = bg_st_read_f32_range(f, name, p->off, p->n, dst);
    return st == BG_OK ? check_loaded_at(holder(ck, f, name), name, dst, p->off, p->n, nonneg)
                       : st;
}

/* Parameter i's pieces in this replica's shard (and its optimizer state's
 * when `with_state`) into buf: masters then states, zn floats each. */
static bg_status_t load_shard_param(train_t *t, bg_ckpt_t *ck, bg_st_file_t *f, bool with_state,
                                    int i, float *buf, int64_t zn)
{
    bg_optim_kind_t kind = t->c->optim.kind;
    int ns = with_state ? bg_optim_state_count(kind) : 0;
    bg_rt_param_view_t v;
    bg_rt_piece_t p;
    bg_rt_param_get(t->rt, i, &v);
    bg_status_t st = BG_OK;
    for (int r = 0; st == BG_OK && r < bg_rt_shard_ranges(t->rt); r++) {
        if (!bg_rt_shard_piece(t->rt, i, r, &p))
            continue;
        st = load_piece(ck, f, v.name, &v, &p, false, buf + p.at);
        for (int s = 0; st == BG_OK && s < ns; s++) {
            char key[BG_NAME_MAX + 16];
            const char *suffix = state_suffix(kind, s);
            snprintf(key, sizeof(key), "%s%s", v.name, suffix);
            st = bg_ckpt_tensor_info(ck, key, NULL)
                     ? load_piece(ck, f, key, &v, &p, !strcmp(suffix, BG_CKPT_ADAM_V),
                                  buf + (s + 1) * zn + p.at)
                     : state_missing(key);
        }
    }
    return st;
}

/*
 * bg_train_load_params_ under ZeRO-1: only this replica's shard is read
 * (element ranges of the global tensors, whole or in pieces) into a host
 * copy of the shard (1/D of the stage's state), which starts as the
 * current shard so what is not loaded (the state, for --init) stays.
 */
static bg_status_t load_shard(train_t *t, bg_ckpt_t *ck, bg_st_file_t *f, bool with_state)
{
    int ns = bg_optim_state_count(t->c->optim.kind);
    int64_t zn = bg_rt_shard_numel(t->rt);
    size_t nf;
    if (!bg_mul_size((size_t)zn, (size_t)ns + 1, &nf) || !bg_add_size(nf, 1, &nf) ||
        nf > SIZE_MAX / sizeof(float))
        return bg_errorf(BG_ERR_INVALID, "checkpoint: a shard of %lld elements overflows size_t",
                         (long long)zn);
    float *buf = malloc(nf * sizeof(float));
    if (!buf)
        return bg_errorf(BG_ERR_NOMEM, "checkpoint: no host memory for a %zu MiB shard",
                         nf * sizeof(float) >> 20);
    bg_log(BG_LOG_DEBUG, "rank %d stage %d: loading shard %d/%d through a host copy of %zu bytes",
           t->rank, t->stage, t->dp, t->D, nf * sizeof(float));
    float *state[2] = {buf + zn, buf + (ns > 1 ? 2 * zn : zn)};
    bg_status_t st = bg_rt_shard_download(t->rt, buf, state);
    for (int i = 0; i < bg_rt_param_count(t->rt) && st == BG_OK; i++)
        st = load_shard_param(t, ck, f, with_state, i, buf, zn);
    if (st == BG_OK)
        st = bg_rt_shard_upload(t->rt, buf, state);
    free(buf);
    return st;
}

/* Load every parameter this rank holds by name (and optimizer state when
 * `with_state`); names missing from the file are an error listing the first,
 * and so are values training cannot start from (check_loaded). */
bg_status_t bg_train_load_params_(train_t *t, bg_ckpt_t *ck, bg_st_file_t *f, bool with_state)
{
    int ns = bg_optim_state_count(t->c->optim.kind);
    if (bg_rt_sharded(t->rt))
        return load_shard(t, ck, f, with_state);
    bg_status_t st0 = bg_rt_params_download(t->rt);
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
            if (!bg_ckpt_tensor_info(ck, key, NULL))
                return state_missing(key);
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

/*
 * 2bw's next step runs on the weight version before the newest, which a
 * checkpoint does not hold (it holds the drained newest and the optimizer
 * state): resuming would not continue the run. So a 2bw run does not
 * resume, and a 2bw checkpoint does not resume under another schedule;
 * --init starts afresh from its weights either way.
 */
static bg_status_t refuse_2bw_resume(const train_t *t, const char *step_path, const bg_ckpt_t *ck)
{
    const char *was = bg_ckpt_meta(ck, "schedule");
    bool ck_2bw = was && !strcmp(was, "2bw");
    if (!bg_sched_flush_free(t->sched) && !ck_2bw)
        return BG_OK;
    return bg_errorf(BG_ERR_INVALID, "%s: cannot resume %s%s: 2bw checkpoints hold the newest "
                     "weights but not the previous version its next step would run on; start "
                     "afresh from them with --init STAGE-FILE instead of --resume", step_path,
                     ck_2bw ? "a 2bw run" : "with --schedule 2bw",
                     ck_2bw && !bg_sched_flush_free(t->sched) ? " under another schedule" : "");
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
        st = refuse_2bw_resume(t, step_path, ck);
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
