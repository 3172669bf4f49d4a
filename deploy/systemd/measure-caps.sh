#!/usr/bin/env bash
# Measure which capabilities errnomon needs: start it under setpriv with reduced capability sets, provoke
# one ECONNREFUSED from a blocking connect() and one ECONNRESET from recv() (a raw tracepoint), and report
# whether it started, how many tracepoints it attached, and whether both errors and the error report
# were counted. Needs root; run from the repository after 'make setup':
#
#   sudo deploy/systemd/measure-caps.sh            # the standard matrix
#   sudo deploy/systemd/measure-caps.sh bpf,perfmon nobody:bpf,perfmon,dac_read_search
#
# A set is "cap,cap,..." (uid 0, bounding set reduced to those) or "nobody:cap,..." (uid 65534 with those
# as ambient capabilities); "-" is the empty set. Prefix "nocheck/" to skip errnomon's own privilege
# check and see which kernel call fails instead (e.g. nocheck/bpf).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
PY=$REPO/.venv/bin/python
[ "$(id -u)" -eq 0 ] || { echo "measure-caps: needs root" >&2; exit 2; }
[ -x "$PY" ] || { echo "measure-caps: no $PY: run 'make setup'" >&2; exit 2; }
WORK=$(mktemp -d /tmp/errnomon-caps.XXXXXX)
chmod 0755 "$WORK"
trap 'rm -rf "$WORK"' EXIT
printf 'kernel:\n  drain_interval: 200ms\n' >"$WORK/config.yaml"
chmod 0644 "$WORK/config.yaml"

cat >"$WORK/provoke.py" <<'EOF'
import ctypes, socket, struct, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)   # PR_SET_NAME: the comm to look for
c = socket.socket()
try:
    c.connect(("127.0.0.1", 1))                                 # blocking: connect() returns ECONNREFUSED
except OSError:
    pass
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.socket(); c.connect(srv.getsockname())
a, _ = srv.accept()
a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); a.close()   # RST
try:
    c.recv(10)                                                  # ECONNRESET from recv()
except OSError:
    pass
EOF

run() {  # $1 = set
    local spec=$1 check=1 user=root caps prefix=()
    case "$spec" in nocheck/*) check=0; spec=${spec#nocheck/} ;; esac
    case "$spec" in nobody:*) user=nobody; spec=${spec#nobody:} ;; esac
    caps="-all"
    [ "$spec" = - ] || caps="-all,+${spec//,/,+}"
    if [ $user = nobody ]; then
        prefix=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps="$caps" --ambient-caps="$caps"
                --bounding-set="$caps")
    else
        prefix=(setpriv --bounding-set="$caps")
    fi
    local code="import sys; from monitor.cli import main; sys.exit(main(sys.argv[1:]))"
    [ $check = 1 ] || code="import sys, monitor.loader as l; l.check_privileges = lambda: None; $code"
    local port=$((20000 + RANDOM % 20000)) log=$WORK/log comm=capprobe$RANDOM result
    (cd "$REPO" && exec "${prefix[@]}" "$PY" -c "$code" --config.file="$WORK/config.yaml" \
        --web.listen-address=127.0.0.1:$port) >"$log" 2>&1 &
    local pid=$! up=0 i
    for i in $(seq 300); do
        kill -0 $pid 2>/dev/null || break
        if curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; then up=1; break; fi
        sleep 0.1
    done
    if [ $up = 1 ]; then
        /usr/bin/python3 "$WORK/provoke.py" $comm
        sleep 0.6
        local m
        m=$(curl -s "http://127.0.0.1:$port/metrics")
        result="started, $(grep '^errnomon_probe_attached' <<<"$m" | grep -c ' 1.0$')/13 attached"
        result+=", connect=$(grep -c "^errnomon_socket_errors_total{.*comm=\"$comm\".*errno=\"ECONNREFUSED\",op=\"connect\"" <<<"$m")"
        result+=" recv=$(grep -c "^errnomon_socket_errors_total{.*comm=\"$comm\".*errno=\"ECONNRESET\",op=\"recv\"" <<<"$m")"
        result+=" report=$(grep -c "^errnomon_socket_error_reports_total{.*comm=\"$comm\".*errno=\"ECONNREFUSED\"" <<<"$m")"
        kill -TERM $pid
    else
        result="FAILED: $(grep -E 'error|Operation|denied|Permission' "$log" | grep -v 'level=info' | head -2 | cut -c1-160 | tr '\n' ' ')"
    fi
    wait $pid
    printf '%-44s %s (exit %s)\n' "$1" "$result" $?
}

echo "kernel $(uname -r), perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)," \
     "kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict), RLIMIT_MEMLOCK=$(ulimit -l)"
if [ $# -eq 0 ]; then
    set -- bpf,perfmon nocheck/bpf nocheck/perfmon nocheck/- sys_admin \
           nobody:bpf,perfmon nobody:bpf,perfmon,dac_read_search
fi
for s in "$@"; do run "$s"; done
