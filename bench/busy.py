"""6. Busy node: the idle daemon's CPU on a host with many processes and many network namespaces.

Idle means nothing counted and nobody scraping: what the daemon costs a node for watching. Each configuration
gets a fresh daemon (the shipped config), which settles for `settle` seconds (its start-up scan and first
polls) and is then measured for `seconds`: CPU time from the process's CPU-time clock (exact, and counting
the short-lived thread that reads other namespaces), wake-ups from its threads' voluntary context switches. The configurations, side by side in one run, in rounds that alternate them:

  idle host          the host as it is
  +N processes       N extra processes that only sleep (bench/sleepers.c proc), started before the daemon
  +M netns, before   M network namespaces with one listener each (bench/sleepers.c netns, as a node's pods),
                     opened before the daemon: listeners older than errnomon, handed to the programs at
                     start-up by the tcp iterator (without one: read with sock_diag in their namespaces)
  +M netns, after    the same, opened after the daemon started: listeners the programs follow in the kernel

Budget: the daemon's idle CPU in each crowded configuration within 0.2% of a core of the idle host's.
"""

import os
import subprocess
import time

from common import Errnomon, compile_c, log, median, process_cpu_ns, sched_delta, threads_sched

EXTRA_PROCESSES = 5000
EXTRA_NETNS = 300
BUDGET_CORE_FRACTION = 0.002


class Crowd:
    """bench/sleepers running: n processes or n namespaces, until stop()."""

    def __init__(self, exe, n, mode):
        self.proc = subprocess.Popen([exe, str(n), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError("sleepers %d %s did not start (exit %s)" % (n, mode, self.proc.returncode))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(workdir, exe, config, seconds, settle):
    """Idle CPU of a fresh daemon in one configuration: (name, crowd size, mode, opened before the daemon)."""
    name, n, mode, before = config
    crowd = Crowd(exe, n, mode) if n and before else None
    d = Errnomon(workdir, name="busy-" + name.replace(" ", "-").replace(",", "").replace("+", ""))
    try:
        d.start()
        if n and not before:
            crowd = Crowd(exe, n, mode)
        time.sleep(settle)
        t0, b, cpu0 = time.monotonic(), threads_sched(d.pid), process_cpu_ns(d.pid)
        time.sleep(seconds)
        cpu, elapsed = process_cpu_ns(d.pid) - cpu0, time.monotonic() - t0
        r = sched_delta(d.pid, b, threads_sched(d.pid), elapsed)
        # the reading thread of the listener polls lives for one poll: only the process clock sees it
        r["cpu_fraction"] = round(cpu / 1e9 / elapsed, 6)
    finally:
        rc = d.stop()
        if crowd:
            crowd.stop()
    if rc != 0:
        raise RuntimeError("errnomon exited with %s in %s:\n%s" % (rc, name, d.output()))
    return r


def run(out_dir, build_dir, rounds=3, seconds=30.0, settle=12.0, processes=EXTRA_PROCESSES, netns=EXTRA_NETNS):
    exe = compile_c("sleepers", build_dir)
    configs = [("idle host", 0, "proc", True), ("+%d processes" % processes, processes, "proc", True),
               ("+%d netns, before" % netns, netns, "netns", True), ("+%d netns, after" % netns, netns, "netns", False)]
    samples = {c[0]: [] for c in configs}
    for r in range(rounds):
        for c in (configs if r % 2 == 0 else configs[::-1]):
            res = measure(os.path.join(out_dir, "busy"), exe, c, seconds, settle)
            log("busy round %d: %-22s %.3f%% of a core, %.2f wake-ups/s" % (r + 1, c[0], 100 * res["cpu_fraction"],
                                                                           res["wakeups_per_s"]))
            samples[c[0]].append(res)
    table = []
    base = median([s["cpu_fraction"] for s in samples[configs[0][0]]])
    for name, _, _, _ in configs:
        cpu = median([s["cpu_fraction"] for s in samples[name]])
        table.append({"config": name, "cpu_fraction_median": cpu, "over_idle_host": cpu - base,
                      "wakeups_per_s_median": median([s["wakeups_per_s"] for s in samples[name]]),
                      "samples": samples[name]})
    checks = {}
    for row in table[1:]:
        checks["idle CPU over the idle host, %s" % row["config"]] = {
            "value": "%+.3f%% of a core" % (100 * row["over_idle_host"]),
            "budget": "< %.1f%%" % (100 * BUDGET_CORE_FRACTION), "ok": row["over_idle_host"] < BUDGET_CORE_FRACTION}
    return {"rounds": rounds, "seconds": seconds, "settle": settle, "table": table, "checks": checks}
