#!/usr/bin/env bash
# scripts/gpu-check.sh -- one command for a machine with a GPU: every
# `gpu`-labelled test, the GPU benchmarks and a GPT-2 124M training step,
# from a build made beforehand, ending in ONE table (item, result,
# reference/ratio, seconds), also written to $OUT/gpu-check.txt when $OUT
# is set. Each step runs under its own timeout, clipped to what is left of
# a total budget, so one hang cannot eat the machine's time.
#
# Without a GPU it prints one "no GPU" line and exits 0; --dry-run prints
# the plan (steps and timeouts) and exits 0 anywhere.
#
# Must NOT: build anything (device time is short), change the card's
# clocks, modes or power, or turn a benchmark number into pass/fail: only
# tests pass or fail; benchmarks report numbers next to a reference.
#
# Usage: scripts/gpu-check.sh [--dry-run] [BUILD_DIR]   (default build)
# Environment: GPU_CHECK_BUDGET_S (total seconds, default 420),
#   NVIDIA_SMI (the probe command, default nvidia-smi), OUT (results folder).
set -uo pipefail

dry=0
build=
for a in "$@"; do
    case "$a" in
    --dry-run) dry=1 ;;
    -h | --help)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "gpu-check: unknown option $a (see --help)" >&2
        exit 2
        ;;
    *) build=$a ;;
    esac
done
build=${build:-build}
src=$(cd "$(dirname "$0")/.." && pwd)
budget=${GPU_CHECK_BUDGET_S:-420}
case "$budget" in
'' | *[!0-9]*)
    echo "gpu-check: GPU_CHECK_BUDGET_S must be whole seconds, got '$budget'" >&2
    exit 2
    ;;
esac
smi=${NVIDIA_SMI:-nvidia-smi}

# The plan: name, timeout in seconds, what it runs. GPT-2 at batch 8 x 1024
# tokens: a step of a few hundred ms on a Hopper card, 12 steps, the first
# 4 are warm-up and not counted.
train_steps=12
train_batch=8
# Step timeouts: their sum stays within the default budget (checked by
# tests/tools/gpu_check_test.sh), leaving a minute of the 8 for start-up.
to_tests=160 to_layers=65 to_att=45 to_train=90 to_san=40
plan=(
    "tests|$to_tests|ctest -L gpu (per-test timeout 150 s)"
    "bench_layers|$to_layers|bench_layers --device cuda --dtype bf16: GEMM peaks, copy, layers"
    "attention|$to_att|bench_layers --device cuda --attention-seqs 256,1024,4096"
    "bench_step|0|optimizer step bench: CPU only (no cuda mode), not run"
    "tp_bench|0|transport bench: host memory only (no device mode), not run"
    "train|$to_train|brigade train gpt2-124m --device cuda --dtype bf16 --batch $train_batch --steps $train_steps"
    "sanitizer|$to_san|compute-sanitizer --tool memcheck tests/gpu/test_gpu_step (if installed)"
)

if [ "$dry" = 1 ]; then
    echo "gpu-check plan (build $build, total budget ${budget} s):"
    for p in "${plan[@]}"; do
        IFS='|' read -r name to what <<<"$p"
        printf '  %-13s timeout %4s s  %s\n' "$name" "$to" "$what"
    done
    exit 0
fi

# The cheapest honest probe: the driver's own tool lists the cards; no
# listing (no tool, no driver, no card) means no GPU.
# Without a driver nvidia-smi prints its failure on stdout: only a
# successful listing counts (pipefail).
gpu_name=$("$smi" --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || gpu_name=
if [ -z "$gpu_name" ]; then
    echo "gpu-check: no GPU on this machine ($smi lists none); nothing to run"
    exit 0
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
    echo "gpu-check: $build is not a build folder (build here first: see docs/cuda.md)" >&2
    exit 2
fi
if grep -q '^BG_CUDA:STRING=OFF' "$build/CMakeCache.txt" ||
    ! grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$build/CMakeCache.txt"; then
    echo "gpu-check: $build was configured without CUDA; rebuild with nvcc" >&2
    exit 2
fi
build=$(cd "$build" && pwd)
# CTest files name the build's absolute path: a build carried to another
# path finds no test binaries. Say so in the table instead of guessing.
built_at=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")
moved=
[ -n "$built_at" ] && [ "$built_at" != "$build" ] && [ ! -d "$built_at" ] &&
    moved="configured at $built_at, now $build: ctest may not find the tests"

logs=${OUT:+$OUT/gpu-check-logs}
logs=${logs:-$build/gpu-check-logs}
mkdir -p "$logs"
t_start=$(date +%s)
rows=()

# row ITEM RESULT REFERENCE SECONDS: one line of the final table.
row() { rows+=("$1|$2|$3|$4"); }

# run_step NAME TIMEOUT LOG CMD...: CMD under min(TIMEOUT, budget left);
# sets step_rc (124: timed out) and step_s.
run_step() {
    local name=$1 to=$2 log=$3
    shift 3
    local left=$((budget - ($(date +%s) - t_start)))
    [ "$to" -gt "$left" ] && to=$left
    if [ "$to" -le 5 ]; then
        step_rc=125 step_s=0
        echo "gpu-check: $name not run: budget spent" >"$log"
        return
    fi
    local t0
    t0=$(date +%s.%N)
    echo "gpu-check: $name (timeout ${to} s)" >&2
    timeout -k 5 "$to" "$@" >"$log" 2>&1
    step_rc=$?
    step_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# status_of: pass/fail/timeout from step_rc.
status_of() {
    case "$step_rc" in
    0) echo pass ;;
    124 | 137) echo "timeout" ;;
    125) echo "not run (budget)" ;;
    *) echo "fail (rc $step_rc)" ;;
    esac
}

# ---- tests ----
# -V: a test that skips still passes, so its "SKIP: reason" must be seen.
run_step tests "$to_tests" "$logs/tests.log" ctest --test-dir "$build" -L gpu --timeout 150 -V
summary=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$logs/tests.log")
skips=$(grep -c 'SKIP' "$logs/tests.log")
tests_rc=$step_rc
st=$(status_of)
# ctest finding no test exits 0: that is no pass.
[ "$st" = pass ] && [ -z "$summary" ] && st="fail (no gpu test found)" tests_rc=1
# A GPU test that skipped on a GPU machine did not test anything.
[ "$st" = pass ] && [ "$skips" -gt 0 ] && st="skip ($skips SKIP lines)" tests_rc=1
row "ctest -L gpu" "$st" "${summary:-no ctest summary}${moved:+; $moved}" "$step_s"

# ---- layers: measured peaks, then each layer's share of the GEMM peak ----
bl=$build/bench/layers/bench_layers
run_step bench_layers "$to_layers" "$logs/bench_layers.log" "$bl" --device cuda --dtype bf16
L=$logs/bench_layers.log
peak_bf16=$(awk '/GEMM bf16/ { for (i = 1; i < NF; i++) if ($(i + 1) == "TFLOP/s") print $i }' "$L")
peak_f32=$(awk '/GEMM f32/ { for (i = 1; i < NF; i++) if ($(i + 1) == "TFLOP/s") print $i }' "$L")
copy_bw=$(awk '/copy D2D/ { for (i = 1; i < NF; i++) if ($(i + 1) == "GB/s") print $i }' "$L")
st=$(status_of)
row "GEMM bf16 8192^3 (cuBLAS)" "$st ${peak_bf16:-?} TFLOP/s" \
    "$(awk -v p="${peak_bf16:-0}" 'BEGIN { printf "%.0f%% of 989 TFLOP/s (H200/H100 SXM dense bf16 datasheet)", 100 * p / 989 }')" "$step_s"
row "GEMM f32 8192^3 (cuBLAS)" "${peak_f32:-?} TFLOP/s" "same run" "-"
row "copy D2D 1 GiB" "${copy_bw:-?} GB/s" "read + write; H200 HBM3e datasheet 4800 GB/s" "-"
# Layer rows: "  LABEL... PHASE ms TFLOP/s %gemm GB/s %copy", LABEL of one
# or more words: the phase is the field followed by two numbers and a %.
awk '{ for (i = 2; i + 3 <= NF; i++)
        if ($i ~ /^[FBW]$/ && $(i + 1) ~ /^[0-9.]+$/ && $(i + 3) ~ /^[0-9.]+%$/) {
            g = $(i + 3); sub(/%/, "", g); n++; s += g; lab = $1
            for (j = 2; j <= i; j++) lab = lab " " $j
            if (n == 1 || g + 0 > best + 0) { best = g; bn = lab }
            break
        }
    } END { if (n) printf "%d|%.1f|%s %s\n", n, s / n, bn, best }' "$L" >"$logs/layers.sum"
IFS='|' read -r nl mean best <"$logs/layers.sum" || true
row "layers F/B/W (GPT-2 small)" "${nl:-0} rows, mean ${mean:-?}% of GEMM" \
    "best ${best:-?}% of the bf16 GEMM peak above" "-"

# ---- attention at T 256 / 1024 / 4096 ----
run_step attention "$to_att" "$logs/attention.log" "$bl" --device cuda --dtype bf16 \
    --attention-seqs 256,1024,4096
st=$(status_of)
att=$(awk '$2 == "flash" { printf "%sT%s %s ms", sep, $1, $6; sep = ", " }' "$logs/attention.log")
row "attention F+B+W (flash)" "$st" "${att:-no rows}" "$step_s"

# ---- benches without a GPU mode: say so ----
row "bench_step (optimizer)" "skip" "CPU only: no cuda mode (tests/gpu/test_gpu_step covers the CUDA step)" "0"
row "tp_bench (allreduce)" "skip" "host memory only: no device mode (UCX there has no CUDA transport)" "0"

# ---- GPT-2 124M training: tokens/s and MFU ----
model=$src/models/gpt2-124m.graph
params=$("$build/brigade" check "$model" | awk '/^parameters:/ { gsub(",", "", $2); print $2 }')
ctx=$("$build/brigade" check "$model" --json |
    awk '/"name": "tokens"/ { sub(/.*"dims": \[[0-9]+, */, ""); sub(/\].*/, ""); print; exit }')
metrics=$logs/train-metrics.jsonl
rm -f "$metrics"
tmpd=$(mktemp -d)
run_step train "$to_train" "$logs/train.log" env -C "$tmpd" "$build/brigade" train "$model" \
    --device cuda --dtype bf16 --batch "$train_batch" --steps "$train_steps" --log-every 1 \
    --data synthetic:tokens --eval-batches 1 --metrics "$metrics"
rm -rf "$tmpd"
st=$(status_of)
# Median step_ms over the steps after the 4 warm-up steps.
step_ms=$(grep -o '"step":[0-9]*,"loss"[^}]*"step_ms":[0-9.]*' "$metrics" 2>/dev/null |
    awk -F'[:,]' '$2 > 4 { print $NF }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
if [ -n "$step_ms" ] && [ -n "$params" ] && [ -n "$ctx" ]; then
    tps=$(awk -v b="$train_batch" -v t="$ctx" -v ms="$step_ms" 'BEGIN { printf "%.0f", b * t / (ms * 1e-3) }')
    mfu=$(awk -v p="$params" -v r="$tps" 'BEGIN { printf "%.1f", 100 * 6 * p * r / 989e12 }')
    mfu_m=$(awk -v p="$params" -v r="$tps" -v g="${peak_bf16:-0}" \
        'BEGIN { if (g > 0) printf "%.1f", 100 * 6 * p * r / (g * 1e12); else print "?" }')
    row "GPT-2 124M train bf16 B=$train_batch T=$ctx" "$st $tps tok/s ($step_ms ms/step)" \
        "MFU ${mfu}% of 989 TFLOP/s; ${mfu_m}% of measured GEMM" "$step_s"
else
    row "GPT-2 124M train bf16" "$st" "no step time parsed (see train.log)" "$step_s"
fi

# ---- compute-sanitizer: memcheck over the step ops' and defects' test ----
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$san" ]; then
    run_step sanitizer "$to_san" "$logs/sanitizer.log" "$san" --tool memcheck --error-exitcode 3 \
        "$build/tests/gpu/test_gpu_step"
    st=$(status_of)
    errs=$(grep -Eo 'ERROR SUMMARY: [0-9]+ errors?' "$logs/sanitizer.log" | tail -n 1)
    row "compute-sanitizer memcheck" "$st" "test_gpu_step: ${errs:-no summary}" "$step_s"
    # Errors found (or the test failing under it) fail the check; a timeout
    # under memcheck's slowdown only says so in the table.
    case "$step_rc" in 0 | 124 | 125 | 137) ;; *) tests_rc=1 ;; esac
else
    row "compute-sanitizer memcheck" "not run" "no compute-sanitizer (CUDA toolkit) on PATH" "0"
fi

# ---- the table ----
total=$(($(date +%s) - t_start))
{
    echo "gpu-check on $gpu_name, build $build, ${total} s of a ${budget} s budget"
    printf '%-34s | %-38s | %-70s | %s\n' item result "reference / ratio" seconds
    for r in "${rows[@]}"; do
        IFS='|' read -r a b c d <<<"$r"
        printf '%-34s | %-38s | %-70s | %s\n' "$a" "$b" "$c" "$d"
    done
    echo "MFU = 6 x $params parameters x tokens/s / peak (the 6N rule: attention FLOPs not counted);"
    echo "989 TFLOP/s: NVIDIA H100/H200 SXM dense bf16 datasheet. Logs: $logs"
} | tee ${OUT:+"$OUT/gpu-check.txt"}
# Only tests decide the exit status; benchmark numbers never fail the run.
[ "$tests_rc" = 0 ] || exit 1
exit 0
