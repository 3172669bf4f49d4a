"""Shared helpers: paths, compiling the C programs, a real errnomon daemon, /proc readings, statistics."""

import glob
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
ERRNOMON = os.path.join(REPO, ".venv", "bin", "errnomon")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The daemon runs with the shipped example config (defaults + the loopback remote group): what `make run` runs.
DAEMON_CONFIG = os.path.join(REPO, "config.example.yaml")


def log(msg):
    print("bench: " + msg, flush=True)


def median(values):
    return statistics.median(values) if values else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_c(name, build_dir):
    """gcc -O2 bench/<name>.c -> <build_dir>/<name>; returns the binary path."""
    os.makedirs(build_dir, exist_ok=True)
    src = os.path.join(BENCH, name + ".c")
    out = os.path.join(build_dir, name)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", out, src], check=True, timeout=120)
    return out


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# ---- /proc -----------------------------------------------------------------------------------------------

def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def process_cpu_ns(pid):
    """The CPU time of a whole process, exited threads included, to the nanosecond: its CPU-time clock
    (clock_getcpuclockid(3), CPUCLOCK_SCHED: the scheduler's own accounting). threads_sched() sees only the
    threads alive when it reads, so a thread that ran and ended between two readings is missed there."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def threads_sched(pid):
    """{tid: (ns on a CPU, voluntary context switches)} of a process's threads, from schedstat (exact, unlike
    the tick-sampled utime/stime) and status."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns = int(f.read().split()[0])
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                vol = next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches:"))
        except (OSError, StopIteration):  # the thread ended meanwhile
            continue
        out[int(tid)] = (ns, vol)
    return out


def sched_delta(pid, before, after, seconds):
    """CPU (fraction of one core) and wake-ups per second between two threads_sched() readings: the main
    thread's, and all threads'."""
    def delta(tids, i):
        return sum(after[t][i] - before.get(t, (0, 0))[i] for t in tids if t in after)
    return {"seconds": round(seconds, 3), "cpu_fraction": round(delta(after, 0) / 1e9 / seconds, 6),
            "main_cpu_fraction": round(delta([pid], 0) / 1e9 / seconds, 6),
            "wakeups_per_s": round(delta(after, 1) / seconds, 3),
            "main_wakeups_per_s": round(delta([pid], 1) / seconds, 3)}


def proc_status_kib(pid, *keys):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def smaps_rollup_kib(pid):
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def smaps_by_mapping_kib(pid, field="Anonymous"):
    """{mapping name: kB of `field`}, anonymous mappings as '[anon]'; the largest first."""
    out = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                name = os.path.basename(m.group(1)) if m.group(1) else "[anon]"
                continue
            if line.startswith(field + ":"):
                out[name] = out.get(name, 0) + int(line.split()[1])
    return dict(sorted(((k, v) for k, v in out.items() if v), key=lambda kv: -kv[1]))


class HostCpu:
    """Busy CPU time of the whole host between start() and stop(), in CPUs (1.0 = one core busy)."""

    @staticmethod
    def _read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v[:8]) - idle, time.monotonic()

    def start(self):
        self.t0 = self._read()
        return self

    def stop(self):
        busy1, t1 = self._read()
        busy0, t0 = self.t0
        return round((busy1 - busy0) / CLK_TCK / max(t1 - t0, 1e-9), 3)


# ---- machine ---------------------------------------------------------------------------------------------

def _cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = proc_meminfo_kib().get("MemTotal", 0)
    bcc_version = _cmd([VENV_PY, "-c", "import bcc; print(getattr(bcc, '__version__', ''))"])
    if not bcc_version:
        bcc_version = _cmd(["dpkg-query", "-W", "-f=${Version}", "python3-bpfcc"])
    return {
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "mem_total_mib": round(mem / 1024),
        "python": _cmd([VENV_PY, "-c", "import platform; print(platform.python_version())"]),
        "bcc": bcc_version,
        "bpftrace": _cmd(["bpftrace", "--version"]),
        "gcc": _cmd(["gcc", "-dumpfullversion"]),
        "prometheus_client": _cmd([VENV_PY, "-c", "import importlib.metadata as m; "
                                   "print(m.version('prometheus-client'))"]),
        "os": _os_release(),
        "cpu_vulnerabilities": _vulnerabilities(),
        "damon": damon(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


DAMON = "/sys/kernel/mm/damon/admin/kdamonds"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def damon(root=DAMON):
    """The kernel's DAMON memory monitors (kdamonds) and what they do: [{'state', 'operations', 'sample_us',
    'actions'}], one per monitoring context. A monitor on physical memory clears the accessed bits of the pages
    it samples (footprint.py measures what a wake-up costs on the machine beside it)."""
    out = []
    for ctx in sorted(glob.glob(os.path.join(root, "[0-9]*", "contexts", "[0-9]*"))):
        kdamond = os.path.dirname(os.path.dirname(ctx))
        out.append({"state": _read(os.path.join(kdamond, "state")), "operations": _read(os.path.join(ctx, "operations")),
                    "sample_us": _read(os.path.join(ctx, "monitoring_attrs", "intervals", "sample_us")),
                    "actions": [_read(a) for a in sorted(glob.glob(os.path.join(ctx, "schemes", "[0-9]*", "action")))]})
    return out


def proc_meminfo_kib():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0])
    return out


def _vulnerabilities():
    """CPU vulnerability mitigations in force (they set the price of the indirect calls and returns on a
    tracepoint's path): {name: state} for every entry that is not 'Not affected'."""
    d = "/sys/devices/system/cpu/vulnerabilities"
    out = {}
    try:
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name)) as f:
                v = f.read().strip()
            if v != "Not affected":
                out[name] = v
    except OSError:
        pass
    return out


def _os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


class StartStop:
    """`with X() as x:` for the classes here: start() on entry (returning self), stop() on exit."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- the daemon ------------------------------------------------------------------------------------------

class Errnomon(StartStop):
    """A real errnomon daemon: `.venv/bin/errnomon --config.file=... --web.listen-address=127.0.0.1:<free>`.

    It gets a NOTIFY_SOCKET (a datagram socket bound here), so start-up is timed from exec to READY=1;
    start() returns once READY=1 arrived and /metrics answers."""

    def __init__(self, workdir, config=DAEMON_CONFIG, name="errnomon", timeout=60.0, exe=ERRNOMON):
        self.exe = exe
        self.workdir = workdir
        self.config = config
        self.name = name
        self.timeout = timeout
        self.proc = None

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        self.sockdir = tempfile.mkdtemp(prefix="errnomon-bench-notify-")
        notify_path = os.path.join(self.sockdir, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.log_path = os.path.join(self.workdir, self.name + ".log")
        self.log = open(self.log_path, "w+")
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self.status = []  # (seconds since exec, message)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.exe, "--config.file=%s" % self.config, "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.pid = self.proc.pid
        deadline = t0 + self.timeout
        ready = None
        while ready is None:
            if self.proc.poll() is not None:
                raise RuntimeError("errnomon exited with %s:\n%s" % (self.proc.returncode, self.output()))
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError("errnomon sent no READY=1 within %.0f s:\n%s" % (self.timeout, self.output()))
            self.notify.settimeout(min(left, 0.5))
            try:
                msg = self.notify.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            t = time.monotonic() - t0
            for line in msg.splitlines():
                self.status.append((round(t, 4), line))
                if line == "READY=1":
                    ready = t
        self.ready_seconds = ready
        # READY=1 follows web.start(); /metrics must answer too before anything is measured
        while True:
            try:
                self.scrape_text()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("errnomon READY but /metrics does not answer:\n" + self.output())
                time.sleep(0.05)
        self.metrics_seconds = round(time.monotonic() - t0, 4)
        return self

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def scrape_text(self, timeout=20):
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            return r.read().decode()

    def samples(self, name):
        """[(labels dict, value)] of one metric."""
        from prometheus_client.parser import text_string_to_metric_families
        out = []
        for family in text_string_to_metric_families(self.scrape_text()):
            for s in family.samples:
                if s.name == name:
                    out.append((dict(s.labels), s.value))
        return out

    def cpu_seconds(self):
        return proc_cpu_seconds(self.pid)

    def memory(self):
        st = proc_status_kib(self.pid, "VmRSS", "RssAnon", "RssFile", "VmHWM")
        return {k: st.get(k) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}

    def stop(self, timeout=30):
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            rc = self.proc.returncode
        try:
            self.notify.close()
        except AttributeError:
            pass
        if getattr(self, "sockdir", None):
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None
        return rc


def bpftrace_program(kind):
    """The comparison bpftrace programs: the same error counting on the same tracepoints, or on syscall exits."""
    if kind == "tp":
        return ("tracepoint:sock:sock_send_length /args->ret < 0/ { @[comm, args->ret] = count(); }\n"
                "tracepoint:sock:sock_recv_length /args->ret < 0/ { @[comm, args->ret] = count(); }\n")
    syscalls = ("sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
                "write", "read", "writev", "readv")
    probes = ",\n".join("tracepoint:syscalls:sys_exit_%s" % s for s in syscalls)
    return probes + "\n/args->ret < 0/ { @[comm, probe, args->ret] = count(); }\n"


class Bpftrace(StartStop):
    """bpftrace running one of the comparison programs (or `program`, named `kind`); start() returns once its
    probes are attached; after stop(), `output` holds what it printed (its maps, on SIGINT)."""

    def __init__(self, kind, workdir, timeout=60.0, program=None):
        self.kind = kind
        self.workdir = workdir
        self.timeout = timeout
        self.program = program
        self.proc = None
        self.output = ""

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        script = os.path.join(self.workdir, "bpftrace-%s.bt" % self.kind)
        with open(script, "w") as f:
            # BEGIN runs once every probe is attached
            f.write('BEGIN { printf("READY\\n"); }\n' + (self.program or bpftrace_program(self.kind)))
        self.log_path = os.path.join(self.workdir, "bpftrace-%s.log" % self.kind)
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(["bpftrace", script], stdout=subprocess.PIPE, stderr=self.log)
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        seen = b""
        while b"READY\n" not in seen:  # raw reads: a buffered readline could hide a line that already arrived
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("bpftrace (%s) did not attach:\n%s%s" % (
                    self.kind, seen.decode(errors="replace"), open(self.log_path).read()))
            if select.select([fd], [], [], min(left, 0.5))[0]:
                seen += os.read(fd, 4096)
        return self

    def stop(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                out, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            self.output = (out or b"").decode(errors="replace")
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


# ---- is the machine quiet? -------------------------------------------------------------------------------

# kprobe, tracepoint, perf_event, raw_tracepoint, tracing (fentry/fexit): programs that run in other tasks' paths
TRACING_PROG_TYPES = {2, 5, 7, 17, 26}
TRACING_LINK_TYPES = {"raw_tracepoint", "tracing", "perf_event", "kprobe_multi", "uprobe_multi"}


def bpf_holders(exclude=()):
    """Processes holding tracing BPF programs or links (other tracers: another errnomon, bpftrace, ...):
    [{pid, comm, progs}] from /proc/<pid>/fdinfo. Their programs run in every measurement, "bare" included."""
    out = []
    me = {os.getpid()} | set(exclude)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in me:
            continue
        progs = 0
        try:
            for fd in os.listdir("/proc/%s/fdinfo" % pid):
                try:
                    with open("/proc/%s/fdinfo/%s" % (pid, fd)) as f:
                        text = f.read()
                except OSError:
                    continue
                m = re.search(r"^prog_type:\s*(\d+)", text, re.M)
                if m and int(m.group(1)) in TRACING_PROG_TYPES:
                    progs += 1
                m = re.search(r"^link_type:\s*(\S+)", text, re.M)
                if m and m.group(1) in TRACING_LINK_TYPES:
                    progs += 1
            if progs:
                with open("/proc/%s/comm" % pid) as f:
                    comm = f.read().strip()
                with open("/proc/%s/cmdline" % pid) as f:
                    cmd = f.read().replace("\0", " ").strip()[:160]
                out.append({"pid": int(pid), "comm": comm, "cmdline": cmd, "bpf_fds": progs})
        except OSError:
            continue
    return out


# Processes whose mere presence makes the machine noisy even between their bursts: a virtual machine (the
# kernel-matrix guests, `make test-kernels`) takes a whole core whenever it runs and its load comes and goes.
NOISY_COMMS = ("qemu-system-x86", "qemu-system-aar", "qemu-system-i38")  # comm is cut at 15 characters


def noisy_processes():
    """[{pid, comm}] of running processes in NOISY_COMMS."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith(NOISY_COMMS):
            out.append({"pid": int(pid), "comm": comm})
    return out


def quiet_now(busy_limit=0.3, sample=2.0):
    """One look: (quiet, busy CPUs over `sample` s, other BPF holders, noisy processes)."""
    h = HostCpu().start()
    time.sleep(sample)
    busy = h.stop()
    holders = bpf_holders()
    noisy = noisy_processes()
    return not holders and not noisy and busy < busy_limit, busy, holders, noisy


# Seconds this process may still spend waiting for quiet, over all checks (None: no limit): bench/run.py
# --quiet-budget, so that a machine that never quiets down cannot stretch a run past a deadline.
QUIET_BUDGET = {"left": None}


def quiet_check(wait=0.0, busy_limit=0.3, sample=2.0):
    """Wait up to `wait` seconds (and no more than what is left of QUIET_BUDGET) for a quiet machine (no other
    BPF tracer, no virtual machine running, host busy < busy_limit CPUs over `sample` s); returns what was found
    at the end, and whether it was quiet. Never fails: the result is recorded."""
    if QUIET_BUDGET["left"] is not None:
        wait = max(0.0, min(wait, QUIET_BUDGET["left"]))
    deadline = time.monotonic() + wait
    t0 = time.monotonic()
    while True:
        quiet, busy, holders, noisy = quiet_now(busy_limit, sample)
        if quiet or time.monotonic() >= deadline:
            break
        log("machine not quiet (busy %.2f CPUs, %d other BPF holders: %s; running: %s); waiting (%.0f s left)"
            % (busy, len(holders), ", ".join(sorted({h["comm"] for h in holders})) or "none",
               ", ".join(sorted({p["comm"] for p in noisy})) or "nothing noisy", deadline - time.monotonic()))
        time.sleep(3.0)
    waited = max(0.0, time.monotonic() - t0 - sample)  # all but the one look every check takes
    if QUIET_BUDGET["left"] is not None:
        QUIET_BUDGET["left"] = max(0.0, QUIET_BUDGET["left"] - waited)
    return {"quiet": quiet, "host_busy_cpus": busy, "other_bpf_holders": holders, "noisy_processes": noisy,
            "waited_s": round(waited, 1), "loadavg": open("/proc/loadavg").read().split()[:3]}


def before_round(wait):
    """Between rounds of a side-by-side benchmark: wait up to `wait` s for a quiet machine (None: do not look).
    Returns the round's record: whether it started quiet, and what ran if not."""
    if wait is None:
        return None
    q = quiet_check(wait=wait, sample=1.0)
    return {"quiet": q["quiet"], "host_busy_cpus": q["host_busy_cpus"], "waited_s": q["waited_s"],
            "noisy": sorted({p["comm"] for p in q["noisy_processes"]}),
            "other_bpf_holders": sorted({h["comm"] for h in q["other_bpf_holders"]})}


# ---- spread ----------------------------------------------------------------------------------------------

def median_interval(values, confidence=0.95):
    """A distribution-free interval for the median of `values` (order statistics, binomial): the k-th smallest
    and k-th largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. Below 6 values no such k exists and
    the interval is the whole range. Returns (low, high, the confidence it really has)."""
    xs = sorted(values)
    n = len(xs)
    if not n:
        return None, None, 0.0
    from math import comb
    tail = (1 - confidence) / 2
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) < k + 1)
    while k + 1 <= n // 2:
        p = below + comb(n, k) / 2 ** n
        if p > tail:
            break
        below, k = p, k + 1
    if k == 0:
        return xs[0], xs[-1], 1 - 2 / 2 ** n if n > 1 else 0.0
    return xs[k - 1], xs[n - k], round(1 - 2 * below, 4)


def spread(values):
    """Median, the interval of median_interval(), and the interquartile range of per-round values."""
    if not values:
        return {"median": None, "low": None, "high": None, "confidence": 0.0, "iqr": None, "n": 0}
    low, high, conf = median_interval(values)
    qs = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": median(values), "low": low, "high": high, "confidence": conf,
            "iqr": qs[2] - qs[0], "n": len(values)}


# ---- the floor: empty programs on errnomon's hooks -------------------------------------------------------

def monitor_module(name):
    """A module of the daemon (monitor.<name>) from this checkout."""
    import importlib
    import sys
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    return importlib.import_module("monitor." + name)


def errnomon_raw_hooks():
    """The raw tracepoints errnomon attaches by default on this kernel (its syscall tracepoints are opt-in)."""
    loader = monitor_module("loader")
    tracefs = loader.find_tracefs()
    return sorted(p for p in loader.RAW_TRACEPOINTS if loader.tracepoint_format(tracefs, p) is not None)


class EmptyPrograms(StartStop):
    """The floor: a raw tracepoint program that returns at once on each of errnomon's hooks, loaded by bcc in
    this process. Whatever a program on those tracepoints does, the kernel's dispatch to it costs this much."""

    def __init__(self, hooks=None):
        self.hooks = hooks
        self.bpf = None

    def start(self):
        import bcc
        self.hooks = self.hooks or errnomon_raw_hooks()
        text = "".join("RAW_TRACEPOINT_PROBE(%s) { return 0; }\n" % h.split(":")[1] for h in self.hooks)
        self.bpf = bcc.BPF(text=text.encode(), cflags=["-w"])
        return self

    def stop(self):
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def errnomon_bpf(probes=None, source=None, extra_cflags=(), with_syscalls=False):
    """errnomon's programs compiled and attached by bcc in this process with the flags the loader gives them on
    this kernel (BTF offsets, the tracepoints it has), settings written as the daemon writes them; no daemon.
    probes: a subset (None: all but the opt-in syscall tracepoints, unless with_syscalls); source: another copy
    of bpf/errnomon.bpf.c (bench-only variants); extra_cflags: e.g. -D flags for such a copy."""
    import ctypes
    import bcc
    loader, btf, abi = (monitor_module(m) for m in ("loader", "btf", "abi"))
    tracefs = loader.find_tracefs()
    formats = {p: loader.tracepoint_format(tracefs, p) for p in loader.PROBES}
    kernel_btf = btf.BTF.load()
    layout, _ = loader.layout_flags(kernel_btf)
    kernel = loader.facts(tracefs, formats, kernel_btf, layout)
    chosen, _ = loader.choose_hooks(kernel, syscalls=with_syscalls)  # the hook ladder, as the daemon chooses
    available = loader.chosen_tracepoints(chosen)
    if probes is not None:
        available &= set(probes)
    flags = loader.compile_flags(available, formats, 16384, 65536, layout, loader.send_reset_arity(kernel_btf),
                                 loader.hook_flags(chosen, kernel))
    b = bcc.BPF(src_file=(source or loader.SOURCE).encode(), cflags=flags + list(extra_cflags))
    low, high = loader.ephemeral_ports()
    # error events on, as the daemon turns them on with the shipped config (events.enabled, events.rate 1000):
    # nobody reads the ring here, so past the burst every error takes the rate-limited branch, as in a storm
    interval = monitor_module("daemon").event_interval_ns(monitor_module("config").load(DAEMON_CONFIG))
    b["settings"][ctypes.c_int(0)] = abi.Settings(gen=0, count_flags=0, ephemeral_low=low, ephemeral_high=high,
                                                  event_interval_ns=interval)
    return b


# ---- the kernel's run-time statistics of BPF programs ----------------------------------------------------

class BpfStats(StartStop):
    """bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME): the kernel counts run_time_ns and run_cnt of every program
    while the returned descriptor is open. Closing it (stop(), or this process dying) turns the counting off
    again, so kernel.bpf_stats_enabled never has to be written or restored. The counting itself costs two
    clock reads per program run: never time rates while it is on."""

    BPF_ENABLE_STATS = 32
    BPF_STATS_RUN_TIME = 0

    def __init__(self):
        self.fd = None

    def start(self):
        import ctypes
        import errno as errno_mod
        bpfmap = monitor_module("bpfmap")
        attr = (ctypes.c_uint32 * 2)(self.BPF_STATS_RUN_TIME, 0)
        fd = bpfmap._libc.syscall(bpfmap._NR_BPF, self.BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, "BPF_ENABLE_STATS: %s" % os.strerror(e or errno_mod.EINVAL))
        self.fd = fd
        return self

    @staticmethod
    def read(prog_fd):
        """(run_time_ns, run_cnt) of a program so far."""
        info, _ = monitor_module("bpfmap").prog_info(prog_fd)
        return info.run_time_ns, info.run_cnt

    def stop(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
