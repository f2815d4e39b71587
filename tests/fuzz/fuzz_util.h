/*
 * tests/fuzz/fuzz_util.h -- what the file-format fuzz targets share: a
 * scratch directory made once per process, writing an input there as a
 * named file, and aborting with the message when an invariant breaks.
 * Must not keep state between inputs beyond the directory's name.
 */
#ifndef BG_FUZZ_UTIL_H
#define BG_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/status.h"

static inline void fuzz_die(const char *target, const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s\n%s\n", target, what, msg ? msg : "");
    abort();
}

/* A private directory for this process's files (created on first use). */
static inline const char *fuzz_dir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/bg-fuzz-XXXXXX");
        if (!mkdtemp(dir)) fuzz_die("fuzz", "mkdtemp failed", NULL);
    }
    return dir;
}

/* DIR/name := data[size]; the path into buf. */
static inline void fuzz_write(const char *name, const uint8_t *data, size_t size, char *buf,
                              size_t n)
{
    snprintf(buf, n, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(buf, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        fuzz_die("fuzz", "cannot write the input file", buf);
}

/* A failure must be BG_ERR_INVALID (or BG_ERR_IO for I/O) with a message. */
static inline void fuzz_check_error(const char *target, bg_status_t st)
{
    if (st != BG_ERR_INVALID && st != BG_ERR_IO) fuzz_die(target, "unexpected status", bg_last_error());
    if (!bg_last_error()[0]) fuzz_die(target, "error without a message", NULL);
}

#endif
