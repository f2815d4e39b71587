/*
 * tests/ckpt/test_ckpt_dir.c -- checkpoint directories: "no checkpoint"
 * versus corrupt, a 2-stage checkpoint with optimizer state and metadata
 * read back by global names, a later 3-stage checkpoint of the same names
 * (another layout), `latest` advancing only after every stage file is
 * complete, stale temporaries, and partial or damaged checkpoints (missing,
 * truncated or altered files, bad manifest, bad marker) refused clearly.
 */
#include "data/data_test_util.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_fs.h"
#include "test_util.h"

#define NPARAM 6
static const char *pnames[NPARAM] = {"embed.weight", "block.0.fc.weight", "block.0.fc.bias",
                                     "block.1.fc.weight", "block.1.fc.bias", "head.weight"};
static const int64_t pshape[NPARAM][2] = {{5, 4}, {4, 4}, {4, 1}, {4, 4}, {4, 1}, {4, 5}};

/* Deterministic value of element i of parameter p at `step`. */
static float pval(int p, int64_t i, int64_t step, float salt)
{
    return (float)(p * 100 + i) * 0.01f + (float)step + salt;
}

/* Write stage `s` of `stages` (params split contiguously) with adam states. */
static void write_stage(const char *step_path, int s, int stages, int64_t step)
{
    char *path = NULL;
    CHECK_OK(bg_ckpt_stage_path(step_path, s, &path));
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    if (!w || !path) return;
    static float bufs[NPARAM][3][32];
    int lo = s * NPARAM / stages, hi = (s + 1) * NPARAM / stages;
    char name[128];
    for (int p = lo; p < hi; p++) {
        int64_t n = pshape[p][0] * pshape[p][1];
        for (int k = 0; k < 3; k++)
            for (int64_t i = 0; i < n; i++) bufs[p][k][i] = pval(p, i, step, (float)k * 1000);
        CHECK_OK(bg_st_writer_add(w, pnames[p], BG_ST_F32, 2, pshape[p], bufs[p][0]));
        snprintf(name, sizeof(name), "%s%s", pnames[p], BG_CKPT_ADAM_M);
        CHECK_OK(bg_st_writer_add(w, name, BG_ST_F32, 2, pshape[p], bufs[p][1]));
        snprintf(name, sizeof(name), "%s%s", pnames[p], BG_CKPT_ADAM_V);
        CHECK_OK(bg_st_writer_add(w, name, BG_ST_F32, 2, pshape[p], bufs[p][2]));
    }
    snprintf(name, sizeof(name), "%lld", (long long)step);
    CHECK_OK(bg_st_writer_meta(w, "step", name));
    CHECK_OK(bg_st_writer_meta(w, "data_state", "seed=1 epoch=0 step=10 batch=4"));
    CHECK_OK(bg_st_writer_write(w, path));
    bg_st_writer_free(w);
    free(path);
}

static void write_ckpt(const char *dir, int64_t step, int stages, bool publish)
{
    char *sp = NULL;
    CHECK_OK(bg_ckpt_begin(dir, step, &sp));
    if (!sp) return;
    for (int s = 0; s < stages; s++) write_stage(sp, s, stages, step);
    if (publish) CHECK_OK(bg_ckpt_publish(dir, step, stages, 2, "1f1b", "tiny"));
    free(sp);
}

/* Every parameter and state readable by name with the values of `step`. */
static void check_ckpt(const char *step_path, int64_t step, int stages)
{
    bg_ckpt_t *c = NULL;
    CHECK_OK(bg_ckpt_open(step_path, &c));
    if (!c) return;
    const bg_ckpt_manifest_t *m = bg_ckpt_manifest(c);
    CHECK(m->step == step && m->stages == stages && m->dp == 2 && m->nfiles == stages);
    CHECK(!strcmp(m->schedule, "1f1b") && !strcmp(m->model, "tiny"));
    CHECK(bg_ckpt_file_count(c) == stages);
    float buf[32];
    char name[128];
    int bad = 0;
    for (int p = 0; p < NPARAM; p++) {
        int64_t n = pshape[p][0] * pshape[p][1];
        const char *suffix[3] = {"", BG_CKPT_ADAM_M, BG_CKPT_ADAM_V};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "%s%s", pnames[p], suffix[k]);
            CHECK_OK(bg_ckpt_read_f32(c, name, 2, pshape[p], n, buf));
            for (int64_t i = 0; i < n; i++) bad += buf[i] != pval(p, i, step, (float)k * 1000);
        }
    }
    CHECK_MSG(bad == 0, "%d values differ", bad);
    CHECK(bg_ckpt_find(c, "nope", NULL) == NULL);
    CHECK(bg_ckpt_read_f32(c, "nope", 0, NULL, 1, buf) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "nope"));
    CHECK(bg_ckpt_meta(c, "data_state") && !strcmp(bg_ckpt_meta(c, "data_state"),
                                                   "seed=1 epoch=0 step=10 batch=4"));
    bg_ckpt_close(c);
}

/* The step directory `latest` names, "" if none; fails the test on error. */
static char *latest(const char *dir)
{
    char *sp = NULL;
    bg_status_t st = bg_ckpt_dir_latest(dir, &sp);
    CHECK_MSG(st == BG_OK, "latest: %s", bg_last_error());
    return sp ? sp : strdup("");
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static void expect_open_refused(const char *step_path, const char *needle, const char *what)
{
    bg_ckpt_t *c = NULL;
    bg_status_t st = bg_ckpt_open(step_path, &c);
    CHECK_MSG(st == BG_ERR_INVALID && c == NULL, "%s: status %d", what, st);
    if (needle) CHECK_MSG(bg_test_msg_has(bg_last_error(), needle), "%s", what);
    bg_ckpt_close(c);
}

int main(void)
{
    char *root = bg_test_tmpdir("ckpt");
    char dir[4200], path[4400], path2[4400];
    PATHF(dir, "%s/run", root);

    /* No directory, then an empty one: "no checkpoint", not an error. */
    char *sp = NULL;
    CHECK_OK(bg_ckpt_dir_latest(dir, &sp));
    CHECK(sp == NULL);
    mkdir(dir, 0777);
    CHECK_OK(bg_ckpt_dir_latest(dir, &sp));
    CHECK(sp == NULL);

    /* Step 10 with 2 stages. */
    write_ckpt(dir, 10, 2, true);
    char *l = latest(dir);
    CHECK_MSG(ends_with(l, "/step-000010"), "latest = %s", l);
    check_ckpt(l, 10, 2);
    free(l);

    /* Step 20 written by another layout (3 stages): same names, found anywhere. */
    write_ckpt(dir, 20, 3, true);
    l = latest(dir);
    CHECK(ends_with(l, "/step-000020"));
    check_ckpt(l, 20, 3);

    /* Rewriting the published step (a second run into the same directory): while it is
       being rewritten `latest` names the previous complete step, then the new one. */
    char *again = NULL;
    CHECK_OK(bg_ckpt_begin(dir, 20, &again));
    char *during = latest(dir);
    CHECK_MSG(ends_with(during, "/step-000010"), "latest during rewrite = %s", during);
    check_ckpt(during, 10, 2);
    free(during);
    if (again) {
        for (int s = 0; s < 3; s++) write_stage(again, s, 3, 20);
        CHECK_OK(bg_ckpt_publish(dir, 20, 3, 2, "1f1b", "tiny"));
        free(again);
    }
    during = latest(dir);
    CHECK(!strcmp(during, l));
    check_ckpt(l, 20, 3);
    free(during);
    /* With no other step to fall back on, `latest` is removed meanwhile: "no checkpoint". */
    char solo[4300];
    PATHF(solo, "%s/solo", root);
    write_ckpt(solo, 5, 1, true);
    CHECK_OK(bg_ckpt_begin(solo, 5, &again));
    CHECK_OK(bg_ckpt_dir_latest(solo, &sp));
    CHECK(sp == NULL);
    free(again);

    /* A run dies while writing step 30: stage 1 of 2 never completes (only a stale .tmp). */
    write_ckpt(dir, 30, 1, false); /* stage 0 only */
    PATHF(path, "%s/step-000030/stage-1.safetensors.tmp.4242", dir);
    bg_test_write_file(path, "partial", 7);
    CHECK(bg_ckpt_publish(dir, 30, 2, 2, "1f1b", "tiny") != BG_OK);
    CHECK(bg_test_msg_has(bg_last_error(), "stage-1.safetensors"));
    char *l2 = latest(dir);
    CHECK_MSG(!strcmp(l, l2), "latest moved to %s", l2); /* still step 20 */
    free(l2);
    check_ckpt(l, 20, 3);
    /* Its unpublished directory has no manifest: opening it directly is refused. */
    PATHF(path, "%s/step-000030", dir);
    expect_open_refused(path, "manifest.json", "unpublished step");
    /* Stage 1 is written after all, and the stale temporary is ignored. */
    write_stage(path, 1, 2, 30);
    CHECK_OK(bg_ckpt_publish(dir, 30, 2, 2, "1f1b", "tiny"));
    free(l);
    l = latest(dir);
    CHECK(ends_with(l, "/step-000030"));
    /* stage 0 was written as 1-of-1 (all params), stage 1 as 2-of-2: duplicates resolve to file 0 */
    check_ckpt(l, 30, 2);
    free(l);

    /* Damage a published checkpoint in every way; each is refused by name. */
    PATHF(path, "%s/step-000030/stage-1.safetensors", dir);
    PATHF(path2, "%s/step-000030", dir);
    size_t n = 0;
    unsigned char *orig = bg_test_read_file(path, &n);
    CHECK(orig != NULL);
    if (orig) {
        bg_test_write_file(path, orig, n - 1);
        expect_open_refused(path2, "truncated", "truncated stage");
        unsigned char *flip = malloc(n);
        memcpy(flip, orig, n);
        flip[n - 3] ^= 0x40; /* inside tensor data: only the CRC notices */
        bg_test_write_file(path, flip, n);
        expect_open_refused(path2, "CRC", "flipped data byte");
        free(flip);
        unlink(path);
        expect_open_refused(path2, "missing", "deleted stage");
        /* `latest` still names it: dir_latest succeeds, opening refuses (partial). */
        l = latest(dir);
        CHECK(ends_with(l, "/step-000030"));
        free(l);
        bg_test_write_file(path, orig, n);
        check_ckpt(path2, 30, 2); /* restored: loads again */
        free(orig);
    }
    /* Manifests that lie or are broken. */
    PATHF(path, "%s/step-000030/manifest.json", dir);
    unsigned char *man = bg_test_read_file(path, &n);
    if (man) {
        bg_test_write_file(path, "{\"format\": \"brigade-checkpoint-1\", \"step\": ", 43);
        expect_open_refused(path2, "manifest.json", "cut manifest");
        const char *evil = "{\"format\":\"brigade-checkpoint-1\",\"step\":30,\"stages\":1,\"dp\":1,"
                           "\"schedule\":\"1f1b\",\"model\":\"m\",\"files\":[{\"name\":\"../x\","
                           "\"bytes\":10,\"crc32\":0}]}";
        bg_test_write_file(path, evil, strlen(evil));
        expect_open_refused(path2, "files[0]", "path escape");
        const char *other = "{\"format\":\"something-else\"}";
        bg_test_write_file(path, other, strlen(other));
        expect_open_refused(path2, "format", "foreign format");
        unlink(path);
        /* Now `latest` names a directory without a manifest: corrupt, not "none". */
        CHECK(bg_ckpt_dir_latest(dir, &sp) == BG_ERR_INVALID && sp == NULL);
        CHECK(bg_test_msg_has(bg_last_error(), "manifest"));
        bg_test_write_file(path, man, n);
        free(man);
    }
    /* A corrupt marker is an error, distinct from no checkpoint. */
    PATHF(path, "%s/latest", dir);
    bg_test_write_file(path, "step-00x030\n", 12);
    CHECK(bg_ckpt_dir_latest(dir, &sp) == BG_ERR_INVALID && sp == NULL);
    CHECK(bg_test_msg_has(bg_last_error(), "corrupt marker"));
    bg_test_write_file(path, "", 0);
    CHECK(bg_ckpt_dir_latest(dir, &sp) == BG_ERR_INVALID);
    /* Marker rewritten through the atomic helper (as publish does): valid again. */
    CHECK_OK(bg_write_file_atomic(path, "step-000020\n", 12));
    l = latest(dir);
    CHECK(ends_with(l, "/step-000020"));
    free(l);
    /* Path helpers. */
    CHECK(bg_ckpt_step_path(dir, -1, &sp) == BG_ERR_INVALID);
    CHECK_OK(bg_ckpt_step_path("d", 1234567, &sp));
    if (sp) CHECK(!strcmp(sp, "d/step-1234567"));
    free(sp);
    CHECK(bg_ckpt_publish(dir, 40, 0, 1, "1f1b", "m") == BG_ERR_INVALID);

    bg_test_rmtree(root);
    free(root);
    return bg_test_finish("test_ckpt_dir");
}
