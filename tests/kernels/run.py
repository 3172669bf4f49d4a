#!/usr/bin/env python3
"""The kernel matrix: build (or reuse) one guest image per kernel, boot each under qemu with this checkout
shared read-only, run errnomon's BPF scenario tests inside with the guest's own python3 and bcc, and print
one line per kernel. Exit status 0 only if every kernel passed.

    tests/kernels/run.py [NAME ...]          (make test-kernels [KERNELS="bookworm trixie"])

Environment: ERRNOMON_KERNEL_CACHE (images and the last run of each kernel, default /var/tmp/errnomon-kernels),
KERNEL_JOBS (guests at once, default 2), KERNEL_TIMEOUT (seconds a guest may run, default 1500),
KERNEL_PYTEST_ARGS (default: test_errors.py, test_ladder.py, test_connect_failures.py, test_seed.py,
test_listen_drops.py, test_unix.py but its nginx test, test_reset_ttl.py, the os.sendfile test and the
conntrack test of test_network.py of tests/bpf/;
test_seed.py and test_listen_queue.py of tests/unit/),
ERRNOMON_TEST_TAG (passed to the guest).
A benchmark instead of pytest (bench/ladder.py sets these): KERNEL_BENCH=NAME runs bench/NAME.py guest --out /mnt/out
$KERNEL_BENCH_ARGS in the guest; KERNEL_BENCH_FILES=PATH:NAME[,...] copies files into the guest's writable share;
KERNEL_ICOUNT=shift=N gives qemu -icount shift=N (guest time counts instructions, not the host's busy clock).
Host needs: root, mmdebstrap, e2fsprogs, qemu-system-x86 (tests/kernels/setup.sh installs them).
"""

import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("ERRNOMON_KERNEL_CACHE", "/var/tmp/errnomon-kernels")
JOBS = int(os.environ.get("KERNEL_JOBS", "2"))
TIMEOUT = float(os.environ.get("KERNEL_TIMEOUT", "1500"))
# the scenarios whose hooks differ by kernel: every seed phenomenon, the lower rungs, connect failures,
# sendfile (through ->sendpage before 6.5), seeding (sock_diag, socket cookies) and the distribution's own
# pyroute2 decoding recorded sock_diag answers. test_unix.py last of the BPF files: its path-table test makes
# 6000 unix connect errors with distinct paths, which every daemon counts, and the session daemon's series
# budget (5000) then folds later tests' new remotes into "other" (pytest keeps this order; on the host the
# files run alphabetically, and none after test_unix.py asks the session daemon for a new remote)
PYTEST_ARGS = os.environ.get(
    "KERNEL_PYTEST_ARGS", "tests/bpf/test_errors.py tests/bpf/test_ladder.py tests/bpf/test_connect_failures.py "
    "tests/bpf/test_real_programs.py::test_os_sendfile_to_peer_that_resets_mid_transfer tests/bpf/test_seed.py "
    "tests/bpf/test_listen_drops.py tests/bpf/test_reset_ttl.py "
    "tests/bpf/test_network.py::test_a_firewall_that_forgets_an_idle_connection_resets_it_from_the_middle "
    "tests/bpf/test_unix.py "
    # the guest images have no nginx
    "--deselect tests/bpf/test_unix.py::test_nginx_unix_upstream_resets "
    "tests/unit/test_seed.py tests/unit/test_listen_queue.py")
BENCH = os.environ.get("KERNEL_BENCH", "")
BENCH_ARGS = os.environ.get("KERNEL_BENCH_ARGS", "")
# qemu's -icount for a benchmark: the guest's clock counts instructions (2^shift ns each), not the host's time
ICOUNT = os.environ.get("KERNEL_ICOUNT", "")
BENCH_FILES = [f.rsplit(":", 1) for f in os.environ.get("KERNEL_BENCH_FILES", "").split(",") if f]
MISSING_PACKAGES = 3  # build-image.sh's exit status when the archive lacks a package

_guests = set()  # running qemu processes, killed on any exit of the runner
_lock = threading.Lock()
_print = threading.Lock()


def say(text):
    with _print:
        print(text, flush=True)


def kernels():
    names = []
    with open(os.path.join(HERE, "kernels.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                names.append(line.split()[0])
    return names


def read_env(path):
    env = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    env[key] = value
    except OSError:
        pass
    return env


class Result:
    def __init__(self, name):
        self.name = name
        self.kernel = "?"
        self.ok = False
        self.summary = ""         # why a kernel failed as a whole (build, boot, hang, compile)
        self.passed, self.failed = [], []   # test ids; failed: (id, reason)
        self.build = {}           # build.env of the image
        self.guest = {}           # guest.env written by guest-init.sh
        self.compile = None       # seconds errnomon took to compile and attach in the guest
        self.build_seconds = 0.0  # spent building here (0 when the image was cached)
        self.wall = 0.0           # boot to power-off, as the host saw it
        self.run_dir = None

    def line(self):
        status = "PASS" if self.ok else "FAIL"
        total = len(self.passed) + len(self.failed)
        parts = ["%-9s" % self.name, "%-20s" % self.kernel, status,
                 "scenarios %d/%d passed, %d failed" % (len(self.passed), total, len(self.failed))]
        parts.append("compile %s" % ("%.1fs" % self.compile if self.compile is not None else "-"))
        parts.append("boot %ss" % self.guest.get("BOOT_SECONDS", "-"))
        parts.append("wall %.0fs" % self.wall)
        if self.build.get("IMAGE_MB"):
            parts.append("image %sMB%s" % (self.build["IMAGE_MB"],
                                           " built in %.0fs" % self.build_seconds if self.build_seconds else ""))
        if self.guest.get("PYTHON"):
            parts.append("python %s bcc %s" % (self.guest["PYTHON"], self.guest.get("BCC", "?")))
        if self.summary:
            parts.append("-- " + self.summary)
        return "  ".join(parts)


def build(name, result):
    t0 = time.monotonic()
    p = subprocess.run(["bash", os.path.join(HERE, "build-image.sh"), name],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        result.summary = ("packages missing from the archive: " if p.returncode == MISSING_PACKAGES
                          else "image build failed: ") + last
        return None
    image = p.stdout.strip().splitlines()[-1]
    if "mmdebstrap" in p.stderr:  # built now, not taken from the cache
        result.build_seconds = took
        say("".join(l for l in p.stderr.splitlines(True) if l.startswith("build-image")).rstrip())
    result.build = read_env(os.path.join(image, "build.env"))
    result.kernel = result.build.get("KERNEL", "?")
    return image


def qemu_command(image, out):
    append = "root=/dev/vda ro rootfstype=ext4 console=ttyS0 quiet panic=-1 init=/sbin/errnomon-init"
    return ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "2G",
            "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
            "-serial", "file:" + os.path.join(out, "console.log"),
            "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
            "-append", append,
            # snapshot=on: writes go to a temporary overlay, the cached image is never changed
            "-drive", "file=%s,if=virtio,format=raw,snapshot=on" % os.path.join(image, "rootfs.img"),
            "-virtfs", "local,path=%s,mount_tag=src,security_model=none,readonly=on" % REPO,
            "-virtfs", "local,path=%s,mount_tag=out,security_model=none" % out] + \
        (["-icount", ICOUNT] if ICOUNT else [])


def boot(name, image, result):
    out = os.path.join(CACHE, "runs", name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    result.run_dir = out
    with open(os.path.join(out, "run.env"), "w") as f:
        f.write("PYTEST_ARGS='%s'\nERRNOMON_TEST_TAG='%s'\n" % (PYTEST_ARGS, os.environ.get("ERRNOMON_TEST_TAG", "")))
        if BENCH:
            f.write("BENCH='%s'\nBENCH_ARGS='%s'\n" % (BENCH, BENCH_ARGS))
    for path, name in BENCH_FILES:
        shutil.copy(path, os.path.join(out, name))
    t0 = time.monotonic()
    with open(os.path.join(out, "qemu.log"), "w") as qlog:
        proc = subprocess.Popen(qemu_command(image, out), stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
    with _lock:
        _guests.add(proc)
    try:
        proc.wait(TIMEOUT)
        hung = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        hung = True
    finally:
        with _lock:
            _guests.discard(proc)
    result.wall = time.monotonic() - t0
    collect(out, result, hung, proc.returncode)


def console_tail(out, n=3):
    try:
        with open(os.path.join(out, "console.log"), errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return "no console output"
    return " | ".join(lines[-n:])[-300:]


def reason_of(element):
    text = (element.get("message") or element.text or "").strip()
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return " ".join(lines[:4])[:400] or element.tag


def collect(out, result, hung, returncode):
    result.guest = read_env(os.path.join(out, "guest.env"))
    if result.guest.get("KERNEL"):
        result.kernel = result.guest["KERNEL"]
    junit = os.path.join(out, "junit.xml")
    if os.path.exists(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            test_id = "%s::%s" % (case.get("classname", "").rsplit(".", 1)[-1], case.get("name"))
            bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
            if bad:
                result.failed.append((test_id, "%s: %s" % (bad[0].tag, reason_of(bad[0]))))
            else:
                result.passed.append(test_id)
    if BENCH:
        collect_bench(out, result, hung, returncode)
        return
    log_path = os.path.join(out, "errnomon.log")
    errnomon_log = open(log_path, errors="replace").read() if os.path.exists(log_path) else ""
    m = re.search(r"attached the hooks of (\d+) of (\d+) signals in ([\d.]+)s", errnomon_log)
    if m:
        result.compile = float(m.group(3))
    if hung:
        result.summary = "killed at the %.0fs deadline; console: %s" % (TIMEOUT, console_tail(out))
    elif result.guest.get("DONE") != "1":
        result.summary = "guest stopped before the suite finished (qemu exit %s); console: %s" % (
            returncode, console_tail(out))
    elif not m:
        failure = [l for l in errnomon_log.splitlines() if "error" in l.lower()]
        result.summary = "errnomon did not start: " + (failure[0][:300] if failure else "no errnomon log")
    elif not result.passed and not result.failed:
        result.summary = "no test ran (pytest exit %s)" % result.guest.get("PYTEST_EXIT")
    result.ok = (not result.summary and not result.failed and result.passed
                 and result.guest.get("PYTEST_EXIT") == "0")


def collect_bench(out, result, hung, returncode):
    """A benchmark run passes when the guest finished it, it exited 0 and wrote <out>/<BENCH>.json."""
    if hung:
        result.summary = "killed at the %.0fs deadline; console: %s" % (TIMEOUT, console_tail(out))
    elif result.guest.get("DONE") != "1":
        result.summary = "guest stopped before the benchmark finished (qemu exit %s); console: %s" % (
            returncode, console_tail(out))
    elif result.guest.get("BENCH_EXIT") != "0" or not os.path.exists(os.path.join(out, BENCH + ".json")):
        result.summary = "bench/%s.py failed (exit %s): see %s/bench.log" % (BENCH, result.guest.get("BENCH_EXIT"), out)
    else:
        result.summary = ""
        result.passed.append("bench/%s.py" % BENCH)
    result.ok = not result.summary


def run_one(name):
    result = Result(name)
    t0 = time.monotonic()
    try:
        image = build(name, result)
        if image:
            say("%s: booting %s (deadline %.0fs)" % (name, result.kernel, TIMEOUT))
            boot(name, image, result)
    except Exception as e:  # one kernel's trouble must not hide the others' results
        result.summary = "runner error: %s: %s" % (type(e).__name__, e)
    say("%s: done in %.0fs" % (name, time.monotonic() - t0))
    return result


def kill_guests(*_):
    with _lock:
        for proc in _guests:
            proc.kill()
    if _:
        sys.exit(1)


def main(argv):
    known = kernels()
    names = argv or known
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.stderr.write("test-kernels: unknown kernel(s) %s: choose from %s (tests/kernels/kernels.txt)\n"
                         % (" ".join(unknown), " ".join(known)))
        return 2
    if os.geteuid() != 0:
        sys.stderr.write("test-kernels: needs root (image builds with mmdebstrap): run 'sudo make test-kernels'\n")
        return 2
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("mmdebstrap", "mmdebstrap"),
                          ("mke2fs", "e2fsprogs")):
        if not shutil.which(tool):
            sys.stderr.write("test-kernels: %s is missing: apt-get install %s (or run tests/kernels/setup.sh)\n"
                             % (tool, package))
            return 2
    signal.signal(signal.SIGTERM, kill_guests)
    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
            results = list(pool.map(run_one, names))
    finally:
        kill_guests()
    total = time.monotonic() - t0
    say("")
    for r in results:
        by_reason = {}
        for test_id, reason in r.failed:
            by_reason.setdefault(reason, []).append(test_id)
        for reason, test_ids in by_reason.items():
            which = test_ids[0] if len(test_ids) == 1 else "%d tests (%s, ...)" % (len(test_ids), test_ids[0])
            say("%s: %s %s" % (r.name, which, reason))
    say("")
    say("kernel matrix (%d guests at once, %.0fs in all; logs under %s/runs/):" % (JOBS, total, CACHE))
    for r in results:
        say(r.line())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
