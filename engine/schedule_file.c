/*
 * engine/schedule_file.c -- schedules from text files (`--schedule
 * file:PATH`) and the one place a schedule name becomes a schedule
 * (bg_sched_resolve): a table row's generator, "auto" (engine/schedule_auto.c)
 * or a file.
 *
 * A file lists compute actions per rank (format in docs/schedules.md,
 * "Schedule files"); transfers, ALLREDUCE and OPTIMIZER are placed by the
 * generators' shared tail, and the result goes through the checker before
 * anyone can run it. Every refusal names the file and line of the first bad
 * action and why. Must NOT run, time or reorder anything: a file says the
 * order, the checker judges it.
 */
#include "engine/schedule_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "engine/schedule_auto.h"

/* Parser state: the header so far, then the schedule and each action's line. */
typedef struct {
    const char *what; /* the file, for messages */
    int line;         /* current line, 1-based */
    int p, m, v;      /* 0 until given */
    bg_sched_place_t place;
    int *map; /* explicit chunk -> rank map (p*v entries), or NULL */
    int nmap;
    bg_sched_t *s;  /* created at the first "rank" line */
    int rank;       /* current rank section, -1 before any */
    int *seen_rank; /* p flags: section already given */
    int **lines;    /* per rank: file line of each compute action */
    size_t *cap_lines;
} sf_t;

#define SF_FAIL(sf, ...) sf_fail(sf, __VA_ARGS__)
static bg_status_t sf_fail(const sf_t *sf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static bg_status_t sf_fail(const sf_t *sf, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return bg_errorf(BG_ERR_INVALID, "%s:%d: %s", sf->what, sf->line, why);
}

static void sf_free(sf_t *sf)
{
    if (sf->lines)
        for (int r = 0; r < sf->p; r++)
            free(sf->lines[r]);
    free(sf->lines), free(sf->cap_lines), free(sf->seen_rank), free(sf->map);
    bg_sched_free(sf->s);
}

/* A decimal int in [lo, hi] from word w; BG_ERR_INVALID naming `name`. */
static bg_status_t sf_int(const sf_t *sf, const char *w, const char *name, long lo, long hi,
                          int *out)
{
    char *end;
    errno = 0;
    long x = w ? strtol(w, &end, 10) : 0;
    if (!w || !*w || *end || errno || x < lo || x > hi)
        return SF_FAIL(sf, "%s must be an integer in %ld..%ld, got '%s'", name, lo, hi,
                       w ? w : "(nothing)");
    *out = (int)x;
    return BG_OK;
}

/* "placement loop|v|map R0 R1 ...": words after the key in w[1..n-1]. */
static bg_status_t sf_placement(sf_t *sf, char **w, int n)
{
    if (n == 2 && !strcmp(w[1], "loop"))
        return sf->place = BG_SCHED_PLACE_LOOP, BG_OK;
    if (n == 2 && !strcmp(w[1], "v"))
        return sf->place = BG_SCHED_PLACE_V, BG_OK;
    if (n < 3 || strcmp(w[1], "map"))
        return SF_FAIL(sf, "placement is 'loop', 'v' or 'map' and one rank per chunk");
    free(sf->map);
    sf->nmap = n - 2;
    sf->map = malloc((size_t)sf->nmap * sizeof(int));
    if (!sf->map)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", sf->what);
    for (int i = 0; i < sf->nmap; i++) {
        bg_status_t st =
            sf_int(sf, w[i + 2], "a chunk's rank", 0, BG_SCHED_MAX_CHUNKS, &sf->map[i]);
        if (st)
            return st;
    }
    return BG_OK;
}

/* The header is complete: create the schedule with its chunk map. */
static bg_status_t sf_begin(sf_t *sf)
{
    if (!sf->p || !sf->m)
        return SF_FAIL(sf, "'ranks' and 'micro-batches' must come before the first 'rank'");
    if (!sf->v)
        sf->v = 1;
    if ((long)sf->p * sf->v >= BG_SCHED_MAX_CHUNKS)
        return SF_FAIL(sf, "%d ranks x %d chunks is too many", sf->p, sf->v);
    int n = sf->p * sf->v; /* checked against BG_SCHED_MAX_CHUNKS: no overflow, > 0 */
    if (sf->map && sf->nmap != n)
        return SF_FAIL(sf, "placement map lists %d ranks for %d chunks (ranks x chunks)", sf->nmap,
                       n);
    for (int c = 0; sf->map && c < n; c++)
        if (sf->map[c] >= sf->p)
            return SF_FAIL(sf, "placement map puts chunk %d on rank %d of %d", c, sf->map[c],
                           sf->p);
    int *where = malloc((size_t)(unsigned)n * sizeof(int));
    sf->seen_rank = calloc((size_t)sf->p, sizeof(int));
    sf->lines = calloc((size_t)sf->p, sizeof(int *));
    sf->cap_lines = calloc((size_t)sf->p, sizeof(size_t));
    if (!where || !sf->seen_rank || !sf->lines || !sf->cap_lines) {
        free(where);
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", sf->what);
    }
    for (int c = 0; c < n; c++)
        where[c] = sf->map ? sf->map[c] : bg_sched_place_rank(sf->place, sf->p, c);
    bg_status_t st = bg_sched_create(sf->p, sf->m, sf->v, where, &sf->s);
    free(where);
    if (!st)
        snprintf(sf->s->name, sizeof(sf->s->name), "file");
    return st;
}

/* One compute action "KIND MB CHUNK" on the current rank. */
static bg_status_t sf_action(sf_t *sf, char **w, int n)
{
    static const bg_act_kind_t kinds[] = {BG_ACT_F, BG_ACT_B, BG_ACT_W, BG_ACT_BW};
    int k = 0;
    while (k < 4 && strcmp(w[0], bg_act_kind_name(kinds[k])))
        k++;
    if (k == 4)
        return SF_FAIL(sf,
                       "unknown action '%s' (F, B, W or BW, then micro-batch and chunk; "
                       "transfers, ALLREDUCE and OPTIMIZER are placed for you)",
                       w[0]);
    if (sf->rank < 0)
        return SF_FAIL(sf, "action before the first 'rank' line");
    if (n != 3)
        return SF_FAIL(sf, "%s needs a micro-batch and a chunk", w[0]);
    int mb, c;
    bg_status_t st = sf_int(sf, w[1], "micro-batch", 0, sf->m - 1, &mb);
    if (!st)
        st = sf_int(sf, w[2], "chunk", 0, (long)sf->p * sf->v - 1, &c);
    if (st)
        return st;
    if (sf->s->chunk_rank[c] != sf->rank)
        return SF_FAIL(sf, "%s(mb=%d, c=%d) under rank %d, but chunk %d runs on rank %d", w[0], mb,
                       c, sf->rank, c, sf->s->chunk_rank[c]);
    int r = sf->rank;
    size_t len = sf->s->lists[r].len;
    if (bg_grow(&sf->lines[r], &sf->cap_lines[r], len + 1, sizeof(int)))
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", sf->what);
    sf->lines[r][len] = sf->line;
    return bg_sched_append(sf->s, r, bg_action_compute(kinds[k], mb, c));
}

/* One non-empty line split into words w[0..n-1]. */
static bg_status_t sf_line(sf_t *sf, char **w, int n, int first)
{
    const char *key = w[0];
    if (first)
        return n == 2 && !strcmp(key, "brigade-schedule") && !strcmp(w[1], "1")
                   ? BG_OK
                   : SF_FAIL(sf, "a schedule file starts with 'brigade-schedule 1'");
    int header = !sf->s;
    if (!strcmp(key, "rank")) {
        bg_status_t st = header ? sf_begin(sf) : BG_OK;
        if (!st)
            st = n == 2 ? sf_int(sf, w[1], "rank", 0, sf->p - 1, &sf->rank)
                        : SF_FAIL(sf, "'rank' takes one number");
        if (st)
            return st;
        if (sf->seen_rank[sf->rank]++)
            return SF_FAIL(sf, "rank %d listed twice", sf->rank);
        return BG_OK;
    }
    if (!header)
        return sf_action(sf, w, n);
    if (n == 2 && !strcmp(key, "ranks"))
        return sf_int(sf, w[1], "ranks", 1, 1 << 16, &sf->p);
    if (n == 2 && !strcmp(key, "micro-batches"))
        return sf_int(sf, w[1], "micro-batches", 1, BG_SCHED_MAX_MB - 1, &sf->m);
    if (n == 2 && !strcmp(key, "chunks"))
        return sf_int(sf, w[1], "chunks", 1, 1 << 16, &sf->v);
    if (!strcmp(key, "placement"))
        return sf_placement(sf, w, n);
    return SF_FAIL(sf,
                   "unknown header line '%s' (ranks, micro-batches, chunks, placement, then "
                   "'rank R' and its actions)",
                   key);
}

/* Split text into lines, strip '#' comments, feed sf_line. */
static bg_status_t sf_parse(sf_t *sf, const char *text, size_t len)
{
    char buf[1024], *w[64];
    int first = 1;
    for (size_t at = 0; at < len;) {
        size_t end = at;
        while (end < len && text[end] != '\n')
            end++;
        sf->line++;
        if (end - at >= sizeof(buf))
            return SF_FAIL(sf, "line longer than %zu bytes", sizeof(buf) - 1);
        memcpy(buf, text + at, end - at);
        buf[end - at] = '\0';
        at = end + 1;
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = '\0';
        int n = 0;
        for (char *t = strtok(buf, " \t\r"); t; t = strtok(NULL, " \t\r")) {
            if (n == 64)
                return SF_FAIL(sf, "more than 64 words on a line");
            w[n++] = t;
        }
        if (!n)
            continue;
        bg_status_t st = sf_line(sf, w, n, first);
        if (st)
            return st;
        first = 0;
    }
    if (first || !sf->s)
        return SF_FAIL(sf, "no actions (a 'rank R' line and its actions)");
    return BG_OK;
}

/* Every (mb, chunk) needs an F, a B and a W (or a BW for both); refuse the
 * first one missing by name, before the tail would fail on it less clearly. */
static bg_status_t sf_complete(const sf_t *sf)
{
    const bg_sched_t *s = sf->s;
    size_t n = (size_t)s->m * s->nchunks;
    unsigned char *have = calloc(n ? n : 1, 1); /* bit 0: F, bit 1: B, bit 2: W */
    if (!have)
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", sf->what);
    for (int r = 0; r < s->p; r++)
        for (size_t i = 0; i < s->lists[r].len; i++) {
            const bg_action_t *a = &s->lists[r].a[i];
            bg_act_kind_t k = a->kind;
            have[(size_t)a->mb * s->nchunks + a->chunk] |= k == BG_ACT_F   ? 1
                                                           : k == BG_ACT_B ? 2
                                                           : k == BG_ACT_W ? 4
                                                                           : 6;
        }
    bg_status_t st = BG_OK;
    for (size_t x = 0; x < n && !st; x++)
        if (have[x] != 7)
            st = bg_errorf(BG_ERR_INVALID, "%s: rank %d's list has no %s(mb=%zu, c=%zu)", sf->what,
                           s->chunk_rank[x % s->nchunks],
                           !(have[x] & 1)   ? "F"
                           : !(have[x] & 2) ? "B (or BW)"
                                            : "W (or BW)",
                           x / s->nchunks, x % s->nchunks);
    free(have);
    return st;
}

/* File line of action i of rank r in the finished lists. Compute actions
 * come from the file in order; the tail put a receive right before the
 * action needing it and everything else after the action it follows, so a
 * receive gets the next compute action's line, the rest the previous one's
 * (the nearest one where there is none on that side). */
static int sf_line_of(const sf_t *sf, int r, long i)
{
    const bg_sched_list_t *l = &sf->s->lists[r];
    long before = -1, after = -1, k = -1;
    for (long j = 0; j < (long)l->len && after < 0; j++) {
        if (!bg_act_is_compute(l->a[j].kind))
            continue;
        k++;
        if (j < i)
            before = k;
        else
            after = k;
    }
    int want_next = bg_act_is_recv(l->a[i].kind) || bg_act_is_compute(l->a[i].kind);
    long at = (want_next && after >= 0) || before < 0 ? after : before;
    return at >= 0 ? sf->lines[r][at] : 0;
}

/* Finish the lists and check them; a refusal names the file line. */
static bg_status_t sf_finish(sf_t *sf)
{
    bg_status_t st = sf_complete(sf);
    if (!st && (st = bg_sched_finish_(sf->s)))
        return bg_error_prefix(st, "%s: ", sf->what);
    if (st)
        return st;
    int r;
    long i;
    if (!(st = bg_sched_check_at_(sf->s, &r, &i)))
        return BG_OK;
    if (r < 0)
        return bg_error_prefix(st, "%s: ", sf->what);
    return bg_error_prefix(st, "%s:%d: ", sf->what, sf_line_of(sf, r, i));
}

bg_status_t bg_sched_parse_file_text(const char *text, size_t len, const char *what,
                                     bg_sched_t **out)
{
    sf_t sf = {.what = what, .rank = -1};
    bg_status_t st = sf_parse(&sf, text, len);
    if (!st)
        st = sf_finish(&sf);
    if (!st) {
        *out = sf.s;
        sf.s = NULL;
    }
    sf_free(&sf);
    return st;
}

bg_status_t bg_sched_load_file(const char *path, bg_sched_t **out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bg_errorf(BG_ERR_IO, "schedule file %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    bg_status_t st = BG_OK;
    do {
        if (bg_grow(&text, &cap, len + 4096, 1)) {
            st = bg_errorf(BG_ERR_NOMEM, "schedule file %s: out of memory", path);
            break;
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    if (!st && ferror(f))
        st = bg_errorf(BG_ERR_IO, "schedule file %s: read failed", path);
    fclose(f);
    if (!st)
        st = bg_sched_parse_file_text(text, len, path, out);
    free(text);
    return st;
}

/* The file's shape must be the run's. */
static bg_status_t sf_fits(const bg_sched_t *s, const char *path, int p, int m, int chunks)
{
    if (s->p != p || s->m != m || (chunks && s->v != chunks))
        return bg_errorf(BG_ERR_INVALID,
                         "schedule file %s is for %d ranks, %d micro-batches, %d chunks per rank; "
                         "this run has %d stages, %d micro-batches%s",
                         path, s->p, s->m, s->v, p, m, chunks ? " and --chunks" : "");
    return BG_OK;
}

bg_status_t bg_sched_resolve(const char *name, int p, int m, int chunks, unsigned flags,
                             bg_sched_t **out)
{
    static const char prefix[] = "file:";
    if (name && !strncmp(name, prefix, sizeof(prefix) - 1)) {
        const char *path = name + sizeof(prefix) - 1;
        bg_sched_t *s = NULL;
        bg_status_t st = bg_sched_load_file(path, &s);
        if (!st)
            st = sf_fits(s, path, p, m, chunks);
        if (st) {
            bg_sched_free(s);
            return st;
        }
        *out = s;
        return BG_OK;
    }
    if (name && !strcmp(name, "auto")) { /* equal costs, 1F1B's memory */
        bg_sched_auto_opts_t o = bg_sched_auto_defaults();
        o.flags = flags;
        return bg_sched_auto(p, m, chunks, &o, out, NULL);
    }
    const bg_sched_desc_t *d;
    int v;
    bg_status_t st = bg_sched_lookup(name, &d);
    if (!st)
        st = bg_sched_resolve_chunks(d, chunks, &v);
    return st ? st : bg_sched_generate(d->kind, p, m, v, flags, out);
}
