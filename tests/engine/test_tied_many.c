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

#include "ckpt_same.h"
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
    CHECK_MSG(bg_test_same_checkpoints(many, one), "%d stages not bit-identical to one", USERS);
    if (!bg_test_failures)
        bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_tied_many");
}
