/*
 * tests/ckpt/test_safetensors.c -- the safetensors writer and reader:
 * round trip of every dtype (shapes incl. scalars and empty tensors,
 * metadata, alignment and gap-free layout), F16/BF16/F64 -> f32, a file
 * whose bytes this test writes by hand, a file written by a pure-Python
 * script (when python3 exists), and corrupt files -- truncated at every
 * offset, impossible header lengths, bad JSON, bad dtypes, shapes,
 * offsets, overlaps, duplicates, random header mutations -- each refused
 * with a message naming the file (and tensor), never a crash.
 */
#include <stdint.h>
#include <sys/wait.h>

#include "data/data_test_util.h"
#include "engine/checkpoint.h"
#include "layers/tensor.h"
#include "test_util.h"

static char g_root[4096];

/* 8-byte little-endian `hlen`, then `hdr` (its strlen bytes), then `data`. */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, const void *data, size_t dlen)
{
    size_t h = strlen(hdr);
    unsigned char *b = malloc(8 + h + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, hdr, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    bg_test_write_file(path, b, 8 + h + dlen);
    free(b);
}

static void write_st(const char *path, const char *hdr, const void *data, size_t dlen)
{
    write_raw(path, strlen(hdr), hdr, data, dlen);
}

static void test_round_trip(void)
{
    char path[4200];
    PATHF(path, "%s/all.safetensors", g_root);
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    if (!w) return;
    uint64_t seed = 99;
    unsigned char *bufs[BG_ST_DTYPE_COUNT];
    int64_t shapes[BG_ST_DTYPE_COUNT][3];
    int ndims[BG_ST_DTYPE_COUNT];
    char name[64];
    /* One tensor per dtype, in an order that mixes element sizes. */
    for (int d = BG_ST_DTYPE_COUNT - 1; d >= 0; d--) {
        ndims[d] = d % 4; /* 0 (scalar) .. 3 dims */
        int64_t numel = 1;
        for (int k = 0; k < ndims[d]; k++) numel *= shapes[d][k] = 1 + (d + 2 * k) % 5;
        size_t nb = (size_t)numel * bg_st_dtype_size((bg_st_dtype_t)d);
        bufs[d] = malloc(nb);
        for (size_t i = 0; i < nb; i++) bufs[d][i] = (unsigned char)bg_test_next(&seed);
        snprintf(name, sizeof(name), "t.%s", bg_st_dtype_name((bg_st_dtype_t)d));
        CHECK_OK(bg_st_writer_add(w, name, (bg_st_dtype_t)d, ndims[d], shapes[d], bufs[d]));
    }
    int64_t zero_shape[2] = {3, 0};
    CHECK_OK(bg_st_writer_add(w, "empty", BG_ST_F32, 2, zero_shape, NULL));
    CHECK_OK(bg_st_writer_add(w, "we\"ird\\name\n\x01", BG_ST_U8, 1, (int64_t[]){2}, "ab"));
    CHECK_OK(bg_st_writer_meta(w, "step", "12"));
    CHECK_OK(bg_st_writer_meta(w, "note", "quote\" backslash\\ newline\n tab\t"));
    CHECK_OK(bg_st_writer_meta(w, "step", "13")); /* replaces */
    /* Writer refusals. */
    CHECK(bg_st_writer_add(w, "empty", BG_ST_F32, 2, zero_shape, NULL) == BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "__metadata__", BG_ST_U8, 0, NULL, "x") == BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "", BG_ST_U8, 0, NULL, "x") == BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "neg", BG_ST_U8, 1, (int64_t[]){-1}, "x") == BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "nodata", BG_ST_U8, 1, (int64_t[]){4}, NULL) == BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "rank9", BG_ST_U8, 9, (int64_t[9]){1, 1, 1, 1, 1, 1, 1, 1, 1}, "x") ==
          BG_ERR_INVALID);
    CHECK(bg_st_writer_add(w, "dt", (bg_st_dtype_t)99, 0, NULL, "x") == BG_ERR_INVALID);
    CHECK_OK(bg_st_writer_write(w, path));
    bg_st_writer_free(w);

    bg_st_file_t *f = NULL;
    CHECK_OK(bg_st_open(path, &f));
    if (!f) return;
    CHECK(bg_st_count(f) == BG_ST_DTYPE_COUNT + 2);
    CHECK(!strcmp(bg_st_meta(f, "step"), "13"));
    CHECK(!strcmp(bg_st_meta(f, "note"), "quote\" backslash\\ newline\n tab\t"));
    CHECK(bg_st_meta(f, "missing") == NULL && bg_st_meta_count(f) == 2);
    for (int d = 0; d < BG_ST_DTYPE_COUNT; d++) {
        snprintf(name, sizeof(name), "t.%s", bg_st_dtype_name((bg_st_dtype_t)d));
        const bg_st_tensor_t *t = bg_st_find(f, name);
        CHECK_MSG(t != NULL, "%s missing", name);
        if (!t) continue;
        CHECK(t->dtype == (bg_st_dtype_t)d && t->ndim == ndims[d]);
        for (int k = 0; k < ndims[d]; k++) CHECK(t->shape[k] == shapes[d][k]);
        CHECK_MSG(!memcmp(t->data, bufs[d], t->nbytes), "%s bytes differ", name);
        /* Largest dtype first with an 8-aligned header: every tensor naturally aligned. */
        CHECK_MSG(t->offset % bg_st_dtype_size(t->dtype) == 0, "%s misaligned", name);
        free(bufs[d]);
    }
    const bg_st_tensor_t *e = bg_st_find(f, "empty");
    CHECK(e && e->numel == 0 && e->nbytes == 0 && e->ndim == 2);
    const bg_st_tensor_t *wn = bg_st_find(f, "we\"ird\\name\n\x01");
    CHECK(wn && !memcmp(wn->data, "ab", 2));
    /* Gap-free: the spans tile the data buffer exactly (what strict readers demand). */
    size_t flen = 0;
    unsigned char *raw = bg_test_read_file(path, &flen);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)raw[i] << (8 * i);
    CHECK(hlen % 8 == 0);
    uint64_t total = 0;
    for (size_t i = 0; i < bg_st_count(f); i++) total += bg_st_tensor_at(f, i)->nbytes;
    CHECK(8 + hlen + total == flen);
    free(raw);
    bg_st_close(f);
}

static void test_convert(void)
{
    char path[4200];
    PATHF(path, "%s/conv.safetensors", g_root);
    /* Half: 1, -2, 65504, smallest subnormal, +inf, 0.5; bf16 of the same; f64. */
    const uint16_t h16[6] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3800};
    const float h16_f[6] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f, INFINITY, 0.5f};
    uint16_t b16[6];
    for (int i = 0; i < 6; i++) b16[i] = bg_f32_to_bf16(h16_f[i]);
    const double f64[6] = {1.5, -0.25, 1e30, 3.0, -7.0, 0.1};
    const int32_t i32[6] = {1, 2, 3, 4, 5, 6};
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    if (!w) return;
    int64_t shape[2] = {2, 3};
    CHECK_OK(bg_st_writer_add(w, "h", BG_ST_F16, 2, shape, h16));
    CHECK_OK(bg_st_writer_add(w, "b", BG_ST_BF16, 2, shape, b16));
    CHECK_OK(bg_st_writer_add(w, "d", BG_ST_F64, 2, shape, f64));
    CHECK_OK(bg_st_writer_add(w, "i", BG_ST_I32, 2, shape, i32));
    CHECK_OK(bg_st_writer_write(w, path));
    bg_st_writer_free(w);
    bg_st_file_t *f = NULL;
    CHECK_OK(bg_st_open(path, &f));
    if (!f) return;
    float out[6];
    CHECK_OK(bg_st_read_f32(f, "h", 2, shape, 6, out));
    for (int i = 0; i < 6; i++) CHECK_MSG(out[i] == h16_f[i], "f16[%d] = %g", i, out[i]);
    CHECK_OK(bg_st_read_f32(f, "b", 2, shape, 6, out));
    for (int i = 0; i < 6; i++) CHECK(out[i] == bg_bf16_to_f32(b16[i]));
    CHECK(out[0] == 1.0f && out[1] == -2.0f);
    CHECK_OK(bg_st_read_f32(f, "d", 0, NULL, 6, out)); /* element count only */
    for (int i = 0; i < 6; i++) CHECK(out[i] == (float)f64[i]);
    int64_t wrong[2] = {3, 2};
    CHECK(bg_st_read_f32(f, "d", 2, wrong, 6, out) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "[2, 3]") && bg_test_msg_has(bg_last_error(), "[3, 2]"));
    CHECK(bg_st_read_f32(f, "d", 0, NULL, 5, out) == BG_ERR_INVALID);
    CHECK(bg_st_read_f32(f, "i", 2, shape, 6, out) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "I32"));
    CHECK(bg_st_read_f32(f, "nope", 2, shape, 6, out) == BG_ERR_INVALID);
    CHECK(bg_test_msg_has(bg_last_error(), "nope") && bg_test_msg_has(bg_last_error(), path));
    int32_t iback[6];
    CHECK_OK(bg_st_read_raw(f, "i", BG_ST_I32, iback, sizeof(iback)));
    CHECK(!memcmp(iback, i32, sizeof(i32)));
    CHECK(bg_st_read_raw(f, "i", BG_ST_F32, iback, sizeof(iback)) == BG_ERR_INVALID);
    bg_st_close(f);
    /* Subnormal and negative-zero halves. */
    CHECK(bg_f16_to_f32(0x8000) == 0.0f && signbit(bg_f16_to_f32(0x8000)));
    CHECK(bg_f16_to_f32(0x03FF) == 6.097555160522461e-5f);
    CHECK(isnan(bg_f16_to_f32(0x7E00)));
}

/* Bytes written by hand: unpadded header (data unaligned), reversed offsets, a gap. */
static void test_hand_built(void)
{
    char path[4200];
    PATHF(path, "%s/hand.safetensors", g_root);
    const char *hdr = "{\"b\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [12, 20]},"
                      " \"a\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
                      "\"__metadata__\":{\"format\":\"pt\"}}  \n";
    unsigned char data[20];
    float a[2] = {3.25f, -1.0f};
    int64_t b = -1234567890123LL;
    memcpy(data, a, 8);
    memset(data + 8, 0xEE, 4); /* a gap nobody owns */
    memcpy(data + 12, &b, 8);
    write_st(path, hdr, data, sizeof(data));
    bg_st_file_t *f = NULL;
    CHECK_OK(bg_st_open(path, &f));
    if (!f) return;
    CHECK(bg_st_count(f) == 2);
    CHECK(!strcmp(bg_st_tensor_at(f, 0)->name, "b")); /* header order */
    CHECK(!strcmp(bg_st_meta(f, "format"), "pt"));
    float out[2];
    CHECK_OK(bg_st_read_f32(f, "a", 2, (int64_t[]){1, 2}, 2, out));
    CHECK(out[0] == 3.25f && out[1] == -1.0f);
    int64_t bb = 0;
    CHECK_OK(bg_st_read_raw(f, "b", BG_ST_I64, &bb, 8));
    CHECK(bb == b);
    const bg_st_tensor_t *t = bg_st_find(f, "b");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    bg_st_close(f);
    /* An empty header object is a valid, empty file. */
    PATHF(path, "%s/emptyhdr.safetensors", g_root);
    write_st(path, "{}      ", NULL, 0);
    CHECK_OK(bg_st_open(path, &f));
    if (f) CHECK(bg_st_count(f) == 0);
    bg_st_close(f);
}

/* Expect `path` to be refused with BG_ERR_INVALID naming the file and `needle`. */
static void expect_refused(const char *path, const char *needle, const char *what)
{
    bg_st_file_t *f = NULL;
    bg_status_t st = bg_st_open(path, &f);
    CHECK_MSG(st == BG_ERR_INVALID && f == NULL, "%s: status %d", what, st);
    CHECK_MSG(bg_test_msg_has(bg_last_error(), path), "%s", what);
    if (needle) CHECK_MSG(bg_test_msg_has(bg_last_error(), needle), "%s", what);
    bg_st_close(f);
}

static void test_bad_headers(void)
{
    char path[4200];
    PATHF(path, "%s/bad.safetensors", g_root);
    unsigned char data[64] = {0};
    static const struct {
        const char *hdr, *needle, *what;
    } cases[] = {
        {"{\"a\":", "JSON", "unterminated JSON"},
        {"[1, 2]", "object", "array root"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", "after", "trailing"},
        {"{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", "'a'", "bad dtype"},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype", "lowercase dtype"},
        {"{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype", "numeric dtype"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype", "no dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", "shape", "no shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "shape", "negative dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,6]}}", "shape", "fractional dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", "shape", "string dim"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
         "dimensions", "rank 9"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
         "\"data_offsets\":[0,8]}}",
         "'a'", "shape overflow"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", "shape", "huge dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}}", "span", "wrong size"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[20],\"data_offsets\":[0,80]}}", "outside", "past end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}", "outside", "past end 2"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", "outside", "begin > end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", "data_offsets", "1 offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", "data_offsets",
         "3 offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", "data_offsets",
         "negative offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0,8\"}}", "data_offsets",
         "string offsets"},
        {"{\"a\":[1]}", "'a'", "entry not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         "overlap", "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         "'a' appears twice", "duplicate"},
        {"{\"__metadata__\":{\"k\":1}}", "'k'", "numeric metadata"},
        {"{\"__metadata__\":[\"k\"]}", "__metadata__", "metadata array"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", "twice", "two metadata"},
        {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", "'k'", "duplicate metadata key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_st(path, cases[i].hdr, data, sizeof(data));
        expect_refused(path, cases[i].needle, cases[i].what);
    }
    /* Impossible header lengths. */
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    const uint64_t lens[] = {0, 1, strlen(ok) + 8 + 64 + 1, (uint64_t)1 << 40, UINT64_MAX,
                             (uint64_t)1 << 63};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        write_raw(path, lens[i], ok, data, sizeof(data));
        expect_refused(path, "header length", "header length");
    }
    /* A header length shorter than the JSON cuts it mid-way. */
    write_raw(path, strlen(ok) - 3, ok, data, sizeof(data));
    expect_refused(path, NULL, "short header length");
    /* NUL inside the header. */
    char nul[64];
    memcpy(nul, "{\"a\":{}}", 9);
    write_raw(path, 9, nul, data, sizeof(data)); /* hlen counts the NUL terminator */
    expect_refused(path, "NUL", "NUL in header");
    /* Files shorter than the length prefix. */
    bg_test_write_file(path, "\x02\0\0", 3);
    expect_refused(path, "too short", "3-byte file");
    bg_test_write_file(path, "", 0);
    expect_refused(path, "too short", "empty file");
    bg_st_file_t *f = NULL;
    CHECK(bg_st_open("/nonexistent/x.safetensors", &f) == BG_ERR_IO && !f);
}

/* Cut a valid file at every length; all must be refused. Then mutate header bytes at random. */
static void test_truncation_and_fuzz(void)
{
    char good[4200], path[4200];
    PATHF(good, "%s/good.safetensors", g_root);
    PATHF(path, "%s/cut.safetensors", g_root);
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    if (!w) return;
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {1, 2, 3};
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    CHECK_OK(bg_st_writer_add(w, "layer.weight", BG_ST_F32, 2, sa, a));
    CHECK_OK(bg_st_writer_add(w, "layer.bias", BG_ST_BF16, 1, sb, b));
    CHECK_OK(bg_st_writer_meta(w, "step", "7"));
    CHECK_OK(bg_st_writer_write(w, good));
    bg_st_writer_free(w);
    size_t n = 0;
    unsigned char *bytes = bg_test_read_file(good, &n);
    if (!bytes) return;
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut++) {
        bg_test_write_file(path, bytes, cut);
        bg_st_file_t *f = NULL;
        bg_status_t st = bg_st_open(path, &f);
        if (st == BG_OK) accepted++;
        else if (!strstr(bg_last_error(), path)) accepted += 1000;
        bg_st_close(f);
    }
    CHECK_MSG(accepted == 0, "truncated files accepted or unnamed: %d", accepted);

    /* Random header mutations: any outcome but a crash; accepted files stay in bounds. */
    uint64_t seed = 2024;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)bytes[i] << (8 * i);
    unsigned char *m = malloc(n);
    int refused = 0;
    const char alphabet[] = "{}[]\",:0123456789-.eE abtrueflsnFIU8_";
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(m, bytes, n);
        int flips = 1 + (int)(bg_test_next(&seed) % 3);
        for (int k = 0; k < flips; k++) {
            size_t pos = 8 + bg_test_next(&seed) % hlen;
            m[pos] = bg_test_next(&seed) % 2 ? (unsigned char)bg_test_next(&seed)
                                              : (unsigned char)alphabet[bg_test_next(&seed) %
                                                                        (sizeof(alphabet) - 1)];
        }
        bg_test_write_file(path, m, n);
        bg_st_file_t *f = NULL;
        bg_status_t st = bg_st_open(path, &f);
        if (st != BG_OK) {
            refused++;
            CHECK(st == BG_ERR_INVALID && f == NULL);
            continue;
        }
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < bg_st_count(f); i++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(f, i);
            CHECK(t->offset + t->nbytes <= n);
            for (size_t j = 0; j < t->nbytes; j++) sink ^= ((const unsigned char *)t->data)[j];
        }
        (void)sink;
        bg_st_close(f);
    }
    CHECK(refused > 1000); /* most mutations break something the reader checks */
    free(m);
    free(bytes);
}

/* A file produced by a 10-line pure-Python writer (struct + json), as other tools write them. */
static void test_python_interop(void)
{
    /* The system interpreter starts in milliseconds; version-manager shims can take seconds. */
    const char *python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    char script[4200], path[4200], cmd[8600];
    PATHF(script, "%s/write.py", g_root);
    PATHF(path, "%s/py.safetensors", g_root);
    const char *py =
        "import json, struct, sys\n"
        "w = struct.pack('<6f', 0.5, -1.5, 2.0, 3.0, 4.0, 5.0)\n"
        "bf = b''.join(struct.pack('<f', x)[2:] for x in (1.0, -2.0, 0.75))\n"
        "hdr = {'fc.weight': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]},\n"
        "       'fc.bias': {'dtype': 'BF16', 'shape': [3], 'data_offsets': [24, 30]},\n"
        "       '__metadata__': {'format': 'pt'}}\n"
        "h = json.dumps(hdr).encode()\n"
        "h += b' ' * (-len(h) % 8)\n"
        "open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + w + bf)\n";
    bg_test_write_file(script, py, strlen(py));
    PATHF(cmd, "%s '%s' '%s' 2>&1", python, script, path);
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) == 127) {
        printf("SKIP python interop: no python3 to run %s\n", script);
        return;
    }
    CHECK_MSG(WEXITSTATUS(rc) == 0, "%s exited %d", cmd, WEXITSTATUS(rc));
    bg_st_file_t *f = NULL;
    CHECK_OK(bg_st_open(path, &f));
    if (!f) return;
    float wt[6], bias[3];
    CHECK_OK(bg_st_read_f32(f, "fc.weight", 2, (int64_t[]){2, 3}, 6, wt));
    CHECK_OK(bg_st_read_f32(f, "fc.bias", 1, (int64_t[]){3}, 3, bias));
    CHECK(wt[0] == 0.5f && wt[1] == -1.5f && wt[5] == 5.0f);
    CHECK(bias[0] == 1.0f && bias[1] == -2.0f && bias[2] == 0.75f);
    CHECK(!strcmp(bg_st_meta(f, "format"), "pt"));
    bg_st_close(f);
}

/* Replacing a file is atomic and a stale temporary does not interfere. */
static void test_atomic_write(void)
{
    char path[4200], tmp[4300];
    PATHF(path, "%s/atomic.safetensors", g_root);
    PATHF(tmp, "%s.tmp.%d", path, 1); /* a crashed writer's leftover */
    bg_test_write_file(tmp, "garbage", 7);
    float v1 = 1.0f, v2 = 2.0f;
    for (int round = 0; round < 2; round++) {
        bg_st_writer_t *w = NULL;
        CHECK_OK(bg_st_writer_new(&w));
        if (!w) return;
        CHECK_OK(bg_st_writer_add(w, "v", BG_ST_F32, 0, NULL, round ? &v2 : &v1));
        CHECK_OK(bg_st_writer_write(w, path));
        bg_st_writer_free(w);
    }
    bg_st_file_t *f = NULL;
    float out = 0;
    CHECK_OK(bg_st_open(path, &f));
    if (f) CHECK_OK(bg_st_read_f32(f, "v", 0, NULL, 1, &out));
    CHECK(out == 2.0f);
    bg_st_close(f);
    /* Our own temporary is gone; the stale one is left alone. */
    char mine[4300];
    PATHF(mine, "%s.tmp.%d", path, (int)getpid());
    CHECK(access(mine, F_OK) != 0 && access(tmp, F_OK) == 0);
    /* A directory that does not exist: I/O error, nothing created. */
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    if (!w) return;
    CHECK(bg_st_writer_write(w, "/nonexistent-dir/x.safetensors") == BG_ERR_IO);
    bg_st_writer_free(w);
}

int main(void)
{
    char *root = bg_test_tmpdir("st");
    PATHF(g_root, "%s", root);
    test_round_trip();
    test_convert();
    test_hand_built();
    test_bad_headers();
    test_truncation_and_fuzz();
    test_python_interop();
    test_atomic_write();
    bg_test_rmtree(root);
    free(root);
    return bg_test_finish("test_safetensors");
}
