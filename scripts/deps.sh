#!/usr/bin/env bash
# scripts/deps.sh -- install the Debian packages brigade needs, only those
# missing. Sourced by main-job.sh and test.sh; safe to run repeatedly.
# Does not build anything.
set -euo pipefail

BG_PACKAGES=(build-essential cmake pkg-config libucx-dev ucx-utils libhwloc-dev
             libopenblas-dev zlib1g-dev libcjson-dev libsodium-dev)
BG_PACKAGES+=("$@")

missing=()
for p in "${BG_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "brigade: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
