/*
 * tests/data/test_data_tokens.c -- token shards: bg_data_make_shards on a
 * generated text file, then reading every window back against the text
 * (inputs, targets shifted by one, across shard boundaries, shuffled or
 * not, eval split), the spec forms (prefix, glob, single file), the vocab
 * check, and broken shards (bad magic, version, truncated, trailing bytes,
 * short file, negative count), each refused naming the file.
 */
#include "data_test_util.h"
#include "engine/data.h"
#include "test_util.h"

#define TEXT_LEN 50000

static unsigned char *make_text(const char *path, size_t n)
{
    unsigned char *t = malloc(n);
    uint64_t s = 12345;
    const char *words[] = {"the ", "brigade ", "passes ", "buckets ", "of ", "water ", "\n",
                           "quickly, ", "é", "\x01\xff"};
    size_t o = 0;
    while (o < n) {
        const char *w = words[bg_test_next(&s) % 10];
        for (size_t k = 0; w[k] && o < n; k++) t[o++] = (unsigned char)w[k];
    }
    bg_test_write_file(path, t, n);
    return t;
}

static bg_data_t *open_tokens(const char *spec, int64_t batch, int64_t T, bool shuffle)
{
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = batch;
    o.seq_len = T;
    o.shuffle = shuffle;
    o.seed = 7;
    bg_data_t *ds = NULL;
    CHECK_OK(bg_data_open(spec, &o, &ds));
    return ds;
}

/* Every row of steps [0, steps) must equal the text at its window. */
static void check_windows(bg_data_t *ds, bg_split_t split, const unsigned char *text, int64_t steps)
{
    const bg_data_info_t *in = bg_data_info(ds);
    int64_t B = in->batch, T = in->input_cols;
    int32_t *x = malloc(sizeof(int32_t) * B * T), *y = malloc(sizeof(int32_t) * B * T);
    int bad = 0;
    for (int64_t s = 0; s < steps; s++) {
        CHECK_OK(bg_data_fetch(ds, split, s, 0, B, x, y));
        for (int64_t r = 0; r < B; r++) {
            int64_t idx = -1;
            CHECK_OK(bg_data_sample_index(ds, split, s, r, &idx));
            for (int64_t j = 0; j < T; j++) {
                bad += x[r * T + j] != text[idx * T + j];
                bad += y[r * T + j] != text[idx * T + j + 1];
            }
        }
    }
    CHECK_MSG(bad == 0, "%d token mismatches", bad);
    free(x);
    free(y);
}

static void test_round_trip(const char *root)
{
    char txt[4096], prefix[4096], spec[4200];
    PATHF(txt, "%s/in.txt", root);
    PATHF(prefix, "%s/out/shak", root); /* out/ is created */
    unsigned char *text = make_text(txt, TEXT_LEN);
    bg_data_shards_info_t si = {0};
    CHECK_OK(bg_data_make_shards(txt, prefix, 0.1, 7000, &si));
    CHECK(si.val_tokens == TEXT_LEN / 10 && si.train_tokens == TEXT_LEN - TEXT_LEN / 10);
    CHECK(si.train_files == 7 && si.val_files == 1); /* 45000 / 7000 -> 7 shards */

    /* Shard 0's header and first tokens, byte for byte. */
    char path[4200];
    PATHF(path, "%s_train_000000.bin", prefix);
    size_t n = 0;
    unsigned char *b = bg_test_read_file(path, &n);
    CHECK(b && n == 1024 + 2 * 7000);
    if (b) {
        int32_t h[3];
        memcpy(h, b, sizeof(h));
        CHECK(h[0] == 20240520 && h[1] == 1 && h[2] == 7000);
        CHECK(b[1024] == text[0] && b[1025] == 0 && b[1026] == text[1]);
        free(b);
    }

    PATHF(spec, "tokens:%s", prefix);
    const int64_t T = 64, B = 8;
    bg_data_t *ds = open_tokens(spec, B, T, false);
    if (ds) {
        const bg_data_info_t *in = bg_data_info(ds);
        CHECK(in->kind == BG_DATA_TOKENS && in->input_dtype == BG_I32);
        CHECK(in->train_files == 7 && in->eval_files == 1);
        CHECK(in->train_tokens == si.train_tokens && in->eval_tokens == si.val_tokens);
        CHECK(in->n_train == (si.train_tokens - 1) / T);
        CHECK(in->n_eval == (si.val_tokens - 1) / T);
        CHECK(in->steps_per_epoch == in->n_train / B);
        /* All windows of the epoch (some straddle shard boundaries at 7000k). */
        check_windows(ds, BG_SPLIT_TRAIN, text, in->steps_per_epoch);
        check_windows(ds, BG_SPLIT_EVAL, text + si.train_tokens, in->eval_steps);
        /* Sample i reads position i*T without shuffling. */
        int64_t idx;
        CHECK_OK(bg_data_sample_index(ds, BG_SPLIT_TRAIN, 3, 5, &idx));
        CHECK(idx == 3 * B + 5);
        bg_data_close(ds);
    }
    /* Shuffled: a permutation of the same windows, still matching the text. */
    ds = open_tokens(spec, B, T, true);
    if (ds) {
        check_windows(ds, BG_SPLIT_TRAIN, text, 2 * bg_data_info(ds)->steps_per_epoch);
        bg_data_close(ds);
    }
    /* The llm.c-style glob of the train shards pulls in the val sibling. */
    PATHF(spec, "tokens:%s_train_*.bin", prefix);
    ds = open_tokens(spec, B, T, false);
    if (ds) {
        CHECK(bg_data_info(ds)->train_files == 7 && bg_data_info(ds)->eval_files == 1);
        bg_data_close(ds);
    }
    /* One file: train only, no eval. */
    PATHF(spec, "tokens:%s_train_000003.bin", prefix);
    ds = open_tokens(spec, B, T, false);
    if (ds) {
        CHECK(bg_data_info(ds)->train_tokens == 7000 && bg_data_info(ds)->n_eval == 0);
        CHECK(bg_data_info(ds)->eval_files == 0);
        check_windows(ds, BG_SPLIT_TRAIN, text + 3 * 7000, bg_data_info(ds)->steps_per_epoch);
        bg_data_close(ds);
    }

    /* Vocabulary check: the text has bytes >= 100, so a vocab of 100 is refused on fetch. */
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = B, o.seq_len = T, o.vocab = 100;
    PATHF(spec, "tokens:%s", prefix);
    ds = NULL;
    CHECK_OK(bg_data_open(spec, &o, &ds));
    if (ds) {
        int32_t x[8 * 64];
        bg_status_t st = BG_OK;
        for (int64_t s = 0; s < bg_data_info(ds)->steps_per_epoch && st == BG_OK; s++)
            st = bg_data_fetch(ds, BG_SPLIT_TRAIN, s, 0, B, x, NULL);
        CHECK(st == BG_ERR_INVALID);
        CHECK(bg_test_msg_has(bg_last_error(), "vocabulary"));
        bg_data_close(ds);
    }

    /* Re-sharding with bigger shards removes the now-stale higher-numbered ones. */
    CHECK_OK(bg_data_make_shards(txt, prefix, 0.1, 0, &si));
    CHECK(si.train_files == 1 && si.val_files == 1);
    PATHF(path, "%s_train_000001.bin", prefix);
    CHECK(access(path, F_OK) != 0);
    ds = open_tokens(spec, B, T, false);
    if (ds) {
        CHECK(bg_data_info(ds)->train_files == 1);
        check_windows(ds, BG_SPLIT_TRAIN, text, bg_data_info(ds)->steps_per_epoch);
        bg_data_close(ds);
    }
    /* No validation split requested. */
    PATHF(prefix, "%s/noval", root);
    CHECK_OK(bg_data_make_shards(txt, prefix, 0.0, 0, &si));
    CHECK(si.val_tokens == 0 && si.val_files == 0 && si.train_tokens == TEXT_LEN);
    free(text);

    /* Bad arguments and too-short text. */
    CHECK(bg_data_make_shards(txt, prefix, 1.0, 0, NULL) == BG_ERR_INVALID);
    CHECK(bg_data_make_shards(txt, prefix, -0.5, 0, NULL) == BG_ERR_INVALID);
    PATHF(path, "%s/short.txt", root);
    bg_test_write_file(path, "abc", 3);
    CHECK(bg_data_make_shards(path, prefix, 0.1, 0, NULL) == BG_ERR_INVALID);
    CHECK(bg_data_make_shards("/nonexistent/in.txt", prefix, 0.1, 0, NULL) == BG_ERR_IO);
}

/* A shard file with the given header words and payload size in bytes. */
static void write_shard(const char *path, int32_t magic, int32_t version, int32_t count,
                        size_t payload)
{
    size_t n = 1024 + payload;
    unsigned char *b = calloc(1, n);
    int32_t h[3] = {magic, version, count};
    memcpy(b, h, sizeof(h));
    for (size_t i = 0; i < payload; i++) b[1024 + i] = (unsigned char)(i % 200);
    bg_test_write_file(path, b, n);
    free(b);
}

static void expect_bad_shard(const char *root, const char *name, const char *needle)
{
    char spec[4200];
    PATHF(spec, "tokens:%s/%s", root, name);
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1, o.seq_len = 4;
    bg_data_t *ds = NULL;
    bg_status_t st = bg_data_open(spec, &o, &ds);
    CHECK_MSG(st == BG_ERR_INVALID && !ds, "%s: status %d", name, st);
    CHECK_MSG(bg_test_msg_has(bg_last_error(), name), "%s", name);
    CHECK_MSG(bg_test_msg_has(bg_last_error(), needle), "%s", name);
    bg_data_close(ds);
}

static void test_bad_shards(const char *root)
{
    char path[4200];
#define SHARD(name, m, v, c, p)                                                                    \
    PATHF(path, "%s/%s", root, name);                                             \
    write_shard(path, m, v, c, p)
    SHARD("good.bin", 20240520, 1, 100, 200);
    SHARD("magic.bin", 20240521, 1, 100, 200);
    SHARD("version.bin", 20240520, 3, 100, 200);
    SHARD("truncated.bin", 20240520, 1, 100, 199);
    SHARD("trailing.bin", 20240520, 1, 100, 202);
    SHARD("negative.bin", 20240520, 1, -5, 0);
    SHARD("v2short.bin", 20240520, 2, 100, 200); /* uint32 tokens need 400 bytes */
    SHARD("v2.bin", 20240520, 2, 50, 200);
#undef SHARD
    PATHF(path, "%s/stub.bin", root);
    bg_test_write_file(path, "\x28\xd5\x34\x01", 4);

    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 2, o.seq_len = 4;
    bg_data_t *ds = NULL;
    PATHF(path, "tokens:%s/good.bin", root);
    CHECK_OK(bg_data_open(path, &o, &ds));
    if (ds) {
        CHECK(bg_data_info(ds)->n_train == (100 - 1) / 4);
        bg_data_close(ds);
    }
    PATHF(path, "tokens:%s/v2.bin", root); /* version 2: uint32 tokens */
    ds = NULL;
    CHECK_OK(bg_data_open(path, &o, &ds));
    bg_data_close(ds);

    expect_bad_shard(root, "magic.bin", "magic");
    expect_bad_shard(root, "version.bin", "version");
    expect_bad_shard(root, "truncated.bin", "truncated");
    expect_bad_shard(root, "trailing.bin", "trailing");
    expect_bad_shard(root, "negative.bin", "negative");
    expect_bad_shard(root, "v2short.bin", "truncated");
    expect_bad_shard(root, "stub.bin", "shorter than");

    /* One bad file in a glob spoils the set, naming that file. */
    PATHF(path, "tokens:%s/*.bin", root);
    ds = NULL;
    CHECK(bg_data_open(path, &o, &ds) == BG_ERR_INVALID && !ds);
    CHECK(strstr(bg_last_error(), root) != NULL);
    PATHF(path, "tokens:%s/nothing_*.bin", root);
    CHECK(bg_data_open(path, &o, &ds) == BG_ERR_IO);
    CHECK(bg_test_msg_has(bg_last_error(), "no shard files"));
    /* Not enough tokens for one window. */
    o.seq_len = 100;
    PATHF(path, "tokens:%s/good.bin", root);
    CHECK(bg_data_open(path, &o, &ds) == BG_ERR_INVALID);
    o.seq_len = 0;
    CHECK(bg_data_open(path, &o, &ds) == BG_ERR_INVALID);
}

int main(void)
{
    char *root = bg_test_tmpdir("tokens");
    test_round_trip(root);
    char bad[4200];
    PATHF(bad, "%s/bad", root);
    mkdir(bad, 0777);
    test_bad_shards(bad);
    bg_test_rmtree(root);
    free(root);
    return bg_test_finish("test_data_tokens");
}
