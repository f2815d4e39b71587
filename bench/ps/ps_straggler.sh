#!/bin/sh
# bench/ps/ps_straggler.sh -- data parallelism with one straggler: steps per
# second and Fashion-MNIST test accuracy after the same epochs for
# allreduce, parameter servers at staleness 0, 2 and inf. Rank 1 (replica 1)
# sleeps DELAY ms before every EVERY-th step (BRIGADE_TEST_STEP_DELAY, a
# test-only setting: docs/engine.md, "Parameter servers"); with PATTERN
# "alternate", rank 0 also does, EVERY/2 steps out of phase (stragglers
# that take turns: what a staleness bound can absorb). Prints a table;
# never pass/fail on time.
# Usage: bench/ps/ps_straggler.sh BRIGADE [EPOCHS] [DELAY_MS] [EVERY] [one|alternate]
set -eu
B=${1:?usage: ps_straggler.sh BRIGADE [EPOCHS] [DELAY_MS] [EVERY] [one|alternate]}
EPOCHS=${2:-1}
DELAY=${3:-30}
EVERY=${4:-3}
PATTERN=${5:-one}
case $PATTERN in
one) STRAGGLE=1:$DELAY:$EVERY ;;
alternate) STRAGGLE=1:$DELAY:$EVERY:0,0:$DELAY:$EVERY:$((EVERY / 2)) ;;
*) echo "PATTERN: one or alternate" >&2; exit 2 ;;
esac
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
COMMON="--data fashion-mnist:$DATA --dp 2 --batch 64 --epochs $EPOCHS --lr 2e-3 --seed 1 \
 --log-every 100000"
printf '%-24s %10s %10s %12s\n' mode steps/s seconds accuracy
for mode in "allreduce" "ps S=0" "ps S=2" "ps S=inf"; do
    case $mode in
    allreduce) extra="" ;;
    "ps S=0") extra="--dp-mode ps" ;;
    "ps S=2") extra="--dp-mode ps --staleness 2" ;;
    "ps S=inf") extra="--dp-mode ps --staleness inf" ;;
    esac
    # shellcheck disable=SC2086
    BRIGADE_TEST_STEP_DELAY=$STRAGGLE "$B" train "$SRC/models/mlp-fashion.graph" $COMMON \
        $extra >"$W/log" 2>&1 || { echo "$mode: failed"; tail -3 "$W/log"; exit 1; }
    steps=$(sed -n 's/.*trained \([0-9]*\) steps in \([0-9.]*\) s.*/\1/p' "$W/log")
    secs=$(sed -n 's/.*trained \([0-9]*\) steps in \([0-9.]*\) s.*/\2/p' "$W/log")
    acc=$(sed -n 's/.*final test accuracy: \([0-9.]*%\).*/\1/p' "$W/log")
    printf '%-24s %10.1f %10.1f %12s\n' "$mode" "$(echo "$steps / $secs" | bc -l)" "$secs" "$acc"
done
