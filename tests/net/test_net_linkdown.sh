#!/usr/bin/env bash
# tests/net/test_net_linkdown.sh BRIGADE SRCDIR -- 2 stages x 2 replicas on
# two network hosts (hostA: ranks 0 and 2, stage 0; hostB: ranks 1 and 3,
# stage 1). Mid-run hostB's link goes down: the heartbeats must tell within
# --heartbeat-timeout plus a stated margin, and the error must name hostB
# and both of its ranks. Prints the measured detection time. Skips (77)
# where namespaces cannot be made.
set -u
B=$1 SRC=$2
HB=2      # --heartbeat-timeout, seconds
MARGIN=2  # allowed on top: one heartbeat interval, the store's poll, process exit, load
. "$(dirname "$0")/net_lib.sh"
net_require
W=$(mktemp -d "${TMPDIR:-/tmp}/bg-netdown-XXXXXX") || exit 1
net_setup
trap 'net_cleanup; rm -rf "$W"' EXIT
net_secret
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

ARGS=("$SRC/models/gpt-tiny.graph" --data synthetic:tokens --stages 2 --dp 2 --batch 8
      --micro-batches 2 --steps 100000000 --log-every 20 --heartbeat-timeout "$HB")
pid=()
for r in 0 1 2 3; do
    if [ $((r % 2)) -eq 0 ]; then
        net_rank "$NS_A" hostA "$DEV_A" $r 4 $((r / 2)) 29500 "$W/r$r.log" "$B" train "${ARGS[@]}"
    else
        net_rank "$NS_B" hostB "$DEV_B" $r 4 $((r / 2)) 29500 "$W/r$r.log" "$B" train "${ARGS[@]}"
    fi
    pid[r]=$NET_LAST
done
# Training is under way once rank 0 logs a step.
for _ in $(seq 600); do
    grep -q '^step ' "$W/r0.log" 2> /dev/null && break
    kill -0 "${pid[0]}" 2> /dev/null || break
    sleep 0.1
done
grep -q '^step ' "$W/r0.log" || { cat "$W"/r*.log; echo "FAIL: training never started" >&2; exit 1; }

t0=$(date +%s.%N)
ip -n "$NS_B" link set "$DEV_B" down
wait "${pid[0]}"; rc0=$?
t1=$(date +%s.%N)
detect=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
echo "link down on hostB: rank 0 on hostA stopped after $detect s" \
     "(--heartbeat-timeout $HB s, margin $MARGIN s)"
[ "$rc0" -ne 0 ] || bad "rank 0 exited 0 after its peer host went away"
awk -v d="$detect" -v lim=$((HB + MARGIN)) 'BEGIN { exit !(d <= lim) }' ||
    bad "detection took $detect s, over $HB + $MARGIN s"
msg=$(grep 'brigade: ' "$W/r0.log" | tail -n1)
echo "rank 0 said: $msg"
case $msg in *"no heartbeat"*"--heartbeat-timeout"*) ;; *) bad "not reported as a heartbeat timeout" ;; esac
case $msg in *hostB*) ;; *) bad "the error does not name hostB" ;; esac
case $msg in *"ranks 1, 3"*) ;; *) bad "the error does not name hostB's ranks 1, 3" ;; esac
# hostB's ranks lose the store (rank 0's) and stop on their own.
for r in 1 2 3; do
    for _ in $(seq 150); do kill -0 "${pid[r]}" 2> /dev/null || break; sleep 0.1; done
    kill -0 "${pid[r]}" 2> /dev/null && bad "rank $r still running 15 s after the link went down"
done
[ $fail -eq 0 ] || cat "$W"/r*.log >&2
exit $fail
