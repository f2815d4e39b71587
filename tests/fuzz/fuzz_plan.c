/*
 * tests/fuzz/fuzz_plan.c -- libFuzzer target for plan and profile JSON
 * (partition/plan_io.c, partition/profile.c). The first byte picks the
 * parser; the rest is the text. Accepted plans have consistent chunk bounds
 * and batch; anything else fails with BG_ERR_INVALID and a message. Must
 * not keep state between inputs.
 */
#include "fuzz_util.h"
#include "partition/plan_io.h"
#include "partition/profile.h"

static void check_plan(const bg_plan_file_t *pf)
{
    if (pf->n_chunks < 1 || pf->bounds[0] != 0 || pf->bounds[pf->n_chunks] != pf->n_layers)
        fuzz_die("fuzz_plan", "chunk bounds do not cover the layers", NULL);
    for (int c = 0; c < pf->n_chunks; c++)
        if (pf->bounds[c] >= pf->bounds[c + 1]) fuzz_die("fuzz_plan", "empty or reversed chunk", NULL);
    if (pf->global_batch != (int64_t)pf->micro_batch * pf->cfg.micro_batches * pf->cfg.dp)
        fuzz_die("fuzz_plan", "global batch inconsistent", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    bg_status_t st;
    if (data[0] & 1) {
        bg_profile_t p;
        st = bg_profile_parse(text, size - 1, "fuzz", &p);
        if (st == BG_OK) bg_profile_free(&p);
    } else {
        bg_plan_file_t pf;
        st = bg_plan_parse(text, size - 1, "fuzz", &pf);
        if (st == BG_OK) {
            check_plan(&pf);
            bg_plan_file_free(&pf);
        }
    }
    if (st != BG_OK) fuzz_check_error("fuzz_plan", st);
    return 0;
}
