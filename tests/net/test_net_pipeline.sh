#!/usr/bin/env bash
# tests/net/test_net_pipeline.sh BRIGADE SRCDIR -- a 2-stage pipeline across
# two network hosts (namespaces joined by a veth pair; stage 0 on hostA,
# stage 1 on hostB), ranks started srun-style, UCX over TCP only, the store
# reached at hostA's veth address: its checkpoint must equal, bit for bit,
# the same run on one host through `brigade train`. Skips (77) where
# namespaces cannot be made.
set -u
B=$1 SRC=$2
. "$(dirname "$0")/net_lib.sh"
net_require
W=$(mktemp -d "${TMPDIR:-/tmp}/bg-netpipe-XXXXXX") || exit 1
net_setup
trap 'net_cleanup; rm -rf "$W"' EXIT
net_secret
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

ARGS=("$SRC/models/gpt-tiny.graph" --data synthetic:tokens --stages 2 --batch 8 --micro-batches 2
      --steps 6 --log-every 3 --eval-batches 1)
net_rank "$NS_A" hostA "$DEV_A" 0 2 0 29500 "$W/r0.log" "$B" train "${ARGS[@]}" --checkpoint-dir "$W/net"
p0=$NET_LAST
net_rank "$NS_B" hostB "$DEV_B" 1 2 0 29500 "$W/r1.log" "$B" train "${ARGS[@]}" --checkpoint-dir "$W/net"
p1=$NET_LAST
wait "$p0"; rc0=$?
wait "$p1"; rc1=$?
[ "$rc0" -eq 0 ] && [ "$rc1" -eq 0 ] || { cat "$W/r0.log" "$W/r1.log"; bad "ranks exited $rc0, $rc1"; }
grep -q "^trained 6 steps" "$W/r0.log" || bad "rank 0 on hostA did not finish its 6 steps"

"$B" train "${ARGS[@]}" --checkpoint-dir "$W/one" > "$W/one.log" 2>&1 || { cat "$W/one.log"; bad "the one-host run failed"; }
for s in 0 1; do
    cmp -s "$W/net/step-000006/stage-$s.safetensors" "$W/one/step-000006/stage-$s.safetensors" ||
        bad "stage $s across two hosts differs from one host"
done
[ $fail -eq 0 ] && echo "2 stages on hostA ($ADDR_A) + hostB ($ADDR_B), UCX tcp: same bits as one host"
exit $fail
