/*
 * tests/partition/test_partition.c -- the exact split against brute force.
 *
 * Random small chains (skip connections, uneven costs, random memory caps,
 * heterogeneous devices, every schedule, interleaved chunks): the DP's
 * (bottleneck, total) must equal the lexicographic minimum over every
 * split that fits, bit for bit; when nothing fits it must say so with a
 * useful message. Also: cut and activation accounting against their
 * definitions, baselines, determinism. The step-minimising split must
 * never be beaten by a fitting baseline under its own model, for every
 * schedule of the table, p in 2..6, with and without memory caps. Must not
 * use the engine.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "partition/partition.h"
#include "partition/profile.h"
#include "partition/search.h"
#include "partition/trace_profile.h"
#include "test_util.h"

static int rnd(uint64_t *s, int lo, int hi) /* [lo, hi] */
{
    return lo + (int)(bg_test_next(s) % (uint64_t)(hi - lo + 1));
}

/* L layers; layer i produces tensor i+1; tensor 0 is the data. Inputs: the
 * previous output, sometimes an older tensor (skip), sometimes the data. */
static void random_chain(uint64_t *s, int L, bg_chain_t *c)
{
    CHECK_OK(bg_chain_alloc(L, L + 1, BG_F32, c));
    c->tensor[0].producer = -1;
    c->tensor[0].bytes = rnd(s, 1, 50);
    for (int i = 0; i < L; i++) {
        bg_chain_layer_t *l = &c->layer[i];
        snprintf(l->name, sizeof(l->name), "layer.%d", i);
        strcpy(l->kind, "test");
        l->fwd_flops = rnd(s, 0, 4) ? rnd(s, 1, 1000) * 1e6 : 0;
        l->bwd_input_flops = rnd(s, 1, 2000) * 1e6;
        l->bwd_weight_flops = rnd(s, 0, 1) ? rnd(s, 1, 1000) * 1e6 : 0;
        l->params = rnd(s, 0, 3) ? rnd(s, 0, 100000) : 0;
        l->saved_bytes = rnd(s, 0, 400);
        l->workspace_bytes = rnd(s, 0, 300);
        c->tensor[i + 1].producer = i;
        c->tensor[i + 1].bytes = rnd(s, 1, 200);
        l->out_bytes = c->tensor[i + 1].bytes;
        l->n_in = 1;
        l->in_tensor[0] = i; /* previous output (data for layer 0) */
        if (i > 1 && rnd(s, 0, 2) == 0) l->in_tensor[l->n_in++] = rnd(s, 0, i - 1);
        if (rnd(s, 0, 6) == 0) l->in_tensor[l->n_in++] = l->in_tensor[0]; /* add(x, x) */
    }
    CHECK_OK(bg_chain_finalize(c));
}

static void random_device(uint64_t *s, bg_device_desc_t *d)
{
    memset(d, 0, sizeof(*d));
    strcpy(d->name, "rnd");
    d->flops = rnd(s, 1, 20) * 1e9;
    d->mem_bw = rnd(s, 1, 20) * 1e9;
    d->mem_bytes = 1LL << 40; /* set by the test */
    d->link_bw = rnd(s, 1, 100) * 1e3; /* slow: comm matters */
    d->link_lat = rnd(s, 0, 10) * 1e-4;
    d->dp_bw = 1e9;
    d->dp_lat = 1e-5;
}

/* ---- brute force ---- */
typedef struct {
    const bg_part_problem_t *pb;
    int G, L;
    int b[64];
    int found, n_splits;
    double bott, total, min_peak;
    bool any_fit;
} brute_t;

static void brute_rec(brute_t *bf, int g)
{
    if (g == bf->G) {
        if (bf->b[g - 1] >= bf->L) return;
        bf->b[g] = bf->L;
        bg_plan_t pl;
        CHECK_OK(bg_plan_evaluate(bf->pb, bf->b, &pl));
        bf->n_splits++;
        double peak = 0;
        for (int k = 0; k < bf->G; k++) {
            double r = (double)pl.chunk[k].mem / (double)pl.chunk[k].mem_cap;
            if (r > peak) peak = r;
        }
        if (peak < bf->min_peak) bf->min_peak = peak;
        if (pl.fits) {
            if (!bf->any_fit || pl.bottleneck < bf->bott ||
                (pl.bottleneck == bf->bott && pl.total < bf->total)) {
                bf->bott = pl.bottleneck;
                bf->total = pl.total;
            }
            bf->any_fit = true;
        }
        bg_plan_free(&pl);
        return;
    }
    for (int x = bf->b[g - 1] + 1; x <= bf->L - (bf->G - g); x++) {
        bf->b[g] = x;
        brute_rec(bf, g + 1);
    }
}

static void brute(const bg_part_problem_t *pb, brute_t *bf)
{
    memset(bf, 0, sizeof(*bf));
    bf->pb = pb;
    bf->G = pb->cfg.stages * pb->cfg.chunks;
    bf->L = pb->chain->n_layers;
    bf->min_peak = INFINITY;
    bf->b[0] = 0;
    if (bf->G == 1) {
        bf->b[1] = bf->L;
        bg_plan_t pl;
        CHECK_OK(bg_plan_evaluate(pb, bf->b, &pl));
        bf->n_splits = 1;
        bf->min_peak = (double)pl.chunk[0].mem / (double)pl.chunk[0].mem_cap;
        bf->any_fit = pl.fits;
        bf->bott = pl.bottleneck;
        bf->total = pl.total;
        bg_plan_free(&pl);
        return;
    }
    brute_rec(bf, 1);
}

/* ---- definitions checked directly ---- */
static void test_accounting(void)
{
    uint64_t s = 7;
    for (int it = 0; it < 200; it++) {
        bg_chain_t c;
        int L = rnd(&s, 1, 12);
        random_chain(&s, L, &c);
        /* cut k: tensors produced at < k and read at >= k */
        for (int k = 1; k < L; k++) {
            int64_t want = 0;
            for (int t = 0; t < c.n_tensors; t++) {
                if (c.tensor[t].producer < 0 || c.tensor[t].producer >= k) continue;
                bool used = false;
                for (int l = k; l < L; l++)
                    for (int q = 0; q < c.layer[l].n_in; q++) used |= c.layer[l].in_tensor[q] == t;
                if (used) want += c.tensor[t].bytes;
            }
            CHECK_MSG(c.cut_bytes[k] == want, "cut %d: %lld vs %lld", k, (long long)c.cut_bytes[k],
                      (long long)want);
        }
        /* activations: saved + each distinct tensor read in the range once */
        for (int i = 0; i < L; i++)
            for (int j = i + 1; j <= L; j++) {
                int64_t want = 0;
                for (int l = i; l < j; l++) want += c.layer[l].saved_bytes;
                for (int t = 0; t < c.n_tensors; t++) {
                    bool used = false;
                    for (int l = i; l < j; l++)
                        for (int q = 0; q < c.layer[l].n_in; q++) used |= c.layer[l].in_tensor[q] == t;
                    if (used) want += c.tensor[t].bytes;
                }
                CHECK_MSG(bg_chain_act_bytes(&c, i, j) == want, "act [%d,%d)", i, j);
            }
        bg_chain_free(&c);
    }
    /* a chain out of topological order is rejected by name */
    bg_chain_t c;
    CHECK_OK(bg_chain_alloc(2, 2, BG_F32, &c));
    strcpy(c.layer[0].name, "first");
    c.tensor[0].producer = -1;
    c.tensor[1].producer = 1;
    c.layer[0].n_in = 1;
    c.layer[0].in_tensor[0] = 1;
    c.layer[1].n_in = 1;
    c.layer[1].in_tensor[0] = 0;
    CHECK(bg_chain_finalize(&c) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "first") != NULL);
    bg_chain_free(&c);
}

/* Random problem: p stages (heterogeneous or not), schedule, caps. */
typedef struct {
    bg_chain_t chain;
    bg_costs_t costs[8];
    const bg_costs_t *cp[8];
    bg_part_problem_t pb;
} prob_t;

static void prob_free(prob_t *q)
{
    for (int r = 0; r < 8; r++)
        if (q->costs[r].n) bg_costs_free(&q->costs[r]);
    bg_chain_free(&q->chain);
}

/* The knobs every random problem draws (dp, recompute, optimizer state,
 * a device); returns the micro-batch size. */
static int random_knobs(uint64_t *s, bg_part_config_t *cfg, bg_device_desc_t *d)
{
    cfg->dp = rnd(s, 1, 4);
    cfg->recompute = rnd(s, 0, 1);
    cfg->opt_state_bytes = rnd(s, 0, 1) ? 8 : 0;
    int mb = rnd(s, 1, 3);
    random_device(s, d);
    return mb;
}

static void random_problem(uint64_t *s, prob_t *q, bool hetero)
{
    memset(q, 0, sizeof(*q));
    int L = rnd(s, 1, 9);
    random_chain(s, L, &q->chain);
    bg_part_config_t *cfg = &q->pb.cfg;
    cfg->schedule = (bg_sched_kind_t)rnd(s, 0, 3);
    cfg->stages = rnd(s, 1, L < 4 ? L : 4);
    cfg->chunks = 1;
    if (cfg->schedule == BG_SCHED_INTERLEAVED && 2 * cfg->stages <= L && rnd(s, 0, 1))
        cfg->chunks = 2;
    cfg->micro_batches = rnd(s, 1, 8);
    if (cfg->schedule == BG_SCHED_INTERLEAVED)
        cfg->micro_batches = cfg->stages * rnd(s, 1, 3);
    bg_device_desc_t d;
    int mb = random_knobs(s, cfg, &d);
    for (int r = 0; r < cfg->stages; r++) {
        if (hetero && r > 0) random_device(s, &d);
        if (hetero || r == 0) {
            /* caps near the bytes a chunk of an even split needs */
            int64_t params = 0;
            for (int l = 0; l < L; l++) params += q->chain.layer[l].params;
            int64_t base = params * 16 / cfg->stages + 4000 * mb;
            d.mem_bytes = (int64_t)(base * (0.3 + 1.5 * bg_test_uniform(s, 0, 1))) + 1;
            CHECK_OK(bg_costs_build(&q->chain, &d, mb, NULL, &q->costs[r]));
            q->cp[r] = &q->costs[r];
        } else {
            q->cp[r] = &q->costs[0];
        }
    }
    q->pb.chain = &q->chain;
    q->pb.costs = q->cp;
}

static void test_dp_vs_brute(bool hetero, int iters, uint64_t seed)
{
    uint64_t s = seed;
    int fits = 0, nofit = 0;
    for (int it = 0; it < iters; it++) {
        prob_t q;
        random_problem(&s, &q, hetero);
        brute_t bf;
        brute(&q.pb, &bf);
        bg_plan_t pl;
        bg_status_t st = bg_partition_bottleneck(&q.pb, &pl);
        double peak = NAN;
        CHECK_OK(bg_partition_min_peak(&q.pb, &peak, NULL, NULL));
        CHECK_MSG(peak == bf.min_peak, "iter %d: min peak %.17g vs brute %.17g", it, peak,
                  bf.min_peak);
        if (bf.any_fit) {
            fits++;
            CHECK_MSG(st == BG_OK, "iter %d: DP failed where brute force fits: %s", it,
                      bg_last_error());
            if (st == BG_OK) {
                CHECK(pl.fits);
                CHECK_MSG(pl.bottleneck == bf.bott && pl.total == bf.total,
                          "iter %d (L=%d p=%d v=%d %s rc=%d): DP (%.17g, %.17g) vs brute (%.17g, "
                          "%.17g)",
                          it, q.chain.n_layers, q.pb.cfg.stages, q.pb.cfg.chunks,
                          bg_sched_kind_name(q.pb.cfg.schedule), q.pb.cfg.recompute, pl.bottleneck,
                          pl.total, bf.bott, bf.total);
                for (int g = 0; g < pl.n_chunks; g++) CHECK(pl.chunk[g].mem <= pl.chunk[g].mem_cap);
                /* deterministic: the same problem gives the same split */
                bg_plan_t again;
                CHECK_OK(bg_partition_bottleneck(&q.pb, &again));
                CHECK(!memcmp(again.bounds, pl.bounds, sizeof(int) * (size_t)(pl.n_chunks + 1)));
                CHECK(again.step_s == pl.step_s);
                bg_plan_free(&again);
                bg_plan_free(&pl);
            }
            CHECK(peak <= 1.0);
        } else {
            nofit++;
            CHECK_MSG(st == BG_ERR_NOMEM, "iter %d: DP returned %d where nothing fits", it, st);
            CHECK(peak > 1.0);
            if (st == BG_OK) bg_plan_free(&pl);
            else {
                const char *e = bg_last_error();
                CHECK_MSG(strstr(e, "does not fit") && strstr(e, "over") && strstr(e, "would help"),
                          "message: %s", e);
            }
        }
        prob_free(&q);
    }
    printf("dp vs brute (%s): %d fitting, %d not fitting\n", hetero ? "heterogeneous" : "homogeneous",
           fits, nofit);
    CHECK(fits > iters / 5);
    CHECK(nofit > 0);
}

/* Baselines: uniform counts; params balanced equals brute min-max params. */
static void test_baselines(void)
{
    uint64_t s = 99;
    for (int it = 0; it < 100; it++) {
        prob_t q;
        random_problem(&s, &q, false);
        bg_plan_t u, p;
        CHECK_OK(bg_partition_uniform(&q.pb, &u));
        CHECK_OK(bg_partition_params(&q.pb, &p));
        int L = q.chain.n_layers, G = u.n_chunks;
        for (int g = 0; g < G; g++) {
            int n = u.bounds[g + 1] - u.bounds[g];
            CHECK(n == L / G || n == L / G + 1);
        }
        /* brute min-max of params via evaluation of all splits */
        brute_t bf;
        memset(&bf, 0, sizeof(bf));
        int64_t best = INT64_MAX, got = 0;
        for (int g = 0; g < G; g++)
            if (p.chunk[g].params > got) got = p.chunk[g].params;
        /* enumerate compositions iteratively (G <= 8, L <= 9) */
        int b[16];
        b[0] = 0;
        b[G] = L;
        for (int g = 1; g < G; g++) b[g] = g;
        for (;;) {
            int64_t mx = 0;
            for (int g = 0; g < G; g++) {
                int64_t sum = 0;
                for (int l = b[g]; l < b[g + 1]; l++) sum += q.chain.layer[l].params;
                if (sum > mx) mx = sum;
            }
            if (mx < best) best = mx;
            int g = G - 1;
            while (g >= 1 && b[g] == L - (G - g)) g--;
            if (g < 1) break;
            b[g]++;
            for (int h = g + 1; h < G; h++) b[h] = b[h - 1] + 1;
        }
        CHECK_MSG(got == best, "params balance %lld vs brute %lld", (long long)got, (long long)best);
        bg_plan_free(&u);
        bg_plan_free(&p);
        prob_free(&q);
    }
}

/* On two devices, the twice-as-fast one must get more of a uniform chain. */
static void test_heterogeneous_share(void)
{
    bg_chain_t c;
    int L = 30;
    CHECK_OK(bg_chain_alloc(L, L + 1, BG_F32, &c));
    c.tensor[0].producer = -1;
    c.tensor[0].bytes = 4;
    for (int i = 0; i < L; i++) {
        snprintf(c.layer[i].name, BG_NAME_MAX, "l%d", i);
        c.layer[i].fwd_flops = c.layer[i].bwd_input_flops = c.layer[i].bwd_weight_flops = 1e9;
        c.layer[i].params = 1000;
        c.layer[i].n_in = 1;
        c.layer[i].in_tensor[0] = i;
        c.tensor[i + 1].producer = i;
        c.tensor[i + 1].bytes = 4;
    }
    CHECK_OK(bg_chain_finalize(&c));
    bg_device_desc_t slow, fast;
    CHECK_OK(bg_device_preset("cpu", &slow));
    fast = slow;
    fast.flops = 2 * slow.flops;
    bg_costs_t cs, cf;
    CHECK_OK(bg_costs_build(&c, &slow, 1, NULL, &cs));
    CHECK_OK(bg_costs_build(&c, &fast, 1, NULL, &cf));
    const bg_costs_t *cp[2] = {&cs, &cf};
    bg_part_problem_t pb = {&c, cp, {BG_SCHED_1F1B, 2, 1, 8, 1, false, 8, 0, 0}};
    bg_plan_t pl;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    CHECK_MSG(pl.bounds[1] == 10, "slow device got %d layers, want 10 of 30", pl.bounds[1]);
    /* and a tight cap on the fast one pushes layers back */
    cf.dev.mem_bytes = 15 * 1000 * 16 + 4096;
    bg_plan_t p2;
    CHECK_OK(bg_partition_optimal(&pb, &p2));
    CHECK(p2.bounds[1] >= 15);
    CHECK(p2.fits);
    bg_plan_free(&p2);
    /* the uniform baseline reports that it does not fit */
    bg_plan_t u;
    cf.dev.mem_bytes = 10 * 1000 * 16;
    CHECK_OK(bg_partition_uniform(&pb, &u));
    CHECK(!u.fits);
    bg_plan_free(&u);
    bg_plan_free(&pl);
    bg_costs_free(&cs);
    bg_costs_free(&cf);
    bg_chain_free(&c);
}

/* Closed forms: 1f1b step = (m + p - 1) t on a uniform pipeline, bubble
 * (p-1)/(m+p-1); interleaved divides the fill by v; in-flight counts. */
static void test_closed_forms(void)
{
    bg_part_config_t c = {BG_SCHED_1F1B, 4, 1, 8, 1, false, 8, 0, 0};
    CHECK(bg_in_flight(&c, 0) == 4 && bg_in_flight(&c, 3) == 1);
    c.micro_batches = 2;
    CHECK(bg_in_flight(&c, 0) == 2);
    c.schedule = BG_SCHED_GPIPE;
    CHECK(bg_in_flight(&c, 3) == 2);
    /* interleaved, rank 0: vp + p - 1 chunk items = p(1 + (p-1)/(pv)) * v
     * (Korthikanti et al. 2022); p = 4, v = 2: 11 items, 4+3 on chunk 0? */
    c.schedule = BG_SCHED_INTERLEAVED;
    c.chunks = 2;
    c.micro_batches = 8;
    int k0 = bg_in_flight(&c, 0), k1 = bg_in_flight(&c, 4);
    CHECK_MSG(k0 + k1 == 11, "rank 0 holds %d + %d items, want 11", k0, k1);
    CHECK(bg_in_flight(&c, 3) + bg_in_flight(&c, 7) == 5); /* last rank: (v-1)p + 1 */

    bg_chain_t ch;
    int L = 8;
    CHECK_OK(bg_chain_alloc(L, L + 1, BG_F32, &ch));
    ch.tensor[0].producer = -1;
    for (int i = 0; i < L; i++) {
        snprintf(ch.layer[i].name, BG_NAME_MAX, "l%d", i);
        ch.layer[i].fwd_flops = 1e9;
        ch.layer[i].bwd_input_flops = 1e9;
        ch.layer[i].bwd_weight_flops = 1e9;
        ch.layer[i].n_in = 1;
        ch.layer[i].in_tensor[0] = i;
        ch.tensor[i + 1].producer = i;
        ch.tensor[i + 1].bytes = 0;
    }
    CHECK_OK(bg_chain_finalize(&ch));
    bg_device_desc_t d;
    CHECK_OK(bg_device_preset("cpu", &d));
    d.link_lat = 0;
    bg_costs_t co;
    CHECK_OK(bg_costs_build(&ch, &d, 1, NULL, &co));
    const bg_costs_t *cp[4] = {&co, &co, &co, &co};
    bg_part_problem_t pb = {&ch, cp, {BG_SCHED_1F1B, 4, 1, 8, 1, false, 8, 0, 0}};
    bg_plan_t pl;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    double t = 2 * 3 * 1e9 / d.flops; /* two layers per stage */
    CHECK_MSG(fabs(pl.pipe_s - (8 + 3) * t) < 1e-12, "1f1b pipe %g want %g", pl.pipe_s, 11 * t);
    CHECK(fabs(pl.bubble - 3.0 / 11.0) < 1e-12);
    bg_plan_free(&pl);
    pb.cfg.schedule = BG_SCHED_INTERLEAVED;
    pb.cfg.chunks = 2;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    CHECK_MSG(fabs(pl.pipe_s - (8 + 3.0 / 2) * t) < 1e-12, "interleaved pipe %g want %g", pl.pipe_s,
              9.5 * t);
    for (int g = 0; g < 8; g++) CHECK(pl.chunk[g].stage == g % 4 && pl.bounds[g] == g);
    bg_plan_free(&pl);
    pb.cfg.schedule = BG_SCHED_ZB_H1;
    pb.cfg.chunks = 1;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    /* ZB-H1: m (F+B+W) + (p-1)(F+B-W) */
    CHECK_MSG(fabs(pl.pipe_s - (8 * t + 3 * t / 3)) < 1e-12, "zb-h1 pipe %g", pl.pipe_s);
    bg_plan_free(&pl);
    /* ZB-V: chunks in a V (rank r holds r and 7 - r), one layer each; the
     * fill is a chunk's F, t/6: m t + (p-1) t/6. */
    pb.cfg.schedule = BG_SCHED_ZB_V;
    pb.cfg.chunks = 2;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    for (int g = 0; g < 8; g++)
        CHECK(pl.chunk[g].stage == (g < 4 ? g : 7 - g) && pl.bounds[g] == g);
    CHECK_MSG(fabs(pl.pipe_s - (8 * t + 3 * t / 6)) < 1e-12, "zb-v pipe %g", pl.pipe_s);
    bg_plan_free(&pl);
    pb.cfg.chunks = 1;
    /* Four 1f1b ranks on two cores: each core runs two stages' 8 micro-batches,
     * 16 t, above the dependency bound of 11 t; on four cores nothing changes. */
    pb.cfg.schedule = BG_SCHED_1F1B;
    pb.cfg.cores = 2;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    CHECK_MSG(fabs(pl.pipe_s - 16 * t) < 1e-12, "shared cores pipe %g want %g", pl.pipe_s, 16 * t);
    bg_plan_free(&pl);
    pb.cfg.cores = 4;
    CHECK_OK(bg_partition_optimal(&pb, &pl));
    CHECK(fabs(pl.pipe_s - 11 * t) < 1e-12);
    bg_plan_free(&pl);
    bg_costs_free(&co);
    bg_chain_free(&ch);
}

static void test_bad_config(void)
{
    uint64_t s = 5;
    prob_t q;
    random_problem(&s, &q, false);
    bg_plan_t pl;
    q.pb.cfg.chunks = 2;
    q.pb.cfg.schedule = BG_SCHED_1F1B;
    CHECK(bg_partition_optimal(&q.pb, &pl) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "interleaved"));
    q.pb.cfg.chunks = 1;
    q.pb.cfg.stages = q.chain.n_layers + 1;
    CHECK(bg_partition_optimal(&q.pb, &pl) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "layers"));
    prob_free(&q);
}

/* A random problem for the step test: p in 2..6, schedule `k` of the
 * table, v its smallest chunk count, m rounded to what it accepts; caps
 * near an even split's need when `capped`, else unlimited. false when the
 * drawn shape is not valid for the schedule. */
static bool random_step_problem(uint64_t *s, prob_t *q, bg_sched_kind_t k, bool capped)
{
    memset(q, 0, sizeof(*q));
    bg_part_config_t *cfg = &q->pb.cfg;
    cfg->schedule = k;
    cfg->stages = rnd(s, 2, 6);
    cfg->chunks = bg_sched_desc(k)->chunks_min;
    int G = cfg->stages * cfg->chunks;
    int L = G + rnd(s, 0, 16);
    random_chain(s, L, &q->chain);
    int m = bg_sched_round_m(bg_sched_desc(k), cfg->stages, rnd(s, 1, 16));
    cfg->micro_batches = m;
    bg_device_desc_t d;
    int mb = random_knobs(s, cfg, &d);
    int64_t params = 0;
    for (int l = 0; l < L; l++) params += q->chain.layer[l].params;
    if (capped)
        d.mem_bytes = (int64_t)((params * 16 / cfg->stages + 4000 * mb) *
                                (0.5 + 1.5 * bg_test_uniform(s, 0, 1))) + 1;
    CHECK_OK(bg_costs_build(&q->chain, &d, mb, NULL, &q->costs[0]));
    for (int r = 0; r < cfg->stages; r++) q->cp[r] = &q->costs[0];
    q->pb.chain = &q->chain;
    q->pb.costs = q->cp;
    return m > 0 && bg_part_config_check(cfg, L) == BG_OK;
}

static void test_step_vs_baselines(int iters, uint64_t seed)
{
    uint64_t s = seed;
    int checked = 0, beat = 0;
    for (int it = 0; it < iters; it++) {
        prob_t q;
        bg_sched_kind_t k = (bg_sched_kind_t)(it % BG_SCHED_KIND_COUNT);
        if (!random_step_problem(&s, &q, k, (it / BG_SCHED_KIND_COUNT) % 2)) {
            prob_free(&q);
            continue;
        }
        bg_plan_t opt, uni, par, bot;
        CHECK_OK(bg_partition_uniform(&q.pb, &uni));
        CHECK_OK(bg_partition_params(&q.pb, &par));
        bg_status_t st = bg_partition_optimal(&q.pb, &opt);
        if (uni.fits || par.fits) CHECK_MSG(st == BG_OK, "iter %d: %s", it, bg_last_error());
        if (st == BG_OK) {
            double base = INFINITY;
            if (uni.fits) base = uni.step_s;
            if (par.fits && par.step_s < base) base = par.step_s;
            CHECK(opt.fits);
            CHECK_MSG(opt.step_s <= base * (1 + 1e-12),
                      "iter %d (%s p=%d m=%d L=%d): optimal %.17g > baseline %.17g", it,
                      bg_sched_kind_name(k), q.pb.cfg.stages, q.pb.cfg.micro_batches,
                      q.chain.n_layers, opt.step_s, base);
            CHECK_OK(bg_partition_bottleneck(&q.pb, &bot));
            /* within the 0.5% tie band that prefers splits near uniform */
            CHECK(opt.step_s <= bot.step_s * 1.005);
            beat += opt.step_s < bot.step_s;
            checked++;
            bg_plan_free(&bot);
            bg_plan_free(&opt);
        }
        bg_plan_free(&uni);
        bg_plan_free(&par);
        prob_free(&q);
    }
    CHECK(checked > iters / 4);
    printf("step vs baselines: %d checked, step split better than bottleneck split in %d\n",
           checked, beat);
}

/* Closed loop: chunk medians of a synthetic trace spread by roofline
 * shares; a chunk without B is refused by name. */
static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_from_trace(void)
{
    uint64_t s = 11;
    bg_chain_t c;
    random_chain(&s, 5, &c);
    bg_device_desc_t d;
    random_device(&s, &d);
    bg_costs_t roof;
    CHECK_OK(bg_costs_build(&c, &d, 2, NULL, &roof));
    int bounds[3] = {0, 2, 5};
    char path[] = "/tmp/bg_test_trace_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
#define EV(k, mb, ch, dur)                                                                         \
    "{\"name\":\"x\",\"cat\":\"" k "\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":1,\"dur\":" #dur \
    ",\"args\":{\"mb\":" #mb ",\"chunk\":" #ch "}}"
    write_text(path, "{\"traceEvents\":[{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0},"
               EV("F", 0, 0, 1000) "," EV("F", 1, 0, 5000) "," EV("F", 2, 0, 2000) ","
               EV("B", 0, 0, 500) "," EV("W", 0, 0, 250) "," EV("SEND_ACT", 0, 0, 9e9) ","
               EV("F", 0, 1, 1000) "," EV("BW", 0, 1, 4000) "]}");
    bg_profile_t p;
    CHECK_OK(bg_profile_from_trace(path, &roof, bounds, 2, &p));
    double f0 = p.layer[0].f + p.layer[1].f, bw1 = 0, b1 = 0;
    for (int l = 2; l < 5; l++) {
        bw1 += p.layer[l].b + p.layer[l].w;
        b1 += p.layer[l].b;
    }
    CHECK_MSG(fabs(f0 - 2e-3) < 1e-12, "chunk 0 F median %.17g", f0);
    CHECK(fabs(p.layer[0].b + p.layer[1].b - 5e-4) < 1e-12);
    CHECK(fabs(bw1 - 4e-3) < 1e-12);
    double rb = roof.pb[5] - roof.pb[2], rw = roof.pw[5] - roof.pw[2];
    CHECK(fabs(b1 - 4e-3 * rb / (rb + rw)) < 1e-12);
    CHECK(p.micro_batch == 2 && !strcmp(p.layer[3].name, c.layer[3].name));
    bg_profile_free(&p);
    write_text(path, "{\"traceEvents\":[" EV("F", 0, 0, 1) "," EV("B", 0, 0, 1) ","
               EV("F", 0, 1, 1) "]}");
    CHECK(bg_profile_from_trace(path, &roof, bounds, 2, &p) == BG_ERR_INVALID);
    CHECK(strstr(bg_last_error(), "chunk 1") != NULL);
#undef EV
    unlink(path);
    bg_costs_free(&roof);
    bg_chain_free(&c);
}

/* A chain of L layers of `params` f32 parameters each, 1 GFLOP per pass. */
static void param_chain(int L, int64_t params, bg_chain_t *ch)
{
    CHECK_OK(bg_chain_alloc(L, L + 1, BG_F32, ch));
    ch->tensor[0].producer = -1;
    for (int i = 0; i < L; i++) {
        snprintf(ch->layer[i].name, BG_NAME_MAX, "l%d", i);
        ch->layer[i].fwd_flops = ch->layer[i].bwd_input_flops = ch->layer[i].bwd_weight_flops = 1e9;
        ch->layer[i].params = params;
        ch->layer[i].n_in = 1;
        ch->layer[i].in_tensor[0] = i;
        ch->tensor[i + 1].producer = i;
        ch->tensor[i + 1].bytes = 1024;
    }
    CHECK_OK(bg_chain_finalize(ch));
}

/* Two uniform plans of an 8-layer chain of 1M-parameter layers priced on
 * the cpu preset: under cfg a, and under a with one change made by `vary`
 * (into p1). The chain and costs stay for the caller's further use. */
typedef struct {
    bg_chain_t ch;
    bg_device_desc_t d;
    bg_costs_t co;
} pair_fixture_t;

static void plan_pair(pair_fixture_t *f, bg_part_config_t a, void (*vary)(bg_part_config_t *),
                      bg_plan_t *p0, bg_plan_t *p1)
{
    param_chain(8, 1000000, &f->ch);
    CHECK_OK(bg_device_preset("cpu", &f->d));
    CHECK_OK(bg_costs_build(&f->ch, &f->d, 1, NULL, &f->co));
    const bg_costs_t *cp[2] = {&f->co, &f->co};
    bg_part_problem_t pb = {&f->ch, cp, a};
    CHECK_OK(bg_partition(&pb, BG_SPLIT_UNIFORM, p0));
    vary(&pb.cfg);
    CHECK_OK(bg_partition(&pb, BG_SPLIT_UNIFORM, p1));
}

static void pair_free(pair_fixture_t *f)
{
    bg_costs_free(&f->co);
    bg_chain_free(&f->ch);
}

static void zero_on(bg_part_config_t *c)
{
    c->zero = 1;
}

static void use_2bw(bg_part_config_t *c)
{
    c->schedule = BG_SCHED_TWO_BW;
}

/* ZeRO-1 in the memory model: masters and moments divided by D, the
 * compute copy and gradients whole; the plan's memory drops by exactly
 * that, its data-parallel time stays (an f32 run's reduce-scatter plus
 * all-gather is the allreduce's volume), and the search finds shapes that
 * only fit with it. */
static void test_zero(void)
{
    CHECK(bg_param_bytes(BG_F32, 8, 0, 4, 1000) == 1000 * bg_bytes_per_param(BG_F32, 8));
    CHECK(bg_param_bytes(BG_F32, 8, 1, 1, 1000) == 1000 * bg_bytes_per_param(BG_F32, 8));
    CHECK(bg_param_bytes(BG_F32, 8, 1, 4, 1000) == 1000 * 8 + 1000 * 12 / 4);
    CHECK(bg_param_bytes(BG_BF16, 8, 1, 4, 1000) == 1000 * 6 + 1000 * 12 / 4);
    CHECK(bg_param_bytes(BG_BF16, 0, 1, 3, 1000) == 1000 * 6 + 1334); /* rounded up */
    pair_fixture_t f;
    bg_plan_t p0, p1;
    plan_pair(&f, (bg_part_config_t){BG_SCHED_1F1B, 2, 1, 4, 4, false, 8, 0, 0}, zero_on, &p0,
              &p1);
    for (int r = 0; r < 2; r++) {
        int64_t n = p0.stage[r].params;
        int64_t drop = bg_param_bytes(BG_F32, 8, 0, 4, n) - bg_param_bytes(BG_F32, 8, 1, 4, n);
        CHECK_MSG(p0.stage[r].mem - p1.stage[r].mem == drop, "stage %d: memory %lld -> %lld", r,
                  (long long)p0.stage[r].mem, (long long)p1.stage[r].mem);
        CHECK(fabs(p1.stage[r].allreduce - p0.stage[r].allreduce) <= 1e-9 * p0.stage[r].allreduce &&
              p0.stage[r].allreduce > 0);
    }
    CHECK(p1.peak_mem < p0.peak_mem);
    bg_plan_free(&p0), bg_plan_free(&p1);
    /* 8M parameters at S = 1, D = 4: 128 MB without ZeRO, 88 MB with */
    f.d.mem_bytes = 100 << 20;
    bg_search_opts_t o = {4, 1, 4, 0, 32, 0, BG_SCHED_1F1B, 1, 8, 1, 0};
    bg_search_result_t res[1];
    int n = 0;
    CHECK(bg_search_shapes(&f.ch, &f.d, NULL, &o, res, &n, NULL) == BG_ERR_NOMEM);
    o.zero = 1;
    CHECK_OK(bg_search_shapes(&f.ch, &f.d, NULL, &o, res, &n, NULL));
    CHECK(n == 1 && res[0].cfg.zero == 1 && res[0].peak_mem <= f.d.mem_bytes);
    pair_free(&f);
}

/* 2bw's second weight version in the memory model: each stage of a 2bw
 * plan holds exactly bg_versions_bytes more than 1f1b's (m >= p: the same
 * activations in flight), f32 and bf16; one version adds nothing. */
static void test_versions(void)
{
    CHECK(bg_versions_bytes(BG_F32, 1, 1000) == 0);
    CHECK(bg_versions_bytes(BG_F32, 2, 1000) == 8000);
    CHECK(bg_versions_bytes(BG_BF16, 2, 1000) == 6000);
    for (int k = 0; k < BG_SCHED_KIND_COUNT; k++)
        CHECK_MSG(bg_sched_desc((bg_sched_kind_t)k)->versions == (k == BG_SCHED_TWO_BW ? 2 : 1),
                  "schedule %s: %d weight versions", bg_sched_kind_name((bg_sched_kind_t)k),
                  bg_sched_desc((bg_sched_kind_t)k)->versions);
    pair_fixture_t f;
    bg_plan_t p0, p1;
    plan_pair(&f, (bg_part_config_t){BG_SCHED_1F1B, 2, 1, 4, 1, false, 8, 0, 0}, use_2bw, &p0,
              &p1);
    for (int r = 0; r < 2; r++) {
        int64_t add = bg_versions_bytes(BG_F32, 2, p0.stage[r].params);
        CHECK_MSG(p1.stage[r].mem - p0.stage[r].mem == add && add > 0,
                  "stage %d: 1f1b %lld, 2bw %lld bytes, want %lld more", r,
                  (long long)p0.stage[r].mem, (long long)p1.stage[r].mem, (long long)add);
    }
    bg_plan_free(&p0), bg_plan_free(&p1);
    pair_free(&f);
}

int main(void)
{
    test_accounting();
    test_dp_vs_brute(false, 600, 1);
    test_dp_vs_brute(true, 600, 2);
    test_step_vs_baselines(1200, 3);
    test_baselines();
    test_from_trace();
    test_heterogeneous_share();
    test_closed_forms();
    test_bad_config();
    test_zero();
    test_versions();
    return bg_test_finish("test_partition");
}
