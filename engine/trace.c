/*
 * engine/trace.c -- write and merge Chrome-trace JSON ("traceEvents" with
 * complete "X" slices in microseconds, process and thread names, flow
 * arrows from each send to its receive, a per-rank summary). Parts are
 * plain JSON fragments so a merge is concatenation, with no JSON parsing of
 * our own output.
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

/* Names: the process is the rank, thread 0 its actions, thread 1 its
 * waits for data-parallel allreduces. */
static void write_names(FILE *f, int rank, int stage, int dp)
{
    fprintf(f,
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d "
            "(stage %d, dp %d)\",\"rank\":%d,\"stage\":%d,\"dp\":%d}},\n{\"name\":\"process_sort_"
            "index\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"sort_index\":%d}},\n{\"name\":\"thread_"
            "name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"rank %d actions\"}},\n"
            "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"args\":{\"name\":\"rank "
            "%d allreduce wait\"}}",
            rank, rank, stage, dp, rank, stage, dp, rank, rank, rank, rank, rank, rank);
}

/* One action's slice; for a send or receive also its flow event, whose id
 * (replica and tag key) is the same on both ends. */
static void write_event(FILE *f, int rank, int dp, const bg_rt_event_t *e, double origin_s)
{
    char name[64];
    const char *k = e->wait ? "ALLREDUCE_WAIT" : bg_act_kind_name(e->kind);
    double ts = (origin_s + e->t0) * 1e6, dur = (e->t1 - e->t0) * 1e6;
    if (e->kind == BG_ACT_OPTIMIZER)
        snprintf(name, sizeof(name), "%s", k);
    else if (e->kind == BG_ACT_ALLREDUCE)
        snprintf(name, sizeof(name), "%s c%d", e->wait ? "ALLREDUCE wait" : k, e->chunk);
    else if (e->peer >= 0)
        snprintf(name, sizeof(name), "%s mb%d c%d %s %d", k, e->mb, e->chunk,
                 bg_act_is_send(e->kind) ? "to" : "from", e->peer);
    else
        snprintf(name, sizeof(name), "%s mb%d c%d", k, e->mb, e->chunk);
    fprintf(f,
            ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,"
            "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"mb\":%d,\"chunk\":%d",
            name, k, rank, e->wait, ts, dur, e->mb, e->chunk);
    if (e->peer >= 0)
        fprintf(f, ",\"peer\":%d,\"tag\":\"%llx\"", e->peer, (unsigned long long)e->tag);
    fputs("}}", f);
    if (e->peer < 0)
        return;
    if (bg_act_is_send(e->kind))
        fprintf(f,
                ",\n{\"name\":\"xfer\",\"cat\":\"flow\",\"ph\":\"s\",\"pid\":%d,\"tid\":0,"
                "\"ts\":%.3f,\"id\":\"d%d-%llx\"}",
                rank, ts, dp, (unsigned long long)e->tag);
    else
        fprintf(f,
                ",\n{\"name\":\"xfer\",\"cat\":\"flow\",\"ph\":\"f\",\"bp\":\"e\",\"pid\":%d,"
                "\"tid\":0,\"ts\":%.3f,\"id\":\"d%d-%llx\"}",
                rank, ts + dur, dp, (unsigned long long)e->tag);
}

/* The rank's summary as an instant event at its last action's end: busy
 * (F, B, W, BW, OPTIMIZER less its allreduce waits), communication wait
 * (sends, receives, allreduce waits) and idle over its own span, in ms. */
static void write_summary(FILE *f, int rank, const bg_rt_event_t *ev, int n, double origin_s)
{
    double lo = 0, hi = 0, busy = 0, comm = 0;
    for (int i = 0; i < n; i++) {
        const bg_rt_event_t *e = &ev[i];
        double d = e->t1 - e->t0;
        lo = i == 0 || e->t0 < lo ? e->t0 : lo;
        hi = i == 0 || e->t1 > hi ? e->t1 : hi;
        if (bg_act_is_compute(e->kind) || e->kind == BG_ACT_OPTIMIZER)
            busy += d;
        else if (e->wait)
            busy -= d, comm += d;
        else if (e->peer >= 0)
            comm += d;
    }
    fprintf(f,
            ",\n{\"name\":\"summary\",\"cat\":\"summary\",\"ph\":\"i\",\"s\":\"p\",\"pid\":%d,"
            "\"tid\":0,\"ts\":%.3f,\"args\":{\"busy_ms\":%.6f,\"comm_wait_ms\":%.6f,"
            "\"idle_ms\":%.6f}}",
            rank, (origin_s + hi) * 1e6, busy * 1e3, comm * 1e3, (hi - lo - busy) * 1e3);
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
    write_names(f, rank, stage, dp);
    for (int i = 0; i < n; i++)
        write_event(f, rank, dp, &ev[i], origin_s);
    write_summary(f, rank, ev, n, origin_s);
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
