/*
 * engine/data.c -- dataset front end: spec dispatch, batching, the seeded
 * per-epoch permutation, DP/micro-batch slicing and the resumable state.
 *
 * The permutation is a keyed Feistel bijection on [0, 2^k) with cycle
 * walking down to [0, N), its round function a Philox block keyed by
 * (seed, "data.shuffle") and counted by (epoch, round, half): any sample's
 * position is computable in O(1) from (seed, epoch, index) alone, with no
 * table and no state, which is what makes resume-at-step exact. Must NOT
 * read files (sources do) or keep anything that changes after open.
 */
#include "engine/data.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/rng.h"
#include "engine/data_impl.h"

struct bg_data {
    bg_data_info_t info;
    bg_data_opts_t opts;
    bg_rng_key_t shuffle_key;
    bg_data_source_t src;
};

/* Feistel rounds; 4 rounds of a PRF give a pseudo-random permutation (Luby-Rackoff). */
#define BG_SHUFFLE_ROUNDS 4

void bg_data_opts_default(bg_data_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->shuffle = true;
}

/* Position of index i (< n) in epoch `epoch`'s order: a bijection on [0, n). */
static int64_t shuffle_index(bg_rng_key_t key, uint64_t epoch, int64_t n, int64_t i)
{
    if (n <= 1) return i;
    int bits = 0;
    while (bits < 62 && ((int64_t)1 << bits) < n) bits++;
    bits += bits & 1; /* balanced halves */
    int half = bits / 2;
    uint64_t mask = ((uint64_t)1 << half) - 1;
    uint64_t x = (uint64_t)i;
    /* Cycle walking: the domain is < 4n, so the expected number of walks is < 4,
       and it terminates because the Feistel network permutes [0, 2^bits). */
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < BG_SHUFFLE_ROUNDS; round++) {
            uint32_t w[4];
            uint64_t ctr = ((epoch * BG_SHUFFLE_ROUNDS + (uint64_t)round) << 32) | r;
            bg_rng_block(key, ctr, w);
            uint64_t f = (((uint64_t)w[1] << 32) | w[0]) & mask;
            uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)n);
    return (int64_t)x;
}

static bg_status_t parse_spec(const char *spec, const bg_data_opts_t *o, bg_data_info_t *info,
                              bg_data_source_t *src)
{
    const char *colon = strchr(spec, ':');
    size_t klen = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *arg = colon ? colon + 1 : "";
    if (klen == 13 && !strncmp(spec, "fashion-mnist", klen))
        return bg_data_idx_open(arg, o, info, src);
    if (klen == 6 && !strncmp(spec, "tokens", klen)) return bg_data_tokens_open(arg, o, info, src);
    if (klen >= 9 && !strncmp(spec, "synthetic", 9) && (klen == 9 || spec[9] == ','))
        return bg_data_synth_open(spec + 9, o, info, src);
    return bg_errorf(BG_ERR_INVALID,
                     "data spec '%s': unknown kind (expected fashion-mnist[:DIR], "
                     "tokens:PATH|GLOB|PREFIX or synthetic[:images|:tokens][,k=v...])",
                     spec);
}

/*
 * The shuffle addresses at most 2^62 samples, and one global batch of inputs
 * and targets must be addressable in bytes; both are refused here so that no
 * later product (row offsets, buffer sizes) can wrap.
 */
static bg_status_t check_sizes(const char *spec, const bg_data_info_t *in)
{
    const int64_t lim = (int64_t)1 << 62;
    size_t isz = in->input_dtype == BG_F32 ? sizeof(float) : sizeof(int32_t), bi = 0, bt = 0;
    if (in->n_train < 0 || in->n_eval < 0 || in->n_train >= lim || in->n_eval >= lim)
        return bg_errorf(BG_ERR_INVALID,
                         "data '%s': %" PRId64 " training / %" PRId64
                         " held-out samples; at most 2^62 are supported",
                         spec, in->n_train, in->n_eval);
    if (in->input_cols < 1 || in->target_cols < 1 ||
        !bg_mul3_size((size_t)in->batch, (size_t)in->input_cols, isz, &bi) ||
        !bg_mul3_size((size_t)in->batch, (size_t)in->target_cols, sizeof(int32_t), &bt) ||
        bi > (size_t)lim || bt > (size_t)lim)
        return bg_errorf(BG_ERR_INVALID,
                         "data '%s': a batch of %" PRId64 " rows of %" PRId64
                         " columns does not fit in memory",
                         spec, in->batch, in->input_cols);
    return BG_OK;
}

bg_status_t bg_data_open(const char *spec, const bg_data_opts_t *opts, bg_data_t **out)
{
    if (!spec || !opts || !out) return bg_errorf(BG_ERR_INVALID, "bg_data_open: NULL argument");
    if (opts->batch <= 0)
        return bg_errorf(BG_ERR_INVALID, "data '%s': batch must be > 0 (got %" PRId64 ")", spec,
                         opts->batch);
    bg_data_t *ds = calloc(1, sizeof(*ds));
    if (!ds) return bg_errorf(BG_ERR_NOMEM, "data '%s': out of memory", spec);
    ds->opts = *opts;
    bg_status_t st = parse_spec(spec, opts, &ds->info, &ds->src);
    if (st != BG_OK) goto err_free;
    bg_data_info_t *in = &ds->info;
    in->batch = opts->batch;
    if ((st = check_sizes(spec, in)) != BG_OK) goto err_src;
    in->steps_per_epoch = in->n_train / opts->batch;
    in->eval_steps = in->n_eval / opts->batch;
    if (in->steps_per_epoch < 1) {
        st = bg_errorf(BG_ERR_INVALID,
                       "data '%s': %" PRId64 " training samples cannot fill one batch of %" PRId64,
                       spec, in->n_train, opts->batch);
        goto err_src;
    }
    ds->shuffle_key = bg_rng_key(opts->seed, "data.shuffle");
    *out = ds;
    return BG_OK;

err_src:
    ds->src.destroy(ds->src.impl);
err_free:
    free(ds);
    return st;
}

void bg_data_close(bg_data_t *ds)
{
    if (!ds) return;
    ds->src.destroy(ds->src.impl);
    free(ds);
}

const bg_data_info_t *bg_data_info(const bg_data_t *ds)
{
    return &ds->info;
}

bg_status_t bg_data_sample_index(const bg_data_t *ds, bg_split_t split, int64_t step,
                                 int64_t row, int64_t *out)
{
    const bg_data_info_t *in = &ds->info;
    if (step < 0 || row < 0 || row >= in->batch)
        return bg_errorf(BG_ERR_INVALID,
                         "data %s: step %" PRId64 " row %" PRId64 " out of range (batch %" PRId64
                         ")",
                         in->name, step, row, in->batch);
    if (split == BG_SPLIT_EVAL) {
        if (step >= in->eval_steps)
            return bg_errorf(BG_ERR_INVALID,
                             "data %s: eval step %" PRId64 " out of range (%" PRId64
                             " eval batches of %" PRId64 ")",
                             in->name, step, in->eval_steps, in->batch);
        *out = step * in->batch + row;
        return BG_OK;
    }
    if (split != BG_SPLIT_TRAIN) return bg_errorf(BG_ERR_INVALID, "data: bad split %d", split);
    int64_t epoch = step / in->steps_per_epoch;
    int64_t idx = (step % in->steps_per_epoch) * in->batch + row;
    if (ds->opts.shuffle) idx = shuffle_index(ds->shuffle_key, (uint64_t)epoch, in->n_train, idx);
    *out = idx;
    return BG_OK;
}

bg_status_t bg_data_fetch(const bg_data_t *ds, bg_split_t split, int64_t step, int64_t row0,
                          int64_t nrows, void *inputs, int32_t *targets)
{
    const bg_data_info_t *in = &ds->info;
    if (row0 < 0 || nrows < 0 || row0 > in->batch - nrows)
        return bg_errorf(BG_ERR_INVALID,
                         "data %s: rows [%" PRId64 ", %" PRId64 ") outside the batch of %" PRId64,
                         in->name, row0, row0 + nrows, in->batch);
    size_t isz = in->input_dtype == BG_F32 ? sizeof(float) : sizeof(int32_t);
    for (int64_t r = 0; r < nrows; r++) {
        int64_t sample;
        bg_status_t st = bg_data_sample_index(ds, split, step, row0 + r, &sample);
        if (st != BG_OK) return st;
        void *irow = inputs ? (char *)inputs + (size_t)(r * in->input_cols) * isz : NULL;
        int32_t *trow = targets ? targets + r * in->target_cols : NULL;
        st = ds->src.row(ds->src.impl, split, sample, irow, trow);
        if (st != BG_OK) return st;
    }
    return BG_OK;
}

bg_status_t bg_data_slice(int64_t total, int64_t parts, int64_t index, int64_t *row0,
                          int64_t *nrows)
{
    if (total < 0 || parts < 1 || index < 0 || index >= parts)
        return bg_errorf(BG_ERR_INVALID,
                         "data slice: part %" PRId64 " of %" PRId64 " of %" PRId64
                         " rows is not valid",
                         index, parts, total);
    int64_t base = total / parts, extra = total % parts;
    *row0 = index * base + (index < extra ? index : extra);
    *nrows = base + (index < extra);
    return BG_OK;
}

bg_data_state_t bg_data_state_at(const bg_data_t *ds, int64_t step)
{
    bg_data_state_t s = {.seed = ds->opts.seed,
                         .epoch = step / ds->info.steps_per_epoch,
                         .step = step,
                         .batch = ds->info.batch};
    return s;
}

bg_status_t bg_data_state_check(const bg_data_t *ds, const bg_data_state_t *st)
{
    const bg_data_info_t *in = &ds->info;
    if (st->seed != ds->opts.seed)
        return bg_errorf(BG_ERR_INVALID,
                         "data %s: checkpoint was read with seed %" PRIu64
                         ", this run uses seed %" PRIu64 " (the sample order would differ)",
                         in->name, st->seed, ds->opts.seed);
    if (st->batch != in->batch)
        return bg_errorf(BG_ERR_INVALID,
                         "data %s: checkpoint used global batch %" PRId64
                         ", this run uses %" PRId64 " (the sample order would differ)",
                         in->name, st->batch, in->batch);
    if (st->step < 0 || st->epoch != st->step / in->steps_per_epoch)
        return bg_errorf(BG_ERR_INVALID,
                         "data %s: checkpoint is at step %" PRId64 " of epoch %" PRId64
                         ", but this dataset has %" PRId64
                         " steps per epoch (different data files?)",
                         in->name, st->step, st->epoch, in->steps_per_epoch);
    return BG_OK;
}

bg_status_t bg_data_state_format(const bg_data_state_t *st, char *buf, size_t len)
{
    int n = snprintf(buf, len, "seed=%" PRIu64 " epoch=%" PRId64 " step=%" PRId64 " batch=%" PRId64,
                     st->seed, st->epoch, st->step, st->batch);
    if (n < 0 || (size_t)n >= len)
        return bg_errorf(BG_ERR_INVALID, "data state: buffer of %zu bytes too small", len);
    return BG_OK;
}

bg_status_t bg_data_state_parse(const char *s, bg_data_state_t *out)
{
    bg_data_state_t st;
    int used = 0;
    if (!s ||
        sscanf(s, "seed=%" SCNu64 " epoch=%" SCNd64 " step=%" SCNd64 " batch=%" SCNd64 "%n",
               &st.seed, &st.epoch, &st.step, &st.batch, &used) != 4 ||
        s[used] != '\0' || st.epoch < 0 || st.step < 0 || st.batch < 1)
        return bg_errorf(BG_ERR_INVALID,
                         "data state '%s': expected 'seed=S epoch=E step=N batch=B'",
                         s ? s : "(null)");
    *out = st;
    return BG_OK;
}
