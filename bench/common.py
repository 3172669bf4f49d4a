"""Shared helpers: paths, compiling the C programs, a real errnomon daemon, /proc readings, statistics."""

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
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


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


# ---- the daemon ------------------------------------------------------------------------------------------

class Errnomon:
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def bpftrace_program(kind):
    """The comparison bpftrace programs: the same error counting on the same tracepoints, or on syscall exits."""
    if kind == "tp":
        return ("tracepoint:sock:sock_send_length /args->ret < 0/ { @[comm, args->ret] = count(); }\n"
                "tracepoint:sock:sock_recv_length /args->ret < 0/ { @[comm, args->ret] = count(); }\n")
    syscalls = ("sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
                "write", "read", "writev", "readv")
    probes = ",\n".join("tracepoint:syscalls:sys_exit_%s" % s for s in syscalls)
    return probes + "\n/args->ret < 0/ { @[comm, probe, args->ret] = count(); }\n"


class Bpftrace:
    """bpftrace running one of the comparison programs; start() returns once its probes are attached."""

    def __init__(self, kind, workdir, timeout=60.0):
        self.kind = kind
        self.workdir = workdir
        self.timeout = timeout
        self.proc = None

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        script = os.path.join(self.workdir, "bpftrace-%s.bt" % self.kind)
        with open(script, "w") as f:
            # BEGIN runs once every probe is attached
            f.write('BEGIN { printf("READY\\n"); }\n' + bpftrace_program(self.kind))
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
                self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


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


def quiet_check(wait=0.0, busy_limit=0.3, sample=2.0):
    """Wait up to `wait` seconds for a quiet machine (no other BPF tracer, host busy < busy_limit CPUs over `sample` s);
    returns what was found at the end, and whether it was quiet. Never fails: the result is recorded."""
    deadline = time.monotonic() + wait
    waited = 0.0
    t0 = time.monotonic()
    while True:
        h = HostCpu().start()
        time.sleep(sample)
        busy = h.stop()
        holders = bpf_holders()
        quiet = not holders and busy < busy_limit
        if quiet or time.monotonic() >= deadline:
            break
        waited = time.monotonic() - t0
        log("machine not quiet (busy %.2f CPUs, %d other BPF holders: %s); waiting (%.0f s left)"
            % (busy, len(holders), ", ".join(sorted({h["comm"] for h in holders})), deadline - time.monotonic()))
        time.sleep(3.0)
    return {"quiet": quiet, "host_busy_cpus": busy, "other_bpf_holders": holders, "waited_s": round(waited, 1),
            "loadavg": open("/proc/loadavg").read().split()[:3]}
