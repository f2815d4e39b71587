#!/usr/bin/env bash
# tests/transport/run_fuzz.sh SOURCE_DIR WORK_DIR SECONDS [FUZZ_BINARY]
# Fuzz the store's message decoder for SECONDS from the committed seeds.
# Without FUZZ_BINARY: a clang tree with BG_FUZZ=ON in WORK_DIR/fuzz-build
# builds the target (no clang: exit 77, ctest's skip). Findings and new
# inputs go under WORK_DIR only; the source tree is never written.
set -eu
src=$1 work=$2 secs=$3 bin=${4:-}
mkdir -p "$work/corpus"
if [ -z "$bin" ]; then
    cc=$(command -v clang || command -v clang-14 || true)
    [ -n "$cc" ] || { echo "SKIP: clang not found; the fuzz target needs libFuzzer"; exit 77; }
    cmake -S "$src" -B "$work/fuzz-build" -DCMAKE_C_COMPILER="$cc" -DBG_FUZZ=ON -DBG_CUDA=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$work/fuzz-build" --target fuzz_store_wire -j2 >/dev/null
    bin=$work/fuzz-build/tests/transport/fuzz_store_wire
fi
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=4096 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" "$src/tests/transport/corpus"
