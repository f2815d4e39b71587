/*
 * engine/data.h -- datasets that hand out global batches deterministically.
 *
 * A dataset is opened from a spec string and a few options, then read as a
 * pure function: global batch number `step`, rows [row0, row0+nrows), into
 * caller-provided host buffers. The sample order of an epoch depends only
 * on (seed, epoch) through a keyed bijection (no hidden state), so a run
 * resumed at step k reads exactly what an uninterrupted run would, on any
 * layout: each data-parallel replica reads its own contiguous slice of every
 * global batch, each micro-batch a contiguous slice of that.
 *
 * Spec strings (full syntax and file formats in docs/data.md):
 *   fashion-mnist[:DIR]   IDX files (gzip or plain), default
 *                         /usr/share/datasets/fashion-mnist; inputs f32
 *                         (N, 784) in [0,1] (or normalised), targets i32 (N)
 *   tokens:PATH|GLOB|PREFIX  llm.c .bin shards; inputs i32 (N, T), targets
 *                         i32 (N, T) = inputs shifted by one token
 *   synthetic[:images|:tokens][,key=value...]  seeded random data for
 *                         benchmarks (no files)
 *
 * A dataset is immutable after bg_data_open: fetches are thread-safe.
 * Must NOT know about layers' math, devices, transport or the schedule, and
 * must never exit: every failure is a status with a message naming the file.
 */
#ifndef BG_DATA_H
#define BG_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "layers/tensor.h"

typedef enum { BG_DATA_IMAGES = 0, BG_DATA_TOKENS = 1 } bg_data_kind_t;
typedef enum { BG_SPLIT_TRAIN = 0, BG_SPLIT_EVAL = 1 } bg_split_t;

typedef struct bg_data bg_data_t;

typedef struct bg_data_opts {
    int64_t batch;    /* global batch size B (rows per step); required, > 0 */
    int64_t seq_len;  /* T for token datasets; required for them, ignored otherwise */
    uint64_t seed;    /* shuffling (and synthetic data) seed */
    bool shuffle;     /* permute the training order every epoch (default true) */
    bool normalize;   /* images: (x - mean) / std with the dataset's constants
                         instead of x in [0,1] (default false) */
    int64_t vocab;    /* tokens: if > 0, every fetched token must be < vocab */
} bg_data_opts_t;

/* batch 0 (must be set), seq_len 0, seed 0, shuffle on, normalize off, vocab 0. */
void bg_data_opts_default(bg_data_opts_t *o);

typedef struct bg_data_info {
    bg_data_kind_t kind;
    char name[64];           /* "fashion-mnist", "tokens", "synthetic-images", ... */
    int64_t n_train, n_eval; /* samples: images, or windows of T+1 tokens */
    int64_t input_cols;      /* elements per input row: 784 or T */
    bg_dtype_t input_dtype;  /* BG_F32 (images) or BG_I32 (token ids) */
    int64_t target_cols;     /* elements per target row (i32): 1 or T */
    int64_t classes;         /* images: number of classes; tokens: opts.vocab or
                                the synthetic vocab, 0 if unknown */
    int64_t batch;           /* global batch B */
    int64_t steps_per_epoch; /* n_train / B (the last partial batch is dropped) */
    int64_t eval_steps;      /* n_eval / B (eval batches are never shuffled) */
    int64_t train_tokens, eval_tokens; /* tokens only: stream lengths */
    int train_files, eval_files;       /* files backing each split (0: synthetic) */
} bg_data_info_t;

/*
 * Open the dataset named by `spec` (see above). `opts` NULL is not allowed:
 * batch is required. Files are validated here (headers, sizes, counts), so a
 * bad file fails now with BG_ERR_INVALID naming it, not in the middle of a
 * run. Fails with BG_ERR_INVALID if an epoch has no full batch.
 */
bg_status_t bg_data_open(const char *spec, const bg_data_opts_t *opts, bg_data_t **out);
void bg_data_close(bg_data_t *ds); /* NULL is fine */

const bg_data_info_t *bg_data_info(const bg_data_t *ds);

/*
 * Rows [row0, row0+nrows) of global batch `step` of `split`.
 *   inputs:  images f32 (nrows, 784); tokens i32 (nrows, T); NULL to skip
 *   targets: images i32 (nrows);      tokens i32 (nrows, T); NULL to skip
 * Train: step may exceed one epoch; epoch = step / steps_per_epoch, and the
 * batch is taken from that epoch's permutation. Eval: step < eval_steps,
 * samples in file order. Requires 0 <= row0, nrows >= 0, row0+nrows <= B.
 * On error the buffers may be partly written. Thread-safe.
 */
bg_status_t bg_data_fetch(const bg_data_t *ds, bg_split_t split, int64_t step, int64_t row0,
                          int64_t nrows, void *inputs, int32_t *targets);

/*
 * The sample (image index, or token window index) that row `row` of global
 * batch `step` reads; the permutation made visible for tests and tooling.
 */
bg_status_t bg_data_sample_index(const bg_data_t *ds, bg_split_t split, int64_t step,
                                 int64_t row, int64_t *out);

/*
 * Part `index` of `parts` contiguous, near-equal slices of `total` rows
 * (the first total % parts slices get one extra row). Used for the DP
 * replica's share of a global batch and a micro-batch's share of that.
 */
bg_status_t bg_data_slice(int64_t total, int64_t parts, int64_t index, int64_t *row0,
                          int64_t *nrows);

/*
 * The reader's resumable state. Fetching is a pure function of the step, so
 * this is what a checkpoint records to resume at `step` and to check that
 * the resumed run reads the same order (same seed and batch).
 */
typedef struct bg_data_state {
    uint64_t seed;
    int64_t epoch; /* step / steps_per_epoch */
    int64_t step;  /* the next global batch to read */
    int64_t batch; /* global batch size the order was cut with */
} bg_data_state_t;

/* The state of `ds` just before reading global batch `step`. */
bg_data_state_t bg_data_state_at(const bg_data_t *ds, int64_t step);

/*
 * BG_OK if resuming `ds` from `st` reproduces the saved order; otherwise
 * BG_ERR_INVALID saying what differs (seed, batch, epoch boundaries).
 */
bg_status_t bg_data_state_check(const bg_data_t *ds, const bg_data_state_t *st);

/* "seed=1 epoch=0 step=120 batch=64" (for safetensors metadata). */
bg_status_t bg_data_state_format(const bg_data_state_t *st, char *buf, size_t len);
bg_status_t bg_data_state_parse(const char *s, bg_data_state_t *out);

/* ---------------------------------------------------------------- shards */

/* What bg_data_make_shards wrote. */
typedef struct bg_data_shards_info {
    int64_t train_tokens, val_tokens;
    int train_files, val_files;
} bg_data_shards_info_t;

/*
 * Byte-level tokenizer: token = byte value (vocab 256). Splits the text
 * file into train (first 1 - val_fraction of the bytes) and val (the rest),
 * writing llm.c-format shards of at most `shard_tokens` tokens (0: 100M)
 * named PREFIX_train_000000.bin ..., PREFIX_val_000000.bin ... Each shard
 * is written atomically (tmp file, fsync, rename). val_fraction in [0, 1);
 * when > 0, val gets at least 2 tokens. Fails with BG_ERR_INVALID if the
 * text is too short to give train at least 2 tokens. `out` may be NULL.
 */
bg_status_t bg_data_make_shards(const char *text_path, const char *out_prefix,
                                double val_fraction, int64_t shard_tokens,
                                bg_data_shards_info_t *out);

/* The llm.c shard header: 256 little-endian int32. */
#define BG_SHARD_MAGIC 20240520
#define BG_SHARD_HEADER_BYTES 1024

#endif
