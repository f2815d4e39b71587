/*
 * partition/schedules.h -- what brigade knows about each pipeline schedule,
 * in one table (partition/schedules.def): names and aliases, chunks per rank,
 * the rule on micro-batches, and the closed forms partition's cost model
 * uses (peak in-flight micro-batches, fill/drain time, bubble fraction).
 *
 * It lives in partition/ because both partition/ (which models schedules)
 * and engine/ (which generates them; engine/schedule.h includes this) need
 * it, and partition must not call the engine. Must NOT know how a schedule
 * orders its actions: the generator column of the table is expanded only by
 * engine/schedule_gen.c. Pure: no I/O, no allocation.
 */
#ifndef BG_PARTITION_SCHEDULES_H
#define BG_PARTITION_SCHEDULES_H

#include <limits.h>

#include "base/status.h"

/* V_MAX of a schedule that takes any number of chunks per rank. */
#define BG_SCHED_V_UNBOUNDED INT_MAX

/*
 * Which rank runs chunk g of p*v (the PLACE column). LOOP: g % p, so rank r
 * holds r, r+p, r+2p, ... (Megatron's interleaving; for v = 1 chunk g on
 * rank g). V: the chunks zig-zag -- round j = g / p runs ranks 0..p-1 when j
 * is even and p-1..0 when odd -- so for v = 2 rank r holds r and 2p-1-r, and
 * the first and last chunks share rank 0 (ZB-V, DualPipeV). Either way chunk
 * g is the (g / p)-th of its rank's chunks in model order.
 */
typedef enum {
    BG_SCHED_PLACE_LOOP = 0,
    BG_SCHED_PLACE_V,
} bg_sched_place_t;

typedef enum {
#define BG_SCHED_ROW(id, ...) BG_SCHED_##id,
#include "partition/schedules.def"
    BG_SCHED_KIND_COUNT
} bg_sched_kind_t;

/* Per-micro-batch costs of one pipeline rank (sums over its chunks), in
 * seconds or any unit. t is f + b + w + comm as the caller summed it (kept
 * separate so callers' sums stay bit-identical). */
typedef struct bg_sched_cost {
    double f, b, w, comm, t;
} bg_sched_cost_t;

typedef struct bg_sched_desc {
    bg_sched_kind_t kind;
    const char *name;    /* canonical */
    const char *aliases; /* space-separated, "" for none */
    bg_sched_place_t place;
    int chunks_default, chunks_min, chunks_max;
    const char *m_rule; /* "" when any m >= 1 goes */
    int (*m_ok)(int p, int m);
    int (*in_flight)(int p, int m, int v, int g);
    double (*fill)(const bg_sched_cost_t *c, int m, int v);
    /* Whether bg_sched_bubble is exact (equal F, B, W, no communication);
     * elsewhere it is a lower bound. */
    int (*exact)(int p, int m, int v);
    /* Weight versions a rank holds (1; 2bw: 2, its stash and second
     * gradient set), for the memory model (bg_versions_bytes). */
    int versions;
} bg_sched_desc_t;

/* BG_SCHED_NAMES is "gpipe | 1f1b | ...": every canonical name in table
 * order, for help texts. An address constant (the array past its leading
 * " | "), so static option tables can use it. */
extern const char bg_sched_names_sep[];
#define BG_SCHED_NAMES (bg_sched_names_sep + 3)
/* The same followed by " | auto | file:PATH" (engine/schedule_auto.c,
 * engine/schedule_file.c), for the
 * commands that resolve a schedule by name. */
extern const char bg_sched_names_file_sep[];
#define BG_SCHED_NAMES_FILE (bg_sched_names_file_sep + 3)

/* Rank of chunk g (0 <= g < p*v) under `place`, p >= 1. Cannot fail. */
int bg_sched_place_rank(bg_sched_place_t place, int p, int g);
/* The same under row d's placement: what every room uses instead of g % p. */
int bg_sched_chunk_rank_of(const bg_sched_desc_t *d, int p, int g);

/* Row k of the table; NULL when k is out of range. Cannot fail otherwise. */
const bg_sched_desc_t *bg_sched_desc(bg_sched_kind_t k);

/* Canonical name of kind k; "?" when out of range. */
const char *bg_sched_kind_name(bg_sched_kind_t k);

/*
 * The row whose name or one of whose aliases is `name`. BG_ERR_INVALID,
 * listing every canonical name, when there is none (NULL included). *out set
 * only on success.
 */
bg_status_t bg_sched_lookup(const char *name, const bg_sched_desc_t **out);
/* The same, giving the kind. */
bg_status_t bg_sched_kind_parse(const char *name, bg_sched_kind_t *out);

/*
 * Chunks per rank for a request: 0 means the schedule's default; anything
 * else must lie in [chunks_min, chunks_max]. BG_ERR_INVALID naming the
 * schedule, the range and the schedules that allow more, otherwise.
 */
bg_status_t bg_sched_resolve_chunks(const bg_sched_desc_t *d, int requested, int *v_out);

/* Whether m micro-batches on p stages meet the schedule's rule; BG_ERR_INVALID
 * naming the schedule, the rule and both numbers otherwise. */
bg_status_t bg_sched_check_m(const bg_sched_desc_t *d, int p, int m);

/*
 * Everything a generator needs to hold: p, m, v >= 1, v in the schedule's
 * chunk range (0 is not "default" here), the m rule. BG_ERR_INVALID with the
 * reason otherwise.
 */
bg_status_t bg_sched_check_shape(const bg_sched_desc_t *d, int p, int m, int v);

/* Smallest m' >= m that the rule allows on p stages, or -1 when none is
 * found below m * p + p (no sensible rule needs more). */
int bg_sched_round_m(const bg_sched_desc_t *d, int p, int m);

/* Activation sets chunk g (on rank bg_sched_chunk_rank_of(d, p, g)) holds
 * at peak, for a valid shape. */
int bg_sched_in_flight(const bg_sched_desc_t *d, int p, int m, int v, int g);

/* Seconds rank with costs c adds to fill + drain (FILL in the table). */
double bg_sched_fill(const bg_sched_desc_t *d, const bg_sched_cost_t *c, int m, int v);

/*
 * The largest k with fill(c) >= k * c->t for every cost vector, clamped to
 * [0, m]: the step's pipeline part is then at least (m - k) T / p + k T for
 * total per-micro-batch work T over p ranks (the shape search's bound).
 */
double bg_sched_fill_floor(const bg_sched_desc_t *d, int m, int v);

/*
 * Closed-form bubble fraction of p identical ranks, each with per-micro-batch
 * costs c (t > 0): (p - 1) d / (m t + (p - 1) d) with d = fill(c). For equal
 * F, B, W this is (p-1)/(m+p-1) for gpipe and 1f1b, (p-1)/(vm+p-1) for
 * interleaved, (p-1)/(3m+p-1) for zb-h1 (m >= p). Exact where the row's
 * EXACT column holds, a lower bound elsewhere.
 */
double bg_sched_bubble(const bg_sched_desc_t *d, int p, int m, int v, const bg_sched_cost_t *c);

/* For the table's expressions only. */
static inline int bg_sched_min_(int a, int b)
{
    return a < b ? a : b;
}
int bg_sched_in_flight_interleaved_(int p, int m, int v, int g);
/* The interleaved order, shared by partition's closed form and the engine's
 * generator (partition/schedules.c): item k of a rank's forward (backward)
 * sequence for m a multiple of p is micro-batch *mb on local chunk *j; m
 * rounded up to a multiple of p; forwards (padding included) before the
 * first backward on rank r. */
void bg_sched_interleaved_item_(int p, int v, long k, int backward, int *mb, int *j);
int bg_sched_interleaved_pad_(int p, int m);
long bg_sched_interleaved_warmup_(int p, int m, int v, int r);

#endif
