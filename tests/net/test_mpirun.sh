#!/usr/bin/env bash
# tests/net/test_mpirun.sh BRIGADE SRCDIR -- Open MPI's mpirun starts a
# 2 stages x 2 replicas job (each process one rank, from
# OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK; rank 0 hosts the store at
# MASTER_ADDR:MASTER_PORT): it must finish and its checkpoint must equal,
# bit for bit, the same layout launched by `brigade train`. Skips (77)
# when mpirun is missing.
set -u
B=$1 SRC=$2
command -v mpirun > /dev/null || { echo "SKIP: no mpirun (install openmpi-bin)"; exit 77; }
W=$(mktemp -d "${TMPDIR:-/tmp}/bg-mpirun-XXXXXX") || exit 1
trap 'rm -rf "$W"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

ARGS=("$SRC/models/gpt-tiny.graph" --data synthetic:tokens --stages 2 --dp 2 --batch 8
      --micro-batches 2 --steps 6 --log-every 3 --eval-batches 1)
# As root Open MPI wants --allow-run-as-root; 4 ranks on a small machine
# need --oversubscribe. The secret travels in the environment (-x), never argv.
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
BRIGADE_JOB_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export BRIGADE_JOB_SECRET
export MASTER_ADDR=127.0.0.1 MASTER_PORT=$((20000 + RANDOM % 20000))
timeout 240 mpirun "${root[@]}" --oversubscribe -np 4 -x BRIGADE_JOB_SECRET -x MASTER_ADDR \
    -x MASTER_PORT "$B" train "${ARGS[@]}" --checkpoint-dir "$W/mpi" > "$W/mpi.log" 2>&1 ||
    { cat "$W/mpi.log"; bad "mpirun -np 4 failed"; }
grep -q '^trained 6 steps' "$W/mpi.log" || bad "rank 0 did not finish its 6 steps under mpirun"
[ "$(grep -c '^brigade: gpt-tiny | 2 stages x 2 dp' "$W/mpi.log")" -eq 1 ] ||
    bad "expected one 2 x 2 job (rank 0's banner once), not four separate runs"
unset BRIGADE_JOB_SECRET MASTER_ADDR MASTER_PORT
"$B" train "${ARGS[@]}" --checkpoint-dir "$W/one" > "$W/one.log" 2>&1 || { cat "$W/one.log"; bad "brigade train failed"; }
for s in 0 1; do
    cmp -s "$W/mpi/step-000006/stage-$s.safetensors" "$W/one/step-000006/stage-$s.safetensors" ||
        bad "stage $s under mpirun differs from brigade train's"
done
[ $fail -eq 0 ] && echo "mpirun -np 4 (2 stages x 2 dp): same bits as brigade train"
exit $fail
