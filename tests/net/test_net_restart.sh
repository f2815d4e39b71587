#!/usr/bin/env bash
# tests/net/test_net_restart.sh BRIGADE SRCDIR -- `brigade train --hosts
# hostA:2,hostB:2 --max-restarts` on two network hosts (namespaces cabled
# to one switch). The launcher runs in hostA's namespace with its store on
# hostA's veth address (BRIGADE_MASTER_ADDR) and reaches both hosts through
# a test-only `ssh` first on PATH: it runs the remote command in the host's
# namespace (own host name, UCX over TCP on its veth) and, like a real ssh,
# fails (255) when the host's address does not answer. 2 stages x 2 dp:
# hostA runs ranks 0, 1 (replica 0), hostB ranks 2, 3 (replica 1).
#   transient: hostB's link goes down mid-run; the heartbeats must name
#              hostB and its ranks 2, 3 within --heartbeat-timeout plus a
#              margin; the link comes back while the launcher waits, it
#              restarts from `latest` and the final checkpoint equals an
#              uninterrupted run's, bit for bit;
#   elastic:   hostB's link stays down; ssh no longer reaches it, the
#              launcher re-plans to 2 stages x 1 dp on hostA with the same
#              global batch and the run finishes.
# Prints the measured detection and restart times. Skips (77) where
# namespaces cannot be made.
# Must NOT touch interfaces or namespaces it did not create.
set -u
B=$1 SRC=$2
HB=2      # --heartbeat-timeout, seconds
MARGIN=2  # allowed on top: one heartbeat interval, the store's poll, load
STEPS=200
RESTART=none DETECT=none
. "$(dirname "$0")/net_lib.sh"
net_require
W=$(mktemp -d "${TMPDIR:-/tmp}/bg-netrestart-XXXXXX") || exit 1
net_setup_switched
trap 'net_cleanup; rm -rf "$W"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# The ssh stand-in: its last argument is the command, the one before the
# host. A host is there when a TCP connect to its address from here (the
# launcher's namespace) is answered, even by a refusal (port 9: nobody
# listens); silence for 1 s is a host that is gone.
mkdir -p "$W/bin"
cat > "$W/bin/ssh" << EOF
#!/bin/sh
for a; do host=\$last; last=\$a; done
case \$host in
    hostA) ns=$NS_A addr=$ADDR_A dev=$DEV_A ;;
    hostB) ns=$NS_B addr=$ADDR_B dev=$DEV_B ;;
    *) echo "ssh: Could not resolve hostname \$host" >&2; exit 255 ;;
esac
said=\$(timeout 1 bash -c "exec 3<>/dev/tcp/\$addr/9" 2>&1)
case \$?:\$said in
    0:* | *refused*) ;;
    *) echo "ssh: connect to host \$host port 22: Connection timed out" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" unshare --uts env BG_HOST="\$host" UCX_TLS=tcp,self \\
    UCX_NET_DEVICES="\$dev" sh -c 'hostname "\$BG_HOST" && exec sh -c "\$1"' ssh "\$last"
EOF
chmod 700 "$W/bin/ssh"

ARGS=("$SRC/models/gpt-tiny.graph" --data synthetic:tokens --stages 2 --dp 2 --batch 8
      --micro-batches 2 --steps "$STEPS" --log-every 50 --eval-batches 1 --checkpoint-every 4)

# launch NAME extra-args...: the launcher in hostA's namespace, in the
# background (pid in LPID), everything it prints in $W/NAME.log.
launch() {
    local name=$1
    shift
    ip netns exec "$NS_A" env PATH="$W/bin:$PATH" BRIGADE_MASTER_ADDR="$ADDR_A" \
        "$B" train "${ARGS[@]}" --checkpoint-dir "$W/$name" --hosts hostA:2,hostB:2 \
        --heartbeat-timeout "$HB" --max-restarts 3 "$@" > "$W/$name.log" 2>&1 &
    LPID=$!
    NET_PIDS="$NET_PIDS $LPID"
}

# The step of DIR/latest, or -1.
latest() {
    local s
    s=$(sed -n 's/^step-0*\([0-9][0-9]*\).*/\1/p' "$1/latest" 2> /dev/null)
    echo "${s:--1}"
}

# wait_for SECONDS CMD...: poll CMD every 0.05 s while the launcher runs; 0
# once it holds, 1 at the deadline or when the launcher ended first.
wait_for() {
    local end
    end=$(awk -v n="$1" -v t="$(date +%s.%N)" 'BEGIN { printf "%.2f", t + n }')
    shift
    while ! "$@"; do
        kill -0 "$LPID" 2> /dev/null || { "$@"; return; }
        awk -v e="$end" -v t="$(date +%s.%N)" 'BEGIN { exit !(t > e) }' && return 1
        sleep 0.05
    done
}
past() { [ "$(latest "$1")" -ge "$2" ]; }
said() { grep -q -- "$2" "$1"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# pull NAME: once the run has a checkpoint past step 8, hostB's link goes
# down; the heartbeat verdict must come in time and name hostB, ranks 2, 3.
# Sets T0 (link down) and DETECT (seconds to the launcher's verdict).
pull() {
    local name=$1 log="$W/$1.log"
    wait_for 120 past "$W/$name" 8 || { cat "$log"; bad "$name: no checkpoint past step 8"; return 1; }
    T0=$(date +%s.%N)
    ip -n "$NS_B" link set "$DEV_B" down
    # The launcher names the rank once it has stopped them all, then says
    # how long stopping took since it saw the store's verdict: the verdict
    # came that much before its line.
    wait_for 30 said "$log" "^brigade: rank .* is unresponsive" ||
        { cat "$log"; bad "$name: the launcher named no unresponsive rank"; return 1; }
    local stopped msg stop_s
    stopped=$(since "$T0")
    wait_for 30 said "$log" "^brigade: restart 1 of" || { cat "$log"; bad "$name: no restart"; return 1; }
    stop_s=$(sed -n 's/^brigade: restart 1 of .*ranks stopped \([0-9.]*\) s after it)$/\1/p' "$log")
    DETECT=$(awk -v a="$stopped" -v b="${stop_s:-0}" 'BEGIN { printf "%.2f", a - b }')
    msg=$(grep -m1 '^brigade: rank .* is unresponsive' "$log")
    echo "$name: link down on hostB: the launcher's verdict after $DETECT s" \
         "(--heartbeat-timeout $HB s, margin $MARGIN s), all ranks stopped after $stopped s"
    echo "$name: $msg"
    awk -v d="$DETECT" -v lim=$((HB + MARGIN)) 'BEGIN { exit !(d <= lim) }' ||
        bad "$name: detection took $DETECT s, over $HB + $MARGIN s"
    case $msg in *"on host hostB"*"no heartbeat"*) ;; *) bad "$name: not hostB's heartbeat timeout" ;; esac
    case $msg in *"host hostB (ranks 2, 3)"*) ;; *) bad "$name: hostB's ranks 2, 3 not named" ;; esac
    [ "$(latest "$W/$name")" -lt "$STEPS" ] || bad "$name: the run had ended before the link went down"
}

# finish NAME: the launcher exits 0 with the last checkpoint at STEPS; the
# restart's time lost (the launcher's account) and the time from the link
# going down to the first step after the restart are printed.
finish() {
    local name=$1 log="$W/$1.log" rc
    wait "$LPID"; rc=$?
    [ "$rc" -eq 0 ] || { cat "$log"; bad "$name: the launcher exited $rc"; }
    [ "$(latest "$W/$name")" -eq "$STEPS" ] || bad "$name: last checkpoint not at step $STEPS"
    grep 'brigade: restart .*time lost' "$log" | sed "s/^/$name: /"
    grep -q 'brigade: restart 1: resumed from step' "$log" || bad "$name: no resumed step after restart 1"
    echo "$name: link down to the first step after the restart: $RESTART s"
}

# ---- transient: the link comes back while the launcher waits to restart.
launch transient --restart-backoff 2
pull transient && {
    ip -n "$NS_B" link set "$DEV_B" up
    echo "transient: link up again $(since "$T0") s after it went down"
    wait_for 60 said "$W/transient.log" "brigade: restart .*: resumed from step" ||
        bad "transient: no step after the restart"
    RESTART=$(since "$T0")
}
finish transient
"$B" train "${ARGS[@]}" --checkpoint-dir "$W/ref" > "$W/ref.log" 2>&1 || { cat "$W/ref.log"; bad "the uninterrupted run failed"; }
for s in 0 1; do
    f=step-$(printf %06d "$STEPS")/stage-$s.safetensors
    cmp -s "$W/transient/$f" "$W/ref/$f" || bad "transient: stage $s differs from an uninterrupted run's"
done

# ---- elastic: the link stays down; the job goes on with hostA's 2 slots.
ip -n "$NS_B" link set "$DEV_B" up
launch elastic --restart-backoff 1 --elastic
pull elastic && {
    wait_for 60 said "$W/elastic.log" "brigade: restart .*: resumed from step" ||
        bad "elastic: no step after the re-plan"
    RESTART=$(since "$T0")
}
finish elastic
grep -q 'brigade: host hostB does not answer ssh: its 2 slot(s) are lost' "$W/elastic.log" ||
    bad "elastic: hostB's slots were not given up"
grep 'brigade: elastic:' "$W/elastic.log" | sed 's/^/elastic: /'
grep -q 'brigade: elastic: 2 of 4 ranks remain: .* -> 2 stages x 1 dp, 4 micro-batches .*global batch 8' \
    "$W/elastic.log" || bad "elastic: not re-planned to 2 stages x 1 dp, 4 micro-batches, global batch 8"
[ $fail -eq 0 ] || { cat "$W/transient.log" "$W/elastic.log" >&2; }
[ $fail -eq 0 ] && echo "link down on hostB: named within $HB + $MARGIN s; restarted bit-identical; re-planned onto hostA"
exit $fail
