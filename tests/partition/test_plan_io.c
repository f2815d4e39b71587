/*
 * tests/partition/test_plan_io.c -- plan and profile files: round trips,
 * and every kind of bad file gives an error naming the file and the
 * problem (never a crash, never a silently wrong plan). Also profile-based
 * pricing scales with the micro-batch. Must not use the engine.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "partition/plan_io.h"
#include "partition/profile.h"
#include "test_util.h"

static void small_chain(bg_chain_t *c, int L)
{
    CHECK_OK(bg_chain_alloc(L, L + 1, BG_F32, c));
    c->tensor[0].producer = -1;
    c->tensor[0].bytes = 16;
    for (int i = 0; i < L; i++) {
        snprintf(c->layer[i].name, BG_NAME_MAX, "block.%d.fc", i);
        c->layer[i].fwd_flops = 1e6 * (i + 1);
        c->layer[i].bwd_input_flops = 2e6;
        c->layer[i].bwd_weight_flops = 1e6;
        c->layer[i].params = 100 * (i % 3);
        c->layer[i].saved_bytes = 64;
        c->layer[i].n_in = 1;
        c->layer[i].in_tensor[0] = i;
        c->tensor[i + 1].producer = i;
        c->tensor[i + 1].bytes = 32;
    }
    CHECK_OK(bg_chain_finalize(c));
}

static char tmpdir[256];

static const char *tmp(const char *name)
{
    static char p[512];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    return p;
}

/* Parse `text` as a plan; it must fail with BG_ERR_INVALID mentioning `want`. */
static void bad_plan(const char *text, const char *want)
{
    bg_plan_file_t pf;
    bg_status_t st = bg_plan_parse(text, strlen(text), "p.json", &pf);
    CHECK_MSG(st == BG_ERR_INVALID, "accepted a bad plan (want '%s')", want);
    if (st == BG_OK) {
        bg_plan_file_free(&pf);
        return;
    }
    CHECK_MSG(strstr(bg_last_error(), want) && strstr(bg_last_error(), "p.json"),
              "message '%s' lacks '%s'", bg_last_error(), want);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

/* Replace the first `from` in s with `to` (into a new buffer). */
static char *subst(const char *s, const char *from, const char *to)
{
    const char *p = strstr(s, from);
    CHECK_MSG(p != NULL, "'%s' not in plan text", from);
    if (!p) return strdup(s);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *r = malloc(n + 1);
    memcpy(r, s, (size_t)(p - s));
    strcpy(r + (p - s), to);
    strcat(r, p + strlen(from));
    return r;
}

/* The optimal plan of a 12-layer chain on three cpu ranks under `cfg`,
 * saved to tmp(name). */
static void plan_saved(const char *name, bg_part_config_t cfg, bg_chain_t *c, bg_costs_t *co,
                       bg_plan_t *pl)
{
    small_chain(c, 12);
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("cpu", &d));
    CHECK_OK(bg_costs_build(c, &d, 2, NULL, co));
    const bg_costs_t *cp[3] = {co, co, co};
    bg_part_problem_t pb = {c, cp, cfg};
    CHECK_OK(bg_partition_optimal(&pb, pl));
    bg_plan_meta_t meta = {"models/x.graph", "optimal", "cpu"};
    CHECK_OK(bg_plan_save(tmp(name), pl, c, &meta));
}

static void test_plan_round_trip(void)
{
    bg_chain_t c;
    bg_costs_t co;
    bg_plan_t pl;
    plan_saved("plan.json", (bg_part_config_t){BG_SCHED_INTERLEAVED, 3, 2, 6, 2, true, 8, 0, 1}, &c,
               &co, &pl);
    bg_plan_file_t pf;
    CHECK_OK(bg_plan_load(tmp("plan.json"), &pf));
    CHECK(!strcmp(pf.model, "models/x.graph") && !strcmp(pf.method, "optimal"));
    CHECK(pf.cfg.schedule == BG_SCHED_INTERLEAVED && pf.cfg.stages == 3 && pf.cfg.chunks == 2);
    CHECK(pf.cfg.dp == 2 && pf.cfg.micro_batches == 6 && pf.cfg.recompute && pf.cfg.zero == 1);
    CHECK(pf.micro_batch == 2 && pf.global_batch == 24 && pf.n_layers == 12 && pf.n_chunks == 6);
    CHECK(!memcmp(pf.bounds, pl.bounds, sizeof(int) * 7));
    /* cJSON writes 15 significant digits when they read back within its
     * epsilon: predictions round-trip to 1e-14, not bit for bit. */
    CHECK(fabs(pf.step_s - pl.step_s) <= 1e-14 * pl.step_s);
    CHECK(fabs(pf.bubble - pl.bubble) <= 1e-14 * pl.bubble && pf.peak_mem == pl.peak_mem);
    for (int i = 0; i < 12; i++) CHECK(!strcmp(pf.layer[i], c.layer[i].name));
    const char *names[12];
    for (int i = 0; i < 12; i++) names[i] = c.layer[i].name;
    CHECK_OK(bg_plan_file_check_layers(&pf, names, 12));
    names[5] = "block.5.other";
    CHECK(bg_plan_file_check_layers(&pf, names, 12) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "layer 5") && strstr(bg_last_error(), "block.5.other"));
    CHECK(bg_plan_file_check_layers(&pf, names, 11) == BG_ERR_INVALID);
    bg_plan_file_free(&pf);

    /* corruptions of a valid file, each with its message */
    char *good = read_all(tmp("plan.json"));
    CHECK(good != NULL);
    if (good) {
        struct {
            const char *from, *to, *want;
        } cases[] = {
            {"\"brigade-plan\"", "\"brigade-plot\"", "not 'brigade-plan'"},
            {"\"version\":\t1", "\"version\":\t2", "'version'"},
            {"\"schedule\":\t\"interleaved\"", "\"schedule\":\t\"2f2b\"", "unknown schedule"},
            {"\"stages\":\t3", "\"stages\":\t6", "chunks listed"},
            {"\"stages\":\t3", "\"stages\":\t\"3\"", "'stages' must be an integer"},
            {"\"n_layers\":\t12", "\"n_layers\":\t13", "end at layer 12"},
            {"\"global_batch\":\t24", "\"global_batch\":\t25", "global_batch"},
            {"\"recompute\":\ttrue", "\"recompute\":\t1", "'recompute' must be true or false"},
            {"\"zero\":\t1", "\"zero\":\t2", "'zero'"},
            {"\"dtype\":\t\"f32\"", "\"dtype\":\t\"fp8\"", "dtype 'fp8'"},
            {"\"zero\":\t1", "\"zero\":\ttrue", "'zero'"},
            {"\"first\":\t0", "\"first\":\t1", "contiguous"},
            {"\"stage\":\t1", "\"stage\":\t2", "rank g % stages"},
            {"\"block.3.fc\"", "\"block.3.fc\", \"extra\"", "layer names"},
            {"\"block.3.fc\"", "7", "must be a layer name"},
            {"\"predicted\"", "\"predict\"", "'predicted'"},
            {"\"dp\":\t2", "\"dp\":\t0", "'dp'"},
            {"\"stages\":\t3", "\"stages\":\t4", "chunks listed"},
        };
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
            char *t = subst(good, cases[k].from, cases[k].to);
            bad_plan(t, cases[k].want);
            free(t);
        }
        /* fp16 plans load (the planner prices them like bf16); fp8 does not */
        char *h = subst(good, "\"dtype\":\t\"f32\"", "\"dtype\":\t\"fp16\"");
        bg_status_t hs = h ? bg_plan_parse(h, strlen(h), "h.json", &pf) : BG_ERR_NOMEM;
        CHECK_OK(hs);
        if (hs == BG_OK) {
            CHECK(pf.dtype == BG_F16);
            bg_plan_file_free(&pf);
        }
        free(h);
        /* a plan from before "zero" existed loads as zero 0 */
        char *old = subst(good, "\"zero\":\t1,", "");
        bg_status_t os = old ? bg_plan_parse(old, strlen(old), "old.json", &pf) : BG_ERR_NOMEM;
        CHECK_OK(os);
        if (os == BG_OK) {
            CHECK(pf.cfg.zero == 0 && pf.cfg.recompute);
            bg_plan_file_free(&pf);
        }
        free(old);
        /* truncated JSON: line:col of where it broke */
        char *t = strdup(good);
        t[strlen(t) / 2] = 0;
        bad_plan(t, "invalid JSON");
        CHECK(strstr(bg_last_error(), "p.json:") != NULL);
        free(t);
        free(good);
    }
    bad_plan("[]", "'format' missing");
    bad_plan("", "invalid JSON");
    bad_plan("{\"format\": \"brigade-plan\"", "p.json:1:");
    bg_plan_file_t pf2;
    CHECK(bg_plan_load(tmp("does-not-exist.json"), &pf2) == BG_ERR_IO);
    CHECK(strstr(bg_last_error(), "does-not-exist.json"));
    bg_plan_free(&pl);
    bg_costs_free(&co);
    bg_chain_free(&c);
}

/* A V-placed plan (zb-v: rank r runs chunks r and 2p-1-r) loads back with
 * its ranks, and a chunk on the loop's rank instead is refused. */
static void test_plan_v(void)
{
    bg_chain_t c;
    bg_costs_t co;
    bg_plan_t pl;
    plan_saved("planv.json", (bg_part_config_t){BG_SCHED_ZB_V, 3, 2, 5, 1, false, 8, 0, 0}, &c, &co,
               &pl);
    for (int g = 0; g < 6; g++) CHECK(pl.chunk[g].stage == (g < 3 ? g : 5 - g));
    bg_plan_file_t pf;
    CHECK_OK(bg_plan_load(tmp("planv.json"), &pf));
    CHECK(pf.cfg.schedule == BG_SCHED_ZB_V && pf.n_chunks == 6 && pf.cfg.micro_batches == 5);
    bg_plan_file_free(&pf);
    char *good = read_all(tmp("planv.json"));
    CHECK(good != NULL);
    if (good) {
        /* chunk 3 is on rank 2 (the V's turn); rank 0 would be the loop's. */
        char *at = strstr(good, "\"chunk\":\t3");
        char *st = at ? strstr(at, "\"stage\":\t2") : NULL;
        CHECK(st != NULL);
        if (st) {
            st[strlen("\"stage\":\t")] = '0';
            bad_plan(good, "V");
            st[strlen("\"stage\":\t")] = '2';
        }
        /* The schedule's rule on m passes through: 5 < 2 x 3 for dualpipev. */
        char *t = subst(good, "\"schedule\":\t\"zb-v\"", "\"schedule\":\t\"dualpipev\"");
        bad_plan(t, "2 x stages");
        free(t);
        free(good);
    }
    bg_plan_free(&pl);
    bg_costs_free(&co);
    bg_chain_free(&c);
}

static void test_profile(void)
{
    bg_chain_t c;
    small_chain(&c, 4);
    bg_profile_t p;
    CHECK_OK(bg_profile_alloc(4, &p));
    strcpy(p.device, "cpu");
    p.micro_batch = 2;
    for (int i = 0; i < 4; i++) {
        int src = 3 - i; /* reverse order: lookup must be by name */
        snprintf(p.layer[i].name, BG_NAME_MAX, "%s", c.layer[src].name);
        p.layer[i].f = 0.001 * (src + 1);
        p.layer[i].b = 0.002 * (src + 1);
        p.layer[i].w = 0.0005;
    }
    CHECK_OK(bg_profile_save(tmp("prof.json"), &p));
    bg_profile_t q;
    CHECK_OK(bg_profile_load(tmp("prof.json"), &q));
    CHECK(q.n == 4 && q.micro_batch == 2 && !strcmp(q.device, "cpu"));
    for (int i = 0; i < 4; i++)
        CHECK(!strcmp(q.layer[i].name, p.layer[i].name) && q.layer[i].f == p.layer[i].f &&
              q.layer[i].b == p.layer[i].b && q.layer[i].w == p.layer[i].w);
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("cpu", &d));
    bg_costs_t co;
    CHECK_OK(bg_costs_build(&c, &d, 6, &q, &co)); /* 3x the profiled micro-batch */
    for (int i = 0; i < 4; i++) {
        CHECK(fabs(co.f[i] - 3 * 0.001 * (i + 1)) < 1e-15);
        CHECK(fabs(co.b[i] - 3 * 0.002 * (i + 1)) < 1e-15);
    }
    bg_costs_free(&co);
    /* a layer the profile lacks */
    snprintf(q.layer[0].name, BG_NAME_MAX, "renamed");
    CHECK(bg_costs_build(&c, &d, 2, &q, &co) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "block.3.fc"));
    bg_profile_free(&q);
    bg_profile_free(&p);

    const char *bad[][2] = {
        {"{\"format\":\"brigade-profile\",\"version\":1,\"device\":\"cpu\",\"dtype\":\"f32\","
         "\"micro_batch\":0,\"layers\":[]}",
         "micro_batch"},
        {"{\"format\":\"brigade-profile\",\"version\":1,\"device\":\"cpu\",\"dtype\":\"f16\","
         "\"micro_batch\":1,\"layers\":[]}",
         "dtype"},
        {"{\"format\":\"brigade-profile\",\"version\":1,\"device\":\"cpu\",\"dtype\":\"f32\","
         "\"micro_batch\":1,\"layers\":[{\"name\":\"a\",\"fwd_s\":-1,\"bwd_input_s\":0,"
         "\"bwd_weight_s\":0}]}",
         "'fwd_s'"},
        {"{\"format\":\"brigade-profile\",\"version\":1,\"device\":\"cpu\",\"dtype\":\"f32\","
         "\"micro_batch\":1,\"layers\":[{\"name\":\"a\",\"fwd_s\":1,\"bwd_input_s\":0,"
         "\"bwd_weight_s\":0},{\"name\":\"a\",\"fwd_s\":1,\"bwd_input_s\":0,\"bwd_weight_s\":0}]}",
         "twice"},
        {"{\"format\":\"brigade-plan\"}", "not 'brigade-profile'"},
        {"{\"format\":\"brigade-profile\",\"version\":1,\"device\":\"cpu\",\"dtype\":\"f32\","
         "\"micro_batch\":1,\"layers\":[{\"name\":\"a\",\"fwd_s\":1,\"bwd_input_s\":0}]}",
         "'bwd_weight_s' missing"},
        {"{\"format\": ", "invalid JSON"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        bg_profile_t r;
        bg_status_t st = bg_profile_parse(bad[k][0], strlen(bad[k][0]), "prof.json", &r);
        CHECK_MSG(st == BG_ERR_INVALID, "bad profile %zu accepted", k);
        if (st == BG_OK) bg_profile_free(&r);
        else
            CHECK_MSG(strstr(bg_last_error(), bad[k][1]) && strstr(bg_last_error(), "prof.json"),
                      "profile %zu: '%s' lacks '%s'", k, bg_last_error(), bad[k][1]);
    }
    bg_chain_free(&c);
}

static void test_bytes(void)
{
    int64_t v;
    CHECK_OK(bg_parse_bytes("80G", &v));
    CHECK(v == 80LL << 30);
    CHECK_OK(bg_parse_bytes("1.5GiB", &v));
    CHECK(v == 3LL << 29);
    CHECK_OK(bg_parse_bytes("4096", &v));
    CHECK(v == 4096);
    CHECK(bg_parse_bytes("80X", &v) == BG_ERR_INVALID);
    CHECK(bg_parse_bytes("", &v) == BG_ERR_INVALID);
    CHECK(bg_parse_bytes("-1G", &v) == BG_ERR_INVALID);
    bg_device_desc_t d;
    CHECK(bg_device_preset("tpu", &d) == BG_ERR_INVALID && strstr(bg_last_error(), "h100"));
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/bg_test_plan_io.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    test_plan_round_trip();
    test_plan_v();
    test_profile();
    test_bytes();
    unlink(tmp("plan.json"));
    unlink(tmp("planv.json"));
    unlink(tmp("prof.json"));
    rmdir(tmpdir);
    return bg_test_finish("test_plan_io");
}
