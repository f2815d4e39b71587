/*
 * tests/data/test_data_order.c -- the order data is read in: the seeded
 * per-epoch shuffle is a permutation, reproducible from (seed, epoch) and
 * different across epochs and seeds; resuming at step k (fresh handle,
 * jump straight there) reads exactly what sequential reading does; DP
 * replicas' and micro-batches' slices partition the global batch exactly;
 * the resumable state round-trips; synthetic data is deterministic; bad
 * fetch ranges are refused.
 */
#include "data_test_util.h"
#include "engine/data.h"
#include "test_util.h"

static bg_data_t *open_synth(const char *spec, int64_t batch, uint64_t seed, bool shuffle)
{
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = batch;
    o.seed = seed;
    o.shuffle = shuffle;
    o.seq_len = 16;
    bg_data_t *ds = NULL;
    CHECK_OK(bg_data_open(spec, &o, &ds));
    return ds;
}

/* Sample indices of one whole epoch with batch size 1. */
static int64_t *epoch_order(bg_data_t *ds, int64_t epoch)
{
    int64_t n = bg_data_info(ds)->n_train;
    int64_t *ord = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) CHECK_OK(bg_data_sample_index(ds, BG_SPLIT_TRAIN, epoch * n + i, 0, &ord[i]));
    return ord;
}

static void test_permutation(void)
{
    const int64_t sizes[] = {1, 2, 3, 7, 64, 100, 1000, 4097};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int64_t n = sizes[k];
        char spec[128];
        PATHF(spec, "synthetic:images,n=%lld,eval=1,dim=4", (long long)n);
        bg_data_t *a = open_synth(spec, 1, 42, true), *b = open_synth(spec, 1, 42, true);
        bg_data_t *c = open_synth(spec, 1, 43, true);
        if (!a || !b || !c) continue;
        int64_t *e0 = epoch_order(a, 0), *e1 = epoch_order(a, 1), *again = epoch_order(b, 0);
        int64_t *other = epoch_order(c, 0);
        char *seen = calloc((size_t)n, 1);
        int64_t dup = 0, fixed = 0, diff_epoch = 0, diff_seed = 0;
        for (int64_t i = 0; i < n; i++) {
            if (e0[i] < 0 || e0[i] >= n || seen[e0[i]]++) dup++;
            fixed += e0[i] == i;
            diff_epoch += e0[i] != e1[i];
            diff_seed += e0[i] != other[i];
            CHECK(again[i] == e0[i]);
        }
        CHECK_MSG(dup == 0, "n=%lld: not a permutation (%lld bad)", (long long)n, (long long)dup);
        if (n >= 64) {
            /* A random permutation has ~1 fixed point and differs almost everywhere. */
            CHECK_MSG(fixed < n / 8, "n=%lld: %lld fixed points", (long long)n, (long long)fixed);
            CHECK_MSG(diff_epoch > n / 2, "n=%lld: epochs too alike", (long long)n);
            CHECK_MSG(diff_seed > n / 2, "n=%lld: seeds too alike", (long long)n);
        }
        free(seen);
        free(e0), free(e1), free(again), free(other);
        bg_data_close(a), bg_data_close(b), bg_data_close(c);
    }
    /* Without shuffling the order is the file order, every epoch. */
    bg_data_t *d = open_synth("synthetic:images,n=50,dim=4", 5, 1, false);
    if (d) {
        int64_t idx;
        CHECK_OK(bg_data_sample_index(d, BG_SPLIT_TRAIN, 13, 2, &idx)); /* epoch 1, step 3 */
        CHECK(idx == 3 * 5 + 2);
        CHECK_OK(bg_data_sample_index(d, BG_SPLIT_EVAL, 2, 4, &idx));
        CHECK(idx == 2 * 5 + 4);
        bg_data_close(d);
    }
}

/* Global batch `step` of ds, inputs as bytes plus targets. */
static void fetch_all(bg_data_t *ds, int64_t step, void *x, int32_t *y)
{
    CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, step, 0, bg_data_info(ds)->batch, x, y));
}

static void test_resume(const char *spec)
{
    const int64_t B = 12;
    bg_data_t *a = open_synth(spec, B, 9, true);
    if (!a) return;
    const bg_data_info_t *in = bg_data_info(a);
    size_t xbytes = (size_t)(B * in->input_cols) * 4, ybytes = (size_t)(B * in->target_cols) * 4;
    int64_t K = 2 * in->steps_per_epoch + 3; /* crosses two epoch boundaries */
    unsigned char *xs = malloc(xbytes * (size_t)K), *ys = malloc(ybytes * (size_t)K);
    for (int64_t s = 0; s < K; s++) fetch_all(a, s, xs + xbytes * s, (int32_t *)(ys + ybytes * s));
    /* A fresh handle (a resumed process) that jumps straight to each step. */
    bg_data_t *b = open_synth(spec, B, 9, true);
    unsigned char *x = malloc(xbytes), *y = malloc(ybytes);
    int mismatch = 0;
    for (int64_t s = K - 1; b && s >= 0; s -= 5) {
        fetch_all(b, s, x, (int32_t *)y);
        mismatch += memcmp(x, xs + xbytes * s, xbytes) != 0 || memcmp(y, ys + ybytes * s, ybytes);
    }
    CHECK_MSG(mismatch == 0, "%s: %d resumed batches differ", spec, mismatch);
    /* The state a checkpoint stores allows exactly this resume; a different seed does not. */
    bg_data_state_t st = bg_data_state_at(a, K), back;
    char buf[128];
    CHECK_OK(bg_data_state_format(&st, buf, sizeof(buf)));
    CHECK_OK(bg_data_state_parse(buf, &back));
    CHECK(back.seed == 9 && back.step == K && back.epoch == 2 && back.batch == B);
    CHECK_OK(bg_data_state_check(b, &back));
    bg_data_t *c = open_synth(spec, B, 10, true);
    if (c) {
        CHECK(bg_data_state_check(c, &back) == BG_ERR_INVALID);
        CHECK(bg_test_msg_has(bg_last_error(), "seed"));
        fetch_all(c, 0, x, (int32_t *)y);
        CHECK(memcmp(x, xs, xbytes) != 0); /* another seed reads other data */
        bg_data_close(c);
    }
    c = open_synth(spec, B + 1, 9, true);
    if (c) {
        CHECK(bg_data_state_check(c, &back) == BG_ERR_INVALID);
        CHECK(bg_test_msg_has(bg_last_error(), "batch"));
        bg_data_close(c);
    }
    back.epoch = 0;
    CHECK(bg_data_state_check(b, &back) == BG_ERR_INVALID);
    CHECK(bg_data_state_parse("seed=1 epoch=0 step=3", &back) == BG_ERR_INVALID);
    CHECK(bg_data_state_parse("seed=1 epoch=0 step=3 batch=4 extra", &back) == BG_ERR_INVALID);
    CHECK(bg_data_state_format(&st, buf, 10) == BG_ERR_INVALID);
    free(xs), free(ys), free(x), free(y);
    bg_data_close(a);
    bg_data_close(b);
}

/* D replicas x M micro-batches of contiguous slices reassemble the global batch. */
static void test_sharding(const char *spec)
{
    const int64_t B = 30;
    bg_data_t *ds = open_synth(spec, B, 3, true);
    if (!ds) return;
    const bg_data_info_t *in = bg_data_info(ds);
    size_t rowx = (size_t)in->input_cols * 4, rowy = (size_t)in->target_cols * 4;
    unsigned char *full = malloc(rowx * B), *fully = malloc(rowy * B);
    unsigned char *asm_x = malloc(rowx * B), *asm_y = malloc(rowy * B);
    for (int64_t D = 1; D <= 7; D++) {
        for (int64_t M = 1; M <= 4; M++) {
            int64_t step = D * 11 + M;
            fetch_all(ds, step, full, (int32_t *)fully);
            memset(asm_x, 0xAB, rowx * B);
            memset(asm_y, 0xAB, rowy * B);
            int covered = 0;
            for (int64_t d = 0; d < D; d++) {
                int64_t r0, nr;
                CHECK_OK(bg_data_slice(B, D, d, &r0, &nr));
                for (int64_t m = 0; m < M; m++) {
                    int64_t m0, mn;
                    CHECK_OK(bg_data_slice(nr, M, m, &m0, &mn));
                    /* First stage reads inputs, last stage targets: separately. */
                    CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, step, r0 + m0, mn,
                                           asm_x + rowx * (r0 + m0), NULL));
                    CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, step, r0 + m0, mn, NULL,
                                           (int32_t *)(asm_y + rowy * (r0 + m0))));
                    covered += (int)mn;
                }
            }
            CHECK_MSG(covered == B, "D=%lld M=%lld covered %d rows", (long long)D, (long long)M,
                      covered);
            CHECK_MSG(!memcmp(full, asm_x, rowx * B) && !memcmp(fully, asm_y, rowy * B),
                      "D=%lld M=%lld: slices do not reassemble the batch", (long long)D,
                      (long long)M);
        }
    }
    int64_t r0, nr;
    CHECK_OK(bg_data_slice(10, 4, 3, &r0, &nr));
    CHECK(r0 == 8 && nr == 2); /* 3, 3, 2, 2 */
    CHECK(bg_data_slice(10, 4, 4, &r0, &nr) == BG_ERR_INVALID);
    CHECK(bg_data_slice(10, 0, 0, &r0, &nr) == BG_ERR_INVALID);
    /* Rows outside the batch are refused. */
    CHECK(bg_data_fetch(ds, BG_SPLIT_TRAIN, 0, B - 2, 3, full, NULL) == BG_ERR_INVALID);
    CHECK(bg_data_fetch(ds, BG_SPLIT_TRAIN, 0, -1, 1, full, NULL) == BG_ERR_INVALID);
    CHECK(bg_data_fetch(ds, BG_SPLIT_TRAIN, -1, 0, 1, full, NULL) == BG_ERR_INVALID);
    CHECK(bg_data_fetch(ds, BG_SPLIT_EVAL, in->eval_steps, 0, 1, full, NULL) == BG_ERR_INVALID);
    free(full), free(fully), free(asm_x), free(asm_y);
    bg_data_close(ds);
}

static void test_synthetic(void)
{
    bg_data_t *ds = open_synth("synthetic", 64, 5, true);
    if (ds) {
        const bg_data_info_t *in = bg_data_info(ds);
        CHECK(in->kind == BG_DATA_IMAGES && in->input_cols == 784 && in->classes == 10);
        CHECK(in->n_train == 8192 && in->n_eval == 1024);
        float *x = malloc(sizeof(float) * 64 * 784);
        int32_t y[64];
        int hist[10] = {0};
        int bad = 0;
        CHECK_OK(bg_data_fetch(ds, BG_SPLIT_TRAIN, 3, 0, 64, x, y));
        for (int i = 0; i < 64 * 784; i++) bad += !(x[i] >= 0 && x[i] < 1);
        for (int i = 0; i < 64; i++) {
            bad += y[i] < 0 || y[i] >= 10;
            if (y[i] >= 0 && y[i] < 10) hist[y[i]]++;
        }
        CHECK(bad == 0);
        int classes_seen = 0;
        for (int c = 0; c < 10; c++) classes_seen += hist[c] > 0;
        CHECK(classes_seen >= 6);
        free(x);
        bg_data_close(ds);
    }
    ds = open_synth("synthetic:tokens,n=5000,eval=300,vocab=50", 4, 5, true);
    if (ds) {
        const bg_data_info_t *in = bg_data_info(ds);
        CHECK(in->kind == BG_DATA_TOKENS && in->classes == 50 && in->input_cols == 16);
        CHECK(in->n_train == (5000 - 1) / 16 && in->n_eval == (300 - 1) / 16);
        int32_t x[64], y[64];
        CHECK_OK(bg_data_fetch(ds, BG_SPLIT_EVAL, 1, 0, 4, x, y));
        int bad = 0;
        for (int i = 0; i < 64; i++) bad += x[i] < 0 || x[i] >= 50;
        for (int r = 0; r < 4; r++)
            for (int j = 0; j + 1 < 16; j++) bad += y[r * 16 + j] != x[r * 16 + j + 1];
        CHECK(bad == 0);
        bg_data_close(ds);
    }
    bg_data_opts_t o;
    bg_data_opts_default(&o);
    o.batch = 1;
    bg_data_t *bad = NULL;
    CHECK(bg_data_open("synthetic:pictures", &o, &bad) == BG_ERR_INVALID);
    CHECK(bg_data_open("synthetic,n=abc", &o, &bad) == BG_ERR_INVALID);
    CHECK(bg_data_open("synthetic,colour=3", &o, &bad) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "colour"));
    CHECK(bg_data_open("synthetic:tokens", &o, &bad) == BG_ERR_INVALID); /* no seq_len */
    o.batch = 0;
    CHECK(bg_data_open("synthetic", &o, &bad) == BG_ERR_INVALID && bad == NULL);
}

int main(void)
{
    test_permutation();
    test_resume("synthetic:images,n=100,eval=10,dim=20");
    test_resume("synthetic:tokens,n=3000,eval=100,vocab=300");
    test_sharding("synthetic:images,n=400,eval=40,dim=9");
    test_sharding("synthetic:tokens,n=20000,eval=1000");
    test_synthetic();
    return bg_test_finish("test_data_order");
}
