/*
 * tests/fuzz/fuzz_manifest.c -- libFuzzer target for checkpoint manifests
 * (bg_ckpt_manifest_parse): any text either gives a manifest whose layout is
 * in range with one plain-named file per stage (per stage and replica when
 * sharded, each with its stage and shard in order), or fails with
 * BG_ERR_INVALID and a message. Must not keep state between inputs.
 */
#include "engine/checkpoint.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bg_ckpt_manifest_t m;
    bg_status_t st = bg_ckpt_manifest_parse((const char *)data, size, "fuzz", &m);
    if (st != BG_OK) {
        fuzz_check_error("fuzz_manifest", st);
        return 0;
    }
    if (m.step < 0 || m.stages < 1 || m.dp < 1 || (m.shards != 1 && m.shards != m.dp) ||
        (int64_t)m.nfiles != (int64_t)m.stages * m.shards)
        fuzz_die("fuzz_manifest", "layout out of range accepted", NULL);
    for (int i = 0; i < m.nfiles; i++) {
        if (!m.files[i].name[0] || strchr(m.files[i].name, '/'))
            fuzz_die("fuzz_manifest", "file name leaves the step directory", m.files[i].name);
        if (m.files[i].stage != i / m.shards || m.files[i].shard != i % m.shards)
            fuzz_die("fuzz_manifest", "file out of stage/shard order accepted", m.files[i].name);
    }
    bg_ckpt_manifest_free(&m);
    return 0;
}
