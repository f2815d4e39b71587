#!/bin/bash
# bench/fault/bench_restart.sh -- restart time of `brigade train
# --max-restarts`: SIGKILL one rank of a small 2-stage CPU job once it has a
# checkpoint, and read the launcher's "time lost" (failure seen -> rank 0's
# first step after the resume: stop, process start, rendezvous, checkpoint
# load, one step) with no backoff, and the part of it spent stopping the
# ranks. Reference, same run: a fresh 1-step job of the same shape, start to
# exit. Prints every repeat, then median and min of each.
# Usage: bench/fault/bench_restart.sh BRIGADE [REPEATS=5] [MODEL]
# Must not judge the numbers (no pass/fail on time).
set -u
brigade=${1:?usage: $0 BRIGADE [REPEATS] [MODEL]}
repeats=${2:-5}
here=$(cd "$(dirname "$0")/../.." && pwd)
model=${3:-$here/models/mlp-fashion.graph}
wd=$(mktemp -d /tmp/bg_bench_restart.XXXXXX)
trap 'rm -rf "$wd"' EXIT
times=()
stops=()
fresh=()
for i in $(seq 1 "$repeats"); do
    rm -rf "$wd/ck"
    "$brigade" train "$model" --stages 2 --micro-batches 4 --batch 16 --data synthetic:images \
        --steps 400 --log-every 1000 --eval-batches 1 --checkpoint-dir "$wd/ck" \
        --checkpoint-every 20 --max-restarts 1 --restart-backoff 0 >"$wd/out" 2>"$wd/err" &
    job=$!
    for _ in $(seq 1 3000); do
        [ -f "$wd/ck/latest" ] && break
        sleep 0.01
    done
    victim=$(pgrep -P "$job" | tail -1)
    [ -n "$victim" ] && kill -9 "$victim"
    wait "$job"
    t=$(sed -n 's/.*done \([0-9.]*\) s after the failure (time lost).*/\1/p' "$wd/err" | head -1)
    if [ -z "$t" ]; then
        echo "repeat $i: no restart measured (see below)"; tail -3 "$wd/err"; continue
    fi
    s=$(sed -n 's/.*ranks stopped \([0-9.]*\) s after it.*/\1/p' "$wd/err" | head -1)
    t0=$(date +%s.%N)
    "$brigade" train "$model" --stages 2 --micro-batches 4 --batch 16 --data synthetic:images \
        --steps 1 --eval-batches 1 >/dev/null 2>&1
    f=$(printf "%.2f" "$(echo "$(date +%s.%N) - $t0" | bc)")
    echo "repeat $i: restart (failure -> first step after resume) $t s, of which stopping $s s;" \
         "fresh 1-step job $f s"
    times+=("$t"); stops+=("$s"); fresh+=("$f")
done
[ ${#times[@]} -gt 0 ] || { echo "no measurement"; exit 1; }
stat() { # label values...
    local label=$1; shift
    printf '%s\n' "$@" | sort -g | awk -v l="$label" '{v[NR]=$1} END {
        m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "%s over %d repeats: median %.3f s, min %.3f s\n", l, NR, m, v[1] }'
}
stat "restart (failure -> first step after resume)" "${times[@]}"
stat "  of which stopping the ranks" "${stops[@]}"
stat "reference: fresh 1-step job, start to exit" "${fresh[@]}"
