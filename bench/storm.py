"""2. Error storm: several processes producing socket errors as fast as they can, each counting its own.

For each mode (epipe: send after SHUT_WR, the fastest error this machine produces; refused: connect to a bound,
non-listening loopback port), the generator runs once bare (the rate the machine reaches without errnomon) and
once with errnomon attached. errnomon's counts for the generators' comms, scraped from /metrics after a final
drain wait, must equal the generators' own counts exactly; the daemon's CPU (utime+stime from /proc/<pid>/stat)
is measured over the storm window.
"""

import json
import os
import subprocess
import time

import hotpath
from common import DAEMON_CONFIG, Errnomon, HostCpu, compile_c, log

MODES = {
    # mode: (errno, op) errnomon labels the errors with
    "epipe": ("EPIPE", "send"),
    "refused": ("ECONNREFUSED", "connect"),
}
CPU_BUDGET = 0.05  # of one core
DRAIN_INTERVAL = 0.5  # config.example.yaml
DRAIN_TIMEOUT = 15.0


def generate(binary, mode, procs, seconds, prefix):
    host = HostCpu().start()
    t0 = time.monotonic()
    out = subprocess.run([binary, mode, str(procs), str(seconds), prefix], capture_output=True, text=True,
                         timeout=seconds + 60)
    wall = time.monotonic() - t0
    busy = host.stop()
    if out.returncode != 0:
        raise RuntimeError("storm %s failed (%s): %s" % (mode, out.returncode, out.stderr))
    per = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(per) != procs:
        raise RuntimeError("storm %s: %d of %d processes reported" % (mode, len(per), procs))
    errors = sum(p["errors"] for p in per)
    # every process runs `seconds`; the rate is the sum of each process's own rate
    rate = sum(p["errors"] / p["seconds"] for p in per)
    return {"per_process": per, "errors": errors, "unexpected": sum(p["unexpected"] for p in per),
            "rate_per_s": round(rate), "wall_seconds": round(wall, 3), "host_busy_cpus": busy}


def counted(daemon, comms, errno, op):
    """{comm: errnomon's count of errno/op for that comm} summed over remote and port."""
    got = {c: 0 for c in comms}
    other = {}
    for labels, value in daemon.samples("errnomon_socket_errors_total"):
        c = labels.get("comm")
        if c in got:
            if labels.get("errno") == errno and labels.get("op") == op:
                got[c] += int(value)
            else:
                key = "%s/%s/%s" % (c, labels.get("errno"), labels.get("op"))
                other[key] = other.get(key, 0) + int(value)
    return got, other


def wait_drained(daemon, expected, errno, op):
    """Poll until the counts equal the generators' (then one more two-interval wait proves nothing more comes),
    or until the timeout; returns the final counts and how long it took after the storm ended."""
    t0 = time.monotonic()
    deadline = t0 + DRAIN_TIMEOUT
    got, other = counted(daemon, expected, errno, op)
    while time.monotonic() < deadline:
        if got == expected:
            time.sleep(2 * DRAIN_INTERVAL + 0.3)
            got, other = counted(daemon, expected, errno, op)
            break
        time.sleep(0.1)
        got, other = counted(daemon, expected, errno, op)
    return got, other, round(time.monotonic() - t0, 3)


def run_mode(binary, mode, procs, seconds, workdir, tag):
    errno, op = MODES[mode]
    bare = generate(binary, mode, procs, seconds, "bstorm%s%s_" % (mode[0].upper(), tag))
    log("storm %-7s bare:     %d errors, %.0f errors/s" % (mode, bare["errors"], bare["rate_per_s"]))
    # op="connect" needs the syscall tracepoints (kernel.syscall_tracepoints, off by default)
    config = hotpath.syscalls_on_config(workdir) if mode == "refused" else DAEMON_CONFIG
    daemon = Errnomon(workdir, config=config, name="errnomon-storm-%s" % mode).start()
    try:
        prefix = "storm%s%s_" % (mode[0].upper(), tag)
        time.sleep(2 * DRAIN_INTERVAL)  # start-up drains behind us
        cpu0 = daemon.cpu_seconds()
        t0 = time.monotonic()
        gen = generate(binary, mode, procs, seconds, prefix)
        cpu1 = daemon.cpu_seconds()
        t1 = time.monotonic()
        expected = {p["comm"]: p["errors"] for p in gen["per_process"]}
        got, other, drain_s = wait_drained(daemon, expected, errno, op)
        cpu2 = daemon.cpu_seconds()
        t2 = time.monotonic()
        drops = {l.get("reason"): v for l, v in daemon.samples("errnomon_dropped_total") if v}
    finally:
        daemon.stop()
    exact = got == expected and gen["unexpected"] == 0
    log("storm %-7s errnomon: %d errors, %.0f errors/s; errnomon counted %d (%s); daemon CPU %.2f%% of a core"
        % (mode, gen["errors"], gen["rate_per_s"], sum(got.values()), "exact" if exact else "MISMATCH",
           100 * (cpu1 - cpu0) / (t1 - t0)))
    return {
        "errno": errno, "op": op, "processes": procs, "seconds": seconds,
        "bare": bare,
        "with_errnomon": gen,
        "rate_kept_under_errnomon": round(gen["rate_per_s"] / bare["rate_per_s"], 4) if bare["rate_per_s"] else None,
        "expected": expected, "counted": got, "other_series_for_these_comms": other,
        "exact": exact,
        "drain_wait_seconds": drain_s,
        "dropped": drops,
        "daemon_cpu_storm_fraction": round((cpu1 - cpu0) / (t1 - t0), 5),
        "daemon_cpu_storm_seconds": round(cpu1 - cpu0, 3),
        "storm_window_seconds": round(t1 - t0, 3),
        "daemon_cpu_with_drain_fraction": round((cpu2 - cpu0) / (t2 - t0), 5),
    }


def run(out_dir, build_dir, seconds=10.0, refused_seconds=5.0, procs=None):
    binary = compile_c("storm", build_dir)
    procs = procs or max(4, 2 * (os.cpu_count() or 1))
    workdir = os.path.join(out_dir, "work")
    tag = str(os.getpid() % 1000)  # distinct comms per run: a long-running daemon elsewhere cannot confuse them
    modes = {}
    for mode, secs in (("epipe", seconds), ("refused", refused_seconds)):
        modes[mode] = run_mode(binary, mode, procs, secs, workdir, tag)
    highest = max(modes, key=lambda m: modes[m]["with_errnomon"]["rate_per_s"])
    checks = {}
    for mode, r in modes.items():
        checks["exact_counts_%s" % mode] = {"value": "%d counted / %d generated" % (
            sum(r["counted"].values()), r["with_errnomon"]["errors"]), "budget": "equal", "ok": r["exact"]}
        checks["daemon_cpu_%s" % mode] = {"value": r["daemon_cpu_storm_fraction"], "budget": "< %.2f" % CPU_BUDGET,
                                          "ok": r["daemon_cpu_storm_fraction"] < CPU_BUDGET}
    return {"modes": modes, "highest_rate_mode": highest,
            "highest_rate_per_s": modes[highest]["with_errnomon"]["rate_per_s"], "checks": checks}
