# shellcheck shell=bash
# tests/net/net_lib.sh -- sourced by the network tests: two "hosts" made of
# network namespaces joined by a veth pair, and ranks started in them
# through the srun-style environment (SLURM_PROCID/NTASKS/LOCALID,
# MASTER_ADDR/PORT), each with its own host name (a UTS namespace) and UCX
# over TCP only (UCX_TLS=tcp,self: no shared memory across hosts).
# Must NOT install anything, touch interfaces it did not create, or leave
# namespaces behind (net_cleanup runs on exit). Exit 77 means skipped.

NET_SKIP=77

# Skip (exit 77, reason printed) unless namespaces and veth pairs can be made.
net_require() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "SKIP: network namespaces need root (CAP_NET_ADMIN); running as uid $(id -u)"
        exit $NET_SKIP
    fi
    command -v ip > /dev/null || { echo "SKIP: no 'ip' command (iproute2 not installed)"; exit $NET_SKIP; }
    command -v unshare > /dev/null || { echo "SKIP: no 'unshare' (util-linux)"; exit $NET_SKIP; }
    local probe="bgprobe$$"
    if ! ip netns add "$probe" 2> /dev/null; then
        echo "SKIP: cannot create a network namespace (no CAP_NET_ADMIN, or a container that forbids it)"
        exit $NET_SKIP
    fi
    ip netns del "$probe"
}

# Two namespaces NS_A, NS_B, veth ends DEV_A/DEV_B with ADDR_A/ADDR_B on a
# /24 picked from the pid (parallel runs do not collide).
net_setup() {
    local id=$(( $$ % 250 + 1 ))
    NS_A="bgnetA$$" NS_B="bgnetB$$" DEV_A="bgva$$" DEV_B="bgvb$$"
    ADDR_A="10.231.$id.1" ADDR_B="10.231.$id.2"
    NET_PIDS=""
    trap net_cleanup EXIT
    ip netns add "$NS_A" && ip netns add "$NS_B" &&
        ip link add "$DEV_A" type veth peer name "$DEV_B" &&
        ip link set "$DEV_A" netns "$NS_A" && ip link set "$DEV_B" netns "$NS_B" &&
        ip -n "$NS_A" addr add "$ADDR_A/24" dev "$DEV_A" &&
        ip -n "$NS_B" addr add "$ADDR_B/24" dev "$DEV_B" &&
        ip -n "$NS_A" link set "$DEV_A" up && ip -n "$NS_B" link set "$DEV_B" up &&
        ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up || {
        echo "SKIP: could not build the namespace pair (veth unsupported here?)"
        exit $NET_SKIP
    }
}

# The same hosts, each cabled to a switch (a bridge in namespace NS_S)
# instead of to each other: a host whose link goes down takes only its own
# carrier, as on a real network, so the other's NIC stays up (a direct
# veth pair would lose carrier on both ends).
net_setup_switched() {
    net_setup
    NS_S="bgnetS$$"
    ip -n "$NS_A" link del "$DEV_A" && ip netns add "$NS_S" &&
        ip -n "$NS_S" link add bgbr type bridge && ip -n "$NS_S" link set bgbr up &&
        net_cable "$NS_A" "$DEV_A" "$ADDR_A" "bgsa$$" && net_cable "$NS_B" "$DEV_B" "$ADDR_B" "bgsb$$" || {
        echo "SKIP: could not build the switched namespaces (no bridge support?)"
        exit $NET_SKIP
    }
}

# net_cable NS DEV ADDR PORT: a veth from NS (DEV, ADDR/24, up) to the
# switch's bridge (PORT).
net_cable() {
    ip link add "$2" type veth peer name "$4" && ip link set "$2" netns "$1" &&
        ip link set "$4" netns "$NS_S" && ip -n "$NS_S" link set "$4" master bgbr &&
        ip -n "$NS_S" link set "$4" up && ip -n "$1" addr add "$3/24" dev "$2" &&
        ip -n "$1" link set "$2" up
}

net_cleanup() {
    for p in $NET_PIDS; do kill -9 "$p" 2> /dev/null; done
    wait 2> /dev/null
    ip netns del "$NS_A" 2> /dev/null
    ip netns del "$NS_B" 2> /dev/null
    [ -z "${NS_S:-}" ] || ip netns del "$NS_S" 2> /dev/null
    return 0
}

# net_rank NS HOSTNAME DEV RANK WORLD LOCAL PORT LOG brigade-args...: start
# one rank in the background (its pid appended to NET_PIDS, and in
# NET_LAST). The store is rank 0's, at ADDR_A:PORT over the veth pair.
net_rank() {
    local ns=$1 host=$2 dev=$3 rank=$4 world=$5 local=$6 port=$7 log=$8
    shift 8
    ip netns exec "$ns" unshare --uts env BG_HOST="$host" SLURM_PROCID="$rank" \
        SLURM_NTASKS="$world" SLURM_LOCALID="$local" MASTER_ADDR="$ADDR_A" MASTER_PORT="$port" \
        BRIGADE_JOB_SECRET="$NET_SECRET" UCX_TLS=tcp,self UCX_NET_DEVICES="$dev" \
        sh -c 'hostname "$BG_HOST" && exec "$@"' rank "$@" > "$log" 2>&1 &
    NET_LAST=$!
    NET_PIDS="$NET_PIDS $NET_LAST"
}

# A fresh job secret for the ranks (never on a command line of theirs).
net_secret() {
    NET_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
}
