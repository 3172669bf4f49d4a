"""4. Footprint: start-up time to READY=1, resident and anonymous memory after start-up and across a churn.

Start-up is timed from exec to the READY=1 datagram on a NOTIFY_SOCKET bound here (median of several starts).
Memory is read from /proc/<pid>/status (VmRSS, RssAnon) and /proc/<pid>/smaps (anonymous memory per mapping).
The churn (bench/churn.c) forks short-lived processes that open, reset and refuse loopback connections at a
fixed rate, over a bounded set of process names; RssAnon is sampled every `sample_every` seconds, and /metrics
is scraped at each sample as Prometheus would. Before the churn, the daemon's CPU (schedstat) and wake-ups
(voluntary context switches) are read over an idle minute: nothing counted, nobody scraping; and, beside it,
what the machine charges any thread for a wake-up (bench/wake.c, and a Python thread in select()).
bench/memprofile.py breaks the anonymous memory down by start-up step in a fresh interpreter.
"""

import json
import os
import subprocess
import sys
import time

from common import (DAEMON_CONFIG, ERRNOMON, REPO, VENV_PY, Errnomon, compile_c, log, median, monitor_module,
                    sched_delta, smaps_by_mapping_kib, smaps_rollup_kib, threads_sched)

STARTUP_BUDGET_S = 3.0
ANON_BUDGET_KIB = 40 * 1024
FLAT_BUDGET_KIB = 1024  # growth of RssAnon after the warm-up
CHURN_RATE = 100  # processes per second, 3 connections each
CHURN_NAMES = 200


def top(d, n=8):
    return dict(list(d.items())[:n])


def series_count(daemon):
    return int(sum(v for _, v in daemon.samples("errnomon_series")))


def memprofile():
    out = {}
    for flag in ([], ["--tracemalloc"]):
        r = subprocess.run([VENV_PY, os.path.join(os.path.dirname(__file__), "memprofile.py")] + flag,
                           capture_output=True, text=True, timeout=300, cwd=REPO)
        if r.returncode != 0:
            return {"error": r.stderr[-2000:]}
        out["tracemalloc" if flag else "plain"] = json.loads(r.stdout)
    return out


class TrimmedErrnomon(Errnomon):
    """Prototype of the proposed fix, without touching monitor/: the real CLI, with malloc_trim(0) run right
    after loader.load() returns (the compiler's freed heap handed back to the kernel)."""

    WRAPPER = ("import ctypes, sys\n"
               "import monitor.loader as L\n"
               "_load = L.load\n"
               "def load(*a, **k):\n"
               "    r = _load(*a, **k)\n"
               "    ctypes.CDLL('libc.so.6').malloc_trim(0)\n"
               "    return r\n"
               "L.load = load\n"
               "from monitor.cli import main\n"
               "sys.exit(main())\n")

    def start(self):
        wrapper = os.path.join(self.workdir, "errnomon-trimmed")
        os.makedirs(self.workdir, exist_ok=True)
        with open(wrapper, "w") as f:
            f.write("#!%s\n%s" % (VENV_PY, self.WRAPPER))
        os.chmod(wrapper, 0o755)
        self.exe = wrapper
        return super().start()


WAKE_SLEEPS_US = (1000, 100000, 500000)
PY_WAKE = ("import select, time\n"
           "cpu = []\n"
           "for _ in range(%d):\n"
           "    t = time.thread_time_ns()\n"
           "    select.select([], [], [], %f)\n"
           "    cpu.append(time.thread_time_ns() - t)\n"
           "cpu.sort()\n"
           "print(cpu[len(cpu) // 2] / 1e3)\n")


def wake_cost(build_dir, quick=False):
    """What the machine charges a thread per wake-up, doing nothing else (bench/wake.c; and a Python thread
    in select(), as the daemon's loop is): [{'sleep_us', 'cpu_us_median', ...}], {'sleep_us', 'cpu_us_median'}."""
    exe = compile_c("wake", build_dir)
    c = []
    for us in WAKE_SLEEPS_US:
        n = max(2, min(200, int((0.4 if quick else 4.0) * 1e6 / us)))
        out = subprocess.run([exe, str(us), str(n)], capture_output=True, text=True, check=True, timeout=120)
        c.append(json.loads(out.stdout))
    us = WAKE_SLEEPS_US[-1]
    n = 2 if quick else 10
    out = subprocess.run([VENV_PY, "-c", PY_WAKE % (n, us / 1e6)], capture_output=True, text=True, check=True,
                         timeout=120)
    return {"c": c, "python_select": {"sleep_us": us, "n": n, "cpu_us_median": float(out.stdout)}}


def listen_poll_hot_ms(reps=20):
    """The CPU (ms, median) of the daemon's listener poll repeated back to back in this process: what the poll
    itself costs with warm caches, to set beside the idle daemon's CPU per wake-up."""
    lq = monitor_module("listen_queue").ListenQueues()
    lq.poll()
    cpu = []
    for _ in range(reps):
        t = time.thread_time_ns()
        lq.poll()
        cpu.append((time.thread_time_ns() - t) / 1e6)
    return round(median(cpu), 3)


def idle(daemon, seconds):
    """The daemon's CPU and wake-ups while nothing is counted and nobody scrapes."""
    before, t0 = threads_sched(daemon.pid), time.monotonic()
    time.sleep(seconds)
    return sched_delta(daemon.pid, before, threads_sched(daemon.pid), time.monotonic() - t0)


def churn_samples(daemon, churn_bin, churn_seconds, sample_every):
    """Run the churn against a running daemon; sample memory and series (scraping /metrics) every sample_every s,
    and once more after the last drain. Returns (samples, churn's own JSON, daemon CPU fraction of a core)."""
    samples = []
    cpu0 = daemon.cpu_seconds()
    t0 = time.monotonic()
    churn = subprocess.Popen([churn_bin, str(churn_seconds), str(CHURN_RATE), str(CHURN_NAMES)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        k = 0
        while True:
            t = time.monotonic() - t0
            daemon.scrape_text()
            m = daemon.memory()
            samples.append({"t": round(t, 2), "RssAnon": m["RssAnon"], "VmRSS": m["VmRSS"],
                            "series": series_count(daemon)})
            if churn.poll() is not None:
                break
            k += 1
            wait = t0 + k * sample_every - time.monotonic()
            if wait > 0:
                try:
                    churn.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
            if time.monotonic() - t0 > churn_seconds + 120:
                churn.kill()
        out, err = churn.communicate(timeout=60)
    finally:
        if churn.poll() is None:
            churn.kill()
            churn.communicate()
    cpu = round((daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0), 5)
    result = json.loads(out) if churn.returncode == 0 else {"error": err}
    time.sleep(1.5)  # the last drain
    daemon.scrape_text()
    m = daemon.memory()
    samples.append({"t": round(time.monotonic() - t0, 2), "RssAnon": m["RssAnon"], "VmRSS": m["VmRSS"],
                    "series": series_count(daemon)})
    return samples, result, cpu


def run(out_dir, build_dir, churn_seconds=600.0, starts=3, sample_every=10.0, profile=True, idle_seconds=60.0):
    churn_bin = compile_c("churn", build_dir)
    wakes = wake_cost(build_dir, quick=idle_seconds < 10)
    log("footprint: CPU charged per wake-up: %s; Python select() after %.1f s %.0f us" % (
        ", ".join("%.0f us after %g ms" % (w["cpu_us_median"], w["sleep_us"] / 1000) for w in wakes["c"]),
        wakes["python_select"]["sleep_us"] / 1e6, wakes["python_select"]["cpu_us_median"]))
    workdir = os.path.join(out_dir, "work")
    startups = []
    for i in range(starts - 1):
        d = Errnomon(workdir, name="errnomon-start-%d" % i).start()
        startups.append({"ready_s": round(d.ready_seconds, 4), "metrics_s": d.metrics_seconds, "status": d.status})
        d.stop()
    daemon = Errnomon(workdir, name="errnomon-footprint").start()
    startups.append({"ready_s": round(daemon.ready_seconds, 4), "metrics_s": daemon.metrics_seconds,
                     "status": daemon.status})
    log("footprint: start-up to READY=1 %s s" % ", ".join("%.2f" % s["ready_s"] for s in startups))
    try:
        time.sleep(2.0)
        daemon.scrape_text()
        after_start = daemon.memory()
        after_start_smaps = top(smaps_by_mapping_kib(daemon.pid))
        after_start_rollup = smaps_rollup_kib(daemon.pid)
        log("footprint: after start-up RssAnon %d KiB, VmRSS %d KiB" % (after_start["RssAnon"], after_start["VmRSS"]))
        idle_cost = idle(daemon, idle_seconds)
        log("footprint: idle %.0f s: %.2f%% of a core, %.1f wake-ups/s (main thread %.1f)" % (
            idle_seconds, 100 * idle_cost["cpu_fraction"], idle_cost["wakeups_per_s"], idle_cost["main_wakeups_per_s"]))

        samples, churn_result, cpu_fraction = churn_samples(daemon, churn_bin, churn_seconds, sample_every)
        after = daemon.memory()
        after_smaps = top(smaps_by_mapping_kib(daemon.pid))
        log("footprint: after %.0f s churn (%s processes) RssAnon %d KiB, VmRSS %d KiB, %d series"
            % (churn_seconds, churn_result.get("processes"), after["RssAnon"], after["VmRSS"], samples[-1]["series"]))
    finally:
        daemon.stop()

    warmup = min(60.0, churn_seconds / 4)
    base = next((s for s in samples if s["t"] >= warmup), samples[0])
    growth = samples[-1]["RssAnon"] - base["RssAnon"]
    peak = max(s["RssAnon"] for s in samples)
    result = {
        "startups": startups,
        "startup_ready_median_s": round(median([s["ready_s"] for s in startups]), 4),
        "after_startup": after_start,
        "after_startup_anon_by_mapping_kib": after_start_smaps,
        "after_startup_smaps_rollup_kib": after_start_rollup,
        "idle": idle_cost,
        "wake_cost": wakes,
        "listen_poll_hot_ms": listen_poll_hot_ms(),
        "churn": {"seconds": churn_seconds, "rate_per_s": CHURN_RATE, "names": CHURN_NAMES, "result": churn_result,
                  "daemon_cpu_fraction": cpu_fraction},
        "samples": samples,
        "sample_every_s": sample_every,
        "after_churn": after,
        "after_churn_anon_by_mapping_kib": after_smaps,
        "warmup_s": warmup,
        "anon_growth_after_warmup_kib": growth,
        "anon_peak_kib": peak,
        "config": os.path.relpath(DAEMON_CONFIG, REPO),
        "errnomon": os.path.relpath(ERRNOMON, REPO),
    }
    if profile:
        result["memprofile"] = memprofile()
    if profile and peak >= ANON_BUDGET_KIB:
        # over budget: measure the first proposed fix too
        d = TrimmedErrnomon(workdir, name="errnomon-trimmed").start()
        try:
            time.sleep(2.0)
            d.scrape_text()
            fix = {"after_startup": d.memory(), "ready_s": round(d.ready_seconds, 4)}
            secs = min(60.0, churn_seconds)
            fs, fr, _ = churn_samples(d, churn_bin, secs, sample_every)
            fix.update({"churn_seconds": secs, "churn": fr, "samples": fs,
                        "anon_peak_kib": max(x["RssAnon"] for x in fs), "after_churn": d.memory()})
            result["proposed_fix_malloc_trim"] = fix
        finally:
            d.stop()
        log("footprint: prototype with malloc_trim(0) after load: RssAnon %d KiB after start-up, peak %d KiB "
            "during a %.0f s churn" % (fix["after_startup"]["RssAnon"], fix["anon_peak_kib"], fix["churn_seconds"]))
    result["checks"] = {
        "startup_under_3s": {"value": result["startup_ready_median_s"], "budget": "< %.0f s" % STARTUP_BUDGET_S,
                             "ok": result["startup_ready_median_s"] < STARTUP_BUDGET_S},
        "anon_after_startup_under_40MiB": {"value": after_start["RssAnon"], "budget": "< %d KiB" % ANON_BUDGET_KIB,
                                           "ok": after_start["RssAnon"] < ANON_BUDGET_KIB},
        "anon_peak_under_40MiB": {"value": peak, "budget": "< %d KiB" % ANON_BUDGET_KIB, "ok": peak < ANON_BUDGET_KIB},
        "anon_flat_across_churn": {"value": growth, "budget": "<= %d KiB growth after %.0f s warm-up"
                                   % (FLAT_BUDGET_KIB, warmup), "ok": growth <= FLAT_BUDGET_KIB},
    }
    return result


if __name__ == "__main__":
    sys.exit("run bench/run.py")
