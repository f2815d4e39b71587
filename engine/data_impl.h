/*
 * engine/data_impl.h -- what a data source (IDX, token shards, synthetic)
 * implements for engine/data.c. Internal to the engine's data files.
 *
 * A source only knows how to open its files and produce the row of one
 * sample index; ordering, batching, shuffling and bounds checks live in
 * data.c, so a source must NOT shuffle or know about steps.
 */
#ifndef BG_DATA_IMPL_H
#define BG_DATA_IMPL_H

#include "engine/data.h"

typedef struct bg_data_source {
    void *impl;
    /* Free everything the source owns. */
    void (*destroy)(void *impl);
    /*
     * Sample `sample` (already bounds-checked against n_train/n_eval) of
     * `split` into one input row and/or one target row (either may be NULL).
     * Must be thread-safe: implementations only read `impl`.
     */
    bg_status_t (*row)(const void *impl, bg_split_t split, int64_t sample, void *input,
                       int32_t *target);
} bg_data_source_t;

/*
 * Source constructors: parse `arg` (the spec after "kind:", may be ""),
 * validate files, fill the source-specific fields of `info` (kind, name,
 * n_train, n_eval, input_cols, input_dtype, target_cols, classes, token and
 * file counts) and `*out`. data.c fills batch and step counts.
 */
bg_status_t bg_data_idx_open(const char *arg, const bg_data_opts_t *o, bg_data_info_t *info,
                             bg_data_source_t *out);
bg_status_t bg_data_tokens_open(const char *arg, const bg_data_opts_t *o, bg_data_info_t *info,
                                bg_data_source_t *out);
bg_status_t bg_data_synth_open(const char *arg, const bg_data_opts_t *o, bg_data_info_t *info,
                               bg_data_source_t *out);

#endif
