/*
 * engine/trace.c -- write and merge Chrome-trace JSON ("traceEvents" with
 * complete "X" slices in microseconds). Parts are plain JSON fragments so a
 * merge is concatenation, with no JSON parsing of our own output.
 * Must not be called on the hot path: it does file I/O.
 */
#include "engine/trace.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* "<path>.part<rank>", or "<path>.tmp" for rank < 0, into buf[n]: a path
 * too long for it is refused, never cut (a cut name is another file). */
static bg_status_t side_path(char *buf, size_t n, const char *path, int rank)
{
    int k = rank < 0 ? snprintf(buf, n, "%s.tmp", path) : snprintf(buf, n, "%s.part%d", path, rank);
    if (k < 0 || (size_t)k >= n)
        return bg_errorf(BG_ERR_INVALID, "trace: path '%.60s...' is too long (%zu bytes at most)",
                         path, n - 16);
    return BG_OK;
}

bg_status_t bg_trace_write_part(const char *path, int rank, int stage, int dp,
                                const bg_rt_event_t *ev, int n, double origin_s)
{
    char part[4096];
    bg_status_t st = side_path(part, sizeof(part), path, rank);
    if (st != BG_OK)
        return st;
    FILE *f = fopen(part, "w");
    if (!f)
        return bg_errorf(BG_ERR_IO, "trace: cannot write %s: %s", part, strerror(errno));
    fprintf(f,
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d "
            "(stage %d, dp %d)\"}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,"
            "\"args\":{\"sort_index\":%d}}",
            rank, rank, stage, dp, rank, rank);
    for (int i = 0; i < n; i++) {
        const bg_rt_event_t *e = &ev[i];
        char name[64];
        const char *k = bg_act_kind_name(e->kind);
        if (e->kind == BG_ACT_OPTIMIZER)
            snprintf(name, sizeof(name), "%s", k);
        else if (e->kind == BG_ACT_ALLREDUCE)
            snprintf(name, sizeof(name), "%s c%d", k, e->chunk);
        else
            snprintf(name, sizeof(name), "%s mb%d c%d", k, e->mb, e->chunk);
        fprintf(f,
                ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":0,"
                "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"mb\":%d,\"chunk\":%d}}",
                name, k, rank, (origin_s + e->t0) * 1e6, (e->t1 - e->t0) * 1e6, e->mb, e->chunk);
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad)
        return bg_errorf(BG_ERR_IO, "trace: writing %s failed", part);
    return BG_OK;
}

bg_status_t bg_trace_merge(const char *path, int world)
{
    char tmp[4096];
    bg_status_t st = side_path(tmp, sizeof(tmp), path, -1);
    if (st != BG_OK)
        return st;
    FILE *out = fopen(tmp, "w");
    if (!out)
        return bg_errorf(BG_ERR_IO, "trace: cannot write %s: %s", tmp, strerror(errno));
    fprintf(out, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    for (int r = 0; r < world && st == BG_OK; r++) {
        char part[4096];
        if ((st = side_path(part, sizeof(part), path, r)) != BG_OK)
            break;
        FILE *in = fopen(part, "r");
        if (!in) {
            st = bg_errorf(BG_ERR_IO, "trace: rank %d's part %s is missing", r, part);
            break;
        }
        if (r)
            fputs(",\n", out);
        char buf[65536];
        size_t k;
        while ((k = fread(buf, 1, sizeof(buf), in)) > 0)
            fwrite(buf, 1, k, out);
        fclose(in);
    }
    fprintf(out, "\n]}\n");
    bool bad = ferror(out) != 0;
    if (fclose(out) != 0 || bad)
        st = st ? st : bg_errorf(BG_ERR_IO, "trace: writing %s failed", tmp);
    if (st == BG_OK && rename(tmp, path) != 0)
        st = bg_errorf(BG_ERR_IO, "trace: cannot rename %s: %s", tmp, strerror(errno));
    if (st != BG_OK) {
        unlink(tmp);
        return st;
    }
    for (int r = 0; r < world; r++) {
        char part[4096];
        if (side_path(part, sizeof(part), path, r) == BG_OK) /* it was, above */
            unlink(part);
    }
    return BG_OK;
}
