/*
 * engine/trace.h -- Chrome-trace / Perfetto JSON timelines of every rank.
 * Each rank writes its part; one rank merges the parts into the file the
 * user named, one process per rank, one slice per action.
 * Must not affect training: a trace that cannot be written is reported,
 * never fatal to the step that produced it.
 */
#ifndef BG_TRACE_H
#define BG_TRACE_H

#include "base/status.h"
#include "engine/runtime.h"

/* Write this rank's events (times relative to `origin_s`, a CLOCK_MONOTONIC
 * reading shared by all local ranks) to PATH.part<rank>. */
bg_status_t bg_trace_write_part(const char *path, int rank, int stage, int dp,
                                const bg_rt_event_t *ev, int n, double origin_s);
/* Merge PATH.part0..PATH.part<world-1> into PATH (then remove the parts). */
bg_status_t bg_trace_merge(const char *path, int world);

#endif
