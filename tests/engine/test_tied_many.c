/*
 * tests/engine/test_tied_many.c -- a weight tied across ten pipeline
 * stages: every holder exchanges its gradient accumulators with nine
 * others (more than any fixed per-parameter table would hold), and the run
 * is bit-identical to one stage: same parameters and optimizer state.
 * argv[1]: the brigade binary.
 * Must NOT depend on the model learning anything: only equality counts.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "test_util.h"

#define USERS 10

/* One 16x16 weight used by USERS linear layers, one per stage. */
static void write_graph(const char *path)
{
    FILE *f = fopen(path, "w");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f)
        return;
    fprintf(f, "model tied-many\ninput x : f32[B, 16]\ninput y : i32[B]\n"
               "h = linear(x, out=16, bias=false, std=0.4) as l0\nh = gelu(h)\n");
    for (int i = 1; i < USERS; i++)
        fprintf(f, "h = linear(h, out=16, bias=false, share=l0.weight) as l%d\nh = gelu(h)\n", i);
    fprintf(f, "loss = cross_entropy(h, y)\n");
    fclose(f);
}

/* Every tensor of a's latest checkpoint equals b's, bit for bit; *n counts them. */
static int same(const char *a, const char *b, int *n)
{
    char *pa = NULL, *pb = NULL;
    bg_ckpt_t *ca = NULL, *cb = NULL;
    int ok = bg_ckpt_dir_latest(a, &pa) == BG_OK && pa && bg_ckpt_open(pa, &ca) == BG_OK &&
             bg_ckpt_dir_latest(b, &pb) == BG_OK && pb && bg_ckpt_open(pb, &cb) == BG_OK;
    *n = 0;
    for (int f = 0; ok && f < bg_ckpt_file_count(ca); f++) {
        const bg_st_file_t *sf = bg_ckpt_file(ca, f);
        for (size_t i = 0; ok && i < bg_st_count(sf); i++) {
            const bg_st_tensor_t *t = bg_st_tensor_at(sf, i);
            const bg_st_tensor_t *u = bg_ckpt_find(cb, t->name, NULL);
            ok = u && u->nbytes == t->nbytes && !memcmp(u->data, t->data, t->nbytes);
            CHECK_MSG(ok, "%s differs", t->name);
            (*n)++;
        }
    }
    bg_ckpt_close(ca), bg_ckpt_close(cb);
    free(pa), free(pb);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        TEST_SKIP("usage: test_tied_many BRIGADE");
    char wd[128], graph[256], one[256], many[256];
    snprintf(wd, sizeof(wd), "/tmp/bg_tied_%d", (int)getpid());
    snprintf(graph, sizeof(graph), "%s/tied-many.graph", wd);
    snprintf(one, sizeof(one), "%s/one", wd);
    snprintf(many, sizeof(many), "%s/many", wd);
    CHECK(bg_test_sh("rm -rf %s && mkdir -p %s", wd, wd) == 0);
    write_graph(graph);
    const char *common = "--data synthetic:images,dim=16,classes=16 --batch 16 --micro-batches 2 "
                         "--steps 3 --eval-batches 1 --log-every 3 --seed 7";
    CHECK_MSG(bg_test_sh("'%s' train %s %s --checkpoint-dir %s > %s.log 2>&1", argv[1], graph,
                         common, one, one) == 0,
              "one stage failed (see %s.log)", one);
    CHECK_MSG(bg_test_sh("'%s' train %s %s --stages %d --checkpoint-dir %s > %s.log 2>&1", argv[1],
                         graph, common, USERS, many, many) == 0,
              "%d stages failed (see %s.log)", USERS, many);
    int n = 0;
    CHECK_MSG(same(many, one, &n) && n >= 3, "%d stages not bit-identical to one (%d tensors)",
              USERS, n);
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_tied_many");
}
