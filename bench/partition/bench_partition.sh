#!/usr/bin/env bash
# bench/partition/bench_partition.sh -- the planner against measurement: on a
# model with uneven layer costs, profile every layer on the CPU, plan S
# stages with each split method (optimal, uniform layers, parameter
# balance), train each plan for a few steps, and print predicted next to
# measured step time. Measurement and prediction come from the same run.
# usage: bench/partition/bench_partition.sh [BRIGADE] [MODEL] [STAGES] [BATCH] [MICRO]
# Prints only; never fails on a number. CI does not run it.
set -euo pipefail
BRIGADE=${1:-build/brigade}
MODEL=${2:-models/uneven-mlp.graph}
S=${3:-4}
BATCH=${4:-256}
M=${5:-8}
MB=$((BATCH / M))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$BRIGADE" profile "$MODEL" --batch "$MB" --repeat 30 -o "$tmp/profile.json" > /dev/null
echo "model $MODEL, $S stages, batch $BATCH in $M micro-batches of $MB, CPU ($(nproc) cores)"
printf "%-9s %14s %14s %8s   %s\n" method "predicted ms" "measured ms" ratio "stage layers"
for method in optimal uniform params; do
    "$BRIGADE" plan "$MODEL" --stages "$S" --batch "$BATCH" --micro-batches "$M" --device cpu \
        --profile "$tmp/profile.json" --method "$method" -o "$tmp/$method.json" > "$tmp/$method.plan"
    pred=$(sed -n 's/^predicted step: \([0-9.]*\) s.*/\1/p' "$tmp/$method.plan")
    split=$(awk '/^[0-9]+ +[0-9]+-[0-9]+/ {printf "%s ", $2}' "$tmp/$method.plan")
    "$BRIGADE" train "$MODEL" --plan "$tmp/$method.json" --steps 60 --data synthetic:images \
        --log-every 1 --eval-batches 1 --metrics "$tmp/$method.jsonl" > /dev/null 2>&1
    # Mean step time over the last 50 steps (the first ones warm caches and pages).
    meas=$(grep '"step_ms"' "$tmp/$method.jsonl" | tail -50 |
           sed 's/.*"step_ms":\([0-9.]*\).*/\1/' | awk '{s+=$1} END {printf "%.2f", s/NR}')
    awk -v m="$method" -v p="$pred" -v q="$meas" -v sp="$split" \
        'BEGIN {printf "%-9s %14.2f %14.2f %8.3f   %s\n", m, p*1000, q, q/(p*1000), sp}'
done
