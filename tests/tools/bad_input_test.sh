#!/usr/bin/env bash
# tests/tools/bad_input_test.sh BRIGADE SOURCE_DIR -- `brigade train` fed
# hostile input: each case asserts the exit code, a message naming the cause
# (file, tensor, rank, option) and, where the old failure was slowness or
# memory, a time bound. Cases are numbered as in docs/engine.md "Bad input".
# Needs python3 to edit checkpoints (skipped without it). Writes only under
# a temporary directory.
set -u
B=$1
src=$2
M=$src/models/mlp-fashion.graph
fail=0
T=$(mktemp -d "${TMPDIR:-/tmp}/bg-bad-input-XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
export BRIGADE_NO_BIND=1
poke() { python3 "$src/tests/tools/ckpt_poke.py" "$@"; }

# expect CODE SECONDS REGEX -- ARGS...: exit code CODE within SECONDS, and
# REGEX (grep -E) in the combined output.
expect() {
    local code=$1 secs=$2 re=$3
    shift 4
    local t0=$SECONDS
    timeout 300 "$B" "$@" >"$T/out" 2>&1
    local rc=$? dt=$((SECONDS - t0))
    if [ $rc -ne "$code" ]; then
        echo "FAIL: exit $rc (want $code): $*" >&2
        sed 's/^/    /' "$T/out" | tail -5 >&2
        fail=1
    elif ! grep -Eq -- "$re" "$T/out"; then
        echo "FAIL: no /$re/ in the output of: $*" >&2
        sed 's/^/    /' "$T/out" | tail -5 >&2
        fail=1
    elif [ $dt -gt "$secs" ]; then
        echo "FAIL: took ${dt}s (bound ${secs}s): $*" >&2
        fail=1
    else
        echo "ok: $*"
    fi
}
syn="--data synthetic --batch 16"

# 1. sizes that overflow are refused in the launcher, before any rank starts.
expect 2 20 "dim=288230376151712528 too large" -- train "$M" \
    --data synthetic:images,dim=288230376151712528 --steps 2 --batch 16
expect 2 20 "n=9223372036854775807.*too large" -- train "$M" \
    --data synthetic:images,n=9223372036854775807 --steps 2 --batch 16

# A checkpoint to edit: 4 steps.
expect 0 60 "trained 4 steps" -- train "$M" $syn --steps 4 --checkpoint-dir "$T/ck"
st0=$T/ck/step-000004/stage-0.safetensors
fresh() { rm -rf "$T/c2"; cp -r "$T/ck" "$T/c2"; }

if command -v python3 >/dev/null; then
    # 2. non-finite or impossible values are refused by name (file, tensor).
    fresh; poke set "$T/c2/step-000004" head.weight nan
    expect 2 60 "stage-0.safetensors: tensor 'head.weight' holds nan" -- train "$M" $syn \
        --steps 6 --checkpoint-dir "$T/c2" --resume
    grep -q step-000004 "$T/c2/latest" || { echo "FAIL: latest moved" >&2; fail=1; }
    fresh; poke set "$T/c2/step-000004" head.weight.adam_v -1
    expect 2 60 "'head.weight.adam_v' holds -1.*second moment" -- train "$M" $syn \
        --steps 6 --checkpoint-dir "$T/c2" --resume
    poke init "$T/big.st" "$st0" head.bias F64 1e300
    expect 2 60 "big.st: tensor 'head.bias' holds inf" -- train "$M" $syn --steps 2 \
        --init "$T/big.st"
    poke init "$T/nan.st" "$st0" head.bias F32 nan
    expect 2 60 "nan.st: tensor 'head.bias' holds nan" -- train "$M" $syn --steps 2 \
        --init "$T/nan.st"
    # Finite but absurd weights: the first step's loss or gradient is not finite.
    poke init "$T/huge.st" "$st0" fc1.weight F32 3e37
    expect 1 60 "rank [01] \(stage [01], dp 0\): non-finite value at step 1.*without saving" -- \
        train "$M" $syn --stages 2 --steps 3 --init "$T/huge.st" --checkpoint-dir "$T/c3"
    [ ! -e "$T/c3/latest" ] || { echo "FAIL: a checkpoint was published after NaN" >&2; fail=1; }
    # Parameter servers with staleness read each step's verdict late (workers
    # may drift as the bound allows), yet all stop before saving that state.
    expect 1 60 "non-finite value at step [0-9]+.*without saving.*seen by all after step 12" -- \
        train "$M" $syn --dp 2 --dp-mode ps --staleness 3 --deterministic --optimizer sgd \
        --lr 1000 --steps 12 --log-every 100 --checkpoint-dir "$T/c4" --checkpoint-every 6
    [ ! -e "$T/c4/step-000012" ] || { echo "FAIL: step 12 saved after NaN" >&2; fail=1; }

    # 4. the checkpoint's records of its step must agree; layouts are range-checked.
    fresh; poke manifest "$T/c2/step-000004" step 1e15
    expect 2 60 "optimizer step '4' disagrees with the manifest's step 1000000000000000" -- \
        train "$M" $syn --steps 6 --checkpoint-dir "$T/c2" --resume
    fresh; poke manifest "$T/c2/step-000004" stages 1000000
    expect 2 60 "manifest.json: step .*stages \(1\.\.65536\)" -- train "$M" $syn --steps 6 \
        --checkpoint-dir "$T/c2" --resume
    # 5. a stage file replaced by a directory says so.
    fresh; rm "$T/c2/step-000004/stage-0.safetensors"; mkdir "$T/c2/step-000004/stage-0.safetensors"
    expect 2 60 "stage-0.safetensors: is a directory" -- train "$M" $syn --steps 6 \
        --checkpoint-dir "$T/c2" --resume

    # 6. sharded (ZeRO-1) checkpoints: pieces that do not tile their tensor,
    # a missing replica file, a bad value in a piece; named by file and tensor.
    expect 0 60 "trained 4 steps" -- train "$M" $syn --steps 4 --dp 2 --zero 1 \
        --checkpoint-dir "$T/zk"
    zs=$T/c2/step-000004
    zr() { rm -rf "$T/c2"; cp -r "$T/zk" "$T/c2"; }
    zresume() { expect 2 60 "$1" -- train "$M" $syn --steps 6 --dp 2 --zero 1 \
        --checkpoint-dir "$T/c2" --resume; }
    zr; poke rename "$zs" stage-0.dp-1.safetensors fc1.weight@283744 fc1.weight@283745
    zresume "stage-0.dp-1.safetensors: tensor 'fc1.weight': piece at element 283745 leaves a gap"
    zr; poke rename "$zs" stage-0.dp-1.safetensors fc1.weight@283744 fc1.weight@283743
    zresume "tensor 'fc1.weight': piece at element 283743 overlaps another piece"
    zr; poke meta "$zs" stage-0.dp-1.safetensors fc1.weight@shape "[784,512]"
    zresume "tensor 'fc1.weight': piece at element 283744 records another whole shape"
    zr; poke meta "$zs" stage-0.dp-1.safetensors fc1.weight@shape "[512,78x]"
    zresume "tensor 'fc1.weight': its whole shape \(metadata 'fc1.weight@shape'\) is malformed"
    zr; rm "$zs/stage-0.dp-1.safetensors"
    zresume "stage-0.dp-1.safetensors: listed in the manifest but missing"
    zr; poke set "$zs" head.weight@0 nan
    zresume "stage-0.dp-1.safetensors: tensor 'head.weight' holds nan at element 0"
    expect 2 60 "stage-0.dp-1.safetensors: tensor 'head.weight' holds nan" -- train "$M" $syn \
        --steps 6 --checkpoint-dir "$T/c2" --resume
else
    echo "SKIP: python3 not found; checkpoint-editing cases skipped"
fi
expect 2 60 "step-000004 is at step 4, past this run's last step 2" -- train "$M" $syn \
    --steps 2 --checkpoint-dir "$T/ck" --resume

# 2. token data without a validation split: no eval, valid JSON metrics.
head -c 20000 "$src/README.md" >"$T/text.txt"
"$B" data "$T/text.txt" -o "$T/tok/t" --val 0 >/dev/null 2>&1 || { echo "FAIL: data" >&2; fail=1; }
G=$src/models/gpt-tiny.graph
expect 0 120 "no held-out batch .*evaluation skipped" -- train "$G" --data "tokens:$T/tok/t" \
    --batch 4 --steps 2 --metrics "$T/m.jsonl"
if grep -qi nan "$T/m.jsonl"; then echo "FAIL: nan in the metrics file" >&2; fail=1; fi
if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$T/m.jsonl" ||
        { echo "FAIL: metrics file is not JSON lines" >&2; fail=1; }
fi
expect 2 60 "--eval-every: data tokens has no held-out batch" -- train "$G" \
    --data "tokens:$T/tok/t" --batch 4 --steps 2 --eval-every 1
# A bare `synthetic` follows the model; images for a token model get a hint.
expect 0 120 "trained 1 steps" -- train "$G" --data synthetic --batch 4 --steps 1
expect 2 20 "gives images but .*reads token ids \(try --data tokens:PREFIX or synthetic:tokens\)" \
    -- train "$G" --data synthetic:images --batch 4 --steps 1

# 3. more local ranks than memory, and schedules too large to hold.
# 2048 ranks each holding Fashion-MNIST (55 MB) exceed any test machine's memory.
expect 2 30 "2048 local ranks need about .* GiB .*--force" -- train "$M" --data fashion-mnist \
    --stages 8 --dp 256 --batch 2048 --steps 1
expect 2 10 "would need about .* actions, more than the 33554432" -- schedule --stages 1024 \
    --micro-batches 65536
# A gzip bomb as the labels file: refused after the bytes the header promises.
mkdir -p "$T/fm"
for f in train-images-idx3-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    ln -s "/usr/share/datasets/fashion-mnist/$f.gz" "$T/fm/$f.gz"
done
if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v python3 >/dev/null; then
    python3 - "$T/fm/train-labels-idx1-ubyte.gz" <<'PY'
import gzip, struct, sys
with gzip.open(sys.argv[1], 'wb', compresslevel=1) as f:
    f.write(struct.pack('>II', 0x801, 60000))
    z = bytes(1 << 20)
    for _ in range(512):
        f.write(z)
PY
    expect 2 30 "train-labels-idx1-ubyte.gz: more data than the 60000 bytes its IDX header promises" \
        -- train "$M" --data "fashion-mnist:$T/fm" --steps 1
fi

# 4. everything the run writes is checked before the first step.
expect 2 20 "^brigade train: --metrics /dev/null/m.json: Not a directory" -- train "$M" $syn \
    --steps 1 --metrics /dev/null/m.json
expect 2 20 "^brigade train: --checkpoint-dir /dev/null/ck: Not a directory" -- train "$M" $syn \
    --steps 1 --checkpoint-dir /dev/null/ck
expect 2 20 "^brigade train: --trace $T: is a directory" -- train "$M" $syn --steps 1 --trace "$T"
expect 2 20 "^brigade train: data spec 'nope': unknown kind" -- train "$M" --data nope --steps 1
"$B" plan "$M" --stages 2 --batch 16 -o "$T/plan.json" >/dev/null 2>&1 ||
    { echo "FAIL: plan -o" >&2; fail=1; }
expect 2 20 "--batch 32 disagrees with --plan .*global batch 16" -- train "$M" --data synthetic \
    --plan "$T/plan.json" --batch 32 --steps 1
expect 2 20 "--recompute disagrees with --plan" -- train "$M" --data synthetic \
    --plan "$T/plan.json" --recompute --steps 1
expect 0 60 "trained 1 steps" -- train "$M" --data synthetic --plan "$T/plan.json" --batch 16 \
    --steps 1
expect 2 20 "--zero 1 disagrees with --plan .*made for --zero 0" -- train "$M" --data synthetic \
    --plan "$T/plan.json" --zero 1 --steps 1
"$B" plan "$M" --stages 1 --dp 2 --zero 1 --batch 16 -o "$T/plan-z1.json" >/dev/null 2>&1 ||
    { echo "FAIL: plan --zero 1 -o" >&2; fail=1; }
expect 0 60 "1 stages x 2 dp \(ZeRO-1\)" -- train "$M" --data synthetic --plan "$T/plan-z1.json" \
    --steps 1

# 5. messages name the real cause.
expect 2 20 "plan-dir: is a directory" -- train "$M" $syn --plan "$(mkdir -p "$T/plan-dir"; echo "$T/plan-dir")" --steps 1
mkdir -p "$T/loop"
ln -s b "$T/loop/a"; ln -s a "$T/loop/b"; ln -s a "$T/loop/train-images-idx3-ubyte.gz"
expect 2 20 "train-images-idx3-ubyte.gz: Too many levels of symbolic links" -- train "$M" \
    --data "fashion-mnist:$T/loop" --steps 1
BRIGADE_JOB_SECRET=bad-input-test-secret-0123 RANK=1 WORLD_SIZE=3 expect 2 20 "^brigade: rank 1 of 3: the job has 3 ranks but --stages 2 x --dp 1 needs 2$" \
    -- train "$M" $syn --stages 2 --steps 1

exit $fail
