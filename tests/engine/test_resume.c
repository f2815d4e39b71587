/*
 * tests/engine/test_resume.c -- checkpoints end to end through
 * `brigade train`: stop and resume gives the same bits as never stopping
 * (same layout, and a different one), a run killed with SIGKILL in the
 * middle of checkpointing leaves a checkpoint that loads, --init loads
 * weights from a safetensors file written by someone else (this test,
 * byte by byte), and a corrupt checkpoint is refused with a clear error.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "layers/graph.h"
#include "ckpt_same.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char wd[256];

/* Constant learning rate (min-lr-frac 1): a 3-step run then a resume to 6
 * must equal one 6-step run, whose cosine horizon would otherwise differ. */
#define COMMON                                                                                     \
    "--data synthetic:images --batch 16 --micro-batches 4 --log-every 100 "                        \
    "--eval-batches 1 --seed 3 --min-lr-frac 1"

static void test_resume_equivalence(void)
{
    const char *m = "mlp-fashion.graph";
    char full[300], half[300], other[300];
    snprintf(full, sizeof(full), "%s/full", wd);
    snprintf(half, sizeof(half), "%s/half", wd);
    snprintf(other, sizeof(other), "%s/other", wd);
    CHECK(bg_test_sh("'%s' train %s/models/%s " COMMON " --stages 2 --steps 6 --checkpoint-dir %s "
                     "> %s.log 2>&1",
                     brigade, srcdir, m, full, full) == 0);
    /* Same layout: 3 steps, then resume to 6. */
    CHECK(bg_test_sh("'%s' train %s/models/%s " COMMON " --stages 2 --steps 3 --checkpoint-dir %s "
                     "> %s.log 2>&1",
                     brigade, srcdir, m, half, half) == 0);
    CHECK(bg_test_sh("cp -r %s %s", half, other) == 0);
    CHECK(bg_test_sh("'%s' train %s/models/%s " COMMON " --stages 2 --steps 6 --resume "
                     "--checkpoint-dir %s > %s.resume.log 2>&1",
                     brigade, srcdir, m, half, half) == 0);
    CHECK(bg_test_sh("grep -q 'resumed from .*step 3' %s.resume.log", half) == 0);
    CHECK_MSG(bg_test_same_checkpoints(full, half),
              "resume in the same layout is not bit-identical");
    /* Another layout: written by 2 stages, resumed by 4 stages x 1 and by 1 stage. */
    CHECK(bg_test_sh("'%s' train %s/models/%s " COMMON " --stages 4 --steps 6 --resume "
                     "--checkpoint-dir %s > %s.resume.log 2>&1",
                     brigade, srcdir, m, other, other) == 0);
    CHECK_MSG(bg_test_same_checkpoints(full, other), "resume into 4 stages is not bit-identical");
    printf("resume equivalence: checked\n");
}

/* Kill the whole job at random moments while it checkpoints every step:
 * whatever `latest` names must always open and resume. */
static void test_kill_during_checkpoint(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/killed", wd);
    unsigned seed = 12345;
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
                _exit(126);
            char model[512];
            snprintf(model, sizeof(model), "%s/models/gpt-tiny.graph", srcdir);
            execl(brigade, brigade, "train", model, "--data", "synthetic:tokens", "--stages", "2",
                  "--batch", "8", "--micro-batches", "2", "--steps", "100000", "--checkpoint-every",
                  "1", "--checkpoint-dir", dir, "--log-every", "1000", "--resume", (char *)NULL);
            _exit(127);
        }
        setpgid(pid, pid);
        seed = seed * 1103515245u + 12345u;
        usleep(1500000 + (seed >> 8) % 1500000);
        kill(-pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        char *step = NULL;
        bg_ckpt_t *ck = NULL;
        bg_status_t s1 = bg_ckpt_dir_latest(dir, &step);
        CHECK_MSG(s1 == BG_OK, "round %d: latest unreadable after SIGKILL: %s", round,
                  bg_last_error());
        if (s1 == BG_OK && step) {
            CHECK_MSG(bg_ckpt_open(step, &ck) == BG_OK, "round %d: %s does not open: %s", round,
                      step, bg_last_error());
            printf("round %d: killed; latest = %s (step %lld)\n", round, step,
                   ck ? (long long)bg_ckpt_manifest(ck)->step : -1LL);
        }
        bg_ckpt_close(ck);
        free(step);
    }
}

/* A safetensors file built byte by byte here, as another tool would. */
static int write_init_file(const char *path, const bg_graph_t *g, float value)
{
    char hdr[65536];
    size_t off = 0, pos = 0;
    pos += (size_t)snprintf(hdr + pos, sizeof(hdr) - pos, "{");
    for (int p = 0; p < bg_graph_n_params(g); p++) {
        const bg_graph_param_t *gp = bg_graph_param(g, p);
        pos += (size_t)snprintf(hdr + pos, sizeof(hdr) - pos,
                                "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", p ? "," : "", gp->name);
        for (int d = 0; d < gp->desc.shape.ndim; d++)
            pos += (size_t)snprintf(hdr + pos, sizeof(hdr) - pos, "%s%lld", d ? "," : "",
                                    (long long)gp->desc.shape.d[d]);
        pos += (size_t)snprintf(hdr + pos, sizeof(hdr) - pos, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + (size_t)gp->numel * 4);
        off += (size_t)gp->numel * 4;
    }
    pos += (size_t)snprintf(hdr + pos, sizeof(hdr) - pos, "}");
    while (pos % 8)
        hdr[pos++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    uint64_t n = pos;
    fwrite(&n, 8, 1, f);
    fwrite(hdr, 1, pos, f);
    for (size_t i = 0; i < off / 4; i++) {
        float v = value + (float)(i % 7) * 1e-3f;
        fwrite(&v, 4, 1, f);
    }
    return fclose(f) == 0;
}

static void test_init(void)
{
    char model[512], file[300], dir[300];
    snprintf(model, sizeof(model), "%s/models/mlp-fashion.graph", srcdir);
    snprintf(file, sizeof(file), "%s/init.safetensors", wd);
    snprintf(dir, sizeof(dir), "%s/init", wd);
    bg_graph_t *g = NULL;
    CHECK_OK(bg_graph_parse_file(model, 4, &g));
    if (!g)
        return;
    CHECK(write_init_file(file, g, 0.01f));
    /* lr 0: the checkpoint must hold exactly the file's values. */
    CHECK(bg_test_sh("'%s' train %s " COMMON
                     " --stages 2 --steps 1 --lr 0 --init %s --checkpoint-dir %s "
                     "> %s.log 2>&1",
                     brigade, model, file, dir, dir) == 0);
    char *step = NULL;
    bg_ckpt_t *ck = NULL;
    if (bg_ckpt_dir_latest(dir, &step) == BG_OK && step && bg_ckpt_open(step, &ck) == BG_OK) {
        size_t base = 0;
        for (int p = 0; p < bg_graph_n_params(g); p++) {
            const bg_graph_param_t *gp = bg_graph_param(g, p);
            const bg_st_tensor_t *t = bg_ckpt_find(ck, gp->name, NULL);
            CHECK_MSG(t != NULL, "%s missing", gp->name);
            for (int64_t i = 0; t && i < gp->numel; i++) {
                float want = 0.01f + (float)((base + (size_t)i) % 7) * 1e-3f, got;
                memcpy(&got, (const char *)t->data + i * 4, 4);
                if (got != want) {
                    CHECK_MSG(0, "%s[%lld] = %g, file has %g", gp->name, (long long)i, got, want);
                    break;
                }
            }
            base += (size_t)gp->numel;
        }
    } else {
        CHECK_MSG(0, "no checkpoint after --init run: %s", bg_last_error());
    }
    bg_ckpt_close(ck);
    free(step);
    /* A file missing a parameter is refused with its name. */
    CHECK(bg_test_sh("head -c 100 %s > %s.trunc", file, file) == 0);
    CHECK(bg_test_sh("'%s' train %s " COMMON " --steps 1 --init %s.trunc > %s.bad.log 2>&1",
                     brigade, model, file, dir) != 0);
    CHECK(bg_test_sh("grep -qi 'init' %s.bad.log", dir) == 0);
    bg_graph_free(g);
    printf("--init: checked\n");
}

static void test_corrupt_refused(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/full", wd); /* from test_resume_equivalence */
    CHECK(bg_test_sh("f=$(ls %s/step-000006/stage-1.safetensors) && truncate -s -100 $f", dir) ==
          0);
    CHECK(bg_test_sh("'%s' train %s/models/mlp-fashion.graph " COMMON
                     " --stages 2 --steps 8 --resume "
                     "--checkpoint-dir %s > %s.corrupt.log 2>&1",
                     brigade, srcdir, dir, dir) != 0);
    CHECK_MSG(bg_test_sh("grep -q 'stage-1.safetensors' %s.corrupt.log", dir) == 0,
              "the refusal does not name the damaged file");
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "resume", &brigade, &srcdir, wd, sizeof(wd)))
        return 1;
    test_resume_equivalence();
    test_corrupt_refused();
    test_init();
    test_kill_during_checkpoint();
    bg_test_sh("rm -rf %s", wd);
    return bg_test_finish("test_resume");
}
