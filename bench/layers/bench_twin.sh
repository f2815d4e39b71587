#!/bin/sh
# bench/layers/bench_twin.sh BRIGADE [SOURCE_DIR] [bench_twin.py options] --
# brigade's training tokens/s for gpt-tiny and llama-tiny against a PyTorch
# twin of each model, 1 and 2 threads, interleaved repeats in one run
# (bench/layers/bench_twin.py says how each side is measured). The data is
# a byte corpus of the repository's own docs and sources, sharded with
# `brigade data`. PYTHON picks the interpreter (default python3); without
# an importable torch it prints SKIP and the reason and exits 0.
# Must not write outside its mktemp directory.
set -eu
B=$1
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
[ $# -ge 2 ] && shift 2 || shift 1
PY=${PYTHON:-python3}
if ! why=$("$PY" -c "import torch" 2>&1); then
    echo "SKIP: torch is not importable by $PY ($(echo "$why" | tail -n1)): the PyTorch twin needs it"
    exit 0
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/bg-twin-XXXXXX")
trap 'rm -rf "$T"' EXIT
cat "$SRC"/docs/*.md "$SRC"/layers/*.c "$SRC"/engine/*.c > "$T/corpus.txt"
"$B" data "$T/corpus.txt" -o "$T/corpus" --val 0.05 > /dev/null
"$PY" "$SRC/bench/layers/bench_twin.py" --brigade "$B" --src "$SRC" --data "$T/corpus" "$@"
