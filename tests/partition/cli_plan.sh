#!/usr/bin/env bash
# tests/partition/cli_plan.sh -- `brigade plan` end to end: tables, plan
# files, auto shapes, and the exit codes (0 ok, 1 does not fit, 2 usage).
# usage: cli_plan.sh BRIGADE SOURCE_DIR
set -u
B="$1"
SRC="$2"
M="$SRC/models"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
fails=0

# expect CODE PATTERN -- ARGS...: exit code CODE, output matching PATTERN
expect() {
    local code="$1" pat="$2"
    shift 3
    "$B" "$@" >"$T/out" 2>&1
    local rc=$?
    if [ "$rc" != "$code" ]; then
        echo "FAIL: brigade $* exited $rc, want $code"; cat "$T/out"; fails=$((fails + 1)); return
    fi
    if ! grep -Eq -- "$pat" "$T/out"; then
        echo "FAIL: brigade $*: output lacks /$pat/"; cat "$T/out"; fails=$((fails + 1))
    fi
}

if [ ! -f "$M/gpt2-124m.graph" ]; then echo "SKIP: models missing"; exit 0; fi

expect 0 "predicted step" -- plan "$M/gpt2-124m.graph" --stages 4 --dp 2 --batch 32
expect 0 "^3 +[0-9]+-99 " -- plan "$M/gpt2-124m.graph" --stages 4
expect 0 "split methods: +optimal" -- plan "$M/gpt2-124m.graph" --stages 4 --method uniform
expect 0 "chunk" -- plan "$M/gpt2-124m.graph" --stages 2 --schedule interleaved --chunks 2 --micro-batches 4 --batch 8
expect 0 "zb-h1" -- plan "$M/gpt2-124m.graph" --stages 4 --schedule zb-h1
expect 0 "recompute on" -- plan "$M/gpt2-124m.graph" --stages 2 --recompute
expect 0 "device h100,a100" -- plan "$M/gpt2-124m.graph" --stages 2 --device h100,a100

# -o writes a plan file with every layer
expect 0 "wrote" -- plan "$M/mlp-fashion.graph" --stages 2 --micro-batches 4 --batch 16 -o "$T/plan.json"
grep -q '"format":[[:space:]]*"brigade-plan"' "$T/plan.json" || { echo "FAIL: plan.json format"; fails=$((fails + 1)); }
grep -q '"stages":[[:space:]]*2' "$T/plan.json" || { echo "FAIL: plan.json stages"; fails=$((fails + 1)); }

# auto shapes
expect 0 "shape search over 8 devices" -- plan "$M/gpt2-124m.graph" --stages auto --gpus 8 --batch 64
expect 0 "rank stages" -- plan "$M/gpt2-124m.graph" --stages 2 --dp auto --gpus 8 --batch 64
expect 0 "micro-batches" -- plan "$M/gpt2-124m.graph" --stages 2 --micro-batches auto --batch 16
expect 0 "fits" -- plan "$M/gpt3-175b.graph" --stages auto --gpus 1024 --batch 1536 --device cuda --device-memory 80G

# does not fit: exit 1, says by how much and what would help
expect 1 "does not fit.*over.*would help" -- plan "$M/gpt3-175b.graph" --stages 4 --device cuda
expect 1 "no shape of 16 devices fits" -- plan "$M/gpt3-175b.graph" --stages auto --gpus 16 --device cuda

# usage and bad input: exit 2
expect 2 "--stages" -- plan "$M/gpt2-124m.graph"
expect 2 "unknown option" -- plan "$M/gpt2-124m.graph" --stages 2 --bogus 1
expect 2 "unknown schedule" -- plan "$M/gpt2-124m.graph" --stages 2 --schedule 3f3b
expect 2 "needs --gpus" -- plan "$M/gpt2-124m.graph" --stages auto
expect 2 "cannot open|No such file" -- plan "$T/nope.graph" --stages 2
expect 2 "only 3 layers|has only" -- plan "$M/mlp-fashion.graph" --stages 64
expect 2 "needs --schedule interleaved" -- plan "$M/gpt2-124m.graph" --stages 2 --chunks 2
expect 2 "devices listed for 3 stages" -- plan "$M/gpt2-124m.graph" --stages 3 --device h100,a100
expect 2 "not a size" -- plan "$M/gpt2-124m.graph" --stages 2 --device-memory lots
expect 2 "not divisible" -- plan "$M/gpt2-124m.graph" --stages 2 --dp 3 --batch 8
expect 2 "profile" -- plan "$M/gpt2-124m.graph" --stages 2 --profile "$T/plan.json"
expect 0 "usage: brigade plan" -- plan --help

if [ "$fails" != 0 ]; then echo "cli_plan: $fails failure(s)"; exit 1; fi
echo "cli_plan: ok"
