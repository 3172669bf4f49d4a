#!/usr/bin/env bash
# Tools the benchmarks need beyond `make setup`: a C compiler for bench/*.c, bpftrace for the comparison
# programs, matplotlib for the plots (Debian's python3-matplotlib: the .venv has system site-packages), and the
# real servers and their load generators (nginx + wrk, redis-server + redis-benchmark from redis-tools).
# Idempotent: when nothing is missing it only checks. Installing nginx or redis-server would start their system
# services where an init system runs: a temporary policy-rc.d keeps them stopped (the benchmark runs its own
# instances on its own loopback ports); an existing policy-rc.d is left as it is.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(gcc libc6-dev bpftrace python3-matplotlib nginx wrk redis-server redis-tools util-linux)
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bench setup: error: installing ${missing[*]} needs root: run 'sudo make bench'" >&2; exit 2; }
    echo "bench setup: apt-get install ${missing[*]}"
    POLICY_RC=/usr/sbin/policy-rc.d
    if [ ! -e "$POLICY_RC" ]; then
        trap 'rm -f "$POLICY_RC"' EXIT
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
    fi
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python -c 'import matplotlib' 2>/dev/null ||
    { echo "bench setup: error: .venv/bin/python cannot import matplotlib (python3-matplotlib)" >&2; exit 2; }
echo "bench setup: ok: ${PKGS[*]}"
