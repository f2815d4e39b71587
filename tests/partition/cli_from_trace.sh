#!/usr/bin/env bash
# tests/partition/cli_from_trace.sh -- the closed loop: plan uneven-mlp at
# S=2, train 2 steps with --trace, re-plan with --from-trace, and train on
# the new plan file; plus the usage errors of the new options.
# usage: cli_from_trace.sh BRIGADE SOURCE_DIR
set -u
B="$1"
M="$2/models/uneven-mlp.graph"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; [ -f "$T/out" ] && cat "$T/out"; fails=$((fails + 1)); }

if [ ! -f "$M" ]; then echo "SKIP: models missing"; exit 0; fi
"$B" plan "$M" --stages 2 -o "$T/p0.json" >"$T/out" 2>&1 || fail "plan p0"
"$B" train "$M" --plan "$T/p0.json" --steps 2 --data synthetic:images --trace "$T/t.json" \
    >"$T/out" 2>&1 || fail "train with --trace"
grep -q '"cat":"F"' "$T/t.json" || fail "trace has no F events"
"$B" plan "$M" --stages 2 --from-trace "$T/t.json" --traced-plan "$T/p0.json" -o "$T/p1.json" \
    >"$T/out" 2>&1 || fail "plan --from-trace"
grep -q "times from trace" "$T/out" || fail "plan --from-trace does not say where times come from"
grep -q '"format":[[:space:]]*"brigade-plan"' "$T/p1.json" || fail "p1.json is not a plan"
"$B" train "$M" --plan "$T/p1.json" --steps 1 --data synthetic:images >"$T/out" 2>&1 ||
    fail "train does not accept the plan made from the trace"

# usage: the two options go together; a trace with a chunk the plan lacks is bad input
"$B" plan "$M" --stages 2 --from-trace "$T/t.json" >"$T/out" 2>&1
[ $? = 2 ] || fail "--from-trace without --traced-plan should exit 2"
"$B" plan "$M" --stages 1 -o "$T/one.json" >"$T/out" 2>&1 || fail "plan one stage"
"$B" plan "$M" --stages 2 --from-trace "$T/t.json" --traced-plan "$T/one.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "chunk 1" "$T/out" || fail "a trace of 2 chunks against a 1-chunk plan"
echo "$0: $fails failure(s)"
[ "$fails" = 0 ]
