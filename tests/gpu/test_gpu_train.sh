#!/usr/bin/env bash
# tests/gpu/test_gpu_train.sh BRIGADE SRCDIR -- the whole runtime on CUDA
# against the CPU: gpt-tiny at 2 stages x 2 replicas (four ranks sharing
# the GPU), the same seed, data and layout, 8 steps at a learning rate that
# moves the loss. f32: every step's loss and gradient norm within 2e-3
# relative of the CPU's (the two sum in different orders, so not bit for
# bit; a wrong kernel, a missed transfer or a stale parameter moves them by
# far more: the gradient norm sees every parameter's gradient). bf16 and
# fp16: within 3e-2 of the CPU in the same dtype (same rounding points,
# different summation order).
# Skips (77) where brigade finds no usable CUDA device.
set -u
B=$1 SRC=$2
W=$(mktemp -d "${TMPDIR:-/tmp}/bg-gpu-train-XXXXXX") || exit 1
trap 'rm -rf "$W"' EXIT
ARGS=("$SRC/models/gpt-tiny.graph" --data synthetic:tokens --stages 2 --dp 2 --batch 16
      --micro-batches 2 --steps 8 --log-every 1 --eval-batches 1 --seed 7 --lr 1e-2 --warmup 0)
probe=$("$B" train "${ARGS[@]}" --device cuda --steps 1 2>&1 >/dev/null | head -n 3)
case $probe in
*"no usable CUDA device"* | *"without CUDA"*)
    echo "SKIP: ${probe#brigade train: }"
    exit 77
    ;;
esac
fail=0
# losses FILE: "step loss grad_norm" per training step of a metrics file.
losses() { grep '"step":[0-9]*,"loss"' "$1" |
    sed 's/.*"step":\([0-9]*\),"loss":\([-0-9.e+]*\),.*"grad_norm":\([-0-9.e+]*\).*/\1 \2 \3/'; }
for dt in f32 bf16 fp16; do
    tol=$([ "$dt" = f32 ] && echo 2e-3 || echo 3e-2)
    for dev in cpu cuda; do
        "$B" train "${ARGS[@]}" --device "$dev" --dtype "$dt" --metrics "$W/$dev-$dt.jsonl" \
            >"$W/$dev-$dt.log" 2>&1 || { tail -5 "$W/$dev-$dt.log"; echo "FAIL: $dev $dt run"; fail=1; }
    done
    losses "$W/cpu-$dt.jsonl" >"$W/cpu-$dt.loss"
    losses "$W/cuda-$dt.jsonl" >"$W/cuda-$dt.loss"
    [ "$(wc -l <"$W/cpu-$dt.loss")" -eq 8 ] || { echo "FAIL: $dt: CPU run logged no 8 losses"; fail=1; }
    if ! paste "$W/cpu-$dt.loss" "$W/cuda-$dt.loss" | awk -v t="$tol" -v dt="$dt" '
        function rel(a, b) { d = a - b; if (d < 0) d = -d; return d / (a < 0 ? -a : a) }
        { r = rel($2, $5); g = rel($3, $6)
          printf "%s step %d: loss cpu %.6f cuda %.6f (rel %.1e), grad norm %.5f %.5f (rel %.1e)\n",
                 dt, $1, $2, $5, r, $3, $6, g
          if ($1 != $4 || r > t || g > t) bad = 1 }
        END { exit bad || NR != 8 }'; then
        echo "FAIL: $dt: CUDA losses differ from the CPU's by more than $tol"
        fail=1
    fi
done
exit $fail
