/*
 * engine/checkpoint_shard.h -- a checkpoint's logical tensors: whole ones,
 * and those a sharded (ZeRO-1) save split into pieces across replica files
 * ("<name>@<offset>", docs/checkpoints.md "Sharded files"). Internal to
 * engine/checkpoint*.c. Must NOT open files or read the manifest: it indexes
 * files bg_ckpt_open has already validated.
 */
#ifndef BG_CHECKPOINT_SHARD_H
#define BG_CHECKPOINT_SHARD_H

#include "engine/checkpoint.h"

/* One piece: elements [off, off + n) of tensor `name`, as F32 tensor t of file. */
typedef struct ckpt_piece {
    char *name; /* global name, malloc'd */
    int64_t off, n;
    int file;
    const bg_st_tensor_t *t;
    int ndim; /* the whole tensor's recorded shape */
    int64_t shape[BG_ST_MAX_DIMS];
} ckpt_piece_t;

/* One logical tensor: whole (t, file) or pieces pc[p0 .. p0 + info.pieces). */
typedef struct ckpt_tensor {
    bg_ckpt_tensor_info_t info;
    int file;
    const bg_st_tensor_t *t;
    size_t p0;
} ckpt_tensor_t;

typedef struct ckpt_table {
    ckpt_tensor_t *ten; /* sorted by name */
    size_t nten;
    ckpt_piece_t *pc; /* sorted by (name, off) */
    size_t npc;
} ckpt_table_t;

/* Index files[0..n) (validated safetensors) into *out, checking that the
 * pieces of every tensor tile it exactly (see bg_ckpt_open). Pieces are
 * recognised only in files with "shard" metadata. BG_ERR_INVALID naming the
 * file and tensor, BG_ERR_NOMEM; *out is left empty on error. */
bg_status_t bg_ckpt_table_build_(bg_st_file_t *const *files, int n, ckpt_table_t *out);
void bg_ckpt_table_free_(ckpt_table_t *tb);
/* The tensor `name`, NULL if none. */
const ckpt_tensor_t *bg_ckpt_table_find_(const ckpt_table_t *tb, const char *name);
/* Elements [off, off + count) (in bounds) of pieced tensor x into dst. */
bg_status_t bg_ckpt_table_read_(const ckpt_table_t *tb, bg_st_file_t *const *files,
                                const ckpt_tensor_t *x, int64_t off, int64_t count, float *dst);

#endif
