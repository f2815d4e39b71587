#!/usr/bin/env bash
# tests/graph/cli_test.sh BRIGADE SOURCE_DIR -- `brigade check` as users run
# it: every example model exits 0 (GPT-2 small reports 124,439,808
# parameters, the Llama files Meta's counts), every bad/*.graph exits 2 with its expected FILE:L:C message
# on stderr, usage mistakes exit 2, --json is valid JSON.
# Must not modify anything outside a temporary directory.
set -u
brigade=$1
src=$2
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bad() { echo "FAIL: $*" >&2; fail=1; }

for m in "$src"/models/*.graph; do
    "$brigade" check "$m" --batch 4 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 0 ] || bad "$m: exit $rc: $(cat "$tmp/err")"
    grep -q '^parameters: ' "$tmp/out" || bad "$m: no parameter total"
done

"$brigade" check "$src/models/gpt2-124m.graph" >"$tmp/out" 2>&1
grep -q '^parameters: 124,439,808 ' "$tmp/out" || bad "gpt2-124m: $(grep '^parameters' "$tmp/out")"
# Meta's published counts (no biases anywhere, grouped-query attention).
"$brigade" check "$src/models/llama3-8b.graph" >"$tmp/out" 2>&1
grep -q '^parameters: 8,030,261,248 ' "$tmp/out" || bad "llama3-8b: $(grep '^parameters' "$tmp/out")"
"$brigade" check "$src/models/llama3-70b.graph" >"$tmp/out" 2>&1
grep -q '^parameters: 70,553,706,496 ' "$tmp/out" || bad "llama3-70b: $(grep '^parameters' "$tmp/out")"
"$brigade" check "$src/models/llama-tiny.graph" >"$tmp/out" 2>&1
grep -q '^parameters: 123,712 ' "$tmp/out" || bad "llama-tiny: $(grep '^parameters' "$tmp/out")"

"$brigade" check "$src/models/gpt2-124m.graph" --json >"$tmp/json" 2>&1 || bad "--json failed"
if command -v python3 >/dev/null; then
    python3 - "$tmp/json" <<'PY' || bad "--json output is not the expected JSON"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["totals"]["params"] == 124439808, d["totals"]
assert sum(l["param_count"] for l in d["layers"]) == 124439808
assert d["layers"][-1]["kind"] == "cross_entropy" and d["loss"] == d["layers"][-1]["name"]
assert any(p["name"] == "wte.tokens" and p["shared_by"] == ["lm_head"] for p in d["parameters"])
PY
fi

n=0
for f in "$src"/tests/graph/bad/*.graph; do
    want=$(head -n1 "$f" | sed 's/^# expect: //')
    "$brigade" check "$f" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 2 ] || bad "$f: exit $rc, want 2"
    grep -qF -- "$f:$want" "$tmp/err" || bad "$f: stderr lacks '$f:$want': $(head -n1 "$tmp/err")"
    [ -s "$tmp/out" ] && bad "$f: printed a table for a bad model"
    n=$((n + 1))
done
[ $n -ge 25 ] || bad "only $n error cases"

usage() {
    "$brigade" "$@" >/dev/null 2>"$tmp/err"
    rc=$?
    [ $rc -eq 2 ] || bad "brigade $*: exit $rc, want 2"
    [ -s "$tmp/err" ] || bad "brigade $*: no message"
}
usage check
usage check "$src/models/mlp-fashion.graph" --batch 0
usage check "$src/models/mlp-fashion.graph" --batch x
usage check "$src/models/mlp-fashion.graph" --batch
usage check "$src/models/mlp-fashion.graph" --dtype f64
usage check "$src/models/mlp-fashion.graph" --frobnicate
usage check "$tmp/does-not-exist.graph"
"$brigade" check --kinds | grep -q '^attention' || bad "--kinds lists no attention"
"$brigade" check "$src/models/mlp-fashion.graph" --batch 128 --dtype bf16 | grep -q 'batch 128, activations bf16' \
    || bad "--batch/--dtype not applied"

[ $fail -eq 0 ] && echo "cli_test: ok ($n error cases)"
exit $fail
