/*
 * engine/checkpoint_st.c -- safetensors writer and validating reader.
 *
 * Format: u64 little-endian header length N, N bytes of JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {str: str}}, then the data buffer (offsets relative to
 * it). The reader trusts nothing in the file: every number is checked for
 * integrality, range and overflow before it is used to index the mapping,
 * so corrupt input yields BG_ERR_INVALID naming the file and tensor, never
 * an out-of-bounds access. Must NOT depend on what the tensors mean.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "base/grow.h"
#include "engine/checkpoint.h"
#include "layers/tensor.h"
#include "engine/checkpoint_fs.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; brigade supports little-endian hosts only"
#endif

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[BG_ST_DTYPE_COUNT] = {
    [BG_ST_BOOL] = {"BOOL", 1},       [BG_ST_U8] = {"U8", 1},   [BG_ST_I8] = {"I8", 1},
    [BG_ST_F8_E4M3] = {"F8_E4M3", 1}, [BG_ST_F8_E5M2] = {"F8_E5M2", 1},
    [BG_ST_I16] = {"I16", 2},         [BG_ST_U16] = {"U16", 2}, [BG_ST_F16] = {"F16", 2},
    [BG_ST_BF16] = {"BF16", 2},       [BG_ST_I32] = {"I32", 4}, [BG_ST_U32] = {"U32", 4},
    [BG_ST_F32] = {"F32", 4},         [BG_ST_I64] = {"I64", 8}, [BG_ST_U64] = {"U64", 8},
    [BG_ST_F64] = {"F64", 8},
};

const char *bg_st_dtype_name(bg_st_dtype_t dt)
{
    return (unsigned)dt < BG_ST_DTYPE_COUNT ? st_dtypes[dt].name : NULL;
}

size_t bg_st_dtype_size(bg_st_dtype_t dt)
{
    return (unsigned)dt < BG_ST_DTYPE_COUNT ? st_dtypes[dt].size : 0;
}

bg_status_t bg_st_dtype_parse(const char *name, bg_st_dtype_t *out)
{
    for (int i = 0; i < BG_ST_DTYPE_COUNT; i++) {
        if (!strcmp(name, st_dtypes[i].name)) {
            *out = (bg_st_dtype_t)i;
            return BG_OK;
        }
    }
    return bg_errorf(BG_ERR_INVALID, "unknown safetensors dtype '%s'", name);
}

/* bf16/f16 <-> f32 are layers/tensor.h's: one rounding rule in the whole project. */

/* -------------------------------------------------------------- string buf */

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *p, size_t n)
{
    if (b->oom) return;
    if (n > SIZE_MAX - b->len - 1 || bg_grow(&b->s, &b->cap, b->len + n + 1, 1)) {
        b->oom = true;
        return;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void sb_json_str(sbuf_t *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            sb_printf(b, "\\u%04x", *p);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    bg_st_dtype_t dtype;
    int ndim;
    int64_t shape[BG_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
    size_t order;
} wtensor_t;

struct bg_st_writer {
    wtensor_t *t;
    size_t n, cap;
    char **mkey, **mval;
    size_t nmeta, metacap;
};

bg_status_t bg_st_writer_new(bg_st_writer_t **out)
{
    bg_st_writer_t *w = calloc(1, sizeof(*w));
    if (!w) return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    *out = w;
    return BG_OK;
}

void bg_st_writer_free(bg_st_writer_t *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++) free(w->mkey[i]), free(w->mval[i]);
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

bg_status_t bg_st_writer_add(bg_st_writer_t *w, const char *name, bg_st_dtype_t dt, int ndim,
                             const int64_t *shape, const void *data)
{
    if (!name || !*name || !strcmp(name, "__metadata__"))
        return bg_errorf(BG_ERR_INVALID, "safetensors: tensor name '%s' is not allowed",
                         name ? name : "(null)");
    if (!bg_st_dtype_name(dt))
        return bg_errorf(BG_ERR_INVALID, "safetensors: tensor '%s': bad dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > BG_ST_MAX_DIMS || (ndim > 0 && !shape))
        return bg_errorf(BG_ERR_INVALID, "safetensors: tensor '%s': %d dimensions (max %d)", name,
                         ndim, BG_ST_MAX_DIMS);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel))
            return bg_errorf(BG_ERR_INVALID, "safetensors: tensor '%s': bad dimension %" PRId64,
                             name, shape[i]);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, bg_st_dtype_size(dt), &nbytes) || nbytes > SIZE_MAX / 2)
        return bg_errorf(BG_ERR_INVALID, "safetensors: tensor '%s' is too large", name);
    if (nbytes > 0 && !data)
        return bg_errorf(BG_ERR_INVALID, "safetensors: tensor '%s' has no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return bg_errorf(BG_ERR_INVALID, "safetensors: duplicate tensor name '%s'", name);
    if (bg_grow(&w->t, &w->cap, w->n + 1, sizeof(*w->t)))
        return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    wtensor_t *t = &w->t[w->n];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (!t->name) return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (size_t)nbytes;
    t->data = data;
    t->order = w->n++;
    return BG_OK;
}

bg_status_t bg_st_writer_meta(bg_st_writer_t *w, const char *key, const char *value)
{
    if (!key || !value) return bg_errorf(BG_ERR_INVALID, "safetensors: NULL metadata key or value");
    char *v = strdup(value);
    if (!v) return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    for (size_t i = 0; i < w->nmeta; i++) {
        if (!strcmp(w->mkey[i], key)) {
            free(w->mval[i]);
            w->mval[i] = v;
            return BG_OK;
        }
    }
    /* Keys and values grow in step: both get room before either is used. */
    size_t kcap = w->metacap, vcap = w->metacap;
    if (bg_grow(&w->mkey, &kcap, w->nmeta + 1, sizeof(*w->mkey)) ||
        bg_grow(&w->mval, &vcap, w->nmeta + 1, sizeof(*w->mval))) {
        free(v);
        return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->metacap = kcap < vcap ? kcap : vcap;
    w->mkey[w->nmeta] = strdup(key);
    if (!w->mkey[w->nmeta]) {
        free(v);
        return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->mval[w->nmeta++] = v;
    return BG_OK;
}

/* Larger elements first keeps every tensor aligned without gaps; ties keep insertion order. */
static int cmp_layout(const void *a, const void *b)
{
    const wtensor_t *x = *(const wtensor_t *const *)a, *y = *(const wtensor_t *const *)b;
    size_t sx = bg_st_dtype_size(x->dtype), sy = bg_st_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Header JSON for the tensors in `order`, space-padded so 8 + len is a multiple of 8. */
static bg_status_t build_header(const bg_st_writer_t *w, wtensor_t **order, sbuf_t *b)
{
    sb_str(b, "{");
    bool first = true;
    if (w->nmeta) {
        sb_str(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) sb_str(b, ",");
            sb_json_str(b, w->mkey[i]);
            sb_str(b, ":");
            sb_json_str(b, w->mval[i]);
        }
        sb_str(b, "}");
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wtensor_t *t = order[i];
        if (!first) sb_str(b, ",");
        first = false;
        sb_json_str(b, t->name);
        sb_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", bg_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(b, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
        sb_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    sb_str(b, "}");
    while (!b->oom && b->len % 8 != 0) sb_str(b, " ");
    if (b->oom) return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    if (b->len > BG_ST_MAX_HEADER)
        return bg_errorf(BG_ERR_INVALID, "safetensors: header of %zu bytes exceeds the limit",
                         b->len);
    return BG_OK;
}

bg_status_t bg_st_writer_write(bg_st_writer_t *w, const char *path)
{
    bg_status_t st;
    wtensor_t **order = malloc((w->n ? w->n : 1) * sizeof(*order));
    sbuf_t hdr = {0};
    if (!order) return bg_errorf(BG_ERR_NOMEM, "safetensors writer: out of memory");
    for (size_t i = 0; i < w->n; i++) order[i] = &w->t[i];
    qsort(order, w->n, sizeof(*order), cmp_layout);
    if ((st = build_header(w, order, &hdr)) != BG_OK) goto err_free;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
    bg_atomic_file_t f;
    if ((st = bg_atomic_open(path, &f)) != BG_OK) goto err_free;
    if ((st = bg_atomic_write(&f, len8, 8)) != BG_OK) goto err_abort;
    if ((st = bg_atomic_write(&f, hdr.s, hdr.len)) != BG_OK) goto err_abort;
    for (size_t i = 0; i < w->n; i++)
        if ((st = bg_atomic_write(&f, order[i]->data, order[i]->nbytes)) != BG_OK) goto err_abort;
    st = bg_atomic_commit(&f);
    free(hdr.s);
    free(order);
    return st;

err_abort:
    bg_atomic_abort(&f);
err_free:
    free(hdr.s);
    free(order);
    return st;
}

/* ------------------------------------------------------------------ reader */

struct bg_st_file {
    char *path;
    const uint8_t *map;
    size_t len;
    const uint8_t *buffer; /* data buffer start: map + 8 + N */
    uint64_t buffer_len;
    bg_st_tensor_t *t;
    size_t n;
    size_t *by_name; /* indices of t sorted by name */
    char **mkey, **mval;
    size_t nmeta;
};

/* Comparators for qsort_r over indices into f->t (ctx is the file). */
static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const bg_st_file_t *f = ctx;
    return strcmp(f->t[*(const size_t *)a].name, f->t[*(const size_t *)b].name);
}

static int cmp_span_idx(const void *a, const void *b, void *ctx)
{
    const bg_st_file_t *f = ctx;
    const bg_st_tensor_t *x = &f->t[*(const size_t *)a], *y = &f->t[*(const size_t *)b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* A JSON number that is an exact non-negative integer <= 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

/* Validate one tensor entry `j` into *t (name is borrowed from j until copied). */
static bg_status_t parse_entry(const bg_st_file_t *f, const cJSON *j, bg_st_tensor_t *t)
{
    const char *p = f->path, *name = j->string;
    if (!cJSON_IsObject(j))
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': header entry is not an object", p, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(jd))
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': missing or non-string \"dtype\"", p, name);
    if (bg_st_dtype_parse(jd->valuestring, &t->dtype) != BG_OK)
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': unknown dtype '%s'", p, name,
                         jd->valuestring);
    if (!cJSON_IsArray(js))
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': missing or non-array \"shape\"", p, name);
    int nd = cJSON_GetArraySize(js);
    if (nd > BG_ST_MAX_DIMS)
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': %d dimensions (at most %d supported)", p,
                         name, nd, BG_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *e = js->child; e; e = e->next, d++) {
        uint64_t v;
        if (!json_uint(e, &v) || __builtin_mul_overflow(numel, v, &numel))
            return bg_errorf(BG_ERR_INVALID,
                             "%s: tensor '%s': shape entry %d is not a valid dimension", p, name, d);
        t->shape[d] = (int64_t)v;
    }
    uint64_t nbytes;
    if (numel > INT64_MAX || __builtin_mul_overflow(numel, bg_st_dtype_size(t->dtype), &nbytes))
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s': shape too large", p, name);
    uint64_t begin, end;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &begin) ||
        !json_uint(jo->child->next, &end))
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s': \"data_offsets\" must be [begin, end] of non-negative "
                         "integers",
                         p, name);
    if (begin > end || end > f->buffer_len)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                         "] outside the %" PRIu64 "-byte data buffer (truncated file?)",
                         p, name, begin, end, f->buffer_len);
    if (end - begin != nbytes)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s': %s with %" PRIu64 " elements needs %" PRIu64
                         " bytes but data_offsets span %" PRIu64,
                         p, name, jd->valuestring, numel, nbytes, end - begin);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)nbytes;
    t->offset = (uint64_t)(f->buffer - f->map) + begin;
    t->data = f->buffer + begin;
    return BG_OK;
}

static bg_status_t parse_metadata(bg_st_file_t *f, const cJSON *j)
{
    if (cJSON_IsNull(j)) return BG_OK;
    if (!cJSON_IsObject(j))
        return bg_errorf(BG_ERR_INVALID, "%s: \"__metadata__\" is not an object", f->path);
    int n = cJSON_GetArraySize(j);
    f->mkey = calloc((size_t)n + 1, sizeof(char *));
    f->mval = calloc((size_t)n + 1, sizeof(char *));
    if (!f->mkey || !f->mval) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
    for (const cJSON *e = j->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return bg_errorf(BG_ERR_INVALID, "%s: metadata '%s' is not a string", f->path,
                             e->string);
        for (size_t i = 0; i < f->nmeta; i++)
            if (!strcmp(f->mkey[i], e->string))
                return bg_errorf(BG_ERR_INVALID, "%s: duplicate metadata key '%s'", f->path,
                                 e->string);
        f->mkey[f->nmeta] = strdup(e->string);
        f->mval[f->nmeta] = strdup(e->valuestring);
        if (!f->mkey[f->nmeta] || !f->mval[f->nmeta++])
            return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return BG_OK;
}

/* Parse and validate the JSON header `hdr` (NUL-terminated, hlen bytes) into f. */
static bg_status_t parse_header(bg_st_file_t *f, const char *hdr, size_t hlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        return bg_errorf(BG_ERR_INVALID, "%s: header is not valid JSON (near byte %zu of %zu)",
                         f->path, at, hlen);
    }
    bg_status_t st = BG_OK;
    for (const char *c = end; c < hdr + hlen; c++) {
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            st = bg_errorf(BG_ERR_INVALID, "%s: unexpected bytes after the JSON header object",
                           f->path);
            goto err_json;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: header is not a JSON object", f->path);
        goto err_json;
    }
    size_t count = (size_t)cJSON_GetArraySize(root);
    f->t = calloc(count + 1, sizeof(*f->t));
    f->by_name = calloc(count + 1, sizeof(size_t));
    if (!f->t || !f->by_name) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
        goto err_json;
    }
    bool seen_meta = false;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (seen_meta) {
                st = bg_errorf(BG_ERR_INVALID, "%s: \"__metadata__\" appears twice", f->path);
                goto err_json;
            }
            seen_meta = true;
            if ((st = parse_metadata(f, e)) != BG_OK) goto err_json;
            continue;
        }
        bg_st_tensor_t *t = &f->t[f->n];
        if ((st = parse_entry(f, e, t)) != BG_OK) goto err_json;
        if (!(t->name = strdup(e->string))) {
            st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
            goto err_json;
        }
        f->by_name[f->n] = f->n;
        f->n++;
    }
err_json:
    cJSON_Delete(root);
    return st;
}

/* Duplicate names and overlapping byte ranges, after all entries are parsed. */
static bg_status_t check_layout(bg_st_file_t *f)
{
    qsort_r(f->by_name, f->n, sizeof(size_t), cmp_name_idx, f);
    for (size_t i = 1; i < f->n; i++) {
        if (!strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name))
            return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s' appears twice in the header", f->path,
                             f->t[f->by_name[i]].name);
    }
    size_t *span = malloc((f->n + 1) * sizeof(size_t));
    if (!span) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", f->path);
    size_t m = 0;
    for (size_t i = 0; i < f->n; i++)
        if (f->t[i].nbytes) span[m++] = i; /* empty tensors occupy no bytes */
    qsort_r(span, m, sizeof(size_t), cmp_span_idx, f);
    bg_status_t st = BG_OK;
    for (size_t i = 1; i < m; i++) {
        const bg_st_tensor_t *a = &f->t[span[i - 1]], *b = &f->t[span[i]];
        if (b->offset < a->offset + a->nbytes) {
            st = bg_errorf(BG_ERR_INVALID, "%s: tensors '%s' and '%s' overlap in the data buffer",
                           f->path, a->name, b->name);
            break;
        }
    }
    free(span);
    return st;
}

static bg_status_t st_map(const char *path, bg_st_file_t *f)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bg_status_t st = BG_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = bg_errorf(BG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto err_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: %s, not a safetensors file", path,
                       S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
        goto err_close;
    }
    f->len = (size_t)sb.st_size;
    if (f->len < 8) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: %zu bytes, too short for the 8-byte header length (truncated file?)",
                       path, f->len);
        goto err_close;
    }
    void *map = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = bg_errorf(BG_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        goto err_close;
    }
    f->map = map;
err_close:
    close(fd);
    return st;
}

bg_status_t bg_st_open(const char *path, bg_st_file_t **out)
{
    bg_st_file_t *f = calloc(1, sizeof(*f));
    if (!f) return bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
    bg_status_t st;
    char *hdr = NULL;
    if (!(f->path = strdup(path))) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_free;
    }
    if ((st = st_map(path, f)) != BG_OK) goto err_free;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)f->map[i] << (8 * i);
    if (n < 2 || n > BG_ST_MAX_HEADER || n > f->len - 8) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: header length %" PRIu64 " is impossible for a %zu-byte file%s", path, n,
                       f->len, n > f->len - 8 && n <= BG_ST_MAX_HEADER ? " (truncated file?)" : "");
        goto err_free;
    }
    if (memchr(f->map + 8, '\0', n)) {
        st = bg_errorf(BG_ERR_INVALID, "%s: header contains a NUL byte", path);
        goto err_free;
    }
    if (!(hdr = malloc(n + 1))) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory for a %" PRIu64 "-byte header", path, n);
        goto err_free;
    }
    memcpy(hdr, f->map + 8, n);
    hdr[n] = '\0';
    f->buffer = f->map + 8 + n;
    f->buffer_len = f->len - 8 - n;
    if ((st = parse_header(f, hdr, n)) != BG_OK) goto err_free;
    if ((st = check_layout(f)) != BG_OK) goto err_free;
    free(hdr);
    *out = f;
    return BG_OK;

err_free:
    free(hdr);
    bg_st_close(f);
    return st;
}

void bg_st_close(bg_st_file_t *f)
{
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->len);
    for (size_t i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (size_t i = 0; i < f->nmeta; i++) free(f->mkey[i]), free(f->mval[i]);
    free(f->mkey);
    free(f->mval);
    free(f->t);
    free(f->by_name);
    free(f->path);
    free(f);
}

const char *bg_st_path(const bg_st_file_t *f)
{
    return f->path;
}

size_t bg_st_count(const bg_st_file_t *f)
{
    return f->n;
}

const bg_st_tensor_t *bg_st_tensor_at(const bg_st_file_t *f, size_t i)
{
    return i < f->n ? &f->t[i] : NULL;
}

const bg_st_tensor_t *bg_st_find(const bg_st_file_t *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return &f->t[f->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *bg_st_meta(const bg_st_file_t *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (!strcmp(f->mkey[i], key)) return f->mval[i];
    return NULL;
}

size_t bg_st_meta_count(const bg_st_file_t *f)
{
    return f->nmeta;
}

void bg_st_meta_at(const bg_st_file_t *f, size_t i, const char **key, const char **value)
{
    *key = i < f->nmeta ? f->mkey[i] : NULL;
    *value = i < f->nmeta ? f->mval[i] : NULL;
}

/*
 * The CRC reads every page of the mapping; each 8 MiB window read is then
 * dropped from this process (MADV_DONTNEED on a private, unwritten file
 * mapping: a later read faults the same bytes back in from the page cache).
 * Otherwise checking a checkpoint left all of it resident in every rank
 * that opened it -- under ZeRO-1 every replica's shard of every stage,
 * though each rank then reads only its own ranges. Advice, so its failure
 * changes nothing.
 */
void bg_st_file_digest(const bg_st_file_t *f, uint64_t *bytes, uint32_t *crc)
{
    const size_t window = (size_t)8 << 20; /* a multiple of any page size */
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < f->len;) {
        size_t n = f->len - off > window ? window : f->len - off;
        c = crc32(c, f->map + off, (uInt)n);
        madvise((void *)(uintptr_t)(f->map + off), n, MADV_DONTNEED);
        off += n;
    }
    *bytes = f->len;
    *crc = (uint32_t)c;
}

void bg_st_shape_text(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Elements [off, off + count) of t (in bounds) into dst as f32; BG_ERR_INVALID
 * for a dtype that does not convert. */
static bg_status_t convert_f32(const bg_st_file_t *f, const bg_st_tensor_t *t, int64_t off,
                               int64_t count, float *dst)
{
    size_t es = bg_st_dtype_size(t->dtype);
    const uint8_t *p = (const uint8_t *)t->data + (size_t)off * es;
    switch (t->dtype) {
    case BG_ST_F32:
        memcpy(dst, p, (size_t)count * 4);
        return BG_OK;
    case BG_ST_BF16:
    case BG_ST_F16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = t->dtype == BG_ST_BF16 ? bg_bf16_to_f32(h) : bg_f16_to_f32(h);
        }
        return BG_OK;
    case BG_ST_F64:
        for (int64_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, p + 8 * i, sizeof(d));
            dst[i] = (float)d;
        }
        return BG_OK;
    default:
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s' is %s; only F32, BF16, F16 and F64 convert to f32",
                         f->path, t->name, bg_st_dtype_name(t->dtype));
    }
}

bg_status_t bg_st_check_shape(const bg_st_file_t *f, const char *name, int ndim,
                              const int64_t *shape, int64_t numel)
{
    const bg_st_tensor_t *t = bg_st_find(f, name);
    if (!t) return bg_errorf(BG_ERR_INVALID, "%s: no tensor named '%s'", f->path, name);
    char have[160], want[160];
    bg_st_shape_text(t->ndim, t->shape, have, sizeof(have));
    bool same = shape ? t->ndim == ndim : t->numel == numel;
    for (int i = 0; shape && same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        if (shape)
            bg_st_shape_text(ndim, shape, want, sizeof(want));
        else
            snprintf(want, sizeof(want), "%" PRId64 " elements", numel);
        return bg_errorf(BG_ERR_INVALID, "%s: tensor '%s' has shape %s, expected %s", f->path,
                         name, have, want);
    }
    return BG_OK;
}

bg_status_t bg_st_read_f32(const bg_st_file_t *f, const char *name, int ndim,
                           const int64_t *shape, int64_t numel, float *dst)
{
    bg_status_t st = bg_st_check_shape(f, name, ndim, shape, numel);
    if (st != BG_OK) return st;
    const bg_st_tensor_t *t = bg_st_find(f, name);
    return convert_f32(f, t, 0, t->numel, dst);
}

bg_status_t bg_st_read_f32_range(const bg_st_file_t *f, const char *name, int64_t off,
                                 int64_t count, float *dst)
{
    const bg_st_tensor_t *t = bg_st_find(f, name);
    if (!t) return bg_errorf(BG_ERR_INVALID, "%s: no tensor named '%s'", f->path, name);
    if (off < 0 || count < 0 || off > t->numel || count > t->numel - off)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s' has %" PRId64 " elements; elements [%" PRId64
                         ", +%" PRId64 ") are outside it",
                         f->path, name, t->numel, off, count);
    return convert_f32(f, t, off, count, dst);
}

bg_status_t bg_st_read_raw(const bg_st_file_t *f, const char *name, bg_st_dtype_t dt, void *dst,
                           size_t nbytes)
{
    const bg_st_tensor_t *t = bg_st_find(f, name);
    if (!t) return bg_errorf(BG_ERR_INVALID, "%s: no tensor named '%s'", f->path, name);
    if (t->dtype != dt || t->nbytes != nbytes)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: tensor '%s' is %s of %zu bytes, expected %s of %zu bytes", f->path,
                         name, bg_st_dtype_name(t->dtype), t->nbytes,
                         bg_st_dtype_name(dt) ? bg_st_dtype_name(dt) : "?", nbytes);
    memcpy(dst, t->data, nbytes);
    return BG_OK;
}
