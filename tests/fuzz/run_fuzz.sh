#!/usr/bin/env bash
# tests/fuzz/run_fuzz.sh SOURCE_DIR WORK_DIR SECONDS [BIN_DIR]
# Run every file-format fuzz target for SECONDS over its seeds
# (tests/fuzz/corpus/TARGET) and past findings (tests/fuzz/regress/TARGET).
# Without BIN_DIR it builds the targets with clang in WORK_DIR/fuzz-build
# (BG_FUZZ=ON); without clang it exits 77 (ctest: skipped). New inputs go to
# WORK_DIR/corpus/TARGET, crashes to WORK_DIR/. Must not write into the
# source tree.
set -eu
src=$1
work=$2
secs=$3
bins=${4:-}
targets="fuzz_safetensors fuzz_manifest fuzz_plan fuzz_data"
mkdir -p "$work"
if [ -z "$bins" ]; then
    cc=$(command -v clang || command -v clang-14 || true)
    if [ -z "$cc" ]; then
        echo "SKIP: clang not found; the fuzz targets need libFuzzer"
        exit 77
    fi
    cmake -S "$src" -B "$work/fuzz-build" -DCMAKE_C_COMPILER="$cc" -DBG_FUZZ=ON -DBG_CUDA=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    # shellcheck disable=SC2086
    cmake --build "$work/fuzz-build" --target $targets -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
    bins=$work/fuzz-build/tests/fuzz
fi
for t in $targets; do
    mkdir -p "$work/corpus/$t"
    dirs="$work/corpus/$t $src/tests/fuzz/corpus/$t"
    [ -d "$src/tests/fuzz/regress/$t" ] && dirs="$dirs $src/tests/fuzz/regress/$t"
    echo "== $t"
    # shellcheck disable=SC2086
    "$bins/$t" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/$t-" -print_final_stats=1 $dirs
done
