/*
 * engine/data_tokens.c -- llm.c token shards: validation, reading windows,
 * and the byte-level shard writer behind `brigade data`.
 *
 * A shard is 256 little-endian int32 (magic 20240520, version 1 = uint16
 * tokens or 2 = uint32 tokens, token count, zeros) then the tokens. Shards
 * are mmapped and validated against their file length at open; the shards of
 * a split form one concatenated stream, and sample i is the window of T+1
 * tokens starting at i*T (inputs = first T, targets = last T). Must NOT
 * shuffle (data.c does) nor hold a file descriptor after open.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/checkpoint_fs.h"
#include "engine/data_impl.h"

#define SHARD_DEFAULT_TOKENS 100000000
#define SHARD_MAX_FILES 100000

typedef struct {
    char *path;
    const uint8_t *map; /* whole file, header included */
    size_t map_len;
    int64_t first; /* offset of its first token in the split's stream */
    int64_t ntok;
    int width; /* bytes per token: 2 (version 1) or 4 (version 2) */
} shard_t;

typedef struct {
    shard_t *sh;
    int n;
    int64_t ntok;
} stream_t;

typedef struct {
    stream_t s[2]; /* BG_SPLIT_TRAIN, BG_SPLIT_EVAL */
    int64_t T;
    int64_t vocab; /* 0: unchecked */
} tok_impl_t;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* Map `path` and check its header against its length. */
static bg_status_t shard_open(const char *path, shard_t *out)
{
    bg_status_t st = BG_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto err_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: not a regular file", path);
        goto err_close;
    }
    size_t len = (size_t)sb.st_size;
    if (len < BG_SHARD_HEADER_BYTES) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: %zu bytes, shorter than the %d-byte token shard header (truncated?)",
                       path, len, BG_SHARD_HEADER_BYTES);
        goto err_close;
    }
    const uint8_t *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = bg_errorf(BG_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        goto err_close;
    }
    uint32_t magic = le32(map), version = le32(map + 4), count = le32(map + 8);
    if (magic != BG_SHARD_MAGIC) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: bad magic %" PRIu32 " (expected %d): not an llm.c token shard", path,
                       magic, BG_SHARD_MAGIC);
        goto err_unmap;
    }
    if (version != 1 && version != 2) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: unsupported shard version %" PRIu32
                       " (1: uint16 tokens, 2: uint32 tokens)",
                       path, version);
        goto err_unmap;
    }
    if (count > INT32_MAX) {
        st = bg_errorf(BG_ERR_INVALID, "%s: negative token count %" PRId32 " in header", path,
                       (int32_t)count);
        goto err_unmap;
    }
    int width = version == 1 ? 2 : 4;
    uint64_t want = BG_SHARD_HEADER_BYTES + (uint64_t)count * (uint64_t)width;
    if (want != (uint64_t)len) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: header says %" PRIu32 " tokens (%" PRIu64 " bytes) but the file is %zu "
                       "bytes (%s)",
                       path, count, want, len, (uint64_t)len < want ? "truncated" : "trailing bytes");
        goto err_unmap;
    }
    out->path = strdup(path);
    if (!out->path) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_unmap;
    }
    close(fd); /* the mapping stays valid without the descriptor */
    out->map = map;
    out->map_len = len;
    out->ntok = count;
    out->width = width;
    out->first = 0;
    return BG_OK;

err_unmap:
    munmap((void *)map, len);
err_close:
    close(fd);
    return st;
}

static void stream_free(stream_t *s)
{
    for (int i = 0; i < s->n; i++) {
        munmap((void *)s->sh[i].map, s->sh[i].map_len);
        free(s->sh[i].path);
    }
    free(s->sh);
    s->sh = NULL;
    s->n = 0;
}

/* Last shard whose first token is <= pos (pos < s->ntok). */
static const shard_t *stream_find(const stream_t *s, int64_t pos)
{
    int lo = 0, hi = s->n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->sh[mid].first <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    /* Empty shards share `first` with their successor; skip them. */
    while (lo < s->n - 1 && s->sh[lo].first + s->sh[lo].ntok <= pos) lo++;
    return &s->sh[lo];
}

/* Tokens [pos, pos+n) of the stream as int32, crossing shard boundaries. */
static bg_status_t stream_read(const stream_t *s, int64_t pos, int64_t n, int64_t vocab,
                               int32_t *dst)
{
    while (n > 0) {
        const shard_t *sh = stream_find(s, pos);
        int64_t off = pos - sh->first;
        int64_t take = sh->ntok - off < n ? sh->ntok - off : n;
        const uint8_t *p = sh->map + BG_SHARD_HEADER_BYTES + off * sh->width;
        for (int64_t i = 0; i < take; i++) {
            uint32_t t = sh->width == 2 ? (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) : le32(p + 4 * i);
            if ((vocab > 0 && t >= (uint64_t)vocab) || t > INT32_MAX)
                return bg_errorf(BG_ERR_INVALID,
                                 "%s: token %" PRIu32 " at index %" PRId64
                                 " is outside the vocabulary of %" PRId64,
                                 sh->path, t, off + i, vocab);
            dst[i] = (int32_t)t;
        }
        dst += take;
        pos += take;
        n -= take;
    }
    return BG_OK;
}

static void tok_destroy(void *p)
{
    tok_impl_t *m = p;
    if (!m) return;
    stream_free(&m->s[0]);
    stream_free(&m->s[1]);
    free(m);
}

static bg_status_t tok_row(const void *p, bg_split_t split, int64_t sample, void *input,
                           int32_t *target)
{
    const tok_impl_t *m = p;
    const stream_t *s = &m->s[split];
    int64_t pos = sample * m->T;
    bg_status_t st = BG_OK;
    if (input) st = stream_read(s, pos, m->T, m->vocab, input);
    if (st == BG_OK && target) st = stream_read(s, pos + 1, m->T, m->vocab, target);
    return st;
}

static bool has_glob_chars(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* True if a '_'/'-'/'.'-separated word of the base name is val/valid/validation. */
static bool is_val_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *w = base;
    for (const char *c = base;; c++) {
        if (*c == '_' || *c == '-' || *c == '.' || *c == '\0') {
            size_t len = (size_t)(c - w);
            if ((len == 3 && !strncmp(w, "val", 3)) || (len == 5 && !strncmp(w, "valid", 5)) ||
                (len == 10 && !strncmp(w, "validation", 10)))
                return true;
            if (*c == '\0') break;
            w = c + 1;
        }
    }
    return false;
}

/* Append the matches of `pattern` to *g (GLOB_APPEND after the first call). */
static bg_status_t glob_add(const char *pattern, glob_t *g, bool *first)
{
    int rc = glob(pattern, *first ? 0 : GLOB_APPEND, NULL, g);
    *first = false;
    if (rc == 0 || rc == GLOB_NOMATCH) return BG_OK;
    return bg_errorf(rc == GLOB_NOSPACE ? BG_ERR_NOMEM : BG_ERR_IO, "tokens:%s: glob failed",
                     pattern);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Open the listed shards (sorted, duplicates dropped) of one split into *s. */
static bg_status_t stream_open(char **paths, int n, stream_t *s)
{
    s->sh = calloc(n > 0 ? (size_t)n : 1, sizeof(shard_t));
    if (!s->sh) return bg_errorf(BG_ERR_NOMEM, "tokens: out of memory");
    s->n = 0;
    s->ntok = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && !strcmp(paths[i], paths[i - 1])) continue;
        bg_status_t st = shard_open(paths[i], &s->sh[s->n]);
        if (st != BG_OK) {
            stream_free(s);
            return st;
        }
        s->sh[s->n].first = s->ntok;
        s->ntok += s->sh[s->n].ntok;
        s->n++;
    }
    return BG_OK;
}

/*
 * Resolve `arg` to train and eval file lists: a glob, an existing file, or a
 * PREFIX written by `brigade data` (PREFIX_*.bin). A pattern whose base name
 * says "train" also pulls in its "val" sibling. Files whose base name has a
 * word val/valid/validation form the eval split.
 */
static bg_status_t tokens_resolve(const char *arg, tok_impl_t *m)
{
    char pattern[4096], sibling[4096];
    struct stat sb;
    if (has_glob_chars(arg) || (stat(arg, &sb) == 0 && S_ISREG(sb.st_mode)))
        snprintf(pattern, sizeof(pattern), "%s", arg);
    else
        snprintf(pattern, sizeof(pattern), "%s_*.bin", arg);
    glob_t g;
    bool first = true;
    bg_status_t st = glob_add(pattern, &g, &first);
    if (st != BG_OK) return st;
    const char *base = strrchr(pattern, '/');
    base = base ? base + 1 : pattern;
    char *tr = NULL;
    for (char *c = strstr(base, "train"); c; c = strstr(c + 1, "train")) tr = c;
    if (tr) {
        snprintf(sibling, sizeof(sibling), "%.*sval%s", (int)(tr - pattern), pattern, tr + 5);
        if ((st = glob_add(sibling, &g, &first)) != BG_OK) goto err_glob;
    }
    if (g.gl_pathc == 0) {
        st = bg_errorf(BG_ERR_IO, "tokens:%s: no shard files match %s", arg, pattern);
        goto err_glob;
    }
    if (g.gl_pathc > SHARD_MAX_FILES) {
        st = bg_errorf(BG_ERR_INVALID, "tokens:%s: %zu files match; more than %d shards", arg,
                       (size_t)g.gl_pathc, SHARD_MAX_FILES);
        goto err_glob;
    }
    char **lists[2];
    int counts[2] = {0, 0};
    lists[0] = calloc(g.gl_pathc, sizeof(char *));
    lists[1] = calloc(g.gl_pathc, sizeof(char *));
    if (!lists[0] || !lists[1]) {
        st = bg_errorf(BG_ERR_NOMEM, "tokens: out of memory");
        goto err_lists;
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int sp = is_val_name(g.gl_pathv[i]) ? BG_SPLIT_EVAL : BG_SPLIT_TRAIN;
        lists[sp][counts[sp]++] = g.gl_pathv[i];
    }
    if (counts[BG_SPLIT_TRAIN] == 0) {
        st = bg_errorf(BG_ERR_INVALID,
                       "tokens:%s: only validation shards match %s (need training shards)", arg,
                       pattern);
        goto err_lists;
    }
    for (int sp = 0; sp < 2; sp++) {
        qsort(lists[sp], (size_t)counts[sp], sizeof(char *), cmp_str);
        if ((st = stream_open(lists[sp], counts[sp], &m->s[sp])) != BG_OK) goto err_lists;
    }

err_lists:
    free(lists[0]);
    free(lists[1]);
err_glob:
    globfree(&g);
    return st;
}

bg_status_t bg_data_tokens_open(const char *arg, const bg_data_opts_t *o, bg_data_info_t *info,
                                bg_data_source_t *out)
{
    if (!arg || !*arg)
        return bg_errorf(BG_ERR_INVALID, "data spec 'tokens:': missing PATH, GLOB or PREFIX");
    if (o->seq_len < 1)
        return bg_errorf(BG_ERR_INVALID, "tokens:%s: sequence length must be >= 1 (got %" PRId64 ")",
                         arg, o->seq_len);
    tok_impl_t *m = calloc(1, sizeof(*m));
    if (!m) return bg_errorf(BG_ERR_NOMEM, "tokens: out of memory");
    m->T = o->seq_len;
    m->vocab = o->vocab;
    bg_status_t st = tokens_resolve(arg, m);
    if (st != BG_OK) goto err_free;
    if (m->s[0].ntok < m->T + 1) {
        st = bg_errorf(BG_ERR_INVALID,
                       "tokens:%s: %" PRId64 " training tokens cannot fill one window of %" PRId64
                       " + 1",
                       arg, m->s[0].ntok, m->T);
        goto err_free;
    }
    memset(info, 0, sizeof(*info));
    info->kind = BG_DATA_TOKENS;
    snprintf(info->name, sizeof(info->name), "tokens");
    info->n_train = (m->s[0].ntok - 1) / m->T;
    info->n_eval = m->s[1].ntok > 0 ? (m->s[1].ntok - 1) / m->T : 0;
    info->input_cols = m->T;
    info->input_dtype = BG_I32;
    info->target_cols = m->T;
    info->classes = o->vocab;
    info->train_tokens = m->s[0].ntok;
    info->eval_tokens = m->s[1].ntok;
    info->train_files = m->s[0].n;
    info->eval_files = m->s[1].n;
    out->impl = m;
    out->destroy = tok_destroy;
    out->row = tok_row;
    return BG_OK;

err_free:
    tok_destroy(m);
    return st;
}

/* ------------------------------------------------------------ shard writer */

/* Write `ntok` bytes of `in` as one version-1 shard at `path`. */
static bg_status_t write_shard(const char *path, FILE *in, const char *in_path, int64_t ntok)
{
    uint8_t hdr[BG_SHARD_HEADER_BYTES] = {0};
    put_le32(hdr, BG_SHARD_MAGIC);
    put_le32(hdr + 4, 1);
    put_le32(hdr + 8, (uint32_t)ntok);
    bg_atomic_file_t f;
    bg_status_t st = bg_atomic_open(path, &f);
    if (st != BG_OK) return st;
    if ((st = bg_atomic_write(&f, hdr, sizeof(hdr))) != BG_OK) goto err_abort;
    uint8_t bytes[1 << 16], toks[2 << 16];
    while (ntok > 0) {
        size_t want = ntok < (int64_t)sizeof(bytes) ? (size_t)ntok : sizeof(bytes);
        size_t got = fread(bytes, 1, want, in);
        if (got != want) {
            st = bg_errorf(BG_ERR_IO, "%s: read failed (file changed while sharding?)", in_path);
            goto err_abort;
        }
        for (size_t i = 0; i < got; i++) toks[2 * i] = bytes[i], toks[2 * i + 1] = 0;
        if ((st = bg_atomic_write(&f, toks, 2 * got)) != BG_OK) goto err_abort;
        ntok -= (int64_t)got;
    }
    return bg_atomic_commit(&f);

err_abort:
    bg_atomic_abort(&f);
    return st;
}

/* Write `ntok` tokens of `in` as PREFIX_split_NNNNNN.bin shards; drop stale higher-numbered ones. */
static bg_status_t write_split(const char *prefix, const char *split, FILE *in, const char *in_path,
                               int64_t ntok, int64_t per_shard, int *nfiles)
{
    char path[4096];
    int n = 0;
    for (int64_t left = ntok; left > 0; n++) {
        int64_t take = left < per_shard ? left : per_shard;
        snprintf(path, sizeof(path), "%s_%s_%06d.bin", prefix, split, n);
        bg_status_t st = write_shard(path, in, in_path, take);
        if (st != BG_OK) return st;
        left -= take;
    }
    /* Leftovers of an earlier, longer run would silently join the glob. */
    for (int i = n;; i++) {
        snprintf(path, sizeof(path), "%s_%s_%06d.bin", prefix, split, i);
        if (unlink(path) != 0) break;
    }
    *nfiles = n;
    return BG_OK;
}

bg_status_t bg_data_make_shards(const char *text_path, const char *out_prefix,
                                double val_fraction, int64_t shard_tokens,
                                bg_data_shards_info_t *out)
{
    if (!text_path || !out_prefix || !*out_prefix)
        return bg_errorf(BG_ERR_INVALID, "make shards: missing input or output prefix");
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return bg_errorf(BG_ERR_INVALID, "make shards: validation fraction %g not in [0, 1)",
                         val_fraction);
    if (shard_tokens < 0)
        return bg_errorf(BG_ERR_INVALID, "make shards: shard size %" PRId64 " < 0", shard_tokens);
    if (shard_tokens == 0) shard_tokens = SHARD_DEFAULT_TOKENS;
    if (shard_tokens > INT32_MAX) shard_tokens = INT32_MAX; /* the header's count is an int32 */
    FILE *in = fopen(text_path, "rb");
    if (!in) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", text_path, strerror(errno));
    bg_status_t st = BG_OK;
    struct stat sb;
    if (fstat(fileno(in), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: not a regular file", text_path);
        goto err_close;
    }
    int64_t n = (int64_t)sb.st_size;
    int64_t nval = (int64_t)((double)n * val_fraction);
    if (val_fraction > 0 && nval < 2) nval = 2;
    int64_t ntrain = n - nval;
    if (ntrain < 2) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: %" PRId64 " bytes is too short: training needs at least 2 tokens "
                       "after %" PRId64 " validation tokens",
                       text_path, n, nval);
        goto err_close;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", out_prefix);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if ((st = bg_mkdir_p(dir)) != BG_OK) goto err_close;
    }
    bg_data_shards_info_t info = {.train_tokens = ntrain, .val_tokens = nval};
    st = write_split(out_prefix, "train", in, text_path, ntrain, shard_tokens, &info.train_files);
    if (st != BG_OK) goto err_close;
    st = write_split(out_prefix, "val", in, text_path, nval, shard_tokens, &info.val_files);
    if (st != BG_OK) goto err_close;
    fclose(in);
    if (out) *out = info;
    return BG_OK;

err_close:
    fclose(in);
    return st;
}
