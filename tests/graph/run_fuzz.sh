#!/usr/bin/env bash
# tests/graph/run_fuzz.sh SOURCE_DIR WORK_DIR SECONDS [FUZZ_BINARY]
# Fuzz the graph parser for SECONDS over the seed corpus and past findings.
# Without FUZZ_BINARY it builds one with clang in WORK_DIR/fuzz-build
# (BG_FUZZ=ON); without clang it exits 77 (ctest: skipped).
# New interesting inputs go to WORK_DIR/corpus, crashes to WORK_DIR/.
# Must not write into the source tree.
set -eu
src=$1
work=$2
secs=$3
bin=${4:-}
mkdir -p "$work/corpus"
if [ -z "$bin" ]; then
    cc=$(command -v clang || command -v clang-14 || true)
    if [ -z "$cc" ]; then
        echo "SKIP: clang not found; the fuzz target needs libFuzzer"
        exit 77
    fi
    cmake -S "$src" -B "$work/fuzz-build" -DCMAKE_C_COMPILER="$cc" -DBG_FUZZ=ON -DBG_CUDA=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$work/fuzz-build" --target fuzz_graph -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
    bin=$work/fuzz-build/tests/graph/fuzz_graph
fi
exec "$bin" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len=16384 \
    -dict="$src/tests/graph/graph.dict" -artifact_prefix="$work/" -print_final_stats=1 \
    "$work/corpus" "$src/tests/graph/corpus" "$src/tests/graph/regress"
