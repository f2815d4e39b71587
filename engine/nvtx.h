/*
 * engine/nvtx.h -- NVTX ranges for Nsight Systems, in a `brigade` domain.
 * Header-only nvtx3 when the CUDA toolkit is present; otherwise, and when
 * no tool is attached, these cost a function call and nothing else.
 * Must not allocate or fail: profiling never changes a run's outcome.
 */
#ifndef BG_NVTX_H
#define BG_NVTX_H

/* Range for a schedule action ("F mb3 c1"): colour by kind, payload = mb. */
void bg_nvtx_push_action(const char *name, int kind, int mb);
/* Nested range for one layer call. */
void bg_nvtx_push_layer(const char *name);
void bg_nvtx_pop(void);
/* Name the calling thread in the profiler's timeline. */
void bg_nvtx_name_thread(const char *name);

#endif
