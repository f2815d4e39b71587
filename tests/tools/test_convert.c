/*
 * tests/tools/test_convert.c -- `brigade convert` end to end on files
 * built here (nothing can be downloaded): a GPT-2-named file for gpt-tiny
 * (Conv1D weights stored (in, out), merged c_attn, a mask buffer, the head
 * tied) and Llama-named files for llama-tiny (q/k/v and gate/up separate,
 * and merged as qkv_proj / gate_up_proj).
 * Checks: every brigade parameter is its HF tensors transposed / stacked
 * exactly (bitwise); converting back gives the HF file's tensors bitwise
 * (split or --merged); the merged and the split file give the same brigade
 * file; `train --init` accepts the result; a tensor of the wrong shape or
 * a missing one is refused with exit 2 naming it.
 * argv[1]: the brigade binary. Models come from BRIGADE_SOURCE_DIR. Works
 * in its own directory under /tmp, removed at the end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "test_util.h"

static const char *brigade, *srcdir;
static char dir[256];

/* The tensors of one HF file being built (kept to compare against). */
typedef struct hf {
    int n;
    char name[64][96];
    int ndim[64];
    int64_t d[64][2];
    float *v[64];
} hf_t;

static float *hf_add(hf_t *h, const char *name, int ndim, int64_t d0, int64_t d1, uint64_t *s)
{
    int i = h->n++;
    snprintf(h->name[i], sizeof(h->name[i]), "%s", name);
    h->ndim[i] = ndim;
    h->d[i][0] = d0;
    h->d[i][1] = d1;
    int64_t n = ndim == 2 ? d0 * d1 : d0;
    h->v[i] = malloc((size_t)n * sizeof(float));
    bg_test_fill(h->v[i], n, s, -1.0f, 1.0f);
    return h->v[i];
}

static const float *hf_get(const hf_t *h, const char *name)
{
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->name[i], name))
            return h->v[i];
    return NULL;
}

static void hf_write(const hf_t *h, const char *file)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    bg_st_writer_t *w = NULL;
    CHECK_OK(bg_st_writer_new(&w));
    for (int i = 0; w && i < h->n; i++)
        CHECK_OK(bg_st_writer_add(w, h->name[i], BG_ST_F32, h->ndim[i], h->d[i], h->v[i]));
    if (w)
        CHECK_OK(bg_st_writer_write(w, path));
    bg_st_writer_free(w);
}

static void hf_free(hf_t *h)
{
    for (int i = 0; i < h->n; i++)
        free(h->v[i]);
    h->n = 0;
}

/* gpt-tiny as GPT-2 names; skip: a tensor left out. */
static void make_gpt2(hf_t *h, const char *skip)
{
    uint64_t s = 11;
    char nm[96];
    const int64_t C = 64;
    hf_add(h, "wte.weight", 2, 256, C, &s);
    hf_add(h, "wpe.weight", 2, 64, C, &s);
    for (int b = 0; b < 2; b++) {
        static const char *const ln[] = {"ln_1", "ln_2"};
        for (int k = 0; k < 2; k++)
            for (int wb = 0; wb < 2; wb++) {
                snprintf(nm, sizeof(nm), "h.%d.%s.%s", b, ln[k], wb ? "bias" : "weight");
                hf_add(h, nm, 1, C, 0, &s);
            }
        struct {
            const char *n;
            int64_t in, out;
        } cv[] = {{"attn.c_attn", C, 3 * C},
                  {"attn.c_proj", C, C},
                  {"mlp.c_fc", C, 4 * C},
                  {"mlp.c_proj", 4 * C, C}};
        for (int k = 0; k < 4; k++) {
            snprintf(nm, sizeof(nm), "h.%d.%s.weight", b, cv[k].n);
            hf_add(h, nm, 2, cv[k].in, cv[k].out, &s); /* Conv1D: (in, out) */
            snprintf(nm, sizeof(nm), "h.%d.%s.bias", b, cv[k].n);
            hf_add(h, nm, 1, cv[k].out, 0, &s);
        }
        snprintf(nm, sizeof(nm), "h.%d.attn.bias", b); /* the causal mask buffer */
        hf_add(h, nm, 2, 64, 64, &s);
    }
    hf_add(h, "ln_f.weight", 1, C, 0, &s);
    if (!skip || strcmp(skip, "ln_f.bias"))
        hf_add(h, "ln_f.bias", 1, C, 0, &s);
}

/* llama-tiny as Llama names (q/k/v, gate/up separate); bad_k: k_proj of
 * the wrong shape. */
static void make_llama(hf_t *h, bool bad_k)
{
    uint64_t s = 12;
    char nm[96];
    const int64_t C = 64, KV = 32, F = 172;
    struct {
        const char *n;
        int64_t r, c;
    } blk[] = {{"input_layernorm.weight", C, 0},
               {"self_attn.q_proj.weight", C, C},
               {"self_attn.k_proj.weight", bad_k ? C : KV, C},
               {"self_attn.v_proj.weight", KV, C},
               {"self_attn.o_proj.weight", C, C},
               {"post_attention_layernorm.weight", C, 0},
               {"mlp.gate_proj.weight", F, C},
               {"mlp.up_proj.weight", F, C},
               {"mlp.down_proj.weight", C, F}};
    hf_add(h, "model.embed_tokens.weight", 2, 256, C, &s);
    for (int b = 0; b < 2; b++)
        for (size_t k = 0; k < sizeof(blk) / sizeof(blk[0]); k++) {
            snprintf(nm, sizeof(nm), "model.layers.%d.%s", b, blk[k].n);
            hf_add(h, nm, blk[k].c ? 2 : 1, blk[k].r, blk[k].c, &s);
        }
    hf_add(h, "model.norm.weight", 1, C, 0, &s);
    hf_add(h, "lm_head.weight", 2, 256, C, &s);
}

/* Run `brigade ARGS`, output to dir/log; the exit code. */
static int run(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cd '%s' && '%s' %s > log 2>&1", dir, brigade, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* brigade convert models/MODEL IN -o OUT EXTRA (files under dir). */
static int convert(const char *model, const char *in, const char *out, const char *extra)
{
    char args[1024];
    snprintf(args, sizeof(args), "convert '%s/models/%s' %s -o %s %s", srcdir, model, in, out,
             extra);
    return run(args);
}

/* train models/MODEL one step from --init FILE. */
static int train_init(const char *model, const char *file)
{
    char args[1024];
    snprintf(args, sizeof(args),
             "train '%s/models/%s' --data synthetic:tokens --init %s --steps 1 --batch 4 "
             "--micro-batches 1 --eval-batches 1",
             srcdir, model, file);
    return run(args);
}

static bool log_has(const char *what)
{
    char path[300], buf[4096] = "";
    snprintf(path, sizeof(path), "%s/log", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    if (!strstr(buf, what))
        fprintf(stderr, "log lacks '%s':\n%s\n", what, buf);
    return strstr(buf, what) != NULL;
}

/* Tensor `name` of file `file` (under dir) as f32 (malloc'd), its count in *n. */
static float *read_t(const char *file, const char *name, int64_t *n)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    bg_st_file_t *f = NULL;
    float *v = NULL;
    if (bg_st_open(path, &f) == BG_OK) {
        const bg_st_tensor_t *t = bg_st_find(f, name);
        if (t && (v = malloc((size_t)t->numel * 4 + 4)) &&
            bg_st_read_f32(f, name, 0, NULL, t->numel, v) == BG_OK)
            *n = t->numel;
        else
            free(v), v = NULL;
    }
    bg_st_close(f);
    CHECK_MSG(v != NULL, "%s: no tensor %s", file, name);
    return v;
}

/* rows [r0, r0 + rows) of brigade tensor `bname` (cols wide) == HF tensor
 * `hname`, stored transposed when t. */
static void same_rows(const hf_t *h, const char *file, const char *bname, const char *hname,
                      int64_t r0, int64_t rows, int64_t cols, bool t)
{
    int64_t n = 0;
    float *b = read_t(file, bname, &n);
    const float *x = hf_get(h, hname);
    bool ok = b && x;
    for (int64_t r = 0; ok && r < rows; r++)
        for (int64_t c = 0; ok && c < cols; c++)
            ok = b[(r0 + r) * cols + c] == (t ? x[c * rows + r] : x[r * cols + c]);
    CHECK_MSG(ok, "%s: %s rows %lld.. are not %s%s", file, bname, (long long)r0, hname,
              t ? " transposed" : "");
    free(b);
}

/* Every tensor of h (buffers aside) is in `file` bitwise. */
static void same_file(const hf_t *h, const char *file)
{
    for (int i = 0; i < h->n; i++) {
        if (strstr(h->name[i], ".attn.bias"))
            continue;
        int64_t n = 0;
        float *v = read_t(file, h->name[i], &n);
        int64_t want = h->ndim[i] == 2 ? h->d[i][0] * h->d[i][1] : h->d[i][0];
        CHECK_MSG(v && n == want && !memcmp(v, h->v[i], (size_t)n * 4), "%s: %s differs", file,
                  h->name[i]);
        free(v);
    }
}

static void test_gpt2(void)
{
    hf_t h = {0};
    make_gpt2(&h, NULL);
    hf_write(&h, "gpt2.safetensors");
    CHECK_MSG(convert("gpt-tiny.graph", "gpt2.safetensors", "b.st", "") == 0 && log_has("gpt2"),
              "gpt2 -> brigade failed");
    same_rows(&h, "b.st", "embed.tokens", "wte.weight", 0, 256, 64, false);
    same_rows(&h, "b.st", "embed.positions", "wpe.weight", 0, 64, 64, false);
    same_rows(&h, "b.st", "block.1.attn.qkv.weight", "h.1.attn.c_attn.weight", 0, 192, 64, true);
    same_rows(&h, "b.st", "block.1.attn.qkv.bias", "h.1.attn.c_attn.bias", 0, 192, 1, false);
    same_rows(&h, "b.st", "block.0.fc.weight", "h.0.mlp.c_fc.weight", 0, 256, 64, true);
    same_rows(&h, "b.st", "block.0.proj.weight", "h.0.mlp.c_proj.weight", 0, 64, 256, true);
    same_rows(&h, "b.st", "ln_f.bias", "ln_f.bias", 0, 64, 1, false);
    CHECK_MSG(convert("gpt-tiny.graph", "b.st", "back.st", "") == 0, "brigade -> gpt2 failed");
    same_file(&h, "back.st");
    CHECK_MSG(train_init("gpt-tiny.graph", "b.st") == 0,
              "train --init of the converted file failed");
    hf_free(&h);
    make_gpt2(&h, "ln_f.bias"); /* a missing tensor is named */
    hf_write(&h, "gpt2.safetensors");
    CHECK_MSG(convert("gpt-tiny.graph", "gpt2.safetensors", "x.st", "") == 2 &&
                  log_has("ln_f.bias"),
              "missing ln_f.bias not refused");
    hf_free(&h);
}

static void test_llama(void)
{
    hf_t h = {0}, m = {0};
    make_llama(&h, false);
    hf_write(&h, "llama.safetensors");
    CHECK_MSG(convert("llama-tiny.graph", "llama.safetensors", "b1.st", "") == 0 &&
                  log_has("llama"),
              "llama -> brigade failed");
    const char *a = "layers.1.attention.qkv.weight", *w = "layers.0.w13.weight";
    same_rows(&h, "b1.st", a, "model.layers.1.self_attn.q_proj.weight", 0, 64, 64, false);
    same_rows(&h, "b1.st", a, "model.layers.1.self_attn.k_proj.weight", 64, 32, 64, false);
    same_rows(&h, "b1.st", a, "model.layers.1.self_attn.v_proj.weight", 96, 32, 64, false);
    same_rows(&h, "b1.st", w, "model.layers.0.mlp.gate_proj.weight", 0, 172, 64, false);
    same_rows(&h, "b1.st", w, "model.layers.0.mlp.up_proj.weight", 172, 172, 64, false);
    same_rows(&h, "b1.st", "output.weight", "lm_head.weight", 0, 256, 64, false);
    CHECK_MSG(convert("llama-tiny.graph", "b1.st", "back.st", "") == 0, "brigade -> llama failed");
    same_file(&h, "back.st");
    /* merged: the same values as one qkv_proj / gate_up_proj */
    CHECK_MSG(convert("llama-tiny.graph", "b1.st", "merged.st", "--to hf --merged") == 0,
              "brigade -> llama --merged failed");
    same_rows(&h, "merged.st", "model.layers.1.self_attn.qkv_proj.weight",
              "model.layers.1.self_attn.k_proj.weight", 64, 32, 64, false);
    CHECK_MSG(convert("llama-tiny.graph", "merged.st", "b2.st", "") == 0,
              "merged llama -> brigade failed");
    int64_t n1 = 0, n2 = 0;
    float *x1 = read_t("b1.st", a, &n1), *x2 = read_t("b2.st", a, &n2);
    CHECK(x1 && x2 && n1 == n2 && !memcmp(x1, x2, (size_t)n1 * 4));
    free(x1), free(x2);
    CHECK_MSG(train_init("llama-tiny.graph", "b2.st") == 0,
              "train --init of the converted llama failed");
    make_llama(&m, true); /* k_proj of the wrong shape */
    hf_write(&m, "llama.safetensors");
    CHECK_MSG(convert("llama-tiny.graph", "llama.safetensors", "x.st", "") == 2 &&
                  log_has("k_proj.weight") && log_has("qkv.weight"),
              "a k_proj of the wrong shape was not refused by name");
    hf_free(&h);
    hf_free(&m);
}

int main(int argc, char **argv)
{
    if (!bg_test_cli_start(argc, argv, "convert", &brigade, &srcdir, dir, sizeof(dir)))
        return 1;
    test_gpt2();
    test_llama();
    bg_test_sh("rm -rf '%s'", dir);
    return bg_test_finish("test_convert");
}
