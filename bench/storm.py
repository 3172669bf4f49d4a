"""2. Error storm: several processes producing socket errors as fast as they can, each counting its own.

For each mode (epipe: send after SHUT_WR, the fastest error this machine produces; refused: connect to a bound,
non-listening loopback port), the generator runs once bare (the rate the machine reaches without errnomon) and
once with errnomon attached. errnomon's counts for the generators' comms, scraped from /metrics after a final
drain wait, must equal the generators' own counts exactly; the daemon's CPU (utime+stime from /proc/<pid>/stat)
is measured over the storm window. The EPIPE storm runs under two daemons in turn, against the same bare run:
error events on (the shipped config) and off (events.enabled: false). With events on, every error of the storm
must be accounted for: the events the daemon kept for the generators' comms plus errnomon_events_dropped_total
(every reason) over the window equal the errors generated.
"""

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import hotpath
from common import DAEMON_CONFIG, Errnomon, HostCpu, compile_c, log

MODES = {
    # mode: (errno, op) errnomon labels the errors with
    "epipe": ("EPIPE", "send"),
    "refused": ("ECONNREFUSED", "connect"),
}
# the EPIPE storm's daemons: (mode name, events.enabled); "epipe" keeps the shipped config's events (on)
EPIPE_EVENTS = (("epipe", True), ("epipe_events_off", False))
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


def events_config(workdir, enabled, seconds):
    """A copy of the daemon's config with events.enabled as given. With events on, the shipped events.rate, and
    events.keep raised so that every event of the storm stays in memory to be counted by comm (keep only bounds
    the in-memory log: each event is appended the same way whatever it is)."""
    import yaml
    from common import monitor_module
    with open(DAEMON_CONFIG) as f:
        data = yaml.safe_load(f) or {}
    events = dict(data.get("events") or {}, enabled=enabled)
    if enabled:
        rate = monitor_module("config").load(DAEMON_CONFIG).events_rate
        # a burst of `rate`, then `rate` a second over the storm and the drain wait after it, with room to spare
        events["keep"] = max(events.get("keep", 0), int(rate * (seconds + DRAIN_TIMEOUT + 10)))
    data["events"] = events
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config-events-%s.yaml" % ("on" if enabled else "off"))
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def errors_view(daemon, **params):
    """GET /errors (JSON) of the daemon with these query parameters."""
    url = daemon.url.rsplit("/", 1)[0] + "/errors?" + urllib.parse.urlencode(dict(params, format="json"))
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read().decode())


def events_dropped(daemon):
    """{reason: n} of errnomon_events_dropped_total."""
    return {l.get("reason"): int(v) for l, v in daemon.samples("errnomon_events_dropped_total")}


def run_mode(binary, mode, procs, seconds, workdir, tag, bare=None, events=None):
    """events: None (the config as it is), True or False (events.enabled, the EPIPE storm's two daemons);
    bare: the bare run to compare with, when another mode's serves (the same storm, side by side)."""
    kind = mode.split("_")[0]
    errno, op = MODES[kind]
    if bare is None:
        bare = generate(binary, kind, procs, seconds, "bstorm%s%s_" % (kind[0].upper(), tag))
        log("storm %-16s bare:     %d errors, %.0f errors/s" % (mode, bare["errors"], bare["rate_per_s"]))
    # op="connect" needs the syscall tracepoints (kernel.syscall_tracepoints, off by default)
    if kind == "refused":
        config = hotpath.syscalls_on_config(workdir)
    elif events is not None:
        config = events_config(workdir, events, seconds)
    else:
        config = DAEMON_CONFIG
    daemon = Errnomon(workdir, config=config, name="errnomon-storm-%s" % mode).start()
    accounted = None
    try:
        # distinct comms for each daemon: the other's errors can never be taken for this one's
        prefix = "storm%s%s%s_" % (kind[0].upper(), "X" if events is False else "", tag)
        time.sleep(2 * DRAIN_INTERVAL)  # start-up drains behind us
        if events:
            seq0 = errors_view(daemon, limit=1)["last_seq"]
            dropped0 = events_dropped(daemon)
        cpu0 = daemon.cpu_seconds()
        t0 = time.monotonic()
        gen = generate(binary, kind, procs, seconds, prefix)
        cpu1 = daemon.cpu_seconds()
        t1 = time.monotonic()
        expected = {p["comm"]: p["errors"] for p in gen["per_process"]}
        got, other, drain_s = wait_drained(daemon, expected, errno, op)
        cpu2 = daemon.cpu_seconds()
        t2 = time.monotonic()
        drops = {l.get("reason"): v for l, v in daemon.samples("errnomon_dropped_total") if v}
        if events:
            accounted = account_events(daemon, expected, errno, seq0, dropped0)
    finally:
        daemon.stop()
    exact = got == expected and gen["unexpected"] == 0
    log("storm %-16s errnomon: %d errors, %.0f errors/s; errnomon counted %d (%s); daemon CPU %.2f%% of a core"
        % (mode, gen["errors"], gen["rate_per_s"], sum(got.values()), "exact" if exact else "MISMATCH",
           100 * (cpu1 - cpu0) / (t1 - t0)))
    if accounted:
        log("storm %-16s events: %d kept for the storm's comms + %d dropped (%s) = %d of %d errors (%s); "
            "%d events of other processes in the window"
            % (mode, accounted["kept"], accounted["dropped_total"],
               ", ".join("%s %d" % kv for kv in sorted(accounted["dropped"].items())),
               accounted["kept"] + accounted["dropped_total"], gen["errors"],
               "every event accounted for" if accounted["ok"] else "MISMATCH", accounted["kept_other"]))
    return {
        "errno": errno, "op": op, "processes": procs, "seconds": seconds,
        "events": {None: "as configured", True: "on", False: "off"}[events],
        "config": os.path.basename(config),
        "events_accounted": accounted,
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


def account_events(daemon, expected, errno, seq0, dropped0):
    """The window's error events: those the daemon kept for the generators' comms (GET /errors after seq0),
    and errnomon_events_dropped_total's growth by reason (the kernel counts every event it refused, whoever's:
    another process's error in the window adds to it, and shows in kept_other). Every generated error must be
    one or the other: kept + dropped == generated."""
    view = errors_view(daemon, after=seq0, limit=errors_view(daemon, limit=1)["kept"] or 1)
    rows = view["events"]
    mine = [e for e in rows if e["comm"] in expected]
    dropped1 = events_dropped(daemon)
    dropped = {r: dropped1.get(r, 0) - dropped0.get(r, 0) for r in dropped1}
    by_comm = {c: 0 for c in expected}
    for e in mine:
        by_comm[e["comm"]] += 1
    generated = sum(expected.values())
    # every event after seq0 still kept: none evicted from the log before it was counted
    complete = not rows or rows[0]["seq"] == seq0 + 1
    return {"kept": len(mine), "kept_by_comm": by_comm, "kept_other": len(rows) - len(mine),
            "kept_wrong_errno": sum(1 for e in mine if e["errno"] != errno),
            "dropped": dropped, "dropped_total": sum(dropped.values()),
            "rate_limited": dropped.get("rate_limit", 0), "generated": generated,
            "first_seq": seq0 + 1, "last_seq": view["last_seq"], "log_complete": complete,
            "ok": complete and len(mine) + sum(dropped.values()) == generated}


def run(out_dir, build_dir, seconds=10.0, refused_seconds=5.0, procs=None, cost_rounds=5, cost_seconds=2.0,
        round_quiet_wait=None):
    binary = compile_c("storm", build_dir)
    procs = procs or max(4, 2 * (os.cpu_count() or 1))
    workdir = os.path.join(out_dir, "work")
    tag = str(os.getpid() % 1000)  # distinct comms per run: a long-running daemon elsewhere cannot confuse them
    modes = {}
    bare = None
    for mode, events in EPIPE_EVENTS:  # one bare run, the two daemons side by side against it
        modes[mode] = run_mode(binary, mode, procs, seconds, workdir, tag, bare=bare, events=events)
        bare = modes[mode]["bare"]
    modes["refused"] = run_mode(binary, "refused", procs, refused_seconds, workdir, tag)
    highest = max(modes, key=lambda m: modes[m]["with_errnomon"]["rate_per_s"])
    checks = {}
    for mode, r in modes.items():
        checks["exact_counts_%s" % mode] = {"value": "%d counted / %d generated" % (
            sum(r["counted"].values()), r["with_errnomon"]["errors"]), "budget": "equal", "ok": r["exact"]}
        checks["daemon_cpu_%s" % mode] = {"value": r["daemon_cpu_storm_fraction"], "budget": "< %.2f" % CPU_BUDGET,
                                          "ok": r["daemon_cpu_storm_fraction"] < CPU_BUDGET}
        a = r["events_accounted"]
        if a:
            checks["events_accounted_%s" % mode] = {
                "value": "%d kept + %d dropped / %d generated" % (a["kept"], a["dropped_total"], a["generated"]),
                "budget": "equal", "ok": a["ok"]}
    cost = per_error_cost(out_dir, build_dir, rounds=cost_rounds, seconds=cost_seconds,
                          stats_seconds=max(0.5, cost_seconds / 2),
                          round_quiet_wait=round_quiet_wait) if cost_rounds else None
    return {"modes": modes, "highest_rate_mode": highest,
            "highest_rate_per_s": modes[highest]["with_errnomon"]["rate_per_s"], "per_error_cost": cost,
            "checks": checks}


# ---- per-error cost, step by step ------------------------------------------------------------------------

# The steps of the send program's error path (bpf/errnomon.bpf.c, io_error), each of which a bench-only copy of
# the source can compile out with -D<flag>: (step, flag, the text in io_error, what it becomes). A statement is
# put under #ifdef; an expression (which may sit inside another step's statement) becomes a macro.
STEPS = (
    ("owner lookup", "BENCH_NO_OWNER",
     "        o = owner_of(sk);\n        if (o)\n            peer_from_owner(&key, o);\n        else\n"
     "            peer_from_sock(&key, sk, family);\n",
     "        o = 0;\n"),
    ("comm and cgroup", "BENCH_NO_COMM_CGROUP",
     "    key_from_current(&key);\n",
     "    key.tgid = bpf_get_current_pid_tgid() >> 32;\n"),
    ("sendfile check", "BENCH_NO_SENDFILE_CHECK", "sent_earlier_in_sendfile()", "0"),
    ("map update", "BENCH_NO_COUNT", "count(&key, METRIC_SOCKET_ERRORS)", "(void)0"),
    ("SIGPIPE lookup", "BENCH_NO_SIGPIPE",
     "    if (op == OP_SEND && err == EPIPE)\n        sigpipe_after_epipe(&key);\n",
     ""),
    # events on as the daemon turns them on (common.errnomon_bpf writes event_interval_ns for events.rate): in a
    # storm nearly every error takes event_begin's rate-limited branch (a settings lookup, the clock, the bucket,
    # the drop count)
    ("error event", "BENCH_NO_EVENT",
     "        socket_event(EVENT_SOCKET_ERROR, &key, sk, o, (u32)bpf_get_current_pid_tgid());\n",
     ""),
)
COST_CONFIGS = ("bare", "empty-raw", "errnomon") + tuple("no " + s[0] for s in STEPS) + ("filter only",)


def guarded_source(build_dir):
    """A bench-only copy of bpf/errnomon.bpf.c in which each step of io_error sits under #ifdef <flag>. Made
    from the current source at run time; a step whose text is no longer there stops the benchmark, naming it."""
    from common import monitor_module
    src = monitor_module("loader").SOURCE
    with open(src) as f:
        text = f.read()
    start = text.index("static __always_inline int io_error(")
    end = text.index("\n}\n", start) + 3
    body = text[start:end]
    macros = []
    for step, flag, old, new in STEPS:
        if body.count(old) != 1:
            raise RuntimeError("per-error cost: the '%s' step is not where it was in io_error (%s): update "
                               "bench/storm.py STEPS" % (step, src))
        if old.endswith("\n"):
            body = body.replace(old, "#ifdef %s\n%s#else\n%s#endif\n" % (flag, new, old))
        else:
            name = flag + "_EXPR"
            body = body.replace(old, name)
            macros.append("#ifdef %s\n#define %s %s\n#else\n#define %s %s\n#endif\n" % (flag, name, new, name, old))
    body = "".join(macros) + body
    os.makedirs(build_dir, exist_ok=True)
    out = os.path.join(build_dir, "errnomon-steps.bpf.c")
    with open(out, "w") as f:
        f.write("/* GENERATED by bench/storm.py from %s: steps of io_error under -D flags. */\n" % src)
        f.write(text[:start] + body + text[end:])
    return out


def load_cost_config(config, source):
    """(loaded object, its send program's fd, unload)."""
    from common import EmptyPrograms, errnomon_bpf
    if config == "empty-raw":
        e = EmptyPrograms().start()
        return e.bpf.funcs[b"raw_tracepoint__sock_send_length"].fd, e.stop
    flags = {"errnomon": [], "filter only": ["-D" + s[1] for s in STEPS]}.get(config)
    if flags is None:
        flags = ["-D" + s[1] for s in STEPS if "no " + s[0] == config]
    b = errnomon_bpf(source=source, extra_cflags=flags)
    return b.funcs[b"raw_tracepoint__sock_send_length"].fd, b.cleanup


def per_error_cost(out_dir, build_dir, rounds=5, seconds=2.0, stats_seconds=1.0, round_quiet_wait=None):
    """The EPIPE storm under errnomon's send program with each step compiled out in turn, alternating in rounds.

    Two measures per configuration and round: the generators' rate (host CPU-seconds per error, against bare:
    everything the error costs, the tracepoint's dispatch included), and, in a second run with the kernel's BPF
    run-time statistics on (BpfStats), the send program's own run_time_ns / run_cnt."""
    from common import BpfStats, before_round, spread
    binary = compile_c("storm", build_dir)
    source = guarded_source(build_dir)
    procs = os.cpu_count() or 1
    ns_host = {c: [] for c in COST_CONFIGS}
    ns_prog = {c: [] for c in COST_CONFIGS if c != "bare"}
    rate = {c: [] for c in COST_CONFIGS}
    rounds_quiet = []
    for r in range(rounds):
        order = COST_CONFIGS[r % len(COST_CONFIGS):] + COST_CONFIGS[:r % len(COST_CONFIGS)]
        rounds_quiet.append(before_round(round_quiet_wait))
        for config in order:
            fd, unload = (None, None) if config == "bare" else load_cost_config(config, source)
            try:
                g = generate(binary, "epipe", procs, seconds, "cost%d_" % r)
                rate[config].append(g["rate_per_s"])
                ns_host[config].append(g["host_busy_cpus"] / g["rate_per_s"] * 1e9)
                if fd is not None:
                    with BpfStats():
                        t0, n0 = BpfStats.read(fd)
                        generate(binary, "epipe", procs, stats_seconds, "cost%d_" % r)
                        t1, n1 = BpfStats.read(fd)
                    ns_prog[config].append((t1 - t0) / (n1 - n0) if n1 > n0 else None)
            finally:
                if unload is not None:
                    unload()
            log("storm cost round %d/%d %-20s %9.0f errors/s, %6.1f ns host CPU per error%s"
                % (r + 1, rounds, config, rate[config][-1], ns_host[config][-1],
                   ", program %.1f ns per run" % ns_prog[config][-1] if config in ns_prog and ns_prog[config][-1]
                   else ""))
    out = {}
    for c in COST_CONFIGS:
        over_bare = [h - b for h, b in zip(ns_host[c], ns_host["bare"])]
        out[c] = {"rates": rate[c], "host_ns_per_error": [round(x, 1) for x in ns_host[c]],
                  "host_ns_over_bare": {k: round(v, 2) if isinstance(v, float) else v
                                        for k, v in spread(over_bare).items()}}
        if c in ns_prog:
            vals = [x for x in ns_prog[c] if x is not None]
            out[c]["program_ns_per_run"] = [round(x, 1) for x in vals]
            out[c]["program_ns"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in spread(vals).items()}
    steps = {}
    for step, flag, _, _ in STEPS:
        c = "no " + step
        per_round_prog = [f - n for f, n in zip(ns_prog["errnomon"], ns_prog[c]) if f is not None and n is not None]
        per_round_host = [f - n for f, n in zip(ns_host["errnomon"], ns_host[c])]
        steps[step] = {"flag": flag,
                       "program_ns": {k: round(v, 2) if isinstance(v, float) else v
                                      for k, v in spread(per_round_prog).items()},
                       "host_ns": {k: round(v, 2) if isinstance(v, float) else v
                                   for k, v in spread(per_round_host).items()}}
    return {"rounds": rounds, "seconds": seconds, "stats_seconds": stats_seconds, "processes": procs,
            "configs": list(COST_CONFIGS), "results": out, "steps": steps, "step_order": [s[0] for s in STEPS], "rounds_quiet": rounds_quiet,
            "source": os.path.relpath(source, out_dir)}
