/*
 * tests/data/test_data_idx.c -- Fashion-MNIST IDX reading: the real dataset
 * when installed (counts, balanced labels, pixel range, normalisation), and
 * tiny hand-made gzip files with exact expected values plus every kind of
 * broken file (bad magic, truncated gzip, truncated payload, trailing bytes,
 * count mismatch, bad label, missing file), each refused by name.
 */
#include <zlib.h>

#include "data_test_util.h"
#include "engine/data.h"
#include "test_util.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static void test_real(void)
{
    struct stat sb;
    if (stat(FMNIST_DIR "/train-images-idx3-ubyte.gz", &sb) != 0) {
        printf("SKIP real Fashion-MNIST: %s not present (Debian package dataset-fashion-mnist)\n",
               FMNIST_DIR);
        return;
    }
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1000;
    o.shuffle = false;
    bg_data_t *ds = NULL;
    CHECK_OK(bg_data_open("fashion-mnist", &o, &ds));
    if (!ds) return;
    const bg_data_info_t *in = bg_data_info(ds);
    CHECK(in->kind == BG_DATA_IMAGES);
    CHECK(in->n_train == 60000);
    CHECK(in->n_eval == 10000);
    CHECK(in->input_cols == 784);
    CHECK(in->input_dtype == BG_F32);
    CHECK(in->classes == 10);
    CHECK(in->steps_per_epoch == 60);
    CHECK(in->eval_steps == 10);
    float *x = malloc(sizeof(float) * 1000 * 784);
    int32_t y[1000];
    int64_t hist[2][10] = {{0}};
    double sum = 0;
    float lo = 1, hi = 0;
    for (int split = 0; split < 2; split++) {
        int64_t steps = split ? in->eval_steps : in->steps_per_epoch;
        for (int64_t s = 0; s < steps; s++) {
            CHECK_OK(bg_data_fetch(ds, (bg_split_t)split, s, 0, 1000, x, y));
            for (int i = 0; i < 1000; i++) {
                if (y[i] >= 0 && y[i] < 10) hist[split][y[i]]++;
            }
            if (split == 0) {
                for (int i = 0; i < 1000 * 784; i++) {
                    sum += x[i];
                    lo = x[i] < lo ? x[i] : lo;
                    hi = x[i] > hi ? x[i] : hi;
                }
            }
        }
    }
    /* The published split is balanced: 6000 / 1000 of each class. */
    for (int c = 0; c < 10; c++) {
        CHECK_MSG(hist[0][c] == 6000, "train class %d: %lld", c, (long long)hist[0][c]);
        CHECK_MSG(hist[1][c] == 1000, "test class %d: %lld", c, (long long)hist[1][c]);
    }
    double mean = sum / (60000.0 * 784);
    CHECK_MSG(fabs(mean - 0.2860) < 0.002, "pixel mean %f", mean);
    CHECK(lo == 0.0f && hi == 1.0f);
    bg_data_close(ds);

    /* Normalised inputs: same pixels, affine map, mean near 0 over the set. */
    o.normalize = true;
    CHECK_OK(bg_data_open("fashion-mnist:" FMNIST_DIR, &o, &ds));
    if (ds) {
        sum = 0;
        for (int64_t s = 0; s < 60; s++) {
            CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, s, 0, 1000, x, NULL));
            for (int i = 0; i < 1000 * 784; i++) sum += x[i];
        }
        CHECK_MSG(fabs(sum / (60000.0 * 784)) < 0.01, "normalised mean %f", sum / (60000.0 * 784));
        bg_data_close(ds);
    }
    free(x);
}

/* An IDX byte file: magic 00 00 08 ndim, dims big-endian, payload. */
static unsigned char *make_idx(int ndim, const uint32_t *dims, const unsigned char *payload,
                               size_t plen, size_t *len)
{
    *len = 4 + 4 * (size_t)ndim + plen;
    unsigned char *b = malloc(*len);
    b[0] = 0, b[1] = 0, b[2] = 8, b[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        b[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        b[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        b[7 + 4 * i] = (unsigned char)dims[i];
    }
    memcpy(b + 4 + 4 * ndim, payload, plen);
    return b;
}

static void write_gz(const char *path, const unsigned char *b, size_t n)
{
    gzFile g = gzopen(path, "wb");
    gzwrite(g, b, (unsigned)n);
    gzclose(g);
}

/* Write the four files of a dataset with `ntr` train and `nte` test 2x3 images. */
static void write_set(const char *dir, int ntr, int nte, bool plain_test)
{
    char path[4096];
    for (int split = 0; split < 2; split++) {
        int n = split ? nte : ntr;
        const char *pre = split ? "t10k" : "train";
        unsigned char px[64 * 6], lb[64];
        for (int i = 0; i < n * 6; i++) px[i] = (unsigned char)(i * 37 + split * 101);
        for (int i = 0; i < n; i++) lb[i] = (unsigned char)((i * 3 + split) % 10);
        uint32_t idims[3] = {(uint32_t)n, 2, 3}, ldims[1] = {(uint32_t)n};
        size_t ilen, llen;
        unsigned char *ib = make_idx(3, idims, px, (size_t)n * 6, &ilen);
        unsigned char *lbuf = make_idx(1, ldims, lb, (size_t)n, &llen);
        if (split && plain_test) { /* uncompressed files are accepted too */
            PATHF(path, "%s/%s-images-idx3-ubyte", dir, pre);
            bg_test_write_file(path, ib, ilen);
            PATHF(path, "%s/%s-labels-idx1-ubyte", dir, pre);
            bg_test_write_file(path, lbuf, llen);
        } else {
            PATHF(path, "%s/%s-images-idx3-ubyte.gz", dir, pre);
            write_gz(path, ib, ilen);
            PATHF(path, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
            write_gz(path, lbuf, llen);
        }
        free(ib);
        free(lbuf);
    }
}

static void test_tiny(const char *root)
{
    char dir[4096], spec[4200];
    PATHF(dir, "%s/tiny", root);
    mkdir(dir, 0777);
    write_set(dir, 5, 3, true);
    PATHF(spec, "fashion-mnist:%s", dir);
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1;
    o.shuffle = false;
    bg_data_t *ds = NULL;
    CHECK_OK(bg_data_open(spec, &o, &ds));
    if (!ds) return;
    const bg_data_info_t *in = bg_data_info(ds);
    CHECK(in->n_train == 5 && in->n_eval == 3 && in->input_cols == 6);
    for (int split = 0; split < 2; split++) {
        int n = split ? 3 : 5;
        for (int s = 0; s < n; s++) {
            float x[6];
            int32_t y = -1;
            CHECK_OK(bg_data_fetch(ds, (bg_split_t)split, s, 0, 1, x, &y));
            CHECK(y == (s * 3 + split) % 10);
            for (int j = 0; j < 6; j++) {
                unsigned char want = (unsigned char)((s * 6 + j) * 37 + split * 101);
                CHECK_MSG(x[j] == (float)want * (1.0f / 255.0f), "split %d sample %d px %d", split,
                          s, j);
            }
        }
    }
    /* Epoch wrap without shuffling: step 7 of a 5-step epoch is sample 2. */
    int32_t y;
    CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, 7, 0, 1, NULL, &y));
    CHECK(y == (2 * 3) % 10);
    /* Eval past the end is refused. */
    CHECK(bg_data_fetch(ds, BG_SPLIT_EVAL, 3, 0, 1, NULL, &y) == BG_ERR_INVALID);
    bg_data_close(ds);

    /* A batch larger than the training set cannot form an epoch. */
    o.batch = 6;
    ds = NULL;
    CHECK(bg_data_open(spec, &o, &ds) == BG_ERR_INVALID && ds == NULL);
}

/* Replace one file of a good set by `bytes` (gzip-compressed unless raw) and expect a named error. */
static void expect_bad(const char *root, const char *tag, const char *file,
                       const unsigned char *bytes, size_t n, bool raw, const char *needle)
{
    char dir[4096], path[4200], spec[4200];
    PATHF(dir, "%s/%s", root, tag);
    mkdir(dir, 0777);
    write_set(dir, 4, 2, false);
    PATHF(path, "%s/%s", dir, file);
    if (raw)
        bg_test_write_file(path, bytes, n);
    else
        write_gz(path, bytes, n);
    PATHF(spec, "fashion-mnist:%s", dir);
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1;
    bg_data_t *ds = NULL;
    bg_status_t st = bg_data_open(spec, &o, &ds);
    CHECK_MSG(st == BG_ERR_INVALID && ds == NULL, "%s: status %d", tag, st);
    CHECK_MSG(bg_test_msg_has(bg_last_error(), file), "%s", tag);
    if (needle) CHECK_MSG(bg_test_msg_has(bg_last_error(), needle), "%s", tag);
    bg_data_close(ds);
}

static void test_bad(const char *root)
{
    unsigned char px[4 * 6] = {0}, lb[4] = {1, 2, 3, 4};
    uint32_t idims[3] = {4, 2, 3}, ldims[1] = {4}, short_dims[1] = {3};
    size_t n;
    const char *imgs = "train-images-idx3-ubyte.gz", *labs = "train-labels-idx1-ubyte.gz";

    unsigned char *b = make_idx(3, idims, px, sizeof(px), &n);
    b[2] = 0x09; /* signed bytes: not what we read */
    expect_bad(root, "magic", imgs, b, n, false, "magic");
    b[2] = 0x08;
    expect_bad(root, "payload-short", imgs, b, n - 5, false, "truncated");
    unsigned char *big = malloc(n + 3);
    memcpy(big, b, n);
    memset(big + n, 7, 3);
    expect_bad(root, "trailing", imgs, big, n + 3, false, "trailing");
    free(big);
    b[3] = 1; /* wrong number of dimensions */
    expect_bad(root, "ndim", imgs, b, n, false, "dimensions");
    free(b);
    expect_bad(root, "tiny", imgs, (const unsigned char *)"\0\0", 2, false, "too short");

    /* A gzip stream cut in half. */
    b = make_idx(3, idims, px, sizeof(px), &n);
    char gzpath[4200];
    PATHF(gzpath, "%s/whole.gz", root);
    write_gz(gzpath, b, n);
    size_t gzlen = 0;
    unsigned char *gz = bg_test_read_file(gzpath, &gzlen);
    expect_bad(root, "gz-cut", imgs, gz, gzlen / 2, true, "gzip");
    expect_bad(root, "gz-cut-tail", imgs, gz, gzlen - 4, true, NULL);
    free(gz);
    free(b);

    b = make_idx(1, short_dims, lb, 3, &n);
    expect_bad(root, "count", labs, b, n, false, "labels");
    free(b);
    lb[2] = 10;
    b = make_idx(1, ldims, lb, 4, &n);
    expect_bad(root, "label-range", labs, b, n, false, "label 10");
    free(b);

    /* Missing files are an I/O error that names the package. */
    char dir[4200], spec[4300];
    PATHF(dir, "%s/empty", root);
    mkdir(dir, 0777);
    PATHF(spec, "fashion-mnist:%s", dir);
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1;
    bg_data_t *ds = NULL;
    CHECK(bg_data_open(spec, &o, &ds) == BG_ERR_IO && ds == NULL);
    CHECK(bg_test_msg_has(bg_last_error(), "dataset-fashion-mnist"));
    CHECK(bg_data_open("mnist-fashion", &o, &ds) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "unknown kind"));
}

int main(void)
{
    char *root = bg_test_tmpdir("idx");
    test_real();
    test_tiny(root);
    test_bad(root);
    bg_test_rmtree(root);
    free(root);
    return bg_test_finish("test_data_idx");
}
