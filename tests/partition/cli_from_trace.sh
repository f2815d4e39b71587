#!/usr/bin/env bash
# tests/partition/cli_from_trace.sh -- the closed loop: plan uneven-mlp at
# S=2, train 2 steps with --trace, re-plan with --from-trace, and train on
# the new plan file; `brigade schedule --schedule auto` and `brigade train
# --schedule auto` from the same trace; plus the usage errors of the new
# options.
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

# brigade schedule --schedule auto from the traced run's times
S=("$B" schedule --stages 2 --micro-batches 4 --schedule auto)
"${S[@]}" --from-trace "$T/t.json" --traced-plan "$T/p0.json" >"$T/out" 2>&1 ||
    fail "schedule --from-trace"
grep -q "^auto: " "$T/out" || fail "no choice printed"
grep -q "costs of $T/t.json" "$T/out" || fail "the summary does not name the trace"
# The trace's times, not equal ones: those would simulate the same step.
"${S[@]}" >"$T/eq" 2>&1 || fail "schedule auto with equal costs"
a="$(grep -o ': makespan [^,]*' "$T/out")" b="$(grep -o ': makespan [^,]*' "$T/eq")"
[ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] || fail "the trace's times were not used ($a, $b)"
"${S[@]}" --from-trace "$T/t.json" --traced-plan "$T/p0.json" --json >"$T/out" 2>&1 &&
    grep -q '"auto_candidates"' "$T/out" || fail "--json with --from-trace"

# schedule: usage, the two go together and are not a --profile too
"${S[@]}" --from-trace "$T/t.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "go together" "$T/out" || fail "--from-trace alone should exit 2"
"${S[@]}" --traced-plan "$T/p0.json" >"$T/out" 2>&1
[ $? = 2 ] || fail "--traced-plan alone should exit 2"
echo '{}' >"$T/prof.json"
"${S[@]}" --from-trace "$T/t.json" --traced-plan "$T/p0.json" --profile "$T/prof.json" \
    >"$T/out" 2>&1
[ $? = 2 ] && grep -q "both give times" "$T/out" || fail "--from-trace with --profile"
"${S[@]}" --from-trace "$T/missing.json" --traced-plan "$T/p0.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "missing.json" "$T/out" || fail "a missing trace should exit 2, named"

# usage: the two options go together; a trace with a chunk the plan lacks is bad input
"$B" plan "$M" --stages 2 --from-trace "$T/t.json" >"$T/out" 2>&1
[ $? = 2 ] || fail "--from-trace without --traced-plan should exit 2"
"$B" plan "$M" --stages 1 -o "$T/one.json" >"$T/out" 2>&1 || fail "plan one stage"
"$B" plan "$M" --stages 2 --from-trace "$T/t.json" --traced-plan "$T/one.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "chunk 1" "$T/out" || fail "a trace of 2 chunks against a 1-chunk plan"
# brigade train --schedule auto from the same trace, summed over the run's own split
"$B" train "$M" --stages 2 --micro-batches 4 --batch 16 --steps 1 --data synthetic:images \
    --schedule auto --from-trace "$T/t.json" --traced-plan "$T/p0.json" >"$T/out" 2>&1 ||
    fail "train --schedule auto --from-trace"
grep -q "schedule auto: chose .* from --from-trace $T/t.json .*chunk F+B+W ms" "$T/out" ||
    fail "train's account does not name the trace and its chunk times"
"$B" train "$M" --stages 2 --steps 1 --data synthetic:images --schedule auto \
    --from-trace "$T/t.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "go together" "$T/out" || fail "train --from-trace alone should exit 2"
"$B" train "$M" --stages 2 --steps 1 --data synthetic:images --from-trace "$T/t.json" \
    --traced-plan "$T/p0.json" >"$T/out" 2>&1
[ $? = 2 ] && grep -q "is for --schedule auto" "$T/out" || fail "train --from-trace without auto"
echo "$0: $fails failure(s)"
[ "$fails" = 0 ]
