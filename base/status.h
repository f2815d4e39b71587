/*
 * base/status.h -- the one status type of brigade, and error messages.
 *
 * The floor every room stands on: it includes nothing of the project.
 * Library code returns bg_status_t and records one human-readable message
 * where the error is first detected (bg_errorf); callers that only pass a
 * status upwards must not overwrite it. Nothing here exits or aborts.
 */
#ifndef BG_STATUS_H
#define BG_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    BG_OK = 0,
    BG_ERR_INVALID = -1,     /* bad input: arguments, shapes, files, flags */
    BG_ERR_NOMEM = -2,       /* an allocation failed or a limit was hit */
    BG_ERR_IO = -3,          /* a file or socket operation failed */
    BG_ERR_UNSUPPORTED = -4, /* valid request this build/backend cannot do */
    BG_ERR_CUDA = -5,        /* CUDA runtime or cuBLAS failure */
    BG_ERR_UCX = -6,         /* UCX failure */
    BG_ERR_TIMEOUT = -7,     /* a deadline passed */
    BG_ERR_PEER = -8,        /* a peer rank died or became unreachable */
    BG_ERR_CANCELED = -9,    /* an operation was cancelled */
    BG_ERR_INTERNAL = -10,   /* a broken invariant: a bug in brigade */
} bg_status_t;

/* Short fixed name of a status ("invalid input"); never NULL. */
const char *bg_status_str(bg_status_t st);

/*
 * Record `fmt` as this thread's last error message and return `st`, so that
 * `return bg_errorf(BG_ERR_INVALID, "x: %d", x);` both explains and fails.
 * Cannot fail; messages longer than 1 KiB are truncated.
 */
bg_status_t bg_errorf(bg_status_t st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bg_status_t bg_verrorf(bg_status_t st, const char *fmt, va_list ap);

/*
 * Prepend context ("rank 3 (stage 1, dp 0): ") to the current message of
 * this thread. Returns `st` unchanged.
 */
bg_status_t bg_error_prefix(bg_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* This thread's last error message, "" if none. Valid until the next call. */
const char *bg_last_error(void);
void bg_clear_error(void);

/* Logging to stderr. Level from BRIGADE_LOG=error|warn|info|debug (default warn). */
typedef enum { BG_LOG_ERROR = 0, BG_LOG_WARN, BG_LOG_INFO, BG_LOG_DEBUG } bg_log_level_t;
void bg_log(bg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int bg_log_enabled(bg_log_level_t level);

#endif
