#!/usr/bin/env bash
# scripts/test.sh -- the README's test command: install what is missing,
# build, run every test except those labelled `slow` (run those with
# `ctest --test-dir build -L slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
# real data for the IDX reader tests; namespaces and mpirun for tests/net
scripts/deps.sh dataset-fashion-mnist iproute2 openmpi-bin
scripts/build.sh
jobs=$(nproc 2>/dev/null || echo 2)
ctest --test-dir build -LE slow --output-on-failure -j"$jobs"
