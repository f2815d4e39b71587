/*
 * tests/fuzz/fuzz_data.c -- libFuzzer target for the data readers' file
 * headers: IDX (engine/data_idx.c, gzip or plain) and llm.c token shards
 * (engine/data_tokens.c). The first byte picks the file the rest becomes:
 * the training images, the training labels (the other IDX files are small
 * valid ones), or a training shard. An accepted file must fetch a batch;
 * anything else fails with BG_ERR_INVALID/IO and a message. Must not keep
 * state between inputs.
 */
#include "engine/data.h"
#include "fuzz_util.h"

/* A valid IDX file: 2 samples of 2x2 pixels (ndim 3) or 2 labels (ndim 1). */
static void write_idx(const char *name, int ndim)
{
    uint8_t b[32] = {0, 0, 8, (uint8_t)ndim};
    size_t n = 4;
    int64_t dims[3] = {2, 2, 2}, total = 1;
    for (int i = 0; i < ndim; i++) {
        b[n + 3] = (uint8_t)dims[i];
        n += 4;
        total *= dims[i];
    }
    for (int64_t i = 0; i < total; i++) b[n++] = (uint8_t)(i % 10);
    char path[256];
    fuzz_write(name, b, n, path, sizeof(path));
}

static void fetch_some(bg_data_t *ds)
{
    const bg_data_info_t *in = bg_data_info(ds);
    int64_t cols = in->input_cols > 4096 ? 0 : in->input_cols;
    if (!cols) return;
    float x[4096];
    int32_t y[4096];
    void *inp = x;
    bg_status_t st = bg_data_fetch(ds, BG_SPLIT_TRAIN, 0, 0, 1, inp, in->target_cols <= 4096 ? y : NULL);
    if (st != BG_OK && st != BG_ERR_INVALID) fuzz_die("fuzz_data", "fetch", bg_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const char *const idx[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char path[256], spec[300];
    int which = data[0] % 3;
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1;
    o.seq_len = 2;
    if (which < 2) {
        for (int i = 0; i < 4; i++) write_idx(idx[i], i % 2 ? 1 : 3);
        fuzz_write(idx[which], data + 1, size - 1, path, sizeof(path));
        snprintf(spec, sizeof(spec), "fashion-mnist:%s", fuzz_dir());
    } else {
        fuzz_write("s_train_000000.bin", data + 1, size - 1, path, sizeof(path));
        snprintf(spec, sizeof(spec), "tokens:%s", path);
    }
    bg_data_t *ds = NULL;
    bg_status_t st = bg_data_open(spec, &o, &ds);
    if (st == BG_OK) {
        fetch_some(ds);
        bg_data_close(ds);
    } else {
        fuzz_check_error("fuzz_data", st);
    }
    return 0;
}
