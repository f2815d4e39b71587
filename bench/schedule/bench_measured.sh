#!/usr/bin/env bash
# bench/schedule/bench_measured.sh -- every schedule (and auto) measured on
# the CPU next to the simulator's prediction from the action costs measured
# in the same run (bench_pipeline does one run: train --trace, last step's
# span vs the simulated makespan of the same lists), repeated with the
# schedules interleaved (a different rotation each round, so drift in the
# machine's load spreads over all of them), then per (m, schedule): median
# and min of the measured step, median measured/simulated, and the median
# step relative to 1f1b's; the goals (zb-v <= 0.85 x 1f1b at m = 4; auto
# within 2% of the best fixed schedule) are reported, never enforced.
# usage: bench/schedule/bench_measured.sh [BUILD] [MODEL] [STAGES] [BATCH] [REPEAT] [M...]
# Prints only; CI does not run it. Needs bench_pipeline (cmake target) and python3.
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-models/uniform-mlp.graph}
S=${3:-2}
BATCH=${4:-512}
R=${5:-5}
shift $(($# < 5 ? $# : 5))
MS=${*:-4 8}
BENCH="$BUILD/bench/pipeline/bench_pipeline"
# Every name `brigade schedule --help` lists but file:PATH (SCHEDULES="..." overrides).
names=${SCHEDULES:-$("$BUILD/brigade" schedule --help |
    sed -n 's/.*--schedule NAME *\(.*\)/\1/p' | tr -d ' ' | tr '|' '\n' | grep -v '^file:')}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
echo "model $MODEL, $S stages, batch $BATCH, m in {$MS}, $R rounds, CPU ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
n=$(printf '%s\n' $names | wc -l)
for ((round = 0; round < R; round++)); do
    for m in $MS; do
        # Rotate the order by the round so no schedule always runs first.
        order=$(printf '%s\n' $names | awk -v k=$((round % n)) -v n="$n" \
            '{a[NR-1]=$0} END {for (i = 0; i < n; i++) print a[(i + k) % n]}')
        for s in $order; do
            line=$("$BENCH" "$BUILD/brigade" "$MODEL" --stages "$S" --micro-batches "$m" \
                       --batch "$BATCH" --schedule "$s" | tail -1)
            set -- $line
            [[ $# -ge 4 && $2 != run ]] && echo "$m $s $2 $3 ${8:-$s}" >> "$tmp"
        done
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# Median and min per (m, schedule); ratios against 1f1b's.
python3 - "$tmp" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    m, s, meas, sim, ran = line.split()
    rows.setdefault((int(m), s), []).append((float(meas), float(meas) / float(sim), ran,
                                              float(sim)))
print("%3s %-12s %-22s %3s %10s %10s %9s %9s %9s %9s" % ("m", "schedule", "ran", "n",
      "median ms", "min ms", "sim ms", "meas/sim", "vs 1f1b", "min vs"))
med = {k: st.median(x[0] for x in v) for k, v in rows.items()}
mn = {k: min(x[0] for x in v) for k, v in rows.items()}
for (m, s), v in rows.items():
    b = (m, "1f1b")
    print("%3d %-12s %-22s %3d %10.2f %10.2f %9.2f %9.3f %9.3f %9.3f" % (m, s, v[-1][2], len(v),
          med[m, s], mn[m, s], st.median(x[3] for x in v), st.median(x[1] for x in v),
          med[m, s] / med[b] if b in med else float("nan"),
          mn[m, s] / mn[b] if b in mn else float("nan")))
for m in sorted({k[0] for k in rows}):
    fixed = [(med[k], k[1]) for k in med if k[0] == m and k[1] != "auto"]
    if (m, "auto") in med and fixed:
        best = min(fixed)
        print("m=%d: auto / best fixed (%s), medians %.3f, mins %.3f (goal <= 1.02)" % (m, best[1],
              med[m, "auto"] / best[0], mn[m, "auto"] / min(mn[k] for k in mn if k[0] == m and k[1] != "auto")))
    if (m, "zb-v") in med and (m, "1f1b") in med:
        print("m=%d: zb-v / 1f1b, medians %.3f, mins %.3f (goal at m=4: <= 0.85)" % (m,
              med[m, "zb-v"] / med[m, "1f1b"], mn[m, "zb-v"] / mn[m, "1f1b"]))
PY
