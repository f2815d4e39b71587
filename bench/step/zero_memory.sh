#!/usr/bin/env bash
# bench/step/zero_memory.sh -- peak resident memory per rank (VmHWM, as the
# ranks report it in the --metrics file's peak_rss_mib record) of
# `brigade train` at D = 2 with --zero 0 and --zero 1, and their ratio.
# Usage: bench/step/zero_memory.sh [BRIGADE] ; MODELS="mlp-fashion gpt-tiny"
# (names under models/, or paths to .graph files)
# BATCH (16), STEPS (5) and EXTRA (more train flags, e.g. "--stages 2") may be set.
# A report, not a test: it fails only when a run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
BRIGADE=${1:-build/brigade}
MODELS=${MODELS:-"mlp-fashion gpt-tiny"}
EXTRA=${EXTRA:-}
BATCH=${BATCH:-16}
STEPS=${STEPS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

data_of() { case $1 in gpt* | llama*) echo synthetic:tokens ;; *) echo synthetic:images ;; esac; }

# The peak_rss_mib list of a metrics file, space-separated.
rss_of() { sed -n 's/.*"peak_rss_mib":\[\([^]]*\)\].*/\1/p' "$1" | tail -1 | tr ',' ' '; }

printf '%-12s %-6s %-22s %-22s %s\n' model zero "rank MiB (0 | 1)" "max MiB" "zero1/zero0 (max)"
for spec in $MODELS; do
    case $spec in *.graph) file=$spec ;; *) file=models/$spec.graph ;; esac
    m=$(basename "$spec" .graph)
    declare -A max=()
    for z in 0 1; do
        "$BRIGADE" train "$file" --data "$(data_of "$m")" --dp 2 --zero "$z" \
            --batch "$BATCH" --micro-batches 1 --steps "$STEPS" --log-every 100 --eval-batches 1 \
            --metrics "$tmp/$m-$z.jsonl" $EXTRA > "$tmp/$m-$z.log" 2>&1 ||
            { tail -5 "$tmp/$m-$z.log" >&2; exit 1; }
        read -r -a r <<< "$(rss_of "$tmp/$m-$z.jsonl")"
        mx=$(printf '%s\n' "${r[@]}" | sort -g | tail -1)
        max[$z]=$mx
        ratio=$([ "$z" = 1 ] && awk -v a="${max[1]}" -v b="${max[0]}" 'BEGIN{printf "%.3f", a/b}' || echo)
        printf '%-12s %-6s %-22s %-22s %s\n' "$m" "$z" "${r[*]}" "$mx" "$ratio"
    done
done
