#!/usr/bin/env python3
"""The cost of each send/recv rung of errnomon's hook ladder, measured inside the kernel-matrix guests.

Kernels before 6.3 have no sock:sock_send_length / sock_recv_length: errnomon takes the send/recv return
values from fexit on inet_sendmsg, inet6_sendmsg, inet_sendpage, inet_recvmsg, inet6_recvmsg, or from an
entry kprobe + kretprobe on them (monitor/loader.py SIGNALS). This host allows neither, so each guest of the
kernel matrix (tests/kernels/) runs the ping-pong of bench/hotpath.py (one thread, a loopback TCP pair,
64-byte send+recv on each end: 4 successful socket calls an iteration) under each configuration in turn:

    bare             nothing attached
    empty-raw        empty raw tracepoint programs on sock_send_length/sock_recv_length (6.3+ only)
    empty-fexit      empty fexit programs on the rung's functions
    empty-kretprobe  empty entry kprobes + kretprobes on them (maxactive as errnomon's)
    stash-lru        those kprobes doing only what errnomon's kretprobe rung does on the success path: keep the
                     socket by thread in an LRU hash at entry, look it up and delete it at return
    stash-inplace    the same kept more cheaply: written in place at entry, looked up (not deleted) at return
    errnomon         the real daemon, shipped config: the cheapest rung the kernel offers
    errnomon-kprobe  the real daemon with kernel.function_hooks: [kprobe]: the kretprobe rung (only where
                     the tracepoints are missing; with them it is the same as errnomon)

Rounds: every configuration once, in a rotated order; a ratio is a rate over the bare rate of the same round;
figures are medians over rounds with the lowest and highest round. The daemon is stopped (SIGSTOP) during each
ping-pong run, its programs attached: a guest has one vCPU, and its map drains would otherwise be counted as
hook cost. The guests are emulated (qemu TCG): absolute times are not this machine's, ratios are what counts.
Each kernel is measured with two guest clocks, one boot each: icount (qemu -icount shift=0: 1 ns per
instruction executed, repeatable whatever else the host runs) and wall (the host's time: emulation speed,
which moves with the host's load; the other qemu guests running meanwhile are counted).

    /usr/bin/python3 bench/ladder.py [NAME ...]        (make bench-kernels [KERNELS=...] [LADDER_ARGS=...])
        builds bench/pingpong.c statically, boots each guest (tests/kernels/run.py, one at a time), runs
        `ladder.py guest` inside, collects bench/out/ladder.json and rewrites the ladder section of
        docs/BENCHMARKS.md
    /usr/bin/python3 bench/ladder.py --docs-only        the docs section again from bench/out/ladder.json
    python3 bench/ladder.py guest --out DIR [...]      inside a guest (tests/kernels/guest-init.sh, BENCH=ladder)
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH, DAEMON_CONFIG, REPO, Errnomon, log, median, write_json  # noqa: E402

CALLS_PER_ITERATION = 4  # send A, recv B, send B, recv A
SIZE = 64
FLOOR_SOURCE = os.path.join(BENCH, "ladder_floor.bpf.c")
FLOORS = ("empty-raw", "empty-fexit", "empty-kretprobe", "stash-lru", "stash-inplace")
# kretprobe programs that do only the success-path work of errnomon's kretprobe rung, two ways (ladder_floor.bpf.c)
STASH = {"stash-lru": "-DSTASH_LRU=1", "stash-inplace": "-DSTASH_INPLACE=1"}
DAEMONS = ("errnomon", "errnomon-kprobe")
SETTLE = 1.0  # seconds between attaching (or not) and the run (default of --settle)
OUT_JSON = os.path.join(BENCH, "out", "ladder.json")


# ---- statistics ----------------------------------------------------------------------------------------------

def summary(values):
    """{median, low, high, n} over rounds."""
    return {"median": median(values), "low": min(values), "high": max(values), "n": len(values)}


def ns_per_call(rate, reference):
    """ns a socket call takes more at `rate` than at `reference` (iterations per second)."""
    return (1 / rate - 1 / reference) / CALLS_PER_ITERATION * 1e9


def analyse(configs, rates):
    """Per configuration: per-round ratios to bare and ns per call over bare, and over the floor of its rung."""
    bare = rates["bare"]
    out = {}
    for c in configs:
        ratios = [x / b for x, b in zip(rates[c], bare)]
        over_bare = [ns_per_call(x, b) for x, b in zip(rates[c], bare)]
        out[c] = {"rates": rates[c], "median_rate": median(rates[c]), "ratio": summary(ratios),
                  "ns_per_call_over_bare": summary(over_bare)}
    return out


def over_floor(rates, config, floor):
    return summary([ns_per_call(x, f) for x, f in zip(rates[config], rates[floor])])


# ---- inside a guest ------------------------------------------------------------------------------------------

SEND_RECV_FUNCTIONS = ("inet_sendmsg", "inet6_sendmsg", "inet_sendpage", "inet_recvmsg", "inet6_recvmsg")


def kernel_functions():
    """Which rung functions this kernel has (BTF prototypes), the same test the loader makes."""
    sys.path.insert(0, REPO)
    from monitor import btf
    kernel_btf = btf.BTF.load()
    return [f for f in SEND_RECV_FUNCTIONS if kernel_btf is not None and kernel_btf.func_proto(f) is not None]


def tracepoints_exist():
    return all(os.path.isdir("/sys/kernel/tracing/events/sock/" + e) for e in ("sock_send_length", "sock_recv_length"))


class FloorSlot:
    """One rung's empty programs (ladder_floor.bpf.c), loaded and attached for a slot, removed after it. Loaded
    anew each time: before 5.x a detached fexit program cannot be attached again (ENOENT)."""

    def __init__(self, rung, functions, maxactive):
        self.rung, self.functions, self.maxactive = rung, functions, maxactive
        self.bpf = None
        self.load_seconds = None

    def flags(self):
        if self.rung == "empty-raw":
            return ["-DRAW_TRACEPOINTS=1"]
        kind = "FEXIT" if self.rung == "empty-fexit" else "KRETPROBE"
        return ["-D%s_%s=1" % (kind, f) for f in self.functions] + ([STASH[self.rung]] if self.rung in STASH else [])

    def start(self):
        import bcc
        t0 = time.monotonic()
        # raw tracepoint and fexit programs attach as bcc loads them; kprobes by name, below
        self.bpf = bcc.BPF(src_file=FLOOR_SOURCE.encode(), cflags=["-w"] + self.flags())
        if self.rung == "empty-kretprobe" or self.rung in STASH:
            for f in self.functions:
                self.bpf.attach_kprobe(event=f.encode(), fn_name=("floor_entry__" + f).encode())
                self.bpf.attach_kretprobe(event=f.encode(), fn_name=("floor_return__" + f).encode(),
                                          maxactive=self.maxactive)
        self.load_seconds = round(time.monotonic() - t0, 2)
        return self

    def programs(self):
        """What is attached: bcc's names of the programs."""
        b = self.bpf
        names = list(getattr(b, "kfunc_exit_fds", {})) + list(b.raw_tracepoint_fds) + list(b.kprobe_fds)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    def pause(self):
        pass

    def resume(self):
        pass

    def stop(self):
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


class DaemonSlot(Errnomon):
    """The real daemon, from the read-only checkout with the guest's python3; stopped (SIGSTOP) while a
    ping-pong runs, its programs still attached."""

    def pause(self):
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def send_recv_hooks(self):
        """{signal: [probe]} of send_errors and recv_errors, from errnomon_probe_attached."""
        hooks = {}
        for labels, value in self.samples("errnomon_probe_attached"):
            if labels.get("signal") in ("send_errors", "recv_errors") and value == 1:
                hooks.setdefault(labels["signal"], []).append(labels.get("probe"))
        return {k: sorted(v) for k, v in hooks.items()}


def daemon_files(workdir):
    """The daemon's command (python3 -m monitor.cli from the checkout) and the kprobe-only config."""
    import yaml
    os.makedirs(workdir, exist_ok=True)
    exe = os.path.join(workdir, "errnomon")
    with open(exe, "w") as f:
        f.write('#!/bin/sh\nexec %s -m monitor.cli "$@"\n' % sys.executable)
    os.chmod(exe, 0o755)
    with open(DAEMON_CONFIG) as f:
        data = yaml.safe_load(f) or {}
    data["kernel"] = dict(data.get("kernel") or {}, function_hooks=["kprobe"])
    kprobe_config = os.path.join(workdir, "config-kprobe.yaml")
    with open(kprobe_config, "w") as f:
        yaml.safe_dump(data, f)
    return exe, kprobe_config


def pingpong(binary, seconds):
    out = subprocess.run([binary, str(SIZE), str(seconds), "0"], capture_output=True, text=True, check=True,
                         timeout=seconds + 120)
    return json.loads(out.stdout)


def measure(slot, settle, started, run):
    """One configuration's run: the slot (None: bare) started, started(slot) told, `settle` seconds, then run()
    with the slot paused (its programs attached); the slot stopped whatever happens. run()'s result."""
    if slot is not None:
        slot.start()
    try:
        if slot is not None:
            started(slot)
        time.sleep(settle)
        if slot is not None:
            slot.pause()
        try:
            return run()
        finally:
            if slot is not None:
                slot.resume()
    finally:
        if slot is not None:
            slot.stop()


def guest(a):
    """Inside a guest: every configuration once a round, rotated; writes <out>/ladder.json."""
    binary = os.path.join("/tmp", "pingpong")
    shutil.copy(os.path.join(a.out, "pingpong"), binary)  # not run from 9p
    os.chmod(binary, 0o755)
    workdir = "/tmp/ladder"
    exe, kprobe_config = daemon_files(workdir)
    functions = kernel_functions()
    raw = tracepoints_exist()
    from monitor import loader
    maxactive = loader.KRETPROBE_MAXACTIVE
    log("ladder: kernel %s, rung functions %s, tracepoints %s"
        % (os.uname().release, " ".join(functions), "yes" if raw else "no"))
    configs = ["bare"] + (["empty-raw"] if raw else []) + ["empty-fexit", "empty-kretprobe", "stash-lru",
                                                           "stash-inplace", "errnomon"]
    if not raw:
        configs.append("errnomon-kprobe")  # with the tracepoints, function_hooks does not change send/recv
    if a.configs:
        configs = ["bare"] + [c for c in configs if c in a.configs and c != "bare"]

    def slot(config, r):
        if config in FLOORS:
            return FloorSlot(config, functions, maxactive)
        return DaemonSlot(workdir, config=kprobe_config if config == "errnomon-kprobe" else DAEMON_CONFIG,
                          name="%s-%d" % (config, r), timeout=a.daemon_timeout, exe=exe)

    rates = {c: [] for c in configs}
    runs = {c: [] for c in configs}
    hooks, starts, order_log = {}, {c: [] for c in configs if c != "bare"}, []
    pingpong(binary, 0.5)  # warm the page cache and the binary
    for r in range(a.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        order_log.append(order)
        for config in order:
            def started(s, config=config):
                if isinstance(s, DaemonSlot):
                    starts[config].append(s.metrics_seconds)
                    hooks.setdefault(config, s.send_recv_hooks())
                else:
                    starts[config].append(s.load_seconds)
                    hooks.setdefault(config, s.programs())
            res = measure(slot(config, r) if config != "bare" else None, a.settle, started,
                          lambda: pingpong(binary, a.seconds))
            rates[config].append(res["rate"])
            runs[config].append(res)
            log("ladder round %d/%d %-16s %9.0f it/s" % (r + 1, a.rounds, config, res["rate"]))
    result = {
        "kernel": os.uname().release,
        "tracepoints": raw,
        "functions": functions,
        "configs": configs,
        "rounds": a.rounds,
        "seconds_per_run": a.seconds,
        "settle_seconds": a.settle,
        "size": SIZE,
        "calls_per_iteration": CALLS_PER_ITERATION,
        "order_per_round": order_log,
        # errnomon: {signal: [probe]} from errnomon_probe_attached; floors: bcc's names of the programs
        "hooks": hooks,
        # seconds (guest clock) from starting a configuration to measuring: daemon to /metrics, floor load+attach
        "start_seconds": starts,
        "kretprobe_maxactive": maxactive,
        "results": analyse(configs, rates),
        "runs": runs,
    }
    # what each errnomon rung adds over the empty programs on its own hooks
    floor_of = {"errnomon": "empty-raw" if raw else "empty-fexit", "errnomon-kprobe": "empty-kretprobe",
                "stash-lru": "empty-kretprobe", "stash-inplace": "empty-kretprobe"}
    for c, floor in floor_of.items():
        if c in rates:
            result["results"][c]["floor"] = floor
            result["results"][c]["ns_per_call_over_floor"] = over_floor(rates, c, floor)
    # what is left registered once every slot has ended: kprobe events and kprobes (none should be)
    result["left_after"] = {}
    for name, path in (("kprobe_events", "/sys/kernel/tracing/kprobe_events"),
                       ("kprobes", "/sys/kernel/debug/kprobes/list")):
        try:
            with open(path) as f:
                result["left_after"][name] = f.read().splitlines()
        except OSError as e:
            result["left_after"][name] = "unreadable: %s" % e
    for c in DAEMONS:  # the start-up log of each daemon configuration's first slot
        path = os.path.join(workdir, "%s-0.log" % c)
        if os.path.exists(path):
            shutil.copy(path, os.path.join(a.out, "%s.log" % c))
    write_json(os.path.join(a.out, "ladder.json"), result)
    log("ladder: wrote %s" % os.path.join(a.out, "ladder.json"))
    return 0


# ---- on the host ---------------------------------------------------------------------------------------------

KERNELS_DIR = os.path.join(REPO, "tests", "kernels")


class QemuCounter:
    """Samples, every few seconds while a guest of ours runs, how many other qemu-system processes run."""

    def __init__(self, ours, every=5.0):
        self.ours, self.every = ours, every
        self.samples = []
        self._stop = threading.Event()

    def _count(self):
        others = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and os.path.basename(cmd[0]).startswith(b"qemu-system") and \
                    not any(self.ours.encode() in part for part in cmd):
                others += 1
        return others

    def _run(self):
        while not self._stop.wait(self.every):
            self.samples.append(self._count())

    def __enter__(self):
        self.samples.append(self._count())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()

    def record(self):
        s = self.samples
        return {"min": min(s), "max": max(s), "mean": round(sum(s) / len(s), 2), "samples": len(s),
                "every_s": self.every} if s else None


def build_static(name, build_dir):
    """bench/<name>.c, static: the guests have no compiler, and their libc differs from this host's."""
    os.makedirs(build_dir, exist_ok=True)
    out = os.path.join(build_dir, "%s-static" % name)
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", out, os.path.join(BENCH, name + ".c")],
                   check=True, timeout=120)
    return out


def host_preflight(prog, kernels):
    """(the kernel matrix module, the kernel names to run), or an exit status with its one line on stderr."""
    matrix = kernel_matrix()
    known = matrix.kernels()
    names = kernels or known
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.stderr.write("%s: unknown kernel(s) %s: choose from %s\n" % (prog, " ".join(unknown), " ".join(known)))
        return 2
    if not shutil.which("gcc"):
        sys.stderr.write("%s: gcc is missing: apt-get install gcc libc6-dev\n" % prog)
        return 2
    return matrix, names


def kernel_matrix():
    """tests/kernels/run.py as a module: its cache directory and kernel names."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("kernel_matrix", os.path.join(KERNELS_DIR, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLOCKS = {
    # qemu -icount shift=0: the guest's clock advances 1 ns per instruction executed, whatever the host does
    "icount": "shift=0",
    # the host's clock: emulation speed, which moves with the load of the host's two cores
    "wall": "",
}


def run_kernel(name, clock, a, binary, cache):
    """One guest of the matrix running `ladder.py guest`; its ladder.json with what the host saw, or None."""
    seconds = a.seconds if a.seconds else (1.0 if clock == "icount" else 2.0)
    env = dict(os.environ, KERNEL_JOBS="1", KERNEL_BENCH="ladder",
               KERNEL_BENCH_ARGS="--rounds %d --seconds %g --settle %g%s" % (
                   a.rounds, seconds, a.settle, " --configs " + ",".join(a.configs) if a.configs else ""),
               KERNEL_BENCH_FILES="%s:pingpong" % binary, KERNEL_ICOUNT=CLOCKS[clock],
               KERNEL_TIMEOUT=str(a.timeout))
    log("ladder: %s, %s clock: %d rounds of %g s (guest deadline %.0f s)" % (name, clock, a.rounds, seconds, a.timeout))
    t0 = time.monotonic()
    with QemuCounter(os.path.join(cache, "runs", name)) as qemu:
        p = subprocess.run([sys.executable, os.path.join(KERNELS_DIR, "run.py"), name], env=env)
    run_dir = os.path.join(cache, "runs", name)
    result_path = os.path.join(run_dir, "ladder.json")
    if p.returncode != 0 or not os.path.exists(result_path):
        log("ladder: %s failed (run.py exit %d): see %s" % (name, p.returncode, run_dir))
        return None
    with open(result_path) as f:
        r = json.load(f)
    r["clock"] = clock
    r["qemu_icount"] = CLOCKS[clock] or None
    r["other_qemu_processes"] = qemu.record()
    r["wall_seconds"] = round(time.monotonic() - t0, 1)
    r["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with open(os.path.join(run_dir, "guest.env")) as f:
        r["guest"] = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    log("ladder: %s (%s clock) done in %.0f s, other qemu processes %s"
        % (name, clock, r["wall_seconds"], r["other_qemu_processes"]))
    return r


def host(a):
    ready = host_preflight("bench-kernels", a.kernels)
    if isinstance(ready, int):
        return ready
    matrix, names = ready
    cache = matrix.CACHE
    binary = build_static("pingpong", os.path.join(BENCH, "out", "build"))
    data = load_results(a.json)
    failed = []
    for clock in a.clock:
        for name in names:
            r = run_kernel(name, clock, a, binary, cache)
            if r is None:
                failed.append("%s (%s)" % (name, clock))
                continue
            data.setdefault("clocks", {}).setdefault(clock, {}).setdefault("kernels", {})[name] = r
            write_json(a.json, data)
    if not a.no_docs and os.path.abspath(a.json) == OUT_JSON:
        import ladder_report
        ladder_report.update_doc(data)
    if failed:
        log("ladder: failed on %s" % " ".join(failed))
        return 1
    return 0


def load_results(path=OUT_JSON):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  sudo make bench-kernels\n"
                                       "  sudo /usr/bin/python3 bench/ladder.py --rounds 9 bookworm trixie\n"
                                       "  /usr/bin/python3 bench/ladder.py --docs-only")
    p.add_argument("kernels", nargs="*", help="names from tests/kernels/kernels.txt (default: all)")
    p.add_argument("--rounds", type=int, default=7, help="rounds per kernel (default 7)")
    p.add_argument("--seconds", type=float,
                   help="seconds per ping-pong run (default 1 with the icount clock, 2 with wall)")
    p.add_argument("--clock", default="icount,wall", type=lambda v: [c for c in v.split(",") if c],
                   help="guest clocks to measure with, in turn: icount (qemu -icount: instructions), wall "
                        "(the host's time); default icount,wall")
    p.add_argument("--timeout", type=float, default=2400, help="seconds a guest may run (default 2400)")
    p.add_argument("--settle", type=float, default=SETTLE,
                   help="seconds between attaching a configuration and its run (default %g)" % SETTLE)
    p.add_argument("--configs", type=lambda v: [c for c in v.split(",") if c], default=[],
                   help="only these configurations (and bare), e.g. empty-fexit,errnomon")
    p.add_argument("--json", default=OUT_JSON, help="results file (default bench/out/ladder.json); the docs "
                                                    "section is rendered from the default one only")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the ladder section of docs/BENCHMARKS.md")
    p.add_argument("--docs-only", action="store_true", help="only rewrite the docs section from bench/out/ladder.json")
    return p.parse_args(argv)


def parse_guest_args(argv):
    p = argparse.ArgumentParser(prog="ladder.py guest")
    p.add_argument("--out", required=True, help="the guest's writable share (pingpong is there)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--daemon-timeout", type=float, default=300.0, help="seconds errnomon may take to start")
    p.add_argument("--settle", type=float, default=SETTLE)
    p.add_argument("--configs", type=lambda v: [c for c in v.split(",") if c], default=[])
    return p.parse_args(argv)


def main(argv):
    if argv[:1] == ["guest"]:
        return guest(parse_guest_args(argv[1:]))
    a = parse_args(argv)
    if set(a.clock) - set(CLOCKS):
        sys.stderr.write("bench-kernels: --clock takes icount and/or wall\n")
        return 2
    if a.docs_only:
        import ladder_report
        ladder_report.update_doc(load_results())
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("bench-kernels: needs root (qemu guests, image cache): run 'sudo make bench-kernels'\n")
        return 2
    return host(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
