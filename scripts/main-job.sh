#!/usr/bin/env bash
# scripts/main-job.sh -- the README's main job: install what is missing,
# build, then train the Fashion-MNIST MLP through a 4-stage 1F1B pipeline of
# local CPU ranks and print its test accuracy. Extra arguments are passed
# to `brigade train` (e.g. --epochs 2 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh dataset-fashion-mnist
scripts/build.sh
mkdir -p out
exec build/brigade train models/mlp-fashion.graph \
    --stages 4 --schedule 1f1b --micro-batches 4 --batch 128 \
    --epochs 8 --lr 1e-3 --warmup 100 --weight-decay 0.01 \
    --log-every 100 --eval-every 1875 \
    --metrics out/mlp-fashion-metrics.jsonl --checkpoint-dir out/mlp-fashion-ckpt "$@"
