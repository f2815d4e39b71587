#!/usr/bin/env bash
# tests/tools/gpu_check_test.sh SCRIPT BUILD_DIR -- scripts/gpu-check.sh
# without a GPU: the probe is pointed at a command that does not exist, so
# the no-GPU path is what runs on any machine (a GPU one too); --dry-run
# lists every step with a timeout and the timeouts fit the total budget;
# bad usage and a build folder that is not one are refused. Must NOT run
# any GPU step (those need the device and minutes).
set -u
unset GPU_CHECK_BUDGET_S  # the default budget is what is checked
script=$1 build=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/bg-gpucheck-XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# No GPU: exit 0, exactly one line, saying so, and nothing written to $OUT.
NVIDIA_SMI="$T/no-such-probe" OUT="$T/out" bash "$script" "$build" >"$T/o" 2>&1
rc=$?
[ $rc -eq 0 ] || bad "no GPU: exit $rc, want 0"
[ "$(wc -l <"$T/o")" -eq 1 ] || bad "no GPU: want one line, got: $(cat "$T/o")"
grep -q '^gpu-check: no GPU on this machine' "$T/o" || bad "no GPU line missing: $(cat "$T/o")"
[ ! -e "$T/out" ] || bad "no GPU: wrote under \$OUT"

# A probe that fails (nvidia-smi without a driver prints its error on
# stdout): no GPU too, not a card named by the error text.
printf '#!/bin/sh\necho "NVIDIA-SMI has failed: no driver"\nexit 9\n' >"$T/failing" &&
    chmod +x "$T/failing"
NVIDIA_SMI="$T/failing" bash "$script" "$build" >"$T/o" 2>&1 || bad "failing probe: exit $?"
grep -q '^gpu-check: no GPU on this machine' "$T/o" || bad "failing probe: $(cat "$T/o")"

# Dry run: every step named with its timeout; the timeouts of the steps that
# run fit the budget (default and a given one).
bash "$script" --dry-run "$build" >"$T/p" 2>&1 || bad "--dry-run: exit $?"
for step in tests bench_layers attention bench_step tp_bench train; do
    grep -Eq "^  $step +timeout +[0-9]+ s" "$T/p" || bad "--dry-run: no step $step: $(cat "$T/p")"
done
budget=$(sed -n 's/.*total budget \([0-9]*\) s.*/\1/p' "$T/p")
sum=$(awk '$2 == "timeout" { s += $3 } END { print s + 0 }' "$T/p")
[ -n "$budget" ] || bad "--dry-run: no budget line"
[ "$sum" -gt 0 ] && [ "$sum" -le "${budget:-0}" ] || bad "--dry-run: timeouts sum $sum over budget $budget"
[ "${budget:-0}" -le 420 ] || bad "default budget $budget s over 7 minutes"
grep -q 'gpt2-124m.*--device cuda --dtype bf16' "$T/p" || bad "--dry-run: no GPT-2 training step"
GPU_CHECK_BUDGET_S=300 bash "$script" --dry-run | grep -q 'total budget 300 s' ||
    bad "--dry-run ignores GPU_CHECK_BUDGET_S"

# Bad usage: exit 2. A probe that reports a GPU but a folder that is not a
# build: exit 2 with a message naming it, before any step runs.
bash "$script" --frobnicate >/dev/null 2>&1
[ $? -eq 2 ] || bad "unknown option: want exit 2"
printf '#!/bin/sh\necho "Test GPU"\n' >"$T/probe" && chmod +x "$T/probe"
NVIDIA_SMI="$T/probe" bash "$script" "$T/not-a-build" >"$T/e" 2>&1
rc=$?
[ $rc -eq 2 ] || bad "not a build folder: exit $rc, want 2"
grep -q "not-a-build is not a build folder" "$T/e" || bad "not a build folder: $(cat "$T/e")"
grep -q '(timeout' "$T/e" && bad "a step ran for a folder that is not a build"

[ $fail -eq 0 ] && echo "gpu-check script: no-GPU line, plan and refusals as expected"
exit $fail
