/*
 * tests/fuzz/fuzz_safetensors.c -- libFuzzer target for the safetensors
 * reader (engine/checkpoint_st.c): any file either opens into tensors that
 * lie inside the mapping and read back as f32, or fails with BG_ERR_INVALID
 * and a message; an open file's pieces ("<name>@<offset>" in a file with
 * "shard" metadata, docs/checkpoints.md "Sharded files") either tile their
 * tensors and assemble, or are refused the same way. Must not keep state
 * between inputs.
 */
#include "engine/checkpoint.h"
#include "engine/checkpoint_shard.h"
#include "fuzz_util.h"

/* The file's logical tensors: pieces that tile, assembled, or a refusal. */
static void check_pieces(bg_st_file_t *f)
{
    ckpt_table_t tb;
    bg_status_t st = bg_ckpt_table_build_(&f, 1, &tb);
    if (st != BG_OK) {
        fuzz_check_error("fuzz_safetensors", st);
        return;
    }
    for (size_t i = 0; i < tb.nten; i++) {
        const ckpt_tensor_t *x = &tb.ten[i];
        float buf[4096];
        if (x->info.pieces == 0 || x->info.numel > 4096)
            continue;
        st = bg_ckpt_table_read_(&tb, &f, x, 0, x->info.numel, buf);
        if (st != BG_OK)
            fuzz_die("fuzz_safetensors", "pieces accepted but not readable", x->info.name);
    }
    bg_ckpt_table_free_(&tb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    fuzz_write("in.safetensors", data, size, path, sizeof(path));
    bg_st_file_t *f = NULL;
    bg_status_t st = bg_st_open(path, &f);
    if (st != BG_OK) {
        fuzz_check_error("fuzz_safetensors", st);
        return 0;
    }
    for (size_t i = 0; i < bg_st_count(f); i++) {
        const bg_st_tensor_t *t = bg_st_tensor_at(f, i);
        if (t->offset + t->nbytes > size) fuzz_die("fuzz_safetensors", "tensor past the end", t->name);
        if (t->numel > 4096) continue;
        float buf[4096];
        st = bg_st_read_f32(f, t->name, t->ndim, t->shape, t->numel, buf);
        if (st != BG_OK && st != BG_ERR_INVALID) fuzz_die("fuzz_safetensors", "read", bg_last_error());
    }
    for (size_t i = 0; i < bg_st_meta_count(f); i++) {
        const char *k, *v;
        bg_st_meta_at(f, i, &k, &v);
        if (!k || !v || bg_st_meta(f, k) == NULL) fuzz_die("fuzz_safetensors", "metadata", k);
    }
    check_pieces(f);
    bg_st_close(f);
    return 0;
}
