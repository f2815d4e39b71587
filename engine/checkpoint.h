/*
 * engine/checkpoint.h -- safetensors files and checkpoint directories.
 *
 * Two layers:
 *  1. safetensors I/O (bg_st_*): a writer that collects named host tensors
 *     and metadata strings and writes them atomically, and a reader that
 *     maps a file and validates every byte of its header before handing out
 *     a tensor (bounds, sizes, overlaps, duplicates, dtypes), so a corrupt
 *     file is refused with a message naming the file and tensor, never a
 *     crash. Any safetensors file works (PyTorch's, hand-made, ours).
 *  2. checkpoint directories (bg_ckpt_*):
 *        DIR/latest                      "step-000123\n", published last
 *        DIR/step-000123/manifest.json   layout, step, files + sizes + CRCs
 *        DIR/step-000123/stage-0.safetensors ...
 *     Tensors are keyed by global parameter names, so a checkpoint saved
 *     with one layout loads into any other (look names up across all files).
 *
 * Must NOT know about layers, devices, optimizers' math or transport: it
 * moves named host buffers and strings. Never exits. Little-endian hosts.
 * Protocol and naming conventions: docs/checkpoints.md.
 */
#ifndef BG_CHECKPOINT_H
#define BG_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* ------------------------------------------------------------ safetensors */

typedef enum {
    BG_ST_BOOL = 0,
    BG_ST_U8,
    BG_ST_I8,
    BG_ST_F8_E4M3,
    BG_ST_F8_E5M2,
    BG_ST_I16,
    BG_ST_U16,
    BG_ST_F16,
    BG_ST_BF16,
    BG_ST_I32,
    BG_ST_U32,
    BG_ST_F32,
    BG_ST_I64,
    BG_ST_U64,
    BG_ST_F64,
    BG_ST_DTYPE_COUNT
} bg_st_dtype_t;

/* "F32", ...; NULL for an invalid value. */
const char *bg_st_dtype_name(bg_st_dtype_t dt);
/* Bytes per element; 0 for an invalid value. */
size_t bg_st_dtype_size(bg_st_dtype_t dt);
/* Exact, case-sensitive name as in the safetensors spec. */
bg_status_t bg_st_dtype_parse(const char *name, bg_st_dtype_t *out);

#define BG_ST_MAX_DIMS 8
/* Headers beyond this are refused (safetensors' own limit is 100 MB). */
#define BG_ST_MAX_HEADER ((uint64_t)100 << 20)

/* A tensor of an open file. `data` points into the mapping and may be
   unaligned: copy with bg_st_read*() or memcpy. Valid until bg_st_close. */
typedef struct bg_st_tensor {
    const char *name;
    bg_st_dtype_t dtype;
    int ndim;
    int64_t shape[BG_ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    uint64_t offset; /* of the data in the file (header included) */
    const void *data;
} bg_st_tensor_t;

typedef struct bg_st_writer bg_st_writer_t;

bg_status_t bg_st_writer_new(bg_st_writer_t **out);
void bg_st_writer_free(bg_st_writer_t *w); /* NULL is fine */

/*
 * Add tensor `name` (copied) of `dt` and `shape` (ndim 0 = scalar) whose
 * contiguous row-major bytes are at `data`. The data is NOT copied: it must
 * stay valid and unchanged until bg_st_writer_write returns. Fails on
 * duplicate names, "__metadata__", empty names, ndim > BG_ST_MAX_DIMS,
 * negative dims, NULL data with nonzero size.
 */
bg_status_t bg_st_writer_add(bg_st_writer_t *w, const char *name, bg_st_dtype_t dt, int ndim,
                             const int64_t *shape, const void *data);
/* Set metadata key to value (both copied; a second set replaces). */
bg_status_t bg_st_writer_meta(bg_st_writer_t *w, const char *key, const char *value);

/*
 * Write everything to `path` atomically: PATH.tmp.<pid>, fsync, rename,
 * directory fsync. Tensors are laid out largest dtype first (then in the
 * order added) with no gaps, and the header is space-padded to 8 bytes,
 * so every tensor is naturally aligned and the file satisfies the strict
 * reference reader. The writer stays usable (it can write again).
 */
bg_status_t bg_st_writer_write(bg_st_writer_t *w, const char *path);

typedef struct bg_st_file bg_st_file_t;

/*
 * Map and validate `path`. Checks: file length >= 8; header length within
 * the file and BG_ST_MAX_HEADER; header is one JSON object; every entry
 * has a known dtype, a shape of non-negative integers, data_offsets
 * [begin, end] with begin <= end <= buffer size and end - begin ==
 * numel * dtype size; no two tensors overlap; no duplicate names;
 * __metadata__ (optional) maps strings to strings. Gaps and any order are
 * allowed. BG_ERR_INVALID names the file and the tensor; BG_ERR_IO for
 * open/mmap failures.
 */
bg_status_t bg_st_open(const char *path, bg_st_file_t **out);
void bg_st_close(bg_st_file_t *f); /* NULL is fine */

const char *bg_st_path(const bg_st_file_t *f);
size_t bg_st_count(const bg_st_file_t *f);
/* Tensor i (0 <= i < count) in header order; names are unique. */
const bg_st_tensor_t *bg_st_tensor_at(const bg_st_file_t *f, size_t i);
/* NULL if absent. O(log n). */
const bg_st_tensor_t *bg_st_find(const bg_st_file_t *f, const char *name);

/* Metadata value for key, NULL if absent. */
const char *bg_st_meta(const bg_st_file_t *f, const char *key);
size_t bg_st_meta_count(const bg_st_file_t *f);
/* Pair i of the metadata in header order. */
void bg_st_meta_at(const bg_st_file_t *f, size_t i, const char **key, const char **value);

/*
 * Copy tensor `name` into `dst` as f32, converting F32, BF16, F16 and F64.
 * If `shape` is non-NULL the tensor's shape must equal (ndim, shape)
 * exactly; with NULL only the element count must equal `numel`. Errors name
 * the file, the tensor, and both shapes.
 */
bg_status_t bg_st_read_f32(const bg_st_file_t *f, const char *name, int ndim,
                           const int64_t *shape, int64_t numel, float *dst);
/* BG_OK if tensor `name` has shape (ndim, shape) (or, with shape NULL,
 * numel elements); BG_ERR_INVALID naming the file, tensor and both shapes
 * otherwise (the check bg_st_read_f32 makes). */
bg_status_t bg_st_check_shape(const bg_st_file_t *f, const char *name, int ndim,
                              const int64_t *shape, int64_t numel);
/* "[768, 3072]" into buf (truncated to len), as the messages print shapes. */
void bg_st_shape_text(int ndim, const int64_t *shape, char *buf, size_t len);
/* Elements [off, off + count) of tensor `name` (row-major, any shape) into
 * dst as f32, converting as bg_st_read_f32. BG_ERR_INVALID for a range
 * outside the tensor (naming file and tensor) or a dtype that does not convert. */
bg_status_t bg_st_read_f32_range(const bg_st_file_t *f, const char *name, int64_t off,
                                 int64_t count, float *dst);
/* Copy tensor `name` bytes verbatim; its dtype must be `dt` and its size `nbytes`. */
bg_status_t bg_st_read_raw(const bg_st_file_t *f, const char *name, bg_st_dtype_t dt, void *dst,
                           size_t nbytes);

/* IEEE half and bf16 <-> f32 are layers/tensor.h's (bg_f16_to_f32, bg_bf16_to_f32). */

/* ------------------------------------------------------- checkpoint dirs */

/* Optimizer-state tensor names: "<param>" BG_CKPT_ADAM_M etc. */
#define BG_CKPT_ADAM_M ".adam_m"
#define BG_CKPT_ADAM_V ".adam_v"
#define BG_CKPT_MOMENTUM ".momentum"
/* The loss scale and its good-step count, f32 [2], in stage 0's file. */
#define BG_CKPT_LOSS_SCALE "optimizer.loss_scale"
#define BG_CKPT_FORMAT "brigade-checkpoint-1"
/*
 * Sharded checkpoints (ZeRO-1, docs/checkpoints.md "Sharded files"): replica
 * k of stage s writes "stage-<s>.dp-<k>.safetensors" holding, for each
 * tensor, the piece [off, off + n) of it in k's shard as a 1-D F32 tensor
 * named "<name>@<off>" (BG_CKPT_PIECE_SEP), with the whole tensor's shape in
 * the metadata under "<name>@shape" (BG_CKPT_SHAPE_KEY, "[768,3072]") and
 * the file's place under "shard" ("<k>/<D>"). Readers assemble whole
 * tensors from the pieces or read any element range of them.
 */
#define BG_CKPT_PIECE_SEP '@'
#define BG_CKPT_SHAPE_KEY "@shape"
#define BG_CKPT_SHARD_KEY "shard"

typedef struct bg_ckpt_file_entry {
    char *name;     /* relative to the step directory: "stage-0.safetensors" */
    int stage;      /* which stage wrote it */
    int shard;      /* which replica of the stage (0 when not sharded) */
    uint64_t bytes; /* exact file size */
    uint32_t crc32; /* zlib crc32 of the whole file */
} bg_ckpt_file_entry_t;

typedef struct bg_ckpt_manifest {
    int64_t step;      /* optimizer steps completed */
    int stages, dp;    /* layout that wrote it */
    int shards;        /* files per stage: 1, or dp for a sharded (ZeRO-1) save */
    char *schedule;    /* "1f1b", ... */
    char *model;       /* model name */
    int nfiles;
    bg_ckpt_file_entry_t *files;
} bg_ckpt_manifest_t;

void bg_ckpt_manifest_free(bg_ckpt_manifest_t *m); /* frees the fields, not m */

/* "DIR/step-000123" into a malloc'd string (*out), for step >= 0. */
bg_status_t bg_ckpt_step_path(const char *dir, int64_t step, char **out);
/* "STEP_PATH/stage-S.safetensors" into a malloc'd string. */
bg_status_t bg_ckpt_stage_path(const char *step_path, int stage, char **out);

/* "STEP_PATH/stage-S.dp-K.safetensors" (replica K's shard) into a malloc'd string. */
bg_status_t bg_ckpt_shard_path(const char *step_path, int stage, int shard, char **out);

/*
 * Create DIR/step-NNNNNN (and DIR) and return its path in *step_path
 * (malloc'd). Each stage then writes bg_ckpt_stage_path(step_path, s) with
 * bg_st_writer_write, and one process calls bg_ckpt_publish once all are
 * written. Re-running after a crash overwrites the partial directory. If
 * `latest` names this very step (a second run into the same directory),
 * `latest` is first moved back to the newest other step with a manifest, or
 * removed if there is none, so it never names files being rewritten.
 */
bg_status_t bg_ckpt_begin(const char *dir, int64_t step, char **step_path);

/*
 * Verify that each of the `stages` stage files of DIR/step-NNNNNN is a
 * complete, valid safetensors file, write manifest.json (layout, schedule,
 * model name, and every file's size and CRC) atomically, and only then
 * point DIR/latest at this step atomically. On failure `latest` is
 * untouched. Call once, from one process, after every stage has written.
 */
bg_status_t bg_ckpt_publish(const char *dir, int64_t step, int stages, int dp,
                            const char *schedule, const char *model);
/* bg_ckpt_publish for a sharded save: the stages x dp files
 * bg_ckpt_shard_path(step_path, s, k), each listed with its stage and shard
 * (manifest "shards": dp). Same protocol and guarantees. */
bg_status_t bg_ckpt_publish_sharded(const char *dir, int64_t step, int stages, int dp,
                                    const char *schedule, const char *model);

/*
 * The step directory DIR/latest names. BG_OK with *step_path = NULL when
 * there is no checkpoint (DIR or DIR/latest missing); BG_ERR_INVALID when
 * `latest` is unreadable, malformed, or names a directory without a
 * manifest (a corrupt checkpoint, distinct from none). *step_path is
 * malloc'd.
 */
bg_status_t bg_ckpt_dir_latest(const char *dir, char **step_path);

/* Validate manifest text (len bytes, `what` names it in messages) into *out
 * (free with bg_ckpt_manifest_free): format, step, layout ranges, one file
 * per stage (or, with "shards": dp, one per stage and replica, in order,
 * each with its "stage" and "shard") with plain names, sizes and CRCs.
 * BG_ERR_INVALID otherwise. */
bg_status_t bg_ckpt_manifest_parse(const char *text, size_t len, const char *what,
                                   bg_ckpt_manifest_t *out);
/* Read and validate STEP_PATH/manifest.json into *out (free with bg_ckpt_manifest_free). */
bg_status_t bg_ckpt_manifest_read(const char *step_path, bg_ckpt_manifest_t *out);

typedef struct bg_ckpt bg_ckpt_t;

/*
 * Open a complete checkpoint: read the manifest, then check every listed
 * file exists with its recorded size and CRC and opens as valid safetensors.
 * A missing, truncated or altered file is refused (BG_ERR_INVALID naming
 * it). Names may repeat across files (a tied weight held by two stages);
 * lookups return the copy in the first file listed. The pieces of sharded
 * files are checked to tile their tensors exactly: a piece that is not F32
 * 1-D, has no or a malformed recorded shape, disagrees with another piece's
 * shape, overlaps another, leaves a gap or runs past the end, or a name both
 * whole and in pieces is BG_ERR_INVALID naming the file and tensor.
 */
bg_status_t bg_ckpt_open(const char *step_path, bg_ckpt_t **out);
void bg_ckpt_close(bg_ckpt_t *c); /* NULL is fine */

const bg_ckpt_manifest_t *bg_ckpt_manifest(const bg_ckpt_t *c);
int bg_ckpt_file_count(const bg_ckpt_t *c);
const bg_st_file_t *bg_ckpt_file(const bg_ckpt_t *c, int i);
/* Size and zlib CRC-32 of the whole file `f` maps (what manifests record). */
void bg_st_file_digest(const bg_st_file_t *f, uint64_t *bytes, uint32_t *crc32);

/* The tensor named `name` in any file, NULL if none; *file (if non-NULL) gets its file. */
const bg_st_tensor_t *bg_ckpt_find(const bg_ckpt_t *c, const char *name,
                                   const bg_st_file_t **file);
/* bg_st_read_f32 on whichever file holds `name`, or the tensor assembled
 * from its pieces (sharded checkpoints); the same shape rules. */
bg_status_t bg_ckpt_read_f32(const bg_ckpt_t *c, const char *name, int ndim,
                             const int64_t *shape, int64_t numel, float *dst);
/* Elements [off, off + count) of tensor `name` (whole or in pieces) into dst
 * as f32, after checking its whole shape as bg_ckpt_read_f32 does; only the
 * pieces overlapping the range are read. BG_ERR_INVALID for a missing name,
 * another shape, or a range outside the tensor. */
bg_status_t bg_ckpt_read_f32_range(const bg_ckpt_t *c, const char *name, int ndim,
                                   const int64_t *shape, int64_t numel, int64_t off,
                                   int64_t count, float *dst);

/* A logical tensor of a checkpoint: whole in one file, or in pieces. */
typedef struct bg_ckpt_tensor_info {
    const char *name; /* global name (valid until bg_ckpt_close) */
    bg_st_dtype_t dtype;
    int ndim;
    int64_t shape[BG_ST_MAX_DIMS];
    int64_t numel;
    int pieces; /* 0: whole */
} bg_ckpt_tensor_info_t;
/* Logical tensors, sorted by name (pieces counted once, as their tensor). */
size_t bg_ckpt_tensor_count(const bg_ckpt_t *c);
void bg_ckpt_tensor_at(const bg_ckpt_t *c, size_t i, bg_ckpt_tensor_info_t *out);
/* Whether `name` is a tensor of the checkpoint, whole or in pieces; *out
 * (if non-NULL) gets its description. */
bool bg_ckpt_tensor_info(const bg_ckpt_t *c, const char *name, bg_ckpt_tensor_info_t *out);
/* Metadata `key` from the first file that has it, NULL if none. */
const char *bg_ckpt_meta(const bg_ckpt_t *c, const char *key);

#endif
