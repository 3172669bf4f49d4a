"""5. Real servers over loopback: nginx under wrk, redis-server under redis-benchmark, bare and under each tracer.

The servers are started once, pinned to SERVER_CPU, and the load generators to CLIENT_CPU, so neither fights the
other for a core. Each round runs every configuration once, in an order rotated by one each round; within a
configuration's slot every workload runs back to back:

- `nginx`: wrk, one thread, CONNECTIONS keep-alive connections, a fixed duration, GET of a small static file;
- `redis P1` / `redis P16`: redis-benchmark SET then GET, CONNECTIONS clients, pipelining off (-P 1) and on
  (-P 16), a request count calibrated once so that each test lasts about as long as the wrk run.

Configurations: bare; empty-raw (the floor: an empty raw tracepoint program on each of errnomon's hooks); the
errnomon daemon with the shipped config; errnomon-held, the same daemon stopped with SIGSTOP once started (its
programs attached and counting, its own process not running: what the hooks cost without the daemon's drains
and polls); bpftrace counting the same errors on the same send/recv tracepoints.
A ratio is a configuration's requests/s over the bare requests/s of the same round; the figures are medians of
per-round ratios with a distribution-free interval for the median (common.spread).

Separately, once, with nothing timed: a bpftrace program counts each process's socket calls (sock_send_length,
sock_recv_length: every sock_sendmsg/sock_recvmsg) by outcome (bytes, EAGAIN, another error) and its system
calls while each workload runs once; divided by the requests served, that is what each request costs in calls
and how many of them take the error path of a program on those tracepoints (EAGAIN is a negative return).

Traffic goes to 127.0.0.1 only, on ports in PORTS; every loop is bounded in count and time; the servers are
stopped (and waited for) whatever happens.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from common import (Bpftrace, HostCpu, StartStop, before_round, log, median, noisy_processes, sched_delta, spread,
                    threads_sched)
from hotpath import attach

HELD = "errnomon-held"
CONFIGS = ("bare", "empty-raw", "errnomon", HELD, "bpftrace-tp")
SERVER_CPU, CLIENT_CPU = 0, 1
PORTS = {"nginx": 18401, "redis": 18402}  # the benchmark's own range, 18400-18499, loopback only
CONNECTIONS = 8
PIPELINES = (1, 16)
SETTLE = 1.0
EXTRA_ROUNDS = 3  # at most, in place of rounds a virtual machine disturbed
BODY = b"errnomon benchmark: a small static response\n" * 3  # 135 bytes

WORKLOADS = ["nginx"] + ["redis-%s-P%d" % (t, p) for p in PIPELINES for t in ("set", "get")]


def tools():
    """The programs this benchmark runs, or None for each missing."""
    return {t: shutil.which(t) for t in ("nginx", "wrk", "redis-server", "redis-benchmark", "taskset")}


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Server(StartStop):
    """A server process in its own session, pinned to a CPU; stop() ends the whole group and waits."""

    name = None

    def __init__(self, workdir, port, cpu):
        self.workdir = workdir
        self.port = port
        self.cpu = cpu
        self.proc = None

    def command(self):
        raise NotImplementedError

    def start(self):
        if not port_free(self.port):
            raise RuntimeError("%s: 127.0.0.1:%d is in use: stop what listens there" % (self.name, self.port))
        os.makedirs(self.workdir, exist_ok=True)
        self.log = open(os.path.join(self.workdir, self.name + ".log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu)] + self.command(), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        if not wait_port(self.port, self.proc):
            self.stop()
            with open(self.log.name) as f:
                raise RuntimeError("%s did not listen on 127.0.0.1:%d:\n%s" % (self.name, self.port, f.read()[-2000:]))
        return self

    def stop(self, timeout=15.0):
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # nginx's workers are the master's children: nothing of the group may outlive it
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        self.log.close()


class Nginx(Server):
    """nginx, one worker, serving BODY as a static file (sendfile on, as Debian ships it), logs off."""

    name = "nginx"

    def command(self):
        root = os.path.join(self.workdir, "www")
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "index.html"), "wb") as f:
            f.write(BODY)
        for d in (self.workdir, root):
            os.chmod(d, 0o755)  # the worker runs as nobody
        os.chmod(os.path.join(root, "index.html"), 0o644)
        conf = os.path.join(self.workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""worker_processes 1;
user nobody nogroup;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    client_body_temp_path %(d)s/tmp-body;
    proxy_temp_path %(d)s/tmp-proxy;
    fastcgi_temp_path %(d)s/tmp-fastcgi;
    uwsgi_temp_path %(d)s/tmp-uwsgi;
    scgi_temp_path %(d)s/tmp-scgi;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
    }
}
""" % {"d": self.workdir, "port": self.port, "root": root})
        return ["nginx", "-p", self.workdir, "-c", conf, "-g", "daemon off;"]


class Redis(Server):
    """redis-server without persistence, one I/O thread."""

    name = "redis"

    def command(self):
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", self.workdir, "--io-threads", "1",
                "--logfile", ""]


def wrk(port, seconds):
    """One wrk run: {'requests', 'seconds', 'rate', 'errors'}."""
    out = subprocess.run(["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", "-c%d" % CONNECTIONS,
                          "-d%ds" % max(1, round(seconds)), "http://127.0.0.1:%d/index.html" % port],
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError("wrk failed (%d): %s" % (out.returncode, out.stderr or out.stdout))
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out.stdout)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not m or not rate:
        raise RuntimeError("wrk printed no rate:\n" + out.stdout)
    secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out.stdout)
    return {"requests": int(m.group(1)), "seconds": secs, "rate": float(rate.group(1)),
            "errors": errors.group(0) if errors else ""}


def redis_bench(port, requests, pipeline):
    """redis-benchmark SET then GET: {'set': requests/s, 'get': requests/s}."""
    out = subprocess.run(["taskset", "-c", str(CLIENT_CPU), "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                          "-c", str(CONNECTIONS), "-n", str(requests), "-P", str(pipeline), "-t", "set,get", "--csv"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("redis-benchmark failed (%d): %s" % (out.returncode, out.stderr or out.stdout))
    rates = {}
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0] in ("SET", "GET"):
            rates[cells[0].lower()] = float(cells[1])
    if set(rates) != {"set", "get"}:
        raise RuntimeError("redis-benchmark printed no SET/GET rates:\n" + out.stdout)
    return rates


def run_workloads(seconds, redis_n):
    """Every workload once: {workload: {'rate', 'host_busy_cpus', 'noisy'}}."""
    res = {}
    host = HostCpu().start()
    noisy = len(noisy_processes())
    w = wrk(PORTS["nginx"], seconds)
    noisy = max(noisy, len(noisy_processes()))
    res["nginx"] = {"rate": w["rate"], "requests": w["requests"], "host_busy_cpus": host.stop(), "noisy": noisy,
                    "errors": w["errors"]}
    for p in PIPELINES:
        host = HostCpu().start()
        noisy = len(noisy_processes())
        r = redis_bench(PORTS["redis"], redis_n[p], p)
        busy = host.stop()
        noisy = max(noisy, len(noisy_processes()))
        for t in ("set", "get"):
            res["redis-%s-P%d" % (t, p)] = {"rate": r[t], "requests": redis_n[p], "host_busy_cpus": busy,
                                            "noisy": noisy}
    return res


def calibrate(seconds, quick):
    """Requests per redis-benchmark test so that each lasts about `seconds`, from one short bare run."""
    n = {}
    for p in PIPELINES:
        probe = 2000 * p if quick else 20000 * p
        r = redis_bench(PORTS["redis"], probe, p)
        rate = min(r.values())
        n[p] = int(min(5_000_000, max(1000, rate * seconds)))
    return n


# ---- socket calls per request --------------------------------------------------------------------------

COMMS = ("nginx", "wrk", "redis-server", "redis-benchmark")


def calls_program():
    """bpftrace: socket calls by comm, direction and outcome, and system calls by comm, for COMMS only."""
    pred = " || ".join('comm == "%s"' % c for c in COMMS)
    lines = []
    for d in ("send", "recv"):
        tp = "tracepoint:sock:sock_%s_length" % d
        lines += ['%s /(%s) && args->ret >= 0/ { @calls[comm, "%s", "bytes"] = count(); }' % (tp, pred, d),
                  '%s /(%s) && args->ret == -11/ { @calls[comm, "%s", "EAGAIN"] = count(); }' % (tp, pred, d),
                  '%s /(%s) && args->ret < 0 && args->ret != -11/ { @calls[comm, "%s", "other error"] = count(); }'
                  % (tp, pred, d)]
    lines.append("tracepoint:raw_syscalls:sys_enter /%s/ { @syscalls[comm] = count(); }" % pred)
    return "\n".join(lines) + "\n"


def parse_counts(text):
    """bpftrace's printed maps -> {'calls': {(comm, dir, outcome): n}, 'syscalls': {comm: n}}."""
    calls, syscalls = {}, {}
    for m in re.finditer(r"^@calls\[([^,\]]+), ([^,\]]+), ([^\]]+)\]: (\d+)$", text, re.M):
        calls[(m.group(1), m.group(2), m.group(3))] = int(m.group(4))
    for m in re.finditer(r"^@syscalls\[([^\]]+)\]: (\d+)$", text, re.M):
        syscalls[m.group(1)] = int(m.group(2))
    return {"calls": calls, "syscalls": syscalls}


def count_calls(workdir, seconds, redis_n):
    """Each workload once under the counting program: per request, socket calls by outcome and system calls,
    of the server and of the load generator."""
    out = {}
    def redis_job(p):
        redis_bench(PORTS["redis"], redis_n[p], p)
        return 2 * redis_n[p]  # SET, then GET
    jobs = [("nginx", "nginx", "wrk", lambda: wrk(PORTS["nginx"], seconds)["requests"])]
    jobs += [("redis-P%d" % p, "redis-server", "redis-benchmark", lambda p=p: redis_job(p)) for p in PIPELINES]
    for name, server, client, job in jobs:
        bt = Bpftrace("calls-%s" % name, workdir, program=calls_program())
        bt.start()
        try:
            requests = job()
        finally:
            bt.stop()
        counts = parse_counts(bt.output)
        per = {}
        for role, comm in (("server", server), ("client", client)):
            c = {k[1:]: v for k, v in counts["calls"].items() if k[0] == comm}
            total = sum(c.values())
            eagain = sum(v for k, v in c.items() if k[1] == "EAGAIN")
            other = sum(v for k, v in c.items() if k[1] == "other error")
            per[role] = {
                "comm": comm,
                "socket_calls_per_request": round(total / requests, 3),
                "eagain_per_request": round(eagain / requests, 3),
                "other_errors_per_request": round(other / requests, 3),
                "eagain_share_of_socket_calls": round(eagain / total, 4) if total else None,
                "syscalls_per_request": round(counts["syscalls"].get(comm, 0) / requests, 3),
                "by_outcome": {"%s %s" % k: v for k, v in sorted(c.items())},
            }
        out[name] = {"requests": requests, **per}
        log("servers calls %-9s %d requests: %s %.2f socket calls/request (%.2f EAGAIN), %.2f syscalls; "
            "%s %.2f socket calls/request (%.2f EAGAIN)"
            % (name, requests, server, per["server"]["socket_calls_per_request"],
               per["server"]["eagain_per_request"], per["server"]["syscalls_per_request"], client,
               per["client"]["socket_calls_per_request"], per["client"]["eagain_per_request"]))
    return out


# ---- the benchmark -------------------------------------------------------------------------------------

def counted_for_workloads(daemon):
    """{metric: total} of what a running errnomon counted for the servers and load generators (COMMS)."""
    from prometheus_client.parser import text_string_to_metric_families
    totals = {}
    for family in text_string_to_metric_families(daemon.scrape_text()):
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("comm") in COMMS:
                totals[s.name] = totals.get(s.name, 0) + s.value
    return totals


def run(out_dir, rounds=9, seconds=3.0, quick=False, round_quiet_wait=None):
    """round_quiet_wait: seconds to wait for a quiet machine before each round (None: do not look, and keep
    every round). When it is given, a round during which a virtual machine ran (a qemu-system process seen at
    the start or end of any of its runs) is recorded, left out of the figures and run again, up to EXTRA_ROUNDS
    extra rounds; if fewer than 3 undisturbed rounds remain, every round counts (and the page says so)."""
    missing = [t for t, path in tools().items() if not path]
    if missing:
        raise RuntimeError("missing %s: 'make bench' (bench/setup.sh) installs them" % ", ".join(missing))
    if (os.cpu_count() or 1) < 2:
        raise RuntimeError("the server benchmark pins server and load generator to two CPUs; this machine has one")
    workdir = os.path.join(out_dir, "work")
    base = tempfile.mkdtemp(prefix="errnomon-bench-servers-")
    rates = {c: {w: [] for w in WORKLOADS} for c in CONFIGS}
    busy = {c: {w: [] for w in WORKLOADS} for c in CONFIGS}
    noisy = {c: {w: [] for w in WORKLOADS} for c in CONFIGS}
    order_log = []
    rounds_quiet = []
    daemon_cpu = []  # the running daemon's own CPU and wake-ups during each of its slots
    try:
        with Nginx(os.path.join(base, "nginx"), PORTS["nginx"], SERVER_CPU), \
                Redis(os.path.join(base, "redis"), PORTS["redis"], SERVER_CPU):
            wrk(PORTS["nginx"], 1)  # warm: the page in the cache, the worker's first connections
            redis_n = calibrate(seconds, quick)
            log("servers: redis-benchmark requests per test: %s" % ", ".join(
                "P%d %d" % kv for kv in sorted(redis_n.items())))
            disturbed = []
            r = 0
            while disturbed.count(False) < rounds and r < rounds + (EXTRA_ROUNDS if round_quiet_wait is not None else 0):
                order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
                order_log.append(list(order))
                rounds_quiet.append(before_round(round_quiet_wait))
                for config in order:
                    tracer = attach("errnomon" if config == HELD else config, workdir, r, label="servers")
                    if tracer is not None:
                        tracer.start()
                    try:
                        if config == HELD:
                            os.kill(tracer.pid, signal.SIGSTOP)
                        time.sleep(SETTLE)
                        if config == "errnomon":
                            before, t0 = threads_sched(tracer.pid), time.monotonic()
                        res = run_workloads(seconds, redis_n)
                        if config == "errnomon":
                            daemon_cpu.append(sched_delta(tracer.pid, before, threads_sched(tracer.pid),
                                                          time.monotonic() - t0))
                            time.sleep(1.2)  # two drains: what it counted in the slot, after the timed part
                            daemon_cpu[-1]["counted"] = counted_for_workloads(tracer)
                    finally:
                        if config == HELD:
                            os.kill(tracer.pid, signal.SIGCONT)
                        if tracer is not None:
                            tracer.stop()
                    for w in WORKLOADS:
                        rates[config][w].append(res[w]["rate"])
                        busy[config][w].append(res[w]["host_busy_cpus"])
                        noisy[config][w].append(res[w]["noisy"])
                    log("servers round %d (%d of %d undisturbed so far) %-11s %s" % (
                        r + 1, disturbed.count(False), rounds, config, ", ".join(
                            "%s %.0f/s" % (w, res[w]["rate"]) for w in WORKLOADS)))
                disturbed.append(any(noisy[c][w][-1] for c in CONFIGS for w in WORKLOADS))
                if disturbed[-1]:
                    log("servers round %d: a virtual machine ran during it%s" % (
                        r + 1, ", run again" if round_quiet_wait is not None else ""))
                r += 1
            calls = count_calls(workdir, seconds, redis_n)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    counted = [i for i, d in enumerate(disturbed) if not d]
    if round_quiet_wait is None or len(counted) < 3:
        counted = list(range(len(disturbed)))
    results, checks = {}, {}
    for w in WORKLOADS:
        rates_all = {c: rates[c][w] for c in CONFIGS}
        rates_w = {c: [rates_all[c][i] for i in counted] for c in CONFIGS}
        bare = rates_w["bare"]
        per = {}
        for c in CONFIGS:
            ratios = [x / b for x, b in zip(rates_w[c], bare)]
            per[c] = {"rates": rates_w[c], "median_rate": median(rates_w[c]), "rates_every_round": rates_all[c],
                      "ratios": [round(x, 5) for x in ratios], "ratio": rounded(spread(ratios)),
                      "host_busy_cpus": busy[c][w], "noisy_processes": noisy[c][w]}
        # errnomon's loss over the floor's, round by round, as a share of the bare rate (negative: errnomon lost more)
        over = [(e - f) / b for e, f, b in zip(rates_w["errnomon"], rates_w["empty-raw"], bare)]
        per["errnomon"]["minus_floor"] = rounded(spread(over))
        # the held daemon's (hooks only) over the floor, and what the running daemon loses beyond the held one
        per[HELD]["minus_floor"] = rounded(spread([(h - f) / b for h, f, b in zip(rates_w[HELD], rates_w["empty-raw"],
                                                                                 bare)]))
        per["errnomon"]["minus_held"] = rounded(spread([(e - h) / b for e, h, b in zip(rates_w["errnomon"],
                                                                                       rates_w[HELD], bare)]))
        ahead = [e / o - 1 for e, o in zip(rates_w["errnomon"], rates_w["bpftrace-tp"])]
        per["errnomon"]["ahead_of_bpftrace"] = rounded(spread(ahead))
        results[w] = per
        d, a = per["errnomon"]["minus_floor"], per["errnomon"]["ahead_of_bpftrace"]
        checks["errnomon_within_noise_of_floor_%s" % w] = {
            "value": d["median"], "low": d["low"], "high": d["high"], "confidence": d["confidence"],
            "budget": "interval of the median difference reaches 0", "ok": d["high"] is not None and d["high"] >= 0}
        checks["errnomon_ahead_of_bpftrace_%s" % w] = {
            "value": a["median"], "low": a["low"], "high": a["high"], "confidence": a["confidence"],
            "budget": "errnomon's rate above bpftrace-tp's (median of per-round ratios > 1)",
            "ok": a["median"] is not None and a["median"] > 0}
    all_noisy = [n for c in noisy.values() for w in c.values() for n in w]
    return {
        "rounds": len(counted), "rounds_asked": rounds, "rounds_run": len(disturbed),
        "rounds_disturbed": disturbed, "rounds_counted": counted, "seconds_per_run": seconds, "connections": CONNECTIONS, "pipelines": list(PIPELINES),
        "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU, "ports": PORTS, "body_bytes": len(BODY),
        "redis_requests_per_test": {str(k): v for k, v in redis_n.items()},
        "configs": list(CONFIGS), "workloads": WORKLOADS, "order_per_round": order_log,
        "rounds_quiet": rounds_quiet,
        "daemon_cpu": daemon_cpu,
        "versions": versions(), "results": results, "calls": calls,
        "runs_with_noisy_processes": sum(1 for n in all_noisy if n), "runs": len(all_noisy),
        "checks": checks,
    }


def rounded(d):
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def versions():
    def first_line(args):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return ""
    def version(args, pattern):
        m = re.search(pattern, first_line(args))
        return m.group(1) if m else ""
    return {"nginx": "nginx " + version(["nginx", "-v"], r"nginx/(\S+)"),
            "redis": "redis-server " + version(["redis-server", "--version"], r"v=(\S+)"),
            "wrk": "wrk " + version(["wrk", "--version"], r"wrk (?:debian/)?(\S+)")}
