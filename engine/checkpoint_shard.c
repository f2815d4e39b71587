/*
 * engine/checkpoint_shard.c -- the logical tensors of an open checkpoint:
 * whole tensors, and tensors a sharded (ZeRO-1) save wrote as pieces
 * "<name>@<offset>" across the replicas' files, each recording the whole
 * shape under "<name>@shape". The pieces of a tensor must tile it exactly
 * (same recorded shape, no overlap, no gap, nothing past the end), or the
 * checkpoint is refused naming the file and tensor. Must NOT trust a
 * recorded number before range-checking it, nor allocate per element.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/grow.h"
#include "engine/checkpoint_shard.h"

/* "[768, 3072]" as bg_st_shape_text writes it (the space after a comma
 * optional; at most BG_ST_MAX_DIMS integers, each <= 2^53, product without
 * overflow) into ndim/shape/numel; false if malformed. */
static bool parse_shape(const char *s, int *ndim, int64_t *shape, int64_t *numel)
{
    int64_t n = 1;
    int d = 0;
    if (*s++ != '[')
        return false;
    if (*s == ']')
        goto done;
    for (;;) {
        char *end;
        if (*s < '0' || *s > '9' || d == BG_ST_MAX_DIMS)
            return false;
        long long v = strtoll(s, &end, 10);
        if (v < 0 || v > (1LL << 53) || !bg_mul_i64(n, v, &n))
            return false;
        shape[d++] = v;
        s = end;
        if (*s == ']')
            break;
        if (*s++ != ',')
            return false;
        if (*s == ' ')
            s++;
    }
done:
    if (s[1])
        return false;
    *ndim = d, *numel = n;
    return true;
}

/* If `name` is "<global>@<digits>", the global name's length and the
 * offset; false otherwise. */
static bool piece_name(const char *name, size_t *glen, int64_t *off)
{
    const char *at = strrchr(name, BG_CKPT_PIECE_SEP);
    if (!at || at == name || !at[1] || strlen(at + 1) > 18)
        return false;
    for (const char *p = at + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    *glen = (size_t)(at - name);
    *off = strtoll(at + 1, NULL, 10);
    return true;
}

/* Piece tensor t of file `fi`, named glen chars of global + "@off": its
 * entry, after checking its dtype, rank and the recorded shape. */
static bg_status_t piece_make(const bg_st_file_t *f, int fi, const bg_st_tensor_t *t, size_t glen,
                              int64_t off, ckpt_piece_t *out)
{
    char *g = strndup(t->name, glen);
    char *key = g ? malloc(glen + sizeof(BG_CKPT_SHAPE_KEY)) : NULL;
    if (!key) {
        free(g);
        return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", bg_st_path(f));
    }
    memcpy(key, g, glen);
    memcpy(key + glen, BG_CKPT_SHAPE_KEY, sizeof(BG_CKPT_SHAPE_KEY));
    const char *shp = bg_st_meta(f, key);
    free(key);
    *out = (ckpt_piece_t){.name = g, .off = off, .n = t->numel, .file = fi, .t = t};
    int64_t numel;
    bg_status_t st = BG_OK;
    if (t->dtype != BG_ST_F32 || t->ndim != 1)
        st = bg_errorf(BG_ERR_INVALID, "%s: piece '%s' of tensor '%s' must be 1-D F32",
                       bg_st_path(f), t->name, g);
    else if (!shp || !parse_shape(shp, &out->ndim, out->shape, &numel))
        st = bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': its whole shape (metadata '%s%s') is %s",
                       bg_st_path(f), g, g, BG_CKPT_SHAPE_KEY, shp ? "malformed" : "missing");
    if (st != BG_OK) {
        free(g);
        out->name = NULL;
    }
    return st;
}

static int cmp_piece(const void *a, const void *b)
{
    const ckpt_piece_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return (x->file > y->file) - (x->file < y->file);
}

static int cmp_tensor(const void *a, const void *b)
{
    const ckpt_tensor_t *x = a, *y = b;
    int c = strcmp(x->info.name, y->info.name);
    return c ? c : (x->file > y->file) - (x->file < y->file);
}

static bool same_shape(const ckpt_piece_t *a, const ckpt_piece_t *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return false;
    return true;
}

/* Pieces pc[0..n) of one tensor (sorted by offset) tile it exactly. */
static bg_status_t pieces_check(bg_st_file_t *const *files, const ckpt_piece_t *pc, size_t n,
                                int64_t numel)
{
    int64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const ckpt_piece_t *p = &pc[i];
        const char *path = bg_st_path(files[p->file]);
        if (!same_shape(p, &pc[0]))
            return bg_errorf(BG_ERR_INVALID,
                             "%s: tensor '%s': piece at element %" PRId64
                             " records another whole shape than the piece in %s",
                             path, p->name, p->off, bg_st_path(files[pc[0].file]));
        if (p->off != at)
            return bg_errorf(BG_ERR_INVALID,
                             "%s: tensor '%s': piece at element %" PRId64 " %s (the pieces "
                             "before it end at %" PRId64 ")",
                             path, p->name, p->off,
                             p->off < at ? "overlaps another piece" : "leaves a gap", at);
        if (p->n > numel - at)
            return bg_errorf(BG_ERR_INVALID,
                             "%s: tensor '%s': piece at element %" PRId64 " of %" PRId64
                             " elements runs past its %" PRId64 " elements",
                             path, p->name, p->off, p->n, numel);
        at += p->n;
    }
    if (at != numel)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s': its pieces cover %" PRId64 " of its %" PRId64
                         " elements (missing piece)",
                         bg_st_path(files[pc[n - 1].file]), pc[0].name, at, numel);
    return BG_OK;
}

/* Every tensor of files[0..n): whole ones into tb->ten, pieces into tb->pc. */
static bg_status_t collect(bg_st_file_t *const *files, int n, ckpt_table_t *tb)
{
    size_t tcap = 0, pcap = 0;
    for (int fi = 0; fi < n; fi++) {
        bool sharded = bg_st_meta(files[fi], BG_CKPT_SHARD_KEY) != NULL;
        for (size_t k = 0; k < bg_st_count(files[fi]); k++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(files[fi], k);
            size_t glen;
            int64_t off;
            if (sharded && piece_name(t->name, &glen, &off)) {
                if (bg_grow(&tb->pc, &pcap, tb->npc + 1, sizeof(*tb->pc)))
                    return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
                bg_status_t st = piece_make(files[fi], fi, t, glen, off, &tb->pc[tb->npc]);
                if (st != BG_OK)
                    return st;
                tb->npc++;
                continue;
            }
            if (bg_grow(&tb->ten, &tcap, tb->nten + 1, sizeof(*tb->ten)))
                return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
            ckpt_tensor_t *x = &tb->ten[tb->nten++];
            *x = (ckpt_tensor_t){
                .info = {t->name, t->dtype, t->ndim, {0}, t->numel, 0}, .file = fi, .t = t};
            memcpy(x->info.shape, t->shape, sizeof(x->info.shape));
        }
    }
    /* room for one entry per pieced tensor, added by group_pieces */
    if (bg_grow(&tb->ten, &tcap, tb->nten + tb->npc + 1, sizeof(*tb->ten)))
        return bg_errorf(BG_ERR_NOMEM, "checkpoint: out of memory");
    return BG_OK;
}

/* Drop repeated whole names (a tied weight in two stage files): the first
 * file's copy stays. tb->ten sorted by (name, file). */
static void dedupe_whole(ckpt_table_t *tb)
{
    size_t k = 0;
    for (size_t i = 0; i < tb->nten; i++)
        if (!k || strcmp(tb->ten[k - 1].info.name, tb->ten[i].info.name))
            tb->ten[k++] = tb->ten[i];
    tb->nten = k;
}

/* One tensor entry per group of pieces (tb->pc sorted), each checked. */
static bg_status_t group_pieces(bg_st_file_t *const *files, ckpt_table_t *tb, size_t nwhole)
{
    for (size_t i = 0, j; i < tb->npc; i = j) {
        for (j = i + 1; j < tb->npc && !strcmp(tb->pc[j].name, tb->pc[i].name);)
            j++;
        const ckpt_piece_t *p = &tb->pc[i];
        int64_t numel = 1;
        for (int d = 0; d < p->ndim; d++)
            numel *= p->shape[d]; /* parse_shape checked the product */
        bg_status_t st = pieces_check(files, p, j - i, numel);
        if (st != BG_OK)
            return st;
        if (bg_ckpt_table_find_(&(ckpt_table_t){tb->ten, nwhole, NULL, 0}, p->name))
            return bg_errorf(BG_ERR_INVALID,
                             "%s: tensor '%s' is both whole in one file and in pieces",
                             bg_st_path(files[p->file]), p->name);
        ckpt_tensor_t *x = &tb->ten[tb->nten++];
        *x = (ckpt_tensor_t){
            .info = {p->name, BG_ST_F32, p->ndim, {0}, numel, (int)(j - i)}, .file = -1, .p0 = i};
        memcpy(x->info.shape, p->shape, sizeof(x->info.shape));
    }
    return BG_OK;
}

bg_status_t bg_ckpt_table_build_(bg_st_file_t *const *files, int n, ckpt_table_t *out)
{
    ckpt_table_t tb = {NULL, 0, NULL, 0};
    bg_status_t st = collect(files, n, &tb);
    if (st != BG_OK)
        goto err_free;
    qsort(tb.ten, tb.nten, sizeof(*tb.ten), cmp_tensor);
    dedupe_whole(&tb);
    if (tb.npc) /* pc is NULL without pieces, and qsort may not take NULL */
        qsort(tb.pc, tb.npc, sizeof(*tb.pc), cmp_piece);
    if ((st = group_pieces(files, &tb, tb.nten)) != BG_OK)
        goto err_free;
    qsort(tb.ten, tb.nten, sizeof(*tb.ten), cmp_tensor);
    *out = tb;
    return BG_OK;
err_free:
    bg_ckpt_table_free_(&tb);
    return st;
}

void bg_ckpt_table_free_(ckpt_table_t *tb)
{
    for (size_t i = 0; i < tb->npc; i++)
        free(tb->pc[i].name);
    free(tb->pc);
    free(tb->ten);
    *tb = (ckpt_table_t){NULL, 0, NULL, 0};
}

const ckpt_tensor_t *bg_ckpt_table_find_(const ckpt_table_t *tb, const char *name)
{
    size_t lo = 0, hi = tb->nten;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(tb->ten[mid].info.name, name);
        if (!c)
            return &tb->ten[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bg_status_t bg_ckpt_table_read_(const ckpt_table_t *tb, bg_st_file_t *const *files,
                                const ckpt_tensor_t *x, int64_t off, int64_t count, float *dst)
{
    const ckpt_piece_t *pc = tb->pc + x->p0;
    size_t lo = 0, hi = (size_t)x->info.pieces;
    while (lo < hi) { /* first piece ending after off */
        size_t mid = (lo + hi) / 2;
        if (pc[mid].off + pc[mid].n <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    bg_status_t st = BG_OK;
    for (size_t i = lo; i < (size_t)x->info.pieces && st == BG_OK; i++) {
        int64_t a = off > pc[i].off ? off : pc[i].off;
        int64_t b = off + count < pc[i].off + pc[i].n ? off + count : pc[i].off + pc[i].n;
        if (a >= b)
            break;
        st = bg_st_read_f32_range(files[pc[i].file], pc[i].t->name, a - pc[i].off, b - a,
                                  dst + (a - off));
    }
    return st;
}
