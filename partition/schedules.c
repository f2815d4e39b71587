/*
 * partition/schedules.c -- the schedule table (partition/schedules.def)
 * expanded into descriptors, and the helpers every room uses to apply its
 * rules: lookup, chunk and micro-batch rules, closed forms.
 *
 * Every message about a schedule rule is written here, once. Must NOT
 * expand the table's generator column (that is engine code) and must not
 * allocate or print.
 */
#include "partition/schedules.h"

#include <stdio.h>
#include <string.h>

/* Per-row closed forms as functions; the table's expressions see exactly
 * the variables its header documents. */
#define BG_SCHED_ROW(id, name, al, place, vd, vmin, vmax, m_ok_expr, m_rule, infl, fill_expr,      \
                     exact_expr, versions, gen)                                                    \
    static int exact_##id(int p, int m, int v)                                                     \
    {                                                                                              \
        (void)p, (void)m, (void)v;                                                                 \
        return (exact_expr);                                                                       \
    }                                                                                              \
    static int m_ok_##id(int p, int m)                                                             \
    {                                                                                              \
        (void)p, (void)m;                                                                          \
        return (m_ok_expr);                                                                        \
    }                                                                                              \
    static int in_flight_##id(int p, int m, int v, int g)                                          \
    {                                                                                              \
        int r = bg_sched_place_rank(BG_SCHED_PLACE_##place, p, g), j = g / p;                      \
        (void)m, (void)v, (void)r, (void)j;                                                        \
        return (infl);                                                                             \
    }                                                                                              \
    static double fill_##id(const bg_sched_cost_t *c, int m, int v)                                \
    {                                                                                              \
        double f = c->f, b = c->b, w = c->w, comm = c->comm, t = c->t;                             \
        (void)f, (void)b, (void)w, (void)comm, (void)t, (void)m, (void)v;                          \
        return (fill_expr);                                                                        \
    }
#include "partition/schedules.def"

static const bg_sched_desc_t table[BG_SCHED_KIND_COUNT] = {
#define BG_SCHED_ROW(id, name, al, place, vd, vmin, vmax, m_ok_expr, m_rule, infl, fill_expr,      \
                     exact_expr, versions, gen)                                                    \
    [BG_SCHED_##id] = {BG_SCHED_##id, name, al, BG_SCHED_PLACE_##place, vd, vmin, vmax, m_rule,    \
                       m_ok_##id, in_flight_##id, fill_##id, exact_##id, versions},
#include "partition/schedules.def"
};

/* Built by the preprocessor so that static option tables can point at it. */
const char bg_sched_names_sep[] =
#define BG_SCHED_ROW(id, name, ...) " | " name
#include "partition/schedules.def"
    ;
const char bg_sched_names_file_sep[] =
#define BG_SCHED_ROW(id, name, ...) " | " name
#include "partition/schedules.def"
    " | auto | file:PATH";

int bg_sched_place_rank(bg_sched_place_t place, int p, int g)
{
    int i = g % p;
    return place == BG_SCHED_PLACE_V && (g / p) % 2 ? p - 1 - i : i;
}

int bg_sched_chunk_rank_of(const bg_sched_desc_t *d, int p, int g)
{
    return bg_sched_place_rank(d->place, p, g);
}

const bg_sched_desc_t *bg_sched_desc(bg_sched_kind_t k)
{
    return (unsigned)k < BG_SCHED_KIND_COUNT ? &table[k] : NULL;
}

const char *bg_sched_kind_name(bg_sched_kind_t k)
{
    return (unsigned)k < BG_SCHED_KIND_COUNT ? table[k].name : "?";
}

/* Whether `name` is one of the space-separated words of `list`. */
static int in_word_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *s = list; *s;) {
        size_t len = strcspn(s, " ");
        if (len == n && n && !strncmp(s, name, n))
            return 1;
        s += len;
        s += strspn(s, " ");
    }
    return 0;
}

/* "a, b, c or d" of the rows passing `want` (all when want is NULL) into buf. */
static const char *names_of(char *buf, size_t len, int (*want)(const bg_sched_desc_t *))
{
    int n = 0, total = 0;
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++)
        total += !want || want(&table[k]);
    buf[0] = '\0';
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++) {
        if (want && !want(&table[k]))
            continue;
        size_t at = strlen(buf);
        const char *sep = n == 0 ? "" : n == total - 1 ? " or " : ", ";
        snprintf(buf + at, len - at, "%s%s", sep, table[k].name);
        n++;
    }
    return buf;
}

bg_status_t bg_sched_lookup(const char *name, const bg_sched_desc_t **out)
{
    for (int k = 0; name && k < BG_SCHED_KIND_COUNT; k++) {
        if (!strcmp(name, table[k].name) || in_word_list(table[k].aliases, name)) {
            *out = &table[k];
            return BG_OK;
        }
    }
    char choices[256];
    return bg_errorf(BG_ERR_INVALID, "unknown schedule '%s' (choose %s)", name ? name : "(null)",
                     names_of(choices, sizeof(choices), NULL));
}

bg_status_t bg_sched_kind_parse(const char *name, bg_sched_kind_t *out)
{
    const bg_sched_desc_t *d;
    bg_status_t st = bg_sched_lookup(name, &d);
    if (st == BG_OK)
        *out = d->kind;
    return st;
}

static int multi_chunk(const bg_sched_desc_t *d)
{
    return d->chunks_max > 1;
}

bg_status_t bg_sched_resolve_chunks(const bg_sched_desc_t *d, int requested, int *v_out)
{
    int v = requested ? requested : d->chunks_default;
    if (v >= d->chunks_min && v <= d->chunks_max) {
        *v_out = v;
        return BG_OK;
    }
    char more[256];
    if (d->chunks_min == d->chunks_max)
        return bg_errorf(BG_ERR_INVALID,
                         "%s runs %d chunk(s) per rank, got %d; %d chunks per rank needs "
                         "--schedule %s",
                         d->name, d->chunks_min, v, v, names_of(more, sizeof(more), multi_chunk));
    if (d->chunks_max == BG_SCHED_V_UNBOUNDED)
        return bg_errorf(BG_ERR_INVALID, "%s needs at least %d chunk(s) per rank, got %d", d->name,
                         d->chunks_min, v);
    return bg_errorf(BG_ERR_INVALID, "%s runs %d to %d chunks per rank, got %d", d->name,
                     d->chunks_min, d->chunks_max, v);
}

bg_status_t bg_sched_check_m(const bg_sched_desc_t *d, int p, int m)
{
    if (d->m_ok(p, m))
        return BG_OK;
    return bg_errorf(BG_ERR_INVALID, "%s: %s (got %d micro-batches on %d stages)", d->name,
                     d->m_rule, m, p);
}

bg_status_t bg_sched_check_shape(const bg_sched_desc_t *d, int p, int m, int v)
{
    if (p < 1 || m < 1 || v < 1)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: need stages, micro-batches and chunks >= 1 (got p=%d m=%d v=%d)",
                         d->name, p, m, v);
    bg_status_t st = bg_sched_resolve_chunks(d, v, &v);
    return st ? st : bg_sched_check_m(d, p, m);
}

int bg_sched_round_m(const bg_sched_desc_t *d, int p, int m)
{
    long limit = (long)m * p + p;
    for (long x = m; x <= limit && x <= INT_MAX; x++)
        if (d->m_ok(p, (int)x))
            return (int)x;
    return -1;
}

int bg_sched_in_flight(const bg_sched_desc_t *d, int p, int m, int v, int g)
{
    return d->in_flight(p, m, v, g);
}

double bg_sched_fill(const bg_sched_desc_t *d, const bg_sched_cost_t *c, int m, int v)
{
    return d->fill(c, m, v);
}

double bg_sched_fill_floor(const bg_sched_desc_t *d, int m, int v)
{
    static const bg_sched_cost_t corner[4] = {
        {1, 0, 0, 0, 1}, {0, 1, 0, 0, 1}, {0, 0, 1, 0, 1}, {0, 0, 0, 1, 1}};
    double k = m;
    for (int i = 0; i < 4; i++) {
        double x = d->fill(&corner[i], m, v);
        if (x < k)
            k = x;
    }
    return k > 0 ? k : 0;
}

double bg_sched_bubble(const bg_sched_desc_t *d, int p, int m, int v, const bg_sched_cost_t *c)
{
    double fill = (p - 1) * d->fill(c, m, v);
    double pipe = m * c->t + fill;
    return pipe > 0 ? fill / pipe : 0.0;
}

/*
 * Interleaved 1F1B (Megatron-LM) for any m: micro-batches in rounds of p,
 * the last round shorter. The order is Megatron's for m rounded up to a
 * multiple of p, with the padding micro-batches' actions dropped: a rank's
 * k-th forward is micro-batch (k / (p*v)) * p + k % p on local chunk
 * (k % (p*v)) / p, backwards walk the same sequence with local chunks
 * reversed. Dropping padding keeps the lists deadlock-free (a real action
 * depends only on actions of its own micro-batch and on earlier actions of
 * its rank), where shortening the last round in place would not: rank 0
 * would wait for chunk p's input, p hops away, with only m % p forwards in
 * between.
 */
void bg_sched_interleaved_item_(int p, int v, long k, int backward, int *mb, int *j)
{
    long pv = (long)p * v, jj = (k % pv) / p;
    *mb = (int)((k / pv) * p + k % p);
    *j = (int)(backward ? v - 1 - jj : jj);
}

int bg_sched_interleaved_pad_(int p, int m)
{
    return (int)(((long)m + p - 1) / p * p);
}

/* Forwards (padding included) rank r runs before its first backward:
 * Megatron's 2(p-r-1) + (v-1)p, all of them when the padded m is p. */
long bg_sched_interleaved_warmup_(int p, int m, int v, int r)
{
    int mp = bg_sched_interleaved_pad_(p, m);
    long total = (long)mp * v;
    long warm = mp == p ? total : 2L * (p - r - 1) + (long)(v - 1) * p;
    return warm < total ? warm : total;
}

/*
 * Activation sets of chunk g at its rank's peak stash: walk the rank's
 * order (warm-up, then one F and one B alternately) counting real items,
 * and take this chunk's count at the first moment the rank's total peaks.
 */
int bg_sched_in_flight_interleaved_(int p, int m, int v, int g)
{
    int r = g % p, c = g / p, mb, j; /* interleaved places chunks in a loop */
    long total = (long)bg_sched_interleaved_pad_(p, m) * v;
    long warm = bg_sched_interleaved_warmup_(p, m, v, r);
    int n = 0, mine = 0, peak = -1, at_peak = 0;
    for (long k = 0, b = 0; k < total || b < total;) {
        int fwd = k < total && (k < warm || k - warm <= b);
        bg_sched_interleaved_item_(p, v, fwd ? k++ : b++, !fwd, &mb, &j);
        if (mb >= m)
            continue;
        n += fwd ? 1 : -1;
        mine += j == c ? (fwd ? 1 : -1) : 0;
        if (n > peak)
            peak = n, at_peak = mine;
    }
    return at_peak > 0 ? at_peak : 1;
}
