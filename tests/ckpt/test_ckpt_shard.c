/*
 * tests/ckpt/test_ckpt_shard.c -- sharded checkpoints (ZeRO-1 saves): files
 * of pieces "<name>@<offset>" per stage and replica, published with their
 * stage and shard; whole tensors assembled from the pieces and element
 * ranges read across piece boundaries; every way pieces can fail to tile
 * their tensor (gap, overlap, past the end, disagreeing or missing shape,
 * wrong dtype, a name both whole and in pieces, a missing piece) refused by
 * bg_ckpt_open naming the file and tensor; sharded manifests validated.
 * Must NOT depend on the training engine: files are written by hand here.
 */
#include "data/data_test_util.h"
#include "engine/checkpoint.h"
#include "test_util.h"

/* Stage 0 holds "w" [3, 5] and its .adam_m; stage 1 holds "v" [4]. Replica
 * 0 has w's elements [0, 7) and v's [0, 2), replica 1 the rest. */
static const int64_t wshape[2] = {3, 5}, vshape[1] = {4};
static float wval[16], mval[16], vval[4];

typedef enum { OK, GAP, OVERLAP, PAST, SHAPE, NOSHAPE, BADSHAPE, F64, BOTH, MISSING } bad_t;

/* Piece [off, off + n) of `name` (values x) with its whole shape recorded. */
static void add_piece(bg_st_writer_t *w, const char *name, const char *shape, int64_t off,
                      int64_t n, const float *x, bad_t bad)
{
    char key[128];
    snprintf(key, sizeof(key), "%s@shape", name);
    if (bad != NOSHAPE)
        CHECK_OK(bg_st_writer_meta(w, key, shape));
    snprintf(key, sizeof(key), "%s@%lld", name, (long long)off);
    static double d[16];
    CHECK_OK(bg_st_writer_add(w, key, bad == F64 ? BG_ST_F64 : BG_ST_F32, 1, &n,
                              bad == F64 ? (const void *)d : (const void *)x));
}

/* Stage s, replica k's file; `bad` damages replica 1 of stage 0. */
static void write_shard(const char *sp, int s, int k, bad_t bad)
{
    char *path = NULL;
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_ckpt_shard_path(sp, s, k, &path));
    CHECK_OK(bg_st_writer_new(&w));
    if (!w || !path)
        return;
    bad_t b = s == 0 && k == 1 ? bad : OK;
    int64_t two = 2;
    static float scale[2] = {1024, 3};
    if (s == 0 && k == 0) {
        add_piece(w, "w", "[3,5]", 0, 7, wval, OK);
        add_piece(w, "w.adam_m", "[3,5]", 0, 7, mval, OK);
        CHECK_OK(bg_st_writer_add(w, BG_CKPT_LOSS_SCALE, BG_ST_F32, 1, &two, scale));
    } else if (s == 0) {
        int64_t off = b == GAP ? 8 : b == OVERLAP ? 6 : 7, n = b == PAST ? 9 : 8;
        const char *shape = b == SHAPE ? "[5,3]" : b == BADSHAPE ? "[3,x]" : "[3,5]";
        if (b != MISSING)
            add_piece(w, "w", shape, off, off + n > 15 && b != PAST ? 15 - off : n, wval + off, b);
        add_piece(w, "w.adam_m", "[3,5]", 7, 8, mval + 7, OK);
    } else {
        add_piece(w, "v", "[4]", 2 * k, 2, vval + 2 * k, OK);
        if (bad == BOTH && k == 0)
            CHECK_OK(bg_st_writer_add(w, "w", BG_ST_F32, 2, wshape, wval));
    }
    char v[16];
    snprintf(v, sizeof(v), "%d/2", k);
    CHECK_OK(bg_st_writer_meta(w, BG_CKPT_SHARD_KEY, v));
    CHECK_OK(bg_st_writer_meta(w, "step", "7"));
    CHECK_OK(bg_st_writer_write(w, path));
    bg_st_writer_free(w);
    free(path);
}

/* DIR's step 7, 2 stages x 2 replicas, published; its step path (malloc'd). */
static char *write_ckpt(const char *dir, bad_t bad)
{
    char *sp = NULL;
    CHECK_OK(bg_ckpt_begin(dir, 7, &sp));
    for (int s = 0; sp && s < 2; s++)
        for (int k = 0; k < 2; k++)
            write_shard(sp, s, k, bad);
    CHECK_OK(bg_ckpt_publish_sharded(dir, 7, 2, 2, "1f1b", "tiny"));
    return sp;
}

static void check_good(const char *dir)
{
    char *sp = write_ckpt(dir, OK);
    bg_ckpt_t *c = NULL;
    CHECK_OK(bg_ckpt_open(sp, &c));
    if (!c) {
        free(sp);
        return;
    }
    const bg_ckpt_manifest_t *m = bg_ckpt_manifest(c);
    CHECK(m->shards == 2 && m->nfiles == 4 && m->dp == 2 && m->stages == 2);
    CHECK(!strcmp(m->files[3].name, "stage-1.dp-1.safetensors") && m->files[3].stage == 1 &&
          m->files[3].shard == 1 && m->files[2].shard == 0);
    float x[16] = {0};
    CHECK_OK(bg_ckpt_read_f32(c, "w", 2, wshape, 15, x));
    CHECK(!memcmp(x, wval, 15 * sizeof(float)));
    CHECK_OK(bg_ckpt_read_f32(c, "w.adam_m", 0, NULL, 15, x));
    CHECK(!memcmp(x, mval, 15 * sizeof(float)));
    CHECK_OK(bg_ckpt_read_f32(c, "v", 1, vshape, 4, x));
    CHECK(!memcmp(x, vval, sizeof(vval)));
    /* ranges across the pieces' boundary, inside one piece, and of a whole tensor */
    CHECK_OK(bg_ckpt_read_f32_range(c, "w", 2, wshape, 15, 5, 4, x));
    CHECK(!memcmp(x, wval + 5, 4 * sizeof(float)));
    CHECK_OK(bg_ckpt_read_f32_range(c, "w", 2, wshape, 15, 8, 7, x));
    CHECK(!memcmp(x, wval + 8, 7 * sizeof(float)));
    CHECK_OK(bg_ckpt_read_f32_range(c, BG_CKPT_LOSS_SCALE, 0, NULL, 2, 1, 1, x));
    CHECK(x[0] == 3);
    CHECK(bg_ckpt_read_f32_range(c, "w", 2, wshape, 15, 10, 6, x) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "outside"));
    CHECK(bg_ckpt_read_f32(c, "w", 1, vshape, 4, x) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "tensor 'w' has shape [3, 5], expected [4]"));
    bg_ckpt_tensor_info_t t;
    CHECK(bg_ckpt_tensor_count(c) == 4);
    CHECK(bg_ckpt_tensor_info(c, "w", &t) && t.pieces == 2 && t.numel == 15 && t.ndim == 2);
    CHECK(bg_ckpt_tensor_info(c, BG_CKPT_LOSS_SCALE, &t) && t.pieces == 0);
    CHECK(!bg_ckpt_tensor_info(c, "w@0", NULL) && bg_ckpt_find(c, "w", NULL) == NULL);
    bg_ckpt_close(c);
    free(sp);
}

static void expect_refused(const char *dir, bad_t bad, const char *needle)
{
    char *sp = write_ckpt(dir, bad);
    bg_ckpt_t *c = NULL;
    bg_status_t st = sp ? bg_ckpt_open(sp, &c) : BG_OK;
    CHECK_MSG(st == BG_ERR_INVALID && !c, "case %d: status %d", (int)bad, st);
    CHECK_MSG(bg_test_msg_has(bg_last_error(), needle), "case %d: '%s' not in: %s", (int)bad,
              needle, bg_last_error());
    bg_ckpt_close(c);
    free(sp);
}

/* Sharded manifests: shards must be 1 or dp, files listed stage by stage,
 * replica by replica, each with its stage and shard. */
static void check_manifests(void)
{
    static const char *bad[] = {
        "{\"format\":\"brigade-checkpoint-1\",\"step\":1,\"stages\":1,\"dp\":2,\"shards\":3,"
        "\"schedule\":\"1f1b\",\"model\":\"m\",\"files\":[{\"name\":\"a\",\"bytes\":8,"
        "\"crc32\":0,\"stage\":0,\"shard\":0}]}",
        "{\"format\":\"brigade-checkpoint-1\",\"step\":1,\"stages\":1,\"dp\":2,\"shards\":2,"
        "\"schedule\":\"1f1b\",\"model\":\"m\",\"files\":[{\"name\":\"a\",\"bytes\":8,"
        "\"crc32\":0,\"stage\":0,\"shard\":0}]}",
        "{\"format\":\"brigade-checkpoint-1\",\"step\":1,\"stages\":1,\"dp\":2,\"shards\":2,"
        "\"schedule\":\"1f1b\",\"model\":\"m\",\"files\":[{\"name\":\"a\",\"bytes\":8,"
        "\"crc32\":0,\"stage\":0,\"shard\":1},{\"name\":\"b\",\"bytes\":8,\"crc32\":0,"
        "\"stage\":0,\"shard\":0}]}",
    };
    static const char *needle[] = {"\"shards\" must be 1 or dp", "2 shards",
                                   "must say \"stage\": 0, \"shard\": 0"};
    for (int i = 0; i < 3; i++) {
        bg_ckpt_manifest_t m;
        CHECK_MSG(bg_ckpt_manifest_parse(bad[i], strlen(bad[i]), "m", &m) == BG_ERR_INVALID,
                  "manifest %d accepted", i);
        CHECK_MSG(bg_test_msg_has(bg_last_error(), needle[i]), "manifest %d: %s", i,
                  bg_last_error());
    }
}

int main(void)
{
    for (int i = 0; i < 15; i++)
        wval[i] = 0.5f * (float)i - 3, mval[i] = 1e-3f * (float)(i * i);
    for (int i = 0; i < 4; i++)
        vval[i] = -(float)i;
    char *root = bg_test_tmpdir("ckpt_shard");
    char dir[4200];
    PATHF(dir, "%s/run", root);
    check_good(dir);
    expect_refused(dir, GAP,
                   "stage-0.dp-1.safetensors: tensor 'w': piece at element 8 leaves a gap");
    expect_refused(dir, OVERLAP, "tensor 'w': piece at element 6 overlaps another piece");
    expect_refused(dir, PAST, "tensor 'w': piece at element 7 of 9 elements runs past");
    expect_refused(dir, SHAPE, "records another whole shape");
    expect_refused(dir, NOSHAPE, "tensor 'w': its whole shape (metadata 'w@shape') is missing");
    expect_refused(dir, BADSHAPE, "is malformed");
    expect_refused(dir, F64, "piece 'w@7' of tensor 'w' must be 1-D F32");
    expect_refused(dir, BOTH, "tensor 'w' is both whole in one file and in pieces");
    expect_refused(dir, MISSING, "tensor 'w': its pieces cover 7 of its 15 elements");
    check_manifests();
    bg_test_rmtree(root);
    free(root);
    return bg_test_finish("test_ckpt_shard");
}
