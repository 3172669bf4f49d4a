"""1. Hot path: a one-thread loopback TCP ping-pong, bare and under each tracer, alternating in rounds.

Each round measures every configuration once, in a rotated order (so no configuration always runs first or
right after a start-up), with both message sizes back to back while the tracer is attached. A ratio is a
configuration's rate over the bare rate of the same round; the figure is the median ratio over rounds.
errnomon is attached only during its own slot: started (READY=1 and /metrics answering) before, stopped after.
Every slot (bare too) settles SETTLE s before its first run; a run during which the host was busier than
BUSY_LIMIT CPUs (the ping-pong is 1.0: something else ran) is repeated, at most REPEATS times.
"""

import json
import os
import subprocess
import time

from common import (DAEMON_CONFIG, ERRNOMON, Bpftrace, EmptyPrograms, Errnomon, HostCpu, before_round, compile_c,
                    log, median, spread)

# empty-raw: the floor, an empty raw tracepoint program on each of errnomon's hooks (common.EmptyPrograms)
CONFIGS = ("bare", "empty-raw", "errnomon", "bpftrace-tp", "bpftrace-syscalls")
SIZES = (64, 16384)
CALLS_PER_ITERATION = 4  # send A, recv B, send B, recv A


SETTLE = 1.0  # seconds between attaching (or not, for bare) and the first run of a slot
BUSY_LIMIT = 1.25  # CPUs: the ping-pong is 1.0; a run during which the host was busier is repeated
REPEATS = 2


def pingpong(binary, size, seconds, cpu):
    """One run; repeated (at most REPEATS times) while another process disturbed it (host busier than
    BUSY_LIMIT CPUs). The last attempt counts whatever happened; `attempts` records how many it took."""
    for attempt in range(1 + REPEATS):
        host = HostCpu().start()
        out = subprocess.run([binary, str(size), str(seconds), str(cpu)], capture_output=True, text=True,
                             check=True, timeout=seconds + 60)
        r = json.loads(out.stdout)
        r["host_busy_cpus"] = host.stop()
        r["attempts"] = attempt + 1
        if r["host_busy_cpus"] <= BUSY_LIMIT:
            break
    return r


SYSCALLS_ON = "errnomon-syscalls-on"


def syscalls_on_config(workdir):
    """A copy of the daemon's config with kernel.syscall_tracepoints: true (the opt-in that counts connect and
    accept errors), if this errnomon accepts that key; else None."""
    import yaml
    with open(DAEMON_CONFIG) as f:
        data = yaml.safe_load(f) or {}
    data.setdefault("kernel", {})
    data["kernel"] = dict(data["kernel"] or {}, syscall_tracepoints=True)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config-syscalls-on.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    ok = subprocess.run([ERRNOMON, "--config.check", "--config.file=%s" % path], capture_output=True,
                        timeout=60).returncode == 0
    return path if ok else None


def attach(config, workdir, r, configs_files=None, label="hotpath"):
    """The tracer of a configuration (None for bare), not started; label names the daemon's log."""
    if config == "bare":
        return None
    if config == "empty-raw":
        return EmptyPrograms()
    if config == "errnomon":
        return Errnomon(workdir, name="errnomon-%s-%d" % (label, r))
    if config == SYSCALLS_ON:
        return Errnomon(workdir, config=configs_files[SYSCALLS_ON], name="errnomon-syscalls-on-%s-%d" % (label, r))
    return Bpftrace("tp" if config == "bpftrace-tp" else "syscalls", workdir)


def run(out_dir, build_dir, rounds=5, seconds=2.0, sizes=SIZES, with_breakdown=False, round_quiet_wait=None):
    """round_quiet_wait: seconds to wait for a quiet machine before each round (None: do not look)."""
    binary = compile_c("pingpong", build_dir)
    cpu = (os.cpu_count() or 1) - 1
    workdir = os.path.join(out_dir, "work")
    files = {}
    configs = CONFIGS
    off = syscalls_on_config(workdir)
    if off:
        files[SYSCALLS_ON] = off
        configs = CONFIGS + (SYSCALLS_ON,)
    rates = {c: {s: [] for s in sizes} for c in configs}
    busy = {c: {s: [] for s in sizes} for c in configs}
    attempts = {c: {s: [] for s in sizes} for c in configs}
    daemon_cpu = {s: [] for s in sizes}
    order_log = []
    rounds_quiet = []
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        order_log.append(list(order))
        rounds_quiet.append(before_round(round_quiet_wait))
        for config in order:
            tracer = attach(config, workdir, r, files)
            if tracer is not None:
                try:
                    tracer.start()
                except RuntimeError as e:
                    log("hotpath: %s failed to start, once more: %s" % (config, e))
                    tracer = attach(config, workdir, r, files)
                    tracer.start()
            try:
                time.sleep(SETTLE)
                for size in sizes:
                    cpu0 = tracer.cpu_seconds() if isinstance(tracer, Errnomon) else 0.0
                    res = pingpong(binary, size, seconds, cpu)
                    if config == "errnomon":
                        daemon_cpu[size].append(round((tracer.cpu_seconds() - cpu0) / res["seconds"] / res["attempts"], 5))
                    rates[config][size].append(res["rate"])
                    busy[config][size].append(res["host_busy_cpus"])
                    attempts[config][size].append(res["attempts"])
                    log("hotpath round %d/%d %-17s %5d B: %9.0f it/s (host busy %.2f CPUs%s)"
                        % (r + 1, rounds, config, size, res["rate"], res["host_busy_cpus"],
                           ", attempt %d" % res["attempts"] if res["attempts"] > 1 else ""))
            finally:
                if tracer is not None:
                    tracer.stop()

    results = {}
    for size in sizes:
        bare = rates["bare"][size]
        per = {}
        for config in configs:
            ratios = [x / b for x, b in zip(rates[config][size], bare)]
            med_ratio = median(ratios)
            med_bare = median(bare)
            per[config] = {
                "rates": rates[config][size],
                "median_rate": median(rates[config][size]),
                "ratios": [round(x, 5) for x in ratios],
                "median_ratio": round(med_ratio, 5),
                # cost added per socket call, from the median ratio and the median bare rate
                "ns_per_call": round((1 / med_ratio - 1) / med_bare / CALLS_PER_ITERATION * 1e9, 1),
                "host_busy_cpus": busy[config][size],
                "attempts": attempts[config][size],
            }
        per["errnomon"]["daemon_cpu_fraction"] = daemon_cpu[size]
        results[str(size)] = per

    checks = {}
    for size in sizes:
        res = results[str(size)]
        name = size_name(size)
        # errnomon against the floor, round by round: added ns per call over the empty programs
        diff = [(1 / e - 1 / f) / CALLS_PER_ITERATION * 1e9
                for e, f in zip(rates["errnomon"][size], rates["empty-raw"][size])]
        d = spread(diff)
        res["errnomon"]["ns_per_call_over_floor"] = [round(x, 1) for x in diff]
        res["errnomon"]["over_floor"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
        checks["errnomon_within_noise_of_floor_%s" % name] = {
            "value": d["median"], "low": d["low"], "high": d["high"], "confidence": d["confidence"],
            "budget": "interval of the median difference reaches 0", "ok": d["low"] is not None and d["low"] <= 0}
        for other in ("bpftrace-tp", "bpftrace-syscalls"):
            ahead = [e / o - 1 for e, o in zip(rates["errnomon"][size], rates[other][size])]
            a = spread(ahead)
            res[other]["errnomon_ahead"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in a.items()}
            checks["errnomon_ahead_of_%s_%s" % (other, name)] = {
                "value": a["median"], "low": a["low"], "high": a["high"], "confidence": a["confidence"],
                "budget": "errnomon's rate above %s's (median of per-round ratios > 1)" % other,
                "ok": a["median"] is not None and a["median"] > 0}
    # a measurement is disturbed when the host was busier than the ping-pong itself (1 CPU) plus the tracer
    all_busy = [b for c in busy.values() for s in c.values() for b in s]
    result = {
        "rounds": rounds,
        "seconds_per_run": seconds,
        "cpu_pinned": cpu,
        "configs": list(configs),
        "config_files": {k: os.path.relpath(v, out_dir) for k, v in files.items()},
        "order_per_round": order_log,
        "rounds_quiet": rounds_quiet,
        "sizes": list(sizes),
        "calls_per_iteration": CALLS_PER_ITERATION,
        "results": results,
        "max_host_busy_cpus": max(all_busy) if all_busy else None,
        "settle_s": SETTLE, "busy_limit": BUSY_LIMIT, "repeats": REPEATS,
        "checks": checks,
    }
    if with_breakdown:
        result["breakdown"] = breakdown(out_dir, build_dir, rounds=rounds, seconds=seconds, sizes=sizes,
                                        round_quiet_wait=round_quiet_wait)
    return result


# ---- where the hot-path time goes ------------------------------------------------------------------------

BREAKDOWN = ("bare", "empty-raw", "errnomon-send/recv-only", "errnomon-no-syscalls", "errnomon-all-in-process")


class InProcess:
    """errnomon's BPF programs (or a subset, or the empty programs) loaded by bcc in this process: no daemon."""

    def __init__(self, variant):
        self.variant = variant
        self.loaded = None

    def start(self):
        from common import errnomon_bpf
        if self.variant == "empty-raw":
            self.loaded = EmptyPrograms().start()
        elif self.variant == "errnomon-send/recv-only":
            self.loaded = errnomon_bpf(probes={"sock:sock_send_length", "sock:sock_recv_length"})
        elif self.variant == "errnomon-no-syscalls":
            self.loaded = errnomon_bpf()
        else:  # all of it, with the opt-in syscall tracepoints
            self.loaded = errnomon_bpf(with_syscalls=True)
        return self

    def stop(self):
        if self.loaded is not None:
            (self.loaded.stop if isinstance(self.loaded, EmptyPrograms) else self.loaded.cleanup)()
            self.loaded = None


def breakdown(out_dir, build_dir, rounds=5, seconds=2.0, sizes=SIZES, round_quiet_wait=None):
    """The same ping-pong under parts of errnomon loaded in-process: the floor any BPF program on the two
    send/recv tracepoints costs (an empty raw tracepoint program), errnomon's send/recv programs alone, without
    its syscall tracepoints (connect/accept: any syscall tracepoint puts every syscall of every task on the
    traced slow path), and all of it. Same rotation and median-of-ratios as run()."""
    binary = compile_c("pingpong", build_dir)
    cpu = (os.cpu_count() or 1) - 1
    rates = {c: {s: [] for s in sizes} for c in BREAKDOWN}
    rounds_quiet = []
    for r in range(rounds):
        order = BREAKDOWN[r % len(BREAKDOWN):] + BREAKDOWN[:r % len(BREAKDOWN)]
        rounds_quiet.append(before_round(round_quiet_wait))
        for variant in order:
            t = InProcess(variant).start() if variant != "bare" else None
            try:
                time.sleep(SETTLE)
                for size in sizes:
                    res = pingpong(binary, size, seconds, cpu)
                    rates[variant][size].append(res["rate"])
                    log("hotpath breakdown round %d/%d %-24s %5d B: %9.0f it/s (host busy %.2f CPUs)"
                        % (r + 1, rounds, variant, size, res["rate"], res["host_busy_cpus"]))
            finally:
                if t is not None:
                    t.stop()
    out = {}
    for size in sizes:
        bare = rates["bare"][size]
        out[str(size)] = {}
        for v in BREAKDOWN:
            ratio = median([x / b for x, b in zip(rates[v][size], bare)])
            out[str(size)][v] = {"median_ratio": round(ratio, 5), "rates": rates[v][size],
                                 "ns_per_call": round((1 / ratio - 1) / median(bare) / CALLS_PER_ITERATION * 1e9, 1)}
    return {"rounds": rounds, "variants": list(BREAKDOWN), "results": out, "rounds_quiet": rounds_quiet}


def size_name(size):
    return "%dB" % size if size < 1024 else "%dKiB" % (size // 1024)
