/*
 * engine/checkpoint_fs.h -- crash-safe file creation for checkpoints,
 * markers and data shards.
 *
 * Protocol: write PATH.tmp.<pid>, fsync it, rename it over PATH, fsync the
 * directory. A crash at any point leaves either the old PATH or the new
 * one, never a torn file; at worst a stale PATH.tmp.<pid> that readers
 * ignore. Must NOT interpret file contents.
 */
#ifndef BG_CHECKPOINT_FS_H
#define BG_CHECKPOINT_FS_H

#include <stddef.h>

#include "base/status.h"

typedef struct bg_atomic_file {
    int fd;
    char *path; /* final name */
    char *tmp;  /* PATH.tmp.<pid> */
} bg_atomic_file_t;

/* Create PATH.tmp.<pid> for writing (truncating a stale one of ours). */
bg_status_t bg_atomic_open(const char *path, bg_atomic_file_t *out);
/* Write all n bytes (retrying short writes and EINTR). */
bg_status_t bg_atomic_write(bg_atomic_file_t *f, const void *buf, size_t n);
/*
 * fsync, close, rename onto the final path, fsync the directory. On failure
 * the temporary file is removed. Either way `f` is released.
 */
bg_status_t bg_atomic_commit(bg_atomic_file_t *f);
/* Close and remove the temporary file; releases `f`. NULL-safe fields. */
void bg_atomic_abort(bg_atomic_file_t *f);

/* The whole protocol for a buffer already in memory. */
bg_status_t bg_write_file_atomic(const char *path, const void *buf, size_t n);

/* fsync a directory so that renames and creations inside it are durable. */
bg_status_t bg_fsync_dir(const char *dir);
/* mkdir -p with mode 0777 (umask applies); existing directories are fine. */
bg_status_t bg_mkdir_p(const char *path);

#endif
