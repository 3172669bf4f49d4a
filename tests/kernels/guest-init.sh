#!/bin/sh
# PID 1 of a kernel-matrix guest (exec'd by the image's /sbin/errnomon-init once the checkout is mounted
# read-only at /mnt/src). Mounts what errnomon needs, runs the in-guest suite with the guest's own python3
# and bcc, writes the results to the writable share /mnt/out and powers off. Every step logs to the
# console (the host keeps it as console.log). The host kills the guest at its deadline, so nothing here
# needs a timeout of its own beyond pytest's.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
log() { echo "errnomon-guest: $*"; }
boot=$(cut -d' ' -f1 /proc/uptime)
log "userland at ${boot}s: kernel $(uname -r)"

mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
# bcc 0.18 and 0.26 read /sys/kernel/debug/tracing: automounted on first access on most kernels
[ -d /sys/kernel/debug/tracing/events ] || mount -t tracefs tracefs /sys/kernel/debug/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
# no udev here: the links every shell script expects (nft -f /dev/stdin, bash's <(...))
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
ip link set lo up
hostname errnomon-guest

if ! mount -t 9p -o trans=virtio,version=9p2000.L,rw out /mnt/out; then
    log "cannot mount the results share (9p tag out): powering off"
    echo o >/proc/sysrq-trigger
fi
OUT=/mnt/out
# run.env from the host: PYTEST_ARGS, ERRNOMON_TEST_TAG; BENCH and BENCH_ARGS to run a benchmark instead
. "$OUT/run.env"
export ERRNOMON_TEST_TAG

{
    echo "KERNEL=$(uname -r)"
    echo "BOOT_SECONDS=$boot"
    echo "PYTHON=$(python3 -c 'import platform; print(platform.python_version())')"
    echo "BCC=$(dpkg-query -W -f='${Version}' python3-bpfcc)"
    echo "BTF=$([ -f /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
} >"$OUT/guest.env"

# The checkout is read-only: no bytecode, no pytest cache, every temporary file in the guest's /tmp.
cd /mnt/src
export PYTHONPATH=/mnt/src PYTHONDONTWRITEBYTECODE=1
start=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$BENCH" ]; then
    log "bench/$BENCH.py guest $BENCH_ARGS"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words from the host
    { python3 "bench/$BENCH.py" guest --out "$OUT" $BENCH_ARGS 2>&1; echo "BENCH_EXIT=$?" >>"$OUT/guest.env"; } |
        tee "$OUT/bench.log"
else
    log "pytest $PYTEST_ARGS"
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words from the host
    { python3 -m pytest -p no:cacheprovider --basetemp=/tmp/pytest --junitxml="$OUT/junit.xml" -rA -v \
        $PYTEST_ARGS 2>&1; echo "PYTEST_EXIT=$?" >>"$OUT/guest.env"; } | tee "$OUT/pytest.log"
    # every daemon's log, named after its test directory; errnomon.log is the main test daemon's
    for f in /tmp/pytest/*/*.log; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done
    [ -f /tmp/pytest/errnomon0/errnomon.log ] && cp /tmp/pytest/errnomon0/errnomon.log "$OUT/errnomon.log"
fi
end=$(cut -d' ' -f1 /proc/uptime)
{
    echo "SUITE_SECONDS=$(echo "$start $end" | awk '{printf "%.1f", $2 - $1}')"
    echo "DONE=1"
} >>"$OUT/guest.env"
log "${BENCH:-suite} finished after ${end}s"
sync
umount "$OUT"
echo o >/proc/sysrq-trigger
sleep 30
