/*
 * tools/output.c -- standard output as the target of "-o -" (output.h).
 * Must not interpret what it copies.
 */
#include "tools/output.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bg_out_is_stdout(const char *path)
{
    return path && !strcmp(path, "-");
}

int bg_out_tmp(const char *cmd, char *buf, size_t n)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/brigade-%s-XXXXXX", dir && *dir ? dir : "/tmp", cmd);
    int fd = mkstemp(buf);
    if (fd < 0) {
        fprintf(stderr, "brigade %s: cannot create a temporary file %s: %s\n", cmd, buf,
                strerror(errno));
        return 1;
    }
    close(fd);
    return 0;
}

int bg_out_cat(const char *cmd, const char *tmp)
{
    FILE *in = fopen(tmp, "rb");
    int rc = in ? 0 : 1;
    char buf[65536];
    size_t k;
    while (in && (k = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, k, stdout) != k)
            rc = 1;
    if (in && ferror(in))
        rc = 1;
    if (in)
        fclose(in);
    if (fflush(stdout) != 0)
        rc = 1;
    if (rc)
        fprintf(stderr, "brigade %s: cannot copy %s to standard output: %s\n", cmd, tmp,
                strerror(errno));
    unlink(tmp);
    return rc;
}

FILE *bg_out_null(void)
{
    FILE *f = fopen("/dev/null", "w");
    return f ? f : stderr;
}

void bg_out_close(FILE *f)
{
    if (f && f != stderr && f != stdout)
        fclose(f);
}
