#!/bin/bash
# bench/fault/bench_restart.sh -- restart time of `brigade train
# --max-restarts`: SIGKILL one rank of a small 2-stage CPU job once it has a
# checkpoint, and read the launcher's "time lost" (failure seen -> rank 0's
# first step after the resume: stop, process start, rendezvous, checkpoint
# load, one step) with no backoff. Prints every repeat, then median and min.
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
    echo "repeat $i: restart (failure -> first step after resume) $t s"
    times+=("$t")
done
[ ${#times[@]} -gt 0 ] || { echo "no measurement"; exit 1; }
printf '%s\n' "${times[@]}" | sort -g | awk '{v[NR]=$1} END {
    m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
    printf "restart time over %d repeats: median %.3f s, min %.3f s\n", NR, m, v[1] }'
