/*
 * engine/data_idx.c -- Fashion-MNIST from IDX files (gzip or plain).
 *
 * Reads the four files of the dataset fully into memory as bytes (47 MB
 * for the training images) and converts rows to f32 on fetch, so memory
 * stays at one byte per pixel. Every header field is checked against the
 * decompressed length: a truncated or padded file is an error naming the
 * file, never a short read. Must NOT shuffle or batch (engine/data.c does).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/checked.h"
#include "base/grow.h"
#include "engine/data_impl.h"

#define IDX_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define IDX_MAX_BYTES ((size_t)1 << 31) /* refuse absurd inflations (zip bombs) */
#define FMNIST_CLASSES 10
/* Training-set pixel statistics of Fashion-MNIST in [0,1] units. */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

typedef struct {
    uint8_t *pixels; /* (n, dim) */
    uint8_t *labels; /* (n) */
    int64_t n, dim;
} idx_split_t;

typedef struct {
    idx_split_t split[2]; /* BG_SPLIT_TRAIN, BG_SPLIT_EVAL */
    bool normalize;
} idx_impl_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Read up to `want` decompressed bytes into buf; *got is how many arrived
 * (fewer only at end of data). BG_ERR_INVALID naming the file on corrupt
 * or cut-short gzip data.
 */
static bg_status_t gz_read_n(gzFile gz, const char *path, uint8_t *buf, size_t want, size_t *got)
{
    size_t len = 0;
    while (len < want) {
        size_t ask = want - len > (1u << 30) ? (1u << 30) : want - len;
        int n = gzread(gz, buf + len, (unsigned)ask);
        if (n < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            return bg_errorf(BG_ERR_INVALID, "%s: %s", path,
                             zerr == Z_ERRNO ? strerror(errno) : msg);
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    /* A gzip stream cut short reads as a clean EOF with Z_BUF_ERROR pending. */
    int zerr = Z_OK;
    const char *msg = gzerror(gz, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END)
        return bg_errorf(BG_ERR_INVALID, "%s: truncated or corrupt gzip data (%s)", path, msg);
    *got = len;
    return BG_OK;
}

/*
 * The header of an `ndim`-dimensional IDX file and its payload, decompressed
 * into one malloc'd buffer. Decompression stops at the size the header
 * promises (plus one byte to detect trailing data), so a gzip bomb costs at
 * most that much memory; a bad magic stops after the header.
 */
static bg_status_t read_gz(const char *path, int ndim, uint8_t **out, size_t *out_len)
{
    gzFile gz = gzopen(path, "rb"); /* reads plain files transparently, too */
    if (!gz) return bg_errorf(BG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t hdr = 4 + 4 * (size_t)ndim, len = 0, total = 1;
    uint8_t head[16];
    bg_status_t st = gz_read_n(gz, path, head, hdr, &len);
    bool magic_ok = st == BG_OK && len == hdr && head[0] == 0 && head[1] == 0 && head[2] == 0x08 &&
                    head[3] == ndim;
    for (int i = 0; magic_ok && i < ndim; i++)
        if (!bg_mul_size(total, be32(head + 4 + 4 * i), &total) || total > IDX_MAX_BYTES)
            total = IDX_MAX_BYTES + 1, magic_ok = false; /* idx_parse says "too large" */
    /* Grown as data arrives, so a short file claiming 2 GB costs what it holds. */
    size_t want = hdr + (magic_ok ? total : 0) + 1, cap = 0;
    uint8_t *buf = NULL;
    if (st != BG_OK) goto err_close;
    if (bg_grow(&buf, &cap, want < (1u << 20) ? want : (1u << 20), 1)) {
        st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
        goto err_close;
    }
    memcpy(buf, head, len);
    for (size_t more = 1; magic_ok && more && len < want;) {
        size_t room = (cap < want ? cap : want) - len;
        if ((st = gz_read_n(gz, path, buf + len, room, &more)) != BG_OK) goto err_free;
        len += more;
        if (len == cap && cap < want && bg_grow(&buf, &cap, cap * 2 < want ? cap * 2 : want, 1)) {
            st = bg_errorf(BG_ERR_NOMEM, "%s: out of memory", path);
            goto err_free;
        }
    }
    if (len == want && magic_ok) {
        st = bg_errorf(BG_ERR_INVALID,
                       "%s: more data than the %zu bytes its IDX header promises (trailing "
                       "bytes); not decompressing further",
                       path, total);
        goto err_free;
    }
    gzclose(gz);
    *out = buf;
    *out_len = len;
    return BG_OK;

err_free:
    free(buf);
err_close:
    gzclose(gz);
    return st;
}

/*
 * Parse an unsigned-byte IDX file with `ndim` dimensions: on success *data
 * points into `buf` and dims[] holds the sizes. The length must match the
 * header exactly.
 */
static bg_status_t idx_parse(const char *path, const uint8_t *buf, size_t len, int ndim,
                             int64_t dims[3], const uint8_t **data)
{
    if (len < 4)
        return bg_errorf(BG_ERR_INVALID, "%s: %zu bytes, too short for an IDX header", path, len);
    if (buf[0] != 0 || buf[1] != 0 || buf[2] != 0x08)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: bad IDX magic %02x %02x %02x %02x (expected 00 00 08 %02x: "
                         "unsigned bytes, %d dims)",
                         path, buf[0], buf[1], buf[2], buf[3], ndim, ndim);
    if (buf[3] != ndim)
        return bg_errorf(BG_ERR_INVALID, "%s: IDX file has %d dimensions, expected %d", path,
                         buf[3], ndim);
    size_t hdr = 4 + 4 * (size_t)ndim;
    if (len < hdr)
        return bg_errorf(BG_ERR_INVALID, "%s: truncated IDX header (%zu of %zu bytes)", path, len,
                         hdr);
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(buf + 4 + 4 * i);
        /* total <= 2^31 before and dims < 2^32, so the product fits in 64 bits. */
        total *= (uint64_t)dims[i];
        if (total > IDX_MAX_BYTES)
            return bg_errorf(BG_ERR_INVALID, "%s: IDX dimensions too large", path);
    }
    if (len - hdr != total)
        return bg_errorf(BG_ERR_INVALID,
                         "%s: header promises %" PRIu64 " data bytes but the file holds %zu (%s)",
                         path, total, len - hdr, len - hdr < total ? "truncated" : "trailing bytes");
    *data = buf + hdr;
    return BG_OK;
}

/* Locate NAME.gz, else NAME, under dir. Writes into path[len]. */
static bg_status_t idx_find(const char *dir, const char *name, char *path, size_t len)
{
    struct stat sb;
    static const char *const ext[2] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        snprintf(path, len, "%s/%s%s", dir, name, ext[i]);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            return bg_errorf(BG_ERR_INVALID, "%s: is a directory, not an IDX file", path);
        if (stat(path, &sb) == 0) return BG_OK;
        /* Only a missing file means "not installed"; anything else is its own cause. */
        if (errno != ENOENT)
            return bg_errorf(BG_ERR_IO, "%s: %s", path, strerror(errno));
    }
    return bg_errorf(BG_ERR_IO,
                     "fashion-mnist: %s/%s.gz not found (install Debian's dataset-fashion-mnist "
                     "or pass fashion-mnist:DIR)",
                     dir, name);
}

/* Load one split (images + labels) into *sp, validating them against each other. */
static bg_status_t idx_load_split(const char *dir, const char *prefix, idx_split_t *sp)
{
    char ipath[4096], lpath[4096], name[64];
    uint8_t *ibuf = NULL, *lbuf = NULL;
    size_t ilen, llen;
    int64_t idims[3], ldims[3];
    const uint8_t *idata, *ldata;
    bg_status_t st;
    snprintf(name, sizeof(name), "%s-images-idx3-ubyte", prefix);
    if ((st = idx_find(dir, name, ipath, sizeof(ipath))) != BG_OK) return st;
    snprintf(name, sizeof(name), "%s-labels-idx1-ubyte", prefix);
    if ((st = idx_find(dir, name, lpath, sizeof(lpath))) != BG_OK) return st;
    if ((st = read_gz(ipath, 3, &ibuf, &ilen)) != BG_OK) return st;
    if ((st = read_gz(lpath, 1, &lbuf, &llen)) != BG_OK) goto err_free;
    if ((st = idx_parse(ipath, ibuf, ilen, 3, idims, &idata)) != BG_OK) goto err_free;
    if ((st = idx_parse(lpath, lbuf, llen, 1, ldims, &ldata)) != BG_OK) goto err_free;
    if (idims[0] != ldims[0]) {
        st = bg_errorf(BG_ERR_INVALID, "%s: %" PRId64 " images but %s has %" PRId64 " labels",
                       ipath, idims[0], lpath, ldims[0]);
        goto err_free;
    }
    if (idims[0] == 0 || idims[1] * idims[2] == 0) {
        st = bg_errorf(BG_ERR_INVALID, "%s: empty image set", ipath);
        goto err_free;
    }
    for (int64_t i = 0; i < ldims[0]; i++) {
        if (ldata[i] >= FMNIST_CLASSES) {
            st = bg_errorf(BG_ERR_INVALID, "%s: label %d of sample %" PRId64 " is not a class 0..%d",
                           lpath, ldata[i], i, FMNIST_CLASSES - 1);
            goto err_free;
        }
    }
    sp->n = idims[0];
    sp->dim = idims[1] * idims[2];
    /* Keep only the payloads: move them to the front of their buffers. */
    memmove(ibuf, idata, (size_t)(sp->n * sp->dim));
    memmove(lbuf, ldata, (size_t)sp->n);
    sp->pixels = ibuf;
    sp->labels = lbuf;
    return BG_OK;

err_free:
    free(ibuf);
    free(lbuf);
    return st;
}

static void idx_destroy(void *p)
{
    idx_impl_t *m = p;
    if (!m) return;
    for (int s = 0; s < 2; s++) {
        free(m->split[s].pixels);
        free(m->split[s].labels);
    }
    free(m);
}

static bg_status_t idx_row(const void *p, bg_split_t split, int64_t sample, void *input,
                           int32_t *target)
{
    const idx_impl_t *m = p;
    const idx_split_t *sp = &m->split[split];
    if (input) {
        float *x = input;
        const uint8_t *px = sp->pixels + sample * sp->dim;
        for (int64_t j = 0; j < sp->dim; j++) {
            float v = (float)px[j] * (1.0f / 255.0f);
            x[j] = m->normalize ? (v - FMNIST_MEAN) / FMNIST_STD : v;
        }
    }
    if (target) *target = sp->labels[sample];
    return BG_OK;
}

bg_status_t bg_data_idx_open(const char *arg, const bg_data_opts_t *o, bg_data_info_t *info,
                             bg_data_source_t *out)
{
    const char *dir = arg && *arg ? arg : IDX_DEFAULT_DIR;
    idx_impl_t *m = calloc(1, sizeof(*m));
    if (!m) return bg_errorf(BG_ERR_NOMEM, "fashion-mnist: out of memory");
    m->normalize = o->normalize;
    bg_status_t st = idx_load_split(dir, "train", &m->split[BG_SPLIT_TRAIN]);
    if (st != BG_OK) goto err_free;
    st = idx_load_split(dir, "t10k", &m->split[BG_SPLIT_EVAL]);
    if (st != BG_OK) goto err_free;
    if (m->split[0].dim != m->split[1].dim) {
        st = bg_errorf(BG_ERR_INVALID, "fashion-mnist %s: train images have %" PRId64
                       " pixels, test images %" PRId64, dir, m->split[0].dim, m->split[1].dim);
        goto err_free;
    }
    memset(info, 0, sizeof(*info));
    info->kind = BG_DATA_IMAGES;
    snprintf(info->name, sizeof(info->name), "fashion-mnist");
    info->n_train = m->split[0].n;
    info->n_eval = m->split[1].n;
    info->input_cols = m->split[0].dim;
    info->input_dtype = BG_F32;
    info->target_cols = 1;
    info->classes = FMNIST_CLASSES;
    info->train_files = 2;
    info->eval_files = 2;
    out->impl = m;
    out->destroy = idx_destroy;
    out->row = idx_row;
    return BG_OK;

err_free:
    idx_destroy(m);
    return st;
}
