/*
 * tests/partition/test_models.c -- the partitioner on the example models:
 * the chain of a parsed graph (parameters, linearity in the batch, skip
 * connections priced at cuts), plans that fit, and the target:
 * planning gpt3-175b for 1024 GPUs with --stages auto takes < 1 s and
 * fits 80 GB. Skips (with a message) when a model file is missing.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/graph.h"
#include "partition/chain_graph.h"
#include "partition/search.h"
#include "test_util.h"

static char path[1024];

static const char *model(const char *name)
{
    const char *src = getenv("BRIGADE_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/models/%s", src ? src : ".", name);
    return path;
}

static bool load(const char *name, int64_t batch, bg_dtype_t dt, bg_graph_t **g, bg_chain_t *c)
{
    FILE *f = fopen(model(name), "r");
    if (!f) {
        printf("SKIP part: %s not found\n", path);
        return false;
    }
    fclose(f);
    CHECK_OK(bg_graph_parse_file(path, batch, g));
    if (!*g) return false;
    CHECK_OK(bg_chain_from_graph(*g, dt, c));
    return c->n_layers > 0;
}

static void test_gpt2_chain(void)
{
    bg_graph_t *g1 = NULL, *g3 = NULL;
    bg_chain_t c1, c3;
    if (!load("gpt2-124m.graph", 1, BG_F32, &g1, &c1)) return;
    if (!load("gpt2-124m.graph", 3, BG_F32, &g3, &c3)) return;
    int64_t params = 0, shared = 0;
    for (int i = 0; i < c1.n_layers; i++) {
        params += c1.layer[i].params;
        shared += c1.layer[i].shared_params;
    }
    CHECK_MSG(params == 124439808, "owned parameters %lld", (long long)params);
    CHECK_MSG(shared == 50257LL * 768, "tied head parameters %lld", (long long)shared);
    /* per-sample costs do not depend on the batch the graph was parsed at */
    CHECK(c1.n_layers == c3.n_layers);
    for (int i = 0; i < c1.n_layers && i < c3.n_layers; i++) {
        CHECK(fabs(c1.layer[i].fwd_flops - c3.layer[i].fwd_flops) <= 1e-9 * c1.layer[i].fwd_flops);
        CHECK(c1.layer[i].saved_bytes == c3.layer[i].saved_bytes);
        CHECK(c1.cut_bytes[i] == c3.cut_bytes[i]);
    }
    /* a cut inside a block pays for the residual stream too: between
     * attention and its residual add both x (skip) and h cross */
    int attn = -1;
    for (int i = 0; i < c1.n_layers; i++)
        if (!strcmp(c1.layer[i].kind, "attention")) {
            attn = i;
            break;
        }
    CHECK(attn > 0);
    if (attn > 0) {
        int64_t xbytes = 1024 * 768 * 4;
        CHECK_MSG(c1.cut_bytes[attn + 1] == 2 * xbytes, "cut after %s: %lld", c1.layer[attn].name,
                  (long long)c1.cut_bytes[attn + 1]);
        CHECK_MSG(c1.cut_bytes[attn] == 2 * xbytes, "cut before attention: %lld",
                  (long long)c1.cut_bytes[attn]);
    }
    /* an optimal 4-stage plan on CPU fits and beats or ties the baselines */
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("cpu", &d));
    bg_costs_t co;
    CHECK_OK(bg_costs_build(&c1, &d, 2, NULL, &co));
    const bg_costs_t *cp[4] = {&co, &co, &co, &co};
    bg_part_problem_t pb = {&c1, cp, {BG_SCHED_1F1B, 4, 1, 8, 1, false, 8, 0, 0}};
    bg_plan_t opt, uni, par, bot;
    CHECK_OK(bg_partition_optimal(&pb, &opt));
    CHECK_OK(bg_partition_bottleneck(&pb, &bot));
    CHECK_OK(bg_partition_uniform(&pb, &uni));
    CHECK_OK(bg_partition_params(&pb, &par));
    CHECK(opt.fits);
    CHECK(bot.bottleneck <= uni.bottleneck || !uni.fits);
    CHECK(bot.bottleneck <= par.bottleneck || !par.fits);
    CHECK(opt.step_s <= uni.step_s || !uni.fits);
    CHECK(opt.step_s <= par.step_s || !par.fits);
    bg_plan_free(&bot);
    printf("gpt2-124m, 4 stages 1f1b, cpu preset: optimal %.3f s, uniform %.3f s, params %.3f s\n",
           opt.step_s, uni.step_s, par.step_s);
    bg_plan_free(&opt);
    bg_plan_free(&uni);
    bg_plan_free(&par);
    bg_costs_free(&co);
    bg_chain_free(&c1);
    bg_chain_free(&c3);
    bg_graph_free(g1);
    bg_graph_free(g3);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_gpt3_auto(void)
{
    double c0 = cpu_s(), w0 = wall_s();
    bg_graph_t *g = NULL;
    bg_chain_t c;
    if (!load("gpt3-175b.graph", 1, BG_BF16, &g, &c)) return;
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("h100", &d));
    d.mem_bytes = 80LL << 30;
    bg_search_opts_t o = {1024, 0, 0, 0, 1536, -1, BG_SCHED_1F1B, 1, 8, 5, 0};
    bg_search_result_t res[5];
    int n = 0;
    bg_search_stats_t stats;
    CHECK_OK(bg_search_shapes(&c, &d, NULL, &o, res, &n, &stats));
    CHECK(n >= 1);
    if (n < 1) goto out;
    /* the chosen shape, split exactly, must fit */
    bg_costs_t co;
    CHECK_OK(bg_costs_build(&c, &d, res[0].micro_batch, NULL, &co));
    const bg_costs_t **cp = malloc(sizeof(*cp) * (size_t)res[0].cfg.stages);
    for (int r = 0; r < res[0].cfg.stages; r++) cp[r] = &co;
    bg_part_problem_t pb = {&c, cp, res[0].cfg};
    bg_plan_t pl;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    double cpu = cpu_s() - c0, wall = wall_s() - w0;
    printf("gpt3-175b on 1024 x h100 (80 GiB), batch 1536: %d stages x %d dp, %d micro-batches of "
           "%d, recompute %s: step %.2f s, peak %.1f GiB; %d candidates, %d split, %d pruned; "
           "parse + search + split %.0f ms cpu, %.0f ms wall\n",
           res[0].cfg.stages, res[0].cfg.dp, res[0].cfg.micro_batches, res[0].micro_batch,
           res[0].cfg.recompute ? "on" : "off", pl.step_s, pl.peak_mem / 1073741824.0,
           stats.candidates, stats.solved, stats.pruned, cpu * 1e3, wall * 1e3);
    CHECK(res[0].cfg.stages * res[0].cfg.dp == 1024);
    CHECK(pl.fits && pl.peak_mem <= 80LL << 30);
    CHECK(pl.step_s == res[0].step_s);
    /* The 1 s promise is for optimised builds; sanitizers slow everything ~5x. */
#if defined(__SANITIZE_ADDRESS__)
    const double cpu_limit = 10.0;
#else
    const double cpu_limit = 1.0;
#endif
    CHECK_MSG(cpu < cpu_limit, "planning took %.3f s of cpu", cpu);
    /* results are sorted and all fit */
    for (int i = 0; i < n; i++) {
        CHECK(res[i].peak_mem <= 80LL << 30);
        if (i) CHECK(res[i - 1].step_s <= res[i].step_s);
    }
    bg_plan_free(&pl);
    free(cp);
    bg_costs_free(&co);
out:
    bg_chain_free(&c);
    bg_graph_free(g);
}

/* The search is exact over its candidates: compare with splitting every
 * shape of a small model directly. */
static void test_search_exhaustive(void)
{
    bg_graph_t *g = NULL;
    bg_chain_t c;
    if (!load("gpt-tiny.graph", 1, BG_F32, &g, &c)) return;
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("cpu", &d));
    d.mem_bytes = 64LL << 20;
    bg_search_opts_t o = {8, 0, 0, 0, 32, -1, BG_SCHED_1F1B, 1, 8, 3, 0};
    bg_search_result_t res[3];
    int n = 0;
    bg_status_t st = bg_search_shapes(&c, &d, NULL, &o, res, &n, NULL);
    double best = INFINITY;
    for (int S = 1; S <= 8; S *= 2) {
        int D = 8 / S;
        if (S > c.n_layers) continue;
        for (int m = 1; m <= 32 / D; m++) {
            if ((32 / D) % m) continue;
            for (int rc = 0; rc <= 1; rc++) {
                bg_costs_t co;
                CHECK_OK(bg_costs_build(&c, &d, 32 / D / m, NULL, &co));
                const bg_costs_t *cp[8];
                for (int r = 0; r < S; r++) cp[r] = &co;
                bg_part_problem_t pb = {&c, cp, {BG_SCHED_1F1B, S, 1, m, D, rc, 8, 0, 0}};
                bg_plan_t pl;
                if (bg_partition_try(&pb, &pl) == BG_OK) {
                    if (pl.step_s < best) best = pl.step_s;
                    bg_plan_free(&pl);
                }
                bg_costs_free(&co);
            }
        }
    }
    if (best == INFINITY) {
        CHECK(st == BG_ERR_NOMEM);
    } else {
        CHECK_OK(st);
        CHECK_MSG(n > 0 && res[0].step_s == best, "search %.17g vs exhaustive %.17g",
                  n ? res[0].step_s : -1.0, best);
    }
    bg_chain_free(&c);
    bg_graph_free(g);
}

int main(void)
{
    test_gpt2_chain();
    test_search_exhaustive();
    test_gpt3_auto();
    return bg_test_finish("test_models");
}
